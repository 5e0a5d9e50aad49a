//! Fixed-output builds with `pasta-path` (B60): their own network namespace
//! with `eth0` bridged to the host by pasta, Lix's addresses, the
//! nameservers rewritten; the host reachable through the gateway by TCP,
//! the host's abstract Unix sockets not at all.
//!
//! The checks run one after the other: each store has its own build-user
//! pool, so builds of two test stores can run as the same build user at
//! once, which no real machine (one store, one pool) does. Once, in CI,
//! with these checks as two concurrent tests, a pasta build's builder was
//! killed by SIGKILL; it did not happen again in local runs.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;

use hermetic_store::{Hash, IngestionMethod};
use hermetic_tests::builds::{BuildHost, DrvSpec, outputs_of, stderr, text};
use hermetic_tests::root_or_skip;

fn pasta_or_skip(test: &str) -> Option<String> {
    let path = "/usr/bin/pasta";
    if !std::path::Path::new(path).exists() || !std::path::Path::new("/dev/net/tun").exists() {
        eprintln!(
            "skipped {test}: no {path} or /dev/net/tun (scripts/setup-test-host installs passt)"
        );
        return None;
    }
    Some(path.to_owned())
}

/// One test, the two checks in turn: two stores' pools could give builds
/// of both the same build user at once (see the module's note).
#[test]
fn fixed_output_builds_with_pasta() {
    let test = "fixed_output_builds_with_pasta";
    if !root_or_skip(test) {
        return;
    }
    a_fixed_output_build_gets_its_network_from_pasta(test);
    with_pasta_the_host_s_abstract_sockets_are_out_of_reach(test);
}

fn a_fixed_output_build_gets_its_network_from_pasta(test: &str) {
    let Some(pasta) = pasta_or_skip(test) else {
        return;
    };
    let host = BuildHost::diverted("build-pasta");
    host.conf(&format!("pasta-path = {pasta}"));
    // A service on the host's loopback, reached through pasta's gateway.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).unwrap();
        conn.write_all(b"pong\n").unwrap();
        buf
    });
    let script = format!(
        "grep -q eth0 /proc/net/dev || exit 2; \
         grep -q 'nameserver 169.254.1.1' /etc/resolv.conf || exit 3; \
         grep -q 169.254.1.2 /proc/net/fib_trie || exit 4; \
         echo ping | timeout 15 nc 169.254.1.1 {port} > reply; \
         grep -q pong reply || exit 6; \
         echo ok > $out"
    );
    let drv = DrvSpec::new("through-pasta", &script)
        .fixed(IngestionMethod::Flat, Hash::sha256(b"ok\n"))
        .add_to(&host);
    let out = host.run(&["build", &host.print(&drv)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(text(&host.real(&outputs_of(&host, &drv)["out"])), "ok\n");
    assert_eq!(&server.join().unwrap(), b"ping\n");
    // pasta is gone with the build.
    let left = Command::new("pgrep")
        .args(["-f", "--", "--ns-ifname eth0"])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "pasta left running: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}

fn with_pasta_the_host_s_abstract_sockets_are_out_of_reach(test: &str) {
    let Some(pasta) = pasta_or_skip(test) else {
        return;
    };
    let host = BuildHost::diverted("build-pasta-abstract");
    // An abstract socket in the host's network namespace; a build in the
    // host's network namespace reaches it (checked first), one with pasta
    // does not.
    let name = format!("hermetic-pasta-abstract-{}", std::process::id());
    use std::os::linux::net::SocketAddrExt;
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let listener = std::os::unix::net::UnixListener::bind_addr(&address).unwrap();
    listener.set_nonblocking(true).unwrap();
    // /proc/net/unix lists the abstract sockets of the builder's network
    // namespace: the ones it could connect to.
    let probe = format!(
        "if grep -q '@{name}' /proc/net/unix; then echo seen > $out; else echo unseen > $out; fi"
    );
    for (conf, expected) in [
        (String::new(), "seen\n"),
        (format!("pasta-path = {pasta}"), "unseen\n"),
    ] {
        host.conf(&conf);
        let drv = DrvSpec::new("abstract", &probe)
            .fixed(IngestionMethod::Flat, Hash::sha256(expected.as_bytes()))
            .add_to(&host);
        let out = host.run(&["build", &host.print(&drv)]);
        assert!(out.status.success(), "{conf}: {}", stderr(&out));
    }
    drop(listener);
}
