//! [`SandboxSpec`]: the one contract between the Nix layer and the sandbox.
//!
//! A plain serde value (JSON with kebab-case names, as nix.conf spells its
//! settings). Everything the sandbox core does follows from it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hermetic_mountplan::{SandboxPath, normalize_target};
use hermetic_netns::Network;
use serde::{Deserialize, Serialize};

/// The host ids a builder runs as, when hermetic runs as root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildUser {
    /// Host uid (shown as 1000 inside; the first of the range for a
    /// uid-range build).
    pub uid: u32,
    /// Host gid (shown as 100 inside).
    pub gid: u32,
    /// How many ids from `uid` and `gid` the build holds: 1, or 65536 for a
    /// uid-range build.
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

impl BuildUser {
    /// One host uid and gid.
    pub fn single(uid: u32, gid: u32) -> BuildUser {
        BuildUser { uid, gid, count: 1 }
    }
}

/// Everything that defines one sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SandboxSpec {
    /// The program to run, as a path inside the sandbox.
    pub builder: PathBuf,
    /// Its arguments (argv[1..]; argv[0] is the builder's base name).
    #[serde(default)]
    pub args: Vec<String>,
    /// Its whole environment (nothing is inherited).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The store directory as the sandbox shows it (B5).
    #[serde(default = "default_store_dir")]
    pub store_dir: PathBuf,
    /// Where the store really is on the host; defaults to `store-dir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub real_store_dir: Option<PathBuf>,
    /// Store paths the sandbox holds, each at its own path (B39), written
    /// under either store directory.
    #[serde(default)]
    pub inputs: Vec<PathBuf>,
    /// Host paths bound into the sandbox, in Nix's syntax (B50).
    #[serde(default)]
    pub sandbox_paths: Vec<SandboxPath>,
    /// The build directory inside the sandbox and the builder's cwd (B41).
    #[serde(default = "default_sandbox_build_dir")]
    pub sandbox_build_dir: PathBuf,
    /// The host directory bound there; a fresh one in the scratch space when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_dir: Option<PathBuf>,
    /// Loopback only, or the host's network.
    #[serde(default)]
    pub network: Network,
    /// The host ids of the builder. Required when hermetic runs as root
    /// (it never runs a builder as host root); must be absent otherwise (an
    /// ordinary user's sandbox runs with its own ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_user: Option<BuildUser>,
    /// Size of the `/dev/shm` tmpfs, in tmpfs `size=` syntax (B43).
    #[serde(default = "default_shm_size")]
    pub sandbox_dev_shm_size: String,
    /// Bind `/dev/kvm` when the host has it (B42).
    #[serde(default)]
    pub kvm: bool,
    /// The build's system, e.g. `x86_64-linux`; `i686-linux` runs with a
    /// 32-bit personality (B75).
    #[serde(default = "hermetic_host::system")]
    pub system: String,
    /// A uid-range build (the derivation requires the `uid-range`
    /// feature, B19): 65536 ids mapped from 0, the builder root of its own
    /// user namespace, `/sys` mounted, `/etc` writable. Needs a build user
    /// with 65536 ids.
    #[serde(default)]
    pub uid_range: bool,
    /// Run the builder in a sandbox (the default). `false` runs it without
    /// any namespace, as Nix's unsandboxed builds (B9): on the host's
    /// filesystem, as the build user, still under the seccomp filter.
    #[serde(default = "yes")]
    pub sandbox: bool,
    /// `sandbox-block-nested-userns` (D4): the builder cannot make user
    /// namespaces (`clone`/`unshare` with CLONE_NEWUSER fail with EPERM,
    /// `clone3` with ENOSYS).
    #[serde(default)]
    pub sandbox_block_nested_userns: bool,
    /// `filter-syscalls` (Nix's name): install the seccomp filter (D3). On
    /// by default and everywhere; off only to find out whether the filter
    /// is what breaks a build (a builder can then make setuid files).
    #[serde(default = "yes")]
    pub filter_syscalls: bool,
    /// The pasta program, for `network: pasta` (B60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pasta_path: Option<PathBuf>,
    /// Files of the sandbox's `/etc` by name, beside or instead of the ones
    /// the sandbox writes (`passwd`, `group`, `hosts`): a fixed-output
    /// build's `resolv.conf`, `services`, `hosts` and `nsswitch.conf` (B36).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub etc_files: BTreeMap<String, String>,
    /// Where the sandbox's scratch directory is made (root mount point,
    /// store writes, `/tmp`, the build directory). Defaults to the real store
    /// directory when it is writable, so that outputs can later be renamed
    /// into the store (D11), else the system's temporary directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scratch_parent: Option<PathBuf>,
    /// A scratch directory an earlier run kept (`--keep`, a build's
    /// `keep-failed`), to run in again instead of a fresh one: its store
    /// writes (partial outputs), `/tmp` and build directory as that run
    /// left them, given to this run's builder. It is kept afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_scratch: Option<PathBuf>,
}

fn yes() -> bool {
    true
}

fn default_store_dir() -> PathBuf {
    PathBuf::from("/nix/store")
}

fn default_sandbox_build_dir() -> PathBuf {
    PathBuf::from("/build")
}

fn default_shm_size() -> String {
    "50%".to_string()
}

/// Why a spec is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The builder is not an absolute path.
    #[error(
        "the builder '{0}' must be an absolute path inside the sandbox (e.g. /bin/sh): the sandbox has no PATH to search"
    )]
    RelativeBuilder(String),
    /// A string holds a NUL byte (Lix's text).
    #[error("derivation {context} '{value}' contains NUL bytes")]
    Nul {
        /// Which field.
        context: &'static str,
        /// The value, NULs shown as `\0`.
        value: String,
    },
    /// An environment variable name that cannot be one.
    #[error("environment variable name '{0}' is empty or contains '='")]
    BadEnvName(String),
    /// A store or build directory that is not absolute and normal.
    #[error("{what} '{path}' must be an absolute path without '.' or '..'")]
    BadDirectory {
        /// Which setting.
        what: &'static str,
        /// The value.
        path: String,
    },
    /// An input that is not a store path.
    #[error("input '{path}' is not a store path: expected '{store}/<name>'")]
    NotAStorePath {
        /// The input as given.
        path: String,
        /// The store directory.
        store: String,
    },
    /// A `/dev/shm` size tmpfs would not take.
    #[error(
        "invalid value '{0}' for 'sandbox-dev-shm-size': expected a size such as 50%, 512M or 2G"
    )]
    BadShmSize(String),
    /// An empty system.
    #[error("the system must not be empty")]
    EmptySystem,
    /// `network: pasta` without a pasta program, or one without the other.
    #[error("'pasta-path' is needed with the pasta network, and only with it")]
    PastaPath,
    /// An `/etc` file name that is not a plain file name.
    #[error("'{0}' is not a file name for /etc")]
    BadEtcFile(String),
}

fn no_nul(context: &'static str, value: &str) -> Result<(), SpecError> {
    if value.contains('\0') {
        return Err(SpecError::Nul {
            context,
            value: value.replace('\0', "\\0"),
        });
    }
    Ok(())
}

fn no_nul_path(context: &'static str, path: &Path) -> Result<(), SpecError> {
    no_nul(context, &path.to_string_lossy())
}

fn normal_directory(what: &'static str, path: &Path) -> Result<(), SpecError> {
    match normalize_target(path) {
        Ok(normal) if normal == path && normal.as_os_str() != "/" => Ok(()),
        _ => Err(SpecError::BadDirectory {
            what,
            path: path.display().to_string(),
        }),
    }
}

/// tmpfs `size=`: digits with an optional k/m/g/t/p/e suffix, or a
/// percentage.
fn valid_tmpfs_size(size: &str) -> bool {
    let digits = size.trim_end_matches([
        '%', 'k', 'K', 'm', 'M', 'g', 'G', 't', 'T', 'p', 'P', 'e', 'E',
    ]);
    let suffix = &size[digits.len()..];
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && suffix.len() <= 1
}

impl SandboxSpec {
    /// A spec with every default, running `builder` with `args`.
    pub fn new(builder: impl Into<PathBuf>, args: Vec<String>) -> SandboxSpec {
        SandboxSpec {
            builder: builder.into(),
            args,
            env: BTreeMap::new(),
            store_dir: default_store_dir(),
            real_store_dir: None,
            inputs: Vec::new(),
            sandbox_paths: Vec::new(),
            sandbox_build_dir: default_sandbox_build_dir(),
            build_dir: None,
            network: Network::default(),
            build_user: None,
            sandbox_dev_shm_size: default_shm_size(),
            kvm: false,
            system: hermetic_host::system(),
            uid_range: false,
            sandbox: true,
            sandbox_block_nested_userns: false,
            filter_syscalls: true,
            pasta_path: None,
            etc_files: BTreeMap::new(),
            scratch_parent: None,
            kept_scratch: None,
        }
    }

    /// The store directory on the host.
    pub fn real_store_dir(&self) -> &Path {
        self.real_store_dir.as_deref().unwrap_or(&self.store_dir)
    }

    /// The base name of `input`, which must lie directly in the logical or
    /// the real store directory.
    pub fn input_name(&self, input: &Path) -> Result<String, SpecError> {
        let not_a_store_path = || SpecError::NotAStorePath {
            path: input.display().to_string(),
            store: self.store_dir.display().to_string(),
        };
        let text = input.as_os_str().as_encoded_bytes();
        let name = [&self.store_dir, self.real_store_dir()]
            .iter()
            .find_map(|dir| {
                text.strip_prefix(dir.as_os_str().as_encoded_bytes())
                    .and_then(|rest| rest.strip_prefix(b"/"))
            })
            .ok_or_else(not_a_store_path)?;
        let valid = !name.is_empty() && !name.starts_with(b".") && !name.contains(&b'/');
        match std::str::from_utf8(name) {
            Ok(name) if valid => Ok(name.to_string()),
            _ => Err(not_a_store_path()),
        }
    }

    /// Checks everything that can be checked without looking at the host.
    pub fn validate(&self) -> Result<(), SpecError> {
        no_nul_path("builder", &self.builder)?;
        if !self.builder.is_absolute() {
            return Err(SpecError::RelativeBuilder(
                self.builder.display().to_string(),
            ));
        }
        for arg in &self.args {
            no_nul("argument", arg)?;
        }
        for (name, value) in &self.env {
            no_nul("environment variable name", name)?;
            no_nul("environment variable", value)?;
            if name.is_empty() || name.contains('=') {
                return Err(SpecError::BadEnvName(name.clone()));
            }
        }
        normal_directory("store-dir", &self.store_dir)?;
        normal_directory("real-store-dir", self.real_store_dir())?;
        normal_directory("sandbox-build-dir", &self.sandbox_build_dir)?;
        for dir in [&self.build_dir, &self.scratch_parent, &self.kept_scratch]
            .into_iter()
            .flatten()
        {
            no_nul_path("directory", dir)?;
        }
        for input in &self.inputs {
            no_nul_path("input", input)?;
            self.input_name(input)?;
        }
        if !valid_tmpfs_size(&self.sandbox_dev_shm_size) {
            return Err(SpecError::BadShmSize(self.sandbox_dev_shm_size.clone()));
        }
        if self.system.is_empty() {
            return Err(SpecError::EmptySystem);
        }
        if (self.network == Network::Pasta) != self.pasta_path.is_some() {
            return Err(SpecError::PastaPath);
        }
        for name in self.etc_files.keys() {
            let plain = !name.is_empty() && !name.contains('/') && name != "." && name != "..";
            if !plain || name.contains('\0') {
                return Err(SpecError::BadEtcFile(name.clone()));
            }
        }
        Ok(())
    }

    /// The personality flags the builder runs with: ASLR off always (B76),
    /// 32-bit for 32-bit x86 and ARM systems (B75).
    pub fn personality(&self) -> u64 {
        const ADDR_NO_RANDOMIZE: u64 = 0x0040000;
        const PER_LINUX32: u64 = 0x0008;
        let arm32 =
            ["armv7l-linux", "armv6l-linux", "armv5tel-linux"].contains(&self.system.as_str());
        let i686_on_x86_64 = self.system == "i686-linux" && std::env::consts::ARCH == "x86_64";
        if arm32 || i686_on_x86_64 {
            ADDR_NO_RANDOMIZE | PER_LINUX32
        } else {
            ADDR_NO_RANDOMIZE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_json_takes_every_default() {
        let spec: SandboxSpec = serde_json::from_str(r#"{"builder": "/bin/sh"}"#).unwrap();
        assert_eq!(spec, SandboxSpec::new("/bin/sh", vec![]));
        assert_eq!(spec.sandbox_build_dir, PathBuf::from("/build"));
        assert_eq!(spec.sandbox_dev_shm_size, "50%");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let error =
            serde_json::from_str::<SandboxSpec>(r#"{"builder": "/bin/sh", "netwrok": "host"}"#)
                .unwrap_err()
                .to_string();
        assert!(error.contains("unknown field `netwrok`"), "{error}");
    }

    #[test]
    fn sandbox_paths_are_read_in_nix_syntax() {
        let spec: SandboxSpec = serde_json::from_str(
            r#"{"builder": "/bin/sh", "sandbox-paths": ["/bin/sh=/x/busybox", "/dev/kvm?"]}"#,
        )
        .unwrap();
        assert_eq!(spec.sandbox_paths[0].source, PathBuf::from("/x/busybox"));
        assert!(spec.sandbox_paths[1].optional);
        let bad = serde_json::from_str::<SandboxSpec>(
            r#"{"builder": "/bin/sh", "sandbox-paths": ["rel"]}"#,
        );
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("not an absolute path")
        );
    }

    #[test]
    fn inputs_must_be_direct_children_of_either_store_dir() {
        let mut spec = SandboxSpec::new("/bin/sh", vec![]);
        spec.real_store_dir = Some(PathBuf::from("/tmp/s/nix/store"));
        assert_eq!(
            spec.input_name(Path::new("/nix/store/abc-x")).unwrap(),
            "abc-x"
        );
        assert_eq!(
            spec.input_name(Path::new("/tmp/s/nix/store/abc-x"))
                .unwrap(),
            "abc-x"
        );
        for bad in [
            "/nix/store",
            "/nix/store/a/b",
            "/etc/passwd",
            "/nix/store/.links",
            "/nix/store/../x",
        ] {
            assert!(spec.input_name(Path::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn validation_names_the_problem() {
        let mut spec = SandboxSpec::new("sh", vec![]);
        assert!(matches!(
            spec.validate(),
            Err(SpecError::RelativeBuilder(_))
        ));
        spec.builder = PathBuf::from("/bin/sh");
        spec.args = vec!["a\0b".into()];
        assert_eq!(
            spec.validate().unwrap_err().to_string(),
            "derivation argument 'a\\0b' contains NUL bytes"
        );
        spec.args.clear();
        spec.env.insert("A=B".into(), "x".into());
        assert!(matches!(spec.validate(), Err(SpecError::BadEnvName(_))));
        spec.env.clear();
        spec.sandbox_dev_shm_size = "1G,mode=0777".into();
        assert!(matches!(spec.validate(), Err(SpecError::BadShmSize(_))));
        spec.sandbox_dev_shm_size = "512M".into();
        spec.store_dir = PathBuf::from("/nix/../store");
        assert!(matches!(
            spec.validate(),
            Err(SpecError::BadDirectory { .. })
        ));
        spec.store_dir = PathBuf::from("/nix/store");
        spec.validate().unwrap();
    }

    #[test]
    fn tmpfs_sizes() {
        for good in ["50%", "1024", "512M", "2g", "100k"] {
            assert!(valid_tmpfs_size(good), "{good}");
        }
        for bad in ["", "%", "1G,uid=0", "-1", "1GG", "x"] {
            assert!(!valid_tmpfs_size(bad), "{bad}");
        }
    }

    #[test]
    fn personality_follows_the_system() {
        let mut spec = SandboxSpec::new("/bin/sh", vec![]);
        assert_eq!(spec.personality(), 0x0040000);
        spec.system = "armv7l-linux".into();
        assert_eq!(spec.personality(), 0x0040008);
        spec.system = "i686-linux".into();
        let expected = if std::env::consts::ARCH == "x86_64" {
            0x0040008
        } else {
            0x0040000
        };
        assert_eq!(spec.personality(), expected);
    }
}
