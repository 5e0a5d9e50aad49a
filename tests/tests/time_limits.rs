//! Time limits (B78): `timeout` and `max-silent-time` kill the build and
//! end `sandbox-run` with status 101 and Lix's message.

use hermetic_tests::{build_user_args, root_or_skip, sandbox_run_command};

/// Runs `script` under `limit` (sandbox-run's options) and returns status,
/// stdout and stderr.
fn run_limited(limit: &[&str], script: &str) -> (Option<i32>, String, String) {
    let user = build_user_args();
    let mut args: Vec<&str> = user.iter().map(String::as_str).collect();
    args.extend_from_slice(limit);
    args.extend(["--", "/bin/sh", "-c", script]);
    let output = sandbox_run_command(&args);
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn timeout_kills_the_build_with_status_101() {
    if !root_or_skip("timeout_kills_the_build_with_status_101") {
        return;
    }
    let (code, stdout, stderr) =
        run_limited(&["--timeout", "1"], "echo started; sleep 30; echo finished");
    assert_eq!(code, Some(101), "{stderr}");
    assert_eq!(stdout, "started\n");
    assert!(
        stderr.contains("error: '/bin/sh' timed out after 1 seconds\n"),
        "{stderr}"
    );
}

#[test]
fn max_silent_time_kills_a_silent_build_with_status_101() {
    if !root_or_skip("max_silent_time_kills_a_silent_build_with_status_101") {
        return;
    }
    let (code, stdout, stderr) = run_limited(&["--max-silent-time", "1"], "echo started; sleep 30");
    assert_eq!(code, Some(101), "{stderr}");
    assert_eq!(stdout, "started\n");
    assert!(
        stderr.contains("error: '/bin/sh' timed out after 1 seconds of silence\n"),
        "{stderr}"
    );
}

#[test]
fn output_keeps_a_build_alive_under_max_silent_time() {
    if !root_or_skip("output_keeps_a_build_alive_under_max_silent_time") {
        return;
    }
    // 3 s in all, never 1 s without output.
    let script = "for i in 1 2 3 4 5 6; do echo tick; sleep 0.5; done; echo done";
    let (code, stdout, stderr) = run_limited(&["--option", "max-silent-time", "1"], script);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.ends_with("done\n"), "{stdout}");
}

#[test]
fn the_settings_and_their_aliases_set_the_limits() {
    if !root_or_skip("the_settings_and_their_aliases_set_the_limits") {
        return;
    }
    for (setting, message) in [
        ("build-timeout", "timed out after 1 seconds\n"),
        ("timeout", "timed out after 1 seconds\n"),
        (
            "build-max-silent-time",
            "timed out after 1 seconds of silence\n",
        ),
    ] {
        let (code, _, stderr) = run_limited(&["--option", setting, "1"], "sleep 30");
        assert_eq!(code, Some(101), "{setting}: {stderr}");
        assert!(stderr.contains(message), "{setting}: {stderr}");
    }
}
