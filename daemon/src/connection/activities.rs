//! A build operation's progress told as the client's Nix shows it. A
//! client of protocol 1.20 or later gets Nix's structured activities: one
//! `actBuilds` for the operation whose progress counts its builds (done,
//! expected, running, failed), one `actBuild` per derivation ("building
//! '…'") whose results are its builder's lines. An older client gets
//! lines. The last `log-lines` lines of each build are kept: Nix's daemon
//! ends a failed builder's error with them, as a client that shows a
//! progress bar printed none of them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hermetic_realise::goal::BuildFailure;
use hermetic_realise::log_tail::LogTails;
use hermetic_realise::schedule::Progress;
use hermetic_store::substituters::FetchEvent;
use hermetic_store::{StoreDir, StorePath};

use super::{ClientWriter, lock};
use crate::protocol::{
    Field, activity, result, send_log, send_result, send_start_activity, send_stop_activity,
};

/// A new activity id, unique in this daemon: its process id, then a count
/// (Nix numbers them so too).
fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    (u64::from(std::process::id()) << 32) | NEXT.fetch_add(1, Ordering::Relaxed)
}

/// How a client is told of builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReportAs {
    /// Nix's activities (worker protocol 1.20 and later).
    Activities,
    /// Lines on the worker protocol's stderr channel (older clients).
    ChannelLines,
    /// Plain lines on a stream of their own (the serve protocol's stderr).
    PlainLines,
}

/// One operation's builds as its client is told of them.
pub(super) struct BuildReporter {
    to: ClientWriter,
    report_as: ReportAs,
    /// Whether the client reads activities.
    structured: bool,
    store_dir: StoreDir,
    /// The operation's `actBuilds` activity.
    builds_id: u64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The running builds' activities.
    running: HashMap<StorePath, u64>,
    /// The running fetches' activities.
    copying: HashMap<StorePath, u64>,
    /// Each build's last lines.
    tails: LogTails,
    done: u64,
    expected: u64,
    failed: u64,
    /// The activities are stopped.
    finished: bool,
}

impl BuildReporter {
    /// A reporter for one operation of a client told as `report_as` says.
    pub(super) fn new(
        to: ClientWriter,
        report_as: ReportAs,
        store_dir: StoreDir,
        log_lines: usize,
    ) -> Arc<BuildReporter> {
        let reporter = BuildReporter {
            to,
            report_as,
            structured: report_as == ReportAs::Activities,
            store_dir,
            builds_id: next_id(),
            state: Mutex::new(State {
                tails: LogTails::new(log_lines),
                ..State::default()
            }),
        };
        if reporter.structured {
            let mut w = lock(&reporter.to);
            let _ = send_start_activity(&mut *w, reporter.builds_id, activity::BUILDS, "", &[], 0);
        }
        Arc::new(reporter)
    }

    /// One line, unstructured.
    fn say(&self, w: &mut impl std::io::Write, text: &str) -> std::io::Result<()> {
        if self.report_as == ReportAs::PlainLines {
            writeln!(w, "{text}")?;
            w.flush()
        } else {
            send_log(w, text)
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells the client of `progress`.
    pub(super) fn progress(&self, progress: Progress) {
        if !self.structured {
            if let Some(line) = progress.text(&self.store_dir) {
                let mut w = lock(&self.to);
                let _ = self.say(&mut *w, &line);
            }
            return;
        }
        let mut state = self.state();
        let mut w = lock(&self.to);
        match progress {
            Progress::Message(text) => {
                let _ = send_log(&mut *w, &text);
                return;
            }
            Progress::Started {
                drv,
                total,
                machine,
                ..
            } => {
                let id = next_id();
                let printed = self.store_dir.print(&drv);
                let machine = machine.unwrap_or_default();
                let text = if machine.is_empty() {
                    format!("building '{printed}'")
                } else {
                    format!("building '{printed}' on '{machine}'")
                };
                let fields = [
                    Field::Str(&printed),
                    Field::Str(&machine),
                    Field::Int(1),
                    Field::Int(1),
                ];
                let _ = send_start_activity(
                    &mut *w,
                    id,
                    activity::BUILD,
                    &text,
                    &fields,
                    self.builds_id,
                );
                state.running.insert(drv, id);
                state.expected = state.expected.max(total as u64);
            }
            Progress::Fetch(FetchEvent::Copying { path, from }) => {
                let id = next_id();
                let printed = self.store_dir.print(&path);
                let text = format!("copying path '{printed}' from '{from}'");
                let fields = [Field::Str(&printed), Field::Str(&from), Field::Str("local")];
                let _ = send_start_activity(
                    &mut *w,
                    id,
                    activity::COPY_PATH,
                    &text,
                    &fields,
                    self.builds_id,
                );
                state.copying.insert(path, id);
                return;
            }
            Progress::Fetch(FetchEvent::Message(text)) => {
                let _ = send_log(&mut *w, &text);
                return;
            }
            Progress::Fetch(FetchEvent::Copied { path, .. }) => {
                if let Some(id) = state.copying.remove(&path) {
                    let _ = send_stop_activity(&mut *w, id);
                }
                return;
            }
            Progress::Finished { drv, ok } => {
                if let Some(id) = state.running.remove(&drv) {
                    let _ = send_stop_activity(&mut *w, id);
                }
                if ok {
                    state.done += 1;
                } else {
                    state.failed += 1;
                }
            }
        }
        let counts = [
            Field::Int(state.done),
            Field::Int(state.expected),
            Field::Int(state.running.len() as u64),
            Field::Int(state.failed),
        ];
        let _ = send_result(&mut *w, self.builds_id, result::PROGRESS, &counts);
    }

    /// One line of `drv`'s builder.
    fn line(&self, drv: &StorePath, prefix: &str, line: &[u8]) -> std::io::Result<()> {
        let text = String::from_utf8_lossy(line);
        let mut state = self.state();
        state.tails.push(drv, &text);
        let id = state.running.get(drv).copied();
        drop(state);
        let mut w = lock(&self.to);
        match id {
            Some(id) if self.structured => {
                send_result(&mut *w, id, result::BUILD_LOG_LINE, &[Field::Str(&text)])
            }
            _ => self.say(&mut *w, &format!("{prefix}{text}")),
        }
    }

    /// The error of `drv`'s failure as Nix's daemon says it: a builder that
    /// failed gets its last log lines after it.
    pub(super) fn describe(&self, drv: &StorePath, failure: &BuildFailure) -> String {
        self.state().tails.describe(&self.store_dir, drv, failure)
    }

    /// Ends the activities still open, once: the operation's builds are
    /// over (before its reply).
    pub(super) fn finish(&self) {
        let mut state = self.state();
        if !self.structured || state.finished {
            return;
        }
        state.finished = true;
        let mut w = lock(&self.to);
        let state = &mut *state;
        for (_, id) in state.running.drain().chain(state.copying.drain()) {
            let _ = send_stop_activity(&mut *w, id);
        }
        let _ = send_stop_activity(&mut *w, self.builds_id);
    }

    /// A log sink that sends builders' lines through this reporter.
    pub(super) fn log(self: &Arc<Self>) -> hermetic_realise::log::SharedLog {
        Arc::new(Mutex::new(ReporterLog(self.clone())))
    }
}

/// Builders' lines, on their way through a reporter.
struct ReporterLog(Arc<BuildReporter>);

impl hermetic_realise::log::LogSink for ReporterLog {
    fn line(&mut self, drv: &StorePath, prefix: &str, line: &[u8]) -> std::io::Result<()> {
        self.0.line(drv, prefix, line)
    }
}
