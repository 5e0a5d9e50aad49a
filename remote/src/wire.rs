//! The worker protocol's wire format: little-endian 64-bit numbers, and
//! byte strings as a length, the bytes and zero padding to 8. Every read is
//! bounded: a string longer than [`MAX_STRING`] or a list longer than
//! [`MAX_LIST`] is refused before anything is allocated for it.

use std::io::{self, Read, Write};

/// The longest string a client may send (a derivation or a text file).
pub const MAX_STRING: u64 = 64 << 20;
/// The most items in a list a client may send.
pub const MAX_LIST: u64 = 1 << 20;

/// Why a read from a client failed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The connection failed or ended.
    #[error("reading from the client")]
    Io(#[from] io::Error),
    /// A length over the bound.
    #[error("the client sent a {what} of {len}, more than the {max} allowed")]
    TooLong {
        /// A string or a list.
        what: &'static str,
        /// Its length.
        len: u64,
        /// The bound.
        max: u64,
    },
    /// Padding that is not zero, or a string that is not UTF-8.
    #[error("the client sent a malformed {0}")]
    Malformed(&'static str),
}

/// Reads a number.
pub fn read_u64(r: &mut impl Read) -> Result<u64, WireError> {
    let mut buf = [0u8; 8];
    r.read_exact(&mut buf)?;
    Ok(u64::from_le_bytes(buf))
}

/// Reads a boolean (any non-zero number is true).
pub fn read_bool(r: &mut impl Read) -> Result<bool, WireError> {
    Ok(read_u64(r)? != 0)
}

/// Reads a byte string of at most `max` bytes.
pub fn read_bytes_max(r: &mut impl Read, max: u64) -> Result<Vec<u8>, WireError> {
    let len = read_u64(r)?;
    if len > max {
        return Err(WireError::TooLong {
            what: "string",
            len,
            max,
        });
    }
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf)?;
    let pad = ((8 - len % 8) % 8) as usize;
    let mut padding = [0u8; 8];
    r.read_exact(&mut padding[..pad])?;
    if padding.iter().any(|b| *b != 0) {
        return Err(WireError::Malformed("string padding"));
    }
    Ok(buf)
}

/// Reads a UTF-8 string.
pub fn read_string(r: &mut impl Read) -> Result<String, WireError> {
    String::from_utf8(read_bytes_max(r, MAX_STRING)?).map_err(|_| WireError::Malformed("string"))
}

/// Reads the length of a list, at most [`MAX_LIST`].
pub fn read_count(r: &mut impl Read) -> Result<u64, WireError> {
    let len = read_u64(r)?;
    if len > MAX_LIST {
        return Err(WireError::TooLong {
            what: "list",
            len,
            max: MAX_LIST,
        });
    }
    Ok(len)
}

/// Reads a list of strings.
pub fn read_strings(r: &mut impl Read) -> Result<Vec<String>, WireError> {
    let len = read_count(r)?;
    (0..len).map(|_| read_string(r)).collect()
}

/// Writes a number.
pub fn write_u64(w: &mut (impl Write + ?Sized), n: u64) -> io::Result<()> {
    w.write_all(&n.to_le_bytes())
}

/// Writes a byte string.
pub fn write_bytes(w: &mut (impl Write + ?Sized), bytes: &[u8]) -> io::Result<()> {
    write_u64(w, bytes.len() as u64)?;
    w.write_all(bytes)?;
    w.write_all(&[0u8; 8][..((8 - bytes.len() % 8) % 8)])
}

/// Writes a string.
pub fn write_string(w: &mut (impl Write + ?Sized), s: &str) -> io::Result<()> {
    write_bytes(w, s.as_bytes())
}

/// Writes a list of strings.
pub fn write_strings<'a>(
    w: &mut (impl Write + ?Sized),
    items: impl ExactSizeIterator<Item = &'a str>,
) -> io::Result<()> {
    write_u64(w, items.len() as u64)?;
    for item in items {
        write_string(w, item)?;
    }
    Ok(())
}

/// A writer of framed data, as a client sends it after `AddToStoreNar`:
/// what it is given in frames (a length and its bytes), then, at
/// [`FramedWriter::finish`], the empty frame that ends them.
pub struct FramedWriter<'a> {
    inner: &'a mut dyn Write,
    frame: Vec<u8>,
}

/// The largest frame a [`FramedWriter`] sends.
const FRAME: usize = 64 * 1024;

impl<'a> FramedWriter<'a> {
    /// Writes frames to `inner`.
    pub fn new(inner: &'a mut dyn Write) -> Self {
        Self {
            inner,
            frame: Vec::with_capacity(FRAME),
        }
    }

    fn send_frame(&mut self) -> io::Result<()> {
        if !self.frame.is_empty() {
            write_u64(self.inner, self.frame.len() as u64)?;
            self.inner.write_all(&self.frame)?;
            self.frame.clear();
        }
        Ok(())
    }

    /// Sends what is left and the empty frame.
    pub fn finish(mut self) -> io::Result<()> {
        self.send_frame()?;
        write_u64(self.inner, 0)
    }
}

impl Write for FramedWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(FRAME - self.frame.len());
        self.frame.extend_from_slice(&buf[..n]);
        if self.frame.len() == FRAME {
            self.send_frame()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_frame()
    }
}

/// A reader of the framed data the client sends after some operations
/// (`AddToStore`, `AddToStoreNar`): chunks, each a length and its bytes,
/// until a zero length.
pub struct Framed<'a, R> {
    inner: &'a mut R,
    left: u64,
    done: bool,
}

impl<'a, R: Read> Framed<'a, R> {
    /// Reads frames from `inner`.
    pub fn new(inner: &'a mut R) -> Self {
        Self {
            inner,
            left: 0,
            done: false,
        }
    }

    /// Reads (and drops) whatever is left, so the connection stays in step.
    pub fn drain(mut self) -> io::Result<()> {
        io::copy(&mut self, &mut io::sink()).map(drop)
    }
}

impl<R: Read> Read for Framed<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.left == 0 {
            if self.done {
                return Ok(0);
            }
            let mut len = [0u8; 8];
            self.inner.read_exact(&mut len)?;
            self.left = u64::from_le_bytes(len);
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the client's frames ended early",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_and_bounds_hold() {
        let mut buf = Vec::new();
        write_string(&mut buf, "hello").unwrap();
        assert_eq!(buf.len(), 16);
        assert_eq!(read_string(&mut &buf[..]).unwrap(), "hello");
        let mut huge = Vec::new();
        write_u64(&mut huge, u64::MAX).unwrap();
        assert!(matches!(
            read_string(&mut &huge[..]),
            Err(WireError::TooLong { .. })
        ));
        assert!(matches!(
            read_strings(&mut &huge[..]),
            Err(WireError::TooLong { .. })
        ));
        let mut bad = buf.clone();
        bad[15] = 1;
        assert!(matches!(
            read_string(&mut &bad[..]),
            Err(WireError::Malformed(_))
        ));
        assert!(read_string(&mut &buf[..10]).is_err());
    }

    #[test]
    fn frames_are_read_until_the_empty_one() {
        let mut buf = Vec::new();
        for chunk in [&b"abc"[..], b"defgh", b""] {
            write_u64(&mut buf, chunk.len() as u64).unwrap();
            buf.extend_from_slice(chunk);
        }
        buf.extend_from_slice(b"rest");
        let mut reader = &buf[..];
        let mut out = Vec::new();
        Framed::new(&mut reader).read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abcdefgh");
        assert_eq!(reader, b"rest");
    }
}
