//! The settings hermetic uses, each declared once in [`declare_settings!`]'s
//! table below — name, aliases, type, default, who may set it through the
//! daemon, documentation — as Nix declares each `Setting<T>` once. The
//! struct, parsing, aliases, `extra-` forms, list-ness, the daemon's rule
//! for clients ([`ClientRule`]) and the README's table all come from it.
//!
//! A value is parsed when it is given (nix.conf, `NIX_CONFIG`, `--option`,
//! a client's override), so a wrong one is blamed on where it came from.

use std::path::PathBuf;

use hermetic_mountplan::{SandboxPath, SandboxPathError};
use hermetic_uidmap::pool::{DEFAULT_ID_COUNT, DEFAULT_START_ID};
use serde::Serialize;

/// Who may set a setting through the daemon (B94, and hermetic's rule for
/// settings that run commands as root).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientRule {
    /// Any client (Nix's short list: `timeout`, `max-silent-time`,
    /// `build-poll-interval`, `connect-timeout`).
    Anyone,
    /// Trusted clients only; others get Nix's warning.
    Trusted,
    /// Runs a command as root or picks the build users: never from a
    /// client of a root daemon unless the daemon's configuration says
    /// `allow-client-root-commands = true`; trusted clients of a daemon
    /// that is not root may (it runs them as its own user, as in Nix).
    RootCommand,
}

/// One setting as declared.
#[derive(Debug, Clone, Copy)]
pub struct Declaration {
    /// Its nix.conf name.
    pub name: &'static str,
    /// Older names Nix still reads.
    pub aliases: &'static [&'static str],
    /// Whether it takes a list (so `extra-NAME` appends to it).
    pub list: bool,
    /// Who may set it through the daemon.
    pub client: ClientRule,
    /// What it does, with its default, for the README.
    pub doc: &'static str,
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
    /// A `sandbox-paths` entry that is not one.
    #[error("invalid value for '{name}'")]
    SandboxPath {
        /// The setting.
        name: String,
        /// What is wrong with the entry.
        #[source]
        source: SandboxPathError,
    },
}

/// A type a setting may have: how nix.conf text becomes one, and how
/// `extra-` adds to it.
pub trait Value: Sized {
    /// Whether the type is a list (`extra-NAME` appends).
    const LIST: bool = false;
    /// The value `text` gives setting `name`.
    fn parse(name: &str, text: &str) -> Result<Self, SettingsError>;
    /// Appends `more` (lists only; others are never asked).
    fn extend(&mut self, more: Self) {
        *self = more;
    }
}

/// A Boolean as Nix reads one: `true`, `yes`, `1`; `false`, `no`, `0`.
impl Value for bool {
    fn parse(name: &str, text: &str) -> Result<bool, SettingsError> {
        match text {
            "true" | "yes" | "1" => Ok(true),
            "false" | "no" | "0" => Ok(false),
            _ => Err(invalid(name, text, "true or false (or yes, no, 1, 0)")),
        }
    }
}

macro_rules! whole_numbers {
    ($($t:ty),*) => {$(
        impl Value for $t {
            fn parse(name: &str, text: &str) -> Result<$t, SettingsError> {
                text.parse().map_err(|_| invalid(name, text, "a whole number"))
            }
        }
    )*};
}
whole_numbers!(u32, u64, usize);

impl Value for String {
    fn parse(_: &str, text: &str) -> Result<String, SettingsError> {
        Ok(text.to_owned())
    }
}

/// A list: words separated by whitespace.
impl Value for Vec<String> {
    const LIST: bool = true;
    fn parse(_: &str, text: &str) -> Result<Vec<String>, SettingsError> {
        Ok(text.split_whitespace().map(str::to_owned).collect())
    }
    fn extend(&mut self, more: Self) {
        Extend::extend(self, more);
    }
}

/// A `sandbox-paths` entry, parsed when given, with its text (Nix orders
/// the set by it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct SandboxPathEntry {
    /// As written.
    pub text: String,
    /// What it binds.
    pub path: SandboxPath,
    /// hermetic's built-in entry ([`HostDefaults::sandbox_paths`]), which
    /// any configured entry for its target replaces.
    #[serde(skip)]
    pub built_in: bool,
}

impl From<SandboxPathEntry> for String {
    fn from(entry: SandboxPathEntry) -> String {
        entry.text
    }
}

impl Value for Vec<SandboxPathEntry> {
    const LIST: bool = true;
    fn parse(name: &str, text: &str) -> Result<Self, SettingsError> {
        text.split_whitespace()
            .map(|word| {
                let path = word.parse().map_err(|source| SettingsError::SandboxPath {
                    name: name.to_owned(),
                    source,
                })?;
                Ok(SandboxPathEntry {
                    text: word.to_owned(),
                    path,
                    built_in: false,
                })
            })
            .collect()
    }
    fn extend(&mut self, more: Self) {
        Extend::extend(self, more);
    }
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

impl Value for SandboxMode {
    fn parse(name: &str, text: &str) -> Result<SandboxMode, SettingsError> {
        match text {
            "true" => Ok(SandboxMode::True),
            "relaxed" => Ok(SandboxMode::Relaxed),
            "false" => Ok(SandboxMode::False),
            _ => Err(invalid(name, text, "true, false or relaxed")),
        }
    }
}

fn invalid(name: &str, text: &str, expected: &'static str) -> SettingsError {
    SettingsError::Invalid {
        name: name.into(),
        value: text.into(),
        expected,
    }
}

/// Bytes, with an optional K, M, G or T suffix (powers of 1024).
fn bytes(name: &str, text: &str) -> Result<u64, SettingsError> {
    let fail = || invalid(name, text, "a size in bytes, such as 512M or 2G");
    let (digits, shift) = match text.chars().last() {
        Some('K' | 'k') => (&text[..text.len() - 1], 10),
        Some('M' | 'm') => (&text[..text.len() - 1], 20),
        Some('G' | 'g') => (&text[..text.len() - 1], 30),
        Some('T' | 't') => (&text[..text.len() - 1], 40),
        _ => (text, 0),
    };
    let n: u64 = digits.parse().map_err(|_| fail())?;
    n.checked_mul(1 << shift).ok_or_else(fail)
}

/// `max-jobs`: a number, or `auto` for every CPU.
fn jobs(name: &str, text: &str) -> Result<usize, SettingsError> {
    match text {
        "auto" => Ok(hermetic_host::cores()),
        _ => usize::parse(name, text),
    }
}

/// The table's parser: the type's own, or the one the entry names.
macro_rules! parser {
    ($ty:ty;) => {
        <$ty as Value>::parse
    };
    ($ty:ty; $parse:path) => {
        $parse
    };
}

/// Declares every setting once: the [`Settings`] struct's fields, the
/// [`DECLARATIONS`] table, the defaults and the parsing by name.
macro_rules! declare_settings {
    (defaults from $host:ident; $(
        $(#[doc = $doc:literal])+
        $field:ident: $ty:ty = $name:literal $(| $alias:literal)*,
            default $default:expr,
            $client:ident
            $(, parse $parse:path)?;
    )+) => {
        /// The settings of builds and of the daemon, by their nix.conf
        /// names (see [`DECLARATIONS`]).
        #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
        #[serde(rename_all = "kebab-case")]
        pub struct Settings {
            $( $(#[doc = $doc])+ pub $field: $ty, )+
            /// The host-wide state directory (`NIX_STATE_DIR`,
            /// `/nix/var/nix`), not a setting: build-user locks and cgroup
            /// records live below it, whatever store a build is for, so
            /// that builds for different stores (and Nix's, whose user pool
            /// is `<state>/userpool` too) never share a build user.
            pub state_dir: PathBuf,
        }

        /// Every setting hermetic uses, as declared.
        pub const DECLARATIONS: &[Declaration] = &[$(
            Declaration {
                name: $name,
                aliases: &[$($alias),*],
                list: <$ty as Value>::LIST,
                client: ClientRule::$client,
                doc: concat!($($doc, "\n"),+),
            },
        )+];

        impl Settings {
            /// The defaults, from the host's facts in `host`.
            pub fn defaults($host: &HostDefaults) -> Settings {
                Settings {
                    $( $field: $default, )+
                    state_dir: $host.state_dir.clone(),
                }
            }

            /// Sets the declared setting `name` (its nix.conf name) from
            /// `text`; `append` adds to a list instead.
            fn assign(
                &mut self,
                name: &str,
                text: &str,
                append: bool,
            ) -> Result<(), SettingsError> {
                match name {
                    $( $name => {
                        let value: $ty = parser!($ty; $($parse)?)(name, text)?;
                        if append {
                            Value::extend(&mut self.$field, value);
                        } else {
                            self.$field = value;
                        }
                    } )+
                    _ => return Err(SettingsError::Unknown(name.to_owned())),
                }
                Ok(())
            }
        }
    };
}

/// The host's facts that defaults come from, read once by
/// [`HostDefaults::probe`] (or made up in a test).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDefaults {
    /// Whether this process is root (build users by default).
    pub root: bool,
    /// `NIX_STATE_DIR` or `/nix/var/nix`.
    pub state_dir: PathBuf,
    /// The Nix system name (`x86_64-linux`).
    pub system: String,
    /// Whether `/dev/kvm` is usable (the `kvm` feature).
    pub kvm: bool,
    /// A static shell for the default `/bin/sh` entry.
    pub static_shell: Option<PathBuf>,
    /// `NIX_SSL_CERT_FILE`, `SSL_CERT_FILE` or the system bundle.
    pub ssl_cert_file: String,
    /// The directory of the system's nix.conf (`NIX_CONF_DIR` or
    /// `/etc/nix`), where `netrc-file` is by default.
    pub conf_dir: PathBuf,
}

impl HostDefaults {
    /// Reads this host's facts and this process's environment.
    pub fn probe() -> HostDefaults {
        let env = |var: &str| std::env::var_os(var).filter(|v| !v.is_empty());
        let system_bundle = "/etc/ssl/certs/ca-certificates.crt";
        let ssl_cert_file = env("NIX_SSL_CERT_FILE")
            .or_else(|| env("SSL_CERT_FILE"))
            .map(|v| v.to_string_lossy().into_owned())
            .or_else(|| {
                std::path::Path::new(system_bundle)
                    .exists()
                    .then(|| system_bundle.to_owned())
            })
            .unwrap_or_default();
        HostDefaults {
            root: hermetic_host::HostFacts::get().root,
            state_dir: env("NIX_STATE_DIR").map_or_else(|| "/nix/var/nix".into(), PathBuf::from),
            system: hermetic_host::system(),
            kvm: hermetic_host::has_kvm(),
            static_shell: hermetic_host::static_shell(),
            ssl_cert_file,
            conf_dir: crate::nixconf::conf_dir(),
        }
    }

    /// hermetic's built-in `sandbox-paths`: `/bin/sh=<a static busybox>`
    /// when the host has one, as Nix fixes its default when it is built.
    pub fn sandbox_paths(&self) -> Vec<SandboxPathEntry> {
        self.static_shell
            .iter()
            .map(|shell| {
                let text = format!("/bin/sh={}", shell.display());
                let path = text.parse().expect("an absolute shell path parses");
                SandboxPathEntry {
                    text,
                    path,
                    built_in: true,
                }
            })
            .collect()
    }
}

declare_settings! {
    defaults from host;

    /// Who builds run as, when root: the group whose members are the
    /// build users (B25). Default `nixbld` for root, empty otherwise.
    build_users_group: String = "build-users-group",
        default if host.root { "nixbld".into() } else { String::new() }, RootCommand;
    /// Build users allocated from `start-id` instead of a group (B26).
    auto_allocate_uids: bool = "auto-allocate-uids", default false, Trusted;
    /// The first uid of automatically allocated build users.
    start_id: u32 = "start-id", default DEFAULT_START_ID, Trusted;
    /// How many uids automatic allocation may use.
    id_count: u32 = "id-count", default DEFAULT_ID_COUNT, Trusted;
    /// Each build in a cgroup of its own (B78).
    use_cgroups: bool = "use-cgroups", default false, Trusted;
    /// Seconds a build may print nothing before it is killed (0: no limit).
    max_silent_time: u64 = "max-silent-time" | "build-max-silent-time", default 0, Anyone;
    /// Seconds a build may run before it is killed (0: no limit).
    timeout: u64 = "timeout" | "build-timeout", default 0, Anyone;
    /// hermetic's own: most processes (and threads) a build may have at
    /// once, 0 for no limit; needs `use-cgroups`.
    max_build_pids: u64 = "max-build-pids", default 0, Trusted;
    /// hermetic's own: most memory a build may hold, in bytes with an
    /// optional K, M, G or T suffix (powers of 1024), 0 for no limit; needs
    /// `use-cgroups`. A build over it has processes killed by the kernel.
    max_build_memory: u64 = "max-build-memory", default 0, Trusted, parse bytes;
    /// Whether builds are sandboxed: `true`, `relaxed` (fixed-output and
    /// `__noChroot` builds without one) or `false` (B1).
    sandbox: SandboxMode = "sandbox" | "build-use-chroot" | "build-use-sandbox",
        default SandboxMode::True, Trusted;
    /// Build unsandboxed when the kernel cannot sandbox.
    sandbox_fallback: bool = "sandbox-fallback", default true, Trusted;
    /// Host paths bound into every sandbox, in Nix's syntax (`P`, `T=S`,
    /// a trailing `?` for optional); the default binds `/bin/sh` to a
    /// static shell (B47, B50).
    sandbox_paths: Vec<SandboxPathEntry> =
        "sandbox-paths" | "build-chroot-dirs" | "build-sandbox-paths",
        default host.sandbox_paths(), Trusted;
    /// The build directory's path inside the sandbox.
    sandbox_build_dir: String = "sandbox-build-dir", default "/build".into(), Trusted;
    /// The size of the sandbox's `/dev/shm`.
    sandbox_dev_shm_size: String = "sandbox-dev-shm-size", default "50%".into(), Trusted;
    /// Block nested user namespaces in the sandbox (D4).
    sandbox_block_nested_userns: bool = "sandbox-block-nested-userns", default false, Trusted;
    /// The seccomp filter (B60).
    filter_syscalls: bool = "filter-syscalls", default true, Trusted;
    /// The system this machine builds for (`x86_64-linux`).
    system: String = "system", default host.system.clone(), Trusted;
    /// Other systems this machine builds for (i686-linux on x86_64).
    extra_platforms: Vec<String> = "extra-platforms",
        default if host.system == "x86_64-linux" { vec!["i686-linux".into()] } else { Vec::new() },
        Trusted;
    /// What this machine offers builds (`requiredSystemFeatures`): Nix's
    /// `nixos-test benchmark big-parallel uid-range`, and `kvm` with a
    /// usable `/dev/kvm` (B42).
    system_features: Vec<String> = "system-features",
        default ["nixos-test", "benchmark", "big-parallel", "uid-range"]
            .into_iter()
            .chain(host.kvm.then_some("kvm"))
            .map(String::from)
            .collect(),
        Trusted;
    /// Builds at once (a number or `auto`).
    max_jobs: usize = "max-jobs" | "build-max-jobs", default 1, Trusted, parse jobs;
    /// `NIX_BUILD_CORES`; 0 is every CPU.
    cores: usize = "cores" | "build-cores", default 0, Trusted;
    /// Keep a failed build's directory.
    keep_failed: bool = "keep-failed" | "build-keep-failed", default false, Trusted;
    /// Build what can be built after a failure.
    keep_going: bool = "keep-going", default false, Trusted;
    /// Lix's: pasta for fixed-output builds' network.
    pasta_path: String = "pasta-path", default String::new(), Trusted;
    /// Prefixes `__impureHostDeps` may name (B56).
    allowed_impure_host_deps: Vec<String> = "allowed-impure-host-deps", default Vec::new(), Trusted;
    /// A program run before each build, which may add sandbox paths (B55).
    pre_build_hook: String = "pre-build-hook", default String::new(), RootCommand;
    /// A program run after each successful build with `DRV_PATH` and
    /// `OUT_PATHS`.
    post_build_hook: String = "post-build-hook", default String::new(), RootCommand;
    /// A program run when `--check` finds a difference (B89).
    diff_hook: String = "diff-hook", default String::new(), RootCommand;
    /// Whether `diff-hook` runs (B89).
    run_diff_hook: bool = "run-diff-hook", default false, Trusted;
    /// The CA bundle fixed-output builds get (B36).
    ssl_cert_file: String = "ssl-cert-file", default host.ssl_cert_file.clone(), Trusted;
    /// Who may connect to the daemon (B91).
    allowed_users: Vec<String> = "allowed-users", default vec!["*".into()], Trusted;
    /// Who may connect with root's say (B91).
    trusted_users: Vec<String> = "trusted-users", default vec!["root".into()], Trusted;
    /// Paths a client copies in must be signed or content-addressed (B96).
    require_sigs: bool = "require-sigs", default true, Trusted;
    /// The keys whose signatures are believed.
    trusted_public_keys: Vec<String> = "trusted-public-keys" | "binary-cache-public-keys",
        default vec!["cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=".into()],
        Trusted;
    /// hermetic's own: whether clients (even trusted ones) of a root
    /// daemon may set the settings that run a command as root or choose
    /// the build users.
    allow_client_root_commands: bool = "allow-client-root-commands", default false, RootCommand;
    /// Write each build's log under the log directory.
    keep_build_log: bool = "keep-build-log" | "build-keep-log", default true, Trusted;
    /// Those logs bzip2-compressed (`.bz2`).
    compress_build_log: bool = "compress-build-log" | "build-compress-log", default true, Trusted;
    /// The keys each built path is signed with.
    secret_key_files: Vec<String> = "secret-key-files", default Vec::new(), Trusted;
    /// Where `builtin:fetchurl` looks for a flat file by its hash
    /// (`<mirror>/<algo>/<hex>`) before its URL.
    hashed_mirrors: Vec<String> = "hashed-mirrors", default Vec::new(), Trusted;
    /// How many of a failed build's last log lines its error ends with.
    log_lines: usize = "log-lines", default 10, Trusted;
    /// Hard-link each new output's files to identical ones in the store.
    auto_optimise_store: bool = "auto-optimise-store", default false, Trusted;
    /// The garbage collector keeps a live derivation's outputs.
    keep_outputs: bool = "keep-outputs" | "gc-keep-outputs", default false, Trusted;
    /// The garbage collector keeps a live output's derivation.
    keep_derivations: bool = "keep-derivations" | "gc-keep-derivations", default true, Trusted;
    /// Free bytes under which builds collect garbage beside them (0: never).
    min_free: u64 = "min-free", default 0, Trusted;
    /// The free bytes such a collection stops at.
    max_free: u64 = "max-free", default u64::MAX, Trusted;
    /// Seconds between looks at the free space while builds run.
    min_free_check_interval: u64 = "min-free-check-interval", default 5, Trusted;
    /// Bytes kept in `<state>/db/reserved` and given back when garbage is
    /// collected, so that the store's database works on a full disk.
    gc_reserved_space: u64 = "gc-reserved-space", default 8 * 1024 * 1024, Trusted;
    /// Profiles keep the derivations of their environments' paths.
    keep_env_derivations: bool = "keep-env-derivations" | "env-keep-derivations",
        default false, Trusted;
    /// The binary caches paths are fetched from, tried by their priority.
    /// Empty by default here: Nix's default, `https://cache.nixos.org/`,
    /// is a public cache that a machine without the internet cannot reach.
    substituters: Vec<String> = "substituters" | "binary-caches", default Vec::new(), Trusted;
    /// Caches an untrusted client may ask for (B95).
    trusted_substituters: Vec<String> = "trusted-substituters" | "trusted-binary-caches",
        default Vec::new(), Trusted;
    /// Whether paths are fetched from `substituters` at all.
    substitute: bool = "substitute" | "build-use-substitutes", default true, Trusted;
    /// Whether a failed download falls back to building from source.
    fallback: bool = "fallback" | "build-fallback", default false, Trusted;
    /// How many paths are fetched at once (Nix 2.16's and Lix's).
    max_substitution_jobs: usize = "max-substitution-jobs", default 16, Trusted;
    /// Seconds to wait for a connection to a cache (0: the transfer
    /// library's own limit).
    connect_timeout: u64 = "connect-timeout", default 0, Anyone;
    /// Seconds a download may receive nothing before it is given up.
    stalled_download_timeout: u64 = "stalled-download-timeout", default 300, Trusted;
    /// Seconds a cache's answer that it has a path is remembered.
    narinfo_cache_positive_ttl: u64 = "narinfo-cache-positive-ttl",
        default 30 * 24 * 3600, Trusted;
    /// Seconds a cache's answer that it lacks a path is remembered.
    narinfo_cache_negative_ttl: u64 = "narinfo-cache-negative-ttl", default 3600, Trusted;
    /// The netrc file with the credentials for HTTP caches.
    netrc_file: String = "netrc-file",
        default host.conf_dir.join("netrc").to_string_lossy().into_owned(), Trusted;
    /// The machines builds are sent to, in Nix's machine format (`;` or
    /// newlines between machines, `@FILE` to read them from a file).
    builders: String = "builders",
        default format!("@{}", host.conf_dir.join("machines").display()), RootCommand;
    /// Whether a machine of `builders` fetches a build's inputs from its
    /// own substituters before they are copied to it from here.
    builders_use_substitutes: bool = "builders-use-substitutes", default false, Trusted;
}

/// The declared settings as a Markdown table (name, aliases, list or not,
/// who may set it through the daemon), as the README shows it.
pub fn markdown_table() -> String {
    let mut table = String::from(
        "| setting | also read as | list (`extra-` appends) | set through the daemon by |\n|---|---|---|---|\n",
    );
    for d in DECLARATIONS {
        let aliases: Vec<String> = d.aliases.iter().map(|a| format!("`{a}`")).collect();
        let clients = match d.client {
            ClientRule::Anyone => "any client",
            ClientRule::Trusted => "trusted clients",
            ClientRule::RootCommand => "trusted clients of a daemon not run as root",
        };
        table += &format!(
            "| `{}` | {} | {} | {clients} |\n",
            d.name,
            aliases.join(", "),
            if d.list { "yes" } else { "" },
        );
    }
    table
}

/// The declaration `name` (a nix.conf name or an alias) stands for.
pub fn declaration(name: &str) -> Option<&'static Declaration> {
    DECLARATIONS
        .iter()
        .find(|d| d.name == name || d.aliases.contains(&name))
}

impl Settings {
    /// The defaults for this process and host ([`HostDefaults::probe`]).
    pub fn for_caller() -> Settings {
        Settings::defaults(&HostDefaults::probe())
    }

    /// Sets `name` (or an alias of it) to `value`, in nix.conf syntax.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), SettingsError> {
        let declared = declaration(name).ok_or_else(|| SettingsError::Unknown(name.to_owned()))?;
        self.assign(declared.name, value, false)
            .map_err(|e| named(e, name))
    }

    /// Appends to a list setting (`extra-<name>`).
    pub fn append(&mut self, name: &str, value: &str) -> Result<(), SettingsError> {
        match declaration(name) {
            Some(declared) if declared.list => self
                .assign(declared.name, value, true)
                .map_err(|e| named(e, &format!("extra-{name}"))),
            _ => Err(SettingsError::Unknown(format!("extra-{name}"))),
        }
    }

    /// `NIX_BUILD_CORES`: `cores`, or every CPU for 0.
    pub fn build_cores(&self) -> usize {
        if self.cores == 0 {
            hermetic_host::cores()
        } else {
            self.cores
        }
    }

    /// The `sandbox-paths` entries as Nix applies them, one per target. Nix
    /// keeps the setting as a sorted set of strings and binds each in that
    /// order, so of entries naming one target the one that sorts last wins
    /// and the others are dropped without a word; an entry from the
    /// configuration always beats hermetic's built-in default for its
    /// target (`extra-sandbox-paths = /bin/sh=/usr/bin/busybox` replaces
    /// the default shell).
    pub fn effective_sandbox_paths(&self) -> Vec<SandboxPath> {
        let mut sorted: Vec<&SandboxPathEntry> = self.sandbox_paths.iter().collect();
        sorted.sort_by(|a, b| a.text.cmp(&b.text));
        sorted.dedup_by(|a, b| a.text == b.text);
        let mut winners: std::collections::BTreeMap<&PathBuf, (bool, &SandboxPathEntry)> =
            Default::default();
        for entry in sorted {
            let configured = !entry.built_in;
            let slot = winners
                .entry(&entry.path.target)
                .or_insert((configured, entry));
            // Later in sorted order wins, unless it is the default and a
            // configured entry is there.
            if configured || !slot.0 {
                *slot = (configured, entry);
            }
        }
        winners
            .into_values()
            .map(|(_, entry)| entry.path.clone())
            .collect()
    }
}

/// An error about `name` as the user wrote it (an alias or `extra-` form).
fn named(error: SettingsError, name: &str) -> SettingsError {
    match error {
        SettingsError::Invalid {
            value, expected, ..
        } => SettingsError::Invalid {
            name: name.to_owned(),
            value,
            expected,
        },
        SettingsError::SandboxPath { source, .. } => SettingsError::SandboxPath {
            name: name.to_owned(),
            source,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostDefaults {
        HostDefaults {
            root: true,
            state_dir: "/state".into(),
            system: "x86_64-linux".into(),
            kvm: false,
            static_shell: Some("/bin/busybox".into()),
            ssl_cert_file: String::new(),
            conf_dir: "/etc/nix".into(),
        }
    }

    fn texts(entries: &[SandboxPathEntry]) -> Vec<&str> {
        entries.iter().map(|e| e.text.as_str()).collect()
    }

    #[test]
    fn defaults_come_from_the_host_facts() {
        let mut h = host();
        let s = Settings::defaults(&h);
        assert_eq!(s.build_users_group, "nixbld");
        assert_eq!(texts(&s.sandbox_paths), ["/bin/sh=/bin/busybox"]);
        assert_eq!(s.extra_platforms, ["i686-linux"]);
        assert!(!s.system_features.contains(&"kvm".to_owned()));
        assert_eq!(s.state_dir, PathBuf::from("/state"));
        h.root = false;
        h.kvm = true;
        h.static_shell = None;
        h.system = "aarch64-linux".into();
        let s = Settings::defaults(&h);
        assert_eq!(s.build_users_group, "");
        assert!(s.sandbox_paths.is_empty() && s.extra_platforms.is_empty());
        assert!(s.system_features.contains(&"kvm".to_owned()));
    }

    #[test]
    fn every_declaration_is_found_by_its_names_only() {
        for d in DECLARATIONS {
            assert_eq!(declaration(d.name).map(|f| f.name), Some(d.name));
            for alias in d.aliases {
                assert_eq!(declaration(alias).map(|f| f.name), Some(d.name));
            }
            assert!(!d.doc.is_empty(), "{}", d.name);
        }
        let names: std::collections::BTreeSet<_> = DECLARATIONS.iter().map(|d| d.name).collect();
        assert_eq!(names.len(), DECLARATIONS.len(), "a name declared twice");
        assert!(declaration("sandbox-fallbak").is_none());
    }

    /// The README's table of settings is this table's.
    #[test]
    fn the_readme_table_of_settings_is_the_declared_one() {
        let readme = include_str!("../../README.md");
        let (begin, end) = (
            "<!-- settings table: begin -->\n",
            "<!-- settings table: end -->",
        );
        let start = readme
            .find(begin)
            .expect("README.md has the settings table")
            + begin.len();
        let length = readme[start..].find(end).expect("the table ends");
        let expected = markdown_table();
        assert!(
            readme[start..start + length] == expected,
            "README.md's settings table differs from the declared settings; it should be:\n{expected}"
        );
    }

    #[test]
    fn names_aliases_and_values() {
        let mut s = Settings::defaults(&host());
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
        assert_eq!(texts(&s.sandbox_paths), ["/a", "/b=/c", "/d?"]);
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

    #[test]
    fn sandbox_paths_are_checked_when_given_and_blamed_on_the_name_used() {
        let mut s = Settings::defaults(&host());
        let err = s.append("build-sandbox-paths", "/ok relative").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value for 'extra-build-sandbox-paths'"
        );
        assert!(matches!(
            err,
            SettingsError::SandboxPath {
                source: SandboxPathError::NotAbsolute(_),
                ..
            }
        ));
        // Nothing of a refused value is kept.
        assert_eq!(texts(&s.sandbox_paths), ["/bin/sh=/bin/busybox"]);
        assert!(s.set("sandbox-paths", "/a=").is_err());
    }

    #[test]
    fn repeated_sandbox_path_targets_resolve_as_in_nix() {
        let h = host();
        let target_sources = |s: &Settings| -> Vec<String> {
            s.effective_sandbox_paths()
                .iter()
                .map(|p| format!("{}={}", p.target.display(), p.source.display()))
                .collect()
        };
        // The built-in /bin/sh loses to a configured one, however they sort.
        let mut d = Settings::defaults(&h);
        d.append("sandbox-paths", "/bin/sh=/0-sorts-first").unwrap();
        assert_eq!(target_sources(&d), ["/bin/sh=/0-sorts-first"]);
        d.set("sandbox-paths", "/bin/sh=/bin/busybox").unwrap();
        assert_eq!(target_sources(&d), ["/bin/sh=/bin/busybox"]);
        // Repeated targets: the one that sorts last wins, as in Nix's set.
        let mut s = Settings::defaults(&h);
        s.set("sandbox-paths", "/a /b=/c /d?").unwrap();
        s.append("sandbox-paths", "/b=/a /a=/z /b=/e?").unwrap();
        assert_eq!(target_sources(&s), ["/a=/z", "/b=/e", "/d=/d"]);
        let optional: Vec<bool> = s
            .effective_sandbox_paths()
            .iter()
            .map(|p| p.optional)
            .collect();
        assert_eq!(optional, [false, true, true]);
    }
}
