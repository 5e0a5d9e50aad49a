//! Many derivations: a chain of 50 builds in dependency order, and an
//! interrupted one leaves no process, mount, lock, staging directory or
//! half-registered output behind.

use std::time::{Duration, Instant};

use hermetic_store::StorePath;
use hermetic_tests::builds::{BuildHost, DrvSpec, outputs_of, stderr, text};
use hermetic_tests::root_or_skip;

/// A chain `0 → 1 → … → n-1`, each adding its number to what the last made.
fn chain(host: &BuildHost, label: &str, length: usize, delay: &str) -> Vec<StorePath> {
    let mut drvs: Vec<StorePath> = Vec::new();
    for i in 0..length {
        let name = format!("{label}-{i}");
        let script = format!("{delay}{{ cat ${{prev:-/dev/null}}; echo {i}; }} > $out");
        let mut spec = DrvSpec::new(&name, &script).attr("marker", label.to_owned());
        if let Some(prev) = drvs.last() {
            spec = spec.input("prev", prev, "out", host);
        }
        drvs.push(spec.add_to(host));
    }
    drvs
}

#[test]
fn a_chain_of_fifty_builds_in_order() {
    if !root_or_skip("a_chain_of_fifty_builds_in_order") {
        return;
    }
    let host = BuildHost::diverted("build-chain");
    let drvs = chain(&host, "link", 50, "");
    let top = drvs.last().unwrap();
    let out = host.run(&["build", "-j", "4", &host.print(top)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let expected: String = (0..50).map(|i| format!("{i}\n")).collect();
    assert_eq!(text(&host.real(&outputs_of(&host, top)["out"])), expected);
    assert_eq!(
        stderr(&out).matches("building '").count(),
        50,
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("[50/50]"), "{}", stderr(&out));
    // Each link refers to the one before it (the reference scan found it).
    let store = host.store();
    let info = store.query_info(&outputs_of(&host, top)["out"]).unwrap();
    assert!(info.references.is_empty(), "the text holds no store path");
    let closure = store.closure(std::slice::from_ref(top)).unwrap();
    assert_eq!(closure.len(), 50, "the .drv closure holds every link");
}

fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().into_string().unwrap_or_default();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let needle = marker.as_bytes();
        let has = |hay: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
        if has(&cmdline) || has(&environ) {
            found.push(format!("{name}: {}", String::from_utf8_lossy(&cmdline)));
        }
    }
    found
}

#[test]
fn an_interrupted_build_leaves_nothing_behind() {
    if !root_or_skip("an_interrupted_build_leaves_nothing_behind") {
        return;
    }
    let host = BuildHost::diverted("build-interrupt");
    let marker = format!("interrupt-marker-{}", std::process::id());
    let drvs = chain(&host, &marker, 10, "sleep 1; ");
    let top = drvs.last().unwrap();
    let child = host
        .command(&["build", &host.print(top)])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Let a few links finish and one be running.
    let started = Instant::now();
    let done = |host: &BuildHost| {
        drvs.iter()
            .filter(|d| host.store().is_valid(&outputs_of(host, d)["out"]).unwrap())
            .count()
    };
    while done(&host) < 2 && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let output = child.wait_with_output().unwrap();
    let err = stderr(&output);
    assert!(!output.status.success(), "{err}");
    assert!(err.contains("was interrupted"), "{err}");
    let finished = done(&host);
    assert!((2..10).contains(&finished), "{finished} links built: {err}");

    // No process of the build, no mount of it, no staging directory, no
    // pending record, no lock file, nothing present but unregistered.
    assert_eq!(processes_with(&marker), Vec::<String>::new());
    let root = host.dir.path.to_string_lossy().into_owned();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&root), "{mounts}");
    let layout = host.layout();
    let pending = layout.state_dir.join("hermetic/pending");
    assert_eq!(
        std::fs::read_dir(&pending).map(|d| d.count()).unwrap_or(0),
        0
    );
    let store = host.store();
    for entry in std::fs::read_dir(&layout.real_store_dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            !name.starts_with('.') || name == ".links",
            "left in the store directory: {name}"
        );
        assert!(!name.ends_with(".lock"), "lock file left: {name}");
        let path = StorePath::from_base_name(&name).unwrap();
        assert!(
            store.is_valid(&path).unwrap(),
            "present but not registered: {name}"
        );
    }
    // Every build-user lock is free again.
    for entry in std::fs::read_dir(host.host_state_dir().join("userpool")).unwrap() {
        let file = std::fs::File::open(entry.unwrap().path()).unwrap();
        assert!(
            nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).is_ok(),
            "a build user is still locked"
        );
    }
    let verify = host.run(&["store", "verify", "--check-contents"]);
    assert!(verify.status.success(), "{}", stderr(&verify));
    // And the build goes on where it stopped.
    let out = host.run(&["build", &host.print(top)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out).matches("building '").count(), 10 - finished);
}
