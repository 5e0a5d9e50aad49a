//! What happens to a build's outputs before they are registered (B84–B88):
//! each must exist, its root must not be writable by others or owned by
//! anyone but the builder; every file in it must be a regular file,
//! directory or symlink owned by the build user (which catches a hard link
//! to a foreign file); extended attributes go; then the object is made
//! canonical, hashed and scanned for references.

use std::collections::{BTreeSet, HashSet};
use std::ffi::CString;
use std::fs;
use std::io::{BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use hermetic_store::hash::HashingWriter;
use hermetic_store::{Hash, HashAlgo, IngestionMethod, StorePath, nar};

use crate::error::{BuildError, io_err};
use crate::refscan::RefScanner;

/// Extended attributes that are kept (Nix's `ignored-acls` default).
pub const IGNORED_XATTRS: [&str; 3] = ["security.selinux", "system.nfs4_acl", "security.csm"];

/// The host ids a builder's files may be owned by.
#[derive(Debug, Clone, Copy)]
pub struct BuilderIds {
    /// The first host uid of the builder.
    pub uid: u32,
    /// How many uids from it (65536 for a uid-range build).
    pub count: u32,
}

impl BuilderIds {
    fn owns(&self, uid: u32) -> bool {
        uid >= self.uid && uid - self.uid < self.count
    }
}

/// Checks an output's root (B84, B85).
pub fn check_root(
    root: &Path,
    output: &str,
    printed: &str,
    drv: &str,
    builder: BuilderIds,
) -> Result<(), BuildError> {
    let meta = fs::symlink_metadata(root).map_err(|_| BuildError::MissingOutput {
        drv: drv.to_owned(),
        output: output.to_owned(),
        path: printed.to_owned(),
    })?;
    if !meta.file_type().is_symlink() && (meta.mode() & 0o022 != 0 || !builder.owns(meta.uid())) {
        return Err(BuildError::SuspiciousOutput {
            path: printed.to_owned(),
            output: output.to_owned(),
        });
    }
    Ok(())
}

/// Walks an output (B86): only regular files, directories and symlinks,
/// each owned by the builder unless its inode was seen already in this
/// build; strips extended attributes but Nix's ignored ones. Directories
/// may nest at most as deep as a NAR may ([`nar::MAX_DEPTH`]): the walks
/// that follow (and every store that copies the output) stop there.
pub fn check_tree(
    path: &Path,
    builder: BuilderIds,
    seen: &mut HashSet<(u64, u64)>,
) -> Result<(), BuildError> {
    check_tree_at(path, builder, seen, 0)
}

fn check_tree_at(
    path: &Path,
    builder: BuilderIds,
    seen: &mut HashSet<(u64, u64)>,
    depth: usize,
) -> Result<(), BuildError> {
    if depth > nar::MAX_DEPTH {
        return Err(BuildError::TooDeep {
            path: path.display().to_string(),
            limit: nar::MAX_DEPTH,
        });
    }
    let meta = fs::symlink_metadata(path).map_err(io_err("inspect", path))?;
    let kind = meta.file_type();
    if !(kind.is_file() || kind.is_dir() || kind.is_symlink()) {
        return Err(BuildError::UnsupportedType(path.display().to_string()));
    }
    let first_time = seen.insert((meta.dev(), meta.ino()));
    if first_time && !builder.owns(meta.uid()) {
        return Err(BuildError::InvalidOwnership(path.display().to_string()));
    }
    strip_xattrs(path)?;
    if kind.is_dir() {
        for entry in fs::read_dir(path).map_err(io_err("read directory", path))? {
            let entry = entry.map_err(io_err("read directory", path))?;
            check_tree_at(&entry.path(), builder, seen, depth + 1)?;
        }
    }
    Ok(())
}

fn strip_xattrs(path: &Path) -> Result<(), BuildError> {
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io_err("inspect", path)(std::io::Error::from(std::io::ErrorKind::InvalidInput))
    })?;
    let names = match hermetic_sys::list_xattrs(&c_path) {
        Ok(names) => names,
        Err(nix::errno::Errno::ENOTSUP) => return Ok(()),
        Err(errno) => {
            return Err(io_err("list the extended attributes of", path)(
                errno.into(),
            ));
        }
    };
    for name in names {
        if IGNORED_XATTRS
            .iter()
            .any(|kept| kept.as_bytes() == name.as_slice())
        {
            continue;
        }
        let c_name = CString::new(name).expect("xattr names have no NUL");
        hermetic_sys::remove_xattr(&c_path, &c_name)
            .map_err(|e| io_err("remove an extended attribute of", path)(e.into()))?;
    }
    Ok(())
}

/// The NAR hash, NAR size and references of a canonical output, in one
/// pass over it; `candidates` are the paths it may refer to.
pub fn hash_and_scan(
    path: &Path,
    candidates: impl IntoIterator<Item = StorePath>,
) -> Result<(Hash, u64, BTreeSet<StorePath>), BuildError> {
    struct Both {
        hash: HashingWriter,
        scan: RefScanner,
    }
    impl Write for Both {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.hash.write_all(buf)?;
            self.scan.write_all(buf)?;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut sink = BufWriter::with_capacity(
        64 * 1024,
        Both {
            hash: HashingWriter::new(),
            scan: RefScanner::new(candidates),
        },
    );
    nar::dump(path, &mut sink).map_err(hermetic_store::StoreError::from)?;
    let both = sink
        .into_inner()
        .map_err(|e| io_err("hash", path)(e.into_error()))?;
    let (hash, size) = both.hash.finish();
    Ok((hash, size, both.scan.finish()))
}

/// The hash a fixed output is checked against (B88): of the file's bytes
/// (flat; it must be a non-executable regular file) or of its NAR.
pub fn fixed_output_hash(
    path: &Path,
    printed: &str,
    method: IngestionMethod,
    algo: HashAlgo,
) -> Result<Hash, BuildError> {
    if method == IngestionMethod::Flat {
        let meta = fs::symlink_metadata(path).map_err(io_err("inspect", path))?;
        if !meta.is_file() || meta.mode() & 0o100 != 0 {
            return Err(BuildError::FlatOutputNotAFile(printed.to_owned()));
        }
    }
    hermetic_store::content_address::content_hash(path, method, algo)
        .map_err(|e| hermetic_store::StoreError::from(e).into())
}
