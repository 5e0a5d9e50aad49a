//! One client's connection: the handshake, then operations until the
//! client hangs up. Each operation reads its arguments, works (log lines go
//! to the client on the stderr channel), ends with `STDERR_LAST` or an
//! error, and replies. A malformed request ends the connection; an
//! operation hermetic does not implement gets an error that names it.

mod activities;
mod add;
mod build;
mod maintenance;
mod options;
mod results;
mod serve;
mod substitute;

pub use serve::serve_legacy;

/// A copy of stdin's descriptor, watched for a hang-up while a build runs
/// (a login's `--stdio` or `store serve` session: the client's end of the
/// pipe closes when its ssh ends), or `None` if it cannot be copied.
pub fn stdin_hangup() -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::AsFd;
    std::io::stdin().as_fd().try_clone_to_owned().ok()
}

use std::collections::BTreeSet;
use std::io::{BufReader, BufWriter, Read, Write};
use std::sync::{Arc, Mutex};

use hermetic_config::settings::Settings;
use hermetic_store::{LocalStore, PathInfo, StoreLayout, StorePath};

use crate::protocol::{
    DAEMON_VERSION, OLDEST_CLIENT_VERSION, PROTOCOL_VERSION, WORKER_MAGIC_1, WORKER_MAGIC_2, minor,
    negotiate, op_name, send_error, send_last, send_log,
};
use crate::trust::{Peer, admit};
use crate::wire::{
    WireError, read_bool, read_count, read_string, read_strings, read_u64, write_string,
    write_strings, write_u64,
};

/// The stream to the client, shared with the log of running builds.
pub type ClientWriter = Arc<Mutex<BufWriter<Box<dyn Write + Send>>>>;

/// How a connection ended badly.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The client broke the protocol or the connection.
    #[error("the client's connection")]
    Wire(#[from] WireError),
    /// Writing to the client failed.
    #[error("writing to the client")]
    Io(#[from] std::io::Error),
    /// The greeting was wrong.
    #[error("protocol mismatch: the client did not greet as a Nix client")]
    Mismatch,
    /// The client's protocol is too old.
    #[error("the Nix client version is too old")]
    TooOld,
    /// An operation hermetic does not implement; its arguments cannot be
    /// skipped, so the connection ends.
    #[error("hermetic does not implement the worker operation '{0}' ({1})")]
    UnknownOp(&'static str, u64),
    /// A serve-protocol command failed: the serve protocol has no way to
    /// say so but to end (as `nix-store --serve` does).
    #[error("{0}")]
    ServeFailed(String),
}

/// An operation's failure: reported to the client, the connection goes on.
struct OpError(String);

impl<E: std::error::Error> From<E> for OpError {
    fn from(e: E) -> Self {
        OpError(hermetic_store::error_chain(&e))
    }
}

/// A client, as the daemon serves it.
pub struct Connection {
    layout: StoreLayout,
    settings: Settings,
    trusted: bool,
    hangup: Option<std::os::fd::OwnedFd>,
    stop: Option<std::os::fd::OwnedFd>,
    /// The protocol version the connection speaks.
    version: u64,
    to: ClientWriter,
    /// The store, once an operation needed it.
    open_store: std::cell::RefCell<Option<LocalStore>>,
    /// Who the client is, as the daemon's log names it.
    client: String,
    /// Nix's auto-GC before additions (`min-free`), once one came.
    auto_gc: std::cell::OnceCell<Option<hermetic_realise::auto_gc::AutoGc>>,
    /// Where log lines go.
    log_to: LogTo,
}

/// Where a connection's log lines go.
enum LogTo {
    /// The worker protocol's stderr channel, on the stream to the client;
    /// an operation's work ends with `STDERR_LAST` there.
    Channel,
    /// Plain lines on a stream of their own: the serve protocol's stderr.
    Lines(ClientWriter),
}

/// A peer as the daemon's log names it: `pid N, user U` (`?` for a pid
/// not known).
fn client_label(peer: &Peer) -> String {
    let pid = peer
        .pid
        .map_or_else(|| "?".to_owned(), |pid| pid.to_string());
    format!("pid {pid}, user {}", peer.user)
}

fn lock(to: &ClientWriter) -> std::sync::MutexGuard<'_, BufWriter<Box<dyn Write + Send>>> {
    to.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the server and a connection share when the daemon stops: a flag,
/// and a descriptor that becomes readable then, which cancels a running
/// build the way a client's hang-up does.
#[derive(Debug, Default)]
pub struct Lifecycle {
    /// The daemon stops: take no further operation.
    pub stopping: std::sync::atomic::AtomicBool,
    /// Readable once the daemon stops.
    pub stop: Option<std::os::fd::OwnedFd>,
}

impl Client {
    /// Whether the daemon serves this client, and trusts it: refused for a
    /// limit of the daemon's first, then by the trust rules (the refusal's
    /// message).
    pub(crate) fn admitted(&self, settings: &Settings) -> Result<bool, String> {
        match &self.refused {
            Some(refused) => Err(refused.clone()),
            None => admit(settings, &self.peer).map_err(|refused| refused.to_string()),
        }
    }
}

/// A connected client, as the server hands it over.
#[derive(Debug)]
pub struct Client {
    /// Who it is.
    pub peer: Peer,
    /// A descriptor of its socket, which tells when the client has gone
    /// while one of its builds runs: the build is then cancelled. A receive
    /// timeout on the socket is the handshake's: it is cleared once the
    /// client is admitted.
    pub hangup: Option<std::os::fd::OwnedFd>,
    /// Why it is refused before anything is looked at (a limit of the
    /// daemon's), if it is: it is greeted and told so.
    pub refused: Option<String>,
}

/// Serves one client from `from` to `to` until it hangs up.
pub fn serve(
    layout: StoreLayout,
    settings: Settings,
    client: Client,
    from: impl Read,
    to: Box<dyn Write + Send>,
    lifecycle: &Lifecycle,
) -> Result<(), ConnectionError> {
    use std::sync::atomic::Ordering;
    let mut from = BufReader::new(from);
    let to: ClientWriter = Arc::new(Mutex::new(BufWriter::new(to)));
    if read_u64(&mut from)? != WORKER_MAGIC_1 {
        return Err(ConnectionError::Mismatch);
    }
    {
        let mut w = lock(&to);
        write_u64(&mut *w, WORKER_MAGIC_2)?;
        write_u64(&mut *w, PROTOCOL_VERSION)?;
        w.flush()?;
    }
    let client_version = read_u64(&mut from)?;
    if client_version < OLDEST_CLIENT_VERSION || client_version >> 8 != PROTOCOL_VERSION >> 8 {
        return Err(ConnectionError::TooOld);
    }
    let version = negotiate(client_version);
    if minor(version) >= 38 {
        // The features exchange: the client's, then ours (none yet); a
        // connection uses those both have.
        read_strings(&mut from)?;
        let mut w = lock(&to);
        write_strings(&mut *w, std::iter::empty())?;
        w.flush()?;
    }
    if minor(version) >= 14 && read_bool(&mut from)? {
        read_u64(&mut from)?; // CPU affinity: not used
    }
    if minor(version) >= 11 {
        read_u64(&mut from)?; // obsolete reserveSpace
    }
    // The start-up work: whether this peer may connect at all.
    let admitted = client.admitted(&settings);
    let Client { peer, hangup, .. } = client;
    {
        let mut w = lock(&to);
        if minor(version) >= 33 {
            // The daemon's version, which clients show.
            write_string(&mut *w, DAEMON_VERSION)?;
        }
        if minor(version) >= 35 {
            // Whether the daemon trusts the client (`nix store info`'s
            // `Trusted:`): 1 yes, 2 no.
            write_u64(&mut *w, if admitted == Ok(true) { 1 } else { 2 })?;
        }
    }
    let trusted = match admitted {
        Ok(trusted) => trusted,
        Err(refused) => {
            tracing::warn!("refused connection from {}: {refused}", client_label(&peer));
            let mut w = lock(&to);
            send_error(&mut *w, &refused)?;
            return Ok(());
        }
    };
    if let Some(socket) = &hangup {
        // Admitted: the client may take its time from here on. (A
        // `--stdio` client's pipe has no timeout to lift.)
        match nix::sys::socket::setsockopt(
            socket,
            nix::sys::socket::sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(0, 0),
        ) {
            Ok(()) | Err(nix::errno::Errno::ENOTSOCK) => {}
            Err(e) => return Err(std::io::Error::from(e).into()),
        }
    }
    {
        let mut w = lock(&to);
        send_last(&mut *w)?;
        w.flush()?;
    }
    let client = client_label(&peer);
    // Nix's words.
    tracing::info!(
        "accepted connection from {client}{}",
        if trusted { " (trusted)" } else { "" }
    );
    let mut connection = Connection {
        layout,
        settings,
        trusted,
        hangup,
        stop: lifecycle.stop.as_ref().and_then(|fd| fd.try_clone().ok()),
        open_store: std::cell::RefCell::new(None),
        auto_gc: std::cell::OnceCell::new(),
        client,
        version,
        to,
        log_to: LogTo::Channel,
    };
    loop {
        if lifecycle.stopping.load(Ordering::SeqCst) {
            return Ok(());
        }
        let op = match read_u64(&mut from) {
            Ok(op) => op,
            Err(WireError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        tracing::debug!(op = op_name(op), "operation");
        match connection.perform(op, &mut from) {
            Ok(()) => {}
            Err(Step::Failed(OpError(message))) => {
                let mut w = lock(&connection.to);
                send_error(&mut *w, &message)?;
            }
            Err(Step::Fatal(error)) => {
                let mut w = lock(&connection.to);
                let _ = send_error(&mut *w, &hermetic_store::error_chain(&error));
                let _ = w.flush();
                return Err(error);
            }
        }
        lock(&connection.to).flush()?;
    }
}

/// How an operation went wrong.
enum Step {
    /// Its work failed: say so, and go on.
    Failed(OpError),
    /// The connection is broken.
    Fatal(ConnectionError),
}

impl From<WireError> for Step {
    fn from(e: WireError) -> Self {
        Step::Fatal(e.into())
    }
}

impl From<std::io::Error> for Step {
    fn from(e: std::io::Error) -> Self {
        Step::Fatal(e.into())
    }
}

impl From<OpError> for Step {
    fn from(e: OpError) -> Self {
        Step::Failed(e)
    }
}

fn failed(e: impl Into<OpError>) -> Step {
    Step::Failed(e.into())
}

impl Connection {
    /// The store, opened at the connection's first need and kept (with the
    /// big lock held shared, as a Nix daemon worker holds it) until the
    /// client goes.
    fn store(&self) -> Result<std::cell::RefMut<'_, LocalStore>, Step> {
        let mut store = self.open_store.borrow_mut();
        if store.is_none() {
            *store = Some(LocalStore::open(self.layout.clone()).map_err(failed)?);
        }
        let mut store = std::cell::RefMut::map(store, |s| s.as_mut().expect("opened above"));
        // A client may have set it since (`--auto-optimise-store`).
        store.set_auto_optimise(self.settings.auto_optimise_store);
        Ok(store)
    }

    /// B95: repairing is for trusted clients only.
    fn refuse_untrusted_repair(&self, repair: bool) -> Result<(), Step> {
        if repair && !self.trusted {
            return Err(Step::Failed(OpError(
                "repairing is not allowed because you are not in 'trusted-users'".into(),
            )));
        }
        Ok(())
    }

    fn parse_path(&self, text: &str) -> Result<StorePath, Step> {
        self.layout.store_dir.parse(text).map_err(failed)
    }

    fn print(&self, path: &StorePath) -> String {
        self.layout.store_dir.print(path)
    }

    fn read_path_set(&self, from: &mut impl Read) -> Result<BTreeSet<StorePath>, Step> {
        read_strings(from)?
            .iter()
            .map(|p| self.parse_path(p))
            .collect()
    }

    fn write_path_set<'a>(
        &self,
        w: &mut (impl Write + ?Sized),
        paths: impl IntoIterator<Item = &'a StorePath>,
    ) -> std::io::Result<()> {
        let printed: Vec<String> = paths.into_iter().map(|p| self.print(p)).collect();
        write_strings(w, printed.iter().map(String::as_str))
    }

    /// Ends the work of an operation and writes its reply.
    fn reply(&self, write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<(), Step> {
        let mut w = lock(&self.to);
        if let LogTo::Channel = self.log_to {
            send_last(&mut *w)?;
        }
        write(&mut *w)?;
        Ok(())
    }

    fn write_path_info(&self, w: &mut dyn Write, info: &PathInfo) -> std::io::Result<()> {
        let mut w = w;
        write_string(
            &mut w,
            &info
                .deriver
                .as_ref()
                .map(|d| self.print(d))
                .unwrap_or_default(),
        )?;
        write_string(&mut w, &info.nar_hash.to_hex())?;
        self.write_path_set(&mut w, &info.references)?;
        write_u64(&mut w, info.registration_time as u64)?;
        write_u64(&mut w, info.nar_size)?;
        if minor(self.version) >= 16 {
            write_u64(&mut w, u64::from(info.ultimate))?;
            write_strings(&mut w, info.sigs.iter().map(String::as_str))?;
            write_string(&mut w, info.ca.as_deref().unwrap_or_default())?;
        }
        Ok(())
    }

    fn log(&self, line: &str) {
        match &self.log_to {
            LogTo::Channel => {
                let _ = send_log(&mut *lock(&self.to), line);
            }
            LogTo::Lines(to) => {
                let mut w = lock(to);
                let _ = writeln!(w, "{line}").and_then(|()| w.flush());
            }
        }
    }

    /// The paths of `paths` that are valid, after fetching from the
    /// substituters what they offer if `substitute` (Nix's
    /// `substitutePaths`: a failure to fetch is only a warning).
    fn valid_paths(
        &self,
        paths: BTreeSet<StorePath>,
        substitute: bool,
    ) -> Result<BTreeSet<StorePath>, Step> {
        if substitute {
            let missing: Vec<StorePath> = {
                let store = self.store()?;
                paths
                    .iter()
                    .filter(|p| !store.is_valid(p).unwrap_or(true))
                    .cloned()
                    .collect()
            };
            let offered: Vec<StorePath> = self
                .offers(&missing)
                .into_iter()
                .map(|o| o.narinfo.info.path)
                .collect();
            match self.substitute(&offered) {
                Err(Step::Failed(OpError(message))) => self.log(&format!("warning: {message}")),
                other => other?,
            }
        }
        let store = self.store()?;
        let mut valid = BTreeSet::new();
        for path in paths {
            if store.is_valid(&path).map_err(failed)? {
                valid.insert(path);
            }
        }
        Ok(valid)
    }

    fn perform(&mut self, op: u64, from: &mut impl Read) -> Result<(), Step> {
        match op {
            // IsValidPath
            1 => {
                let path = self.parse_path(&read_string(from)?)?;
                let valid = self.store()?.is_valid(&path).map_err(failed)?;
                self.reply(|w| write_u64(w, u64::from(valid)))
            }
            // QueryReferrers
            6 => {
                let path = self.parse_path(&read_string(from)?)?;
                let referrers = self.store()?.referrers(&path).map_err(failed)?;
                self.reply(|w| self.write_path_set(&mut *w, &referrers))
            }
            // AddToStore (protocol 1.25 and later)
            7 => self.add_to_store(from),
            // AddTextToStore
            8 => {
                let name = read_string(from)?;
                let text = read_string(from)?;
                let refs = self.read_path_set(from)?;
                let path = self.add_text(&name, text.as_bytes(), &refs)?;
                self.reply(|w| write_string(&mut *w, &self.print(&path)))
            }
            // BuildPaths
            9 => {
                let targets = read_strings(from)?;
                let mode = if minor(self.version) >= 15 {
                    read_u64(from)?
                } else {
                    0
                };
                self.build_paths(&targets, mode)?;
                self.reply(|w| write_u64(w, 1))
            }
            // EnsurePath
            10 => {
                let path = self.parse_path(&read_string(from)?)?;
                self.substitute(std::slice::from_ref(&path))?;
                self.reply(|w| write_u64(w, 1))
            }
            // AddTempRoot: kept for as long as the connection lasts.
            11 => {
                let path = self.parse_path(&read_string(from)?)?;
                self.store()?.add_temp_root(&path).map_err(failed)?;
                self.reply(|w| write_u64(w, 1))
            }
            // AddIndirectRoot: a client's link (`result`) to a store path,
            // an absolute path; recorded as Nix records it.
            12 => {
                let link = std::path::PathBuf::from(read_string(from)?);
                if !link.is_absolute() {
                    return Err(Step::Failed(OpError(format!(
                        "the indirect root '{}' is not an absolute path",
                        link.display()
                    ))));
                }
                self.store()?.add_indirect_root(&link).map_err(failed)?;
                self.reply(|w| write_u64(w, 1))
            }
            // SyncWithGC
            13 => self.reply(|w| write_u64(w, 1)),
            // AddPermRoot: a link at a path the client names to a store
            // path, made by the daemon (for `mounted-ssh-ng://` stores);
            // trusted clients only, as in Nix.
            47 => {
                let path = self.parse_path(&read_string(from)?)?;
                let gc_root = std::path::PathBuf::from(read_string(from)?);
                if !self.trusted {
                    return Err(Step::Failed(OpError(
                        "you are not privileged to create perm roots\n\nhint: you can just do this \
                         client-side without special privileges, and probably want to do that instead."
                            .into(),
                    )));
                }
                if !gc_root.is_absolute() {
                    return Err(Step::Failed(OpError(format!(
                        "the root '{}' is not an absolute path",
                        gc_root.display()
                    ))));
                }
                let made = self
                    .store()?
                    .add_perm_root(&path, &gc_root)
                    .map_err(failed)?;
                self.reply(|w| write_string(w, &made.display().to_string()))
            }
            // SetOptions
            19 => self.set_options(from),
            // QueryPathInfo
            26 => {
                let path = self.parse_path(&read_string(from)?)?;
                let store = self.store()?;
                let info = match store.query_info(&path) {
                    Ok(info) => Some(info),
                    Err(hermetic_store::StoreError::NotValid(_)) => None,
                    Err(e) => return Err(failed(e)),
                };
                self.reply(|w| match &info {
                    Some(info) => {
                        write_u64(&mut *w, 1)?;
                        self.write_path_info(w, info)
                    }
                    None => write_u64(w, 0),
                })
            }
            // QueryPathFromHashPart
            29 => {
                let hash_part = read_string(from)?;
                let store = self.store()?;
                let found = store.path_from_hash_part(&hash_part).map_err(failed)?;
                self.reply(|w| {
                    write_string(&mut *w, &found.map(|p| self.print(&p)).unwrap_or_default())
                })
            }
            // QuerySubstitutablePathInfos
            30 => {
                let count = read_count(from)?;
                let mut paths = Vec::new();
                for _ in 0..count {
                    paths.push(self.parse_path(&read_string(from)?)?);
                    if minor(self.version) >= 22 {
                        read_string(from)?; // its content address, if any
                    }
                }
                let offers = self.offers(&paths);
                self.reply(|w| {
                    write_u64(&mut *w, offers.len() as u64)?;
                    for offer in &offers {
                        write_string(&mut *w, &self.print(&offer.narinfo.info.path))?;
                        self.write_substitutable(w, offer)?;
                    }
                    Ok(())
                })
            }
            // QueryValidPaths
            31 => {
                let paths = self.read_path_set(from)?;
                let substitute = minor(self.version) >= 27 && read_u64(from)? != 0;
                let valid = self.valid_paths(paths, substitute)?;
                self.reply(|w| self.write_path_set(&mut *w, &valid))
            }
            // QuerySubstitutablePaths
            32 => {
                let paths: Vec<StorePath> = self.read_path_set(from)?.into_iter().collect();
                let offered: BTreeSet<StorePath> = self
                    .offers(&paths)
                    .into_iter()
                    .map(|o| o.narinfo.info.path)
                    .collect();
                self.reply(|w| self.write_path_set(&mut *w, &offered))
            }
            // BuildDerivation: a derivation sent inline (remote building).
            36 => {
                let drv_path = self.parse_path(&read_string(from)?)?;
                let drv = self.read_basic_derivation(from, &drv_path)?;
                let mode = read_u64(from)?;
                let outcome = self.build_derivation(drv_path, drv, mode)?;
                self.reply(|w| self.write_build_result(w, &outcome))
            }
            // NarFromPath
            38 => {
                let path = self.parse_path(&read_string(from)?)?;
                let store = self.store()?;
                store.query_info(&path).map_err(failed)?;
                let real = self.layout.real_path(&path);
                let mut w = lock(&self.to);
                send_last(&mut *w)?;
                hermetic_store::nar::dump(&real, &mut *w)
                    .map_err(|e| Step::Fatal(std::io::Error::other(e).into()))?;
                Ok(())
            }
            // AddToStoreNar
            39 => self.add_to_store_nar(from),
            // AddMultipleToStore
            44 => self.add_multiple_to_store(from),
            // BuildPathsWithResults
            46 => self.build_paths_with_results(from),
            // QueryMissing
            40 => {
                let targets = read_strings(from)?;
                let missing = self.query_missing(&targets)?;
                self.reply(|w| {
                    let mut w = w;
                    self.write_path_set(&mut w, &missing.will_build)?;
                    self.write_path_set(&mut w, &missing.will_substitute)?;
                    self.write_path_set(&mut w, &missing.unknown)?;
                    write_u64(&mut w, missing.download_size)?;
                    write_u64(&mut w, missing.nar_size)
                })
            }
            // QueryDerivationOutputMap
            41 => {
                let path = self.parse_path(&read_string(from)?)?;
                let drv = self.store()?.read_derivation(&path).map_err(failed)?;
                self.reply(|w| {
                    let mut w = w;
                    write_u64(&mut w, drv.outputs.len() as u64)?;
                    for (name, output) in &drv.outputs {
                        write_string(&mut w, name)?;
                        write_string(
                            &mut w,
                            &output.path().map(|p| self.print(p)).unwrap_or_default(),
                        )?;
                    }
                    Ok(())
                })
            }
            // HasSubstitutes
            3 => {
                let path = self.parse_path(&read_string(from)?)?;
                let offered = !self.offers(&[path]).is_empty();
                self.reply(|w| write_u64(w, u64::from(offered)))
            }
            // QueryPathHash
            4 => {
                let path = self.parse_path(&read_string(from)?)?;
                let info = self.store()?.query_info(&path).map_err(failed)?;
                self.reply(|w| write_string(w, &info.nar_hash.to_hex()))
            }
            // QueryReferences
            5 => {
                let path = self.parse_path(&read_string(from)?)?;
                let info = self.store()?.query_info(&path).map_err(failed)?;
                self.reply(|w| self.write_path_set(&mut *w, &info.references))
            }
            // FindRoots
            14 => self.find_roots(),
            // QueryDeriver
            18 => {
                let path = self.parse_path(&read_string(from)?)?;
                let info = self.store()?.query_info(&path).map_err(failed)?;
                self.reply(|w| {
                    let deriver = info.deriver.as_ref().map(|d| self.print(d));
                    write_string(w, &deriver.unwrap_or_default())
                })
            }
            // CollectGarbage
            20 => self.collect_garbage(from),
            // QuerySubstitutablePathInfo
            21 => {
                let path = self.parse_path(&read_string(from)?)?;
                let offers = self.offers(&[path]);
                self.reply(|w| match offers.first() {
                    Some(offer) => {
                        write_u64(&mut *w, 1)?;
                        self.write_substitutable(w, offer)
                    }
                    None => write_u64(w, 0),
                })
            }
            // QueryDerivationOutputs, QueryDerivationOutputNames
            22 | 28 => {
                let path = self.parse_path(&read_string(from)?)?;
                let drv = self.store()?.read_derivation(&path).map_err(failed)?;
                self.reply(|w| {
                    if op == 22 {
                        self.write_path_set(&mut *w, drv.outputs.values().filter_map(|o| o.path()))
                    } else {
                        write_strings(w, drv.outputs.keys().map(String::as_str))
                    }
                })
            }
            // QueryAllValidPaths
            23 => {
                let paths = self.store()?.all_valid_paths().map_err(failed)?;
                self.reply(|w| self.write_path_set(&mut *w, &paths))
            }
            // QueryValidDerivers
            33 => {
                let path = self.parse_path(&read_string(from)?)?;
                let derivers = self.store()?.valid_derivers(&path).map_err(failed)?;
                self.reply(|w| self.write_path_set(&mut *w, &derivers))
            }
            // OptimiseStore
            34 => self.optimise_store(),
            // VerifyStore
            35 => self.verify_store(from),
            // AddSignatures
            37 => self.add_signatures(from),
            // RegisterDrvOutput
            42 => self.register_drv_output(from),
            // QueryRealisation
            43 => self.query_realisation(from),
            // AddBuildLog
            45 => self.add_build_log(from),
            other => Err(Step::Fatal(ConnectionError::UnknownOp(
                op_name(other),
                other,
            ))),
        }
    }
}
