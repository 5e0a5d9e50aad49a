//! `hermetic build`'s one-line status on a terminal: how many builds are
//! done, running and to do, and what runs, kept on the last line while
//! builders' output and messages scroll above it. Off a terminal every
//! event is a plain line instead.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::{Arc, Mutex};

use hermetic_realise::log::LogSink;
use hermetic_realise::schedule::Progress;
use hermetic_store::{StoreDir, StorePath};

/// What the status line shows.
#[derive(Debug, Default)]
struct Counts {
    total: usize,
    done: usize,
    failed: usize,
    /// The names of the derivations building now.
    running: BTreeSet<String>,
    /// Whether a status line is on the screen.
    shown: bool,
}

/// The status line and everything written to stderr while it is shown.
pub struct StatusLine<W: Write + Send> {
    out: W,
    counts: Counts,
    store_dir: StoreDir,
}

/// Moves to the start of the line and clears it.
const CLEAR: &str = "\r\x1b[K";

impl<W: Write + Send> StatusLine<W> {
    /// A status line written to `out` (a terminal).
    pub fn new(out: W, store_dir: StoreDir) -> StatusLine<W> {
        StatusLine {
            out,
            counts: Counts::default(),
            store_dir,
        }
    }

    /// The text of the status line.
    fn text(&self) -> String {
        let c = &self.counts;
        let mut text = format!(
            "[{}/{}/{} built",
            c.done,
            c.running.len(),
            c.total.max(c.done + c.failed + c.running.len())
        );
        if c.failed > 0 {
            text.push_str(&format!(", {} failed", c.failed));
        }
        text.push(']');
        if !c.running.is_empty() {
            let names: Vec<&str> = c.running.iter().map(String::as_str).collect();
            text.push_str(&format!(" building {}", names.join(", ")));
        }
        text
    }

    /// Writes `line` above the status line, which is drawn again.
    fn above(&mut self, line: &[u8]) -> std::io::Result<()> {
        self.out.write_all(CLEAR.as_bytes())?;
        self.out.write_all(line)?;
        self.out.write_all(b"\n")?;
        self.draw()
    }

    fn draw(&mut self) -> std::io::Result<()> {
        let text = self.text();
        write!(self.out, "{CLEAR}{text}")?;
        self.counts.shown = true;
        self.out.flush()
    }

    /// A build started or ended, or a message to show.
    pub fn progress(&mut self, progress: &Progress) {
        let name = |drv: &StorePath| drv.name().trim_end_matches(".drv").to_owned();
        let _ = match progress {
            Progress::Started { drv, total, .. } => {
                self.counts.total = self.counts.total.max(*total);
                self.counts.running.insert(name(drv));
                self.draw()
            }
            Progress::Finished { drv, ok } => {
                self.counts.running.remove(&name(drv));
                if *ok {
                    self.counts.done += 1;
                } else {
                    self.counts.failed += 1;
                }
                self.draw()
            }
            other => match other.text(&self.store_dir) {
                Some(text) => self.above(text.as_bytes()),
                None => Ok(()),
            },
        };
    }

    /// Takes the status line off the screen, for what is printed after.
    pub fn finish(&mut self) {
        if self.counts.shown {
            let _ = self.out.write_all(CLEAR.as_bytes());
            let _ = self.out.flush();
            self.counts.shown = false;
        }
    }
}

/// The builders' output, written above a shared status line.
pub struct AboveStatus<W: Write + Send>(pub Arc<Mutex<StatusLine<W>>>);

impl<W: Write + Send> LogSink for AboveStatus<W> {
    fn line(&mut self, _drv: &StorePath, prefix: &str, line: &[u8]) -> std::io::Result<()> {
        let mut text = Vec::with_capacity(prefix.len() + line.len());
        text.extend_from_slice(prefix.as_bytes());
        text.extend_from_slice(line);
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .above(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_counts_builds_and_keeps_log_lines_above_it() {
        let store_dir = StoreDir::default();
        let drv = |name: &str| {
            StorePath::from_base_name(&format!("{}-{name}.drv", "a".repeat(32))).unwrap()
        };
        let mut status = StatusLine::new(Vec::new(), store_dir);
        status.progress(&Progress::Started {
            drv: drv("one"),
            number: 1,
            total: 3,
            machine: None,
        });
        status.progress(&Progress::Started {
            drv: drv("two"),
            number: 2,
            total: 3,
            machine: None,
        });
        assert_eq!(status.text(), "[0/2/3 built] building one, two");
        status.above(b"one> hello").unwrap();
        status.progress(&Progress::Finished {
            drv: drv("one"),
            ok: true,
        });
        status.progress(&Progress::Finished {
            drv: drv("two"),
            ok: false,
        });
        assert_eq!(status.text(), "[1/0/3 built, 1 failed]");
        status.finish();
        let shown = String::from_utf8(status.out).unwrap();
        assert!(
            shown.contains("\r\x1b[Kone> hello\n\r\x1b[K[0/2/3 built] building one, two"),
            "{shown:?}"
        );
        assert!(
            shown.ends_with("[1/0/3 built, 1 failed]\r\x1b[K"),
            "{shown:?}"
        );
    }
}
