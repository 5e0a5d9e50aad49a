//! `__impureHostDeps` is checked against `allowed-impure-host-deps` with
//! `.`, `..` and repeated slashes resolved first (issue 14, point 6): an
//! unprivileged user's derivation cannot climb out of an allowed prefix to
//! bind any host directory into its sandbox.

use hermetic_tests::daemon::{Daemon, output_text};
use hermetic_tests::nix_peer::NixPeer;
use hermetic_tests::{TEST_USER, test_user_or_skip};

/// A derivation that asks for `dep` and records whether the host's
/// `/etc/shadow` (never in a sandbox's `/etc`) and `/usr/share/doc` are seen.
fn probe(dep: &str) -> String {
    format!(
        "derivation {{ name = \"impure\"; system = \"x86_64-linux\"; builder = \"/bin/sh\"; \
         __impureHostDeps = [ \"{dep}\" ]; \
         args = [ \"-c\" \"if [ -e /etc/shadow ]; then echo host-etc; fi > $out; \
         if [ -d /usr/share/doc ]; then echo doc >> $out; fi\" ]; }}"
    )
}

#[test]
fn impure_host_deps_cannot_climb_out_of_an_allowed_prefix() {
    let test = "impure_host_deps_cannot_climb_out_of_an_allowed_prefix";
    if !test_user_or_skip(test) {
        return;
    }
    let Some(nix) = NixPeer::or_skip(test, "substituters =\n") else {
        return;
    };
    let daemon = Daemon::start("impure-deps", "allowed-impure-host-deps = /usr/share");
    let build = |dep: &str| {
        let name = format!("impure-{}", dep.len());
        daemon.nix_build_as(&nix, TEST_USER, &name, &probe(dep))
    };
    let escape = "/usr/share/../../etc";
    let out = build(escape);
    let said = output_text(&out);
    assert!(!out.status.success(), "the host's /etc was bound: {said}");
    assert!(
        said.contains(&format!(
            "requested impure path '{escape}', but it was not in allowed-impure-host-deps"
        )),
        "{said}"
    );
    // A path inside the prefix, written the long way round, is bound at
    // its plain name.
    let out = build("/usr/share/zoneinfo/..//doc");
    let said = output_text(&out);
    assert!(out.status.success(), "{said}");
    let built = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(
        std::fs::read_to_string(daemon.real(&built)).unwrap(),
        "doc\n"
    );
}
