//! Deduplication as Nix does it (`nix-store --optimise`,
//! `auto-optimise-store`): each regular file of a store object is
//! hard-linked to `<store>/.links/<base32 SHA-256 of its NAR>`; a file whose
//! contents are there already is replaced, atomically, by a hard link to
//! that one. Directories opened for it are made read-only again with their
//! timestamp reset, so objects stay canonical.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{StoreError, io_err};
use crate::local::{LocalStore, nar_hash_of};
use crate::path::StorePath;

/// What an optimisation did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OptimiseStats {
    /// Files replaced by a hard link.
    pub files_linked: u64,
    /// Their bytes, now shared.
    pub bytes_freed: u64,
}

/// The state of one run: the `.links` directory and the inodes already in
/// it.
struct Optimiser {
    links: PathBuf,
    store: PathBuf,
    linked_inodes: HashSet<u64>,
    stats: OptimiseStats,
}

impl LocalStore {
    /// Optimises every valid path.
    pub fn optimise_store(&self) -> Result<OptimiseStats, StoreError> {
        let mut optimiser = self.optimiser()?;
        for path in self.all_valid_paths()? {
            optimiser.object(&self.layout.real_path(&path))?;
        }
        Ok(optimiser.stats)
    }

    /// Optimises some paths (new ones, under `auto-optimise-store`).
    pub fn optimise_paths(&self, paths: &[StorePath]) -> Result<OptimiseStats, StoreError> {
        let mut optimiser = self.optimiser()?;
        for path in paths {
            optimiser.object(&self.layout.real_path(path))?;
        }
        Ok(optimiser.stats)
    }

    fn optimiser(&self) -> Result<Optimiser, StoreError> {
        let links = self.layout.real_store_dir.join(".links");
        fs::create_dir_all(&links).map_err(io_err("create directory", &links))?;
        let mut linked_inodes = HashSet::new();
        for entry in fs::read_dir(&links)
            .map_err(io_err("read", &links))?
            .flatten()
        {
            if let Ok(meta) = entry.metadata() {
                linked_inodes.insert(meta.ino());
            }
        }
        Ok(Optimiser {
            links,
            store: self.layout.real_store_dir.clone(),
            linked_inodes,
            stats: OptimiseStats::default(),
        })
    }
}

impl Optimiser {
    /// One store object, or a directory or file inside one.
    fn object(&mut self, path: &Path) -> Result<(), StoreError> {
        let meta = match fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("inspect", path)(e)),
        };
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = fs::read_dir(path)
                .map_err(io_err("read", path))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            for entry in entries {
                self.object(&entry)?;
            }
            return Ok(());
        }
        if !meta.is_file() {
            return Ok(());
        }
        if meta.mode() & 0o200 != 0 {
            // Not canonical: something changed it; Nix leaves it too.
            tracing::warn!("skipping suspicious writable file '{}'", path.display());
            return Ok(());
        }
        if meta.nlink() > 1 && self.linked_inodes.contains(&meta.ino()) {
            return Ok(());
        }
        let (hash, _) = nar_hash_of(path)?;
        let link = self.links.join(hash.to_base32());
        loop {
            match fs::symlink_metadata(&link) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    match fs::hard_link(path, &link) {
                        Ok(()) => {
                            self.linked_inodes.insert(meta.ino());
                            return Ok(());
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                        Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                            tracing::info!(
                                "cannot link '{}' to '{}': {e}",
                                link.display(),
                                path.display()
                            );
                            return Ok(());
                        }
                        Err(e) => return Err(io_err("link into .links", &link)(e)),
                    }
                }
                Err(e) => return Err(io_err("inspect", &link)(e)),
                Ok(linked) if linked.ino() == meta.ino() => return Ok(()),
                Ok(linked) if linked.len() != meta.len() => {
                    tracing::error!("removing corrupted link '{}'", link.display());
                    fs::remove_file(&link).map_err(io_err("remove", &link))?;
                }
                Ok(_) => break,
            }
        }
        let dir = path.parent().expect("a file in the store has a directory");
        let reopen = dir != self.store;
        if reopen {
            let mode = fs::symlink_metadata(dir)
                .map_err(io_err("inspect", dir))?
                .mode();
            fs::set_permissions(dir, fs::Permissions::from_mode((mode & 0o7777) | 0o200))
                .map_err(io_err("chmod", dir))?;
        }
        let replaced = self.replace_with_link(path, &link);
        if reopen {
            restore_read_only(dir)?;
        }
        if replaced? {
            self.stats.files_linked += 1;
            self.stats.bytes_freed += meta.len();
        }
        Ok(())
    }

    /// Replaces `path` by a hard link to `link`, through a temporary link
    /// and a rename. False when the link count is at its limit.
    fn replace_with_link(&self, path: &Path, link: &Path) -> Result<bool, StoreError> {
        let temp = self
            .store
            .join(format!(".tmp-link-{}", crate::pending::unique_id()));
        match fs::hard_link(link, &temp) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EMLINK) => return Ok(false),
            Err(e) => return Err(io_err("link", &temp)(e)),
        }
        if let Err(e) = fs::rename(&temp, path) {
            let _ = fs::remove_file(&temp);
            if e.raw_os_error() == Some(libc::EMLINK) {
                return Ok(false);
            }
            return Err(io_err("rename a link onto", path)(e));
        }
        Ok(true)
    }
}

/// Makes a directory of a store object read-only again with its
/// timestamp at 1, as canonical objects have it.
fn restore_read_only(dir: &Path) -> Result<(), StoreError> {
    let meta = fs::symlink_metadata(dir).map_err(io_err("inspect", dir))?;
    crate::canonical::canonicalise_one(dir, &meta, meta.uid(), meta.gid())
}
