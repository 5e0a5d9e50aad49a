//! The builder's environment, built from nothing (SPEC B62).

use std::collections::BTreeMap;
use std::path::Path;

/// The variables that name the build directory (B62): the sandbox's
/// (`/build`) in a sandbox, the host's for an unsandboxed build.
pub const BUILD_DIR_VARIABLES: [&str; 6] =
    ["NIX_BUILD_TOP", "TMPDIR", "TEMPDIR", "TMP", "TEMP", "PWD"];

/// The environment of a sandboxed builder, in Nix's order (later wins):
/// `PATH`, `HOME`, `NIX_STORE`, `NIX_BUILD_CORES`; then `attributes` (the
/// derivation's attributes, or `sandbox-run --env`), which may override
/// those four; then `NIX_BUILD_TOP`, `TMPDIR`, `TEMPDIR`, `TMP`, `TEMP` and
/// `PWD` (the sandbox build directory), `NIX_LOG_FD` and `TERM`, which
/// nothing overrides.
pub fn builder_environment<'a>(
    store_dir: &Path,
    sandbox_build_dir: &Path,
    cores: usize,
    attributes: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let mut set = |name: &str, value: &str| {
        env.insert(name.to_string(), value.to_string());
    };
    set("PATH", "/path-not-set");
    set("HOME", "/homeless-shelter");
    set("NIX_STORE", &store_dir.to_string_lossy());
    set("NIX_BUILD_CORES", &cores.to_string());
    for (name, value) in attributes {
        set(name, value);
    }
    let build_dir = sandbox_build_dir.to_string_lossy();
    for name in BUILD_DIR_VARIABLES {
        set(name, &build_dir);
    }
    set("NIX_LOG_FD", "2");
    set("TERM", "xterm-256color");
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_override_only_the_first_four() {
        let env = builder_environment(
            Path::new("/nix/store"),
            Path::new("/build"),
            4,
            [
                ("PATH", "/x/bin"),
                ("HOME", "/h"),
                ("TMPDIR", "/elsewhere"),
                ("TERM", "dumb"),
                ("out", "/nix/store/o"),
            ],
        );
        assert_eq!(env["PATH"], "/x/bin");
        assert_eq!(env["HOME"], "/h");
        assert_eq!(env["TMPDIR"], "/build");
        assert_eq!(env["TERM"], "xterm-256color");
        assert_eq!(env["out"], "/nix/store/o");
        assert_eq!(env["NIX_BUILD_CORES"], "4");
        assert_eq!(env["NIX_LOG_FD"], "2");
        assert_eq!(env["NIX_STORE"], "/nix/store");
        assert_eq!(env["PWD"], "/build");
    }
}
