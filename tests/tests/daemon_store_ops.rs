//! The store operations a stock Nix client sends through the daemon beyond
//! adding and building, each driven by Debian's Nix 2.8 as a user types
//! it: every valid path, valid derivers, roots, verification, signing,
//! optimising, build logs; and the handshake of today's protocol (1.38)
//! and Lix's (1.35), which no client on this host speaks, by hand.

use std::os::unix::fs::MetadataExt;

use hermetic_tests::daemon::{Daemon, RawClient, output_text as text};
use hermetic_tests::nix_peer::NixPeer;
use hermetic_tests::{TEST_USER, root_or_skip, test_user_or_skip};

fn client() -> Option<NixPeer> {
    NixPeer::or_skip("daemon_store_ops", "substituters =\n")
}

/// `nix ARGS…` (the new command line, an experimental feature in 2.8);
/// its stdout.
fn nix_command(nix: &NixPeer, args: &[&str]) -> String {
    let mut all = vec!["--extra-experimental-features", "nix-command"];
    all.extend_from_slice(args);
    nix.run("nix", &all)
}

/// A signing key `test-key-1` made by Nix in `dir`; its secret half.
fn signing_key(nix: &NixPeer, dir: &std::path::Path) -> std::path::PathBuf {
    let secret = dir.join("secret-key");
    let out = nix
        .command("nix-store")
        .arg("--generate-binary-cache-key")
        .arg("test-key-1")
        .arg(&secret)
        .arg(dir.join("public-key"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    secret
}

/// `nix store sign` of `path` with the key `secret`, as `user`.
fn sign_as(
    nix: &NixPeer,
    user: &str,
    url: &str,
    secret: &std::path::Path,
    path: &str,
) -> std::process::Output {
    let secret = secret.to_str().unwrap();
    hermetic_tests::daemon::as_user(
        nix,
        user,
        "nix",
        &[
            "--extra-experimental-features",
            "nix-command",
            "store",
            "sign",
            "--store",
            url,
            "--key-file",
            secret,
            path,
        ],
    )
}

/// A derivation that says something unique and makes a directory with two
/// identical files (for optimising) and one other.
fn logged_expr(marker: &str) -> String {
    format!(
        r#"derivation {{ name = "logged"; system = "x86_64-linux"; builder = "/bin/sh";
             args = ["-c" "echo {marker}; mkdir $out; echo same > $out/one; echo same > $out/two; echo other > $out/three"]; }}"#
    )
}

#[test]
fn a_stock_client_queries_verifies_signs_and_reads_logs_through_the_daemon() {
    if !root_or_skip("a_stock_client_queries_verifies_signs_and_reads_logs_through_the_daemon") {
        return;
    }
    let Some(nix) = client() else { return };
    let daemon = Daemon::start("daemon-store-ops", "");
    let url = daemon.url();
    let file = daemon.write_expr("logged", &logged_expr("the-builder-said-this"));
    let link = daemon.dir.path.join("result");
    let out = nix
        .command("nix-build")
        .args(["--store", &url, file.to_str().unwrap(), "-o"])
        .arg(&link)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let built = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let drv = nix
        .run("nix-store", &["--store", &url, "-q", "--deriver", &built])
        .trim()
        .to_owned();

    // QueryAllValidPaths.
    let all = nix_command(&nix, &["path-info", "--store", &url, "--all"]);
    assert!(all.lines().any(|l| l == built), "{all}");
    assert!(all.lines().any(|l| l == drv), "{all}");
    // QueryValidDerivers (Nix 2.8 has no command that sends it alone;
    // today's `nix-store -q --valid-derivers` does): by hand.
    let mut raw = RawClient::connect(&daemon);
    raw.u64(33);
    raw.string(&built);
    raw.work().unwrap();
    assert_eq!(raw.read_u64(), 1);
    assert_eq!(raw.read_string(), drv);
    // FindRoots: nix-build's `result` is an indirect root (AddIndirectRoot).
    let roots = nix.run("nix-store", &["--store", &url, "--gc", "--print-roots"]);
    assert!(
        roots.contains(&format!("{} -> {built}", link.display())),
        "{roots}"
    );
    // The build's log, where Nix keeps it, read by Nix's own client.
    let log = nix.run("nix-store", &["--store", &url, "--read-log", &built]);
    assert!(log.contains("the-builder-said-this"), "{log}");
    let hash_part = &drv.rsplit('/').next().unwrap()[..2];
    let log_file = daemon
        .root()
        .join("nix/var/log/nix/drvs")
        .join(hash_part)
        .join(format!("{}.bz2", &drv.rsplit('/').next().unwrap()[2..]));
    assert!(log_file.is_file(), "{}", log_file.display());

    // AddBuildLog (`nix store copy-log`'s operation), by hand: a log for
    // a derivation without one is kept where Nix reads it.
    let other_drv = nix
        .run(
            "nix-instantiate",
            &["--store", &url, &daemon.file(), "-A", "a"],
        )
        .trim()
        .to_owned();
    let mut raw = RawClient::connect(&daemon);
    raw.u64(45);
    raw.string(other_drv.rsplit('/').next().unwrap());
    raw.frames(b"a log sent by a client\n");
    raw.work().unwrap();
    assert_eq!(raw.read_u64(), 1);
    let log = nix.run("nix-store", &["--store", &url, "--read-log", &other_drv]);
    assert_eq!(log, "a log sent by a client\n");

    // VerifyStore, with the contents: all is well, then a file changed
    // behind the store's back is found.
    let verify = nix
        .command("nix-store")
        .args(["--store", &url, "--verify", "--check-contents"])
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", text(&verify));
    // AddSignatures, by a trusted client (root).
    let secret = signing_key(&nix, &daemon.dir.path);
    let out = sign_as(&nix, "root", &url, &secret, &built);
    assert!(out.status.success(), "{}", text(&out));
    let info = nix_command(&nix, &["path-info", "--store", &url, "--sigs", &built]);
    assert!(info.contains("test-key-1:"), "{info}");

    // OptimiseStore: the two identical files become one inode.
    let real = daemon.real(&built);
    let inode = |name: &str| std::fs::metadata(real.join(name)).unwrap().ino();
    assert_ne!(inode("one"), inode("two"));
    let out = nix
        .command("nix-store")
        .args(["--store", &url, "--optimise"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(inode("one"), inode("two"));
    assert_ne!(inode("one"), inode("three"));
    // The store is still canonical and whole, as Nix itself sees it.
    let verify = nix.verify_store(daemon.root());
    assert!(verify.status.success(), "{}", text(&verify));

    // A file changed behind the store's back is reported.
    let three = real.join("three");
    std::fs::set_permissions(&three, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::write(&three, "changed\n").unwrap();
    let verify = nix
        .command("nix-store")
        .args(["--store", &url, "--verify", "--check-contents"])
        .output()
        .unwrap();
    assert!(!verify.status.success(), "{}", text(&verify));
    assert!(
        text(&verify).contains(&format!("path '{built}' was modified!")),
        "{}",
        text(&verify)
    );
}

#[test]
fn untrusted_clients_may_not_sign_repair_or_add_logs() {
    if !root_or_skip("untrusted_clients_may_not_sign_repair_or_add_logs")
        || !test_user_or_skip("untrusted_clients_may_not_sign_repair_or_add_logs")
    {
        return;
    }
    let Some(nix) = client() else { return };
    let daemon = Daemon::start("daemon-untrusted-ops", "");
    let file = daemon.write_expr("logged", &logged_expr("untrusted"));
    let out = daemon.nix_build_as(
        &nix,
        TEST_USER,
        "logged",
        &std::fs::read_to_string(&file).unwrap(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let built = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let as_test_user = |program: &str, args: &[&str]| {
        hermetic_tests::daemon::as_user(&nix, TEST_USER, program, args)
    };
    let url = daemon.url();
    let secret = signing_key(&nix, &daemon.dir.path);
    hermetic_tests::set_mode(&secret, 0o644);
    let out = sign_as(&nix, TEST_USER, &url, &secret, &built);
    assert!(
        text(&out).contains("you are not privileged to add signatures"),
        "{}",
        text(&out)
    );
    let out = as_test_user("nix-store", &["--store", &url, "--verify", "--repair"]);
    assert!(
        text(&out).contains("you are not privileged to repair paths"),
        "{}",
        text(&out)
    );
}

#[test]
fn todays_and_lix_clients_handshakes_are_answered_with_their_fields() {
    if !root_or_skip("todays_and_lix_clients_handshakes_are_answered_with_their_fields") {
        return;
    }
    let daemon = Daemon::start("daemon-handshakes", "");
    // Nix 2.34 (1.38): features exchanged, version, trusted flag (root: 1).
    let mut client = RawClient::connect_as(&daemon, (1 << 8) | 38, &["a-feature-nobody-has"]);
    assert_eq!(client.daemon_version, (1 << 8) | 38);
    assert_eq!(client.daemon_features, Vec::<String>::new());
    assert!(client.server_version.starts_with("2.8.0-hermetic-"));
    assert_eq!(client.trusted, Some(1));
    // An operation works on the negotiated version.
    client.u64(23); // QueryAllValidPaths
    client.work().unwrap();
    assert_eq!(client.read_u64(), 0);
    // Lix (1.35): no features, the trusted flag.
    let lix = RawClient::connect_as(&daemon, (1 << 8) | 35, &[]);
    assert_eq!(lix.trusted, Some(1));
    // A client newer than the daemon gets the daemon's version.
    let newer = RawClient::connect_as(&daemon, (1 << 8) | 40, &[]);
    assert_eq!(newer.trusted, Some(1));
}

#[test]
fn nix_copy_sends_several_paths_in_one_stream_and_all_arrive() {
    if !root_or_skip("nix_copy_sends_several_paths_in_one_stream_and_all_arrive") {
        return;
    }
    let Some(nix) = client() else { return };
    let daemon = Daemon::start("daemon-copy-many", "");
    // Three content-addressed paths in a store of the client's own.
    let local = daemon.dir.path.join("local");
    let mut paths = Vec::new();
    for n in 0..3 {
        let file = daemon.dir.path.join(format!("file-{n}"));
        std::fs::write(&file, format!("file number {n}\n")).unwrap();
        let added = nix.run(
            "nix-store",
            &[
                "--store",
                local.to_str().unwrap(),
                "--add",
                file.to_str().unwrap(),
            ],
        );
        paths.push(added.trim().to_owned());
    }
    let out = nix
        .command("nix")
        .args([
            "--extra-experimental-features",
            "nix-command",
            "copy",
            "--from",
        ])
        .arg(&local)
        .args(["--to", &daemon.url()])
        .args(&paths)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    for (n, path) in paths.iter().enumerate() {
        assert_eq!(
            std::fs::read_to_string(daemon.real(path)).unwrap(),
            format!("file number {n}\n")
        );
    }
}

#[test]
fn nix_env_makes_a_profile_with_builtin_buildenv_in_the_sandbox() {
    if !root_or_skip("nix_env_makes_a_profile_with_builtin_buildenv_in_the_sandbox") {
        return;
    }
    let Some(nix) = client() else { return };
    let daemon = Daemon::start("daemon-buildenv", "");
    let file = daemon.write_expr(
        "pkgs",
        r#"let mk = name: file: derivation { inherit name; system = builtins.currentSystem; builder = "/bin/sh";
              args = ["-c" "mkdir -p $out/bin $out/share; echo ${name} > $out/bin/${file}; echo ${name} > $out/share/${name}"]; };
           in { one = mk "one" "tool"; two = mk "two" "other"; }"#,
    );
    let profile = daemon.dir.path.join("profile");
    // Both at once: a client of a store under another root cannot read
    // the previous generation's manifest at its logical path.
    let out = nix
        .command("nix-env")
        .args(["--store", &daemon.url(), "-p"])
        .arg(&profile)
        .args(["-f", file.to_str().unwrap(), "-iA", "one", "two"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // The profile is a user environment built by builtin:buildenv: both
    // packages' files linked in, directories merged, the manifest linked.
    // profile -> profile-2-link -> /nix/store/…-user-environment
    let generation = daemon.dir.path.join(std::fs::read_link(&profile).unwrap());
    let env = std::fs::read_link(&generation).unwrap();
    let env = daemon.real(env.to_str().unwrap());
    for (link, package) in [
        ("bin/tool", "-one/bin/tool"),
        ("bin/other", "-two/bin/other"),
    ] {
        let target = std::fs::read_link(env.join(link)).unwrap();
        assert!(
            target.display().to_string().ends_with(package),
            "{}",
            target.display()
        );
    }
    assert!(
        std::fs::symlink_metadata(env.join("manifest.nix"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}
