//! Supervision: the sandbox's output relayed as it comes, cancellation,
//! timeouts (B78), and how PID 1 ended.

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use hermetic_namespaces::Child;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::wait::{WaitStatus, waitpid};
use serde::Serialize;

use crate::error::SandboxError;
use crate::terminal::HostTerminal;

/// How the sandbox's PID 1 ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExitStatus {
    /// It exited with this status.
    Exited(i32),
    /// A signal killed it.
    Signaled(i32),
}

impl ExitStatus {
    /// The status as a shell shows it: the exit status, or 128 + signal.
    pub fn code(&self) -> i32 {
        match *self {
            ExitStatus::Exited(code) => code,
            ExitStatus::Signaled(signal) => 128 + signal,
        }
    }
}

/// Which time limit ended a run (B78).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct TimedOut {
    /// `max-silent-time` (no output for that long), else `timeout`.
    pub silence: bool,
    /// The limit, in seconds.
    pub seconds: u64,
}

impl std::fmt::Display for TimedOut {
    /// Lix's text, after the build's name.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.silence {
            write!(f, "timed out after {} seconds of silence", self.seconds)
        } else {
            write!(f, "timed out after {} seconds", self.seconds)
        }
    }
}

/// What to watch a running sandbox for.
pub(crate) struct Watch<'a> {
    /// PID 1.
    pub(crate) child: &'a Child,
    /// Readable: kill the sandbox, end the run.
    pub(crate) cancel: Option<BorrowedFd<'a>>,
    /// The caller's terminal, for `--shell`.
    pub(crate) terminal: Option<&'a HostTerminal>,
    /// `max-silent-time`.
    pub(crate) max_silent_time: Option<Duration>,
    /// `timeout`.
    pub(crate) timeout: Option<Duration>,
    /// Kills every process of the sandbox.
    pub(crate) kill: &'a dyn Fn(),
}

/// How a watched run ended.
pub(crate) struct Ended {
    pub(crate) status: ExitStatus,
    pub(crate) cancelled: bool,
    pub(crate) timed_out: Option<TimedOut>,
}

impl Watch<'_> {
    /// The next time limit to expire, if any.
    fn deadline(&self, started: Instant, last_output: Instant) -> Option<(Instant, TimedOut)> {
        let silent = self.max_silent_time.map(|limit| {
            (
                last_output + limit,
                TimedOut {
                    silence: true,
                    seconds: limit.as_secs(),
                },
            )
        });
        let total = self.timeout.map(|limit| {
            (
                started + limit,
                TimedOut {
                    silence: false,
                    seconds: limit.as_secs(),
                },
            )
        });
        [silent, total]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at)
    }
}

/// Relays the sandbox's output until PID 1 has exited, killing the sandbox
/// when `cancel` becomes readable or a time limit passes.
pub(crate) fn supervise(
    watch: &Watch<'_>,
    master: OwnedFd,
    output: &mut dyn Write,
) -> Result<Ended, SandboxError> {
    let mut relay = Relay {
        master,
        master_open: true,
        output,
        output_open: true,
    };
    let child = watch.child;
    let stdin = std::io::stdin();
    let mut stdin_open = watch.terminal.is_some();
    let mut cancelled = false;
    let mut timed_out = None;
    let started = Instant::now();
    let mut last_output = started;
    loop {
        let deadline = if cancelled || timed_out.is_some() {
            None
        } else {
            watch.deadline(started, last_output)
        };
        if let Some((at, which)) = deadline
            && at <= Instant::now()
        {
            tracing::debug!(%which, "killing the sandbox");
            (watch.kill)();
            timed_out = Some(which);
            continue;
        }
        let wait = match deadline {
            None => PollTimeout::NONE,
            Some((at, _)) => {
                let ms = at
                    .saturating_duration_since(Instant::now())
                    .as_millis()
                    .clamp(1, i32::MAX as u128);
                PollTimeout::try_from(ms as i32).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = vec![PollFd::new(child.pidfd.as_fd(), PollFlags::POLLIN)];
        let master_at = relay.master_open.then(|| {
            fds.push(PollFd::new(relay.master.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let cancel_at = watch.cancel.filter(|_| !cancelled).map(|fd| {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
            fds.len() - 1
        });
        let stdin_at = stdin_open.then(|| {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let winch_at = watch.terminal.map(|t| {
            fds.push(PollFd::new(t.winch.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        match poll(&mut fds, wait) {
            Err(Errno::EINTR) => continue,
            Err(errno) => return Err(SandboxError::io("waiting for the sandbox")(errno)),
            Ok(_) => {}
        }
        let ready =
            |at: Option<usize>| at.is_some_and(|i| fds[i].revents().is_some_and(|r| !r.is_empty()));
        let exited = ready(Some(0));
        let master_ready = ready(master_at);
        let cancel_ready = ready(cancel_at);
        let stdin_ready = ready(stdin_at);
        let winch_ready = ready(winch_at);
        drop(fds);

        if master_ready && relay.read_available() {
            last_output = Instant::now();
        }
        if cancel_ready {
            tracing::debug!("cancelled: killing the sandbox");
            (watch.kill)();
            cancelled = true;
        }
        if stdin_ready {
            stdin_open = relay.forward_input(stdin.as_fd());
        }
        if winch_ready && let Some(terminal) = watch.terminal {
            terminal.forward_window_size(relay.master.as_fd());
        }
        if exited {
            let status = match waitpid(child.pid, None)
                .map_err(SandboxError::io("waiting for the sandbox"))?
            {
                WaitStatus::Exited(_, code) => ExitStatus::Exited(code),
                WaitStatus::Signaled(_, signal, _) => ExitStatus::Signaled(signal as i32),
                other => {
                    tracing::warn!(?other, "unexpected wait status");
                    continue;
                }
            };
            // PID 1 is gone, and with it every process of its namespace:
            // what they wrote is in the pty's buffer. Do not wait for end of
            // file, which a descriptor smuggled out could delay forever.
            relay.read_available();
            return Ok(Ended {
                status,
                cancelled,
                timed_out,
            });
        }
    }
}

/// Copies the sandbox's terminal output to the caller.
struct Relay<'o> {
    master: OwnedFd,
    master_open: bool,
    output: &'o mut dyn Write,
    output_open: bool,
}

impl Relay<'_> {
    /// Reads everything the master has now and writes it out; says
    /// whether there was any.
    fn read_available(&mut self) -> bool {
        let mut buffer = [0u8; 65536];
        let mut any = false;
        while self.master_open {
            match nix::unistd::read(&self.master, &mut buffer) {
                Ok(0) | Err(Errno::EIO) => self.master_open = false,
                Ok(n) => {
                    any = true;
                    self.write(&buffer[..n]);
                }
                Err(Errno::EINTR) => {}
                Err(_) => break,
            }
        }
        any
    }

    fn write(&mut self, bytes: &[u8]) {
        if self.output_open
            && (self.output.write_all(bytes).is_err() || self.output.flush().is_err())
        {
            // The reader went away (a closed pipe): keep draining the
            // sandbox's output so that it never blocks, and drop it.
            self.output_open = false;
        }
    }

    /// Copies what the caller typed to the shell; false at end of input.
    fn forward_input(&mut self, stdin: BorrowedFd<'_>) -> bool {
        let mut buffer = [0u8; 4096];
        match nix::unistd::read(stdin, &mut buffer) {
            Ok(0) => false,
            Ok(n) => {
                let mut rest = &buffer[..n];
                while !rest.is_empty() {
                    match nix::unistd::write(&self.master, rest) {
                        Ok(written) => rest = &rest[written..],
                        Err(Errno::EAGAIN) | Err(Errno::EINTR) => {
                            let mut fds = [PollFd::new(self.master.as_fd(), PollFlags::POLLOUT)];
                            let _ = poll(&mut fds, PollTimeout::from(100u16));
                        }
                        Err(_) => return true,
                    }
                }
                true
            }
            Err(Errno::EINTR) | Err(Errno::EAGAIN) => true,
            Err(_) => false,
        }
    }
}
