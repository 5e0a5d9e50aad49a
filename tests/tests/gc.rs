//! Garbage collection (issue 18): hermetic's collector keeps what roots
//! hold (with `keep-derivations`), deletes the rest referrers first and
//! leaves a store both verifiers pass; and Nix 2.8's collector and
//! hermetic's, on one store, never delete what the other's running builds
//! use.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hermetic_tests::builds::{BuildHost, DrvSpec, outputs_of, stderr};
use hermetic_tests::nix_peer::NixPeer;
use hermetic_tests::root_or_skip;

/// Nix 2.8 on the stores these tests make: builds as root without build
/// users, `/bin/sh` from busybox.
fn nix() -> Option<NixPeer> {
    NixPeer::or_skip(
        "gc",
        "build-users-group =\nsandbox = true\nsandbox-fallback = false\n\
         extra-sandbox-paths = /bin/sh=/bin/busybox\nsubstituters =\n",
    )
}

/// The entries of the host's store directory but `.links`, sorted.
fn store_entries(host: &BuildHost) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(&host.layout().real_store_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != ".links")
        .collect();
    names.sort();
    names
}

/// Both verifiers pass on the host's store.
fn assert_verifies(host: &BuildHost, nix: &NixPeer) {
    let ours = host.run(&["store", "verify", "--check-contents"]);
    assert!(ours.status.success(), "{}", stderr(&ours));
    let theirs = nix.verify_store(host.dir.path.join("root"));
    assert!(theirs.status.success(), "{}", stderr(&theirs));
}

#[test]
fn a_collection_keeps_what_roots_hold_and_deletes_the_rest() {
    if !root_or_skip("a_collection_keeps_what_roots_hold_and_deletes_the_rest") {
        return;
    }
    let Some(nix) = nix() else { return };
    let host = BuildHost::diverted("gc-basic");
    host.conf("extra-sandbox-paths = /bin/sh=/bin/busybox");
    let dep = DrvSpec::new("dep", "echo dep > $out").add_to(&host);
    let top = DrvSpec::new("top", "echo $dep > $out")
        .input("dep", &dep, "out", &host)
        .add_to(&host);
    let junk = DrvSpec::new("junk", "echo junk > $out").add_to(&host);
    for drv in [&top, &junk] {
        let out = host.run(&["build", &host.print(drv)]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let (dep_out, top_out, junk_out) = (
        outputs_of(&host, &dep)["out"].clone(),
        outputs_of(&host, &top)["out"].clone(),
        outputs_of(&host, &junk)["out"].clone(),
    );
    let gcroots = host.layout().state_dir.join("gcroots");
    let root = gcroots.join("top");
    std::os::unix::fs::symlink(host.print(&top_out), &root).unwrap();

    // The root, as `nix-store --gc --print-roots` shows it.
    let out = host.run(&["store", "gc", "--print-roots"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{} -> {}\n", root.display(), host.print(&top_out))
    );
    // What the root holds cannot be deleted, in Nix's words.
    let out = host.run(&["store", "delete", &host.print(&dep_out)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "Cannot delete path '{}' since it is still alive. To find out why, use: nix-store --query --roots",
            host.print(&dep_out)
        )),
        "{}",
        stderr(&out)
    );
    // Live: the root's closure and (keep-derivations) the derivations
    // that made it; dead: the rest.
    let printed = |out: &std::process::Output| -> Vec<String> {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let live = printed(&host.run(&["store", "gc", "--print-live"]));
    for path in [&top_out, &dep_out, &top, &dep] {
        assert!(live.contains(&host.print(path)), "{live:?}");
    }
    let dead = printed(&host.run(&["store", "gc", "--print-dead"]));
    for path in [&junk_out, &junk] {
        assert!(dead.contains(&host.print(path)), "{dead:?}");
    }
    assert!(!dead.contains(&host.print(&top_out)), "{dead:?}");

    let out = host.run(&["store", "gc"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("deleting '{}'", host.print(&junk_out))),
        "{}",
        stderr(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).ends_with(" MiB freed\n"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let store = host.store();
    for path in [&top_out, &dep_out, &top, &dep] {
        assert!(store.is_valid(path).unwrap(), "{}", host.print(path));
        assert!(host.real(path).exists());
    }
    for path in [&junk_out, &junk] {
        assert!(!store.is_valid(path).unwrap(), "{}", host.print(path));
        assert!(!host.real(path).exists());
    }
    drop(store);
    assert_verifies(&host, &nix);

    // Without the root everything goes, and nothing is left behind; with
    // --max-freed, the collection stops at the first path that frees more.
    std::fs::remove_file(&root).unwrap();
    let out = host.run(&["store", "gc", "--max-freed", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("1 store paths deleted, "),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr(&out).contains("deleted more than 1 bytes; stopping"));
    let out = host.run(&["store", "gc"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(store_entries(&host), Vec::<String>::new());
    assert_verifies(&host, &nix);
}

/// A chain of `n` derivations, each waiting `pause` seconds, then reading
/// the one before and referring to it; their paths, first to last.
fn chain(host: &BuildHost, n: usize, pause: &str) -> Vec<hermetic_store::StorePath> {
    let script = format!(
        "sleep {pause}; if [ -n \"$prev\" ]; then cat $prev > $out; fi; echo ${{prev:-first}} >> $out"
    );
    let mut links = vec![DrvSpec::new("link-0", &script).add_to(host)];
    for i in 1..n {
        let name = format!("link-{i}");
        let next = DrvSpec::new(&name, &script)
            .input("prev", &links[i - 1], "out", host)
            .add_to(host);
        links.push(next);
    }
    links
}

/// Runs `build` (its output piped) with `collect` run over and over until
/// it ends; it must succeed, after at least two collections.
fn build_survives_collections(build: &mut Command, collect: &mut dyn FnMut()) {
    let mut child = build
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut runs = 0;
    while child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the build hung"
        );
        collect();
        runs += 1;
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "after {runs} collections: {}",
        stderr(&out)
    );
    assert!(runs >= 2, "only {runs} collections ran during the build");
}

#[test]
fn nixs_collector_deletes_nothing_a_running_hermetic_build_uses() {
    if !root_or_skip("nixs_collector_deletes_nothing_a_running_hermetic_build_uses") {
        return;
    }
    let Some(nix) = nix() else { return };
    let host = BuildHost::diverted("gc-nix-vs-hermetic");
    host.conf("extra-sandbox-paths = /bin/sh=/bin/busybox");
    // Built already, and rooted by nothing: a chain of three, which the
    // last link of the build reads only once a slow link beside it is
    // built. Its derivations are rooted (their outputs are not): what keeps
    // the chain's outputs alive meanwhile, and each link built, is the
    // build's own temporary roots.
    let links = chain(&host, 3, "0");
    let out = host.run(&["build", &host.print(&links[2])]);
    assert!(out.status.success(), "{}", stderr(&out));
    let slow = DrvSpec::new("slow", "sleep 1.5; echo slow > $out").add_to(&host);
    let top = DrvSpec::new("top", "cat $prev $slow > $out")
        .input("prev", &links[2], "out", &host)
        .input("slow", &slow, "out", &host)
        .add_to(&host);
    let gcroots = host.layout().state_dir.join("gcroots");
    std::os::unix::fs::symlink(host.print(&top), gcroots.join("top")).unwrap();
    let root = host.dir.path.join("root");
    build_survives_collections(
        &mut host.command(&["build", &host.print(&top)]),
        &mut || {
            let gc = nix
                .command("nix-store")
                .arg("--store")
                .arg(&root)
                .arg("--gc")
                .output()
                .unwrap();
            assert!(gc.status.success(), "{}", stderr(&gc));
        },
    );
    // The top read the chain and the slow link: none was deleted while in
    // use. (The build made no root: a collection after it may delete them.)
    assert_verifies(&host, &nix);
}

#[test]
fn hermetics_collector_deletes_nothing_a_running_nix_build_uses() {
    if !root_or_skip("hermetics_collector_deletes_nothing_a_running_nix_build_uses") {
        return;
    }
    let Some(nix) = nix() else { return };
    let host = BuildHost::diverted("gc-hermetic-vs-nix");
    let expr = host.dir.path.join("chain.nix");
    std::fs::write(
        &expr,
        r#"let link = i: prev: derivation {
             name = "link-${toString i}"; system = "x86_64-linux"; builder = "/bin/sh";
             inherit prev;
             args = ["-c" "sleep 0.3; if [ -e $prev ]; then cat $prev > $out; fi; echo $prev >> $out"]; };
           go = i: prev: if i == 6 then prev else go (i + 1) (link i prev);
         in go 0 "first""#,
    )
    .unwrap();
    let root = host.dir.path.join("root");
    let mut build = nix.command("nix-build");
    build
        .arg("--store")
        .arg(&root)
        .arg(&expr)
        .arg("--no-out-link");
    build_survives_collections(&mut build, &mut || {
        let gc = host.run(&["store", "gc"]);
        assert!(gc.status.success(), "{}", stderr(&gc));
    });
    assert_verifies(&host, &nix);
}

/// Adds garbage to the host's store: `chains` chains of ten text paths,
/// each referring to the one before, and as many directory trees; returns
/// how many paths it added.
fn add_garbage(host: &BuildHost, round: usize, chains: usize) -> usize {
    use std::collections::BTreeSet;
    let mut store = host.store();
    let tree = host.dir.path.join(format!("tree-{round}"));
    let mut added = 0;
    for chain in 0..chains {
        let mut previous: BTreeSet<hermetic_store::StorePath> = BTreeSet::new();
        for link in 0..10 {
            let text = format!("round {round} chain {chain} link {link} {previous:?}");
            let path = store
                .add_text(&format!("g-{chain}-{link}"), text.as_bytes(), &previous)
                .unwrap();
            previous = BTreeSet::from([path]);
            added += 1;
        }
        let dir = tree.join(format!("t-{chain}"));
        std::fs::create_dir_all(dir.join("sub/deeper")).unwrap();
        std::fs::write(dir.join("a"), format!("{round} {chain}")).unwrap();
        std::fs::write(dir.join("sub/deeper/b"), "b".repeat(4096)).unwrap();
        store.add_path(&dir).unwrap();
        added += 1;
    }
    added
}

#[test]
fn a_collector_killed_at_any_instant_leaves_a_store_both_verifiers_pass() {
    if !root_or_skip("a_collector_killed_at_any_instant_leaves_a_store_both_verifiers_pass") {
        return;
    }
    let Some(nix) = nix() else { return };
    let host = BuildHost::diverted("gc-kill");
    // A rooted path with a closure, which every round must leave.
    let kept = {
        let mut store = host.store();
        let base = store
            .add_text("kept-base", b"base", &Default::default())
            .unwrap();
        store
            .add_text("kept", b"kept", &std::collections::BTreeSet::from([base]))
            .unwrap()
    };
    let gcroots = host.layout().state_dir.join("gcroots");
    std::os::unix::fs::symlink(host.print(&kept), gcroots.join("kept")).unwrap();

    // How long an uninterrupted collection of one round's garbage takes.
    add_garbage(&host, 0, 8);
    let started = Instant::now();
    let out = host.run(&["store", "gc"]);
    let whole = started.elapsed();
    assert!(out.status.success(), "{}", stderr(&out));
    const ROUNDS: u32 = 40;
    let mut killed_midway = 0;
    for round in 1..=ROUNDS {
        add_garbage(&host, round as usize, 8);
        let mut gc = host
            .command(&["store", "gc"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Instants spread over a whole collection, start to end.
        std::thread::sleep(whole * round / ROUNDS);
        let _ = gc.kill();
        let status = gc.wait().unwrap();
        if !status.success() {
            killed_midway += 1;
        }
        let ours = host.run(&["store", "verify", "--check-contents"]);
        assert!(ours.status.success(), "round {round}: {}", stderr(&ours));
        let theirs = nix.verify_store(host.dir.path.join("root"));
        assert!(
            theirs.status.success(),
            "round {round}: {}",
            stderr(&theirs)
        );
        let store = host.store();
        assert!(store.is_valid(&kept).unwrap(), "round {round}");
        assert!(host.real(&kept).exists(), "round {round}");
    }
    assert!(
        killed_midway >= ROUNDS / 2,
        "only {killed_midway} of {ROUNDS} kills came before the collection ended"
    );
    // What the killed collections left, the next one deletes.
    let out = host.run(&["store", "gc"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut left = store_entries(&host);
    left.retain(|n| !n.ends_with("-kept") && !n.ends_with("-kept-base"));
    assert_eq!(left, Vec::<String>::new());
}

#[test]
fn a_root_added_while_the_collector_runs_reaches_it_through_its_socket() {
    if !root_or_skip("a_root_added_while_the_collector_runs_reaches_it_through_its_socket") {
        return;
    }
    let host = BuildHost::diverted("gc-socket");
    let (wanted, unwanted) = {
        let mut store = host.store();
        let none = Default::default();
        (
            store.add_text("wanted", b"wanted", &none).unwrap(),
            store.add_text("unwanted", b"unwanted", &none).unwrap(),
        )
    };
    // The collector stops after reading the roots, until the fifo is
    // written (Nix's synchronisation point for its tests).
    let fifo = host.dir.path.join("sync");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let gc = host
        .command(&["store", "gc"])
        .env("_NIX_TEST_GC_SYNC", &fifo)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the collector waits on the fifo (a writer that does not wait
    // can open it), it has read the roots.
    let started = Instant::now();
    let mut sync = loop {
        use std::os::unix::fs::OpenOptionsExt;
        let opened = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo);
        match opened {
            Ok(file) => break file,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                assert!(started.elapsed() < Duration::from_secs(30), "no collector");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("{e}"),
        }
    };
    // The GC lock is held: the root goes to the collector's socket (a
    // root written to a file now would not be read).
    let store = host.store();
    store.add_temp_root(&wanted).unwrap();
    std::io::Write::write_all(&mut sync, b"go\n").unwrap();
    drop(sync);
    let out = gc.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(store.is_valid(&wanted).unwrap());
    assert!(host.real(&wanted).exists());
    assert!(!store.is_valid(&unwanted).unwrap());
    assert!(!host.real(&unwanted).exists());
    // Once this process lets it go, it is garbage too.
    drop(store);
    let out = host.run(&["store", "gc"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!host.real(&wanted).exists());
}

#[test]
fn builds_collect_garbage_beside_them_when_space_runs_low() {
    if !root_or_skip("builds_collect_garbage_beside_them_when_space_runs_low") {
        return;
    }
    let Some(nix) = nix() else { return };
    let host = BuildHost::diverted("gc-auto");
    host.conf(
        "extra-sandbox-paths = /bin/sh=/bin/busybox\n\
         min-free = 1000\nmax-free = 2000\nmin-free-check-interval = 1",
    );
    // Three garbage paths of 1000 bytes, and a built input nothing roots,
    // which the build reads after the collection.
    let garbage: Vec<hermetic_store::StorePath> = {
        let mut store = host.store();
        (0..3)
            .map(|i| {
                let text = format!("{i}").repeat(1000);
                store
                    .add_text(
                        &format!("garbage-{i}"),
                        text.as_bytes(),
                        &Default::default(),
                    )
                    .unwrap()
            })
            .collect()
    };
    let input = chain(&host, 1, "0").remove(0);
    let out = host.run(&["build", &host.print(&input)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let top = DrvSpec::new("top", "sleep 4; cat $prev > $out")
        .input("prev", &input, "out", &host)
        .add_to(&host);
    // Nix's test hook: the free space is what this file says.
    let free = host.dir.path.join("free");
    std::fs::write(&free, "1100").unwrap();
    let build = host
        .command(&["build", &host.print(&top)])
        .env("_NIX_TEST_FREE_SPACE_FILE", &free)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::write(&free, "100").unwrap();
    let out = build.wait_with_output().unwrap();
    let said = stderr(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("running auto-GC to free 1900 bytes"),
        "{said}"
    );
    // 2000 bytes freed is more than 1900: two of the three went.
    let left = garbage.iter().filter(|g| host.real(g).exists()).count();
    assert_eq!(left, 1, "{said}");
    assert_verifies(&host, &nix);
}

#[test]
fn the_daemon_makes_permanent_roots_and_collects_old_generations() {
    if !root_or_skip("the_daemon_makes_permanent_roots_and_collects_old_generations") {
        return;
    }
    use hermetic_tests::daemon::{Daemon, RawClient, output_text};
    let Some(nix) = NixPeer::or_skip("gc", "substituters =\n") else {
        return;
    };
    let mut daemon = Daemon::start("gc-daemon", "");
    let url = daemon.url();
    let expr = |text: &str| {
        format!(
            "derivation {{ name = \"gen\"; system = \"x86_64-linux\"; builder = \"/bin/sh\"; \
             args = [\"-c\" \"echo {text} > $out\"]; }}"
        )
    };
    let build = |name: &str, text: &str| {
        let out = daemon.nix_build_as(&nix, "root", name, &expr(text));
        assert!(out.status.success(), "{}", output_text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let (first, second, loose) = (build("g1", "one"), build("g2", "two"), build("g3", "three"));
    // Nix's reserve for a full disk (`gc-reserved-space`, 8 MiB), made
    // when the daemon starts and given back by a collection.
    let reserved = daemon.root().join("nix/var/nix/db/reserved");
    assert_eq!(std::fs::metadata(&reserved).unwrap().len(), 8 << 20);

    // AddPermRoot (what `mounted-ssh-ng://` stores send): the daemon makes
    // the link and its indirect root; the collector keeps what it holds.
    let root = daemon.dir.path.join("roots/made-by-the-daemon");
    let mut raw = RawClient::connect(&daemon);
    raw.u64(47);
    raw.string(&loose);
    raw.string(root.to_str().unwrap());
    raw.work().unwrap();
    assert_eq!(raw.read_string(), root.display().to_string());
    assert_eq!(std::fs::read_link(&root).unwrap().to_str(), Some(&*loose));
    let roots = nix.run("nix-store", &["--store", &url, "--gc", "--print-roots"]);
    assert!(
        roots.contains(&format!("{} -> {loose}", root.display())),
        "{roots}"
    );
    // Not in the store, and not over a file that is not a root, in Nix's
    // words; the connection goes on after each refusal.
    let in_store = daemon.real(&loose).with_file_name("a-root");
    let in_the_way = daemon.dir.path.join("a.nix");
    for (place, said) in [
        (
            in_store.clone(),
            "in the Nix store is forbidden (are you running nix-build inside the store?)",
        ),
        (in_the_way.clone(), "'; already exists"),
    ] {
        raw.u64(47);
        raw.string(&loose);
        raw.string(place.to_str().unwrap());
        let refused = raw.work().unwrap_err();
        assert!(refused.contains(said), "{refused}");
    }
    assert!(!in_store.exists());
    assert_eq!(
        std::fs::read(&in_the_way).unwrap(),
        std::fs::read(daemon.file()).unwrap()
    );
    raw.u64(1); // IsValidPath, still in step
    raw.string(&loose);
    raw.work().unwrap();
    assert_eq!(raw.read_u64(), 1);

    // A profile with two generations, made by Nix's client through the
    // daemon; `nix-collect-garbage -d` removes the old generation and the
    // daemon's collector deletes what only it held.
    let state_dir = daemon.root().join("nix/var/nix");
    let profile = state_dir.join("profiles/test-profile");
    let client = |program: &str, args: &[&str]| {
        let out = nix
            .command(program)
            .args(args)
            .env("NIX_REMOTE", &url)
            .env("NIX_STATE_DIR", &state_dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", output_text(&out));
        output_text(&out)
    };
    for path in [&first, &second] {
        client("nix-env", &["-p", profile.to_str().unwrap(), "--set", path]);
    }
    let generations = client(
        "nix-env",
        &["-p", profile.to_str().unwrap(), "--list-generations"],
    );
    assert_eq!(generations.lines().count(), 2, "{generations}");
    let said = client("nix-collect-garbage", &["-d"]);
    assert!(!reserved.exists());
    assert!(said.contains(&format!("deleting '{first}'")), "{said}");
    assert!(!std::path::Path::new(&daemon.real(&first)).exists());
    for kept in [&second, &loose] {
        assert!(daemon.real(kept).exists(), "{kept}: {said}");
    }
    let generations = client(
        "nix-env",
        &["-p", profile.to_str().unwrap(), "--list-generations"],
    );
    assert_eq!(generations.lines().count(), 1, "{generations}");
    let verify = nix.verify_store(daemon.root());
    assert!(verify.status.success(), "{}", output_text(&verify));

    // A failed build kept with `keep-failed` lies outside the store
    // directory: neither collector, the daemon's or Nix's own, deletes it.
    let fails = daemon.write_expr(
        "fails",
        r#"derivation { name = "fails"; system = "x86_64-linux"; builder = "/bin/sh";
             args = ["-c" "echo left-for-you > $NIX_BUILD_TOP/note; exit 1"]; }"#,
    );
    let out = nix
        .command("nix-build")
        .args([
            "--store",
            &url,
            fails.to_str().unwrap(),
            "--no-out-link",
            "--keep-failed",
        ])
        .output()
        .unwrap();
    let said = output_text(&out);
    let kept = said
        .split("note: keeping build directory '")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap_or_else(|| panic!("no kept directory named: {said}"))
        .to_owned();
    client("nix-collect-garbage", &[]);
    let root_dir = daemon.root();
    nix.run(
        "nix-store",
        &["--store", root_dir.to_str().unwrap(), "--gc"],
    );
    assert_eq!(
        std::fs::read_to_string(format!("{kept}/note")).unwrap(),
        "left-for-you\n"
    );

    // An untrusted client may not make permanent roots (Nix's text).
    daemon.restart_with("trusted-users = nobody");
    let mut raw = RawClient::connect(&daemon);
    raw.u64(47);
    raw.string(&second);
    raw.string(daemon.dir.path.join("roots/untrusted").to_str().unwrap());
    let refused = raw.work().unwrap_err();
    assert!(
        refused.contains("you are not privileged to create perm roots"),
        "{refused}"
    );
    assert!(!daemon.dir.path.join("roots/untrusted").exists());
}

#[test]
fn collectors_leave_sandbox_runs_scratch_and_kept_directories_alone() {
    if !root_or_skip("collectors_leave_sandbox_runs_scratch_and_kept_directories_alone") {
        return;
    }
    let Some(nix) = nix() else { return };
    let host = BuildHost::diverted("gc-sandbox-run");
    host.conf("extra-sandbox-paths = /bin/sh=/bin/busybox");
    let drv = DrvSpec::new("made", "echo made > $out").add_to(&host);
    let out = host.run(&["build", &host.print(&drv)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let real_store = host.layout().real_store_dir.clone();
    let root = host.dir.path.join("root");
    let collect_with_both = || {
        let ours = host.run(&["store", "gc"]);
        assert!(ours.status.success(), "{}", stderr(&ours));
        nix.run("nix-store", &["--store", root.to_str().unwrap(), "--gc"]);
    };
    let sandbox_run = |args: &[&str]| {
        let mut command = Command::new(hermetic_tests::sandbox_run());
        command
            .arg("--store")
            .arg(&root)
            .args(hermetic_tests::build_user_args())
            .args(args);
        command
    };

    // A running sandbox's build directory, written before both collectors
    // run and read after.
    let running = sandbox_run(&[
        "--",
        "/bin/sh",
        "-c",
        "echo still-here > /build/file; sleep 3; cat /build/file",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let started = Instant::now();
    let written = || {
        walkdir_files(&real_store)
            .iter()
            .any(|f| f.ends_with("build/file"))
    };
    while !written() {
        assert!(started.elapsed() < Duration::from_secs(20), "no build/file");
        std::thread::sleep(Duration::from_millis(20));
    }
    collect_with_both();
    let done = running.wait_with_output().unwrap();
    assert!(done.status.success(), "{}", stderr(&done));
    assert_eq!(String::from_utf8_lossy(&done.stdout), "still-here\n");
    // Nothing is left in the store directory.
    assert_eq!(store_entries(&host), Vec::<String>::new());

    // A kept scratch directory is outside the store directory, and stays.
    let kept = sandbox_run(&["--keep", "--", "/bin/sh", "-c", "echo kept > /build/file"])
        .output()
        .unwrap();
    assert!(kept.status.success(), "{}", stderr(&kept));
    let said = stderr(&kept);
    let dir = said
        .lines()
        .find_map(|l| l.strip_prefix("note: keeping build directory '"))
        .map(|rest| rest.trim_end_matches('\''))
        .unwrap_or_else(|| panic!("no note in: {said}"))
        .to_owned();
    assert!(!dir.starts_with(real_store.to_str().unwrap()), "{dir}");
    collect_with_both();
    assert_eq!(
        std::fs::read_to_string(std::path::Path::new(&dir).join("file")).unwrap(),
        "kept\n"
    );
    assert_eq!(store_entries(&host), Vec::<String>::new());
}

/// Every file under `dir`, at any depth (symlinks not followed).
fn walkdir_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => found.extend(walkdir_files(&path)),
            Ok(_) => found.push(path),
            Err(_) => {}
        }
    }
    found
}

#[test]
fn additions_through_the_daemon_collect_garbage_first_when_space_runs_low() {
    if !root_or_skip("additions_through_the_daemon_collect_garbage_first_when_space_runs_low") {
        return;
    }
    use hermetic_tests::daemon::{Daemon, output_text};
    let Some(nix) = NixPeer::or_skip("gc", "substituters =\n") else {
        return;
    };
    // Nix's test hook: the free space is what this file says.
    let dir = hermetic_tests::TempDir::new("gc-auto-add");
    let free = dir.path.join("free");
    std::fs::write(&free, "5000").unwrap();
    let hook = format!("_NIX_TEST_FREE_SPACE_FILE={}", free.display());
    let daemon = Daemon::start_under(
        "gc-auto-add",
        "min-free = 1000\nmax-free = 2000\nmin-free-check-interval = 1",
        &["env", &hook],
    );
    let url = daemon.url();
    let add = |name: &str, byte: char| {
        let file = dir.path.join(name);
        std::fs::write(&file, byte.to_string().repeat(1000)).unwrap();
        let out = nix
            .command("nix-store")
            .args(["--store", &url, "--add"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", output_text(&out));
        (
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            output_text(&out),
        )
    };
    // Enough space: nothing is collected.
    let garbage: Vec<String> = ["g1", "g2", "g3"]
        .iter()
        .zip(['1', '2', '3'])
        .map(|(name, byte)| {
            let (path, said) = add(name, byte);
            assert!(!said.contains("auto-GC"), "{said}");
            path
        })
        .collect();
    // Too little: the next addition collects 1900 bytes first (two of
    // the three garbage files of 1000 bytes), then adds its path.
    std::fs::write(&free, "100").unwrap();
    let (added, said) = add("new", 'n');
    assert!(
        said.contains("running auto-GC to free 1900 bytes"),
        "{said}"
    );
    let left = garbage.iter().filter(|g| daemon.real(g).exists()).count();
    assert_eq!(left, 1, "{said}");
    assert!(daemon.real(&added).exists());
    let verify = nix.verify_store(daemon.root());
    assert!(verify.status.success(), "{}", output_text(&verify));
}

#[test]
fn twenty_running_builds_lose_nothing_to_either_collector() {
    if !root_or_skip("twenty_running_builds_lose_nothing_to_either_collector") {
        return;
    }
    let Some(nix) = nix() else { return };
    let host = BuildHost::diverted("gc-twenty");
    // Twenty builds at once need twenty build users: allocated ones.
    host.conf(
        "extra-sandbox-paths = /bin/sh=/bin/busybox\n\
         experimental-features = auto-allocate-uids cgroups\n\
         auto-allocate-uids = true\nuse-cgroups = true",
    );
    // An input built already and rooted by nothing, which every one of the
    // twenty reads after collections have run beside it.
    let links = chain(&host, 2, "0");
    let out = host.run(&["build", &host.print(&links[1])]);
    assert!(out.status.success(), "{}", stderr(&out));
    let names: Vec<String> = (0..20).map(|i| format!("par{i}")).collect();
    let mut top = DrvSpec::new("top", "cat $par0 > $out");
    for (i, name) in names.iter().enumerate() {
        let par = DrvSpec::new(
            &format!("par-{i}"),
            &format!("sleep 2; cat $prev > $out; echo {i} >> $out"),
        )
        .input("prev", &links[1], "out", &host)
        .add_to(&host);
        top = top.input(name, &par, "out", &host);
    }
    let top = top.add_to(&host);
    let root = host.dir.path.join("root");
    let mut turn = 0;
    build_survives_collections(
        &mut host.command(&["build", "-j", "20", &host.print(&top)]),
        &mut || {
            turn += 1;
            let gc = if turn % 2 == 0 {
                host.run(&["store", "gc"])
            } else {
                nix.command("nix-store")
                    .arg("--store")
                    .arg(&root)
                    .arg("--gc")
                    .output()
                    .unwrap()
            };
            assert!(gc.status.success(), "{}", stderr(&gc));
        },
    );
    assert_verifies(&host, &nix);
}
