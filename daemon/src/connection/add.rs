//! Adding paths: sources and texts (`AddToStore`, `AddTextToStore`), and
//! copies from another store with their metadata and NARs
//! (`AddToStoreNar`, `AddMultipleToStore`), which need a trusted signature
//! unless content-addressed (B95, B96).

use std::collections::BTreeSet;
use std::io::Read;

use hermetic_store::{PathInfo, StorePath};

use super::{Connection, ConnectionError, OpError, Step, failed, lock};
use crate::protocol::{minor, send_last};
use crate::wire::{Framed, read_bool, read_string, read_strings, read_u64, write_string};

impl Connection {
    /// The metadata of a path being copied in, after its path.
    pub(super) fn read_path_info(
        &self,
        from: &mut impl Read,
        path: StorePath,
    ) -> Result<PathInfo, Step> {
        let deriver = read_string(from)?;
        let nar_hash = read_string(from)?;
        let references = self.read_path_set(from)?;
        let registration_time = read_u64(from)? as i64;
        let nar_size = read_u64(from)?;
        let _ultimate = read_bool(from)?;
        let sigs = read_strings(from)?;
        let ca = read_string(from)?;
        let nar_hash =
            hermetic_store::Hash::parse(&nar_hash, Some(hermetic_store::HashAlgo::Sha256))
                .map_err(failed)?;
        let deriver = match deriver.as_str() {
            "" => None,
            text => Some(self.parse_path(text)?),
        };
        Ok(PathInfo {
            path,
            nar_hash,
            nar_size,
            references,
            deriver,
            registration_time,
            ca: (!ca.is_empty()).then_some(ca),
            sigs,
            // Only the daemon's own builds are ultimately trusted.
            ultimate: false,
        })
    }

    /// The keys a copied-in path must be signed by, or `None` when no
    /// signature is needed (`require-sigs` off, or a trusted client that
    /// asked not to check).
    pub(super) fn signature_keys(
        &self,
        dont_check: bool,
    ) -> Option<Vec<hermetic_store::signature::PublicKey>> {
        if dont_check && self.trusted {
            return None;
        }
        hermetic_store::signature::required_keys(
            self.settings.require_sigs,
            &self.settings.trusted_public_keys,
        )
    }

    /// AddToStoreNar: one path's metadata, then its NAR in frames.
    pub(super) fn add_to_store_nar(&mut self, from: &mut impl Read) -> Result<(), Step> {
        if minor(self.version) < 23 {
            return Err(Step::Fatal(ConnectionError::TooOld));
        }
        let path = self.parse_path(&read_string(from)?)?;
        let info = self.read_path_info(from, path)?;
        let repair = read_bool(from)?;
        let dont_check = read_bool(from)?;
        let mut framed = Framed::new(from);
        if let Err(refused) = self.refuse_untrusted_repair(repair) {
            framed.drain()?;
            return Err(refused);
        }
        let imported = self.import_one(info, &mut framed, dont_check);
        framed.drain()?;
        imported?;
        let mut w = lock(&self.to);
        send_last(&mut *w)?;
        Ok(())
    }

    /// Adds one path copied from another store, its NAR read from `nar`:
    /// signed as the trust rules ask unless a trusted client said not to
    /// check (B95, B96); room made first if the store is low on space.
    pub(super) fn import_one(
        &self,
        info: PathInfo,
        nar: &mut impl Read,
        dont_check: bool,
    ) -> Result<(), Step> {
        let keys = self.signature_keys(dont_check);
        self.collect_if_space_is_low();
        let mut store = self.store()?;
        store.import_nar(info, nar, keys.as_deref()).map_err(failed)
    }

    /// AddMultipleToStore: in frames, a count, then each path's metadata
    /// followed by its NAR (what `nix copy` sends).
    pub(super) fn add_multiple_to_store(&mut self, from: &mut impl Read) -> Result<(), Step> {
        let repair = read_bool(from)?;
        let dont_check = read_bool(from)?;
        let mut framed = Framed::new(from);
        if let Err(refused) = self.refuse_untrusted_repair(repair) {
            framed.drain()?;
            return Err(refused);
        }
        let keys = self.signature_keys(dont_check);
        let mut store = self.store()?;
        let result = (|| -> Result<(), Step> {
            let count = read_u64(&mut framed)?;
            for _ in 0..count.min(crate::wire::MAX_LIST) {
                let path = self.parse_path(&read_string(&mut framed)?)?;
                let info = self.read_path_info(&mut framed, path)?;
                // The next path follows its NAR in the same stream: the
                // NAR is the size its metadata says.
                let mut nar = (&mut framed).take(info.nar_size);
                self.collect_if_space_is_low();
                store
                    .import_nar(info, &mut nar, keys.as_deref())
                    .map_err(failed)?;
            }
            Ok(())
        })();
        framed.drain()?;
        result?;
        let mut w = lock(&self.to);
        send_last(&mut *w)?;
        Ok(())
    }

    /// Nix's auto-GC before a path is added: when the store's free space
    /// is below `min-free` (looked at every `min-free-check-interval`
    /// seconds), garbage is collected first, and the client is told.
    fn collect_if_space_is_low(&self) {
        let auto_gc = self
            .auto_gc
            .get_or_init(|| hermetic_realise::auto_gc::AutoGc::new(&self.settings));
        if let Some(job) = auto_gc
            .as_ref()
            .and_then(|gc| gc.check(&self.layout, &self.settings))
        {
            job.run(&self.layout, &|line| self.log(&line));
        }
    }

    pub(super) fn add_text(
        &self,
        name: &str,
        text: &[u8],
        refs: &BTreeSet<StorePath>,
    ) -> Result<StorePath, Step> {
        self.collect_if_space_is_low();
        let mut store = self.store()?;
        if name.ends_with(".drv") {
            // A derivation: checked, and its outputs registered, as Nix does.
            let drv_name = name.trim_end_matches(".drv");
            let drv =
                hermetic_store::Derivation::from_aterm(text, &self.layout.store_dir, drv_name)
                    .map_err(failed)?;
            if drv.references() != *refs {
                return Err(Step::Failed(OpError(format!(
                    "derivation '{name}' does not list the references it holds"
                ))));
            }
            return store.add_derivation(&drv).map_err(failed);
        }
        store.add_text(name, text, refs).map_err(failed)
    }

    pub(super) fn add_to_store(&mut self, from: &mut impl Read) -> Result<(), Step> {
        if minor(self.version) < 25 {
            return Err(Step::Fatal(ConnectionError::TooOld));
        }
        let name = read_string(from)?;
        let method = read_string(from)?;
        let refs = self.read_path_set(from)?;
        let repair = read_bool(from)?;
        let mut framed = Framed::new(from);
        if let Err(refused) = self.refuse_untrusted_repair(repair) {
            framed.drain()?;
            return Err(refused);
        }
        let added = match method.as_str() {
            "text:sha256" => {
                let mut text = Vec::new();
                (&mut framed)
                    .take(crate::wire::MAX_STRING + 1)
                    .read_to_end(&mut text)?;
                if text.len() as u64 > crate::wire::MAX_STRING {
                    framed.drain()?;
                    return Err(Step::Failed(OpError("text too large".into())));
                }
                framed.drain()?;
                self.add_text(&name, &text, &refs)
            }
            "fixed:r:sha256" if refs.is_empty() => {
                self.collect_if_space_is_low();
                let mut store = self.store()?;
                let added = store.add_nar_stream(&name, &mut framed);
                // Whatever the outcome, the rest of the frames is read so
                // the connection stays in step.
                framed.drain()?;
                added.map_err(failed)
            }
            other => {
                framed.drain()?;
                Err(Step::Failed(OpError(format!(
                    "hermetic does not support adding paths with content address method '{other}'{}",
                    if refs.is_empty() {
                        ""
                    } else {
                        " and references"
                    }
                ))))
            }
        }?;
        let info = self.store()?.query_info(&added).map_err(failed)?;
        self.reply(|w| {
            write_string(&mut *w, &self.print(&added))?;
            self.write_path_info(w, &info)
        })
    }
}
