//! The store against the real thing: Nix 2.8 and hermetic on one store
//! root. Derivations nix-instantiate wrote parse, print and hash as Nix
//! does; paths either tool adds are valid to the other; NARs are the same
//! bytes; a registration killed at any instant leaves a store that verifies.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hermetic_store::derivation::json;
use hermetic_store::{Hash, HashAlgo, IngestionMethod, LocalStore, StoreLayout, StorePath};
use hermetic_tests::nix_peer::NixPeer;
use hermetic_tests::{TempDir, hermetic};

/// Nix offline, without build users (these tests build nothing with Nix).
fn nix_or_skip(test: &str) -> Option<NixPeer> {
    NixPeer::or_skip(
        test,
        "substituters =\nbuild-users-group =\nexperimental-features = nix-command\nsandbox = false\n",
    )
}

fn run_hermetic(args: &[&str]) -> Output {
    Command::new(hermetic()).args(args).output().unwrap()
}

/// Runs hermetic and returns its stdout; fails the test if it fails.
fn hermetic_ok(args: &[&str]) -> String {
    let out = run_hermetic(args);
    assert!(
        out.status.success(),
        "hermetic {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../store/tests/fixtures")
        .join(name)
}

/// A tree with every kind of entry a NAR holds.
fn varied_tree(at: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(at.join("empty-dir")).unwrap();
    std::fs::create_dir_all(at.join("sub/deeper")).unwrap();
    std::fs::write(at.join("empty"), b"").unwrap();
    std::fs::write(at.join("sub/deeper/data"), vec![7u8; 100_003]).unwrap();
    std::fs::write(at.join("run"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(at.join("run"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(at.join("ünïcode name"), b"x").unwrap();
    std::os::unix::fs::symlink("sub/deeper/data", at.join("link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", at.join("dangling")).unwrap();
}

/// Instantiates the fixtures' shapes.nix (as a.nix, the name its sources
/// carry) into a store under `root`; returns the .drv paths by name.
fn instantiate(nix: &NixPeer, root: &Path, work: &Path) -> BTreeMap<String, String> {
    std::fs::copy(fixture("shapes.nix"), work.join("a.nix")).unwrap();
    let root = root.to_str().unwrap();
    let mut drvs = BTreeMap::new();
    for attr in ["a", "multi", "fodflat", "fodrec", "paf", "sa", "src"] {
        let out = nix.run(
            "nix-instantiate",
            &[
                "--store",
                root,
                work.join("a.nix").to_str().unwrap(),
                "-A",
                attr,
            ],
        );
        drvs.insert(attr.to_owned(), out.trim().to_owned());
    }
    drvs
}

#[test]
fn derivations_nix_instantiate_wrote_parse_print_and_hash_as_nix_does() {
    let Some(nix) =
        nix_or_skip("derivations_nix_instantiate_wrote_parse_print_and_hash_as_nix_does")
    else {
        return;
    };
    let work = TempDir::new("drv-golden");
    let root = work.path.join("root");
    let drvs = instantiate(&nix, &root, &work.path);
    let layout = StoreLayout::under_root(&root);
    let store = LocalStore::open(layout.clone()).unwrap();
    for (attr, printed) in &drvs {
        let path = layout.store_dir.parse(printed).unwrap();
        let bytes = std::fs::read(layout.real_path(&path)).unwrap();
        let drv = store.read_derivation(&path).unwrap();
        assert_eq!(
            drv.to_aterm(&layout.store_dir).as_bytes(),
            &bytes[..],
            "{attr}: re-serialised"
        );
        assert_eq!(
            drv.drv_path(&layout.store_dir).unwrap(),
            path,
            "{attr}: .drv path"
        );
        store
            .checked_output_paths(&path, &drv)
            .unwrap_or_else(|e| panic!("{attr}: {e}"));
        // Every output path hermetic computes is the one Nix registered.
        let registered: BTreeMap<String, StorePath> = store
            .derivation_outputs(&path)
            .unwrap()
            .into_iter()
            .collect();
        let computed = drv
            .expected_output_paths(&layout.store_dir, &mut |p| store.drv_hashes(p))
            .unwrap();
        let computed: BTreeMap<String, StorePath> =
            computed.into_iter().map(|(k, v)| (k, v.unwrap())).collect();
        assert_eq!(computed, registered, "{attr}: output paths");
        // The JSON form is byte for byte `nix show-derivation`'s.
        let ours = hermetic_ok(&[
            "--store",
            root.to_str().unwrap(),
            "derivation",
            "show",
            printed,
        ]);
        let theirs = nix.run(
            "nix",
            &[
                "--store",
                root.to_str().unwrap(),
                "show-derivation",
                printed,
            ],
        );
        assert_eq!(ours.trim_end(), theirs.trim_end(), "{attr}: JSON");
        let back = json::parse(ours.as_bytes(), &layout.store_dir).unwrap();
        assert_eq!(back, vec![(path, drv)], "{attr}: JSON parsed back");
    }
}

#[test]
fn one_store_two_tools() {
    let Some(nix) = nix_or_skip("one_store_two_tools") else {
        return;
    };
    let work = TempDir::new("one-store");
    let root = work.path.join("root");
    let root_arg = root.to_str().unwrap();
    let tree = work.path.join("tree");
    varied_tree(&tree);
    let other = work.path.join("other");
    varied_tree(&other);
    std::fs::write(other.join("extra"), b"only here").unwrap();

    // Nix's store first: hermetic reads it and verifies it.
    let drvs = instantiate(&nix, &root, &work.path);
    hermetic_ok(&["--store", root_arg, "store", "verify", "--check-contents"]);

    // The same tree added by each tool is the same path with the same hash.
    let by_hermetic = hermetic_ok(&["--store", root_arg, "store", "add", tree.to_str().unwrap()]);
    let by_nix = nix.run(
        "nix-store",
        &["--store", root_arg, "--add", tree.to_str().unwrap()],
    );
    assert_eq!(by_hermetic, by_nix);
    let by_nix_first = nix.run(
        "nix-store",
        &["--store", root_arg, "--add", other.to_str().unwrap()],
    );
    let by_hermetic_second =
        hermetic_ok(&["--store", root_arg, "store", "add", other.to_str().unwrap()]);
    assert_eq!(by_nix_first, by_hermetic_second);

    let path = by_hermetic.trim();
    let nix_hash = nix.run("nix-store", &["--store", root_arg, "-q", "--hash", path]);
    let info = hermetic_ok(&["--store", root_arg, "store", "info", "--json", path]);
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info[0]["narHash"].as_str().unwrap(), nix_hash.trim());
    let nix_size = nix.run("nix-store", &["--store", root_arg, "-q", "--size", path]);
    assert_eq!(
        info[0]["narSize"].as_u64().unwrap().to_string(),
        nix_size.trim()
    );

    // Content-addressed paths of the other methods: flat, and recursive with
    // another algorithm than SHA-256, computed as nix-store --add-fixed does.
    let file = tree.join("run");
    let contents = std::fs::read(&file).unwrap();
    let flat = nix.run(
        "nix-store",
        &[
            "--store",
            root_arg,
            "--add-fixed",
            "sha256",
            file.to_str().unwrap(),
        ],
    );
    let dir = hermetic_store::StoreDir::default();
    let none = std::collections::BTreeSet::new();
    let ours = dir
        .make_fixed_output_path(
            IngestionMethod::Flat,
            &Hash::sha256(&contents),
            "run",
            &none,
            false,
        )
        .unwrap();
    assert_eq!(dir.print(&ours), flat.trim(), "flat sha256");
    let recursive_sha1 = nix.run(
        "nix-store",
        &[
            "--store",
            root_arg,
            "--add-fixed",
            "--recursive",
            "sha1",
            tree.to_str().unwrap(),
        ],
    );
    let sha1 = nix.run("nix-hash", &["--type", "sha1", tree.to_str().unwrap()]);
    let sha1 = Hash::parse_digest(HashAlgo::Sha1, sha1.trim()).unwrap();
    let ours = dir
        .make_fixed_output_path(IngestionMethod::Recursive, &sha1, "tree", &none, false)
        .unwrap();
    assert_eq!(dir.print(&ours), recursive_sha1.trim(), "recursive sha1");

    // A derivation hermetic adds (into a store of its own, with its input
    // source) is valid to Nix with its references and outputs.
    let root2 = work.path.join("root2");
    let root2_arg = root2.to_str().unwrap();
    let source = hermetic_ok(&[
        "--store",
        root2_arg,
        "store",
        "add",
        work.path.join("a.nix").to_str().unwrap(),
    ]);
    assert!(source.trim().ends_with("-a.nix"));
    let real = |printed: &str| root.join(printed.trim_start_matches('/'));
    for attr in ["a", "multi", "src"] {
        let added = hermetic_ok(&[
            "--store",
            root2_arg,
            "derivation",
            "add",
            real(&drvs[attr]).to_str().unwrap(),
        ]);
        assert_eq!(
            added.trim(),
            drvs[attr],
            "{attr}: the same .drv path as Nix's"
        );
        let ours = nix.run(
            "nix-store",
            &["--store", root2_arg, "-q", "--outputs", &drvs[attr]],
        );
        let theirs = nix.run(
            "nix-store",
            &["--store", root_arg, "-q", "--outputs", &drvs[attr]],
        );
        assert_eq!(ours, theirs, "{attr}: outputs");
        let ours = nix.run(
            "nix-store",
            &["--store", root2_arg, "-q", "--references", &drvs[attr]],
        );
        let theirs = nix.run(
            "nix-store",
            &["--store", root_arg, "-q", "--references", &drvs[attr]],
        );
        assert_eq!(ours, theirs, "{attr}: references");
    }
    let closure = hermetic_ok(&["--store", root2_arg, "store", "closure", &drvs["src"]]);
    let nix_closure = nix.run("nix-store", &["--store", root2_arg, "-qR", &drvs["src"]]);
    let sorted = |text: &str| {
        let mut lines: Vec<_> = text.lines().map(str::to_owned).collect();
        lines.sort();
        lines
    };
    assert_eq!(sorted(&closure), sorted(&nix_closure));

    // Both stores pass both tools' checks after both tools worked on them.
    for root in [root_arg, root2_arg] {
        let out = nix.verify_store(root);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "nix-store --verify: {stderr}");
        assert!(
            !stderr.contains("error") && !stderr.contains("modified"),
            "{stderr}"
        );
        hermetic_ok(&["--store", root, "store", "verify", "--check-contents"]);
    }
}

#[test]
fn nars_are_byte_identical_to_nix_store_dump() {
    let Some(nix) = nix_or_skip("nars_are_byte_identical_to_nix_store_dump") else {
        return;
    };
    let work = TempDir::new("nar-golden");
    let tree = work.path.join("tree");
    varied_tree(&tree);
    let mut checked = 0;
    for path in [
        tree.as_path(),
        &tree.join("run"),
        &tree.join("link"),
        Path::new("/usr/include/linux"),
    ] {
        if !path.exists() && path.symlink_metadata().is_err() {
            continue;
        }
        let ours = Command::new(hermetic())
            .args(["store", "dump"])
            .arg(path)
            .output()
            .unwrap();
        let theirs = nix
            .command("nix-store")
            .args([
                "--store",
                work.path.join("root").to_str().unwrap(),
                "--dump",
            ])
            .arg(path)
            .output()
            .unwrap();
        assert!(
            ours.status.success() && theirs.status.success(),
            "{}",
            path.display()
        );
        assert!(
            ours.stdout == theirs.stdout,
            "NAR of {} differs from nix-store --dump",
            path.display()
        );
        checked += 1;
    }
    assert!(checked >= 3);
}

#[test]
fn registration_killed_at_random_instants_leaves_a_store_that_verifies() {
    let Some(nix) =
        nix_or_skip("registration_killed_at_random_instants_leaves_a_store_that_verifies")
    else {
        return;
    };
    let work = TempDir::new("store-crash");
    let root = work.path.join("root");
    let root_arg = root.to_str().unwrap();
    // A tree big enough that an add takes a while, so kills land in
    // staging, hashing, renaming and registering alike.
    let tree = work.path.join("tree");
    for i in 0..40 {
        let dir = tree.join(format!("d{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        for j in 0..25 {
            std::fs::write(dir.join(format!("f{j}")), format!("{i} {j}\n").repeat(50)).unwrap();
        }
    }
    let check = |round: &str| {
        // The next start cleans up; then the store is whole.
        hermetic_ok(&["--store", root_arg, "store", "verify", "--check-contents"]);
        let pending = std::fs::read_dir(root.join("nix/var/nix/hermetic/pending"))
            .unwrap()
            .count();
        assert_eq!(pending, 0, "{round}: pending records left");
        let store = LocalStore::open(StoreLayout::under_root(&root)).unwrap();
        for entry in std::fs::read_dir(root.join("nix/store")).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name == ".links" || name.ends_with(".lock") {
                continue;
            }
            assert!(
                !hermetic_tests::is_hermetic_scratch(&name),
                "{round}: staging left: {name}"
            );
            let path = StorePath::from_base_name(&name).unwrap();
            assert!(
                store.is_valid(&path).unwrap(),
                "{round}: present but not registered: {name}"
            );
        }
    };
    let add = |round: &str, crash_at: Option<&str>| {
        std::fs::write(tree.join("round"), round).unwrap();
        let mut command = Command::new(hermetic());
        command
            .args(["--store", root_arg, "store", "add", tree.to_str().unwrap()])
            .stdout(std::process::Stdio::null());
        if let Some(point) = crash_at {
            command.env("HERMETIC_STORE_CRASH_AT", point);
        }
        command.spawn().unwrap()
    };

    // A crash at each named point of an add, on the way in.
    for point in ["staged", "locked", "renamed", "registered"] {
        let status = add(point, Some(point)).wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL),
            "{point}: the crash point was reached"
        );
        check(point);
    }

    // SIGKILL at random instants. The window widens while every add is
    // killed, so that kills also land late in an add.
    let mut seed = u64::from(std::process::id()) | 1;
    let mut span_us = 20_000u64;
    let (mut killed, mut finished) = (0, 0);
    for round in 0..40u64 {
        let mut child = add(&format!("random {round}"), None);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(std::time::Duration::from_micros(seed % span_us));
        let _ = child.kill();
        if child.wait().unwrap().success() {
            finished += 1;
        } else {
            killed += 1;
            span_us += span_us / 5;
        }
        check(&format!("random round {round}"));
    }
    eprintln!("{killed} adds killed at random instants, {finished} finished first");
    let out = nix.verify_store(root_arg);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_input_gets_a_clear_error_and_leaves_the_store_as_it_was() {
    let work = TempDir::new("store-bad-input");
    let root = work.path.join("root");
    let root_arg = root.to_str().unwrap();
    hermetic_ok(&["--store", root_arg, "store", "verify"]);

    let missing = run_hermetic(&["--store", root_arg, "store", "add", "/nonexistent/thing"]);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("cannot add '/nonexistent/thing' to the store"),
        "{stderr}"
    );
    assert!(stderr.contains("No such file or directory"), "{stderr}");

    let badly_named = work.path.join("bad name");
    std::fs::write(&badly_named, b"x").unwrap();
    let out = run_hermetic(&[
        "--store",
        root_arg,
        "store",
        "add",
        badly_named.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("contains illegal character ' '"),
        "{stderr}"
    );

    let text = std::fs::read_to_string(fixture("3pysdbjixd4amzidam0kp6vwzpqy58y3-a.drv")).unwrap();
    let truncated = work.path.join("3pysdbjixd4amzidam0kp6vwzpqy58y3-a.drv");
    std::fs::write(&truncated, &text[..text.len() - 20]).unwrap();
    let out = run_hermetic(&[
        "--store",
        root_arg,
        "derivation",
        "add",
        truncated.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad derivation at byte") && stderr.contains("(in env)"),
        "{stderr}"
    );

    let not_valid = run_hermetic(&[
        "--store",
        root_arg,
        "store",
        "info",
        "/nix/store/3pysdbjixd4amzidam0kp6vwzpqy58y3-a.drv",
    ]);
    let stderr = String::from_utf8_lossy(&not_valid.stderr);
    assert!(
        stderr.contains("path '/nix/store/3pysdbjixd4amzidam0kp6vwzpqy58y3-a.drv' is not valid"),
        "{stderr}"
    );

    // Nothing was registered or left in the store.
    let entries: Vec<_> = std::fs::read_dir(root.join("nix/store"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(entries.is_empty(), "{entries:?}");
}

/// A tmpfs mounted for a test, unmounted however the test ends.
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn a_full_disk_says_so_and_leaves_nothing() {
    if !hermetic_tests::root_or_skip("a_full_disk_says_so_and_leaves_nothing") {
        return;
    }
    let dir = TempDir::new("store-full");
    let root = dir.path.join("root");
    let store = root.join("nix/store");
    std::fs::create_dir_all(&store).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &store,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=1m"),
    )
    .unwrap();
    let _mounted = Tmpfs(store.clone());
    let big = dir.path.join("big");
    std::fs::write(&big, vec![7u8; 4 << 20]).unwrap();
    let out = run_hermetic(&[
        "--store",
        root.to_str().unwrap(),
        "store",
        "add",
        big.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left in the store: {left:?}");
}

/// The directories of a state directory, relative, sorted; symlinks as
/// `name -> target` with the target relative to `root`.
fn state_layout(state: &Path, root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut queue = vec![state.to_path_buf()];
    while let Some(dir) = queue.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let name = path.strip_prefix(state).unwrap().display().to_string();
            let kind = entry.file_type().unwrap();
            if kind.is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                let target = target.strip_prefix(root).unwrap_or(&target);
                found.push(format!("{name} -> {}", target.display()));
            } else if kind.is_dir() && name != "db" {
                found.push(name);
                queue.push(path);
            }
        }
    }
    found.sort();
    found
}

#[test]
fn a_new_store_has_the_state_directories_nix_makes() {
    let Some(nix) = nix_or_skip("a_new_store_has_the_state_directories_nix_makes") else {
        return;
    };
    let dir = TempDir::new("store-state-layout");
    let file = dir.path.join("f");
    std::fs::write(&file, "x").unwrap();
    let (ours, theirs) = (dir.path.join("ours"), dir.path.join("theirs"));
    hermetic_ok(&[
        "--store",
        ours.to_str().unwrap(),
        "store",
        "add",
        file.to_str().unwrap(),
    ]);
    nix.run(
        "nix-store",
        &[
            "--store",
            theirs.to_str().unwrap(),
            "--add",
            file.to_str().unwrap(),
        ],
    );
    let state = |root: &Path| state_layout(&root.join("nix/var/nix"), root);
    let (ours, theirs) = (state(&ours), state(&theirs));
    // hermetic keeps its own records beside Nix's.
    let ours: Vec<String> = ours
        .into_iter()
        .filter(|d| !d.starts_with("hermetic"))
        .collect();
    assert_eq!(ours, theirs);
}
