//! Nix's legacy serve protocol (`nix-store --serve`), which `ssh://`
//! stores and remote builders speak over a login's stdin and stdout. It
//! has no stderr channel: log lines go to the process's stderr (which
//! Nix's remote-build hook shows as the build's log), a command that fails
//! ends the session with its error there, and only `--write` allows what
//! adds to the store or builds. Each command is the worker operation's
//! code on a connection whose log goes to stderr; the caller's trust is
//! the daemon's ordinary trust model, the caller being the user running
//! it.

use std::collections::BTreeSet;
use std::io::{BufReader, BufWriter, Read, Write};
use std::sync::{Arc, Mutex};

use hermetic_config::settings::Settings;
use hermetic_store::{StoreError, StoreLayout, StorePath};

use super::results::Outcome;
use super::{ClientWriter, Connection, ConnectionError, LogTo, OpError, Step, failed, lock};
use crate::protocol::minor;
use crate::wire::{
    WireError, read_bool, read_string, read_strings, read_u64, write_string, write_u64,
};
use hermetic_remote::protocol::{SERVE_MAGIC_1, SERVE_MAGIC_2, SERVE_VERSION};

/// Serves `client` one serve-protocol session from `from` to `to` until it
/// hangs up, log lines to `log`. `write` allows adding paths and building
/// (`nix-store --serve --write`). A build is cancelled when the client's
/// `hangup` descriptor (what `from` reads, if it is one) hangs up.
pub fn serve_legacy(
    layout: StoreLayout,
    settings: Settings,
    client: super::Client,
    write: bool,
    from: impl Read,
    to: Box<dyn Write + Send>,
    log: Box<dyn Write + Send>,
) -> Result<(), ConnectionError> {
    let trusted = client
        .admitted(&settings)
        .map_err(ConnectionError::ServeFailed)?;
    let super::Client { peer, hangup, .. } = client;
    let mut from = BufReader::new(from);
    let to: ClientWriter = Arc::new(Mutex::new(BufWriter::new(to)));
    if read_u64(&mut from)? != SERVE_MAGIC_1 {
        return Err(ConnectionError::Mismatch);
    }
    {
        let mut w = lock(&to);
        write_u64(&mut *w, SERVE_MAGIC_2)?;
        write_u64(&mut *w, SERVE_VERSION)?;
        w.flush()?;
    }
    let version = read_u64(&mut from)?.min(SERVE_VERSION);
    let mut connection = Connection {
        layout,
        settings,
        trusted,
        hangup,
        stop: None,
        version,
        to,
        open_store: std::cell::RefCell::new(None),
        client: format!("serve session of user {}", peer.user),
        auto_gc: std::cell::OnceCell::new(),
        log_to: LogTo::Lines(Arc::new(Mutex::new(BufWriter::new(log)))),
    };
    loop {
        let command = match read_u64(&mut from) {
            Ok(command) => command,
            Err(WireError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        tracing::debug!(command, "serve command");
        match connection.serve_command(command, write, &mut from) {
            Ok(()) => lock(&connection.to).flush()?,
            Err(Step::Failed(OpError(message))) => {
                return Err(ConnectionError::ServeFailed(message));
            }
            Err(Step::Fatal(error)) => return Err(error),
        }
    }
}

/// A command that needs `--write`, refused without it in Nix's words.
fn needs_write(write: bool, what: &str) -> Result<(), Step> {
    if write {
        Ok(())
    } else {
        Err(Step::Failed(OpError(format!("{what} is not allowed"))))
    }
}

impl Connection {
    fn serve_command(
        &mut self,
        command: u64,
        write: bool,
        from: &mut impl Read,
    ) -> Result<(), Step> {
        match command {
            // QueryValidPaths
            1 => {
                let lock_paths = read_bool(from)?;
                let substitute = read_bool(from)?;
                let paths = self.read_path_set(from)?;
                if lock_paths && write {
                    let store = self.store()?;
                    for path in &paths {
                        store.add_temp_root(path).map_err(failed)?;
                    }
                }
                let valid = self.valid_paths(paths, substitute && write)?;
                self.reply(|w| self.write_path_set(&mut *w, &valid))
            }
            // QueryPathInfos: the valid ones, each with its metadata, then
            // an empty path.
            2 => {
                let paths = self.read_path_set(from)?;
                let mut infos = Vec::new();
                {
                    let store = self.store()?;
                    for path in &paths {
                        match store.query_info(path) {
                            Ok(info) => infos.push(info),
                            Err(StoreError::NotValid(_)) => {}
                            Err(e) => return Err(failed(e)),
                        }
                    }
                }
                self.reply(|w| {
                    let mut w = w;
                    for info in &infos {
                        write_string(&mut w, &self.print(&info.path))?;
                        let deriver = info.deriver.as_ref().map(|d| self.print(d));
                        write_string(&mut w, &deriver.unwrap_or_default())?;
                        self.write_path_set(&mut w, &info.references)?;
                        // The download size is the NAR's: nothing is compressed.
                        write_u64(&mut w, info.nar_size)?;
                        write_u64(&mut w, info.nar_size)?;
                        if minor(self.version) >= 4 {
                            write_string(&mut w, &info.nar_hash.to_prefixed_base32())?;
                            write_string(&mut w, info.ca.as_deref().unwrap_or_default())?;
                            crate::wire::write_strings(
                                &mut w,
                                info.sigs.iter().map(String::as_str),
                            )?;
                        }
                    }
                    write_string(&mut w, "")
                })
            }
            // DumpStorePath: a valid path's NAR.
            3 => {
                let path = self.parse_path(&read_string(from)?)?;
                self.store()?.query_info(&path).map_err(failed)?;
                let real = self.layout.real_path(&path);
                let mut w = lock(&self.to);
                hermetic_store::nar::dump(&real, &mut *w)
                    .map_err(|e| Step::Fatal(std::io::Error::other(e).into()))?;
                Ok(())
            }
            // BuildPaths: 0, or a failure's status and message.
            6 => {
                needs_write(write, "building paths")?;
                let targets = read_strings(from)?;
                self.read_build_options(from)?;
                match self.build_paths(&targets, 0) {
                    Ok(()) => self.reply(|w| write_u64(w, 0)),
                    Err(Step::Failed(OpError(message))) => self.reply(|w| {
                        // Nix's exit status of a failed build.
                        write_u64(&mut *w, 100)?;
                        write_string(w, &message)
                    }),
                    Err(fatal) => Err(fatal),
                }
            }
            // QueryClosure: the paths' closure, with the outputs of the
            // derivations in it if asked.
            7 => {
                let include_outputs = read_bool(from)?;
                let paths = self.read_path_set(from)?;
                let closure = self.closure(paths, include_outputs)?;
                self.reply(|w| self.write_path_set(&mut *w, &closure))
            }
            // BuildDerivation: a derivation sent inline, as remote builds
            // send it.
            8 => {
                needs_write(write, "building paths")?;
                let drv_path = self.parse_path(&read_string(from)?)?;
                let drv = self.read_basic_derivation(from, &drv_path)?;
                self.read_build_options(from)?;
                let outcome = self.build_derivation(drv_path, drv, 0)?;
                self.reply(|w| self.write_serve_result(w, &outcome))
            }
            // AddToStoreNar: a path's metadata, then its NAR, unframed.
            9 => {
                needs_write(write, "importing paths")?;
                let path = self.parse_path(&read_string(from)?)?;
                let info = self.read_path_info(from, path)?;
                if info.nar_size == 0 {
                    return Err(Step::Failed(OpError(
                        "narInfo is too old and missing the narSize field".into(),
                    )));
                }
                let mut nar = from.take(info.nar_size);
                // As `nix-store --serve`: no signature asked of a trusted
                // caller; the trust rules ask one of anybody else.
                self.import_one(info, &mut nar, true)?;
                self.reply(|w| write_u64(w, 1))
            }
            4 | 5 => Err(Step::Failed(OpError(format!(
                "hermetic does not implement the serve command '{}' ({command}): clients \
                 since Nix 2.4 use 'addToStoreNar' and 'dumpStorePath' instead",
                if command == 4 {
                    "importPaths"
                } else {
                    "exportPaths"
                }
            )))),
            other => Err(Step::Failed(OpError(format!(
                "unknown serve command {other}"
            )))),
        }
    }

    /// The build settings a build command carries: they apply to this
    /// session's builds. Substitution is off, as in `nix-store --serve`.
    fn read_build_options(&mut self, from: &mut impl Read) -> Result<(), Step> {
        self.settings.max_silent_time = read_u64(from)?;
        self.settings.timeout = read_u64(from)?;
        if minor(self.version) >= 2 {
            read_u64(from)?; // max-log-size: hermetic has no such limit
        }
        if minor(self.version) >= 3 {
            read_u64(from)?; // build repeat: gone from Nix
            read_u64(from)?; // enforce determinism: likewise
        }
        if minor(self.version) >= 7 {
            self.settings.keep_failed = read_u64(from)? != 0;
        }
        self.settings.substitute = false;
        Ok(())
    }

    /// The closure of `paths`; with `include_outputs`, the valid outputs
    /// of every derivation in it and their closures too (Nix's
    /// `computeFSClosure` with `includeOutputs`).
    fn closure(
        &self,
        paths: BTreeSet<StorePath>,
        include_outputs: bool,
    ) -> Result<BTreeSet<StorePath>, Step> {
        let store = self.store()?;
        let mut closure = BTreeSet::new();
        let mut next: Vec<StorePath> = paths.into_iter().collect();
        while !next.is_empty() {
            let added = store.closure(&next).map_err(failed)?;
            next.clear();
            for path in added {
                if include_outputs && path.is_derivation() && !closure.contains(&path) {
                    for (_, output) in store.derivation_outputs(&path).map_err(failed)? {
                        if store.is_valid(&output).map_err(failed)? && !closure.contains(&output) {
                            next.push(output);
                        }
                    }
                }
                closure.insert(path);
            }
        }
        Ok(closure)
    }

    /// A build's result as the serve protocol has it: status and message;
    /// from 2.3 times built, non-determinism, start and stop times; from
    /// 2.6 the outputs as Nix's realisations.
    fn write_serve_result(&self, w: &mut dyn Write, outcome: &Outcome) -> std::io::Result<()> {
        write_u64(&mut *w, outcome.status)?;
        write_string(&mut *w, &outcome.message)?;
        if minor(self.version) >= 3 {
            write_u64(&mut *w, outcome.times_built)?;
            write_u64(&mut *w, u64::from(outcome.non_deterministic))?;
            write_u64(&mut *w, outcome.start_time)?;
            write_u64(&mut *w, outcome.stop_time)?;
        }
        if minor(self.version) >= 6 {
            outcome.write_realisations(w)?;
        }
        Ok(())
    }
}
