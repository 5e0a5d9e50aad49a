//! Remote building over real SSH (issue 20): stock Nix 2.8 offloading a
//! chain of derivations to a machine whose login runs `hermetic daemon
//! --stdio` (`ssh-ng://`) or `hermetic store serve --write` (`ssh://`,
//! Nix's legacy serve protocol), through `remote-program`, the outputs
//! coming back equal to a local build's.

use std::path::Path;
use std::process::{Command, Output};

use hermetic_tests::nix_peer::NixPeer;
use hermetic_tests::sshd::Sshd;
use hermetic_tests::{TempDir, hermetic, root_or_skip};

/// `n` derivations, each reading the one before.
fn chain(n: usize) -> String {
    format!(
        r#"let
  step = n: prev: derivation {{
    name = "chain-${{toString n}}"; system = builtins.currentSystem; builder = "/bin/sh";
    args = [ "-c" "echo making-${{toString n}}; echo ${{toString n}} $(cat ${{if prev == null then "/dev/null" else prev}}) > $out" ];
  }};
  go = n: if n == 0 then step 0 null else step n (go (n - 1));
in go {}"#,
        n - 1
    )
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A remote machine's login program: `hermetic --store STORE COMMAND`
/// with the arguments Nix gives it, configured from `conf`.
fn remote_program(at: &Path, conf: &Path, hermetic: &Path, store: &Path, command: &str) {
    std::fs::write(
        at,
        format!(
            "#!/bin/sh\nexport NIX_CONF_DIR={}\nexec {} --store {} {command} \"$@\"\n",
            conf.display(),
            hermetic.display(),
            store.display()
        ),
    )
    .unwrap();
    hermetic_tests::set_mode(at, 0o755);
}

/// Nix 2.8 builds `expr` into a store under `dir/local` with only the
/// remote builder `machine` (a `builders` line; max-jobs 0), its
/// configuration in `dir/local-conf`.
fn nix_build_remotely(dir: &Path, sshd: &Sshd, machine: &str, expr: &str) -> Output {
    std::fs::create_dir_all(dir.join("local-conf")).unwrap();
    std::fs::write(
        dir.join("local-conf/nix.conf"),
        format!(
            "sandbox = true\nbuild-users-group =\nsubstituters =\nmax-jobs = 0\n\
             extra-sandbox-paths = /bin/sh=/bin/busybox\nbuilders = {machine}\n"
        ),
    )
    .unwrap();
    let file = dir.join("chain.nix");
    std::fs::write(&file, expr).unwrap();
    Command::new("nix-build")
        .args([
            "--store",
            dir.join("local").to_str().unwrap(),
            "--no-out-link",
        ])
        .arg(&file)
        .env("NIX_CONF_DIR", dir.join("local-conf"))
        .env("NIX_SSHOPTS", sshd.ssh_opts())
        .env_remove("NIX_REMOTE")
        .output()
        .unwrap()
}

#[test]
fn stock_nix_offloads_a_chain_to_hermetic_over_ssh_ng() {
    offload_a_chain(
        "stock_nix_offloads_a_chain_to_hermetic_over_ssh_ng",
        "ssh-ng",
    );
}

#[test]
fn stock_nix_offloads_a_chain_to_hermetic_over_ssh() {
    offload_a_chain("stock_nix_offloads_a_chain_to_hermetic_over_ssh", "ssh");
}

/// Stock Nix builds a chain of twenty with only a remote builder, a
/// hermetic machine reached over `scheme`.
fn offload_a_chain(test: &str, scheme: &str) {
    if !root_or_skip(test) {
        return;
    }
    let Some(nix) = NixPeer::or_skip(test, "") else {
        return;
    };
    let Some(sshd) = Sshd::start_or_skip(test) else {
        return;
    };
    let work = TempDir::new("remote-build");
    let path = |name: &str| work.path.join(name);

    // The remote machine: hermetic's store and configuration, reached by
    // the login's remote program. It builds as auto-allocated ids, so
    // that no nixbld user is shared with other tests.
    std::fs::create_dir_all(path("remote-conf")).unwrap();
    std::fs::write(
        path("remote-conf/nix.conf"),
        "sandbox = true\nextra-sandbox-paths = /bin/sh=/bin/busybox\ntrusted-users = root\n\
         experimental-features = auto-allocate-uids cgroups\nauto-allocate-uids = true\n\
         use-cgroups = true\n",
    )
    .unwrap();
    // What Nix runs there: `PROGRAM --stdio` (ssh-ng), `PROGRAM --serve
    // --write` (ssh).
    let command = if scheme == "ssh" {
        "store serve"
    } else {
        "daemon"
    };
    let program = path("remote-program");
    remote_program(
        &program,
        &path("remote-conf"),
        &hermetic(),
        &path("remote"),
        command,
    );
    let machine = format!(
        "{scheme}://root@127.0.0.1?remote-program={} x86_64-linux {} 2",
        program.display(),
        sshd.client_key().display()
    );
    let out = nix_build_remotely(&work.path, &sshd, &machine, &chain(20));
    let local = path("local");
    let expr = path("chain.nix");
    let said = stderr(&out);
    assert!(out.status.success(), "{said}");
    let last = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let real = |root: &Path, printed: &str| root.join(printed.trim_start_matches('/'));
    let expected: Vec<String> = (0..20).rev().map(|n| n.to_string()).collect();
    assert_eq!(
        std::fs::read_to_string(real(&local, &last)).unwrap().trim(),
        expected.join(" ")
    );
    // All twenty were built remotely; the remote daemon's own log lines
    // stayed out of the user's terminal, as nix-daemon --stdio's do.
    let remote_builds = said
        .lines()
        .filter(|l| {
            l.starts_with("building '") && l.contains(&format!("' on '{scheme}://root@127.0.0.1"))
        })
        .count();
    assert_eq!(remote_builds, 20, "{said}");
    // Each builder's log came back with its build.
    assert!(
        (0..20).all(|n| said.lines().any(|l| l.ends_with(&format!("making-{n}")))),
        "{said}"
    );
    assert!(!said.contains("accepted connection"), "{said}");
    // The outputs came back whole: Nix verifies its store, and the last
    // one's NAR hash is the remote store's and a local hermetic build's.
    let verified = nix.verify_store(&local);
    assert!(verified.status.success(), "{}", stderr(&verified));
    let remote = path("remote");
    let ours = path("ours");
    let drv = nix
        .run(
            "nix-instantiate",
            &["--store", ours.to_str().unwrap(), expr.to_str().unwrap()],
        )
        .trim()
        .to_owned();
    let built = Command::new(hermetic())
        .args(["--store", ours.to_str().unwrap(), "build", &drv])
        .env("NIX_CONF_DIR", path("remote-conf"))
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", stderr(&built));
    assert_eq!(String::from_utf8_lossy(&built.stdout).trim(), last);
    let hash = nix.nar_hash(&local, &last);
    assert_eq!(hash, nix.nar_hash(&remote, &last));
    assert_eq!(hash, nix.nar_hash(&ours, &last));
}

/// `hermetic store serve` spoken to directly: the greeting, `stdin` bytes
/// in, what it printed and how it ended.
fn serve(
    store: &Path,
    conf: &Path,
    args: &[&str],
    input: &[u8],
    user: Option<(u32, u32)>,
) -> Output {
    use std::io::Write;
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(hermetic());
    command
        .args(["--store", store.to_str().unwrap(), "store", "serve"])
        .args(args)
        .env("NIX_CONF_DIR", conf)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
    let mut child = command.spawn().unwrap();
    // It may end before reading all (a refusal): a closed pipe is fine.
    let _ = child.stdin.take().unwrap().write_all(input);
    child.wait_with_output().unwrap()
}

fn u64s(values: &[u64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The serve protocol's string: length, bytes, zeros to a multiple of 8.
fn text(s: &str) -> Vec<u8> {
    let mut bytes = u64s(&[s.len() as u64]);
    bytes.extend(s.as_bytes());
    bytes.resize(bytes.len().div_ceil(8) * 8, 0);
    bytes
}

/// Without `--write` the store is read-only to the caller (Nix's words);
/// a user the trust model does not allow is refused before the greeting;
/// reads work and answer in the protocol.
#[test]
fn store_serve_refuses_what_it_may_not_do() {
    let test = "store_serve_refuses_what_it_may_not_do";
    if !hermetic_tests::test_user_or_skip(test) {
        return;
    }
    let work = TempDir::new("serve-refusals");
    let conf = work.path.join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(conf.join("nix.conf"), "allowed-users = root\n").unwrap();
    let store = work.path.join("store");
    let greeting = u64s(&[0x390c_9deb, (2 << 8) | 7]);
    let said = |out: &Output| String::from_utf8_lossy(&out.stderr).into_owned();

    // A read: QueryValidPaths of a path that is not there: an empty set.
    let mut input = greeting.clone();
    input.extend(u64s(&[1, 0, 0, 1]));
    input.extend(text("/nix/store/00000000000000000000000000000000-absent"));
    let out = serve(&store, &conf, &[], &input, None);
    assert!(out.status.success(), "{}", said(&out));
    assert_eq!(out.stdout, u64s(&[0x5452_eecb, (2 << 8) | 7, 0]));

    // Adding and building need --write.
    for (command, refusal) in [
        (9, "error: importing paths is not allowed"),
        (8, "error: building paths is not allowed"),
        (6, "error: building paths is not allowed"),
    ] {
        let mut input = greeting.clone();
        input.extend(u64s(&[command]));
        input.extend(text("/nix/store/00000000000000000000000000000000-x"));
        let out = serve(&store, &conf, &[], &input, None);
        assert_eq!(out.status.code(), Some(1), "{}", said(&out));
        assert!(said(&out).contains(refusal), "{command}: {}", said(&out));
    }

    // A user not in allowed-users is refused, and nothing is greeted.
    let user = nix::unistd::User::from_name(hermetic_tests::TEST_USER)
        .unwrap()
        .unwrap();
    let out = serve(
        &store,
        &conf,
        &["--write"],
        &greeting,
        Some((user.uid.as_raw(), user.gid.as_raw())),
    );
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(out.stdout.is_empty());
    assert!(
        said(&out).contains("user 'hermetic-test' is not allowed to connect to the Nix daemon"),
        "{}",
        said(&out)
    );
}

/// Stock Nix builds a chain of `n` on a machine reached as `user` over
/// `scheme` (`ssh-ng` or `ssh`), whose login's `hermetic daemon --stdio`
/// or `store serve --write` cannot write the store and so passes the user
/// on to the machine's daemon.
fn offload_to_daemon_as(
    sshd: &Sshd,
    daemon: &hermetic_tests::daemon::Daemon,
    scheme: &str,
    user: &str,
    n: usize,
) -> Output {
    let path = |name: &str| daemon.dir.path.join(name);
    // hermetic's usual place for the store's daemon socket.
    let socket_dir = daemon.root().join("nix/var/nix/daemon-socket");
    std::fs::create_dir_all(&socket_dir).unwrap();
    let _ = std::fs::remove_file(socket_dir.join("socket"));
    std::os::unix::fs::symlink(daemon.dir.path.join("socket"), socket_dir.join("socket")).unwrap();
    let program = path("remote-program");
    remote_program(
        &program,
        &path("conf"),
        &hermetic_tests::hermetic_for_test_user(),
        &daemon.root(),
        if scheme == "ssh" {
            "store serve"
        } else {
            "daemon"
        },
    );
    let machine = format!(
        "{scheme}://{user}@127.0.0.1?remote-program={} x86_64-linux {} 1",
        program.display(),
        sshd.client_key().display()
    );
    nix_build_remotely(&daemon.dir.path, sshd, &machine, &chain(n))
}

/// A login user who is not root reaches the machine's daemon, which
/// judges the user's trust as for any local client: an untrusted one may
/// not have input-addressed derivations built from what it sends (Nix's
/// words), nothing is added; a trusted one builds the chain. Over
/// `ssh-ng://` (`daemon --stdio` relays the worker protocol) and
/// `ssh://` (`store serve` asks the daemon for a serve session).
#[test]
fn an_ordinary_login_user_gets_the_daemons_trust() {
    let test = "an_ordinary_login_user_gets_the_daemons_trust";
    if !hermetic_tests::test_user_or_skip(test) {
        return;
    }
    let Some(nix) = NixPeer::or_skip(test, "") else {
        return;
    };
    let Some(sshd) = Sshd::start_or_skip(test) else {
        return;
    };
    let user = hermetic_tests::TEST_USER;
    let conf = "extra-sandbox-paths = /bin/sh=/bin/busybox\ntrusted-users = root";
    for scheme in ["ssh-ng", "ssh"] {
        // A user the daemon does not allow is told so, in Nix's words.
        let closed = hermetic_tests::daemon::Daemon::start(
            &format!("login-closed-{scheme}"),
            &format!("{conf}\nallowed-users = root"),
        );
        let out = offload_to_daemon_as(&sshd, &closed, scheme, user, 1);
        let said = stderr(&out);
        assert!(!out.status.success(), "{scheme}: {said}");
        assert!(
            said.contains(&format!(
                "user '{user}' is not allowed to connect to the Nix daemon"
            )),
            "{scheme}: {said}"
        );

        let untrusted =
            hermetic_tests::daemon::Daemon::start(&format!("login-untrusted-{scheme}"), conf);
        let out = offload_to_daemon_as(&sshd, &untrusted, scheme, user, 2);
        let said = stderr(&out);
        assert!(!out.status.success(), "{scheme}: {said}");
        assert!(
            said.contains("you are not privileged to build input-addressed derivations"),
            "{scheme}: {said}"
        );
        // The daemon served the user (a serve session, for `ssh://`).
        let served = if scheme == "ssh" {
            format!("serve session for user {user}")
        } else {
            format!("user {user}")
        };
        assert!(untrusted.log().contains(&served), "{}", untrusted.log());
        let store = hermetic_store::LocalStore::open(hermetic_store::StoreLayout::under_root(
            &untrusted.root(),
        ))
        .unwrap();
        assert!(
            store
                .all_valid_paths()
                .unwrap()
                .iter()
                .all(|p| !p.name().starts_with("chain-")),
            "an untrusted build added outputs"
        );

        let trusted = hermetic_tests::daemon::Daemon::start(
            &format!("login-trusted-{scheme}"),
            &format!("{conf} {user}"),
        );
        let out = offload_to_daemon_as(&sshd, &trusted, scheme, user, 3);
        let said = stderr(&out);
        assert!(out.status.success(), "{scheme}: {said}");
        let last = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let local = trusted.dir.path.join("local");
        assert_eq!(
            std::fs::read_to_string(local.join(last.trim_start_matches('/')))
                .unwrap()
                .trim(),
            "2 1 0"
        );
        assert_eq!(
            nix.nar_hash(&local, &last),
            nix.nar_hash(&trusted.root(), &last)
        );
    }
}
