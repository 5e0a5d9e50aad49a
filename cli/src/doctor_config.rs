//! `sandbox-run doctor`'s look at the configuration a build would use:
//! nix.conf, the build users, pasta, and the store directory's owner and
//! modes. A configuration that would make every build fail is a failure
//! of the doctor too.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use hermetic_config::settings::{SandboxMode, Settings};
use hermetic_runtime::doctor::{Check, Verdict};

fn check(name: &'static str, verdict: Verdict, detail: String, fix: Option<&str>) -> Check {
    Check {
        name,
        verdict,
        detail,
        fix: fix.map(str::to_owned),
        // A build as configured cannot run when one of these fails.
        essential: verdict == Verdict::Fail,
    }
}

/// The checks of the configuration builds would use, read as a build
/// reads it (nix.conf, `NIX_CONFIG`).
pub fn examine() -> Vec<Check> {
    let conf = hermetic_config::nixconf::conf_dir().join("nix.conf");
    let mut settings = Settings::for_caller();
    let mut warnings = Vec::new();
    let loaded = hermetic_config::nixconf::load(&mut settings, &[], &mut |w| warnings.push(w));
    let readable = loaded.is_ok();
    let mut checks = vec![match loaded {
        Err(e) => check(
            "nix.conf",
            Verdict::Fail,
            format!("{:#}", anyhow::Error::from(e)),
            Some("correct the setting named above"),
        ),
        Ok(()) if !warnings.is_empty() => check(
            "nix.conf",
            Verdict::Warn,
            format!("'{}': {}", conf.display(), warnings.join("; ")),
            None,
        ),
        Ok(()) => check(
            "nix.conf",
            Verdict::Ok,
            format!("'{}' read", conf.display()),
            None,
        ),
    }];
    if readable {
        checks.extend(examine_settings(&settings));
    }
    checks
}

fn examine_settings(settings: &Settings) -> Vec<Check> {
    let root = nix::unistd::geteuid().is_root();
    let mut checks = Vec::new();
    if settings.sandbox == SandboxMode::False {
        checks.push(check(
            "sandbox",
            Verdict::Warn,
            "'sandbox = false': builds run without a sandbox".into(),
            Some("set 'sandbox = true' in nix.conf"),
        ));
    }
    if root {
        let pool = hermetic_realise::spec::run_policy(settings).build_users;
        checks.push(match hermetic_uidmap::pool::describe(&pool) {
            Ok(users) => check("build users", Verdict::Ok, users, None),
            Err(e) => check(
                "build users",
                Verdict::Fail,
                e.to_string(),
                Some(
                    "create the group and its users as Nix's installer does \
                     (groupadd -r nixbld; useradd -r -g nixbld -G nixbld -M -s /usr/sbin/nologin nixbld1 …), \
                     or set 'auto-allocate-uids = true'",
                ),
            ),
        });
    }
    if !settings.pasta_path.is_empty() {
        checks.push(pasta_check(Path::new(&settings.pasta_path)));
    }
    checks.push(store_check(Path::new(&store_dir()), settings, root));
    checks
}

/// The store directory builds would use (`NIX_STORE_DIR` or /nix/store).
fn store_dir() -> String {
    std::env::var("NIX_STORE_DIR")
        .ok()
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "/nix/store".to_owned())
}

/// Whether `pasta-path` runs.
fn pasta_check(pasta: &Path) -> Check {
    let ran = std::process::Command::new(pasta)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output();
    match ran {
        Ok(out) if out.status.success() => {
            let version = String::from_utf8_lossy(&out.stdout);
            check(
                "pasta",
                Verdict::Ok,
                format!(
                    "'{}' runs ({})",
                    pasta.display(),
                    version.lines().next().unwrap_or("").trim()
                ),
                None,
            )
        }
        Ok(out) => check(
            "pasta",
            Verdict::Fail,
            format!(
                "'{}' (pasta-path) failed with {}: fixed-output builds cannot reach the network",
                pasta.display(),
                out.status
            ),
            Some("install passt, or point 'pasta-path' at its pasta"),
        ),
        Err(e) => check(
            "pasta",
            Verdict::Fail,
            format!(
                "'{}' (pasta-path) cannot be run ({e}): fixed-output builds cannot reach the network",
                pasta.display()
            ),
            Some("install passt, or point 'pasta-path' at its pasta"),
        ),
    }
}

/// The store directory's owner and modes: Nix's multi-user layout (root,
/// 1775, the build users' group) as root, the caller's own otherwise.
fn store_check(store: &Path, settings: &Settings, root: bool) -> Check {
    let meta = match std::fs::metadata(store) {
        Ok(meta) => meta,
        Err(_) => {
            return check(
                "store",
                Verdict::Info,
                format!(
                    "'{}' does not exist yet; the first build makes it",
                    store.display()
                ),
                None,
            );
        }
    };
    let mode = meta.mode() & 0o7777;
    let owner = meta.uid();
    let me = nix::unistd::geteuid().as_raw();
    if owner != me && !(root && owner == 0) {
        let name = nix::unistd::User::from_uid(owner.into())
            .ok()
            .flatten()
            .map_or_else(|| owner.to_string(), |u| u.name);
        let verdict = if nix::unistd::access(store, nix::unistd::AccessFlags::W_OK).is_ok() {
            Verdict::Warn
        } else {
            Verdict::Fail
        };
        return check(
            "store",
            verdict,
            format!(
                "'{}' belongs to {name}, not to this user: builds cannot add their outputs",
                store.display()
            ),
            Some("build as the store's owner, or through its daemon"),
        );
    }
    if mode & 0o002 != 0 && mode & 0o1000 == 0 {
        return check(
            "store",
            Verdict::Fail,
            format!(
                "'{}' is mode {mode:04o}: anyone may remove or replace store paths",
                store.display()
            ),
            Some("chmod 1775 the store directory, as Nix makes it"),
        );
    }
    let group = nix::unistd::Group::from_gid(meta.gid().into())
        .ok()
        .flatten()
        .map_or_else(|| meta.gid().to_string(), |g| g.name);
    if root && !settings.build_users_group.is_empty() && mode != 0o1775 {
        return check(
            "store",
            Verdict::Warn,
            format!(
                "'{}' is mode {mode:04o}, group {group}; Nix's multi-user store is 1775, group '{}'",
                store.display(),
                settings.build_users_group
            ),
            Some("chgrp the store directory to the build users group and chmod 1775"),
        );
    }
    check(
        "store",
        Verdict::Ok,
        format!("'{}': mode {mode:04o}, group {group}", store.display()),
        None,
    )
}
