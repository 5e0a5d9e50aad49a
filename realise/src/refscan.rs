//! Reference scanning (B87): which store paths' hash parts occur in an
//! output's NAR serialisation, as Nix finds an output's references.

use std::collections::{BTreeSet, HashMap};
use std::io;

use hermetic_store::StorePath;
use hermetic_store::path::HASH_LEN;

/// A writer that looks for the hash parts of candidate paths in the bytes
/// that pass through it, across write boundaries.
pub struct RefScanner {
    candidates: HashMap<Vec<u8>, StorePath>,
    found: BTreeSet<StorePath>,
    tail: Vec<u8>,
}

fn is_base32(c: u8) -> bool {
    hermetic_store::base32::is_digit(c)
}

impl RefScanner {
    /// Looks for these paths.
    pub fn new(candidates: impl IntoIterator<Item = StorePath>) -> Self {
        Self {
            candidates: candidates
                .into_iter()
                .map(|p| (p.hash_part().as_bytes().to_vec(), p))
                .collect(),
            found: BTreeSet::new(),
            tail: Vec::new(),
        }
    }

    /// The paths found.
    pub fn finish(self) -> BTreeSet<StorePath> {
        self.found
    }

    fn scan(&mut self, data: &[u8]) {
        if data.len() < HASH_LEN {
            return;
        }
        let mut i = 0;
        while i + HASH_LEN <= data.len() {
            // Find the last byte of the window that is not base32, and jump
            // past it (the window cannot hold a hash part).
            let window = &data[i..i + HASH_LEN];
            match window.iter().rposition(|c| !is_base32(*c)) {
                Some(bad) => i += bad + 1,
                None => {
                    if let Some(path) = self.candidates.get(window) {
                        self.found.insert(path.clone());
                    }
                    i += 1;
                }
            }
        }
    }
}

impl io::Write for RefScanner {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // The last HASH_LEN - 1 bytes of the previous write, then this one.
        let mut joined = std::mem::take(&mut self.tail);
        joined.extend_from_slice(buf);
        self.scan(&joined);
        let keep = joined.len().min(HASH_LEN - 1);
        self.tail = joined[joined.len() - keep..].to_vec();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn finds_hash_parts_across_writes() {
        let a = StorePath::from_base_name("wd0ys9snp82b5v5j4pgp5wfhnfjhl2vm-a").unwrap();
        let b = StorePath::from_base_name("h6b6bz6y039rxr8wwm24akjsi596ksh7-b").unwrap();
        let c = StorePath::from_base_name("y3hz0i1ffrqi1r63q39lw11jdw6vcpck-c").unwrap();
        let mut scanner = RefScanner::new([a.clone(), b.clone(), c]);
        let text = b"xx /nix/store/wd0ys9snp82b5v5j4pgp5wfhnfjhl2vm-a/bin and h6b6bz6y039rxr8wwm24akjsi596ksh7";
        for chunk in text.chunks(7) {
            scanner.write_all(chunk).unwrap();
        }
        assert_eq!(scanner.finish(), BTreeSet::from([a, b]));
    }
}
