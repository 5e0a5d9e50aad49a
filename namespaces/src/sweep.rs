//! The uid sweep (SPEC B79): kill every process of a build user, for
//! builds that no PID namespace or cgroup confines.

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

use hermetic_sys as sys;

/// Why the sweep failed (Nix's text, then the reason).
#[derive(Debug, thiserror::Error)]
#[error("cannot kill processes for uid '{uid}': {reason}")]
pub struct SweepError {
    /// The build user.
    pub uid: u32,
    /// What went wrong.
    pub reason: String,
}

/// Kills every process whose uid is `uid`, as Nix does: a child switches
/// to that uid and gid and sends SIGKILL to every process it may signal
/// (`kill(-1)`, which spares the caller). Being that user, it can reach no
/// process of anyone else.
///
/// One call is enough: the kernel delivers the signal to all of them in
/// one pass, and a process forking meanwhile has its new child signalled
/// too. Its result says little: it is 0 whenever any other process exists,
/// even one it may not signal, and ESRCH only when none does.
pub fn kill_processes_of(uid: u32, gid: u32) -> Result<(), SweepError> {
    let fail = |reason: String| SweepError { uid, reason };
    let sweeper = || {
        let switched = sys::clear_supplementary_groups()
            .and_then(|_| sys::set_all_gids(gid))
            .and_then(|_| sys::set_all_uids(uid));
        if switched.is_err() {
            sys::exit_immediately(2);
        }
        loop {
            match kill(Pid::from_raw(-1), Signal::SIGKILL) {
                Ok(()) | Err(Errno::ESRCH) | Err(Errno::EPERM) => sys::exit_immediately(0),
                Err(Errno::EINTR) => {}
                Err(_) => sys::exit_immediately(3),
            }
        }
    };
    let (pid, _pidfd) = sys::spawn(0, &sweeper).map_err(|e| fail(format!("fork: {e}")))?;
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, 0)) => return Ok(()),
            Ok(WaitStatus::Exited(_, 2)) => return Err(fail("cannot switch to that user".into())),
            Ok(WaitStatus::Exited(_, 3)) => return Err(fail("kill(-1) failed".into())),
            Ok(other) => return Err(fail(format!("the sweeper ended with {other:?}"))),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(fail(format!("waiting for the sweeper: {e}"))),
        }
    }
}
