//! A clean end to every build (D7, D8, B79–B81): cgroups, their limits
//! and statistics, leftovers after a killed supervisor, the uid sweep of
//! unsandboxed builds, and cgroup v2 (where the host has it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hermetic_runtime::cgroup::{BuildCgroup, CgroupError, CgroupLayout, Controller, Limits};
use hermetic_runtime::{RunOptions, Sandbox};
use hermetic_tests::kernel;
use hermetic_tests::{
    group_or_skip, pool_state_dir, probe_spec, root_or_skip, sandbox_run, sandbox_run_pooled,
    with_settings,
};

const CGROUPS: [&str; 4] = ["--option", "use-cgroups", "true", "--"];

/// The running `sleep <seconds>` processes: a test's sleepers, told apart
/// by their odd number of seconds.
fn sleepers(seconds: &str) -> Vec<i32> {
    let wanted = format!("sleep\0{seconds}\0");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let name = cmdline.rsplit(|&b| b == b'/').next().unwrap_or_default();
        let zombie = std::fs::read_to_string(entry.path().join("stat")).is_ok_and(|stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        });
        if !zombie && (cmdline == wanted.as_bytes() || name == wanted.as_bytes()) {
            found.push(pid);
        }
    }
    found
}

/// A child process killed (and reaped) if the test fails while it runs.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Directories below hermetic's base in the host's v1 hierarchies and v2.
fn build_cgroups() -> Vec<PathBuf> {
    let mut found = Vec::new();
    for root in [
        "/sys/fs/cgroup",
        "/sys/fs/cgroup/freezer",
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup/memory",
    ] {
        if let Ok(entries) = std::fs::read_dir(Path::new(root).join("hermetic")) {
            found.extend(
                entries
                    .flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.path()),
            );
        }
    }
    found
}

/// A builder that leaves a `setsid` sleeper behind, double-forked so that
/// it is neither its child nor in its process group.
fn double_fork(marker: &str) -> String {
    format!("(setsid /bin/sh -c 'sleep {marker} & exit' &) ; sleep 0.2; echo forked")
}

fn assert_nothing_left(marker: &str, how: &str) {
    // The sweep and the kill are synchronous: nothing may be left at all.
    let left = sleepers(marker);
    assert!(
        left.is_empty(),
        "{how}: the sleeper survived the build: {left:?}"
    );
}

#[test]
fn a_double_forked_setsid_sleeper_is_gone_after_the_build() {
    if !group_or_skip(
        "a_double_forked_setsid_sleeper_is_gone_after_the_build",
        "hermetic-solo",
    ) {
        return;
    }
    let cases: [(&str, &[&str]); 3] = [
        ("sandboxed", &["--"]),
        ("sandboxed, in a cgroup", &CGROUPS),
        // Unsandboxed, no cgroup: only the uid sweep can find it (B79).
        (
            "unsandboxed",
            &[
                "--no-sandbox",
                "--env",
                "PATH=/usr/bin:/bin",
                "--option",
                "build-users-group",
                "hermetic-solo",
                "--",
            ],
        ),
    ];
    for (n, (how, args)) in cases.iter().enumerate() {
        let marker = format!("{}.{n}17", 900 + std::process::id() % 90);
        let mut all = args.to_vec();
        let script = double_fork(&marker);
        all.extend(["/bin/sh", "-c", &script]);
        let output = sandbox_run_pooled(&all);
        assert!(
            output.status.success(),
            "{how}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&output.stdout), "forked\n", "{how}");
        assert_nothing_left(&marker, how);
    }
}

#[test]
fn the_uid_sweep_never_touches_another_user() {
    if !group_or_skip("the_uid_sweep_never_touches_another_user", "hermetic-solo") {
        return;
    }
    // A process of another user with the same marker survives the sweep.
    let marker = "917.25";
    let mut other = KillOnDrop(
        Command::new("setpriv")
            .args([
                "--reuid=30001",
                "--regid=30000",
                "--clear-groups",
                "sleep",
                marker,
            ])
            .spawn()
            .unwrap(),
    );
    let output = sandbox_run_pooled(&[
        "--no-sandbox",
        "--option",
        "build-users-group",
        "hermetic-solo",
        "--",
        "/bin/sh",
        "-c",
        "true",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        other.0.try_wait().unwrap().is_none(),
        "the sweep killed another user's process"
    );
}

#[test]
fn a_fork_bomb_is_stopped_by_the_pids_limit() {
    if !root_or_skip("a_fork_bomb_is_stopped_by_the_pids_limit") {
        return;
    }
    let output = sandbox_run_pooled(&with_settings(
        &[("use-cgroups", "true"), ("max-build-pids", "64")],
        &[
            "--",
            "/bin/sh",
            "-c",
            "bomb() { bomb | bomb & }; bomb; sleep 1; echo still here",
        ],
    ));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("still here"),
        "{stderr}"
    );
    assert!(
        stderr.contains("note: the build reached its process limit (max-build-pids = 64)"),
        "{stderr}"
    );
    // The host is still usable: it can fork.
    assert!(Command::new("true").status().unwrap().success());
}

/// Whether this host's cgroups have a memory controller for builds. On a
/// hybrid host (v1 controllers) kernels from 6.12 on may have none: the v1
/// memory controller is gone (`cgroup-v1-memory` in vm-tests'
/// kernel-differences).
fn memory_controller() -> bool {
    match CgroupLayout::detect() {
        Ok(layout @ CgroupLayout::V1 { .. }) => {
            !kernel::lacks("cgroup-v1-memory", layout.offers(Controller::Memory))
        }
        _ => true,
    }
}

/// Whether the kernel reports a build's peak memory: v1's
/// `memory.max_usage_in_bytes` where there is a v1 memory controller, v2's
/// `memory.peak` (5.19) otherwise, looked for in a cgroup made for it.
fn peak_memory_reported() -> bool {
    match CgroupLayout::detect() {
        Ok(CgroupLayout::V2 { root }) => {
            let probe = root.join(format!("hermetic-test-peak-{}", std::process::id()));
            std::fs::create_dir(&probe).unwrap();
            let present = probe.join("memory.peak").exists();
            std::fs::remove_dir(&probe).unwrap();
            !kernel::lacks("memory.peak", present)
        }
        _ => memory_controller(),
    }
}

#[test]
fn a_memory_hog_is_stopped_by_the_memory_limit() {
    if !root_or_skip("a_memory_hog_is_stopped_by_the_memory_limit") {
        return;
    }
    let has_memory = memory_controller();
    let output = sandbox_run_pooled(&with_settings(
        &[("use-cgroups", "true"), ("max-build-memory", "32M")],
        &[
            "--",
            "/bin/sh",
            "-c",
            "x=$(head -c 500000000 /dev/zero | tr '\\0' a); echo ${#x}",
        ],
    ));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the hog finished: {stderr}");
    if !has_memory {
        // Without one the limit is refused up front, with the reason.
        assert!(
            stderr.contains(
                "'max-build-memory' needs the cgroup memory controller, which this host does not offer"
            ),
            "{stderr}"
        );
        return;
    }
    assert!(
        stderr.contains("note: the build ran out of memory: the kernel killed")
            && stderr.contains("(max-build-memory = 32.0 MiB)"),
        "{stderr}"
    );
    assert!(Command::new("true").status().unwrap().success());
}

#[test]
fn the_result_reports_cpu_time_and_peak_memory() {
    if !root_or_skip("the_result_reports_cpu_time_and_peak_memory") {
        return;
    }
    let output = sandbox_run_pooled(&with_settings(
        &[("use-cgroups", "true")],
        &[
            "--",
            "/bin/sh",
            "-c",
            "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done",
        ],
    ));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("note: CPU time "))
        .expect(&stderr);
    let user: f64 = line["note: CPU time ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(user > 0.0, "the busy loop used no user CPU time: {line}");
    assert_eq!(
        line.contains("peak memory"),
        peak_memory_reported(),
        "{line}"
    );
}

#[test]
fn a_sandbox_sees_its_own_cgroup_as_the_root() {
    if !root_or_skip("a_sandbox_sees_its_own_cgroup_as_the_root") {
        return;
    }
    for args in [&["--"][..], &CGROUPS[..]] {
        let mut all = args.to_vec();
        all.extend(["/bin/sh", "-c", "cat /proc/self/cgroup"]);
        let output = sandbox_run_pooled(&all);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.lines().any(|l| l == "0::/"), "{args:?}: {stdout}");
    }
}

/// Waits until `condition` holds, for at most 30 seconds.
fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn after_a_killed_supervisor_the_next_start_cleans_up() {
    if !group_or_skip(
        "after_a_killed_supervisor_the_next_start_cleans_up",
        "hermetic-solo",
    ) {
        return;
    }
    let state = pool_state_dir();
    let solo = [
        "--option",
        "build-users-group",
        "hermetic-solo",
        "--option",
        "use-cgroups",
        "true",
    ];
    let uid = nix::unistd::User::from_name("hermetic-solo1")
        .unwrap()
        .unwrap()
        .uid;
    let mut supervisor = KillOnDrop(
        Command::new(sandbox_run())
            .args(["--state-dir", state.to_str().unwrap()])
            .args(solo)
            .args(["--", "/bin/sh", "-c", "sleep 918.5"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Named after the build user, the supervisor and its build's number.
    let name = format!("build-uid-{uid}-{}-0", supervisor.0.id());
    let cgroup_exists = || build_cgroups().iter().any(|d| d.ends_with(&name));
    wait_until("the build runs", || !sleepers("918.5").is_empty());
    assert!(cgroup_exists());
    assert!(
        state.join("cgroups").join(&name).exists(),
        "the cgroup is not recorded"
    );
    supervisor.0.kill().unwrap();
    supervisor.0.wait().unwrap();
    // The builder dies with its supervisor (parent-death signal); its cgroup
    // and the record stay.
    wait_until("the builder is gone", || sleepers("918.5").is_empty());
    assert!(cgroup_exists(), "nothing was left to clean up");
    // The next build gets the only user (the lock is free) and removes the
    // leftover before it makes its own.
    let mut args = vec![];
    args.extend(solo);
    args.extend(["--", "/bin/sh", "-c", "cat /proc/self/uid_map"]);
    let output = sandbox_run_pooled(&args);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains(&uid.to_string()));
    assert!(!cgroup_exists(), "the leftover cgroup is still there");
    assert!(
        !state.join("cgroups").join(&name).exists(),
        "the record is still there"
    );
}

#[test]
fn sigterm_to_the_supervisor_ends_a_cgroup_build_cleanly() {
    if !group_or_skip(
        "sigterm_to_the_supervisor_ends_a_cgroup_build_cleanly",
        "hermetic-pair",
    ) {
        return;
    }
    let state = pool_state_dir();
    let mut supervisor = KillOnDrop(
        Command::new(sandbox_run())
            .args(["--state-dir", state.to_str().unwrap()])
            .args([
                "--option",
                "build-users-group",
                "hermetic-pair",
                "--option",
                "use-cgroups",
                "true",
            ])
            .args(["--", "/bin/sh", "-c", "sleep 919.5 & sleep 919.5"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("the build runs", || sleepers("919.5").len() == 2);
    let pid = nix::unistd::Pid::from_raw(supervisor.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = supervisor.0.wait().unwrap();
    assert_eq!(status.code(), Some(128 + 15));
    assert!(
        sleepers("919.5").is_empty(),
        "a process of the build survived"
    );
    assert!(!build_cgroups().iter().any(|d| {
        let name = d.file_name().unwrap().to_string_lossy();
        name.starts_with("build-uid-30101-") || name.starts_with("build-uid-30102-")
    }));
}

/// A test's cgroup, removed however the test ends.
struct RemoveOnDrop<'a>(&'a BuildCgroup);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.destroy();
    }
}

/// The cgroup v2 code path against the host's v2 hierarchy: the whole of
/// it where `/sys/fs/cgroup` is v2; on a hybrid host, its empty v2
/// hierarchy, which has `cgroup.kill` and `cpu.stat` but no controllers to
/// limit with.
#[test]
fn cgroup_v2_kills_reports_and_removes() {
    if !root_or_skip("cgroup_v2_kills_reports_and_removes") {
        return;
    }
    let layout = match CgroupLayout::detect() {
        Ok(layout @ CgroupLayout::V2 { .. }) => layout,
        _ if Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists() => CgroupLayout::V2 {
            root: PathBuf::from("/sys/fs/cgroup/unified"),
        },
        _ => {
            eprintln!(
                "skipped cgroup_v2_kills_reports_and_removes: this host has no cgroup v2 hierarchy \
                 (the kernel tests under QEMU run it on pure v2)"
            );
            return;
        }
    };
    let name = format!("test-v2-{}", std::process::id());
    let cgroup = BuildCgroup::create(&layout, &name, Limits::default(), None).unwrap();
    let _removed = RemoveOnDrop(&cgroup);
    // cgroup.kill (5.14): without it, the kill below is the fallback of
    // D7 (freeze, SIGKILL each process, thaw), checked the same way.
    let lacks_kill = kernel::lacks("cgroup.kill", cgroup.dirs()[0].join("cgroup.kill").exists());
    let spec = probe_spec(
        "sleep 920.5 & i=0; while [ $i -lt 50000 ]; do i=$((i+1)); done; echo busy; sleep 920.5",
    );
    let sandbox = Sandbox::prepare(&spec).unwrap();
    let mut output = Vec::new();
    let (cancel, cancel_writer) = nix::unistd::pipe().unwrap();
    let seen = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(30);
            while sleepers("920.5").len() < 2 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let seen = cgroup.processes().len();
            // Cancel whatever was seen, so that the run always ends.
            nix::unistd::write(&cancel_writer, b"x").unwrap();
            seen
        });
        let outcome = sandbox
            .run(
                RunOptions {
                    cgroup: Some(&cgroup),
                    cancel: Some(std::os::fd::AsFd::as_fd(&cancel)),
                    ..RunOptions::default()
                },
                &mut output,
            )
            .unwrap();
        assert!(outcome.cancelled);
        watcher.join().unwrap()
    });
    // PID 1 (which became the last sleeper) and the other sleeper.
    assert_eq!(seen, 2, "the sleepers are not in the cgroup");
    assert!(
        sleepers("920.5").is_empty(),
        "the kill left a process (lacks cgroup.kill: {lacks_kill})"
    );
    assert_eq!(String::from_utf8_lossy(&output), "busy\n");
    let usage = cgroup.usage();
    assert!(usage.user_usec > 0, "cpu.stat says no user time: {usage:?}");
    cgroup.destroy().unwrap();
    assert!(!cgroup.dirs()[0].exists());
    // Limits need controllers this hierarchy may not have.
    if !layout.offers(hermetic_runtime::cgroup::Controller::Pids) {
        let refused = BuildCgroup::create(
            &layout,
            &name,
            Limits {
                pids: Some(10),
                memory: None,
            },
            None,
        );
        assert!(matches!(
            refused,
            Err(CgroupError::NoController {
                setting: "max-build-pids",
                ..
            })
        ));
    }
}
