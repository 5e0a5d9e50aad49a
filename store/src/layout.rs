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
