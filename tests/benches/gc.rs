//! Benchmark (not a test): collecting 10,000 dead paths (each a small
//! directory: two files, one in a subdirectory), hermetic's `store gc`
//! against Nix 2.8's `nix-store --gc`, each on its own copy of one store,
//! side by side in one run. Then how long a path added while hermetic's
//! collector runs waits for it. Prints the times and the ratio; decides
//! nothing. Run with `scripts/bench` as root.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hermetic_store::{LocalStore, StoreLayout};
use hermetic_tests::{TempDir, workspace_binary};

const PATHS: usize = 10_000;

/// Runs `command` to success; how long it took.
fn timed(command: &mut Command) -> Duration {
    hermetic_tests::timed_success(command.stdout(Stdio::null())).0
}

/// A store under `root` holding `PATHS` unrooted paths.
fn make_store(root: &std::path::Path, scratch: &std::path::Path) {
    let mut store = LocalStore::open(StoreLayout::under_root(root)).unwrap();
    for i in 0..PATHS {
        let dir = scratch.join(format!("p{i}"));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a"), format!("path {i}\n")).unwrap();
        std::fs::write(dir.join("sub/b"), format!("more of path {i}\n")).unwrap();
        store.add_path(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("gc: run as root");
        return;
    }
    if Command::new("nix-store").arg("--version").output().is_err() {
        eprintln!("gc: no nix-store to compare with");
        return;
    }
    let work = TempDir::new("bench-gc");
    let conf = work.path.join("conf");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(conf.join("nix.conf"), "build-users-group =\n").unwrap();
    let ours = work.path.join("hermetic");
    make_store(&ours, &work.path);
    let theirs = work.path.join("nix");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(&ours)
        .arg(&theirs)
        .status()
        .unwrap();
    assert!(copied.success());
    // Both copies start from the disk, not from pages the copy dirtied.
    let _ = Command::new("sync").status();

    let hermetic = timed(
        Command::new(workspace_binary("hermetic"))
            .env("NIX_CONF_DIR", &conf)
            .arg("--store")
            .arg(&ours)
            .args(["store", "gc"]),
    );
    let nix = timed(
        Command::new("nix-store")
            .env("NIX_CONF_DIR", &conf)
            .env_remove("NIX_REMOTE")
            .arg("--store")
            .arg(&theirs)
            .arg("--gc"),
    );
    for root in [&ours, &theirs] {
        let left = std::fs::read_dir(root.join("nix/store"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name() != ".links")
            .count();
        assert_eq!(left, 0, "{} kept paths", root.display());
    }
    println!("collect {PATHS} dead paths (small directories):");
    println!("  hermetic store gc            {hermetic:>10.1?}");
    println!("  nix-store --gc (2.8)         {nix:>10.1?}");
    println!(
        "  ratio (Nix / hermetic)       {:>10.2}",
        nix.as_secs_f64() / hermetic.as_secs_f64()
    );

    // A path added while the collector runs: it waits for no more than
    // its root's round trip through the collector's socket.
    make_store(&ours, &work.path);
    let mut gc = Command::new(workspace_binary("hermetic"))
        .env("NIX_CONF_DIR", &conf)
        .arg("--store")
        .arg(&ours)
        .args(["store", "gc"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let socket = ours.join("nix/var/nix/gc-socket/socket");
    while !socket.exists() {
        std::thread::sleep(Duration::from_millis(1));
    }
    let file = work.path.join("added");
    std::fs::write(&file, "added while collecting\n").unwrap();
    let started = Instant::now();
    let mut store = LocalStore::open(StoreLayout::under_root(&ours)).unwrap();
    store.add_path(&file).unwrap();
    let waited = started.elapsed();
    let running = gc.try_wait().unwrap().is_none();
    gc.wait().unwrap();
    println!(
        "  a path added during hermetic's collection took {waited:.1?} (collector {})",
        if running {
            "still running"
        } else {
            "already done"
        }
    );
}
