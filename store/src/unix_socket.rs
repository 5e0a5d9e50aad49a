//! Unix sockets at paths of any length. A socket address holds at most
//! 107 bytes of path; a longer path (a store under a deep directory, as
//! Nix's tests make) is reached through its directory's descriptor, as
//! `/proc/self/fd/N/NAME`, which the kernel resolves like the path itself.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// The longest path a socket address takes (its array, less the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Calls `with` on a path naming `socket` that fits a socket address; the
/// directory's descriptor stays open meanwhile.
fn short_path<T>(socket: &Path, with: impl FnOnce(&Path) -> io::Result<T>) -> io::Result<T> {
    if socket.as_os_str().len() <= MAX_SOCKET_PATH {
        return with(socket);
    }
    let (Some(dir), Some(name)) = (socket.parent(), socket.file_name()) else {
        return with(socket);
    };
    let dir = File::open(dir)?;
    let short = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
    let result = with(&short);
    drop(dir);
    result
}

/// Binds a listening socket at `socket`.
pub fn bind(socket: &Path) -> io::Result<UnixListener> {
    short_path(socket, |path| UnixListener::bind(path))
}

/// Connects to the socket at `socket`.
pub fn connect(socket: &Path) -> io::Result<UnixStream> {
    short_path(socket, |path| UnixStream::connect(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_deeper_than_an_address_holds_is_bound_and_reached() {
        let mut dir = std::env::temp_dir().join(format!("hermetic-socket-{}", std::process::id()));
        let top = dir.clone();
        while dir.as_os_str().len() < 150 {
            dir = dir.join("deeper-directory");
        }
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("socket");
        let listener = bind(&socket).unwrap();
        assert!(socket.exists());
        let mut client = connect(&socket).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        io::Write::write_all(&mut client, b"1").unwrap();
        let mut got = [0u8; 1];
        io::Read::read_exact(&mut server, &mut got).unwrap();
        assert_eq!(&got, b"1");
        std::fs::remove_dir_all(&top).unwrap();
    }
}
