//! What the kernel allows here: the checks behind `sandbox-run doctor` and
//! behind the explanation of a refused `clone` (SPEC B6).

use std::os::fd::AsFd;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{MsFlags, mount};
use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;

use crate::launch::launch;
use crate::request::{Exec, IdMaps, LaunchRequest, Namespaces, SetupFailure, Stdio, UserNamespace};
use hermetic_sys::CStringArray;

/// A problem found on this host and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    /// What is wrong (Lix's wording where Lix has one).
    pub problem: String,
    /// What to do about it.
    pub fix: String,
}

/// The sysctl files that decide whether user namespaces work.
pub const MAX_USER_NAMESPACES: &str = "/proc/sys/user/max_user_namespaces";
/// Debian's and Ubuntu's switch for unprivileged user namespaces.
pub const UNPRIVILEGED_USERNS_CLONE: &str = "/proc/sys/kernel/unprivileged_userns_clone";
/// AppArmor's restriction of unprivileged user namespaces (Ubuntu 23.10+).
pub const APPARMOR_RESTRICT_USERNS: &str = "/proc/sys/kernel/apparmor_restrict_unprivileged_userns";

/// Reads an integer sysctl file; `None` when absent or unreadable.
pub fn read_sysctl(path: &str) -> Option<i64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Why user namespaces cannot be made here, judged from the sysctls (and
/// from `errno`, what `clone` said, when there is one). `None` when the
/// sysctls allow them.
pub fn user_namespace_diagnosis(unprivileged: bool, errno: Option<Errno>) -> Option<Diagnosis> {
    if !Path::new("/proc/self/ns/user").exists() {
        return Some(Diagnosis {
            problem: "'/proc/self/ns/user' does not exist; your kernel was likely built without CONFIG_USER_NS=y"
                .into(),
            fix: "use a kernel built with CONFIG_USER_NS=y".into(),
        });
    }
    if read_sysctl(MAX_USER_NAMESPACES) == Some(0) {
        return Some(Diagnosis {
            problem: format!(
                "user namespaces appear to be disabled; check '{MAX_USER_NAMESPACES}'"
            ),
            fix:
                "sysctl -w user.max_user_namespaces=15000 (and set it in /etc/sysctl.d to keep it)"
                    .into(),
        });
    }
    if unprivileged && read_sysctl(UNPRIVILEGED_USERNS_CLONE) == Some(0) {
        return Some(Diagnosis {
            problem: format!(
                "user namespaces appear to be disabled for unprivileged users; check '{UNPRIVILEGED_USERNS_CLONE}'"
            ),
            fix: "sysctl -w kernel.unprivileged_userns_clone=1 (or run as root with a build user)"
                .into(),
        });
    }
    if unprivileged && read_sysctl(APPARMOR_RESTRICT_USERNS) == Some(1) {
        return Some(Diagnosis {
            problem: format!(
                "user namespaces are restricted by AppArmor for unprivileged users; check '{APPARMOR_RESTRICT_USERNS}'"
            ),
            fix: "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or give the program an AppArmor \
                  profile with the 'userns' permission"
                .into(),
        });
    }
    match errno {
        Some(Errno::ENOSPC) | Some(Errno::EUSERS) => Some(Diagnosis {
            problem: format!("the limit on nested or concurrent user namespaces is reached; check '{MAX_USER_NAMESPACES}'"),
            fix: "raise user.max_user_namespaces, or end other sandboxes".into(),
        }),
        Some(errno) if unprivileged && errno == Errno::EPERM => Some(Diagnosis {
            problem: "the kernel refused to create a user namespace (EPERM): a security module or a seccomp \
                      filter of a container may forbid it"
                .into(),
            fix: "run outside that container, or allow unshare(CLONE_NEWUSER) in its profile".into(),
        }),
        _ => None,
    }
}

/// Whether a process can be made in new mount and PID namespaces (plus a
/// user namespace when `unprivileged`) that mounts a fresh procfs: the
/// probe of SPEC B6. The procfs mount is what fails in containers whose
/// `/proc` has masked sub-mounts.
pub fn sandbox_probe(unprivileged: bool) -> Result<(), ProbeFailure> {
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    let maps = IdMaps {
        uid_map: format!("{uid} {uid} 1\n"),
        gid_map: format!("{gid} {gid} 1\n"),
        deny_setgroups: true,
        uid,
        gid,
    };
    let user_namespace = if unprivileged {
        UserNamespace::AtClone(maps)
    } else {
        UserNamespace::AfterSetup(maps)
    };
    let setup = || -> Result<(), SetupFailure> {
        let fail = |step| move |errno| SetupFailure { step, errno };
        mount(
            None::<&str>,
            c"/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(fail(0))?;
        mount(
            Some(c"proc"),
            c"/proc",
            Some(c"proc"),
            MsFlags::empty(),
            None::<&str>,
        )
        .map_err(fail(1))?;
        Ok(())
    };
    let devnull = nix::fcntl::open(
        c"/dev/null",
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| ProbeFailure::Other {
        what: "cannot open /dev/null",
        errno,
    })?;
    // The probe stops short of running anything: the exec of a program that
    // does not exist ends it right after the setup.
    let exec = Exec {
        program: c"/nonexistent/hermetic-probe".into(),
        argv: CStringArray::new(vec![c"probe".into()]),
        envp: CStringArray::new(vec![]),
        cwd: c"/".into(),
        umask: 0o022,
        personality: None,
        no_core_dumps: false,
        drop_capabilities: false,
        last_capability: 0,
        no_new_privs: true,
        controlling_terminal: false,
        seccomp: None,
    };
    let stdio = Stdio {
        stdin: devnull.as_fd(),
        stdout: devnull.as_fd(),
        stderr: devnull.as_fd(),
    };
    let request = LaunchRequest {
        namespaces: Namespaces {
            mount: true,
            pid: true,
            net: false,
            uts: false,
            ipc: false,
        },
        user_namespace,
        clear_groups: false,
        uts: None,
        before_start: None,
        cgroup_namespace: false,
        setup: &setup,
        late_network: None,
        exec: &exec,
        stdio,
    };
    match launch(&request) {
        Ok(child) => {
            let _ = waitpid(child.pid, None);
            Ok(())
        }
        Err(crate::LaunchError::Child {
            step: crate::ChildStep::Exec,
            ..
        }) => Ok(()),
        Err(crate::LaunchError::Clone(errno)) => Err(ProbeFailure::Clone(errno)),
        Err(crate::LaunchError::Setup { step: 0, errno }) => Err(ProbeFailure::Other {
            what: "unable to make '/' private",
            errno,
        }),
        Err(crate::LaunchError::Setup { errno, .. }) => Err(ProbeFailure::Proc(errno)),
        Err(other) => Err(ProbeFailure::Launch(other.to_string())),
    }
}

/// How [`sandbox_probe`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeFailure {
    /// The namespaces could not be created.
    #[error("clone() failed")]
    Clone(#[source] Errno),
    /// A fresh procfs could not be mounted.
    #[error("mounting /proc")]
    Proc(#[source] Errno),
    /// Something else.
    #[error("{what}")]
    Other {
        /// What.
        what: &'static str,
        /// Why.
        #[source]
        errno: Errno,
    },
    /// The launcher failed otherwise.
    #[error("{0}")]
    Launch(String),
}
