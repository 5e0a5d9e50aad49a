//! Builders' logs on one stream: each line prefixed with the derivation's
//! name (`hello> `), whole lines at a time, so that concurrent builds'
//! lines never mix. A build's log also reaches everyone waiting for the
//! same derivation (a second daemon client asking for it): they subscribe
//! by derivation, get the lines so far (the last [`REPLAYED_LINES`]) and
//! then every new one.

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, OnceLock};

use hermetic_store::StorePath;

/// A shared stream that several builds write lines to.
pub type SharedLog = Arc<Mutex<dyn Write + Send>>;

/// How many of a running build's last lines a new watcher is shown.
pub const REPLAYED_LINES: usize = 1000;

/// The logs of running builds' watchers, and their lines so far.
#[derive(Default)]
struct Watched {
    watchers: Vec<(u64, SharedLog)>,
    lines: std::collections::VecDeque<Vec<u8>>,
}

/// Each build's watchers behind a lock of its own: a watcher slow to read
/// holds up that build's log, never another's.
type Registry = HashMap<StorePath, Arc<Mutex<Watched>>>;

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

fn lock(watched: &Mutex<Watched>) -> std::sync::MutexGuard<'_, Watched> {
    watched.lock().unwrap_or_else(|e| e.into_inner())
}

/// A log's subscription to a derivation's build; ended when dropped.
pub struct Watch {
    drv: StorePath,
    id: u64,
}

/// Sends the lines of `drv`'s build, in this process, to `log`: those so
/// far and every later one, until the watch is dropped.
pub fn watch(drv: &StorePath, log: SharedLog) -> Watch {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let watched = registry().entry(drv.clone()).or_default().clone();
    let mut watched = lock(&watched);
    {
        let mut out = log.lock().unwrap_or_else(|e| e.into_inner());
        for line in &watched.lines {
            let _ = out.write_all(line);
        }
        let _ = out.flush();
    }
    watched.watchers.push((id, log));
    Watch {
        drv: drv.clone(),
        id,
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut registry = registry();
        if let Some(watched) = registry.get(&self.drv).cloned() {
            let mut watched = lock(&watched);
            watched.watchers.retain(|(id, _)| *id != self.id);
            if watched.watchers.is_empty() {
                registry.remove(&self.drv);
            }
        }
    }
}

/// A writer that prefixes each line of `drv`'s builder and sends whole
/// lines to everyone watching that build.
pub struct PrefixedLines {
    prefix: String,
    partial: Vec<u8>,
    drv: StorePath,
}

impl PrefixedLines {
    /// Lines of the builder of `drv`, named `name`.
    pub fn new(drv: &StorePath, name: &str) -> Self {
        Self {
            prefix: format!("{name}> "),
            partial: Vec::new(),
            drv: drv.clone(),
        }
    }

    fn emit(&mut self, line: &[u8]) -> io::Result<()> {
        let mut text = Vec::with_capacity(self.prefix.len() + line.len() + 1);
        text.extend_from_slice(self.prefix.as_bytes());
        text.extend_from_slice(line);
        text.push(b'\n');
        let Some(watched) = registry().get(&self.drv).cloned() else {
            return Ok(());
        };
        let mut watched = lock(&watched);
        for (_, log) in &watched.watchers {
            let mut out = log.lock().unwrap_or_else(|e| e.into_inner());
            // A watcher that went away does not stop the build.
            let _ = out.write_all(&text).and_then(|()| out.flush());
        }
        if watched.lines.len() == REPLAYED_LINES {
            watched.lines.pop_front();
        }
        watched.lines.push_back(text);
        Ok(())
    }
}

impl Write for PrefixedLines {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.partial.extend_from_slice(buf);
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let line = line.strip_suffix(b"\n").unwrap_or(&line);
            let line = line.strip_suffix(b"\r").unwrap_or(line).to_vec();
            self.emit(&line)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for PrefixedLines {
    fn drop(&mut self) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            let _ = self.emit(&line);
        }
    }
}
