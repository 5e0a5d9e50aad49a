//! The mount plan: the sandbox's filesystem as an ordered list of steps.
//!
//! Every path a step names inside the sandbox is absolute from the sandbox
//! root (`/etc/passwd`); host paths are absolute host paths. The plan is
//! plain data: it is printed by `sandbox-run --print-plan`, tested without
//! root, and turned into system calls by [`crate::compile`] and
//! [`crate::apply`].

use std::path::PathBuf;

use serde::Serialize;

/// A file mode as people write it (`"0755"`), for the printed plan.
fn octal<S: serde::Serializer>(mode: &u32, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format!("{mode:04o}"))
}

/// One step of a [`MountPlan`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "op",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case"
)]
pub enum Step {
    /// Make every mount of the new mount namespace private, so nothing the
    /// plan mounts propagates back to the host.
    MakePrivate,
    /// Mount the tmpfs that becomes the sandbox root on the host directory
    /// `mount_point` (visible only in the new mount namespace).
    RootTmpfs {
        /// The host directory it is mounted on.
        mount_point: PathBuf,
        /// Mount options (`mode=…,size=…`, owner options).
        options: String,
    },
    /// Mount a tmpfs inside the sandbox.
    Tmpfs {
        /// Where, inside the sandbox.
        target: PathBuf,
        /// Mount options.
        options: String,
        /// Later steps create entries in it (it is a creation layer).
        layer: bool,
    },
    /// Create a directory.
    Mkdir {
        /// Where, inside the sandbox.
        path: PathBuf,
        /// Its mode.
        #[serde(serialize_with = "octal")]
        mode: u32,
    },
    /// Create a regular file, empty (a mount point) or with contents.
    File {
        /// Where, inside the sandbox.
        path: PathBuf,
        /// Its mode.
        #[serde(serialize_with = "octal")]
        mode: u32,
        /// What it holds.
        #[serde(skip_serializing_if = "Option::is_none")]
        contents: Option<String>,
    },
    /// Create a symbolic link.
    Symlink {
        /// Where, inside the sandbox.
        path: PathBuf,
        /// What it points to (copied, not followed).
        target: PathBuf,
    },
    /// Change the mode of an entry the plan created.
    Chmod {
        /// Which, inside the sandbox.
        path: PathBuf,
        /// The new mode.
        #[serde(serialize_with = "octal")]
        mode: u32,
    },
    /// Bind-mount a host path into the sandbox.
    Bind {
        /// The host path.
        source: PathBuf,
        /// Where, inside the sandbox.
        target: PathBuf,
        /// Bind the mounts below `source` too (directories).
        recursive: bool,
        /// Later steps create entries in it (a host directory of the
        /// sandbox's own scratch space).
        layer: bool,
    },
    /// Mount an overlay whose lower layer is the tmpfs already mounted at
    /// `target` and whose upper layer is a host directory: entries made in
    /// the lower layer stay off the host disk, while everything written
    /// through the overlay lands in `upper`.
    Overlay {
        /// Where, inside the sandbox (also the lower layer's mount point).
        target: PathBuf,
        /// The host directory that receives writes.
        upper: PathBuf,
        /// overlayfs's work directory, on the same filesystem as `upper`.
        work: PathBuf,
        /// Use `user.*` extended attributes (needed inside a user namespace).
        userxattr: bool,
    },
    /// Mount a fresh procfs of the sandbox's PID namespace.
    Proc {
        /// Where, inside the sandbox.
        target: PathBuf,
    },
    /// Mount a fresh sysfs (uid-range builds only, B46).
    Sysfs {
        /// Where, inside the sandbox.
        target: PathBuf,
    },
    /// Give an entry the plan created to a host uid and gid.
    Chown {
        /// Which, inside the sandbox.
        path: PathBuf,
        /// The host uid.
        uid: u32,
        /// The host gid.
        gid: u32,
    },
    /// Mount a new devpts instance.
    Devpts {
        /// Where, inside the sandbox.
        target: PathBuf,
        /// Mount options.
        options: String,
    },
    /// Make the sandbox root the process's root and detach the host's.
    PivotRoot,
}

/// The sandbox's filesystem: steps in the order they run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MountPlan {
    /// The steps.
    pub steps: Vec<Step>,
}

impl MountPlan {
    /// A one-line description of step `index`, for error messages.
    pub fn describe(&self, index: usize) -> String {
        let Some(step) = self.steps.get(index) else {
            return format!("step {index} of the mount plan");
        };
        let q = |p: &PathBuf| format!("'{}'", p.display());
        match step {
            Step::MakePrivate => "unable to make '/' private".to_string(),
            Step::RootTmpfs { mount_point, .. } => {
                format!("unable to mount the sandbox root on {}", q(mount_point))
            }
            Step::Tmpfs { target, .. } if target.as_os_str() == "/dev/shm" => {
                "mounting /dev/shm".into()
            }
            Step::Tmpfs { target, .. } => format!("mounting a tmpfs on {}", q(target)),
            Step::Mkdir { path, .. } => format!("creating directory {}", q(path)),
            Step::File { path, .. } => format!("creating regular file {}", q(path)),
            Step::Symlink { path, .. } => format!("creating symlink {}", q(path)),
            Step::Chmod { path, .. } => format!("changing the mode of {}", q(path)),
            Step::Bind { source, target, .. } => {
                format!("bind mount from {} to {} failed", q(source), q(target))
            }
            Step::Overlay { target, upper, .. } => format!(
                "mounting an overlay on {} (writes going to {})",
                q(target),
                q(upper)
            ),
            Step::Proc { .. } => "mounting /proc".into(),
            Step::Sysfs { .. } => "mounting /sys".into(),
            Step::Chown { path, .. } => format!("cannot change ownership of {}", q(path)),
            Step::Devpts { .. } => "mounting /dev/pts".into(),
            Step::PivotRoot => "cannot pivot to the sandbox root".into(),
        }
    }
}
