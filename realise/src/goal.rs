//! One derivation built, from its `.drv` to registered outputs: mode and
//! platform checked, outputs locked, the input closure and sandbox paths
//! gathered, the spec made, the builder run as a [`Job`], the outputs
//! checked, made canonical, hashed, scanned and registered (or, with
//! `--check`, compared with the registered ones).

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use hermetic_config::settings::Settings;
use hermetic_runtime::job::Job;
use hermetic_runtime::{ExitStatus, RunOptions};
use hermetic_store::{Derivation, LocalStore, StorePath};

use crate::attrs::Attrs;
use crate::error::{BuildError, io_err};
use crate::finish::{Finishing, keep_failed};
use crate::inputs::{impure_host_deps, input_closure, sandbox_paths};
use crate::log::{BuilderOutput, SharedLog};
use hermetic_runtime::doctor::namespaces_available;

use crate::mode::{Mode, check_platform, select};
use crate::outputs::BuilderIds;
use crate::spec::{SpecInputs, sandbox_spec};

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

/// A failure of this kind.
pub(crate) fn fail(kind: FailureKind, error: BuildError) -> BuildFailure {
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
    /// The outputs' locks, when the caller took them already (without
    /// waiting); else the build waits for them.
    pub locks: Option<Vec<hermetic_store::lock::PathLock>>,
}

/// Instead of building: a command run in exactly the sandbox the build
/// would get (its inputs, sandbox paths, environment, build user, network,
/// filter and build directory), for a person to look; nothing is
/// registered (`sandbox-run --drv`).
pub struct Enter<'a> {
    /// The command, or the derivation's builder when empty.
    pub command: Vec<String>,
    /// Wire the caller's terminal through (`--shell`).
    pub terminal: bool,
    /// Where its output goes.
    pub output: &'a mut dyn std::io::Write,
    /// A failed build's kept sandbox to enter as the build left it (its
    /// build directory, `/tmp` and partial outputs) instead of a fresh one.
    pub kept: Option<crate::finish::KeptSandbox>,
}

/// How a goal ended.
enum Done {
    /// Built (or checked): the outputs.
    Outputs(BTreeMap<String, StorePath>),
    /// Entered: how the command ended.
    Entered(hermetic_runtime::Outcome),
}

impl Goal<'_> {
    /// Builds (or checks) the derivation and returns its outputs.
    pub fn run(
        self,
        store: &mut LocalStore,
        warn: &mut dyn FnMut(String),
    ) -> Result<BTreeMap<String, StorePath>, BuildFailure> {
        match self.run_or_enter(store, None, warn)? {
            Done::Outputs(outputs) => Ok(outputs),
            Done::Entered(_) => unreachable!("a build is entered only when asked"),
        }
    }

    /// Runs `enter` in the sandbox a build of the derivation would get,
    /// whether its outputs are valid or not; how it ended. Its inputs must
    /// be valid; an unsandboxed build cannot be entered.
    pub fn enter(
        self,
        store: &mut LocalStore,
        enter: Enter<'_>,
        warn: &mut dyn FnMut(String),
    ) -> Result<hermetic_runtime::Outcome, BuildFailure> {
        match self.run_or_enter(store, Some(enter), warn)? {
            Done::Entered(outcome) => Ok(outcome),
            Done::Outputs(_) => unreachable!("an entered build registers nothing"),
        }
    }

    fn run_or_enter(
        self,
        store: &mut LocalStore,
        enter: Option<Enter<'_>>,
        warn: &mut dyn FnMut(String),
    ) -> Result<Done, BuildFailure> {
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
        let entering = enter.is_some();
        if !entering && !self.check && store.outputs_valid(drv)? {
            return Ok(Done::Outputs(outputs));
        }
        if self.check && !store.outputs_valid(drv)? {
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
        if entering && !sandboxed {
            return Err(BuildError::BadAttrs {
                drv: printed,
                reason: "its build would run without a sandbox here, and only a sandboxed build can be entered".into(),
            }
            .into());
        }
        if self.check && !sandboxed {
            return Err(BuildError::BadAttrs {
                drv: printed,
                reason: "--check needs a sandboxed build here, so that the new outputs do not overwrite the registered ones".into(),
            }
            .into());
        }
        let impure = impure_host_deps(&attrs, settings, &printed)?;

        let output_paths: Vec<StorePath> = outputs.values().cloned().collect();
        // Everyone building or waiting for this derivation in this process
        // gets its log (a second daemon client waits on the locks below).
        let _watch = crate::log::watch(&self.drv_path, self.log.clone());
        let _locks = match self.locks {
            Some(locks) => locks,
            None => store.lock_paths(&output_paths)?,
        };
        if !entering && !self.check && store.outputs_valid(drv)? {
            return Ok(Done::Outputs(outputs));
        }
        let mut pending = store.begin()?;
        let staging = pending.staging().to_owned();
        // Nobody but this process reaches into the staging directory, so
        // that no other user can hold on to what a builder leaves open
        // there (a world-writable build directory, say) while it is
        // canonicalised or removed; an unsandboxed builder gets through
        // it to its build directory by its group, below.
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&staging)
            .map_err(io_err("create directory", &staging))?;

        let mut closure = input_closure(store, drv, &printed)?;
        let exported = crate::export_graph::exports(store, &attrs, &closure, &printed)?;
        let hook_root = sandboxed.then_some(staging.as_path());
        let mut binds = sandbox_paths(store, settings, &printed, &mut closure, hook_root)?;
        binds.extend(impure);
        // Outputs are never inputs (B40).
        for output in &output_paths {
            closure.remove(output);
        }
        let (spec, files) = sandbox_spec(
            SpecInputs {
                drv,
                attrs: &attrs,
                printed: &printed,
                settings,
                layout: &layout,
                sandboxed,
                closure: &closure,
                sandbox_paths: binds,
                staging: &staging,
                outputs: &outputs,
                exported: &exported,
            },
            warn,
        )?;
        // Entered: the command asked for in place of the builder.
        let mut spec = spec;
        if let Some((program, args)) = enter.as_ref().and_then(|e| e.command.split_first()) {
            spec.builder = std::path::PathBuf::from(program);
            spec.args = args.to_vec();
        }
        let kept = enter.as_ref().and_then(|e| e.kept.as_ref());
        if let Some(kept) = kept {
            spec.build_dir = Some(kept.build_dir.clone());
            spec.kept_scratch = Some(kept.scratch.clone());
        }
        let build_dir = spec
            .build_dir
            .clone()
            .expect("the spec names the build directory");
        let fixed_output = drv.is_fixed_output();

        if !sandboxed {
            // The builder writes its outputs in place, so a valid one would
            // be overwritten: a valid path is never replaced.
            for path in &output_paths {
                if store.is_valid(path)? {
                    return Err(BuildError::OutputAlreadyValid {
                        drv: printed,
                        path: store_dir.print(path),
                    }
                    .into());
                }
            }
            // A crash leaves them to the next start, and stale ones go first.
            pending.set_targets(&output_paths)?;
            for path in &output_paths {
                hermetic_store::pending::remove_any(&layout.real_path(path))?;
            }
        }

        let policy = crate::spec::run_policy(settings);
        let job = Job::start(spec, &policy, &printed, &mut |notice| {
            warn(notice.to_owned())
        })?;
        let builder = job.spec.build_user;
        match fs::DirBuilder::new().mode(0o700).create(&build_dir) {
            // A kept build directory, entered again.
            Err(e) if kept.is_some() && e.kind() == std::io::ErrorKind::AlreadyExists => {}
            other => other.map_err(io_err("create directory", &build_dir))?,
        }
        let chown = |path: &Path| -> Result<(), BuildError> {
            if let Some(user) = builder {
                std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
                    .map_err(io_err("change the owner of", path))?;
            }
            Ok(())
        };
        chown(&build_dir)?;
        if let (Some(_), Some(user)) = (kept, builder) {
            // What the failed builder left in /build is this run's user's now.
            hermetic_runtime::scratch::give_contents(&build_dir, user)
                .map_err(io_err("change the owner of what is in", &build_dir))?;
        }
        if let (false, Some(user)) = (sandboxed, builder) {
            std::os::unix::fs::chown(&staging, None, Some(user.gid))
                .map_err(io_err("change the owner of", &staging))?;
            fs::set_permissions(&staging, fs::Permissions::from_mode(0o710))
                .map_err(io_err("chmod", &staging))?;
            // An unsandboxed builder makes its outputs in the store
            // directory itself, which Nix keeps root:<build group>, 1775.
            let dir = &layout.real_store_dir;
            std::os::unix::fs::chown(dir, Some(0), Some(user.gid))
                .map_err(io_err("change the owner of", dir))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o1775))
                .map_err(io_err("chmod", dir))?;
        }
        for (name, contents) in &files {
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
        if let Some(enter) = enter {
            let ended = job.run(
                &sandbox,
                RunOptions {
                    terminal: enter.terminal,
                    cancel: self.cancel,
                    ..RunOptions::default()
                },
                enter.output,
            )?;
            pending.finish()?;
            return Ok(Done::Entered(ended.outcome));
        }
        let log_file = crate::log::kept_log_file(settings, &layout, &self.drv_path, &mut *warn);
        let mut log = BuilderOutput::new(&self.drv_path, &drv.name, log_file, &mut *warn);
        let ended = job.run(
            &sandbox,
            RunOptions {
                keep: true,
                cancel: self.cancel,
                ..RunOptions::default()
            },
            &mut log,
        );
        log.finish();
        let ended = ended?;
        let outcome = ended.outcome;

        let mut failed = |error: BuildError, kind: FailureKind, pending| -> BuildFailure {
            keep_failed(settings, &layout, pending, &self.drv_path, &drv.name, warn);
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
        let built_at = |path: &StorePath| match (&scratch_store, sandboxed) {
            (Some(dir), true) => dir.join(path.base_name()),
            _ => layout.real_path(path),
        };
        let finishing = Finishing {
            drv_path: &self.drv_path,
            drv,
            attrs: &attrs,
            printed: &printed,
            outputs: &outputs,
            closure: &closure,
            staging: &staging,
            builder: builder_ids,
            built_at: &built_at,
        };
        let items = match finishing.process_outputs(store, &mut pending) {
            Ok(items) => items,
            Err(failure) => {
                keep_failed(settings, &layout, pending, &self.drv_path, &drv.name, warn);
                return Err(failure);
            }
        };

        if self.check {
            let differences =
                finishing.compare_with_registered(store, settings, &items, &build_dir, warn);
            pending.finish()?;
            let lines = differences?;
            if !lines.is_empty() {
                return Err(fail(
                    FailureKind::NotDeterministic,
                    BuildError::NotDeterministic {
                        drv: printed,
                        lines,
                    },
                ));
            }
            return Ok(Done::Outputs(outputs));
        }
        let items = sign_outputs(settings, &store_dir, items)?;
        store.install_staged(&mut pending, &items)?;
        pending.finish()?;
        if !settings.post_build_hook.is_empty() {
            let paths: Vec<String> = output_paths.iter().map(|p| store_dir.print(p)).collect();
            crate::hooks::post_build(&settings.post_build_hook, &printed, &paths)?;
        }
        Ok(Done::Outputs(outputs))
    }
}

/// Signs each new output with every key of `secret-key-files`, as Nix does
/// before registering them. A key file that cannot be read or is not a key
/// fails the build (Nix's behaviour): nothing is registered unsigned.
fn sign_outputs(
    settings: &Settings,
    store_dir: &hermetic_store::StoreDir,
    mut items: Vec<(std::path::PathBuf, hermetic_store::PathInfo)>,
) -> Result<Vec<(std::path::PathBuf, hermetic_store::PathInfo)>, BuildFailure> {
    let keys = hermetic_store::signature::read_secret_keys(&settings.secret_key_files)
        .map_err(BuildError::from)?;
    for key in &keys {
        for (_, info) in &mut items {
            let sig = key.sign(store_dir, info);
            if !info.sigs.contains(&sig) {
                info.sigs.push(sig);
            }
        }
    }
    Ok(items)
}
