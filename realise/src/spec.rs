//! A derivation's [`SandboxSpec`]: the builder, its environment and files,
//! the inputs and binds, the network (the host's, or pasta's, for
//! fixed-output builds; B36, B59, B60), and the rest from the settings.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use hermetic_config::settings::Settings;
use hermetic_runtime::{Network, RunPolicy, SandboxPath, SandboxSpec};
use hermetic_store::{Derivation, StoreLayout, StorePath};
use hermetic_uidmap::pool::PoolConfig;

use crate::attrs::Attrs;
use crate::env::{BuildDirFiles, builder_world};
use crate::error::BuildError;

/// The settings [`run_policy`] reads (a test checks that it reads these
/// and no others): what `sandbox-run` takes from `--option`.
pub const RUN_POLICY_SETTINGS: [&str; 9] = [
    "build-users-group",
    "auto-allocate-uids",
    "start-id",
    "id-count",
    "use-cgroups",
    "max-silent-time",
    "timeout",
    "max-build-pids",
    "max-build-memory",
];

/// Whether the setting `name` (a nix.conf name or an alias) is one
/// [`run_policy`] reads.
pub fn is_run_policy_setting(name: &str) -> bool {
    hermetic_config::settings::declaration(name)
        .is_some_and(|declared| RUN_POLICY_SETTINGS.contains(&declared.name))
}

/// The run policy `settings` give every build: build users, cgroup,
/// limits and time limits.
pub fn run_policy(settings: &Settings) -> RunPolicy {
    RunPolicy {
        build_users: PoolConfig {
            build_users_group: settings.build_users_group.clone(),
            auto_allocate_uids: settings.auto_allocate_uids,
            start_id: settings.start_id,
            id_count: settings.id_count,
            state_dir: settings.state_dir.clone(),
        },
        use_cgroups: settings.use_cgroups,
        max_silent_time: settings.max_silent_time,
        timeout: settings.timeout,
        max_build_pids: settings.max_build_pids,
        max_build_memory: settings.max_build_memory,
    }
}

/// What a build's spec is made of.
pub struct SpecInputs<'a> {
    /// The derivation.
    pub drv: &'a Derivation,
    /// Its attributes.
    pub attrs: &'a Attrs<'a>,
    /// Its printed path.
    pub printed: &'a str,
    /// The settings.
    pub settings: &'a Settings,
    /// The store's directories.
    pub layout: &'a StoreLayout,
    /// In a sandbox, or not.
    pub sandboxed: bool,
    /// The input closure.
    pub closure: &'a BTreeSet<StorePath>,
    /// Host paths to bind.
    pub sandbox_paths: Vec<SandboxPath>,
    /// The build's staging directory (scratch space, build directory).
    pub staging: &'a Path,
    /// The outputs' paths.
    pub outputs: &'a BTreeMap<String, StorePath>,
    /// What `exportReferencesGraph` hands the builder.
    pub exported: &'a crate::export_graph::Exported,
}

/// The spec, and the files the build directory gets (`passAsFile`,
/// structured attributes).
pub fn sandbox_spec(
    inputs: SpecInputs<'_>,
    warn: &mut dyn FnMut(String),
) -> Result<(SandboxSpec, BuildDirFiles), BuildError> {
    let SpecInputs {
        drv,
        attrs,
        printed,
        settings,
        layout,
        sandboxed,
        closure,
        sandbox_paths,
        staging,
        outputs,
        exported,
    } = inputs;
    let store_dir = &layout.store_dir;
    let mut spec = SandboxSpec::new(PathBuf::from(&drv.builder), drv.args.clone());
    spec.store_dir = PathBuf::from(store_dir.as_str());
    spec.real_store_dir = Some(layout.real_store_dir.clone());
    spec.inputs = closure
        .iter()
        .map(|p| PathBuf::from(store_dir.print(p)))
        .collect();
    spec.sandbox_paths = sandbox_paths;
    if let Some(name) = drv.builder.strip_prefix("builtin:") {
        // Nix's built-in builders: hermetic's helper, in this sandbox.
        let helper = crate::builtins::helper(name).map_err(|reason| BuildError::BadAttrs {
            drv: printed.to_owned(),
            reason,
        })?;
        spec.builder = helper.program;
        spec.args = helper.args;
        if name == "fetchurl" {
            for mirror in &settings.hashed_mirrors {
                spec.args
                    .extend(["--hashed-mirror".to_owned(), mirror.clone()]);
            }
        }
        if sandboxed {
            spec.sandbox_paths.extend(helper.binds);
        }
    }
    spec.sandbox_build_dir = PathBuf::from(&settings.sandbox_build_dir);
    if drv.is_fixed_output() {
        spec.etc_files = fixed_output_etc(warn);
        spec.network = Network::Host;
        if sandboxed && !settings.pasta_path.is_empty() {
            // Lix's pasta networking (B60): user-mode TCP and UDP through
            // pasta, none of the host's network namespace; without
            // /dev/net/tun, a network namespace with nothing to reach.
            if Path::new("/dev/net/tun").exists() {
                spec.network = Network::Pasta;
                spec.pasta_path = Some(PathBuf::from(&settings.pasta_path));
                if let Some(resolv) = spec.etc_files.get_mut("resolv.conf") {
                    *resolv = hermetic_runtime::pasta_resolv_conf(resolv);
                }
            } else {
                spec.network = Network::Loopback;
            }
        }
    }
    spec.system = drv.system.clone();
    spec.uid_range = attrs
        .strings("requiredSystemFeatures")
        .iter()
        .any(|f| f == "uid-range");
    spec.sandbox = sandboxed;
    spec.sandbox_block_nested_userns = settings.sandbox_block_nested_userns;
    spec.filter_syscalls = settings.filter_syscalls;
    spec.sandbox_dev_shm_size = settings.sandbox_dev_shm_size.clone();
    spec.kvm = settings.system_features.iter().any(|f| f == "kvm");
    spec.scratch_parent = Some(staging.to_owned());
    let build_dir = staging.join("build");
    // An unsandboxed builder sees its build directory where it is.
    let env_build_dir = if sandboxed {
        spec.sandbox_build_dir.clone()
    } else {
        build_dir.clone()
    };
    let printed_outputs: BTreeMap<String, String> = outputs
        .iter()
        .map(|(k, v)| (k.clone(), store_dir.print(v)))
        .collect();
    let world = builder_world(
        drv,
        attrs,
        &spec.store_dir,
        &env_build_dir,
        settings.build_cores(),
        &printed_outputs,
        exported,
    );
    spec.env = world.env;
    let rewrites = crate::env::placeholder_rewrites(&printed_outputs);
    spec.args = spec
        .args
        .iter()
        .map(|arg| crate::env::rewrite(arg, &rewrites))
        .collect();
    let mut files = world.files;
    if drv.builder == "builtin:fetchurl" {
        // Nix reads `netrc-file` for the builtin, which runs as the build
        // user, and gives it the contents in its build directory.
        if let Ok(netrc) = std::fs::read(&settings.netrc_file) {
            files.push(("netrc".to_owned(), netrc));
            let file = env_build_dir.join("netrc").display().to_string();
            spec.args.extend(["--netrc-file".to_owned(), file]);
        }
    }
    spec.build_dir = Some(build_dir);
    Ok((spec, files))
}

/// The `/etc` files a fixed-output build gets (B36): the host's
/// `resolv.conf`, `services` and `hosts` copied (as Lix does), and
/// `nsswitch.conf`.
fn fixed_output_etc(warn: &mut dyn FnMut(String)) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    files.insert(
        "nsswitch.conf".into(),
        "hosts: files dns\nservices: files\n".into(),
    );
    for name in ["resolv.conf", "services", "hosts"] {
        let path = Path::new("/etc").join(name);
        match fs::read_to_string(&path) {
            Ok(text) => {
                files.insert(name.into(), text);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => warn(format!(
                "'{}' exists but is inaccessible, it will not be copied in the sandbox",
                path.display()
            )),
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;
    use hermetic_config::DECLARATIONS;

    /// A value of a setting's type unlike its default.
    fn other_value(name: &str) -> &'static str {
        match name {
            "build-users-group" => "builders",
            "auto-allocate-uids" | "use-cgroups" => "true",
            _ => "7",
        }
    }

    #[test]
    fn the_run_policy_reads_the_settings_it_names_and_no_others() {
        let defaults = Settings::for_caller();
        for declared in DECLARATIONS {
            let mut settings = defaults.clone();
            // Values that parse for every type; the first that changes the
            // setting is kept.
            let changed = [other_value(declared.name), "true", "relaxed", "/x", "false"]
                .into_iter()
                .any(|value| settings.set(declared.name, value).is_ok() && settings != defaults);
            assert!(changed, "{}: no value changed it", declared.name);
            let reads = run_policy(&settings) != run_policy(&defaults);
            assert_eq!(
                reads,
                RUN_POLICY_SETTINGS.contains(&declared.name),
                "{}",
                declared.name
            );
        }
    }
}
