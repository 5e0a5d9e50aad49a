//! Collection while builds run (`min-free`, `max-free`), as Nix's
//! `autoGC`: every `min-free-check-interval` seconds of a run the free
//! space of the store's filesystem is looked at, and when it is below
//! `min-free` (and `max-free`), garbage is collected beside the builds
//! until `max-free` bytes are free or there is no more; the builds' own
//! temporary roots keep what they use. A collection that freed nothing
//! worth it (less than 3% more space) is not run again until the space
//! changes.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hermetic_config::settings::Settings;
use hermetic_store::local::collect::{GcAction, GcOptions};
use hermetic_store::{LocalStore, StoreLayout};

/// What the checks of one run remember.
#[derive(Debug)]
struct State {
    last_check: Option<Instant>,
    /// The free space after the last collection.
    available_after_gc: u64,
}

/// The automatic collector of one run of builds.
#[derive(Debug)]
pub struct AutoGc {
    min_free: u64,
    max_free: u64,
    interval: Duration,
    state: Arc<Mutex<State>>,
    running: Arc<AtomicBool>,
}

/// A collection to run now: up to `max_freed` bytes.
#[derive(Debug)]
pub struct AutoGcJob {
    options: GcOptions,
    state: Arc<Mutex<State>>,
    running: Arc<AtomicBool>,
}

/// The free bytes of the filesystem holding `real_store_dir` (or, for
/// Nix's tests, the number in the file `_NIX_TEST_FREE_SPACE_FILE`
/// names).
pub fn available(real_store_dir: &Path) -> Option<u64> {
    if let Some(file) = std::env::var_os("_NIX_TEST_FREE_SPACE_FILE") {
        return std::fs::read_to_string(file).ok()?.trim().parse().ok();
    }
    let st = nix::sys::statvfs::statvfs(real_store_dir).ok()?;
    Some(st.blocks_available() * st.fragment_size())
}

impl AutoGc {
    /// The automatic collector `settings` ask for; none when `min-free` is
    /// 0 (Nix's default: off).
    pub fn new(settings: &Settings) -> Option<AutoGc> {
        (settings.min_free > 0).then(|| AutoGc {
            min_free: settings.min_free,
            max_free: settings.max_free,
            interval: Duration::from_secs(settings.min_free_check_interval.max(1)),
            state: Arc::new(Mutex::new(State {
                last_check: None,
                available_after_gc: u64::MAX,
            })),
            running: Arc::default(),
        })
    }

    /// How often the free space is looked at.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Looks at the free space, if it is time to; the collection to run
    /// when it is too low and none is running.
    pub fn check(&self, layout: &StoreLayout, settings: &Settings) -> Option<AutoGcJob> {
        if self.running.load(Ordering::SeqCst) {
            return None;
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if state
            .last_check
            .is_some_and(|last| now < last + self.interval)
        {
            return None;
        }
        state.last_check = Some(now);
        let available = available(&layout.real_store_dir)?;
        if available >= self.min_free || available >= self.max_free {
            return None;
        }
        // The last collection could not do better than this.
        if available as f64 > state.available_after_gc as f64 * 0.97 {
            return None;
        }
        self.running.store(true, Ordering::SeqCst);
        Some(AutoGcJob {
            options: GcOptions {
                max_freed: self.max_free - available,
                keep_outputs: settings.keep_outputs,
                keep_derivations: settings.keep_derivations,
                ..GcOptions::new(GcAction::DeleteDead)
            },
            state: self.state.clone(),
            running: self.running.clone(),
        })
    }
}

impl AutoGcJob {
    /// Runs the collection on the store at `layout`, telling `say` what it
    /// does, as Nix's auto-GC prints it.
    pub fn run(self, layout: &StoreLayout, say: &dyn Fn(String)) {
        say(format!(
            "running auto-GC to free {} bytes",
            self.options.max_freed
        ));
        let collected = LocalStore::open(layout.clone()).and_then(|mut store| {
            store.collect_garbage(&self.options, &mut |line| say(line.to_owned()))
        });
        if let Err(e) = collected {
            say(format!("error: {}", crate::error_chain(&e)));
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.available_after_gc = available(&layout.real_store_dir).unwrap_or(0);
        state.last_check = Some(Instant::now());
        self.running.store(false, Ordering::SeqCst);
    }
}
