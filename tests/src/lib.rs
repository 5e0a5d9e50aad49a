//! Helpers for hermetic's integration tests.
//!
//! The tests start real sandboxes on the real kernel and look from inside:
//! a probe script runs in the sandbox (busybox's shell, bound at `/bin/sh`
//! as Nix's default `sandbox-paths` does) and prints what it sees; the test
//! compares that with SPEC.md. A test that needs root, a test user or a
//! kernel feature says so and returns early where it cannot run (CI runs as
//! root after `scripts/setup-test-host`, so there every test runs).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hermetic_runtime::{
    BuildUser, ExitStatus, RunOptions, Sandbox, SandboxError, SandboxPath, SandboxSpec, environment,
};

/// The ordinary user the test setup creates for unprivileged runs.
pub const TEST_USER: &str = "hermetic-test";

pub mod builds;
pub mod daemon;
pub mod http_server;
pub mod kernel;
pub mod nix_cache;
pub mod nix_peer;
pub mod probes;
pub mod sshd;

/// Whether this process runs as root; prints why a test is skipped if not.
pub fn root_or_skip(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("skipped {test}: needs root (run the suite as root: scripts/test)");
    }
    root
}

/// The static busybox the sandboxes get as `/bin/sh`.
pub fn busybox() -> PathBuf {
    hermetic_host::static_shell()
        .expect("a static busybox: apt-get install busybox-static (scripts/setup-test-host does)")
}

/// The host ids sandboxes run as when the tests run as root: the test
/// setup's `nixbld1` if it exists, else uid 30001, gid 30000 (ids need no
/// passwd entry to be mapped).
pub fn build_user() -> BuildUser {
    match nix::unistd::User::from_name("nixbld1") {
        Ok(Some(user)) => BuildUser::single(user.uid.as_raw(), user.gid.as_raw()),
        _ => BuildUser::single(30001, 30000),
    }
}

/// A spec that runs `script` with `/bin/sh -c` in a default sandbox: the
/// builder environment of SPEC B62, `/bin/sh` bound from busybox, and the
/// test build user when running as root.
pub fn probe_spec(script: &str) -> SandboxSpec {
    let mut spec = SandboxSpec::new("/bin/sh", vec!["-c".into(), script.into()]);
    spec.sandbox_paths.push(SandboxPath {
        target: PathBuf::from("/bin/sh"),
        source: busybox(),
        optional: false,
    });
    spec.env = environment::builder_environment(&spec.store_dir, &spec.sandbox_build_dir, 1, []);
    if nix::unistd::geteuid().is_root() {
        spec.build_user = Some(build_user());
    }
    spec
}

/// What a sandbox printed and how it ended.
#[derive(Debug)]
pub struct Probe {
    /// Everything written to stdout and stderr (one pty, as in Nix).
    pub output: String,
    /// How PID 1 ended.
    pub status: ExitStatus,
}

impl Probe {
    /// The value printed on a line `key=value`, if any.
    pub fn value(&self, key: &str) -> Option<&str> {
        let prefix = format!("{key}=");
        self.output
            .lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
    }

    /// Every `key=value` line.
    pub fn values(&self) -> BTreeMap<String, String> {
        self.output
            .lines()
            .filter_map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect()
    }

    /// The value of `key`, or a panic that shows the whole output.
    pub fn get(&self, key: &str) -> &str {
        self.value(key).unwrap_or_else(|| {
            panic!(
                "the probe printed no '{key}=' line; it printed:\n{}",
                self.output
            )
        })
    }
}

/// Runs `spec` in a sandbox through the library and collects its output.
pub fn run(spec: &SandboxSpec) -> Result<Probe, SandboxError> {
    let sandbox = Sandbox::prepare(spec)?;
    let mut output = Vec::new();
    let outcome = sandbox.run(RunOptions::default(), &mut output)?;
    Ok(Probe {
        output: String::from_utf8_lossy(&output).into_owned(),
        status: outcome.status,
    })
}

/// Runs `spec` and keeps its scratch directory; returns the output and the
/// kept scratch directory (the caller removes it).
pub fn run_kept(spec: &SandboxSpec) -> (String, hermetic_runtime::scratch::Scratch) {
    let sandbox = Sandbox::prepare(spec).unwrap_or_else(|e| panic!("{}", chain(&e)));
    let mut output = Vec::new();
    let options = RunOptions {
        keep: true,
        ..Default::default()
    };
    let outcome = sandbox
        .run(options, &mut output)
        .unwrap_or_else(|e| panic!("{}", chain(&e)));
    let kept = outcome.kept.expect("the scratch directory was kept");
    (String::from_utf8_lossy(&output).into_owned(), kept)
}

/// Runs `script` in a default sandbox (see [`probe_spec`]).
pub fn probe(script: &str) -> Probe {
    run(&probe_spec(script)).unwrap_or_else(|e| panic!("sandbox failed: {}", chain(&e)))
}

/// An error and all its sources, joined with ": ".
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// The `sandbox-run` binary built next to this test (cargo builds the
/// workspace's binaries before it runs integration tests).
pub fn sandbox_run() -> PathBuf {
    workspace_binary("sandbox-run")
}

/// The `hermetic` binary built next to this test.
pub fn hermetic() -> PathBuf {
    workspace_binary("hermetic")
}

/// One of the workspace's binaries, built next to this test.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let binary = profile_dir.join(name);
    assert!(
        binary.exists(),
        "{} is missing: build it with `cargo build --bins` (scripts/test does)",
        binary.display()
    );
    binary
}

/// `sandbox-run` where the ordinary test user can execute it: the built
/// binary itself when every directory above it lets others through, else a
/// copy in a world-readable directory under the system temporary directory
/// (a clone in root's home directory, say).
pub fn sandbox_run_for_test_user() -> PathBuf {
    for_test_user("sandbox-run")
}

/// `hermetic` where the ordinary test user can execute it (see
/// [`sandbox_run_for_test_user`]).
pub fn hermetic_for_test_user() -> PathBuf {
    for_test_user("hermetic")
}

fn for_test_user(name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    static COPIES: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut copies = COPIES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, copy)) = copies.iter().find(|(n, _)| n == name) {
        return copy.clone();
    }
    let binary = workspace_binary(name);
    let reachable = binary
        .ancestors()
        .skip(1)
        .all(|dir| std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o001 != 0));
    let copy = if reachable {
        binary
    } else {
        let dir = std::env::temp_dir().join("hermetic-tests-bin");
        std::fs::create_dir_all(&dir).unwrap();
        set_mode(&dir, 0o755);
        // One copy, replaced atomically on each run.
        let partial = dir.join(format!(".{name}-{}", std::process::id()));
        std::fs::copy(&binary, &partial).unwrap();
        set_mode(&partial, 0o755);
        let copy = dir.join(name);
        std::fs::rename(&partial, &copy).unwrap();
        copy
    };
    copies.push((name.to_owned(), copy.clone()));
    copy
}

/// Whether the test user exists; prints why a test is skipped if not.
pub fn test_user_or_skip(test: &str) -> bool {
    if !root_or_skip(test) {
        return false;
    }
    let exists = matches!(nix::unistd::User::from_name(TEST_USER), Ok(Some(_)));
    if !exists {
        eprintln!("skipped {test}: no user '{TEST_USER}' (scripts/setup-test-host creates it)");
    }
    exists
}

/// Runs `sandbox-run ARGS` as the ordinary test user (no supplementary
/// groups, its own primary group), from a directory it can read.
pub fn sandbox_run_as_test_user(args: &[&str]) -> Output {
    let user = nix::unistd::User::from_name(TEST_USER)
        .ok()
        .flatten()
        .expect("the test user exists");
    Command::new("setpriv")
        .arg(format!("--reuid={}", user.uid))
        .arg(format!("--regid={}", user.gid))
        .arg("--init-groups")
        .arg("--reset-env")
        .arg(sandbox_run_for_test_user())
        .args(args)
        .current_dir("/")
        .output()
        .expect("setpriv runs (util-linux)")
}

/// `sandbox-run ARGS` as this process's user.
pub fn sandbox_run_command(args: &[&str]) -> Output {
    Command::new(sandbox_run())
        .args(args)
        .output()
        .expect("sandbox-run runs")
}

/// The arguments that make `sandbox-run` use the test build user when the
/// tests run as root (none otherwise).
pub fn build_user_args() -> Vec<String> {
    if nix::unistd::geteuid().is_root() {
        let user = build_user();
        vec!["--build-user".into(), format!("{}:{}", user.uid, user.gid)]
    } else {
        vec![]
    }
}

/// A directory under the system temporary directory, removed on drop.
pub struct TempDir {
    /// Its path.
    pub path: PathBuf,
}

impl TempDir {
    /// Makes a fresh directory named after `label`.
    pub fn new(label: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "hermetic-test-{label}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("creating a temporary directory");
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = hermetic_runtime::scratch::remove_tree(&self.path);
    }
}

/// What the host looks like from outside, to prove a sandbox left nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSnapshot {
    /// Mount points of this process's mount namespace.
    pub mounts: Vec<String>,
    /// Children of this process.
    pub children: Vec<i32>,
    /// Entries named `.hermetic-*` in the scratch parent.
    pub scratch: Vec<String>,
}

impl HostSnapshot {
    /// Takes a snapshot; `scratch_parent` is where sandboxes make their
    /// scratch directories.
    pub fn take(scratch_parent: &Path) -> HostSnapshot {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .map(|line| line.split(' ').nth(4).unwrap_or_default().to_string())
            .collect();
        let me = std::process::id() as i32;
        let mut children = Vec::new();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
                let ppid = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    .and_then(|p| p.parse::<i32>().ok());
                if ppid == Some(me) {
                    children.push(pid);
                }
            }
        }
        let mut scratch: Vec<String> = std::fs::read_dir(scratch_parent)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| is_hermetic_scratch(name))
                    .collect()
            })
            .unwrap_or_default();
        scratch.sort();
        HostSnapshot {
            mounts,
            children,
            scratch,
        }
    }
}

/// A store directory with input paths made as Nix makes store objects:
/// owned by this process's user, read-only (0555 directories, 0444 files).
pub struct TestStore {
    /// The store's root, removed on drop.
    pub root: TempDir,
    /// The store directory (`<root>/nix/store`).
    pub dir: PathBuf,
}

impl TestStore {
    /// An empty store.
    pub fn new(label: &str) -> TestStore {
        let root = TempDir::new(label);
        let dir = root.path.join("nix/store");
        std::fs::create_dir_all(&dir).expect("creating a test store");
        TestStore { root, dir }
    }

    /// Adds a directory store path holding one file `file` with `contents`.
    pub fn add_dir(&self, name: &str, file: &str, contents: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join(file), contents).unwrap();
        set_mode(&path.join(file), 0o444);
        set_mode(&path, 0o555);
        path
    }

    /// Adds a regular-file store path.
    pub fn add_file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, contents).unwrap();
        set_mode(&path, 0o444);
        path
    }

    /// Adds a symlink store path.
    pub fn add_symlink(&self, name: &str, target: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::os::unix::fs::symlink(target, &path).unwrap();
        path
    }

    /// A default sandbox (see [`probe_spec`]) running `script` over this
    /// store, holding `inputs`.
    pub fn spec(&self, script: &str, inputs: Vec<PathBuf>) -> SandboxSpec {
        let mut spec = probe_spec(script);
        spec.real_store_dir = Some(self.dir.clone());
        spec.inputs = inputs;
        spec
    }

    /// The device number of the store's filesystem.
    pub fn device(&self) -> u64 {
        std::fs::metadata(&self.dir).unwrap().dev()
    }
}

/// chmod.
pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The state directory (build-user locks, cgroup records) that every test
/// leasing build users shares, so that their locks see each other as the
/// builds of one host do.
pub fn pool_state_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("hermetic-test-state");
    std::fs::create_dir_all(&dir).expect("creating the tests' state directory");
    dir
}

/// Whether the group `name` of scripts/setup-test-host exists; prints why
/// a test is skipped if not (or if not root: only root uses build users).
pub fn group_or_skip(test: &str, name: &str) -> bool {
    if !root_or_skip(test) {
        return false;
    }
    let exists = matches!(nix::unistd::Group::from_name(name), Ok(Some(_)));
    if !exists {
        eprintln!("skipped {test}: no group '{name}' (scripts/setup-test-host creates it)");
    }
    exists
}

/// `sandbox-run --state-dir <the tests' state dir> ARGS`, as this process's
/// user (root: builds take build users from the pool).
pub fn sandbox_run_pooled(args: &[&str]) -> Output {
    let state = pool_state_dir();
    let mut all = vec!["--state-dir", state.to_str().unwrap()];
    all.extend_from_slice(args);
    sandbox_run_command(&all)
}

/// Asserts that an id-map line (`inside outside count`) is `expected`;
/// `context` is shown when it is not.
pub fn assert_map_line(line: &str, expected: [u32; 3], context: &str) {
    let fields: Vec<u32> = line
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    assert_eq!(fields, expected, "id map line {line:?} in {context}");
}

/// The host uid behind the sandbox's ids, from a `/proc/self/uid_map`
/// line (`inside outside count`).
pub fn host_uid_from_map(map: &str) -> Option<u32> {
    map.split_whitespace().nth(1)?.parse().ok()
}

/// `--option NAME VALUE` for each setting, then `args`: a `sandbox-run`
/// command line under these settings.
pub fn with_settings<'a>(settings: &[(&'a str, &'a str)], args: &[&'a str]) -> Vec<&'a str> {
    let mut all = Vec::new();
    for (name, value) in settings {
        all.extend(["--option", name, value]);
    }
    all.extend_from_slice(args);
    all
}

/// Whether `name`, an entry of a store directory, is hermetic's work in
/// progress: a sandbox's scratch directory (`.hermetic-…`) or an
/// installation's staging directory (`…-hermetic-stage`).
pub fn is_hermetic_scratch(name: &str) -> bool {
    name.starts_with(".hermetic") || name.ends_with(hermetic_store::pending::STAGING_SUFFIX)
}

/// Runs `command` (stdin closed) to success, as the benchmarks time
/// their commands: how long it took, and its output.
pub fn timed_success(
    command: &mut std::process::Command,
) -> (std::time::Duration, std::process::Output) {
    let started = std::time::Instant::now();
    let out = command
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    let elapsed = started.elapsed();
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (elapsed, out)
}
