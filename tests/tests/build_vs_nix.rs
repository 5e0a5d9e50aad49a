//! The same derivations built by Nix 2.8 (`nix-store --realise`, sandbox
//! on) and by hermetic, each in a store of its own: the same output paths,
//! NAR hashes and references, and hermetic's store valid to Nix.

use std::path::Path;

use hermetic_tests::nix_peer::NixPeer;
use hermetic_tests::{TempDir, hermetic, root_or_skip};

#[test]
fn nix_and_hermetic_realise_the_same_outputs() {
    if !root_or_skip("nix_and_hermetic_realise_the_same_outputs") {
        return;
    }
    let shell = hermetic_host::static_shell().expect("a static shell (busybox-static)");
    let conf = format!(
        "sandbox = true\nsandbox-fallback = false\nbuild-users-group = nixbld\n\
         extra-sandbox-paths = /bin/sh={}\nsubstituters =\n",
        shell.display()
    );
    let Some(nix) = NixPeer::or_skip("nix_and_hermetic_realise_the_same_outputs", &conf) else {
        return;
    };
    let work = TempDir::new("vs-nix");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../store/tests/fixtures/shapes.nix"),
        work.path.join("a.nix"),
    )
    .unwrap();
    let run = |program: &str, args: &[&str]| nix.run(program, args);
    let nix_root = work.path.join("nix");
    let ours_root = work.path.join("hermetic");
    let (nix_root, ours_root) = (nix_root.to_str().unwrap(), ours_root.to_str().unwrap());
    let file = work.path.join("a.nix");
    let file = file.to_str().unwrap();
    for attr in ["a", "multi", "paf", "src"] {
        let drv = run("nix-instantiate", &["--store", nix_root, file, "-A", attr]);
        let drv_again = run("nix-instantiate", &["--store", ours_root, file, "-A", attr]);
        assert_eq!(drv, drv_again);
        let drv = drv.trim();
        let theirs = run("nix-store", &["--store", nix_root, "--realise", drv]);
        let ours = run(
            hermetic().to_str().unwrap(),
            &["--store", ours_root, "build", drv],
        );
        let sorted = |text: &str| {
            let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
            lines.sort();
            lines
        };
        assert_eq!(sorted(&ours), sorted(&theirs), "{attr}: output paths");
        for out in sorted(&ours) {
            for query in ["--hash", "--references", "--deriver", "--size"] {
                let a = run("nix-store", &["--store", nix_root, "-q", query, &out]);
                let b = run("nix-store", &["--store", ours_root, "-q", query, &out]);
                assert_eq!(a, b, "{attr}: {query} of {out}");
            }
        }
    }
    let out = nix.verify_store(ours_root);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("error"),
        "{stderr}"
    );
}
