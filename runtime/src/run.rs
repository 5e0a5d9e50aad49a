//! Running a prepared [`Sandbox`]: scratch space, launch, supervision, and
//! a clean end.

use hermetic_sys::phase_clock::{Point, mark};
use std::borrow::Cow;
use std::cell::RefCell;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::Duration;

use hermetic_mountplan::{MountPlan, Pinned, apply};
use hermetic_namespaces::{
    Child, ChildStep, LaunchError, LaunchRequest, Namespaces, SetupFailure, Stdio, UserNamespace,
    launch, probe,
};
use hermetic_netns::pasta::Pasta;
use hermetic_netns::{LoopbackError, Network, loopback_up};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{Signal, killpg};
use nix::sys::stat::Mode;

use crate::cgroup::BuildCgroup;

use crate::error::SandboxError;
use crate::filesystem::mark_overlay_unusable;
use crate::identity::Identity;
use crate::sandbox::Sandbox;
use crate::scratch::Scratch;
use crate::supervise::{ExitStatus, TimedOut, Watch, supervise};
use crate::terminal::{HostTerminal, above_stdio, open_pty};

/// Set-up step numbers of the loopback interface (after the mount plan's).
const LOOPBACK_SOCKET_STEP: u32 = u32::MAX - 1;
const LOOPBACK_FLAGS_STEP: u32 = u32::MAX;

/// How to run a prepared sandbox.
#[derive(Debug, Default, Clone, Copy)]
pub struct RunOptions<'a> {
    /// Keep the scratch directory (build directory, `/tmp`, store writes)
    /// afterwards instead of removing it.
    pub keep: bool,
    /// Wire the caller's terminal (stdin must be one) through to the
    /// sandbox, which gets it as its controlling terminal (`--shell`).
    pub terminal: bool,
    /// When this descriptor becomes readable (a signalfd for SIGINT and
    /// SIGTERM, say), the sandbox is killed and the run ends.
    pub cancel: Option<BorrowedFd<'a>>,
    /// The build's cgroup: PID 1 joins it before it starts, and killing
    /// the sandbox kills every process in it.
    pub cgroup: Option<&'a BuildCgroup>,
    /// Kill the sandbox after this long without output (`max-silent-time`).
    pub max_silent_time: Option<Duration>,
    /// Kill the sandbox after this long in all (`timeout`).
    pub timeout: Option<Duration>,
}

/// What a run ended with.
#[derive(Debug)]
pub struct Outcome {
    /// How PID 1 ended (when it ends, every process of the sandbox is gone).
    pub status: ExitStatus,
    /// The run was cancelled through [`RunOptions::cancel`].
    pub cancelled: bool,
    /// A time limit ended the run.
    pub timed_out: Option<TimedOut>,
    /// The scratch directory, when kept.
    pub kept: Option<Scratch>,
}

/// Removes the scratch directory when the run ends, however it ends,
/// unless asked to keep it.
struct ScratchGuard<'a> {
    scratch: &'a Scratch,
    keep: bool,
    done: bool,
}

impl ScratchGuard<'_> {
    fn finish(mut self) -> Result<Option<Scratch>, SandboxError> {
        self.done = true;
        if self.keep {
            return Ok(Some(self.scratch.clone()));
        }
        self.scratch.remove()?;
        Ok(None)
    }
}

impl Drop for ScratchGuard<'_> {
    fn drop(&mut self) {
        if !self.done && !self.keep {
            if let Err(error) = self.scratch.remove() {
                tracing::warn!("{error}");
            }
        }
    }
}

/// Whether an overlay mount failure means "overlayfs cannot be used here".
fn overlay_refused(errno: Errno) -> bool {
    matches!(
        errno,
        Errno::EINVAL
            | Errno::EPERM
            | Errno::ENODEV
            | Errno::EOPNOTSUPP
            | Errno::EXDEV
            | Errno::ENOTDIR
    )
}

impl Sandbox {
    /// Runs the sandbox: creates its scratch directory, launches PID 1,
    /// streams its output to `output` as it comes, waits for it to end and
    /// removes everything it made (unless kept).
    pub fn run(
        &self,
        options: RunOptions<'_>,
        output: &mut dyn Write,
    ) -> Result<Outcome, SandboxError> {
        let host_terminal = if options.terminal {
            Some(HostTerminal::enter()?)
        } else {
            None
        };
        let span = tracing::debug_span!("sandbox", scratch = %self.scratch.dir.display());
        let _entered = span.enter();
        self.scratch.create(self.identity.build_user())?;
        mark(Point::ScratchMade);
        tracing::debug!("made the scratch directory");
        let guard = ScratchGuard {
            scratch: &self.scratch,
            keep: options.keep || self.scratch.reused,
            done: false,
        };
        let window = host_terminal
            .as_ref()
            .and_then(|_| HostTerminal::window_size());
        let pty = open_pty(!options.terminal, window, self.identity.build_user())?;
        let devnull = nix::fcntl::open(
            c"/dev/null",
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(SandboxError::io("cannot open /dev/null"))?;
        let devnull = above_stdio(devnull)?;
        let stdin = if options.terminal {
            pty.slave.as_fd()
        } else {
            devnull.as_fd()
        };
        let stdio = Stdio {
            stdin,
            stdout: pty.slave.as_fd(),
            stderr: pty.slave.as_fd(),
        };
        // pasta, when the sandbox gets its network from it: killed when the
        // sandbox has ended.
        let pasta = RefCell::new(None);
        let child = self.launch_with_fallback(stdio, options.terminal, options.cgroup, &pasta)?;
        tracing::debug!(pid = child.pid.as_raw(), "PID 1 runs the builder");
        drop(pty.slave);
        drop(devnull);
        let sandboxed = self.spec.sandbox;
        let kill = || match options.cgroup {
            Some(cgroup) => {
                if let Err(error) = cgroup.kill() {
                    tracing::warn!("{error}");
                }
            }
            // Without a PID namespace the builder's processes outlive PID 1
            // unless its whole process group goes.
            None if !sandboxed => {
                let _ = killpg(child.pid, Signal::SIGKILL);
            }
            // PID 1 of a PID namespace takes every process with it.
            None => {
                let _ = child.kill();
            }
        };
        let ended = supervise(
            &Watch {
                child: &child,
                cancel: options.cancel,
                terminal: host_terminal.as_ref(),
                max_silent_time: options.max_silent_time,
                timeout: options.timeout,
                kill: &kill,
            },
            pty.master,
            output,
        )?;
        mark(Point::Reaped);
        if !sandboxed {
            // Whatever the builder left behind in its process group goes
            // too (the build user's other processes are the pool's job).
            kill();
        }
        drop(pasta.take());
        let (status, cancelled, timed_out) = (ended.status, ended.cancelled, ended.timed_out);
        tracing::debug!(?status, cancelled, "PID 1 ended, and with it the sandbox");
        drop(host_terminal);
        let kept = guard.finish()?;
        mark(Point::ScratchRemoved);
        tracing::debug!(kept = kept.is_some(), "done with the scratch directory");
        Ok(Outcome {
            status,
            cancelled,
            timed_out,
            kept,
        })
    }

    /// Launches PID 1; if overlayfs cannot be used for the store directory
    /// here, remembers that and launches again with mount points on disk.
    fn launch_with_fallback(
        &self,
        stdio: Stdio<'_>,
        terminal: bool,
        cgroup: Option<&BuildCgroup>,
        pasta: &RefCell<Option<Pasta>>,
    ) -> Result<Child, SandboxError> {
        let exec = self.exec(terminal)?;
        let (namespaces, user_namespace, clear_groups, uts) = self.launch_shape();
        // A root caller makes a loopback-only network namespace once the
        // sandbox's user namespace exists, so that it belongs to it (as
        // Nix's does) and no host kernel uevent reaches the builder; not
        // when /sys is mounted (uid-range builds), which must show the
        // sandbox's own network and is mounted before.
        let late_network = namespaces.net
            && matches!(user_namespace, UserNamespace::AfterSetup(_))
            && self.spec.network == Network::Loopback
            && !self.spec.uid_range;
        let namespaces = Namespaces {
            net: namespaces.net && !late_network,
            ..namespaces
        };
        let loopback = namespaces.net;
        let mut plan = Cow::Borrowed(&self.mount_plan);
        loop {
            // The sandbox root is mounted over the scratch directory: the
            // directories below it are reached through descriptors.
            let mut pinned_fds = Vec::new();
            for dir in self.scratch.pinned_dirs() {
                let fd = nix::fcntl::open(
                    dir,
                    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(SandboxError::io("opening the scratch directory"))?;
                pinned_fds.push((dir, above_stdio(fd)?));
            }
            let pinned: Vec<Pinned<'_>> = pinned_fds
                .iter()
                .map(|(path, fd)| Pinned {
                    path,
                    fd: fd.as_raw_fd(),
                })
                .collect();
            let compiled = plan.compile(&pinned)?;
            for (index, step) in plan.steps.iter().enumerate() {
                tracing::trace!(index, ?step, "mount plan step");
            }
            let sandboxed = self.spec.sandbox;
            // Before the child goes on: into the build's cgroup, and pasta
            // started and its network up (B60), so the builder never runs
            // without either.
            let join_user_namespace = matches!(user_namespace, UserNamespace::AtClone(_));
            let before_start = |pid: nix::unistd::Pid| -> std::io::Result<()> {
                if let Some(cgroup) = cgroup {
                    cgroup.attach(pid)?;
                }
                if let (Network::Pasta, Some(program)) = (self.spec.network, &self.spec.pasta_path)
                {
                    let run_as = self.identity.build_user().map(|user| (user.uid, user.gid));
                    let started = Pasta::start(program, pid.as_raw(), join_user_namespace, run_as)
                        .map_err(std::io::Error::other)?;
                    tracing::debug!("pasta gives the sandbox its network");
                    *pasta.borrow_mut() = Some(started);
                }
                Ok(())
            };
            let needs_hook = cgroup.is_some() || self.spec.network == Network::Pasta;
            let bring_up_loopback = || -> Result<(), SetupFailure> {
                loopback_up().map_err(|error| match error {
                    LoopbackError::Socket(errno) => SetupFailure {
                        step: LOOPBACK_SOCKET_STEP,
                        errno,
                    },
                    LoopbackError::SetFlags(errno) => SetupFailure {
                        step: LOOPBACK_FLAGS_STEP,
                        errno,
                    },
                })
            };
            let setup = || -> Result<(), SetupFailure> {
                if !sandboxed {
                    return Ok(());
                }
                if loopback {
                    bring_up_loopback()?;
                }
                apply(&compiled)
            };
            let request = LaunchRequest {
                namespaces,
                user_namespace: user_namespace.clone(),
                clear_groups,
                uts: uts.clone(),
                setup: &setup,
                late_network: (sandboxed && late_network).then_some(&bring_up_loopback as _),
                exec: &exec,
                stdio,
                before_start: needs_hook.then_some(&before_start as _),
                // Lix always gives a sandbox its own cgroup namespace (B16).
                cgroup_namespace: sandboxed,
            };
            match launch(&request) {
                Ok(child) => return Ok(child),
                Err(LaunchError::Setup { step, errno })
                    if Some(step as usize) == Sandbox::overlay_step(&plan)
                        && overlay_refused(errno) =>
                {
                    tracing::info!(
                        "overlayfs cannot be used for the store directory here ({errno}); \
                         making its mount points on disk"
                    );
                    // The failed mount left the upper directory untouched.
                    mark_overlay_unusable();
                    plan = Cow::Owned(self.plan_without_overlay()?);
                }
                Err(error) => return Err(self.explain(error, &plan)),
            }
        }
    }

    /// Turns a launch failure into an error that names what failed.
    fn explain(&self, error: LaunchError, plan: &MountPlan) -> SandboxError {
        match error {
            LaunchError::Clone(errno) => {
                let unprivileged = matches!(self.identity, Identity::Unprivileged { .. });
                match probe::user_namespace_diagnosis(unprivileged, Some(errno)) {
                    Some(diagnosis) => SandboxError::UserNamespaces {
                        problem: diagnosis.problem,
                        fix: diagnosis.fix,
                        errno,
                    },
                    None => SandboxError::Launch(LaunchError::Clone(errno)),
                }
            }
            LaunchError::Setup { step, errno } => SandboxError::Setup {
                what: match step {
                    LOOPBACK_SOCKET_STEP => "cannot open IP socket".to_string(),
                    LOOPBACK_FLAGS_STEP => "cannot set loopback interface flags".to_string(),
                    step => plan.describe(step as usize),
                },
                errno,
            },
            LaunchError::Child {
                step: ChildStep::Exec,
                errno,
            } => SandboxError::Exec {
                builder: self.spec.builder.clone(),
                errno,
            },
            LaunchError::Child {
                step: ChildStep::ChangeDirectory,
                errno,
            } => SandboxError::Setup {
                what: format!("changing into '{}'", self.process.cwd.display()),
                errno,
            },
            other => SandboxError::Launch(other),
        }
    }
}
