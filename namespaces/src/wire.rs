//! The wire protocol between the launcher's parent and child: one
//! fixed-size message `[step, detail, errno]` over a `SOCK_SEQPACKET` pair,
//! and the steps it names. The child encodes without allocating; the parent
//! decodes.

use std::fmt;

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

    pub(crate) fn from_u32(value: u32) -> Option<ChildStep> {
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

pub(crate) fn decode(message: &[u8; MESSAGE_LEN]) -> (u32, u32, i32) {
    let word = |i: usize| [message[i], message[i + 1], message[i + 2], message[i + 3]];
    (
        u32::from_ne_bytes(word(0)),
        u32::from_ne_bytes(word(4)),
        i32::from_ne_bytes(word(8)),
    )
}
