//! What a build's sandbox holds from outside: the input closure (B39),
//! `sandbox-paths` with the closures of store paths among them (B50, B51),
//! the pre-build hook's paths (B55) and `__impureHostDeps` (B56).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use hermetic_config::settings::Settings;
use hermetic_runtime::{SandboxPath, normalize_target};
use hermetic_store::{Derivation, LocalStore, StorePath};

use crate::attrs::Attrs;
use crate::error::BuildError;
use crate::hooks;

/// The input sources and the wanted outputs of the input derivations,
/// closed under references.
pub fn input_closure(
    store: &LocalStore,
    drv: &Derivation,
    printed: &str,
) -> Result<BTreeSet<StorePath>, BuildError> {
    let store_dir = &store.layout().store_dir;
    let mut roots: Vec<StorePath> = drv.input_srcs.iter().cloned().collect();
    for (input, wanted) in &drv.input_drvs {
        let registered: BTreeMap<String, StorePath> =
            store.derivation_outputs(input)?.into_iter().collect();
        for name in wanted {
            let path = match registered.get(name) {
                Some(path) => path.clone(),
                None => store
                    .read_derivation(input)?
                    .outputs
                    .get(name)
                    .and_then(|o| o.path().cloned())
                    .ok_or_else(|| BuildError::BadAttrs {
                        drv: printed.to_owned(),
                        reason: format!(
                            "input '{}' has no output '{name}'",
                            store_dir.print(input)
                        ),
                    })?,
            };
            roots.push(path);
        }
    }
    Ok(store.closure(&roots)?)
}

/// `sandbox-paths`, adding to `closure` the closure of each source that is
/// a valid store path; then the pre-build hook's paths (run with
/// `hook_root`, the sandbox's scratch space, for a sandboxed build).
pub fn sandbox_paths(
    store: &LocalStore,
    settings: &Settings,
    printed: &str,
    closure: &mut BTreeSet<StorePath>,
    hook_root: Option<&Path>,
) -> Result<Vec<SandboxPath>, BuildError> {
    let mut paths = Vec::new();
    for entry in settings.effective_sandbox_paths() {
        if let Ok(path) = store.layout().parse_user_path(&entry.source)
            && store.is_valid(&path)?
        {
            closure.extend(store.closure(&[path])?);
        }
        paths.push(entry);
    }
    if !settings.pre_build_hook.is_empty() {
        for token in hooks::pre_build(&settings.pre_build_hook, printed, hook_root)? {
            let (target, source) = token.split_once('=').unwrap_or((&token, &token));
            paths.push(SandboxPath {
                target: target.into(),
                source: source.into(),
                optional: false,
            });
        }
    }
    Ok(paths)
}

/// `__impureHostDeps` (B56): each must lie under an `allowed-impure-host-deps`
/// prefix; they become optional binds.
pub fn impure_host_deps(
    attrs: &Attrs<'_>,
    settings: &Settings,
    printed: &str,
) -> Result<Vec<SandboxPath>, BuildError> {
    // Compared, and bound, with `.`, `..` and repeated slashes resolved
    // lexically (as Nix's canonPath; symlinks are not followed, so nothing
    // is learnt of paths the user cannot see): `/usr/share/../../etc` is
    // `/etc`, not a path under `/usr/share`.
    let allowed: Vec<PathBuf> = settings
        .allowed_impure_host_deps
        .iter()
        .filter_map(|prefix| normalize_target(Path::new(prefix)).ok())
        .collect();
    let mut paths = Vec::new();
    for path in attrs.strings("__impureHostDeps") {
        let normal = normalize_target(Path::new(&path))
            .ok()
            .filter(|normal| allowed.iter().any(|prefix| normal.starts_with(prefix)));
        let Some(normal) = normal else {
            return Err(BuildError::ImpureHostDep {
                drv: printed.to_owned(),
                path,
            });
        };
        paths.push(SandboxPath {
            target: normal.clone(),
            source: normal,
            optional: true,
        });
    }
    Ok(paths)
}
