//! Store paths: `<store dir>/<hash>-<name>`, their checks, and the ways Nix
//! computes them (fingerprint, SHA-256, folded to 160 bits, base32).

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use crate::base32;
use crate::hash::{Hash, HashAlgo};

/// Characters in a store path's hash part.
pub const HASH_LEN: usize = 32;
/// The longest name Nix allows.
pub const MAX_NAME_LEN: usize = 211;

/// A store path's base name, checked: a 32-character base32 hash, a dash,
/// and a name of Nix's allowed characters.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StorePath {
    base_name: String,
}

/// Why a path is not a store path. The texts are Nix's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadStorePath {
    /// Not directly inside the store directory.
    #[error("path '{0}' is not in the Nix store")]
    NotInStore(String),
    /// Shorter than a hash, a dash and a name.
    #[error("'{0}' is too short to be a valid store path")]
    TooShort(String),
    /// A hash character outside Nix's base32.
    #[error("store path '{0}' contains illegal base-32 character '{1}'")]
    BadHashChar(String, char),
    /// No dash after the hash.
    #[error("store path '{0}' has no dash after its hash")]
    NoDash(String),
    /// An empty name.
    #[error("store path '{0}' has an empty name")]
    EmptyName(String),
    /// A name longer than 211 characters.
    #[error("store path '{0}' has a name longer than {MAX_NAME_LEN} characters")]
    NameTooLong(String),
    /// A name that starts with a period.
    #[error("store path '{0}' starts with illegal character '.'")]
    LeadingPeriod(String),
    /// A name character Nix does not allow.
    #[error("store path '{0}' contains illegal character '{1}'")]
    BadNameChar(String, char),
}

/// Checks a store object's name (the part after the hash).
pub fn check_name(path: &str, name: &str) -> Result<(), BadStorePath> {
    if name.is_empty() {
        return Err(BadStorePath::EmptyName(path.to_owned()));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(BadStorePath::NameTooLong(path.to_owned()));
    }
    if name.starts_with('.') {
        return Err(BadStorePath::LeadingPeriod(path.to_owned()));
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "+-._?=".contains(*c)))
    {
        Some(c) => Err(BadStorePath::BadNameChar(path.to_owned(), c)),
        None => Ok(()),
    }
}

impl StorePath {
    /// A store path from its base name (`<hash>-<name>`).
    pub fn from_base_name(base_name: &str) -> Result<Self, BadStorePath> {
        if base_name.len() < HASH_LEN + 2 {
            return Err(BadStorePath::TooShort(base_name.to_owned()));
        }
        // Checked as characters: a multi-byte one may straddle byte 32.
        if let Some((_, c)) = base_name
            .char_indices()
            .take_while(|(i, _)| *i < HASH_LEN)
            .find(|(_, c)| !c.is_ascii() || !base32::is_digit(*c as u8))
        {
            return Err(BadStorePath::BadHashChar(base_name.to_owned(), c));
        }
        if base_name.as_bytes()[HASH_LEN] != b'-' {
            return Err(BadStorePath::NoDash(base_name.to_owned()));
        }
        check_name(base_name, &base_name[HASH_LEN + 1..])?;
        Ok(Self {
            base_name: base_name.to_owned(),
        })
    }

    /// A store path from its hash part's digest (20 bytes) and a name.
    fn from_digest(digest: &[u8], name: &str) -> Result<Self, BadStorePath> {
        Self::from_base_name(&format!("{}-{name}", base32::encode(digest)))
    }

    /// `<hash>-<name>`.
    pub fn base_name(&self) -> &str {
        &self.base_name
    }

    /// The 32-character hash part.
    pub fn hash_part(&self) -> &str {
        &self.base_name[..HASH_LEN]
    }

    /// The name after the hash.
    pub fn name(&self) -> &str {
        &self.base_name[HASH_LEN + 1..]
    }

    /// Whether this is a derivation (`.drv`).
    pub fn is_derivation(&self) -> bool {
        self.name().ends_with(".drv")
    }
}

impl fmt::Debug for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base_name)
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base_name)
    }
}

/// The logical store directory (`/nix/store`): the one store paths are
/// written with, in derivations, the database and inside sandboxes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreDir(String);

impl Default for StoreDir {
    fn default() -> Self {
        Self("/nix/store".to_owned())
    }
}

impl StoreDir {
    /// A store directory: absolute, without a trailing slash.
    pub fn new(dir: &str) -> Option<Self> {
        let ok = dir.starts_with('/') && dir.len() > 1 && !dir.ends_with('/');
        ok.then(|| Self(dir.to_owned()))
    }

    /// The directory as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A store path's full logical path.
    pub fn print(&self, path: &StorePath) -> String {
        format!("{}/{}", self.0, path.base_name)
    }

    /// Parses a full logical path (`/nix/store/<hash>-<name>`).
    pub fn parse(&self, full: &str) -> Result<StorePath, BadStorePath> {
        match full.rsplit_once('/') {
            Some((dir, base)) if dir == self.0 => StorePath::from_base_name(base),
            _ => Err(BadStorePath::NotInStore(full.to_owned())),
        }
    }

    /// Parses a path that may lie inside a store object
    /// (`/nix/store/<hash>-<name>/bin/x`) and returns the store object.
    pub fn parse_within(&self, full: &Path) -> Result<StorePath, BadStorePath> {
        let not_in_store = || BadStorePath::NotInStore(full.display().to_string());
        let rest = full
            .strip_prefix(&self.0)
            .map_err(|_| not_in_store())?
            .to_str()
            .ok_or_else(not_in_store)?;
        let base = rest.split('/').next().unwrap_or_default();
        StorePath::from_base_name(base)
    }

    /// Nix's `makeStorePath`: the path of a fingerprint
    /// `<kind>:sha256:<hex>:<store dir>:<name>`, hashed with SHA-256 and
    /// folded to 20 bytes.
    pub fn make_path(
        &self,
        kind: &str,
        inner: &Hash,
        name: &str,
    ) -> Result<StorePath, BadStorePath> {
        let fingerprint = format!("{kind}:{}:{}:{name}", inner.to_prefixed_hex(), self.0);
        let full = Hash::sha256(fingerprint.as_bytes());
        let mut folded = [0u8; 20];
        for (i, b) in full.digest().iter().enumerate() {
            folded[i % 20] ^= b;
        }
        StorePath::from_digest(&folded, name)
    }

    /// The kind with references appended, as text and source paths spell it.
    fn kind_with_references(
        &self,
        kind: &str,
        references: &BTreeSet<StorePath>,
        self_reference: bool,
    ) -> String {
        let mut out = kind.to_owned();
        for reference in references {
            out.push(':');
            out.push_str(&self.print(reference));
        }
        if self_reference {
            out.push_str(":self");
        }
        out
    }

    /// The path of a text object (a derivation, a `builtins.toFile`): its
    /// contents' SHA-256 and its references.
    pub fn make_text_path(
        &self,
        name: &str,
        contents_sha256: &Hash,
        references: &BTreeSet<StorePath>,
    ) -> Result<StorePath, BadStorePath> {
        let kind = self.kind_with_references("text", references, false);
        self.make_path(&kind, contents_sha256, name)
    }

    /// The path of a content-addressed object: `source` for a recursive
    /// SHA-256 (the path `nix-store --add` gives), `output:out` over the
    /// `fixed:out:` fingerprint for every other method and algorithm.
    pub fn make_fixed_output_path(
        &self,
        method: IngestionMethod,
        hash: &Hash,
        name: &str,
        references: &BTreeSet<StorePath>,
        self_reference: bool,
    ) -> Result<StorePath, BadStorePath> {
        if method == IngestionMethod::Recursive && hash.algo() == HashAlgo::Sha256 {
            let kind = self.kind_with_references("source", references, self_reference);
            self.make_path(&kind, hash, name)
        } else {
            let inner = format!(
                "fixed:out:{}{}:{}:",
                method.prefix(),
                hash.algo(),
                hash.to_hex()
            );
            self.make_path("output:out", &Hash::sha256(inner.as_bytes()), name)
        }
    }
}

/// How a content-addressed object's hash covers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IngestionMethod {
    /// The hash of a single file's bytes.
    Flat,
    /// The hash of the object's NAR serialisation.
    Recursive,
}

impl IngestionMethod {
    /// `r:` for recursive, nothing for flat, as Nix writes it before an algorithm.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Flat => "",
            Self::Recursive => "r:",
        }
    }
}

/// The name of a derivation's output path: the derivation's name, with
/// `-<output>` unless the output is `out`.
pub fn output_path_name(drv_name: &str, output: &str) -> String {
    if output == "out" {
        drv_name.to_owned()
    } else {
        format!("{drv_name}-{output}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_with_nix_texts() {
        let hash = "h6b6bz6y039rxr8wwm24akjsi596ksh7";
        assert!(StorePath::from_base_name(&format!("{hash}-a.nix")).is_ok());
        let err = |base: &str| StorePath::from_base_name(base).unwrap_err().to_string();
        assert_eq!(
            err(&format!("{hash}-a b")),
            format!("store path '{hash}-a b' contains illegal character ' '")
        );
        assert_eq!(
            err(&format!("{hash}-.a")),
            format!("store path '{hash}-.a' starts with illegal character '.'")
        );
        assert_eq!(
            err("e6b6bz6y039rxr8wwm24akjsi596ksh7-a"),
            "store path 'e6b6bz6y039rxr8wwm24akjsi596ksh7-a' contains illegal base-32 character 'e'"
        );
        assert_eq!(
            err("short"),
            "'short' is too short to be a valid store path"
        );
        assert!(err(&format!("{hash}-{}", "x".repeat(212))).contains("longer than 211"));
    }

    #[test]
    fn paths_match_the_ones_nix_made() {
        // From a real store written by nix-instantiate 2.8: `./a.nix` added as a
        // source, with its NAR hash as the database records it.
        let dir = StoreDir::default();
        let nar = Hash::parse(
            "sha256:0f9ce601da876907bb0a581d95f4e3893f9d0b45b8db99287e7fa1069db6b49e",
            None,
        )
        .unwrap();
        let path = dir
            .make_fixed_output_path(
                IngestionMethod::Recursive,
                &nar,
                "a.nix",
                &BTreeSet::new(),
                false,
            )
            .unwrap();
        assert_eq!(
            dir.print(&path),
            "/nix/store/h6b6bz6y039rxr8wwm24akjsi596ksh7-a.nix"
        );
    }
}
