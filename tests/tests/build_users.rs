//! The build-user pool (B25–B29), auto-allocated ids, uid-range builds
//! (B10, B19) and the errors of each, through `sandbox-run` as root.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hermetic_tests::{
    TempDir, assert_map_line, group_or_skip, host_uid_from_map, pool_state_dir, root_or_skip,
    sandbox_run, sandbox_run_as_test_user, sandbox_run_pooled, set_mode, test_user_or_skip,
    with_settings,
};

/// A directory the builds see as `/gate`: each writes a file there when it
/// has started (owned by its host uid), then waits for `release`.
struct Gate {
    dir: TempDir,
}

/// What a gated build runs.
const GATED: &str = "mktemp /gate/started.XXXXXX >/dev/null && \
                     while [ ! -e /gate/release ]; do sleep 0.05; done; cat /proc/self/uid_map";

impl Gate {
    fn new(label: &str) -> Gate {
        let dir = TempDir::new(label);
        set_mode(&dir.path, 0o777);
        Gate { dir }
    }

    fn binding(&self) -> String {
        format!("/gate={}", self.dir.path.display())
    }

    /// Starts a gated build taking its user from `group`.
    fn spawn(&self, group: &str, stderr: Stdio) -> Child {
        let state = pool_state_dir();
        Command::new(sandbox_run())
            .args(["--state-dir", state.to_str().unwrap()])
            .args(["--option", "build-users-group", group])
            .args(["--sandbox-path", &self.binding()])
            .args(["--", "/bin/sh", "-c", GATED])
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap()
    }

    /// The host uids of the builds that have started.
    fn started(&self) -> Vec<u32> {
        std::fs::read_dir(&self.dir.path)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("started."))
            .map(|e| e.metadata().unwrap().uid())
            .collect()
    }

    /// Waits until `n` builds have started.
    fn wait_for(&self, n: usize) -> Vec<u32> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let started = self.started();
            if started.len() >= n {
                return started;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} builds started",
                started.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn release(&self) {
        std::fs::write(self.dir.path.join("release"), "").unwrap();
    }
}

/// Waits for a build and returns the host uid its uid map names.
fn finish(child: Child) -> u32 {
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "the build failed: {stdout}");
    host_uid_from_map(&stdout).expect("a uid map")
}

#[test]
fn concurrent_builds_never_share_a_build_user() {
    if !group_or_skip("concurrent_builds_never_share_a_build_user", "nixbld") {
        return;
    }
    let members = nix::unistd::Group::from_name("nixbld")
        .unwrap()
        .unwrap()
        .mem
        .len();
    let gate = Gate::new("pool");
    let builds: Vec<Child> = (0..members)
        .map(|_| gate.spawn("nixbld", Stdio::null()))
        .collect();
    // All of them run at once: each holds its user until released.
    let started = gate.wait_for(members);
    gate.release();
    let uids: Vec<u32> = builds.into_iter().map(finish).collect();
    let mut distinct = started.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        members,
        "two builds shared a uid: {started:?}"
    );
    for uid in uids {
        assert!(started.contains(&uid));
        assert_ne!(uid, 0, "a builder ran as root");
    }
}

#[test]
fn with_two_build_users_the_third_build_waits_then_runs() {
    if !group_or_skip(
        "with_two_build_users_the_third_build_waits_then_runs",
        "hermetic-pair",
    ) {
        return;
    }
    let gate = Gate::new("pair");
    let first = gate.spawn("hermetic-pair", Stdio::null());
    let second = gate.spawn("hermetic-pair", Stdio::null());
    let holders = gate.wait_for(2);
    let mut third = gate.spawn("hermetic-pair", Stdio::piped());
    let (said, heard) = mpsc::channel();
    let stderr = third.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = said.send(line);
        }
    });
    let notice = heard
        .recv_timeout(Duration::from_secs(30))
        .expect("the third build says why it waits");
    assert_eq!(notice, "waiting for a free build user ID for '/bin/sh'");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        third.try_wait().unwrap().is_none(),
        "the third build did not wait"
    );
    assert_eq!(
        gate.started().len(),
        2,
        "the third build started without a free user"
    );
    gate.release();
    let uids = [finish(first), finish(second), finish(third)];
    assert!(
        holders.contains(&uids[2]),
        "the third build ran as {} not one of {holders:?}",
        uids[2]
    );
    let pair: Vec<u32> = ["hermetic-pair1", "hermetic-pair2"]
        .iter()
        .map(|name| {
            nix::unistd::User::from_name(name)
                .unwrap()
                .unwrap()
                .uid
                .as_raw()
        })
        .collect();
    for uid in uids {
        assert!(
            pair.contains(&uid),
            "{uid} is not a member of hermetic-pair"
        );
    }
}

#[test]
fn auto_allocated_ids_come_in_slots_of_65536() {
    if !root_or_skip("auto_allocated_ids_come_in_slots_of_65536") {
        return;
    }
    let output = sandbox_run_pooled(&with_settings(
        &[("auto-allocate-uids", "true"), ("use-cgroups", "true")],
        &[
            "--",
            "/bin/sh",
            "-c",
            "cat /proc/self/uid_map /proc/self/gid_map",
        ],
    ));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let uid: u32 = host_uid_from_map(lines[0]).unwrap();
    assert!(
        uid >= 872_415_232 && (uid - 872_415_232) % 65536 == 0,
        "{stdout}"
    );
    assert_map_line(lines[0], [1000, uid, 1], &stdout);
    // A sandboxed build's gid is its uid (B27).
    assert_map_line(lines[1], [100, uid, 1], &stdout);
    let slot = (uid - 872_415_232) / 65536;
    assert!(
        pool_state_dir()
            .join("userpool2")
            .join(format!("slot-{slot}"))
            .exists()
    );
}

#[test]
fn a_uid_range_build_is_root_of_65536_ids_and_can_nest() {
    if !root_or_skip("a_uid_range_build_is_root_of_65536_ids_and_can_nest") {
        return;
    }
    let script = "id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map; \
                  unshare -Ur /bin/sh -c 'cat /proc/self/uid_map'; \
                  test -d /sys/kernel && echo sys; \
                  echo x > /etc/written && echo etc; \
                  stat -c '%u %a' /";
    let output = sandbox_run_pooled(&with_settings(
        &[("auto-allocate-uids", "true"), ("use-cgroups", "true")],
        &["--uid-range", "--", "/bin/sh", "-c", script],
    ));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(&lines[..2], ["0", "0"]);
    let first = host_uid_from_map(lines[2]).unwrap();
    assert_map_line(lines[2], [0, first, 65536], &stdout);
    assert_map_line(lines[3], [0, first, 65536], &stdout);
    // The nested user namespace maps its root to the build's root.
    assert_map_line(lines[4], [0, 0, 1], &stdout);
    assert_eq!(&lines[5..], ["sys", "etc", "0 755"]);
}

/// Runs `sandbox-run` with `args` as root and expects it to refuse with
/// `message` (exit 125) before running anything.
fn assert_refused(args: &[&str], message: &str) {
    let mut all = args.to_vec();
    all.extend(["--", "/bin/sh", "-c", "echo ran"]);
    let output = sandbox_run_pooled(&all);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(125), "{args:?}: {stderr}");
    assert!(output.stdout.is_empty(), "{args:?} ran the command");
    assert!(
        stderr.contains(message),
        "{args:?}: expected {message:?} in {stderr:?}"
    );
}

#[test]
fn pool_errors_name_their_cause() {
    if !group_or_skip("pool_errors_name_their_cause", "hermetic-ghost") {
        return;
    }
    assert_refused(
        &["--option", "build-users-group", "no-such-group"],
        "error: the group 'no-such-group' specified in 'build-users-group' does not exist",
    );
    assert_refused(
        &["--option", "build-users-group", "hermetic-empty"],
        "error: the build users group 'hermetic-empty' has no members",
    );
    assert_refused(
        &["--option", "build-users-group", "hermetic-ghost"],
        "error: the user 'hermetic-gone' in the group 'hermetic-ghost' does not exist",
    );
    assert_refused(
        &["--option", "build-users-group", "hermetic-self"],
        "error: the Nix user should not be a member of 'hermetic-self'",
    );
    // Never root: no build users at all is a configuration error.
    assert_refused(
        &["--option", "build-users-group", ""],
        "'build-users-group' is empty and 'auto-allocate-uids' is off, which would run builds as root",
    );
    assert_refused(&["--build-user", "0:0"], "is root (uid or gid 0)");
    // An auto-allocated id that an account has (nixbld1's).
    let nixbld1 = nix::unistd::User::from_name("nixbld1").unwrap().unwrap();
    let start = nixbld1.uid.as_raw().to_string();
    assert_refused(
        &[
            "--option",
            "auto-allocate-uids",
            "true",
            "--option",
            "use-cgroups",
            "true",
            "--option",
            "start-id",
            &start,
            "--option",
            "id-count",
            "65536",
        ],
        &format!("error: auto-allocated UID {start} clashes with existing user account 'nixbld1'"),
    );
}

#[test]
fn settings_that_cannot_work_together_are_refused() {
    if !root_or_skip("settings_that_cannot_work_together_are_refused") {
        return;
    }
    assert_refused(
        &["--option", "auto-allocate-uids", "true"],
        "error: Running builds with UID ranges (setting `auto-allocate-uids` enabled and `8388608` UIDs) \
         requires the setting 'use-cgroups' to be enabled.",
    );
    assert_refused(
        &["--uid-range", "--no-sandbox"],
        "error: feature 'uid-range' is only supported in sandboxed builds",
    );
    assert_refused(
        &["--uid-range"],
        "error: feature 'uid-range' requires the setting 'auto-allocate-uids' to be enabled",
    );
    assert_refused(
        &[
            "--uid-range",
            "--option",
            "auto-allocate-uids",
            "true",
            "--option",
            "id-count",
            "1",
        ],
        "error: feature 'uid-range' requires the setting 'use-cgroups' to be enabled",
    );
    assert_refused(
        &["--option", "max-build-pids", "10"],
        "error: 'max-build-pids' limits a build through its cgroup: it needs use-cgroups = true",
    );
    assert_refused(
        &["--option", "max-build-memory", "lots"],
        "error: invalid value 'lots' for 'max-build-memory'",
    );
}

#[test]
fn cgroups_without_build_users_are_refused() {
    if !test_user_or_skip("cgroups_without_build_users_are_refused") {
        return;
    }
    let output = sandbox_run_as_test_user(&[
        "--option",
        "use-cgroups",
        "true",
        "--",
        "/bin/sh",
        "-c",
        "echo ran",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains(
            "error: Running all builds with cgroups requires privilege separation for build users \
             but hermetic is not configured to use build users."
        ),
        "{stderr}"
    );
}

#[test]
fn an_unknown_setting_is_a_warning() {
    if !root_or_skip("an_unknown_setting_is_a_warning") {
        return;
    }
    let output = sandbox_run_pooled(&with_settings(
        &[("no-such-setting", "1")],
        &["--", "/bin/sh", "-c", "echo ran"],
    ));
    assert!(output.status.success());
    assert_eq!(String::from_utf8_lossy(&output.stdout), "ran\n");
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("warning: unknown setting 'no-such-setting'")
    );
}

#[test]
fn the_lock_files_are_nix_s() {
    if !group_or_skip("the_lock_files_are_nix_s", "hermetic-solo") {
        return;
    }
    let output = sandbox_run_pooled(&with_settings(
        &[("build-users-group", "hermetic-solo")],
        &["--", "/bin/sh", "-c", "true"],
    ));
    assert!(output.status.success());
    let uid = nix::unistd::User::from_name("hermetic-solo1")
        .unwrap()
        .unwrap()
        .uid;
    let lock = pool_state_dir().join("userpool").join(uid.to_string());
    let mode = std::fs::metadata(Path::new(&lock)).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", lock.display());
}

#[test]
fn a_hermetic_sandbox_runs_inside_a_uid_range_build() {
    if !root_or_skip("a_hermetic_sandbox_runs_inside_a_uid_range_build") {
        return;
    }
    // sandbox-run itself, its shared libraries, and busybox for the inner
    // sandbox's /bin/sh; inside, it is root of the build's namespace and
    // runs the inner builder as uid 1000 of the build's ids.
    let binary = format!("/hermetic={}", sandbox_run().display());
    let busybox = format!("/busybox={}", hermetic_tests::busybox().display());
    let mut args = vec!["--uid-range"];
    for dir in ["/usr", "/lib", "/lib64"] {
        if Path::new(dir).exists() {
            args.extend(["--sandbox-path", dir]);
        }
    }
    args.extend(["--sandbox-path", &binary, "--sandbox-path", &busybox]);
    args.extend([
        "--",
        "/bin/sh",
        "-c",
        "/hermetic --build-user 1000:1000 --no-default-sandbox-paths --sandbox-path /bin/sh=/busybox \
         -- /bin/sh -c 'id -u; cat /proc/self/uid_map; echo $$'",
    ]);
    let output = sandbox_run_pooled(&with_settings(
        &[("auto-allocate-uids", "true"), ("use-cgroups", "true")],
        &args,
    ));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "1000", "{stdout}");
    // Its uid 1000 is the build's uid 1000, itself first + 1000 on the host.
    assert_map_line(lines[1], [1000, 1000, 1], &stdout);
    assert_eq!(
        lines[2], "1",
        "the inner builder is not PID 1 of its own namespace"
    );
}
