//! Locks shared with Nix: the big store lock (`<state>/db/big-lock`, held
//! shared by every user of the store) and per-path locks
//! (`<store>/<hash>-<name>.lock`) with Nix's protocol for stale lock files:
//! the holder unlinks the file and writes one byte into it, so a waiter that
//! then gets the lock sees a non-empty file and tries again.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// Opens (creating it, mode 0600) a lock file, as Nix opens its locks.
pub(crate) fn open_lock_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

fn flock(file: File, arg: FlockArg) -> Result<Flock<File>, (File, io::Error)> {
    Flock::lock(file, arg).map_err(|(file, errno)| (file, io::Error::from(errno)))
}

/// Takes `path`'s lock shared (or exclusive), waiting for it; `waiting` is
/// called once if the lock is busy.
pub fn lock_file(path: &Path, exclusive: bool, waiting: impl FnOnce()) -> io::Result<Flock<File>> {
    let (try_arg, wait_arg) = if exclusive {
        (FlockArg::LockExclusiveNonblock, FlockArg::LockExclusive)
    } else {
        (FlockArg::LockSharedNonblock, FlockArg::LockShared)
    };
    match flock(open_lock_file(path)?, try_arg) {
        Ok(lock) => Ok(lock),
        Err((file, e)) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {
            waiting();
            flock(file, wait_arg).map_err(|(_, e)| e)
        }
        Err((_, e)) => Err(e),
    }
}

/// An exclusive lock on one store path, as Nix's `PathLocks` takes it. The
/// lock file is removed when the lock is dropped.
pub struct PathLock {
    lock: Option<Flock<File>>,
    path: PathBuf,
}

impl PathLock {
    /// Locks `<real store>/<base name>.lock`, waiting while another process
    /// (hermetic or Nix) holds it.
    pub fn acquire(real_path: &Path) -> io::Result<Self> {
        Self::take(real_path, true).map(|lock| lock.expect("a waiting lock is always taken"))
    }

    /// Locks it if nobody holds it; `None` when somebody does.
    pub fn try_acquire(real_path: &Path) -> io::Result<Option<Self>> {
        Self::take(real_path, false)
    }

    fn take(real_path: &Path, wait: bool) -> io::Result<Option<Self>> {
        let mut lock_path = real_path.as_os_str().to_owned();
        lock_path.push(".lock");
        let path = PathBuf::from(lock_path);
        loop {
            let lock = if wait {
                lock_file(&path, true, || {
                    tracing::info!(path = %path.display(), "waiting for the lock on a store path");
                })?
            } else {
                match flock(open_lock_file(&path)?, FlockArg::LockExclusiveNonblock) {
                    Ok(lock) => lock,
                    Err((_, e)) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => return Ok(None),
                    Err((_, e)) => return Err(e),
                }
            };
            if lock.metadata()?.len() == 0 {
                return Ok(Some(Self {
                    lock: Some(lock),
                    path,
                }));
            }
            tracing::debug!(path = %path.display(), "discarding stale lock file");
        }
    }
}

impl Drop for PathLock {
    fn drop(&mut self) {
        if let Some(mut lock) = self.lock.take() {
            // Unlink first, then mark the file stale for anyone who opened it.
            let _ = std::fs::remove_file(&self.path);
            let _ = lock.write_all(b"d");
        }
    }
}
