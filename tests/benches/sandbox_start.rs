//! Benchmark (not a test): how long a minimal sandboxed `true` takes from
//! start to exit, for hermetic, `unshare` and bubblewrap side by side in one
//! run, and how hermetic's start-up grows with the number of input paths.
//! Prints medians and ratios; decides nothing. Run with `scripts/bench`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hermetic_runtime::{SandboxPath, SandboxSpec, environment};
use hermetic_tests::{TempDir, TestStore, build_user};

/// Runs of each command for the side-by-side comparison.
const RUNS: usize = 60;
/// Runs per input count.
const INPUT_RUNS: usize = 15;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time(command: &mut Command) -> Duration {
    let started = Instant::now();
    let status = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    let elapsed = started.elapsed();
    assert!(status.success(), "{command:?} failed: {status}");
    elapsed
}

fn sandbox_run() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let binary = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("sandbox-run");
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build --release --bins` first (scripts/bench does)",
        binary.display()
    );
    binary
}

fn root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn hermetic_args() -> Vec<String> {
    let mut args = Vec::new();
    if root() {
        let user = build_user();
        args.extend([
            "--build-user".to_string(),
            format!("{}:{}", user.uid, user.gid),
        ]);
    }
    args
}

/// Runs `command` (a `sandbox-run --timings`) [`RUNS`] times and prints
/// the median of each phase of its table, in the order they come.
fn phase_table(command: &mut dyn FnMut() -> Command) {
    let mut phases: Vec<(String, Vec<f64>)> = Vec::new();
    let (mut before_main, mut after_main) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let spawned = hermetic_sys::phase_clock::now() as f64;
        let out = command()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .output()
            .unwrap();
        let reaped = hermetic_sys::phase_clock::now() as f64;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in String::from_utf8_lossy(&out.stderr).lines() {
            if let Some(rest) = line.strip_prefix("CLOCK_MONOTONIC at the first point ") {
                let numbers: Vec<f64> = rest
                    .split(|c: char| !c.is_ascii_digit())
                    .filter_map(|n| n.parse().ok())
                    .collect();
                if let [first, last] = numbers[..] {
                    before_main.push((first - spawned) / 1e3);
                    after_main.push((reaped - last) / 1e3);
                }
                continue;
            }
            let Some((value, phase)) = line.split_once(" µs  ") else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            match phases.iter_mut().find(|(name, _)| name == phase) {
                Some((_, values)) => values.push(value),
                None => phases.push((phase.to_owned(), vec![value])),
            }
        }
    }
    phases.insert(
        0,
        (
            "before main: spawn, exec, loading (from the caller)".to_owned(),
            before_main,
        ),
    );
    phases.push((
        "after main: exit, reaped by the caller".to_owned(),
        after_main,
    ));
    println!("\nhermetic's phases (`sandbox-run --timings`, median of {RUNS} runs, µs):");
    for (phase, mut values) in phases {
        values.sort_by(f64::total_cmp);
        println!("  {:9.1}  {phase}", values[values.len() / 2]);
    }
}

fn main() {
    // `cargo bench` passes --bench; nothing else is expected.
    let busybox =
        hermetic_host::static_shell().expect("a static busybox (scripts/setup-test-host)");
    let sandbox_run = sandbox_run();
    let bwrap_root = [
        "--unshare-all",
        "--ro-bind",
        "/usr",
        "/usr",
        "--symlink",
        "usr/lib64",
        "/lib64",
        "--symlink",
        "usr/lib",
        "/lib",
        "--symlink",
        "usr/bin",
        "/bin",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
    ];
    let true_path = format!("/bin/true={}", busybox.display());

    let hermetic_with = |options: &[&str]| {
        let mut c = Command::new(&sandbox_run);
        c.args(hermetic_args()).args(options).args([
            "--no-default-sandbox-paths",
            "--sandbox-path",
            &true_path,
            "--",
            "/bin/true",
        ]);
        c
    };
    let hermetic = || hermetic_with(&[]);
    let unshare = || {
        let mut c = Command::new("unshare");
        c.args(["-Urmnpfiu", "--mount-proc", "true"]);
        c
    };
    let bwrap = || {
        let mut c = Command::new("bwrap");
        c.args(bwrap_root).arg("true");
        c
    };

    println!("sandboxed `true`, start to exit, {RUNS} runs each, interleaved:");
    let mut samples: [Vec<Duration>; 3] = [vec![], vec![], vec![]];
    for _ in 0..3 {
        // Warm up caches.
        time(&mut hermetic());
        time(&mut unshare());
        time(&mut bwrap());
    }
    for _ in 0..RUNS {
        samples[0].push(time(&mut hermetic()));
        samples[1].push(time(&mut unshare()));
        samples[2].push(time(&mut bwrap()));
    }
    let [h, u, b] = samples.map(median);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("  hermetic sandbox-run    {:7.3} ms", ms(h));
    println!("  unshare -Urmnpfiu       {:7.3} ms", ms(u));
    println!("  bubblewrap --unshare-all{:7.3} ms", ms(b));
    println!(
        "  ratios: hermetic/unshare {:.2}, hermetic/bubblewrap {:.2}, unshare/bubblewrap {:.2}",
        ms(h) / ms(u),
        ms(h) / ms(b),
        ms(u) / ms(b)
    );

    phase_table(&mut || hermetic_with(&["--timings"]));

    println!("\nhermetic with and without the seccomp filter ({RUNS} runs each, interleaved):");
    let without_filter = || hermetic_with(&["--no-filter-syscalls"]);
    let mut filtered = Vec::new();
    let mut unfiltered = Vec::new();
    for _ in 0..RUNS {
        filtered.push(time(&mut hermetic()));
        unfiltered.push(time(&mut without_filter()));
    }
    let (f, n) = (median(filtered), median(unfiltered));
    println!("  with the filter     {:7.3} ms", ms(f));
    println!("  without the filter  {:7.3} ms", ms(n));
    println!(
        "  ratio with/without {:.3} (the filter is compiled at build time: this is the load alone)",
        ms(f) / ms(n)
    );

    if root() {
        // A cgroup per build: create (v1: four hierarchies here), record,
        // join before start, kill, remove, unrecord.
        let state = TempDir::new("bench-state");
        let state_dir = state.path.display().to_string();
        let with_cgroup =
            || hermetic_with(&["--state-dir", &state_dir, "--option", "use-cgroups", "true"]);
        println!(
            "\nhermetic with and without a cgroup of its own ({RUNS} runs each, interleaved):"
        );
        let layout = hermetic_runtime::cgroup::CgroupLayout::detect();
        println!("  cgroup layout: {layout:?}");
        let mut grouped = Vec::new();
        let mut plain = Vec::new();
        time(&mut with_cgroup());
        for _ in 0..RUNS {
            grouped.push(time(&mut with_cgroup()));
            plain.push(time(&mut hermetic()));
        }
        let (g, p) = (median(grouped), median(plain));
        println!("  with a cgroup     {:7.3} ms", ms(g));
        println!("  without           {:7.3} ms", ms(p));
        println!("  ratio with/without {:.3}", ms(g) / ms(p));
    }

    println!("\nhermetic with N directory inputs ({INPUT_RUNS} runs each, median):");
    let store = TestStore::new("bench");
    let specs = TempDir::new("bench-specs");
    let mut made = 0;
    let mut baseline = None;
    for n in [0usize, 10, 100, 1000, 5000] {
        while made < n {
            let name = format!("{:032}-input-{made}", made);
            std::fs::create_dir(store.dir.join(&name)).unwrap();
            made += 1;
        }
        let mut spec = SandboxSpec::new("/bin/true", vec![]);
        spec.real_store_dir = Some(store.dir.clone());
        spec.inputs = (0..n)
            .map(|i| store.dir.join(format!("{:032}-input-{i}", i)))
            .collect();
        spec.sandbox_paths = vec![true_path.parse::<SandboxPath>().unwrap()];
        spec.env =
            environment::builder_environment(&spec.store_dir, &spec.sandbox_build_dir, 1, []);
        if root() {
            spec.build_user = Some(build_user());
        }
        let file = specs.path.join(format!("spec-{n}.json"));
        std::fs::write(&file, serde_json::to_vec(&spec).unwrap()).unwrap();
        let run = || {
            let mut c = Command::new(&sandbox_run);
            c.arg("--spec").arg(&file);
            c
        };
        time(&mut run());
        let m = median((0..INPUT_RUNS).map(|_| time(&mut run())).collect());
        match baseline {
            None => {
                baseline = Some(m);
                println!("  N = {n:5}: {:8.3} ms", ms(m));
            }
            Some(base) => {
                let per_input = (m.as_secs_f64() - base.as_secs_f64()) / n as f64 * 1e6;
                println!(
                    "  N = {n:5}: {:8.3} ms, {per_input:6.1} µs per input",
                    ms(m)
                );
            }
        }
    }

    println!("\nbubblewrap with N --ro-bind directories ({INPUT_RUNS} runs each, median):");
    let mut bwrap_base = None;
    for n in [0usize, 100, 1000] {
        let mut args: Vec<String> = bwrap_root.iter().map(|s| s.to_string()).collect();
        for i in 0..n {
            let path = store
                .dir
                .join(format!("{:032}-input-{i}", i))
                .display()
                .to_string();
            args.extend(["--ro-bind".to_string(), path.clone(), path]);
        }
        let run = || {
            let mut c = Command::new("bwrap");
            c.args(&args).arg("true");
            c
        };
        let m = median((0..INPUT_RUNS).map(|_| time(&mut run())).collect());
        match bwrap_base {
            None => {
                bwrap_base = Some(m);
                println!("  N = {n:5}: {:8.3} ms", ms(m));
            }
            Some(base) => {
                let per_bind = (m.as_secs_f64() - base.as_secs_f64()) / n as f64 * 1e6;
                println!("  N = {n:5}: {:8.3} ms, {per_bind:6.1} µs per bind", ms(m));
            }
        }
    }
}
