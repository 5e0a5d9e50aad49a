//! One local user cannot stop the daemon for the others (issue 14, point
//! 4): connections are capped per user and in all, a client that does not
//! greet is hung up on, and a daemon that cannot have a thread refuses the
//! client and lives on. Each under a real limit: a descriptor limit set
//! with prlimit, a pids cgroup.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use hermetic_tests::daemon::{Daemon, RawClient};
use hermetic_tests::{TEST_USER, test_user_or_skip, workspace_binary};

/// Connections held open by `hold-connections`, run as a user.
struct Held {
    child: Child,
    stdin: Option<ChildStdin>,
    /// What it printed for each connection.
    lines: Vec<String>,
}

impl Held {
    /// Opens `count` connections to `daemon` as `user`, greeting on each
    /// (`greet`) or saying nothing (`silent`), and waits until all are
    /// answered or hung up on.
    fn open(daemon: &Daemon, user: &str, count: usize, mode: &str) -> Held {
        let user = nix::unistd::User::from_name(user).unwrap().unwrap();
        let mut child = Command::new("setpriv")
            .arg(format!("--reuid={}", user.uid))
            .arg(format!("--regid={}", user.gid))
            .arg("--init-groups")
            .arg(workspace_binary("hold-connections"))
            .arg(daemon.socket())
            .arg(count.to_string())
            .arg(mode)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let mut lines = Vec::new();
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            if line == "held" {
                break;
            }
            lines.push(line);
        }
        Held {
            child,
            stdin,
            lines,
        }
    }

    /// How many connections got this answer.
    fn count(&self, answer: &str) -> usize {
        self.lines.iter().filter(|l| l.starts_with(answer)).count()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        let _ = self.child.wait();
    }
}

/// Whether the daemon process still runs.
fn alive(daemon: &mut Daemon) -> bool {
    daemon
        .child
        .as_mut()
        .is_some_and(|child| child.try_wait().unwrap().is_none())
}

#[test]
fn one_user_cannot_take_every_connection() {
    if !test_user_or_skip("one_user_cannot_take_every_connection") {
        return;
    }
    // 1,024 descriptors: 120 connections in all, 30 per user.
    let mut daemon = Daemon::start_under(
        "limits-per-user",
        "",
        &["prlimit", "--nofile=1024:1024", "--"],
    );
    let greedy = Held::open(&daemon, TEST_USER, 40, "greet");
    assert_eq!(greedy.count("served"), 30, "{:?}", greedy.lines);
    assert!(
        greedy.lines[30].starts_with(&format!(
            "refused: user '{TEST_USER}' already has 30 connections to the daemon"
        )),
        "{:?}",
        greedy.lines
    );
    // Another user, and root, still get in while they are held.
    let other = Held::open(&daemon, "nobody", 1, "greet");
    assert_eq!(other.lines, ["served"]);
    drop(RawClient::connect(&daemon));
    drop((greedy, other));
    assert!(alive(&mut daemon));
    // The slots come back.
    let again = Held::open(&daemon, TEST_USER, 1, "greet");
    assert_eq!(again.lines, ["served"]);
}

#[test]
fn a_client_that_does_not_greet_is_hung_up_on() {
    if !test_user_or_skip("a_client_that_does_not_greet_is_hung_up_on") {
        return;
    }
    let daemon = Daemon::start("limits-handshake", "");
    let silent = Held::open(&daemon, TEST_USER, 3, "silent");
    for line in &silent.lines {
        let seconds: u64 = line
            .strip_prefix("closed after ")
            .and_then(|rest| rest.strip_suffix(" s"))
            .unwrap_or_else(|| panic!("not hung up on: {:?}", silent.lines))
            .parse()
            .unwrap();
        assert!((9..=20).contains(&seconds), "{:?}", silent.lines);
    }
}

/// A pids cgroup (v1) that a process is moved into, removed on drop.
struct PidsCgroup(std::path::PathBuf);

impl PidsCgroup {
    fn holding(pid: u32, max: u32) -> Option<PidsCgroup> {
        let dir = std::path::Path::new("/sys/fs/cgroup/pids")
            .join(format!("hermetic-test-limits-{}", std::process::id()));
        if std::fs::create_dir(&dir).is_err() {
            return None;
        }
        let group = PidsCgroup(dir);
        std::fs::write(group.0.join("pids.max"), max.to_string()).unwrap();
        std::fs::write(group.0.join("cgroup.procs"), pid.to_string()).unwrap();
        Some(group)
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::remove_dir(&self.0).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn a_daemon_out_of_threads_refuses_clients_and_lives_on() {
    if !test_user_or_skip("a_daemon_out_of_threads_refuses_clients_and_lives_on") {
        return;
    }
    let mut daemon = Daemon::start("limits-threads", "");
    let pid = daemon.child.as_ref().unwrap().id();
    let Some(cgroup) = PidsCgroup::holding(pid, 8) else {
        eprintln!("skipped: no pids cgroup hierarchy at /sys/fs/cgroup/pids");
        return;
    };
    let held = Held::open(&daemon, TEST_USER, 20, "greet");
    assert!(held.count("served") >= 1, "{:?}", held.lines);
    assert!(held.count("hung up") >= 1, "{:?}", held.lines);
    assert!(alive(&mut daemon), "the daemon died when out of threads");
    drop(held);
    // Once the connections end, their threads are free again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let retry = Held::open(&daemon, TEST_USER, 1, "greet");
        if retry.lines == ["served"] {
            break;
        }
        assert!(Instant::now() < deadline, "{:?}", retry.lines);
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(RawClient::connect(&daemon));
    assert!(alive(&mut daemon));
    drop(daemon);
    drop(cgroup);
}
