//! A machine's store reached with the system's OpenSSH client, as Nix's
//! `ssh-ng://` store reaches it: `ssh HOST -x -a [NIX_SSHOPTS] [-i KEY]
//! [-o UserKnownHostsFile=…] 'PROGRAM --stdio'`, the worker protocol on
//! its stdin and stdout. What ssh and the remote program say on stderr is
//! kept for the error of a failed connection.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use crate::client::{ClientError, DaemonClient};
use crate::machines::Machine;

/// Why a machine's store could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// Its URI is not one hermetic reaches.
    #[error(
        "'{0}' is not an ssh-ng:// store: hermetic builds remotely only over ssh-ng:// (Nix's \
         worker protocol), not yet ssh:// (the legacy serve protocol)"
    )]
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

/// An open connection to a machine's daemon: the client, and the `ssh`
/// process, which ends when this is dropped.
pub struct SshStore {
    /// The worker protocol's client.
    pub client: DaemonClient,
    child: Child,
    stderr: Arc<Mutex<Vec<u8>>>,
    _known_hosts: Option<KnownHosts>,
}

/// The host key of a machine as a known-hosts file of its own, removed
/// when dropped.
struct KnownHosts(std::path::PathBuf);

impl Drop for KnownHosts {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The `ssh` command that runs `PROGRAM --stdio` on `machine`, `ssh_opts`
/// being `NIX_SSHOPTS`'s words, and the store's URI without its query
/// (the host, for messages).
pub fn command(
    machine: &Machine,
    ssh_opts: &str,
    known_hosts: Option<&std::path::Path>,
) -> Result<Command, SshError> {
    let rest = machine
        .store_uri
        .strip_prefix("ssh-ng://")
        .ok_or_else(|| SshError::Unsupported(machine.store_uri.clone()))?;
    let (host, query) = rest.split_once('?').unwrap_or((rest, ""));
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
            .map(percent_decode)
    };
    let program = param("remote-program").unwrap_or_else(|| "nix-daemon".to_owned());
    let mut remote = format!("{program} --stdio");
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
    /// Logs in to `machine` and greets its daemon.
    pub fn open(machine: &Machine) -> Result<SshStore, SshError> {
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
        if let Some(mut pipe) = child.stderr.take() {
            let kept = stderr.clone();
            std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buffer) {
                    if n == 0 {
                        break;
                    }
                    let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                    // Enough to say why; a chatty remote cannot fill memory.
                    if kept.len() < 64 * 1024 {
                        kept.extend_from_slice(&buffer[..n]);
                    }
                }
            });
        }
        let (Some(from), Some(to)) = (child.stdout.take(), child.stdin.take()) else {
            unreachable!("both are piped above")
        };
        let uri = machine.store_uri.clone();
        match DaemonClient::over(uri.clone(), Box::new(from), Box::new(to)) {
            Ok(client) => Ok(SshStore {
                client,
                child,
                stderr,
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

    /// What ssh and the remote program said on stderr so far.
    pub fn said(&self) -> String {
        said_text(&self.stderr)
    }
}

impl Drop for SshStore {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn said_text(stderr: &Mutex<Vec<u8>>) -> String {
    let bytes = stderr.lock().unwrap_or_else(|e| e.into_inner());
    String::from_utf8_lossy(&bytes).trim().to_owned()
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

/// `%XX` escapes decoded, as Nix decodes a store URI's parameters.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&a), Some(&b)) if hex(a).is_some() && hex(b).is_some() => {
                out.push((hex(a).unwrap_or(0) * 16 + hex(b).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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
        let legacy = crate::machines::parse("host", "s", &mut |_| None).unwrap();
        assert!(matches!(
            command(&legacy[0], "", None),
            Err(SshError::Unsupported(uri)) if uri == "ssh://host"
        ));
    }
}
