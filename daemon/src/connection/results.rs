//! `BuildPathsWithResults` (protocol 1.34, what `nix build` sends): the
//! builds of `BuildPaths`, answered with one result per path asked for —
//! its status and message, and the outputs it has as Nix's realisations —
//! instead of one error for all.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};

use hermetic_realise::schedule::Summary;
use hermetic_store::{Derivation, LocalStore, StorePath};

use super::activities::BuildReporter;
use super::build::result_status;
use super::{Connection, OpError, Step, failed};
use crate::protocol::minor;
use crate::wire::{read_strings, read_u64, write_string, write_u64};

/// Nix's `BuildResult` statuses used here.
const BUILT: u64 = 0;
const SUBSTITUTED: u64 = 1;
const ALREADY_VALID: u64 = 2;
const NO_SUBSTITUTERS: u64 = 14;

/// One path asked for: a derivation with the outputs wanted (none named:
/// all), or a plain store path.
struct Target {
    text: String,
    path: StorePath,
    outputs: Option<BTreeSet<String>>,
}

/// What became of one build asked for: Nix's `BuildResult`.
#[derive(Default)]
pub(super) struct Outcome {
    /// Nix's status number.
    pub(super) status: u64,
    /// The error, for a failure.
    pub(super) message: String,
    /// 1 when it was built now, 0 when its outputs were there.
    pub(super) times_built: u64,
    /// A `--check` found the build not deterministic.
    pub(super) non_deterministic: bool,
    /// When the work started and stopped, in seconds since the epoch (0:
    /// nothing was done).
    pub(super) start_time: u64,
    pub(super) stop_time: u64,
    /// Each output's realisation id (`sha256:<hash modulo>!<name>`) and
    /// path.
    pub(super) outputs: Vec<(String, StorePath)>,
}

impl Outcome {
    /// A failed build's result, with its work's times.
    pub(super) fn failed(
        failure: &hermetic_realise::goal::BuildFailure,
        message: String,
        (start_time, stop_time): (u64, u64),
    ) -> Outcome {
        Outcome {
            status: result_status(failure.kind),
            message,
            non_deterministic: failure.kind
                == hermetic_realise::goal::FailureKind::NotDeterministic,
            start_time,
            stop_time,
            ..Outcome::default()
        }
    }

    /// The outputs as both protocols send them: a count, then each
    /// realisation's id and its JSON.
    pub(super) fn write_realisations(&self, w: &mut dyn Write) -> std::io::Result<()> {
        write_u64(&mut *w, self.outputs.len() as u64)?;
        for (id, path) in &self.outputs {
            write_string(&mut *w, id)?;
            let realisation = serde_json::json!({
                "id": id,
                "outPath": path.base_name(),
                "signatures": [],
                "dependentRealisations": {},
            });
            write_string(&mut *w, &realisation.to_string())?;
        }
        Ok(())
    }
}

/// Now, in seconds since the epoch.
pub(super) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Connection {
    /// BuildPathsWithResults: derived paths and a build mode; a result for
    /// each.
    pub(super) fn build_paths_with_results(&self, from: &mut impl Read) -> Result<(), Step> {
        let texts = read_strings(from)?;
        let mode = read_u64(from)?;
        self.refuse_untrusted_repair(mode == 1)?;
        let mut targets = Vec::new();
        for text in texts {
            let (path, outputs) = match text.split_once('!') {
                Some((path, "*" | "")) => (path, None),
                Some((path, names)) => (path, Some(names.split(',').map(str::to_owned).collect())),
                None => (text.as_str(), None),
            };
            let path = self.parse_path(path)?;
            targets.push(Target {
                text,
                path,
                outputs,
            });
        }
        let store = self.store()?;
        // Each derivation asked for, and whether its outputs were all valid
        // before the builds.
        let mut drvs = BTreeMap::new();
        for target in targets.iter().filter(|t| t.path.is_derivation()) {
            let drv = store.read_derivation(&target.path).map_err(failed)?;
            let valid_before = store.outputs_valid(&drv).map_err(failed)?;
            drvs.insert(target.path.clone(), (drv, valid_before));
        }
        // Other paths are fetched: each one's result says whether it came.
        let mut fetch = Vec::new();
        for target in targets.iter().filter(|t| !t.path.is_derivation()) {
            if !store.is_valid(&target.path).map_err(failed)? {
                fetch.push(target.path.clone());
            }
        }
        drop(store);
        let fetch_error = match self.substitute(&fetch) {
            Ok(()) => None,
            Err(Step::Failed(OpError(message))) => Some(message),
            Err(fatal) => return Err(fatal),
        };
        let paths: Vec<StorePath> = drvs.keys().cloned().collect();
        let start_time = now();
        let (summary, reporter) = self.build_with_log(&paths, mode == 2)?;
        let times = (start_time, now());
        let store = self.store()?;
        let mut outcomes = Vec::new();
        for target in &targets {
            let outcome = if let Some((drv, valid_before)) = drvs.get(&target.path) {
                let built = (&summary, &*reporter);
                self.derivation_outcome(&store, target, drv, *valid_before, built, times)?
            } else if store.is_valid(&target.path).map_err(failed)? {
                Outcome {
                    status: if fetch.contains(&target.path) {
                        SUBSTITUTED
                    } else {
                        ALREADY_VALID
                    },
                    ..Outcome::default()
                }
            } else {
                Outcome {
                    status: NO_SUBSTITUTERS,
                    message: fetch_error.clone().unwrap_or_else(|| {
                        format!(
                            "path '{}' is required, but there is no substituter that can build it",
                            self.print(&target.path)
                        )
                    }),
                    ..Outcome::default()
                }
            };
            outcomes.push((target, outcome));
        }
        self.reply(|w| {
            write_u64(&mut *w, outcomes.len() as u64)?;
            for (target, outcome) in &outcomes {
                self.write_result(w, &target.text, outcome)?;
            }
            Ok(())
        })
    }

    /// The result for a derivation after the builds: its failure, or its
    /// wanted outputs with their realisation ids.
    fn derivation_outcome(
        &self,
        store: &LocalStore,
        target: &Target,
        drv: &Derivation,
        valid_before: bool,
        (summary, reporter): (&Summary, &BuildReporter),
        (start_time, stop_time): (u64, u64),
    ) -> Result<Outcome, Step> {
        if let Some((_, failure)) = summary.failures.iter().find(|(p, _)| *p == target.path) {
            let message = reporter.describe(&target.path, failure);
            return Ok(Outcome::failed(failure, message, (start_time, stop_time)));
        }
        let hashes = drv
            .hash_modulo(&self.layout.store_dir, true, &mut |p| store.drv_hashes(p))
            .map_err(failed)?;
        let built: BTreeMap<String, StorePath> = summary
            .outputs
            .get(&target.path)
            .cloned()
            .unwrap_or_default();
        let outputs = built
            .into_iter()
            .filter(|(name, _)| target.outputs.as_ref().is_none_or(|w| w.contains(name)))
            .filter_map(|(name, path)| {
                let hash = hashes.get(&name)?;
                Some((format!("{}!{name}", hash.to_prefixed_hex()), path))
            })
            .collect();
        let substituted = summary.substituted.contains(&target.path);
        Ok(Outcome {
            status: if valid_before {
                ALREADY_VALID
            } else if substituted {
                SUBSTITUTED
            } else {
                BUILT
            },
            times_built: u64::from(!valid_before && !substituted),
            start_time: if valid_before { 0 } else { start_time },
            stop_time: if valid_before { 0 } else { stop_time },
            outputs,
            ..Outcome::default()
        })
    }

    /// A `KeyedBuildResult`: the path asked for, then its `BuildResult`.
    fn write_result(
        &self,
        w: &mut dyn Write,
        text: &str,
        outcome: &Outcome,
    ) -> std::io::Result<()> {
        write_string(&mut *w, text)?;
        self.write_build_result(w, outcome)
    }

    /// A `BuildResult` as the connection's protocol version has it: the
    /// status and message; from 1.29 times built, non-determinism, start
    /// and stop times; from 1.37 the CPU times (not measured: absent);
    /// from 1.28 the outputs as Nix's realisations.
    pub(super) fn write_build_result(
        &self,
        w: &mut dyn Write,
        outcome: &Outcome,
    ) -> std::io::Result<()> {
        write_u64(&mut *w, outcome.status)?;
        write_string(&mut *w, &outcome.message)?;
        if minor(self.version) >= 29 {
            write_u64(&mut *w, outcome.times_built)?;
            write_u64(&mut *w, u64::from(outcome.non_deterministic))?;
            write_u64(&mut *w, outcome.start_time)?;
            write_u64(&mut *w, outcome.stop_time)?;
        }
        if minor(self.version) >= 37 {
            write_u64(&mut *w, 0)?; // user CPU time: absent
            write_u64(&mut *w, 0)?; // system CPU time: absent
        }
        if minor(self.version) >= 28 {
            outcome.write_realisations(w)?;
        }
        Ok(())
    }
}
