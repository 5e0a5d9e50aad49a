//! Building many derivations: the ones asked for and their missing inputs,
//! in dependency order, up to `max-jobs` at once, each in a thread with its
//! own handle on the store. A failure fails what depends on it; without
//! `keep-going` nothing new starts after it. An interrupt (the cancel
//! descriptor becomes readable) ends running builds and starts no more.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::BorrowedFd;
use std::sync::mpsc;

use hermetic_config::settings::Settings;
use hermetic_store::{Derivation, LocalStore, StoreLayout, StorePath};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::auto_gc::AutoGc;
use crate::dispatch::{Decision, Dispatcher, Ended, Place};
use crate::error::BuildError;
use crate::goal::{BuildFailure, FailureKind, Goal};
use crate::log::SharedLog;
use crate::substitute::{self, Plan};
use hermetic_store::substituters::{FetchEvent, Substituters};

/// What a run of builds ended with.
#[derive(Debug, Default)]
pub struct Summary {
    /// The outputs of each derivation asked for that has them.
    pub outputs: BTreeMap<StorePath, BTreeMap<String, StorePath>>,
    /// The derivations that failed, and why.
    pub failures: Vec<(StorePath, BuildFailure)>,
    /// How many derivations were built.
    pub built: usize,
    /// The derivations whose outputs were fetched from substituters.
    pub substituted: BTreeSet<StorePath>,
}

impl Summary {
    /// Nix's exit status (B83): 0, or 100 plus 1 for a timeout, 2 for a
    /// hash mismatch, 4 for a build that is not deterministic (104 alone
    /// for `--check`); 1 when no build itself failed (a setup error, a
    /// fixed-output builder's failure, an interrupt).
    pub fn exit_code(&self) -> u8 {
        if self.failures.is_empty() {
            return 0;
        }
        let kinds: BTreeSet<_> = self
            .failures
            .iter()
            .map(|(_, f)| kind_bits(f.kind))
            .collect();
        let mut mask = 0u8;
        for bits in kinds {
            mask |= bits;
        }
        if mask == 0 { 1 } else { 0x60 | mask }
    }

    /// The report of the failures of `targets` (those asked for), paths
    /// printed with `store_dir`, each failure told by `describe` (its
    /// error, and what the caller adds to it).
    pub fn failure_report(
        &self,
        targets: &[StorePath],
        store_dir: &hermetic_store::StoreDir,
        describe: &dyn Fn(&StorePath, &BuildFailure) -> String,
    ) -> FailureReport {
        let failed: Vec<&(StorePath, BuildFailure)> = self
            .failures
            .iter()
            .filter(|(path, _)| targets.contains(path))
            .collect();
        match failed[..] {
            [] => FailureReport::default(),
            [(path, failure)] => FailureReport {
                lines: Vec::new(),
                error: Some(describe(path, failure)),
            },
            _ => FailureReport {
                lines: failed
                    .iter()
                    .map(|(p, f)| format!("error: {}", describe(p, f)))
                    .collect(),
                error: Some(format!(
                    "build of {} failed",
                    failed
                        .iter()
                        .map(|(p, _)| format!("'{}'", store_dir.print(p)))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            },
        }
    }
}

/// How the failures of a run are told, as Nix's `buildPaths` tells them:
/// a derivation built for another one was told as it failed (a log line);
/// of those asked for, one failure is the error itself, and several are
/// each told, then summed up.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FailureReport {
    /// Lines to log first (`error: …`).
    pub lines: Vec<String>,
    /// The error to end with, if any failed.
    pub error: Option<String>,
}

fn kind_bits(kind: FailureKind) -> u8 {
    match kind {
        FailureKind::Permanent => 0x04,
        FailureKind::TimedOut => 0x04 | 0x01,
        FailureKind::HashMismatch => 0x04 | 0x02,
        FailureKind::NotDeterministic => 0x08,
        FailureKind::Transient | FailureKind::DependencyFailed | FailureKind::Misc => 0,
    }
}

struct Node {
    drv: Derivation,
    deps: BTreeSet<StorePath>,
    check: bool,
    /// Built, fetched, or failed for want of a cache.
    plan: Plan,
}

/// The stack a thread that builds gets: the walks of an output recurse
/// once per directory level, up to a NAR's depth limit, which the 2 MiB
/// threads get by default do not always hold (unoptimised builds).
pub const BUILD_THREAD_STACK: usize = 32 << 20;

/// What a run of builds tells its caller as it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// A message for the user: a warning, or the error of a derivation
    /// that was not asked for.
    Message(String),
    /// `drv`'s build starts, the `number`th of `total`.
    Started {
        /// The derivation.
        drv: StorePath,
        /// Its place among the builds started.
        number: usize,
        /// How many builds this run has.
        total: usize,
        /// The machine it is built on, if not here (its store URI).
        machine: Option<String>,
    },
    /// `drv`'s build ended, successfully or not.
    Finished {
        /// The derivation.
        drv: StorePath,
        /// Whether it succeeded.
        ok: bool,
    },
    /// A path's fetch from a substituter starts or ends (its messages
    /// come as [`Progress::Message`]).
    Fetch(FetchEvent),
}

impl Progress {
    /// The line a user is shown for it: none for a finished build.
    pub fn text(&self, store_dir: &hermetic_store::StoreDir) -> Option<String> {
        match self {
            Progress::Message(text) | Progress::Fetch(FetchEvent::Message(text)) => {
                Some(text.clone())
            }
            Progress::Started {
                drv,
                number,
                total,
                machine,
            } => Some(format!(
                "building '{}'{}{}",
                store_dir.print(drv),
                machine
                    .as_ref()
                    .map(|m| format!(" on '{m}'"))
                    .unwrap_or_default(),
                if *total > 1 {
                    format!(" [{number}/{total}]")
                } else {
                    String::new()
                }
            )),
            Progress::Fetch(FetchEvent::Copying { path, from }) => Some(format!(
                "copying path '{}' from '{from}'...",
                store_dir.print(path)
            )),
            Progress::Finished { .. } | Progress::Fetch(_) => None,
        }
    }
}

/// A thread that builds, with [`BUILD_THREAD_STACK`].
pub fn build_thread() -> std::thread::Builder {
    std::thread::Builder::new().stack_size(BUILD_THREAD_STACK)
}

pub(crate) fn cancelled(cancel: Option<BorrowedFd<'_>>) -> bool {
    let Some(fd) = cancel else { return false };
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0)
}

/// What a run plans from: the store, the settings, the caches and where
/// their messages go.
struct Planner<'a> {
    store: &'a LocalStore,
    settings: &'a Settings,
    substituters: &'a Substituters,
    say: &'a dyn Fn(String),
}

impl Planner<'_> {
    /// Collects what must be done for `path`: nothing when its outputs are
    /// all valid (unless `check`), a fetch when the caches have them, else
    /// a build and, likewise, its inputs. Each derivation's output paths
    /// are checked against what it computes. Returns whether anything is
    /// to be done.
    fn plan(
        &self,
        path: &StorePath,
        check: bool,
        nodes: &mut BTreeMap<StorePath, Node>,
    ) -> Result<bool, BuildError> {
        if nodes.contains_key(path) {
            return Ok(true);
        }
        // Its output paths are recomputed, never taken on its word, however
        // it got into the store.
        // As in Nix: the derivation and its outputs are temporary roots for
        // the run, so no collector deletes a build's inputs (what the
        // derivation refers to, the outputs of those it depends on) or
        // what it makes.
        self.store.add_temp_root(path)?;
        let drv = self.store.read_checked_derivation(path)?;
        for output in drv.outputs.values().filter_map(|o| o.path()) {
            self.store.add_temp_root(output)?;
        }
        if !check && self.store.outputs_valid(&drv)? {
            return Ok(false);
        }
        let plan = if check {
            Plan::Build
        } else {
            substitute::plan(self.substituters, self.settings, self.store, &drv, self.say)?
        };
        let mut node = Node {
            drv,
            deps: BTreeSet::new(),
            check,
            plan,
        };
        if matches!(node.plan, Plan::Build) {
            node.deps = self.plan_inputs(&node.drv, nodes)?;
        }
        nodes.insert(path.clone(), node);
        Ok(true)
    }

    /// Plans `drv`'s input derivations; returns those with work to do.
    fn plan_inputs(
        &self,
        drv: &Derivation,
        nodes: &mut BTreeMap<StorePath, Node>,
    ) -> Result<BTreeSet<StorePath>, BuildError> {
        let mut deps = BTreeSet::new();
        for input in drv.input_drvs.keys() {
            if self.plan(input, false, nodes)? {
                deps.insert(input.clone());
            }
        }
        Ok(deps)
    }
}

/// Fetches what the plan fetches, all derivations' closures together,
/// before anything is built. A derivation whose fetch failed is built
/// instead with `fallback` (its inputs planned then, perhaps fetched in
/// turn) and fails without it, in Nix's words; so does one whose caches
/// could not be asked.
#[allow(clippy::too_many_arguments)]
fn fetch_planned(
    planner: &Planner<'_>,
    layout: &StoreLayout,
    targets: &[StorePath],
    cancel: Option<BorrowedFd<'_>>,
    progress: &(dyn Fn(Progress) + Sync),
    nodes: &mut BTreeMap<StorePath, Node>,
    summary: &mut Summary,
    done: &mut BTreeSet<StorePath>,
    failed: &mut BTreeSet<StorePath>,
) -> Result<(), BuildError> {
    let fail = |path: &StorePath, summary: &mut Summary, failed: &mut BTreeSet<StorePath>| {
        let error = BuildError::SubstitutesFailed(layout.store_dir.print(path));
        if !targets.contains(path) {
            progress(Progress::Message(format!("error: {error}")));
        }
        summary.failures.push((
            path.clone(),
            BuildFailure {
                kind: FailureKind::Transient,
                error,
            },
        ));
        failed.insert(path.clone());
    };
    loop {
        let fetching: Vec<StorePath> = nodes
            .iter()
            .filter(|(p, _)| !done.contains(*p) && !failed.contains(*p))
            .filter_map(|(p, n)| match n.plan {
                Plan::Build => None,
                _ => Some(p.clone()),
            })
            .collect();
        if fetching.is_empty() {
            return Ok(());
        }
        let mut offers = Vec::new();
        let mut listed = BTreeSet::new();
        for path in &fetching {
            if let Plan::Fetch(list) = &nodes[path].plan {
                offers.extend(
                    list.iter()
                        .filter(|o| listed.insert(o.narinfo.info.path.clone()))
                        .cloned(),
                );
            }
        }
        let broken = planner.substituters.fetch(
            layout,
            offers,
            planner.settings.max_substitution_jobs,
            &|| cancelled(cancel),
            &|event| progress(substitute::progress_of(event)),
        );
        for path in fetching {
            let ok = match &nodes[&path].plan {
                Plan::Fetch(list) => list
                    .iter()
                    .all(|o| !broken.contains_key(&o.narinfo.info.path)),
                _ => false,
            };
            if ok {
                summary.substituted.insert(path.clone());
                if targets.contains(&path) {
                    let outputs = output_paths(&nodes[&path].drv);
                    summary.outputs.insert(path.clone(), outputs);
                }
                done.insert(path);
            } else if planner.settings.fallback && !cancelled(cancel) {
                // Built after all: its inputs are needed now.
                let drv = nodes[&path].drv.clone();
                let deps = planner.plan_inputs(&drv, nodes)?;
                let node = nodes.get_mut(&path).expect("planned");
                node.plan = Plan::Build;
                node.deps = deps;
            } else {
                fail(&path, summary, failed);
            }
        }
    }
}

/// A derivation's outputs by name.
fn output_paths(drv: &Derivation) -> BTreeMap<String, StorePath> {
    drv.outputs
        .iter()
        .filter_map(|(name, o)| o.path().map(|p| (name.clone(), p.clone())))
        .collect()
}

/// Builds `targets` (derivations in the store) and what they need.
/// `progress` is told of each build started and finished, and gets the
/// error of each derivation that failed and was not asked for; warnings go
/// there too. The failures of `targets` are the caller's to tell
/// ([`Summary::failure_report`]).
pub fn build_all(
    layout: &StoreLayout,
    settings: &Settings,
    targets: &[StorePath],
    check: bool,
    cancel: Option<BorrowedFd<'_>>,
    log: SharedLog,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Summary, BuildError> {
    let store = LocalStore::open(layout.clone())?;
    let say = |text: String| progress(Progress::Message(text));
    let substituters = substitute::substituters_for(settings, layout, &say);
    let planner = Planner {
        store: &store,
        settings,
        substituters: &substituters,
        say: &say,
    };
    let mut nodes = BTreeMap::new();
    for target in targets {
        planner.plan(target, check, &mut nodes)?;
    }
    let mut summary = Summary::default();
    let mut done: BTreeSet<StorePath> = BTreeSet::new();
    let mut failed: BTreeSet<StorePath> = BTreeSet::new();
    fetch_planned(
        &planner,
        layout,
        targets,
        cancel,
        progress,
        &mut nodes,
        &mut summary,
        &mut done,
        &mut failed,
    )?;
    let total = nodes
        .iter()
        .filter(|(p, n)| matches!(n.plan, Plan::Build) && !failed.contains(*p))
        .count();
    let mut started: BTreeSet<StorePath> = BTreeSet::new();
    // Ready, but another process builds their outputs: tried again when a
    // build of this run ends, and waited for when nothing else can run
    // (Nix's goals do not wait on a lock while others could build).
    let mut postponed: BTreeSet<StorePath> = BTreeSet::new();
    let mut running = 0usize;
    let mut stop = false;
    // Where each build runs: here, or a machine of `builders`.
    let mut dispatcher = Dispatcher::new(settings)?;
    let (tx, rx) = mpsc::channel::<(StorePath, Place, Ended)>();
    let auto_gc = AutoGc::new(settings);
    std::thread::scope(|scope| {
        // Nix's auto-GC: looked at on each turn, and while builds run.
        let collect_if_low = || {
            if let Some(job) = auto_gc.as_ref().and_then(|gc| gc.check(layout, settings)) {
                scope.spawn(move || job.run(layout, &|text| progress(Progress::Message(text))));
            }
        };
        loop {
            collect_if_low();
            // Fail what depends on a failure; start what is ready.
            let waiting: Vec<StorePath> = nodes
                .iter()
                .filter(|(p, _)| !done.contains(*p) && !failed.contains(*p))
                .map(|(p, _)| p.clone())
                .collect();
            let mut progressed = false;
            let mut starts: Vec<(
                StorePath,
                Option<Vec<hermetic_store::lock::PathLock>>,
                Place,
            )> = Vec::new();
            for path in waiting {
                let node = &nodes[&path];
                let failed_deps = node.deps.iter().filter(|d| failed.contains(*d)).count();
                if failed_deps > 0 {
                    let error = BuildError::DependenciesFailed {
                        count: failed_deps,
                        drv: layout.store_dir.print(&path),
                    };
                    if !targets.contains(&path) {
                        progress(Progress::Message(format!("error: {error}")));
                    }
                    summary.failures.push((
                        path.clone(),
                        BuildFailure {
                            kind: FailureKind::DependencyFailed,
                            error,
                        },
                    ));
                    failed.insert(path);
                    progressed = true;
                    continue;
                }
                let ready = node.deps.iter().all(|d| done.contains(d));
                if !ready || stop || cancelled(cancel) {
                    continue;
                }
                if started.contains(&path) || postponed.contains(&path) {
                    continue;
                }
                let printed = layout.store_dir.print(&path);
                let place = match dispatcher.decide(settings, &node.drv, &printed, node.check, &say)
                {
                    Decision::Start(place) => place,
                    Decision::Wait => continue,
                    Decision::Nowhere(error) => {
                        if !targets.contains(&path) {
                            progress(Progress::Message(format!("error: {error}")));
                        }
                        summary.failures.push((path.clone(), error.into()));
                        failed.insert(path);
                        progressed = true;
                        stop |= !settings.keep_going;
                        continue;
                    }
                };
                let outputs: Vec<StorePath> = node
                    .drv
                    .outputs
                    .values()
                    .filter_map(|o| o.path())
                    .cloned()
                    .collect();
                match store.try_lock_paths(&outputs) {
                    Ok(Some(locks)) => {
                        dispatcher.take(place);
                        starts.push((path, Some(locks), place));
                    }
                    Ok(None) => {
                        postponed.insert(path);
                    }
                    // The build meets the error itself, and says it.
                    Err(_) => {
                        dispatcher.take(place);
                        starts.push((path, None, place));
                    }
                }
            }
            if starts.is_empty() && running == 0 && !stop && !cancelled(cancel) {
                // Nothing else can run: wait for one another process builds.
                if let Some(path) = postponed.pop_first() {
                    let printed = layout.store_dir.print(&path);
                    let node = &nodes[&path];
                    if let Decision::Start(place) =
                        dispatcher.decide(settings, &node.drv, &printed, node.check, &say)
                    {
                        dispatcher.take(place);
                        starts.push((path, None, place));
                    }
                }
            }
            for (path, locks, place) in starts {
                started.insert(path.clone());
                running += 1;
                let started_as = Progress::Started {
                    drv: path.clone(),
                    number: started.len(),
                    total,
                    machine: match place {
                        Place::Remote(index) => Some(dispatcher.machines[index].store_uri.clone()),
                        Place::Local => None,
                    },
                };
                let tx = tx.clone();
                let refused = (tx.clone(), path.clone());
                let node = &nodes[&path];
                let goal_drv = node.drv.clone();
                let check = node.check;
                let log = log.clone();
                let path_for_work = path.clone();
                let work: Box<dyn FnOnce() -> Ended + Send + '_> = match place {
                    Place::Remote(index) => {
                        // Connected first: an unreachable machine is not
                        // a build started.
                        let machine = dispatcher.machines[index].clone();
                        let connection = dispatcher.connection(index);
                        let log_file = crate::log::kept_log_file(
                            settings,
                            layout,
                            &path_for_work,
                            &mut |text| progress(Progress::Message(text)),
                        );
                        Box::new(move || {
                            let build = crate::dispatch::RemoteBuild {
                                machine: &machine,
                                how: hermetic_remote::build_remote::RemoteSettings {
                                    limits: hermetic_remote::serve_client::BuildLimits {
                                        max_silent_time: settings.max_silent_time,
                                        timeout: settings.timeout,
                                    },
                                    substitute_inputs: settings.builders_use_substitutes,
                                },
                                drv_path: &path_for_work,
                                drv: &goal_drv,
                                held: locks,
                                log_file,
                                cancel,
                            };
                            crate::dispatch::build_remotely(
                                build, connection, layout, log, started_as, progress,
                            )
                        })
                    }
                    Place::Local => {
                        progress(started_as);
                        Box::new(move || {
                            Ended::Built((|| {
                                let mut store = LocalStore::open(layout.clone())?;
                                store.set_auto_optimise(settings.auto_optimise_store);
                                let goal = Goal {
                                    drv_path: path_for_work,
                                    drv: goal_drv,
                                    check,
                                    settings,
                                    cancel,
                                    log,
                                    locks,
                                };
                                goal.run(&mut store, &mut |line| progress(Progress::Message(line)))
                            })())
                        })
                    }
                };
                let spawned = build_thread().spawn_scoped(scope, move || {
                    let ended = work();
                    let _ = tx.send((path, place, ended));
                });
                if let Err(e) = spawned {
                    // No thread to be had: this build fails, the daemon
                    // and the other builds go on.
                    let (tx, path) = refused;
                    let error = BuildError::Io {
                        op: "start a thread to build",
                        path: layout.store_dir.print(&path),
                        source: e,
                    };
                    let _ = tx.send((path, place, Ended::Built(Err(error.into()))));
                }
                progressed = true;
            }
            if running == 0 && !progressed {
                break;
            }
            if running == 0 {
                continue;
            }
            let received = match &auto_gc {
                Some(gc) => loop {
                    match rx.recv_timeout(gc.interval()) {
                        Ok(received) => break Some(received),
                        Err(mpsc::RecvTimeoutError::Timeout) => collect_if_low(),
                        Err(mpsc::RecvTimeoutError::Disconnected) => break None,
                    }
                },
                None => rx.recv().ok(),
            };
            let Some((path, place, ended)) = received else {
                break;
            };
            running -= 1;
            dispatcher.release(place);
            postponed.clear();
            let result = match ended {
                Ended::Built(result) => result,
                Ended::BuiltThere(outputs, connection) => {
                    if let Place::Remote(index) = place {
                        dispatcher.keep(index, connection);
                    }
                    Ok(outputs)
                }
                Ended::Unreachable(message) => {
                    // Nix's back-off: not tried again in this run; the
                    // build is placed again.
                    if let Place::Remote(index) = place {
                        dispatcher.disable(index);
                    }
                    progress(Progress::Message(message));
                    started.remove(&path);
                    continue;
                }
            };
            progress(Progress::Finished {
                drv: path.clone(),
                ok: result.is_ok(),
            });
            match result {
                Ok(outputs) => {
                    summary.built += 1;
                    if targets.contains(&path) {
                        summary.outputs.insert(path.clone(), outputs);
                    }
                    done.insert(path);
                }
                Err(failure) => {
                    // One asked for is told by the caller (failure_report).
                    if !targets.contains(&path) {
                        let error = crate::error_chain(&failure.error);
                        progress(Progress::Message(format!("error: {error}")));
                    }
                    summary.failures.push((path.clone(), failure));
                    failed.insert(path);
                    if !settings.keep_going {
                        stop = true;
                    }
                }
            }
        }
    });
    // What was asked for and needed no build: its outputs as they are.
    let store = LocalStore::open(layout.clone())?;
    for target in targets {
        if summary.outputs.contains_key(target)
            || failed.contains(target)
            || nodes.contains_key(target)
        {
            continue;
        }
        let drv = store.read_derivation(target)?;
        summary.outputs.insert(target.clone(), output_paths(&drv));
    }
    Ok(summary)
}
