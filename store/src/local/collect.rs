//! The garbage collector, as Nix's: under the global GC lock (taken
//! exclusive, so no process adds a temporary root without telling it), with
//! a socket that takes the roots processes add meanwhile, it walks every
//! entry of the store directory; for each path, the paths that refer to it
//! (and, with `keep-derivations` / `keep-outputs`, a derivation's outputs
//! and an output's derivations) are visited, and when none of them is a
//! root or temporary root they are all dead, and are deleted referrers
//! first: each one unregistered before its files go, so a kill at any
//! instant leaves the registry and the files agreeing. Entries that are
//! not store paths, and store paths that are not valid, are deleted unless
//! a temporary root names their hash part (a path being built or added,
//! its lock file). Last, files in `<store>/.links` no path links to any
//! more are removed.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crate::error::{StoreError, io_err};
use crate::local::LocalStore;
use crate::lock::lock_file;
use crate::path::{StoreDir, StorePath};
use crate::temp_roots::{gc_lock_file, gc_socket_file};
use crate::tree::remove_tree_counting;

/// What a collection does (Nix's `GCOptions::GCAction`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GcAction {
    /// Only says which paths are alive.
    ReturnLive,
    /// Only says which paths are dead.
    ReturnDead,
    /// Deletes every dead path.
    DeleteDead,
    /// Deletes these paths, which must be dead.
    DeleteSpecific(BTreeSet<StorePath>),
}

impl GcAction {
    fn deletes(&self) -> bool {
        matches!(self, GcAction::DeleteDead | GcAction::DeleteSpecific(_))
    }
}

/// How a collection runs.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// What it does.
    pub action: GcAction,
    /// Whether roots are disregarded (only for deleting specific paths).
    pub ignore_liveness: bool,
    /// It stops once it has freed more than this many bytes.
    pub max_freed: u64,
    /// `keep-outputs`: a live derivation keeps its outputs alive.
    pub keep_outputs: bool,
    /// `keep-derivations`: a live output keeps its derivation alive.
    pub keep_derivations: bool,
}

impl GcOptions {
    /// A collection doing `action`, with no limit and Nix's default
    /// `keep-outputs = false`, `keep-derivations = true`.
    pub fn new(action: GcAction) -> GcOptions {
        GcOptions {
            action,
            ignore_liveness: false,
            max_freed: u64::MAX,
            keep_outputs: false,
            keep_derivations: true,
        }
    }
}

/// What a collection found or did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcResults {
    /// The paths deleted, or the live or dead paths asked for, printed.
    pub paths: BTreeSet<String>,
    /// The bytes freed (Nix's count: files with one or two links).
    pub bytes_freed: u64,
}

/// What the roots server and the collector share (hash parts of paths).
#[derive(Default)]
struct Shared {
    /// The temporary roots.
    temp_roots: HashSet<String>,
    /// The path the walk is at (Nix's `pending`).
    walking: Option<String>,
    /// Paths claimed for deletion whose files are not all gone yet.
    removing: HashSet<String>,
}

impl Shared {
    /// Whether a process rooting `hash` must wait before it goes on.
    fn busy(&self, hash: &str) -> bool {
        self.walking.as_deref() == Some(hash) || self.removing.contains(hash)
    }
}

type SharedState = Arc<(Mutex<Shared>, Condvar)>;

fn lock_shared(shared: &SharedState) -> std::sync::MutexGuard<'_, Shared> {
    shared.0.lock().unwrap_or_else(|e| e.into_inner())
}

/// The socket that takes the roots processes add while the collection
/// runs, answering each once it is safe from deletion.
struct RootsServer {
    socket: PathBuf,
    stop: Arc<AtomicBool>,
    clients: Arc<Mutex<Vec<UnixStream>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RootsServer {
    fn start(
        socket: PathBuf,
        shared: SharedState,
        store_dir: StoreDir,
    ) -> Result<Self, StoreError> {
        if let Some(dir) = socket.parent() {
            fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        }
        match fs::remove_file(&socket) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io_err("remove the old socket", &socket)(e));
            }
            _ => {}
        }
        let listener = crate::unix_socket::bind(&socket).map_err(io_err("bind", &socket))?;
        fs::set_permissions(&socket, fs::Permissions::from_mode(0o666))
            .map_err(io_err("chmod", &socket))?;
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Arc<Mutex<Vec<UnixStream>>> = Arc::default();
        let thread = {
            let (stop, clients) = (stop.clone(), clients.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    if let Ok(copy) = stream.try_clone() {
                        clients.lock().unwrap_or_else(|e| e.into_inner()).push(copy);
                    }
                    let (shared, store_dir) = (shared.clone(), store_dir.clone());
                    std::thread::spawn(move || serve_client(stream, &shared, &store_dir));
                }
            })
        };
        Ok(RootsServer {
            socket,
            stop,
            clients,
            thread: Some(thread),
        })
    }
}

impl Drop for RootsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread, which sees the flag.
        let _ = crate::unix_socket::connect(&self.socket);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        for client in self
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = client.shutdown(std::net::Shutdown::Both);
        }
        let _ = fs::remove_file(&self.socket);
    }
}

/// Takes one client's roots, a line each, answering `1` for each once the
/// collector will not delete it (waiting while it is being deleted).
fn serve_client(stream: UnixStream, shared: &SharedState, store_dir: &StoreDir) {
    let Ok(mut answer) = stream.try_clone() else {
        return;
    };
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        match store_dir.parse(&line) {
            Ok(path) => {
                let hash = path.hash_part().to_owned();
                let mut state = lock_shared(shared);
                state.temp_roots.insert(hash.clone());
                while state.busy(&hash) {
                    state = shared.1.wait(state).unwrap_or_else(|e| e.into_inner());
                }
            }
            Err(_) => tracing::error!("received garbage instead of a root from client"),
        }
        if answer.write_all(b"1").is_err() {
            return;
        }
    }
}

/// Stopped early: enough was freed.
struct LimitReached;

/// One collection's state.
struct Collection<'a> {
    store: &'a mut LocalStore,
    options: &'a GcOptions,
    shared: SharedState,
    roots: BTreeSet<StorePath>,
    alive: BTreeSet<StorePath>,
    dead: BTreeSet<StorePath>,
    referrers: HashMap<StorePath, BTreeSet<StorePath>>,
    /// Dead paths claimed, to be unregistered together, in order.
    unregistering: Vec<StorePath>,
    remover: Remover,
    results: GcResults,
    say: &'a mut dyn FnMut(&str),
}

/// How many paths are unregistered in one transaction.
const UNREGISTER_BATCH: usize = 128;

/// How many threads remove files at once when no `max-freed` is set:
/// on a disk that discards freed blocks each unlink waits for the device,
/// and the waits of several overlap.
const REMOVERS: usize = 8;

/// Removes entries of the store directory (already unregistered, or never
/// registered): on threads, or in the caller's when `max-freed` must be
/// checked after each. A removed path's hash part leaves
/// [`Shared::removing`].
struct Remover {
    work: Option<std::sync::mpsc::Sender<(PathBuf, Option<String>)>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    freed: Arc<std::sync::atomic::AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
    shared: SharedState,
}

impl Remover {
    fn new(threads: usize, shared: SharedState) -> Remover {
        let freed: Arc<std::sync::atomic::AtomicU64> = Arc::default();
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let mut remover = Remover {
            work: None,
            threads: Vec::new(),
            freed,
            errors,
            shared,
        };
        if threads > 0 {
            let (work, queue) = std::sync::mpsc::channel::<(PathBuf, Option<String>)>();
            let queue = Arc::new(Mutex::new(queue));
            for _ in 0..threads {
                let queue = queue.clone();
                let (freed, errors, shared) = (
                    remover.freed.clone(),
                    remover.errors.clone(),
                    remover.shared.clone(),
                );
                remover.threads.push(std::thread::spawn(move || {
                    loop {
                        let next = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok((real, hash)) = next else { return };
                        remove_one(&real, hash, &freed, &errors, &shared);
                    }
                }));
            }
            remover.work = Some(work);
        }
        remover
    }

    /// Removes `real`; `hash` (a claimed path's) is let go once it is gone.
    fn remove(&self, real: PathBuf, hash: Option<String>) {
        match &self.work {
            Some(work) => {
                if let Err(std::sync::mpsc::SendError((real, hash))) = work.send((real, hash)) {
                    remove_one(&real, hash, &self.freed, &self.errors, &self.shared);
                }
            }
            None => remove_one(&real, hash, &self.freed, &self.errors, &self.shared),
        }
    }

    /// The bytes freed so far.
    fn freed(&self) -> u64 {
        self.freed.load(Ordering::SeqCst)
    }

    /// Waits for every removal; the errors they met.
    fn finish(&mut self) -> Vec<String> {
        self.work = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        std::mem::take(&mut *self.errors.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn remove_one(
    real: &std::path::Path,
    hash: Option<String>,
    freed: &std::sync::atomic::AtomicU64,
    errors: &Mutex<Vec<String>>,
    shared: &SharedState,
) {
    match remove_tree_counting(real) {
        Ok(bytes) => {
            freed.fetch_add(bytes, Ordering::SeqCst);
        }
        Err(e) => errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(crate::error_chain(&e)),
    }
    if let Some(hash) = hash {
        lock_shared(shared).removing.remove(&hash);
        // A process waiting to root this path may go on (and make it anew).
        shared.1.notify_all();
    }
}

impl LocalStore {
    /// Nix's reserve for a full disk: `<db>/reserved`, `bytes` long (the
    /// `gc-reserved-space` setting), made when it is missing or of another
    /// size. A collection that deletes removes it first, so that the
    /// database can still be written when the disk is full. Failing to make
    /// it is not an error (Nix ignores it too).
    pub fn reserve_space(&self, bytes: u64) {
        let file = self.layout.db_dir().join("reserved");
        if fs::metadata(&file).is_ok_and(|meta| meta.len() == bytes) {
            return;
        }
        let made = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&file)
            .and_then(|mut reserve| {
                reserve.set_len(0)?;
                if bytes == 0
                    || nix::fcntl::posix_fallocate(&reserve, 0, bytes as libc::off_t).is_ok()
                {
                    return Ok(());
                }
                // A filesystem without fallocate: blocks written out.
                let zeros = vec![0u8; 64 * 1024];
                let mut left = bytes;
                while left > 0 {
                    let n = left.min(zeros.len() as u64) as usize;
                    reserve.write_all(&zeros[..n])?;
                    left -= n as u64;
                }
                Ok(())
            });
        if let Err(e) = made {
            tracing::debug!("cannot reserve {bytes} bytes in '{}': {e}", file.display());
        }
    }

    /// Collects garbage as `options` say, telling `say` what it does in
    /// Nix's words (`finding garbage collector roots...`, `deleting
    /// '…'`, …).
    pub fn collect_garbage(
        &mut self,
        options: &GcOptions,
        say: &mut dyn FnMut(&str),
    ) -> Result<GcResults, StoreError> {
        let mut keep_outputs = options.keep_outputs;
        let mut keep_derivations = options.keep_derivations;
        // With liveness ignored, following outputs or derivers would
        // delete what was not asked for (Nix turns them off too).
        if matches!(options.action, GcAction::DeleteSpecific(_)) && options.ignore_liveness {
            keep_outputs = false;
            keep_derivations = false;
        }
        let options = &GcOptions {
            keep_outputs,
            keep_derivations,
            ..options.clone()
        };
        let state_dir = self.layout.state_dir.clone();
        if options.action.deletes() {
            // Nix's reserve for a full disk.
            let _ = fs::remove_file(self.layout.db_dir().join("reserved"));
        }
        let lock_path = gc_lock_file(&state_dir);
        let _gc_lock = lock_file(&lock_path, true, || {
            say("waiting for the big garbage collector lock...")
        })
        .map_err(io_err("lock", &lock_path))?;
        let shared: SharedState = Arc::default();
        let _server = RootsServer::start(
            gc_socket_file(&state_dir),
            shared.clone(),
            self.layout.store_dir.clone(),
        )?;

        // With the lock held, no permanent root can appear; temporary
        // roots made before it are in the files, later ones come to the
        // server.
        say("finding garbage collector roots...");
        let mut roots = BTreeSet::new();
        if !options.ignore_liveness {
            roots.extend(self.find_roots_but_temporary(true)?.into_keys());
        }
        for path in self.find_temporary_roots(true)?.into_keys() {
            lock_shared(&shared)
                .temp_roots
                .insert(path.hash_part().to_owned());
            roots.insert(path);
        }
        // With a limit, each removal is counted before the next starts.
        let removers = if options.max_freed == u64::MAX {
            REMOVERS
        } else {
            0
        };
        let mut collection = Collection {
            store: self,
            options,
            remover: Remover::new(removers, shared.clone()),
            shared,
            roots,
            alive: BTreeSet::new(),
            dead: BTreeSet::new(),
            referrers: HashMap::new(),
            unregistering: Vec::new(),
            results: GcResults::default(),
            say,
        };
        let run = collection.run();
        // Whatever happened, the removals started are waited for.
        let _ = collection.unregister_pending();
        for error in collection.remover.finish() {
            (collection.say)(&format!("error: {error}"));
        }
        collection.results.bytes_freed = collection.remover.freed();
        run?;
        if collection.options.action.deletes() {
            collection.delete_unused_links()?;
        }
        Ok(collection.results)
    }
}

impl Collection<'_> {
    fn run(&mut self) -> Result<(), StoreError> {
        // Nix's synchronisation point for its tests (gc-concurrent.sh).
        if let Some(file) = std::env::var_os("_NIX_TEST_GC_SYNC") {
            let _ = fs::read(file);
        }
        let store_dir = self.store.layout.store_dir.clone();
        match &self.options.action {
            GcAction::DeleteSpecific(paths) => {
                for path in paths {
                    if self.visit(path).is_err() {
                        break;
                    }
                    if !self.dead.contains(path) {
                        return Err(StoreError::StillAlive(store_dir.print(path)));
                    }
                }
            }
            _ if self.options.max_freed > 0 => {
                (self.say)(if self.options.action.deletes() {
                    "deleting garbage..."
                } else {
                    "determining live/dead paths..."
                });
                let real = self.store.layout.real_store_dir.clone();
                let entries = fs::read_dir(&real).map_err(io_err("read directory", &real))?;
                for entry in entries {
                    let entry = entry.map_err(io_err("read directory", &real))?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name == ".links" {
                        continue;
                    }
                    let stopped = match StorePath::from_base_name(&name) {
                        Ok(path) => self.visit(&path).is_err(),
                        Err(_) => self.delete_entry(&name, None).is_err(),
                    };
                    if stopped {
                        break;
                    }
                }
            }
            _ => {}
        }
        let printed =
            |paths: &BTreeSet<StorePath>| paths.iter().map(|p| store_dir.print(p)).collect();
        match self.options.action {
            GcAction::ReturnLive => self.results.paths = printed(&self.alive),
            GcAction::ReturnDead => self.results.paths = printed(&self.dead),
            _ => {}
        }
        Ok(())
    }

    /// Nix's `deleteReferrersClosure`: visits `start` and what refers to
    /// it; when none of that is alive, all of it is dead (and deleted,
    /// referrers first). `Err` when enough was freed.
    fn visit(&mut self, start: &StorePath) -> Result<(), LimitReached> {
        let result = self.visit_inner(start);
        lock_shared(&self.shared).walking = None;
        self.shared.1.notify_all();
        match result {
            Ok(result) => result,
            Err(e) => {
                // A store error in the middle: told, and the walk goes on
                // with the next path, as nothing of this one was deleted
                // that is still registered.
                (self.say)(&format!("error: {}", crate::error_chain(&e)));
                Ok(())
            }
        }
    }

    fn visit_inner(&mut self, start: &StorePath) -> Result<Result<(), LimitReached>, StoreError> {
        let mut visited: BTreeSet<StorePath> = BTreeSet::new();
        let mut todo: VecDeque<StorePath> = VecDeque::new();
        visited.insert(start.clone());
        todo.push_back(start.clone());
        while let Some(path) = todo.pop_front() {
            if self.alive.contains(&path) {
                self.alive.insert(start.clone());
                return Ok(Ok(()));
            }
            if self.dead.contains(&path) {
                continue;
            }
            if self.roots.contains(&path) {
                self.mark_alive(&path, start)?;
                return Ok(Ok(()));
            }
            if let GcAction::DeleteSpecific(asked) = &self.options.action
                && !asked.contains(&path)
            {
                return Ok(Ok(()));
            }
            if !self.claim_for_walk(&path) {
                self.mark_alive(&path, start)?;
                return Ok(Ok(()));
            }
            if self.store.is_valid(&path)? {
                let referrers = match self.referrers.get(&path) {
                    Some(referrers) => referrers.clone(),
                    None => {
                        let found = self.store.db.referrers(&path)?;
                        self.referrers.insert(path.clone(), found.clone());
                        found
                    }
                };
                let mut next: Vec<StorePath> = referrers.into_iter().collect();
                if self.options.keep_derivations && path.is_derivation() {
                    for (_, output) in self.store.derivation_outputs(&path)? {
                        if self.store.is_valid(&output)?
                            && self.store.query_info(&output)?.deriver.as_ref() == Some(&path)
                        {
                            next.push(output);
                        }
                    }
                }
                if self.options.keep_outputs {
                    next.extend(self.store.valid_derivers(&path)?);
                }
                for path in next {
                    if visited.insert(path.clone()) {
                        todo.push_back(path);
                    }
                }
            }
        }
        // Nothing of it is alive: referrers go before what they refer to.
        for path in self.referrers_first(&visited)? {
            if self.dead.contains(&path) {
                continue;
            }
            // A root a process sent meanwhile: it and what it refers to
            // (the rest of the order) stay.
            if self.options.action.deletes() && !self.claim_for_removal(&path) {
                self.mark_alive(&path, start)?;
                return Ok(Ok(()));
            }
            self.dead.insert(path.clone());
            if self.options.action.deletes() {
                self.referrers.remove(&path);
                self.unregistering.push(path);
                if self.unregistering.len() >= UNREGISTER_BATCH
                    || self.options.max_freed != u64::MAX
                {
                    self.unregister_pending()?;
                    if self.limit_reached() {
                        return Ok(Err(LimitReached));
                    }
                }
            }
        }
        Ok(Ok(()))
    }

    /// Unregisters the dead paths claimed so far, in one transaction (one
    /// at a time if that fails: a path another registered one now refers
    /// to stays), then hands each to the remover.
    fn unregister_pending(&mut self) -> Result<(), StoreError> {
        if self.unregistering.is_empty() {
            return Ok(());
        }
        let paths = std::mem::take(&mut self.unregistering);
        let unregistered: Vec<StorePath> = match self.store.db.invalidate_all(&paths) {
            Ok(()) => paths,
            Err(_) => {
                let mut done = Vec::new();
                for path in paths {
                    match self.store.db.invalidate(&path) {
                        Ok(()) => done.push(path),
                        Err(e) => {
                            (self.say)(&format!("error: {}", crate::error_chain(&e)));
                            lock_shared(&self.shared).removing.remove(path.hash_part());
                            self.shared.1.notify_all();
                        }
                    }
                }
                done
            }
        };
        for path in unregistered {
            let hash = path.hash_part().to_owned();
            let _ = self.delete_entry(&path.to_string(), Some(hash));
        }
        Ok(())
    }

    /// Whether more than `max-freed` bytes are freed (told once).
    fn limit_reached(&mut self) -> bool {
        let reached = self.remover.freed() > self.options.max_freed;
        if reached {
            (self.say)(&format!(
                "deleted more than {} bytes; stopping",
                self.options.max_freed
            ));
        }
        reached
    }

    /// Whether the walk may go through `path`: false when a temporary root
    /// names its hash part; else a process rooting it meanwhile waits until
    /// the walk has moved on.
    fn claim_for_walk(&self, path: &StorePath) -> bool {
        let hash = path.hash_part();
        let mut state = lock_shared(&self.shared);
        if state.temp_roots.contains(hash) {
            return false;
        }
        state.walking = Some(hash.to_owned());
        true
    }

    /// Whether `path` may be deleted: false when a temporary root names
    /// its hash part; else a process rooting it meanwhile waits until its
    /// files are gone.
    fn claim_for_removal(&self, path: &StorePath) -> bool {
        let hash = path.hash_part();
        let mut state = lock_shared(&self.shared);
        if state.temp_roots.contains(hash) {
            return false;
        }
        state.removing.insert(hash.to_owned());
        true
    }

    /// A root's closure is alive (with its outputs under `keep-outputs`,
    /// its derivation under `keep-derivations`), and so is `start`.
    fn mark_alive(&mut self, path: &StorePath, start: &StorePath) -> Result<(), StoreError> {
        self.alive.insert(path.clone());
        self.alive.insert(start.clone());
        let mut todo = vec![path.clone()];
        let mut seen = BTreeSet::new();
        while let Some(next) = todo.pop() {
            if !seen.insert(next.clone()) {
                continue;
            }
            let Some(info) = self.store.db.query_info(&next)? else {
                continue;
            };
            self.alive.insert(next.clone());
            todo.extend(info.references.into_iter().filter(|r| !seen.contains(r)));
            if self.options.keep_outputs && next.is_derivation() {
                for (_, output) in self.store.derivation_outputs(&next)? {
                    if self.store.is_valid(&output)? {
                        todo.push(output);
                    }
                }
            }
            if self.options.keep_derivations
                && let Some(deriver) = info.deriver
                && self.store.is_valid(&deriver)?
            {
                todo.push(deriver);
            }
        }
        Ok(())
    }

    /// `paths` ordered so that each comes before the paths it refers to.
    fn referrers_first(&self, paths: &BTreeSet<StorePath>) -> Result<Vec<StorePath>, StoreError> {
        let mut order = Vec::with_capacity(paths.len());
        let mut done = BTreeSet::new();
        // Depth-first on references; a path is emitted after everything it
        // refers to, then the whole order is reversed.
        for path in paths {
            let mut stack = vec![(path.clone(), false)];
            while let Some((next, expanded)) = stack.pop() {
                if expanded {
                    order.push(next);
                    continue;
                }
                if !done.insert(next.clone()) {
                    continue;
                }
                stack.push((next.clone(), true));
                if let Some(info) = self.store.db.query_info(&next)? {
                    for reference in info.references {
                        if reference != next
                            && paths.contains(&reference)
                            && !done.contains(&reference)
                        {
                            stack.push((reference, false));
                        }
                    }
                }
            }
        }
        order.reverse();
        Ok(order)
    }

    /// Deletes the store directory's entry `name` (a store path already
    /// unregistered, whose hash part was claimed, or something that is not
    /// a store path). `Err` once more than `max-freed` bytes are freed.
    fn delete_entry(&mut self, name: &str, claimed: Option<String>) -> Result<(), LimitReached> {
        let layout = &self.store.layout;
        let printed = format!("{}/{name}", layout.store_dir.as_str());
        (self.say)(&format!("deleting '{printed}'"));
        self.remover
            .remove(layout.real_store_dir.join(name), claimed);
        self.results.paths.insert(printed);
        if self.limit_reached() {
            return Err(LimitReached);
        }
        Ok(())
    }

    /// Removes each file of `<store>/.links` that no path links to any
    /// more, and tells what hard-linking saves.
    fn delete_unused_links(&mut self) -> Result<(), StoreError> {
        let links = self.store.layout.real_store_dir.join(".links");
        // Nix's store always has it (made when the store is opened).
        fs::create_dir_all(&links).map_err(io_err("create directory", &links))?;
        let entries = fs::read_dir(&links).map_err(io_err("read directory", &links))?;
        (self.say)("deleting unused links...");
        let (mut actual, mut unshared) = (0i64, 0i64);
        for entry in entries {
            let entry = entry.map_err(io_err("read directory", &links))?;
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).map_err(io_err("inspect", &path))?;
            if meta.nlink() != 1 {
                actual += meta.size() as i64;
                unshared += (meta.nlink() as i64 - 1) * meta.size() as i64;
                continue;
            }
            fs::remove_file(&path).map_err(io_err("delete", &path))?;
        }
        let overhead = fs::metadata(&links)
            .map_err(io_err("inspect", &links))?
            .blocks() as i64
            * 512;
        (self.say)(&format!(
            "note: currently hard linking saves {:.2} MiB",
            (unshared - actual - overhead) as f64 / (1024.0 * 1024.0)
        ));
        Ok(())
    }
}
