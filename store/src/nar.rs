//! The NAR serialisation: a canonical byte stream of a file, symlink or
//! directory tree, the thing Nix hashes for recursive hashes and sends
//! between stores. `dump` writes one from the filesystem; `parse` reads one
//! into a [`NarSink`] with bounded memory, whatever the input.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

const MAGIC: &str = "nix-archive-1";
/// The longest token, entry name or symlink target the parser accepts: a
/// name is at most 255 bytes on Linux and a target at most 4095.
pub const MAX_STRING: u64 = 4096;
/// The deepest directory nesting the parser accepts.
pub const MAX_DEPTH: usize = 1024;

/// Why a NAR could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum NarError {
    /// Reading a file of the tree failed.
    #[error("cannot read '{path}'")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file in the tree is not a regular file, a directory or a symlink.
    #[error("file '{0}' has an unsupported type")]
    UnsupportedType(PathBuf),
    /// Writing the NAR stream failed.
    #[error("cannot write the NAR stream")]
    Write(#[source] io::Error),
    /// The stream ended early or could not be read.
    #[error("NAR stream ended early or could not be read at byte {offset}")]
    Truncated {
        /// Bytes read before the failure.
        offset: u64,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The stream is not a NAR where it says so.
    #[error("bad archive at byte {offset}: {what}")]
    Bad {
        /// Where the bad token started.
        offset: u64,
        /// What was wrong.
        what: String,
    },
    /// The sink refused an entry (the restore target, say).
    #[error("cannot restore '{path}'")]
    Sink {
        /// The entry's path inside the archive.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn write_bytes(out: &mut (impl Write + ?Sized), bytes: &[u8]) -> io::Result<()> {
    out.write_all(&(bytes.len() as u64).to_le_bytes())?;
    out.write_all(bytes)?;
    out.write_all(&[0u8; 8][..padding(bytes.len() as u64)])
}

fn padding(len: u64) -> usize {
    ((8 - len % 8) % 8) as usize
}

/// Writes the NAR of `path` (a file, symlink or directory) to `out`.
pub fn dump(path: &Path, out: &mut impl Write) -> Result<(), NarError> {
    write_bytes(out, MAGIC.as_bytes()).map_err(NarError::Write)?;
    dump_node(path, out)
}

fn dump_node(path: &Path, out: &mut impl Write) -> Result<(), NarError> {
    let read_err = |source| NarError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = fs::symlink_metadata(path).map_err(read_err)?;
    let w = |out: &mut dyn Write, token: &str| write_bytes(out, token.as_bytes());
    w(out, "(").map_err(NarError::Write)?;
    w(out, "type").map_err(NarError::Write)?;
    let kind = meta.file_type();
    if kind.is_file() {
        w(out, "regular").map_err(NarError::Write)?;
        if meta.mode() & 0o100 != 0 {
            w(out, "executable").map_err(NarError::Write)?;
            w(out, "").map_err(NarError::Write)?;
        }
        w(out, "contents").map_err(NarError::Write)?;
        let mut file = fs::File::open(path).map_err(read_err)?;
        let len = meta.len();
        out.write_all(&len.to_le_bytes()).map_err(NarError::Write)?;
        let copied = copy_exact(&mut file, out, len).map_err(|e| match e {
            CopyError::Read(e) => read_err(e),
            CopyError::Write(e) => NarError::Write(e),
        })?;
        if copied != len {
            return Err(read_err(io::Error::other(
                "the file changed size while it was read",
            )));
        }
        out.write_all(&[0u8; 8][..padding(len)])
            .map_err(NarError::Write)?;
    } else if kind.is_symlink() {
        let target = fs::read_link(path).map_err(read_err)?;
        w(out, "symlink").map_err(NarError::Write)?;
        w(out, "target").map_err(NarError::Write)?;
        write_bytes(out, target.as_os_str().as_bytes()).map_err(NarError::Write)?;
    } else if kind.is_dir() {
        w(out, "directory").map_err(NarError::Write)?;
        let mut names: Vec<_> = fs::read_dir(path)
            .map_err(read_err)?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(read_err)?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            w(out, "entry").map_err(NarError::Write)?;
            w(out, "(").map_err(NarError::Write)?;
            w(out, "name").map_err(NarError::Write)?;
            write_bytes(out, name.as_bytes()).map_err(NarError::Write)?;
            w(out, "node").map_err(NarError::Write)?;
            dump_node(&path.join(&name), out)?;
            w(out, ")").map_err(NarError::Write)?;
        }
    } else {
        return Err(NarError::UnsupportedType(path.to_owned()));
    }
    w(out, ")").map_err(NarError::Write)
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// Copies at most `len` bytes, telling read failures from write failures.
fn copy_exact(
    from: &mut impl Read,
    to: &mut (impl Write + ?Sized),
    len: u64,
) -> Result<u64, CopyError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut done = 0u64;
    while done < len {
        let want = (len - done).min(buf.len() as u64) as usize;
        let n = match from.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        to.write_all(&buf[..n]).map_err(CopyError::Write)?;
        done += n as u64;
    }
    Ok(done)
}

/// Where a parsed NAR's entries go. Paths are relative to the archive's
/// root; the root itself is the empty path.
pub trait NarSink {
    /// A directory.
    fn directory(&mut self, path: &Path) -> io::Result<()>;
    /// A regular file: its contents are the next `size` bytes of `contents`.
    fn file(
        &mut self,
        path: &Path,
        executable: bool,
        size: u64,
        contents: &mut dyn Read,
    ) -> io::Result<()>;
    /// A symlink.
    fn symlink(&mut self, path: &Path, target: &Path) -> io::Result<()>;
}

/// A sink that keeps nothing: parsing into it checks a NAR.
pub struct DiscardSink;

impl NarSink for DiscardSink {
    fn directory(&mut self, _: &Path) -> io::Result<()> {
        Ok(())
    }
    fn file(&mut self, _: &Path, _: bool, _: u64, contents: &mut dyn Read) -> io::Result<()> {
        io::copy(contents, &mut io::sink()).map(drop)
    }
    fn symlink(&mut self, _: &Path, _: &Path) -> io::Result<()> {
        Ok(())
    }
}

/// A sink that writes the tree under a path that must not exist yet.
pub struct RestoreSink {
    root: PathBuf,
}

impl RestoreSink {
    /// Restores into `root`.
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    fn at(&self, path: &Path) -> PathBuf {
        if path.as_os_str().is_empty() {
            self.root.clone()
        } else {
            self.root.join(path)
        }
    }
}

impl NarSink for RestoreSink {
    fn directory(&mut self, path: &Path) -> io::Result<()> {
        fs::create_dir(self.at(path))
    }
    fn file(
        &mut self,
        path: &Path,
        executable: bool,
        size: u64,
        contents: &mut dyn Read,
    ) -> io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.at(path))?;
        let copied = io::copy(contents, &mut file)?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file contents ended early",
            ));
        }
        if executable {
            file.set_permissions(fs::Permissions::from_mode(0o755))?;
        }
        Ok(())
    }
    fn symlink(&mut self, path: &Path, target: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(target, self.at(path))
    }
}

struct Reader<R> {
    inner: R,
    offset: u64,
}

impl<R: Read> Reader<R> {
    fn exact(&mut self, buf: &mut [u8]) -> Result<(), NarError> {
        self.inner
            .read_exact(buf)
            .map_err(|source| NarError::Truncated {
                offset: self.offset,
                source,
            })?;
        self.offset += buf.len() as u64;
        Ok(())
    }

    fn u64(&mut self) -> Result<u64, NarError> {
        let mut buf = [0u8; 8];
        self.exact(&mut buf)?;
        Ok(u64::from_le_bytes(buf))
    }

    fn bad(&self, what: impl Into<String>) -> NarError {
        NarError::Bad {
            offset: self.offset,
            what: what.into(),
        }
    }

    fn padding(&mut self, len: u64) -> Result<(), NarError> {
        let mut pad = [0u8; 8];
        let n = padding(len);
        self.exact(&mut pad[..n])?;
        if pad.iter().any(|b| *b != 0) {
            return Err(self.bad("non-zero padding"));
        }
        Ok(())
    }

    /// A string of at most `MAX_STRING` bytes.
    fn string(&mut self) -> Result<Vec<u8>, NarError> {
        let len = self.u64()?;
        if len > MAX_STRING {
            return Err(self.bad(format!(
                "a string of {len} bytes is longer than {MAX_STRING}"
            )));
        }
        let mut buf = vec![0u8; len as usize];
        self.exact(&mut buf)?;
        self.padding(len)?;
        Ok(buf)
    }

    fn expect(&mut self, token: &str) -> Result<(), NarError> {
        let start = self.offset;
        let got = self.string()?;
        if got != token.as_bytes() {
            return Err(NarError::Bad {
                offset: start,
                what: format!(
                    "expected '{token}', got '{}'",
                    String::from_utf8_lossy(&got)
                ),
            });
        }
        Ok(())
    }
}

/// Reads a NAR from `input` into `sink`, checking it as Nix does: the magic,
/// every token, zero padding, entry names (not empty, `.`, `..`, with no `/`
/// or NUL, in strictly ascending order) and nothing after the end.
pub fn parse(input: impl Read, sink: &mut dyn NarSink) -> Result<(), NarError> {
    let mut reader = Reader {
        inner: input,
        offset: 0,
    };
    reader.expect(MAGIC).map_err(|e| match e {
        NarError::Bad { offset, .. } => NarError::Bad {
            offset,
            what: "input doesn't look like a Nix archive".to_owned(),
        },
        other => other,
    })?;
    parse_node(&mut reader, sink, &mut PathBuf::new(), 0)?;
    let mut extra = [0u8; 1];
    match reader.inner.read(&mut extra) {
        Ok(0) => Ok(()),
        Ok(_) => Err(reader.bad("data after the end of the archive")),
        Err(source) => Err(NarError::Truncated {
            offset: reader.offset,
            source,
        }),
    }
}

fn parse_node<R: Read>(
    reader: &mut Reader<R>,
    sink: &mut dyn NarSink,
    path: &mut PathBuf,
    depth: usize,
) -> Result<(), NarError> {
    if depth > MAX_DEPTH {
        return Err(reader.bad(format!("directories nested deeper than {MAX_DEPTH}")));
    }
    let sink_err = |path: &Path| {
        let path = path.display().to_string();
        move |source| NarError::Sink { path, source }
    };
    reader.expect("(")?;
    reader.expect("type")?;
    let kind = reader.string()?;
    match kind.as_slice() {
        b"regular" => {
            let mut tag = reader.string()?;
            let executable = tag == b"executable";
            if executable {
                reader.expect("")?;
                tag = reader.string()?;
            }
            if tag != b"contents" {
                return Err(reader.bad("expected 'contents'"));
            }
            let size = reader.u64()?;
            let start = reader.offset;
            let mut contents = (&mut reader.inner).take(size);
            let result = sink.file(path, executable, size, &mut contents);
            let left = contents.limit();
            reader.offset = start + (size - left);
            // The sink's own failure (a full disk) says more than the bytes
            // it left unread.
            if let Err(e) = &result
                && e.kind() != io::ErrorKind::UnexpectedEof
            {
                return Err(sink_err(path)(result.unwrap_err()));
            }
            if left != 0 {
                return Err(NarError::Truncated {
                    offset: reader.offset,
                    source: io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file contents ended early",
                    ),
                });
            }
            result.map_err(sink_err(path))?;
            reader.padding(size)?;
        }
        b"symlink" => {
            reader.expect("target")?;
            let target = reader.string()?;
            if target.is_empty() || target.contains(&0) {
                return Err(reader.bad("bad symlink target"));
            }
            let target = Path::new(std::ffi::OsStr::from_bytes(&target));
            sink.symlink(path, target).map_err(sink_err(path))?;
        }
        b"directory" => {
            sink.directory(path).map_err(sink_err(path))?;
            let mut previous: Option<Vec<u8>> = None;
            loop {
                let tag = reader.string()?;
                match tag.as_slice() {
                    b")" => return Ok(()),
                    b"entry" => {}
                    _ => return Err(reader.bad("expected 'entry' or ')'")),
                }
                reader.expect("(")?;
                reader.expect("name")?;
                let name = reader.string()?;
                let bad_name = name.is_empty()
                    || name == b"."
                    || name == b".."
                    || name.contains(&b'/')
                    || name.contains(&0);
                if bad_name {
                    return Err(reader.bad(format!(
                        "NAR contains invalid file name '{}'",
                        String::from_utf8_lossy(&name)
                    )));
                }
                if previous.as_ref().is_some_and(|p| *p >= name) {
                    return Err(reader.bad("NAR directory is not sorted"));
                }
                reader.expect("node")?;
                path.push(std::ffi::OsStr::from_bytes(&name));
                parse_node(reader, sink, path, depth + 1)?;
                path.pop();
                reader.expect(")")?;
                previous = Some(name);
            }
        }
        other => {
            return Err(reader.bad(format!(
                "unknown file type '{}'",
                String::from_utf8_lossy(other)
            )));
        }
    }
    reader.expect(")")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nar_of(build: impl FnOnce(&Path)) -> Vec<u8> {
        let dir = std::env::temp_dir().join(format!(
            "nar-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).unwrap();
        let root = dir.join("root");
        build(&root);
        let mut out = Vec::new();
        dump(&root, &mut out).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        out
    }

    #[test]
    fn a_file_dumps_and_parses_back() {
        let nar = nar_of(|root| fs::write(root, b"hello\n").unwrap());
        // Magic, "(", "type", "regular", "contents", the size, 6 bytes padded to 8, ")".
        assert_eq!(nar.len(), 8 + 16 + 16 + 16 + 16 + 16 + 8 + 8 + 16);
        parse(&nar[..], &mut DiscardSink).unwrap();
    }

    #[test]
    fn a_tree_restores_to_the_same_nar() {
        let nar = nar_of(|root| {
            fs::create_dir_all(root.join("b/c")).unwrap();
            fs::write(root.join("a"), b"x").unwrap();
            fs::write(root.join("b/c/exe"), b"#!/bin/sh\n").unwrap();
            fs::set_permissions(root.join("b/c/exe"), fs::Permissions::from_mode(0o755)).unwrap();
            std::os::unix::fs::symlink("../a", root.join("b/link")).unwrap();
        });
        let again = nar_of(|root| parse(&nar[..], &mut RestoreSink::new(root.to_owned())).unwrap());
        assert_eq!(nar, again);
    }

    #[test]
    fn broken_archives_are_refused() {
        let nar = nar_of(|root| {
            fs::create_dir(root).unwrap();
            fs::write(root.join("f"), b"data").unwrap();
        });
        for cut in [0, 7, 8, 40, nar.len() - 1] {
            assert!(
                parse(&nar[..cut], &mut DiscardSink).is_err(),
                "cut at {cut}"
            );
        }
        let mut extra = nar.clone();
        extra.push(0);
        assert!(parse(&extra[..], &mut DiscardSink).is_err());
        let mut huge = nar.clone();
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        let err = parse(&huge[..], &mut DiscardSink).unwrap_err();
        assert!(err.to_string().contains("bad archive"), "{err}");
    }
}
