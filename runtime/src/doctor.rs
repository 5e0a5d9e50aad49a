//! `sandbox-run doctor`: why does (or would) a sandbox fail on this host?
//!
//! Each check probes the real kernel (creating namespaces where that is the
//! question) and says what works, what does not, and the fix.

use std::fmt;
use std::path::Path;

use hermetic_namespaces::probe::{
    self, APPARMOR_RESTRICT_USERNS, MAX_USER_NAMESPACES, UNPRIVILEGED_USERNS_CLONE, read_sysctl,
};
use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, TMPFS_MAGIC, statfs};

use hermetic_host as host;

/// Whether the kernel can make the sandbox's mount and PID namespaces (B6).
pub fn namespaces_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let unprivileged = !nix::unistd::geteuid().is_root();
        match probe::sandbox_probe(unprivileged) {
            Ok(()) => true,
            Err(failure) => {
                tracing::debug!(?failure, "the sandbox's namespaces are not available");
                false
            }
        }
    })
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Works.
    Ok,
    /// Works, with a caveat.
    Warn,
    /// Does not work.
    Fail,
    /// For information.
    Info,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// How it came out.
    pub verdict: Verdict,
    /// What was found.
    pub detail: String,
    /// How to fix it, when it does not work.
    pub fix: Option<String>,
    /// A sandbox cannot be made when this check fails.
    pub essential: bool,
}

/// All findings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The kernel release.
    pub kernel: String,
    /// Whether the examining process runs as root.
    pub root: bool,
    /// The findings, in order.
    pub checks: Vec<Check>,
}

impl Report {
    /// Whether sandboxes can be made here by this caller.
    pub fn sandbox_possible(&self) -> bool {
        !self
            .checks
            .iter()
            .any(|c| c.essential && c.verdict == Verdict::Fail)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = if self.root {
            "root"
        } else {
            "an ordinary user"
        };
        writeln!(
            f,
            "hermetic doctor: kernel {}, running as {who}",
            self.kernel
        )?;
        for check in &self.checks {
            let tag = match check.verdict {
                Verdict::Ok => "ok  ",
                Verdict::Warn => "warn",
                Verdict::Fail => "FAIL",
                Verdict::Info => "info",
            };
            writeln!(f, "{tag}  {}: {}", check.name, check.detail)?;
            if let Some(fix) = &check.fix {
                writeln!(f, "      fix: {fix}")?;
            }
        }
        if self.sandbox_possible() {
            writeln!(f, "verdict: sandboxes can be made here")
        } else {
            writeln!(f, "verdict: no sandbox can be made here; see FAIL above")
        }
    }
}

fn check(name: &'static str, verdict: Verdict, detail: String, fix: Option<String>) -> Check {
    Check {
        name,
        verdict,
        detail,
        fix,
        essential: false,
    }
}

fn sysctl_text(path: &str) -> String {
    match read_sysctl(path) {
        Some(value) => format!("{value}"),
        None => "absent".to_string(),
    }
}

/// Runs every check.
pub fn examine() -> Report {
    let root = nix::unistd::geteuid().is_root();
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into());
    let mut checks = Vec::new();

    // User namespaces: the sysctls, then a real attempt.
    let sysctls = format!(
        "user.max_user_namespaces = {}, kernel.unprivileged_userns_clone = {}, \
         kernel.apparmor_restrict_unprivileged_userns = {}",
        sysctl_text(MAX_USER_NAMESPACES),
        sysctl_text(UNPRIVILEGED_USERNS_CLONE),
        sysctl_text(APPARMOR_RESTRICT_USERNS)
    );
    let unprivileged_blocked = probe::user_namespace_diagnosis(true, None);
    match (&unprivileged_blocked, root) {
        (Some(diagnosis), true) => checks.push(check(
            "user namespaces for ordinary users",
            Verdict::Warn,
            format!("{}; {sysctls}", diagnosis.problem),
            Some(diagnosis.fix.clone()),
        )),
        _ => checks.push(check(
            "user namespace sysctls",
            Verdict::Info,
            sysctls,
            None,
        )),
    }

    // The sandbox itself: new user, mount and PID namespaces and a fresh
    // procfs (SPEC B6), the way this caller's sandboxes are made.
    let mut essential = match probe::sandbox_probe(!root) {
        Ok(()) => check(
            "namespaces",
            Verdict::Ok,
            "a process was made in new user, mount and PID namespaces and mounted a fresh /proc".into(),
            None,
        ),
        Err(probe::ProbeFailure::Clone(errno)) => {
            let diagnosis = probe::user_namespace_diagnosis(!root, Some(errno));
            check(
                "namespaces",
                Verdict::Fail,
                format!(
                    "clone() failed: {}{}",
                    errno.desc(),
                    diagnosis.as_ref().map(|d| format!("; {}", d.problem)).unwrap_or_default()
                ),
                Some(
                    diagnosis
                        .map(|d| d.fix)
                        .unwrap_or_else(|| "check the container's seccomp profile and security modules".into()),
                ),
            )
        }
        Err(probe::ProbeFailure::Proc(errno)) => check(
            "namespaces",
            Verdict::Fail,
            format!(
                "a fresh /proc cannot be mounted ({}): /proc is likely masked by a container runtime",
                errno.desc()
            ),
            Some("run on the host, or give the container an unmasked /proc (e.g. docker run --security-opt systempaths=unconfined)".into()),
        ),
        Err(other) => check(
            "namespaces",
            Verdict::Fail,
            format!("{other}"),
            Some("run with --debug for the failing step".into()),
        ),
    };
    essential.essential = true;
    checks.push(essential);

    // overlayfs for the store directory's mount points.
    let overlay_known = std::fs::read_to_string("/proc/filesystems")
        .map(|t| t.lines().any(|l| l.trim_end().ends_with("overlay")))
        .unwrap_or(false);
    let version = host::kernel_version();
    let overlay = if !overlay_known && !Path::new("/sys/module/overlay").exists() {
        check(
            "overlayfs",
            Verdict::Warn,
            "not loaded: the store's mount points are made on disk (slower with many inputs)"
                .into(),
            Some("modprobe overlay".into()),
        )
    } else if !root && version.is_some_and(|v| v < (5, 11)) {
        check(
            "overlayfs",
            Verdict::Warn,
            "this kernel cannot mount it in a user namespace (needs 5.11): the store's mount points are made on disk"
                .into(),
            None,
        )
    } else {
        check(
            "overlayfs",
            Verdict::Ok,
            "available: the store's mount points stay off the host disk".into(),
            None,
        )
    };
    checks.push(overlay);

    checks.push(cgroup_check());

    let actions = std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail")
        .map(|t| t.trim().to_string())
        .unwrap_or_default();
    checks.push(if actions.contains("errno") {
        check("seccomp", Verdict::Ok, format!("actions: {actions}"), None)
    } else {
        check(
            "seccomp",
            Verdict::Fail,
            "the kernel offers no seccomp filter actions".into(),
            Some("use a kernel built with CONFIG_SECCOMP_FILTER=y".into()),
        )
    });

    checks.push(match host::static_shell() {
        Some(shell) => check(
            "/bin/sh",
            Verdict::Ok,
            format!("statically linked shell '{}'", shell.display()),
            None,
        ),
        None => check(
            "/bin/sh",
            Verdict::Warn,
            format!(
                "no statically linked shell (looked at {}): sandboxes get no /bin/sh",
                host::STATIC_SHELL_CANDIDATES.join(", ")
            ),
            Some(host::STATIC_SHELL_HINT.into()),
        ),
    });

    if !root {
        let groups = nix::unistd::getgroups().unwrap_or_default();
        let primary = nix::unistd::getegid();
        let extra: Vec<String> = groups
            .iter()
            .filter(|g| **g != primary)
            .map(|g| g.as_raw().to_string())
            .collect();
        if !extra.is_empty() {
            checks.push(check(
                "supplementary groups",
                Verdict::Warn,
                format!(
                    "groups {} stay with an unprivileged sandbox (shown as 65534 inside): the kernel lets only root drop them",
                    extra.join(", ")
                ),
                Some("run builds from a user without extra groups, or through root with a build user".into()),
            ));
        }
    }

    checks.push(match host::dev_node("kvm") {
        Some(_) => check(
            "/dev/kvm",
            Verdict::Info,
            "present (bound with --kvm)".into(),
            None,
        ),
        None => check("/dev/kvm", Verdict::Info, "absent".into(), None),
    });

    Report {
        kernel,
        root,
        checks,
    }
}

/// The cgroup layout, and whether `cgroup.kill` exists.
fn cgroup_check() -> Check {
    let root = Path::new("/sys/fs/cgroup");
    let kind = statfs(root).map(|s| s.filesystem_type());
    let v2_at = match kind {
        Ok(t) if t == CGROUP2_SUPER_MAGIC => Some(root.to_path_buf()),
        Ok(t) if t == TMPFS_MAGIC => {
            let unified = root.join("unified");
            statfs(&unified)
                .ok()
                .filter(|s| s.filesystem_type() == CGROUP2_SUPER_MAGIC)
                .map(|_| unified)
        }
        _ => None,
    };
    let layout = match (kind, &v2_at) {
        (Ok(t), Some(_)) if t == CGROUP2_SUPER_MAGIC => "cgroup v2 (unified)",
        (Ok(_), Some(_)) => "hybrid (v1 controllers, v2 at /sys/fs/cgroup/unified)",
        (Ok(t), None) if t == TMPFS_MAGIC => "cgroup v1 only",
        _ => "no cgroup filesystem at /sys/fs/cgroup",
    };
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        });
    let kill = match (&v2_at, own) {
        (Some(base), Some(path)) => base
            .join(path.trim_start_matches('/'))
            .join("cgroup.kill")
            .exists(),
        _ => false,
    };
    check(
        "cgroups",
        Verdict::Info,
        format!(
            "{layout}; cgroup.kill {}",
            if kill { "available" } else { "not available" }
        ),
        None,
    )
}
