//! A cgroup of its own for each build (SPEC D7, B80, B81): where the host
//! has cgroup v2, one v2 cgroup, ended with `cgroup.kill` where the kernel
//! has it ([`v2`]); on hybrid hosts (v1 controllers, an empty v2
//! hierarchy), one cgroup in each of the v1 freezer, pids, memory and
//! cpuacct hierarchies, ended by freezing it and killing what is in it
//! ([`v1`]). What the host has is [`CgroupLayout`]; the [`registry`]
//! records live build cgroups so that a crash leaves none behind.

mod files;
mod layout;
mod registry;
mod v1;
mod v2;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Serialize;

pub use layout::{CgroupLayout, CgroupRoot, Controller};
pub use registry::{CgroupOwner, record, remove_leftovers, unrecord};

/// The directory below each hierarchy's root that holds hermetic's builds.
const BASE: &str = "hermetic";

/// Limits on one build (beyond Nix: `max-build-pids`, `max-build-memory`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Most processes (and threads) at once.
    pub pids: Option<u64>,
    /// Most memory, in bytes (no swap beyond it).
    pub memory: Option<u64>,
}

/// What a build used, and which limits stopped it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Usage {
    /// CPU time in user mode, in microseconds.
    pub user_usec: u64,
    /// CPU time in kernel mode, in microseconds.
    pub system_usec: u64,
    /// The most memory it held at once, in bytes, where the kernel says.
    pub peak_memory: Option<u64>,
    /// Processes the kernel killed for going over the memory limit.
    pub oom_kills: u64,
    /// Times a fork failed because of the pids limit.
    pub pids_limit_hits: u64,
}

/// A cgroup operation that failed, with the path.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No cgroup filesystem to use.
    #[error("cannot determine the cgroups file system: {0}")]
    NoCgroups(String),
    /// A limit needs a controller the host does not offer.
    #[error("'{setting}' needs the cgroup {controller} controller, which this host does not offer")]
    NoController {
        /// The setting.
        setting: &'static str,
        /// The controller.
        controller: &'static str,
    },
    /// A file operation failed.
    #[error("{operation} '{path}'")]
    Io {
        /// What.
        operation: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The cgroup did not empty (Nix's text).
    #[error("cannot kill cgroup '{0}'")]
    Unkillable(PathBuf),
}

/// What differs between cgroup versions: where a build's cgroup lives, how
/// it is made and limited, frozen, killed at once, and measured. What is
/// the same (attaching, listing, the kill loop, removal) is
/// [`BuildCgroup`]'s.
trait Backend: fmt::Debug + Send + Sync {
    /// The build's cgroup directories, one per hierarchy.
    fn dirs(&self) -> &[PathBuf];
    /// The directory whose `cgroup.procs` (with its sub-cgroups') lists
    /// the build's processes.
    fn main(&self) -> &Path;
    /// Makes the directories, writes `limits`, and hands the cgroup to
    /// `owner` where the version lets a build manage its own.
    fn create(&self, limits: Limits, owner: Option<(u32, u32)>) -> Result<(), CgroupError>;
    /// Kills every process in one step where the kernel can; `false` when
    /// it cannot.
    fn kill_at_once(&self) -> Result<bool, CgroupError>;
    /// Freezes or thaws the build (best effort).
    fn freeze(&self, frozen: bool);
    /// What the build used.
    fn usage(&self) -> Usage;
}

/// One build's cgroup(s).
#[derive(Debug)]
pub struct BuildCgroup {
    /// Its name below hermetic's base in each hierarchy.
    pub name: String,
    backend: Box<dyn Backend>,
}

impl BuildCgroup {
    /// Makes the cgroup `name` with `limits`; with `owner`, the build user
    /// gets the cgroup to manage (B80: directory, `cgroup.procs`,
    /// `cgroup.threads`, `cgroup.subtree_control`), for nested containers.
    /// A leftover cgroup of that name is removed first.
    pub fn create(
        layout: &CgroupLayout,
        name: &str,
        limits: Limits,
        owner: Option<(u32, u32)>,
    ) -> Result<BuildCgroup, CgroupError> {
        let cgroup = BuildCgroup::planned(layout, name);
        cgroup.destroy()?;
        for (setting, controller, wanted) in [
            ("max-build-pids", Controller::Pids, limits.pids.is_some()),
            (
                "max-build-memory",
                Controller::Memory,
                limits.memory.is_some(),
            ),
        ] {
            if wanted && !layout.offers(controller) {
                return Err(CgroupError::NoController {
                    setting,
                    controller: controller.name(),
                });
            }
        }
        cgroup.backend.create(limits, owner)?;
        Ok(cgroup)
    }

    /// The cgroup `name` of `layout`, where it would be (nothing is
    /// created).
    pub fn planned(layout: &CgroupLayout, name: &str) -> BuildCgroup {
        let backend: Box<dyn Backend> = match layout {
            CgroupLayout::V2 { root } => {
                Box::new(v2::V2Cgroup::new(root, root.join(BASE).join(name)))
            }
            CgroupLayout::V1 { hierarchies } => Box::new(v1::V1Cgroup::new(
                hierarchies
                    .iter()
                    .map(|(c, mount)| (*c, mount.join(BASE).join(name)))
                    .collect(),
            )),
        };
        BuildCgroup {
            name: name.to_string(),
            backend,
        }
    }

    /// A cgroup directory a crashed run left, of whichever version it is.
    fn leftover(dir: PathBuf) -> BuildCgroup {
        let backend: Box<dyn Backend> = if dir.join("cgroup.controllers").exists() {
            let root = dir.parent().unwrap_or(&dir).to_path_buf();
            Box::new(v2::V2Cgroup::new(&root, dir))
        } else {
            Box::new(v1::V1Cgroup::leftover(dir))
        };
        BuildCgroup {
            name: String::new(),
            backend,
        }
    }

    /// Its directories: one (v2), or one per v1 controller.
    pub fn dirs(&self) -> &[PathBuf] {
        self.backend.dirs()
    }

    /// Moves process `pid` into the cgroup(s).
    pub fn attach(&self, pid: Pid) -> std::io::Result<()> {
        for dir in self.dirs() {
            std::fs::write(dir.join("cgroup.procs"), pid.as_raw().to_string())?;
        }
        Ok(())
    }

    /// The processes in the cgroup, sub-cgroups included.
    pub fn processes(&self) -> Vec<Pid> {
        let mut pids = Vec::new();
        files::collect_processes(self.backend.main(), &mut pids);
        pids
    }

    /// Kills every process of the build and waits until none is left.
    pub fn kill(&self) -> Result<(), CgroupError> {
        // An empty cgroup stays empty: only its own processes could add one.
        if !self.backend.main().exists() || self.processes().is_empty() {
            return Ok(());
        }
        if !self.backend.kill_at_once()? {
            self.backend.freeze(true);
            for pid in self.processes() {
                let _ = kill(pid, Signal::SIGKILL);
            }
            self.backend.freeze(false);
        }
        // Wait for the kernel to finish them off; kill stragglers (forked
        // between listing and freezing) on the way (B80).
        let mut pause = Duration::from_millis(1);
        for _ in 0..20 {
            let left = self.processes();
            if left.is_empty() {
                return Ok(());
            }
            for pid in left {
                tracing::debug!(pid = pid.as_raw(), "killing stray builder process");
                let _ = kill(pid, Signal::SIGKILL);
            }
            tracing::debug!(ms = pause.as_millis() as u64, cgroup = %self.backend.main().display(), "waiting for the cgroup to become empty");
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(200));
        }
        Err(CgroupError::Unkillable(self.backend.main().to_path_buf()))
    }

    /// What the build used, and which limits it ran into.
    pub fn usage(&self) -> Usage {
        self.backend.usage()
    }

    /// Kills what is left and removes the cgroup(s), sub-cgroups the build
    /// made included.
    pub fn destroy(&self) -> Result<(), CgroupError> {
        self.kill()?;
        for dir in self.dirs() {
            files::remove_cgroup_tree(dir)?;
        }
        Ok(())
    }
}
