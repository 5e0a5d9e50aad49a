//! A path copied in with a content address (`ca`) needs no signature, so
//! the address is checked against the content, for every client (issue 14,
//! point 1): nobody can plant content of their choice at a source path, a
//! fixed-output derivation's output or a `.drv` path by naming the hash of
//! the genuine content. `verify --check-contents` checks the addresses of
//! what is already registered.

use std::collections::BTreeSet;
use std::path::PathBuf;

use hermetic_store::content_address::content_hash;
use hermetic_store::{Hash, HashAlgo, IngestionMethod, PathInfo, StoreDir, StorePath};
use hermetic_tests::daemon::{Daemon, RawClient, file_as, output_text};
use hermetic_tests::nix_peer::NixPeer;
use hermetic_tests::{hermetic, root_or_skip};

/// Writes `text` to a file of the daemon's directory.
fn file(daemon: &Daemon, name: &str, text: &str) -> PathBuf {
    let file = daemon.dir.path.join(name);
    std::fs::write(&file, text).unwrap();
    file
}

/// A copy of the file saying `text` sent as `path` with the content
/// address `ca`.
fn copy_of(daemon: &Daemon, text: &str, path: StorePath, ca: String) -> (PathInfo, Vec<u8>) {
    let (mut info, nar) = file_as(&file(daemon, "planted", text), path);
    info.ca = Some(ca);
    (info, nar)
}

/// The path and content address of `genuine` added with `method`.
fn address_of(daemon: &Daemon, genuine: &str, method: IngestionMethod) -> (StorePath, String) {
    let hash = content_hash(&file(daemon, "genuine", genuine), method, HashAlgo::Sha256).unwrap();
    let path = StoreDir::default()
        .make_fixed_output_path(method, &hash, "thing", &BTreeSet::new(), false)
        .unwrap();
    (
        path,
        format!("fixed:{}{}", method.prefix(), hash.to_prefixed_base32()),
    )
}

/// Sends `item` both ways a copy arrives and expects both refused with
/// `expected` in the message, and nothing at its path.
fn refused_both_ways(daemon: &Daemon, item: &(PathInfo, Vec<u8>), expected: &str) {
    let mut client = RawClient::connect(daemon);
    let one = client.add_to_store_nar(&item.0, &item.1, false);
    assert!(
        one.as_ref().is_err_and(|e| e.contains(expected)),
        "AddToStoreNar with {:?}: {one:?}",
        item.0.ca
    );
    let many = client.add_multiple_to_store(std::slice::from_ref(item));
    assert!(
        many.as_ref().is_err_and(|e| e.contains(expected)),
        "AddMultipleToStore with {:?}: {many:?}",
        item.0.ca
    );
    assert!(
        !daemon
            .real(&StoreDir::default().print(&item.0.path))
            .exists()
    );
}

#[test]
fn a_copy_whose_content_is_not_its_content_address_is_refused() {
    let test = "a_copy_whose_content_is_not_its_content_address_is_refused";
    if !root_or_skip(test) {
        return;
    }
    let Some(nix) = NixPeer::or_skip(test, "substituters =\n") else {
        return;
    };
    // Nobody is trusted here, root included: no signature is asked of a
    // content-addressed path, so only its content can tell.
    let daemon = Daemon::start("ca-untrusted", "trusted-users =");
    let mismatch = "ca hash mismatch importing path";
    // A source path (recursive) and a flat fixed output, planted under the
    // address of other content.
    for method in [IngestionMethod::Recursive, IngestionMethod::Flat] {
        let (path, ca) = address_of(&daemon, "genuine\n", method);
        refused_both_ways(&daemon, &copy_of(&daemon, "planted\n", path, ca), mismatch);
    }
    // The output of a fixed-output derivation: root's build afterwards
    // builds it instead of finding what was planted.
    let url = daemon.url();
    let hi = Hash::sha256(b"hi\n");
    let expr = file(
        &daemon,
        "fod.nix",
        &format!(
            "derivation {{ name = \"fod\"; system = \"x86_64-linux\"; builder = \"/bin/sh\"; \
             args = [\"-c\" \"echo hi > $out\"]; outputHashMode = \"flat\"; \
             outputHashAlgo = \"sha256\"; outputHash = \"{}\"; }}",
            hi.to_sri()
        ),
    );
    hermetic_tests::set_mode(&expr, 0o644);
    let fod = nix.run(
        "nix-instantiate",
        &["--store", &url, expr.to_str().unwrap()],
    );
    let fod = fod.trim().to_owned();
    let out = nix.run("nix-store", &["--store", &url, "-q", &fod]);
    let out = out.trim().to_owned();
    let fod_out = StoreDir::default().parse(&out).unwrap();
    let ca = format!("fixed:{}", hi.to_prefixed_base32());
    refused_both_ways(&daemon, &copy_of(&daemon, "evil\n", fod_out, ca), mismatch);
    let built = nix.run(
        hermetic().to_str().unwrap(),
        &["--store", daemon.root().to_str().unwrap(), "build", &fod],
    );
    assert_eq!(built.trim(), out);
    assert_eq!(std::fs::read_to_string(daemon.real(&out)).unwrap(), "hi\n");
    // A `.drv` path not yet in this store, planted with other text under
    // the genuine text's address: the genuine derivation, added and built
    // afterwards, builds what it says.
    let scratch = daemon.dir.path.join("scratch");
    let drv = nix.run(
        "nix-instantiate",
        &[
            "--store",
            scratch.to_str().unwrap(),
            &daemon.file(),
            "-A",
            "a",
        ],
    );
    let drv = drv.trim().to_owned();
    let genuine = std::fs::read_to_string(scratch.join(drv.trim_start_matches('/'))).unwrap();
    let forged = genuine.replace("echo hi", "echo ho");
    assert_ne!(forged, genuine);
    let ca = format!(
        "text:{}",
        Hash::sha256(genuine.as_bytes()).to_prefixed_base32()
    );
    let drv_path = StoreDir::default().parse(&drv).unwrap();
    refused_both_ways(&daemon, &copy_of(&daemon, &forged, drv_path, ca), mismatch);
    let again = nix.run(
        "nix-instantiate",
        &["--store", &url, &daemon.file(), "-A", "a"],
    );
    assert_eq!(again.trim(), drv);
    let built = nix.run("nix-store", &["--store", &url, "-r", &drv]);
    assert_eq!(
        std::fs::read_to_string(daemon.real(built.trim())).unwrap(),
        "hi\n"
    );
    let verify = nix.verify_store(daemon.root());
    assert!(verify.status.success(), "{}", output_text(&verify));
}

/// A trusted client, whose copies need no signature, still cannot send a
/// path with a content address that names another path.
#[test]
fn a_content_address_must_name_the_path_it_comes_with() {
    let test = "a_content_address_must_name_the_path_it_comes_with";
    if !root_or_skip(test) {
        return;
    }
    let daemon = Daemon::start("ca-trusted", "");
    let (path, _) = address_of(&daemon, "genuine\n", IngestionMethod::Recursive);
    // The address of what is sent, but not of the path it is sent as.
    let (_, planted_ca) = address_of(&daemon, "planted\n", IngestionMethod::Recursive);
    let item = copy_of(&daemon, "planted\n", path, planted_ca);
    let refused = RawClient::connect(&daemon).add_to_store_nar(&item.0, &item.1, true);
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("its content address") && e.contains("gives the path")),
        "{refused:?}"
    );
}

/// A path registered with content that is not its content address (a
/// store from before the check) is reported by `verify --check-contents`.
#[test]
fn verify_reports_content_that_is_not_its_content_address() {
    let test = "verify_reports_content_that_is_not_its_content_address";
    if !root_or_skip(test) {
        return;
    }
    let daemon = Daemon::start("ca-verify", "");
    let (path, ca) = address_of(&daemon, "genuine\n", IngestionMethod::Flat);
    let (info, nar) = copy_of(&daemon, "planted\n", path, ca);
    daemon.register_unchecked(info, &nar);
    let out = std::process::Command::new(hermetic())
        .arg("--store")
        .arg(daemon.root())
        .args(["store", "verify", "--check-contents"])
        .output()
        .unwrap();
    let said = output_text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("does not match its content address")
            && said.contains("ca hash mismatch importing path"),
        "{said}"
    );
}
