//! `sandbox-paths` entries in Nix's syntax (SPEC B50, B53).
//!
//! A token is `P` (bind host `P` at `P`) or `T=S` (bind host `S` at `T`,
//! split at the first `=`); a trailing `?` makes the entry optional: skipped
//! when its source does not exist.

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One `sandbox-paths` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxPath {
    /// Where it appears inside the sandbox, as written.
    pub target: PathBuf,
    /// The host path bound there.
    pub source: PathBuf,
    /// Skip it silently when the source does not exist.
    pub optional: bool,
}

/// Why a `sandbox-paths` entry is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SandboxPathError {
    /// An empty token, or an empty side of `=`.
    #[error("empty sandbox path in '{0}'")]
    Empty(String),
    /// A relative target or source.
    #[error("sandbox path '{0}' is not an absolute path")]
    NotAbsolute(String),
    /// The target leaves the sandbox root (Nix's text).
    #[error("sandbox path '{0}' escapes the chroot")]
    Escapes(String),
    /// The target ends in `.` or `..` (Nix's text).
    #[error("sandbox path to bind mount in the chroot has an invalid filename: '{0}'")]
    InvalidFilename(String),
    /// A NUL byte.
    #[error("sandbox path '{0}' contains a NUL byte")]
    Nul(String),
}

impl SandboxPath {
    /// The target with `.`, `..` and repeated slashes resolved lexically,
    /// checked as Nix checks it (B53): `..` may not climb above the root
    /// and the last component may not be `.` or `..`. The root itself is
    /// returned as `/` (callers refuse it where it escapes).
    pub fn normalized_target(&self) -> Result<PathBuf, SandboxPathError> {
        normalize_target(&self.target)
    }
}

/// Resolves `target` lexically as described at
/// [`SandboxPath::normalized_target`].
pub fn normalize_target(target: &Path) -> Result<PathBuf, SandboxPathError> {
    let shown = || target.display().to_string();
    if !target.is_absolute() {
        return Err(SandboxPathError::NotAbsolute(shown()));
    }
    let text = target.as_os_str().as_encoded_bytes();
    let last = text.rsplit(|b| *b == b'/').next().unwrap_or_default();
    if last == b"." || last == b".." {
        return Err(SandboxPathError::InvalidFilename(shown()));
    }
    let mut normal = PathBuf::from("/");
    for component in target.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                if !normal.pop() {
                    return Err(SandboxPathError::Escapes(shown()));
                }
            }
            Component::Normal(name) => normal.push(name),
            Component::Prefix(_) => return Err(SandboxPathError::NotAbsolute(shown())),
        }
    }
    Ok(normal)
}

impl FromStr for SandboxPath {
    type Err = SandboxPathError;

    fn from_str(token: &str) -> Result<Self, Self::Err> {
        if token.contains('\0') {
            return Err(SandboxPathError::Nul(token.replace('\0', "\\0")));
        }
        let (body, optional) = match token.strip_suffix('?') {
            Some(body) => (body, true),
            None => (token, false),
        };
        let (target, source) = body.split_once('=').unwrap_or((body, body));
        if target.is_empty() || source.is_empty() {
            return Err(SandboxPathError::Empty(token.to_string()));
        }
        for side in [target, source] {
            if !side.starts_with('/') {
                return Err(SandboxPathError::NotAbsolute(side.to_string()));
            }
        }
        Ok(SandboxPath {
            target: PathBuf::from(target),
            source: PathBuf::from(source),
            optional,
        })
    }
}

impl fmt::Display for SandboxPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.target == self.source {
            write!(f, "{}", self.target.display())?;
        } else {
            write!(f, "{}={}", self.target.display(), self.source.display())?;
        }
        if self.optional {
            f.write_str("?")?;
        }
        Ok(())
    }
}

impl Serialize for SandboxPath {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SandboxPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let token = String::deserialize(deserializer)?;
        token.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(token: &str) -> SandboxPath {
        token.parse().unwrap()
    }

    #[test]
    fn plain_path_binds_itself() {
        let p = parse("/usr/lib");
        assert_eq!(p.target, PathBuf::from("/usr/lib"));
        assert_eq!(p.source, PathBuf::from("/usr/lib"));
        assert!(!p.optional);
    }

    #[test]
    fn target_equals_source_splits_at_first_equals() {
        let p = parse("/bin=/nix-bin=x");
        assert_eq!(p.target, PathBuf::from("/bin"));
        assert_eq!(p.source, PathBuf::from("/nix-bin=x"));
    }

    #[test]
    fn trailing_question_mark_is_optional_on_both_forms() {
        assert!(parse("/dev/nvidiactl?").optional);
        let p = parse("/bin/sh=/opt/busybox?");
        assert!(p.optional);
        assert_eq!(p.source, PathBuf::from("/opt/busybox"));
    }

    #[test]
    fn display_round_trips() {
        for token in ["/a", "/a=/b", "/a?", "/a=/b?"] {
            assert_eq!(parse(token).to_string(), token);
        }
    }

    #[test]
    fn relative_and_empty_entries_are_refused() {
        assert_eq!(
            "foo".parse::<SandboxPath>(),
            Err(SandboxPathError::NotAbsolute("foo".into()))
        );
        assert_eq!(
            "/a=bar".parse::<SandboxPath>(),
            Err(SandboxPathError::NotAbsolute("bar".into()))
        );
        assert!(matches!(
            "=/a".parse::<SandboxPath>(),
            Err(SandboxPathError::Empty(_))
        ));
        assert!(matches!(
            "?".parse::<SandboxPath>(),
            Err(SandboxPathError::Empty(_))
        ));
    }

    #[test]
    fn targets_normalize_like_nix() {
        let n = |t: &str| normalize_target(Path::new(t));
        assert_eq!(n("/a//b/./c"), Ok(PathBuf::from("/a/b/c")));
        assert_eq!(n("/a/../b"), Ok(PathBuf::from("/b")));
        assert_eq!(
            n("/../etc"),
            Err(SandboxPathError::Escapes("/../etc".into()))
        );
        assert_eq!(
            n("/a/../../etc/x"),
            Err(SandboxPathError::Escapes("/a/../../etc/x".into()))
        );
        assert_eq!(
            n("/a/.."),
            Err(SandboxPathError::InvalidFilename("/a/..".into()))
        );
        assert_eq!(
            n("/a/."),
            Err(SandboxPathError::InvalidFilename("/a/.".into()))
        );
        assert_eq!(n("/"), Ok(PathBuf::from("/")));
    }

    #[test]
    fn nix_texts_are_kept() {
        assert_eq!(
            SandboxPathError::Escapes("/../x".into()).to_string(),
            "sandbox path '/../x' escapes the chroot"
        );
        assert_eq!(
            SandboxPathError::InvalidFilename("/x/..".into()).to_string(),
            "sandbox path to bind mount in the chroot has an invalid filename: '/x/..'"
        );
    }
}
