//! A builder that leaves a directory 5,000 levels deep — deeper than a
//! path can name — in its build directory or its output cannot make the
//! store unusable (issue 14, point 3): the build's staging is removed all
//! the same, no pending record stays, and the next builds work.

use hermetic_tests::daemon::{Daemon, output_text};
use hermetic_tests::nix_peer::NixPeer;
use hermetic_tests::{TEST_USER, test_user_or_skip};

/// A derivation whose builder digs `levels` directories deep under
/// `under` (or as deep as its shell can go), then runs `end`.
fn digger(name: &str, under: &str, levels: u32, end: &str) -> String {
    format!(
        "derivation {{ name = \"{name}\"; system = \"x86_64-linux\"; builder = \"/bin/sh\"; \
         args = [ \"-c\" \"mkdir -p {under}; cd {under}; i=0; \
         while [ $i -lt {levels} ] && mkdir d && cd d; do i=$((i+1)); done; {end}\" ]; }}"
    )
}

#[test]
fn a_tree_deeper_than_a_path_can_name_never_blocks_the_store() {
    let test = "a_tree_deeper_than_a_path_can_name_never_blocks_the_store";
    if !test_user_or_skip(test) {
        return;
    }
    let Some(nix) = NixPeer::or_skip(test, "substituters =\n") else {
        return;
    };
    let daemon = Daemon::start("deep-trees", "");
    let build = |name: &str, expr: String| daemon.nix_build_as(&nix, TEST_USER, name, &expr);
    // In the build directory, deeper than a path can name, then failing.
    let out = build(
        "deep-build",
        digger("deep-build", "$NIX_BUILD_TOP/x", 5000, "exit 1"),
    );
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains("failed with exit code 1"),
        "{}",
        output_text(&out)
    );
    // In an output, deeper than a NAR may nest: refused.
    let out = build("deep-out", digger("deep-out", "$out", 1100, "true"));
    assert!(!out.status.success(), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("has directories nested deeper than 1024"),
        "{}",
        output_text(&out)
    );
    // An output 1,000 deep is a store path like any other.
    let out = build("thousand", digger("thousand", "$out", 1000, "true"));
    assert!(out.status.success(), "{}", output_text(&out));
    // Nothing is left, and the store works for the next build.
    let out = build(
        "after",
        "derivation { name = \"after\"; system = \"x86_64-linux\"; builder = \"/bin/sh\"; \
         args = [ \"-c\" \"echo fine > $out\" ]; }"
            .into(),
    );
    assert!(out.status.success(), "{}", output_text(&out));
    let pending = daemon.root().join("nix/var/nix/hermetic/pending");
    let records: Vec<_> = std::fs::read_dir(&pending)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(records.is_empty(), "pending records left: {records:?}");
    let leftovers: Vec<_> = std::fs::read_dir(daemon.root().join("nix/store"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') && n != ".links")
        .collect();
    assert!(
        leftovers.is_empty(),
        "left in the store directory: {leftovers:?}"
    );
    let verify = nix.verify_store(daemon.root());
    assert!(verify.status.success(), "{}", output_text(&verify));
}
