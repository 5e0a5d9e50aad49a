//! Benchmark (not a test): the same 501-path closure (a path referring to
//! 500 text files), written by Nix 2.8 to a binary cache served over HTTP
//! on loopback, fetched into a fresh store by hermetic (`store copy
//! --from`) and by Nix 2.8 (`nix-store --realise` with the cache as its
//! substituter), side by side in one run, both checking signatures with
//! 16 downloads at once. Prints the times and the ratio; decides nothing.
//! Run with `scripts/bench` as root.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use hermetic_tests::nix_cache::NixCache;
use hermetic_tests::{TempDir, workspace_binary};

const ROUNDS: usize = 3;

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("substitute: run as root");
        return;
    }
    let Some(cache) = NixCache::wide(500) else {
        return;
    };
    let server = cache.serve_http();
    let url = server.url("");
    let hermetic = workspace_binary("hermetic");
    let work = TempDir::new("bench-substitute");
    let conf = work.path.join("conf");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(
        conf.join("nix.conf"),
        format!(
            "substituters = {url}\ntrusted-public-keys = {}\nmax-substitution-jobs = 16\n\
             build-users-group =\nexperimental-features = nix-command\n",
            cache.public_key()
        ),
    )
    .unwrap();
    let timed = |command: &mut Command| -> Duration {
        let started = Instant::now();
        let out: Output = command
            .env("NIX_CONF_DIR", &conf)
            .env_remove("NIX_REMOTE")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let elapsed = started.elapsed();
        assert!(
            out.status.success(),
            "{command:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        elapsed
    };
    let mut times = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let root = work.path.join(format!("hermetic-{round}"));
        times.0.push(timed(
            Command::new(&hermetic)
                .arg("--store")
                .arg(&root)
                .env(
                    "NIX_STATE_DIR",
                    work.path.join(format!("hermetic-state-{round}")),
                )
                .args(["store", "copy", "--from", &url, &cache.built]),
        ));
        let root = work.path.join(format!("nix-{round}"));
        times.1.push(timed(
            Command::new("nix-store")
                .arg("--store")
                .arg(&root)
                .args(["--realise", &cache.built]),
        ));
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (ours, theirs) = (median(&mut times.0), median(&mut times.1));
    println!("substitute 501 paths over loopback HTTP (median of {ROUNDS}):");
    println!("  hermetic store copy --from   {ours:>10.1?}");
    println!("  nix-store --realise (2.8)    {theirs:>10.1?}");
    println!(
        "  ratio (Nix / hermetic)       {:>10.2}",
        theirs.as_secs_f64() / ours.as_secs_f64()
    );
}
