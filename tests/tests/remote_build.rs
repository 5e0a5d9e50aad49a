//! Remote building over real SSH (issue 20): stock Nix 2.8 offloading a
//! chain of derivations to a machine whose login runs `hermetic daemon
//! --stdio` (`ssh-ng://`, `remote-program`), the outputs coming back equal
//! to a local build's.

use std::path::Path;
use std::process::{Command, Output};

use hermetic_tests::nix_peer::NixPeer;
use hermetic_tests::sshd::Sshd;
use hermetic_tests::{TempDir, hermetic, root_or_skip};

/// `n` derivations, each reading the one before.
fn chain(n: usize) -> String {
    format!(
        r#"let
  step = n: prev: derivation {{
    name = "chain-${{toString n}}"; system = builtins.currentSystem; builder = "/bin/sh";
    args = [ "-c" "echo ${{toString n}} $(cat ${{if prev == null then "/dev/null" else prev}}) > $out" ];
  }};
  go = n: if n == 0 then step 0 null else step n (go (n - 1));
in go {}"#,
        n - 1
    )
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The NAR hash Nix's tools read from the store under `root`.
fn nar_hash(nix: &NixPeer, root: &Path, path: &str) -> String {
    nix.run(
        "nix-store",
        &["--store", root.to_str().unwrap(), "--query", "--hash", path],
    )
    .trim()
    .to_owned()
}

#[test]
fn stock_nix_offloads_a_chain_to_hermetic_over_ssh_ng() {
    let test = "stock_nix_offloads_a_chain_to_hermetic_over_ssh_ng";
    if !root_or_skip(test) {
        return;
    }
    let Some(nix) = NixPeer::or_skip(test, "") else {
        return;
    };
    let Some(sshd) = Sshd::start_or_skip(test) else {
        return;
    };
    let work = TempDir::new("remote-build");
    let path = |name: &str| work.path.join(name);

    // The remote machine: hermetic's store and configuration, reached by
    // the login's remote program. It builds as auto-allocated ids, so
    // that no nixbld user is shared with other tests.
    std::fs::create_dir_all(path("remote-conf")).unwrap();
    std::fs::write(
        path("remote-conf/nix.conf"),
        "sandbox = true\nextra-sandbox-paths = /bin/sh=/bin/busybox\ntrusted-users = root\n\
         experimental-features = auto-allocate-uids cgroups\nauto-allocate-uids = true\n\
         use-cgroups = true\n",
    )
    .unwrap();
    let program = path("remote-program");
    std::fs::write(
        &program,
        format!(
            "#!/bin/sh\nexport NIX_CONF_DIR={}\nexec {} --store {} daemon \"$@\"\n",
            path("remote-conf").display(),
            hermetic().display(),
            path("remote").display()
        ),
    )
    .unwrap();
    hermetic_tests::set_mode(&program, 0o755);

    // The local machine: Nix 2.8 with only the remote builder (max-jobs 0).
    std::fs::create_dir_all(path("local-conf")).unwrap();
    std::fs::write(
        path("local-conf/nix.conf"),
        format!(
            "sandbox = true\nbuild-users-group =\nsubstituters =\nmax-jobs = 0\n\
             extra-sandbox-paths = /bin/sh=/bin/busybox\n\
             builders = ssh-ng://root@127.0.0.1?remote-program={} x86_64-linux {} 2\n",
            program.display(),
            sshd.client_key().display()
        ),
    )
    .unwrap();
    let expr = path("chain.nix");
    std::fs::write(&expr, chain(20)).unwrap();
    let local = path("local");
    let out = Command::new("nix-build")
        .args(["--store", local.to_str().unwrap(), "--no-out-link"])
        .arg(&expr)
        .env("NIX_CONF_DIR", path("local-conf"))
        .env("NIX_SSHOPTS", sshd.ssh_opts())
        .env_remove("NIX_REMOTE")
        .output()
        .unwrap();
    let said = stderr(&out);
    assert!(out.status.success(), "{said}");
    let last = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let real = |root: &Path, printed: &str| root.join(printed.trim_start_matches('/'));
    let expected: Vec<String> = (0..20).rev().map(|n| n.to_string()).collect();
    assert_eq!(
        std::fs::read_to_string(real(&local, &last)).unwrap().trim(),
        expected.join(" ")
    );
    // All twenty were built remotely; the remote daemon's own log lines
    // stayed out of the user's terminal, as nix-daemon --stdio's do.
    let remote_builds = said
        .lines()
        .filter(|l| l.starts_with("building '") && l.contains("' on 'ssh-ng://root@127.0.0.1"))
        .count();
    assert_eq!(remote_builds, 20, "{said}");
    assert!(!said.contains("accepted connection"), "{said}");
    // The outputs came back whole: Nix verifies its store, and the last
    // one's NAR hash is the remote store's and a local hermetic build's.
    let verified = nix.verify_store(&local);
    assert!(verified.status.success(), "{}", stderr(&verified));
    let remote = path("remote");
    let ours = path("ours");
    let drv = nix
        .run(
            "nix-instantiate",
            &["--store", ours.to_str().unwrap(), expr.to_str().unwrap()],
        )
        .trim()
        .to_owned();
    let built = Command::new(hermetic())
        .args(["--store", ours.to_str().unwrap(), "build", &drv])
        .env("NIX_CONF_DIR", path("remote-conf"))
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", stderr(&built));
    assert_eq!(String::from_utf8_lossy(&built.stdout).trim(), last);
    let hash = nar_hash(&nix, &local, &last);
    assert_eq!(hash, nar_hash(&nix, &remote, &last));
    assert_eq!(hash, nar_hash(&nix, &ours, &last));
}
