//! The local store: a store directory and Nix's registry of valid paths,
//! with additions that a crash at any instant cannot leave half-done.

mod admission;
pub mod build_log;
pub mod collect;
pub mod optimise;
mod queries;
pub mod roots;
mod state_dirs;

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use nix::fcntl::Flock;

use crate::Derivation;
use crate::canonical::{canonicalise, first_non_canonical};
use crate::db::{Db, PathInfo};
use crate::derivation::DrvHashes;
use crate::error::{StoreError, io_err};
use crate::hash::{Hash, HashingTee, HashingWriter};
use crate::layout::StoreLayout;
use crate::lock::{PathLock, lock_file};
use crate::nar::{self, RestoreSink};
use crate::path::{IngestionMethod, StorePath, check_name};
use crate::pending::{self, Pending, remove_any};
use crate::temp_roots::TempRoots;

/// An open local store. While it is open it holds the big store lock
/// shared, as every Nix process on the store does.
pub struct LocalStore {
    layout: StoreLayout,
    db: Db,
    owner: (u32, u32),
    /// The hashes modulo of valid derivations, computed once.
    drv_hash_memo: RefCell<HashMap<StorePath, DrvHashes>>,
    /// `auto-optimise-store`: new paths are optimised once registered.
    auto_optimise: bool,
    /// This handle's temporary roots, once it has any.
    temp_roots: RefCell<Option<TempRoots>>,
    _big_lock: Flock<File>,
}

/// Numbers the temporary roots files of this process's store handles.
static TEMP_ROOTS_FILES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A temporary roots file of this process's own (`<pid>-<n>`).
fn new_temp_roots(layout: &StoreLayout) -> Result<TempRoots, StoreError> {
    let n = TEMP_ROOTS_FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    TempRoots::create(
        &layout.state_dir,
        &layout.store_dir,
        &format!("{}-{n}", std::process::id()),
    )
}

/// What `verify` found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    /// Valid paths checked.
    pub checked: usize,
    /// Each problem found, one line each.
    pub problems: Vec<String>,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl LocalStore {
    /// Opens the store, creating its directories and database if new, and
    /// cleans what dead installers left (see `pending`).
    pub fn open(layout: StoreLayout) -> Result<Self, StoreError> {
        for dir in [&layout.real_store_dir, &layout.db_dir()] {
            fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        }
        state_dirs::make_state_dirs(&layout.state_dir)?;
        let lock_path = layout.db_dir().join("big-lock");
        let big_lock = lock_file(&lock_path, false, || {
            eprintln!("waiting for the big Nix store lock...")
        })
        .map_err(io_err("lock", &lock_path))?;
        let db = Db::open(&layout.db_dir(), layout.store_dir.clone())?;
        let owner = (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        let store = Self {
            layout,
            db,
            owner,
            drv_hash_memo: RefCell::default(),
            auto_optimise: false,
            temp_roots: RefCell::default(),
            _big_lock: big_lock,
        };
        store.recover()?;
        Ok(store)
    }

    fn recover(&self) -> Result<(), StoreError> {
        pending::recover(&self.layout.state_dir, |leftover| {
            if let Some(staging) = &leftover.staging {
                remove_any(&self.layout.real_store_dir.join(staging))?;
            }
            for target in &leftover.targets {
                let real = self.layout.real_path(target);
                let _lock = PathLock::acquire(&real).map_err(io_err("lock", &real))?;
                if !self.db.is_valid(target)? {
                    remove_any(&real)?;
                }
            }
            Ok(())
        })
    }

    /// Turns `auto-optimise-store` on or off: whether each path registered
    /// from now on is hard-linked to identical files (see `optimise`).
    pub fn set_auto_optimise(&mut self, on: bool) {
        self.auto_optimise = on;
    }

    /// What follows a registration: under `auto-optimise-store`, the new
    /// paths are optimised. A failure there is a warning: the paths are
    /// valid and whole either way.
    fn registered(&self, paths: &[StorePath]) {
        if self.auto_optimise
            && let Err(e) = self.optimise_paths(paths)
        {
            tracing::warn!("cannot optimise new store paths: {}", error_chain(&e));
        }
    }

    /// The store's directories.
    pub fn layout(&self) -> &StoreLayout {
        &self.layout
    }

    /// Whether a path is registered as valid.
    pub fn is_valid(&self, path: &StorePath) -> Result<bool, StoreError> {
        self.db.is_valid(path)
    }

    /// What the registry knows of a valid path.
    pub fn query_info(&self, path: &StorePath) -> Result<PathInfo, StoreError> {
        self.db
            .query_info(path)?
            .ok_or_else(|| StoreError::NotValid(self.layout.store_dir.print(path)))
    }

    /// Whether every output of `drv` has a path and that path is valid.
    pub fn outputs_valid(&self, drv: &Derivation) -> Result<bool, StoreError> {
        for output in drv.outputs.values() {
            match output.path() {
                Some(path) if self.is_valid(path)? => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    }

    /// The outputs registered for a derivation.
    pub fn derivation_outputs(
        &self,
        drv: &StorePath,
    ) -> Result<Vec<(String, StorePath)>, StoreError> {
        self.db.derivation_outputs(drv)
    }

    /// The closure of some valid paths under references: the paths and
    /// everything they refer to, directly or not (B39).
    pub fn closure(&self, paths: &[StorePath]) -> Result<BTreeSet<StorePath>, StoreError> {
        let mut seen = BTreeSet::new();
        let mut queue: VecDeque<StorePath> = paths.iter().cloned().collect();
        while let Some(path) = queue.pop_front() {
            if seen.contains(&path) {
                continue;
            }
            let info = self.query_info(&path)?;
            queue.extend(info.references.into_iter().filter(|r| !seen.contains(r)));
            seen.insert(path);
        }
        Ok(seen)
    }

    /// Reads a derivation from the store.
    pub fn read_derivation(&self, path: &StorePath) -> Result<Derivation, StoreError> {
        self.parse_derivation_at(path, &self.layout.real_path(path))
    }

    /// Adds a file or directory tree as `nix-store --add` does: the path of
    /// its NAR's SHA-256, named after its last component, no references.
    pub fn add_path(&mut self, source: &Path) -> Result<StorePath, StoreError> {
        let name = source
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| io_err("add", source)(io::Error::other("the path has no usable name")))?
            .to_owned();
        check_name(&name, &name)?;
        let pending = self.begin()?;
        let (nar_hash, nar_size) = copy_through_nar(source, pending.staging())?;
        self.install_source(pending, &name, nar_hash, nar_size)
    }

    /// Installs a staged tree as the source path of its NAR hash: made
    /// canonical, named after its content, no references.
    fn install_source(
        &mut self,
        pending: Pending,
        name: &str,
        nar_hash: Hash,
        nar_size: u64,
    ) -> Result<StorePath, StoreError> {
        canonicalise(pending.staging(), self.owner.0, self.owner.1)?;
        crash_point("staged");
        let path = self.layout.store_dir.make_fixed_output_path(
            IngestionMethod::Recursive,
            &nar_hash,
            name,
            &BTreeSet::new(),
            false,
        )?;
        let info = PathInfo {
            path: path.clone(),
            ca: Some(format!("fixed:r:{}", nar_hash.to_prefixed_base32())),
            nar_hash,
            nar_size,
            references: BTreeSet::new(),
            deriver: None,
            registration_time: now(),
            sigs: Vec::new(),
            ultimate: false,
        };
        self.install(pending, info)?;
        Ok(path)
    }

    /// Adds the tree a NAR stream describes, as a content-addressed
    /// (recursive SHA-256) path named `name`: what a client sends to a
    /// daemon for `nix-store --add` or a path in a Nix expression.
    pub fn add_nar_stream(
        &mut self,
        name: &str,
        nar: &mut dyn io::Read,
    ) -> Result<StorePath, StoreError> {
        check_name(name, name)?;
        let pending = self.begin()?;
        let (nar_hash, nar_size) = restore_nar(nar, &pending)?;
        self.install_source(pending, name, nar_hash, nar_size)
    }

    /// Whether `info`'s content address (`ca`) names its own path: such a
    /// path needs no signature (its content is checked against the address
    /// when it is imported).
    pub fn is_content_addressed(&self, info: &PathInfo) -> bool {
        crate::signature::names_own_path(&self.layout.store_dir, info)
    }

    /// Whether a path from elsewhere with `info` must be refused: keys are
    /// required (`None`: `require-sigs` is off), and it is neither
    /// content-addressed nor signed by one of them.
    pub fn is_untrusted(
        &self,
        info: &PathInfo,
        trusted_keys: Option<&[crate::signature::PublicKey]>,
    ) -> bool {
        crate::signature::is_untrusted(&self.layout.store_dir, info, trusted_keys)
    }

    /// Imports a path with its metadata and its NAR (a copy from another
    /// store): with `trusted_keys`, it must be content-addressed or signed
    /// by one of them; the NAR's hash and size must be the announced ones;
    /// a content address must name the path and match the content, for
    /// everyone; its references must be valid. A path already valid is skipped (its
    /// NAR read and dropped).
    pub fn import_nar(
        &mut self,
        mut info: PathInfo,
        nar: &mut dyn io::Read,
        trusted_keys: Option<&[crate::signature::PublicKey]>,
    ) -> Result<(), StoreError> {
        let printed = self.layout.store_dir.print(&info.path);
        if self.is_untrusted(&info, trusted_keys) {
            nar::parse(nar, &mut nar::DiscardSink)?;
            return Err(StoreError::Unsigned(printed));
        }
        if self.is_valid(&info.path)? {
            nar::parse(nar, &mut nar::DiscardSink)?;
            return Ok(());
        }
        let pending = self.begin()?;
        let (got, size) = restore_nar(nar, &pending)?;
        if got != info.nar_hash {
            return Err(StoreError::ImportMismatch {
                what: "hash",
                path: printed,
                specified: info.nar_hash.to_string(),
                got: got.to_string(),
            });
        }
        if size != info.nar_size {
            return Err(StoreError::ImportMismatch {
                what: "size",
                path: printed,
                specified: info.nar_size.to_string(),
                got: size.to_string(),
            });
        }
        self.check_content_address(&info, pending.staging())?;
        canonicalise(pending.staging(), self.owner.0, self.owner.1)?;
        info.registration_time = now();
        self.install(pending, info)
    }

    /// The valid path whose hash part is `hash_part`, if any.
    pub fn path_from_hash_part(&self, hash_part: &str) -> Result<Option<StorePath>, StoreError> {
        self.db.path_from_hash_part(hash_part)
    }

    /// The valid paths that refer to `path`.
    pub fn referrers(&self, path: &StorePath) -> Result<BTreeSet<StorePath>, StoreError> {
        self.db.referrers(path)
    }

    /// Adds a text object (a derivation, a `builtins.toFile`) with its
    /// references, which must be valid. A derivation is checked as it is
    /// registered (see `admission`).
    pub fn add_text(
        &mut self,
        name: &str,
        contents: &[u8],
        references: &BTreeSet<StorePath>,
    ) -> Result<StorePath, StoreError> {
        let sha = Hash::sha256(contents);
        let path = self
            .layout
            .store_dir
            .make_text_path(name, &sha, references)?;
        if self.db.is_valid(&path)? {
            return Ok(path);
        }
        let pending = self.begin()?;
        let staging = pending.staging();
        fs::write(staging, contents).map_err(io_err("write", staging))?;
        canonicalise(staging, self.owner.0, self.owner.1)?;
        let (nar_hash, nar_size) = nar_hash_of(staging)?;
        let info = PathInfo {
            path: path.clone(),
            nar_hash,
            nar_size,
            references: references.clone(),
            deriver: None,
            registration_time: now(),
            ca: Some(format!("text:{}", sha.to_prefixed_base32())),
            sigs: Vec::new(),
            ultimate: false,
        };
        self.install(pending, info)?;
        Ok(path)
    }

    /// Adds a derivation; its inputs must be valid. Its output paths must
    /// be the ones Nix computes (checked as it is registered), and are
    /// registered as its outputs.
    pub fn add_derivation(&mut self, drv: &Derivation) -> Result<StorePath, StoreError> {
        let store_dir = self.layout.store_dir.clone();
        let text = drv.to_aterm(&store_dir);
        self.add_text(
            &format!("{}.drv", drv.name),
            text.as_bytes(),
            &drv.references(),
        )
    }

    /// Moves a staged object into place and registers it, under the path's
    /// lock. The pending record outlives any crash in between.
    fn install(&mut self, mut pending: Pending, info: PathInfo) -> Result<(), StoreError> {
        let real = self.layout.real_path(&info.path);
        if self.db.is_valid(&info.path)? {
            return pending.finish();
        }
        let registration = self.admit(info, pending.staging())?;
        let info = &registration.info;
        self.add_temp_root(&info.path)?;
        let _lock = PathLock::acquire(&real).map_err(io_err("lock", &real))?;
        if self.db.is_valid(&info.path)? {
            return pending.finish();
        }
        crash_point("locked");
        pending.set_targets(std::slice::from_ref(&info.path))?;
        remove_any(&real)?;
        fs::rename(pending.staging(), &real).map_err(io_err("rename into the store", &real))?;
        crash_point("renamed");
        if let Err(e) = self.db.register_all(std::slice::from_ref(&registration)) {
            remove_any(&real)?;
            pending.finish()?;
            return Err(e);
        }
        crash_point("registered");
        tracing::debug!(path = %real.display(), "registered");
        self.registered(std::slice::from_ref(&info.path));
        pending.finish()
    }

    /// Begins an installation: a locked pending record and a staging path
    /// (not yet created) in the store directory. Whatever is put under the
    /// staging path is removed when the record is finished, or by the next
    /// start after a crash.
    pub fn begin(&self) -> Result<Pending, StoreError> {
        let name = pending::staging_name();
        // A temporary root on its name keeps collectors from deleting it.
        let as_path = StorePath::from_base_name(&name).expect("staging names are store paths'");
        self.add_temp_root(&as_path)?;
        Pending::begin(&self.layout.state_dir, &self.layout.real_store_dir, &name)
    }
}

/// Begins a pending record and staging path as [`LocalStore::begin`] does,
/// for a process that does not open the store (no database, no big lock:
/// only the state directory's roots and records are written). The
/// staging path's temporary root lasts as long as the returned roots.
pub fn begin_unopened(layout: &StoreLayout) -> Result<(TempRoots, Pending), StoreError> {
    state_dirs::make_state_dirs(&layout.state_dir)?;
    let name = pending::staging_name();
    let as_path = StorePath::from_base_name(&name).expect("staging names are store paths'");
    let mut roots = new_temp_roots(layout)?;
    roots.add(&as_path)?;
    let pending = Pending::begin(&layout.state_dir, &layout.real_store_dir, &name)?;
    Ok((roots, pending))
}

impl LocalStore {
    /// Makes `path` a temporary root for as long as this store is open (a
    /// path being added or built, or used by a client): no garbage
    /// collector, Nix's or hermetic's, deletes it or its lock file
    /// meanwhile. The roots file is made at the first one.
    pub fn add_temp_root(&self, path: &StorePath) -> Result<(), StoreError> {
        let mut roots = self.temp_roots.borrow_mut();
        let roots = match &mut *roots {
            Some(roots) => roots,
            None => roots.insert(new_temp_roots(&self.layout)?),
        };
        roots.add(path)
    }

    /// Locks `paths` as [`LocalStore::lock_paths`] does, if no other
    /// process holds any of them; `None` (and nothing held) when one does.
    pub fn try_lock_paths(&self, paths: &[StorePath]) -> Result<Option<Vec<PathLock>>, StoreError> {
        let mut sorted = paths.to_vec();
        sorted.sort();
        sorted.dedup();
        let mut locks = Vec::with_capacity(sorted.len());
        for path in &sorted {
            self.add_temp_root(path)?;
            let real = self.layout.real_path(path);
            match PathLock::try_acquire(&real).map_err(io_err("lock", &real))? {
                Some(lock) => locks.push(lock),
                // Those taken are let go: another build holds this one.
                None => return Ok(None),
            }
        }
        Ok(Some(locks))
    }

    /// Locks store paths (sorted, so two callers never deadlock), as Nix
    /// locks a build's outputs.
    pub fn lock_paths(&self, paths: &[StorePath]) -> Result<Vec<PathLock>, StoreError> {
        let mut sorted = paths.to_vec();
        sorted.sort();
        sorted.dedup();
        sorted
            .iter()
            .map(|p| {
                self.add_temp_root(p)?;
                let real = self.layout.real_path(p);
                PathLock::acquire(&real).map_err(io_err("lock", &real))
            })
            .collect()
    }

    /// Moves objects already made canonical on the store's filesystem
    /// (each `(source, info)`) into place and registers them in one
    /// transaction, each checked first (see `admission`). A path that is
    /// already valid is left as it is, never replaced: its source is left
    /// to the caller's cleaning. The caller holds the paths' locks;
    /// `pending` names the paths installed as its targets first, so a crash
    /// before the registration commits leaves them to the next start's
    /// cleaning.
    pub fn install_staged(
        &mut self,
        pending: &mut Pending,
        items: &[(std::path::PathBuf, PathInfo)],
    ) -> Result<(), StoreError> {
        let mut installing = Vec::new();
        for (source, info) in items {
            if !self.db.is_valid(&info.path)? {
                installing.push((source, self.admit(info.clone(), source)?));
            }
        }
        let targets: Vec<StorePath> = installing
            .iter()
            .map(|(_, registration)| registration.info.path.clone())
            .collect();
        if targets.is_empty() {
            return Ok(());
        }
        pending.set_targets(&targets)?;
        for (source, registration) in &installing {
            let real = self.layout.real_path(&registration.info.path);
            // An unsandboxed build made its output in place.
            if **source != real {
                remove_any(&real)?;
                rename_read_only(source, &real)?;
            }
        }
        crash_point("renamed");
        let registrations: Vec<_> = installing.into_iter().map(|(_, r)| r).collect();
        if let Err(e) = self.db.register_all(&registrations) {
            for target in &targets {
                remove_any(&self.layout.real_path(target))?;
            }
            return Err(e);
        }
        self.registered(&targets);
        Ok(())
    }

    /// The owner store objects get (this process's effective ids).
    pub fn owner(&self) -> (u32, u32) {
        self.owner
    }

    /// Checks the store: every valid path exists, and with
    /// `check_contents` its NAR hash and size are the registered ones, it
    /// is canonical (read-only, mtime 1, owned by the store's owner), and
    /// its content address, if it has one, names it and its content.
    pub fn verify(&self, check_contents: bool) -> Result<VerifyReport, StoreError> {
        let store_owner = fs::metadata(&self.layout.real_store_dir)
            .map_err(io_err("inspect", &self.layout.real_store_dir))?
            .uid();
        let mut report = VerifyReport::default();
        for (printed, hash_text, size) in self.db.all_valid()? {
            report.checked += 1;
            let path = match self.layout.store_dir.parse(&printed) {
                Ok(path) => path,
                Err(e) => {
                    report.problems.push(format!(
                        "registered path '{printed}' is not a store path: {e}"
                    ));
                    continue;
                }
            };
            let real = self.layout.real_path(&path);
            if fs::symlink_metadata(&real).is_err() {
                report.problems.push(format!(
                    "path '{printed}' disappeared, but it is still registered as valid"
                ));
                continue;
            }
            if !check_contents {
                continue;
            }
            let expected = Hash::parse(&hash_text, Some(crate::hash::HashAlgo::Sha256)).ok();
            let (actual, actual_size) = nar_hash_of(&real)?;
            if expected.as_ref() != Some(&actual) {
                report.problems.push(format!(
                    "path '{printed}' was modified! expected hash '{}', got '{actual}'",
                    expected.map_or(hash_text.clone(), |h| h.to_string())
                ));
            } else if actual_size != size {
                report.problems.push(format!(
                    "path '{printed}' was modified! expected NAR size {size}, got {actual_size}"
                ));
            } else if let Some(wrong) = first_non_canonical(&real, store_owner)? {
                report
                    .problems
                    .push(format!("path '{printed}' is not canonical: {wrong}"));
            } else if let Err(e) = self
                .query_info(&path)
                .and_then(|info| self.check_content_address(&info, &real))
            {
                report.problems.push(format!(
                    "path '{printed}' does not match its content address: {}",
                    error_chain(&e)
                ));
            }
        }
        Ok(report)
    }
}

/// Renames a canonical object into the store from another directory. A
/// directory moving to another parent must be writable to its owner (its
/// `..` changes), which a canonical one is not: the owner's write bit is
/// set for the rename and taken away again (root needs none of it, an
/// ordinary user's single-user store does).
fn rename_read_only(source: &Path, dest: &Path) -> Result<(), StoreError> {
    let meta = fs::symlink_metadata(source).map_err(io_err("inspect", source))?;
    let reopen = meta.is_dir() && meta.mode() & 0o200 == 0;
    if reopen {
        fs::set_permissions(
            source,
            fs::Permissions::from_mode((meta.mode() & 0o7777) | 0o200),
        )
        .map_err(io_err("chmod", source))?;
    }
    let renamed = fs::rename(source, dest).map_err(io_err("rename into the store", dest));
    let back = if renamed.is_ok() { dest } else { source };
    if reopen {
        fs::set_permissions(back, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(io_err("chmod", back))?;
    }
    renamed
}

/// Fault injection for the crash tests: with `HERMETIC_STORE_CRASH_AT`
/// naming this point (`staged`, `locked`, `renamed`, `registered`), the
/// process kills itself with SIGKILL here, as a crash would.
fn crash_point(point: &str) {
    if std::env::var_os("HERMETIC_STORE_CRASH_AT").is_some_and(|p| p == point) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

/// The whole error chain on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The NAR hash and size of a path.
pub fn nar_hash_of(path: &Path) -> Result<(Hash, u64), StoreError> {
    let mut sink = BufWriter::with_capacity(64 * 1024, HashingWriter::new());
    nar::dump(path, &mut sink)?;
    let sink = sink
        .into_inner()
        .map_err(|e| io_err("hash", path)(e.into_error()))?;
    Ok(sink.finish())
}

/// Restores a NAR stream into a pending installation's staging path,
/// returning the hash and size of exactly the bytes restored.
fn restore_nar(nar: &mut dyn io::Read, pending: &Pending) -> Result<(Hash, u64), StoreError> {
    let mut reader = HashingReader {
        inner: nar,
        hasher: HashingWriter::new(),
    };
    nar::parse(
        &mut reader,
        &mut RestoreSink::new(pending.staging().to_owned()),
    )?;
    Ok(reader.hasher.finish())
}

/// A reader that hashes what passes through it.
struct HashingReader<'a> {
    inner: &'a mut dyn io::Read,
    hasher: HashingWriter,
}

impl io::Read for HashingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Copies `source` to `dest` by serialising it to NAR and restoring that,
/// one read of the source; returns the hash and size of exactly the NAR
/// that was restored, so a source changing meanwhile cannot make the copy
/// and its hash differ.
pub fn copy_through_nar(source: &Path, dest: &Path) -> Result<(Hash, u64), StoreError> {
    let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| io_err("make a pipe to copy", source)(e.into()))?;
    let (reader, writer) = (File::from(reader), File::from(writer));
    std::thread::scope(|scope| {
        let dumper = scope.spawn(move || {
            let mut tee = HashingTee::new(BufWriter::with_capacity(64 * 1024, writer));
            nar::dump(source, &mut tee)?;
            tee.flush().map_err(nar::NarError::Write)?;
            drop(tee.inner);
            Ok::<_, nar::NarError>(tee.hasher.finish())
        });
        let restored = nar::parse(
            BufReader::with_capacity(64 * 1024, reader),
            &mut RestoreSink::new(dest.to_owned()),
        );
        let dumped = dumper.join().expect("the NAR writer does not panic");
        match (dumped, restored) {
            (Ok(hashed), Ok(())) => Ok(hashed),
            // The restoring side failed first (a full disk, say) and closed
            // the pipe: its error is the one that says why.
            (Err(nar::NarError::Write(_)), Err(restoring)) => Err(restoring.into()),
            (Err(dumping), _) => Err(dumping.into()),
            (Ok(_), Err(restoring)) => Err(restoring.into()),
        }
    })
}
