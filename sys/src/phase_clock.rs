//! When each step of a sandbox's start and end happened, for the phase
//! table of `sandbox-run --timings` and `scripts/bench`: one clock reading
//! (`CLOCK_MONOTONIC`, nanoseconds) per [`Point`], kept in a page shared
//! with the launched child, so that the steps between `clone` and
//! `execve` are timed too. Marking writes one number into that page: it
//! allocates nothing and takes no lock, as the child's steps must. Off
//! unless [`enable`] was called; then a mark is one `clock_gettime`.

use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use nix::errno::Errno;

/// A point in a sandbox's life, in the order a start passes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Point {
    /// The command began (`main`).
    Start,
    /// Its arguments, spec and configuration are read.
    Configured,
    /// `sandbox-run`'s scratch directory in a Nix store directory is held
    /// by a temporary root (when it is made there).
    ScratchHeld,
    /// A build user is leased (or none is needed).
    Leased,
    /// The sandbox is planned: paths checked, the mount plan compiled.
    Planned,
    /// Its cgroup is made and recorded.
    CgroupMade,
    /// Its scratch directory exists.
    ScratchMade,
    /// Just before `clone`.
    Cloning,
    /// The child runs its first step.
    ChildStarted,
    /// The child's session, host and domain names are set.
    SessionSet,
    /// The child's mounts are made, before `pivot_root`.
    Mounted,
    /// The child's root is the sandbox's.
    Pivoted,
    /// The child's file system is complete.
    FilesystemReady,
    /// The child's user namespace is mapped (after the parent's go).
    UserMapped,
    /// The child's network namespace is made.
    NetworkMade,
    /// The child's loopback is up.
    NetworkReady,
    /// The child runs as the build user.
    IdentitySwitched,
    /// The child's descriptors, capabilities and no-new-privs are set.
    Confined,
    /// The seccomp filter is loaded: `execve` comes next.
    FilterLoaded,
    /// The parent saw `execve` succeed.
    Launched,
    /// PID 1 has exited and been reaped.
    Reaped,
    /// The scratch directory is gone (unmounted and removed).
    ScratchRemoved,
    /// The cgroup is gone.
    CgroupRemoved,
    /// The build user is free again.
    Released,
    /// `sandbox-run`'s hold on its scratch directory is let go.
    ScratchLetGo,
    /// The command is about to exit.
    End,
}

/// Every point, in order.
pub const POINTS: [Point; 26] = [
    Point::Start,
    Point::Configured,
    Point::ScratchHeld,
    Point::Leased,
    Point::Planned,
    Point::CgroupMade,
    Point::ScratchMade,
    Point::Cloning,
    Point::ChildStarted,
    Point::SessionSet,
    Point::Mounted,
    Point::Pivoted,
    Point::FilesystemReady,
    Point::UserMapped,
    Point::NetworkMade,
    Point::NetworkReady,
    Point::IdentitySwitched,
    Point::Confined,
    Point::FilterLoaded,
    Point::Launched,
    Point::Reaped,
    Point::ScratchRemoved,
    Point::CgroupRemoved,
    Point::Released,
    Point::ScratchLetGo,
    Point::End,
];

impl Point {
    /// What happened between the point before and this one, for the table.
    pub fn phase(self) -> &'static str {
        match self {
            Point::Start => "process start",
            Point::Configured => "arguments, spec, configuration",
            Point::ScratchHeld => "scratch held in the store (temporary root, record)",
            Point::Leased => "build-user lease",
            Point::Planned => "plan (checks, mount plan compiled)",
            Point::CgroupMade => "cgroup made",
            Point::ScratchMade => "scratch directory made",
            Point::Cloning => "pty, descriptors, launch request",
            Point::ChildStarted => "clone (namespaces made)",
            Point::SessionSet => "session, host name",
            Point::Mounted => "mounts (inputs, /dev, /proc, /etc, /tmp)",
            Point::Pivoted => "pivot_root",
            Point::FilesystemReady => "mounts after pivot (read-only remounts)",
            Point::UserMapped => "user namespace mapped",
            Point::NetworkMade => "network namespace made (unshare)",
            Point::NetworkReady => "loopback up",
            Point::IdentitySwitched => "identity switch",
            Point::Confined => "capabilities, descriptors, keyring",
            Point::FilterLoaded => "seccomp load",
            Point::Launched => "execve seen by the parent",
            Point::Reaped => "program runs, exits, reaped",
            Point::ScratchRemoved => "scratch unmounted and removed",
            Point::CgroupRemoved => "cgroup removed",
            Point::Released => "lease released",
            Point::ScratchLetGo => "temporary root and record let go",
            Point::End => "exit",
        }
    }
}

const PAGE_LEN: usize = 4096;

/// The shared page of readings, once enabled.
static PAGE: AtomicPtr<AtomicU64> = AtomicPtr::new(std::ptr::null_mut());

/// Turns the clock on for this process and the children it launches from
/// now on (a shared anonymous page, never unmapped).
pub fn enable() -> Result<(), Errno> {
    if !PAGE.load(Ordering::Acquire).is_null() {
        return Ok(());
    }
    // SAFETY: a fresh anonymous mapping, at an address the kernel picks;
    // nothing else refers to it. It lives as long as the process and is
    // shared (not copied) with children made by clone without CLONE_VM.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PAGE_LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if page == libc::MAP_FAILED {
        return Err(Errno::last());
    }
    PAGE.store(page.cast(), Ordering::Release);
    Ok(())
}

fn slots() -> Option<&'static [AtomicU64]> {
    let page = PAGE.load(Ordering::Acquire);
    if page.is_null() {
        return None;
    }
    // SAFETY: `enable` mapped PAGE_LEN zeroed bytes here, aligned to a page
    // and never unmapped; AtomicU64 has the layout of u64 and every bit
    // pattern is valid.
    Some(unsafe { std::slice::from_raw_parts(page, PAGE_LEN / 8) })
}

/// Records that `point` is reached now (if the clock is on).
pub fn mark(point: Point) {
    if let Some(slots) = slots() {
        slots[point as usize].store(now(), Ordering::Relaxed);
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds (0 if it cannot be read): the clock
/// of the readings, for a caller that times a process from outside.
pub fn now() -> u64 {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer
    // (the vDSO's; no allocation, safe between clone and execve).
    let read = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut time) };
    if read != 0 {
        return 0;
    }
    time.tv_sec as u64 * 1_000_000_000 + time.tv_nsec as u64
}

/// The points reached since the last [`clear`], with their readings, in
/// the order of their times.
pub fn readings() -> Vec<(Point, u64)> {
    let Some(slots) = slots() else {
        return Vec::new();
    };
    let mut reached: Vec<(Point, u64)> = POINTS
        .iter()
        .map(|&p| (p, slots[p as usize].load(Ordering::Relaxed)))
        .filter(|&(_, t)| t != 0)
        .collect();
    reached.sort_by_key(|&(p, t)| (t, p));
    reached
}

/// Forgets every reading.
pub fn clear() {
    if let Some(slots) = slots() {
        for slot in slots {
            slot.store(0, Ordering::Relaxed);
        }
    }
}
