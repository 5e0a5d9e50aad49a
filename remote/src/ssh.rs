//! A machine's store reached with the system's OpenSSH client, as Nix's
//! `ssh-ng://` and `ssh://` stores reach it: `ssh HOST -x -a [NIX_SSHOPTS]
//! [-i KEY] [-o UserKnownHostsFile=…] 'PROGRAM ARGS'`, the worker protocol
//! (`nix-daemon --stdio`) or the legacy serve protocol (`nix-store --serve
//! --write`) on its stdin and stdout. What ssh and the remote program say
//! on stderr (the build's log, for `ssh://`) is passed on as it comes and
//! its end kept for the error of a failed connection.

use std::os::fd::{AsFd, BorrowedFd};

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::client::{
    ClientError, ClientOptions, DaemonClient, Said, WireBuildResult, WireDerivation, WirePathInfo,
};
use crate::machines::Machine;
use crate::serve_client::{BuildLimits, ServeClient};

/// Why a machine's store could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// Its URI is not one hermetic reaches.
    #[error("'{0}' is not an ssh-ng:// or ssh:// store: hermetic builds remotely only over ssh")]
    Unsupported(String),
    /// `ssh` could not be started.
    #[error("cannot run ssh")]
    Spawn(#[source] std::io::Error),
    /// Its host key could not be written for ssh.
    #[error("cannot write the host key of '{uri}' for ssh: {problem}")]
    HostKey {
        /// The machine.
        uri: String,
        /// What went wrong.
        problem: String,
    },
    /// The greeting failed; what ssh said, if anything.
    #[error("cannot open connection to remote store '{uri}': {source}{said}")]
    Greeting {
        /// The machine.
        uri: String,
        /// The protocol's error.
        #[source]
        source: ClientError,
        /// ssh's stderr, after `: `, or empty.
        said: String,
    },
}

/// A machine's store as its URI's protocol reaches it.
pub enum RemoteClient {
    /// `ssh-ng://`: the worker protocol.
    Worker(DaemonClient),
    /// `ssh://`: the legacy serve protocol.
    Serve(ServeClient),
}

impl RemoteClient {
    /// Which of `paths` are valid there, after it fetched what it could
    /// from its substituters if `substitute`.
    pub fn query_valid_paths(
        &mut self,
        paths: &std::collections::BTreeSet<String>,
        substitute: bool,
        said: &mut dyn FnMut(Said),
    ) -> Result<std::collections::BTreeSet<String>, ClientError> {
        match self {
            Self::Worker(client) => client.query_valid_paths(paths, substitute, said),
            Self::Serve(client) => client.query_valid_paths(paths, substitute),
        }
    }

    /// Adds `path` with its metadata and its NAR.
    pub fn add_to_store_nar(
        &mut self,
        path: &str,
        info: &WirePathInfo,
        nar: crate::client::WriteNar<'_>,
        said: &mut dyn FnMut(Said),
    ) -> Result<(), ClientError> {
        match self {
            Self::Worker(client) => client.add_to_store_nar(path, info, nar, said),
            Self::Serve(client) => client.add_to_store_nar(path, info, nar),
        }
    }

    /// Builds `drv` there within `limits`.
    pub fn build_derivation(
        &mut self,
        drv_path: &str,
        drv: &WireDerivation,
        limits: BuildLimits,
        said: &mut dyn FnMut(Said),
    ) -> Result<WireBuildResult, ClientError> {
        match self {
            Self::Worker(client) => {
                // The limits go as the client's settings, as Nix's
                // remote store sends them.
                let options = ClientOptions {
                    build_output: true,
                    max_jobs: 1,
                    max_silent_time: limits.max_silent_time,
                    overrides: if limits.timeout > 0 {
                        vec![("timeout".into(), limits.timeout.to_string())]
                    } else {
                        Vec::new()
                    },
                    ..ClientOptions::default()
                };
                client.set_options(&options, said)?;
                client.build_derivation(drv_path, drv, said)
            }
            Self::Serve(client) => client.build_derivation(drv_path, drv, limits),
        }
    }

    /// A valid path's metadata, or `None`.
    pub fn query_path_info(
        &mut self,
        path: &str,
        said: &mut dyn FnMut(Said),
    ) -> Result<Option<WirePathInfo>, ClientError> {
        match self {
            Self::Worker(client) => client.query_path_info(path, said),
            Self::Serve(client) => client.query_path_info(path),
        }
    }

    /// Asks for a valid path's NAR: read it with [`RemoteClient::nar`].
    pub fn nar_from_path(
        &mut self,
        path: &str,
        said: &mut dyn FnMut(Said),
    ) -> Result<(), ClientError> {
        match self {
            Self::Worker(client) => client.nar_from_path(path, said),
            Self::Serve(client) => client.dump_store_path(path),
        }
    }

    /// The NAR asked for, `nar_size` bytes.
    pub fn nar(&mut self, nar_size: u64) -> Box<dyn Read + '_> {
        match self {
            Self::Worker(client) => Box::new(client.nar(nar_size)),
            Self::Serve(client) => Box::new(client.nar(nar_size)),
        }
    }
}

/// An open connection to a machine's store: the client, and the `ssh`
/// process, which ends when this is dropped.
pub struct SshStore {
    /// The machine's store URI.
    pub uri: String,
    /// The store's client.
    pub client: RemoteClient,
    child: Child,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// Where stderr goes: the build it serves now.
    on_line: Arc<Mutex<StderrSink>>,
    _known_hosts: Option<KnownHosts>,
}

/// What takes what a machine says on stderr, as it comes.
pub type StderrSink = Box<dyn FnMut(&[u8]) + Send>;

/// The host key of a machine as a known-hosts file of its own, removed
/// when dropped.
struct KnownHosts(std::path::PathBuf);

impl Drop for KnownHosts {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Whether a machine speaks the worker protocol (`ssh-ng://`) or the
/// serve protocol (`ssh://`); `None` for other stores.
fn speaks_worker(uri: &str) -> Option<bool> {
    if uri.starts_with("ssh-ng://") {
        Some(true)
    } else if uri.starts_with("ssh://") {
        Some(false)
    } else {
        None
    }
}

/// The `ssh` command that runs the store's program on `machine`
/// (`remote-program --stdio`, `nix-daemon` by default, for `ssh-ng://`;
/// `remote-program --serve --write`, `nix-store` by default, for
/// `ssh://`), `ssh_opts` being `NIX_SSHOPTS`'s words.
pub fn command(
    machine: &Machine,
    ssh_opts: &str,
    known_hosts: Option<&std::path::Path>,
) -> Result<Command, SshError> {
    let unsupported = || SshError::Unsupported(machine.store_uri.clone());
    let worker = speaks_worker(&machine.store_uri).ok_or_else(unsupported)?;
    let rest = machine
        .store_uri
        .split_once("://")
        .map(|(_, rest)| rest)
        .ok_or_else(unsupported)?;
    let (host, query) = rest.split_once('?').unwrap_or((rest, ""));
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
            .map(|text| {
                percent_encoding::percent_decode_str(text)
                    .decode_utf8_lossy()
                    .into_owned()
            })
    };
    let mut remote = if worker {
        let program = param("remote-program").unwrap_or_else(|| "nix-daemon".to_owned());
        format!("{program} --stdio")
    } else {
        let program = param("remote-program").unwrap_or_else(|| "nix-store".to_owned());
        format!("{program} --serve --write")
    };
    if let Some(store) = param("remote-store") {
        remote.push_str(&format!(" --store {}", shell_quote(&store)));
    }
    let mut ssh = Command::new("ssh");
    ssh.args([host, "-x", "-a"]);
    ssh.args(ssh_opts.split_whitespace());
    if let Some(key) = param("ssh-key").or_else(|| machine.ssh_key.clone()) {
        ssh.args(["-i", &key]);
    }
    if let Some(file) = known_hosts {
        ssh.arg(format!("-oUserKnownHostsFile={}", file.display()));
    }
    ssh.arg(remote);
    Ok(ssh)
}

impl SshStore {
    /// Logs in to `machine` and greets its store; what the remote side
    /// says on stderr goes to `line` as it comes.
    pub fn open(machine: &Machine, line: StderrSink) -> Result<SshStore, SshError> {
        let known_hosts = match &machine.host_key {
            Some(key) => Some(write_known_hosts(machine, key)?),
            None => None,
        };
        let ssh_opts = std::env::var("NIX_SSHOPTS").unwrap_or_default();
        let mut child = command(
            machine,
            &ssh_opts,
            known_hosts.as_ref().map(|k| k.0.as_path()),
        )?
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(SshError::Spawn)?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let on_line = Arc::new(Mutex::new(line));
        if let Some(mut pipe) = child.stderr.take() {
            let kept = stderr.clone();
            let on_line = on_line.clone();
            std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buffer) {
                    if n == 0 {
                        break;
                    }
                    (on_line.lock().unwrap_or_else(|e| e.into_inner()))(&buffer[..n]);
                    // The end of it, for an error: a chatty remote cannot
                    // fill memory.
                    let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                    kept.extend_from_slice(&buffer[..n]);
                    let excess = kept.len().saturating_sub(KEPT_STDERR);
                    kept.drain(..excess);
                }
            });
        }
        let (Some(from), Some(to)) = (child.stdout.take(), child.stdin.take()) else {
            unreachable!("both are piped above")
        };
        let uri = machine.store_uri.clone();
        let greeted = if speaks_worker(&uri) == Some(true) {
            DaemonClient::over(uri.clone(), Box::new(from), Box::new(to)).map(RemoteClient::Worker)
        } else {
            ServeClient::over(uri.clone(), Box::new(from), Box::new(to)).map(RemoteClient::Serve)
        };
        match greeted {
            Ok(client) => Ok(SshStore {
                uri,
                client,
                child,
                stderr,
                on_line,
                _known_hosts: known_hosts,
            }),
            Err(source) => {
                // ssh has said what it will: wait for it.
                let _ = child.wait();
                let said = said_text(&stderr);
                Err(SshError::Greeting {
                    uri,
                    source,
                    said: if said.is_empty() {
                        String::new()
                    } else {
                        format!(": {said}")
                    },
                })
            }
        }
    }

    /// The last lines ssh and the remote program said on stderr.
    pub fn said(&self) -> String {
        said_text(&self.stderr)
    }

    /// Sends what stderr says to `line` from now on (the next build's
    /// log).
    pub fn redirect(&self, line: StderrSink) {
        *self.on_line.lock().unwrap_or_else(|e| e.into_inner()) = line;
    }

    /// Runs `work` on this connection; if `cancel` becomes readable
    /// meanwhile, `ssh` is ended, so that the machine sees its client hang
    /// up (and stops the build there) and `work` fails on the broken
    /// connection.
    pub fn cancellable<T>(
        &mut self,
        cancel: Option<BorrowedFd<'_>>,
        work: impl FnOnce(&mut Self) -> T,
    ) -> T {
        let Some(cancel) = cancel else {
            return work(self);
        };
        let Ok((stop_r, stop_w)) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) else {
            return work(self);
        };
        // The child is reaped only when this store is dropped, after the
        // watch ended: its pid names it all along.
        let ssh = nix::unistd::Pid::from_raw(self.child.id() as i32);
        std::thread::scope(|scope| {
            scope.spawn(move || {
                let mut fds = [
                    PollFd::new(cancel, PollFlags::POLLIN),
                    PollFd::new(stop_r.as_fd(), PollFlags::POLLIN),
                ];
                loop {
                    match poll(&mut fds, PollTimeout::NONE) {
                        Err(nix::errno::Errno::EINTR) => continue,
                        Err(_) => return,
                        Ok(_) => {}
                    }
                    if fds[1].revents().is_none_or(|r| !r.is_empty()) {
                        return;
                    }
                    if fds[0].revents().is_none_or(|r| !r.is_empty()) {
                        // Killed, as a dropped connection is: ssh was seen
                        // holding SIGTERM blocked and going on.
                        let _ = nix::sys::signal::kill(ssh, nix::sys::signal::Signal::SIGKILL);
                        return;
                    }
                }
            });
            let result = work(self);
            let _ = nix::unistd::write(&stop_w, b"x");
            result
        })
    }

    /// Whether `ssh` still runs: a connection to use again.
    pub fn is_open(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for SshStore {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How much of the end of a machine's stderr is kept for errors.
const KEPT_STDERR: usize = 16 * 1024;

/// The last lines a machine said on stderr, for an error.
fn said_text(stderr: &Mutex<Vec<u8>>) -> String {
    let bytes = stderr.lock().unwrap_or_else(|e| e.into_inner());
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.trim().lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// `HOST KEY` in a file of its own, for `UserKnownHostsFile`: the key is
/// base64 of the host's public key line, as Nix's machine format has it.
fn write_known_hosts(machine: &Machine, key: &str) -> Result<KnownHosts, SshError> {
    let bad = |problem: String| SshError::HostKey {
        uri: machine.store_uri.clone(),
        problem,
    };
    let line = hermetic_store::hash::decode_base64(key)
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| bad("the host key is not base64 of a public key line".into()))?;
    let rest = machine.store_uri.split_once("://").map_or("", |(_, r)| r);
    let authority = rest.split(['?', '/']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let file = std::env::temp_dir().join(format!(
        "hermetic-known-hosts-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::write(&file, format!("{host} {}\n", line.trim())).map_err(|e| bad(e.to_string()))?;
    Ok(KnownHosts(file))
}

/// `text` as one word for the remote shell.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_is_nixs() {
        let machines = crate::machines::parse(
            "ssh-ng://me@host?remote-program=/opt/h%20d&remote-store=/r%27s s /key",
            "s",
            &mut |_| None,
        )
        .unwrap();
        let ssh = command(&machines[0], "-p 2222  -o X=y", None).unwrap();
        let args: Vec<_> = ssh
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "me@host",
                "-x",
                "-a",
                "-p",
                "2222",
                "-o",
                "X=y",
                "-i",
                "/key",
                "/opt/h d --stdio --store '/r'\\''s'"
            ]
        );
        let legacy = crate::machines::parse("me@host s", "s", &mut |_| None).unwrap();
        let ssh = command(&legacy[0], "", None).unwrap();
        let args: Vec<_> = ssh
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(args, ["me@host", "-x", "-a", "nix-store --serve --write"]);
        let local = crate::machines::parse("daemon", "s", &mut |_| None).unwrap();
        assert!(matches!(
            command(&local[0], "", None),
            Err(SshError::Unsupported(uri)) if uri == "daemon"
        ));
    }
}
