//! An ordinary user's sandbox (Nix single-user): the caller's own ids
//! outside, the same sandbox inside. Runs `sandbox-run` as the test user.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use hermetic_namespaces::{
    Exec, IdMaps, LaunchRequest, Namespaces, SetupFailure, Stdio, UserNamespace, launch,
};
use hermetic_sys::CStringArray;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::sys::wait::WaitStatus;

use hermetic_tests::{
    TEST_USER, TempDir, sandbox_run_as_test_user, sandbox_run_for_test_user, test_user_or_skip,
};

fn test_user() -> nix::unistd::User {
    nix::unistd::User::from_name(TEST_USER).unwrap().unwrap()
}

/// A store directory owned by the test user.
fn user_store() -> (TempDir, String) {
    let root = TempDir::new("user-store");
    hermetic_tests::set_mode(&root.path, 0o755);
    let store = root.path.join("nix/store");
    std::fs::create_dir_all(&store).unwrap();
    let user = test_user();
    for dir in [root.path.join("nix"), store.clone()] {
        nix::unistd::chown(&dir, Some(user.uid), Some(user.gid)).unwrap();
    }
    let text = store.display().to_string();
    (root, text)
}

#[test]
fn an_ordinary_user_gets_the_same_sandbox() {
    if !test_user_or_skip("an_ordinary_user_gets_the_same_sandbox") {
        return;
    }
    let (root, store) = user_store();
    let output = sandbox_run_as_test_user(&[
        "--store",
        &root.path.display().to_string(),
        "--",
        "/bin/sh",
        "-c",
        "echo id=$(id -u):$(id -g); echo root=$(ls / | tr '\\n' ' '); echo host=$(hostname); \
         echo uid_map=$(cat /proc/self/uid_map); echo caps=$(grep CapEff /proc/self/status | cut -f2); \
         echo nnp=$(grep NoNewPrivs /proc/self/status | cut -f2); echo ifaces=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '); \
         echo etc=$(stat -c %a /etc); echo x > /etc/x 2>/dev/null || echo etc_write=denied; \
         mkdir /nix/store/out && echo stored=yes",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let value = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in {stdout}"))
            .to_string()
    };
    let user = test_user();
    assert_eq!(value("id"), "1000:100");
    assert_eq!(value("root").trim(), "bin build dev etc nix proc tmp");
    assert_eq!(value("host"), "localhost");
    assert_eq!(
        value("uid_map").split_whitespace().collect::<Vec<_>>(),
        vec!["1000".to_string(), user.uid.to_string(), "1".to_string()]
    );
    assert_eq!(value("caps"), "0000000000000000");
    assert_eq!(value("nnp"), "1");
    assert_eq!(value("ifaces"), "lo");
    assert_eq!(value("etc"), "555");
    assert_eq!(value("etc_write"), "denied");
    assert_eq!(value("stored"), "yes");
    // Nothing is left in the store directory.
    let left: Vec<_> = std::fs::read_dir(&store).unwrap().flatten().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn an_ordinary_users_inputs_are_bound_through_the_overlay() {
    if !test_user_or_skip("an_ordinary_users_inputs_are_bound_through_the_overlay") {
        return;
    }
    let (root, store) = user_store();
    let input = std::path::Path::new(&store).join("aaaa-input");
    std::fs::create_dir(&input).unwrap();
    std::fs::write(input.join("f"), "user input").unwrap();
    let user = test_user();
    nix::unistd::chown(&input, Some(user.uid), Some(user.gid)).unwrap();
    let output = sandbox_run_as_test_user(&[
        "--store",
        &root.path.display().to_string(),
        "--keep",
        "--input",
        &input.display().to_string(),
        "--",
        "/bin/sh",
        "-c",
        "cat /nix/store/aaaa-input/f; echo out > /nix/store/bbbb-out",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "user input");
    // The output landed in the kept scratch directory, in the store
    // directory, owned by the user.
    let scratch = std::fs::read_dir(&store)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with(".hermetic-"))
        .expect("the kept scratch directory");
    let out = scratch.path().join("store/bbbb-out");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "out\n");
    assert_eq!(std::fs::metadata(&out).unwrap().uid(), user.uid.as_raw());
}

#[test]
fn an_ordinary_user_cannot_pick_other_ids() {
    if !test_user_or_skip("an_ordinary_user_cannot_pick_other_ids") {
        return;
    }
    let output = sandbox_run_as_test_user(&["--build-user", "0:0", "--", "/bin/sh", "-c", "true"]);
    assert_eq!(output.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("only root can run a sandbox as another user"),
        "{stderr}"
    );
}

/// Runs `sandbox-run ARGS` as the test user in a user namespace of its own
/// whose `user.max_user_namespaces` is 0 (so the host is untouched), made
/// with hermetic's own launcher. Returns the exit status, stdout and stderr.
fn sandbox_run_without_user_namespaces(args: &[&str]) -> (i32, String, String) {
    let user = test_user();
    let maps = IdMaps {
        uid_map: "0 0 65536\n".into(),
        gid_map: "0 0 65536\n".into(),
        deny_setgroups: false,
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
    };
    let setup = || -> Result<(), SetupFailure> {
        let fail = |errno| SetupFailure { step: 0, errno };
        let fd = nix::fcntl::open(
            c"/proc/sys/user/max_user_namespaces",
            OFlag::O_WRONLY,
            Mode::empty(),
        )
        .map_err(fail)?;
        nix::unistd::write(&fd, b"0").map_err(fail)?;
        Ok(())
    };
    let binary = sandbox_run_for_test_user();
    let mut argv = vec![c"sandbox-run".to_owned()];
    argv.extend(args.iter().map(|a| CString::new(*a).unwrap()));
    let exec = Exec {
        program: CString::new(binary.as_os_str().as_encoded_bytes()).unwrap(),
        argv: CStringArray::new(argv),
        envp: CStringArray::new(vec![c"PATH=/usr/bin:/bin".into()]),
        cwd: c"/".into(),
        umask: 0o022,
        personality: None,
        no_core_dumps: false,
        drop_capabilities: true,
        last_capability: hermetic_host::last_capability(),
        no_new_privs: false,
        controlling_terminal: false,
        seccomp: None,
    };
    let devnull = std::fs::File::open("/dev/null").unwrap();
    let (stdout_read, stdout_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
    let (stderr_read, stderr_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
    let request = LaunchRequest {
        namespaces: Namespaces {
            mount: false,
            pid: false,
            net: false,
            uts: false,
            ipc: false,
        },
        user_namespace: UserNamespace::AtClone(maps),
        clear_groups: false,
        uts: None,
        before_start: None,
        cgroup_namespace: false,
        setup: &setup,
        late_network: None,
        exec: &exec,
        stdio: Stdio {
            stdin: devnull.as_fd(),
            stdout: stdout_write.as_fd(),
            stderr: stderr_write.as_fd(),
        },
    };
    let child = launch(&request).expect("launching sandbox-run in a user namespace");
    drop(stdout_write);
    drop(stderr_write);
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::fs::File::from(stdout_read)
            .read_to_string(&mut text)
            .unwrap();
        text
    });
    let mut stderr = String::new();
    std::fs::File::from(stderr_read)
        .read_to_string(&mut stderr)
        .unwrap();
    let stdout = reader.join().unwrap();
    let code = match nix::sys::wait::waitpid(child.pid, None).unwrap() {
        WaitStatus::Exited(_, code) => code,
        other => panic!("sandbox-run ended with {other:?}"),
    };
    (code, stdout, stderr)
}

#[test]
fn disabled_user_namespaces_are_named_with_their_sysctl() {
    if !test_user_or_skip("disabled_user_namespaces_are_named_with_their_sysctl") {
        return;
    }
    let (code, _, stderr) = sandbox_run_without_user_namespaces(&["--", "/bin/sh", "-c", "true"]);
    assert_eq!(code, 125, "{stderr}");
    assert!(
        stderr.contains(
            "user namespaces do not work on this system: user namespaces appear to be disabled; \
             check '/proc/sys/user/max_user_namespaces'"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("sysctl -w user.max_user_namespaces="),
        "{stderr}"
    );
}

#[test]
fn doctor_fails_where_no_sandbox_can_be_made() {
    if !test_user_or_skip("doctor_fails_where_no_sandbox_can_be_made") {
        return;
    }
    let (code, stdout, stderr) = sandbox_run_without_user_namespaces(&["doctor"]);
    assert_ne!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("running as an ordinary user"), "{stdout}");
    assert!(
        stdout.contains("FAIL  namespaces: clone() failed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("check '/proc/sys/user/max_user_namespaces'"),
        "{stdout}"
    );
    assert!(
        stdout.contains("fix: sysctl -w user.max_user_namespaces="),
        "{stdout}"
    );
    assert!(
        stdout.contains("verdict: no sandbox can be made here"),
        "{stdout}"
    );
}

#[test]
fn an_ordinary_user_builds_every_kind_of_output_in_a_store_it_owns() {
    if !test_user_or_skip("an_ordinary_user_builds_every_kind_of_output_in_a_store_it_owns") {
        return;
    }
    let (root, _) = user_store();
    let user = test_user();
    let conf = root.path.join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(
        conf.join("nix.conf"),
        "sandbox = true\nextra-sandbox-paths = /bin/sh=/bin/busybox\n",
    )
    .unwrap();
    let hermetic = |args: &[&str]| {
        std::process::Command::new("setpriv")
            .arg(format!("--reuid={}", user.uid))
            .arg(format!("--regid={}", user.gid))
            .arg("--init-groups")
            .arg("--reset-env")
            .arg("env")
            .arg(format!("NIX_CONF_DIR={}", conf.display()))
            .arg(hermetic_tests::hermetic_for_test_user())
            .arg("--store")
            .arg(&root.path)
            .args(args)
            .current_dir(&root.path)
            .output()
            .unwrap()
    };
    let write = |name: &str, json: String| {
        let file = root.path.join(name);
        std::fs::write(&file, json).unwrap();
        file.display().to_string()
    };
    let drv = |name: &str, script: &str, inputs: &str, outputs: &str| {
        format!(
            r#"{{"name":"{name}","system":"x86_64-linux","builder":"/bin/sh","args":["-c","{script}"],
               "env":{{}},"inputSrcs":[{inputs}],"inputDrvs":{{}},"outputs":{{{outputs}}}}}"#
        )
    };
    // An input first, so that the rest are built with inputs (the store
    // directory through an overlay).
    let file = write(
        "input.json",
        drv(
            "input",
            "mkdir -p $out/sub; echo in > $out/sub/f",
            "",
            r#""out":{}"#,
        ),
    );
    let out = hermetic(&["build", &file]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let input = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let outputs = r#""out":{},"dev":{}"#;
    for (name, script) in [
        ("file", "echo f > $out; echo d > $dev"),
        ("dir", "mkdir -p $out/a/b; echo x > $out/a/b/f; mkdir $dev"),
        ("symlink", "ln -s /nowhere $out; ln -s $out $dev"),
        // Closed to everyone, the owner too: Nix's canonicalisation opens
        // them; so must hermetic's.
        (
            "closed",
            "mkdir -p $out/a/b; echo x > $out/a/b/f; chmod 0 $out/a/b $out/a; mkdir $dev; chmod 0 $dev",
        ),
        (
            "read-only",
            "mkdir -p $out/a; echo x > $out/a/f; chmod -R a-w $out; echo > $dev; chmod 0 $dev",
        ),
    ] {
        let script = format!("cat {input}/sub/f > /dev/null; {script}");
        let file = write(
            &format!("{name}.json"),
            drv(name, &script, &format!("\"{input}\""), outputs),
        );
        let out = hermetic(&["build", &file]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).lines().count(),
            2,
            "{name}"
        );
    }
    let verify = hermetic(&["store", "verify", "--check-contents"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    // Nothing was left in the store directory but store paths.
    let stray: Vec<_> = std::fs::read_dir(root.path.join("nix/store"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') && n != ".links" || n.ends_with("-hermetic-stage"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}
