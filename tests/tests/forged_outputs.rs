//! Nobody can put content of their choice at another derivation's output
//! path (issue 13): a derivation's output paths are recomputed from its own
//! text however it reaches the store or a build, and the store checks every
//! registration again. The attack of Nix's `secure-drv-outputs.sh` and its
//! variants, by an unprivileged user and by clients speaking the protocol
//! by hand, against a root daemon with build users and the sandbox on.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hermetic_store::db::PathInfo;
use hermetic_store::{Derivation, DerivationOutput, Hash, LocalStore, StoreLayout, StorePath};
use hermetic_tests::daemon::{Daemon, RawClient, as_user, file_as, output_text, running};
use hermetic_tests::nix_peer::NixPeer;
use hermetic_tests::{TEST_USER, hermetic, root_or_skip, test_user_or_skip};

/// Two derivations of one name that write different files: Nix's
/// `secure-drv-outputs.nix`, with the sandbox's shell as builder.
const GOOD_AND_BAD: &str = r#"let sh = "/bin/sh"; in {
  good = derivation { name = "good"; system = "x86_64-linux"; builder = sh; args = ["-c" "mkdir $out; echo > $out/good"]; };
  bad = derivation { name = "good"; system = "x86_64-linux"; builder = sh; args = ["-c" "mkdir $out; echo > $out/bad"]; };
  nondet = derivation { name = "nondet"; system = "x86_64-linux"; builder = sh; args = ["-c" "cat /proc/sys/kernel/random/uuid > $out"]; };
  slow = derivation { name = "slow"; system = "x86_64-linux"; builder = sh; args = ["-c" "echo forged-outputs-slow; sleep 3; echo built > $out"]; };
}"#;

/// A daemon with the good and bad derivations instantiated, and the bad
/// one rewritten to name the good one's output.
struct Scene {
    daemon: Daemon,
    nix: NixPeer,
    good_out: String,
    bad_drv: String,
    /// The bad derivation's text naming the good one's output.
    forged: String,
}

impl Scene {
    fn new(test: &str, conf: &str) -> Option<Scene> {
        let nix = NixPeer::or_skip(
            test,
            "substituters =\nexperimental-features = nix-command\n",
        )?;
        let daemon = Daemon::start(test, conf);
        let file = daemon.dir.path.join("t.nix");
        std::fs::write(&file, GOOD_AND_BAD).unwrap();
        hermetic_tests::set_mode(&file, 0o644);
        let url = daemon.url();
        let instantiate = |attr: &str| {
            let drv = nix.run(
                "nix-instantiate",
                &["--store", &url, file.to_str().unwrap(), "-A", attr],
            );
            let drv = drv.trim().to_owned();
            let out = nix.run("nix-store", &["--store", &url, "-q", &drv]);
            (drv, out.trim().to_owned())
        };
        let (_, good_out) = instantiate("good");
        let (bad_drv, bad_out) = instantiate("bad");
        assert_ne!(good_out, bad_out);
        let forged = std::fs::read_to_string(daemon.real(&bad_drv))
            .unwrap()
            .replace(&bad_out, &good_out);
        Some(Scene {
            daemon,
            nix,
            good_out,
            bad_drv,
            forged,
        })
    }

    fn nix_file(&self) -> String {
        self.daemon.dir.path.join("t.nix").display().to_string()
    }

    /// Nix's text refusing the forged derivation (the path it should name
    /// depends on the name it was added under).
    fn refusal(&self) -> String {
        format!("has incorrect output '{}', should be '", self.good_out)
    }

    /// The forged derivation as a `.drv` file others can read.
    fn forged_file(&self) -> String {
        let dir = self.daemon.dir.path.join("forged");
        std::fs::create_dir_all(&dir).unwrap();
        hermetic_tests::set_mode(&dir, 0o755);
        let file = dir.join("bad.drv");
        std::fs::write(&file, &self.forged).unwrap();
        hermetic_tests::set_mode(&file, 0o644);
        file.display().to_string()
    }

    /// The forged derivation as it would be registered: a text path with
    /// the bad derivation's references, its NAR, and its metadata.
    fn forged_path_info(&self) -> (PathInfo, Vec<u8>) {
        let store = hermetic_store::StoreDir::default();
        let bad = Derivation::from_aterm(self.forged.as_bytes(), &store, "good").unwrap();
        let sha = Hash::sha256(self.forged.as_bytes());
        let path = store
            .make_text_path("good.drv", &sha, &bad.references())
            .unwrap();
        let (mut info, nar) = file_as(Path::new(&self.forged_file()), path);
        info.references = bad.references();
        info.ca = Some(format!("text:{}", sha.to_prefixed_base32()));
        (info, nar)
    }

    /// A trusted client puts a file saying `planted` at `printed`, with
    /// signatures unchecked.
    fn plant(&self, printed: &str) {
        let planted = self.daemon.dir.path.join("planted");
        std::fs::write(&planted, "planted\n").unwrap();
        let path = hermetic_store::StoreDir::default().parse(printed).unwrap();
        let (info, nar) = file_as(&planted, path);
        RawClient::connect(&self.daemon)
            .add_to_store_nar(&info, &nar, true)
            .unwrap();
    }

    /// The good derivation builds to its own output, which holds `good`.
    fn assert_good_output_is_good(&self, user: &str) {
        let url = self.daemon.url();
        let out = as_user(
            &self.nix,
            user,
            "nix-build",
            &[
                "--store",
                &url,
                &self.nix_file(),
                "-A",
                "good",
                "--no-out-link",
            ],
        );
        assert!(out.status.success(), "{}", output_text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), self.good_out);
        let real = self.daemon.real(&self.good_out);
        assert!(
            real.join("good").exists() && !real.join("bad").exists(),
            "the bad derivation stole the good derivation's output path"
        );
        let verify = self.nix.verify_store(self.daemon.root());
        assert!(verify.status.success(), "{}", output_text(&verify));
    }

    /// Registers the forged derivation without any check, as a store
    /// written before this fix (or by a careless tool) may hold it.
    fn register_forged_unchecked(&self) -> StorePath {
        let (info, nar) = self.forged_path_info();
        let path = info.path.clone();
        self.daemon.register_unchecked(info, &nar);
        path
    }
}

/// The steps of Nix's `tests/secure-drv-outputs.sh`, by a real
/// unprivileged user and by root, through the daemon: the forged
/// derivation is refused when it is added, with Nix's text, and the good
/// derivation then builds to its own content.
#[test]
fn the_secure_drv_outputs_attack_is_refused_for_every_user() {
    let test = "the_secure_drv_outputs_attack_is_refused_for_every_user";
    if !test_user_or_skip(test) {
        return;
    }
    let Some(scene) = Scene::new("forged-secure", "") else {
        return;
    };
    let url = scene.daemon.url();
    for user in [TEST_USER, "root"] {
        let forged = scene.forged_file();
        let added = as_user(
            &scene.nix,
            user,
            "nix-store",
            &["--store", &url, "--add", &forged],
        );
        let said = output_text(&added);
        if added.status.success() {
            // As Nix's test does: build what was added.
            let drv = String::from_utf8_lossy(&added.stdout).trim().to_owned();
            as_user(
                &scene.nix,
                user,
                "nix-store",
                &["--store", &url, "-r", &drv],
            );
        }
        assert!(!added.status.success(), "{user}: the forged .drv was added");
        assert!(said.contains(&scene.refusal()), "{user}: {said}");
        scene.assert_good_output_is_good(user);
    }
}

/// The forged derivation sent as a copy (`AddToStoreNar`,
/// `AddMultipleToStore`) or as a text (`AddTextToStore`): its `text:`
/// content address names its path, so no signature is asked for, and its
/// outputs are checked all the same.
#[test]
fn a_forged_derivation_is_refused_however_it_is_copied_in() {
    let test = "a_forged_derivation_is_refused_however_it_is_copied_in";
    if !root_or_skip(test) {
        return;
    }
    // Nobody is trusted here, root included.
    let Some(scene) = Scene::new("forged-copies", "trusted-users =") else {
        return;
    };
    let (info, nar) = scene.forged_path_info();
    let forged_path = hermetic_store::StoreDir::default().print(&info.path);
    let mut client = RawClient::connect(&scene.daemon);
    let refused = client.add_to_store_nar(&info, &nar, false);
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains(&scene.refusal())),
        "AddToStoreNar: {refused:?}"
    );
    let refused = client.add_multiple_to_store(&[(info.clone(), nar.clone())]);
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains(&scene.refusal())),
        "AddMultipleToStore: {refused:?}"
    );
    let references: Vec<String> = info
        .references
        .iter()
        .map(|r| hermetic_store::StoreDir::default().print(r))
        .collect();
    let references: Vec<&str> = references.iter().map(String::as_str).collect();
    let refused = client.add_text_to_store("good.drv", &scene.forged, &references);
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains(&scene.refusal())),
        "AddTextToStore: {refused:?}"
    );
    // Nothing was registered: building it finds no derivation.
    let url = scene.daemon.url();
    let out = as_user(
        &scene.nix,
        "root",
        "nix-store",
        &["--store", &url, "-r", &forged_path],
    );
    assert!(!out.status.success(), "{}", output_text(&out));
    scene.assert_good_output_is_good("root");
}

/// A forged derivation already registered (a store from before the
/// check): building it, or a derivation that depends on it, through the
/// daemon (`BuildPaths` from `nix-store -r`, `BuildPathsWithResults` from
/// `nix build`) or with `hermetic build`, is refused before anything runs.
#[test]
fn a_forged_derivation_already_in_the_store_is_never_built() {
    let test = "a_forged_derivation_already_in_the_store_is_never_built";
    if !test_user_or_skip(test) {
        return;
    }
    let Some(scene) = Scene::new("forged-legacy", "") else {
        return;
    };
    let forged = scene.register_forged_unchecked();
    let store_dir = hermetic_store::StoreDir::default();
    // A derivation whose input is the forged one: its own outputs are right.
    let layout = StoreLayout::under_root(&scene.daemon.root());
    let top = {
        let mut store = LocalStore::open(layout.clone()).unwrap();
        let mut drv = Derivation {
            name: "top".into(),
            outputs: BTreeMap::from([("out".into(), DerivationOutput::Deferred)]),
            input_drvs: BTreeMap::from([(forged.clone(), BTreeSet::from(["out".into()]))]),
            input_srcs: BTreeSet::new(),
            system: "x86_64-linux".into(),
            builder: "/bin/sh".into(),
            args: vec!["-c".into(), "echo top > $out".into()],
            env: BTreeMap::from([
                ("builder".into(), "/bin/sh".into()),
                ("name".into(), "top".into()),
                ("system".into(), "x86_64-linux".into()),
            ]),
        };
        drv.fill_output_paths(&store_dir, &mut |p| store.drv_hashes(p))
            .unwrap();
        store_dir.print(&store.add_derivation(&drv).unwrap())
    };
    let url = scene.daemon.url();
    for drv in [store_dir.print(&forged), top] {
        let out = as_user(
            &scene.nix,
            TEST_USER,
            "nix-store",
            &["--store", &url, "-r", &drv],
        );
        let said = output_text(&out);
        assert!(!out.status.success(), "{drv} was built: {said}");
        assert!(said.contains(&scene.refusal()), "{drv}: {said}");
        let out = as_user(
            &scene.nix,
            TEST_USER,
            "nix",
            &["build", "--store", &url, "--no-link", &drv],
        );
        let said = output_text(&out);
        assert!(!out.status.success(), "nix build {drv}: {said}");
        assert!(said.contains(&scene.refusal()), "nix build {drv}: {said}");
        let out = Command::new(hermetic())
            .arg("--store")
            .arg(scene.daemon.root())
            .args(["build", &drv])
            .env("NIX_CONF_DIR", scene.daemon.dir.path.join("conf"))
            .output()
            .unwrap();
        let said = output_text(&out);
        assert!(!out.status.success(), "hermetic build {drv}: {said}");
        assert!(
            said.contains(&scene.refusal()),
            "hermetic build {drv}: {said}"
        );
    }
    scene.assert_good_output_is_good(TEST_USER);
    // `nix build` of the good one gets its output back as a realisation.
    let out = as_user(
        &scene.nix,
        TEST_USER,
        "nix",
        &[
            "build",
            "--store",
            &url,
            "-f",
            &scene.nix_file(),
            "good",
            "--json",
            "--no-link",
        ],
    );
    let said = output_text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("\"outputs\":{{\"out\":\"{}\"}}", scene.good_out)),
        "{said}"
    );
}

/// `BuildDerivation`: a fixed-output derivation that names an
/// input-addressed derivation's output is refused from every client; a
/// trusted client's input-addressed derivation is taken as sent (as Nix
/// does), but its output is not registered as built by a derivation in the
/// store that does not compute it.
#[test]
fn an_inline_derivation_cannot_claim_another_derivations_output() {
    let test = "an_inline_derivation_cannot_claim_another_derivations_output";
    if !root_or_skip(test) {
        return;
    }
    let hi = Hash::sha256(b"hi\n").to_hex();
    let claim = |scene: &Scene, client: &mut RawClient| {
        client.build_derivation(
            "/nix/store/33333333333333333333333333333333-good.drv",
            &scene.good_out,
            "sha256",
            &hi,
            "echo hi > $out",
        )
    };
    for conf in ["", "trusted-users ="] {
        let Some(scene) = Scene::new("forged-inline", conf) else {
            return;
        };
        let mut client = RawClient::connect(&scene.daemon);
        let refused = claim(&scene, &mut client);
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.contains(&scene.refusal())),
            "{conf:?}: {refused:?}"
        );
        if conf.is_empty() {
            // Trusted: the bad derivation, valid here, sent inline as if
            // it built the good output.
            let status = client.build_derivation(
                &scene.bad_drv,
                &scene.good_out,
                "",
                "",
                "mkdir $out; echo > $out/bad",
            );
            assert!(status.is_err() || status != Ok(0), "{status:?}");
        }
        assert!(!scene.daemon.real(&scene.good_out).exists());
        scene.assert_good_output_is_good("root");
    }
}

/// An output path that is already valid is never replaced by a build: the
/// other outputs are built and registered, the valid one keeps its
/// content.
#[test]
fn a_build_never_replaces_an_output_that_is_already_valid() {
    let test = "a_build_never_replaces_an_output_that_is_already_valid";
    if !root_or_skip(test) {
        return;
    }
    let Some(scene) = Scene::new("forged-valid", "") else {
        return;
    };
    let url = scene.daemon.url();
    let multi = scene.nix.run(
        "nix-instantiate",
        &["--store", &url, &scene.daemon.file(), "-A", "multi"],
    );
    let multi = multi.trim();
    let outputs = scene
        .nix
        .run("nix-store", &["--store", &url, "-q", "--outputs", multi]);
    let dev = outputs
        .lines()
        .find(|l| l.ends_with("-multi-dev"))
        .expect("a dev output")
        .to_owned();
    // A trusted client puts other content at the dev output first.
    scene.plant(&dev);
    let out = as_user(
        &scene.nix,
        "root",
        "nix-store",
        &["--store", &url, "-r", multi],
    );
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(
        std::fs::read_to_string(scene.daemon.real(&dev)).unwrap(),
        "planted\n"
    );
    let built = outputs.lines().find(|l| l.ends_with("-multi")).unwrap();
    assert!(scene.daemon.real(built).exists());
    let verify = scene.nix.verify_store(scene.daemon.root());
    assert!(verify.status.success(), "{}", output_text(&verify));
}

/// A copy of a path arriving while a build makes the same path waits for
/// the build's lock, and then finds it valid: one content, registered
/// once.
#[test]
fn a_copy_racing_a_build_of_the_same_output_never_replaces_it() {
    let test = "a_copy_racing_a_build_of_the_same_output_never_replaces_it";
    if !root_or_skip(test) {
        return;
    }
    let Some(scene) = Scene::new("forged-race", "") else {
        return;
    };
    let url = scene.daemon.url();
    let slow = scene.nix.run(
        "nix-instantiate",
        &["--store", &url, &scene.nix_file(), "-A", "slow"],
    );
    let slow = slow.trim().to_owned();
    let out = scene.nix.run("nix-store", &["--store", &url, "-q", &slow]);
    let out = out.trim().to_owned();
    let build = scene
        .nix
        .command("nix-store")
        .args(["--store", &url, "-r", &slow])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !running("forged-outputs-slow") {
        assert!(started.elapsed() < Duration::from_secs(60), "no build");
        std::thread::sleep(Duration::from_millis(20));
    }
    scene.plant(&out);
    let built = build.wait_with_output().unwrap();
    assert!(built.status.success(), "{}", output_text(&built));
    assert_eq!(
        std::fs::read_to_string(scene.daemon.real(&out)).unwrap(),
        "built\n"
    );
    let verify = scene.nix.verify_store(scene.daemon.root());
    assert!(verify.status.success(), "{}", output_text(&verify));
}

/// An untrusted user cannot repair (Nix: trusted users only), and may
/// check: a build that differs fails and the registered output stays.
#[test]
fn an_untrusted_user_cannot_repair_and_checking_changes_nothing() {
    let test = "an_untrusted_user_cannot_repair_and_checking_changes_nothing";
    if !test_user_or_skip(test) {
        return;
    }
    let Some(scene) = Scene::new("forged-repair", "") else {
        return;
    };
    let url = scene.daemon.url();
    let drv = as_user(
        &scene.nix,
        TEST_USER,
        "nix-instantiate",
        &["--store", &url, &scene.nix_file(), "-A", "nondet"],
    );
    let drv = String::from_utf8_lossy(&drv.stdout).trim().to_owned();
    let built = as_user(
        &scene.nix,
        TEST_USER,
        "nix-store",
        &["--store", &url, "-r", &drv],
    );
    assert!(built.status.success(), "{}", output_text(&built));
    let out = String::from_utf8_lossy(&built.stdout).trim().to_owned();
    let before = std::fs::read_to_string(scene.daemon.real(&out)).unwrap();
    let repair = as_user(
        &scene.nix,
        TEST_USER,
        "nix-store",
        &["--store", &url, "-r", "--repair", &drv],
    );
    assert!(!repair.status.success());
    assert!(
        output_text(&repair)
            .contains("repairing is not allowed because you are not in 'trusted-users'"),
        "{}",
        output_text(&repair)
    );
    let check = as_user(
        &scene.nix,
        TEST_USER,
        "nix-store",
        &["--store", &url, "-r", "--check", &drv],
    );
    assert!(!check.status.success());
    assert!(
        output_text(&check).contains("may not be deterministic"),
        "{}",
        output_text(&check)
    );
    assert_eq!(
        std::fs::read_to_string(scene.daemon.real(&out)).unwrap(),
        before
    );
    let verify = scene.nix.verify_store(scene.daemon.root());
    assert!(verify.status.success(), "{}", output_text(&verify));
}

/// `hermetic store add` of a forged `.drv`, or of a file named `.drv` that
/// is no derivation, is refused; so is `hermetic build` of a forged `.drv`
/// file outside the store.
#[test]
fn the_command_line_refuses_forged_and_malformed_derivations() {
    let test = "the_command_line_refuses_forged_and_malformed_derivations";
    if !root_or_skip(test) {
        return;
    }
    let Some(scene) = Scene::new("forged-cli", "") else {
        return;
    };
    let hermetic_on_store = |args: &[&str]| {
        Command::new(hermetic())
            .arg("--store")
            .arg(scene.daemon.root())
            .args(args)
            .env("NIX_CONF_DIR", scene.daemon.dir.path.join("conf"))
            .output()
            .unwrap()
    };
    let forged = scene.forged_file();
    // `hermetic build` reads a `.drv` file named as a store path.
    let named = scene
        .daemon
        .dir
        .path
        .join(format!("forged/{}-good.drv", "0".repeat(32)));
    std::fs::copy(&forged, &named).unwrap();
    let named = named.display().to_string();
    for args in [vec!["store", "add", &forged], vec!["build", &named]] {
        let out = hermetic_on_store(&args);
        let said = output_text(&out);
        assert!(!out.status.success(), "{args:?}: {said}");
        assert!(said.contains(&scene.refusal()), "{args:?}: {said}");
    }
    let garbage = scene.daemon.dir.path.join("forged/garbage.drv");
    std::fs::write(&garbage, "not a derivation\n").unwrap();
    let out = hermetic_on_store(&["store", "add", garbage.to_str().unwrap()]);
    let said = output_text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("cannot read derivation"), "{said}");
    scene.assert_good_output_is_good("root");
}
