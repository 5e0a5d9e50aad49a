//! The operations that look after the store rather than build in it:
//! `FindRoots`, `CollectGarbage`, `OptimiseStore`, `VerifyStore`,
//! `AddSignatures`, `AddBuildLog`, and the realisations of
//! content-addressed derivations (`RegisterDrvOutput`,
//! `QueryRealisation`), which this store has none of.

use std::io::Read;

use super::{Connection, OpError, Step, failed};
use crate::protocol::minor;
use crate::wire::{
    Framed, read_bool, read_string, read_strings, read_u64, write_string, write_u64,
};

/// The largest build log a client may send.
const MAX_BUILD_LOG: u64 = 256 << 20;

impl Connection {
    /// FindRoots: every root and what holds it; where runtime and
    /// temporary roots come from is hidden from untrusted clients.
    pub(super) fn find_roots(&self) -> Result<(), Step> {
        let roots = self.store()?.find_roots(!self.trusted).map_err(failed)?;
        self.reply(|w| {
            let count: usize = roots.values().map(|links| links.len()).sum();
            write_u64(&mut *w, count as u64)?;
            for (path, links) in &roots {
                for link in links {
                    write_string(&mut *w, link)?;
                    write_string(&mut *w, &self.print(path))?;
                }
            }
            Ok(())
        })
    }

    /// CollectGarbage: any client may collect garbage; none may ignore
    /// liveness (B95). The collector's messages go to the client as Nix's
    /// daemon sends them; the reply is the paths and the bytes freed.
    pub(super) fn collect_garbage(&self, from: &mut impl Read) -> Result<(), Step> {
        use hermetic_store::local::collect::{GcAction, GcOptions};
        let action = read_u64(from)?;
        let paths = self.read_path_set(from)?;
        let ignore_liveness = read_bool(from)?;
        let max_freed = read_u64(from)?;
        for _ in 0..3 {
            read_u64(from)?; // obsolete
        }
        if ignore_liveness {
            return Err(Step::Failed(OpError(
                "you are not allowed to ignore liveness".into(),
            )));
        }
        let action = match action {
            0 => GcAction::ReturnLive,
            1 => GcAction::ReturnDead,
            2 => GcAction::DeleteDead,
            3 => GcAction::DeleteSpecific(paths.into_iter().collect()),
            other => {
                return Err(Step::Failed(OpError(format!(
                    "unknown garbage collector action {other}"
                ))));
            }
        };
        let options = GcOptions {
            max_freed,
            keep_outputs: self.settings.keep_outputs,
            keep_derivations: self.settings.keep_derivations,
            ..GcOptions::new(action)
        };
        let results = self
            .store()?
            .collect_garbage(&options, &mut |line| self.log(line))
            .map_err(failed)?;
        self.reply(|w| {
            crate::wire::write_strings(&mut *w, results.paths.iter().map(String::as_str))?;
            write_u64(&mut *w, results.bytes_freed)?;
            write_u64(&mut *w, 0) // obsolete
        })
    }

    /// OptimiseStore: hard-links identical files of every valid path.
    pub(super) fn optimise_store(&self) -> Result<(), Step> {
        let stats = self.store()?.optimise_store().map_err(failed)?;
        self.log(&format!(
            "{:.2} MiB freed by hard-linking {} files",
            stats.bytes_freed as f64 / (1024.0 * 1024.0),
            stats.files_linked
        ));
        self.reply(|w| write_u64(w, 1))
    }

    /// VerifyStore: each problem is logged; the reply says whether there
    /// were any. Repairing is for trusted clients, and hermetic cannot
    /// repair a path yet: each one it would is named.
    pub(super) fn verify_store(&self, from: &mut impl Read) -> Result<(), Step> {
        let check_contents = read_bool(from)?;
        let repair = read_bool(from)?;
        if repair && !self.trusted {
            return Err(Step::Failed(OpError(
                "you are not privileged to repair paths".into(),
            )));
        }
        self.log("reading the Nix store...");
        if check_contents {
            self.log("checking path existence and contents...");
        } else {
            self.log("checking path existence...");
        }
        let report = self.store()?.verify(check_contents).map_err(failed)?;
        for problem in &report.problems {
            self.log(problem);
            if repair {
                self.log("cannot repair it: hermetic does not repair store paths yet");
            }
        }
        let errors = !report.problems.is_empty();
        self.reply(|w| write_u64(w, u64::from(errors)))
    }

    /// AddSignatures: trusted clients only, as in Nix.
    pub(super) fn add_signatures(&self, from: &mut impl Read) -> Result<(), Step> {
        let path = self.parse_path(&read_string(from)?)?;
        let sigs = read_strings(from)?;
        if !self.trusted {
            return Err(Step::Failed(OpError(
                "you are not privileged to add signatures".into(),
            )));
        }
        self.store()?.add_signatures(&path, &sigs).map_err(failed)?;
        self.reply(|w| write_u64(w, 1))
    }

    /// AddBuildLog: a derivation's base name and its log, framed; trusted
    /// clients only. The log is read whole before the answer, so a refused
    /// client's connection stays in step.
    pub(super) fn add_build_log(&self, from: &mut impl Read) -> Result<(), Step> {
        let name = read_string(from)?;
        let mut framed = Framed::new(from);
        let mut log = Vec::new();
        (&mut framed)
            .take(MAX_BUILD_LOG + 1)
            .read_to_end(&mut log)?;
        framed.drain()?;
        if log.len() as u64 > MAX_BUILD_LOG {
            return Err(Step::Failed(OpError(format!(
                "the build log sent for '{name}' is larger than {} MiB, the most the daemon takes",
                MAX_BUILD_LOG >> 20
            ))));
        }
        if !self.trusted {
            return Err(Step::Failed(OpError(
                "you are not privileged to add logs".into(),
            )));
        }
        let drv = hermetic_store::StorePath::from_base_name(&name).map_err(failed)?;
        if !drv.is_derivation() {
            return Err(Step::Failed(OpError(format!(
                "'{name}' is not a derivation: only derivations have build logs"
            ))));
        }
        self.store()?.add_build_log(&drv, &log).map_err(failed)?;
        self.reply(|w| write_u64(w, 1))
    }

    /// RegisterDrvOutput: a realisation of a content-addressed derivation's
    /// output. Nix refuses it unless `ca-derivations` is on; hermetic
    /// builds no such derivations and refuses it either way.
    pub(super) fn register_drv_output(&self, from: &mut impl Read) -> Result<(), Step> {
        read_string(from)?; // the output id, or the realisation as JSON
        if minor(self.version) < 31 {
            read_string(from)?; // the output path
        }
        Err(Step::Failed(OpError(
            "experimental Nix feature 'ca-derivations' is disabled; hermetic does not build content-addressed derivations"
                .into(),
        )))
    }

    /// QueryRealisation: none, in a store without content-addressed
    /// derivations.
    pub(super) fn query_realisation(&self, from: &mut impl Read) -> Result<(), Step> {
        read_string(from)?;
        self.reply(|w| write_u64(w, 0))
    }
}
