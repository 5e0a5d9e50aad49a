//! What the launcher is asked to do: the namespaces, id maps, identity,
//! program and descriptors of one child, all computed in the parent before
//! the clone (see the crate documentation).

use std::ffi::CString;
use std::os::fd::BorrowedFd;

use nix::errno::Errno;
use nix::unistd::Pid;

use hermetic_sys::CStringArray;

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

impl LaunchRequest<'_> {
    /// Whether the child waits for a first *go* before anything else.
    pub(crate) fn waits_at_start(&self) -> bool {
        matches!(self.user_namespace, UserNamespace::AtClone(_)) || self.before_start.is_some()
    }
}
