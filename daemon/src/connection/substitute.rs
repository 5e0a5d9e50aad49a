//! The daemon's substitution: what the caches offer (`HasSubstitutes`,
//! `QuerySubstitutablePaths`, `QuerySubstitutablePathInfo(s)`), what
//! realising would take (`QueryMissing`), and paths fetched for
//! `EnsurePath` and the build operations. The caches are those of the
//! connection's settings: a client's own only as far as trust allows
//! (see `trust`).

use std::io::Write;

use hermetic_realise::substitute::{Missing, query_missing, substitute_paths, substituters_for};
use hermetic_store::StorePath;
use hermetic_store::substituters::{Offer, Substituters};

use super::{Connection, Step, failed};
use crate::wire::{write_string, write_u64};

impl Connection {
    /// The connection's caches, opened; their warnings go to the client.
    fn substituters(&self) -> Substituters {
        substituters_for(&self.settings, &self.layout, &|line| self.log(&line))
    }

    /// What the caches offer of `paths` (valid or not, as Nix answers).
    pub(super) fn offers(&self, paths: &[StorePath]) -> Vec<Offer> {
        let substituters = self.substituters();
        paths
            .iter()
            .filter_map(|p| substituters.offer(p, &|line| self.log(&line)))
            .collect()
    }

    /// A `SubstitutablePathInfo`: deriver, references, download size and
    /// NAR size.
    pub(super) fn write_substitutable(
        &self,
        w: &mut dyn Write,
        offer: &Offer,
    ) -> std::io::Result<()> {
        let info = &offer.narinfo.info;
        let deriver = info.deriver.as_ref().map(|d| self.print(d));
        write_string(&mut *w, &deriver.unwrap_or_default())?;
        self.write_path_set(&mut *w, &info.references)?;
        write_u64(&mut *w, offer.narinfo.file_size.unwrap_or(0))?;
        write_u64(&mut *w, info.nar_size)
    }

    /// What realising `targets` (`drv!outputs` or plain paths) would take.
    pub(super) fn query_missing(&self, targets: &[String]) -> Result<Missing, Step> {
        let paths = targets
            .iter()
            .map(|t| self.parse_path(t.split('!').next().unwrap_or_default()))
            .collect::<Result<Vec<_>, _>>()?;
        let substituters = self.substituters();
        let store = self.store()?;
        query_missing(&store, &self.settings, &substituters, &paths, &|line| {
            self.log(&line)
        })
        .map_err(failed)
    }

    /// Makes `paths` valid from the caches, progress told to the client;
    /// a path no cache has is an error in Nix's words.
    pub(super) fn substitute(&self, paths: &[StorePath]) -> Result<(), Step> {
        let mut missing = Vec::new();
        {
            let store = self.store()?;
            for path in paths {
                if !store.is_valid(path).map_err(failed)? {
                    missing.push(path.clone());
                }
            }
        }
        if missing.is_empty() {
            // Nothing to tell the client of, not even an empty activity.
            return Ok(());
        }
        let paths = &missing[..];
        let reporter = self.reporter();
        let result = self.while_watching_hangup(|cancel| {
            substitute_paths(&self.layout, &self.settings, paths, cancel, &|progress| {
                reporter.progress(progress)
            })
        });
        reporter.finish();
        result.map_err(failed)
    }
}
