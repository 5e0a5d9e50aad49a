//! Pending records: how an installation into the store survives a crash.
//!
//! Before anything is written into the store directory, an installer makes a
//! record `<state>/hermetic/pending/<id>` and holds a `flock` on it until the
//! path is registered. The record names the staging directory and, once it
//! is known, the store path being installed. The next process that opens the
//! store takes every record whose lock is free (its owner is dead), removes
//! the staging directory, and deletes the store path unless the database
//! says it is valid. So a crash at any instant leaves nothing registered but
//! missing, and nothing present but unregistered after the next start.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{Flock, FlockArg};

use crate::error::{StoreError, io_err};
use crate::path::StorePath;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The directory of pending records under a state directory.
pub fn records_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("hermetic/pending")
}

/// Where staging directories asked to be kept (`keep-failed`,
/// `sandbox-run --keep`) are moved: outside the store directory, where no
/// garbage collector looks, and on the store's filesystem as a rule.
fn kept_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("hermetic/kept")
}

/// An installation in progress, with its staging directory in the store.
pub struct Pending {
    lock: Option<Flock<File>>,
    record: PathBuf,
    staging: PathBuf,
    targets: Vec<StorePath>,
}

/// A name part no other process or call of this one uses: pid, counter,
/// nanoseconds.
pub(crate) fn unique_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// What a staging directory's name ends with.
pub const STAGING_SUFFIX: &str = "-hermetic-stage";

/// A fresh name for a staging directory in the store directory, shaped as
/// a store path's (a hash part of 32 base-32 digits, then
/// [`STAGING_SUFFIX`]), so that a temporary root on it keeps every
/// garbage collector, Nix's too, from deleting it while it is in use.
pub fn staging_name() -> String {
    let digest = crate::hash::Hash::sha256(unique_id().as_bytes());
    let hash_part = crate::base32::encode(&digest.digest()[..20]);
    format!("{hash_part}{STAGING_SUFFIX}")
}

/// Whether `name` is one [`staging_name`] makes (or an older hermetic's
/// `.hermetic-stage-…`), as recovery checks it before removing it.
fn is_staging_name(name: &str) -> bool {
    !name.contains('/')
        && (name.starts_with(".hermetic-stage-")
            || name
                .strip_suffix(STAGING_SUFFIX)
                .is_some_and(|hash| hash.len() == 32 && hash.bytes().all(crate::base32::is_digit)))
}

impl Pending {
    /// Makes a locked record for a staging path (not yet created) named
    /// `staging_name` in `real_store_dir`.
    pub fn begin(
        state_dir: &Path,
        real_store_dir: &Path,
        staging_name: &str,
    ) -> Result<Self, StoreError> {
        let dir = records_dir(state_dir);
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        let id = unique_id();
        // Made under a `.new-` name (which recovery leaves to its maker while
        // that process lives) and locked, then renamed: a record under its
        // real name is always locked while its maker lives.
        let fresh = dir.join(format!(".new-{id}"));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&fresh)
            .map_err(io_err("create pending record", &fresh))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| io_err("lock pending record", &fresh)(e.into()))?;
        let mut pending = Self {
            lock: Some(lock),
            record: dir.join(&id),
            staging: real_store_dir.join(staging_name),
            targets: Vec::new(),
        };
        pending.write_record(&fresh)?;
        fs::rename(&fresh, &pending.record).map_err(io_err("rename pending record", &fresh))?;
        Ok(pending)
    }

    fn write_record(&mut self, at: &Path) -> Result<(), StoreError> {
        let mut text = format!("staging {}\n", file_name(&self.staging));
        for target in &self.targets {
            text.push_str(&format!("target {target}\n"));
        }
        let file: &mut File = self.lock.as_mut().expect("a pending record is locked");
        // Written over the old text, then cut to length: every record
        // starts with the same staging line, so a kill at any instant
        // leaves one that names its staging path (emptied first, it could
        // leave a record that names nothing, and the staging path would
        // outlive recovery).
        io::Seek::rewind(file)
            .and_then(|()| file.write_all(text.as_bytes()))
            .and_then(|()| file.set_len(text.len() as u64))
            .map_err(io_err("write pending record", at))
    }

    /// The staging path: a directory or file in the store directory, on
    /// the store's filesystem, that becomes the store path by rename.
    pub fn staging(&self) -> &Path {
        &self.staging
    }

    /// Records the store paths about to be installed, before anything is
    /// written there.
    pub fn set_targets(&mut self, targets: &[StorePath]) -> Result<(), StoreError> {
        self.targets = targets.to_vec();
        let record = self.record.clone();
        self.write_record(&record)
    }

    /// Ends the installation keeping its staging directory: moved to
    /// `<state>/hermetic/kept/<label>-<id>` (the id: the staging name's
    /// first 8 characters; the directory made 0755 if missing), where no
    /// collector deletes it. A staging directory that cannot be moved there
    /// (another filesystem) stays where it is, and the error says why; the
    /// record is finished either way. Returns where it is now.
    pub fn keep_aside(mut self, state_dir: &Path, label: &str) -> (PathBuf, Option<StoreError>) {
        let kept = &kept_dir(state_dir);
        let id: String = file_name(&self.staging).chars().take(8).collect();
        let name = format!("{label}-{id}");
        let moved = fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(kept)
            .map_err(io_err("create directory", kept))
            .and_then(|()| {
                let to = kept.join(name);
                fs::rename(&self.staging, &to)
                    .map(|()| to.clone())
                    .map_err(io_err("move the kept directory to", &to))
            });
        let (at, error) = match moved {
            Ok(to) => (to, None),
            Err(e) => (self.staging.clone(), Some(e)),
        };
        let finished =
            fs::remove_file(&self.record).map_err(io_err("remove pending record", &self.record));
        self.lock = None;
        (at, error.or(finished.err()))
    }

    /// Ends the installation: the path is registered (or was found valid).
    pub fn finish(mut self) -> Result<(), StoreError> {
        remove_any(&self.staging)?;
        fs::remove_file(&self.record).map_err(io_err("remove pending record", &self.record))?;
        self.lock = None;
        Ok(())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.lock.is_some() {
            // Failed in this process: leave the record (now unlocked) for
            // recovery if a store path may be half-installed, else clean up.
            let _ = remove_any(&self.staging);
            if self.targets.is_empty() {
                let _ = fs::remove_file(&self.record);
            }
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Removes a file or a directory tree, by descriptors and at any depth (see
/// [`crate::tree`]); a missing path is fine.
pub fn remove_any(path: &Path) -> Result<(), StoreError> {
    crate::tree::remove_tree(path)
}

/// What a dead installer left, read from its record.
pub struct Leftover {
    /// The staging path in the store directory.
    pub staging: Option<String>,
    /// The store paths it was installing.
    pub targets: Vec<StorePath>,
}

/// Cleans after every dead installer: for each record whose lock is free,
/// `clean` gets what it names and the record is removed after it. Records of
/// living installers are left alone.
pub fn recover(
    state_dir: &Path,
    mut clean: impl FnMut(Leftover) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let dir = records_dir(state_dir);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("read directory", &dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err("read directory", &dir))?;
        let record = entry.path();
        // A record still being made is not locked yet: leave it to its
        // maker, unless that process is gone (then it holds nothing).
        let name = entry.file_name();
        if let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(".new-")) {
            let pid = rest.split('-').next().unwrap_or_default();
            if !Path::new("/proc").join(pid).exists() {
                let _ = fs::remove_file(&record);
            }
            continue;
        }
        let Ok(file) = File::open(&record) else {
            continue;
        };
        let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
            continue; // its installer is alive
        };
        let mut text = String::new();
        let mut file: &File = &lock;
        let gone = file
            .metadata()
            .map_or(true, |m| std::os::unix::fs::MetadataExt::nlink(&m) == 0);
        if gone || io::Read::read_to_string(&mut file, &mut text).is_err() {
            continue; // finished (or cleaned) while we waited for it
        }
        let mut leftover = Leftover {
            staging: None,
            targets: Vec::new(),
        };
        for line in text.lines() {
            match line.split_once(' ') {
                Some(("staging", name)) if is_staging_name(name) => {
                    leftover.staging = Some(name.to_owned());
                }
                Some(("target", name)) => leftover
                    .targets
                    .extend(StorePath::from_base_name(name).ok()),
                _ => {}
            }
        }
        tracing::info!(record = %record.display(), "cleaning after an installation that did not finish");
        clean(leftover)?;
        match fs::remove_file(&record) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io_err("remove pending record", &record)(e));
            }
            _ => drop(lock),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_being_made_are_left_to_their_living_maker() {
        let state = std::env::temp_dir().join(format!("pending-test-{}", std::process::id()));
        let dir = records_dir(&state);
        fs::create_dir_all(&dir).unwrap();
        // Not locked yet, as between its creation and its flock.
        let ours = dir.join(format!(".new-{}-0-1", std::process::id()));
        fs::write(&ours, "").unwrap();
        // A dead maker's: no process has this pid (above pid_max).
        let dead = dir.join(".new-4194305-0-1");
        fs::write(&dead, "").unwrap();
        let mut cleaned = 0;
        recover(&state, |_| {
            cleaned += 1;
            Ok(())
        })
        .unwrap();
        assert!(ours.exists(), "a record being made was taken");
        assert!(!dead.exists(), "a dead maker's record was left");
        assert_eq!(cleaned, 0);
        // A locked record under its real name is left alone; once its
        // owner is gone it is cleaned.
        let store = state.join("store");
        fs::create_dir_all(&store).unwrap();
        let pending = Pending::begin(&state, &store, &staging_name()).unwrap();
        assert!(is_staging_name(
            pending.staging().file_name().unwrap().to_str().unwrap()
        ));
        recover(&state, |_| panic!("a living installer's record was taken")).unwrap();
        drop(pending);
        fs::remove_dir_all(&state).unwrap();
    }
}
