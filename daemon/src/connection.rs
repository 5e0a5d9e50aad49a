//! One client's connection: the handshake, then operations until the
//! client hangs up. Each operation reads its arguments, works (log lines go
//! to the client on the stderr channel), ends with `STDERR_LAST` or an
//! error, and replies. A malformed request ends the connection; an
//! operation hermetic does not implement gets an error that names it.

use std::collections::BTreeSet;
use std::io::{BufReader, BufWriter, Read, Write};
use std::sync::{Arc, Mutex};

use hermetic_runtime::settings::Settings;
use hermetic_store::{LocalStore, PathInfo, StoreLayout, StorePath};

use crate::protocol::{
    PROTOCOL_VERSION, WORKER_MAGIC_1, WORKER_MAGIC_2, minor, op_name, send_error, send_last,
    send_log,
};
use crate::trust::{Override, Peer, admit, judge_override};
use crate::wire::{
    Framed, WireError, read_bool, read_string, read_strings, read_u64, write_string, write_strings,
    write_u64,
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
    client_version: u64,
    to: ClientWriter,
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

/// Serves one client from `from` to `to` until it hangs up. `hangup`, a
/// descriptor of the client's socket, tells when the client has gone while
/// one of its builds runs: the build is then cancelled.
pub fn serve(
    layout: StoreLayout,
    settings: Settings,
    peer: Peer,
    from: impl Read,
    to: Box<dyn Write + Send>,
    hangup: Option<std::os::fd::OwnedFd>,
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
    if client_version < 0x10a {
        return Err(ConnectionError::TooOld);
    }
    if minor(client_version) >= 14 && read_bool(&mut from)? {
        read_u64(&mut from)?; // CPU affinity: not used
    }
    if minor(client_version) >= 11 {
        read_u64(&mut from)?; // obsolete reserveSpace
    }
    if minor(client_version) >= 33 {
        // The daemon's version, which clients show.
        let mut w = lock(&to);
        write_string(&mut *w, concat!("hermetic ", env!("CARGO_PKG_VERSION")))?;
    }
    // The start-up work: whether this peer may connect at all.
    let trusted = match admit(&settings, &peer) {
        Ok(trusted) => trusted,
        Err(refused) => {
            tracing::info!(user = %peer.user, "{refused}");
            let mut w = lock(&to);
            send_error(&mut *w, &refused.to_string())?;
            return Ok(());
        }
    };
    {
        let mut w = lock(&to);
        send_last(&mut *w)?;
        w.flush()?;
    }
    tracing::debug!(user = %peer.user, uid = peer.uid, trusted, "client connected");
    let mut connection = Connection {
        layout,
        settings,
        trusted,
        hangup,
        stop: lifecycle.stop.as_ref().and_then(|fd| fd.try_clone().ok()),
        client_version,
        to,
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
    fn store(&self) -> Result<LocalStore, Step> {
        LocalStore::open(self.layout.clone()).map_err(failed)
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
        send_last(&mut *w)?;
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
        if minor(self.client_version) >= 16 {
            write_u64(&mut w, u64::from(info.ultimate))?;
            write_strings(&mut w, info.sigs.iter().map(String::as_str))?;
            write_string(&mut w, info.ca.as_deref().unwrap_or_default())?;
        }
        Ok(())
    }

    fn log(&self, line: &str) {
        let mut w = lock(&self.to);
        let _ = send_log(&mut *w, line);
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
                let mode = if minor(self.client_version) >= 15 {
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
                if !self.store()?.is_valid(&path).map_err(failed)? {
                    return Err(Step::Failed(OpError(format!(
                        "path '{}' is not valid",
                        self.print(&path)
                    ))));
                }
                self.reply(|w| write_u64(w, 1))
            }
            // AddTempRoot, AddIndirectRoot: hermetic has no garbage
            // collector yet, so nothing can remove what they protect.
            11 | 12 => {
                read_string(from)?;
                self.reply(|w| write_u64(w, 1))
            }
            // SyncWithGC
            13 => self.reply(|w| write_u64(w, 1)),
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
            // QuerySubstitutablePathInfos: there are no substituters.
            30 => {
                let count = read_u64(from)?;
                for _ in 0..count.min(crate::wire::MAX_LIST) {
                    read_string(from)?;
                    if minor(self.client_version) >= 22 {
                        read_string(from)?;
                    }
                }
                self.reply(|w| write_u64(w, 0))
            }
            // QueryValidPaths
            31 => {
                let paths = self.read_path_set(from)?;
                if minor(self.client_version) >= 27 {
                    read_u64(from)?; // substitute: there are no substituters
                }
                let store = self.store()?;
                let mut valid = BTreeSet::new();
                for path in paths {
                    if store.is_valid(&path).map_err(failed)? {
                        valid.insert(path);
                    }
                }
                self.reply(|w| self.write_path_set(&mut *w, &valid))
            }
            // QuerySubstitutablePaths
            32 => {
                self.read_path_set(from)?;
                self.reply(|w| write_u64(w, 0))
            }
            // BuildDerivation: a derivation sent inline (remote building).
            36 => {
                let drv_path = self.parse_path(&read_string(from)?)?;
                let drv = self.read_basic_derivation(from, &drv_path)?;
                let mode = read_u64(from)?;
                let (status, message) = self.build_derivation(drv_path, drv, mode)?;
                self.reply(|w| {
                    write_u64(&mut *w, status)?;
                    write_string(&mut *w, &message)?;
                    if minor(self.client_version) >= 29 {
                        // times built, non-deterministic, start and stop time
                        for n in [u64::from(status == 0), 0, 0, 0] {
                            write_u64(&mut *w, n)?;
                        }
                    }
                    if minor(self.client_version) >= 28 {
                        write_u64(&mut *w, 0)?; // no realisations: input-addressed or fixed
                    }
                    Ok(())
                })
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
            // QueryMissing
            40 => {
                let targets = read_strings(from)?;
                let (will_build, unknown) = self.query_missing(&targets)?;
                self.reply(|w| {
                    let mut w = w;
                    self.write_path_set(&mut w, &will_build)?;
                    write_u64(&mut w, 0)?; // will substitute
                    self.write_path_set(&mut w, &unknown)?;
                    write_u64(&mut w, 0)?; // download size
                    write_u64(&mut w, 0) // NAR size
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
            other => Err(Step::Fatal(ConnectionError::UnknownOp(
                op_name(other),
                other,
            ))),
        }
    }

    /// A `BasicDerivation` as the protocol sends it: outputs, input
    /// sources, platform, builder, arguments, environment (no input
    /// derivations: their outputs are among the sources).
    fn read_basic_derivation(
        &self,
        from: &mut impl Read,
        drv_path: &StorePath,
    ) -> Result<hermetic_store::Derivation, Step> {
        let name = drv_path.name().trim_end_matches(".drv").to_owned();
        let bounded = |count: u64| -> Result<u64, Step> {
            if count > crate::wire::MAX_LIST {
                return Err(WireError::TooLong {
                    what: "list",
                    len: count,
                    max: crate::wire::MAX_LIST,
                }
                .into());
            }
            Ok(count)
        };
        let count = bounded(read_u64(from)?)?;
        let mut outputs = std::collections::BTreeMap::new();
        let mut bad = None;
        for _ in 0..count {
            let output = read_string(from)?;
            let (path, algo, hash) = (read_string(from)?, read_string(from)?, read_string(from)?);
            match hermetic_store::derivation::output_from_parts(
                &self.layout.store_dir,
                &name,
                &output,
                Some(&path),
                Some(&algo),
                Some(&hash),
            ) {
                Ok(parsed) => {
                    outputs.insert(output, parsed);
                }
                Err((part, problem)) => {
                    bad = Some(format!("output '{output}', {}: {problem}", part.field()))
                }
            }
        }
        let input_srcs = read_strings(from)?;
        let system = read_string(from)?;
        let builder = read_string(from)?;
        let args = read_strings(from)?;
        let env_count = bounded(read_u64(from)?)?;
        let mut env = std::collections::BTreeMap::new();
        for _ in 0..env_count {
            env.insert(read_string(from)?, read_string(from)?);
        }
        if let Some(problem) = bad {
            return Err(Step::Failed(OpError(format!(
                "bad derivation '{}': {problem}",
                self.print(drv_path)
            ))));
        }
        let input_srcs = input_srcs
            .iter()
            .map(|p| self.parse_path(p))
            .collect::<Result<_, _>>()?;
        Ok(hermetic_store::Derivation {
            name,
            outputs,
            input_drvs: std::collections::BTreeMap::new(),
            input_srcs,
            system,
            builder,
            args,
            env,
        })
    }

    /// Builds a derivation a client sent inline. Untrusted clients may not
    /// build input-addressed ones (B95): their output paths cannot be
    /// checked without the derivation closure; a fixed-output one is
    /// written to the store under its own path first. Returns Nix's build
    /// status and message.
    fn build_derivation(
        &self,
        drv_path: StorePath,
        drv: hermetic_store::Derivation,
        mode: u64,
    ) -> Result<(u64, String), Step> {
        use hermetic_build::goal::{FailureKind, Goal};
        if mode == 1 && !self.trusted {
            return Err(Step::Failed(OpError(
                "repairing is not allowed because you are not in 'trusted-users'".into(),
            )));
        }
        let drv_path = if self.trusted {
            drv_path
        } else if drv.is_fixed_output() {
            self.store()?.add_derivation(&drv).map_err(failed)?
        } else {
            return Err(Step::Failed(OpError(
                "you are not privileged to build input-addressed derivations".into(),
            )));
        };
        let to = self.to.clone();
        let log: hermetic_build::log::SharedLog = Arc::new(Mutex::new(ClientLog {
            to: to.clone(),
            partial: Vec::new(),
        }));
        let mut store = self.store()?;
        let outcome = self.while_watching_hangup(|cancel| {
            let goal = Goal {
                drv_path,
                drv,
                check: mode == 2,
                settings: &self.settings,
                cancel,
                log,
            };
            goal.run(&mut store, &mut |line| {
                let mut w = lock(&to);
                let _ = send_log(&mut *w, &line);
            })
        });
        // Nix's BuildResult statuses.
        Ok(match outcome {
            Ok(_) => (0, String::new()),
            Err(failure) => {
                let status = match failure.kind {
                    FailureKind::Permanent | FailureKind::HashMismatch => 3,
                    FailureKind::Transient => 6,
                    FailureKind::TimedOut => 8,
                    FailureKind::NotDeterministic => 12,
                    FailureKind::DependencyFailed => 10,
                    FailureKind::Misc => 9,
                };
                (status, hermetic_store::error_chain(&failure.error))
            }
        })
    }

    /// The metadata of a path being copied in, after its path.
    fn read_path_info(&self, from: &mut impl Read, path: StorePath) -> Result<PathInfo, Step> {
        let deriver = read_string(from)?;
        let nar_hash = read_string(from)?;
        let references = self.read_path_set(from)?;
        let registration_time = read_u64(from)? as i64;
        let nar_size = read_u64(from)?;
        let _ultimate = read_bool(from)?;
        let sigs = read_strings(from)?;
        let ca = read_string(from)?;
        let nar_hash =
            hermetic_store::Hash::parse(&nar_hash, Some(hermetic_store::HashAlgo::Sha256))
                .map_err(failed)?;
        let deriver = match deriver.as_str() {
            "" => None,
            text => Some(self.parse_path(text)?),
        };
        Ok(PathInfo {
            path,
            nar_hash,
            nar_size,
            references,
            deriver,
            registration_time,
            ca: (!ca.is_empty()).then_some(ca),
            sigs,
            // Only the daemon's own builds are ultimately trusted.
            ultimate: false,
        })
    }

    /// The keys a copied-in path must be signed by, or `None` when no
    /// signature is needed (`require-sigs` off, or a trusted client that
    /// asked not to check).
    fn signature_keys(
        &self,
        dont_check: bool,
    ) -> Option<Vec<hermetic_store::signature::PublicKey>> {
        if (dont_check && self.trusted) || !self.settings.require_sigs {
            return None;
        }
        Some(
            self.settings
                .trusted_public_keys
                .iter()
                .filter_map(|k| hermetic_store::signature::PublicKey::parse(k))
                .collect(),
        )
    }

    /// AddToStoreNar: one path's metadata, then its NAR in frames.
    fn add_to_store_nar(&mut self, from: &mut impl Read) -> Result<(), Step> {
        if minor(self.client_version) < 23 {
            return Err(Step::Fatal(ConnectionError::TooOld));
        }
        let path = self.parse_path(&read_string(from)?)?;
        let info = self.read_path_info(from, path)?;
        let repair = read_bool(from)?;
        let dont_check = read_bool(from)?;
        let mut framed = Framed::new(from);
        if repair && !self.trusted {
            framed.drain()?;
            return Err(Step::Failed(OpError(
                "repairing is not allowed because you are not in 'trusted-users'".into(),
            )));
        }
        let keys = self.signature_keys(dont_check);
        let mut store = self.store()?;
        let imported = store.import_nar(info, &mut framed, keys.as_deref());
        framed.drain()?;
        imported.map_err(failed)?;
        let mut w = lock(&self.to);
        send_last(&mut *w)?;
        Ok(())
    }

    /// AddMultipleToStore: in frames, a count, then each path's metadata
    /// followed by its NAR (what `nix copy` sends).
    fn add_multiple_to_store(&mut self, from: &mut impl Read) -> Result<(), Step> {
        let repair = read_bool(from)?;
        let dont_check = read_bool(from)?;
        let mut framed = Framed::new(from);
        if repair && !self.trusted {
            framed.drain()?;
            return Err(Step::Failed(OpError(
                "repairing is not allowed because you are not in 'trusted-users'".into(),
            )));
        }
        let keys = self.signature_keys(dont_check);
        let mut store = self.store()?;
        let result = (|| -> Result<(), Step> {
            let count = read_u64(&mut framed)?;
            for _ in 0..count.min(crate::wire::MAX_LIST) {
                let path = self.parse_path(&read_string(&mut framed)?)?;
                let info = self.read_path_info(&mut framed, path)?;
                store
                    .import_nar(info, &mut framed, keys.as_deref())
                    .map_err(failed)?;
            }
            Ok(())
        })();
        framed.drain()?;
        result?;
        let mut w = lock(&self.to);
        send_last(&mut *w)?;
        Ok(())
    }

    fn add_text(
        &self,
        name: &str,
        text: &[u8],
        refs: &BTreeSet<StorePath>,
    ) -> Result<StorePath, Step> {
        let mut store = self.store()?;
        if name.ends_with(".drv") {
            // A derivation: checked, and its outputs registered, as Nix does.
            let drv_name = name.trim_end_matches(".drv");
            let drv =
                hermetic_store::Derivation::from_aterm(text, &self.layout.store_dir, drv_name)
                    .map_err(failed)?;
            if drv.references() != *refs {
                return Err(Step::Failed(OpError(format!(
                    "derivation '{name}' does not list the references it holds"
                ))));
            }
            return store.add_derivation(&drv).map_err(failed);
        }
        store.add_text(name, text, refs).map_err(failed)
    }

    fn add_to_store(&mut self, from: &mut impl Read) -> Result<(), Step> {
        if minor(self.client_version) < 25 {
            return Err(Step::Fatal(ConnectionError::TooOld));
        }
        let name = read_string(from)?;
        let method = read_string(from)?;
        let refs = self.read_path_set(from)?;
        let repair = read_bool(from)?;
        let mut framed = Framed::new(from);
        if repair && !self.trusted {
            framed.drain()?;
            return Err(Step::Failed(OpError(
                "repairing is not allowed because you are not in 'trusted-users'".into(),
            )));
        }
        let added = match method.as_str() {
            "text:sha256" => {
                let mut text = Vec::new();
                (&mut framed)
                    .take(crate::wire::MAX_STRING + 1)
                    .read_to_end(&mut text)?;
                if text.len() as u64 > crate::wire::MAX_STRING {
                    framed.drain()?;
                    return Err(Step::Failed(OpError("text too large".into())));
                }
                framed.drain()?;
                self.add_text(&name, &text, &refs)
            }
            "fixed:r:sha256" if refs.is_empty() => {
                let mut store = self.store()?;
                let added = store.add_nar_stream(&name, &mut framed);
                // Whatever the outcome, the rest of the frames is read so
                // the connection stays in step.
                framed.drain()?;
                added.map_err(failed)
            }
            other => {
                framed.drain()?;
                Err(Step::Failed(OpError(format!(
                    "hermetic does not support adding paths with content address method '{other}'{}",
                    if refs.is_empty() {
                        ""
                    } else {
                        " and references"
                    }
                ))))
            }
        }?;
        let info = self.store()?.query_info(&added).map_err(failed)?;
        self.reply(|w| {
            write_string(&mut *w, &self.print(&added))?;
            self.write_path_info(w, &info)
        })
    }

    fn set_options(&mut self, from: &mut impl Read) -> Result<(), Step> {
        let keep_failed = read_bool(from)?;
        let keep_going = read_bool(from)?;
        let _fallback = read_bool(from)?;
        let _verbosity = read_u64(from)?;
        let max_jobs = read_u64(from)?;
        let max_silent_time = read_u64(from)?;
        read_u64(from)?; // obsolete useBuildHook
        let _verbose_build = read_u64(from)?;
        read_u64(from)?; // obsolete logType
        read_u64(from)?; // obsolete printBuildTrace
        let cores = read_u64(from)?;
        let _use_substitutes = read_bool(from)?;
        let mut overrides = Vec::new();
        if minor(self.client_version) >= 12 {
            let count = read_u64(from)?;
            if count > crate::wire::MAX_LIST {
                return Err(WireError::TooLong {
                    what: "list",
                    len: count,
                    max: crate::wire::MAX_LIST,
                }
                .into());
            }
            for _ in 0..count {
                overrides.push((read_string(from)?, read_string(from)?));
            }
        }
        // The fixed fields apply to every client (B94).
        self.settings.keep_failed = keep_failed;
        self.settings.keep_going = keep_going;
        self.settings.max_jobs = max_jobs.clamp(1, 1024) as usize;
        self.settings.max_silent_time = max_silent_time;
        self.settings.cores = cores as usize;
        for (name, value) in overrides {
            match judge_override(&self.settings, self.trusted, &name, &value) {
                Override::Apply => {
                    let mut warnings = Vec::new();
                    if let Err(e) = hermetic_runtime::nixconf::apply(
                        &mut self.settings,
                        &name,
                        &value,
                        &mut |w| warnings.push(w),
                    ) {
                        self.log(&format!("warning: {e}"));
                    }
                    for w in warnings {
                        self.log(&format!("warning: {w}"));
                    }
                }
                Override::Ignore => {}
                Override::Warn(text) => self.log(&format!("warning: {text}")),
            }
        }
        let mut w = lock(&self.to);
        send_last(&mut *w)?;
        Ok(())
    }

    /// The derivations among `targets` (`drv!outputs` or plain paths) to
    /// build, and the plain paths that are not valid.
    fn query_missing(
        &self,
        targets: &[String],
    ) -> Result<(BTreeSet<StorePath>, BTreeSet<StorePath>), Step> {
        let store = self.store()?;
        let mut will_build = BTreeSet::new();
        let mut unknown = BTreeSet::new();
        let mut queue: Vec<StorePath> = Vec::new();
        for target in targets {
            let path = self.parse_path(target.split('!').next().unwrap_or_default())?;
            if path.is_derivation() {
                queue.push(path);
            } else if !store.is_valid(&path).map_err(failed)? {
                unknown.insert(path);
            }
        }
        while let Some(drv_path) = queue.pop() {
            if will_build.contains(&drv_path) {
                continue;
            }
            let drv = store.read_derivation(&drv_path).map_err(failed)?;
            let mut missing = false;
            for output in drv.outputs.values() {
                match output.path() {
                    Some(p) if store.is_valid(p).map_err(failed)? => {}
                    _ => missing = true,
                }
            }
            if missing {
                queue.extend(drv.input_drvs.keys().cloned());
                will_build.insert(drv_path);
            }
        }
        Ok((will_build, unknown))
    }

    fn build_paths(&self, targets: &[String], mode: u64) -> Result<(), Step> {
        if mode == 1 && !self.trusted {
            return Err(Step::Failed(OpError(
                "repairing is not allowed because you are not in 'trusted-users'".into(),
            )));
        }
        let check = mode == 2;
        let store = self.store()?;
        let mut drvs = Vec::new();
        for target in targets {
            let path = self.parse_path(target.split('!').next().unwrap_or_default())?;
            if path.is_derivation() {
                drvs.push(path);
            } else if !store.is_valid(&path).map_err(failed)? {
                return Err(Step::Failed(OpError(format!(
                    "path '{}' is not valid",
                    self.print(&path)
                ))));
            }
        }
        drop(store);
        let to = self.to.clone();
        let log: hermetic_build::log::SharedLog = Arc::new(Mutex::new(ClientLog {
            to: to.clone(),
            partial: Vec::new(),
        }));
        let progress = move |line: String| {
            let mut w = lock(&to);
            let _ = send_log(&mut *w, &line);
        };
        let summary = self
            .while_watching_hangup(|cancel| {
                hermetic_build::schedule::build_all(
                    &self.layout,
                    &self.settings,
                    &drvs,
                    check,
                    cancel,
                    log,
                    &progress,
                )
            })
            .map_err(failed)?;
        if let Some((_, failure)) = summary.failures.first() {
            let count = summary.failures.len();
            let message = if count == 1 {
                hermetic_store::error_chain(&failure.error)
            } else {
                format!(
                    "build of {} derivations failed; the first: {}",
                    count,
                    hermetic_store::error_chain(&failure.error)
                )
            };
            return Err(Step::Failed(OpError(message)));
        }
        Ok(())
    }
}

impl Connection {
    /// Runs `work` with a descriptor that becomes readable if the client
    /// hangs up meanwhile (a thread watches the client's socket).
    fn while_watching_hangup<T>(
        &self,
        work: impl FnOnce(Option<std::os::fd::BorrowedFd<'_>>) -> T,
    ) -> T {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use nix::sys::socket::MsgFlags;
        use std::os::fd::{AsFd, AsRawFd};
        let Some(hangup) = &self.hangup else {
            return work(None);
        };
        let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ok();
        let (Some((cancel_r, cancel_w)), Some((stop_r, stop_w))) = (pipe(), pipe()) else {
            return work(None);
        };
        std::thread::scope(|scope| {
            scope.spawn(move || {
                // A client sends nothing while its build runs: the socket
                // becomes readable when it hangs up (a peek reads 0 bytes).
                let mut fds = vec![
                    PollFd::new(hangup.as_fd(), PollFlags::POLLIN),
                    PollFd::new(stop_r.as_fd(), PollFlags::POLLIN),
                ];
                if let Some(stop) = &self.stop {
                    fds.push(PollFd::new(stop.as_fd(), PollFlags::POLLIN));
                }
                loop {
                    match poll(&mut fds, PollTimeout::NONE) {
                        Err(nix::errno::Errno::EINTR) => continue,
                        Err(_) => return,
                        Ok(_) => {}
                    }
                    if fds[1].revents().is_none_or(|r| !r.is_empty()) {
                        return;
                    }
                    if fds
                        .get(2)
                        .is_some_and(|fd| fd.revents().is_none_or(|r| !r.is_empty()))
                    {
                        tracing::info!("the daemon stops: cancelling the build");
                        let _ = nix::unistd::write(&cancel_w, b"x");
                        return;
                    }
                    if fds[0].revents().is_none_or(|r| !r.is_empty()) {
                        let mut byte = [0u8; 1];
                        let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
                        if let Ok(0) = nix::sys::socket::recv(hangup.as_raw_fd(), &mut byte, flags)
                        {
                            tracing::info!("the client hung up: cancelling its build");
                            let _ = nix::unistd::write(&cancel_w, b"x");
                        }
                        // Data instead: the next operation's, read after this one.
                        return;
                    }
                }
            });
            let result = work(Some(cancel_r.as_fd()));
            let _ = nix::unistd::write(&stop_w, b"x");
            result
        })
    }
}

/// Builders' log lines, sent to the client as they come.
struct ClientLog {
    to: ClientWriter,
    partial: Vec<u8>,
}

impl Write for ClientLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.partial.extend_from_slice(buf);
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            let mut w = lock(&self.to);
            send_log(&mut *w, &text)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
