//! Content addresses (Nix's `ContentAddress`): what a path's `ca` field
//! claims — that the path is named after a hash of its own content — and
//! the hash of a tree's content, by which that claim is checked.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::hash::{AnyHasher, Hash, HashAlgo};
use crate::nar;
use crate::path::{BadStorePath, IngestionMethod, StoreDir, StorePath};

/// A parsed `ca` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentAddress {
    /// `text:sha256:…`: a file's SHA-256 (derivations, `builtins.toFile`).
    Text(Hash),
    /// `fixed:[r:]algo:…`: a file's bytes (flat) or a tree's NAR
    /// (recursive), hashed with any algorithm.
    Fixed {
        /// Flat or recursive.
        method: IngestionMethod,
        /// The hash.
        hash: Hash,
    },
}

/// Why a content hash could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum ContentHashError {
    /// Flat and text hashing take a single regular file.
    #[error("'{0}' is not a regular file, so it has no flat hash")]
    NotAFile(String),
    /// Reading the content failed.
    #[error("cannot read '{path}'")]
    Io {
        /// What was read.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Serialising the tree failed.
    #[error(transparent)]
    Nar(#[from] nar::NarError),
}

impl ContentAddress {
    /// Parses Nix's text form; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        if let Some(rest) = text.strip_prefix("text:") {
            let hash = Hash::parse(rest, None).ok()?;
            return (hash.algo() == HashAlgo::Sha256).then_some(Self::Text(hash));
        }
        let rest = text.strip_prefix("fixed:")?;
        let (method, rest) = match rest.strip_prefix("r:") {
            Some(rest) => (IngestionMethod::Recursive, rest),
            None => (IngestionMethod::Flat, rest),
        };
        let hash = Hash::parse(rest, None).ok()?;
        Some(Self::Fixed { method, hash })
    }

    /// The hash it names.
    pub fn hash(&self) -> &Hash {
        match self {
            Self::Text(hash) | Self::Fixed { hash, .. } => hash,
        }
    }

    /// The path this address gives an object named `name` with these
    /// references (which may include the path itself).
    pub fn store_path(
        &self,
        store: &StoreDir,
        name: &str,
        references: &BTreeSet<StorePath>,
        own_path: &StorePath,
    ) -> Result<StorePath, BadStorePath> {
        let mut others = references.clone();
        let self_reference = others.remove(own_path);
        match self {
            Self::Text(hash) => store.make_text_path(name, hash, &others),
            Self::Fixed { method, hash } => {
                store.make_fixed_output_path(*method, hash, name, &others, self_reference)
            }
        }
    }

    /// The hash of the content at `path` as this address computes it.
    pub fn content_hash(&self, path: &Path) -> Result<Hash, ContentHashError> {
        match self {
            Self::Text(_) => content_hash(path, IngestionMethod::Flat, HashAlgo::Sha256),
            Self::Fixed { method, hash } => content_hash(path, *method, hash.algo()),
        }
    }
}

/// The hash of the content at `path`: the bytes of a regular file (flat),
/// or the NAR serialisation of the tree (recursive), with `algo`.
pub fn content_hash(
    path: &Path,
    method: IngestionMethod,
    algo: HashAlgo,
) -> Result<Hash, ContentHashError> {
    let io = |source| ContentHashError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut hasher = AnyHasher::new(algo);
    match method {
        IngestionMethod::Flat => {
            let meta = fs::symlink_metadata(path).map_err(io)?;
            if !meta.is_file() {
                return Err(ContentHashError::NotAFile(path.display().to_string()));
            }
            let mut file = fs::File::open(path).map_err(io)?;
            std::io::copy(&mut file, &mut hasher).map_err(io)?;
        }
        IngestionMethod::Recursive => {
            let mut sink = BufWriter::with_capacity(64 * 1024, &mut hasher);
            nar::dump(path, &mut sink)?;
            sink.flush().map_err(io)?;
        }
    }
    Ok(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_nix_writes_and_nothing_else() {
        let sha = Hash::sha256(b"x");
        let text = format!("text:{}", sha.to_prefixed_base32());
        assert_eq!(
            ContentAddress::parse(&text),
            Some(ContentAddress::Text(sha.clone()))
        );
        let fixed = format!("fixed:r:{}", sha.to_prefixed_base32());
        assert_eq!(
            ContentAddress::parse(&fixed),
            Some(ContentAddress::Fixed {
                method: IngestionMethod::Recursive,
                hash: sha.clone()
            })
        );
        let flat = ContentAddress::parse("fixed:sha1:0000000000000000000000000000000000000000");
        assert!(matches!(
            flat,
            Some(ContentAddress::Fixed { method: IngestionMethod::Flat, ref hash }) if hash.algo() == HashAlgo::Sha1
        ));
        for bad in [
            "",
            "text:",
            "text:sha1:0000000000000000000000000000000000000000",
            "fixed:",
            "fixed:r:md6:00",
            "source:sha256:00",
            &format!("fixed:{}x", sha.to_prefixed_base32()),
        ] {
            assert_eq!(ContentAddress::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn flat_hashes_take_a_regular_file_only() {
        let dir = std::env::temp_dir().join(format!("hermetic-ca-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f");
        fs::write(&file, b"hi\n").unwrap();
        assert_eq!(
            content_hash(&file, IngestionMethod::Flat, HashAlgo::Sha256).unwrap(),
            Hash::sha256(b"hi\n")
        );
        assert!(matches!(
            content_hash(&dir, IngestionMethod::Flat, HashAlgo::Sha256),
            Err(ContentHashError::NotAFile(_))
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}
