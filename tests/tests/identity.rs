//! Who the builder is (SPEC B18, B21, B23, D13), seen from inside.

use hermetic_tests::{TestStore, build_user, probe, root_or_skip, run};

#[test]
fn builder_is_nixbld_1000_100_without_supplementary_groups() {
    if !root_or_skip("builder_is_nixbld_1000_100_without_supplementary_groups") {
        return;
    }
    let p = probe(
        "echo id=$(id); echo uid_map=$(cat /proc/self/uid_map); echo gid_map=$(cat /proc/self/gid_map); \
         echo setgroups=$(cat /proc/self/setgroups); \
         echo groups=$(grep '^Groups:' /proc/self/status | cut -f2)",
    );
    assert_eq!(p.get("id"), "uid=1000(nixbld) gid=100(nixbld)");
    let user = build_user();
    let words = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(
        words(p.get("uid_map")),
        words(&format!("1000 {} 1", user.uid))
    );
    assert_eq!(
        words(p.get("gid_map")),
        words(&format!("100 {} 1", user.gid))
    );
    assert_eq!(p.get("setgroups"), "deny");
    assert_eq!(p.get("groups").trim(), "", "no supplementary groups (D13)");
}

#[test]
fn host_root_owned_files_show_as_65534() {
    if !root_or_skip("host_root_owned_files_show_as_65534") {
        return;
    }
    let store = TestStore::new("owners");
    let input = store.add_dir("aaaa-input", "f", "x");
    let spec = store.spec(
        "echo owner=$(stat -c %u:%g /nix/store/aaaa-input/f); echo sh=$(stat -c %u:%g /bin/sh)",
        vec![input],
    );
    let p = run(&spec).unwrap();
    assert_eq!(p.get("owner"), "65534:65534");
    assert_eq!(p.get("sh"), "65534:65534");
}

#[test]
fn the_build_user_owns_the_build_directory() {
    if !root_or_skip("the_build_user_owns_the_build_directory") {
        return;
    }
    let p = probe("echo build=$(stat -c %u:%g:%a /build); touch /build/x && echo wrote=yes");
    assert_eq!(p.get("build"), "1000:100:700");
    assert_eq!(p.get("wrote"), "yes");
}
