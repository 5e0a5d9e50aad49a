//! The child's side of the launch: everything between clone and execve.
//!
//! Nothing here allocates, takes a lock or unwinds: every step is a system
//! call on data the parent prepared (see the crate documentation). A failing
//! step is reported to the parent as one fixed-size message, then the child
//! exits with status 127.

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::Ordering;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sched::CloneFlags;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::Signal;
use nix::sys::socket::{self, MsgFlags};
use nix::sys::stat::{Mode, umask};

use crate::request::{LaunchRequest, UserNamespace};
use crate::wire::{ChildStep, MESSAGE_LEN, READY, encode};
use hermetic_sys as sys;
use hermetic_sys::phase_clock::{Point, mark};

/// Status of a child that failed before `execve`.
const FAILED_STATUS: i32 = 127;

pub(crate) struct ChildProgram<'r, 'a> {
    pub(crate) request: &'r LaunchRequest<'a>,
    /// The child's end of the socket pair.
    pub(crate) channel: BorrowedFd<'r>,
    /// The parent's end, which the child closes so that the parent's exit
    /// shows as a hang-up on `channel`.
    pub(crate) parent_end: RawFd,
}

type StepResult = Result<(), (ChildStep, u32, Errno)>;

fn step(which: ChildStep, result: Result<(), Errno>) -> StepResult {
    result.map_err(|errno| (which, 0, errno))
}

impl ChildProgram<'_, '_> {
    /// Runs the child's steps and `execve`; never returns.
    pub(crate) fn run(&self) -> ! {
        sys::IN_LAUNCHED_CHILD.store(true, Ordering::Relaxed);
        let (which, detail, errno) = match self.steps() {
            Ok(()) => unreachable_after_exec(),
            Err(failure) => failure,
        };
        let message = encode(which as u32, detail, errno as i32);
        let _ = socket::send(self.channel.as_raw_fd(), &message, MsgFlags::MSG_NOSIGNAL);
        sys::exit_immediately(FAILED_STATUS)
    }

    fn steps(&self) -> StepResult {
        let request = self.request;
        let exec = request.exec;
        let _ = nix::unistd::close(self.parent_end);
        step(
            ChildStep::DeathSignal,
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL),
        )?;
        sys::reset_signals();
        mark(Point::ChildStarted);

        if request.waits_at_start() {
            self.wait_for_go()?;
        }
        if request.cgroup_namespace {
            step(
                ChildStep::UnshareCgroup,
                nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP),
            )?;
        }
        step(ChildStep::NewSession, nix::unistd::setsid().map(drop))?;
        if request.clear_groups {
            step(ChildStep::ClearGroups, sys::clear_supplementary_groups())?;
        }
        if exec.no_core_dumps {
            step(ChildStep::CoreLimit, no_core_dumps())?;
        }
        umask(Mode::empty());
        if let Some(uts) = &request.uts {
            step(
                ChildStep::HostName,
                nix::unistd::sethostname(std::ffi::OsStr::from_bytes(uts.hostname.to_bytes())),
            )?;
            step(
                ChildStep::DomainName,
                sys::set_domainname(uts.domainname.to_bytes()),
            )?;
        }
        mark(Point::SessionSet);
        (request.setup)().map_err(|failure| (ChildStep::Setup, failure.step, failure.errno))?;
        mark(Point::FilesystemReady);

        match &request.user_namespace {
            UserNamespace::AfterSetup(maps) => {
                step(
                    ChildStep::UnshareUser,
                    nix::sched::unshare(CloneFlags::CLONE_NEWUSER),
                )?;
                let ready = encode(READY, 0, 0);
                step(
                    ChildStep::SignalReady,
                    socket::send(self.channel.as_raw_fd(), &ready, MsgFlags::MSG_NOSIGNAL)
                        .map(drop),
                )?;
                self.wait_for_go()?;
                mark(Point::UserMapped);
                if let Some(network) = request.late_network {
                    step(
                        ChildStep::UnshareNetwork,
                        nix::sched::unshare(CloneFlags::CLONE_NEWNET),
                    )?;
                    mark(Point::NetworkMade);
                    network().map_err(|failure| (ChildStep::Setup, failure.step, failure.errno))?;
                    mark(Point::NetworkReady);
                }
                drop_inheritable_capabilities(exec)?;
                switch_ids(maps.uid, maps.gid)?;
            }
            UserNamespace::AtClone(maps) => {
                drop_inheritable_capabilities(exec)?;
                switch_ids(maps.uid, maps.gid)?;
            }
            UserNamespace::None(Some(ids)) => {
                drop_inheritable_capabilities(exec)?;
                step(
                    ChildStep::ClearGroups,
                    sys::set_supplementary_groups(&ids.groups),
                )?;
                switch_ids(ids.uid, ids.gid)?;
            }
            UserNamespace::None(None) => drop_inheritable_capabilities(exec)?,
        }
        mark(Point::IdentitySwitched);
        // Keys of the caller's session (tokens, credentials) stay there.
        step(ChildStep::SessionKeyring, sys::join_new_session_keyring())?;

        if let Some(persona) = exec.personality {
            step(
                ChildStep::Personality,
                sys::personality_get().and_then(|current| sys::personality_set(current | persona)),
            )?;
        }
        step(
            ChildStep::ChangeDirectory,
            nix::unistd::chdir(exec.cwd.as_c_str()),
        )?;
        let stdio = request.stdio;
        step(ChildStep::Stdin, nix::unistd::dup2_stdin(stdio.stdin))?;
        step(ChildStep::Stdout, nix::unistd::dup2_stdout(stdio.stdout))?;
        step(ChildStep::Stderr, nix::unistd::dup2_stderr(stdio.stderr))?;
        if exec.controlling_terminal {
            step(
                ChildStep::ControllingTerminal,
                sys::set_controlling_terminal(stdio.stdin),
            )?;
        }
        umask(Mode::from_bits_truncate(exec.umask as libc::mode_t));
        if exec.drop_capabilities {
            step(ChildStep::Capabilities, sys::clear_capability_sets())?;
        }
        if exec.no_new_privs {
            step(ChildStep::NoNewPrivs, nix::sys::prctl::set_no_new_privs())?;
        }
        // The identity switch cleared the parent-death signal: set it again,
        // then make sure the parent did not exit in between.
        step(
            ChildStep::DeathSignal,
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL),
        )?;
        self.check_parent_alive()?;
        self.close_other_descriptors()?;
        mark(Point::Confined);
        // Last: from here on the filter rules every call, execve included.
        if let Some(program) = exec.seccomp {
            step(ChildStep::Seccomp, sys::install_seccomp_filter(program))?;
        }
        mark(Point::FilterLoaded);
        let errno = sys::execve(&exec.program, &exec.argv, &exec.envp);
        Err((ChildStep::Exec, 0, errno))
    }

    /// Blocks until the parent says *go*; end of file means it is gone.
    fn wait_for_go(&self) -> StepResult {
        let mut byte = [0u8; MESSAGE_LEN];
        loop {
            match socket::recv(self.channel.as_raw_fd(), &mut byte, MsgFlags::empty()) {
                Ok(1) if byte[0] == 1 => return Ok(()),
                Ok(_) => return Err((ChildStep::WaitForParent, 0, Errno::EPROTO)),
                Err(Errno::EINTR) => continue,
                Err(errno) => return Err((ChildStep::WaitForParent, 0, errno)),
            }
        }
    }

    fn check_parent_alive(&self) -> StepResult {
        let mut fds = [PollFd::new(self.channel, PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, PollTimeout::ZERO) {
            Ok(0) => Ok(()),
            Ok(_) => Err((ChildStep::ParentGone, 0, Errno::ESRCH)),
            Err(errno) => Err((ChildStep::ParentGone, 0, errno)),
        }
    }

    /// Closes every descriptor above 2 except the channel, which is
    /// close-on-exec and carries an `execve` failure back.
    fn close_other_descriptors(&self) -> StepResult {
        let channel = self.channel.as_raw_fd() as u32;
        let mut ranges = [(3u32, channel.saturating_sub(1)), (channel + 1, u32::MAX)];
        if channel < 3 {
            ranges[0] = (1, 0);
        }
        for (first, last) in ranges {
            if first <= last {
                step(ChildStep::CloseDescriptors, sys::close_range(first, last))?;
            }
        }
        Ok(())
    }
}

/// Empties the bounding and ambient sets (when asked to drop capabilities).
/// Done right before the identity switch: entering a user namespace fills
/// the bounding set again, and switching from a mapped root to another id
/// takes CAP_SETPCAP, which dropping needs.
fn drop_inheritable_capabilities(exec: &crate::request::Exec) -> StepResult {
    if exec.drop_capabilities {
        step(
            ChildStep::BoundingSet,
            sys::drop_bounding_set(exec.last_capability),
        )?;
        step(
            ChildStep::AmbientCapabilities,
            sys::clear_ambient_capabilities(),
        )?;
    }
    Ok(())
}

/// setresgid, then setresuid.
fn switch_ids(uid: u32, gid: u32) -> StepResult {
    step(ChildStep::SetGid, sys::set_all_gids(gid))?;
    step(ChildStep::SetUid, sys::set_all_uids(uid))
}

fn no_core_dumps() -> Result<(), Errno> {
    let (_, hard) = getrlimit(Resource::RLIMIT_CORE)?;
    match setrlimit(Resource::RLIMIT_CORE, 0, libc::RLIM_INFINITY) {
        Err(Errno::EPERM) => setrlimit(Resource::RLIMIT_CORE, 0, hard),
        other => other,
    }
}

fn unreachable_after_exec() -> ! {
    // `steps` returns Ok only by way of execve, which does not return.
    sys::exit_immediately(FAILED_STATUS)
}
