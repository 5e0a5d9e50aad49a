//! nix.conf: where settings come from, in Nix's order. The defaults, then
//! `$NIX_CONF_DIR/nix.conf` (`/etc/nix/nix.conf`), then the text of
//! `NIX_CONFIG`, then `--option NAME VALUE`s. Lines are `name = value`
//! (`#` starts a comment); `include FILE` and `!include FILE` (missing is
//! fine) read another file relative to this one; `extra-NAME` appends to a
//! list setting. An unknown name is a warning, as in Nix.

use std::path::{Path, PathBuf};

use crate::settings::{ClientRule, Settings, SettingsError, declaration};

/// Why configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A line that is not `name = value` nor an include (Nix's text).
    #[error("illegal configuration line '{line}' in '{origin}'")]
    IllegalLine {
        /// The line.
        line: String,
        /// The file (or `NIX_CONFIG`).
        origin: String,
    },
    /// A file that could not be read.
    #[error("cannot read configuration file '{path}'")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Includes nested too deep (a loop).
    #[error("configuration file '{0}' includes files nested more than 16 deep")]
    TooDeep(PathBuf),
    /// A value of the wrong shape, with where it came from.
    #[error("in {origin}")]
    Value {
        /// The file and line (`'/etc/nix/nix.conf' line 3`), `NIX_CONFIG`
        /// and line, or `--option`.
        origin: String,
        /// The setting's complaint.
        #[source]
        source: SettingsError,
    },
}

/// The directory of the system's nix.conf: `NIX_CONF_DIR` or `/etc/nix`.
pub fn conf_dir() -> PathBuf {
    std::env::var_os("NIX_CONF_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from("/etc/nix"), PathBuf::from)
}

/// Settings of Nix 2.8, today's Nix and Lix that hermetic has no use for
/// yet (evaluation, flakes, substitution, garbage collection, the client's
/// display, other platforms): taken without a warning and without effect,
/// as a nix.conf written for Nix must work unchanged. The test beside
/// checks this against every name they declare
/// (`tests/fixtures/nix-setting-names`).
pub const IGNORED_NIX_SETTINGS: &[&str] = &[
    "abort-on-warn",
    "accept-flake-config",
    "access-tokens",
    "allow-dirty",
    "allow-dirty-locks",
    "allow-import-from-derivation",
    "allow-new-privileges",
    "allow-symlinked-store",
    "allow-unsafe-native-code-during-evaluation",
    "allowed-uris",
    "always-allow-substitutes",
    "bash-prompt",
    "bash-prompt-prefix",
    "bash-prompt-suffix",
    "binary-caches-parallel-connections",
    "build-dir",
    "build-hook",
    "build-hook-kill-timeout",
    "build-impersonate-linux-26",
    "build-max-log-size",
    "build-poll-interval",
    "build-repeat",
    "builtin-builder-sandbox-paths",
    "commit-lock-file-summary",
    "commit-lockfile-summary",
    "darwin-log-sandbox-violations",
    "debugger-on-trace",
    "debugger-on-warn",
    "download-attempts",
    "download-buffer-size",
    "download-speed",
    "enable-core-dumps",
    "enforce-determinism",
    "eval-attrset-update-layer-rhs-threshold",
    "eval-cache",
    "eval-profile-file",
    "eval-profiler",
    "eval-profiler-frequency",
    "eval-system",
    "experimental-features",
    "external-builders",
    "extra-local-jobs",
    "filetransfer-retry-attempts",
    "filetransfer-retry-delay",
    "filetransfer-retry-delay-rate-limited",
    "filetransfer-retry-jitter",
    "filetransfer-retry-max-delay",
    "flake-registry",
    "fsync-metadata",
    "fsync-store-paths",
    "http-connections",
    "http2",
    "http3",
    "ignore-try",
    "ignored-acls",
    "impersonate-linux-26",
    "impure-env",
    "json-log-path",
    "lint-absolute-path-literals",
    "lint-short-path-literals",
    "lint-url-literals",
    "max-build-log-size",
    "max-call-depth",
    "nar-buffer-size",
    "narinfo-cache-meta-ttl",
    "nix-path",
    "nix-shell-always-looks-for-shell-nix",
    "nix-shell-shebang-arguments-relative-to-script",
    "plugin-files",
    "preallocate-contents",
    "print-missing",
    "pure-eval",
    "repeat",
    "repl-overlays",
    "require-drop-supplementary-groups",
    "restrict-eval",
    "show-trace",
    "store",
    "substitution-max-jobs",
    "sync-before-registering",
    "tarball-ttl",
    "temp-dir",
    "trace-function-calls",
    "trace-import-from-derivation",
    "trace-verbose",
    "trust-tarballs-from-git-forges",
    "upgrade-nix-store-path-url",
    "use-case-hack",
    "use-registries",
    "use-sqlite-wal",
    "use-xdg-base-directories",
    "user-agent-suffix",
    "warn-dirty",
    "warn-import-from-derivation",
    "warn-large-path-threshold",
];

/// Who may set `name` (as a client sends it: a name, an alias or an
/// `extra-` form) through the daemon: its declaration's rule, Nix's for
/// the settings Nix lets anyone set, and hermetic's root-command rule for
/// Nix's remote-build settings. As in Nix, only a setting's own name is
/// open to anyone, not its aliases.
pub fn client_rule(name: &str) -> ClientRule {
    let base = name.strip_prefix("extra-").unwrap_or(name);
    let declared = declaration(name).or_else(|| declaration(base));
    match declared {
        Some(d) if d.client == ClientRule::Anyone && d.name != name => ClientRule::Trusted,
        Some(d) => d.client,
        None => match name {
            "build-poll-interval" => ClientRule::Anyone,
            _ if base == "build-hook" => ClientRule::RootCommand,
            _ => ClientRule::Trusted,
        },
    }
}

/// Applies one setting, `extra-` forms appending.
pub fn apply(
    settings: &mut Settings,
    name: &str,
    value: &str,
    warn: &mut dyn FnMut(String),
) -> Result<(), SettingsError> {
    // A name is looked up whole first (Lix has `extra-local-jobs`), then
    // as the `extra-` form of another, as Nix does.
    let ignored = |name: &str| IGNORED_NIX_SETTINGS.contains(&name);
    if ignored(name) || name.strip_prefix("extra-").is_some_and(ignored) {
        return Ok(());
    }
    let result = match name.strip_prefix("extra-") {
        Some(base) if declaration(base).is_some_and(|d| d.list) => settings.append(base, value),
        _ => settings.set(name, value),
    };
    match result {
        Err(SettingsError::Unknown(name)) => {
            warn(format!("unknown setting '{name}'"));
            Ok(())
        }
        other => other,
    }
}

/// Loads the system's nix.conf, `NIX_CONFIG` and then `options` into
/// `settings`; warnings (unknown names) go to `warn`.
pub fn load(
    settings: &mut Settings,
    options: &[(String, String)],
    warn: &mut dyn FnMut(String),
) -> Result<(), ConfigError> {
    apply_file(settings, &conf_dir().join("nix.conf"), true, warn, 0)?;
    if let Ok(text) = std::env::var("NIX_CONFIG") {
        apply_text(settings, &text, "NIX_CONFIG", None, warn, 0)?;
    }
    for (name, value) in options {
        apply(settings, name, value, warn).map_err(|source| ConfigError::Value {
            origin: format!("--option {name}"),
            source,
        })?;
    }
    Ok(())
}

fn apply_file(
    settings: &mut Settings,
    path: &Path,
    optional: bool,
    warn: &mut dyn FnMut(String),
    depth: usize,
) -> Result<(), ConfigError> {
    if depth > 16 {
        return Err(ConfigError::TooDeep(path.to_owned()));
    }
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let origin = path.display().to_string();
    apply_text(settings, &text, &origin, path.parent(), warn, depth)
}

/// Applies nix.conf text; `dir` resolves relative includes.
pub fn apply_text(
    settings: &mut Settings,
    text: &str,
    origin: &str,
    dir: Option<&Path>,
    warn: &mut dyn FnMut(String),
    depth: usize,
) -> Result<(), ConfigError> {
    for (number, raw) in (1..).zip(text.lines()) {
        let line = raw.split('#').next().unwrap_or_default();
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let Some(first) = tokens.first() else {
            continue;
        };
        if (*first == "include" || *first == "!include") && tokens.len() == 2 {
            let file = Path::new(tokens[1]);
            let file = match dir {
                Some(dir) if file.is_relative() => dir.join(file),
                _ => file.to_owned(),
            };
            apply_file(settings, &file, *first == "!include", warn, depth + 1)?;
            continue;
        }
        if tokens.len() < 2 || tokens[1] != "=" {
            return Err(ConfigError::IllegalLine {
                line: raw.to_owned(),
                origin: origin.to_owned(),
            });
        }
        let value = tokens[2..].join(" ");
        apply(settings, first, &value, warn).map_err(|source| ConfigError::Value {
            origin: format!("'{origin}' line {number}"),
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::SandboxMode;

    #[test]
    fn every_setting_nix_or_lix_declares_is_known_to_hermetic() {
        let names = include_str!("../tests/fixtures/nix-setting-names");
        let mut unknown = Vec::new();
        for name in names
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let mut settings = Settings::for_caller();
            let mut warned = false;
            // The value may be wrong for the setting; only its name counts.
            let result = apply(&mut settings, name, "", &mut |_| warned = true);
            if warned || matches!(result, Err(SettingsError::Unknown(_))) {
                unknown.push(name);
            }
        }
        assert!(unknown.is_empty(), "unknown to hermetic: {unknown:?}");
    }

    #[test]
    fn lines_includes_and_extra_forms() {
        let dir = std::env::temp_dir().join(format!("nixconf-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("more.conf"), "keep-failed = true\n").unwrap();
        let mut s = Settings::for_caller();
        let mut warnings = Vec::new();
        apply_text(
            &mut s,
            "# a comment\nsandbox = relaxed # trailing\nsandbox-paths = /a\nextra-sandbox-paths = /b=/c /d?\n\
             include more.conf\n!include missing.conf\nno-such-thing = 1\n",
            "test",
            Some(&dir),
            &mut |w| warnings.push(w),
            0,
        )
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(s.sandbox, SandboxMode::Relaxed);
        let texts: Vec<&str> = s.sandbox_paths.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(texts, ["/a", "/b=/c", "/d?"]);
        assert!(s.keep_failed);
        assert_eq!(warnings, ["unknown setting 'no-such-thing'"]);
        let err =
            apply_text(&mut s, "sandbox true\n", "nix.conf", None, &mut |_| {}, 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "illegal configuration line 'sandbox true' in 'nix.conf'"
        );
        let err = apply_text(
            &mut s,
            "include /nonexistent/x.conf\n",
            "nix.conf",
            None,
            &mut |_| {},
            0,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot read configuration file '/nonexistent/x.conf'")
        );
        // A wrong value is blamed on its file and line, and on the name
        // as written.
        let err = apply_text(
            &mut s,
            "sandbox = true\n\nextra-build-chroot-dirs = /a relative\n",
            "/etc/nix/nix.conf",
            None,
            &mut |_| {},
            0,
        )
        .unwrap_err();
        let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert_eq!(
            chain,
            "in '/etc/nix/nix.conf' line 3: invalid value for 'extra-build-chroot-dirs'"
        );
    }

    #[test]
    fn who_may_set_what_through_the_daemon() {
        assert_eq!(client_rule("timeout"), ClientRule::Anyone);
        assert_eq!(client_rule("connect-timeout"), ClientRule::Anyone);
        // As in Nix, an alias is not open to anyone.
        assert_eq!(client_rule("build-timeout"), ClientRule::Trusted);
        assert_eq!(client_rule("sandbox"), ClientRule::Trusted);
        assert_eq!(client_rule("extra-sandbox-paths"), ClientRule::Trusted);
        assert_eq!(client_rule("substituters"), ClientRule::Trusted);
        for root in [
            "post-build-hook",
            "pre-build-hook",
            "diff-hook",
            "build-users-group",
            "builders",
            "extra-builders",
            "build-hook",
            "allow-client-root-commands",
        ] {
            assert_eq!(client_rule(root), ClientRule::RootCommand, "{root}");
        }
    }

    /// Real configurations: Debian's default, the one Debian's Nix needs
    /// for a sandbox, and one NixOS generates. Nix reads each without a
    /// word; so must hermetic.
    #[test]
    fn real_nix_confs_are_read_without_an_error_or_a_warning() {
        let debian = "# see https://nixos.org/nix/manual/#sec-conf-file\n\n\
                      # So far the sandbox feature does not seem to work on Debian:\n\
                      sandbox = false\n";
        let debian_sandbox = "sandbox = true\nsandbox-fallback = false\n\
                              extra-sandbox-paths = /bin/sh=/usr/bin/busybox\n\
                              build-users-group = nixbld\nsubstituters =\n";
        let nixos = "# WARNING: this file is generated from the nix.* options in\n\
                     build-users-group = nixbld\nmax-jobs = auto\ncores = 0\nsandbox = true\n\
                     extra-sandbox-paths = \nsubstituters = https://cache.nixos.org/\n\
                     trusted-substituters = \n\
                     trusted-public-keys = cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=\n\
                     auto-optimise-store = true\nrequire-sigs = true\ntrusted-users = root @wheel\n\
                     allowed-users = *\nbuilders = \nsystem-features = nixos-test benchmark big-parallel kvm\n\
                     sandbox-fallback = no\nkeep-outputs = true\nkeep-derivations = true\n\
                     experimental-features = nix-command flakes\n\
                     secret-key-files = /etc/nix/key.sec\nkeep-build-log = yes\n";
        for (name, text) in [
            ("debian", debian),
            ("debian-sandbox", debian_sandbox),
            ("nixos", nixos),
        ] {
            let mut s = Settings::for_caller();
            let mut warnings = Vec::new();
            apply_text(&mut s, text, name, None, &mut |w| warnings.push(w), 0)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(warnings.is_empty(), "{name}: {warnings:?}");
            if name == "nixos" {
                assert!(s.auto_optimise_store && !s.sandbox_fallback);
                assert_eq!(s.trusted_users, ["root", "@wheel"]);
                assert_eq!(s.secret_key_files, ["/etc/nix/key.sec"]);
            }
        }
    }
}
