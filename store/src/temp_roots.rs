//! Temporary roots, with Nix's protocol, so that Nix's collector and
//! hermetic's both see what the other's processes are using.
//!
//! A process (for hermetic's daemon: a connection) keeps its roots in
//! `<state>/temproots/<name>`, each store path ended by a NUL, and holds an
//! exclusive `flock` on that file while it lives; a collector takes the
//! lock of a file whose owner died and removes it. Adding a root takes the
//! global GC lock (`<state>/gc.lock`) shared, without waiting, while the
//! path is written to the file. When the lock cannot be had, a collector
//! is running and has read the files already: the path is sent to its
//! socket (`<state>/gc-socket/socket`), one line per path, and the
//! collector answers `1` once it will not delete it.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::error::{StoreError, io_err};
use crate::path::{StoreDir, StorePath};

/// The global GC lock of the store whose state directory is `state_dir`.
pub fn gc_lock_file(state_dir: &Path) -> PathBuf {
    state_dir.join("gc.lock")
}

/// The socket a running collector takes new roots on.
pub fn gc_socket_file(state_dir: &Path) -> PathBuf {
    state_dir.join("gc-socket/socket")
}

/// Opens the global GC lock file (creating it), as Nix opens it.
pub fn open_gc_lock(state_dir: &Path) -> Result<File, StoreError> {
    let file = gc_lock_file(state_dir);
    crate::lock::open_lock_file(&file).map_err(io_err("open the global GC lock", &file))
}

/// One process's (or daemon connection's) temporary roots file, locked for
/// as long as this lives, and removed when it is dropped.
pub struct TempRoots {
    file: Flock<File>,
    path: PathBuf,
    gc_lock: File,
    gc_lock_path: PathBuf,
    socket_path: PathBuf,
    collector: Option<UnixStream>,
    store_dir: StoreDir,
    added: HashSet<StorePath>,
}

impl TempRoots {
    /// Makes the temporary roots file `<state>/temproots/<name>`; `name`
    /// must start with this process's id (Nix's collector reads it as one)
    /// and be used by nobody else while this lives.
    pub fn create(
        state_dir: &Path,
        store_dir: &StoreDir,
        name: &str,
    ) -> Result<TempRoots, StoreError> {
        let dir = state_dir.join("temproots");
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        let path = dir.join(name);
        let file = loop {
            // A file under this name can only be a dead process's.
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io_err("remove the stale temporary roots file", &path)(e));
                }
                _ => {}
            }
            let file = crate::lock::open_lock_file(&path)
                .map_err(io_err("create the temporary roots file", &path))?;
            let locked = Flock::lock(file, FlockArg::LockExclusive)
                .map_err(|(_, e)| io_err("lock the temporary roots file", &path)(e.into()))?;
            let size = locked
                .metadata()
                .map_err(io_err("inspect the temporary roots file", &path))?
                .len();
            // A collector that took it for a dead process's removed it
            // before the lock was had, and marked it: make another.
            if size == 0 {
                break locked;
            }
        };
        Ok(TempRoots {
            file,
            path,
            gc_lock: open_gc_lock(state_dir)?,
            gc_lock_path: gc_lock_file(state_dir),
            socket_path: gc_socket_file(state_dir),
            collector: None,
            store_dir: store_dir.clone(),
            added: HashSet::new(),
        })
    }

    /// The file's path.
    pub fn file(&self) -> &Path {
        &self.path
    }

    /// Makes `path` a temporary root: no collector deletes it (or, for a
    /// path not yet in the store, what is made under its name) while this
    /// lives.
    pub fn add(&mut self, path: &StorePath) -> Result<(), StoreError> {
        if self.added.contains(path) {
            return Ok(());
        }
        let printed = self.store_dir.print(path);
        loop {
            let lock = self
                .gc_lock
                .try_clone()
                .map_err(io_err("open the global GC lock", &self.gc_lock_path))?;
            match Flock::lock(lock, FlockArg::LockSharedNonblock) {
                Ok(_shared) => {
                    self.append(&printed)?;
                    break;
                }
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                    // A collector is running and read the files already.
                    if self.tell_collector(&printed)? {
                        self.append(&printed)?;
                        break;
                    }
                    // It ended meanwhile: the lock may be free now.
                }
                Err((_, e)) => {
                    return Err(io_err("lock the global GC lock", &self.gc_lock_path)(
                        e.into(),
                    ));
                }
            }
        }
        self.added.insert(path.clone());
        Ok(())
    }

    fn append(&mut self, printed: &str) -> Result<(), StoreError> {
        let mut record = printed.as_bytes().to_vec();
        record.push(0);
        self.file
            .write_all(&record)
            .map_err(io_err("write the temporary roots file", &self.path))
    }

    /// Sends `printed` to the running collector; false when there is none
    /// (anymore).
    fn tell_collector(&mut self, printed: &str) -> Result<bool, StoreError> {
        let socket = match &mut self.collector {
            Some(socket) => socket,
            None => match crate::unix_socket::connect(&self.socket_path) {
                Ok(socket) => self.collector.insert(socket),
                Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNREFUSED | libc::ENOENT)) => {
                    return Ok(false);
                }
                Err(e) => {
                    return Err(io_err(
                        "connect to the garbage collector",
                        &self.socket_path,
                    )(e));
                }
            },
        };
        let mut answer = [0u8; 1];
        let told = socket
            .write_all(format!("{printed}\n").as_bytes())
            .and_then(|()| socket.read_exact(&mut answer));
        match told {
            Ok(()) if answer == *b"1" => Ok(true),
            // The collector went away (or said something else): ask again.
            _ => {
                self.collector = None;
                Ok(false)
            }
        }
    }
}

impl Drop for TempRoots {
    fn drop(&mut self) {
        // Removed while still locked: nobody takes it for a live one.
        let _ = fs::remove_file(&self.path);
    }
}
