//! Who reaches a build's directories (issue 14, point 2 and its extras):
//! while a build runs, no other user gets into its staging directory, even
//! when the builder opens its build directory to everyone; once it failed
//! under `keep-failed`, the client that asked can read what it left, as
//! Nix makes the kept directory readable.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hermetic_tests::daemon::{Daemon, as_user, output_text};
use hermetic_tests::nix_peer::NixPeer;
use hermetic_tests::{TEST_USER, test_user_or_skip};

/// Runs `sh -c SCRIPT` as the test user; its output and whether it worked.
fn as_test_user(script: &str) -> (bool, String) {
    let user = nix::unistd::User::from_name(TEST_USER).unwrap().unwrap();
    let out = Command::new("setpriv")
        .arg(format!("--reuid={}", user.uid))
        .arg(format!("--regid={}", user.gid))
        .arg("--init-groups")
        .args(["/bin/sh", "-c", script])
        .current_dir("/")
        .output()
        .unwrap();
    (out.status.success(), output_text(&out))
}

/// The staging directories in a store directory.
fn staging_dirs(store: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(store)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .ends_with(hermetic_store::pending::STAGING_SUFFIX)
        })
        .map(|e| e.path())
        .collect()
}

#[test]
fn no_other_user_reaches_into_a_running_build() {
    if !test_user_or_skip("no_other_user_reaches_into_a_running_build") {
        return;
    }
    let Some(nix) = NixPeer::or_skip("build_dirs", "substituters =\n") else {
        return;
    };
    let daemon = Daemon::start("build-dirs-running", "");
    let file = daemon.write_expr(
        "open",
        r#"derivation { name = "open"; system = "x86_64-linux"; builder = "/bin/sh";
             args = ["-c" "chmod 777 $NIX_BUILD_TOP; touch $NIX_BUILD_TOP/ready; sleep 4.5; echo > $out"]; }"#,
    );
    let mut build = nix
        .command("nix-build")
        .args([
            "--store",
            &daemon.url(),
            file.to_str().unwrap(),
            "--no-out-link",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let store = daemon.root().join("nix/store");
    let deadline = Instant::now() + Duration::from_secs(30);
    let stage = loop {
        if let Some(stage) = staging_dirs(&store)
            .into_iter()
            .find(|s| s.join("build/ready").exists())
        {
            break stage;
        }
        assert!(Instant::now() < deadline, "the build did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    let build_dir = stage.join("build");
    // The builder opened its build directory to everyone; the staging
    // directory above it keeps everyone out.
    let (entered, said) = as_test_user(&format!(
        "ls {dir} && mkdir {dir}/intruder",
        dir = build_dir.display()
    ));
    assert!(!entered, "another user reached into the build: {said}");
    assert!(said.contains("Permission denied"), "{said}");
    assert!(build.wait().unwrap().success());
}

#[test]
fn a_client_reads_its_kept_failed_build() {
    if !test_user_or_skip("a_client_reads_its_kept_failed_build") {
        return;
    }
    let Some(nix) = NixPeer::or_skip("build_dirs", "substituters =\n") else {
        return;
    };
    let daemon = Daemon::start("build-dirs-kept", "");
    let file = daemon.write_expr(
        "fails",
        r#"derivation { name = "fails"; system = "x86_64-linux"; builder = "/bin/sh";
             args = ["-c" "echo what-went-wrong > $NIX_BUILD_TOP/note; exit 1"]; }"#,
    );
    let out = as_user(
        &nix,
        TEST_USER,
        "nix-build",
        &[
            "--store",
            &daemon.url(),
            file.to_str().unwrap(),
            "--no-out-link",
            "--keep-failed",
        ],
    );
    let said = output_text(&out);
    assert!(!out.status.success(), "{said}");
    let kept = said
        .split("note: keeping build directory '")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap_or_else(|| panic!("no kept directory named: {said}"));
    let (read, note) = as_test_user(&format!("cat {kept}/note"));
    assert!(read, "the client cannot read its kept build: {note}");
    assert_eq!(note.trim(), "what-went-wrong");
}

/// Whether the test user, sitting in `dir` (its working directory, as good
/// as a held descriptor) since before `between` ran, can make a directory
/// there afterwards.
fn intruder_after(dir: &Path, between: impl FnOnce()) -> bool {
    use std::io::{BufRead, BufReader, Write};
    let user = nix::unistd::User::from_name(TEST_USER).unwrap().unwrap();
    let mut child = Command::new("setpriv")
        .arg(format!("--reuid={}", user.uid))
        .arg(format!("--regid={}", user.gid))
        .arg("--init-groups")
        .args([
            "/bin/sh",
            "-c",
            "cd \"$1\" && echo ready && read go && if mkdir intruder 2>/dev/null; then echo made; else echo refused; fi",
            "sh",
        ])
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    between();
    writeln!(child.stdin.take().unwrap(), "go").unwrap();
    let answer = lines.next().unwrap().unwrap();
    child.wait().unwrap();
    answer == "made"
}

#[test]
fn a_sealed_tree_is_closed_to_descriptors_held_into_it() {
    if !test_user_or_skip("a_sealed_tree_is_closed_to_descriptors_held_into_it") {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let dir = hermetic_tests::TempDir::new("build-dirs-seal");
    hermetic_tests::set_mode(&dir.path, 0o755);
    // An output as a builder might leave it: open to everyone, and a
    // symlink to a directory of root's.
    let out = dir.path.join("out");
    let deep = out.join("a/b");
    std::fs::create_dir_all(&deep).unwrap();
    let elsewhere = dir.path.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    for d in [&out, &out.join("a"), &deep, &elsewhere] {
        hermetic_tests::set_mode(d, 0o777);
    }
    std::os::unix::fs::symlink(&elsewhere, out.join("a/link")).unwrap();
    // Unsealed, a user sitting in it can write (the test can fail).
    assert!(intruder_after(&deep, || {}));
    std::fs::remove_dir(deep.join("intruder")).unwrap();
    // Sealed while the user sits in it: refused.
    assert!(!intruder_after(&deep, || {
        hermetic_store::tree::seal_tree(&out, 1025).unwrap();
    }));
    let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().mode() & 0o7777;
    assert_eq!(mode(&deep), 0o700);
    assert_eq!(mode(&elsewhere), 0o777, "the seal followed a symlink");
}
