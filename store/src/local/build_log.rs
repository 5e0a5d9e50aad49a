//! Build logs where Nix keeps them: `<log dir>/drvs/<first 2 characters of
//! the derivation's base name>/<the rest>`, bzip2-compressed with `.bz2`
//! unless `compress-build-log` is off. `nix log` and `nix-store
//! --read-log` read these files themselves, also through a daemon.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::{StoreError, io_err};
use crate::layout::StoreLayout;
use crate::local::LocalStore;
use crate::path::StorePath;

/// Where the log of `drv` goes, compressed or not.
pub fn build_log_path(layout: &StoreLayout, drv: &StorePath, compressed: bool) -> PathBuf {
    let base = drv.base_name();
    let (first, rest) = base.split_at(2.min(base.len()));
    let file = if compressed {
        format!("{rest}.bz2")
    } else {
        rest.to_owned()
    };
    layout.log_dir.join("drvs").join(first).join(file)
}

/// A build's log file, written as the build runs.
pub struct BuildLogFile {
    path: PathBuf,
    sink: Sink,
}

enum Sink {
    Plain(io::BufWriter<File>),
    Compressed(bzip2::write::BzEncoder<io::BufWriter<File>>),
}

impl BuildLogFile {
    /// Creates (or truncates) the log file of `drv`, as Nix does when a
    /// build starts.
    pub fn create(
        layout: &StoreLayout,
        drv: &StorePath,
        compressed: bool,
    ) -> Result<Self, StoreError> {
        let path = build_log_path(layout, drv, compressed);
        let dir = path.parent().expect("a log path has a directory");
        fs::create_dir_all(dir).map_err(io_err("create the log directory", dir))?;
        let file = File::create(&path).map_err(io_err("create the log file", &path))?;
        let file = io::BufWriter::new(file);
        let sink = if compressed {
            Sink::Compressed(bzip2::write::BzEncoder::new(
                file,
                bzip2::Compression::default(),
            ))
        } else {
            Sink::Plain(file)
        };
        Ok(Self { path, sink })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Ends the file (the compressed stream's end) and flushes it.
    pub fn finish(self) -> Result<(), StoreError> {
        let path = self.path;
        match self.sink {
            Sink::Plain(mut w) => w.flush(),
            Sink::Compressed(w) => w.finish().and_then(|mut w| w.flush()),
        }
        .map_err(io_err("write the log file", &path))
    }
}

impl Write for BuildLogFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.sink {
            Sink::Plain(w) => w.write(buf),
            Sink::Compressed(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.sink {
            Sink::Plain(w) => w.flush(),
            Sink::Compressed(w) => w.flush(),
        }
    }
}

impl LocalStore {
    /// Stores a build log a client sends (`AddBuildLog`, `nix store
    /// copy-log`): kept, compressed, unless the derivation has one already.
    pub fn add_build_log(&self, drv: &StorePath, log: &[u8]) -> Result<(), StoreError> {
        let path = build_log_path(self.layout(), drv, true);
        if path.exists() {
            return Ok(());
        }
        let dir = path.parent().expect("a log path has a directory");
        fs::create_dir_all(dir).map_err(io_err("create the log directory", dir))?;
        let temp = PathBuf::from(format!("{}.tmp.{}", path.display(), std::process::id()));
        let file = File::create(&temp).map_err(io_err("create the log file", &temp))?;
        let mut encoder = bzip2::write::BzEncoder::new(file, bzip2::Compression::default());
        encoder
            .write_all(log)
            .and_then(|()| encoder.finish().map(drop))
            .map_err(io_err("write the log file", &temp))?;
        fs::rename(&temp, &path).map_err(io_err("rename the log file into place", &path))
    }
}
