//! Builders' logs on one stream: each line prefixed with the derivation's
//! name (`hello> `), whole lines at a time, so that concurrent builds'
//! lines never mix.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

/// A shared stream that several builds write lines to.
pub type SharedLog = Arc<Mutex<dyn Write + Send>>;

/// A writer that prefixes each line and writes whole lines to a shared log.
pub struct PrefixedLines {
    prefix: String,
    partial: Vec<u8>,
    log: SharedLog,
}

impl PrefixedLines {
    /// Lines of `name`'s builder.
    pub fn new(name: &str, log: SharedLog) -> Self {
        Self {
            prefix: format!("{name}> "),
            partial: Vec::new(),
            log,
        }
    }

    fn emit(&mut self, line: &[u8]) -> io::Result<()> {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.write_all(self.prefix.as_bytes())?;
        log.write_all(line)?;
        log.write_all(b"\n")?;
        log.flush()
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
