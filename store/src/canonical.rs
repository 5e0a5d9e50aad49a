//! Canonical store objects: read-only (0444, or 0555 for directories and
//! executables), modification time 1, owned by the store's owner. This is
//! what makes two copies of one path identical to the last bit Nix keeps.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use nix::sys::stat::{UtimensatFlags, utimensat};
use nix::sys::time::TimeSpec;

use crate::error::{StoreError, io_err};

/// The modification time of every store object.
pub const STORE_MTIME: i64 = 1;

/// The mode a canonical object of this kind and mode has, or `None` for a
/// symlink (whose mode means nothing).
pub fn canonical_mode(meta: &fs::Metadata) -> Option<u32> {
    let kind = meta.file_type();
    if kind.is_symlink() {
        None
    } else if kind.is_dir() || meta.mode() & 0o100 != 0 {
        Some(0o555)
    } else {
        Some(0o444)
    }
}

/// Makes the tree at `path` canonical, owned by `uid`:`gid`.
pub fn canonicalise(path: &Path, uid: u32, gid: u32) -> Result<(), StoreError> {
    let meta = fs::symlink_metadata(path).map_err(io_err("inspect", path))?;
    if meta.is_dir() {
        for entry in fs::read_dir(path).map_err(io_err("read directory", path))? {
            let entry = entry.map_err(io_err("read directory", path))?;
            canonicalise(&entry.path(), uid, gid)?;
        }
    }
    canonicalise_one(path, &meta, uid, gid)
}

/// Makes one file, directory or symlink canonical (not what is inside a
/// directory); `meta` is what `lstat` said of it.
pub fn canonicalise_one(
    path: &Path,
    meta: &fs::Metadata,
    uid: u32,
    gid: u32,
) -> Result<(), StoreError> {
    if meta.uid() != uid || meta.gid() != gid {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
            .map_err(io_err("change the owner of", path))?;
    }
    if let Some(mode) = canonical_mode(meta)
        && meta.mode() & 0o7777 != mode
    {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(io_err("chmod", path))?;
    }
    if meta.mtime() != STORE_MTIME || meta.mtime_nsec() != 0 {
        utimensat(
            nix::fcntl::AT_FDCWD,
            path,
            &TimeSpec::UTIME_OMIT,
            &TimeSpec::new(STORE_MTIME, 0),
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| io_err("set the times of", path)(e.into()))?;
    }
    Ok(())
}

/// The first object in the tree at `path` that is not canonical, with what
/// is wrong with it.
pub fn first_non_canonical(path: &Path, uid: u32) -> Result<Option<String>, StoreError> {
    let meta = fs::symlink_metadata(path).map_err(io_err("inspect", path))?;
    let wrong = if meta.uid() != uid {
        Some(format!(
            "'{}' is owned by uid {}, not {uid}",
            path.display(),
            meta.uid()
        ))
    } else if canonical_mode(&meta).is_some_and(|m| meta.mode() & 0o7777 != m) {
        Some(format!(
            "'{}' has mode {:o}",
            path.display(),
            meta.mode() & 0o7777
        ))
    } else if meta.mtime() != STORE_MTIME {
        Some(format!(
            "'{}' has modification time {}",
            path.display(),
            meta.mtime()
        ))
    } else {
        None
    };
    if wrong.is_some() || !meta.is_dir() {
        return Ok(wrong);
    }
    for entry in fs::read_dir(path).map_err(io_err("read directory", path))? {
        let entry = entry.map_err(io_err("read directory", path))?;
        if let Some(wrong) = first_non_canonical(&entry.path(), uid)? {
            return Ok(Some(wrong));
        }
    }
    Ok(None)
}
