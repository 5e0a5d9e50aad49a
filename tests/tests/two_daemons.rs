//! The deployment recipe of the README ("Two daemons: trusted builds and
//! untrusted ones"), issue 20: untrusted builds never share a daemon with
//! the builds whose outputs feed a trusted cache. Two daemons on one host,
//! each with its own store, nix.conf, socket and build users; the trusted
//! one signs what it builds with the cache's key, the untrusted one holds
//! no key. Checked: the untrusted user cannot reach the trusted daemon,
//! cannot make its daemon sign, and what it builds is refused by the
//! trusted store for want of the cache's signature.

use std::process::{Command, Output};

use hermetic_tests::daemon::{Daemon, as_user};
use hermetic_tests::nix_peer::NixPeer;
use hermetic_tests::{TEST_USER, TempDir, hermetic, test_user_or_skip};

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `hermetic --store ROOT store ARGS` with the nix.conf in `conf_dir`.
fn store(root: &std::path::Path, conf_dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(hermetic())
        .args(["--store", root.to_str().unwrap(), "store"])
        .args(args)
        .env("NIX_CONF_DIR", conf_dir)
        .output()
        .unwrap()
}

#[test]
fn an_untrusted_build_cannot_reach_the_trusted_store_or_its_cache() {
    let test = "an_untrusted_build_cannot_reach_the_trusted_store_or_its_cache";
    if !test_user_or_skip(test) {
        return;
    }
    let Some(nix) = NixPeer::or_skip(test, "substituters =\n") else {
        return;
    };
    let keys = TempDir::new("recipe-keys");
    let (secret, public) = (keys.path.join("secret"), keys.path.join("public"));
    nix.run(
        "nix-store",
        &[
            "--generate-binary-cache-key",
            "cache.example-1",
            secret.to_str().unwrap(),
            public.to_str().unwrap(),
        ],
    );
    let public_key = std::fs::read_to_string(&public).unwrap();
    // The trusted daemon: only the cache's builder (root here) may
    // connect; it signs what it builds; it takes only signed paths.
    let trusted = Daemon::start(
        "recipe-trusted",
        &format!(
            "allowed-users = root\ntrusted-users = root\nsecret-key-files = {}\n\
             trusted-public-keys = {}\nrequire-sigs = true\n\
             extra-sandbox-paths = /bin/sh=/bin/busybox",
            secret.display(),
            public_key.trim()
        ),
    );
    // The untrusted one: the CI user, trusted by nobody, build users of
    // its own.
    let untrusted = Daemon::start(
        "recipe-untrusted",
        &format!(
            "build-users-group = hermetic-pair\nallowed-users = {TEST_USER}\ntrusted-users =\n\
             extra-sandbox-paths = /bin/sh=/bin/busybox"
        ),
    );

    // 1. The untrusted user cannot reach the trusted daemon.
    let out = as_user(
        &nix,
        TEST_USER,
        "nix-store",
        &[
            "--store",
            &trusted.url(),
            "-q",
            "--hash",
            "/nix/store/00000000000000000000000000000000-x",
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains(&format!(
            "user '{TEST_USER}' is not allowed to connect to the Nix daemon"
        )),
        "{}",
        text(&out)
    );

    // 2. It builds through its own daemon, and cannot make it sign.
    let job = r#"derivation { name = "job"; system = builtins.currentSystem; builder = "/bin/sh";
        args = [ "-c" "echo from-untrusted-code > $out" ]; }"#;
    let file = untrusted.write_expr("job", job);
    let out = as_user(
        &nix,
        TEST_USER,
        "nix-build",
        &[
            "--store",
            &untrusted.url(),
            "--no-out-link",
            "--option",
            "secret-key-files",
            secret.to_str().unwrap(),
            file.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(
            "ignoring the client-specified setting 'secret-key-files', because it is a \
             restricted setting and you are not a trusted user"
        ),
        "{}",
        text(&out)
    );
    let built = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let conf = |daemon: &Daemon| daemon.dir.path.join("conf");
    let info = store(
        &untrusted.root(),
        &conf(&untrusted),
        &["info", "--json", &built],
    );
    assert!(info.status.success(), "{}", text(&info));
    assert!(!text(&info).contains("cache.example-1:"), "{}", text(&info));

    // 3. What it built, offered to the trusted store as a cache, is
    //    refused: it lacks the cache's signature.
    let offered = TempDir::new("recipe-offered");
    let cache = format!("file://{}", offered.path.display());
    let out = store(
        &untrusted.root(),
        &conf(&untrusted),
        &["copy", "--to", &cache, &built],
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = store(
        &trusted.root(),
        &conf(&trusted),
        &["copy", "--from", &cache, &built],
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "cannot add path '{built}' because it lacks a signature by a trusted key"
        )),
        "{}",
        text(&out)
    );
    let info = store(&trusted.root(), &conf(&trusted), &["info", &built]);
    assert!(!info.status.success(), "{}", text(&info));

    // The trusted side builds the same job itself: signed with the cache's
    // key, so its cache can be trusted.
    let out = nix
        .command("nix-build")
        .args(["--store", &trusted.url(), "--no-out-link"])
        .arg(trusted.write_expr("job", job))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let info = store(
        &trusted.root(),
        &conf(&trusted),
        &["info", "--json", &built],
    );
    assert!(text(&info).contains("cache.example-1:"), "{}", text(&info));
}
