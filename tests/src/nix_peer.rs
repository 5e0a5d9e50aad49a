//! Nix 2.8's command-line tools as the peer the store and build tests
//! compare with, each run with a configuration of the test's own.

use std::path::PathBuf;
use std::process::Command;

use crate::TempDir;

/// Nix's tools with their own `NIX_CONF_DIR`.
pub struct NixPeer {
    conf: TempDir,
}

impl NixPeer {
    /// Nix with `conf` as its nix.conf; `None` (the test skipped, with the
    /// reason printed) when `nix-store` is missing, and a failed test then
    /// when `HERMETIC_REQUIRE_NIX` is set (CI installs Nix).
    pub fn or_skip(test: &str, conf: &str) -> Option<NixPeer> {
        let found = Command::new("nix-store")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            assert!(
                std::env::var_os("HERMETIC_REQUIRE_NIX").is_none(),
                "{test}: HERMETIC_REQUIRE_NIX is set but nix-store is missing (apt-get install nix-bin)"
            );
            eprintln!(
                "skipped {test}: no nix-store (scripts/setup-test-host installs Debian's nix-bin)"
            );
            return None;
        }
        let dir = TempDir::new("nix-conf");
        std::fs::write(dir.path.join("nix.conf"), conf).unwrap();
        Some(NixPeer { conf: dir })
    }

    /// The configuration directory.
    pub fn conf_dir(&self) -> PathBuf {
        self.conf.path.clone()
    }

    /// A Nix program, set up to use this configuration.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command
            .env("NIX_CONF_DIR", &self.conf.path)
            .env_remove("NIX_REMOTE");
        command
    }

    /// `nix-store --verify --check-contents` on the store under `root`.
    pub fn verify_store(&self, root: impl AsRef<std::path::Path>) -> std::process::Output {
        self.command("nix-store")
            .arg("--store")
            .arg(root.as_ref())
            .args(["--verify", "--check-contents"])
            .output()
            .unwrap()
    }

    /// The NAR hash Nix's tools read for `path` in the store under `root`.
    pub fn nar_hash(&self, root: &std::path::Path, path: &str) -> String {
        self.run(
            "nix-store",
            &["--store", root.to_str().unwrap(), "--query", "--hash", path],
        )
        .trim()
        .to_owned()
    }

    /// Runs a program (Nix's, or hermetic with the same configuration) and
    /// returns its stdout; fails the test if it fails.
    pub fn run(&self, program: &str, args: &[&str]) -> String {
        let out = self.command(program).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}
