//! The binary caches a store substitutes from (`substituters`), tried in
//! priority order as Nix tries them: for each path the first cache with a
//! narinfo the store may accept (signed by a trusted key, content-addressed,
//! or `require-sigs` off), and on a failed download the next one. Whole
//! closures are fetched references first, up to `max-substitution-jobs` at
//! once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, mpsc};

use crate::ContentAddress;
use crate::binary_cache::{BinaryCache, NarInfo};
use crate::local::LocalStore;
use crate::narinfo_cache::NarInfoDiskCache;
use crate::path::{StoreDir, StorePath};
use crate::signature::{PublicKey, is_untrusted};
use crate::transfer::TransferOptions;
use crate::{StoreError, StoreLayout, error_chain};

/// How many narinfos are asked for at once while a closure is explored.
pub const QUERY_JOBS: usize = 16;

/// Where a path can be fetched from: the cache (its index in priority
/// order) and its narinfo there.
#[derive(Debug, Clone)]
pub struct Offer {
    /// The cache's index among [`Substituters`], in priority order.
    pub cache: usize,
    /// Its narinfo for the path.
    pub narinfo: NarInfo,
}

/// What the caches were able to say of a path.
#[derive(Debug, Clone)]
enum Lookup {
    Offered(Box<Offer>),
    /// No cache offers it; `failed` when a cache could not be asked.
    Absent {
        failed: bool,
    },
}

/// What substituting a set of paths would take.
#[derive(Debug, Clone)]
pub enum Closure {
    /// Every path of the closure that is not valid, references first,
    /// each with where it comes from.
    Complete(Vec<Offer>),
    /// Some path of the closure is offered by no cache; `failed` when a
    /// cache could not be asked (rather than not having it).
    Incomplete {
        /// The path no cache offers.
        path: StorePath,
        /// A cache could not be asked.
        failed: bool,
    },
}

/// What a substitution tells its caller as it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchEvent {
    /// `path` starts coming from the cache at `from` (its URL).
    Copying {
        /// The path.
        path: StorePath,
        /// The cache's URL.
        from: String,
    },
    /// `path`'s fetch ended.
    Copied {
        /// The path.
        path: StorePath,
        /// Whether it is now valid.
        ok: bool,
    },
    /// A warning or error to show (`warning: …`, `error: …`).
    Message(String),
}

/// The substituters of a store, opened, in priority order, with what they
/// were asked (each path is asked once per run).
pub struct Substituters {
    caches: Vec<BinaryCache>,
    trusted_keys: Option<Vec<PublicKey>>,
    /// Whether a narinfo no trusted key signed is passed over before its
    /// NAR is fetched (substitution), or refused when the path is imported
    /// (a copy, as `nix copy` refuses it).
    skip_unsigned: bool,
    store_dir: StoreDir,
    known: Mutex<HashMap<StorePath, Lookup>>,
    /// Content addresses known in advance (fixed outputs): with one, a
    /// path can come from a cache of another store directory.
    addresses: Mutex<HashMap<StorePath, ContentAddress>>,
}

impl Substituters {
    /// Opens the caches at `urls` for a store at `store_dir`; a cache that
    /// cannot be opened (unreachable, another store directory) is skipped
    /// with a warning told to `say`, as Nix skips it. `trusted_keys` are
    /// the keys a path must be signed by (`None`: `require-sigs` is off);
    /// downloads are made as `options` say; HTTP caches' answers are kept
    /// in `disk`.
    pub fn open(
        urls: &[String],
        store_dir: &StoreDir,
        trusted_keys: Option<Vec<PublicKey>>,
        options: &TransferOptions,
        disk: Option<&Arc<NarInfoDiskCache>>,
        say: &dyn Fn(String),
    ) -> Substituters {
        let mut caches = Vec::new();
        for url in urls.iter().filter(|u| !u.is_empty()) {
            match BinaryCache::open(url, store_dir, options, disk) {
                Ok(cache) => caches.push(cache),
                Err(e) => say(format!("warning: {}", error_chain(&e))),
            }
        }
        // Stable: caches of one priority keep the order they were named in.
        caches.sort_by_key(|c| c.info.priority);
        Substituters {
            caches,
            trusted_keys,
            skip_unsigned: true,
            store_dir: store_dir.clone(),
            known: Mutex::default(),
            addresses: Mutex::default(),
        }
    }

    /// One cache, opened, to copy from: every narinfo is taken, and a
    /// path no trusted key signed is refused when it is imported, with the
    /// store's error (as `nix copy --from` refuses it).
    pub fn to_copy_from(
        cache: BinaryCache,
        store_dir: &StoreDir,
        trusted_keys: Option<Vec<PublicKey>>,
    ) -> Substituters {
        Substituters {
            caches: vec![cache],
            trusted_keys,
            skip_unsigned: false,
            store_dir: store_dir.clone(),
            known: Mutex::default(),
            addresses: Mutex::default(),
        }
    }

    /// Tells that `path` has the content address `ca` (a fixed output's):
    /// caches of other store directories can then be asked for it under
    /// the path `ca` gives there, as Nix asks them.
    pub fn know_content_address(&self, path: &StorePath, ca: ContentAddress) {
        self.addresses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.clone(), ca);
    }

    /// The path to ask `cache` for, for `path`: the same path in a cache of
    /// this store directory; in another one, the path a known content
    /// address gives there (`None`: that cache cannot have it).
    fn asked_of(&self, cache: &BinaryCache, path: &StorePath) -> Option<StorePath> {
        if cache.store_dir == self.store_dir {
            return Some(path.clone());
        }
        let addresses = self.addresses.lock().unwrap_or_else(|e| e.into_inner());
        addresses
            .get(path)?
            .store_path(&cache.store_dir, path.name(), &BTreeSet::new(), path)
            .ok()
    }

    /// Whether there is no cache to substitute from.
    pub fn is_empty(&self) -> bool {
        self.caches.is_empty()
    }

    /// The URL of the cache at `index`.
    pub fn url(&self, index: usize) -> &str {
        &self.caches[index].url
    }

    /// The first cache from `from` on that offers `path` with a narinfo
    /// the store may accept. A narinfo no trusted key signed is skipped
    /// with Nix's warning; a cache that cannot be asked, with its error.
    fn lookup(&self, path: &StorePath, from: usize, say: &dyn Fn(String)) -> Lookup {
        let mut failed = false;
        for (index, cache) in self.caches.iter().enumerate().skip(from) {
            let Some(asked) = self.asked_of(cache, path) else {
                continue;
            };
            let mut narinfo = match cache.query(&asked) {
                Ok(Some(narinfo)) => narinfo,
                Ok(None) => continue,
                Err(e) => {
                    say(format!("error: {}", error_chain(&e)));
                    failed = true;
                    continue;
                }
            };
            if asked != *path {
                // From another store directory, only a content-addressed
                // path without references can be taken, under its path
                // here (Nix's rule).
                if !narinfo.info.references.is_empty() || narinfo.info.ca.is_none() {
                    continue;
                }
                narinfo.info.path = path.clone();
            }
            if self.skip_unsigned
                && is_untrusted(&self.store_dir, &narinfo.info, self.trusted_keys.as_deref())
            {
                say(format!(
                    "warning: the substitute for '{}' from '{}' is not signed by any of the keys in 'trusted-public-keys'",
                    self.store_dir.print(path),
                    cache.url
                ));
                continue;
            }
            return Lookup::Offered(Box::new(Offer {
                cache: index,
                narinfo,
            }));
        }
        Lookup::Absent { failed }
    }

    /// Where `path` can come from, asking the caches once per run.
    pub fn offer(&self, path: &StorePath, say: &dyn Fn(String)) -> Option<Offer> {
        self.lookup_once(path, say).0
    }

    fn lookup_once(&self, path: &StorePath, say: &dyn Fn(String)) -> (Option<Offer>, bool) {
        let known = self
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            .cloned();
        let lookup = match known {
            Some(lookup) => lookup,
            None => {
                let lookup = self.lookup(path, 0, say);
                self.known
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(path.clone(), lookup.clone());
                lookup
            }
        };
        match lookup {
            Lookup::Offered(offer) => (Some(*offer), false),
            Lookup::Absent { failed } => (None, failed),
        }
    }

    /// What fetching `roots` and everything they refer to takes: the
    /// paths of that closure not valid in `store`, references first.
    pub fn closure(
        &self,
        store: &LocalStore,
        roots: &[StorePath],
        say: &dyn Fn(String),
    ) -> Result<Closure, StoreError> {
        let valid = self.ask_ahead(store, roots, say)?;
        enum Step {
            Visit(StorePath),
            Emit(Box<Offer>),
        }
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        let mut stack: Vec<Step> = roots.iter().rev().cloned().map(Step::Visit).collect();
        while let Some(step) = stack.pop() {
            let path = match step {
                Step::Emit(offer) => {
                    order.push(*offer);
                    continue;
                }
                Step::Visit(path) => path,
            };
            if !seen.insert(path.clone()) || valid.contains(&path) {
                continue;
            }
            let (offer, failed) = self.lookup_once(&path, say);
            let Some(offer) = offer else {
                return Ok(Closure::Incomplete { path, failed });
            };
            let references: Vec<StorePath> = offer
                .narinfo
                .info
                .references
                .iter()
                .filter(|r| **r != path)
                .cloned()
                .collect();
            stack.push(Step::Emit(Box::new(offer)));
            stack.extend(references.into_iter().map(Step::Visit));
        }
        Ok(Closure::Complete(order))
    }

    /// Asks the caches about `roots` and what their narinfos refer to,
    /// level by level, up to [`QUERY_JOBS`] paths at once, so that the walk
    /// of [`Substituters::closure`] finds its answers ready. Returns the
    /// paths met that are valid already (the walk meets no others).
    fn ask_ahead(
        &self,
        store: &LocalStore,
        roots: &[StorePath],
        say: &dyn Fn(String),
    ) -> Result<BTreeSet<StorePath>, StoreError> {
        let mut seen: BTreeSet<StorePath> = BTreeSet::new();
        let mut valid: BTreeSet<StorePath> = BTreeSet::new();
        let mut level: Vec<StorePath> = roots.to_vec();
        while !level.is_empty() {
            let mut asking = Vec::new();
            for path in level {
                if !seen.insert(path.clone()) {
                    continue;
                }
                if store.is_valid(&path)? {
                    valid.insert(path);
                } else {
                    asking.push(path);
                }
            }
            let said = Mutex::new(Vec::new());
            let next = Mutex::new(Vec::new());
            let share = asking.len().div_ceil(QUERY_JOBS).max(1);
            std::thread::scope(|scope| {
                for part in asking.chunks(share) {
                    let (said, next) = (&said, &next);
                    scope.spawn(move || {
                        let tell = |text: String| {
                            said.lock().unwrap_or_else(|e| e.into_inner()).push(text)
                        };
                        for path in part {
                            if let (Some(offer), _) = self.lookup_once(path, &tell) {
                                let references = offer.narinfo.info.references.into_iter();
                                next.lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .extend(references.filter(|r| r != path));
                            }
                        }
                    });
                }
            });
            for text in said.into_inner().unwrap_or_else(|e| e.into_inner()) {
                say(text);
            }
            level = next.into_inner().unwrap_or_else(|e| e.into_inner());
        }
        Ok(valid)
    }

    /// Fetches `offers` (references first, as [`Substituters::closure`]
    /// gives them) into the store at `layout`, up to `jobs` at once, a path
    /// starting once the references it fetches are valid. A failed download
    /// is told and tried at the next cache that offers the path. Returns
    /// the paths that are not valid at the end, each with why; a path
    /// whose reference failed is not tried. `stop` is asked before each
    /// start: when it says so, nothing more starts.
    pub fn fetch(
        &self,
        layout: &StoreLayout,
        offers: Vec<Offer>,
        jobs: usize,
        stop: &(dyn Fn() -> bool + Sync),
        events: &(dyn Fn(FetchEvent) + Sync),
    ) -> BTreeMap<StorePath, String> {
        let store_dir = &layout.store_dir;
        let wanted: BTreeSet<StorePath> =
            offers.iter().map(|o| o.narinfo.info.path.clone()).collect();
        let mut waiting: Vec<Offer> = offers;
        let mut done: BTreeSet<StorePath> = BTreeSet::new();
        let mut failed: BTreeMap<StorePath, String> = BTreeMap::new();
        let mut running = 0usize;
        let (tx, rx) = mpsc::channel::<(StorePath, Result<(), String>)>();
        // Workers, each with its own handle on the store, take the paths
        // that are ready: a handle is opened once per worker, not per path.
        let (work, queue) = mpsc::channel::<Offer>();
        let queue = Mutex::new(queue);
        std::thread::scope(|scope| {
            for _ in 0..jobs.max(1).min(waiting.len()) {
                let (tx, queue) = (tx.clone(), &queue);
                scope.spawn(move || {
                    let mut store = None;
                    loop {
                        let next = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok(offer) = next else { return };
                        let path = offer.narinfo.info.path.clone();
                        let result = self.fetch_one(&mut store, layout, offer, events);
                        events(FetchEvent::Copied {
                            path: path.clone(),
                            ok: result.is_ok(),
                        });
                        let _ = tx.send((path, result));
                    }
                });
            }
            loop {
                let mut index = 0;
                while index < waiting.len() {
                    let info = &waiting[index].narinfo.info;
                    let needed = info
                        .references
                        .iter()
                        .filter(|r| **r != info.path && wanted.contains(*r));
                    let mut blocked = false;
                    let mut broken = None;
                    for reference in needed {
                        if let Some(why) = failed.get(reference) {
                            broken = Some(format!(
                                "some references of path '{}' could not be realised ({why})",
                                store_dir.print(&info.path)
                            ));
                            break;
                        }
                        blocked |= !done.contains(reference);
                    }
                    if let Some(why) = broken {
                        let offer = waiting.swap_remove(index);
                        failed.insert(offer.narinfo.info.path, why);
                        continue;
                    }
                    if blocked || running >= jobs.max(1) || stop() {
                        index += 1;
                        continue;
                    }
                    let offer = waiting.swap_remove(index);
                    if work.send(offer).is_err() {
                        break;
                    }
                    running += 1;
                }
                if running == 0 {
                    // The workers see the queue close and end.
                    drop(work);
                    break;
                }
                let Ok((path, result)) = rx.recv() else { break };
                running -= 1;
                match result {
                    Ok(()) => {
                        done.insert(path);
                    }
                    Err(why) => {
                        failed.insert(path, why);
                    }
                }
            }
        });
        // Not started: stopped, or waiting on a reference that never came.
        for offer in waiting {
            failed
                .entry(offer.narinfo.info.path)
                .or_insert_with(|| "the substitution was interrupted".to_owned());
        }
        failed
    }

    /// Fetches one path, from the cache of `offer` and then
    /// from each later cache that offers it.
    fn fetch_one(
        &self,
        store: &mut Option<LocalStore>,
        layout: &StoreLayout,
        mut offer: Offer,
        events: &(dyn Fn(FetchEvent) + Sync),
    ) -> Result<(), String> {
        let path = offer.narinfo.info.path.clone();
        let store = match store {
            Some(store) => store,
            None => store.insert(LocalStore::open(layout.clone()).map_err(|e| error_chain(&e))?),
        };
        // No lock held here: the store installs the path under its lock,
        // and a path another process added meanwhile is left as it is.
        if store.is_valid(&path).map_err(|e| error_chain(&e))? {
            return Ok(());
        }
        let say = |text: String| events(FetchEvent::Message(text));
        loop {
            let cache = &self.caches[offer.cache];
            events(FetchEvent::Copying {
                path: path.clone(),
                from: cache.url.clone(),
            });
            let error = match cache.fetch(store, &offer.narinfo, self.trusted_keys.as_deref()) {
                Ok(()) => return Ok(()),
                Err(e) => error_chain(&e),
            };
            say(format!("error: {error}"));
            match self.lookup(&path, offer.cache + 1, &say) {
                Lookup::Offered(next) => offer = *next,
                Lookup::Absent { .. } => return Err(error),
            }
        }
    }
}
