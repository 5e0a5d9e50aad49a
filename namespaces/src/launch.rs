//! The launcher: one process in new namespaces, set up, then `execve`.
//!
//! The parent prepares a [`LaunchRequest`] (every string already a C
//! string, every descriptor already open), then [`launch`] clones the child
//! and plays its half of a short protocol over a `SOCK_SEQPACKET` pair:
//!
//! * **user namespace at clone** (unprivileged caller): the parent writes the
//!   id maps at once and sends *go*; the child waits for *go* before it does
//!   anything, so it never acts with unmapped ids;
//! * **user namespace after setup** (root caller): the child sets up as real
//!   root in its other namespaces (so what it creates belongs to host root,
//!   shown as `nobody` inside, as in Nix), unshares a user namespace, says
//!   *ready*; the parent writes the maps and sends *go*.
//!
//! A failure in the child is one fixed-size message naming the step and the
//! errno; a successful `execve` closes the child's end (close-on-exec), which
//! the parent reads as end of file.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use crate::child;
use crate::request::{IdMaps, LaunchRequest, UserNamespace};
use crate::wire::{ChildStep, MESSAGE_LEN, READY, decode};
use hermetic_sys as sys;
/// A launched child: running the program.
#[derive(Debug)]
pub struct Child {
    /// Its pid in the caller's PID namespace.
    pub pid: Pid,
    /// A pidfd for it: readable when it has exited.
    pub pidfd: OwnedFd,
}

impl Child {
    /// Sends it SIGKILL through its pidfd (never another process that
    /// reused its pid).
    pub fn kill(&self) -> Result<(), Errno> {
        sys::pidfd_send_signal(self.pidfd.as_fd(), libc::SIGKILL)
    }
}
/// Why [`launch`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The socket pair between parent and child could not be made.
    #[error("creating the launch socket pair")]
    SocketPair(#[source] Errno),
    /// clone()/clone3() refused (user namespaces disabled, limits, …).
    #[error("clone() failed")]
    Clone(#[source] Errno),
    /// Writing an id map of the child's user namespace failed.
    #[error("writing '{path}'")]
    WriteMap {
        /// The `/proc/<pid>/…` file.
        path: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// Talking to the child failed.
    #[error("user namespace initialisation failed")]
    Protocol(#[source] Errno),
    /// The parent's work before the child's start failed.
    #[error("preparing the child before it starts")]
    BeforeStart(#[source] std::io::Error),
    /// The caller's setup failed at its step `step`.
    #[error("while setting up the build environment (step {step})")]
    Setup {
        /// The caller's step number.
        step: u32,
        /// What the kernel said.
        #[source]
        errno: Errno,
    },
    /// One of the launcher's own steps failed in the child.
    #[error("{step}")]
    Child {
        /// Which step.
        step: ChildStep,
        /// What the kernel said.
        #[source]
        errno: Errno,
    },
}
/// Starts the child described by `request` and returns once it has called
/// `execve` successfully, or with the step that failed.
///
/// The calling thread becomes the child's parent: its exit sends the child
/// SIGKILL (parent-death signal), so supervise the child from this thread.
pub fn launch(request: &LaunchRequest<'_>) -> Result<Child, LaunchError> {
    let (parent_end, child_end) = socket::socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(LaunchError::SocketPair)?;

    let mut flags = request.namespaces.clone_flags();
    if let UserNamespace::AtClone(_) = request.user_namespace {
        flags |= libc::CLONE_NEWUSER as u64;
    }
    let program = child::ChildProgram {
        request,
        channel: child_end.as_fd(),
        parent_end: parent_end.as_raw_fd(),
    };
    sys::phase_clock::mark(sys::phase_clock::Point::Cloning);
    let (pid, pidfd) = sys::spawn(flags, &|| program.run()).map_err(LaunchError::Clone)?;
    drop(child_end);
    tracing::debug!(pid = pid.as_raw(), "cloned the sandbox's first process");

    match run_parent_side(request, pid, &parent_end) {
        Ok(()) => {
            sys::phase_clock::mark(sys::phase_clock::Point::Launched);
            Ok(Child { pid, pidfd })
        }
        Err(error) => {
            // The child has either reported and exited, or gets killed now.
            let _ = sys::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL);
            let _ = waitpid(pid, None);
            Err(error)
        }
    }
}

fn run_parent_side(
    request: &LaunchRequest<'_>,
    pid: Pid,
    channel: &OwnedFd,
) -> Result<(), LaunchError> {
    // The maps first: a hook may join the child's user namespace (pasta
    // does), which needs its ids mapped.
    if let UserNamespace::AtClone(maps) = &request.user_namespace {
        write_id_maps(pid, maps)?;
    }
    if let Some(hook) = request.before_start {
        hook(pid).map_err(LaunchError::BeforeStart)?;
    }
    if request.waits_at_start() {
        send_go(channel)?;
    }
    match &request.user_namespace {
        UserNamespace::AtClone(_) => {}
        UserNamespace::AfterSetup(maps) => {
            match receive(channel)? {
                Some((READY, _, _)) => {}
                Some(failure) => return Err(failure_error(failure)),
                None => return Ok(()),
            }
            write_id_maps(pid, maps)?;
            send_go(channel)?;
        }
        UserNamespace::None(_) => {}
    }
    match receive(channel)? {
        None => Ok(()),
        Some(failure) => Err(failure_error(failure)),
    }
}

fn failure_error((step, detail, errno): (u32, u32, i32)) -> LaunchError {
    let errno = Errno::from_raw(errno);
    match ChildStep::from_u32(step) {
        Some(ChildStep::Setup) => LaunchError::Setup {
            step: detail,
            errno,
        },
        Some(step) => LaunchError::Child { step, errno },
        None => LaunchError::Protocol(Errno::EPROTO),
    }
}

fn send_go(channel: &OwnedFd) -> Result<(), LaunchError> {
    socket::send(channel.as_raw_fd(), &[1u8], MsgFlags::MSG_NOSIGNAL)
        .map(drop)
        .map_err(LaunchError::Protocol)
}

/// One message from the child, or `None` at end of file (the child called
/// `execve`, or died without a word: its exit status will tell).
fn receive(channel: &OwnedFd) -> Result<Option<(u32, u32, i32)>, LaunchError> {
    let mut message = [0u8; MESSAGE_LEN];
    loop {
        match socket::recv(channel.as_raw_fd(), &mut message, MsgFlags::empty()) {
            Ok(0) => return Ok(None),
            Ok(MESSAGE_LEN) => return Ok(Some(decode(&message))),
            Ok(_) => return Err(LaunchError::Protocol(Errno::EPROTO)),
            Err(Errno::EINTR) => continue,
            Err(errno) => return Err(LaunchError::Protocol(errno)),
        }
    }
}

fn write_id_maps(pid: Pid, maps: &IdMaps) -> Result<(), LaunchError> {
    let write = |name: &str, contents: &str| {
        let path = format!("/proc/{pid}/{name}");
        std::fs::write(&path, contents).map_err(|source| LaunchError::WriteMap { path, source })
    };
    write("uid_map", &maps.uid_map)?;
    if maps.deny_setgroups {
        write("setgroups", "deny")?;
    }
    write("gid_map", &maps.gid_map)
}
