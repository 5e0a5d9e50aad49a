//! Benchmark (not a test): 300 trivial derivations built by hermetic and by
//! Nix 2.8 (`nix-store --realise`, sandbox on, the same build users), each
//! into a fresh store of its own, side by side in one run. Prints the
//! times and the ratio; decides nothing. Run with `scripts/bench` as root.

use std::process::Command;
use std::time::Duration;

use hermetic_tests::{TempDir, workspace_binary};

const COUNT: usize = 300;
const ROUNDS: usize = 2;

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("build_many: run as root (both tools build as the nixbld users)");
        return;
    }
    if Command::new("nix-store").arg("--version").output().is_err() {
        eprintln!(
            "build_many: no nix-store to compare with (scripts/setup-test-host installs nix-bin)"
        );
        return;
    }
    let hermetic = workspace_binary("hermetic");
    let work = TempDir::new("bench-build");
    let conf = work.path.join("conf");
    std::fs::create_dir(&conf).unwrap();
    let shell = hermetic_host::static_shell().expect("a static shell (busybox-static)");
    std::fs::write(
        conf.join("nix.conf"),
        format!(
            "sandbox = true\nsandbox-fallback = false\nbuild-users-group = nixbld\nmax-jobs = 2\n\
             extra-sandbox-paths = /bin/sh={}\nsubstituters =\n",
            shell.display()
        ),
    )
    .unwrap();
    let expr = work.path.join("many.nix");
    std::fs::write(
        &expr,
        format!(
            "builtins.genList (i: derivation {{ name = \"trivial-${{toString i}}\"; system = \"x86_64-linux\"; \
             builder = \"/bin/sh\"; args = [ \"-c\" \"echo ${{toString i}} > $out\" ]; }}) {COUNT}\n"
        ),
    )
    .unwrap();
    let run = |command: &mut Command| -> (Duration, String) {
        let command = command.env("NIX_CONF_DIR", &conf).env_remove("NIX_REMOTE");
        let (elapsed, out) = hermetic_tests::timed_success(command);
        (elapsed, String::from_utf8(out.stdout).unwrap())
    };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let times = |label: &str| -> (Duration, usize) {
            let root = work.path.join(format!("{label}-{round}"));
            let (_, drvs) = run(Command::new("nix-instantiate")
                .arg("--store")
                .arg(&root)
                .arg(&expr));
            let drvs: Vec<&str> = drvs.lines().collect();
            let _ = Command::new("sync").status();
            let (elapsed, outputs) = if label == "nix" {
                run(Command::new("nix-store")
                    .arg("--store")
                    .arg(&root)
                    .arg("--realise")
                    .args(&drvs))
            } else {
                run(Command::new(&hermetic)
                    .arg("--store")
                    .arg(&root)
                    .args(["build", "-j", "2"])
                    .args(&drvs))
            };
            (elapsed, outputs.lines().count())
        };
        // Alternate who goes first.
        let (a, b) = if round % 2 == 0 {
            let a = times("hermetic");
            (a, times("nix"))
        } else {
            let b = times("nix");
            (times("hermetic"), b)
        };
        assert_eq!(a.1, COUNT, "hermetic built every derivation");
        assert_eq!(b.1, COUNT, "Nix built every derivation");
        ours.push(a.0);
        theirs.push(b.0);
    }
    let best = |v: &[Duration]| v.iter().min().copied().unwrap();
    let (ours, theirs) = (best(&ours), best(&theirs));
    println!(
        "build_many: {COUNT} trivial derivations, -j 2, sandbox on, best of {ROUNDS} interleaved rounds"
    );
    println!(
        "hermetic {:>7.2} s ({:.1} ms each)   nix 2.8 {:>7.2} s ({:.1} ms each)   nix/hermetic = {:.2}",
        ours.as_secs_f64(),
        ours.as_secs_f64() * 1e3 / COUNT as f64,
        theirs.as_secs_f64(),
        theirs.as_secs_f64() * 1e3 / COUNT as f64,
        theirs.as_secs_f64() / ours.as_secs_f64()
    );
}
