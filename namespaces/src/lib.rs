//! The thin kernel layer of hermetic: the only place that starts a process
//! inside new namespaces. Its system calls go through `hermetic-sys`, the
//! only crate with `unsafe` code.
//!
//! # Between clone and execve
//!
//! DESIGN.md asks for one of two ways to make the child safe in a threaded
//! parent (the daemon will be one, and so is every test binary): run no
//! allocator and take no lock between `clone` and `execve`, or re-execute a
//! helper that reads its plan from a pipe (Lix's `launch-builder`).
//!
//! hermetic takes the first. The parent compiles everything the child needs
//! into plain data before cloning: C strings for every path, argv and envp as
//! ready pointer arrays, open descriptors, the mount plan as a list of
//! system calls. The child only walks that data making system calls, and
//! reports a failure as three integers on a socket. Why not the helper: an
//! extra `execve` of a dynamically linked program costs about a millisecond,
//! as much as the whole sandbox start-up we aim for, and the plan would have
//! to be serialised and parsed again on the other side.
//!
//! The rules that keep this sound, for anyone adding a step:
//! * no `String`, `Vec`, `format!`, `Box`, no `std::fs`, no `tracing`, no
//!   panics (use `Result` and report);
//! * identity system calls go through `hermetic-sys`, not glibc (see there);
//! * a test (`tests/no_alloc_in_child.rs`) installs an allocator that kills
//!   any launched child that allocates, and launches real sandboxes under it.

mod child;
mod launch;
pub mod probe;
mod request;
mod sweep;
mod wire;

pub use launch::{Child, LaunchError, launch};
pub use request::{
    Exec, HostIds, IdMaps, LaunchRequest, Namespaces, ParentHook, Setup, SetupFailure, Stdio,
    UserNamespace, Uts,
};
pub use wire::ChildStep;

pub use sweep::{SweepError, kill_processes_of};
