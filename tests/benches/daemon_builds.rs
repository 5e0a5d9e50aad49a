//! Benchmark (not a test): 300 trivial builds through a daemon with the
//! stock Nix 2.8 client (`nix-store --realise` over a Unix socket), against
//! hermetic's daemon and Debian's `nix-daemon` 2.8, each on a fresh store
//! of its own, side by side in one run. Prints times and the ratio;
//! decides nothing. Run with `scripts/bench` as root.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hermetic_tests::{TempDir, workspace_binary};

const COUNT: usize = 300;

fn wait_for(socket: &Path) {
    let started = Instant::now();
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no daemon at {}",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("daemon_builds: run as root (the daemons build as the nixbld users)");
        return;
    }
    if Command::new("nix-daemon")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "daemon_builds: no nix-daemon to compare with (scripts/setup-test-host installs nix-bin)"
        );
        return;
    }
    let hermetic = workspace_binary("hermetic");
    let work = TempDir::new("bench-daemon");
    let shell = hermetic_host::static_shell().expect("a static shell (busybox-static)");
    let daemon_conf = work.path.join("daemon-conf");
    std::fs::create_dir(&daemon_conf).unwrap();
    std::fs::write(
        daemon_conf.join("nix.conf"),
        format!(
            "sandbox = true\nsandbox-fallback = false\nbuild-users-group = nixbld\nmax-jobs = 2\n\
             extra-sandbox-paths = /bin/sh={}\nsubstituters =\n",
            shell.display()
        ),
    )
    .unwrap();
    let client_conf = work.path.join("client-conf");
    std::fs::create_dir(&client_conf).unwrap();
    std::fs::write(
        client_conf.join("nix.conf"),
        "substituters =\nmax-jobs = 2\n",
    )
    .unwrap();
    let expr = work.path.join("many.nix");
    std::fs::write(
        &expr,
        format!(
            "builtins.genList (i: derivation {{ name = \"through-daemon-${{toString i}}\"; system = \"x86_64-linux\"; \
             builder = \"/bin/sh\"; args = [ \"-c\" \"echo ${{toString i}} > $out\" ]; }}) {COUNT}\n"
        ),
    )
    .unwrap();
    let client = |url: &str, args: &[&str]| -> (Duration, String) {
        let started = Instant::now();
        let out = Command::new(args[0])
            .args(["--store", url])
            .args(&args[1..])
            .env("NIX_CONF_DIR", &client_conf)
            .env_remove("NIX_REMOTE")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (started.elapsed(), String::from_utf8(out.stdout).unwrap())
    };
    let run = |label: &str| -> Duration {
        let root = work.path.join(label);
        let socket = work.path.join(format!("{label}.socket"));
        let daemon = if label == "hermetic" {
            Command::new(&hermetic)
                .arg("--store")
                .arg(&root)
                .args(["daemon", "--socket"])
                .arg(&socket)
                .env("NIX_CONF_DIR", &daemon_conf)
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        } else {
            Command::new("nix-daemon")
                .args(["--option", "store", root.to_str().unwrap()])
                .env("NIX_CONF_DIR", &daemon_conf)
                .env("NIX_DAEMON_SOCKET_PATH", &socket)
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        };
        let _daemon = Killed(daemon);
        wait_for(&socket);
        let url = format!("unix://{}?root={}", socket.display(), root.display());
        let (_, drvs) = client(&url, &["nix-instantiate", expr.to_str().unwrap()]);
        let drvs: Vec<&str> = drvs.lines().collect();
        let _ = Command::new("sync").status();
        let mut args = vec!["nix-store", "--realise"];
        args.extend(drvs.iter().copied());
        let (elapsed, outputs) = client(&url, &args);
        assert_eq!(
            outputs.lines().count(),
            COUNT,
            "{label} built every derivation"
        );
        elapsed
    };
    let ours = run("hermetic");
    let theirs = run("nix");
    println!(
        "daemon_builds: {COUNT} trivial derivations through a daemon, stock Nix 2.8 client, max-jobs 2"
    );
    println!(
        "hermetic daemon {:>7.2} s   nix-daemon 2.8 {:>7.2} s   nix/hermetic = {:.2}",
        ours.as_secs_f64(),
        theirs.as_secs_f64(),
        theirs.as_secs_f64() / ours.as_secs_f64()
    );
}
