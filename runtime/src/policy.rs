//! How a sandbox's run is governed beyond its spec: who it runs as, whether
//! it gets a cgroup, its limits and time limits. A plain serde value beside
//! the [`SandboxSpec`](crate::SandboxSpec), made from the settings by the
//! caller; `sandbox-run --print-plan` shows it.

use hermetic_uidmap::pool::PoolConfig;
use serde::{Deserialize, Serialize};

/// The run policy of one sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RunPolicy {
    /// Where build users come from when the spec names none and this
    /// process is root (`build-users-group`, `auto-allocate-uids`,
    /// `start-id`, `id-count`), and the state directory that holds their
    /// locks and the records of cgroups.
    pub build_users: PoolConfig,
    /// A cgroup of its own (`use-cgroups`, B78).
    pub use_cgroups: bool,
    /// Seconds without output before it is killed, 0 for none
    /// (`max-silent-time`).
    pub max_silent_time: u64,
    /// Seconds before it is killed, 0 for none (`timeout`).
    pub timeout: u64,
    /// Most processes at once, 0 for none (`max-build-pids`).
    pub max_build_pids: u64,
    /// Most bytes of memory, 0 for none (`max-build-memory`).
    pub max_build_memory: u64,
}
