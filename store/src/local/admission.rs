//! What the store checks before it registers anything, whoever asks and
//! however the path arrived (Nix's `addValidPath`): a derivation's output
//! paths are recomputed from its own text, never taken on its word, and a
//! path registered as built by a derivation must be one of the outputs that
//! derivation computes.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;

use super::{LocalStore, error_chain};
use crate::Derivation;
use crate::content_address::ContentAddress;
use crate::db::{PathInfo, Registration};
use crate::derivation::{DrvCheckError, DrvHashes};
use crate::error::{StoreError, io_err};
use crate::path::StorePath;

impl LocalStore {
    /// Checks `info`, whose content is at `at`, before it is registered, and
    /// says what to register with it. A derivation (a name ending in
    /// `.drv`) must parse and name exactly the output paths its text
    /// computes; those are recorded as its outputs. A deriver that is valid
    /// here must compute `info`'s path among its outputs (one that is not
    /// valid here cannot be checked, and is recorded as given, as Nix does).
    pub(super) fn admit(&self, info: PathInfo, at: &Path) -> Result<Registration, StoreError> {
        let mut drv_outputs = Vec::new();
        if info.path.is_derivation() {
            let drv = self.parse_derivation_at(&info.path, at)?;
            drv_outputs = self
                .checked_output_paths(&info.path, &drv)?
                .into_iter()
                .collect();
        }
        if let Some(deriver) = &info.deriver {
            self.check_deriver(&info.path, deriver)?;
        }
        Ok(Registration { info, drv_outputs })
    }

    /// Reads a derivation from the store and checks that the output paths
    /// it names are the ones its text computes: what every build does
    /// first, so that no derivation, however it got here, is built on its
    /// word.
    pub fn read_checked_derivation(&self, path: &StorePath) -> Result<Derivation, StoreError> {
        let drv = self.read_derivation(path)?;
        self.checked_output_paths(path, &drv)?;
        Ok(drv)
    }

    /// Checks that the derivation at `path` names the output paths Nix
    /// computes for it (`checkDerivationOutputs`), its input derivations
    /// read from this store, and returns them by output name.
    pub fn checked_output_paths(
        &self,
        path: &StorePath,
        drv: &Derivation,
    ) -> Result<BTreeMap<String, StorePath>, StoreError> {
        let store_dir = &self.layout.store_dir;
        let mut memo = self.drv_hash_memo.borrow_mut();
        drv.check_outputs(store_dir, &store_dir.print(path), &mut |input| {
            self.drv_hashes_with(input, &mut memo)
        })?;
        Ok(drv
            .outputs
            .iter()
            .filter_map(|(name, output)| output.path().map(|p| (name.clone(), p.clone())))
            .collect())
    }

    /// The hashes modulo of a valid derivation in the store, for its
    /// dependents' output paths. They are kept for the store's lifetime: a
    /// valid path never changes.
    pub fn drv_hashes(&self, path: &StorePath) -> Result<DrvHashes, DrvCheckError> {
        let mut memo = self.drv_hash_memo.borrow_mut();
        self.drv_hashes_with(path, &mut memo)
    }

    fn drv_hashes_with(
        &self,
        path: &StorePath,
        memo: &mut HashMap<StorePath, DrvHashes>,
    ) -> Result<DrvHashes, DrvCheckError> {
        if let Some(hashes) = memo.get(path) {
            return Ok(hashes.clone());
        }
        let missing = |reason: String| DrvCheckError::MissingInput {
            path: self.layout.store_dir.print(path),
            reason,
        };
        // An input counts only once registered: a file merely present in
        // the store directory (a leftover) is no one's derivation.
        if !self.is_valid(path).map_err(|e| missing(error_chain(&e)))? {
            return Err(missing("it is not a valid path".into()));
        }
        let drv = self
            .read_derivation(path)
            .map_err(|e| missing(error_chain(&e)))?;
        let hashes = drv.hash_modulo(&self.layout.store_dir, false, &mut |input| {
            self.drv_hashes_with(input, memo)
        })?;
        memo.insert(path.clone(), hashes.clone());
        Ok(hashes)
    }

    /// Parses the derivation text at `at`, to be (or already) registered as
    /// `path`.
    pub(super) fn parse_derivation_at(
        &self,
        path: &StorePath,
        at: &Path,
    ) -> Result<Derivation, StoreError> {
        let text = fs::read(at).map_err(io_err("read derivation", at))?;
        let name = path.name().strip_suffix(".drv").unwrap_or(path.name());
        Derivation::from_aterm(&text, &self.layout.store_dir, name).map_err(|source| {
            StoreError::DrvParse {
                path: self.layout.store_dir.print(path),
                source,
            }
        })
    }

    /// Checks a content address claimed for `info` (by whoever sent it)
    /// against the content at `at`: it must be one Nix writes, name
    /// `info`'s own path with its references, and hash the content to the
    /// hash it names (Nix's `ca hash mismatch importing path`).
    pub(super) fn check_content_address(
        &self,
        info: &PathInfo,
        at: &Path,
    ) -> Result<(), StoreError> {
        let Some(text) = &info.ca else { return Ok(()) };
        let store_dir = &self.layout.store_dir;
        let printed = store_dir.print(&info.path);
        let ca = ContentAddress::parse(text).ok_or_else(|| StoreError::BadContentAddress {
            path: printed.clone(),
            ca: text.clone(),
        })?;
        let named = ca.store_path(store_dir, info.path.name(), &info.references, &info.path)?;
        if named != info.path {
            return Err(StoreError::ContentAddressNamesAnotherPath {
                path: printed,
                ca: text.clone(),
                named: store_dir.print(&named),
            });
        }
        let got = ca.content_hash(at)?;
        if &got != ca.hash() {
            return Err(StoreError::ImportMismatch {
                what: "ca hash",
                path: printed,
                specified: ca.hash().to_prefixed_base32(),
                got: got.to_prefixed_base32(),
            });
        }
        Ok(())
    }

    /// A path registered as built by `deriver`: when the deriver is valid
    /// here, the path must be among the outputs its text computes.
    fn check_deriver(&self, path: &StorePath, deriver: &StorePath) -> Result<(), StoreError> {
        if !self.is_valid(deriver)? {
            return Ok(());
        }
        let not_an_output = || StoreError::NotAnOutput {
            path: self.layout.store_dir.print(path),
            drv: self.layout.store_dir.print(deriver),
        };
        if !deriver.is_derivation() {
            return Err(not_an_output());
        }
        let drv = self.read_derivation(deriver)?;
        let outputs = self.checked_output_paths(deriver, &drv)?;
        if outputs.values().any(|output| output == path) {
            Ok(())
        } else {
            Err(not_an_output())
        }
    }
}
