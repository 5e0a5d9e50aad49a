//! Facts about the host that a sandbox plan depends on: what each source
//! path is, which `/dev` nodes exist, the static shell for `/bin/sh`, the
//! kernel's capability count. Read once per sandbox, before planning.

use std::fs::File;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};

use hermetic_mountplan::{Source, SourceKind};

/// What went wrong looking at a host path (Nix's text).
#[derive(Debug, thiserror::Error)]
#[error("getting attributes of path '{path}'")]
pub struct StatError {
    /// The path.
    pub path: PathBuf,
    /// What the kernel said.
    #[source]
    pub source: std::io::Error,
}

/// `lstat`s `path` and says what it is; symlinks are read, not followed.
pub fn source(path: &Path) -> Result<Source, StatError> {
    let error = |source| StatError {
        path: path.to_path_buf(),
        source,
    };
    let metadata = std::fs::symlink_metadata(path).map_err(error)?;
    let kind = if metadata.file_type().is_symlink() {
        SourceKind::Symlink {
            target: std::fs::read_link(path).map_err(error)?,
        }
    } else if metadata.is_dir() {
        SourceKind::Directory
    } else {
        SourceKind::File
    };
    Ok(Source {
        path: path.to_path_buf(),
        kind,
    })
}

/// A store directory opened once, to look at many store paths in it with
/// one short lookup each.
pub struct StoreDir {
    path: PathBuf,
    fd: std::os::fd::OwnedFd,
}

impl StoreDir {
    /// Opens the store directory at `path`.
    pub fn open(path: &Path) -> Result<StoreDir, StatError> {
        let fd = nix::fcntl::open(
            path,
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|errno| StatError {
            path: path.to_path_buf(),
            source: errno.into(),
        })?;
        Ok(StoreDir {
            path: path.to_path_buf(),
            fd,
        })
    }

    /// What the store path `name` is; symlinks are read, not followed.
    pub fn source(&self, name: &str) -> Result<Source, StatError> {
        let path = self.path.join(name);
        let error = |errno: nix::errno::Errno| StatError {
            path: path.clone(),
            source: errno.into(),
        };
        let flags = nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW;
        let stat = nix::sys::stat::fstatat(&self.fd, name, flags).map_err(error)?;
        let kind = match stat.st_mode & libc::S_IFMT {
            libc::S_IFLNK => SourceKind::Symlink {
                target: PathBuf::from(nix::fcntl::readlinkat(&self.fd, name).map_err(error)?),
            },
            libc::S_IFDIR => SourceKind::Directory,
            _ => SourceKind::File,
        };
        Ok(Source { path, kind })
    }
}

/// The device nodes every sandbox gets (B42), without `kvm`.
pub const DEV_NODES: [&str; 6] = ["full", "null", "random", "tty", "urandom", "zero"];

/// The host's `/dev/<name>` with symlinks resolved (Nix resolves its own
/// `/dev` nodes, B54), if it is a character device.
pub fn dev_node(name: &str) -> Option<PathBuf> {
    let path = std::fs::canonicalize(Path::new("/dev").join(name)).ok()?;
    let metadata = std::fs::metadata(&path).ok()?;
    metadata.file_type().is_char_device().then_some(path)
}

/// Whether the host has `/dev/shm` (B43: only then does the sandbox get one).
pub fn has_dev_shm() -> bool {
    Path::new("/dev/shm").is_dir()
}

/// Whether the host has `/dev/pts/ptmx` (B44).
pub fn has_devpts() -> bool {
    Path::new("/dev/pts/ptmx").exists()
}

/// The highest capability number the kernel knows.
pub fn last_capability() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(40)
}

/// The running kernel's version as (major, minor).
pub fn kernel_version() -> Option<(u32, u32)> {
    let release = nix::sys::utsname::uname().ok()?;
    let release = release.release().to_str()?.to_string();
    let mut parts = release.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Places where a distribution puts a statically linked busybox.
pub const STATIC_SHELL_CANDIDATES: [&str; 4] = [
    "/bin/busybox",
    "/usr/bin/busybox",
    "/usr/lib/busybox-static/busybox",
    "/sbin/busybox",
];

/// The first statically linked shell among [`STATIC_SHELL_CANDIDATES`], for
/// the default `sandbox-paths` entry `/bin/sh=<shell>` (B47).
pub fn static_shell() -> Option<PathBuf> {
    STATIC_SHELL_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|path| is_static_executable(path))
}

/// How to get a static shell, for messages.
pub const STATIC_SHELL_HINT: &str = "install a statically linked busybox (Debian: apt-get install busybox-static) \
     or name one with --sandbox-path /bin/sh=/path/to/static/sh";

/// Whether `path` is an ELF executable without an interpreter (statically
/// linked). Reads the ELF header and the program header table only.
pub fn is_static_executable(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let mut header = [0u8; 64];
    if file.read_exact_at(&mut header, 0).is_err() || &header[0..4] != b"\x7fELF" {
        return false;
    }
    let elf64 = header[4] == 2;
    let little = header[5] == 1;
    let number = |bytes: &[u8]| {
        let mut value: u64 = 0;
        for i in 0..bytes.len() {
            let byte = if little {
                bytes[bytes.len() - 1 - i]
            } else {
                bytes[i]
            };
            value = value << 8 | byte as u64;
        }
        value
    };
    let (table, entry_size, count) = if elf64 {
        (
            number(&header[32..40]),
            number(&header[54..56]),
            number(&header[56..58]),
        )
    } else {
        (
            number(&header[28..32]),
            number(&header[42..44]),
            number(&header[44..46]),
        )
    };
    if count == 0 || entry_size < 4 || count * entry_size > 1 << 16 {
        return false;
    }
    let mut entries = vec![0u8; (count * entry_size) as usize];
    if file.read_exact_at(&mut entries, table).is_err() {
        return false;
    }
    const PT_INTERP: u64 = 3;
    entries
        .chunks_exact(entry_size as usize)
        .all(|entry| number(&entry[0..4]) != PT_INTERP)
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_classified_without_following_symlinks() {
        let dir = std::env::temp_dir().join(format!("hermetic-host-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f");
        std::fs::write(&file, "x").unwrap();
        let link = dir.join("l");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("f", &link).unwrap();
        assert_eq!(source(&dir).unwrap().kind, SourceKind::Directory);
        assert_eq!(source(&file).unwrap().kind, SourceKind::File);
        assert_eq!(
            source(&link).unwrap().kind,
            SourceKind::Symlink {
                target: PathBuf::from("f")
            }
        );
        let missing = source(&dir.join("missing")).unwrap_err();
        assert!(
            missing
                .to_string()
                .starts_with("getting attributes of path '")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn static_busybox_is_static_when_installed() {
        let busybox = Path::new("/bin/busybox");
        if !busybox.exists() {
            eprintln!("skipped: no /bin/busybox (apt-get install busybox-static)");
            return;
        }
        assert!(is_static_executable(busybox));
    }

    #[test]
    fn dynamic_programs_are_not_static() {
        // The test binary itself is dynamically linked.
        assert!(!is_static_executable(&std::env::current_exe().unwrap()));
        assert!(!is_static_executable(Path::new("/etc/passwd")));
    }
}
