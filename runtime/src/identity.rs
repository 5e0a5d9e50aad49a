//! Who a builder runs as on the host (B18, B23, B25).

use serde::Serialize;

use crate::error::SandboxError;
use crate::spec::{BuildUser, SandboxSpec};

/// Who the builder runs as on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(
    tag = "kind",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case"
)]
pub enum Identity {
    /// hermetic runs as root: a sandbox is set up as root in its own
    /// namespaces, then enters a user namespace as the build user; an
    /// unsandboxed build switches to the build user directly.
    Root {
        /// The build user.
        build_user: BuildUser,
    },
    /// hermetic runs as an ordinary user, whose own ids the builder keeps (a
    /// sandbox's user namespace exists from the start and maps them).
    Unprivileged {
        /// The caller's uid.
        uid: u32,
        /// The caller's gid.
        gid: u32,
    },
}

impl Identity {
    /// The identity of the calling process, checked against the spec.
    pub fn of_caller(spec: &SandboxSpec) -> Result<Identity, SandboxError> {
        let euid = nix::unistd::geteuid().as_raw();
        if euid == 0 {
            let user = spec.build_user.ok_or(SandboxError::RootWithoutBuildUser)?;
            if user.uid == 0 || user.gid == 0 {
                return Err(SandboxError::RootBuildUser {
                    uid: user.uid,
                    gid: user.gid,
                });
            }
            return Ok(Identity::Root { build_user: user });
        }
        let (uid, gid) = (euid, nix::unistd::getegid().as_raw());
        match spec.build_user {
            Some(user) if (user.uid, user.gid) != (uid, gid) => {
                Err(SandboxError::ForeignBuildUser {
                    uid: user.uid,
                    gid: user.gid,
                })
            }
            _ => Ok(Identity::Unprivileged { uid, gid }),
        }
    }

    /// The host uid and gid of the builder.
    pub fn host_ids(&self) -> (u32, u32) {
        match *self {
            Identity::Root { build_user } => (build_user.uid, build_user.gid),
            Identity::Unprivileged { uid, gid } => (uid, gid),
        }
    }

    /// The build user, when there is one (root).
    pub fn build_user(&self) -> Option<BuildUser> {
        match *self {
            Identity::Root { build_user } => Some(build_user),
            Identity::Unprivileged { .. } => None,
        }
    }

    /// Whether hermetic runs as root.
    pub fn is_root(&self) -> bool {
        matches!(self, Identity::Root { .. })
    }
}

/// The supplementary groups of the build user with uid `uid` (from the
/// group database, its primary group `gid` left out), which an unsandboxed
/// build keeps (B23: for groups like `kvm`). None for a uid without a
/// passwd entry.
pub fn supplementary_groups(uid: u32, gid: u32) -> Vec<u32> {
    let Ok(Some(user)) = nix::unistd::User::from_uid(uid.into()) else {
        return Vec::new();
    };
    let Ok(name) = std::ffi::CString::new(user.name) else {
        return Vec::new();
    };
    nix::unistd::getgrouplist(&name, gid.into())
        .unwrap_or_default()
        .into_iter()
        .map(|g| g.as_raw())
        .filter(|&g| g != gid)
        .collect()
}
