//! `sandbox-run` as users meet it: options, exit codes, errors, `--keep`,
//! `--print-plan`, `--shell`, signals, `doctor`.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hermetic_tests::{
    HostSnapshot, TempDir, TestStore, build_user_args, root_or_skip, sandbox_run,
};

/// Runs `sandbox-run` with the test build user (as root), `--store` in a
/// fresh store, then `args`; returns status, stdout, stderr and the store.
fn sandbox_run_in_store(args: &[&str]) -> (i32, String, String, TestStore) {
    let store = TestStore::new("cli");
    let mut all: Vec<String> = vec!["--store".into(), store.root.path.display().to_string()];
    all.extend(build_user_args());
    all.extend(args.iter().map(|a| a.to_string()));
    let output = Command::new(sandbox_run()).args(&all).output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        store,
    )
}

fn assert_no_scratch_left(store: &TestStore) {
    assert!(
        HostSnapshot::take(&store.dir).scratch.is_empty(),
        "a scratch directory was left in {}",
        store.dir.display()
    );
}

#[test]
fn exit_code_is_the_commands() {
    if !root_or_skip("exit_code_is_the_commands") {
        return;
    }
    let (code, stdout, _, store) =
        sandbox_run_in_store(&["--", "/bin/sh", "-c", "echo out; exit 7"]);
    assert_eq!(code, 7);
    assert_eq!(stdout, "out\n");
    assert_no_scratch_left(&store);
    let (code, _, _, _) =
        sandbox_run_in_store(&["--", "/bin/sh", "-c", "ulimit -t 1; while :; do :; done"]);
    assert_eq!(code, 137, "128 + SIGKILL");
}

/// A setting sandbox-run accepts either takes effect or is said to be
/// unused: `filter-syscalls false` does not lift the seccomp filter.
#[test]
fn settings_sandbox_run_does_not_use_are_named() {
    if !root_or_skip("settings_sandbox_run_does_not_use_are_named") {
        return;
    }
    let (code, _, stderr, _) = sandbox_run_in_store(&[
        "--option",
        "filter-syscalls",
        "false",
        "--option",
        "timeout",
        "30",
        "--",
        "/bin/sh",
        "-c",
        "grep -q '^Seccomp:.*2' /proc/self/status",
    ]);
    assert_eq!(code, 0, "the filter is still on: {stderr}");
    assert!(
        stderr.contains("warning: the setting 'filter-syscalls' is not used by sandbox-run"),
        "{stderr}"
    );
    assert!(!stderr.contains("'timeout'"), "{stderr}");
}

#[test]
fn options_shape_the_sandbox() {
    if !root_or_skip("options_shape_the_sandbox") {
        return;
    }
    let (code, stdout, stderr, _) = sandbox_run_in_store(&[
        "--env",
        "GREETING=hello",
        "--env",
        "TMPDIR=/elsewhere",
        "--system",
        "i686-linux",
        "--sandbox-build-dir",
        "/work",
        "--shm-size",
        "4M",
        "--cores",
        "3",
        "--",
        "/bin/sh",
        "-c",
        "echo greeting=$GREETING tmpdir=$TMPDIR cores=$NIX_BUILD_CORES cwd=$(pwd) machine=$(uname -m); \
         grep -q ' /dev/shm tmpfs .*size=4096k' /proc/mounts && echo shm=4M",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("greeting=hello tmpdir=/work cores=3 cwd=/work machine="),
        "{stdout}"
    );
    if std::env::consts::ARCH == "x86_64" {
        assert!(stdout.contains("machine=i686"), "{stdout}");
    }
    assert!(stdout.contains("shm=4M"), "{stdout}");
}

#[test]
fn host_network_option_keeps_the_hosts_namespace() {
    if !root_or_skip("host_network_option_keeps_the_hosts_namespace") {
        return;
    }
    let host = std::fs::read_link("/proc/self/ns/net").unwrap();
    let (code, stdout, _, _) = sandbox_run_in_store(&[
        "--network",
        "host",
        "--",
        "/bin/sh",
        "-c",
        "readlink /proc/self/ns/net",
    ]);
    assert_eq!(code, 0);
    assert_eq!(stdout.trim(), host.to_string_lossy());
}

#[test]
fn inputs_and_sandbox_paths_from_the_command_line() {
    if !root_or_skip("inputs_and_sandbox_paths_from_the_command_line") {
        return;
    }
    let store = TestStore::new("cli-inputs");
    let input = store.add_dir("aaaa-tool", "data", "tool data");
    let extra = TempDir::new("cli-extra");
    std::fs::write(extra.path.join("f"), "extra").unwrap();
    let output = Command::new(sandbox_run())
        .arg("--store")
        .arg(&store.root.path)
        .args(build_user_args())
        .arg("--input")
        .arg(&input)
        .arg("--sandbox-path")
        .arg(format!("/extra={}", extra.path.join("f").display()))
        .args([
            "--",
            "/bin/sh",
            "-c",
            "cat /nix/store/aaaa-tool/data /extra",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "tool dataextra");
    assert_no_scratch_left(&store);
}

#[test]
fn bad_input_gets_a_clear_error_and_leaves_the_host_unchanged() {
    if !root_or_skip("bad_input_gets_a_clear_error_and_leaves_the_host_unchanged") {
        return;
    }
    let bad_spec = TempDir::new("bad-spec");
    let malformed = bad_spec.path.join("malformed.json");
    std::fs::write(&malformed, "{\"builder\": \"/bin/sh\", ").unwrap();
    let misspelt = bad_spec.path.join("misspelt.json");
    std::fs::write(&misspelt, r#"{"builder": "/bin/sh", "sandbox-pahts": []}"#).unwrap();
    for (file, expected) in [
        (
            &malformed,
            format!(
                "'{}' is not a valid SandboxSpec: EOF while parsing",
                malformed.display()
            ),
        ),
        (&misspelt, "unknown field `sandbox-pahts`".to_string()),
    ] {
        let output = Command::new(sandbox_run())
            .arg("--spec")
            .arg(file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(125), "{stderr}");
        assert!(
            stderr.contains(&expected),
            "expected '{expected}' in: {stderr}"
        );
    }
    let cases: Vec<(Vec<String>, i32, String)> = vec![
        (
            vec!["--sandbox-path".into(), "relative/path".into()],
            2,
            "sandbox path 'relative/path' is not an absolute path".into(),
        ),
        (
            vec!["--sandbox-path".into(), "/a/../../etc=/etc".into()],
            125,
            "sandbox path '/a/../../etc' escapes the chroot".into(),
        ),
        (
            vec!["--sandbox-path".into(), "/data=/no/such/source".into()],
            125,
            "sandbox path '/data=/no/such/source': getting attributes of path '/no/such/source': No such file or directory"
                .into(),
        ),
        (
            vec!["--input".into(), "/nix/store/aaaa-missing".into()],
            125,
            "input path '/nix/store/aaaa-missing' does not exist".into(),
        ),
        (
            vec!["--input".into(), "/etc/passwd".into()],
            125,
            "input '/etc/passwd' is not a store path".into(),
        ),
        (vec!["--".into(), "/nix/store/aaaa-x/bin/nope".into()], 127, "executing '/nix/store/aaaa-x/bin/nope': ENOENT".into()),
        (vec!["--".into(), "sh".into()], 125, "the builder 'sh' must be an absolute path".into()),
        (vec!["--shm-size".into(), "1G,uid=0".into()], 125, "invalid value '1G,uid=0' for 'sandbox-dev-shm-size'".into()),
    ];
    for (args, expected_code, expected_message) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stdout, stderr, store) = sandbox_run_in_store(&args);
        assert_eq!(code, expected_code, "{args:?}: {stderr}");
        assert!(
            stderr.contains(&expected_message),
            "{args:?}: expected '{expected_message}' in: {stderr}"
        );
        assert_eq!(stdout, "", "{args:?}");
        assert_no_scratch_left(&store);
    }
}

#[test]
fn root_needs_a_build_user() {
    if !root_or_skip("root_needs_a_build_user") {
        return;
    }
    // Without build users, root's builds would run as root.
    let output = Command::new(sandbox_run())
        .args([
            "--option",
            "build-users-group",
            "",
            "--",
            "/bin/sh",
            "-c",
            "true",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("hermetic never does"), "{stderr}");
    assert!(
        stderr.contains("set build-users-group = nixbld"),
        "{stderr}"
    );
    let output = Command::new(sandbox_run())
        .args(["--build-user", "0:0", "--", "/bin/sh", "-c", "true"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(125));
}

#[test]
fn print_plan_shows_spec_and_mounts_and_runs_nothing() {
    if !root_or_skip("print_plan_shows_spec_and_mounts_and_runs_nothing") {
        return;
    }
    let (code, stdout, stderr, store) =
        sandbox_run_in_store(&["--print-plan", "--", "/bin/sh", "-c", "echo must-not-run"]);
    assert_eq!(code, 0, "{stderr}");
    let plan: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(plan["spec"]["builder"], "/bin/sh");
    assert_eq!(plan["spec"]["args"][1], "echo must-not-run");
    assert_eq!(
        plan["process"]["uid-map"],
        format!("1000 {} 1\n", hermetic_tests::build_user().uid)
    );
    let steps = plan["mount-plan"]["steps"].as_array().unwrap();
    assert_eq!(steps[0]["op"], "make-private");
    assert_eq!(steps.last().unwrap()["op"], "pivot-root");
    assert!(steps.iter().any(|s| s["op"] == "proc"));
    assert!(!stdout.contains("must-not-run\n"));
    let seccomp = &plan["process"]["seccomp"];
    assert_eq!(seccomp["name"], "default");
    assert_eq!(seccomp["default-action"], "ENOSYS");
    assert_eq!(seccomp["block-nested-userns"], false);
    if std::env::consts::ARCH == "x86_64" {
        assert_eq!(
            seccomp["abis"],
            serde_json::json!(["x86_64", "i386", "x32"])
        );
    }
    let rules: Vec<&str> = seccomp["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(
        rules.contains(&"fchmodat2: EPERM if arg2 & 0o2000 == 0o2000"),
        "{rules:?}"
    );
    assert!(rules.contains(&"setxattr: ENOTSUP"), "{rules:?}");
    assert_no_scratch_left(&store);

    let (_, stdout, _, _) =
        sandbox_run_in_store(&["--print-plan", "--block-nested-userns", "--", "/bin/sh"]);
    let plan: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(
        plan["process"]["seccomp"]["name"],
        "default+block-nested-userns"
    );
    assert_eq!(plan["process"]["seccomp"]["block-nested-userns"], true);
    let (_, stdout, _, _) =
        sandbox_run_in_store(&["--print-plan", "--no-filter-syscalls", "--", "/bin/sh"]);
    let plan: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert!(plan["process"].get("seccomp").is_none());
}

/// Every key of a JSON document, at any depth.
fn json_keys(value: &serde_json::Value, keys: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map {
                keys.push(key.clone());
                json_keys(inner, keys);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| json_keys(v, keys)),
        _ => {}
    }
}

#[test]
fn a_printed_plan_shows_the_run_policy_and_reads_back_as_a_spec() {
    if !root_or_skip("a_printed_plan_shows_the_run_policy_and_reads_back_as_a_spec") {
        return;
    }
    let (code, stdout, stderr, store) = sandbox_run_in_store(&[
        "--print-plan",
        "--option",
        "max-silent-time",
        "7",
        "--",
        "/bin/sh",
        "-c",
        "echo from-the-plan",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let plan: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(plan["run-policy"]["max-silent-time"], 7);
    assert!(plan["run-policy"]["build-users"].is_object(), "{stdout}");
    let mut keys = Vec::new();
    json_keys(&plan, &mut keys);
    // Environment variables are the builder's, not the plan's keys.
    let env_names: Vec<&str> = plan["spec"]["env"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let snake: Vec<&String> = keys
        .iter()
        .filter(|k| k.contains('_') && !env_names.contains(&k.as_str()))
        .collect();
    assert!(snake.is_empty(), "keys not in kebab-case: {snake:?}");
    let steps = plan["mount-plan"]["steps"].as_array().unwrap();
    let mkdir = steps.iter().find(|s| s["op"] == "mkdir").unwrap();
    assert!(
        mkdir["mode"].as_str().is_some_and(|m| m.starts_with('0')),
        "{mkdir}"
    );

    let file = TempDir::new("printed-plan");
    let path = file.path.join("plan.json");
    std::fs::write(&path, &stdout).unwrap();
    let output = Command::new(sandbox_run())
        .arg("--spec")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(printed.contains("from-the-plan"), "{printed}");
    assert_no_scratch_left(&store);

    // The plan's run policy is the run's: an option that would change it
    // is refused, not silently overridden.
    let output = Command::new(sandbox_run())
        .arg("--spec")
        .arg(&path)
        .args(["--option", "timeout", "3"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains("'--option timeout' conflicts with the run policy in"),
        "{stderr}"
    );
}

#[test]
fn keep_says_where_and_keeps() {
    if !root_or_skip("keep_says_where_and_keeps") {
        return;
    }
    let (code, _, stderr, store) =
        sandbox_run_in_store(&["--keep", "--", "/bin/sh", "-c", "echo kept > /build/file"]);
    assert_eq!(code, 0, "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("note: keeping build directory '"))
        .unwrap_or_else(|| panic!("no note in: {stderr}"));
    let dir = line
        .trim_start_matches("note: keeping build directory '")
        .trim_end_matches('\'');
    assert_eq!(
        std::fs::read_to_string(std::path::Path::new(dir).join("file")).unwrap(),
        "kept\n"
    );
    assert_eq!(HostSnapshot::take(&store.dir).scratch.len(), 1);
}

#[test]
fn build_dir_option_uses_the_given_directory() {
    if !root_or_skip("build_dir_option_uses_the_given_directory") {
        return;
    }
    let dir = TempDir::new("cli-build-dir");
    let user = hermetic_tests::build_user();
    nix::unistd::chown(&dir.path, Some(user.uid.into()), Some(user.gid.into())).unwrap();
    let (code, _, stderr, _) = sandbox_run_in_store(&[
        "--build-dir",
        &dir.path.display().to_string(),
        "--",
        "/bin/sh",
        "-c",
        "echo here > /build/result",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        std::fs::read_to_string(dir.path.join("result")).unwrap(),
        "here\n"
    );
}

#[test]
fn sigterm_kills_the_sandbox_and_cleans_up() {
    if !root_or_skip("sigterm_kills_the_sandbox_and_cleans_up") {
        return;
    }
    let store = TestStore::new("sigterm");
    let mut child = Command::new(sandbox_run())
        .arg("--store")
        .arg(&store.root.path)
        .args(build_user_args())
        .args(["--", "/bin/sh", "-c", "echo started; sleep 300"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 8];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    assert_eq!(&first, b"started\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let started = Instant::now();
    let status = child.wait().unwrap();
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(status.code(), Some(143), "128 + SIGTERM");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("interrupted by signal 15"), "{stderr}");
    assert_no_scratch_left(&store);
}

#[test]
fn shell_wires_the_terminal_through() {
    if !root_or_skip("shell_wires_the_terminal_through") {
        return;
    }
    // sandbox-run --shell on a pseudo-terminal of the test's own: type into
    // it, read the shell's answer, and get its exit status.
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = || {
        Stdio::from(std::fs::File::from(
            pty.slave.as_fd().try_clone_to_owned().unwrap(),
        ))
    };
    let mut child = Command::new(sandbox_run())
        .args(build_user_args())
        .args(["--shell", "--", "/bin/sh"])
        .stdin(slave())
        .stdout(slave())
        .stderr(slave())
        .spawn()
        .unwrap();
    drop(pty.slave);
    let mut master = std::fs::File::from(pty.master);
    master
        .write_all(b"tty -s && echo tty-ok; echo sum=$((40+2)); exit 3\n")
        .unwrap();
    let mut seen = Vec::new();
    let reader = std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(n) = master.read(&mut buffer) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buffer[..n]);
        }
        seen
    });
    let status = child.wait().unwrap();
    let seen = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
    assert_eq!(status.code(), Some(3), "{seen}");
    assert!(seen.contains("tty-ok"), "{seen}");
    assert!(seen.contains("sum=42"), "{seen}");
}

#[test]
fn doctor_reports_this_host() {
    // Its own configuration, not whatever the host's nix.conf says.
    let conf = hermetic_tests::TempDir::new("doctor-conf");
    std::fs::write(conf.path.join("nix.conf"), "").unwrap();
    let output = Command::new(sandbox_run())
        .arg("doctor")
        .env("NIX_CONF_DIR", &conf.path)
        .env_remove("NIX_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with("hermetic doctor: kernel "), "{stdout}");
    for check in [
        "namespaces:",
        "overlayfs:",
        "cgroups:",
        "seccomp:",
        "/bin/sh:",
    ] {
        assert!(stdout.contains(check), "no '{check}' line: {stdout}");
    }
    // This host can make sandboxes (the rest of the suite proves it), so
    // the doctor must say so.
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("ok    namespaces:"), "{stdout}");
    assert!(
        stdout.contains("verdict: sandboxes can be made here"),
        "{stdout}"
    );
}

#[test]
fn doctor_fails_a_configuration_builds_cannot_run_with() {
    if !root_or_skip("doctor_fails_a_configuration_builds_cannot_run_with") {
        return;
    }
    let conf = hermetic_tests::TempDir::new("doctor-broken-conf");
    let store = hermetic_tests::TempDir::new("doctor-store");
    hermetic_tests::set_mode(&store.path, 0o777);
    let doctor = |text: &str| {
        std::fs::write(conf.path.join("nix.conf"), text).unwrap();
        let out = Command::new(sandbox_run())
            .arg("doctor")
            .env("NIX_CONF_DIR", &conf.path)
            .env("NIX_STORE_DIR", &store.path)
            .env_remove("NIX_CONFIG")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, said) =
        doctor("build-users-group = no-such-group\npasta-path = /nonexistent/pasta\n");
    assert_eq!(code, Some(1), "{said}");
    for line in [
        "FAIL  build users: the group 'no-such-group' specified in 'build-users-group' does not exist",
        "FAIL  pasta: '/nonexistent/pasta' (pasta-path) cannot be run",
        "is mode 0777: anyone may remove or replace store paths",
    ] {
        assert!(said.contains(line), "no '{line}' in: {said}");
    }
    let (code, said) = doctor("sandbox = true = yes\n");
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("FAIL  nix.conf: "), "{said}");
    // Repaired: the doctor passes.
    hermetic_tests::set_mode(&store.path, 0o1775);
    let (code, said) =
        doctor("experimental-features = auto-allocate-uids\nauto-allocate-uids = true\n");
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains("ok    build users: auto-allocated: 128 slots"),
        "{said}"
    );
}

/// `--store` means what it means to `hermetic` and Nix (issue 19): a root
/// or `local?root=DIR`, whose store directory is shown as /nix/store; a
/// store directory given as a root, a daemon and an unknown URI are
/// refused with what to give instead, and nothing is made.
#[test]
fn store_takes_what_hermetic_and_nix_take() {
    if !root_or_skip("store_takes_what_hermetic_and_nix_take") {
        return;
    }
    let store = TestStore::new("cli-store-uri");
    let input = store.add_dir("aaaa-in", "f", "held");
    let run = |store_arg: &str| {
        let mut args = vec!["--store".to_string(), store_arg.to_string()];
        args.extend(build_user_args());
        args.extend(["--input".into(), input.display().to_string()]);
        args.extend(["--", "/bin/sh", "-c", "cat /nix/store/aaaa-in/f"].map(String::from));
        Command::new(sandbox_run()).args(&args).output().unwrap()
    };
    let root = store.root.path.display().to_string();
    for given in [root.clone(), format!("local?root={root}")] {
        let out = run(&given);
        assert!(
            out.status.success(),
            "{given}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "held", "{given}");
    }
    let cwd = TempDir::new("cli-store-cwd");
    for (given, says) in [
        (
            store.dir.display().to_string(),
            "there is no store directory at",
        ),
        (
            "daemon".to_string(),
            "don't know how to open Nix store 'daemon'",
        ),
        (
            "local?root=x&y=z".to_string(),
            "hermetic knows no store setting 'y=z'",
        ),
    ] {
        let out = Command::new(sandbox_run())
            .current_dir(&cwd.path)
            .args(["--store", &given, "--", "/bin/true"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{given}: {stderr}");
        assert!(stderr.contains(says), "{given}: {stderr}");
        let made: Vec<_> = std::fs::read_dir(&cwd.path).unwrap().flatten().collect();
        assert!(made.is_empty(), "{given} made {made:?}");
    }
}

/// `--timings` prints the phase table of the run, the child's steps
/// between clone and execve included (timed in a page shared with it), in
/// the order they happen, and the run is the same: its output, its exit
/// status.
#[test]
fn timings_show_each_phase_of_a_start_the_childs_included() {
    if !root_or_skip("timings_show_each_phase_of_a_start_the_childs_included") {
        return;
    }
    let (code, stdout, stderr, store) =
        sandbox_run_in_store(&["--timings", "--", "/bin/sh", "-c", "echo ran; exit 3"]);
    assert_eq!((code, stdout.as_str()), (3, "ran\n"), "{stderr}");
    assert_no_scratch_left(&store);
    let phases: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.split_once(" µs  ").map(|(_, phase)| phase))
        .collect();
    let order = [
        "plan (checks, mount plan compiled)",
        "clone (namespaces made)",
        "mounts (inputs, /dev, /proc, /etc, /tmp)",
        "pivot_root",
        "identity switch",
        "seccomp load",
        "execve seen by the parent",
        "program runs, exits, reaped",
        "scratch unmounted and removed",
        "in all",
    ];
    let mut at = 0;
    for phase in order {
        let found = phases[at..]
            .iter()
            .position(|p| *p == phase)
            .unwrap_or_else(|| panic!("'{phase}' missing or out of order: {stderr}"));
        at += found + 1;
    }
}
