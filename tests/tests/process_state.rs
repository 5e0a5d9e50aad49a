//! The builder's process state (SPEC B63–B65, B70, B75, B76, D5, D6).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hermetic_tests::{
    TestStore, build_user_args, probe, probe_spec, root_or_skip, run, sandbox_run,
};

#[test]
fn umask_core_limit_and_no_new_privs() {
    if !root_or_skip("umask_core_limit_and_no_new_privs") {
        return;
    }
    let p = probe(
        "echo umask=$(umask); echo core=$(ulimit -c); \
         grep -E '^(NoNewPrivs|Umask)' /proc/self/status | tr -d '\\t' | tr ':' '='",
    );
    assert_eq!(p.get("umask"), "0022", "D6");
    assert_eq!(p.get("core"), "0", "B65");
    assert_eq!(p.get("NoNewPrivs"), "1", "B70");
    assert_eq!(p.get("Umask"), "0022");
}

#[test]
fn every_capability_is_zeroed() {
    if !root_or_skip("every_capability_is_zeroed") {
        return;
    }
    let p = probe("grep '^Cap' /proc/self/status | tr -d '\\t' | tr ':' '='");
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(p.get(set), "0000000000000000", "D5: {set}");
    }
}

#[test]
fn aslr_is_off_and_i686_gets_a_32_bit_personality() {
    if !root_or_skip("aslr_is_off_and_i686_gets_a_32_bit_personality") {
        return;
    }
    let script = "echo personality=$(cat /proc/self/personality); echo machine=$(uname -m)";
    let native = probe(script);
    assert_eq!(
        native.get("personality"),
        "00040000",
        "B76: ADDR_NO_RANDOMIZE"
    );
    if std::env::consts::ARCH != "x86_64" {
        return;
    }
    assert_eq!(native.get("machine"), "x86_64");
    let mut spec = probe_spec(script);
    spec.system = "i686-linux".into();
    let p = run(&spec).unwrap();
    assert_eq!(p.get("personality"), "00040008", "B75: PER_LINUX32");
    assert_eq!(p.get("machine"), "i686");
}

#[test]
fn only_stdio_is_open_and_stdin_is_dev_null() {
    if !root_or_skip("only_stdio_is_open_and_stdin_is_dev_null") {
        return;
    }
    // An inheritable descriptor of the supervising process must not reach
    // the builder.
    let leaked = std::fs::File::open("/etc/passwd").unwrap();
    let raw = std::os::fd::AsRawFd::as_raw_fd(&leaked);
    nix::fcntl::fcntl(
        &leaked,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .unwrap();
    // Replace the shell by `ls`, which lists the descriptors it was given
    // (plus the one it reads the listing through).
    let listing = probe("exec ls -l /proc/self/fd");
    let fds: Vec<(u32, String)> = listing
        .output
        .lines()
        .filter_map(|line| {
            let (left, target) = line.split_once(" -> ")?;
            let fd = left.split_whitespace().last()?.parse().ok()?;
            Some((fd, target.to_string()))
        })
        .collect();
    let open: Vec<u32> = fds
        .iter()
        .filter(|(_, target)| target != "/proc/1/fd")
        .map(|(fd, _)| *fd)
        .collect();
    assert_eq!(
        open,
        vec![0, 1, 2],
        "B63: only 0-2 at exec:\n{}",
        listing.output
    );
    assert_eq!(fds[0].1, "/dev/null", "stdin is /dev/null");
    assert!(
        fds[1].1.starts_with("/dev/pts/"),
        "stdout is a pty: {}",
        fds[1].1
    );
    let p = probe(&format!(
        "(cat <&{raw}) 2>/dev/null && echo leaked=yes || echo leaked=no"
    ));
    drop(leaked);
    assert_eq!(p.get("leaked"), "no");
}

#[test]
fn stdout_and_stderr_are_one_pty_and_reopenable() {
    if !root_or_skip("stdout_and_stderr_are_one_pty_and_reopenable") {
        return;
    }
    // Output written through /dev/stdout and /dev/stderr arrives, in order,
    // on one stream (Nix gives the builder a pty whose slave it owns).
    let p = probe(
        "echo one > /dev/stdout; echo two > /dev/stderr; echo three; [ -t 1 ] && echo tty=yes",
    );
    assert!(p.output.starts_with("one\ntwo\nthree\n"), "{:?}", p.output);
    assert_eq!(p.get("tty"), "yes");
}

#[test]
fn builder_leads_a_new_session_without_a_terminal() {
    if !root_or_skip("builder_leads_a_new_session_without_a_terminal") {
        return;
    }
    // /proc/1/stat fields 6 and 7: session and controlling tty.
    let p = probe("set -- $(sed 's/.*) //' /proc/1/stat); echo session=$4; echo ctty=$5");
    assert_eq!(p.get("session"), "1");
    assert_eq!(p.get("ctty"), "0");
}

#[test]
fn signals_start_at_their_defaults() {
    if !root_or_skip("signals_start_at_their_defaults") {
        return;
    }
    // The Rust runtime of the supervisor ignores SIGPIPE; the builder must
    // not inherit that (nor any other ignored or blocked signal). Busybox's
    // shell ignores SIGQUIT for itself, so look at a program it starts.
    let p = probe("grep -E '^Sig(Ign|Blk)' /proc/self/status | tr -d '\\t' | tr ':' '='");
    assert_eq!(p.get("SigIgn"), "0000000000000000");
    assert_eq!(p.get("SigBlk"), "0000000000000000");
}

#[test]
fn the_sandbox_dies_with_its_supervisor() {
    if !root_or_skip("the_sandbox_dies_with_its_supervisor") {
        return;
    }
    // B63: parent-death signal SIGKILL. Kill sandbox-run with SIGKILL (it
    // can clean nothing up) and watch its PID 1 vanish.
    let store = TestStore::new("pdeathsig");
    let store_root = store.root.path.display().to_string();
    let mut args = vec!["--store".to_string(), store_root];
    args.extend(build_user_args());
    args.extend([
        "--".into(),
        "/bin/sh".into(),
        "-c".into(),
        "echo started; sleep 100".into(),
    ]);
    let mut supervisor = Command::new(sandbox_run())
        .args(&args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(supervisor.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "started\n");
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", supervisor.id())).unwrap();
    let pid1: i32 = children
        .split_whitespace()
        .next()
        .expect("the sandbox's PID 1")
        .parse()
        .unwrap();
    supervisor.kill().unwrap();
    supervisor.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{pid1}")).exists() {
        assert!(
            Instant::now() < deadline,
            "the sandbox outlived its supervisor"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
