//! Nix's base32: the alphabet without `e`, `o`, `t` and `u`, written from the
//! last 5-bit group to the first, as store path hashes and `sha256:` hashes use it.

const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// The length of the base32 text of `bytes` bytes.
pub fn encoded_len(bytes: usize) -> usize {
    (bytes * 8).div_ceil(5)
}

/// Encodes bytes in Nix's base32.
pub fn encode(bytes: &[u8]) -> String {
    let len = encoded_len(bytes.len());
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let bit = n * 5;
        let (i, j) = (bit / 8, bit % 8);
        let low = u16::from(bytes[i]) >> j;
        let high = bytes.get(i + 1).map_or(0, |b| u16::from(*b) << (8 - j));
        out.push(char::from(ALPHABET[usize::from((low | high) & 0x1f)]));
    }
    out
}

/// Decodes Nix's base32 text of exactly `bytes` bytes; `None` when the text
/// has another length, a character outside the alphabet, or bits beyond the
/// last byte.
pub fn decode(text: &str, bytes: usize) -> Option<Vec<u8>> {
    if text.len() != encoded_len(bytes) {
        return None;
    }
    let mut out = vec![0u8; bytes];
    for (n, c) in text.bytes().rev().enumerate() {
        let digit = ALPHABET.iter().position(|a| *a == c)? as u16;
        let bit = n * 5;
        let (i, j) = (bit / 8, bit % 8);
        let shifted = digit << j;
        out[i] |= (shifted & 0xff) as u8;
        let carry = (shifted >> 8) as u8;
        match out.get_mut(i + 1) {
            Some(next) => *next |= carry,
            None if carry != 0 => return None,
            None => {}
        }
    }
    Some(out)
}

/// Whether a character is in Nix's base32 alphabet.
pub fn is_digit(c: u8) -> bool {
    ALPHABET.contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn known_hashes_round_trip() {
        // sha256 of the empty string, and of "hello\n", as Nix prints them.
        for (hex_text, base32) in [
            (
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73",
            ),
            (
                "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03",
                "00xyyr3fi8l6hb839bv3f7yb86yjv7xi1cgh1xnhipym4asvb4aq",
            ),
        ] {
            assert_eq!(encode(&hex(hex_text)), base32);
            assert_eq!(decode(base32, 32).unwrap(), hex(hex_text));
        }
    }

    #[test]
    fn bad_text_is_refused() {
        assert_eq!(decode("", 32), None);
        assert_eq!(decode("e", 1), None);
        assert_eq!(decode("0e", 1), None);
        // 2 characters carry 10 bits: a byte and 2 bits that must be zero.
        assert_eq!(decode("80", 1), None);
        assert_eq!(decode("7z", 1), Some(vec![0xff]));
    }
}
