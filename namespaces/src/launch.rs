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

use std::ffi::CString;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use crate::child;
use crate::sys::{self, CStringArray};

/// Which namespaces the child is created in (user namespaces are chosen by
/// [`UserNamespace`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Namespaces {
    /// A new mount namespace.
    pub mount: bool,
    /// A new PID namespace: the child is its PID 1.
    pub pid: bool,
    /// A new network namespace.
    pub net: bool,
    /// A new UTS namespace (host and domain name).
    pub uts: bool,
    /// A new IPC namespace.
    pub ipc: bool,
}

impl Namespaces {
    /// Every namespace a sandboxed build gets.
    pub const SANDBOX: Namespaces = Namespaces {
        mount: true,
        pid: true,
        net: true,
        uts: true,
        ipc: true,
    };

    pub(crate) fn clone_flags(&self) -> u64 {
        let mut flags = 0u64;
        for (on, flag) in [
            (self.mount, libc::CLONE_NEWNS),
            (self.pid, libc::CLONE_NEWPID),
            (self.net, libc::CLONE_NEWNET),
            (self.uts, libc::CLONE_NEWUTS),
            (self.ipc, libc::CLONE_NEWIPC),
        ] {
            if on {
                flags |= flag as u64;
            }
        }
        flags
    }
}

/// The contents of the id maps of a new user namespace and the ids the
/// child switches to inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMaps {
    /// Text written to `/proc/<pid>/uid_map`, e.g. `1000 30001 1\n`.
    pub uid_map: String,
    /// Text written to `/proc/<pid>/gid_map`, e.g. `100 30000 1\n`.
    pub gid_map: String,
    /// Write `deny` to `/proc/<pid>/setgroups` before the gid map.
    pub deny_setgroups: bool,
    /// The uid the child switches to inside the namespace.
    pub uid: u32,
    /// The gid the child switches to inside the namespace.
    pub gid: u32,
}

/// When the child's user namespace is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserNamespace {
    /// Together with the other namespaces; the parent writes the maps before
    /// the child does anything. The only way open to an unprivileged caller.
    AtClone(IdMaps),
    /// After the setup step, which then runs as real root in the child's
    /// other namespaces. For a root caller.
    AfterSetup(IdMaps),
    /// No user namespace (an unsandboxed build, B9): switch to these host
    /// ids directly (a root caller), or keep the caller's own (`None`).
    None(Option<HostIds>),
}

/// Host ids to switch to without a user namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostIds {
    /// The uid.
    pub uid: u32,
    /// The gid.
    pub gid: u32,
    /// The supplementary groups (B23: the build user's, for unsandboxed
    /// builds).
    pub groups: Vec<u32>,
}

/// Host and NIS domain name to set in the child's new UTS namespace.
#[derive(Debug, Clone)]
pub struct Uts {
    /// The host name (`localhost` in a sandbox).
    pub hostname: CString,
    /// The NIS domain name (`(none)` in a sandbox).
    pub domainname: CString,
}

/// The program to run and the process state it starts with.
#[derive(Debug)]
pub struct Exec {
    /// Path of the program, as the child sees it after setup.
    pub program: CString,
    /// argv, argv[0] included.
    pub argv: CStringArray,
    /// The whole environment, `NAME=value` each.
    pub envp: CStringArray,
    /// Working directory, as the child sees it after setup.
    pub cwd: CString,
    /// umask at `execve`.
    pub umask: u32,
    /// Personality flags to add (`ADDR_NO_RANDOMIZE`, `PER_LINUX32`); `None`
    /// leaves the personality alone.
    pub personality: Option<u64>,
    /// Set `RLIMIT_CORE` to soft 0 (hard limit raised to unlimited where
    /// allowed).
    pub no_core_dumps: bool,
    /// Zero every capability, bounding and ambient sets included.
    pub drop_capabilities: bool,
    /// Highest capability number the kernel knows (`cap_last_cap`).
    pub last_capability: u32,
    /// Set `PR_SET_NO_NEW_PRIVS`.
    pub no_new_privs: bool,
    /// Make stdin the controlling terminal of the new session (interactive
    /// shells); otherwise the session has none.
    pub controlling_terminal: bool,
    /// A seccomp program to install last, just before `execve` (D3).
    pub seccomp: Option<&'static [libc::sock_filter]>,
}

/// Descriptors that become the child's 0, 1 and 2.
#[derive(Debug, Clone, Copy)]
pub struct Stdio<'a> {
    /// Becomes stdin.
    pub stdin: BorrowedFd<'a>,
    /// Becomes stdout.
    pub stdout: BorrowedFd<'a>,
    /// Becomes stderr.
    pub stderr: BorrowedFd<'a>,
}

/// A step of the caller's setup that failed in the child: the caller's own
/// step number and the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetupFailure {
    /// The caller's number for the step (an index into its plan).
    pub step: u32,
    /// What the kernel said.
    pub errno: Errno,
}

/// The caller's part of the child's setup (mounts, loopback): runs in the
/// child after the namespaces exist and before the identity switch. It must
/// not allocate, take locks or panic (see the crate documentation).
pub type Setup<'a> = &'a dyn Fn() -> Result<(), SetupFailure>;

/// Work the parent does for a child before the child may start: the child
/// waits until it is done (joining the build's cgroup, say).
pub type ParentHook<'a> = &'a dyn Fn(Pid) -> std::io::Result<()>;

/// Everything [`launch`] needs, computed in the parent.
pub struct LaunchRequest<'a> {
    /// The namespaces besides the user namespace.
    pub namespaces: Namespaces,
    /// The user namespace and its maps.
    pub user_namespace: UserNamespace,
    /// Drop supplementary groups first (possible only for a root caller).
    pub clear_groups: bool,
    /// Host and domain name, when the child has its own UTS namespace.
    pub uts: Option<Uts>,
    /// Run in the parent right after the clone; the child waits for it.
    pub before_start: Option<ParentHook<'a>>,
    /// Unshare a cgroup namespace first, so that the builder sees its
    /// cgroup as the root (B16).
    pub cgroup_namespace: bool,
    /// The caller's setup.
    pub setup: Setup<'a>,
    /// With [`UserNamespace::AfterSetup`] and `namespaces.net` false: make
    /// the network namespace only once the user namespace exists, so that
    /// it belongs to it (as Nix's sandbox's does) and no host kernel
    /// uevent reaches it, then run this (bringing up loopback) before the
    /// identity switch. Ignored with any other user namespace.
    pub late_network: Option<Setup<'a>>,
    /// The program and its process state.
    pub exec: &'a Exec,
    /// The child's standard descriptors.
    pub stdio: Stdio<'a>,
}

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

/// The steps of the launcher's own part of the child's setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ChildStep {
    /// Setting the parent-death signal.
    DeathSignal = 1,
    /// Waiting for the parent's *go*.
    WaitForParent,
    /// setsid().
    NewSession,
    /// Dropping supplementary groups.
    ClearGroups,
    /// unshare(CLONE_NEWCGROUP).
    UnshareCgroup,
    /// Setting `RLIMIT_CORE`.
    CoreLimit,
    /// sethostname().
    HostName,
    /// setdomainname().
    DomainName,
    /// The caller's setup (see [`SetupFailure`]).
    Setup,
    /// unshare(CLONE_NEWUSER).
    UnshareUser,
    /// Telling the parent the user namespace exists.
    SignalReady,
    /// setresgid().
    SetGid,
    /// setresuid().
    SetUid,
    /// personality().
    Personality,
    /// chdir() to the working directory.
    ChangeDirectory,
    /// dup2() of stdin.
    Stdin,
    /// dup2() of stdout.
    Stdout,
    /// dup2() of stderr.
    Stderr,
    /// TIOCSCTTY.
    ControllingTerminal,
    /// Dropping the bounding set.
    BoundingSet,
    /// Clearing ambient capabilities.
    AmbientCapabilities,
    /// capset().
    Capabilities,
    /// PR_SET_NO_NEW_PRIVS.
    NoNewPrivs,
    /// The parent exited during setup.
    ParentGone,
    /// Loading the seccomp program.
    Seccomp,
    /// Closing inherited descriptors.
    CloseDescriptors,
    /// execve().
    Exec,
    /// unshare(CLONE_NEWNET) once the user namespace exists.
    UnshareNetwork,
    /// Joining a new session keyring.
    SessionKeyring,
}

impl ChildStep {
    const ALL: [ChildStep; 29] = [
        ChildStep::DeathSignal,
        ChildStep::WaitForParent,
        ChildStep::NewSession,
        ChildStep::ClearGroups,
        ChildStep::UnshareCgroup,
        ChildStep::CoreLimit,
        ChildStep::HostName,
        ChildStep::DomainName,
        ChildStep::Setup,
        ChildStep::UnshareUser,
        ChildStep::SignalReady,
        ChildStep::SetGid,
        ChildStep::SetUid,
        ChildStep::Personality,
        ChildStep::ChangeDirectory,
        ChildStep::Stdin,
        ChildStep::Stdout,
        ChildStep::Stderr,
        ChildStep::ControllingTerminal,
        ChildStep::BoundingSet,
        ChildStep::AmbientCapabilities,
        ChildStep::Capabilities,
        ChildStep::NoNewPrivs,
        ChildStep::ParentGone,
        ChildStep::Seccomp,
        ChildStep::CloseDescriptors,
        ChildStep::Exec,
        ChildStep::UnshareNetwork,
        ChildStep::SessionKeyring,
    ];

    fn from_u32(value: u32) -> Option<ChildStep> {
        ChildStep::ALL
            .into_iter()
            .find(|step| *step as u32 == value)
    }
}

impl fmt::Display for ChildStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Nix's and Lix's texts where they have one (SPEC section 15).
        f.write_str(match self {
            ChildStep::DeathSignal => "setting death signal",
            ChildStep::WaitForParent => "user namespace initialisation failed",
            ChildStep::NewSession => "creating a new session",
            ChildStep::ClearGroups => "setgroups failed",
            ChildStep::UnshareCgroup => "unsharing cgroup namespace",
            ChildStep::CoreLimit => "setting the core dump limit",
            ChildStep::HostName => "cannot set host name",
            ChildStep::DomainName => "cannot set domain name",
            ChildStep::Setup => "while setting up the build environment",
            ChildStep::UnshareUser => "unsharing user namespace",
            ChildStep::SignalReady => "user namespace initialisation failed",
            ChildStep::SetGid => "setgid failed",
            ChildStep::SetUid => "setuid failed",
            ChildStep::Personality => "cannot set personality",
            ChildStep::ChangeDirectory => "changing into the working directory",
            ChildStep::Stdin => "cannot dup null device into stdin",
            ChildStep::Stdout => "cannot dup output into stdout",
            ChildStep::Stderr => "cannot dup stderr into stdout",
            ChildStep::ControllingTerminal => "cannot set the controlling terminal",
            ChildStep::BoundingSet => "couldn't set capabilities",
            ChildStep::AmbientCapabilities => "clearing ambient caps",
            ChildStep::Capabilities => "couldn't set capabilities",
            ChildStep::NoNewPrivs => "PR_SET_NO_NEW_PRIVS failed",
            ChildStep::ParentGone => "the supervising process exited during setup",
            ChildStep::Seccomp => "unable to load seccomp BPF program",
            ChildStep::CloseDescriptors => "closing inherited file descriptors",
            ChildStep::Exec => "executing the program",
            ChildStep::UnshareNetwork => "cannot create network namespace",
            ChildStep::SessionKeyring => "cannot join a new session keyring",
        })
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

/// A failure message from child to parent: `[step, detail, errno]`.
pub(crate) const MESSAGE_LEN: usize = 12;
/// The child's message that its user namespace exists (after-setup mode).
pub(crate) const READY: u32 = 0;

pub(crate) fn encode(step: u32, detail: u32, errno: i32) -> [u8; MESSAGE_LEN] {
    let mut message = [0u8; MESSAGE_LEN];
    message[0..4].copy_from_slice(&step.to_ne_bytes());
    message[4..8].copy_from_slice(&detail.to_ne_bytes());
    message[8..12].copy_from_slice(&errno.to_ne_bytes());
    message
}

fn decode(message: &[u8; MESSAGE_LEN]) -> (u32, u32, i32) {
    let word = |i: usize| [message[i], message[i + 1], message[i + 2], message[i + 3]];
    (
        u32::from_ne_bytes(word(0)),
        u32::from_ne_bytes(word(4)),
        i32::from_ne_bytes(word(8)),
    )
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
    let (pid, pidfd) = sys::spawn(flags, &|| program.run()).map_err(LaunchError::Clone)?;
    drop(child_end);
    tracing::debug!(pid = pid.as_raw(), "cloned the sandbox's first process");

    match run_parent_side(request, pid, &parent_end) {
        Ok(()) => Ok(Child { pid, pidfd }),
        Err(error) => {
            // The child has either reported and exited, or gets killed now.
            let _ = sys::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL);
            let _ = waitpid(pid, None);
            Err(error)
        }
    }
}

/// Whether the child waits for a first *go* before anything else.
pub(crate) fn waits_at_start(request: &LaunchRequest<'_>) -> bool {
    matches!(request.user_namespace, UserNamespace::AtClone(_)) || request.before_start.is_some()
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
    if waits_at_start(request) {
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
