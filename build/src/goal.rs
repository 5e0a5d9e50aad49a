//! One derivation built, from its `.drv` to registered outputs: mode and
//! platform checked, outputs locked, the input closure and sandbox paths
//! gathered, the spec made, the builder run as a [`Job`], the outputs
//! checked, made canonical, hashed, scanned and registered (or, with
//! `--check`, compared with the registered ones).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hermetic_runtime::job::Job;
use hermetic_runtime::settings::Settings;
use hermetic_runtime::{ExitStatus, Network, RunOptions, SandboxPath, SandboxSpec};
use hermetic_store::canonical::canonicalise;
use hermetic_store::local::copy_through_nar;
use hermetic_store::{Derivation, DerivationOutput, LocalStore, PathInfo, StorePath};

use crate::attrs::Attrs;
use crate::env::builder_world;
use crate::error::{BuildError, io_err};
use crate::hooks;
use crate::log::{PrefixedLines, SharedLog};
use crate::mode::{Mode, check_platform, namespaces_available, select};
use crate::outputs::{BuilderIds, check_root, check_tree, fixed_output_hash, hash_and_scan};

/// What kind of failure a build had: it decides the exit status (B83).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The builder of a sandboxed kind failed (100).
    Permanent,
    /// The builder of a fixed-output derivation failed (1).
    Transient,
    /// A time limit (101).
    TimedOut,
    /// A fixed output's hash differed (102).
    HashMismatch,
    /// `--check` found a difference (104).
    NotDeterministic,
    /// An input failed.
    DependencyFailed,
    /// Anything else: a setup problem, a bad derivation, an interruption.
    Misc,
}

/// A failed build: its kind and why.
#[derive(Debug)]
pub struct BuildFailure {
    /// The kind.
    pub kind: FailureKind,
    /// Why.
    pub error: BuildError,
}

impl<E: Into<BuildError>> From<E> for BuildFailure {
    fn from(error: E) -> Self {
        BuildFailure {
            kind: FailureKind::Misc,
            error: error.into(),
        }
    }
}

fn fail(kind: FailureKind, error: BuildError) -> BuildFailure {
    BuildFailure { kind, error }
}

/// One build to do.
pub struct Goal<'a> {
    /// The derivation's path.
    pub drv_path: StorePath,
    /// The derivation.
    pub drv: Derivation,
    /// Rebuild and compare instead of building missing outputs.
    pub check: bool,
    /// The settings.
    pub settings: &'a Settings,
    /// Readable when the build must stop (an interrupt).
    pub cancel: Option<BorrowedFd<'a>>,
    /// Where builder output goes, line by line.
    pub log: SharedLog,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
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

impl Goal<'_> {
    /// Builds (or checks) the derivation and returns its outputs.
    pub fn run(
        self,
        store: &mut LocalStore,
        warn: &mut dyn FnMut(String),
    ) -> Result<BTreeMap<String, StorePath>, BuildFailure> {
        let layout = store.layout().clone();
        let store_dir = layout.store_dir.clone();
        let printed = store_dir.print(&self.drv_path);
        let drv = &self.drv;
        let settings = self.settings;
        let attrs = Attrs::of(drv).map_err(|reason| BuildError::BadAttrs {
            drv: printed.clone(),
            reason,
        })?;
        let mut outputs = BTreeMap::new();
        for (name, output) in &drv.outputs {
            let Some(path) = output.path() else {
                return Err(BuildError::BadAttrs {
                    drv: printed.clone(),
                    reason: format!(
                        "output '{name}' has no path yet: content-addressed derivations (ca-derivations) are not supported"
                    ),
                }
                .into());
            };
            outputs.insert(name.clone(), path.clone());
        }
        let all_valid = |store: &LocalStore| -> Result<bool, BuildFailure> {
            for path in outputs.values() {
                if !store.is_valid(path)? {
                    return Ok(false);
                }
            }
            Ok(true)
        };
        if !self.check && all_valid(store)? {
            return Ok(outputs);
        }
        if self.check && !all_valid(store)? {
            return Err(BuildError::CheckWithoutOutputs(printed).into());
        }
        check_platform(settings, drv, &printed, &attrs)?;
        let diverted = layout.real_store_dir != Path::new(store_dir.as_str());
        let mode = select(
            settings,
            drv,
            &printed,
            &attrs,
            diverted,
            namespaces_available,
            warn,
        )?;
        let sandboxed = mode == Mode::Sandboxed;
        if self.check && !sandboxed {
            return Err(BuildError::BadAttrs {
                drv: printed,
                reason: "--check needs a sandboxed build here, so that the new outputs do not overwrite the registered ones".into(),
            }
            .into());
        }
        let mut extra_paths = Vec::new();
        for path in attrs.strings("__impureHostDeps") {
            let allowed = settings.allowed_impure_host_deps.iter().any(|prefix| {
                path == *prefix || path.starts_with(&format!("{}/", prefix.trim_end_matches('/')))
            });
            if !allowed {
                return Err(BuildError::ImpureHostDep { drv: printed, path }.into());
            }
            extra_paths.push(SandboxPath {
                target: PathBuf::from(&path),
                source: PathBuf::from(&path),
                optional: true,
            });
        }

        let output_paths: Vec<StorePath> = outputs.values().cloned().collect();
        let _locks = store.lock_paths(&output_paths)?;
        if !self.check && all_valid(store)? {
            return Ok(outputs);
        }
        let mut pending = store.begin()?;
        let staging = pending.staging().to_owned();
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&staging)
            .map_err(io_err("create directory", &staging))?;

        // The input closure (B39): input sources and the wanted outputs of
        // input derivations, closed under references.
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
                            drv: printed.clone(),
                            reason: format!(
                                "input '{}' has no output '{name}'",
                                store_dir.print(input)
                            ),
                        })?,
                };
                roots.push(path);
            }
        }
        let mut closure = store.closure(&roots)?;

        // sandbox-paths (B50), with the closures of store paths (B51).
        let mut sandbox_paths = Vec::new();
        for token in &settings.sandbox_paths {
            let entry: SandboxPath =
                token
                    .parse()
                    .map_err(
                        |e: hermetic_runtime::SandboxPathError| BuildError::BadAttrs {
                            drv: printed.clone(),
                            reason: format!("sandbox-paths: {e}"),
                        },
                    )?;
            if let Ok(path) = layout.parse_user_path(&entry.source)
                && store.is_valid(&path)?
            {
                closure.extend(store.closure(&[path])?);
            }
            sandbox_paths.push(entry);
        }
        if !settings.pre_build_hook.is_empty() {
            let root = sandboxed.then_some(staging.as_path());
            for token in hooks::pre_build(&settings.pre_build_hook, &printed, root)? {
                let (target, source) = token.split_once('=').unwrap_or((&token, &token));
                sandbox_paths.push(SandboxPath {
                    target: target.into(),
                    source: source.into(),
                    optional: false,
                });
            }
        }
        sandbox_paths.extend(extra_paths);
        // Outputs are never inputs (B40).
        for output in &output_paths {
            closure.remove(output);
        }

        let mut spec = SandboxSpec::new(PathBuf::from(&drv.builder), drv.args.clone());
        spec.store_dir = PathBuf::from(store_dir.as_str());
        spec.real_store_dir = Some(layout.real_store_dir.clone());
        spec.inputs = closure
            .iter()
            .map(|p| PathBuf::from(store_dir.print(p)))
            .collect();
        spec.sandbox_paths = sandbox_paths;
        spec.sandbox_build_dir = PathBuf::from(&settings.sandbox_build_dir);
        if spec.store_dir.starts_with(&spec.sandbox_build_dir) {
            return Err(BuildError::BadAttrs {
                drv: printed,
                reason: "`sandbox-build-dir` must not contain the storeDir".into(),
            }
            .into());
        }
        let fixed_output = drv.is_fixed_output();
        if fixed_output {
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
        spec.scratch_parent = Some(staging.clone());
        let build_dir = staging.join("build");
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
            &attrs,
            &spec.store_dir,
            &env_build_dir,
            settings.build_cores(),
            &printed_outputs,
        );
        spec.env = world.env;
        spec.build_dir = Some(build_dir.clone());

        if !sandboxed {
            // The builder writes its outputs in place: a crash leaves them
            // to the next start, and stale ones go first.
            pending.set_targets(&output_paths)?;
            for path in &output_paths {
                hermetic_store::pending::remove_any(&layout.real_path(path))?;
            }
        }

        let job = Job::start(spec, settings, &printed, &mut |notice| {
            warn(notice.to_owned())
        })?;
        let builder = job.spec.build_user;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&build_dir)
            .map_err(io_err("create directory", &build_dir))?;
        let chown = |path: &Path| -> Result<(), BuildError> {
            if let Some(user) = builder {
                std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
                    .map_err(io_err("change the owner of", path))?;
            }
            Ok(())
        };
        chown(&build_dir)?;
        if let (false, Some(user)) = (sandboxed, builder) {
            // An unsandboxed builder makes its outputs in the store
            // directory itself, which Nix keeps root:<build group>, 1775.
            let dir = &layout.real_store_dir;
            std::os::unix::fs::chown(dir, Some(0), Some(user.gid))
                .map_err(io_err("change the owner of", dir))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o1775))
                .map_err(io_err("chmod", dir))?;
        }
        for (name, contents) in &world.files {
            let file = build_dir.join(name);
            fs::write(&file, contents).map_err(io_err("write", &file))?;
            chown(&file)?;
        }
        let sandbox = job.prepare()?;
        let builder_ids = match builder {
            Some(user) => BuilderIds {
                uid: user.uid,
                count: user.count,
            },
            None => BuilderIds {
                uid: nix::unistd::geteuid().as_raw(),
                count: 1,
            },
        };
        let mut log = PrefixedLines::new(&drv.name, self.log.clone());
        let ended = job.run(
            &sandbox,
            RunOptions {
                keep: true,
                cancel: self.cancel,
                ..RunOptions::default()
            },
            &mut log,
        )?;
        drop(log);
        let outcome = ended.outcome;

        let mut failed = |error: BuildError, kind: FailureKind, pending| -> BuildFailure {
            keep_failed(settings, &layout.real_store_dir, pending, &drv.name, warn);
            fail(kind, error)
        };
        if outcome.cancelled {
            return Err(failed(
                BuildError::Interrupted(printed),
                FailureKind::Misc,
                pending,
            ));
        }
        if let Some(timed_out) = outcome.timed_out {
            let error = BuildError::TimedOut {
                drv: printed,
                timed_out: timed_out.to_string(),
            };
            return Err(failed(error, FailureKind::TimedOut, pending));
        }
        let kind = if fixed_output {
            FailureKind::Transient
        } else {
            FailureKind::Permanent
        };
        match outcome.status {
            ExitStatus::Exited(0) => {}
            ExitStatus::Exited(code) => {
                return Err(failed(
                    BuildError::BuilderFailed { drv: printed, code },
                    kind,
                    pending,
                ));
            }
            ExitStatus::Signaled(signal) => {
                let error = BuildError::BuilderKilled {
                    drv: printed,
                    signal,
                };
                return Err(failed(error, kind, pending));
            }
        }

        let scratch_store = outcome.kept.as_ref().and_then(|k| k.store.clone());
        let location = |path: &StorePath| match (&scratch_store, sandboxed) {
            (Some(dir), true) => dir.join(path.base_name()),
            _ => layout.real_path(path),
        };
        let processed = (|| -> Result<Vec<(PathBuf, PathInfo)>, BuildFailure> {
            let mut seen = HashSet::new();
            for (name, path) in &outputs {
                let at = location(path);
                check_root(&at, name, &store_dir.print(path), &printed, builder_ids)?;
                check_tree(&at, builder_ids, &mut seen)?;
            }
            let candidates: Vec<StorePath> =
                closure.iter().chain(output_paths.iter()).cloned().collect();
            let owner = store.owner();
            let mut items = Vec::new();
            for (name, path) in &outputs {
                let mut at = location(path);
                let out_printed = store_dir.print(path);
                let mut ca = None;
                if let DerivationOutput::Fixed { method, hash, .. } = &drv.outputs[name] {
                    // A fresh copy: descriptors the builder passed on reach
                    // only the old inode (CVE-2024-27297).
                    let fresh = staging.join(format!("fresh-{}", path.base_name()));
                    copy_through_nar(&at, &fresh)?;
                    at = fresh;
                    canonicalise(&at, owner.0, owner.1)?;
                    let got = fixed_output_hash(&at, &out_printed, *method, hash.algo())?;
                    if got != *hash {
                        let got_path = store_dir.make_fixed_output_path(
                            *method,
                            &got,
                            path.name(),
                            &BTreeSet::new(),
                            false,
                        )?;
                        // What was built is registered at its own
                        // content address (B88), so it can be inspected
                        // and used.
                        let (nar_hash, nar_size, _) = hash_and_scan(&at, [])?;
                        let _lock = store.lock_paths(std::slice::from_ref(&got_path))?;
                        if !store.is_valid(&got_path)? {
                            let info = PathInfo {
                                path: got_path.clone(),
                                nar_hash,
                                nar_size,
                                references: BTreeSet::new(),
                                deriver: Some(self.drv_path.clone()),
                                registration_time: now(),
                                ca: Some(format!(
                                    "fixed:{}{}",
                                    method.prefix(),
                                    got.to_prefixed_base32()
                                )),
                                sigs: Vec::new(),
                                ultimate: true,
                            };
                            store.install_staged(&mut pending, &[(at.clone(), info)])?;
                        }
                        let url = attrs
                            .string("urls")
                            .or_else(|| attrs.string("url"))
                            .unwrap_or_else(|| "(unknown)".into());
                        return Err(fail(
                            FailureKind::HashMismatch,
                            BuildError::HashMismatch(Box::new(crate::error::HashMismatch {
                                drv: printed.clone(),
                                url,
                                specified: hash.to_sri(),
                                got: got.to_sri(),
                                expected_path: out_printed,
                                got_path: store_dir.print(&got_path),
                            })),
                        ));
                    }
                    ca = Some(format!(
                        "fixed:{}{}",
                        method.prefix(),
                        got.to_prefixed_base32()
                    ));
                } else {
                    canonicalise(&at, owner.0, owner.1)?;
                }
                let (nar_hash, nar_size, references) =
                    hash_and_scan(&at, candidates.iter().cloned())?;
                if ca.is_some() && !references.is_empty() {
                    let list: String = references
                        .iter()
                        .map(|r| format!("\n  {}", store_dir.print(r)))
                        .collect();
                    return Err(BuildError::FixedOutputReferences {
                        drv: printed.clone(),
                        count: references.len(),
                        list,
                    }
                    .into());
                }
                items.push((
                    at,
                    PathInfo {
                        path: path.clone(),
                        nar_hash,
                        nar_size,
                        references,
                        deriver: Some(self.drv_path.clone()),
                        registration_time: now(),
                        ca,
                        sigs: Vec::new(),
                        ultimate: true,
                    },
                ));
            }
            check_cycles(&printed, &outputs, &items)?;
            let infos: Vec<PathInfo> = items.iter().map(|(_, info)| info.clone()).collect();
            crate::checks::check_outputs(store, &attrs, &outputs, &infos)?;
            Ok(items)
        })();
        let items = match processed {
            Ok(items) => items,
            Err(failure) => {
                keep_failed(settings, &layout.real_store_dir, pending, &drv.name, warn);
                return Err(failure);
            }
        };

        if self.check {
            let mut lines = String::new();
            for (at, info) in &items {
                let registered = store.query_info(&info.path)?;
                if registered.nar_hash == info.nar_hash {
                    continue;
                }
                let existing = layout.real_path(&info.path);
                lines.push_str(&format!(
                    "\n  output differs: output '{}' differs from '{}.check'",
                    store_dir.print(&info.path),
                    store_dir.print(&info.path)
                ));
                let run_diff = settings.run_diff_hook && !settings.diff_hook.is_empty();
                if settings.keep_failed || run_diff {
                    let check_path = PathBuf::from(format!("{}.check", existing.display()));
                    hermetic_store::pending::remove_any(&check_path)?;
                    fs::rename(at, &check_path).map_err(io_err("rename", &check_path))?;
                    if run_diff {
                        let said = hooks::diff(
                            &settings.diff_hook,
                            &existing,
                            &check_path,
                            &printed,
                            &build_dir,
                        )?;
                        warn(said.trim_end().to_owned());
                    }
                }
            }
            pending.finish()?;
            if !lines.is_empty() {
                return Err(fail(
                    FailureKind::NotDeterministic,
                    BuildError::NotDeterministic {
                        drv: printed,
                        lines,
                    },
                ));
            }
            return Ok(outputs);
        }
        store.install_staged(&mut pending, &items)?;
        pending.finish()?;
        if !settings.post_build_hook.is_empty() {
            let paths: Vec<String> = output_paths.iter().map(|p| store_dir.print(p)).collect();
            hooks::post_build(&settings.post_build_hook, &printed, &paths)?;
        }
        Ok(outputs)
    }
}

/// B87: outputs that refer to each other in a cycle.
fn check_cycles(
    drv: &str,
    outputs: &BTreeMap<String, StorePath>,
    items: &[(PathBuf, PathInfo)],
) -> Result<(), BuildError> {
    let name_of = |path: &StorePath| {
        outputs
            .iter()
            .find(|(_, p)| *p == path)
            .map(|(n, _)| n.clone())
    };
    for (_, a) in items {
        for (_, b) in items {
            if a.path != b.path && a.references.contains(&b.path) && b.references.contains(&a.path)
            {
                return Err(BuildError::Cycle {
                    drv: drv.to_owned(),
                    output: name_of(&b.path).unwrap_or_default(),
                    from: name_of(&a.path).unwrap_or_default(),
                });
            }
        }
    }
    Ok(())
}

/// After a failure: with `keep-failed`, the staging directory (build
/// directory, scratch space, outputs) moves aside in the store directory
/// and is reported (B82); otherwise everything goes.
fn keep_failed(
    settings: &Settings,
    real_store_dir: &Path,
    pending: hermetic_store::pending::Pending,
    name: &str,
    warn: &mut dyn FnMut(String),
) {
    if settings.keep_failed {
        let staging = pending.staging().to_owned();
        let kept = real_store_dir.join(format!(
            ".hermetic-kept-{name}-{}",
            staging
                .file_name()
                .map(|n| n
                    .to_string_lossy()
                    .trim_start_matches(".hermetic-stage-")
                    .to_owned())
                .unwrap_or_default()
        ));
        if fs::rename(&staging, &kept).is_ok() {
            let _ = fs::set_permissions(&kept, fs::Permissions::from_mode(0o755));
            warn(format!(
                "note: keeping build directory '{}'",
                kept.join("build").display()
            ));
        }
    }
    if let Err(e) = pending.finish() {
        warn(format!("warning: {}", crate::error_chain(&e)));
    }
}
