//! Where a store lives: its logical store directory (the one paths are
//! written with), the real directory on the host, and its state directory.

use std::path::{Path, PathBuf};

use crate::path::{BadStorePath, StoreDir, StorePath};

/// A local store's directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreLayout {
    /// The logical store directory (`/nix/store`).
    pub store_dir: StoreDir,
    /// Where the store directory really is.
    pub real_store_dir: PathBuf,
    /// The state directory: the database, locks, hermetic's records.
    pub state_dir: PathBuf,
    /// Where build logs go (`drvs/<2>/<rest>.bz2` under it): Nix's log
    /// directory.
    pub log_dir: PathBuf,
}

/// A `--store` URI hermetic cannot open.
#[derive(Debug)]
pub struct StoreUriError {
    /// The URI.
    pub uri: String,
    /// Why, when more can be said than Nix's words.
    pub why: String,
}

impl std::fmt::Display for StoreUriError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Nix's words, then why.
        write!(f, "don't know how to open Nix store '{}'", self.uri)?;
        if !self.why.is_empty() {
            write!(f, ": {}", self.why)?;
        }
        Ok(())
    }
}

impl std::error::Error for StoreUriError {}

impl StoreLayout {
    /// The system store: `NIX_STORE_DIR` or `/nix/store`, state in
    /// `NIX_STATE_DIR` or `/nix/var/nix`, logs in `NIX_LOG_DIR` or
    /// `/nix/var/log/nix` (the variables Nix reads too).
    pub fn system() -> Self {
        let var = |name: &str| std::env::var_os(name).filter(|d| !d.is_empty());
        let state_dir =
            var("NIX_STATE_DIR").map_or_else(|| PathBuf::from("/nix/var/nix"), PathBuf::from);
        let store_dir = var("NIX_STORE_DIR")
            .and_then(|d| StoreDir::new(&d.to_string_lossy()))
            .unwrap_or_default();
        let log_dir =
            var("NIX_LOG_DIR").map_or_else(|| PathBuf::from("/nix/var/log/nix"), PathBuf::from);
        Self {
            real_store_dir: PathBuf::from(store_dir.as_str()),
            store_dir,
            state_dir,
            log_dir,
        }
    }

    /// The local store a Nix store URI names, as `--store` takes it:
    /// `auto`, `local` (the system store), `local?root=DIR` or a path
    /// (`DIR` as a root, relative ones from the working directory). Any
    /// other URI is refused, never taken for a directory name: `daemon`
    /// and `unix://…` with what to do instead, the rest in Nix's words.
    pub fn from_store_uri(uri: &str) -> Result<Self, StoreUriError> {
        let refuse = |why: String| StoreUriError {
            uri: uri.to_owned(),
            why,
        };
        let (base, query) = uri.split_once('?').unwrap_or((uri, ""));
        let mut root = None;
        for param in query.split('&').filter(|p| !p.is_empty()) {
            match param.split_once('=') {
                Some(("root", dir)) if !dir.is_empty() => root = Some(PathBuf::from(dir)),
                _ => {
                    return Err(refuse(format!(
                        "hermetic knows no store setting '{param}' (it takes only 'root=DIR')"
                    )));
                }
            }
        }
        let as_root = |dir: &Path| -> Result<Self, StoreUriError> {
            let dir = if dir.is_absolute() {
                dir.to_path_buf()
            } else {
                std::env::current_dir()
                    .map_err(|e| refuse(format!("cannot find the working directory: {e}")))?
                    .join(dir)
            };
            Ok(Self::under_root(&dir))
        };
        match base {
            "" | "auto" | "local" => match root {
                Some(dir) => as_root(&dir),
                None => Ok(Self::system()),
            },
            "daemon" => Err(refuse(
                "of hermetic's commands only 'hermetic build' goes through a daemon; \
                 this one works on a store directly: run it as the store's owner (or \
                 through 'sudo')"
                    .into(),
            )),
            _ if base.starts_with("unix://") => Err(refuse(
                "of hermetic's commands only 'hermetic build' goes through a daemon's \
                 socket; this one works on a store directly"
                    .into(),
            )),
            _ if base.starts_with('/') || base.starts_with("./") || base.starts_with("../") => {
                if root.is_some() {
                    return Err(refuse("a path and 'root=' both name the root".into()));
                }
                as_root(Path::new(base))
            }
            _ => Err(StoreUriError {
                uri: uri.to_owned(),
                why: String::new(),
            }),
        }
    }

    /// The socket of the daemon a `--store` URI names: `daemon` (Nix's
    /// `NIX_DAEMON_SOCKET_PATH`, else `<state>/daemon-socket/socket` of the
    /// system's state directory) or `unix://PATH`; `None` for any other.
    pub fn daemon_socket(uri: &str) -> Option<PathBuf> {
        let (base, query) = uri.split_once('?').unwrap_or((uri, ""));
        // `root=` says where the daemon's store is seen from here (Nix's
        // client reads files through it); hermetic's client reads none.
        if !query
            .split('&')
            .all(|p| p.is_empty() || p.starts_with("root="))
        {
            return None;
        }
        if base == "daemon" {
            let from_env = std::env::var_os("NIX_DAEMON_SOCKET_PATH").filter(|p| !p.is_empty());
            return Some(from_env.map_or_else(
                || Self::system().state_dir.join("daemon-socket/socket"),
                PathBuf::from,
            ));
        }
        base.strip_prefix("unix://")
            .filter(|path| path.starts_with('/'))
            .map(PathBuf::from)
    }

    /// A store under another root, laid out as Nix's `local?root=DIR`:
    /// `DIR/nix/store` holding paths written `/nix/store/…`, state in
    /// `DIR/nix/var/nix`, logs in `DIR/nix/var/log/nix`.
    pub fn under_root(root: &Path) -> Self {
        Self {
            store_dir: StoreDir::default(),
            real_store_dir: root.join("nix/store"),
            state_dir: root.join("nix/var/nix"),
            log_dir: root.join("nix/var/log/nix"),
        }
    }

    /// How `--store` names this store to hermetic and sandbox-run: nothing
    /// for the system store, its root for one laid out under a root (as
    /// `from_store_uri` reads it back).
    pub fn store_arg(&self) -> Option<PathBuf> {
        if *self == Self::system() {
            return None;
        }
        let root = self.real_store_dir.parent()?.parent()?;
        (*self == Self::under_root(root)).then(|| root.to_owned())
    }

    /// Where a store path really is.
    pub fn real_path(&self, path: &StorePath) -> PathBuf {
        self.real_store_dir.join(path.base_name())
    }

    /// The database directory.
    pub fn db_dir(&self) -> PathBuf {
        self.state_dir.join("db")
    }

    /// The store object a user's path names: a logical path
    /// (`/nix/store/…`), or a path in the real store directory, either of
    /// them possibly inside the object.
    pub fn parse_user_path(&self, path: &Path) -> Result<StorePath, BadStorePath> {
        match path.strip_prefix(&self.real_store_dir) {
            Ok(rest) if self.real_store_dir != Path::new(self.store_dir.as_str()) => self
                .store_dir
                .parse_within(&Path::new(self.store_dir.as_str()).join(rest)),
            _ => self.store_dir.parse_within(path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_uris_name_local_stores_and_nothing_else() {
        let root = |uri: &str| StoreLayout::from_store_uri(uri).unwrap().state_dir;
        assert_eq!(root("local?root=/x"), PathBuf::from("/x/nix/var/nix"));
        assert_eq!(root("/y"), PathBuf::from("/y/nix/var/nix"));
        assert_eq!(root("?root=/z"), PathBuf::from("/z/nix/var/nix"));
        assert_eq!(
            StoreLayout::from_store_uri("local").unwrap(),
            StoreLayout::system()
        );
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(root("./rel"), cwd.join("rel/nix/var/nix"));
        for (uri, said) in [
            (
                "daemon",
                "don't know how to open Nix store 'daemon': of hermetic's commands only 'hermetic build'",
            ),
            (
                "unix:///run/s",
                "only 'hermetic build' goes through a daemon's socket",
            ),
            (
                "s3://bucket",
                "don't know how to open Nix store 's3://bucket'",
            ),
            ("somedir", "don't know how to open Nix store 'somedir'"),
            ("local?root=/x&foo=1", "knows no store setting 'foo=1'"),
        ] {
            let refused = StoreLayout::from_store_uri(uri).unwrap_err().to_string();
            assert!(refused.contains(said), "{uri}: {refused}");
        }
    }

    #[test]
    fn daemon_uris_name_sockets() {
        assert_eq!(
            StoreLayout::daemon_socket("unix:///run/s"),
            Some(PathBuf::from("/run/s"))
        );
        assert!(StoreLayout::daemon_socket("daemon").is_some());
        assert_eq!(
            StoreLayout::daemon_socket("unix:///run/s?root=/r"),
            Some(PathBuf::from("/run/s"))
        );
        for other in ["local", "/x", "unix://rel", "daemon?x=1", "ssh-ng://h"] {
            assert_eq!(StoreLayout::daemon_socket(other), None, "{other}");
        }
    }

    #[test]
    fn store_arg_names_a_store_as_from_store_uri_reads_it() {
        assert_eq!(StoreLayout::system().store_arg(), None);
        let under = StoreLayout::from_store_uri("local?root=/x/y").unwrap();
        let arg = under.store_arg().unwrap();
        assert_eq!(arg, PathBuf::from("/x/y"));
        assert_eq!(
            StoreLayout::from_store_uri(arg.to_str().unwrap()).unwrap(),
            under
        );
    }
}
