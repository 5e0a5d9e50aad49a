//! Pseudo-terminals: the builder's output channel (B63: stdout and stderr
//! are one pty slave in raw mode), and the caller's terminal wired through
//! for `sandbox-run --shell`.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use hermetic_sys as sys;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::stat::Mode;
use nix::sys::termios::{self, SetArg, Termios};

use crate::error::SandboxError;
use crate::spec::BuildUser;

/// A pseudo-terminal pair.
pub(crate) struct Pty {
    /// The supervisor's end, non-blocking.
    pub(crate) master: OwnedFd,
    /// The builder's end.
    pub(crate) slave: OwnedFd,
}

/// Moves `fd` to a number above 2 (close-on-exec), so that it can never be
/// mistaken for one of the child's standard descriptors.
pub(crate) fn above_stdio(fd: OwnedFd) -> Result<OwnedFd, SandboxError> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    sys::dup_above_stdio(fd.as_fd()).map_err(SandboxError::io("duplicating a descriptor"))
}

/// Opens a pty pair: the slave in raw mode for a build, or cooked with the
/// caller's window size for a shell. With a build user the slave belongs to
/// it, mode 0600, so that the builder can reopen `/dev/stdout` (as Nix).
pub(crate) fn open_pty(
    raw: bool,
    size: Option<libc::winsize>,
    owner: Option<BuildUser>,
) -> Result<Pty, SandboxError> {
    let size = size.map(|s| nix::pty::Winsize {
        ws_row: s.ws_row,
        ws_col: s.ws_col,
        ws_xpixel: s.ws_xpixel,
        ws_ypixel: s.ws_ypixel,
    });
    let pair = nix::pty::openpty(size.as_ref(), None)
        .map_err(SandboxError::io("opening pseudoterminal master"))?;
    for fd in [&pair.master, &pair.slave] {
        fcntl(fd.as_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
            .map_err(SandboxError::io("opening pseudoterminal slave"))?;
    }
    let flags = fcntl(pair.master.as_fd(), FcntlArg::F_GETFL)
        .map_err(SandboxError::io("opening pseudoterminal master"))?;
    fcntl(
        pair.master.as_fd(),
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )
    .map_err(SandboxError::io("opening pseudoterminal master"))?;
    if raw {
        let mut mode = termios::tcgetattr(&pair.slave)
            .map_err(SandboxError::io("putting pseudoterminal into raw mode"))?;
        termios::cfmakeraw(&mut mode);
        termios::tcsetattr(&pair.slave, SetArg::TCSANOW, &mode)
            .map_err(SandboxError::io("putting pseudoterminal into raw mode"))?;
    }
    if let Some(user) = owner {
        nix::unistd::fchown(&pair.slave, Some(user.uid.into()), Some(0.into())).map_err(
            SandboxError::io("cannot change ownership of the pseudoterminal slave"),
        )?;
        nix::sys::stat::fchmod(&pair.slave, Mode::from_bits_truncate(0o600)).map_err(
            SandboxError::io("cannot change the mode of the pseudoterminal slave"),
        )?;
    }
    Ok(Pty {
        master: above_stdio(pair.master)?,
        slave: above_stdio(pair.slave)?,
    })
}

/// The caller's terminal in raw mode for the length of a shell session,
/// restored on drop, plus a signalfd that reports window size changes.
pub(crate) struct HostTerminal {
    saved: Termios,
    pub(crate) winch: SignalFd,
    old_mask: SigSet,
}

impl HostTerminal {
    /// Puts stdin (which must be a terminal) in raw mode and starts
    /// listening for SIGWINCH (blocked in this thread while the shell runs).
    pub(crate) fn enter() -> Result<HostTerminal, SandboxError> {
        let stdin = std::io::stdin();
        if !nix::unistd::isatty(stdin.as_fd()).unwrap_or(false) {
            return Err(SandboxError::Io {
                operation: "--shell needs a terminal on stdin",
                source: std::io::Error::from(std::io::ErrorKind::Unsupported),
            });
        }
        let saved = termios::tcgetattr(stdin.as_fd())
            .map_err(SandboxError::io("reading the terminal's mode"))?;
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGWINCH);
        let mut old_mask = SigSet::empty();
        nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_BLOCK,
            Some(&mask),
            Some(&mut old_mask),
        )
        .map_err(SandboxError::io("blocking SIGWINCH"))?;
        let winch = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(SandboxError::io("listening for SIGWINCH"))?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)
            .map_err(SandboxError::io("putting the terminal into raw mode"))?;
        Ok(HostTerminal {
            saved,
            winch,
            old_mask,
        })
    }

    /// The terminal's window size now.
    pub(crate) fn window_size() -> Option<libc::winsize> {
        sys::window_size(std::io::stdin().as_fd()).ok()
    }

    /// Copies the caller's window size to the shell's terminal.
    pub(crate) fn forward_window_size(&self, master: BorrowedFd<'_>) {
        while let Ok(Some(_)) = self.winch.read_signal() {}
        if let Some(size) = HostTerminal::window_size() {
            let _ = sys::set_window_size(master, &size);
        }
    }
}

impl Drop for HostTerminal {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
        let _ = nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&self.old_mask),
            None,
        );
    }
}
