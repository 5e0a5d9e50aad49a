//! The syscall layer: every `unsafe` block of hermetic lives in this crate,
//! a leaf that any other crate may use.
//!
//! Each wrapper is small, does one system call (or one fixed loop of them) and
//! allocates nothing, so that the launcher can call it between `clone` and
//! `execve` (see `hermetic-namespaces` for why that matters). Identity
//! changes (`setresuid`, `setresgid`, `setgroups`) go to the kernel directly:
//! glibc's wrappers broadcast them to every thread glibc believes exists, and a
//! child made by a raw `clone` of a threaded parent still carries the parent's
//! thread list, so the broadcast would wait for threads that are not there.
#![allow(unsafe_code)]

pub mod phase_clock;

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use libc::c_char;
use nix::errno::Errno;
use nix::unistd::Pid;

/// A NUL-terminated array of C strings, as `execve` takes for argv and envp.
///
/// It owns its strings; the pointer array is built once, in the parent, so
/// the child can pass it to `execve` without allocating.
#[derive(Debug)]
pub struct CStringArray {
    strings: Vec<CString>,
    pointers: Vec<*const c_char>,
}

// SAFETY: the raw pointers point into the `CString`s owned by the same value,
// which are never mutated after construction; sharing or moving the whole
// value between threads keeps them valid.
unsafe impl Send for CStringArray {}
// SAFETY: see the `Send` impl: the value is immutable after construction.
unsafe impl Sync for CStringArray {}

impl CStringArray {
    /// Builds the array from owned strings.
    pub fn new(strings: Vec<CString>) -> Self {
        let mut pointers: Vec<*const c_char> = strings.iter().map(|s| s.as_ptr()).collect();
        pointers.push(std::ptr::null());
        CStringArray { strings, pointers }
    }

    /// The strings, in order.
    pub fn strings(&self) -> &[CString] {
        &self.strings
    }
}

/// `struct clone_args` of clone3(2), first version (64 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
}

/// Starts a new process with `flags` (namespace flags; `CLONE_PIDFD` and
/// `SIGCHLD` are added), like fork(2), and runs `child` in it; returns the
/// child's pid and a pidfd. Uses clone3 and falls back to clone where clone3
/// is missing or filtered (ENOSYS).
///
/// The new process is a copy of a possibly threaded caller: `child` must not
/// allocate, take a lock or unwind; should it return, the process exits. Only
/// the launcher (`hermetic-namespaces`) calls this, with its child program,
/// which keeps those rules; anything else starts processes with
/// `std::process::Command`.
pub fn spawn(flags: u64, child: &dyn Fn()) -> Result<(Pid, OwnedFd), Errno> {
    let mut pidfd: libc::c_int = -1;
    let mut args = CloneArgs {
        flags: flags | libc::CLONE_PIDFD as u64,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 with a zero stack duplicates the caller like fork; `args`
    // is a valid clone_args of the size passed, and the kernel writes the
    // pidfd into `pidfd`, which outlives the call.
    let mut ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if ret < 0 && Errno::last() == Errno::ENOSYS {
        let legacy_flags = flags | libc::CLONE_PIDFD as u64 | libc::SIGCHLD as u64;
        // SAFETY: clone with a NULL stack duplicates the caller like fork; with
        // CLONE_PIDFD the third argument (parent_tid on every architecture) is
        // where the kernel stores the pidfd.
        ret = unsafe {
            libc::syscall(
                libc::SYS_clone,
                legacy_flags,
                0usize,
                &mut pidfd as *mut libc::c_int,
                0usize,
                0usize,
            )
        };
    }
    match ret {
        r if r < 0 => Err(Errno::last()),
        0 => {
            child();
            exit_immediately(127)
        }
        pid => Ok((
            Pid::from_raw(pid as libc::pid_t),
            // SAFETY: the kernel returned a fresh pidfd that nothing else owns.
            unsafe { OwnedFd::from_raw_fd(pidfd) },
        )),
    }
}

/// Ends the calling process at once, without running destructors or atexit
/// handlers (what a child that failed before `execve` must do).
pub fn exit_immediately(status: i32) -> ! {
    // SAFETY: _exit has no preconditions and never returns.
    unsafe { libc::_exit(status) }
}

/// Replaces the process image; returns only on failure, with the reason.
pub fn execve(path: &CStr, argv: &CStringArray, envp: &CStringArray) -> Errno {
    // SAFETY: `path` is NUL-terminated; both arrays are NULL-terminated arrays
    // of pointers to NUL-terminated strings owned by `argv` and `envp`.
    unsafe {
        libc::execve(
            path.as_ptr(),
            argv.pointers.as_ptr(),
            envp.pointers.as_ptr(),
        )
    };
    Errno::last()
}

/// Sets the NIS domain name of the current UTS namespace.
pub fn set_domainname(name: &[u8]) -> Result<(), Errno> {
    // SAFETY: the pointer and length describe `name`, which outlives the call.
    let ret = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
    Errno::result(ret).map(drop)
}

/// Closes every file descriptor from `first` to `last`, both included.
pub fn close_range(first: u32, last: u32) -> Result<(), Errno> {
    // SAFETY: close_range only closes descriptors; the caller owns the range.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
    Errno::result(ret).map(drop)
}

/// Resets every signal to its default action and unblocks all signals, so
/// that the builder does not inherit the supervisor's ignored or blocked
/// signals (the Rust runtime ignores SIGPIPE, for one). Goes to the kernel
/// directly: glibc refuses the two signals it reserves for itself, which a
/// caller may still have ignored.
pub fn reset_signals() {
    // A kernel `struct sigaction` with SIG_DFL, no flags and an empty mask
    // is all zeroes on every architecture.
    let default_action = [0u64; 4];
    for signal in 1..=64 {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction reads a kernel sigaction (zeroes: SIG_DFL)
        // from a buffer that outlives the call; the size of a kernel sigset
        // is 8 bytes. Errors are ignored on purpose.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                default_action.as_ptr(),
                std::ptr::null_mut::<u64>(),
                8usize,
            );
        }
    }
    let empty: u64 = 0;
    // SAFETY: rt_sigprocmask reads an 8-byte kernel sigset from `empty`.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty as *const u64,
            std::ptr::null_mut::<u64>(),
            8usize,
        );
    }
}

/// Removes every capability up to `last_cap` from the bounding set.
pub fn drop_bounding_set(last_cap: u32) -> Result<(), Errno> {
    for cap in 0..=last_cap {
        // SAFETY: PR_CAPBSET_DROP takes a capability number and no pointers.
        let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if ret < 0 && Errno::last() != Errno::EINVAL {
            return Err(Errno::last());
        }
    }
    Ok(())
}

/// Clears the ambient capability set (a no-op on kernels without one).
pub fn clear_ambient_capabilities() -> Result<(), Errno> {
    // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes no pointers.
    let ret = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    match Errno::result(ret) {
        Err(Errno::EINVAL) | Ok(_) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Empties the effective, permitted and inheritable capability sets.
pub fn clear_capability_sets() -> Result<(), Errno> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: header and data match the kernel's v3 layout (two data words).
    let ret = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
    Errno::result(ret).map(drop)
}

/// Reads the execution domain (personality) of the calling process.
pub fn personality_get() -> Result<u64, Errno> {
    // SAFETY: 0xffffffff queries the personality without changing it.
    let ret = unsafe { libc::personality(0xffff_ffff) };
    Errno::result(ret).map(|p| p as u32 as u64)
}

/// Sets the execution domain (personality) of the calling process.
pub fn personality_set(persona: u64) -> Result<(), Errno> {
    // SAFETY: personality takes a plain flag word.
    let ret = unsafe { libc::personality(persona as libc::c_ulong) };
    Errno::result(ret).map(drop)
}

/// Makes `fd` (a terminal) the controlling terminal of the calling session.
pub fn set_controlling_terminal(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    // SAFETY: TIOCSCTTY takes an integer argument, no pointers.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) };
    Errno::result(ret).map(drop)
}

/// Reads the window size of terminal `fd`.
pub fn window_size(fd: BorrowedFd<'_>) -> Result<libc::winsize, Errno> {
    // SAFETY: TIOCGWINSZ writes one winsize into the pointed-to value.
    unsafe {
        let mut size: libc::winsize = std::mem::zeroed();
        let ret = libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut size);
        Errno::result(ret).map(|_| size)
    }
}

/// Sets the window size of terminal `fd`.
pub fn set_window_size(fd: BorrowedFd<'_>, size: &libc::winsize) -> Result<(), Errno> {
    // SAFETY: TIOCSWINSZ reads one winsize from the pointed-to value.
    let ret = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TIOCSWINSZ,
            size as *const libc::winsize,
        )
    };
    Errno::result(ret).map(drop)
}

/// Sends `signal` to the process behind `pidfd` (no pid-reuse race).
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: i32) -> Result<(), Errno> {
    // SAFETY: pidfd_send_signal with a NULL siginfo and no flags.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
    Errno::result(ret).map(drop)
}

/// setresuid(2) straight to the kernel (see the module documentation).
pub fn set_all_uids(uid: u32) -> Result<(), Errno> {
    // SAFETY: plain integer arguments.
    let ret = unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) };
    Errno::result(ret).map(drop)
}

/// setresgid(2) straight to the kernel (see the module documentation).
pub fn set_all_gids(gid: u32) -> Result<(), Errno> {
    // SAFETY: plain integer arguments.
    let ret = unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) };
    Errno::result(ret).map(drop)
}

/// Sets the supplementary group list, straight to the kernel.
pub fn set_supplementary_groups(groups: &[u32]) -> Result<(), Errno> {
    // SAFETY: the pointer and length describe `groups`, a slice of gid_t
    // (u32) that outlives the call.
    let ret = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    Errno::result(ret).map(drop)
}

/// Installs a seccomp filter program (SECCOMP_SET_MODE_FILTER). The caller
/// has set no_new_privs (or holds CAP_SYS_ADMIN).
pub fn install_seccomp_filter(program: &[libc::sock_filter]) -> Result<(), Errno> {
    let length = u16::try_from(program.len()).map_err(|_| Errno::EINVAL)?;
    let fprog = libc::sock_fprog {
        len: length,
        filter: program.as_ptr().cast_mut(),
    };
    const SECCOMP_SET_MODE_FILTER: libc::c_uint = 1;
    // SAFETY: `fprog` points to `program`, which outlives the call; the
    // kernel copies the program.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            0u32,
            &fprog as *const libc::sock_fprog,
        )
    };
    Errno::result(ret).map(drop)
}

/// Empties the supplementary group list, straight to the kernel.
pub fn clear_supplementary_groups() -> Result<(), Errno> {
    // SAFETY: a zero-length list needs no valid pointer.
    let ret =
        unsafe { libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) };
    Errno::result(ret).map(drop)
}

/// Joins a new anonymous session keyring, so that the process no longer
/// reaches the keys of the session it was started from (as runc and
/// flatpak do). A kernel without keys (`ENOSYS`) has nothing to leave; nor
/// has a process whose keyring calls a container's seccomp filter refuses
/// (systemd-nspawn's and Docker's answer `EPERM`): the filter stays on it
/// and on everything it starts, the builder included.
pub fn join_new_session_keyring() -> Result<(), Errno> {
    const KEYCTL_GET_KEYRING_ID: libc::c_long = 0;
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    const KEY_SPEC_SESSION_KEYRING: libc::c_long = -3;
    // SAFETY: a null name asks for an anonymous keyring: the kernel reads
    // no memory of ours.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    match Errno::result(ret) {
        Err(Errno::ENOSYS) => Ok(()),
        Err(Errno::EPERM) => {
            // Asking for the session keyring's id is never refused with
            // EPERM by the kernel itself: only a filter says that.
            // SAFETY: integer arguments only; the kernel reads no memory.
            let probe = unsafe {
                libc::syscall(
                    libc::SYS_keyctl,
                    KEYCTL_GET_KEYRING_ID,
                    KEY_SPEC_SESSION_KEYRING,
                    0 as libc::c_long,
                )
            };
            match Errno::result(probe) {
                Err(Errno::EPERM) => Ok(()),
                _ => Err(Errno::EPERM),
            }
        }
        other => other.map(drop),
    }
}

/// Returns the raw number of a descriptor.
pub fn raw(fd: &impl AsFd) -> RawFd {
    fd.as_fd().as_raw_fd()
}

/// Duplicates `fd` to the lowest free number above 2, close-on-exec.
pub fn dup_above_stdio(fd: BorrowedFd<'_>) -> Result<OwnedFd, Errno> {
    // SAFETY: F_DUPFD_CLOEXEC takes an integer and returns a new descriptor.
    let ret = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    Errno::result(ret)?;
    // SAFETY: the kernel returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret) })
}

/// Makes descriptor number `target` refer to what `source` refers to
/// (dup3, close-on-exec): the launched child re-opens pinned directories in
/// its own mount namespace at the numbers the parent planned with.
pub fn replace_fd(source: BorrowedFd<'_>, target: RawFd) -> Result<(), Errno> {
    // SAFETY: dup3 has no memory-safety preconditions; the caller owns
    // `target` (a descriptor it pinned for this purpose).
    let ret = unsafe { libc::dup3(source.as_raw_fd(), target, libc::O_CLOEXEC) };
    Errno::result(ret).map(drop)
}

/// Set to `true` in a launched child, before its first step. Only a test's
/// allocator ([`NoAllocInChild`]) reads it, to prove that the child never
/// allocates.
pub static IN_LAUNCHED_CHILD: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// A global allocator for tests: the system allocator, except that a
/// launched child that allocates before `execve` exits at once with status
/// [`ALLOCATED_IN_CHILD`] (see [`IN_LAUNCHED_CHILD`]).
pub struct NoAllocInChild;

/// The status of a launched child that allocated.
pub const ALLOCATED_IN_CHILD: i32 = 99;

// SAFETY: every method forwards to the system allocator with the same
// arguments; the only addition is an exit of a child that allocates.
unsafe impl std::alloc::GlobalAlloc for NoAllocInChild {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if crate::IN_LAUNCHED_CHILD.load(std::sync::atomic::Ordering::Relaxed) {
            exit_immediately(ALLOCATED_IN_CHILD);
        }
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        if crate::IN_LAUNCHED_CHILD.load(std::sync::atomic::Ordering::Relaxed) {
            exit_immediately(ALLOCATED_IN_CHILD);
        }
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

/// The names of a file's extended attributes, without following a symlink.
pub fn list_xattrs(path: &CStr) -> Result<Vec<Vec<u8>>, Errno> {
    loop {
        // SAFETY: a NULL buffer of size 0 asks only for the list's length.
        let len = unsafe { libc::llistxattr(path.as_ptr(), std::ptr::null_mut(), 0) };
        if len < 0 {
            return Err(Errno::last());
        }
        if len == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; len as usize];
        // SAFETY: the pointer and length describe `buf`, which outlives the call.
        let got = unsafe { libc::llistxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if got < 0 {
            match Errno::last() {
                // The list grew between the two calls: ask again.
                Errno::ERANGE => continue,
                errno => return Err(errno),
            }
        }
        buf.truncate(got as usize);
        return Ok(buf
            .split(|b| *b == 0)
            .filter(|name| !name.is_empty())
            .map(<[u8]>::to_vec)
            .collect());
    }
}

/// Removes one extended attribute, without following a symlink.
pub fn remove_xattr(path: &CStr, name: &CStr) -> Result<(), Errno> {
    // SAFETY: both pointers are NUL-terminated strings that outlive the call.
    let result = unsafe { libc::lremovexattr(path.as_ptr(), name.as_ptr()) };
    Errno::result(result).map(drop)
}

/// The supplementary groups a Unix socket's peer had when it connected
/// (`SO_PEERGROUPS`, Linux 4.13 and later): its real groups, whatever the
/// group database says of its user.
pub fn peer_groups(fd: BorrowedFd<'_>) -> Result<Vec<u32>, Errno> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: the pointer and length describe `groups`, which outlives
        // the call; the kernel writes at most `len` bytes and sets `len`.
        let result = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let count = len as usize / std::mem::size_of::<libc::gid_t>();
        if result == 0 {
            groups.truncate(count);
            return Ok(groups);
        }
        match Errno::last() {
            // The kernel says how many there are: make room and ask again.
            Errno::ERANGE if count > groups.len() => groups.resize(count, 0),
            errno => return Err(errno),
        }
    }
}

/// The sockets a service manager passed this process (systemd's socket
/// activation: `LISTEN_PID` names this process, `LISTEN_FDS` how many
/// descriptors follow from 3), each made close-on-exec; empty when none
/// were passed. The variables are read once: a second call finds none.
pub fn take_listen_fds() -> Vec<OwnedFd> {
    use std::sync::atomic::{AtomicBool, Ordering};
    static TAKEN: AtomicBool = AtomicBool::new(false);
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|pid| pid.trim().parse::<u32>().ok())
        == Some(std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.trim().parse::<RawFd>().ok())
        .unwrap_or(0);
    if !for_us || count <= 0 || TAKEN.swap(true, Ordering::SeqCst) {
        return Vec::new();
    }
    (3..3 + count)
        .filter(|&fd| {
            // SAFETY: F_SETFD on a number that may or may not be open; a
            // closed one fails with EBADF and is skipped.
            let set = unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            set == 0
        })
        // SAFETY: the service manager handed these descriptors to this
        // process, which opened nothing at these numbers before (they are
        // taken once, at start), so nothing else owns them.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect()
}

/// Sends `bytes` on the Unix stream `socket` with `fd` passed along
/// (`SCM_RIGHTS`): the receiver gets its own copy of the descriptor.
pub fn send_with_fd(socket: BorrowedFd<'_>, bytes: &[u8], fd: BorrowedFd<'_>) -> Result<(), Errno> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let fds = [fd.as_raw_fd()];
    let iov = [std::io::IoSlice::new(bytes)];
    let sent = sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )?;
    if sent == bytes.len() {
        Ok(())
    } else {
        Err(Errno::EMSGSIZE)
    }
}

/// Receives exactly `buf.len()` bytes from the Unix stream `socket`, and
/// the first descriptor passed with them if any (others passed are
/// closed). Descriptors arrive close-on-exec.
pub fn recv_with_fd(socket: BorrowedFd<'_>, buf: &mut [u8]) -> Result<Option<OwnedFd>, Errno> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let message = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_WAITALL,
    )?;
    let received = message.bytes;
    let mut passed: Vec<OwnedFd> = Vec::new();
    for control in message.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = control {
            // SAFETY: the kernel installed these descriptors in this
            // process for this message just now; nothing else owns them.
            passed.extend(
                fds.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    let len = iov[0].len();
    if received != len {
        return Err(Errno::EPROTO);
    }
    Ok(passed.into_iter().next())
}
