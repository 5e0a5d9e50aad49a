//! Benchmark (not a test): the same 501-path closure (a path referring to
//! 500 text files), written by Nix 2.8 to a binary cache served over HTTP
//! on loopback, fetched into a fresh store by hermetic (`store copy
//! --from`) and by Nix 2.8 (`nix-store --realise` with the cache as its
//! substituter), side by side in one run, both checking signatures with
//! 16 downloads at once. Then the peak memory of fetching one 1 GiB NAR
//! (uncompressed, over HTTP) for both. Prints the times, the peaks and
//! the ratios; decides nothing. Run with `scripts/bench` as root.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hermetic_tests::http_server::HttpServer;
use hermetic_tests::nix_cache::NixCache;
use hermetic_tests::nix_peer::NixPeer;
use hermetic_tests::{TempDir, workspace_binary};

const ROUNDS: usize = 3;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, program, rest @ ..] = args.as_slice() {
        if flag == "--measure" {
            return measure(program, rest);
        }
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("substitute: run as root");
        return;
    }
    wide_closure();
    big_nar();
}

fn wide_closure() {
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
        let command = command.env("NIX_CONF_DIR", &conf).env_remove("NIX_REMOTE");
        hermetic_tests::timed_success(command).0
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

/// Runs `command` to its end: its time and its peak resident memory. The
/// command runs under a copy of this benchmark (`--measure`), whose only
/// child it is, so that its children's peak is this command's.
fn measured(command: &mut Command) -> (Duration, u64) {
    let mut wrapped = Command::new(std::env::current_exe().unwrap());
    wrapped.arg("--measure").arg(command.get_program());
    wrapped.args(command.get_args());
    for (name, value) in command.get_envs() {
        match value {
            Some(value) => wrapped.env(name, value),
            None => wrapped.env_remove(name),
        };
    }
    let started = Instant::now();
    let out = wrapped.stdin(Stdio::null()).output().unwrap();
    let elapsed = started.elapsed();
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let peak = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    (elapsed, peak)
}

/// The `--measure PROGRAM ARGS…` side of [`measured`]: runs the program
/// and prints its peak resident memory in bytes.
fn measure(program: &str, args: &[String]) {
    use nix::sys::resource::{UsageWho, getrusage};
    let out = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    if !out.status.success() {
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        std::process::exit(1);
    }
    // ru_maxrss is in KiB.
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap();
    println!("{}", usage.max_rss() as u64 * 1024);
}

/// One path of 1 GiB (a file of pseudo-random bytes), in an uncompressed
/// cache written by Nix 2.8 and served over HTTP: the peak memory of
/// fetching it with hermetic and with Nix.
fn big_nar() {
    const SIZE: usize = 1 << 30;
    let Some(nix) = NixPeer::or_skip(
        "substitute",
        "experimental-features = nix-command\nsubstituters =\nbuild-users-group =\n\
         require-sigs = false\n",
    ) else {
        return;
    };
    let work = TempDir::new("bench-substitute-big");
    let big = work.path.join("big");
    {
        use std::io::Write;
        let mut file = std::io::BufWriter::new(std::fs::File::create(&big).unwrap());
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..SIZE / block.len() {
            for word in block.chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                word.copy_from_slice(&state.to_le_bytes());
            }
            file.write_all(&block).unwrap();
        }
    }
    let source = work.path.join("nix-source");
    let source = source.to_str().unwrap();
    let path = nix.run(
        "nix-store",
        &["--store", source, "--add", big.to_str().unwrap()],
    );
    let path = path.trim().to_owned();
    std::fs::remove_file(&big).unwrap();
    let cache_dir = work.path.join("cache");
    let to = format!("file://{}?compression=none", cache_dir.display());
    nix.run("nix", &["copy", "--store", source, "--to", &to, &path]);
    std::fs::remove_dir_all(work.path.join("nix-source")).unwrap();
    let server = HttpServer::serve(&cache_dir);
    let url = server.url("");
    let conf = work.path.join("conf");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(
        conf.join("nix.conf"),
        format!("substituters = {url}\nrequire-sigs = false\nbuild-users-group =\n"),
    )
    .unwrap();

    let root = work.path.join("hermetic-store");
    let ours = measured(
        Command::new(workspace_binary("hermetic"))
            .env("NIX_CONF_DIR", &conf)
            .arg("--store")
            .arg(&root)
            .args(["store", "copy", "--from", &url, &path]),
    );
    std::fs::remove_dir_all(&root).unwrap();
    let root = work.path.join("nix-store");
    let theirs = measured(
        Command::new("nix-store")
            .env("NIX_CONF_DIR", &conf)
            .env_remove("NIX_REMOTE")
            .arg("--store")
            .arg(&root)
            .args(["--realise", &path]),
    );
    std::fs::remove_dir_all(&root).unwrap();
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    println!("substitute one 1 GiB NAR (uncompressed) over loopback HTTP:");
    println!(
        "  hermetic store copy --from   {:>10.1?}  peak {:>7.1} MiB",
        ours.0,
        mib(ours.1)
    );
    println!(
        "  nix-store --realise (2.8)    {:>10.1?}  peak {:>7.1} MiB",
        theirs.0,
        mib(theirs.1)
    );
    println!(
        "  peak memory ratio (Nix / hermetic) {:>6.2}",
        theirs.1 as f64 / ours.1 as f64
    );
}
