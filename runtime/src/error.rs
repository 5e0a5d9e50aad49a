//! Errors of preparing and running a sandbox.

use std::path::PathBuf;

use hermetic_mountplan::{CompileError, LayoutError};
use hermetic_namespaces::LaunchError;
use hermetic_uidmap::pool::RANGE_SIZE;
use nix::errno::Errno;

use crate::scratch::ScratchError;
use crate::sources::StatError;
use crate::spec::SpecError;

/// Why a sandbox could not be prepared or run.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The spec itself is wrong.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// Running as root without a build user.
    #[error(
        "hermetic runs as root and the sandbox has no build user: it never runs a builder as root on the host; \
         give one (\"build-user\" in the spec, sandbox-run --build-user UID:GID) or take one from the pool (job::Job::start)"
    )]
    RootWithoutBuildUser,
    /// A build user that is root.
    #[error(
        "the build user {uid}:{gid} is root (uid or gid 0); a builder never runs as root on the host"
    )]
    RootBuildUser {
        /// The uid given.
        uid: u32,
        /// The gid given.
        gid: u32,
    },
    /// An ordinary user asked for other ids.
    #[error(
        "only root can run a sandbox as another user (asked for {uid}:{gid}); an ordinary user's sandbox runs with its own ids"
    )]
    ForeignBuildUser {
        /// The uid asked for.
        uid: u32,
        /// The gid asked for.
        gid: u32,
    },
    /// No seccomp profile was compiled for this architecture.
    #[error(
        "hermetic has no seccomp profile for {arch}; set filter-syscalls to false to run without one"
    )]
    NoSeccompProfile {
        /// The architecture.
        arch: &'static str,
    },
    /// An unsandboxed build with `/homeless-shelter` present (Lix's text).
    #[error(
        "home directory '/homeless-shelter' exists; please remove it to assure purity of builds without sandboxing"
    )]
    HomelessShelter,
    /// B10's text.
    #[error("feature 'uid-range' is only supported in sandboxed builds")]
    UidRangeUnsandboxed,
    /// B19's text.
    #[error("feature 'uid-range' requires the setting 'auto-allocate-uids' to be enabled")]
    UidRangeNeedsAutoAllocation,
    /// A uid-range sandbox planned for a builder without a whole range of
    /// ids (the settings allowed it; the identity it got does not have it).
    #[error(
        "feature 'uid-range' needs a build user with a range of {RANGE_SIZE} ids, as 'auto-allocate-uids' leases them to root; {0}"
    )]
    UidRangeWithoutRange(String),
    /// B19's text (Lix).
    #[error("feature 'uid-range' requires the setting 'use-cgroups' to be enabled")]
    UidRangeNeedsCgroups,
    /// B29's text (Lix).
    #[error(
        "Running builds with UID ranges (setting `auto-allocate-uids` enabled and `{0}` UIDs) requires the setting 'use-cgroups' to be enabled."
    )]
    RangesNeedCgroups(u32),
    /// B29's text (Lix, with hermetic's name).
    #[error(
        "Running all builds with cgroups requires privilege separation for build users but hermetic is not configured to use build users."
    )]
    CgroupsNeedBuildUsers,
    /// A limit without cgroups.
    #[error("'{0}' limits a build through its cgroup: it needs use-cgroups = true")]
    LimitNeedsCgroups(&'static str),
    /// No build user could be had.
    #[error(transparent)]
    Pool(#[from] hermetic_uidmap::pool::PoolError),
    /// The uid sweep failed (B79).
    #[error(transparent)]
    Sweep(#[from] hermetic_namespaces::SweepError),
    /// The build's cgroup failed.
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),
    /// An input path that does not exist.
    #[error("input path '{path}' does not exist")]
    MissingInput {
        /// The input as given.
        path: PathBuf,
        /// Looking at its host path failed.
        #[source]
        source: StatError,
    },
    /// A required `sandbox-paths` source that does not exist (Nix's text
    /// is the source's).
    #[error("sandbox path '{entry}'")]
    SandboxPathSource {
        /// The entry, in Nix syntax.
        entry: String,
        /// What looking at the source said.
        #[source]
        source: StatError,
    },
    /// The layout is inconsistent.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// The plan cannot be turned into system calls.
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// The scratch directory could not be made or removed.
    #[error(transparent)]
    Scratch(#[from] ScratchError),
    /// The host cannot make user namespaces (Lix's text, then the fix).
    #[error("user namespaces do not work on this system: {problem}; to fix: {fix}")]
    UserNamespaces {
        /// What is wrong.
        problem: String,
        /// How to fix it.
        fix: String,
        /// What clone said.
        #[source]
        errno: Errno,
    },
    /// A step of the sandbox's set-up failed (Nix's trace, then the step).
    #[error("while setting up the build environment: {what}")]
    Setup {
        /// The step, described.
        what: String,
        /// What the kernel said.
        #[source]
        errno: Errno,
    },
    /// The builder could not be executed.
    #[error("executing '{builder}'")]
    Exec {
        /// The builder.
        builder: PathBuf,
        /// What execve said.
        #[source]
        errno: Errno,
    },
    /// Launching failed in another way.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// A host-side operation of the supervisor failed.
    #[error("{operation}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

impl SandboxError {
    /// A supervisor I/O error from an errno.
    pub(crate) fn io(operation: &'static str) -> impl FnOnce(Errno) -> SandboxError {
        move |errno| SandboxError::Io {
            operation,
            source: std::io::Error::from(errno),
        }
    }
}
