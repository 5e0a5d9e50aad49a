//! The daemon with a real client: Debian's Nix 2.8 evaluates and builds
//! through `hermetic daemon`; the trust model applies to a real ordinary
//! user; malformed protocol input is refused while others are served; a
//! daemon killed mid-build leaves nothing behind once restarted.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hermetic_tests::daemon::{Daemon, RawClient, as_user, output_text as text, running};
use hermetic_tests::nix_peer::NixPeer;
use hermetic_tests::{TEST_USER, TempDir, hermetic, root_or_skip, test_user_or_skip};

fn client_conf() -> Option<NixPeer> {
    NixPeer::or_skip("daemon", "substituters =\n")
}

#[test]
fn a_stock_nix_client_evaluates_and_builds_through_the_daemon() {
    if !root_or_skip("a_stock_nix_client_evaluates_and_builds_through_the_daemon") {
        return;
    }
    let Some(nix) = client_conf() else { return };
    let daemon = Daemon::start("daemon-client", "");
    let url = daemon.url();
    // nix-instantiate adds a source (./a.nix) and derivations through it.
    let drv = nix.run(
        "nix-instantiate",
        &["--store", &url, &daemon.file(), "-A", "src"],
    );
    let drv = drv.trim();
    assert!(drv.ends_with("-src.drv"), "{drv}");
    let out = nix.run("nix-store", &["--store", &url, "--realise", drv]);
    assert!(out.trim().ends_with("-src"), "{out}");
    let built = daemon.root().join(out.trim().trim_start_matches('/'));
    assert_eq!(
        std::fs::read_to_string(built).unwrap(),
        std::fs::read_to_string(daemon.file()).unwrap()
    );
    // nix-build: evaluation and build in one, with the log streamed back.
    let out = nix
        .command("nix-build")
        .args([
            "--store",
            &url,
            &daemon.file(),
            "-A",
            "multi",
            "--no-out-link",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("-multi"),
        "{}",
        text(&out)
    );
    // Queries: the outputs of a derivation, a path's hash.
    let outputs = nix.run("nix-store", &["--store", &url, "-q", "--outputs", drv]);
    assert!(outputs.trim().ends_with("-src"), "{outputs}");
    let hash = nix.run(
        "nix-store",
        &["--store", &url, "-q", "--hash", outputs.trim()],
    );
    assert!(hash.starts_with("sha256:"), "{hash}");
    // The store the daemon wrote is valid to Nix itself.
    let verify = nix.verify_store(daemon.root());
    assert!(verify.status.success(), "{}", text(&verify));
}

#[test]
fn an_untrusted_user_gets_only_the_substituters_the_daemon_trusts() {
    if !test_user_or_skip("an_untrusted_user_gets_only_the_substituters_the_daemon_trusts") {
        return;
    }
    let Some(nix) = client_conf() else { return };
    let daemon = Daemon::start(
        "daemon-substituters",
        "trusted-substituters = file:///srv/trusted-cache",
    );
    let url = daemon.url();
    let ask = |substituters: &str| {
        let out = as_user(
            &nix,
            TEST_USER,
            "nix-store",
            &[
                "--store",
                &url,
                "--option",
                "substituters",
                substituters,
                "--add",
                &daemon.file(),
            ],
        );
        text(&out)
    };
    let said = ask("file:///srv/untrusted-cache file:///srv/trusted-cache");
    assert!(
        said.contains(
            "ignoring untrusted substituter 'file:///srv/untrusted-cache', you are not a trusted user."
        ),
        "{said}"
    );
    assert!(!said.contains("'file:///srv/trusted-cache'"), "{said}");
    assert!(!said.contains("restricted setting"), "{said}");
}

#[test]
fn an_untrusted_user_cannot_turn_the_sandbox_off() {
    if !test_user_or_skip("an_untrusted_user_cannot_turn_the_sandbox_off") {
        return;
    }
    let Some(nix) = client_conf() else { return };
    let daemon = Daemon::start("daemon-untrusted", "");
    let url = daemon.url();
    let probe = daemon.dir.path.join("probe.nix");
    std::fs::write(
        &probe,
        "derivation { name = \"probe\"; system = \"x86_64-linux\"; builder = \"/bin/sh\"; \
         args = [ \"-c\" \"if [ -d /usr/bin ]; then echo host > $out; else echo sandbox > $out; fi\" ]; }",
    )
    .unwrap();
    hermetic_tests::set_mode(&probe, 0o644);
    let drv = nix.run(
        "nix-instantiate",
        &["--store", &url, probe.to_str().unwrap()],
    );
    let out = as_user(
        &nix,
        TEST_USER,
        "nix-store",
        &[
            "--store",
            &url,
            "--option",
            "sandbox",
            "false",
            "--realise",
            drv.trim(),
        ],
    );
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    let built = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let built = daemon.root().join(built.trim_start_matches('/'));
    assert_eq!(
        std::fs::read_to_string(&built).unwrap(),
        "sandbox\n",
        "{said}"
    );
    assert!(
        said.contains(
            "ignoring the client-specified setting 'sandbox', because it is a restricted setting and you are not a trusted user"
        ),
        "{said}"
    );
    // A hook a client sets is never taken, even from a trusted one.
    let drv = nix.run(
        "nix-instantiate",
        &["--store", &url, &daemon.file(), "-A", "paf"],
    );
    let out = nix
        .command("nix-store")
        .args([
            "--store",
            &url,
            "--option",
            "post-build-hook",
            "/bin/false",
            "--realise",
            drv.trim(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("ignoring the client-specified setting 'post-build-hook'"),
        "{}",
        text(&out)
    );
}

/// A trusted client of a root daemon cannot lift the daemon's rule on
/// root commands for itself: `allow-client-root-commands` is one of them,
/// so a hook the client sets after it is still not run. (Nix's clients
/// send no setting they do not know, so the options go raw.)
#[test]
fn a_trusted_client_cannot_allow_itself_root_commands() {
    if !root_or_skip("a_trusted_client_cannot_allow_itself_root_commands") {
        return;
    }
    let Some(nix) = client_conf() else { return };
    let daemon = Daemon::start("daemon-root-commands", "");
    let ran = daemon.dir.path.join("hook-ran");
    let hook = daemon.dir.path.join("hook.sh");
    std::fs::write(&hook, format!("#!/bin/sh\ntouch {}\n", ran.display())).unwrap();
    hermetic_tests::set_mode(&hook, 0o755);
    let drv = nix.run(
        "nix-instantiate",
        &["--store", &daemon.url(), &daemon.file(), "-A", "paf"],
    );
    let mut client = RawClient::connect(&daemon);
    client.u64(19); // SetOptions
    for n in [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0] {
        client.u64(n);
    }
    client.u64(2);
    for s in [
        "allow-client-root-commands",
        "true",
        "post-build-hook",
        hook.to_str().unwrap(),
    ] {
        client.string(s);
    }
    client.work().unwrap();
    client.u64(9); // BuildPaths
    client.strings(&[&format!("{}!out", drv.trim())]);
    client.u64(0);
    client.work().unwrap();
    assert_eq!(client.read_u64(), 1);
    assert!(
        !ran.exists(),
        "the client's hook ran as root: {:?}",
        client.said
    );
    assert!(
        client.said.iter().any(|line| line
            .contains("ignoring the client-specified setting 'allow-client-root-commands'")),
        "{:?}",
        client.said
    );
}

#[test]
fn users_outside_allowed_users_and_build_users_are_refused() {
    if !test_user_or_skip("users_outside_allowed_users_and_build_users_are_refused") {
        return;
    }
    let Some(nix) = client_conf() else { return };
    let daemon = Daemon::start("daemon-refused", "allowed-users = root");
    let out = as_user(
        &nix,
        TEST_USER,
        "nix-store",
        &[
            "--store",
            &daemon.url(),
            "-q",
            "--hash",
            "/nix/store/00000000000000000000000000000000-x",
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains(&format!(
            "user '{TEST_USER}' is not allowed to connect to the Nix daemon"
        )),
        "{}",
        text(&out)
    );
    // A build user (a member of build-users-group) is refused (Lix's text).
    let user = nix::unistd::User::from_name("nixbld1").unwrap().unwrap();
    let out = query_hash_as(
        &nix,
        &daemon,
        user.uid.as_raw(),
        user.gid.as_raw(),
        "--init-groups",
    );
    assert!(
        text(&out).contains(
            "the user 'nixbld1' is not allowed to connect to the Nix daemon as its group is 'nixbld', which is the group of users running the sandboxed builds."
        ),
        "{}",
        text(&out)
    );
}

/// Sends raw bytes and returns what the daemon answered before closing.
fn raw(daemon: &Daemon, bytes: &[u8]) -> Vec<u8> {
    let mut stream = UnixStream::connect(daemon.socket()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            panic!("the daemon kept a refused connection open")
        }
        _ => answer,
    }
}

fn u64s(values: &[u64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn malformed_protocol_input_is_refused_and_others_are_served() {
    if !root_or_skip("malformed_protocol_input_is_refused_and_others_are_served") {
        return;
    }
    let Some(nix) = client_conf() else { return };
    let daemon = Daemon::start("daemon-malformed", "");
    // Wrong magic: the daemon hangs up without a word.
    assert!(raw(&daemon, &u64s(&[0xdead_beef])).is_empty());
    // Truncated greeting.
    assert!(raw(&daemon, &[0x63, 0x78]).is_empty());
    let greeting = u64s(&[0x6e69_7863, (1 << 8) | 34, 0, 0]);
    // A huge string length: refused without allocating it.
    let mut huge = greeting.clone();
    huge.extend(u64s(&[1, u64::MAX]));
    let answer = String::from_utf8_lossy(&raw(&daemon, &huge)).into_owned();
    assert!(answer.contains("more than the"), "{answer}");
    // An unknown operation is named.
    let mut unknown = greeting.clone();
    unknown.extend(u64s(&[99]));
    let answer = String::from_utf8_lossy(&raw(&daemon, &unknown)).into_owned();
    assert!(
        answer.contains("hermetic does not implement the worker operation 'unknown' (99)"),
        "{answer}"
    );
    let mut export = greeting.clone();
    export.extend(u64s(&[16]));
    let answer = String::from_utf8_lossy(&raw(&daemon, &export)).into_owned();
    assert!(answer.contains("'ExportPath' (16)"), "{answer}");
    // CollectGarbage that would ignore liveness: refused, whoever asks.
    let mut gc = greeting.clone();
    gc.extend(u64s(&[20, 2, 0, 1, 0, 0, 0, 0]));
    let answer = String::from_utf8_lossy(&raw(&daemon, &gc)).into_owned();
    assert!(
        answer.contains("you are not allowed to ignore liveness"),
        "{answer}"
    );
    // Many such clients leave the daemon's memory where it was.
    let rss = |pid: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    let pid = daemon.child.as_ref().unwrap().id();
    let before = rss(pid);
    for _ in 0..200 {
        let mut text = greeting.clone();
        // AddTextToStore with a name 1 GiB long.
        text.extend(u64s(&[8, 1 << 30]));
        raw(&daemon, &text);
    }
    let after = rss(pid);
    assert!(
        after < before + 32 * 1024,
        "the daemon grew from {before} kB to {after} kB"
    );
    // A client that never reads: the daemon is not stuck on it.
    let mut stuck = UnixStream::connect(daemon.socket()).unwrap();
    stuck.write_all(&greeting).unwrap();
    // Others are still served.
    let drv = nix.run(
        "nix-instantiate",
        &["--store", &daemon.url(), &daemon.file(), "-A", "a"],
    );
    let out = nix.run(
        "nix-store",
        &["--store", &daemon.url(), "--realise", drv.trim()],
    );
    assert!(out.trim().ends_with("-a"), "{out}");
    drop(stuck);
}

#[test]
fn a_daemon_killed_mid_build_leaves_nothing_after_a_restart() {
    if !root_or_skip("a_daemon_killed_mid_build_leaves_nothing_after_a_restart") {
        return;
    }
    let Some(nix) = client_conf() else { return };
    let mut daemon = Daemon::start("daemon-killed", "");
    let marker = format!("killed-daemon-marker-{}", std::process::id());
    let expr = slow_derivation(&daemon, &marker);
    let url = daemon.url();
    let drv = nix.run(
        "nix-instantiate",
        &["--store", &url, expr.to_str().unwrap()],
    );
    let mut client = nix
        .command("nix-store")
        .args(["--store", &url, "--realise", drv.trim()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the builder runs.
    let started = Instant::now();
    let running = || running(&marker);
    while !running() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the build did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut child = daemon.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = client.wait();
    // The builder dies with its supervisor.
    let started = Instant::now();
    while running() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the builder outlived the daemon"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A restart cleans what the killed daemon left.
    daemon.spawn();
    let store = daemon.root().join("nix/store");
    for entry in std::fs::read_dir(&store).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            !hermetic_tests::is_hermetic_scratch(&name),
            "left in the store: {name}"
        );
    }
    let pending = daemon.root().join("nix/var/nix/hermetic/pending");
    assert_eq!(
        std::fs::read_dir(&pending).map(|d| d.count()).unwrap_or(0),
        0
    );
    let verify = Command::new(hermetic())
        .arg("--store")
        .arg(daemon.root())
        .args(["store", "verify", "--check-contents"])
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", text(&verify));
}

/// A slow derivation whose builder's command line holds `marker`.
fn slow_derivation(daemon: &Daemon, marker: &str) -> PathBuf {
    let expr = daemon.dir.path.join("slow.nix");
    std::fs::write(
        &expr,
        format!(
            "derivation {{ name = \"slow\"; system = \"x86_64-linux\"; builder = \"/bin/sh\"; \
             args = [ \"-c\" \"echo {marker}; sleep 60; echo done > $out\" ]; }}"
        ),
    )
    .unwrap();
    hermetic_tests::set_mode(&expr, 0o644);
    expr
}

#[test]
fn twenty_builds_from_four_users_at_once_never_share_a_build_user() {
    let test = "twenty_builds_from_four_users_at_once_never_share_a_build_user";
    if !test_user_or_skip(test) {
        return;
    }
    let users = ["root", TEST_USER, "hermetic-client2", "hermetic-client3"];
    if users
        .iter()
        .any(|u| nix::unistd::User::from_name(u).ok().flatten().is_none())
    {
        eprintln!(
            "skipped {test}: the client users are missing (scripts/setup-test-host creates them)"
        );
        return;
    }
    let Some(nix) = client_conf() else { return };
    let daemon = Daemon::start("daemon-many", "max-jobs = 8");
    // Each build records the host uid it ran as and when it ran.
    let expr = daemon.dir.path.join("many.nix");
    std::fs::write(
        &expr,
        "builtins.genList (i: derivation { name = \"many-${toString i}\"; system = \"x86_64-linux\"; \
         builder = \"/bin/sh\"; args = [ \"-c\" \"read a b < /proc/uptime; sleep 0.3; read c d < /proc/uptime; \
         read inside host count < /proc/self/uid_map; echo $host $a $c > $out\" ]; }) 20",
    )
    .unwrap();
    hermetic_tests::set_mode(&expr, 0o644);
    let drvs = nix.run(
        "nix-instantiate",
        &["--store", &daemon.url(), expr.to_str().unwrap()],
    );
    let drvs: Vec<String> = drvs.lines().map(str::to_owned).collect();
    assert_eq!(drvs.len(), 20);
    let url = daemon.url();
    let outputs: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = drvs
            .iter()
            .enumerate()
            .map(|(i, drv)| {
                let (nix, url, user) = (&nix, &url, users[i % users.len()]);
                scope.spawn(move || {
                    let out = as_user(nix, user, "nix-store", &["--store", url, "--realise", drv]);
                    assert!(out.status.success(), "{user}: {}", text(&out));
                    String::from_utf8_lossy(&out.stdout).trim().to_owned()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Parse (uid, start, end) and check that no two overlap on one uid.
    let mut runs: Vec<(u32, f64, f64)> = outputs
        .iter()
        .map(|out| {
            let text =
                std::fs::read_to_string(daemon.root().join(out.trim_start_matches('/'))).unwrap();
            let fields: Vec<&str> = text.split_whitespace().collect();
            (
                fields[0].parse().unwrap(),
                fields[1].parse().unwrap(),
                fields[2].parse().unwrap(),
            )
        })
        .collect();
    runs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    for pair in runs.windows(2) {
        let ((uid_a, _, end_a), (uid_b, start_b, _)) = (pair[0], pair[1]);
        assert!(
            uid_a != uid_b || end_a <= start_b,
            "two builds ran as uid {uid_a} at once: {runs:?}"
        );
    }
    let uids: std::collections::BTreeSet<u32> = runs.iter().map(|r| r.0).collect();
    assert!(uids.len() > 1, "the builds ran one after another: {runs:?}");
}

#[test]
fn a_client_that_hangs_up_cancels_its_build() {
    if !root_or_skip("a_client_that_hangs_up_cancels_its_build") {
        return;
    }
    let Some(nix) = client_conf() else { return };
    let daemon = Daemon::start("daemon-hangup", "");
    let marker = format!("hangup-marker-{}", std::process::id());
    let expr = slow_derivation(&daemon, &marker);
    let url = daemon.url();
    let drv = nix.run(
        "nix-instantiate",
        &["--store", &url, expr.to_str().unwrap()],
    );
    let mut client = nix
        .command("nix-store")
        .args(["--store", &url, "--realise", drv.trim()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let running = || running(&marker);
    let started = Instant::now();
    while !running() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the build did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    client.kill().unwrap();
    client.wait().unwrap();
    let hung_up = Instant::now();
    while running() {
        assert!(
            hung_up.elapsed() < Duration::from_secs(20),
            "the build outlived its client"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Nothing was registered and, once the daemon has cleaned up after the
    // cancelled build, nothing is left; and the daemon serves on.
    let store = daemon.root().join("nix/store");
    let leftovers = || -> Vec<String> {
        std::fs::read_dir(&store)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with("-slow") || hermetic_tests::is_hermetic_scratch(n))
            .collect()
    };
    let cancelled = Instant::now();
    while !leftovers().is_empty() {
        assert!(
            cancelled.elapsed() < Duration::from_secs(10),
            "left in the store: {:?}",
            leftovers()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let other = nix.run(
        "nix-instantiate",
        &["--store", &url, &daemon.file(), "-A", "a"],
    );
    let out = nix.run("nix-store", &["--store", &url, "--realise", other.trim()]);
    assert!(out.trim().ends_with("-a"), "{out}");
}

#[test]
fn an_untrusted_client_cannot_build_an_input_addressed_derivation_it_sent() {
    if !root_or_skip("an_untrusted_client_cannot_build_an_input_addressed_derivation_it_sent") {
        return;
    }
    // Nobody is trusted here, root included.
    let daemon = Daemon::start("daemon-inline", "trusted-users =");
    let mut client = RawClient::connect(&daemon);
    let ia_out = "/nix/store/00000000000000000000000000000000-inline";
    let refused = client.build_derivation(
        "/nix/store/11111111111111111111111111111111-inline.drv",
        ia_out,
        "",
        "",
        "echo > $out",
    );
    assert_eq!(
        refused,
        Err("you are not privileged to build input-addressed derivations".into())
    );
    // A fixed-output one is built: its output is checked by its content.
    let hash = hermetic_store::Hash::sha256(b"hi\n");
    let dir = hermetic_store::StoreDir::default();
    let out = dir
        .make_fixed_output_path(
            hermetic_store::IngestionMethod::Flat,
            &hash,
            "fetched",
            &Default::default(),
            false,
        )
        .unwrap();
    let status = client.build_derivation(
        "/nix/store/22222222222222222222222222222222-fetched.drv",
        &dir.print(&out),
        "sha256",
        &hash.to_hex(),
        "echo hi > $out",
    );
    assert_eq!(status, Ok(0), "built");
    let built = daemon.root().join("nix/store").join(out.base_name());
    assert_eq!(std::fs::read_to_string(built).unwrap(), "hi\n");
}

#[test]
fn copies_need_a_trusted_signature_unless_content_addressed() {
    if !root_or_skip("copies_need_a_trusted_signature_unless_content_addressed") {
        return;
    }
    let Some(nix) = NixPeer::or_skip(
        "copies_need_a_trusted_signature_unless_content_addressed",
        "substituters =\nexperimental-features = nix-command\nbuild-users-group = nixbld\n",
    ) else {
        return;
    };
    let mut daemon = Daemon::start("daemon-sigs", "");
    // A source store with an input-addressed path (built by hermetic) and a
    // content-addressed one (a.nix, added by nix-instantiate).
    let source = daemon.dir.path.join("source");
    let source_arg = source.to_str().unwrap();
    let drv = nix.run(
        "nix-instantiate",
        &["--store", source_arg, &daemon.file(), "-A", "a"],
    );
    let built = nix.run(
        hermetic().to_str().unwrap(),
        &["--store", source_arg, "build", drv.trim()],
    );
    let built = built.trim();
    let url = daemon.url();
    let copy = |path: &str| {
        nix.command("nix")
            .args(["copy", "--from", source_arg, "--to", &url, path])
            .output()
            .unwrap()
    };
    let out = copy(built);
    assert!(!out.status.success());
    assert!(
        text(&out).contains(&format!(
            "cannot add path '{built}' because it lacks a signature by a trusted key"
        )),
        "{}",
        text(&out)
    );
    // A source added by nix-store --add is content-addressed.
    let added = nix.run(
        "nix-store",
        &["--store", source_arg, "--add", &daemon.file()],
    );
    let out = copy(added.trim());
    assert!(
        out.status.success(),
        "a content-addressed path needs no signature: {}",
        text(&out)
    );
    // Signed by a key the daemon trusts: accepted, with the signature.
    let (secret, public) = (daemon.dir.path.join("sk"), daemon.dir.path.join("pk"));
    nix.run(
        "nix-store",
        &[
            "--generate-binary-cache-key",
            "hermetic-test-1",
            secret.to_str().unwrap(),
            public.to_str().unwrap(),
        ],
    );
    nix.run(
        "nix",
        &[
            "store",
            "sign",
            "--store",
            source_arg,
            "-k",
            secret.to_str().unwrap(),
            built,
        ],
    );
    daemon.restart_with(&format!(
        "trusted-public-keys = {}",
        std::fs::read_to_string(&public).unwrap().trim()
    ));
    let url = daemon.url();
    let out = nix
        .command("nix")
        .args(["copy", "--from", source_arg, "--to", &url, built])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let info = nix.run(
        hermetic().to_str().unwrap(),
        &[
            "--store",
            daemon.root().to_str().unwrap(),
            "store",
            "info",
            built,
        ],
    );
    assert!(info.contains("nar-hash"), "{info}");
    let verify = nix.verify_store(daemon.root());
    assert!(verify.status.success(), "{}", text(&verify));
}

#[test]
fn two_clients_asking_for_one_derivation_get_one_build_and_its_log() {
    if !root_or_skip("two_clients_asking_for_one_derivation_get_one_build_and_its_log") {
        return;
    }
    let Some(nix) = client_conf() else { return };
    let daemon = Daemon::start("daemon-shared", "");
    // Each build prints a fresh random id: one id in both logs means one build.
    let expr = daemon.dir.path.join("once.nix");
    std::fs::write(
        &expr,
        "derivation { name = \"once\"; system = \"x86_64-linux\"; builder = \"/bin/sh\"; \
         args = [ \"-c\" \"echo build-id $(cat /proc/sys/kernel/random/uuid); sleep 2; echo done > $out\" ]; }",
    )
    .unwrap();
    hermetic_tests::set_mode(&expr, 0o644);
    let url = daemon.url();
    let drv = nix.run(
        "nix-instantiate",
        &["--store", &url, expr.to_str().unwrap()],
    );
    let logs: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|i| {
                let (nix, url, drv) = (&nix, &url, drv.trim());
                scope.spawn(move || {
                    std::thread::sleep(Duration::from_millis(300 * i));
                    let out = nix
                        .command("nix-store")
                        .args(["--store", url, "--realise", drv])
                        .output()
                        .unwrap();
                    assert!(out.status.success(), "{}", text(&out));
                    text(&out)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ids: Vec<&str> = logs
        .iter()
        .map(|log| {
            log.lines()
                .find_map(|l| l.split("build-id ").nth(1))
                .unwrap_or_else(|| panic!("no build id in the log: {log}"))
        })
        .collect();
    assert_eq!(ids[0], ids[1], "two builds, or a log not shared: {logs:?}");
}

#[test]
fn sigterm_stops_accepting_ends_running_builds_and_hangs_up() {
    if !root_or_skip("sigterm_stops_accepting_ends_running_builds_and_hangs_up") {
        return;
    }
    let Some(nix) = client_conf() else { return };
    let mut daemon = Daemon::start("daemon-sigterm", "");
    let expr = daemon.dir.path.join("short.nix");
    std::fs::write(
        &expr,
        "derivation { name = \"short\"; system = \"x86_64-linux\"; builder = \"/bin/sh\"; \
         args = [ \"-c\" \"echo short-build-marker; sleep 60; echo done > $out\" ]; }",
    )
    .unwrap();
    hermetic_tests::set_mode(&expr, 0o644);
    let url = daemon.url();
    let drv = nix.run(
        "nix-instantiate",
        &["--store", &url, expr.to_str().unwrap()],
    );
    // An idle client, and one whose build is running.
    let idle = RawClient::connect(&daemon);
    let building = nix
        .command("nix-store")
        .args(["--store", &url, "--realise", drv.trim()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !running("short-build-marker") {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the build did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut child = daemon.child.take().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    // No new clients: the socket is gone.
    let started = Instant::now();
    while daemon.socket().exists() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the socket is still there"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The running build is ended and its client told; the idle client is
    // hung up on; nothing of the build is left; the daemon exits.
    let out = building.wait_with_output().unwrap();
    assert!(!out.status.success());
    let started = Instant::now();
    while running("short-build-marker") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the builder outlived the stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut idle = idle;
    let mut rest = Vec::new();
    idle.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(
        idle.stream.read_to_end(&mut rest).unwrap(),
        0,
        "the idle client was hung up on"
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    for entry in std::fs::read_dir(daemon.root().join("nix/store")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            !hermetic_tests::is_hermetic_scratch(&name) && !name.ends_with("-short"),
            "left: {name}"
        );
    }
    let pending = daemon.root().join("nix/var/nix/hermetic/pending");
    assert_eq!(
        std::fs::read_dir(&pending).map(|d| d.count()).unwrap_or(0),
        0
    );
}

#[test]
fn stdio_serves_one_client_on_stdin_and_stdout() {
    if !root_or_skip("stdio_serves_one_client_on_stdin_and_stdout") {
        return;
    }
    let dir = TempDir::new("daemon-stdio");
    std::fs::create_dir_all(dir.path.join("conf")).unwrap();
    std::fs::write(
        dir.path.join("conf/nix.conf"),
        "build-users-group = nixbld\n",
    )
    .unwrap();
    let mut daemon = Command::new(hermetic())
        .arg("--store")
        .arg(dir.path.join("root"))
        .args(["daemon", "--stdio"])
        .env("NIX_CONF_DIR", dir.path.join("conf"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = daemon.stdin.take().unwrap();
    let mut output = daemon.stdout.take().unwrap();
    let mut read_u64 = || {
        let mut buf = [0u8; 8];
        output.read_exact(&mut buf).unwrap();
        u64::from_le_bytes(buf)
    };
    input.write_all(&u64s(&[0x6e69_7863])).unwrap();
    input.flush().unwrap();
    assert_eq!(read_u64(), 0x6478_696f);
    assert_eq!(read_u64(), (1 << 8) | 38);
    // An old client (1.32, no version string), then IsValidPath.
    input.write_all(&u64s(&[(1 << 8) | 32, 0, 0])).unwrap();
    assert_eq!(read_u64(), 0x616c_7473, "STDERR_LAST after the greeting");
    let path = "/nix/store/00000000000000000000000000000000-none";
    input.write_all(&u64s(&[1, path.len() as u64])).unwrap();
    input.write_all(path.as_bytes()).unwrap();
    input
        .write_all(&[0u8; 8][..(8 - path.len() % 8) % 8])
        .unwrap();
    input.flush().unwrap();
    assert_eq!(read_u64(), 0x616c_7473);
    assert_eq!(read_u64(), 0, "not valid");
    drop(input);
    assert!(
        daemon.wait().unwrap().success(),
        "the daemon ends with its client"
    );
}

/// Admission looks at the groups the connecting process really holds, and
/// at its uid: a process of an ordinary user holding `nixbld` as a
/// supplementary group, and a build user's uid with other groups, are both
/// refused.
#[test]
fn a_process_holding_the_build_group_or_a_build_uid_is_refused() {
    let test = "a_process_holding_the_build_group_or_a_build_uid_is_refused";
    if !test_user_or_skip(test) {
        return;
    }
    let Some(nix) = client_conf() else { return };
    let daemon = Daemon::start("daemon-real-groups", "");
    let nixbld = nix::unistd::Group::from_name("nixbld").unwrap().unwrap();
    let ordinary = nix::unistd::User::from_name(TEST_USER).unwrap().unwrap();
    let builder = nix::unistd::User::from_name("nixbld1").unwrap().unwrap();
    let query = |uid: u32, gid: u32, groups: &str| {
        query_hash_as(&nix, &daemon, uid, gid, &format!("--groups={groups}"))
    };
    let refusal = |user: &str| {
        format!(
            "the user '{user}' is not allowed to connect to the Nix daemon as its group is 'nixbld', which is the group of users running the sandboxed builds."
        )
    };
    // The ordinary user with its own groups only: let in (the path is just
    // not valid).
    let out = query(
        ordinary.uid.as_raw(),
        ordinary.gid.as_raw(),
        &ordinary.gid.to_string(),
    );
    assert!(
        !text(&out).contains("not allowed to connect"),
        "{}",
        text(&out)
    );
    // The same user's process holding nixbld, which the group database does
    // not give that user.
    let groups = format!("{},{}", ordinary.gid, nixbld.gid);
    let out = query(ordinary.uid.as_raw(), ordinary.gid.as_raw(), &groups);
    assert!(text(&out).contains(&refusal(TEST_USER)), "{}", text(&out));
    // A build user's uid that shed the group.
    let out = query(
        builder.uid.as_raw(),
        ordinary.gid.as_raw(),
        &ordinary.gid.to_string(),
    );
    assert!(text(&out).contains(&refusal("nixbld1")), "{}", text(&out));
}

/// `nix-store -q --hash` of a path that does not exist, through the daemon,
/// as `uid`:`gid` with setpriv's `groups` option (`--init-groups`,
/// `--groups=…`): what the daemon says to that process.
fn query_hash_as(
    nix: &NixPeer,
    daemon: &Daemon,
    uid: u32,
    gid: u32,
    groups: &str,
) -> std::process::Output {
    Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg(groups)
        .arg("--reset-env")
        .arg("env")
        .arg("HOME=/var/empty")
        .arg(format!("NIX_CONF_DIR={}", nix.conf_dir().display()))
        .args([
            "nix-store",
            "--store",
            &daemon.url(),
            "-q",
            "--hash",
            "/nix/store/00000000000000000000000000000000-x",
        ])
        .current_dir("/")
        .output()
        .unwrap()
}

#[test]
fn a_failed_build_is_told_once() {
    if !root_or_skip("a_failed_build_is_told_once") {
        return;
    }
    let Some(nix) = client_conf() else { return };
    let daemon = Daemon::start("daemon-told-once", "");
    let file = daemon.write_expr(
        "fails",
        r#"let fail = n: derivation { name = "fail-${n}"; system = "x86_64-linux"; builder = "/bin/sh"; args = ["-c" "exit 3"]; };
           in { one = fail "one"; two = fail "two"; }"#,
    );
    let build = |args: &[&str]| {
        let out = nix
            .command("nix-build")
            .args([
                "--store",
                &daemon.url(),
                file.to_str().unwrap(),
                "--no-out-link",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success());
        text(&out)
    };
    // One derivation: its error, once (Nix throws the builder's error).
    let said = build(&["-A", "one"]);
    assert_eq!(said.matches("failed with exit code 3").count(), 1, "{said}");
    // Two: each told once, then Nix's summary.
    let said = build(&["--keep-going"]);
    for name in ["one", "two"] {
        assert_eq!(
            said.matches(&format!("-fail-{name}.drv' failed with exit code 3"))
                .count(),
            1,
            "{said}"
        );
    }
    assert!(said.contains("error: build of '"), "{said}");
}

#[test]
fn the_daemon_logs_connections_refusals_and_builds() {
    if !test_user_or_skip("the_daemon_logs_connections_refusals_and_builds") {
        return;
    }
    let Some(nix) = client_conf() else { return };
    let daemon = Daemon::start("daemon-log", "allowed-users = root");
    let built = nix
        .command("nix-build")
        .args([
            "--store",
            &daemon.url(),
            &daemon.file(),
            "-A",
            "a",
            "--no-out-link",
        ])
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", text(&built));
    let drv = nix.run(
        "nix-instantiate",
        &["--store", &daemon.url(), &daemon.file(), "-A", "a"],
    );
    let refused = as_user(
        &nix,
        TEST_USER,
        "nix-store",
        &["--store", &daemon.url(), "-q", "--hash", drv.trim()],
    );
    assert!(!refused.status.success());
    // The log is written as the client is served: wait for its last line.
    let started = Instant::now();
    while !daemon.log().contains("refused connection") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = daemon.log();
    // One line per connection (Nix's words), per build started and ended,
    // per refusal; no colour off a terminal.
    let line = |pattern: &str| log.lines().any(|l| l.contains(pattern));
    assert!(line("accepted connection from pid "), "{log}");
    assert!(line(", user root (trusted)"), "{log}");
    let printed = drv.trim();
    assert!(line(&format!("building '{printed}' for pid ")), "{log}");
    assert!(line(&format!("built '{printed}' for pid ")), "{log}");
    assert!(
        line(&format!(
            "user {TEST_USER}: user '{TEST_USER}' is not allowed to connect to the Nix daemon"
        )),
        "{log}"
    );
    assert!(!log.contains('\u{1b}'), "{log}");
}

#[test]
fn the_socket_a_service_manager_passes_is_served() {
    if !root_or_skip("the_socket_a_service_manager_passes_is_served")
        || !hermetic_tests::probes::host_tool_or_skip(
            "the_socket_a_service_manager_passes_is_served",
            "systemd-socket-activate",
        )
    {
        return;
    }
    let Some(nix) = client_conf() else { return };
    let dir = TempDir::new("daemon-activated");
    std::fs::create_dir_all(dir.path.join("conf")).unwrap();
    std::fs::write(
        dir.path.join("conf/nix.conf"),
        "sandbox = true\nbuild-users-group = nixbld\n",
    )
    .unwrap();
    let socket = dir.path.join("activated.sock");
    let own = dir.path.join("own.sock");
    let root = dir.path.join("root");
    // systemd's socket activation, as `hermetic-daemon.socket` would start
    // the daemon: the socket is the service manager's, passed as fd 3.
    let mut manager = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&socket)
        .arg(hermetic())
        .arg("--store")
        .arg(&root)
        .args(["daemon", "--socket"])
        .arg(&own)
        .env("NIX_CONF_DIR", dir.path.join("conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !socket.exists() {
        assert!(started.elapsed() < Duration::from_secs(20), "no socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    let file = dir.path.join("added");
    std::fs::write(&file, "through an activated socket\n").unwrap();
    let url = format!("unix://{}?root={}", socket.display(), root.display());
    let added = nix.run(
        "nix-store",
        &["--store", &url, "--add", file.to_str().unwrap()],
    );
    let real = root.join(added.trim().trim_start_matches('/'));
    assert_eq!(
        std::fs::read_to_string(&real).unwrap(),
        "through an activated socket\n"
    );
    // The daemon made no socket of its own.
    assert!(!own.exists());
    let _ = manager.kill();
    let out = manager.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("using the socket the service manager passed"),
        "{log}"
    );
}

#[test]
fn the_systemd_units_load_without_a_word_and_conflict_with_nix_daemons() {
    let test = "the_systemd_units_load_without_a_word_and_conflict_with_nix_daemons";
    if !hermetic_tests::probes::host_tool_or_skip(test, "systemd-analyze") {
        return;
    }
    let dir = TempDir::new("daemon-units");
    let units = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../daemon");
    let mut paths = Vec::new();
    for name in ["hermetic-daemon.socket", "hermetic-daemon.service"] {
        let text = std::fs::read_to_string(units.join(name)).unwrap();
        assert!(
            text.contains("Conflicts=nix-daemon.service nix-daemon.socket")
                || text.contains("Conflicts=nix-daemon.socket nix-daemon.service"),
            "{name}: {text}"
        );
        // `verify` checks that ExecStart's program exists: the one built.
        let text = text.replace("/usr/local/bin/hermetic", &hermetic().display().to_string());
        let path = dir.path.join(name);
        std::fs::write(&path, text).unwrap();
        paths.push(path);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "systemd-analyze said something"
    );
}
