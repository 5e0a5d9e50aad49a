//! Building: the derivations a client names (`BuildPaths`,
//! `QueryMissing`), a derivation sent inline (`BuildDerivation`, B95), the
//! client's hang-up or the daemon's stop cancelling a running build, and
//! the build's log sent back as it comes.

use std::io::Read;
use std::sync::Arc;

use hermetic_realise::schedule::Progress;
use hermetic_store::StorePath;

use super::activities::{BuildReporter, ReportAs};
use super::results::{Outcome, now};
use super::{Connection, LogTo, OpError, Step, failed};
use crate::wire::{read_count, read_string, read_strings};

impl Connection {
    /// A `BasicDerivation` as the protocol sends it: outputs, input
    /// sources, platform, builder, arguments, environment (no input
    /// derivations: their outputs are among the sources).
    pub(super) fn read_basic_derivation(
        &self,
        from: &mut impl Read,
        drv_path: &StorePath,
    ) -> Result<hermetic_store::Derivation, Step> {
        let name = drv_path.name().trim_end_matches(".drv").to_owned();
        let count = read_count(from)?;
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
        let env_count = read_count(from)?;
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

    /// Builds a derivation a client sent inline. A fixed-output one must
    /// name the path its hash gives, whoever sends it. Untrusted clients
    /// may not build input-addressed ones (B95): their output paths cannot
    /// be checked without the derivation closure; a trusted client's are
    /// taken as sent, as Nix does. An untrusted client's fixed-output one
    /// is written to the store under its own path first. Returns Nix's
    /// build status and message.
    pub(super) fn build_derivation(
        &self,
        drv_path: StorePath,
        drv: hermetic_store::Derivation,
        mode: u64,
    ) -> Result<Outcome, Step> {
        use hermetic_realise::goal::Goal;
        self.refuse_untrusted_repair(mode == 1)?;
        if drv.is_fixed_output() {
            // Its path comes from its hash alone: no input is consulted.
            drv.check_outputs(&self.layout.store_dir, &self.print(&drv_path), &mut |_| {
                Ok(Default::default())
            })
            .map_err(failed)?;
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
        let reporter = self.reporter();
        let mut store = self.store()?;
        let start_time = now();
        reporter.progress(Progress::Started {
            drv: drv_path.clone(),
            number: 1,
            total: 1,
            machine: None,
        });
        let outcome = self.while_watching_hangup(|cancel| {
            let goal = Goal {
                drv_path: drv_path.clone(),
                drv,
                check: mode == 2,
                settings: &self.settings,
                cancel,
                log: reporter.log(),
                locks: None,
            };
            goal.run(&mut store, &mut |line| {
                reporter.progress(Progress::Message(line))
            })
        });
        reporter.progress(Progress::Finished {
            drv: drv_path.clone(),
            ok: outcome.is_ok(),
        });
        reporter.finish();
        let stop_time = now();
        Ok(match outcome {
            Ok(outputs) => Outcome {
                status: 0,
                times_built: 1,
                start_time,
                stop_time,
                // An inline derivation has no input derivations to compute
                // its hash modulo from: the ids carry a zero hash, as
                // today's Nix writes them (clients read only the output
                // name and path).
                outputs: outputs
                    .into_iter()
                    .map(|(name, path)| (format!("sha256:{}!{name}", "0".repeat(64)), path))
                    .collect(),
                ..Outcome::default()
            },
            Err(failure) => Outcome::failed(
                &failure,
                reporter.describe(&drv_path, &failure),
                (start_time, stop_time),
            ),
        })
    }

    pub(super) fn build_paths(&self, targets: &[String], mode: u64) -> Result<(), Step> {
        self.refuse_untrusted_repair(mode == 1)?;
        let mut drvs = Vec::new();
        let mut others = Vec::new();
        for target in targets {
            let path = self.parse_path(target.split('!').next().unwrap_or_default())?;
            if path.is_derivation() {
                drvs.push(path);
            } else {
                others.push(path);
            }
        }
        self.substitute(&others)?;
        let (summary, reporter) = self.build_with_log(&drvs, mode == 2)?;
        let report = summary.failure_report(&drvs, &self.layout.store_dir, &|drv, failure| {
            reporter.describe(drv, failure)
        });
        for line in &report.lines {
            self.log(line);
        }
        match report.error {
            Some(message) => Err(Step::Failed(OpError(message))),
            None => Ok(()),
        }
    }

    /// Builds derivations in the store and what they need, the builders'
    /// log and progress sent to the client, cancelled if it hangs up; the
    /// reporter keeps what the failures' errors need.
    pub(super) fn build_with_log(
        &self,
        drvs: &[StorePath],
        check: bool,
    ) -> Result<(hermetic_realise::schedule::Summary, Arc<BuildReporter>), Step> {
        let reporter = self.reporter();
        let (store_dir, client) = (&self.layout.store_dir, self.client.as_str());
        let summary = self.while_watching_hangup(|cancel| {
            hermetic_realise::schedule::build_all(
                &self.layout,
                &self.settings,
                drvs,
                check,
                cancel,
                reporter.log(),
                &|progress| {
                    log_build(store_dir, client, &progress);
                    reporter.progress(progress)
                },
            )
        });
        reporter.finish();
        Ok((summary.map_err(failed)?, reporter))
    }

    /// A reporter of this operation's builds to this client.
    pub(super) fn reporter(&self) -> Arc<BuildReporter> {
        let (to, report_as) = match &self.log_to {
            LogTo::Channel if crate::protocol::minor(self.version) >= 20 => {
                (self.to.clone(), ReportAs::Activities)
            }
            LogTo::Channel => (self.to.clone(), ReportAs::ChannelLines),
            LogTo::Lines(to) => (to.clone(), ReportAs::PlainLines),
        };
        BuildReporter::new(
            to,
            report_as,
            self.layout.store_dir.clone(),
            self.settings.log_lines,
        )
    }

    /// Runs `work` with a descriptor that becomes readable if the client
    /// hangs up meanwhile (a thread watches the client's socket, or the
    /// stdin of `--stdio` and `store serve`).
    pub(super) fn while_watching_hangup<T>(
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
        let daemon_stop = self.stop.as_ref();
        std::thread::scope(|scope| {
            scope.spawn(move || {
                // A client sends nothing while its build runs: the socket
                // becomes readable when it hangs up (a peek reads 0 bytes).
                let mut fds = vec![
                    PollFd::new(hangup.as_fd(), PollFlags::POLLIN),
                    PollFd::new(stop_r.as_fd(), PollFlags::POLLIN),
                ];
                if let Some(stop) = daemon_stop {
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
                    if let Some(events) = fds[0].revents()
                        && !events.is_empty()
                    {
                        // A pipe (a login's stdin) hangs up as such; a
                        // socket reads 0 bytes.
                        let mut byte = [0u8; 1];
                        let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
                        if events.intersects(PollFlags::POLLHUP | PollFlags::POLLERR)
                            || matches!(
                                nix::sys::socket::recv(hangup.as_raw_fd(), &mut byte, flags),
                                Ok(0)
                            )
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

/// Nix's `BuildResult` status for a failure of this kind.
pub(super) fn result_status(kind: hermetic_realise::goal::FailureKind) -> u64 {
    use hermetic_realise::goal::FailureKind;
    match kind {
        FailureKind::Permanent | FailureKind::HashMismatch => 3,
        FailureKind::Transient => 6,
        FailureKind::TimedOut => 8,
        FailureKind::NotDeterministic => 12,
        FailureKind::DependencyFailed => 10,
        FailureKind::Misc => 9,
    }
}

/// Says in the daemon's log that a build started or ended, and for whom.
fn log_build(store_dir: &hermetic_store::StoreDir, client: &str, progress: &Progress) {
    match progress {
        Progress::Started { drv, machine, .. } => tracing::info!(
            "building '{}'{} for {client}",
            store_dir.print(drv),
            machine
                .as_ref()
                .map(|m| format!(" on '{m}'"))
                .unwrap_or_default()
        ),
        Progress::Finished { drv, ok } => tracing::info!(
            "{} '{}' for {client}",
            if *ok { "built" } else { "failed to build" },
            store_dir.print(drv)
        ),
        _ => {}
    }
}
