//! What of the caller's session and the host's kernel reaches a builder
//! (issue 14, point 9): not the keys of the caller's session keyring (a
//! builder gets a new anonymous one, as under runc and flatpak), and not
//! the host's kernel uevents (its network namespace belongs to its own user
//! namespace, as Nix's does).

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hermetic_tests::probes::{compiled_probe, host_tool_or_skip};
use hermetic_tests::{build_user_args, root_or_skip, sandbox_run};

#[test]
fn a_builder_cannot_reach_the_callers_session_keyring() {
    if !root_or_skip("a_builder_cannot_reach_the_callers_session_keyring")
        || !host_tool_or_skip(
            "a_builder_cannot_reach_the_callers_session_keyring",
            "keyctl",
        )
    {
        return;
    }
    let probe = compiled_probe("session_keyring", 64).unwrap();
    // In a new session of its own, the test plants a key, runs the probe
    // in a sandbox as a build user, then lists its session keyring again.
    let script = format!(
        "keyctl add user hermetic-planted secret @s >/dev/null && \
         {sandbox} {user} --sandbox-path /bin/session-keyring={probe} -- /bin/session-keyring && \
         keyctl show @s",
        sandbox = sandbox_run().display(),
        user = build_user_args().join(" "),
        probe = probe.display(),
    );
    let out = Command::new("keyctl")
        .args(["session", "-", "/bin/sh", "-c", &script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let seen = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{seen}");
    assert!(
        stdout.contains("keys: 0"),
        "the builder's session keyring is not new: {seen}"
    );
    assert!(
        !stdout.contains("secret"),
        "the builder read the caller's key: {seen}"
    );
    assert!(
        stdout.contains("added: yes"),
        "the builder has no keyring of its own: {seen}"
    );
    // The key the builder added went to its own keyring, not the caller's.
    let caller = stdout.rsplit("added: ").next().unwrap();
    assert!(caller.contains("hermetic-planted"), "{seen}");
    assert!(
        !caller.contains("hermetic-added"),
        "the builder added to the caller's keyring: {seen}"
    );
}

#[test]
fn host_uevents_do_not_reach_a_builder() {
    if !root_or_skip("host_uevents_do_not_reach_a_builder") {
        return;
    }
    // The host announces /dev/null again and again (a "change" uevent, which
    // udev answers by applying its rules to /dev/null once more) while the
    // builder listens.
    let done = AtomicBool::new(false);
    let out = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                let _ = std::fs::write("/sys/class/mem/null/uevent", "change");
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        let out = Command::new(sandbox_run())
            .args(build_user_args())
            .args([
                "--",
                "/bin/sh",
                "-c",
                "timeout 3 uevent sh -c 'echo EVENT $ACTION $DEVPATH'; echo listened",
            ])
            .output()
            .unwrap();
        done.store(true, Ordering::SeqCst);
        out
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("listened"), "{stdout}");
    assert!(
        !stdout.contains("EVENT"),
        "the builder received host uevents:\n{stdout}"
    );
}
