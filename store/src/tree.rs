//! Trees that a builder or a client may have touched, worked on through
//! directory descriptors, never by path: sealing one before it is walked
//! by path ([`seal_tree`]), and removing one ([`remove_tree`]). In a
//! removal, each directory is taken from
//! everyone else (owned by the remover, mode 0700) before it is read, an
//! entry swapped for a symlink meanwhile is removed as a symlink and never
//! followed, and any depth is handled with a bounded number of descriptors
//! open: a directory too deep is moved up to the top and emptied from
//! there.

use std::cell::Cell;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{OFlag, RenameFlags, openat, renameat2};
use nix::sys::stat::{Mode, fchmod};
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::error::{StoreError, io_err};

/// How deep the walk descends holding a descriptor per level before it
/// moves a directory up to the top.
const MAX_OPEN_DEPTH: usize = 64;

/// Removes the file, symlink or directory tree at `path`; a missing path is
/// fine. The directory holding it is trusted (a store or state directory);
/// nothing below it is.
pub fn remove_tree(path: &Path) -> Result<(), StoreError> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io_err("remove", path)(std::io::Error::other(
            "not a path with a last component",
        )));
    };
    let parent = match open_dir(nix::fcntl::AT_FDCWD, parent.as_os_str(), false) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(io_err("open directory", parent)(e.into())),
    };
    let walk = Walk { path, freed: None };
    walk.remove_entry(&parent, name, None, 0)
}

/// Removes the tree at `path` as [`remove_tree`] does, and says how many
/// bytes that likely freed, counted as Nix counts them: the size of each
/// file that had one or two links (a second one may be the store's
/// `.links` copy).
pub fn remove_tree_counting(path: &Path) -> Result<u64, StoreError> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io_err("remove", path)(std::io::Error::other(
            "not a path with a last component",
        )));
    };
    let parent = match open_dir(nix::fcntl::AT_FDCWD, parent.as_os_str(), false) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(0),
        Err(e) => return Err(io_err("open directory", parent)(e.into())),
    };
    let freed = Cell::new(0);
    let walk = Walk {
        path,
        freed: Some(&freed),
    };
    walk.remove_entry(&parent, name, None, 0)?;
    Ok(freed.get())
}

/// Closes every directory of the tree at `path` to its owner (mode 0700),
/// each before the ones below it, through descriptors and never following
/// a symlink, down to `max_depth` levels. Another user holding a descriptor
/// into the tree (one a builder passed on) can then change none of its
/// directories, so walks of it by path see what is there. The directory
/// holding `path` is trusted; a `path` that is not a directory is left as
/// it is.
pub fn seal_tree(path: &Path, max_depth: usize) -> Result<(), StoreError> {
    // A top closed to its owner is opened to it through its parent.
    let opened = match open_dir(nix::fcntl::AT_FDCWD, path.as_os_str(), true) {
        Err(Errno::EACCES) => match (path.parent(), path.file_name()) {
            (Some(parent), Some(name)) => open_dir(nix::fcntl::AT_FDCWD, parent.as_os_str(), false)
                .and_then(|parent| open_subdir(&parent, name)),
            _ => Err(Errno::EACCES),
        },
        opened => opened,
    };
    let top = match opened {
        Ok(fd) => fd,
        Err(Errno::ENOENT | Errno::ELOOP | Errno::ENOTDIR) => return Ok(()),
        Err(e) => return Err(io_err("open directory", path)(e.into())),
    };
    Walk { path, freed: None }.seal(&top, 0, max_depth)
}

/// One walk (a removal or a seal): the path it started at, for errors.
struct Walk<'a> {
    path: &'a Path,
    /// Where a removal that counts adds the bytes it frees.
    freed: Option<&'a Cell<u64>>,
}

impl Walk<'_> {
    fn err(&self, op: &'static str) -> impl FnOnce(Errno) -> StoreError + '_ {
        move |e| io_err(op, self.path)(e.into())
    }

    /// Removes the entry `name` of `dir`, whatever it is. `top` is the
    /// directory deep ones are moved to (none while removing the top
    /// itself), `depth` how many descriptors are open above `dir`.
    fn remove_entry(
        &self,
        dir: &OwnedFd,
        name: &OsStr,
        top: Option<&OwnedFd>,
        depth: usize,
    ) -> Result<(), StoreError> {
        loop {
            // Counting, the entry's type is known first: a directory is not
            // tried as a file.
            let mut is_dir = false;
            if let Some(freed) = self.freed {
                use nix::sys::stat::{SFlag, fstatat};
                if let Ok(st) = fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
                    is_dir =
                        SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
                    if !is_dir && matches!(st.st_nlink, 1 | 2) {
                        freed.set(freed.get() + st.st_size as u64);
                    }
                }
            }
            if !is_dir {
                match unlinkat(dir.as_fd(), name, UnlinkatFlags::NoRemoveDir) {
                    Ok(()) | Err(Errno::ENOENT) => return Ok(()),
                    Err(Errno::EISDIR) => {}
                    Err(e) => return Err(self.err("remove")(e)),
                }
            }
            if let Some(top) = top
                && depth >= MAX_OPEN_DEPTH
            {
                return self.move_to_top(dir, name, top);
            }
            let sub = match open_subdir(dir, name) {
                Ok(sub) => sub,
                // Swapped for something else since: unlink that instead.
                Err(Errno::ELOOP | Errno::ENOTDIR) => continue,
                Err(Errno::ENOENT) => return Ok(()),
                Err(e) => return Err(self.err("open directory")(e)),
            };
            self.empty(&sub, top.unwrap_or(&sub), depth + 1)?;
            match unlinkat(dir.as_fd(), name, UnlinkatFlags::RemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => return Ok(()),
                // Something appeared in it after all, or it was swapped for
                // something else: go round again.
                Err(Errno::ENOTEMPTY | Errno::ENOTDIR) => continue,
                Err(e) => return Err(self.err("remove")(e)),
            }
        }
    }

    /// Removes everything in the directory `dir`, after taking it from
    /// everyone else.
    fn empty(&self, dir: &OwnedFd, top: &OwnedFd, depth: usize) -> Result<(), StoreError> {
        if nix::unistd::geteuid().is_root() {
            // A directory the builder (or another user) owns could be made
            // writable again by them; as root's, only root can.
            nix::unistd::fchown(dir.as_fd(), Some(0.into()), Some(0.into()))
                .map_err(self.err("change the owner of"))?;
        }
        // Not being the owner, an unprivileged remover may be refused: the
        // removals below then say why.
        let _ = fchmod(dir.as_fd(), Mode::S_IRWXU);
        loop {
            let names = self.names(dir)?;
            if names.is_empty() {
                return Ok(());
            }
            for name in names {
                self.remove_entry(dir, &name, Some(top), depth)?;
            }
        }
    }

    /// Moves the directory `name` of `dir` to the top under a fresh name;
    /// the top's own loop empties it from there.
    fn move_to_top(&self, dir: &OwnedFd, name: &OsStr, top: &OwnedFd) -> Result<(), StoreError> {
        for n in 0u64.. {
            let fresh = format!(".hermetic-deep-{}-{n}", std::process::id());
            match renameat2(
                dir.as_fd(),
                name,
                top.as_fd(),
                fresh.as_str(),
                RenameFlags::RENAME_NOREPLACE,
            ) {
                Ok(()) | Err(Errno::ENOENT) => return Ok(()),
                Err(Errno::EEXIST) => continue,
                Err(e) => return Err(self.err("move up")(e)),
            }
        }
        unreachable!("a fresh name is found")
    }

    /// Closes `dir` to its owner, then each directory in it, to
    /// `max_depth` levels below the top.
    fn seal(&self, dir: &OwnedFd, depth: usize, max_depth: usize) -> Result<(), StoreError> {
        fchmod(dir.as_fd(), Mode::S_IRWXU).map_err(self.err("chmod"))?;
        if depth >= max_depth {
            return Ok(());
        }
        for name in self.names(dir)? {
            match open_subdir(dir, &name) {
                Ok(sub) => self.seal(&sub, depth + 1, max_depth)?,
                // Not a directory (a symlink is never followed), or gone.
                Err(Errno::ELOOP | Errno::ENOTDIR | Errno::ENOENT) => {}
                Err(e) => return Err(self.err("open directory")(e)),
            }
        }
        Ok(())
    }

    /// The names in a directory, `.` and `..` left out.
    fn names(&self, dir: &OwnedFd) -> Result<Vec<OsString>, StoreError> {
        let fd = dir
            .try_clone()
            .map_err(io_err("read directory", self.path))?;
        let mut listing = nix::dir::Dir::from_fd(fd).map_err(self.err("read directory"))?;
        let mut names = Vec::new();
        for entry in listing.iter() {
            let entry = entry.map_err(self.err("read directory"))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(OsStr::from_bytes(name).to_owned());
            }
        }
        Ok(names)
    }
}

/// Opens the directory `name` of `dir`, never following a symlink; one
/// closed to its owner (a builder's `chmod 0`, overlayfs's `work/work`),
/// when that is this process, is opened to it first, as a walk by root
/// would get through it anyway.
fn open_subdir(dir: &OwnedFd, name: &OsStr) -> Result<OwnedFd, Errno> {
    match open_dir(dir.as_fd(), name, true) {
        Err(Errno::EACCES) if open_to_owner(dir, name).is_ok() => open_dir(dir.as_fd(), name, true),
        opened => opened,
    }
}

/// Makes the directory `name` of `dir` mode 0700, never following a
/// symlink put in its place: through an `O_PATH` descriptor of it (which
/// `fchmod` refuses, so by its `/proc/self/fd` name).
fn open_to_owner(dir: &OwnedFd, name: &OsStr) -> Result<(), Errno> {
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let held = openat(dir, name, flags, Mode::empty())?;
    let by_fd = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&held));
    nix::sys::stat::fchmodat(
        nix::fcntl::AT_FDCWD,
        by_fd.as_str(),
        Mode::S_IRWXU,
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
}

/// Opens a directory, never following a symlink in its last component when
/// `nofollow`.
fn open_dir(dir: impl AsFd, name: &OsStr, nofollow: bool) -> Result<OwnedFd, Errno> {
    let mut flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    if nofollow {
        flags |= OFlag::O_NOFOLLOW;
    }
    openat(dir, name, flags, Mode::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(label: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("hermetic-tree-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn removes_read_only_trees_files_and_missing_paths() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("plain");
        let tree = dir.join("tree");
        std::fs::create_dir_all(tree.join("a/b")).unwrap();
        std::fs::write(tree.join("a/b/f"), "x").unwrap();
        std::os::unix::fs::symlink("/", tree.join("a/root")).unwrap();
        for d in ["a/b", "a", ""] {
            std::fs::set_permissions(tree.join(d), std::fs::Permissions::from_mode(0o555)).unwrap();
        }
        remove_tree(&tree).unwrap();
        assert!(!tree.exists());
        std::fs::write(dir.join("file"), "x").unwrap();
        remove_tree(&dir.join("file")).unwrap();
        remove_tree(&dir.join("missing")).unwrap();
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn directories_swapped_for_symlinks_during_the_walk_are_never_followed() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = scratch("race");
        // What the symlinks point at: it must come out as it went in.
        let sentinel = dir.join("sentinel");
        std::fs::create_dir(&sentinel).unwrap();
        std::fs::write(sentinel.join("keep"), "x").unwrap();
        std::fs::set_permissions(&sentinel, std::fs::Permissions::from_mode(0o755)).unwrap();
        for round in 0..20 {
            let tree = dir.join(format!("tree-{round}"));
            for i in 0..200 {
                std::fs::create_dir_all(tree.join(format!("d{i}/e"))).unwrap();
            }
            let stop = std::sync::atomic::AtomicBool::new(false);
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    // Swap each directory for a symlink to the sentinel, over
                    // and over, while the removal runs.
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        for i in 0..200 {
                            let d = tree.join(format!("d{i}"));
                            let _ = std::fs::rename(&d, tree.join(format!("moved{i}")));
                            let _ = std::os::unix::fs::symlink(&sentinel, &d);
                        }
                        if !tree.exists() {
                            break;
                        }
                    }
                });
                let removed = remove_tree(&tree);
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                removed.unwrap();
            });
            let _ = std::fs::remove_dir_all(&tree);
            let meta = std::fs::metadata(&sentinel).unwrap();
            assert_eq!(
                meta.mode() & 0o7777,
                0o755,
                "round {round}: the sentinel was chmodded"
            );
            assert!(
                sentinel.join("keep").exists(),
                "round {round}: the sentinel was emptied"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn removes_a_tree_deeper_than_a_path_can_name() {
        // 5,000 levels: more than PATH_MAX lets a path name, and more than
        // a descriptor per level would allow.
        let dir = scratch("deep");
        let mut fd = open_dir(nix::fcntl::AT_FDCWD, dir.as_os_str(), false).unwrap();
        for _ in 0..5000 {
            nix::sys::stat::mkdirat(fd.as_fd(), "d", Mode::S_IRWXU).unwrap();
            fd = open_dir(fd.as_fd(), OsStr::new("d"), true).unwrap();
        }
        drop(fd);
        remove_tree(&dir.join("d")).unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir(&dir).unwrap();
    }
}
