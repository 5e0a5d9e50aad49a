//! A hostile fixed-output builder keeps a writable descriptor of its output
//! and hands it to a process outside the build, which rewrites the output
//! after the hash check. The store registers a fresh copy, so the rewrite
//! reaches only the old inode (B88, CVE-2024-27297).

use std::io::IoSliceMut;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use hermetic_store::{Hash, IngestionMethod};
use hermetic_tests::builds::{BuildHost, DrvSpec, outputs_of, stderr, text};
use hermetic_tests::probes::compiled_probe;
use hermetic_tests::root_or_skip;
use nix::sys::socket::{
    AddressFamily, Backlog, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr, accept,
    bind, listen, recvmsg, send, socket,
};

#[test]
fn a_smuggled_descriptor_cannot_change_a_registered_fixed_output() {
    if !root_or_skip("a_smuggled_descriptor_cannot_change_a_registered_fixed_output") {
        return;
    }
    let host = BuildHost::diverted("build-hostile");
    let binary = host.dir.path.join("fd-smuggler");
    std::fs::copy(compiled_probe("fd_smuggler", 64).unwrap(), &binary).unwrap();
    let helper = host.store().add_path(&binary).unwrap();

    // The accomplice: listens on an abstract socket in the host's network
    // namespace, which a fixed-output build shares (D10).
    let name = format!("hermetic-fd-smuggle-{}", std::process::id());
    let listener = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    bind(
        listener.as_raw_fd(),
        &UnixAddr::new_abstract(name.as_bytes()).unwrap(),
    )
    .unwrap();
    listen(&listener, Backlog::new(1).unwrap()).unwrap();
    let accomplice = std::thread::spawn(move || {
        let conn = accept(&listener).unwrap();
        let mut byte = [0u8; 1];
        let mut iov = [IoSliceMut::new(&mut byte)];
        let mut space = nix::cmsg_space!(std::os::fd::RawFd);
        let msg = recvmsg::<UnixAddr>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        )
        .unwrap();
        let fd = msg
            .cmsgs()
            .unwrap()
            .find_map(|c| match c {
                ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                _ => None,
            })
            .expect("a descriptor");
        // The inode the descriptor names, opened for writing: what the
        // accomplice can do with it.
        let inode = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/self/fd/{fd}"))
            .unwrap();
        send(conn.as_raw_fd(), b"k", MsgFlags::empty()).unwrap();
        nix::unistd::close(fd).unwrap();
        drop(conn);
        inode
    });

    let drv = DrvSpec::new("smuggled", &format!("exec {} {name}", host.print(&helper)))
        .source(helper)
        .fixed(IngestionMethod::Flat, Hash::sha256(b"good\n"))
        .add_to(&host);
    let out = host.run(&["build", &host.print(&drv)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let smuggled = accomplice.join().unwrap();
    // The rewrite after the build, through the builder's inode.
    smuggled.write_at(b"evil\n", 0).unwrap();
    let output = host.real(&outputs_of(&host, &drv)["out"]);
    assert_eq!(text(&output), "good\n", "the registered output changed");
    let verify = host.run(&["store", "verify", "--check-contents"]);
    assert!(verify.status.success(), "{}", stderr(&verify));
}
