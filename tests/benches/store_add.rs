//! Benchmark (not a test): NAR hashing and `store add` of a large tree (a
//! copy of /usr/include), hermetic against Nix 2.8 (`nix-hash`,
//! `nix-store --add`) side by side in one run, each add into a fresh store.
//! Prints medians and ratios; decides nothing. Run with `scripts/bench`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hermetic_tests::{TempDir, workspace_binary};

/// Runs of each command.
const RUNS: usize = 6;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Runs a command to success and returns how long it took and its stdout.
fn time(command: &mut Command) -> (Duration, String) {
    let started = Instant::now();
    let out = command
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    let elapsed = started.elapsed();
    assert!(out.status.success(), "{command:?} failed: {}", out.status);
    (
        elapsed,
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
    )
}

fn main() {
    if Command::new("nix-store").arg("--version").output().is_err() {
        eprintln!(
            "store_add: no nix-store to compare with (scripts/setup-test-host installs nix-bin)"
        );
        return;
    }
    let hermetic = workspace_binary("hermetic");
    let work = TempDir::new("bench-store");
    let conf = work.path.join("conf");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(
        conf.join("nix.conf"),
        "substituters =\nbuild-users-group =\n",
    )
    .unwrap();
    let tree = work.path.join("include");
    let copied = Command::new("cp")
        .arg("-a")
        .arg("/usr/include")
        .arg(&tree)
        .status()
        .unwrap();
    assert!(copied.success(), "copy /usr/include");
    let size = Command::new("du")
        .args(["-sh"])
        .arg(&tree)
        .output()
        .unwrap();
    eprintln!(
        "tree: a copy of /usr/include, {}",
        String::from_utf8_lossy(&size.stdout)
            .split('\t')
            .next()
            .unwrap_or("?")
    );

    let nix = |program: &str| {
        let mut command = Command::new(program);
        command.env("NIX_CONF_DIR", &conf).env_remove("NIX_REMOTE");
        command
    };
    let fresh = |label: &str, run: usize| work.path.join(format!("{label}-{run}"));

    let (mut ours_hash, mut nix_hash) = (Vec::new(), Vec::new());
    let (mut ours_add, mut nix_add) = (Vec::new(), Vec::new());
    for run in 0..RUNS {
        let (t, ours) = time(Command::new(&hermetic).args(["store", "hash"]).arg(&tree));
        ours_hash.push(t);
        let (t, theirs) = time(
            nix("nix-hash")
                .args(["--type", "sha256", "--base32"])
                .arg(&tree),
        );
        nix_hash.push(t);
        assert_eq!(ours, format!("sha256:{theirs}"), "the same NAR hash");

        // Alternate who goes first, and start each add with nothing dirty
        // in the page cache (the previous run's stores were just removed).
        let mut add_ours = || {
            let _ = Command::new("sync").status();
            let root = fresh("hermetic", run);
            let (t, path) = time(
                Command::new(&hermetic)
                    .arg("--store")
                    .arg(&root)
                    .args(["store", "add"])
                    .arg(&tree),
            );
            ours_add.push(t);
            path
        };
        let mut add_nix = || {
            let _ = Command::new("sync").status();
            let root = fresh("nix", run);
            let (t, path) = time(
                nix("nix-store")
                    .arg("--store")
                    .arg(&root)
                    .arg("--add")
                    .arg(&tree),
            );
            nix_add.push(t);
            path
        };
        let (ours, theirs) = if run % 2 == 0 {
            let ours = add_ours();
            (ours, add_nix())
        } else {
            let theirs = add_nix();
            (add_ours(), theirs)
        };
        assert_eq!(ours, theirs, "the same store path");
        for label in ["hermetic", "nix"] {
            remove_store(&fresh(label, run));
        }
    }
    let report = |what: &str, ours: Vec<Duration>, theirs: Vec<Duration>| {
        let (ours, theirs) = (median(ours), median(theirs));
        println!(
            "{what:<10} hermetic {:>8.1} ms   nix 2.8 {:>8.1} ms   nix/hermetic = {:.2}",
            ours.as_secs_f64() * 1e3,
            theirs.as_secs_f64() * 1e3,
            theirs.as_secs_f64() / ours.as_secs_f64()
        );
    };
    println!("store_add: medians of {RUNS} runs each, interleaved");
    report("NAR hash", ours_hash, nix_hash);
    report("store add", ours_add, nix_add);
}

/// Removes a store made by a run (its objects are read-only).
fn remove_store(root: &Path) {
    let _ = Command::new("chmod").args(["-R", "u+w"]).arg(root).status();
    let _ = std::fs::remove_dir_all(root);
}
