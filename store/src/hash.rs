//! Hashes as Nix names and prints them: an algorithm and its digest, written
//! in base16, Nix's base32 or base64, with or without the `algo:` prefix.

use std::fmt;
use std::io;

use sha2::Digest;

use crate::base32;

/// A hash algorithm Nix knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HashAlgo {
    /// MD5, 16 bytes (fixed-output derivations only).
    Md5,
    /// SHA-1, 20 bytes (fixed-output derivations only).
    Sha1,
    /// SHA-256, 32 bytes: store paths and NAR hashes.
    Sha256,
    /// SHA-512, 64 bytes.
    Sha512,
}

impl HashAlgo {
    /// The algorithm of Nix's name for it (`md5`, `sha1`, `sha256`, `sha512`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "md5" => Some(Self::Md5),
            "sha1" => Some(Self::Sha1),
            "sha256" => Some(Self::Sha256),
            "sha512" => Some(Self::Sha512),
            _ => None,
        }
    }

    /// Nix's name of the algorithm.
    pub fn name(self) -> &'static str {
        match self {
            Self::Md5 => "md5",
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
        }
    }

    /// The digest's length in bytes.
    pub fn size(self) -> usize {
        match self {
            Self::Md5 => 16,
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Sha512 => 64,
        }
    }
}

impl fmt::Display for HashAlgo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A digest and the algorithm that made it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hash {
    algo: HashAlgo,
    digest: Vec<u8>,
}

/// Why a hash's text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashParseError {
    /// The algorithm's name is not one Nix knows.
    #[error("unknown hash algorithm '{0}'")]
    UnknownAlgo(String),
    /// The text has no `algo:` prefix and no algorithm was given.
    #[error("hash '{0}' does not include a type")]
    NoAlgo(String),
    /// The digest is not base16, base32 or base64 of the algorithm's length.
    #[error("hash '{text}' has wrong length for hash type '{algo}'")]
    BadDigest {
        /// The hash's text.
        text: String,
        /// The algorithm it was read as.
        algo: HashAlgo,
    },
}

impl Hash {
    /// A hash from its algorithm and digest; `None` when the digest has the
    /// wrong length.
    pub fn new(algo: HashAlgo, digest: Vec<u8>) -> Option<Self> {
        (digest.len() == algo.size()).then_some(Self { algo, digest })
    }

    /// The SHA-256 of some bytes.
    pub fn sha256(bytes: &[u8]) -> Self {
        Self {
            algo: HashAlgo::Sha256,
            digest: sha2::Sha256::digest(bytes).to_vec(),
        }
    }

    /// Parses a digest without prefix, in base16, Nix's base32 or base64.
    pub fn parse_digest(algo: HashAlgo, text: &str) -> Result<Self, HashParseError> {
        let bad = || HashParseError::BadDigest {
            text: text.to_owned(),
            algo,
        };
        let size = algo.size();
        let digest = if text.len() == size * 2 {
            decode_hex(text)
        } else if text.len() == base32::encoded_len(size) {
            base32::decode(text, size)
        } else {
            decode_base64(text).filter(|d| d.len() == size)
        };
        digest.map(|digest| Self { algo, digest }).ok_or_else(bad)
    }

    /// Parses `algo:digest`, SRI `algo-base64`, or a bare digest when
    /// `default` names the algorithm.
    pub fn parse(text: &str, default: Option<HashAlgo>) -> Result<Self, HashParseError> {
        let split = text.split_once(':').or_else(|| text.split_once('-'));
        match (split, default) {
            (Some((name, digest)), _) => {
                let algo = HashAlgo::from_name(name)
                    .ok_or_else(|| HashParseError::UnknownAlgo(name.to_owned()))?;
                Self::parse_digest(algo, digest)
            }
            (None, Some(algo)) => Self::parse_digest(algo, text),
            (None, None) => Err(HashParseError::NoAlgo(text.to_owned())),
        }
    }

    /// The algorithm.
    pub fn algo(&self) -> HashAlgo {
        self.algo
    }

    /// The digest's bytes.
    pub fn digest(&self) -> &[u8] {
        &self.digest
    }

    /// The digest in base16.
    pub fn to_hex(&self) -> String {
        self.digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The digest in Nix's base32.
    pub fn to_base32(&self) -> String {
        base32::encode(&self.digest)
    }

    /// `algo:base16`, as Nix's database keeps NAR hashes.
    pub fn to_prefixed_hex(&self) -> String {
        format!("{}:{}", self.algo, self.to_hex())
    }

    /// SRI form, `algo-base64`, as Lix prints hashes in its messages.
    pub fn to_sri(&self) -> String {
        format!("{}-{}", self.algo, encode_base64(&self.digest))
    }

    /// `algo:base32`, as Nix prints NAR hashes and content addresses.
    pub fn to_prefixed_base32(&self) -> String {
        format!("{}:{}", self.algo, self.to_base32())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_prefixed_base32())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_prefixed_base32())
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if bytes.len() % 2 != 0 {
        return None;
    }
    bytes
        .chunks(2)
        .map(|pair| {
            let digit = |c: u8| (c as char).to_digit(16);
            Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
        })
        .collect()
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn encode_base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(BASE64[(n >> (18 - 6 * i) & 0x3f) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64 with padding, decoded; `None` for what is not.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8; 64] = BASE64;
    let trimmed = text.trim_end_matches('=');
    if text.len() % 4 != 0 || text.len() - trimmed.len() > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in trimmed.bytes() {
        acc = (acc << 6) | ALPHABET.iter().position(|a| *a == c)? as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    (acc == 0).then_some(out)
}

/// A writer that hashes what passes through it with any of Nix's
/// algorithms: a fixed output's flat file or NAR.
pub struct AnyHasher {
    algo: HashAlgo,
    state: HasherState,
}

enum HasherState {
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl AnyHasher {
    /// A fresh hasher for `algo`.
    pub fn new(algo: HashAlgo) -> Self {
        let state = match algo {
            HashAlgo::Md5 => HasherState::Md5(Default::default()),
            HashAlgo::Sha1 => HasherState::Sha1(Default::default()),
            HashAlgo::Sha256 => HasherState::Sha256(Default::default()),
            HashAlgo::Sha512 => HasherState::Sha512(Default::default()),
        };
        Self { algo, state }
    }

    /// The hash of everything written.
    pub fn finish(self) -> Hash {
        let digest = match self.state {
            HasherState::Md5(h) => h.finalize().to_vec(),
            HasherState::Sha1(h) => h.finalize().to_vec(),
            HasherState::Sha256(h) => h.finalize().to_vec(),
            HasherState::Sha512(h) => h.finalize().to_vec(),
        };
        Hash {
            algo: self.algo,
            digest,
        }
    }
}

impl io::Write for AnyHasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.state {
            HasherState::Md5(h) => h.update(buf),
            HasherState::Sha1(h) => h.update(buf),
            HasherState::Sha256(h) => h.update(buf),
            HasherState::Sha512(h) => h.update(buf),
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A writer that hashes what passes through it with SHA-256 and counts the
/// bytes: the sink of a NAR whose hash and size are wanted.
#[derive(Default)]
pub struct HashingWriter {
    hasher: sha2::Sha256,
    count: u64,
}

impl HashingWriter {
    /// A new writer with nothing hashed.
    pub fn new() -> Self {
        Self::default()
    }

    /// The SHA-256 of everything written and the number of bytes.
    pub fn finish(self) -> (Hash, u64) {
        let digest = self.hasher.finalize().to_vec();
        (
            Hash {
                algo: HashAlgo::Sha256,
                digest,
            },
            self.count,
        )
    }
}

impl io::Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hasher.update(buf);
        self.count += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A writer that passes what it is given on to `inner` and hashes it with
/// SHA-256 on the way (a NAR written and hashed at once).
pub struct HashingTee<W> {
    /// Where the bytes go.
    pub inner: W,
    /// The hash of what went.
    pub hasher: HashingWriter,
}

impl<W> HashingTee<W> {
    /// A tee in front of `inner`, nothing hashed yet.
    pub fn new(inner: W) -> Self {
        HashingTee {
            inner,
            hasher: HashingWriter::new(),
        }
    }
}

impl<W: io::Write> io::Write for HashingTee<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.write_all(&buf[..n])?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_notation_of_one_hash_is_the_same_hash() {
        // outputHash of a real fixed-output derivation, in the forms Nix accepts.
        let hex = "98691562fb398c5d5b779cd893eb8dfd3c5a44b3723ffdd046efba5f5048a9fa";
        let sri = "sha256-mGkVYvs5jF1bd5zYk+uN/TxaRLNyP/3QRu+6X1BIqfo=";
        let a = Hash::parse_digest(HashAlgo::Sha256, hex).unwrap();
        let b = Hash::parse(sri, None).unwrap();
        let c = Hash::parse(&a.to_prefixed_base32(), None).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.to_hex(), hex);
        assert_eq!(a.to_sri(), sri);
        let md5 = Hash::new(HashAlgo::Md5, vec![1; 16]).unwrap();
        assert_eq!(Hash::parse(&md5.to_sri(), None).unwrap(), md5);
    }

    #[test]
    fn bad_hashes_say_why() {
        assert_eq!(
            Hash::parse("sha257:00", None).unwrap_err().to_string(),
            "unknown hash algorithm 'sha257'"
        );
        assert!(matches!(
            Hash::parse_digest(HashAlgo::Sha256, "abc"),
            Err(HashParseError::BadDigest { .. })
        ));
        assert!(Hash::parse_digest(HashAlgo::Md5, &"g".repeat(32)).is_err());
        assert!(matches!(
            Hash::parse("abc", None),
            Err(HashParseError::NoAlgo(_))
        ));
    }
}
