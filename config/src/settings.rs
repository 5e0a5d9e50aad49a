//! The settings of builds by their nix.conf names and aliases: who a build
//! runs as and how it ends (B25–B29, B78, B80), whether and how it is
//! sandboxed (B1–B11, B41–B43, B50, B56, B60, D4), what the machine offers
//! (`system`, `extra-platforms`, `system-features`), the build loop
//! (`max-jobs`, `cores`, `keep-failed`, `keep-going`) and its hooks (B55,
//! B89, `post-build-hook`); plus two of hermetic's own:
//!
//! * `max-build-pids`: most processes (and threads) a build may have at
//!   once, 0 for no limit; needs `use-cgroups`;
//! * `max-build-memory`: most memory a build may hold, in bytes with an
//!   optional K, M, G or T suffix (powers of 1024), 0 for no limit; needs
//!   `use-cgroups`. A build over it has processes killed by the kernel.

use std::path::PathBuf;

use hermetic_uidmap::pool::{DEFAULT_ID_COUNT, DEFAULT_START_ID, PoolConfig};
use serde::Serialize;

/// The settings of a build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Settings {
    /// `build-users-group`: default `nixbld` when running as root.
    pub build_users_group: String,
    /// `auto-allocate-uids`.
    pub auto_allocate_uids: bool,
    /// `start-id`.
    pub start_id: u32,
    /// `id-count`.
    pub id_count: u32,
    /// `use-cgroups`.
    pub use_cgroups: bool,
    /// `max-silent-time`, seconds (0: none).
    pub max_silent_time: u64,
    /// `timeout`, seconds (0: none).
    pub timeout: u64,
    /// `max-build-pids` (0: none).
    pub max_build_pids: u64,
    /// `max-build-memory`, bytes (0: none).
    pub max_build_memory: u64,
    /// The host-wide state directory (`NIX_STATE_DIR`, `/nix/var/nix`):
    /// build-user locks and cgroup records live below it, whatever store a
    /// build is for, so that builds for different stores (and Nix's, whose
    /// user pool is `<state>/userpool` too) never share a build user.
    pub state_dir: PathBuf,
    /// `sandbox` (aliases `build-use-chroot`, `build-use-sandbox`).
    pub sandbox: SandboxMode,
    /// `sandbox-fallback`.
    pub sandbox_fallback: bool,
    /// `sandbox-paths` (aliases `build-chroot-dirs`, `build-sandbox-paths`),
    /// in Nix's syntax; the default binds `/bin/sh` to a static shell.
    pub sandbox_paths: Vec<String>,
    /// `sandbox-build-dir`.
    pub sandbox_build_dir: String,
    /// `sandbox-dev-shm-size`.
    pub sandbox_dev_shm_size: String,
    /// `sandbox-block-nested-userns` (D4).
    pub sandbox_block_nested_userns: bool,
    /// `filter-syscalls`.
    pub filter_syscalls: bool,
    /// `system`.
    pub system: String,
    /// `extra-platforms`: other systems this machine builds for.
    pub extra_platforms: Vec<String>,
    /// `system-features`.
    pub system_features: Vec<String>,
    /// `max-jobs` (alias `build-max-jobs`): builds at once.
    pub max_jobs: usize,
    /// `cores` (alias `build-cores`): `NIX_BUILD_CORES`; 0 is every CPU.
    pub cores: usize,
    /// `keep-failed`: keep a failed build's directory.
    pub keep_failed: bool,
    /// `keep-going`: build what can be built after a failure.
    pub keep_going: bool,
    /// `pasta-path` (Lix): pasta for fixed-output builds' network.
    pub pasta_path: String,
    /// `allowed-impure-host-deps` (B56).
    pub allowed_impure_host_deps: Vec<String>,
    /// `pre-build-hook` (B55).
    pub pre_build_hook: String,
    /// `post-build-hook`: run after each successful build with `DRV_PATH`
    /// and `OUT_PATHS`.
    pub post_build_hook: String,
    /// `diff-hook` (B89).
    pub diff_hook: String,
    /// `run-diff-hook` (B89).
    pub run_diff_hook: bool,
    /// `ssl-cert-file`: the CA bundle fixed-output builds get (B36).
    pub ssl_cert_file: String,
    /// `allowed-users` (B91): who may connect to the daemon.
    pub allowed_users: Vec<String>,
    /// `trusted-users` (B91): who may connect with root's say.
    pub trusted_users: Vec<String>,
    /// `require-sigs` (B96): paths a client copies in must be signed (or
    /// content-addressed).
    pub require_sigs: bool,
    /// `trusted-public-keys` (alias `binary-cache-public-keys`).
    pub trusted_public_keys: Vec<String>,
    /// hermetic's own `allow-client-root-commands`: whether clients (even
    /// trusted ones) may set the settings that make the daemon run a
    /// command as root or choose the build users.
    pub allow_client_root_commands: bool,
    /// `keep-build-log`: write each build's log under the log directory.
    pub keep_build_log: bool,
    /// `compress-build-log`: those logs bzip2-compressed (`.bz2`).
    pub compress_build_log: bool,
    /// `secret-key-files`: the keys each built path is signed with.
    pub secret_key_files: Vec<String>,
    /// `hashed-mirrors`: where `builtin:fetchurl` looks for a flat file by
    /// its hash (`<mirror>/<algo>/<hex>`) before its URL.
    pub hashed_mirrors: Vec<String>,
    /// `log-lines`: how many of a failed build's last log lines the
    /// daemon's error for it ends with.
    pub log_lines: usize,
    /// `auto-optimise-store`: hard-link each new output's files to
    /// identical ones already in the store.
    pub auto_optimise_store: bool,
}

/// The `sandbox` setting (B1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SandboxMode {
    /// Every build in a sandbox.
    True,
    /// Fixed-output and `__noChroot` builds without one.
    Relaxed,
    /// No build in a sandbox.
    False,
}

/// Whether a setting takes a list (so `extra-<name>` appends to it).
pub fn is_list_setting(name: &str) -> bool {
    matches!(
        canonical_name(name),
        "sandbox-paths"
            | "extra-platforms"
            | "system-features"
            | "allowed-impure-host-deps"
            | "allowed-users"
            | "trusted-users"
            | "trusted-public-keys"
            | "secret-key-files"
            | "hashed-mirrors"
    )
}

/// The setting an alias names.
pub fn canonical_name(name: &str) -> &str {
    match name {
        "build-use-chroot" | "build-use-sandbox" => "sandbox",
        "build-chroot-dirs" | "build-sandbox-paths" => "sandbox-paths",
        "build-max-silent-time" => "max-silent-time",
        "build-timeout" => "timeout",
        "build-max-jobs" => "max-jobs",
        "build-cores" => "cores",
        "build-keep-failed" => "keep-failed",
        "binary-cache-public-keys" => "trusted-public-keys",
        "build-keep-log" => "keep-build-log",
        "build-compress-log" => "compress-build-log",
        other => other,
    }
}

/// Why a setting was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// Nix's text for a name it does not know (a warning in Nix).
    #[error("unknown setting '{0}'")]
    Unknown(String),
    /// A value of the wrong shape.
    #[error("invalid value '{value}' for '{name}': expected {expected}")]
    Invalid {
        /// The setting.
        name: String,
        /// The value given.
        value: String,
        /// What it should look like.
        expected: &'static str,
    },
}

/// A Boolean as Nix reads one: `true`, `yes`, `1`; `false`, `no`, `0`.
fn boolean(name: &str, value: &str) -> Result<bool, SettingsError> {
    match value {
        "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        _ => Err(SettingsError::Invalid {
            name: name.into(),
            value: value.into(),
            expected: "true or false (or yes, no, 1, 0)",
        }),
    }
}

fn number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, SettingsError> {
    value.parse().map_err(|_| SettingsError::Invalid {
        name: name.into(),
        value: value.into(),
        expected: "a whole number",
    })
}

/// Bytes, with an optional K, M, G or T suffix (powers of 1024).
fn bytes(name: &str, value: &str) -> Result<u64, SettingsError> {
    let invalid = || SettingsError::Invalid {
        name: name.into(),
        value: value.into(),
        expected: "a size in bytes, such as 512M or 2G",
    };
    let (digits, shift) = match value.chars().last() {
        Some('K' | 'k') => (&value[..value.len() - 1], 10),
        Some('M' | 'm') => (&value[..value.len() - 1], 20),
        Some('G' | 'g') => (&value[..value.len() - 1], 30),
        Some('T' | 't') => (&value[..value.len() - 1], 40),
        _ => (value, 0),
    };
    let n: u64 = digits.parse().map_err(|_| invalid())?;
    n.checked_mul(1 << shift).ok_or_else(invalid)
}

impl Settings {
    /// The defaults for this process (`build-users-group` is `nixbld` for
    /// root, empty otherwise; the state directory is `NIX_STATE_DIR` or
    /// `/nix/var/nix`).
    pub fn for_caller() -> Settings {
        let root = nix::unistd::geteuid().is_root();
        Settings {
            build_users_group: if root { "nixbld".into() } else { String::new() },
            auto_allocate_uids: false,
            start_id: DEFAULT_START_ID,
            id_count: DEFAULT_ID_COUNT,
            use_cgroups: false,
            max_silent_time: 0,
            timeout: 0,
            max_build_pids: 0,
            max_build_memory: 0,
            state_dir: std::env::var_os("NIX_STATE_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/nix/var/nix")),
            sandbox: SandboxMode::True,
            sandbox_fallback: true,
            sandbox_paths: default_sandbox_paths().to_vec(),
            sandbox_build_dir: "/build".into(),
            sandbox_dev_shm_size: "50%".into(),
            sandbox_block_nested_userns: false,
            filter_syscalls: true,
            system: crate::spec::host_system(),
            extra_platforms: default_extra_platforms(),
            system_features: default_system_features(),
            max_jobs: 1,
            cores: 0,
            keep_failed: false,
            keep_going: false,
            pasta_path: String::new(),
            allowed_impure_host_deps: Vec::new(),
            pre_build_hook: String::new(),
            post_build_hook: String::new(),
            diff_hook: String::new(),
            run_diff_hook: false,
            ssl_cert_file: default_ssl_cert_file(),
            allowed_users: vec!["*".into()],
            trusted_users: vec!["root".into()],
            allow_client_root_commands: false,
            keep_build_log: true,
            compress_build_log: true,
            auto_optimise_store: false,
            secret_key_files: Vec::new(),
            hashed_mirrors: Vec::new(),
            log_lines: 10,
            require_sigs: true,
            trusted_public_keys: vec![
                "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=".into(),
            ],
        }
    }

    /// Appends to a list setting (`extra-<name>`).
    pub fn append(&mut self, name: &str, value: &str) -> Result<(), SettingsError> {
        let words = value.split_whitespace().map(str::to_owned);
        match canonical_name(name) {
            "sandbox-paths" => self.sandbox_paths.extend(words),
            "extra-platforms" => self.extra_platforms.extend(words),
            "system-features" => self.system_features.extend(words),
            "allowed-impure-host-deps" => self.allowed_impure_host_deps.extend(words),
            "allowed-users" => self.allowed_users.extend(words),
            "trusted-users" => self.trusted_users.extend(words),
            "trusted-public-keys" => self.trusted_public_keys.extend(words),
            "secret-key-files" => self.secret_key_files.extend(words),
            "hashed-mirrors" => self.hashed_mirrors.extend(words),
            other => return Err(SettingsError::Unknown(format!("extra-{other}"))),
        }
        Ok(())
    }

    /// `NIX_BUILD_CORES`: `cores`, or every CPU for 0.
    pub fn build_cores(&self) -> usize {
        if self.cores == 0 {
            crate::environment::detected_cores()
        } else {
            self.cores
        }
    }

    /// Sets `name` (or an alias of it) to `value`, in nix.conf syntax.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), SettingsError> {
        match name {
            "build-users-group" => self.build_users_group = value.to_string(),
            "auto-allocate-uids" => self.auto_allocate_uids = boolean(name, value)?,
            "start-id" => self.start_id = number(name, value)?,
            "id-count" => self.id_count = number(name, value)?,
            "use-cgroups" => self.use_cgroups = boolean(name, value)?,
            "max-silent-time" | "build-max-silent-time" => {
                self.max_silent_time = number(name, value)?
            }
            "timeout" | "build-timeout" => self.timeout = number(name, value)?,
            "max-build-pids" => self.max_build_pids = number(name, value)?,
            "max-build-memory" => self.max_build_memory = bytes(name, value)?,
            "build-use-chroot" | "build-use-sandbox" | "sandbox" => {
                self.sandbox = match value {
                    "true" => SandboxMode::True,
                    "relaxed" => SandboxMode::Relaxed,
                    "false" => SandboxMode::False,
                    _ => {
                        return Err(SettingsError::Invalid {
                            name: name.into(),
                            value: value.into(),
                            expected: "true, false or relaxed",
                        });
                    }
                }
            }
            "sandbox-fallback" => self.sandbox_fallback = boolean(name, value)?,
            "sandbox-paths" | "build-chroot-dirs" | "build-sandbox-paths" => {
                self.sandbox_paths = words(value)
            }
            "sandbox-build-dir" => self.sandbox_build_dir = value.to_string(),
            "sandbox-dev-shm-size" => self.sandbox_dev_shm_size = value.to_string(),
            "sandbox-block-nested-userns" => {
                self.sandbox_block_nested_userns = boolean(name, value)?
            }
            "filter-syscalls" => self.filter_syscalls = boolean(name, value)?,
            "system" => self.system = value.to_string(),
            "extra-platforms" => self.extra_platforms = words(value),
            "system-features" => self.system_features = words(value),
            "max-jobs" | "build-max-jobs" => {
                self.max_jobs = match value {
                    "auto" => crate::environment::detected_cores(),
                    _ => number(name, value)?,
                }
            }
            "cores" | "build-cores" => self.cores = number(name, value)?,
            "keep-failed" | "build-keep-failed" => self.keep_failed = boolean(name, value)?,
            "keep-going" => self.keep_going = boolean(name, value)?,
            "pasta-path" => self.pasta_path = value.to_string(),
            "allowed-impure-host-deps" => self.allowed_impure_host_deps = words(value),
            "pre-build-hook" => self.pre_build_hook = value.to_string(),
            "post-build-hook" => self.post_build_hook = value.to_string(),
            "diff-hook" => self.diff_hook = value.to_string(),
            "run-diff-hook" => self.run_diff_hook = boolean(name, value)?,
            "ssl-cert-file" => self.ssl_cert_file = value.to_string(),
            "allowed-users" => self.allowed_users = words(value),
            "trusted-users" => self.trusted_users = words(value),
            "allow-client-root-commands" => self.allow_client_root_commands = boolean(name, value)?,
            "keep-build-log" | "build-keep-log" => self.keep_build_log = boolean(name, value)?,
            "compress-build-log" | "build-compress-log" => {
                self.compress_build_log = boolean(name, value)?
            }
            "auto-optimise-store" => self.auto_optimise_store = boolean(name, value)?,
            "secret-key-files" => self.secret_key_files = words(value),
            "hashed-mirrors" => self.hashed_mirrors = words(value),
            "log-lines" => self.log_lines = number(name, value)?,
            "require-sigs" => self.require_sigs = boolean(name, value)?,
            "trusted-public-keys" | "binary-cache-public-keys" => {
                self.trusted_public_keys = words(value)
            }
            _ => return Err(SettingsError::Unknown(name.to_string())),
        }
        Ok(())
    }

    /// The `sandbox-paths` entries as Nix applies them, one per target. Nix
    /// keeps the setting as a sorted set of strings and binds each in that
    /// order, so of entries naming one target the one that sorts last wins
    /// and the others are dropped without a word; an entry from the
    /// configuration always beats hermetic's built-in default for its
    /// target (`extra-sandbox-paths = /bin/sh=/usr/bin/busybox` replaces
    /// the default shell).
    pub fn effective_sandbox_paths(&self) -> Vec<String> {
        let defaults = default_sandbox_paths();
        let target = |entry: &str| -> String {
            let entry = entry.strip_suffix('?').unwrap_or(entry);
            entry.split_once('=').map_or(entry, |(t, _)| t).to_owned()
        };
        let mut sorted: Vec<&String> = self
            .sandbox_paths
            .iter()
            .filter(|e| !e.is_empty())
            .collect();
        sorted.sort();
        sorted.dedup();
        let mut winners: std::collections::BTreeMap<String, (bool, &String)> = Default::default();
        for entry in sorted {
            let configured = !defaults.contains(entry);
            let slot = winners.entry(target(entry)).or_insert((configured, entry));
            // Later in sorted order wins, unless it is the default and a
            // configured entry is there.
            if configured || !slot.0 {
                *slot = (configured, entry);
            }
        }
        winners
            .into_values()
            .map(|(_, entry)| entry.clone())
            .collect()
    }

    /// Where build users come from.
    pub fn pool(&self) -> PoolConfig {
        PoolConfig {
            build_users_group: self.build_users_group.clone(),
            auto_allocate_uids: self.auto_allocate_uids,
            start_id: self.start_id,
            id_count: self.id_count,
            state_dir: self.state_dir.clone(),
        }
    }
}

/// hermetic's built-in `sandbox-paths`: `/bin/sh=<a static busybox>` when
/// the host has one. The host is probed once per process, as Nix fixes
/// its default when it is built.
fn default_sandbox_paths() -> &'static [String] {
    static DEFAULT: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    DEFAULT.get_or_init(|| {
        crate::host::static_shell()
            .map(|shell| vec![format!("/bin/sh={}", shell.display())])
            .unwrap_or_default()
    })
}

fn words(value: &str) -> Vec<String> {
    value.split_whitespace().map(str::to_owned).collect()
}

/// Nix's default `extra-platforms`: i686-linux on an x86_64 host.
fn default_extra_platforms() -> Vec<String> {
    if std::env::consts::ARCH == "x86_64" {
        vec!["i686-linux".into()]
    } else {
        Vec::new()
    }
}

/// Nix's default `system-features`: `nixos-test benchmark big-parallel
/// uid-range`, and `kvm` when `/dev/kvm` is readable and writable (B42).
fn default_system_features() -> Vec<String> {
    let mut features: Vec<String> = ["nixos-test", "benchmark", "big-parallel", "uid-range"]
        .map(String::from)
        .to_vec();
    let kvm = nix::unistd::access(
        "/dev/kvm",
        nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK,
    );
    if kvm.is_ok() {
        features.push("kvm".into());
    }
    features
}

/// Nix's default `ssl-cert-file`: `NIX_SSL_CERT_FILE`, `SSL_CERT_FILE`, or
/// the system bundle when it exists.
fn default_ssl_cert_file() -> String {
    for var in ["NIX_SSL_CERT_FILE", "SSL_CERT_FILE"] {
        if let Some(value) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            return value.to_string_lossy().into_owned();
        }
    }
    let system = "/etc/ssl/certs/ca-certificates.crt";
    if std::path::Path::new(system).exists() {
        system.into()
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_aliases_and_values() {
        let mut s = Settings::for_caller();
        s.set("build-max-silent-time", "5").unwrap();
        s.set("build-timeout", "9").unwrap();
        s.set("use-cgroups", "true").unwrap();
        s.set("max-build-memory", "64M").unwrap();
        s.set("max-build-pids", "100").unwrap();
        assert_eq!((s.max_silent_time, s.timeout), (5, 9));
        assert!(s.use_cgroups);
        // Booleans as Nix reads them.
        for (text, value) in [("yes", true), ("1", true), ("no", false), ("0", false)] {
            s.set("keep-failed", text).unwrap();
            assert_eq!(s.keep_failed, value, "{text}");
        }
        assert!(s.set("keep-failed", "on").is_err());
        assert_eq!(s.max_build_memory, 64 << 20);
        assert_eq!(s.max_build_pids, 100);
        assert_eq!(
            s.set("sandbox-fallbak", "true"),
            Err(SettingsError::Unknown("sandbox-fallbak".into()))
        );
        s.set("build-use-sandbox", "relaxed").unwrap();
        assert_eq!(s.sandbox, SandboxMode::Relaxed);
        s.set("build-sandbox-paths", "/a /b=/c").unwrap();
        s.append("sandbox-paths", "/d?").unwrap();
        assert_eq!(s.sandbox_paths, ["/a", "/b=/c", "/d?"]);
        // The built-in /bin/sh loses to a configured one, however they sort.
        let mut d = Settings::for_caller();
        if let [default] = &d.sandbox_paths[..] {
            let default = default.clone();
            d.append("sandbox-paths", "/bin/sh=/0-sorts-first").unwrap();
            assert_eq!(d.effective_sandbox_paths(), ["/bin/sh=/0-sorts-first"]);
            d.set("sandbox-paths", &default).unwrap();
            assert_eq!(d.effective_sandbox_paths(), [default]);
        }
        // Repeated targets: one wins, as in Nix's sorted set.
        s.append("sandbox-paths", "/b=/a /a=/z /b=/e?").unwrap();
        assert_eq!(s.effective_sandbox_paths(), ["/a=/z", "/b=/e?", "/d?"]);
        s.set("max-jobs", "auto").unwrap();
        assert!(s.max_jobs >= 1);
        assert!(s.append("timeout", "1").is_err());
        assert!(matches!(
            s.set("use-cgroups", "maybe"),
            Err(SettingsError::Invalid { .. })
        ));
        assert!(matches!(
            s.set("max-build-memory", "lots"),
            Err(SettingsError::Invalid { .. })
        ));
        assert_eq!(s.start_id, 872415232);
        assert_eq!(s.id_count, 8388608);
    }
}
