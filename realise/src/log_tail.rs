//! The last lines of each builder's log (`log-lines`), kept for the
//! error of a failure whose log was not shown, which Nix ends with them
//! and the command that shows the whole log.

use std::collections::{HashMap, VecDeque};

use hermetic_store::{StoreDir, StorePath};

use crate::BuildError;
use crate::goal::BuildFailure;

/// Each builder's last lines.
#[derive(Debug, Default)]
pub struct LogTails {
    lines: usize,
    tails: HashMap<StorePath, VecDeque<String>>,
}

impl LogTails {
    /// Keeps the last `lines` lines of each builder (none with 0).
    pub fn new(lines: usize) -> LogTails {
        LogTails {
            lines,
            tails: HashMap::new(),
        }
    }

    /// One line of `drv`'s builder.
    pub fn push(&mut self, drv: &StorePath, line: &str) {
        if self.lines == 0 {
            return;
        }
        let tail = self.tails.entry(drv.clone()).or_default();
        if tail.len() == self.lines {
            tail.pop_front();
        }
        tail.push_back(line.to_owned());
    }

    /// The error of `drv`'s failure as Nix says it when the log was not
    /// shown: a builder that failed gets its last log lines after it, then
    /// `For full logs, run 'nix log DRV'.`
    pub fn describe(
        &self,
        store_dir: &StoreDir,
        drv: &StorePath,
        failure: &BuildFailure,
    ) -> String {
        let message = hermetic_store::error_chain(&failure.error);
        let builder_failed = matches!(
            failure.error,
            BuildError::BuilderFailed { .. } | BuildError::BuilderKilled { .. }
        );
        match self.tails.get(drv) {
            Some(tail) if builder_failed && !tail.is_empty() => {
                let mut text = format!("{message};\nlast {} log lines:\n", tail.len());
                for line in tail {
                    text.push_str("> ");
                    text.push_str(line);
                    text.push('\n');
                }
                text.push_str(&format!(
                    "For full logs, run 'nix log {}'.",
                    store_dir.print(drv)
                ));
                text
            }
            _ => message,
        }
    }
}

/// A log sink that shows nothing and keeps each builder's last lines
/// (`nix-build -Q`: the failure's error shows them instead).
pub struct TailsOnly(pub std::sync::Arc<std::sync::Mutex<LogTails>>);

impl crate::log::LogSink for TailsOnly {
    fn line(&mut self, drv: &StorePath, _prefix: &str, line: &[u8]) -> std::io::Result<()> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(drv, &String::from_utf8_lossy(line));
        Ok(())
    }
}
