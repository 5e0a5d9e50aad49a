//! The build-user pool (SPEC B25–B28): which host ids a build runs as when
//! hermetic runs as root, and the locks that keep two builds from sharing
//! them.
//!
//! * the static pool: the explicit members of `build-users-group`, one lock
//!   file `<state>/userpool/<uid>` each;
//! * auto-allocated ids: slots of 65536 ids from `start-id`, one lock file
//!   `<state>/userpool2/slot-<i>` each.
//!
//! A lock is a `flock` held on an open file for as long as the
//! [`BuildUserLease`] lives (the whole build); a process that dies releases
//! it. When every user is taken, [`acquire`] waits.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{Group, Uid, User};

/// How many ids a uid-range build gets (B19).
pub const RANGE_SIZE: u32 = 65536;

/// The settings that decide where build users come from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PoolConfig {
    /// `build-users-group`: the group whose members are build users (empty:
    /// none).
    pub build_users_group: String,
    /// `auto-allocate-uids`.
    pub auto_allocate_uids: bool,
    /// `start-id`: the first auto-allocated id.
    pub start_id: u32,
    /// `id-count`: how many ids may be auto-allocated.
    pub id_count: u32,
    /// The state directory (`/nix/var/nix`), which holds the lock files.
    pub state_dir: PathBuf,
}

/// The default `start-id` (0x34000000).
pub const DEFAULT_START_ID: u32 = 872_415_232;
/// The default `id-count` (128 slots of 65536).
pub const DEFAULT_ID_COUNT: u32 = 8_388_608;

/// The host ids a build holds for its whole life.
#[derive(Debug)]
pub struct BuildUserLease {
    /// The first (or only) uid.
    pub uid: u32,
    /// The gid.
    pub gid: u32,
    /// How many ids from `uid` (1, or 65536 for a uid-range build).
    pub count: u32,
    /// The user's name, when it has a passwd entry.
    pub name: Option<String>,
    /// The lock; released when the lease is dropped.
    _lock: Flock<File>,
}

/// Why no build user could be had (B26, B27; texts word for word).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// `build-users-group` names no group.
    #[error("the group '{0}' specified in 'build-users-group' does not exist")]
    NoGroup(String),
    /// The group has no explicit members.
    #[error("the build users group '{0}' has no members")]
    NoMembers(String),
    /// A member without a passwd entry.
    #[error("the user '{user}' in the group '{group}' does not exist")]
    NoUser {
        /// The member.
        user: String,
        /// The group.
        group: String,
    },
    /// The process's own user is a build user.
    #[error("the Nix user should not be a member of '{0}'")]
    SelfMember(String),
    /// An auto-allocated uid that a passwd entry already has.
    #[error("auto-allocated UID {uid} clashes with existing user account '{name}'")]
    Clash {
        /// The uid.
        uid: u32,
        /// The account.
        name: String,
    },
    /// Running as root with neither a build users group nor auto-allocation.
    #[error(
        "'build-users-group' is empty and 'auto-allocate-uids' is off, which would run builds as root: \
         hermetic never does; set build-users-group = nixbld (a group whose members are the build users) \
         or auto-allocate-uids = true"
    )]
    NoBuildUsers,
    /// `id-count` leaves no room for a slot.
    #[error("'id-count' ({0}) is smaller than one slot of 65536 ids")]
    TooFewIds(u32),
    /// A lock file could not be opened or locked.
    #[error("cannot lock '{path}'")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        errno: Errno,
    },
}

fn open_lock(path: &Path) -> Result<File, PoolError> {
    let error = |errno| PoolError::Lock {
        path: path.to_path_buf(),
        errno,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| error(Errno::from_raw(e.raw_os_error().unwrap_or(0))))?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| error(Errno::from_raw(e.raw_os_error().unwrap_or(0))))
}

/// Takes the lock at `path` without waiting; `None` when it is held.
fn try_lock(path: &Path) -> Result<Option<Flock<File>>, PoolError> {
    match Flock::lock(open_lock(path)?, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(PoolError::Lock {
            path: path.to_path_buf(),
            errno,
        }),
    }
}

/// One attempt over the pool: a lease, or `None` when every user is taken.
fn try_acquire(
    config: &PoolConfig,
    uid_range: bool,
    sandboxed: bool,
) -> Result<Option<BuildUserLease>, PoolError> {
    if config.auto_allocate_uids {
        let slots = config.id_count / RANGE_SIZE;
        if slots == 0 {
            return Err(PoolError::TooFewIds(config.id_count));
        }
        for slot in 0..slots {
            let path = config
                .state_dir
                .join("userpool2")
                .join(format!("slot-{slot}"));
            let Some(lock) = try_lock(&path)? else {
                continue;
            };
            let uid = config.start_id + slot * RANGE_SIZE;
            if let Ok(Some(user)) = User::from_uid(Uid::from_raw(uid)) {
                return Err(PoolError::Clash {
                    uid,
                    name: user.name,
                });
            }
            // A sandboxed build's gid is its first uid (it has a user
            // namespace); an unsandboxed one needs the build users group.
            let gid = if sandboxed {
                uid
            } else {
                group(&config.build_users_group)?.gid.as_raw()
            };
            return Ok(Some(BuildUserLease {
                uid,
                gid,
                count: if uid_range { RANGE_SIZE } else { 1 },
                name: None,
                _lock: lock,
            }));
        }
        return Ok(None);
    }
    let group = users_group(config)?;
    // Each member is checked as it is reached, as Nix does.
    for member in &group.mem {
        let user = member_account(&group, member)?;
        let uid = user.uid.as_raw();
        let path = config.state_dir.join("userpool").join(uid.to_string());
        if let Some(lock) = try_lock(&path)? {
            return Ok(Some(BuildUserLease {
                uid,
                gid: group.gid.as_raw(),
                count: 1,
                name: Some(user.name),
                _lock: lock,
            }));
        }
    }
    Ok(None)
}

/// Whether builds could get build users as `config` says, without taking
/// any: what they would be, or why none can be had (the errors a build
/// would meet). For `doctor`.
pub fn describe(config: &PoolConfig) -> Result<String, PoolError> {
    if config.auto_allocate_uids {
        let slots = config.id_count / RANGE_SIZE;
        if slots == 0 {
            return Err(PoolError::TooFewIds(config.id_count));
        }
        return Ok(format!(
            "auto-allocated: {slots} slots of uids from {}",
            config.start_id
        ));
    }
    let group = users_group(config)?;
    for member in &group.mem {
        member_account(&group, member)?;
    }
    Ok(format!(
        "group '{}': {} build users ({})",
        group.name,
        group.mem.len(),
        group.mem.join(", ")
    ))
}

/// The build users group, which must exist and have members.
fn users_group(config: &PoolConfig) -> Result<Group, PoolError> {
    if config.build_users_group.is_empty() {
        return Err(PoolError::NoBuildUsers);
    }
    let group = group(&config.build_users_group)?;
    if group.mem.is_empty() {
        return Err(PoolError::NoMembers(group.name));
    }
    Ok(group)
}

/// The account of `member` of the build users group: it must have one,
/// and not be this process's own user.
fn member_account(group: &Group, member: &str) -> Result<User, PoolError> {
    let user = match User::from_name(member) {
        Ok(Some(user)) => user,
        _ => {
            return Err(PoolError::NoUser {
                user: member.to_owned(),
                group: group.name.clone(),
            });
        }
    };
    let uid = user.uid.as_raw();
    if uid == nix::unistd::getuid().as_raw() || uid == nix::unistd::geteuid().as_raw() {
        return Err(PoolError::SelfMember(group.name.clone()));
    }
    Ok(user)
}

fn group(name: &str) -> Result<Group, PoolError> {
    match Group::from_name(name) {
        Ok(Some(group)) => Ok(group),
        _ => Err(PoolError::NoGroup(name.to_string())),
    }
}

/// Takes a free build user (or id slot) for the build `label`, waiting
/// while every one is taken; `waiting` is called once, with Nix's text,
/// when it has to wait.
pub fn acquire(
    config: &PoolConfig,
    label: &str,
    uid_range: bool,
    sandboxed: bool,
    waiting: &mut dyn FnMut(&str),
) -> Result<BuildUserLease, PoolError> {
    let mut pause = Duration::from_millis(10);
    let mut said = false;
    loop {
        if let Some(lease) = try_acquire(config, uid_range, sandboxed)? {
            return Ok(lease);
        }
        if !said {
            waiting(&format!("waiting for a free build user ID for '{label}'"));
            said = true;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// The lock file that guards `uid`, if the pool has one for it.
fn lock_path_of(config: &PoolConfig, uid: u32) -> PathBuf {
    if config.auto_allocate_uids
        && uid >= config.start_id
        && (uid - config.start_id) % RANGE_SIZE == 0
    {
        let slot = (uid - config.start_id) / RANGE_SIZE;
        return config
            .state_dir
            .join("userpool2")
            .join(format!("slot-{slot}"));
    }
    config.state_dir.join("userpool").join(uid.to_string())
}

/// Takes the lock of build user `uid` if no build holds it, for cleaning up
/// after a build that ended without doing so; `None` while a build runs as
/// that user.
pub fn hold_if_free(config: &PoolConfig, uid: u32) -> Result<Option<Flock<File>>, PoolError> {
    try_lock(&lock_path_of(config, uid))
}
