//! The launched child never allocates between clone and execve (the rule
//! that makes launching from a threaded process safe; see the namespaces
//! crate). This binary's allocator kills any launched child that does.

use hermetic_runtime::{ExitStatus, SandboxPath};
use hermetic_sys::{ALLOCATED_IN_CHILD, NoAllocInChild};
use hermetic_tests::{TestStore, probe_spec, root_or_skip, run};

#[global_allocator]
static ALLOCATOR: NoAllocInChild = NoAllocInChild;

#[test]
fn a_full_sandbox_launches_without_allocating() {
    if !root_or_skip("a_full_sandbox_launches_without_allocating") {
        return;
    }
    // Threads, to make the point: the test harness runs others beside us.
    let store = TestStore::new("no-alloc");
    let dir = store.add_dir("aaaa-dir", "f", "dir");
    let file = store.add_file("bbbb-file", "file");
    let link = store.add_symlink("cccc-link", "aaaa-dir");
    let mut spec = store.spec(
        "cat /nix/store/aaaa-dir/f /nix/store/bbbb-file /opt/f; echo",
        vec![dir.clone(), file, link],
    );
    spec.sandbox_paths.push(
        format!("/opt/f={}", dir.join("f").display())
            .parse::<SandboxPath>()
            .unwrap(),
    );
    spec.system = "i686-linux".into();
    let p = run(&spec).unwrap();
    assert_ne!(
        p.status,
        ExitStatus::Exited(ALLOCATED_IN_CHILD),
        "the launched child allocated"
    );
    assert_eq!(p.status, ExitStatus::Exited(0), "{}", p.output);
    assert_eq!(p.output, "dirfiledir\n");
}

#[test]
fn a_failing_launch_reports_without_allocating() {
    if !root_or_skip("a_failing_launch_reports_without_allocating") {
        return;
    }
    let mut spec = probe_spec("true");
    spec.builder = "/nonexistent".into();
    let error = run(&spec).unwrap_err();
    assert!(
        hermetic_tests::chain(&error).starts_with("executing '/nonexistent'"),
        "{error}"
    );
}
