//! Applying a [`CompiledPlan`]: the only code in hermetic that mounts.
//!
//! Runs in the launched child between `clone` and `execve`, so it allocates
//! nothing (see `hermetic_namespaces`): every argument is a C string the
//! parent compiled, and the layer descriptors live in a fixed-size array.

use std::os::fd::{AsFd, OwnedFd};

use hermetic_sys::phase_clock::{Point, mark};
use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::fcntl::{OFlag, openat};
use nix::mount::{MntFlags, mount, umount2};
use nix::sys::stat::{FchmodatFlags, Mode, fchmodat, mkdirat};
use nix::unistd::{chdir, fchownat, pivot_root, symlinkat, write};

use hermetic_namespaces::SetupFailure;

use crate::compile::{CompiledPlan, MAX_LAYERS, Op};

fn mode(bits: u32) -> Mode {
    Mode::from_bits_truncate(bits as libc::mode_t)
}

fn layer(layers: &[Option<OwnedFd>; MAX_LAYERS], slot: usize) -> Result<&OwnedFd, Errno> {
    layers[slot].as_ref().ok_or(Errno::EBADF)
}

fn write_all(fd: &OwnedFd, mut bytes: &[u8]) -> Result<(), Errno> {
    while !bytes.is_empty() {
        match write(fd, bytes) {
            Ok(0) => return Err(Errno::EIO),
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => {}
            Err(errno) => return Err(errno),
        }
    }
    Ok(())
}

fn run(op: &Op, layers: &mut [Option<OwnedFd>; MAX_LAYERS]) -> Result<(), Errno> {
    match op {
        Op::Mount {
            source,
            target,
            fstype,
            flags,
            data,
        } => mount(
            source.as_deref(),
            target.as_c_str(),
            fstype.as_deref(),
            *flags,
            data.as_deref(),
        ),
        Op::OpenLayer { slot, path } => {
            let fd = nix::fcntl::open(
                path.as_c_str(),
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            layers[*slot] = Some(fd);
            Ok(())
        }
        Op::Repin { path, fd } => {
            let fresh = nix::fcntl::open(
                path.as_c_str(),
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            hermetic_sys::replace_fd(fresh.as_fd(), *fd)
        }
        Op::Mkdir {
            slot,
            relative,
            mode: bits,
        } => mkdirat(
            layer(layers, *slot)?.as_fd(),
            relative.as_c_str(),
            mode(*bits),
        ),
        Op::File {
            slot,
            relative,
            mode: bits,
            contents,
        } => {
            let flags = OFlag::O_CREAT
                | OFlag::O_EXCL
                | OFlag::O_WRONLY
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC;
            let fd = openat(
                layer(layers, *slot)?.as_fd(),
                relative.as_c_str(),
                flags,
                mode(*bits),
            )?;
            match contents {
                Some(bytes) => write_all(&fd, bytes),
                None => Ok(()),
            }
        }
        Op::Symlink {
            slot,
            relative,
            target,
        } => symlinkat(
            target.as_c_str(),
            layer(layers, *slot)?.as_fd(),
            relative.as_c_str(),
        ),
        Op::Chmod {
            slot,
            relative,
            mode: bits,
        } => fchmodat(
            layer(layers, *slot)?.as_fd(),
            relative.as_c_str(),
            mode(*bits),
            FchmodatFlags::FollowSymlink,
        ),
        Op::Chown {
            slot,
            relative,
            uid,
            gid,
        } => fchownat(
            layer(layers, *slot)?.as_fd(),
            relative.as_c_str(),
            Some((*uid).into()),
            Some((*gid).into()),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ),
        Op::Chdir { path } => chdir(path.as_c_str()),
        Op::PivotRoot { new_root } => {
            // The layer descriptors point into the old root's view; they are
            // no longer needed.
            for fd in layers.iter_mut() {
                *fd = None;
            }
            chdir(new_root.as_c_str())?;
            mark(Point::Mounted);
            pivot_root(c".", c".")?;
            // The old root is now stacked on top of the new one at "/":
            // detach it, which leaves the sandbox root in its place.
            umount2(c".", MntFlags::MNT_DETACH)?;
            chdir(c"/")?;
            mark(Point::Pivoted);
            Ok(())
        }
    }
}

/// Applies `plan` in the current (new) mount namespace; on failure, names the
/// plan step that failed. Allocates nothing.
pub fn apply(plan: &CompiledPlan) -> Result<(), SetupFailure> {
    let mut layers: [Option<OwnedFd>; MAX_LAYERS] = [None, None, None, None];
    for (step, op) in &plan.ops {
        run(op, &mut layers).map_err(|errno| SetupFailure { step: *step, errno })?;
    }
    Ok(())
}
