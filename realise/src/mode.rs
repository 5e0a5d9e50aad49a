//! Whether a build is sandboxed (SPEC B1–B8, B11), decided before anything
//! runs: the `sandbox` setting, `__noChroot`, fixed-output derivations in
//! relaxed mode, a diverted store, and what the kernel allows.

use hermetic_config::settings::{SandboxMode, Settings};
use hermetic_store::Derivation;

use crate::attrs::Attrs;
use crate::error::BuildError;

/// How a build runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// In the namespace sandbox.
    Sandboxed,
    /// Without namespaces (B9): the build user, the filter, a clean
    /// environment, the host's filesystem.
    Unsandboxed,
}

/// Whether this machine builds for `system` with the `required` features:
/// its own system (or `builtin`) or one of `extra-platforms`, and every
/// feature among `system-features`.
pub fn builds_here(settings: &Settings, system: &str, required: &[String]) -> bool {
    (system == settings.system
        || system == "builtin"
        || settings.extra_platforms.iter().any(|p| p == system))
        && required
            .iter()
            .all(|f| settings.system_features.contains(f))
}

/// Checks the platform and required features (B11, Lix's text).
pub fn check_platform(
    settings: &Settings,
    drv: &Derivation,
    drv_path: &str,
    attrs: &Attrs<'_>,
) -> Result<(), BuildError> {
    let required = attrs.strings("requiredSystemFeatures");
    if builds_here(settings, &drv.system, &required) {
        return Ok(());
    }
    Err(BuildError::WrongPlatform(Box::new(
        crate::error::WrongPlatform {
            system: drv.system.clone(),
            features: required.join(", "),
            drv: drv_path.to_owned(),
            host: settings.system.clone(),
            host_features: settings.system_features.join(", "),
        },
    )))
}

/// Chooses the mode. `diverted` says the store's logical directory is not
/// its real one; `namespaces` whether the kernel allows the sandbox.
/// Warnings go to `warn`.
pub fn select(
    settings: &Settings,
    drv: &Derivation,
    drv_path: &str,
    attrs: &Attrs<'_>,
    diverted: bool,
    namespaces: impl FnOnce() -> bool,
    warn: &mut dyn FnMut(String),
) -> Result<Mode, BuildError> {
    let no_chroot = attrs.bool("__noChroot");
    let wanted = match settings.sandbox {
        SandboxMode::True if no_chroot => {
            return Err(BuildError::NoChrootRefused(drv_path.to_owned()));
        }
        SandboxMode::True => true,
        SandboxMode::Relaxed => !drv.is_fixed_output() && !no_chroot,
        SandboxMode::False => false,
    };
    if !wanted && !diverted {
        return Ok(Mode::Unsandboxed);
    }
    if !wanted {
        warn("auto-enabling the sandbox due to using a diverted store".into());
    }
    if namespaces() {
        return Ok(Mode::Sandboxed);
    }
    if diverted {
        return Err(BuildError::DivertedNeedsNamespaces);
    }
    if settings.sandbox_fallback {
        warn(
            "auto-disabling sandboxing because the prerequisite namespaces are not available"
                .into(),
        );
        return Ok(Mode::Unsandboxed);
    }
    Err(BuildError::NoNamespaces)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hermetic_store::StoreDir;

    fn drv(text: &str) -> Derivation {
        Derivation::from_aterm(text.as_bytes(), &StoreDir::default(), "x").unwrap()
    }

    const PLAIN: &str = r#"Derive([("out","/nix/store/wd0ys9snp82b5v5j4pgp5wfhnfjhl2vm-a","","")],[],[],"x86_64-linux","/bin/sh",[],[("__noChroot","1")])"#;
    const FOD: &str = r#"Derive([("out","/nix/store/y3hz0i1ffrqi1r63q39lw11jdw6vcpck-fodflat","sha256","98691562fb398c5d5b779cd893eb8dfd3c5a44b3723ffdd046efba5f5048a9fa")],[],[],"x86_64-linux","/bin/sh",[],[])"#;

    fn mode(
        sandbox: &str,
        text: &str,
        diverted: bool,
        namespaces: bool,
        fallback: bool,
    ) -> Result<Mode, String> {
        let mut settings = Settings::for_caller();
        settings.set("sandbox", sandbox).unwrap();
        settings.sandbox_fallback = fallback;
        let drv = drv(text);
        let attrs = Attrs::of(&drv).unwrap();
        select(
            &settings,
            &drv,
            "/nix/store/d.drv",
            &attrs,
            diverted,
            || namespaces,
            &mut |_| {},
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn each_setting_and_kind() {
        let no_chroot = PLAIN;
        let plain = &PLAIN.replace(r#"("__noChroot","1")"#, r#"("a","b")"#);
        assert_eq!(
            mode("true", no_chroot, false, true, true).unwrap_err(),
            "derivation '/nix/store/d.drv' has '__noChroot' set, but that's not allowed when 'sandbox' is 'true'"
        );
        assert_eq!(mode("true", plain, false, true, true), Ok(Mode::Sandboxed));
        assert_eq!(
            mode("relaxed", no_chroot, false, true, true),
            Ok(Mode::Unsandboxed)
        );
        assert_eq!(
            mode("relaxed", FOD, false, true, true),
            Ok(Mode::Unsandboxed)
        );
        assert_eq!(
            mode("relaxed", plain, false, true, true),
            Ok(Mode::Sandboxed)
        );
        assert_eq!(
            mode("false", plain, false, true, true),
            Ok(Mode::Unsandboxed)
        );
        // A diverted store forces the sandbox (B5) and needs the namespaces.
        assert_eq!(mode("false", plain, true, true, true), Ok(Mode::Sandboxed));
        assert!(
            mode("false", plain, true, false, true)
                .unwrap_err()
                .starts_with("Sandboxing is enabled due to using a diverted store")
        );
        // Without the namespaces: fallback, or the error (B7).
        assert_eq!(
            mode("true", plain, false, false, true),
            Ok(Mode::Unsandboxed)
        );
        assert!(
            mode("true", plain, false, false, false)
                .unwrap_err()
                .starts_with("this system does not support the kernel namespaces")
        );
    }
}
