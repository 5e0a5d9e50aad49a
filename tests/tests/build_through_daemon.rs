//! `hermetic build --store unix://SOCKET` (and `daemon`): the builds made by
//! a daemon, hermetic's and Nix 2.8's, as Nix's client asks for them
//! (issue 19, point 5): outputs printed, `-o` links the daemon's collector
//! respects, the log and the daemon's error on a failure.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use hermetic_tests::daemon::Daemon;
use hermetic_tests::nix_peer::NixPeer;
use hermetic_tests::{TempDir, hermetic, root_or_skip};

const EXPR: &str = r#"{
  ok = derivation {
    name = "two-outputs"; system = builtins.currentSystem; builder = "/bin/sh";
    outputs = [ "out" "dev" ];
    args = [ "-c" "echo made-out > $out; echo made-dev > $dev; echo a-log-line" ];
  };
  failing = derivation {
    name = "failing"; system = builtins.currentSystem; builder = "/bin/sh";
    args = [ "-c" "echo last-words; exit 3" ];
  };
}"#;

const AUTO_IDS: &str = "experimental-features = auto-allocate-uids cgroups\nauto-allocate-uids = true\nuse-cgroups = true\n";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The same checks against the daemon at `socket` serving the store
/// under `root`.
fn builds_through(nix: &NixPeer, label: &str, socket: &Path, root: &Path, work: &Path) {
    let url = format!("unix://{}?root={}", socket.display(), root.display());
    let expr = work.join(format!("{label}.nix"));
    std::fs::write(&expr, EXPR).unwrap();
    let instantiate = |attr: &str| {
        nix.run(
            "nix-instantiate",
            &["--store", &url, expr.to_str().unwrap(), "-A", attr],
        )
        .trim()
        .to_owned()
    };
    let (ok, failing) = (instantiate("ok"), instantiate("failing"));
    let cwd = TempDir::new("through-daemon-cwd");
    let build = |args: &[&str]| {
        Command::new(hermetic())
            .args(["build", "--store", &url])
            .args(args)
            .current_dir(&cwd.path)
            .env("NIX_CONF_DIR", nix.conf_dir())
            .output()
            .unwrap()
    };

    let out = build(&[&format!("{ok}^dev"), "-o", "result"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{label}: {stderr}");
    let dev = stdout.trim();
    assert!(dev.ends_with("-two-outputs-dev"), "{label}: {stdout}");
    assert!(stderr.contains("a-log-line"), "{label}: {stderr}");
    let real = |printed: &str| root.join(printed.trim_start_matches('/'));
    assert_eq!(std::fs::read_to_string(real(dev)).unwrap(), "made-dev\n");
    let link = cwd.path.join("result-dev");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        Path::new(dev),
        "{label}"
    );
    // The daemon registered the link as an indirect root.
    let auto = root.join("nix/var/nix/gcroots/auto");
    let registered = std::fs::read_dir(&auto)
        .unwrap()
        .flatten()
        .any(|e| std::fs::read_link(e.path()).is_ok_and(|to| to == link));
    assert!(
        registered,
        "{label}: no root in {} for {}",
        auto.display(),
        link.display()
    );

    // A failure: the daemon's error in Nix's words, the log, exit 1; with
    // -Q its last lines in the error instead.
    let out = build(&[&failing]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{label}: {stderr}");
    // The log streams as it comes (a line of its own).
    assert!(
        stderr.lines().any(|l| l == "last-words"),
        "{label}: {stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "error: builder for '{failing}' failed with exit code 3"
        )),
        "{label}: {stderr}"
    );
    // With -Q it does not; the error ends with its last lines instead.
    let out = build(&["-Q", &failing]);
    let (_, stderr) = text(&out);
    assert!(
        !stderr.lines().any(|l| l == "last-words"),
        "{label}: {stderr}"
    );
    assert!(stderr.contains("> last-words"), "{label}: {stderr}");

    // What is not a store path, and an output the derivation lacks.
    let out = build(&["./a-file.drv"]);
    assert!(
        text(&out)
            .1
            .contains("through a daemon, hermetic build takes store paths")
    );
    let out = build(&[&format!("{ok}^lib")]);
    assert!(
        text(&out).1.contains(&format!(
            "derivation '{ok}' does not have wanted outputs 'lib'"
        )),
        "{label}: {}",
        text(&out).1
    );
}

#[test]
fn hermetic_build_goes_through_hermetics_daemon_and_nixs() {
    if !root_or_skip("hermetic_build_goes_through_hermetics_daemon_and_nixs") {
        return;
    }
    let Some(nix) = NixPeer::or_skip("hermetic_build_goes_through_hermetics_daemon_and_nixs", "")
    else {
        return;
    };
    // Neither daemon builds as a nixbld user, so that neither meets
    // another test's builder: hermetic's takes auto-allocated ids, Nix
    // 2.8's (which knows no auto-allocate-uids) builds as root in its
    // sandbox.
    let ours = Daemon::start(
        "through-ours",
        &format!("extra-sandbox-paths = /bin/sh=/bin/busybox\n{AUTO_IDS}"),
    );
    let work = TempDir::new("through-daemon");
    builds_through(&nix, "hermetic", &ours.socket(), &ours.root(), &work.path);
    drop(ours);

    // Nix 2.8's daemon on a store of its own.
    let conf = work.path.join("nix-daemon-conf");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(
        conf.join("nix.conf"),
        "sandbox = true\nsandbox-fallback = false\nbuild-users-group =\n\
         extra-sandbox-paths = /bin/sh=/bin/busybox\nsubstituters =\n",
    )
    .unwrap();
    let root = work.path.join("nix-root");
    let socket = work.path.join("nix.socket");
    let _nix_daemon = Killed(
        Command::new("nix-daemon")
            .args(["--option", "store", root.to_str().unwrap()])
            .env("NIX_CONF_DIR", &conf)
            .env("NIX_DAEMON_SOCKET_PATH", &socket)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while !socket.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "nix-daemon made no socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    builds_through(&nix, "nix-daemon", &socket, &root, &work.path);
}
