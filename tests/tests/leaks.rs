//! Two hundred sandboxes back to back leave the host as it was: the same
//! mounts, no extra process, no leftover directory. Alone in its binary, so
//! that no other test's sandbox is running while it compares.

use hermetic_tests::{HostSnapshot, TestStore, root_or_skip, run};

#[test]
fn two_hundred_sandboxes_leave_the_host_as_it_was() {
    if !root_or_skip("two_hundred_sandboxes_leave_the_host_as_it_was") {
        return;
    }
    // Inputs, so that the store directory is an overlay with mount points.
    let store = TestStore::new("leaks");
    let input = store.add_dir("aaaa-input", "f", "x");
    let spec = store.spec(
        "echo x > /tmp/t; echo y > /build/b; mkdir /nix/store/out; cat /nix/store/aaaa-input/f",
        vec![input],
    );
    let before = HostSnapshot::take(&store.dir);
    for round in 0..200 {
        let p =
            run(&spec).unwrap_or_else(|e| panic!("round {round}: {}", hermetic_tests::chain(&e)));
        assert_eq!(p.output, "x", "round {round}");
    }
    let after = HostSnapshot::take(&store.dir);
    assert_eq!(before.mounts, after.mounts, "mounts of the host namespace");
    assert_eq!(before.children, after.children, "processes");
    assert_eq!(before.scratch, after.scratch, "scratch directories");
    assert!(after.scratch.is_empty());
}
