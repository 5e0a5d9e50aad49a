//! The settings that decide who a build runs as and how it ends, by their
//! nix.conf names (B25–B29, B78, B80), plus two of hermetic's own:
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
    /// The state directory (`NIX_STATE_DIR`, `/nix/var/nix`): lock files
    /// and cgroup records live below it.
    pub state_dir: PathBuf,
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

fn boolean(name: &str, value: &str) -> Result<bool, SettingsError> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(SettingsError::Invalid {
            name: name.into(),
            value: value.into(),
            expected: "true or false",
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
            _ => return Err(SettingsError::Unknown(name.to_string())),
        }
        Ok(())
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
        assert_eq!(s.max_build_memory, 64 << 20);
        assert_eq!(s.max_build_pids, 100);
        assert_eq!(
            s.set("sandbox-fallback", "true"),
            Err(SettingsError::Unknown("sandbox-fallback".into()))
        );
        assert!(matches!(
            s.set("use-cgroups", "yes"),
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
