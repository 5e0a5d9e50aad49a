//! Benchmark (not a test): a chain of 20 derivations, each ~300 ms of
//! work, built here with `-j 1` and built on two machines reached over
//! real SSH on loopback (`ssh-ng://`, both hermetic daemons, `max-jobs =
//! 0` here), hermetic dispatching against Nix 2.8 dispatching, each into
//! a fresh store, side by side in one run (interleaved rounds, the best
//! of each). Prints the times, the ratios and each dispatcher's cost per
//! remote build (copy in, build, copy out: the remote run's time less the
//! local one's, per derivation); decides nothing. Run with `scripts/bench`
//! as root.

use std::process::Command;
use std::time::Duration;

use hermetic_tests::sshd::Sshd;
use hermetic_tests::{TempDir, workspace_binary};

const CHAIN: usize = 20;
const ROUNDS: usize = 2;

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("remote_builds: run as root");
        return;
    }
    if Command::new("nix-store").arg("--version").output().is_err() {
        eprintln!(
            "remote_builds: no nix-store to compare with (scripts/setup-test-host installs nix-bin)"
        );
        return;
    }
    let Some(sshd) = Sshd::start_or_skip("remote_builds") else {
        return;
    };
    let hermetic = workspace_binary("hermetic");
    let work = TempDir::new("bench-remote");
    let dir = &work.path;
    let shell = hermetic_host::static_shell().expect("a static shell (busybox-static)");
    // Builds here and on the machines: hermetic with auto-allocated ids,
    // Nix as root in its sandbox (no build user shared between them).
    let hermetic_conf = format!(
        "sandbox = true\nextra-sandbox-paths = /bin/sh={}\ntrusted-users = root\n\
         experimental-features = auto-allocate-uids cgroups\nauto-allocate-uids = true\nuse-cgroups = true\nsubstituters =\n",
        shell.display()
    );
    let nix_conf = format!(
        "sandbox = true\nsandbox-fallback = false\nbuild-users-group =\nsubstituters =\n\
         extra-sandbox-paths = /bin/sh={}\n",
        shell.display()
    );
    // Two machines with fresh stores of their own for each run (`tag`):
    // their `builders` line.
    let machines = |tag: &str| -> String {
        let mut lines = Vec::new();
        for name in ["machine-a", "machine-b"] {
            let conf = dir.join(format!("{name}-conf"));
            std::fs::create_dir_all(&conf).unwrap();
            std::fs::write(conf.join("nix.conf"), &hermetic_conf).unwrap();
            let program = dir.join(format!("{tag}-{name}-program"));
            std::fs::write(
                &program,
                format!(
                    "#!/bin/sh\nexport NIX_CONF_DIR={}\nexec {} --store {} daemon \"$@\"\n",
                    conf.display(),
                    hermetic.display(),
                    dir.join(format!("{tag}-{name}")).display()
                ),
            )
            .unwrap();
            hermetic_tests::set_mode(&program, 0o755);
            lines.push(format!(
                "ssh-ng://root@127.0.0.1?remote-program={} x86_64-linux {} 1",
                program.display(),
                sshd.client_key().display()
            ));
        }
        lines.join(" ; ")
    };
    let expr = dir.join("chain.nix");
    std::fs::write(
        &expr,
        format!(
            r#"let
  step = n: prev: derivation {{
    name = "step-${{toString n}}"; system = "x86_64-linux"; builder = "/bin/sh";
    args = [ "-c" "sleep 0.3; echo ${{toString n}} $(cat ${{if prev == null then "/dev/null" else prev}}) > $out" ];
  }};
  go = n: if n == 0 then step 0 null else step n (go (n - 1));
in go {}"#,
            CHAIN - 1
        ),
    )
    .unwrap();
    // Each configuration: its settings; remote ones get their machines.
    let configs = [
        ("hermetic-local", format!("{hermetic_conf}max-jobs = 1\n")),
        ("nix-local", format!("{nix_conf}max-jobs = 1\n")),
        ("hermetic-remote", format!("{hermetic_conf}max-jobs = 0\n")),
        ("nix-remote", format!("{nix_conf}max-jobs = 0\n")),
    ];
    let run = |label: &str, settings: &str, round: usize| -> Duration {
        let tag = format!("{label}-{round}");
        let root = dir.join(&tag);
        let conf = dir.join(format!("{tag}-conf"));
        std::fs::create_dir_all(&conf).unwrap();
        let builders = if label.ends_with("remote") {
            format!("builders = {}\n", machines(&tag))
        } else {
            "builders =\n".to_owned()
        };
        std::fs::write(conf.join("nix.conf"), format!("{settings}{builders}")).unwrap();
        let conf = conf.as_path();
        let env = |command: &mut Command| {
            command
                .env("NIX_CONF_DIR", conf)
                .env("NIX_SSHOPTS", sshd.ssh_opts())
                .env_remove("NIX_REMOTE");
        };
        let mut instantiate = Command::new("nix-instantiate");
        instantiate.arg("--store").arg(&root).arg(&expr);
        env(&mut instantiate);
        let (_, out) = hermetic_tests::timed_success(&mut instantiate);
        let drv = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let _ = Command::new("sync").status();
        let mut build = if label.starts_with("nix") {
            let mut c = Command::new("nix-store");
            c.arg("--store").arg(&root).args(["--realise", &drv]);
            c
        } else {
            let mut c = Command::new(&hermetic);
            c.arg("--store").arg(&root).args(["build", &drv]);
            c
        };
        env(&mut build);
        hermetic_tests::timed_success(&mut build).0
    };
    let mut best = [Duration::MAX; 4];
    for round in 0..ROUNDS {
        // Alternate the order.
        let order: Vec<usize> = if round % 2 == 0 {
            vec![0, 1, 2, 3]
        } else {
            vec![3, 2, 1, 0]
        };
        for index in order {
            let (label, settings) = &configs[index];
            best[index] = best[index].min(run(label, settings, round));
        }
    }
    let secs = |d: Duration| d.as_secs_f64();
    let [hermetic_local, nix_local, hermetic_remote, nix_remote] = best;
    println!(
        "remote_builds: a chain of {CHAIN} derivations (~300 ms each), best of {ROUNDS} interleaved rounds"
    );
    println!(
        "here, -j 1:          hermetic {:>6.2} s   nix 2.8 {:>6.2} s   nix/hermetic = {:.2}",
        secs(hermetic_local),
        secs(nix_local),
        secs(nix_local) / secs(hermetic_local)
    );
    println!(
        "on two machines:     hermetic {:>6.2} s   nix 2.8 {:>6.2} s   nix/hermetic = {:.2}",
        secs(hermetic_remote),
        secs(nix_remote),
        secs(nix_remote) / secs(hermetic_remote)
    );
    let per_build =
        |remote: Duration, local: Duration| (secs(remote) - secs(local)) * 1e3 / CHAIN as f64;
    let (ours, theirs) = (
        per_build(hermetic_remote, hermetic_local),
        per_build(nix_remote, nix_local),
    );
    println!(
        "cost of a remote build (copy in, build, copy out, less the local build): \
         hermetic {ours:.1} ms   nix 2.8 {theirs:.1} ms   nix/hermetic = {:.2}",
        theirs / ours
    );
}
