//! hermetic as the dispatcher (issue 20): `builders` sends builds over
//! real SSH (`ssh-ng://`) to machines whose login runs stock Nix 2.8's
//! `nix-daemon --stdio` or hermetic's `daemon --stdio`, each with a store
//! of its own; the inputs go over, the logs and outputs come back, checked
//! and registered; an unreachable machine is passed over; `max-jobs = 0`
//! builds nothing here.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hermetic_tests::nix_peer::NixPeer;
use hermetic_tests::sshd::Sshd;
use hermetic_tests::{TempDir, hermetic, root_or_skip};

/// Two chains of `n`, `left-*` and `right-*`, each step reading the one
/// before and saying so in its log, and `top` reading both ends.
fn two_chains(n: usize) -> String {
    format!(
        r#"let
  step = side: n: prev: derivation {{
    name = "${{side}}-${{toString n}}"; system = builtins.currentSystem; builder = "/bin/sh";
    args = [ "-c" "echo making-${{side}}-${{toString n}}; echo ${{toString n}} $(cat ${{if prev == null then "/dev/null" else prev}}) > $out" ];
  }};
  chain = side: n: if n == 0 then step side 0 null else step side n (chain side (n - 1));
  left = chain "left" {last};
  right = chain "right" {last};
in derivation {{
  name = "top"; system = builtins.currentSystem; builder = "/bin/sh";
  args = [ "-c" "cat ${{left}} ${{right}} > $out" ];
}}"#,
        last = n - 1
    )
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The settings of a hermetic store that builds here: auto-allocated ids,
/// so that no nixbld user is shared with other tests.
const HERMETIC_BUILDS: &str = "sandbox = true\nextra-sandbox-paths = /bin/sh=/bin/busybox\n\
    trusted-users = root\nexperimental-features = auto-allocate-uids cgroups\n\
    auto-allocate-uids = true\nuse-cgroups = true\n";

/// The settings of a stock Nix store that builds here: as root in its
/// sandbox, so that no nixbld user is shared with other tests.
const NIX_BUILDS: &str = "sandbox = true\nsandbox-fallback = false\nbuild-users-group =\n\
    substituters =\nextra-sandbox-paths = /bin/sh=/bin/busybox\ntrusted-users = root\n";

/// A machine: its configuration directory with `conf`, and the login
/// program that serves its store at `root` with `serve` (`{conf}` and
/// `{root}` replaced); the program's path.
fn machine(dir: &Path, name: &str, conf: &str, serve: &str) -> PathBuf {
    let conf_dir = dir.join(format!("{name}-conf"));
    std::fs::create_dir_all(&conf_dir).unwrap();
    std::fs::write(conf_dir.join("nix.conf"), conf).unwrap();
    let program = dir.join(format!("{name}-program"));
    let root = dir.join(name);
    std::fs::write(
        &program,
        format!(
            "#!/bin/sh\nexport NIX_CONF_DIR={}\nexec {} \"$@\"\n",
            conf_dir.display(),
            serve.replace("{root}", root.to_str().unwrap())
        ),
    )
    .unwrap();
    hermetic_tests::set_mode(&program, 0o755);
    program
}

/// A machine serving a hermetic store that builds (`HERMETIC_BUILDS`)
/// with `hermetic --store ROOT COMMAND`.
fn hermetic_machine(dir: &Path, command: &str) -> PathBuf {
    let serve = format!("{} --store {{root}} {command}", hermetic().display());
    machine(dir, "hermetic", HERMETIC_BUILDS, &serve)
}

/// What every test here needs: root, Nix 2.8, an sshd, a directory; or
/// `None`, the test skipped with the reason printed.
fn machines_or_skip(test: &str, label: &str) -> Option<(NixPeer, Sshd, TempDir)> {
    if !root_or_skip(test) {
        return None;
    }
    let nix = NixPeer::or_skip(test, "")?;
    let sshd = Sshd::start_or_skip(test)?;
    Some((nix, sshd, TempDir::new(label)))
}

/// A `builders` line for a login to root running `program`.
fn builder(sshd: &Sshd, program: &Path, system: &str) -> String {
    format!(
        "ssh-ng://root@127.0.0.1?remote-program={} {system} {} 1",
        program.display(),
        sshd.client_key().display()
    )
}

/// `hermetic --store ROOT build ARGS` with `conf` as its nix.conf.
fn hermetic_build(dir: &Path, sshd: &Sshd, root: &Path, conf: &str, args: &[&str]) -> Output {
    let conf_dir = dir.join("local-conf");
    std::fs::create_dir_all(&conf_dir).unwrap();
    std::fs::write(conf_dir.join("nix.conf"), conf).unwrap();
    Command::new(hermetic())
        .args(["--store", root.to_str().unwrap(), "build"])
        .args(args)
        .env("NIX_CONF_DIR", &conf_dir)
        .env("NIX_SSHOPTS", sshd.ssh_opts())
        .output()
        .unwrap()
}

/// The derivation of `expr` in the store under `root`, as Nix 2.8 writes it.
fn instantiate(nix: &NixPeer, dir: &Path, root: &Path, expr: &str) -> String {
    let file = dir.join("expr.nix");
    std::fs::write(&file, expr).unwrap();
    nix.run(
        "nix-instantiate",
        &["--store", root.to_str().unwrap(), file.to_str().unwrap()],
    )
    .trim()
    .to_owned()
}

/// Each `left-*` and `right-*` build of the two chains under `top_drv`
/// (`n` each) left its log here, as a local build does: stock Nix reads
/// it (`nix-store --read-log`).
fn assert_logs_kept(nix: &NixPeer, root: &Path, top_drv: &str, n: usize) {
    let store = root.to_str().unwrap();
    let closure = nix.run("nix-store", &["--store", store, "-qR", top_drv]);
    for side in ["left", "right"] {
        for step in 0..n {
            let drv = closure
                .lines()
                .find(|l| l.ends_with(&format!("-{side}-{step}.drv")))
                .unwrap_or_else(|| panic!("no {side}-{step} in {closure}"));
            let log = nix.run("nix-store", &["--store", store, "--read-log", drv]);
            assert!(
                log.contains(&format!("making-{side}-{step}")),
                "{drv}: {log}"
            );
        }
    }
}

/// `path` is not valid in the store under `root`, and the store verifies
/// (nothing half-copied left).
fn assert_not_registered(root: &Path, path: &str) {
    let store = |args: &[&str]| {
        Command::new(hermetic())
            .args(["--store", root.to_str().unwrap(), "store"])
            .args(args)
            .output()
            .unwrap()
    };
    let info = store(&["info", path]);
    assert!(!info.status.success(), "registered: {}", stderr(&info));
    let verified = store(&["verify", "--check-contents"]);
    assert!(verified.status.success(), "{}", stderr(&verified));
}

#[test]
fn hermetic_sends_builds_to_a_nix_machine_and_a_hermetic_one() {
    let Some((nix, sshd, work)) = machines_or_skip(
        "hermetic_sends_builds_to_a_nix_machine_and_a_hermetic_one",
        "dispatch",
    ) else {
        return;
    };
    let dir = &work.path;
    let nix_machine = machine(dir, "nix", NIX_BUILDS, "nix-daemon --option store {root}");
    let hermetic_machine = hermetic_machine(dir, "daemon");
    // The machines in a file, as /etc/nix/machines holds them.
    let machines = dir.join("machines");
    std::fs::write(
        &machines,
        format!(
            "# two machines\n{}\n{}\n",
            builder(&sshd, &nix_machine, "x86_64-linux"),
            builder(&sshd, &hermetic_machine, "x86_64-linux")
        ),
    )
    .unwrap();
    let local = dir.join("local");
    let drv = instantiate(&nix, dir, &local, &two_chains(10));
    let out = hermetic_build(
        dir,
        &sshd,
        &local,
        &format!(
            "sandbox = true\nmax-jobs = 0\nbuilders = @{}\n",
            machines.display()
        ),
        &[&drv],
    );
    let said = stderr(&out);
    assert!(out.status.success(), "{said}");
    let top = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let expected: Vec<String> = (0..10).rev().map(|n| n.to_string()).collect();
    let line = expected.join(" ");
    assert_eq!(
        std::fs::read_to_string(local.join(top.trim_start_matches('/'))).unwrap(),
        format!("{line}\n{line}\n")
    );
    // Every build went to a machine, both machines took some, and each
    // builder's log came back under its name.
    let on = |program: &Path| {
        said.lines()
            .filter(|l| {
                l.starts_with("building '")
                    && l.contains(&format!(
                        "' on '{}",
                        builder(&sshd, program, "").split(' ').next().unwrap()
                    ))
            })
            .count()
    };
    let (on_nix, on_hermetic) = (on(&nix_machine), on(&hermetic_machine));
    assert_eq!(on_nix + on_hermetic, 21, "{said}");
    assert!(on_nix > 0 && on_hermetic > 0, "{said}");
    assert_logs_kept(&nix, &local, &drv, 10);
    // One login per machine: a connection serves build after build.
    let logins = std::fs::read_to_string(sshd.dir.path.join("sshd.log")).unwrap();
    assert_eq!(logins.matches("Accepted publickey").count(), 2, "{logins}");
    for side in ["left", "right"] {
        for n in 0..10 {
            assert!(
                said.contains(&format!("{side}-{n}> making-{side}-{n}")),
                "{side}-{n}: {said}"
            );
        }
    }
    // What came back is whole and registered: both tools verify the
    // store, and the output's NAR hash is a local build's.
    let verified = Command::new(hermetic())
        .args([
            "--store",
            local.to_str().unwrap(),
            "store",
            "verify",
            "--check-contents",
        ])
        .output()
        .unwrap();
    assert!(verified.status.success(), "{}", stderr(&verified));
    let verified = nix.verify_store(&local);
    assert!(verified.status.success(), "{}", stderr(&verified));
    let here = dir.join("here");
    let drv_here = instantiate(&nix, dir, &here, &two_chains(10));
    let built = hermetic_build(dir, &sshd, &here, HERMETIC_BUILDS, &[&drv_here]);
    assert!(built.status.success(), "{}", stderr(&built));
    assert_eq!(String::from_utf8_lossy(&built.stdout).trim(), top);
    assert_eq!(nix.nar_hash(&local, &top), nix.nar_hash(&here, &top));
}

/// The same over `ssh://`: Nix's legacy serve protocol, to stock Nix
/// 2.8's `nix-store --serve --write` and to hermetic's `store serve`; the
/// builders' logs come back on the machines' stderr.
#[test]
fn hermetic_sends_builds_over_ssh_to_nix_store_serve_and_hermetic() {
    let Some((nix, sshd, work)) = machines_or_skip(
        "hermetic_sends_builds_over_ssh_to_nix_store_serve_and_hermetic",
        "dispatch-serve",
    ) else {
        return;
    };
    let dir = &work.path;
    let nix_machine = machine(dir, "nix", NIX_BUILDS, "nix-store --option store {root}");
    let hermetic_machine = hermetic_machine(dir, "store serve");
    let uri =
        |program: &Path| builder(&sshd, program, "x86_64-linux").replacen("ssh-ng://", "ssh://", 1);
    let local = dir.join("local");
    let drv = instantiate(&nix, dir, &local, &two_chains(4));
    let out = hermetic_build(
        dir,
        &sshd,
        &local,
        &format!(
            "sandbox = true\nmax-jobs = 0\nbuilders = {} ; {}\n",
            uri(&nix_machine),
            uri(&hermetic_machine)
        ),
        &[&drv],
    );
    let said = stderr(&out);
    assert!(out.status.success(), "{said}");
    let top = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(
        std::fs::read_to_string(local.join(top.trim_start_matches('/'))).unwrap(),
        "3 2 1 0\n3 2 1 0\n"
    );
    let on = |program: &Path| {
        let machine = uri(program);
        let machine = machine.split(' ').next().unwrap();
        said.lines()
            .filter(|l| l.starts_with("building '") && l.contains(&format!("' on '{machine}'")))
            .count()
    };
    let (on_nix, on_hermetic) = (on(&nix_machine), on(&hermetic_machine));
    assert_eq!(on_nix + on_hermetic, 9, "{said}");
    assert!(on_nix > 0 && on_hermetic > 0, "{said}");
    for side in ["left", "right"] {
        for n in 0..4 {
            assert!(
                said.contains(&format!("making-{side}-{n}")),
                "{side}-{n}: {said}"
            );
        }
    }
    assert_logs_kept(&nix, &local, &drv, 4);
    let verified = nix.verify_store(&local);
    assert!(verified.status.success(), "{}", stderr(&verified));
}

#[test]
fn an_unreachable_machine_is_passed_over_and_max_jobs_0_needs_a_machine() {
    let Some((nix, sshd, work)) = machines_or_skip(
        "an_unreachable_machine_is_passed_over_and_max_jobs_0_needs_a_machine",
        "dispatch-faults",
    ) else {
        return;
    };
    let dir = &work.path;
    let good = hermetic_machine(dir, "daemon");
    let gone = dir.join("no-such-program");
    let local = dir.join("local");
    let drv = instantiate(&nix, dir, &local, &two_chains(2));
    // A key the machine does not take.
    let wrong_key = dir.join("wrong_key");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&wrong_key)
        .status()
        .unwrap();
    assert!(made.success());
    let refused_uri = format!(
        "ssh-ng://root@127.0.0.1?remote-program={}&ssh-key={}",
        good.display(),
        wrong_key.display()
    );
    let conf = format!(
        "sandbox = true\nmax-jobs = 0\nbuilders = {refused_uri} x86_64-linux - 1 ; {} ; {}\n",
        builder(&sshd, &gone, "x86_64-linux"),
        builder(&sshd, &good, "x86_64-linux")
    );
    let out = hermetic_build(dir, &sshd, &local, &conf, &[&drv]);
    let said = stderr(&out);
    assert!(out.status.success(), "{said}");
    let refused = said
        .lines()
        .filter(|l| l.starts_with(&format!("cannot build on '{refused_uri}'")))
        .collect::<Vec<_>>();
    assert_eq!(refused.len(), 1, "{said}");
    assert!(refused[0].contains("Permission denied"), "{said}");
    // Said once, naming the machine; not tried again.
    let refusal = format!(
        "cannot build on 'ssh-ng://root@127.0.0.1?remote-program={}': cannot open connection to \
         remote store",
        gone.display()
    );
    assert_eq!(said.matches(&refusal).count(), 1, "{said}");
    assert_eq!(
        said.lines().filter(|l| l.starts_with("building '")).count(),
        5,
        "{said}"
    );

    // With max-jobs = 0 a derivation no machine takes is built nowhere,
    // in Nix's words; nothing is registered.
    let arm_only = format!(
        "sandbox = true\nmax-jobs = 0\nbuilders = {}\n",
        builder(&sshd, &good, "aarch64-linux")
    );
    let other = dir.join("other");
    let drv = instantiate(&nix, dir, &other, &two_chains(1));
    let out = hermetic_build(dir, &sshd, &other, &arm_only, &[&drv]);
    let said = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("Failed to find a machine for remote build!"),
        "{said}"
    );
    assert!(
        said.contains(
            "unable to start any build; remote machines may not have all required system features."
        ),
        "{said}"
    );
    let out = hermetic_build(dir, &sshd, &other, "max-jobs = 0\nbuilders =\n", &[&drv]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "unable to start any build; either increase '--max-jobs' or enable remote builds."
        ),
        "{}",
        stderr(&out)
    );
    let valid = nix.run(
        "nix-store",
        &[
            "--store",
            other.to_str().unwrap(),
            "--query",
            "--requisites",
            &drv,
        ],
    );
    assert!(!valid.lines().any(|p| p.ends_with("-top")), "{valid}");
}

/// A machine that dies while it builds: the build fails with a message
/// naming the machine, nothing of it is registered here, the store stays
/// whole.
#[test]
fn a_machine_that_dies_mid_build_fails_the_build_cleanly() {
    use std::io::BufRead;
    let Some((nix, sshd, work)) = machines_or_skip(
        "a_machine_that_dies_mid_build_fails_the_build_cleanly",
        "dispatch-dies",
    ) else {
        return;
    };
    let dir = &work.path;
    let program = hermetic_machine(dir, "daemon");
    let local = dir.join("local");
    let drv = instantiate(
        &nix,
        dir,
        &local,
        r#"derivation { name = "slow"; system = builtins.currentSystem; builder = "/bin/sh";
             args = [ "-c" "echo started; sleep 60; echo done > $out" ]; }"#,
    );
    let conf_dir = dir.join("local-conf");
    std::fs::create_dir_all(&conf_dir).unwrap();
    std::fs::write(
        conf_dir.join("nix.conf"),
        format!(
            "max-jobs = 0\nbuilders = {}\n",
            builder(&sshd, &program, "x86_64-linux")
        ),
    )
    .unwrap();
    let mut build = Command::new(hermetic())
        .args(["--store", local.to_str().unwrap(), "build", &drv])
        .env("NIX_CONF_DIR", &conf_dir)
        .env("NIX_SSHOPTS", sshd.ssh_opts())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = String::new();
    let mut lines = std::io::BufReader::new(build.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        said.push_str(&line);
        said.push('\n');
        if line.ends_with("slow> started") {
            break;
        }
    }
    assert!(said.contains("slow> started"), "{said}");
    // The machine goes away: its daemon is killed.
    let remote_root = dir.join("hermetic");
    let killed = Command::new("pkill")
        .args(["-KILL", "-f", &format!("{} daemon", remote_root.display())])
        .status()
        .unwrap();
    assert!(killed.success());
    for line in lines {
        said.push_str(&line.unwrap());
        said.push('\n');
    }
    let status = build.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!(
            "build of '{drv}' on 'ssh-ng://root@127.0.0.1?remote-program={}' failed",
            program.display()
        )),
        "{said}"
    );
    let out = nix.run(
        "nix-store",
        &[
            "--store",
            local.to_str().unwrap(),
            "--query",
            "--outputs",
            &drv,
        ],
    );
    assert_not_registered(&local, out.trim());
}

/// A machine whose output does not match the NAR hash it gives (a damaged
/// store there): the copy back is refused, the build fails naming the
/// machine, nothing is registered here.
#[test]
fn an_output_that_fails_its_nar_hash_is_not_registered() {
    let Some((nix, sshd, work)) = machines_or_skip(
        "an_output_that_fails_its_nar_hash_is_not_registered",
        "dispatch-hash",
    ) else {
        return;
    };
    let dir = &work.path;
    let program = hermetic_machine(dir, "daemon");
    let local = dir.join("local");
    let drv = instantiate(
        &nix,
        dir,
        &local,
        r#"derivation { name = "job"; system = builtins.currentSystem; builder = "/bin/sh";
             args = [ "-c" "echo built > $out" ]; }"#,
    );
    let out = nix.run(
        "nix-store",
        &[
            "--store",
            local.to_str().unwrap(),
            "--query",
            "--outputs",
            &drv,
        ],
    );
    let out = out.trim();
    // There, the output is already valid, registered with the hash of
    // something else.
    let content = dir.join("content");
    std::fs::write(&content, "not what the builder makes\n").unwrap();
    let mut nar = Vec::new();
    hermetic_store::nar::dump(&content, &mut nar).unwrap();
    let info = hermetic_store::PathInfo {
        path: hermetic_store::StorePath::from_base_name(out.trim_start_matches("/nix/store/"))
            .unwrap(),
        nar_hash: hermetic_store::Hash::sha256(b"something else"),
        nar_size: nar.len() as u64,
        references: Default::default(),
        deriver: None,
        registration_time: 0,
        ca: None,
        sigs: Vec::new(),
        ultimate: false,
    };
    hermetic_tests::daemon::register_unchecked(&dir.join("hermetic"), info, &nar);
    let conf = format!(
        "max-jobs = 0\nbuilders = {}\n",
        builder(&sshd, &program, "x86_64-linux")
    );
    let built = hermetic_build(dir, &sshd, &local, &conf, &[&drv]);
    let said = stderr(&built);
    assert_eq!(built.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!(
            "cannot copy '{out}' from 'ssh-ng://root@127.0.0.1?remote-program={}': hash mismatch \
             importing path '{out}'",
            program.display()
        )),
        "{said}"
    );
    assert_not_registered(&local, out);
}

/// The daemon sends its clients' builds to its `builders` too: a stock
/// Nix client builds through hermetic's daemon, the build runs on the
/// machine, the output is valid in the daemon's store.
#[test]
fn the_daemon_sends_its_clients_builds_to_its_machines() {
    let Some((nix, sshd, work)) = machines_or_skip(
        "the_daemon_sends_its_clients_builds_to_its_machines",
        "dispatch-daemon",
    ) else {
        return;
    };
    let program = hermetic_machine(&work.path, "daemon");
    let sshopts = format!("NIX_SSHOPTS={}", sshd.ssh_opts());
    let daemon = hermetic_tests::daemon::Daemon::start_under(
        "dispatch-daemon-itself",
        &format!(
            "extra-sandbox-paths = /bin/sh=/bin/busybox\nbuilders = {}",
            builder(&sshd, &program, "x86_64-linux")
        ),
        &["env", &sshopts],
    );
    let out = daemon.nix_build_as(
        &nix,
        "root",
        "job",
        r#"derivation { name = "job"; system = builtins.currentSystem; builder = "/bin/sh";
             args = [ "-c" "echo built-there > $out" ]; }"#,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let built = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(
        std::fs::read_to_string(daemon.real(&built)).unwrap(),
        "built-there\n"
    );
    let log = daemon.log();
    assert!(
        log.contains(&format!(
            "' on 'ssh-ng://root@127.0.0.1?remote-program={}' for",
            program.display()
        )),
        "{log}"
    );
    // The machine has it too: it was built there.
    let there = work.path.join("hermetic");
    assert!(there.join(built.trim_start_matches('/')).exists());
}

/// `builders-use-substitutes`: the machine fetches the inputs it lacks
/// from its own cache (the path there carries the cache's signature)
/// instead of receiving them from here (no signature: this store built
/// it); without the setting they are copied from here. Over `ssh-ng://`
/// and `ssh://`.
#[test]
fn builders_use_substitutes_lets_the_machine_fetch_inputs_from_its_cache() {
    let Some((nix, sshd, work)) = machines_or_skip(
        "builders_use_substitutes_lets_the_machine_fetch_inputs_from_its_cache",
        "dispatch-substitutes",
    ) else {
        return;
    };
    let Some(cache) = hermetic_tests::nix_cache::NixCache::make() else {
        return;
    };
    let dir = &work.path;
    let local = dir.join("local");
    let d_nix = cache.dir.path.join("d.nix");
    // The cache's derivation, built here: the same path, unsigned.
    let input = instantiate(&nix, dir, &local, &format!("import {}", d_nix.display()));
    let built = hermetic_build(dir, &sshd, &local, HERMETIC_BUILDS, &[&input]);
    assert!(built.status.success(), "{}", stderr(&built));
    assert_eq!(String::from_utf8_lossy(&built.stdout).trim(), cache.built);
    let top = instantiate(
        &nix,
        dir,
        &local,
        &format!(
            r#"derivation {{ name = "uses"; system = builtins.currentSystem; builder = "/bin/sh";
                 args = [ "-c" "cat ${{import {}}} > $out" ]; }}"#,
            d_nix.display()
        ),
    );
    let machine_conf = format!(
        "{HERMETIC_BUILDS}substituters = {}\ntrusted-public-keys = {}\n",
        cache.url(),
        cache.public_key()
    );
    let serve = |command: &str| format!("{} --store {{root}} {command}", hermetic().display());
    for (name, command, scheme, use_substitutes) in [
        ("fetching", "daemon", "ssh-ng", true),
        ("fetching-serve", "store serve", "ssh", true),
        ("copied", "daemon", "ssh-ng", false),
    ] {
        let program = machine(dir, name, &machine_conf, &serve(command));
        let uri = builder(&sshd, &program, "x86_64-linux").replacen("ssh-ng", scheme, 1);
        let out = hermetic_build(
            dir,
            &sshd,
            &local,
            &format!(
                "sandbox = true\nmax-jobs = 0\nbuilders = {uri}\n\
                 builders-use-substitutes = {use_substitutes}\n"
            ),
            &[&top],
        );
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let info = Command::new(hermetic())
            .args(["--store", dir.join(name).to_str().unwrap()])
            .args(["store", "info", "--json", &cache.built])
            .output()
            .unwrap();
        assert!(info.status.success(), "{name}: {}", stderr(&info));
        let info = String::from_utf8_lossy(&info.stdout);
        assert_eq!(
            info.contains("\"test-1:"),
            use_substitutes,
            "{name}: {info}"
        );
        // The next machine builds it again.
        let removed = Command::new(hermetic())
            .args(["--store", local.to_str().unwrap(), "store", "delete"])
            .arg(String::from_utf8_lossy(&out.stdout).trim())
            .output()
            .unwrap();
        assert!(removed.status.success(), "{name}: {}", stderr(&removed));
    }
}

/// Polls `done` every 50 ms for up to `seconds`; whether it came true.
fn within(seconds: u64, mut done: impl FnMut() -> bool) -> bool {
    let began = std::time::Instant::now();
    while began.elapsed() < std::time::Duration::from_secs(seconds) {
        if done() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    done()
}

/// Whether a process whose command line holds `marker` runs.
fn running(marker: &str) -> bool {
    Command::new("pgrep")
        .args(["-f", marker])
        .output()
        .unwrap()
        .status
        .success()
}

/// An interrupted run ends its remote builds: `hermetic build` ends the
/// machine's ssh, the machine (hermetic's `daemon --stdio` and `store
/// serve`) sees its client hang up and kills the builder; nothing is
/// registered on either side.
#[test]
fn an_interrupt_ends_the_build_on_the_machine() {
    let Some((nix, sshd, work)) = machines_or_skip(
        "an_interrupt_ends_the_build_on_the_machine",
        "dispatch-interrupt",
    ) else {
        return;
    };
    let dir = &work.path;
    for (name, command, scheme, seconds) in [
        ("stdio", "daemon", "ssh-ng", 987),
        ("serve", "store serve", "ssh", 986),
    ] {
        let serve = format!("{} --store {{root}} {command}", hermetic().display());
        let program = machine(dir, name, HERMETIC_BUILDS, &serve);
        let uri = builder(&sshd, &program, "x86_64-linux").replacen("ssh-ng", scheme, 1);
        let local = dir.join(format!("local-{name}"));
        let drv = instantiate(
            &nix,
            dir,
            &local,
            &format!(
                r#"derivation {{ name = "long"; system = builtins.currentSystem; builder = "/bin/sh";
                     args = [ "-c" "echo started; sleep {seconds}; touch $out" ]; }}"#
            ),
        );
        let conf_dir = dir.join(format!("conf-{name}"));
        std::fs::create_dir_all(&conf_dir).unwrap();
        std::fs::write(
            conf_dir.join("nix.conf"),
            format!("sandbox = true\nmax-jobs = 0\nbuilders = {uri}\n"),
        )
        .unwrap();
        let mut build = Command::new(hermetic())
            .args(["--store", local.to_str().unwrap(), "build", &drv])
            .env("NIX_CONF_DIR", &conf_dir)
            .env("NIX_SSHOPTS", sshd.ssh_opts())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("said-{name}"))).unwrap())
            .spawn()
            .unwrap();
        let said = || std::fs::read_to_string(dir.join(format!("said-{name}"))).unwrap();
        let marker = format!("sleep {seconds}");
        assert!(
            within(60, || running(&marker)),
            "{name}: the builder never ran: {}",
            said()
        );
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(build.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let mut status = None;
        let ended = within(60, || {
            status = build.try_wait().unwrap();
            status.is_some()
        });
        if !ended {
            let _ = build.kill();
            let _ = build.wait();
        }
        assert!(
            ended,
            "{name}: hermetic build did not end on SIGINT: {}",
            said()
        );
        assert!(!status.unwrap().success(), "{name}: {}", said());
        assert!(
            said().contains(&format!("build of '{drv}' was interrupted")),
            "{name}: {}",
            said()
        );
        assert!(
            within(30, || !running(&marker)),
            "{name}: the builder still runs on the machine: {}",
            said()
        );
        let out = nix.run(
            "nix-store",
            &["--store", local.to_str().unwrap(), "-q", "--outputs", &drv],
        );
        assert_not_registered(&local, out.trim());
        assert_not_registered(&dir.join(name), out.trim());
    }
}

/// A slow link (`ssh`'s `ProxyCommand` through `slow-link`, 1 KiB pieces
/// at 2 MiB/s): inputs and outputs of half a megabyte and more cross it
/// whole (the output's NAR hash is a local build's). A link that stops
/// carrying anything back mid-copy: OpenSSH gives up as configured
/// (`ServerAliveInterval`), the build fails naming the machine with
/// ssh's words, and nothing is registered.
#[test]
fn a_slow_link_carries_builds_and_a_stalled_one_fails_them_cleanly() {
    let Some((nix, sshd, work)) = machines_or_skip(
        "a_slow_link_carries_builds_and_a_stalled_one_fails_them_cleanly",
        "dispatch-slow",
    ) else {
        return;
    };
    let dir = &work.path;
    let program = hermetic_machine(dir, "daemon");
    let uri = builder(&sshd, &program, "x86_64-linux");
    let expr = r#"let big = builtins.toFile "big" (builtins.concatStringsSep ""
        (builtins.genList (i: "${toString i} 0123456789abcdef0123456789abcdef0123456789abcdef\n") 9000)); in
      derivation { name = "doubled"; system = builtins.currentSystem; builder = "/bin/sh";
        args = [ "-c" "cat ${big} ${big} > $out" ]; }"#;
    let through = |name: &str, stall_after: Option<u64>| {
        let proxy = dir.join(format!("proxy-{name}"));
        std::fs::write(
            &proxy,
            format!(
                "#!/bin/sh\nexec {} {} {}{}\n",
                hermetic_tests::workspace_binary("slow-link").display(),
                sshd.port,
                2 << 20,
                stall_after.map(|n| format!(" {n}")).unwrap_or_default()
            ),
        )
        .unwrap();
        hermetic_tests::set_mode(&proxy, 0o755);
        let local = dir.join(format!("local-{name}"));
        let drv = instantiate(&nix, dir, &local, expr);
        let conf_dir = dir.join(format!("conf-{name}"));
        std::fs::create_dir_all(&conf_dir).unwrap();
        std::fs::write(
            conf_dir.join("nix.conf"),
            format!("sandbox = true\nmax-jobs = 0\nbuilders = {uri}\n"),
        )
        .unwrap();
        let out = Command::new(hermetic())
            .args(["--store", local.to_str().unwrap(), "build", &drv])
            .env("NIX_CONF_DIR", &conf_dir)
            .env(
                "NIX_SSHOPTS",
                format!(
                    "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
                     -o ProxyCommand={} -o ServerAliveInterval=1 -o ServerAliveCountMax=2",
                    proxy.display()
                ),
            )
            .output()
            .unwrap();
        (local, out)
    };

    let (local, out) = through("slow", None);
    let said = stderr(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!("' on '{}", uri.split(' ').next().unwrap())),
        "{said}"
    );
    let built = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let here = dir.join("here");
    let drv_here = instantiate(&nix, dir, &here, expr);
    let local_build = hermetic_build(dir, &sshd, &here, HERMETIC_BUILDS, &[&drv_here]);
    assert!(local_build.status.success(), "{}", stderr(&local_build));
    assert_eq!(nix.nar_hash(&local, &built), nix.nar_hash(&here, &built));
    let verified = nix.verify_store(&local);
    assert!(verified.status.success(), "{}", stderr(&verified));

    // The machine built it before: now only its output comes back, and
    // the link stops after 256 KiB of it.
    let (stalled, out) = through("stalled", Some(256 << 10));
    let said = stderr(&out);
    assert!(!out.status.success(), "{said}");
    // The error names the machine; ssh's words are the build's log, as
    // Nix's hook passes them on.
    assert!(
        said.contains(&format!(
            "error: cannot copy '{built}' from '{}': ",
            uri.split(' ').next().unwrap()
        )),
        "{said}"
    );
    assert!(said.contains("doubled> Timeout, server"), "{said}");
    assert_not_registered(&stalled, &built);
    let verified = nix.verify_store(dir.join("hermetic"));
    assert!(verified.status.success(), "{}", stderr(&verified));
}
