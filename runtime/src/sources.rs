//! What each source path of a sandbox is (a directory, a file, a symlink
//! and its target), looked at once per sandbox, before planning.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_classified_without_following_symlinks() {
        let dir =
            std::env::temp_dir().join(format!("hermetic-sources-test-{}", std::process::id()));
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
}
