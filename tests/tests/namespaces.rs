//! The namespaces of a sandbox (SPEC B17, B58), seen from inside.

use hermetic_runtime::Network;
use hermetic_tests::{probe, probe_spec, root_or_skip, run};

#[test]
fn builder_is_pid_1_in_its_own_pid_namespace() {
    if !root_or_skip("builder_is_pid_1_in_its_own_pid_namespace") {
        return;
    }
    let p = probe("echo pid=$$; echo ppid=$(cut -d' ' -f4 /proc/1/stat)");
    assert_eq!(p.get("pid"), "1");
    assert_eq!(p.get("ppid"), "0", "the parent is outside the namespace");
}

#[test]
fn host_and_domain_name() {
    if !root_or_skip("host_and_domain_name") {
        return;
    }
    let p = probe("echo host=$(hostname); echo domain=$(cat /proc/sys/kernel/domainname)");
    assert_eq!(p.get("host"), "localhost");
    assert_eq!(p.get("domain"), "(none)");
}

#[test]
fn namespaces_differ_from_the_hosts() {
    if !root_or_skip("namespaces_differ_from_the_hosts") {
        return;
    }
    let p = probe(
        "for ns in user mnt pid net uts ipc; do echo $ns=$(readlink /proc/self/ns/$ns); done",
    );
    for ns in ["user", "mnt", "pid", "net", "uts", "ipc"] {
        let host = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        assert_ne!(
            p.get(ns),
            host.to_string_lossy(),
            "{ns} namespace is the host's"
        );
    }
}

#[test]
fn ipc_objects_of_the_host_are_not_visible() {
    if !root_or_skip("ipc_objects_of_the_host_are_not_visible") {
        return;
    }
    // A System V message queue made on the host (util-linux's ipcmk) is not
    // in the sandbox.
    let made = std::process::Command::new("ipcmk")
        .arg("-Q")
        .output()
        .expect("ipcmk (util-linux) runs");
    assert!(made.status.success());
    let id = String::from_utf8_lossy(&made.stdout)
        .split(':')
        .nth(1)
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let p = probe("echo queues=$(tail -n +2 /proc/sysvipc/msg | wc -l)");
    let _ = std::process::Command::new("ipcrm")
        .args(["-q", &id])
        .status();
    assert_eq!(p.get("queues"), "0");
}

#[test]
fn network_has_only_loopback_and_it_is_up() {
    if !root_or_skip("network_has_only_loopback_and_it_is_up") {
        return;
    }
    let p = probe(
        "echo ifaces=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ' '); \
         echo lo=$(ip -o link show lo | grep -o '<[^>]*>'); \
         nc -l -p 4711 -e echo hello >/dev/null 2>&1 & sleep 0.2; echo reply=$(nc 127.0.0.1 4711 </dev/null)",
    );
    assert_eq!(p.get("ifaces").trim(), "lo");
    assert!(p.get("lo").contains("UP"), "B58: lo is up: {}", p.get("lo"));
    assert_eq!(p.get("reply"), "hello", "127.0.0.1 works inside");
}

#[test]
fn host_network_is_the_hosts() {
    if !root_or_skip("host_network_is_the_hosts") {
        return;
    }
    let mut spec = probe_spec(
        "echo net=$(readlink /proc/self/ns/net); [ -e /etc/hosts ] && echo hosts=yes || echo hosts=no",
    );
    spec.network = Network::Host;
    let p = run(&spec).unwrap();
    let host = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_eq!(p.get("net"), host.to_string_lossy());
    assert_eq!(
        p.get("hosts"),
        "no",
        "B35: /etc/hosts only for sandboxed kinds"
    );
}
