//! A real OpenSSH server on a loopback port, for remote building: its own
//! host key, one generated client key that may log in as root, and the
//! `ssh` options (`NIX_SSHOPTS`) that reach it.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::TempDir;

/// OpenSSH's server, from Debian's openssh-server.
const SSHD: &str = "/usr/sbin/sshd";

/// A running `sshd`, stopped on drop.
pub struct Sshd {
    /// Its directory: keys, configuration, pid file, log.
    pub dir: TempDir,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
}

impl Sshd {
    /// Starts one, or `None` (the test skipped, with the reason printed)
    /// when OpenSSH's server is missing; a failed test then when
    /// `HERMETIC_REQUIRE_HOST_TOOLS` is set.
    pub fn start_or_skip(test: &str) -> Option<Sshd> {
        if !std::path::Path::new(SSHD).exists() {
            assert!(
                std::env::var_os("HERMETIC_REQUIRE_HOST_TOOLS").is_none(),
                "{test}: HERMETIC_REQUIRE_HOST_TOOLS is set but {SSHD} is missing \
                 (scripts/setup-test-host installs openssh-server)"
            );
            eprintln!("skipped {test}: no {SSHD} on this host");
            return None;
        }
        let dir = TempDir::new("sshd");
        let path = |name: &str| dir.path.join(name);
        for key in ["host_key", "client_key"] {
            let made = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(path(key))
                .status()
                .unwrap();
            assert!(made.success(), "ssh-keygen {key}");
        }
        std::fs::copy(path("client_key.pub"), path("authorized_keys")).unwrap();
        // A free port: bound, then let go for sshd.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::write(
            path("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\n\
                 AuthorizedKeysFile {}\nStrictModes no\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n",
                path("host_key").display(),
                path("sshd.pid").display(),
                path("authorized_keys").display(),
            ),
        )
        .unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let started = Command::new(SSHD)
            .arg("-f")
            .arg(path("sshd_config"))
            .arg("-E")
            .arg(path("sshd.log"))
            .status()
            .unwrap();
        assert!(started.success(), "sshd did not start");
        let sshd = Sshd { dir, port };
        let began = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                began.elapsed() < Duration::from_secs(20),
                "sshd does not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(sshd)
    }

    /// The client's private key.
    pub fn client_key(&self) -> PathBuf {
        self.dir.path.join("client_key")
    }

    /// The options `ssh` needs to reach it (Nix's `NIX_SSHOPTS`).
    pub fn ssh_opts(&self) -> String {
        format!(
            "-p {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
            self.port
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path.join("sshd.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}
