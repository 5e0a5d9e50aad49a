//! The client side of the worker protocol: what `hermetic build --store
//! daemon` says to a daemon (hermetic's or Nix's) over its socket, and what
//! a remote build says to a machine's `nix-daemon --stdio` over `ssh`. It
//! greets as a protocol 1.34 client (Nix 2.8's), which every daemon since
//! serves, and speaks only the operations builds need.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::protocol::{
    STDERR_ERROR, STDERR_LAST, STDERR_NEXT, STDERR_RESULT, STDERR_START_ACTIVITY,
    STDERR_STOP_ACTIVITY, WORKER_MAGIC_1, WORKER_MAGIC_2, minor, result,
};
use crate::wire::{
    FramedWriter, WireError, read_count, read_string, read_strings, read_u64, write_string,
    write_strings, write_u64,
};

/// The protocol version this client speaks: 1.34.
const CLIENT_VERSION: u64 = (1 << 8) | 34;
/// The oldest daemon it talks to: 1.26, whose errors are structured.
const OLDEST_DAEMON_VERSION: u64 = (1 << 8) | 26;

const OP_BUILD_PATHS: u64 = 9;
const OP_ADD_INDIRECT_ROOT: u64 = 12;
const OP_SET_OPTIONS: u64 = 19;
const OP_QUERY_PATH_INFO: u64 = 26;
const OP_QUERY_VALID_PATHS: u64 = 31;
const OP_BUILD_DERIVATION: u64 = 36;
const OP_NAR_FROM_PATH: u64 = 38;
const OP_ADD_TO_STORE_NAR: u64 = 39;
const OP_QUERY_DERIVATION_OUTPUT_MAP: u64 = 41;

/// What went wrong talking to a daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached.
    #[error("cannot connect to socket at '{path}'")]
    Connect {
        /// The socket.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The daemon answered what the protocol does not allow.
    #[error("the daemon at '{path}' broke the protocol: {what}")]
    Protocol {
        /// The socket or store URI.
        path: String,
        /// What it did.
        what: String,
    },
    /// The connection failed.
    #[error("the connection to the daemon at '{path}' failed")]
    Io {
        /// The socket or store URI.
        path: String,
        /// Why.
        #[source]
        source: WireError,
    },
    /// The daemon refused or failed the operation; its message.
    #[error("{0}")]
    Daemon(String),
}

/// What the daemon says while it works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Said {
    /// A line of its own (a message, a warning).
    Line(String),
    /// An activity began, with its text (`building '…'`); empty texts are
    /// not passed on.
    Started(String),
    /// A line of a builder's log.
    BuildLog(String),
}

/// How the client's settings go to the daemon (`SetOptions`).
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// `keep-failed`.
    pub keep_failed: bool,
    /// `keep-going`.
    pub keep_going: bool,
    /// `fallback`.
    pub fallback: bool,
    /// Nix's verbosity level (3: info).
    pub verbosity: u64,
    /// Show the builders' output (`verbose-build`; `-Q` turns it off).
    pub build_output: bool,
    /// `max-jobs`.
    pub max_jobs: u64,
    /// `max-silent-time`.
    pub max_silent_time: u64,
    /// `cores`.
    pub cores: u64,
    /// `substitute`.
    pub substitute: bool,
    /// Other settings, by name (what `--option` gave).
    pub overrides: Vec<(String, String)>,
}

/// A store path's metadata as the protocol carries it: printed paths,
/// the NAR hash as the daemon writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WirePathInfo {
    /// The derivation that built it, or empty.
    pub deriver: String,
    /// The NAR's SHA-256, in hex (with or without `sha256:`).
    pub nar_hash: String,
    /// What it refers to.
    pub references: BTreeSet<String>,
    /// When it was registered, in seconds since the epoch.
    pub registration_time: u64,
    /// The NAR's size.
    pub nar_size: u64,
    /// Built by that store itself.
    pub ultimate: bool,
    /// Its signatures.
    pub sigs: BTreeSet<String>,
    /// Its content address, or empty.
    pub ca: String,
}

impl WirePathInfo {
    /// Writes `path` and its metadata as both protocols' additions carry
    /// them (the NAR hash in hex, without `sha256:`).
    pub(crate) fn write(&self, w: &mut dyn Write, path: &str) -> io::Result<()> {
        write_string(w, path)?;
        write_string(w, &self.deriver)?;
        write_string(w, self.nar_hash.trim_start_matches("sha256:"))?;
        write_strings(w, self.references.iter().map(String::as_str))?;
        write_u64(w, self.registration_time)?;
        write_u64(w, self.nar_size)?;
        write_u64(w, u64::from(self.ultimate))?;
        write_strings(w, self.sigs.iter().map(String::as_str))?;
        write_string(w, &self.ca)
    }
}

/// A derivation as `BuildDerivation` sends it (Nix's `BasicDerivation`):
/// no input derivations, their outputs among the sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireDerivation {
    /// Each output's name, path, hash algorithm and hash, as Nix writes them.
    pub outputs: Vec<(String, (String, String, String))>,
    /// The paths it reads.
    pub input_srcs: BTreeSet<String>,
    /// Its system.
    pub system: String,
    /// Its builder.
    pub builder: String,
    /// The builder's arguments.
    pub args: Vec<String>,
    /// Its environment.
    pub env: BTreeMap<String, String>,
}

impl WireDerivation {
    /// Writes it as both protocols carry it.
    pub(crate) fn write(&self, w: &mut dyn Write) -> io::Result<()> {
        write_u64(w, self.outputs.len() as u64)?;
        for (name, (path, algo, hash)) in &self.outputs {
            for text in [name, path, algo, hash] {
                write_string(w, text)?;
            }
        }
        write_strings(w, self.input_srcs.iter().map(String::as_str))?;
        write_string(w, &self.system)?;
        write_string(w, &self.builder)?;
        write_strings(w, self.args.iter().map(String::as_str))?;
        write_u64(w, self.env.len() as u64)?;
        for (name, value) in &self.env {
            write_string(w, name)?;
            write_string(w, value)?;
        }
        Ok(())
    }
}

/// What writes a path's NAR to the connection, as it is sent.
pub type WriteNar<'a> = &'a mut dyn FnMut(&mut dyn Write) -> io::Result<()>;

/// What became of a `BuildDerivation`: Nix's `BuildResult`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireBuildResult {
    /// Nix's status: 0 built, 1 substituted, 2 already valid, 13 resolved
    /// to valid ones; anything else failed.
    pub status: u64,
    /// A failure's message.
    pub error: String,
}

impl WireBuildResult {
    /// Whether the outputs are there.
    pub fn success(&self) -> bool {
        matches!(self.status, 0 | 1 | 2 | 13)
    }
}

/// A connection to a daemon.
pub struct DaemonClient {
    conn: Conn,
    /// The version the connection speaks.
    version: u64,
}

/// Two streams to a store's server and the name errors give it: the
/// reads and writes both of Nix's protocols are made of.
pub(crate) struct Conn {
    /// The socket or store URI, as errors name it.
    pub(crate) path: String,
    pub(crate) from: BufReader<Box<dyn Read + Send>>,
    pub(crate) to: BufWriter<Box<dyn Write + Send>>,
}

impl DaemonClient {
    /// Connects to the daemon at `socket` and greets it.
    pub fn connect(socket: &Path) -> Result<DaemonClient, ClientError> {
        let path = socket.display().to_string();
        let stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
            path: path.clone(),
            source,
        })?;
        let reading = stream.try_clone().map_err(|source| ClientError::Io {
            path: path.clone(),
            source: WireError::Io(source),
        })?;
        Self::over(path, Box::new(reading), Box::new(stream))
    }

    /// Greets the daemon at the other end of `from` and `to` (an `ssh`
    /// pipe, say); `at` names it in errors.
    pub fn over(
        at: String,
        from: Box<dyn Read + Send>,
        to: Box<dyn Write + Send>,
    ) -> Result<DaemonClient, ClientError> {
        let mut client = DaemonClient {
            conn: Conn::new(at, from, to),
            version: CLIENT_VERSION,
        };
        client.conn.send(|w| {
            write_u64(w, WORKER_MAGIC_1)?;
            write_u64(w, CLIENT_VERSION)
        })?;
        if client.conn.read_u64()? != WORKER_MAGIC_2 {
            return Err(client
                .conn
                .broke("it did not answer the worker protocol's greeting"));
        }
        let daemon_version = client.conn.read_u64()?;
        if daemon_version >> 8 != 1 || daemon_version < OLDEST_DAEMON_VERSION {
            return Err(client.conn.broke(&format!(
                "it speaks protocol {}.{}, older than 1.26",
                daemon_version >> 8,
                minor(daemon_version)
            )));
        }
        // No CPU affinity; the obsolete reserveSpace.
        client.conn.send(|w| {
            write_u64(w, 0)?;
            write_u64(w, 0)
        })?;
        client.version = daemon_version.min(CLIENT_VERSION);
        if minor(client.version) >= 33 {
            client.conn.read_string()?; // the daemon's version text
        }
        client.work(&mut |_| {})?;
        Ok(client)
    }

    /// Sends the client's settings (`SetOptions`).
    pub fn set_options(
        &mut self,
        options: &ClientOptions,
        said: &mut dyn FnMut(Said),
    ) -> Result<(), ClientError> {
        self.conn.send(|w| {
            write_u64(w, OP_SET_OPTIONS)?;
            for n in [
                u64::from(options.keep_failed),
                u64::from(options.keep_going),
                u64::from(options.fallback),
                options.verbosity,
                options.max_jobs,
                options.max_silent_time,
                1, // useBuildHook, obsolete
                // verboseBuild, as Nix writes it: lvlError shows the
                // builders' output, lvlVomit hides it.
                if options.build_output { 0 } else { 7 },
                0, // obsolete log type
                0, // obsolete print build trace
                options.cores,
                u64::from(options.substitute),
            ] {
                write_u64(w, n)?;
            }
            write_u64(w, options.overrides.len() as u64)?;
            for (name, value) in &options.overrides {
                write_string(w, name)?;
                write_string(w, value)?;
            }
            Ok(())
        })?;
        self.work(said)
    }

    /// The outputs of the derivation `drv` (a printed store path), by
    /// name (`QueryDerivationOutputMap`); an output without a known path
    /// has an empty one.
    pub fn derivation_outputs(
        &mut self,
        drv: &str,
        said: &mut dyn FnMut(Said),
    ) -> Result<BTreeMap<String, String>, ClientError> {
        self.conn.send(|w| {
            write_u64(w, OP_QUERY_DERIVATION_OUTPUT_MAP)?;
            write_string(w, drv)
        })?;
        self.work(said)?;
        let count = self.conn.read_count()?;
        let mut outputs = BTreeMap::new();
        for _ in 0..count {
            let name = self.conn.read_string()?;
            outputs.insert(name, self.conn.read_string()?);
        }
        Ok(outputs)
    }

    /// Builds (or makes valid) `targets`, Nix's derived paths as text
    /// (`DRV!out,dev`, or a store path), `BuildPaths`; with `check`, builds
    /// again and compares.
    pub fn build_paths(
        &mut self,
        targets: &[String],
        check: bool,
        said: &mut dyn FnMut(Said),
    ) -> Result<(), ClientError> {
        self.conn.send(|w| {
            write_u64(w, OP_BUILD_PATHS)?;
            write_strings(w, targets.iter().map(String::as_str))?;
            write_u64(w, if check { 2 } else { 0 })
        })?;
        self.work(said)?;
        self.conn.read_u64()?;
        Ok(())
    }

    /// Makes the symlink `link` (which points into the store) a garbage
    /// collector root of the daemon's store (`AddIndirectRoot`).
    pub fn add_indirect_root(
        &mut self,
        link: &Path,
        said: &mut dyn FnMut(Said),
    ) -> Result<(), ClientError> {
        self.conn.send(|w| {
            write_u64(w, OP_ADD_INDIRECT_ROOT)?;
            write_string(w, &link.to_string_lossy())
        })?;
        self.work(said)?;
        self.conn.read_u64()?;
        Ok(())
    }

    /// Which of `paths` (printed) are valid there (`QueryValidPaths`),
    /// after it fetched what it could from its substituters if
    /// `substitute`.
    pub fn query_valid_paths(
        &mut self,
        paths: &BTreeSet<String>,
        substitute: bool,
        said: &mut dyn FnMut(Said),
    ) -> Result<BTreeSet<String>, ClientError> {
        self.conn.send(|w| {
            write_u64(w, OP_QUERY_VALID_PATHS)?;
            write_strings(w, paths.iter().map(String::as_str))?;
            write_u64(w, u64::from(substitute))
        })?;
        self.work(said)?;
        self.conn
            .read_strings()
            .map(|valid| valid.into_iter().collect())
    }

    /// A valid path's metadata, or `None` (`QueryPathInfo`).
    pub fn query_path_info(
        &mut self,
        path: &str,
        said: &mut dyn FnMut(Said),
    ) -> Result<Option<WirePathInfo>, ClientError> {
        self.conn.send(|w| {
            write_u64(w, OP_QUERY_PATH_INFO)?;
            write_string(w, path)
        })?;
        self.work(said)?;
        if self.conn.read_u64()? == 0 {
            return Ok(None);
        }
        Ok(Some(WirePathInfo {
            deriver: self.conn.read_string()?,
            nar_hash: self.conn.read_string()?,
            references: self.conn.read_strings()?.into_iter().collect(),
            registration_time: self.conn.read_u64()?,
            nar_size: self.conn.read_u64()?,
            ultimate: self.conn.read_u64()? != 0,
            sigs: self.conn.read_strings()?.into_iter().collect(),
            ca: self.conn.read_string()?,
        }))
    }

    /// Adds `path` with its metadata and its NAR, which `nar` writes
    /// (`AddToStoreNar`); signatures are not asked for if the daemon
    /// trusts this client.
    pub fn add_to_store_nar(
        &mut self,
        path: &str,
        info: &WirePathInfo,
        nar: WriteNar<'_>,
        said: &mut dyn FnMut(Said),
    ) -> Result<(), ClientError> {
        self.conn.send(|w| {
            write_u64(w, OP_ADD_TO_STORE_NAR)?;
            info.write(w, path)?;
            write_u64(w, 0)?; // repair
            write_u64(w, 1)?; // do not check signatures
            let mut framed = FramedWriter::new(w);
            nar(&mut framed)?;
            framed.finish()
        })?;
        self.work(said)
    }

    /// Builds `drv` there, sent whole, its inputs already there
    /// (`BuildDerivation`, normal mode); the build's log goes to `said`.
    pub fn build_derivation(
        &mut self,
        drv_path: &str,
        drv: &WireDerivation,
        said: &mut dyn FnMut(Said),
    ) -> Result<WireBuildResult, ClientError> {
        self.conn.send(|w| {
            write_u64(w, OP_BUILD_DERIVATION)?;
            write_string(w, drv_path)?;
            drv.write(w)?;
            write_u64(w, 0) // normal build
        })?;
        self.work(said)?;
        let result = WireBuildResult {
            status: self.conn.read_u64()?,
            error: self.conn.read_string()?,
        };
        if minor(self.version) >= 29 {
            for _ in 0..4 {
                self.conn.read_u64()?; // times built, non-deterministic, start, stop
            }
        }
        if minor(self.version) >= 28 {
            for _ in 0..self.conn.read_count()? {
                self.conn.read_string()?; // realisation id
                self.conn.read_string()?; // realisation
            }
        }
        Ok(result)
    }

    /// Asks for a valid path's NAR (`NarFromPath`), which follows: read it
    /// whole with [`DaemonClient::nar`] before the next operation.
    pub fn nar_from_path(
        &mut self,
        path: &str,
        said: &mut dyn FnMut(Said),
    ) -> Result<(), ClientError> {
        self.conn.send(|w| {
            write_u64(w, OP_NAR_FROM_PATH)?;
            write_string(w, path)
        })?;
        self.work(said)
    }

    /// The NAR `nar_from_path` asked for, which is `nar_size` bytes.
    pub fn nar(&mut self, nar_size: u64) -> impl Read + '_ {
        (&mut self.conn.from).take(nar_size)
    }

    /// Reads the stderr channel until the operation's work ends: what the
    /// daemon says goes to `said`; an error ends it with the daemon's
    /// message.
    fn work(&mut self, said: &mut dyn FnMut(Said)) -> Result<(), ClientError> {
        loop {
            match self.conn.read_u64()? {
                STDERR_LAST => return Ok(()),
                STDERR_NEXT => said(Said::Line(self.conn.read_string()?.trim_end().to_owned())),
                STDERR_ERROR => {
                    self.conn.read_string()?; // "Error"
                    self.conn.read_u64()?; // level
                    self.conn.read_string()?; // name
                    let message = self.conn.read_string()?;
                    if self.conn.read_u64()? != 0 {
                        return Err(self.conn.broke("an error with a position"));
                    }
                    for _ in 0..self.conn.read_count()? {
                        if self.conn.read_u64()? != 0 {
                            return Err(self.conn.broke("an error trace with a position"));
                        }
                        self.conn.read_string()?;
                    }
                    return Err(ClientError::Daemon(message));
                }
                STDERR_START_ACTIVITY => {
                    self.conn.read_u64()?; // id
                    self.conn.read_u64()?; // level
                    self.conn.read_u64()?; // type
                    let text = self.conn.read_string()?;
                    self.read_fields()?;
                    self.conn.read_u64()?; // parent
                    if !text.is_empty() {
                        said(Said::Started(text));
                    }
                }
                STDERR_STOP_ACTIVITY => {
                    self.conn.read_u64()?;
                }
                STDERR_RESULT => {
                    self.conn.read_u64()?; // activity
                    let kind = self.conn.read_u64()?;
                    let fields = self.read_fields()?;
                    if kind == result::BUILD_LOG_LINE
                        && let [Some(line)] = fields.as_slice()
                    {
                        said(Said::BuildLog(line.clone()));
                    }
                }
                other => {
                    return Err(self
                        .conn
                        .broke(&format!("an unknown stderr message {other:#x}")));
                }
            }
        }
    }

    /// An activity's or result's fields: the strings, `None` for numbers.
    fn read_fields(&mut self) -> Result<Vec<Option<String>>, ClientError> {
        let count = self.conn.read_count()?;
        let mut fields = Vec::new();
        for _ in 0..count {
            fields.push(match self.conn.read_u64()? {
                0 => {
                    self.conn.read_u64()?;
                    None
                }
                1 => Some(self.conn.read_string()?),
                other => return Err(self.conn.broke(&format!("a field of unknown type {other}"))),
            });
        }
        Ok(fields)
    }
}

impl Conn {
    /// The streams `from` and `to` of the server `at`.
    pub(crate) fn new(at: String, from: Box<dyn Read + Send>, to: Box<dyn Write + Send>) -> Conn {
        Conn {
            path: at,
            from: BufReader::new(from),
            to: BufWriter::new(to),
        }
    }

    pub(crate) fn send(
        &mut self,
        write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<(), ClientError> {
        write(&mut self.to)
            .and_then(|()| self.to.flush())
            .map_err(|e| self.failed(WireError::Io(e)))
    }

    pub(crate) fn read_u64(&mut self) -> Result<u64, ClientError> {
        read_u64(&mut self.from).map_err(|e| self.failed(e))
    }

    pub(crate) fn read_string(&mut self) -> Result<String, ClientError> {
        read_string(&mut self.from).map_err(|e| self.failed(e))
    }

    pub(crate) fn read_count(&mut self) -> Result<u64, ClientError> {
        read_count(&mut self.from).map_err(|e| self.failed(e))
    }

    pub(crate) fn read_strings(&mut self) -> Result<Vec<String>, ClientError> {
        read_strings(&mut self.from).map_err(|e| self.failed(e))
    }

    pub(crate) fn failed(&self, source: WireError) -> ClientError {
        ClientError::Io {
            path: self.path.clone(),
            source,
        }
    }

    pub(crate) fn broke(&self, what: &str) -> ClientError {
        ClientError::Protocol {
            path: self.path.clone(),
            what: what.to_owned(),
        }
    }
}
