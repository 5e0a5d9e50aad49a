//! The client side of the worker protocol: what `hermetic build --store
//! daemon` says to a daemon (hermetic's or Nix's) over its socket. It greets
//! as a protocol 1.34 client (Nix 2.8's), which every daemon since serves,
//! and speaks only the operations a build needs.

use std::collections::BTreeMap;
use std::io::{self, BufReader, BufWriter, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use crate::protocol::{
    STDERR_ERROR, STDERR_LAST, STDERR_NEXT, STDERR_RESULT, STDERR_START_ACTIVITY,
    STDERR_STOP_ACTIVITY, WORKER_MAGIC_1, WORKER_MAGIC_2, minor, result,
};
use crate::wire::{
    WireError, read_count, read_string, read_u64, write_string, write_strings, write_u64,
};

/// The protocol version this client speaks: 1.34.
const CLIENT_VERSION: u64 = (1 << 8) | 34;
/// The oldest daemon it talks to: 1.26, whose errors are structured.
const OLDEST_DAEMON_VERSION: u64 = (1 << 8) | 26;

const OP_BUILD_PATHS: u64 = 9;
const OP_ADD_INDIRECT_ROOT: u64 = 12;
const OP_SET_OPTIONS: u64 = 19;
const OP_QUERY_DERIVATION_OUTPUT_MAP: u64 = 41;

/// What went wrong talking to a daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached.
    #[error("cannot connect to socket at '{path}'")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The daemon answered what the protocol does not allow.
    #[error("the daemon at '{path}' broke the protocol: {what}")]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// What it did.
        what: String,
    },
    /// The connection failed.
    #[error("the connection to the daemon at '{path}' failed")]
    Io {
        /// The socket.
        path: PathBuf,
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

/// A connection to a daemon.
pub struct DaemonClient {
    path: PathBuf,
    from: BufReader<UnixStream>,
    to: BufWriter<UnixStream>,
}

impl DaemonClient {
    /// Connects to the daemon at `socket` and greets it.
    pub fn connect(socket: &Path) -> Result<DaemonClient, ClientError> {
        let stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
            path: socket.to_owned(),
            source,
        })?;
        let io_err = |source: io::Error| ClientError::Io {
            path: socket.to_owned(),
            source: WireError::Io(source),
        };
        let from = BufReader::new(stream.try_clone().map_err(io_err)?);
        let mut client = DaemonClient {
            path: socket.to_owned(),
            from,
            to: BufWriter::new(stream),
        };
        client.send(|w| {
            write_u64(w, WORKER_MAGIC_1)?;
            write_u64(w, CLIENT_VERSION)
        })?;
        if client.read_u64()? != WORKER_MAGIC_2 {
            return Err(client.broke("it did not answer the worker protocol's greeting"));
        }
        let daemon_version = client.read_u64()?;
        if daemon_version >> 8 != 1 || daemon_version < OLDEST_DAEMON_VERSION {
            return Err(client.broke(&format!(
                "it speaks protocol {}.{}, older than 1.26",
                daemon_version >> 8,
                minor(daemon_version)
            )));
        }
        // No CPU affinity; the obsolete reserveSpace.
        client.send(|w| {
            write_u64(w, 0)?;
            write_u64(w, 0)
        })?;
        if minor(daemon_version.min(CLIENT_VERSION)) >= 33 {
            client.read_string()?; // the daemon's version text
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
        self.send(|w| {
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
        self.send(|w| {
            write_u64(w, OP_QUERY_DERIVATION_OUTPUT_MAP)?;
            write_string(w, drv)
        })?;
        self.work(said)?;
        let count = self.read_count()?;
        let mut outputs = BTreeMap::new();
        for _ in 0..count {
            let name = self.read_string()?;
            outputs.insert(name, self.read_string()?);
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
        self.send(|w| {
            write_u64(w, OP_BUILD_PATHS)?;
            write_strings(w, targets.iter().map(String::as_str))?;
            write_u64(w, if check { 2 } else { 0 })
        })?;
        self.work(said)?;
        self.read_u64()?;
        Ok(())
    }

    /// Makes the symlink `link` (which points into the store) a garbage
    /// collector root of the daemon's store (`AddIndirectRoot`).
    pub fn add_indirect_root(
        &mut self,
        link: &Path,
        said: &mut dyn FnMut(Said),
    ) -> Result<(), ClientError> {
        self.send(|w| {
            write_u64(w, OP_ADD_INDIRECT_ROOT)?;
            write_string(w, &link.to_string_lossy())
        })?;
        self.work(said)?;
        self.read_u64()?;
        Ok(())
    }

    /// Reads the stderr channel until the operation's work ends: what the
    /// daemon says goes to `said`; an error ends it with the daemon's
    /// message.
    fn work(&mut self, said: &mut dyn FnMut(Said)) -> Result<(), ClientError> {
        loop {
            match self.read_u64()? {
                STDERR_LAST => return Ok(()),
                STDERR_NEXT => said(Said::Line(self.read_string()?.trim_end().to_owned())),
                STDERR_ERROR => {
                    self.read_string()?; // "Error"
                    self.read_u64()?; // level
                    self.read_string()?; // name
                    let message = self.read_string()?;
                    if self.read_u64()? != 0 {
                        return Err(self.broke("an error with a position"));
                    }
                    for _ in 0..self.read_count()? {
                        if self.read_u64()? != 0 {
                            return Err(self.broke("an error trace with a position"));
                        }
                        self.read_string()?;
                    }
                    return Err(ClientError::Daemon(message));
                }
                STDERR_START_ACTIVITY => {
                    self.read_u64()?; // id
                    self.read_u64()?; // level
                    self.read_u64()?; // type
                    let text = self.read_string()?;
                    self.read_fields()?;
                    self.read_u64()?; // parent
                    if !text.is_empty() {
                        said(Said::Started(text));
                    }
                }
                STDERR_STOP_ACTIVITY => {
                    self.read_u64()?;
                }
                STDERR_RESULT => {
                    self.read_u64()?; // activity
                    let kind = self.read_u64()?;
                    let fields = self.read_fields()?;
                    if kind == result::BUILD_LOG_LINE
                        && let [Some(line)] = fields.as_slice()
                    {
                        said(Said::BuildLog(line.clone()));
                    }
                }
                other => {
                    return Err(self.broke(&format!("an unknown stderr message {other:#x}")));
                }
            }
        }
    }

    /// An activity's or result's fields: the strings, `None` for numbers.
    fn read_fields(&mut self) -> Result<Vec<Option<String>>, ClientError> {
        let count = self.read_count()?;
        let mut fields = Vec::new();
        for _ in 0..count {
            fields.push(match self.read_u64()? {
                0 => {
                    self.read_u64()?;
                    None
                }
                1 => Some(self.read_string()?),
                other => return Err(self.broke(&format!("a field of unknown type {other}"))),
            });
        }
        Ok(fields)
    }

    fn send(
        &mut self,
        write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<(), ClientError> {
        write(&mut self.to)
            .and_then(|()| self.to.flush())
            .map_err(|e| self.failed(WireError::Io(e)))
    }

    fn read_u64(&mut self) -> Result<u64, ClientError> {
        read_u64(&mut self.from).map_err(|e| self.failed(e))
    }

    fn read_string(&mut self) -> Result<String, ClientError> {
        read_string(&mut self.from).map_err(|e| self.failed(e))
    }

    fn read_count(&mut self) -> Result<u64, ClientError> {
        read_count(&mut self.from).map_err(|e| self.failed(e))
    }

    fn failed(&self, source: WireError) -> ClientError {
        ClientError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn broke(&self, what: &str) -> ClientError {
        ClientError::Protocol {
            path: self.path.clone(),
            what: what.to_owned(),
        }
    }
}
