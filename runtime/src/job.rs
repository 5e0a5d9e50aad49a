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

use hermetic_sys::phase_clock::{Point, mark};
use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use hermetic_host::HostFacts;
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

/// A job's plan as `sandbox-run --print-plan` prints it (see
/// [`Job::printed_plan`]): the spec and the run policy, then the sandbox
/// they became (identity, scratch, process, mount plan).
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct PrintedPlan<'a> {
    spec: SandboxSpec,
    run_policy: &'a RunPolicy,
    #[serde(flatten)]
    sandbox: &'a Sandbox,
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

/// Whether `policy` makes builds run as build users on `host` (B25: only
/// root uses build users).
fn uses_build_users(policy: &RunPolicy, host: &HostFacts) -> bool {
    let pool = &policy.build_users;
    host.root && (!pool.build_users_group.is_empty() || pool.auto_allocate_uids)
}

/// The checks made before any build (B29, Lix's order), then those of a
/// uid-range build (B10, B19) and of the limits.
fn preflight(spec: &SandboxSpec, policy: &RunPolicy, host: &HostFacts) -> Result<(), SandboxError> {
    let pool = &policy.build_users;
    if pool.auto_allocate_uids && pool.id_count > 1 && !policy.use_cgroups {
        return Err(SandboxError::RangesNeedCgroups(pool.id_count));
    }
    if policy.use_cgroups && !uses_build_users(policy, host) && spec.build_user.is_none() {
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
        let host = HostFacts::get();
        preflight(&spec, policy, host)?;
        if policy.use_cgroups {
            remove_leftover_cgroups(policy);
        }
        let mut lease = None;
        if spec.build_user.is_none() && host.root {
            if !uses_build_users(policy, host) {
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
        mark(Point::Leased);
        Ok(Job {
            spec,
            policy: policy.clone(),
            lease,
        })
    }

    /// Plans the build's sandbox.
    pub fn prepare(&self) -> Result<Sandbox, SandboxError> {
        let sandbox = Sandbox::prepare(&self.spec);
        mark(Point::Planned);
        sandbox
    }

    /// What `sandbox-run --print-plan` shows of `sandbox` (prepared from
    /// this job): the spec as it was given (a leased build user shows in
    /// `identity`, not in the spec, so the spec read back leases again) and
    /// the run policy, then what they became. `sandbox-run --spec` reads it
    /// back.
    pub fn printed_plan<'a>(&'a self, sandbox: &'a Sandbox) -> PrintedPlan<'a> {
        let mut spec = self.spec.clone();
        if self.lease.is_some() {
            spec.build_user = None;
        }
        PrintedPlan {
            spec,
            run_policy: &self.policy,
            sandbox,
        }
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
        let build_user = self.spec.build_user.filter(|_| HostFacts::get().root);
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
        if cgroup.is_some() {
            mark(Point::CgroupMade);
        }
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
            mark(Point::CgroupRemoved);
        }
        let swept = sweep("after");
        // The lease goes last: the build user is free only once nothing of
        // the build is left (B28).
        drop(self.lease);
        mark(Point::Released);
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use hermetic_uidmap::pool::PoolConfig;

    use super::*;

    /// A made-up host: root or not, nothing else matters to preflight.
    fn host(root: bool) -> HostFacts {
        HostFacts {
            root,
            dev_nodes: Vec::new(),
            dev_shm: true,
            devpts: true,
            kernel_version: Some((6, 1)),
            last_capability: 40,
        }
    }

    fn policy() -> RunPolicy {
        RunPolicy {
            build_users: PoolConfig {
                build_users_group: String::new(),
                auto_allocate_uids: false,
                start_id: 872415232,
                id_count: 8388608,
                state_dir: PathBuf::from("/nonexistent/state"),
            },
            use_cgroups: false,
            max_silent_time: 0,
            timeout: 0,
            max_build_pids: 0,
            max_build_memory: 0,
        }
    }

    fn refusal(spec: &SandboxSpec, policy: &RunPolicy, root: bool) -> String {
        preflight(spec, policy, &host(root))
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn preflight_refuses_what_cannot_work_in_lix_order() {
        let spec = SandboxSpec::new(PathBuf::from("/bin/sh"), Vec::new());
        let mut ranges = policy();
        ranges.build_users.auto_allocate_uids = true;
        assert_eq!(
            refusal(&spec, &ranges, true),
            "Running builds with UID ranges (setting `auto-allocate-uids` enabled and `8388608` UIDs) \
             requires the setting 'use-cgroups' to be enabled."
        );
        let mut cgroups = policy();
        cgroups.use_cgroups = true;
        // Root without a build-users group, and any ordinary user, has no
        // build users to give a cgroup to.
        for root in [true, false] {
            assert!(
                matches!(
                    preflight(&spec, &cgroups, &host(root)),
                    Err(SandboxError::CgroupsNeedBuildUsers)
                ),
                "root: {root}"
            );
        }
        cgroups.build_users.build_users_group = "nixbld".into();
        assert!(preflight(&spec, &cgroups, &host(true)).is_ok());
        assert!(preflight(&spec, &cgroups, &host(false)).is_err());

        let mut limited = policy();
        limited.max_build_memory = 1 << 30;
        assert_eq!(
            refusal(&spec, &limited, false),
            "'max-build-memory' limits a build through its cgroup: it needs use-cgroups = true"
        );
    }

    #[test]
    fn preflight_checks_a_uid_range_build() {
        let mut spec = SandboxSpec::new(PathBuf::from("/bin/sh"), Vec::new());
        spec.uid_range = true;
        spec.sandbox = false;
        assert_eq!(
            refusal(&spec, &policy(), true),
            "feature 'uid-range' is only supported in sandboxed builds"
        );
        spec.sandbox = true;
        assert_eq!(
            refusal(&spec, &policy(), true),
            "feature 'uid-range' requires the setting 'auto-allocate-uids' to be enabled"
        );
        let mut auto = policy();
        auto.build_users.auto_allocate_uids = true;
        auto.build_users.id_count = 1;
        assert_eq!(
            refusal(&spec, &auto, true),
            "feature 'uid-range' requires the setting 'use-cgroups' to be enabled"
        );
        auto.use_cgroups = true;
        assert!(preflight(&spec, &auto, &host(true)).is_ok());
    }
}
