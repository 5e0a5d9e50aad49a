//! The sandbox's scratch directory on the host (D11).
//!
//! One directory per sandbox, on the real store's filesystem when possible,
//! holding what the sandbox writes: the store directory's upper layer (so
//! outputs can later be renamed into the store, never copied), overlayfs's
//! work directory, `/tmp` and the build directory. The sandbox root (a
//! tmpfs) is mounted on the scratch directory itself, inside the sandbox's
//! mount namespace only; the launch reaches the directories below it
//! through descriptors opened beforehand.
//! It is removed when the sandbox ends unless the caller keeps it.

use std::fs::{DirBuilder, Permissions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::spec::BuildUser;

/// The directories of one sandbox's scratch space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Scratch {
    /// The scratch directory itself (mode 0700); the sandbox root is mounted
    /// on it, in the sandbox's mount namespace only.
    pub dir: PathBuf,
    /// Receives the builder's writes to the store directory (1775); absent
    /// for an unsandboxed build, which writes to the real store directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<PathBuf>,
    /// overlayfs's work directory, when the store directory is an overlay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub work: Option<PathBuf>,
    /// The sandbox's `/tmp` (1777); absent for an unsandboxed build.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tmp: Option<PathBuf>,
    /// The build directory, unless the spec names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build: Option<PathBuf>,
    /// An earlier run's kept scratch directory, run in again: what is there
    /// stays, and nothing is removed afterwards.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub reused: bool,
}

/// A scratch operation that failed, with the path.
#[derive(Debug, thiserror::Error)]
#[error("{operation} '{path}'")]
pub struct ScratchError {
    /// What was being done.
    pub operation: &'static str,
    /// To what.
    pub path: PathBuf,
    /// Why it failed.
    #[source]
    pub source: std::io::Error,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Which directories a scratch space holds besides itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScratchNeeds {
    /// The store layer and `/tmp` of a sandbox (not for an unsandboxed build).
    pub sandbox: bool,
    /// overlayfs's work directory.
    pub work: bool,
    /// A build directory (the spec names none).
    pub build: bool,
}

impl Scratch {
    /// Names a fresh scratch directory under `parent` (nothing is created
    /// yet). The name starts with a dot, which no store path's name does.
    pub fn choose(parent: &Path, needs: ScratchNeeds) -> Scratch {
        let pid = std::process::id();
        let dir = loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let candidate = parent.join(format!(".hermetic-{pid}-{n}"));
            if std::fs::symlink_metadata(&candidate).is_err() {
                break candidate;
            }
        };
        Scratch::at(dir, needs, false)
    }

    /// The scratch directory `dir` an earlier run kept, to run in again.
    pub fn reuse(dir: &Path, needs: ScratchNeeds) -> Scratch {
        Scratch::at(dir.to_owned(), needs, true)
    }

    fn at(dir: PathBuf, needs: ScratchNeeds, reused: bool) -> Scratch {
        Scratch {
            store: needs.sandbox.then(|| dir.join("store")),
            work: (needs.sandbox && needs.work).then(|| dir.join("work")),
            tmp: needs.sandbox.then(|| dir.join("tmp")),
            build: needs.build.then(|| dir.join("build")),
            dir,
            reused,
        }
    }

    /// Creates the directories. With a build user (hermetic runs as root),
    /// the store directory is root:<build gid> and the build directory
    /// belongs to the build user, as in Nix; otherwise everything belongs to
    /// the caller.
    pub fn create(&self, build_user: Option<BuildUser>) -> Result<(), ScratchError> {
        let fail = |operation, path: &Path| {
            let path = path.to_path_buf();
            move |source| ScratchError {
                operation,
                path,
                source,
            }
        };
        let reused = self.reused;
        let mkdir = |path: &Path, mode: u32| match DirBuilder::new().mode(mode).create(path) {
            Err(e) if reused && e.kind() == ErrorKind::AlreadyExists => Ok(()),
            other => other.map_err(fail("creating directory", path)),
        };
        let chmod = |path: &Path, mode: u32| {
            std::fs::set_permissions(path, Permissions::from_mode(mode))
                .map_err(fail("changing the mode of", path))
        };
        let chown_to = |path: &Path, uid: Option<u32>, gid: Option<u32>| {
            chown(path, uid, gid).map_err(fail("cannot change ownership of", path))
        };
        mkdir(&self.dir, 0o700)?;
        if let (None, Some(user)) = (&self.store, build_user) {
            // An unsandboxed build reaches its build directory through this
            // directory on the host, not through a bind mount: let the build
            // group through (0710, as Lix does).
            chown_to(&self.dir, None, Some(user.gid))?;
            chmod(&self.dir, 0o710)?;
        }
        if let Some(work) = &self.work {
            mkdir(work, 0o700)?;
        }
        if let Some(store) = &self.store {
            mkdir(store, 0o755)?;
            chmod(store, 0o1775)?;
            if let Some(user) = build_user {
                chown_to(store, None, Some(user.gid))?;
            }
        }
        if let Some(tmp) = &self.tmp {
            mkdir(tmp, 0o755)?;
            chmod(tmp, 0o1777)?;
        }
        if let Some(build) = &self.build {
            mkdir(build, 0o700)?;
            if let Some(user) = build_user {
                chown_to(build, Some(user.uid), Some(user.gid))?;
            }
        }
        if let (true, Some(user)) = (reused, build_user) {
            // The earlier run's builder may have been another build user:
            // what it left becomes this one's.
            for dir in [&self.store, &self.tmp, &self.build].into_iter().flatten() {
                give_contents(dir, user).map_err(fail("cannot change ownership in", dir))?;
            }
        }
        Ok(())
    }

    /// The directories the sandbox reaches by descriptor (everything below
    /// the scratch directory it uses).
    pub fn pinned_dirs(&self) -> Vec<&Path> {
        [
            self.store.as_ref(),
            self.work.as_ref(),
            self.tmp.as_ref(),
            self.build.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(PathBuf::as_path)
        .collect()
    }

    /// Removes the whole scratch directory. The directories it made are
    /// removed one by one when empty (the common case, and cheaper than a
    /// walk); whatever holds files is removed as a tree.
    pub fn remove(&self) -> Result<(), ScratchError> {
        let overlay_inner = self.work.as_ref().map(|work| work.join("work"));
        let known = [
            overlay_inner.as_ref(),
            self.work.as_ref(),
            self.store.as_ref(),
            self.tmp.as_ref(),
            self.build.as_ref(),
        ];
        for dir in known.into_iter().flatten() {
            match std::fs::remove_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(_) => remove_tree(dir)?,
            }
        }
        match std::fs::remove_dir(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(_) => remove_tree(&self.dir),
        }
    }
}

/// Gives everything below `dir` (not `dir` itself) to `user`, without
/// following symlinks.
pub fn give_contents(dir: &Path, user: BuildUser) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        std::os::unix::fs::lchown(&path, Some(user.uid), Some(user.gid))?;
        if std::fs::symlink_metadata(&path)?.is_dir() {
            give_contents(&path, user)?;
        }
    }
    Ok(())
}

/// Removes `path` and everything below it without following symlinks,
/// making directories writable where the builder left them read-only.
pub fn remove_tree(path: &Path) -> Result<(), ScratchError> {
    let error = |source| ScratchError {
        operation: "removing",
        path: path.to_path_buf(),
        source,
    };
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            make_writable(path);
            std::fs::remove_dir_all(path).map_err(error)
        }
        Err(e) => Err(error(e)),
    }
}

/// Gives the owner full access to every directory below `path` (not
/// following symlinks), so that it can be removed.
fn make_writable(path: &Path) {
    let Ok(metadata) = std::fs::symlink_metadata(path) else {
        return;
    };
    if !metadata.is_dir() {
        return;
    }
    let mode = metadata.permissions().mode();
    if mode & 0o700 != 0o700 {
        let _ = std::fs::set_permissions(path, Permissions::from_mode(mode | 0o700));
    }
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            make_writable(&entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_is_created_with_nix_modes_and_removed_entirely() {
        let parent = std::env::temp_dir();
        let scratch = Scratch::choose(
            &parent,
            ScratchNeeds {
                sandbox: true,
                work: true,
                build: true,
            },
        );
        assert!(
            scratch
                .dir
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(".hermetic-")
        );
        scratch.create(None).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&scratch.dir), 0o700);
        assert_eq!(mode(scratch.store.as_ref().unwrap()), 0o1775);
        assert_eq!(mode(scratch.tmp.as_ref().unwrap()), 0o1777);
        assert_eq!(mode(scratch.build.as_ref().unwrap()), 0o700);
        // A read-only directory left by a builder does not stop removal.
        let stuck = scratch.tmp.as_ref().unwrap().join("ro");
        std::fs::create_dir(&stuck).unwrap();
        std::fs::write(stuck.join("f"), "x").unwrap();
        std::fs::set_permissions(&stuck, Permissions::from_mode(0o500)).unwrap();
        scratch.remove().unwrap();
        assert!(!scratch.dir.exists());
    }

    #[test]
    fn two_choices_never_collide() {
        let parent = std::env::temp_dir();
        let needs = ScratchNeeds {
            sandbox: false,
            work: false,
            build: true,
        };
        assert_ne!(
            Scratch::choose(&parent, needs).dir,
            Scratch::choose(&parent, needs).dir
        );
    }
}
