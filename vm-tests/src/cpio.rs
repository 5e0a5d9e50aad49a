//! A writer of the cpio "newc" archives the kernel unpacks as its initramfs.
//! Archives may be concatenated: the kernel unpacks each in turn, so a
//! kernel's modules are an archive of their own after the shared one.

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::path::Path;

/// An archive being written: entries, then [`Archive::finish`].
pub struct Archive<W: Write> {
    out: W,
    next_inode: u32,
    directories: BTreeSet<String>,
}

const DIRECTORY: u32 = 0o040000;
const REGULAR: u32 = 0o100000;
const SYMLINK: u32 = 0o120000;

impl<W: Write> Archive<W> {
    /// Starts an archive written to `out`.
    pub fn new(out: W) -> Archive<W> {
        Archive {
            out,
            next_inode: 1,
            directories: BTreeSet::new(),
        }
    }

    /// Adds directory `path` (relative, `a/b`) and any parent not yet added.
    pub fn directory(&mut self, path: &str) -> io::Result<()> {
        let mut prefix = String::new();
        for component in path.split('/').filter(|c| !c.is_empty()) {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(component);
            if self.directories.insert(prefix.clone()) {
                let name = prefix.clone();
                self.entry(&name, DIRECTORY | 0o755, &[])?;
            }
        }
        Ok(())
    }

    /// Adds a regular file at `path` with `mode` and `contents`.
    pub fn file(&mut self, path: &str, mode: u32, contents: &[u8]) -> io::Result<()> {
        self.parents(path)?;
        self.entry(path, REGULAR | (mode & 0o7777), contents)
    }

    /// Adds the host file `source` at `path`, keeping its permission bits.
    pub fn copy(&mut self, path: &str, source: &Path) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let contents = std::fs::read(source)?;
        let mode = std::fs::metadata(source)?.permissions().mode();
        self.file(path, mode, &contents)
    }

    /// Adds a symbolic link at `path` pointing to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        self.parents(path)?;
        self.entry(path, SYMLINK | 0o777, target.as_bytes())
    }

    /// Writes the trailer and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.next_inode = 0;
        self.entry("TRAILER!!!", 0, &[])?;
        Ok(self.out)
    }

    fn parents(&mut self, path: &str) -> io::Result<()> {
        match path.rsplit_once('/') {
            Some((parent, _)) => self.directory(parent),
            None => Ok(()),
        }
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        let inode = self.next_inode;
        self.next_inode += 1;
        let links = if mode & DIRECTORY == DIRECTORY { 2 } else { 1 };
        let name_size = name.len() + 1;
        let header = format!(
            "070701{inode:08x}{mode:08x}{uid:08x}{gid:08x}{links:08x}{mtime:08x}{size:08x}\
             {major:08x}{minor:08x}{rmajor:08x}{rminor:08x}{name_size:08x}{check:08x}",
            uid = 0,
            gid = 0,
            mtime = 0,
            size = data.len(),
            major = 0,
            minor = 0,
            rmajor = 0,
            rminor = 0,
            check = 0,
        );
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.pad(110 + name_size)?;
        self.out.write_all(data)?;
        self.pad(data.len())
    }

    fn pad(&mut self, written: usize) -> io::Result<()> {
        let padding = (4 - written % 4) % 4;
        self.out.write_all(&[0; 3][..padding])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_newc_headers_padded_to_four_bytes() {
        let mut archive = Archive::new(Vec::new());
        archive.file("a/b", 0o644, b"hello").unwrap();
        let bytes = archive.finish().unwrap();
        let text = String::from_utf8_lossy(&bytes);
        // The parent directory comes first, then the file, then the trailer.
        assert!(text.starts_with("070701"));
        let a = text.find("a\0").unwrap();
        let b = text.find("a/b\0").unwrap();
        let trailer = text.find("TRAILER!!!\0").unwrap();
        assert!(a < b && b < trailer);
        // Header (110) + "a/b\0" (4) is 114, padded to 116; then the data.
        let file_header = text[..b].rfind("070701").unwrap();
        assert_eq!(&bytes[file_header + 116..file_header + 121], b"hello");
        assert_eq!(bytes.len() % 4, 0);
        // The file's mode and size fields.
        assert_eq!(&text[file_header + 14..file_header + 22], "000081a4");
        assert_eq!(&text[file_header + 54..file_header + 62], "00000005");
    }
}
