//! A hostile builder fails at every way out the sandbox core closes.

use std::net::TcpListener;
use std::process::Command;

use hermetic_tests::{TestStore, probe, root_or_skip, run};

#[test]
fn cannot_read_a_host_file_that_is_not_an_input() {
    if !root_or_skip("cannot_read_a_host_file_that_is_not_an_input") {
        return;
    }
    let secret = hermetic_tests::TempDir::new("secret");
    std::fs::write(secret.path.join("key"), "secret").unwrap();
    let path = secret.path.join("key");
    let p = probe(&format!(
        "cat {0} 2>/dev/null && echo read=yes || echo read=no; \
         cat /etc/shadow 2>/dev/null && echo shadow=yes || echo shadow=no; \
         ls /usr /home /root /var 2>/dev/null && echo host_dirs=yes || echo host_dirs=no",
        path.display()
    ));
    assert_eq!(p.get("read"), "no");
    assert_eq!(p.get("shadow"), "no");
    assert_eq!(p.get("host_dirs"), "no");
}

#[test]
fn cannot_write_into_an_input_path() {
    if !root_or_skip("cannot_write_into_an_input_path") {
        return;
    }
    let store = TestStore::new("readonly-input");
    let input = store.add_dir("aaaa-input", "f", "original");
    let file = store.add_file("bbbb-file", "original");
    let spec = store.spec("echo x > /nix/store/aaaa-input/f 2>/dev/null && echo wrote=yes || echo wrote=no; \
         touch /nix/store/aaaa-input/new 2>/dev/null && echo created=yes || echo created=no; \
         chmod 777 /nix/store/aaaa-input 2>/dev/null && echo chmod=yes || echo chmod=no; \
         echo x > /nix/store/bbbb-file 2>/dev/null && echo file=yes || echo file=no; \
         rm -rf /nix/store/aaaa-input 2>/dev/null; [ -d /nix/store/aaaa-input ] && echo removed=no || echo removed=yes; \
         mv /nix/store/bbbb-file /nix/store/cccc 2>/dev/null && echo renamed=yes || echo renamed=no", vec![input.clone(), file.clone()]);
    let p = run(&spec).unwrap();
    for key in ["wrote", "created", "chmod", "file", "removed", "renamed"] {
        assert_eq!(p.get(key), "no", "{key}");
    }
    assert_eq!(
        std::fs::read_to_string(input.join("f")).unwrap(),
        "original"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "original");
}

#[test]
fn cannot_reach_a_listener_on_the_hosts_loopback() {
    if !root_or_skip("cannot_reach_a_listener_on_the_hosts_loopback") {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let p = probe(&format!(
        "echo hi | nc -w 1 127.0.0.1 {port} >/dev/null 2>&1 && echo connected=yes || echo connected=no"
    ));
    assert_eq!(p.get("connected"), "no");
    assert!(
        listener.accept().is_err(),
        "nothing connected to the host's listener"
    );
}

#[test]
fn cannot_see_or_signal_a_host_process() {
    if !root_or_skip("cannot_see_or_signal_a_host_process") {
        return;
    }
    let mut victim = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = victim.id();
    let p = probe(&format!(
        "[ -e /proc/{pid} ] && echo seen=yes || echo seen=no; \
         kill -9 {pid} 2>/dev/null && echo killed=yes || echo killed=no; \
         kill -9 -1 2>/dev/null; echo survived=yes"
    ));
    assert_eq!(p.get("seen"), "no");
    assert_eq!(p.get("killed"), "no");
    assert!(
        victim.try_wait().unwrap().is_none(),
        "the host process is alive"
    );
    victim.kill().unwrap();
    victim.wait().unwrap();
}

#[test]
fn cannot_mount_anything() {
    if !root_or_skip("cannot_mount_anything") {
        return;
    }
    let p = probe(
        "mount -t tmpfs none /tmp 2>/dev/null && echo tmpfs=yes || echo tmpfs=no; \
         mount -o remount,rw / 2>/dev/null && echo remount=yes || echo remount=no; \
         umount /proc 2>/dev/null && echo umount=yes || echo umount=no; \
         mount --bind /build /tmp 2>/dev/null && echo bind=yes || echo bind=no",
    );
    for key in ["tmpfs", "remount", "umount", "bind"] {
        assert_eq!(p.get(key), "no", "{key}");
    }
}

#[test]
fn cannot_write_etc() {
    if !root_or_skip("cannot_write_etc") {
        return;
    }
    // B37: both suites check `echo > /etc/test` fails with Permission denied.
    let p = probe(
        "echo > /etc/test; echo >> /etc/passwd 2>/dev/null && echo passwd=yes || echo passwd=no; \
         chmod 755 /etc 2>/dev/null && echo chmod=yes || echo chmod=no",
    );
    assert!(
        p.output.contains("/etc/test: Permission denied"),
        "{}",
        p.output
    );
    assert_eq!(p.get("passwd"), "no");
    assert_eq!(p.get("chmod"), "no");
}

#[test]
fn cannot_change_host_or_domain_name_or_network() {
    if !root_or_skip("cannot_change_host_or_domain_name_or_network") {
        return;
    }
    let p = probe(
        "hostname evil 2>/dev/null && echo hostname=yes || echo hostname=no; \
         ip link set lo down 2>/dev/null && echo link=yes || echo link=no; \
         chroot / /bin/sh -c true 2>/dev/null && echo chroot=yes || echo chroot=no",
    );
    assert_eq!(p.get("hostname"), "no");
    assert_eq!(p.get("link"), "no");
    assert_eq!(p.get("chroot"), "no");
}

#[test]
fn cannot_keep_a_descriptor_of_the_supervisor() {
    if !root_or_skip("cannot_keep_a_descriptor_of_the_supervisor") {
        return;
    }
    // An inheritable descriptor of the supervising process, for a file the
    // builder could not open itself.
    let secret = hermetic_tests::TempDir::new("fd-secret");
    let path = secret.path.join("key");
    std::fs::write(&path, "secret").unwrap();
    hermetic_tests::set_mode(&path, 0o600);
    let file = std::fs::File::open(&path).unwrap();
    nix::fcntl::fcntl(
        &file,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .unwrap();
    let raw = std::os::fd::AsRawFd::as_raw_fd(&file);
    let p = probe(&format!(
        "for fd in $(ls /proc/self/fd); do readlink /proc/self/fd/$fd; done | grep -c key | sed 's/^/found=/'; \
         (cat <&{raw}) 2>/dev/null && echo read=yes || echo read=no"
    ));
    assert_eq!(p.get("found"), "0");
    assert_eq!(p.get("read"), "no");
}
