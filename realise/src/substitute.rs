//! Substitution in a run of builds, as Nix's goals do it: a derivation
//! whose missing outputs the caches offer, closures complete, is fetched
//! instead of built, and its inputs are not needed; one the caches cannot
//! serve is built. When a fetch fails, `fallback` decides between building
//! it and failing it (Nix's text).

use std::collections::BTreeSet;
use std::os::fd::BorrowedFd;
use std::sync::Arc;

use hermetic_config::settings::Settings;
use hermetic_store::narinfo_cache::{self, NarInfoDiskCache};
use hermetic_store::substituters::{Closure, FetchEvent, Offer, Substituters};
use hermetic_store::transfer::TransferOptions;
use hermetic_store::{
    ContentAddress, Derivation, DerivationOutput, LocalStore, StoreLayout, StorePath,
};

use crate::attrs::Attrs;
use crate::error::BuildError;
use crate::schedule::Progress;

/// The substituters `settings` name, opened for the store at `layout`
/// (none when `substitute` is off), with its disk cache of HTTP caches'
/// answers; caches that cannot be opened are skipped with a warning told
/// to `say`.
pub fn substituters_for(
    settings: &Settings,
    layout: &StoreLayout,
    say: &dyn Fn(String),
) -> Substituters {
    let urls: &[String] = if settings.substitute {
        &settings.substituters
    } else {
        &[]
    };
    let keys = hermetic_store::signature::required_keys(
        settings.require_sigs,
        &settings.trusted_public_keys,
    );
    let options = transfer_options(settings);
    let disk = disk_cache(settings, layout);
    Substituters::open(urls, &layout.store_dir, keys, &options, disk.as_ref(), say)
}

/// The disk cache of HTTP caches' answers of the store at `layout`, with
/// the TTLs of `settings`; none when its file cannot be opened (a store
/// whose state directory this user cannot write), which only costs the
/// questions it would have saved.
fn disk_cache(settings: &Settings, layout: &StoreLayout) -> Option<Arc<NarInfoDiskCache>> {
    let file = narinfo_cache::file_in(&layout.state_dir);
    NarInfoDiskCache::open(
        &file,
        settings.narinfo_cache_positive_ttl,
        settings.narinfo_cache_negative_ttl,
    )
    .ok()
    .map(Arc::new)
}

/// How downloads are made under `settings` (`connect-timeout`,
/// `stalled-download-timeout`, `netrc-file`).
pub fn transfer_options(settings: &Settings) -> TransferOptions {
    let netrc_file = Some(settings.netrc_file.clone()).filter(|f| !f.is_empty());
    TransferOptions {
        netrc_file: netrc_file.map(std::path::PathBuf::from),
        ..TransferOptions::default()
    }
    .with_timeouts(settings.connect_timeout, settings.stalled_download_timeout)
}

/// What the caches can do for a derivation whose outputs are not all
/// valid.
#[derive(Debug, Clone)]
pub(crate) enum Plan {
    /// Build it (no cache has its outputs, or it may not be substituted).
    Build,
    /// Fetch these paths: its missing outputs' closures.
    Fetch(Vec<Offer>),
    /// A cache could not be asked and `fallback` is off: it fails.
    Fail,
}

/// Whether and how `drv`'s missing outputs come from the caches.
pub(crate) fn plan(
    substituters: &Substituters,
    settings: &Settings,
    store: &LocalStore,
    drv: &Derivation,
    say: &dyn Fn(String),
) -> Result<Plan, BuildError> {
    // Nix's `allowSubstitutes`; a derivation whose attributes cannot be
    // read is built, and its build says why.
    let allowed = Attrs::of(drv).is_ok_and(|a| a.bool_or("allowSubstitutes", true));
    if substituters.is_empty() || !allowed {
        return Ok(Plan::Build);
    }
    let mut missing = Vec::new();
    for output in drv.outputs.values() {
        let Some(path) = output.path() else { continue };
        if store.is_valid(path)? {
            continue;
        }
        // A fixed output's address is known before it exists: caches of
        // other store directories can have it too.
        if let DerivationOutput::Fixed { method, hash, .. } = output {
            let ca = ContentAddress::Fixed {
                method: *method,
                hash: hash.clone(),
            };
            substituters.know_content_address(path, ca);
        }
        missing.push(path.clone());
    }
    Ok(match substituters.closure(store, &missing, say)? {
        Closure::Complete(offers) => Plan::Fetch(offers),
        Closure::Incomplete { failed: true, .. } if !settings.fallback => Plan::Fail,
        Closure::Incomplete { .. } => Plan::Build,
    })
}

/// What a user is shown of a fetch's progress.
pub fn progress_of(event: FetchEvent) -> Progress {
    match event {
        FetchEvent::Message(text) => Progress::Message(text),
        other => Progress::Fetch(other),
    }
}

/// Makes `paths` valid by fetching them and their closures from the
/// substituters `settings` name (Nix's `ensurePath` for paths that are not
/// derivations). A path no cache offers, or one whose fetch failed, is an
/// error in Nix's words.
pub fn substitute_paths(
    layout: &StoreLayout,
    settings: &Settings,
    paths: &[StorePath],
    cancel: Option<BorrowedFd<'_>>,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<(), BuildError> {
    let say = |text: String| progress(Progress::Message(text));
    let store = LocalStore::open(layout.clone())?;
    let mut missing = Vec::new();
    for path in paths {
        if !store.is_valid(path)? {
            missing.push(path.clone());
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let substituters = substituters_for(settings, layout, &say);
    let mut offers = Vec::new();
    let mut listed = BTreeSet::new();
    for path in &missing {
        match substituters.closure(&store, std::slice::from_ref(path), &say)? {
            Closure::Complete(closure) => offers.extend(
                closure
                    .into_iter()
                    .filter(|o| listed.insert(o.narinfo.info.path.clone())),
            ),
            Closure::Incomplete { path, .. } => {
                return Err(BuildError::NoSubstituter(layout.store_dir.print(&path)));
            }
        }
    }
    drop(store);
    let failed = substituters.fetch(
        layout,
        offers,
        settings.max_substitution_jobs,
        &|| crate::schedule::cancelled(cancel),
        &|event| progress(progress_of(event)),
    );
    match failed.into_iter().next() {
        None => Ok(()),
        Some((_, why)) => Err(BuildError::SubstitutionFailed(why)),
    }
}

/// What realising some paths would take (Nix's `queryMissing`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Missing {
    /// Derivations to build.
    pub will_build: BTreeSet<StorePath>,
    /// Paths to fetch from the caches.
    pub will_substitute: BTreeSet<StorePath>,
    /// Paths neither valid nor offered by a cache.
    pub unknown: BTreeSet<StorePath>,
    /// The size of what would be downloaded (compressed NARs).
    pub download_size: u64,
    /// The size of the NARs to be fetched.
    pub nar_size: u64,
}

impl Missing {
    fn fetch(&mut self, offers: Vec<Offer>) {
        for offer in offers {
            if self.will_substitute.insert(offer.narinfo.info.path.clone()) {
                self.download_size += offer.narinfo.file_size.unwrap_or(0);
                self.nar_size += offer.narinfo.info.nar_size;
            }
        }
    }
}

/// What realising `targets` (derivations and other store paths) would
/// take: which derivations must be built, which paths come from the
/// caches, and which are nowhere.
pub fn query_missing(
    store: &LocalStore,
    settings: &Settings,
    substituters: &Substituters,
    targets: &[StorePath],
    say: &dyn Fn(String),
) -> Result<Missing, BuildError> {
    let mut missing = Missing::default();
    let mut seen = BTreeSet::new();
    let mut queue: Vec<StorePath> = targets.to_vec();
    while let Some(path) = queue.pop() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let valid = store.is_valid(&path)?;
        if !path.is_derivation() || !valid {
            if valid {
                continue;
            }
            match substituters.closure(store, std::slice::from_ref(&path), say)? {
                Closure::Complete(offers) => missing.fetch(offers),
                Closure::Incomplete { path, .. } => {
                    missing.unknown.insert(path);
                }
            }
            continue;
        }
        let drv = store.read_derivation(&path)?;
        if store.outputs_valid(&drv)? {
            continue;
        }
        match plan(substituters, settings, store, &drv, say)? {
            Plan::Fetch(offers) => missing.fetch(offers),
            Plan::Build | Plan::Fail => {
                missing.will_build.insert(path);
                queue.extend(drv.input_drvs.keys().cloned());
            }
        }
    }
    Ok(missing)
}
