//! Builders' logs, whole lines at a time, so that concurrent builds'
//! lines never mix: each line goes to a [`LogSink`] with the derivation it
//! came from and its prefix (`hello> `); a plain writer gets the line
//! prefixed. A build's log also reaches everyone waiting for the same
//! derivation (a second daemon client asking for it): they subscribe by
//! derivation, get the lines so far (the last [`REPLAYED_LINES`]) and then
//! every new one.

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, OnceLock};

use hermetic_store::StorePath;
use hermetic_store::local::build_log::BuildLogFile;

/// Where builders' lines go.
pub trait LogSink {
    /// One whole line of `drv`'s builder, without its newline; `prefix`
    /// names the derivation (`hello> `).
    fn line(&mut self, drv: &StorePath, prefix: &str, line: &[u8]) -> io::Result<()>;
}

/// A writer gets each line prefixed, on a line of its own.
impl<W: Write> LogSink for W {
    fn line(&mut self, _drv: &StorePath, prefix: &str, line: &[u8]) -> io::Result<()> {
        let mut text = Vec::with_capacity(prefix.len() + line.len() + 1);
        text.extend_from_slice(prefix.as_bytes());
        text.extend_from_slice(line);
        text.push(b'\n');
        self.write_all(&text)?;
        self.flush()
    }
}

/// A shared sink that several builds send lines to.
pub type SharedLog = Arc<Mutex<dyn LogSink + Send>>;

/// How many of a running build's last lines a new watcher is shown.
pub const REPLAYED_LINES: usize = 1000;

/// The logs of running builds' watchers, and their lines so far.
#[derive(Default)]
struct Watched {
    watchers: Vec<(u64, SharedLog)>,
    /// The build's prefix, and its last lines.
    prefix: String,
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
            let _ = out.line(drv, &watched.prefix, line);
        }
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

/// The longest line kept whole: a longer one is passed on in pieces of
/// this size, so that a builder printing without newlines holds a bounded
/// amount of memory.
pub const MAX_LINE: usize = 1 << 20;

/// Splits a stream of bytes into lines, in time linear in its length (each
/// byte is looked at once), holding at most [`MAX_LINE`] bytes of a line
/// not finished yet.
#[derive(Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Passes each line that `buf` completes to `line`, without its `\n`.
    pub fn feed(
        &mut self,
        mut buf: &[u8],
        line: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        while !buf.is_empty() {
            let room = MAX_LINE - self.partial.len();
            let window = &buf[..buf.len().min(room)];
            match window.iter().position(|b| *b == b'\n') {
                Some(end) => {
                    if self.partial.is_empty() {
                        line(&window[..end])?;
                    } else {
                        self.partial.extend_from_slice(&window[..end]);
                        let whole = std::mem::take(&mut self.partial);
                        line(&whole)?;
                    }
                    buf = &buf[end + 1..];
                }
                None => {
                    self.partial.extend_from_slice(window);
                    buf = &buf[window.len()..];
                    if self.partial.len() == MAX_LINE {
                        let piece = std::mem::take(&mut self.partial);
                        line(&piece)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Passes on what is left of a last line without a newline, if any.
    pub fn finish(&mut self, line: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        if self.partial.is_empty() {
            return Ok(());
        }
        let rest = std::mem::take(&mut self.partial);
        line(&rest)
    }
}

/// A writer that prefixes each line of `drv`'s builder and sends whole
/// lines to everyone watching that build.
pub struct PrefixedLines {
    prefix: String,
    lines: LineSplitter,
    drv: StorePath,
}

impl PrefixedLines {
    /// Lines of the builder of `drv`, named `name`.
    pub fn new(drv: &StorePath, name: &str) -> Self {
        Self {
            prefix: format!("{name}> "),
            lines: LineSplitter::default(),
            drv: drv.clone(),
        }
    }

    /// Sends one line of `drv`'s builder to its watchers.
    fn emit(prefix: &str, drv: &StorePath, line: &[u8]) -> io::Result<()> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(watched) = registry().get(drv).cloned() else {
            return Ok(());
        };
        let mut watched = lock(&watched);
        for (_, log) in &watched.watchers {
            let mut out = log.lock().unwrap_or_else(|e| e.into_inner());
            // A watcher that went away does not stop the build.
            let _ = out.line(drv, prefix, line);
        }
        if watched.prefix != prefix {
            watched.prefix = prefix.to_owned();
        }
        if watched.lines.len() == REPLAYED_LINES {
            watched.lines.pop_front();
        }
        watched.lines.push_back(line.to_vec());
        Ok(())
    }
}

impl Write for PrefixedLines {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (prefix, drv) = (&self.prefix, &self.drv);
        self.lines
            .feed(buf, &mut |line| Self::emit(prefix, drv, line))
            .map(|()| buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for PrefixedLines {
    fn drop(&mut self) {
        let (prefix, drv) = (&self.prefix, &self.drv);
        let _ = self.lines.finish(&mut |line| Self::emit(prefix, drv, line));
    }
}

/// The log file of `drv`'s build when `keep-build-log` is on; one that
/// cannot be made is warned of and the build goes on without it.
pub fn kept_log_file(
    settings: &hermetic_config::settings::Settings,
    layout: &hermetic_store::StoreLayout,
    drv: &StorePath,
    warn: &mut dyn FnMut(String),
) -> Option<BuildLogFile> {
    if !settings.keep_build_log {
        return None;
    }
    BuildLogFile::create(layout, drv, settings.compress_build_log)
        .map_err(|e| warn(hermetic_store::error_chain(&e)))
        .ok()
}

/// A build's log file written from more than one thread (a remote
/// build's: the machine's stderr and the log lines its protocol carries).
/// A write that fails drops the file; the warning is given by `finish`.
#[derive(Clone, Default)]
pub struct SharedLogFile(Arc<Mutex<(Option<BuildLogFile>, Option<String>)>>);

impl SharedLogFile {
    /// `file`, shared.
    pub fn new(file: Option<BuildLogFile>) -> Self {
        Self(Arc::new(Mutex::new((file, None))))
    }

    /// Appends `bytes`.
    pub fn write(&self, bytes: &[u8]) {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (file, failed) = &mut *kept;
        if let Some(open) = file
            && let Err(e) = open.write_all(bytes)
        {
            *failed = Some(format!(
                "cannot write the build log '{}': {e}",
                open.path().display()
            ));
            *file = None;
        }
    }

    /// Ends the file; the warning if it could not be written.
    pub fn finish(&self) -> Option<String> {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (file, failed) = &mut *kept;
        if let Some(file) = file.take() {
            let path = file.path().to_owned();
            if let Err(e) = file.finish() {
                return Some(format!(
                    "cannot write the build log '{}': {}",
                    path.display(),
                    hermetic_store::error_chain(&e)
                ));
            }
        }
        failed.take()
    }
}

/// A builder's output on its way to its watchers and, when
/// `keep-build-log` is on, to its log file (the raw bytes, as Nix writes
/// them). A log file that cannot be written is dropped with a warning; the
/// build goes on.
pub struct BuilderOutput<'a> {
    lines: PrefixedLines,
    file: Option<BuildLogFile>,
    warn: &'a mut dyn FnMut(String),
}

impl<'a> BuilderOutput<'a> {
    /// The output of `drv`'s builder, named `name`, kept in `file` too.
    pub fn new(
        drv: &StorePath,
        name: &str,
        file: Option<BuildLogFile>,
        warn: &'a mut dyn FnMut(String),
    ) -> Self {
        Self {
            lines: PrefixedLines::new(drv, name),
            file,
            warn,
        }
    }

    /// Ends the log file.
    pub fn finish(mut self) {
        if let Some(file) = self.file.take() {
            let path = file.path().to_owned();
            if let Err(e) = file.finish() {
                (self.warn)(format!(
                    "cannot write the build log '{}': {}",
                    path.display(),
                    hermetic_store::error_chain(&e)
                ));
            }
        }
    }
}

impl Write for BuilderOutput<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(file) = &mut self.file
            && let Err(e) = file.write_all(buf)
        {
            (self.warn)(format!(
                "cannot write the build log '{}': {e}",
                file.path().display()
            ));
            self.file = None;
        }
        self.lines.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        let mut splitter = LineSplitter::default();
        for chunk in chunks {
            splitter
                .feed(chunk, &mut |l| {
                    lines.push(l.to_vec());
                    Ok(())
                })
                .unwrap();
        }
        splitter
            .finish(&mut |l| {
                lines.push(l.to_vec());
                Ok(())
            })
            .unwrap();
        lines
    }

    #[test]
    fn lines_are_whole_across_writes_and_the_last_is_kept() {
        let lines = split(&[b"a", b"b\nc\n\nd", b"e\nf"]);
        let lines: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
        assert_eq!(lines, [&b"ab"[..], b"c", b"", b"de", b"f"]);
    }

    #[test]
    fn a_line_without_newline_is_passed_on_in_bounded_pieces() {
        // 40 MiB in 4 KiB writes: this took minutes when every write
        // rescanned the unfinished line.
        let chunk = vec![b'x'; 4096];
        let chunks: Vec<&[u8]> = std::iter::repeat_n(chunk.as_slice(), 40 * 256)
            .chain([&b"y\nz"[..]])
            .collect();
        let lines = split(&chunks);
        assert_eq!(lines.len(), 42);
        assert!(lines[..40].iter().all(|l| l.len() == MAX_LINE));
        assert_eq!(lines[40], b"y");
        assert_eq!(lines[41], b"z");
    }
}
