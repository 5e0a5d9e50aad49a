//! pasta networking for fixed-output builds (Lix's `pasta-path`, B60):
//! pasta runs outside the sandbox, joins the sandbox's network namespace by
//! descriptor, and bridges it to the host with user-mode TCP and UDP only.
//! Inside, the builder sees `eth0` with 169.254.1.2/16, the gateway and DNS
//! at 169.254.1.1 (and their IPv6 counterparts), and nothing of the
//! host's network namespace: not its abstract Unix sockets, not its other
//! interfaces.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The interface inside the sandbox.
pub const NS_IFNAME: &str = "eth0";
/// The host side (gateway and DNS), IPv4.
pub const HOST_IPV4: &str = "169.254.1.1";
/// The sandbox's address, IPv4.
pub const CHILD_IPV4: &str = "169.254.1.2";
/// The IPv4 netmask.
pub const IPV4_NETMASK: &str = "16";
/// The host side (gateway and DNS), IPv6.
pub const HOST_IPV6: &str = "64:ff9b:1:4b8e:472e:a5c8:a9fe:0101";
/// The sandbox's address, IPv6.
pub const CHILD_IPV6: &str = "64:ff9b:1:4b8e:472e:a5c8:a9fe:0102";
/// The tun device pasta opens.
pub const TUN: &str = "/dev/net/tun";
/// How long the network may take to come up (Lix's limit).
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(120);

/// Why pasta did not give the sandbox its network. The texts are Lix's.
#[derive(Debug, thiserror::Error)]
pub enum PastaError {
    /// A namespace of the sandbox could not be opened.
    #[error("failed to open {what} of process {pid}")]
    Namespace {
        /// Which namespace.
        what: &'static str,
        /// The sandbox's first process.
        pid: i32,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// pasta could not be started.
    #[error("could not exec pasta '{path}'")]
    Exec {
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// pasta exited before the network was up.
    #[error("pasta exited with code {0}")]
    Exited(i32),
    /// pasta was killed before the network was up.
    #[error("pasta killed by signal {0}")]
    Killed(i32),
    /// pasta, running as the build user, could not open the tun device.
    #[error(
        "pasta cannot open /dev/net/tun as the build user (its mode is {0:o}): give it mode 0666, as udev does on most distributions, or unset 'pasta-path'"
    )]
    TunInaccessible(u32),
    /// The network did not come up in time.
    #[error("sandbox network setup timed out, please check daemon logs for possible error output.")]
    TimedOut,
}

/// A running pasta; killed (SIGKILL, as Lix does) and reaped when dropped.
#[derive(Debug)]
pub struct Pasta {
    child: Child,
}

/// The arguments pasta gets: its namespaces as descriptors 0 (network) and
/// 1 (user, when it must join one).
pub fn arguments(join_user_namespace: bool) -> Vec<String> {
    let mut args: Vec<String> = [
        "--quiet",
        "--foreground",
        "--config-net",
        "--gateway",
        HOST_IPV4,
        "--address",
        CHILD_IPV4,
        "--netmask",
        IPV4_NETMASK,
        "--dns-forward",
        HOST_IPV4,
        "--gateway",
        HOST_IPV6,
        "--address",
        CHILD_IPV6,
        "--dns-forward",
        HOST_IPV6,
        "--ns-ifname",
        NS_IFNAME,
        "--no-netns-quit",
        "--netns",
        "/proc/self/fd/0",
    ]
    .map(String::from)
    .to_vec();
    if join_user_namespace {
        args.extend(["--userns".to_owned(), "/proc/self/fd/1".to_owned()]);
    }
    args
}

impl Pasta {
    /// Starts pasta for the sandbox whose first process is `pid` and waits
    /// until its interface has a route (pasta configured it), or pasta
    /// ended, or the time ran out.
    pub fn start(
        pasta: &Path,
        pid: i32,
        join_user_namespace: bool,
        run_as: Option<(u32, u32)>,
    ) -> Result<Pasta, PastaError> {
        let open = |what: &'static str, ns: &str| {
            File::open(format!("/proc/{pid}/ns/{ns}")).map_err(|source| PastaError::Namespace {
                what,
                pid,
                source,
            })
        };
        if run_as.is_some() {
            use std::os::unix::fs::MetadataExt;
            let mode = std::fs::metadata(TUN)
                .map(|m| m.mode() & 0o7777)
                .unwrap_or(0);
            if mode & 0o006 != 0o006 {
                return Err(PastaError::TunInaccessible(mode));
            }
        }
        let netns = open("the network namespace", "net")?;
        let stdout = if join_user_namespace {
            Stdio::from(open("the user namespace", "user")?)
        } else {
            Stdio::null()
        };
        // Run by root, pasta would drop to "nobody" before it could join
        // the namespace: like Lix, run it as the build user with just the
        // capabilities it needs, ambient (setpriv, from util-linux): to join
        // the namespace, and to make its tap device there (the sandbox's
        // network namespace belongs to the initial user namespace when
        // hermetic runs as root).
        let mut command = match run_as {
            Some((uid, gid)) => {
                let mut setpriv = Command::new("setpriv");
                setpriv
                    .arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg("--inh-caps=-all,+sys_admin,+net_admin,+net_bind_service")
                    .arg("--ambient-caps=-all,+sys_admin,+net_admin,+net_bind_service")
                    .arg("--")
                    .arg(pasta);
                setpriv
            }
            None => Command::new(pasta),
        };
        let child = command
            .args(arguments(join_user_namespace))
            .stdin(Stdio::from(netns))
            .stdout(stdout)
            .spawn()
            .map_err(|source| PastaError::Exec {
                path: pasta.to_owned(),
                source,
            })?;
        let mut pasta = Pasta { child };
        pasta.wait_until_up(pid)?;
        Ok(pasta)
    }

    fn wait_until_up(&mut self, pid: i32) -> Result<(), PastaError> {
        let started = Instant::now();
        let routes = PathBuf::from(format!("/proc/{pid}/net/route"));
        let ipv6_routes = PathBuf::from(format!("/proc/{pid}/net/ipv6_route"));
        loop {
            let has_route = |path: &Path| {
                std::fs::read_to_string(path).is_ok_and(|text| {
                    text.lines()
                        .any(|line| line.split_whitespace().any(|field| field == NS_IFNAME))
                })
            };
            if has_route(&routes) || has_route(&ipv6_routes) {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                use std::os::unix::process::ExitStatusExt;
                return Err(match status.signal() {
                    Some(signal) => PastaError::Killed(signal),
                    None => PastaError::Exited(status.code().unwrap_or(-1)),
                });
            }
            if started.elapsed() > SETUP_TIMEOUT {
                return Err(PastaError::TimedOut);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Pasta {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sandbox's `resolv.conf`: the host's, with every `nameserver` line
/// replaced by pasta's two DNS forwarders (Lix).
pub fn resolv_conf(host: &str) -> String {
    let mut out = String::new();
    let mut replaced = false;
    for line in host.lines() {
        if line.trim_start().starts_with("nameserver") {
            if !replaced {
                out.push_str(&format!("nameserver {HOST_IPV4}\nnameserver {HOST_IPV6}\n"));
                replaced = true;
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !replaced {
        out.push_str(&format!("nameserver {HOST_IPV4}\nnameserver {HOST_IPV6}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_become_pasta_s() {
        assert_eq!(
            resolv_conf("search example.org\nnameserver 10.0.0.1\nnameserver ::1\noptions edns0\n"),
            format!(
                "search example.org\nnameserver {HOST_IPV4}\nnameserver {HOST_IPV6}\noptions edns0\n"
            )
        );
        assert!(arguments(true).ends_with(&["--userns".to_owned(), "/proc/self/fd/1".to_owned()]));
    }
}
