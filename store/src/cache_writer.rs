//! Writing a binary cache in Nix's layout to a directory (`file://DIR`),
//! as `nix copy --to file://DIR` writes one: `nix-cache-info`, each path's
//! NAR compressed with xz under `nar/<file hash>.nar.xz`, then its
//! `<hash>.narinfo`, signed with the given keys. Each file is written
//! under a temporary name and renamed into place, the narinfo last, so a
//! reader never finds a narinfo whose NAR is not whole.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::binary_cache::{CacheError, CacheInfo, NarInfo};
use crate::error::io_err;
use crate::hash::HashingTee;
use crate::path::{StoreDir, StorePath};
use crate::signature::SecretKey;
use crate::{LocalStore, PathInfo, StoreError};

/// A cache directory being written to.
pub struct CacheWriter {
    dir: PathBuf,
    /// Its URL (`file://DIR`), as messages name it.
    pub url: String,
    store_dir: StoreDir,
    keys: Vec<SecretKey>,
}

/// Why a cache could not be written.
#[derive(Debug, thiserror::Error)]
pub enum CacheWriteError {
    /// Only directories are written to.
    #[error("cannot write to binary cache '{0}': only file:// caches can be written")]
    Unsupported(String),
    /// The cache is for another store directory, or unreadable.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// A file of the cache could not be written, the path could not be
    /// read from the store, or its contents are not what the store
    /// registered.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CacheWriter {
    /// Opens (making it if need be) the cache at `url` for paths of
    /// `store_dir`, its narinfos signed with `keys`. An existing cache must
    /// be for `store_dir`.
    pub fn open(
        url: &str,
        store_dir: &StoreDir,
        keys: Vec<SecretKey>,
    ) -> Result<CacheWriter, CacheWriteError> {
        let url = url.trim_end_matches('/').to_owned();
        let Some(dir) = url.strip_prefix("file://") else {
            return Err(CacheWriteError::Unsupported(url));
        };
        let dir = PathBuf::from(dir);
        let nar_dir = dir.join("nar");
        fs::create_dir_all(&nar_dir).map_err(io_err("create", &nar_dir))?;
        let info_file = dir.join("nix-cache-info");
        match fs::read_to_string(&info_file) {
            Ok(text) => {
                let info = CacheInfo::parse(&text);
                if info.store_dir != store_dir.as_str() {
                    return Err(CacheError::WrongStoreDir {
                        url,
                        theirs: info.store_dir,
                        ours: store_dir.as_str().to_owned(),
                    }
                    .into());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let text = format!("StoreDir: {}\n", store_dir.as_str());
                write_atomically(&info_file, text.as_bytes())?;
            }
            Err(e) => return Err(io_err("read", &info_file)(e).into()),
        }
        Ok(CacheWriter {
            dir,
            url,
            store_dir: store_dir.clone(),
            keys,
        })
    }

    /// Whether the cache has `path` already.
    pub fn has(&self, path: &StorePath) -> bool {
        self.narinfo_file(path).exists()
    }

    fn narinfo_file(&self, path: &StorePath) -> PathBuf {
        self.dir.join(format!("{}.narinfo", path.hash_part()))
    }

    /// Writes `paths` and their closures to the cache, each after its
    /// references, skipping what it has; `copying` is told of each path
    /// before it is written.
    pub fn write_closure(
        &self,
        store: &LocalStore,
        paths: &[StorePath],
        copying: &mut dyn FnMut(&StorePath),
    ) -> Result<(), CacheWriteError> {
        let mut left: Vec<(StorePath, PathInfo)> = Vec::new();
        for path in store.closure(paths)? {
            if !self.has(&path) {
                let info = store.query_info(&path)?;
                left.push((path, info));
            }
        }
        while !left.is_empty() {
            let waiting: std::collections::BTreeSet<StorePath> =
                left.iter().map(|(p, _)| p.clone()).collect();
            let (ready, rest): (Vec<_>, Vec<_>) = left.into_iter().partition(|(path, info)| {
                info.references
                    .iter()
                    .all(|r| r == path || !waiting.contains(r))
            });
            // References form no cycle in a valid store; were there one,
            // what is left is written as it is rather than never.
            let (ready, rest) = if ready.is_empty() {
                (rest, Vec::new())
            } else {
                (ready, rest)
            };
            for (path, _) in &ready {
                copying(path);
                self.write(store, path)?;
            }
            left = rest;
        }
        Ok(())
    }

    /// Writes `path` (valid in `store`) to the cache: its NAR, checked
    /// against the registered hash as it is made, then its narinfo.
    pub fn write(&self, store: &LocalStore, path: &StorePath) -> Result<(), CacheWriteError> {
        let mut info: PathInfo = store.query_info(path)?;
        let real = store.layout().real_path(path);
        let temp = self.dir.join(format!(
            "nar/.tmp-{}-{}",
            std::process::id(),
            path.hash_part()
        ));
        let written = (|| {
            let file = fs::File::create(&temp).map_err(io_err("create", &temp))?;
            let compressed = HashingTee::new(io::BufWriter::new(file));
            let mut sink = HashingTee::new(liblzma::write::XzEncoder::new(compressed, 6));
            crate::nar::dump(&real, &mut sink).map_err(StoreError::from)?;
            let (nar_hash, nar_size) = sink.hasher.finish();
            let compressed = sink
                .inner
                .finish()
                .map_err(io_err("compress into", &temp))?;
            let (file_hash, file_size) = compressed.hasher.finish();
            compressed
                .inner
                .into_inner()
                .map_err(|e| io_err("write", &temp)(e.into_error()))?
                .sync_all()
                .map_err(io_err("write", &temp))?;
            if nar_hash != info.nar_hash || nar_size != info.nar_size {
                return Err(StoreError::ImportMismatch {
                    what: "hash",
                    path: self.store_dir.print(path),
                    specified: info.nar_hash.to_string(),
                    got: nar_hash.to_string(),
                }
                .into());
            }
            Ok((file_hash, file_size))
        })();
        let (file_hash, file_size) = match written {
            Ok(done) => done,
            Err(e) => {
                let _ = fs::remove_file(&temp);
                return Err(e);
            }
        };
        let nar_name = format!("nar/{}.nar.xz", file_hash.to_base32());
        let nar_file = self.dir.join(&nar_name);
        fs::rename(&temp, &nar_file).map_err(io_err("rename into place", &nar_file))?;
        for key in &self.keys {
            let sig = key.sign(&self.store_dir, &info);
            if !info.sigs.contains(&sig) {
                info.sigs.push(sig);
            }
        }
        let narinfo = NarInfo {
            info,
            url: nar_name,
            compression: "xz".to_owned(),
            file_size: Some(file_size),
        };
        let text = narinfo.to_text(&self.store_dir, Some(&file_hash));
        Ok(write_atomically(&self.narinfo_file(path), text.as_bytes())?)
    }
}

/// Writes `contents` to `file` through a temporary file and a rename.
fn write_atomically(file: &Path, contents: &[u8]) -> Result<(), StoreError> {
    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let temp = file.with_file_name(format!(".tmp-{}-{name}", std::process::id()));
    fs::write(&temp, contents).map_err(io_err("write", &temp))?;
    fs::rename(&temp, file).map_err(|e| {
        let _ = fs::remove_file(&temp);
        io_err("rename into place", file)(e)
    })
}
