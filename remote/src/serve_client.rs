//! The client side of Nix's legacy serve protocol (`nix-store --serve
//! --write` at the other end), as Nix's `ssh://` store speaks it to build
//! remotely: which paths are there, a path added with its NAR, a
//! derivation built, a path's metadata and NAR fetched. It greets as
//! protocol 2.7 (Nix 2.8's) and talks to servers of 2.5 and later. The
//! builder's log comes on the server's stderr, not here.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};

use crate::client::{ClientError, Conn, WireBuildResult, WireDerivation, WirePathInfo, WriteNar};
use crate::protocol::{SERVE_MAGIC_1, SERVE_MAGIC_2, SERVE_VERSION, minor};
use crate::wire::{write_string, write_strings, write_u64};

const CMD_QUERY_VALID_PATHS: u64 = 1;
const CMD_QUERY_PATH_INFOS: u64 = 2;
const CMD_DUMP_STORE_PATH: u64 = 3;
const CMD_BUILD_DERIVATION: u64 = 8;
const CMD_ADD_TO_STORE_NAR: u64 = 9;

/// A writer that counts what passes through it.
struct Counted<'a> {
    inner: &'a mut dyn Write,
    count: u64,
}

impl Write for Counted<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The time limits a build command carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BuildLimits {
    /// `max-silent-time`, in seconds (0: none).
    pub max_silent_time: u64,
    /// `timeout`, in seconds (0: none).
    pub timeout: u64,
}

/// A serve-protocol session.
pub struct ServeClient {
    conn: Conn,
    version: u64,
}

impl ServeClient {
    /// Greets the server at the other end of `from` and `to`; `at` names
    /// it in errors.
    pub fn over(
        at: String,
        from: Box<dyn Read + Send>,
        to: Box<dyn Write + Send>,
    ) -> Result<ServeClient, ClientError> {
        let mut conn = Conn::new(at, from, to);
        conn.send(|w| {
            write_u64(w, SERVE_MAGIC_1)?;
            write_u64(w, SERVE_VERSION)
        })?;
        if conn.read_u64()? != SERVE_MAGIC_2 {
            return Err(conn.broke("it did not answer the serve protocol's greeting"));
        }
        let server = conn.read_u64()?;
        if server >> 8 != 2 || minor(server) < 5 {
            return Err(conn.broke(&format!(
                "it speaks serve protocol {}.{}, not 2.5 or later",
                server >> 8,
                minor(server)
            )));
        }
        Ok(ServeClient {
            conn,
            version: server.min(SERVE_VERSION),
        })
    }

    /// Which of `paths` are valid there, after it fetched what it could
    /// from its substituters if `substitute`.
    pub fn query_valid_paths(
        &mut self,
        paths: &BTreeSet<String>,
        substitute: bool,
    ) -> Result<BTreeSet<String>, ClientError> {
        self.conn.send(|w| {
            write_u64(w, CMD_QUERY_VALID_PATHS)?;
            write_u64(w, 0)?; // lock
            write_u64(w, u64::from(substitute))?;
            write_strings(w, paths.iter().map(String::as_str))
        })?;
        Ok(self.conn.read_strings()?.into_iter().collect())
    }

    /// A valid path's metadata, or `None`.
    pub fn query_path_info(&mut self, path: &str) -> Result<Option<WirePathInfo>, ClientError> {
        self.conn.send(|w| {
            write_u64(w, CMD_QUERY_PATH_INFOS)?;
            write_strings(w, std::iter::once(path))
        })?;
        let mut found = None;
        loop {
            let answered = self.conn.read_string()?;
            if answered.is_empty() {
                return Ok(found);
            }
            let deriver = self.conn.read_string()?;
            let references = self.conn.read_strings()?.into_iter().collect();
            self.conn.read_u64()?; // download size
            let nar_size = self.conn.read_u64()?;
            let (nar_hash, ca, sigs) = if minor(self.version) >= 4 {
                let nar_hash = self.conn.read_string()?;
                let ca = self.conn.read_string()?;
                let sigs = self.conn.read_strings()?.into_iter().collect();
                (nar_hash, ca, sigs)
            } else {
                return Err(self.conn.broke("a path's metadata without its NAR hash"));
            };
            if answered == path {
                found = Some(WirePathInfo {
                    deriver,
                    nar_hash,
                    references,
                    registration_time: 0,
                    nar_size,
                    ultimate: false,
                    sigs,
                    ca,
                });
            }
        }
    }

    /// Adds `path` with its metadata and its NAR, which `nar` writes.
    pub fn add_to_store_nar(
        &mut self,
        path: &str,
        info: &WirePathInfo,
        nar: WriteNar<'_>,
    ) -> Result<(), ClientError> {
        self.conn.send(|w| {
            write_u64(w, CMD_ADD_TO_STORE_NAR)?;
            info.write(w, path)?;
            // The NAR as it is: the server reads the size the metadata
            // says, so it must be that.
            let mut counted = Counted { inner: w, count: 0 };
            nar(&mut counted)?;
            let copied = counted.count;
            if copied != info.nar_size {
                return Err(io::Error::other(format!(
                    "the NAR of '{path}' is {copied} bytes, not {}",
                    info.nar_size
                )));
            }
            Ok(())
        })?;
        if self.conn.read_u64()? != 1 {
            return Err(ClientError::Daemon(format!(
                "failed to add path '{path}' to remote host '{}'",
                self.conn.path
            )));
        }
        Ok(())
    }

    /// Builds `drv` there, sent whole, its inputs already there.
    pub fn build_derivation(
        &mut self,
        drv_path: &str,
        drv: &WireDerivation,
        limits: BuildLimits,
    ) -> Result<WireBuildResult, ClientError> {
        let minor = minor(self.version);
        self.conn.send(|w| {
            write_u64(w, CMD_BUILD_DERIVATION)?;
            write_string(w, drv_path)?;
            drv.write(w)?;
            write_u64(w, limits.max_silent_time)?;
            write_u64(w, limits.timeout)?;
            if minor >= 2 {
                write_u64(w, 0)?; // max log size: none
            }
            if minor >= 3 {
                write_u64(w, 0)?; // build repeat
                write_u64(w, 0)?; // enforce determinism
            }
            if minor >= 7 {
                write_u64(w, 0)?; // keep failed
            }
            Ok(())
        })?;
        let result = WireBuildResult {
            status: self.conn.read_u64()?,
            error: self.conn.read_string()?,
        };
        if minor >= 3 {
            for _ in 0..4 {
                self.conn.read_u64()?; // times built, non-deterministic, start, stop
            }
        }
        if minor >= 6 {
            for _ in 0..self.conn.read_count()? {
                self.conn.read_string()?; // realisation id
                self.conn.read_string()?; // realisation
            }
        }
        Ok(result)
    }

    /// Asks for a valid path's NAR, which follows: read it whole with
    /// [`ServeClient::nar`] before the next command.
    pub fn dump_store_path(&mut self, path: &str) -> Result<(), ClientError> {
        self.conn.send(|w| {
            write_u64(w, CMD_DUMP_STORE_PATH)?;
            write_string(w, path)
        })
    }

    /// The NAR `dump_store_path` asked for, which is `nar_size` bytes.
    pub fn nar(&mut self, nar_size: u64) -> impl Read + '_ {
        (&mut self.conn.from).take(nar_size)
    }
}
