//! The crash registry: a build's cgroups are recorded under
//! `<state>/cgroups/<name>` while they exist, so that a supervisor killed
//! mid-build leaves a record the next start reads to remove them.

use std::fs;
use std::path::{Path, PathBuf};

use super::files::{io, read};
use super::{BuildCgroup, CgroupError};

/// The records of live build cgroups.
fn records_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("cgroups")
}

/// Who a build cgroup belongs to, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupOwner {
    /// `build-uid-<uid>-<pid>-<n>`: a build running as a leased build user,
    /// made by process `pid`.
    BuildUser(u32),
    /// `build-pid-<pid>-<n>`: a build of supervisor `pid` with a build user
    /// it did not lease.
    Supervisor(i32),
}

impl CgroupOwner {
    /// The name of the `n`th cgroup this process makes for this owner. It
    /// holds this process's pid and `n` as well as the build user's uid, so
    /// that no two builds ever share a cgroup (and one's end never kills
    /// the other), even when their build users come from different pools.
    pub fn cgroup_name(self, n: u32) -> String {
        match self {
            CgroupOwner::BuildUser(uid) => format!("build-uid-{uid}-{}-{n}", std::process::id()),
            CgroupOwner::Supervisor(pid) => format!("build-pid-{pid}-{n}"),
        }
    }

    /// The owner a cgroup name says.
    pub fn of(name: &str) -> Option<CgroupOwner> {
        if let Some(rest) = name.strip_prefix("build-uid-") {
            let (uid, _) = rest.split_once('-')?;
            return uid.parse().ok().map(CgroupOwner::BuildUser);
        }
        let rest = name.strip_prefix("build-pid-")?;
        let (pid, _) = rest.split_once('-')?;
        pid.parse().ok().map(CgroupOwner::Supervisor)
    }
}

/// Notes that `cgroup` exists (its directories, under its name).
pub fn record(state_dir: &Path, cgroup: &BuildCgroup) -> Result<(), CgroupError> {
    let dir = records_dir(state_dir);
    fs::create_dir_all(&dir).map_err(io("creating directory", &dir))?;
    let path = dir.join(&cgroup.name);
    let text: String = cgroup
        .dirs()
        .iter()
        .map(|d| format!("{}\n", d.display()))
        .collect();
    fs::write(&path, text).map_err(io("writing", &path))
}

/// Forgets the record of `cgroup`.
pub fn unrecord(state_dir: &Path, cgroup: &BuildCgroup) {
    let _ = fs::remove_file(records_dir(state_dir).join(&cgroup.name));
}

/// Removes the cgroups that earlier runs recorded and did not remove (a
/// supervisor killed mid-build), and their records. `hold` takes the build
/// user's lock for the time of the cleaning, or says (`None`) that a build
/// runs as that user now; a supervisor's own cgroup is left while that
/// supervisor lives.
pub fn remove_leftovers<Guard>(state_dir: &Path, hold: impl Fn(u32) -> Option<Guard>) {
    let Ok(entries) = fs::read_dir(records_dir(state_dir)) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(owner) = entry.file_name().to_str().and_then(CgroupOwner::of) else {
            continue;
        };
        let _guard = match owner {
            CgroupOwner::BuildUser(uid) => match hold(uid) {
                Some(guard) => Some(guard),
                None => continue,
            },
            CgroupOwner::Supervisor(pid) => {
                if Path::new("/proc").join(pid.to_string()).exists() {
                    continue;
                }
                None
            }
        };
        let text = read(&entry.path()).unwrap_or_default();
        let mut cleaned = true;
        for dir in text.lines().map(PathBuf::from) {
            if let Err(error) = BuildCgroup::leftover(dir.clone()).destroy() {
                tracing::warn!("removing a leftover cgroup: {error}");
                cleaned = false;
            } else {
                tracing::debug!(cgroup = %dir.display(), "removed a leftover cgroup");
            }
        }
        if cleaned {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_names_say_their_owner() {
        for owner in [CgroupOwner::BuildUser(30001), CgroupOwner::Supervisor(4242)] {
            assert_eq!(CgroupOwner::of(&owner.cgroup_name(3)), Some(owner));
        }
        assert_eq!(
            CgroupOwner::BuildUser(7).cgroup_name(2),
            format!("build-uid-7-{}-2", std::process::id())
        );
        assert_eq!(CgroupOwner::of("build-pid-12"), None);
        assert_eq!(CgroupOwner::of("other"), None);
    }
}
