//! The registry's answers to the queries Nix's clients ask through a
//! daemon, beyond one path's info: every valid path, the valid derivers of
//! a path, and signatures added to a path.

use std::collections::BTreeSet;

use crate::error::StoreError;
use crate::local::LocalStore;
use crate::path::StorePath;

impl LocalStore {
    /// Every valid path (`nix path-info --all`).
    pub fn all_valid_paths(&self) -> Result<BTreeSet<StorePath>, StoreError> {
        Ok(self
            .db
            .all_valid()?
            .into_iter()
            .filter_map(|(printed, _, _)| self.layout.store_dir.parse(&printed).ok())
            .collect())
    }

    /// The valid derivations that name `path` as an output
    /// (`nix-store -q --valid-derivers`).
    pub fn valid_derivers(&self, path: &StorePath) -> Result<BTreeSet<StorePath>, StoreError> {
        self.db.valid_derivers(path)
    }

    /// Adds signatures to a valid path's (`nix store sign`); Nix's error
    /// for a path that is not valid.
    pub fn add_signatures(&self, path: &StorePath, sigs: &[String]) -> Result<(), StoreError> {
        if self.db.add_signatures(path, sigs)? {
            Ok(())
        } else {
            Err(StoreError::NotValid(self.layout.store_dir.print(path)))
        }
    }
}
