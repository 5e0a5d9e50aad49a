//! Supervision: output as it comes, exit statuses, and nothing left behind.

use std::io::Write;
use std::time::{Duration, Instant};

use hermetic_runtime::{ExitStatus, RunOptions, Sandbox};
use hermetic_tests::{HostSnapshot, TempDir, TestStore, probe, probe_spec, root_or_skip, run_kept};

#[test]
fn exit_status_and_signal_come_back() {
    if !root_or_skip("exit_status_and_signal_come_back") {
        return;
    }
    assert_eq!(probe("exit 0").status, ExitStatus::Exited(0));
    assert_eq!(probe("exit 42").status, ExitStatus::Exited(42));
    // PID 1 ignores signals it has no handler for, from inside the
    // sandbox; the kernel's SIGKILL at the hard CPU-time limit still ends
    // it, and that comes back as a signal.
    let p =
        probe("kill -TERM $$; kill -KILL $$; echo ignored=yes; ulimit -t 1; while :; do :; done");
    assert_eq!(p.get("ignored"), "yes");
    assert_eq!(p.status, ExitStatus::Signaled(9));
    assert_eq!(p.status.code(), 137);
}

/// A writer that collects the sandbox's output and, once it has seen
/// `first`, creates `go` in the build directory the builder waits on.
struct Releaser {
    seen: Vec<u8>,
    go: std::path::PathBuf,
}

impl Write for Releaser {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.seen.extend_from_slice(buf);
        if String::from_utf8_lossy(&self.seen).contains("first\n") && !self.go.exists() {
            std::fs::write(&self.go, "")?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn output_streams_while_the_builder_runs() {
    if !root_or_skip("output_streams_while_the_builder_runs") {
        return;
    }
    // The builder prints `first`, then waits until the test has received
    // it (the test then creates /build/go). Output that only arrived at the
    // end would leave it waiting until it gives up.
    let build = TempDir::new("streaming");
    let user = hermetic_tests::build_user();
    nix::unistd::chown(&build.path, Some(user.uid.into()), Some(user.gid.into())).unwrap();
    let mut spec = probe_spec(
        "echo first; i=0; while [ ! -e /build/go ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done; \
         [ -e /build/go ] && echo second || echo gave-up",
    );
    spec.build_dir = Some(build.path.clone());
    let sandbox = Sandbox::prepare(&spec).unwrap();
    let mut releaser = Releaser {
        seen: Vec::new(),
        go: build.path.join("go"),
    };
    sandbox.run(RunOptions::default(), &mut releaser).unwrap();
    assert_eq!(String::from_utf8_lossy(&releaser.seen), "first\nsecond\n");
}

#[test]
fn background_processes_die_with_pid_1() {
    if !root_or_skip("background_processes_die_with_pid_1") {
        return;
    }
    // A double-forked sleeper in a new session is still in the PID
    // namespace, so it dies with PID 1.
    let marker = format!("hermetic-sleeper-{}", std::process::id());
    let p = probe(&format!(
        "(setsid sh -c 'exec -a {marker} sleep 300' &) ; sleep 0.2; echo started=yes"
    ));
    assert_eq!(p.get("started"), "yes");
    let found = std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
        std::fs::read(entry.path().join("cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(&marker))
            .unwrap_or(false)
    });
    assert!(!found, "a sandbox process outlived PID 1");
}

#[test]
fn kept_scratch_holds_the_build_directory_and_tmp() {
    if !root_or_skip("kept_scratch_holds_the_build_directory_and_tmp") {
        return;
    }
    let spec = probe_spec("echo b > /build/file; echo t > /tmp/file");
    let (_, kept) = run_kept(&spec);
    assert_eq!(
        std::fs::read_to_string(kept.build.as_ref().unwrap().join("file")).unwrap(),
        "b\n"
    );
    assert_eq!(
        std::fs::read_to_string(kept.tmp.as_ref().unwrap().join("file")).unwrap(),
        "t\n"
    );
    kept.remove().unwrap();
    assert!(!kept.dir.exists());
}

#[test]
fn a_cancelled_run_kills_the_sandbox_and_cleans_up() {
    if !root_or_skip("a_cancelled_run_kills_the_sandbox_and_cleans_up") {
        return;
    }
    let store = TestStore::new("cancel");
    let mut spec = probe_spec("echo running; sleep 300");
    spec.real_store_dir = Some(store.dir.clone());
    let sandbox = Sandbox::prepare(&spec).unwrap();
    // The cancel descriptor: the read end of a pipe whose write end a
    // thread writes to after a moment.
    let (read, write) = nix::unistd::pipe().unwrap();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        nix::unistd::write(&write, b"x").unwrap();
    });
    let started = Instant::now();
    let outcome = sandbox
        .run(
            RunOptions {
                cancel: Some(std::os::fd::AsFd::as_fd(&read)),
                ..Default::default()
            },
            &mut Vec::new(),
        )
        .unwrap();
    writer.join().unwrap();
    assert!(outcome.cancelled);
    assert_eq!(outcome.status, ExitStatus::Signaled(9));
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(HostSnapshot::take(&store.dir).scratch.is_empty());
}
