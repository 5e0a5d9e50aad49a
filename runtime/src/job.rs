//! A build's life around its sandbox (SPEC B25–B29, B78–B81, D7, D8): the
//! run policy checked, a build user leased from the pool, a cgroup of its
//! own, the run, and a clean end: every process gone, the cgroup removed,
//! the build user free again.
//!
//! ```text
//! RunPolicy + SandboxSpec ─Job::start──▶ Job { spec with build user, lease }
//!                         (preflight, lease,      │
//!                          leftovers removed)     ├─prepare─▶ Sandbox
//!                                                 └─run────▶ JobOutcome
//!                                                  (cgroup, uid sweep,
//!                                                   time limits)
//! ```

use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use hermetic_namespaces::kill_processes_of;
use hermetic_uidmap::pool::{self, BuildUserLease, RANGE_SIZE};
use serde::Serialize;

use crate::cgroup::{self, BuildCgroup, CgroupLayout, CgroupOwner, Limits, Usage};
use crate::error::SandboxError;
use crate::policy::RunPolicy;
use crate::run::{Outcome, RunOptions};
use crate::sandbox::Sandbox;
use crate::spec::{BuildUser, SandboxSpec};

/// A build that holds what it runs as: its spec (with the build user it
/// was given) and the lease on that user.
#[derive(Debug)]
pub struct Job {
    /// The spec, with the leased build user filled in.
    pub spec: SandboxSpec,
    policy: RunPolicy,
    lease: Option<BuildUserLease>,
}

/// What a build ended with, beyond its sandbox's [`Outcome`].
#[derive(Debug)]
pub struct JobOutcome {
    /// How the sandbox ended.
    pub outcome: Outcome,
    /// What the build used, from its cgroup (when it had one).
    pub usage: Option<Usage>,
}

/// Why a build ended early through a limit of its cgroup, from its usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LimitHit {
    /// The kernel killed processes over `max-build-memory`.
    Memory,
    /// Forks failed at `max-build-pids`.
    Pids,
}

impl JobOutcome {
    /// The limits the build ran into.
    pub fn limits_hit(&self) -> Vec<LimitHit> {
        let Some(usage) = self.usage else {
            return Vec::new();
        };
        let mut hits = Vec::new();
        if usage.oom_kills > 0 {
            hits.push(LimitHit::Memory);
        }
        if usage.pids_limit_hits > 0 {
            hits.push(LimitHit::Pids);
        }
        hits
    }
}

/// Whether this process may use build users at all (B25: only root).
fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether `policy` makes builds run as build users (B25).
fn uses_build_users(policy: &RunPolicy) -> bool {
    let pool = &policy.build_users;
    is_root() && (!pool.build_users_group.is_empty() || pool.auto_allocate_uids)
}

/// The checks made before any build (B29, Lix's order), then those of a
/// uid-range build (B10, B19) and of the limits.
fn preflight(spec: &SandboxSpec, policy: &RunPolicy) -> Result<(), SandboxError> {
    let pool = &policy.build_users;
    if pool.auto_allocate_uids && pool.id_count > 1 && !policy.use_cgroups {
        return Err(SandboxError::RangesNeedCgroups(pool.id_count));
    }
    if policy.use_cgroups && !uses_build_users(policy) && spec.build_user.is_none() {
        return Err(SandboxError::CgroupsNeedBuildUsers);
    }
    if spec.uid_range {
        if !spec.sandbox {
            return Err(SandboxError::UidRangeUnsandboxed);
        }
        if !pool.auto_allocate_uids {
            return Err(SandboxError::UidRangeNeedsAutoAllocation);
        }
        if !policy.use_cgroups {
            return Err(SandboxError::UidRangeNeedsCgroups);
        }
    }
    for (name, value) in [
        ("max-build-pids", policy.max_build_pids),
        ("max-build-memory", policy.max_build_memory),
    ] {
        if value > 0 && !policy.use_cgroups {
            return Err(SandboxError::LimitNeedsCgroups(name));
        }
    }
    Ok(())
}

/// The number of seconds as a limit (0 is none).
fn limit(seconds: u64) -> Option<Duration> {
    (seconds > 0).then(|| Duration::from_secs(seconds))
}

impl Job {
    /// Checks the run policy against the spec and, when hermetic runs as root
    /// and the spec names no build user, leases one from the pool (waiting
    /// for a free one, after calling `waiting` with Nix's text). Cgroups
    /// that earlier builds left behind are removed first.
    pub fn start(
        mut spec: SandboxSpec,
        policy: &RunPolicy,
        label: &str,
        waiting: &mut dyn FnMut(&str),
    ) -> Result<Job, SandboxError> {
        preflight(&spec, policy)?;
        if policy.use_cgroups {
            remove_leftover_cgroups(policy);
        }
        let mut lease = None;
        if spec.build_user.is_none() && is_root() {
            if !uses_build_users(policy) {
                return Err(pool::PoolError::NoBuildUsers.into());
            }
            let leased = pool::acquire(
                &policy.build_users,
                label,
                spec.uid_range,
                spec.sandbox,
                waiting,
            )?;
            tracing::debug!(
                uid = leased.uid,
                gid = leased.gid,
                count = leased.count,
                "leased a build user"
            );
            spec.build_user = Some(BuildUser {
                uid: leased.uid,
                gid: leased.gid,
                count: leased.count,
            });
            lease = Some(leased);
        }
        Ok(Job {
            spec,
            policy: policy.clone(),
            lease,
        })
    }

    /// Plans the build's sandbox.
    pub fn prepare(&self) -> Result<Sandbox, SandboxError> {
        Sandbox::prepare(&self.spec)
    }

    /// Runs `sandbox` (prepared from this job) and ends the build cleanly:
    /// in its own cgroup when the policy says so, under the policy's time
    /// limits; afterwards no process of it is left and the build user is
    /// free again.
    pub fn run(
        self,
        sandbox: &Sandbox,
        options: RunOptions<'_>,
        output: &mut dyn Write,
    ) -> Result<JobOutcome, SandboxError> {
        let options = RunOptions {
            max_silent_time: options
                .max_silent_time
                .or(limit(self.policy.max_silent_time)),
            timeout: options.timeout.or(limit(self.policy.timeout)),
            ..options
        };
        let build_user = self.spec.build_user.filter(|_| is_root());
        // An unsandboxed build has no PID namespace to confine it: without a
        // cgroup, the build user's processes are swept before and after
        // (B79; Lix skips the sweep for sandboxed builds).
        let sweep = |when: &str| -> Result<(), SandboxError> {
            if let Some(user) =
                build_user.filter(|_| !self.spec.sandbox && !self.policy.use_cgroups)
            {
                tracing::debug!(
                    uid = user.uid,
                    "killing the build user's processes {when} the build"
                );
                kill_processes_of(user.uid, user.gid)?;
            }
            Ok(())
        };
        sweep("before")?;
        let cgroup = match build_user.filter(|_| self.policy.use_cgroups) {
            Some(user) => Some(self.create_cgroup(user)?),
            None => None,
        };
        let result = sandbox.run(
            RunOptions {
                cgroup: cgroup.as_ref(),
                ..options
            },
            output,
        );
        let usage = cgroup.as_ref().map(BuildCgroup::usage);
        let mut ended = Ok(());
        if let Some(cgroup) = &cgroup {
            ended = cgroup.destroy().map_err(SandboxError::from);
            if ended.is_ok() {
                cgroup::unrecord(&self.policy.build_users.state_dir, cgroup);
            }
        }
        let swept = sweep("after");
        // The lease goes last: the build user is free only once nothing of
        // the build is left (B28).
        drop(self.lease);
        let outcome = result?;
        ended?;
        swept?;
        Ok(JobOutcome { outcome, usage })
    }

    /// Makes and records the build's cgroup, named after its leased build
    /// user (B80) or else after this process, with the policy's limits; a
    /// uid-range build gets to manage it.
    fn create_cgroup(&self, user: BuildUser) -> Result<BuildCgroup, SandboxError> {
        let layout = CgroupLayout::detect()?;
        let limits = Limits {
            pids: (self.policy.max_build_pids > 0).then_some(self.policy.max_build_pids),
            memory: (self.policy.max_build_memory > 0).then_some(self.policy.max_build_memory),
        };
        let owner = (user.count >= RANGE_SIZE).then_some((user.uid, user.gid));
        static BUILDS: AtomicU32 = AtomicU32::new(0);
        let n = BUILDS.fetch_add(1, Ordering::Relaxed);
        let name = match self.lease {
            Some(_) => CgroupOwner::BuildUser(user.uid).cgroup_name(n),
            // A build user given by the caller is not locked: another build
            // may run as it, so the cgroup is this process's own.
            None => CgroupOwner::Supervisor(std::process::id() as i32).cgroup_name(n),
        };
        // Recorded before it exists, so that no crash leaves it unrecorded.
        let planned = BuildCgroup::planned(&layout, &name);
        cgroup::record(&self.policy.build_users.state_dir, &planned)?;
        let cgroup = BuildCgroup::create(&layout, &name, limits, owner).inspect_err(|_| {
            if planned.destroy().is_ok() {
                cgroup::unrecord(&self.policy.build_users.state_dir, &planned);
            }
        })?;
        tracing::debug!(cgroup = %name, "made the build's cgroup");
        Ok(cgroup)
    }
}

/// Removes the cgroups recorded by builds whose supervisor died before
/// removing them, each while holding its build user's lock (so never the
/// cgroup of a running build).
fn remove_leftover_cgroups(policy: &RunPolicy) {
    let config = &policy.build_users;
    cgroup::remove_leftovers(&config.state_dir, |uid| {
        pool::hold_if_free(config, uid).ok().flatten()
    });
}
