//! Substitution (issue 17): `hermetic build` fetches a derivation's
//! outputs from binary caches made by stock Nix 2.8 instead of building
//! them, over HTTP from a real server on loopback and over `file://`, in
//! the caches' priority order; a failed fetch fails the build in Nix's
//! words or, with `fallback`, builds it; bad caches change nothing.

use hermetic_tests::builds::{BuildHost, stderr};
use hermetic_tests::http_server::Fault;
use hermetic_tests::nix_cache::NixCache;
use hermetic_tests::root_or_skip;

/// A store with the cache's derivation (and its sources) in it, trusting
/// the cache's key, `extra` added to its nix.conf.
fn host_with_drv(label: &str, cache: &NixCache, extra: &str) -> BuildHost {
    let host = BuildHost::diverted(label);
    let conf = |more: &str| {
        format!(
            "trusted-public-keys = {}\nextra-sandbox-paths = /bin/sh=/bin/busybox\n{more}",
            cache.public_key()
        )
    };
    host.conf(&conf(""));
    let out = host.run(&["store", "copy", "--from", &cache.url(), &cache.drv]);
    assert!(out.status.success(), "{}", stderr(&out));
    host.conf(&conf(extra));
    host
}

/// The output's file in `host`'s store, if there.
fn output_text(host: &BuildHost, printed: &str) -> Option<String> {
    let real = host
        .dir
        .path
        .join("root")
        .join(printed.trim_start_matches('/'));
    std::fs::read_to_string(real).ok()
}

/// Whether `host`'s store has `printed` registered.
fn registered(host: &BuildHost, printed: &str) -> bool {
    let path = host.layout().store_dir.parse(printed).unwrap();
    host.store().is_valid(&path).unwrap()
}

/// After the next start of hermetic on `host`'s store (which finishes
/// what a killed one left): what is registered is there and verifies, and
/// no staging directory is left.
fn assert_nothing_half_done(host: &BuildHost) {
    let verify = host.run(&["store", "verify", "--check-contents"]);
    assert!(verify.status.success(), "{}", stderr(&verify));
    let layout = host.layout();
    for entry in std::fs::read_dir(&layout.real_store_dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            !hermetic_tests::is_hermetic_scratch(&name),
            "left in the store: {name}"
        );
    }
}

#[test]
fn a_build_fetches_its_output_over_http_in_priority_order_instead_of_building() {
    if !root_or_skip("a_build_fetches_its_output_over_http_in_priority_order_instead_of_building") {
        return;
    }
    let Some(cache) = NixCache::make() else {
        return;
    };
    let server = cache.serve_http();
    // The same cache through file:// with a later priority: named first,
    // asked second.
    let late = cache.dir.path.join("late-cache");
    std::process::Command::new("cp")
        .args(["-a"])
        .arg(cache.dir.path.join("cache"))
        .arg(&late)
        .status()
        .unwrap();
    std::fs::write(
        late.join("nix-cache-info"),
        "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 90\n",
    )
    .unwrap();
    let late_url = format!("file://{}", late.display());
    let http = server.url("");
    let host = host_with_drv(
        "subst-http",
        &cache,
        &format!("substituters = {late_url} {http}"),
    );
    assert!(!registered(&host, &cache.built));
    let out = host.run(&["build", &cache.drv]);
    let said = stderr(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "copying path '{}' from '{}'...",
            cache.built,
            http.trim_end_matches('/')
        )),
        "{said}"
    );
    assert!(!said.contains("building '"), "{said}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), cache.built);
    assert_eq!(
        output_text(&host, &cache.built).as_deref(),
        Some(format!("built\nref {}\n", cache.source).as_str())
    );
    let hash = &cache.built["/nix/store/".len()..][..32];
    assert!(
        server.requests().contains(&format!("{hash}.narinfo")),
        "{:?}",
        server.requests()
    );
    assert_nothing_half_done(&host);
    let verify = cache.nix.verify_store(host.dir.path.join("root"));
    assert!(verify.status.success(), "{}", stderr(&verify));
    // Again: nothing to do, nothing fetched.
    let again = host.run(&["build", &cache.drv]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        !stderr(&again).contains("copying path"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn a_failed_fetch_fails_the_build_in_nix_words_or_builds_it_with_fallback() {
    if !root_or_skip("a_failed_fetch_fails_the_build_in_nix_words_or_builds_it_with_fallback") {
        return;
    }
    let Some(cache) = NixCache::make() else {
        return;
    };
    let server = cache.serve_http();
    let nar = cache.nar_url(&cache.built);
    let conf = format!("substituters = {}", server.url(""));
    let nix_text = format!(
        "error: some substitutes for the outputs of derivation '{}' failed (usually happens due to networking issues); try '--fallback' to build derivation from source ",
        cache.drv
    );
    // Each way a NAR download goes wrong: refused, cut short, endless.
    for (label, fault, what) in [
        ("subst-500", Fault::Status(500), "HTTP error 500"),
        ("subst-cut", Fault::Truncate(40), ""),
        ("subst-endless", Fault::Endless, ""),
    ] {
        server.clear_faults();
        server.fault(&nar, fault);
        let host = host_with_drv(label, &cache, &conf);
        let out = host.run(&["build", &cache.drv]);
        let said = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{label}: {said}");
        assert!(said.contains(&nix_text), "{label}: {said}");
        assert!(said.contains(what), "{label}: {said}");
        assert!(!said.contains("building '"), "{label}: {said}");
        assert!(!registered(&host, &cache.built), "{label}");
        assert!(output_text(&host, &cache.built).is_none(), "{label}");
        assert_nothing_half_done(&host);
    }
    // With fallback, the same failure builds it here instead.
    server.clear_faults();
    server.fault(&nar, Fault::Status(500));
    let host = host_with_drv(
        "subst-fallback",
        &cache,
        &format!("{conf}\nfallback = true"),
    );
    let out = host.run(&["build", &cache.drv]);
    let said = stderr(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!("building '{}'", cache.drv)),
        "{said}"
    );
    assert_eq!(
        output_text(&host, &cache.built).as_deref(),
        Some(format!("built\nref {}\n", cache.source).as_str())
    );
}

#[test]
fn caches_that_cannot_serve_are_passed_over_and_the_derivation_is_built() {
    if !root_or_skip("caches_that_cannot_serve_are_passed_over_and_the_derivation_is_built") {
        return;
    }
    let Some(cache) = NixCache::make() else {
        return;
    };
    let server = cache.serve_http();
    let hash = &cache.built["/nix/store/".len()..][..32];
    // Nothing listens on this port: warned of, skipped.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let closed = format!("http://127.0.0.1:{closed}");
    // The cache has no narinfo for the output (404): built.
    server.fault(&format!("{hash}.narinfo"), Fault::Status(404));
    let host = host_with_drv(
        "subst-absent",
        &cache,
        &format!("substituters = {closed} {}", server.url("")),
    );
    let out = host.run(&["build", &cache.drv]);
    let said = stderr(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "warning: unable to download '{closed}/nix-cache-info'"
        )),
        "{said}"
    );
    assert!(
        said.contains(&format!("building '{}'", cache.drv)),
        "{said}"
    );
    assert!(!said.contains("copying path"), "{said}");

    // A narinfo that never comes: after stalled-download-timeout the cache
    // counts as failed; without fallback that fails the derivation.
    server.clear_faults();
    server.fault(&format!("{hash}.narinfo"), Fault::Stall);
    let host = host_with_drv(
        "subst-stall",
        &cache,
        &format!(
            "substituters = {}\nstalled-download-timeout = 2",
            server.url("")
        ),
    );
    let out = host.run(&["build", &cache.drv]);
    let said = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("some substitutes for the outputs"), "{said}");
    assert!(!registered(&host, &cache.built));
    assert_nothing_half_done(&host);

    // A narinfo signed by no trusted key: Nix's warning, then built.
    server.clear_faults();
    let host = host_with_drv(
        "subst-unsigned",
        &cache,
        &format!("substituters = {}", server.url("")),
    );
    host.conf(&format!(
        "trusted-public-keys = other-1:ZXhhbXBsZWV4YW1wbGVleGFtcGxlZXhhbXBsZWV4YW0=\n\
         extra-sandbox-paths = /bin/sh=/bin/busybox\nsubstituters = {}",
        server.url("")
    ));
    let out = host.run(&["build", &cache.drv]);
    let said = stderr(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "warning: the substitute for '{}' from '{}' is not signed by any of the keys in 'trusted-public-keys'",
            cache.built,
            server.url("").trim_end_matches('/')
        )),
        "{said}"
    );
    assert!(
        said.contains(&format!("building '{}'", cache.drv)),
        "{said}"
    );
}

#[test]
fn the_stock_client_through_the_daemon_is_told_what_will_be_fetched_and_fetches_it() {
    use hermetic_tests::daemon::{Daemon, output_text};
    if !root_or_skip(
        "the_stock_client_through_the_daemon_is_told_what_will_be_fetched_and_fetches_it",
    ) {
        return;
    }
    let Some(cache) = NixCache::make() else {
        return;
    };
    let server = cache.serve_http();
    let http = server.url("");
    let daemon = Daemon::start(
        "daemon-subst",
        &format!(
            "trusted-public-keys = {}\nextra-sandbox-paths = /bin/sh=/bin/busybox",
            cache.public_key()
        ),
    );
    let url = daemon.url();
    let expr = cache.dir.path.join("d.nix");
    let expr = expr.to_str().unwrap();
    let nix_build = |extra: &[&str]| {
        let mut args = vec!["--store", &url, "--option", "substituters", &http, expr];
        args.extend_from_slice(extra);
        let out = cache.nix.command("nix-build").args(&args).output().unwrap();
        (
            out.status.success(),
            output_text(&out),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        )
    };
    // QueryMissing: the output will be fetched, nothing built.
    let (ok, said, _) = nix_build(&["--dry-run"]);
    assert!(ok, "{said}");
    assert!(said.contains("this path will be fetched ("), "{said}");
    assert!(said.contains(&cache.built), "{said}");
    assert!(!said.contains("will be built"), "{said}");
    // The build fetches it, and says so as Nix does.
    let (ok, said, printed) = nix_build(&["--no-out-link"]);
    assert!(ok, "{said}");
    assert_eq!(printed, cache.built, "{said}");
    assert!(
        said.contains(&format!(
            "copying path '{}' from '{}'",
            cache.built,
            http.trim_end_matches('/')
        )),
        "{said}"
    );
    assert!(!said.contains("building '"), "{said}");
    assert_eq!(
        std::fs::read_to_string(daemon.real(&cache.built)).unwrap(),
        format!("built\nref {}\n", cache.source)
    );
    // A path that is not a derivation, realised (nix-store -r) through a
    // second daemon: fetched with its closure (EnsurePath / BuildPaths).
    let second = Daemon::start(
        "daemon-subst-r",
        &format!("trusted-public-keys = {}", cache.public_key()),
    );
    let out = cache
        .nix
        .command("nix-store")
        .args([
            "--store",
            &second.url(),
            "--option",
            "substituters",
            &http,
            "-r",
            &cache.built,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(second.real(&cache.source).exists());
    assert!(second.real(&cache.built).exists());
    let verify = cache.nix.verify_store(second.root());
    assert!(verify.status.success(), "{}", output_text(&verify));
}

#[test]
fn a_closure_of_501_paths_comes_whole_and_a_kill_at_any_instant_leaves_nothing_half_done() {
    use hermetic_tests::daemon::{Daemon, output_text};
    if !root_or_skip(
        "a_closure_of_501_paths_comes_whole_and_a_kill_at_any_instant_leaves_nothing_half_done",
    ) {
        return;
    }
    let Some(cache) = NixCache::wide(500) else {
        return;
    };
    let server = cache.serve_http();
    let http = server.url("");
    let host = BuildHost::diverted("subst-kill");
    host.conf(&format!(
        "trusted-public-keys = {}\nmax-substitution-jobs = 4",
        cache.public_key()
    ));
    let copy = ["store", "copy", "--from", &http, &cache.built];
    // SIGKILL at instants spread over the copy: each time, the next start
    // finds the store whole (what is registered is there and verifies, no
    // staging left), and some of the closure is in.
    let mut partial = Vec::new();
    for delay in [40, 80, 120, 170, 230, 300, 400, 550, 750, 1000] {
        let mut child = host
            .command(&copy)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
        assert_nothing_half_done(&host);
        partial.push(host.store().all_valid_paths().unwrap().len());
    }
    let started = std::time::Instant::now();
    let out = host.run(&copy);
    eprintln!(
        "valid paths after each kill: {partial:?}; the rest of the copy took {:?}",
        started.elapsed()
    );
    // The kills landed while paths were arriving, not only before or after.
    assert!(
        partial.iter().any(|n| *n > 0 && *n < 501),
        "valid paths after each kill: {partial:?}"
    );

    assert!(out.status.success(), "{}", stderr(&out));
    let built = host.layout().store_dir.parse(&cache.built).unwrap();
    assert_eq!(host.store().closure(&[built]).unwrap().len(), 501);
    assert_nothing_half_done(&host);
    let verify = cache.nix.verify_store(host.dir.path.join("root"));
    assert!(verify.status.success(), "{}", stderr(&verify));

    // The same closure through the daemon, for the stock client's
    // `nix-store -r`.
    let daemon = Daemon::start(
        "daemon-subst-wide",
        &format!("trusted-public-keys = {}", cache.public_key()),
    );
    let out = cache
        .nix
        .command("nix-store")
        .args(["--store", &daemon.url(), "--option", "substituters", &http])
        .args(["-r", &cache.built])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let copied = output_text(&out).matches("copying path '").count();
    assert_eq!(copied, 501, "{}", output_text(&out));
    let verify = cache.nix.verify_store(daemon.root());
    assert!(verify.status.success(), "{}", output_text(&verify));
}

#[test]
fn a_fixed_output_comes_from_a_cache_of_another_store_directory() {
    use hermetic_store::{Hash, IngestionMethod};
    use hermetic_tests::builds::{DrvSpec, outputs_of};
    if !root_or_skip("a_fixed_output_comes_from_a_cache_of_another_store_directory") {
        return;
    }
    let Some(cache) = NixCache::make() else {
        return;
    };
    // As Nix's fetchurl.sh makes it: a cache for /fnord/store holding a
    // file added by its content.
    let contents = b"fetched, not built\n";
    let file = cache.dir.path.join("payload");
    std::fs::write(&file, contents).unwrap();
    let other = format!(
        "file://{}?store=/fnord/store",
        cache.dir.path.join("other").display()
    );
    let added = cache.nix.run(
        "nix",
        &[
            "--store",
            &other,
            "store",
            "add-file",
            file.to_str().unwrap(),
        ],
    );
    assert!(added.trim().starts_with("/fnord/store/"), "{added}");
    // A fixed-output derivation of the same name and hash whose builder
    // would fail: only the cache can give its output.
    let host = BuildHost::diverted("subst-fnord");
    let drv = DrvSpec::new("payload", "exit 1")
        .fixed(IngestionMethod::Flat, Hash::sha256(contents))
        .add_to(&host);
    host.conf(&format!("substituters = {other}\nrequire-sigs = true"));
    let out = host.run(&["build", &host.print(&drv)]);
    let said = stderr(&out);
    assert!(out.status.success(), "{said}");
    let output = &outputs_of(&host, &drv)["out"];
    assert!(
        said.contains(&format!(
            "copying path '{}' from 'file://{}'...",
            host.print(output),
            cache.dir.path.join("other").display()
        )),
        "{said}"
    );
    assert_eq!(std::fs::read(host.real(output)).unwrap(), contents);
    assert_nothing_half_done(&host);
}

#[test]
fn an_untrusted_user_fetches_only_from_caches_the_daemon_trusts() {
    use hermetic_tests::daemon::{Daemon, as_user, output_text};
    use hermetic_tests::{TEST_USER, test_user_or_skip};
    if !test_user_or_skip("an_untrusted_user_fetches_only_from_caches_the_daemon_trusts") {
        return;
    }
    let Some(cache) = NixCache::make() else {
        return;
    };
    let trusted = cache.serve_http();
    let other = cache.serve_http();
    let daemon = Daemon::start(
        "daemon-subst-untrusted",
        &format!(
            "trusted-substituters = {}\ntrusted-public-keys = {}",
            trusted.url(""),
            cache.public_key()
        ),
    );
    let realise = |url: &str| {
        as_user(
            &cache.nix,
            TEST_USER,
            "nix-store",
            &[
                "--store",
                &daemon.url(),
                "--option",
                "substituters",
                url,
                "-r",
                &cache.built,
            ],
        )
    };
    // A cache the daemon does not trust: Nix's warning, nothing asked of
    // it, nothing fetched.
    let out = realise(&other.url(""));
    let said = output_text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "ignoring untrusted substituter '{}', you are not a trusted user",
            other.url("")
        )),
        "{said}"
    );
    assert!(other.requests().is_empty(), "{:?}", other.requests());
    assert!(!daemon.real(&cache.built).exists());
    // One listed in trusted-substituters: used.
    let out = realise(&trusted.url(""));
    let said = output_text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("copying path '"), "{said}");
    assert!(daemon.real(&cache.built).exists());
}

#[test]
fn an_http_caches_answers_are_kept_across_daemon_restarts_for_their_ttls() {
    use hermetic_tests::daemon::{Daemon, output_text};
    if !root_or_skip("an_http_caches_answers_are_kept_across_daemon_restarts_for_their_ttls") {
        return;
    }
    let Some(cache) = NixCache::make() else {
        return;
    };
    let server = cache.serve_http();
    let http = server.url("");
    let narinfo = format!("{}.narinfo", &cache.built["/nix/store/".len()..][..32]);
    let keys = format!("trusted-public-keys = {}", cache.public_key());
    let mut daemon = Daemon::start("daemon-narinfo-ttl", &keys);
    let url = daemon.url();
    let expr = cache.dir.path.join("d.nix");
    let expr = expr.to_str().unwrap();
    // What `nix-build --dry-run` through the daemon says will happen, and
    // how often the server was asked for `file` so far.
    let dry_run = || {
        let out = cache
            .nix
            .command("nix-build")
            .args([
                "--store",
                &url,
                "--option",
                "substituters",
                &http,
                expr,
                "--dry-run",
            ])
            .output()
            .unwrap();
        let said = output_text(&out);
        assert!(out.status.success(), "{said}");
        said
    };
    let asked = |file: &str| server.requests().iter().filter(|r| *r == file).count();

    // The cache does not have the output: that is remembered for
    // narinfo-cache-negative-ttl, across a restart of the daemon, even once
    // the cache has it; the cache's nix-cache-info is not asked again.
    server.fault(&narinfo, Fault::Status(404));
    assert!(dry_run().contains("will be built"));
    assert_eq!(asked(&narinfo), 1);
    server.clear_faults();
    daemon.restart_with(&keys);
    assert!(dry_run().contains("will be built"));
    assert_eq!(asked(&narinfo), 1);
    assert_eq!(asked("nix-cache-info"), 1);
    // With a negative TTL of 0 the cache is asked again, and has it now:
    // that answer is kept for narinfo-cache-positive-ttl.
    daemon.restart_with(&format!("{keys}\nnarinfo-cache-negative-ttl = 0"));
    assert!(dry_run().contains("will be fetched"));
    assert_eq!(asked(&narinfo), 2);
    daemon.restart_with(&keys);
    let said = dry_run();
    assert!(said.contains("will be fetched"), "{said}");
    assert_eq!(asked(&narinfo), 2);
    daemon.restart_with(&format!("{keys}\nnarinfo-cache-positive-ttl = 0"));
    assert!(dry_run().contains("will be fetched"));
    assert_eq!(asked(&narinfo), 3);
    // What was remembered is what gets fetched and verified.
    daemon.restart_with(&keys);
    let out = cache
        .nix
        .command("nix-build")
        .args(["--store", &url, "--option", "substituters", &http, expr])
        .arg("--no-out-link")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(asked(&narinfo), 3);
    let verify = cache.nix.verify_store(daemon.root());
    assert!(verify.status.success(), "{}", output_text(&verify));
}

#[test]
fn a_cache_that_asks_for_a_login_is_given_the_netrc_files() {
    if !root_or_skip("a_cache_that_asks_for_a_login_is_given_the_netrc_files") {
        return;
    }
    let Some(cache) = NixCache::make() else {
        return;
    };
    let server = cache.serve_http();
    server.require_login("alice", "s3cret");
    let http = server.url("");
    // No credentials: the cache is passed over with the server's refusal,
    // and the derivation is built.
    let host = host_with_drv("subst-no-netrc", &cache, &format!("substituters = {http}"));
    let out = host.run(&["build", &cache.drv]);
    let said = stderr(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "warning: unable to download '{http}nix-cache-info': HTTP error 401 ('Unauthorized')"
        )),
        "{said}"
    );
    assert!(
        said.contains(&format!("building '{}'", cache.drv)),
        "{said}"
    );
    // With the login in netrc-file: fetched.
    let netrc = cache.dir.path.join("netrc");
    std::fs::write(&netrc, "machine 127.0.0.1 login alice password s3cret\n").unwrap();
    let host = host_with_drv(
        "subst-netrc",
        &cache,
        &format!("substituters = {http}\nnetrc-file = {}", netrc.display()),
    );
    let out = host.run(&["build", &cache.drv]);
    let said = stderr(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("copying path"), "{said}");
    assert!(!said.contains("building '"), "{said}");
    assert!(registered(&host, &cache.built));
}

#[test]
fn narinfos_and_nars_that_lie_or_break_change_nothing() {
    if !root_or_skip("narinfos_and_nars_that_lie_or_break_change_nothing") {
        return;
    }
    let Some(cache) = NixCache::make() else {
        return;
    };
    let server = cache.serve_http();
    let http = server.url("");
    let narinfo_file = cache.narinfo(&cache.built);
    let narinfo = std::fs::read_to_string(&narinfo_file).unwrap();
    let narinfo_name = narinfo_file.file_name().unwrap().to_str().unwrap();
    let built = |host: &BuildHost, said: &str| {
        assert!(
            said.contains(&format!("building '{}'", cache.drv)),
            "{said}"
        );
        assert!(!said.contains("copying path"), "{said}");
        assert_eq!(
            output_text(host, &cache.built).as_deref(),
            Some(format!("built\nref {}\n", cache.source).as_str())
        );
        assert_nothing_half_done(host);
    };

    // A narinfo naming a reference the cache does not have: the closure
    // cannot come whole, so the derivation is built, as Nix builds it.
    let ghost = "/nix/store/00000000000000000000000000000000-ghost";
    let refs = narinfo
        .lines()
        .find(|l| l.starts_with("References:"))
        .unwrap();
    let lying = narinfo.replace(refs, &format!("{refs} {}", &ghost[11..]));
    std::fs::write(&narinfo_file, &lying).unwrap();
    let host = host_with_drv(
        "subst-ghost-ref",
        &cache,
        &format!("substituters = {http}\nrequire-sigs = false"),
    );
    let out = host.run(&["build", &cache.drv]);
    let said = stderr(&out);
    assert!(out.status.success(), "{said}");
    built(&host, &said);
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.contains("00000000000000000000000000000000"))
    );
    assert!(!host.dir.path.join("root").join(&ghost[1..]).exists());

    // A narinfo cut short in transfer, and one that is not a narinfo:
    // the cache could not be asked, which fails the derivation in Nix's
    // words (naming why), and with fallback builds it.
    std::fs::write(&narinfo_file, &narinfo).unwrap();
    let first_lines: String = narinfo.lines().take(3).map(|l| format!("{l}\n")).collect();
    for (label, broken, why) in [
        (
            "subst-cut-narinfo",
            None,
            format!("reading '{http}{narinfo_name}'"),
        ),
        (
            "subst-corrupt-narinfo",
            Some(first_lines),
            format!("NAR info file '{http}{narinfo_name}' is corrupt"),
        ),
    ] {
        server.clear_faults();
        match &broken {
            None => server.fault(narinfo_name, Fault::Truncate(narinfo.len() / 2)),
            Some(text) => std::fs::write(&narinfo_file, text).unwrap(),
        }
        let host = host_with_drv(label, &cache, &format!("substituters = {http}"));
        let out = host.run(&["build", &cache.drv]);
        let said = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{label}: {said}");
        assert!(said.contains(&why), "{label}: {said}");
        assert!(
            said.contains("some substitutes for the outputs"),
            "{label}: {said}"
        );
        assert!(!registered(&host, &cache.built), "{label}");
        assert_nothing_half_done(&host);
        host.conf(&format!(
            "trusted-public-keys = {}\nextra-sandbox-paths = /bin/sh=/bin/busybox\n\
             substituters = {http}\nfallback = true",
            cache.public_key()
        ));
        let out = host.run(&["build", &cache.drv]);
        let said = stderr(&out);
        assert!(out.status.success(), "{label}: {said}");
        built(&host, &said);
    }

    // A NAR whose bytes were damaged (its length kept): refused, nothing
    // registered or left behind.
    server.clear_faults();
    std::fs::write(&narinfo_file, &narinfo).unwrap();
    let nar = cache
        .dir
        .path
        .join("cache")
        .join(cache.nar_url(&cache.built));
    let mut bytes = std::fs::read(&nar).unwrap();
    let middle = bytes.len() / 2;
    for byte in &mut bytes[middle..middle + 8] {
        *byte ^= 0x55;
    }
    std::fs::write(&nar, &bytes).unwrap();
    let host = host_with_drv(
        "subst-damaged-nar",
        &cache,
        &format!("substituters = {http}"),
    );
    let out = host.run(&["build", &cache.drv]);
    let said = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("some substitutes for the outputs"), "{said}");
    assert!(
        said.contains(&format!(
            "reading '{http}{}': lzma data error",
            cache.nar_url(&cache.built)
        )),
        "{said}"
    );
    assert!(!registered(&host, &cache.built));
    assert!(output_text(&host, &cache.built).is_none());
    assert_nothing_half_done(&host);
}
