//! Builds for two stores on one host (issue 14, point 7): they take build
//! users from one host-wide pool, as Nix keeps its user pool in the global
//! state directory, so they never run as one uid at once; and each build
//! has a cgroup of its own, so the end of one never kills the other.

use std::process::Stdio;
use std::time::{Duration, Instant};

use hermetic_tests::builds::{BuildHost, DrvSpec, outputs_of, stderr, text};
use hermetic_tests::daemon::running;
use hermetic_tests::{group_or_skip, pool_state_dir};

/// The uid a build ran as, and when it started and ended (seconds of
/// uptime).
fn span(host: &BuildHost, drv: &hermetic_store::StorePath) -> (u32, f64, f64) {
    let out = text(&host.real(&outputs_of(host, drv)["out"]));
    let fields: Vec<&str> = out.split_whitespace().collect();
    let [uid, start, end] = fields[..] else {
        panic!("unexpected output: {out}");
    };
    (
        uid.parse().unwrap(),
        start.parse().unwrap(),
        end.parse().unwrap(),
    )
}

#[test]
fn builds_for_two_stores_share_the_pool_and_never_a_cgroup() {
    if !group_or_skip(
        "builds_for_two_stores_share_the_pool_and_never_a_cgroup",
        "hermetic-solo",
    ) {
        return;
    }
    let hosts = [
        BuildHost::diverted("two-stores-a"),
        BuildHost::diverted("two-stores-b"),
    ];
    let script = |pause: &str| {
        format!(
            "read s _ < /proc/uptime; sleep {pause}; read e _ < /proc/uptime; echo $(id -u) $s $e > $out"
        )
    };
    let mut drvs = Vec::new();
    for (host, pause) in hosts.iter().zip(["3.25", "0.5"]) {
        // One build user for the whole host, cgroups on.
        host.conf("build-users-group = hermetic-solo\nuse-cgroups = true\n");
        drvs.push(DrvSpec::new("build", &script(pause)).add_to(host));
    }
    let start = |i: usize| {
        hosts[i]
            .command(&["build", &hosts[i].print(&drvs[i])])
            .env("NIX_STATE_DIR", pool_state_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let slow = start(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !running("sleep 3.25") {
        assert!(Instant::now() < deadline, "the slow build did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let quick = start(1);
    for (i, child) in [slow, quick].into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "build {i}: {}", stderr(&out));
    }
    let (uid_a, start_a, end_a) = span(&hosts[0], &drvs[0]);
    let (uid_b, start_b, end_b) = span(&hosts[1], &drvs[1]);
    assert_eq!(uid_a, uid_b, "one build user for both");
    assert!(
        end_a <= start_b || end_b <= start_a,
        "both ran as uid {uid_a} at once: {start_a}..{end_a} and {start_b}..{end_b}"
    );
}
