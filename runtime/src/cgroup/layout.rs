//! How the host's cgroups are laid out: pure v2, or v1 controllers each in
//! a hierarchy of its own (a hybrid host's empty v2 hierarchy has no
//! controllers to limit a build with). Detection is a pure function of what
//! `/sys/fs/cgroup` is and of mountinfo, so it is tested without root.

use std::path::{Path, PathBuf};

use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, TMPFS_MAGIC, statfs};
use serde::Serialize;

use super::CgroupError;
use super::files::read;

/// Where the host mounts its cgroups.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// A v1 controller hermetic uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Controller {
    /// Freezes a build to kill it whole.
    Freezer,
    /// Limits its processes.
    Pids,
    /// Limits its memory, reports its peak.
    Memory,
    /// Reports its CPU time.
    Cpuacct,
}

impl Controller {
    /// Every controller, in the order hierarchies are kept (the freezer
    /// first: its cgroup lists the build's processes).
    pub const ALL: [Controller; 4] = [
        Controller::Freezer,
        Controller::Pids,
        Controller::Memory,
        Controller::Cpuacct,
    ];

    /// The kernel's name for it (in mount options and v2's
    /// `cgroup.controllers`).
    pub fn name(self) -> &'static str {
        match self {
            Controller::Freezer => "freezer",
            Controller::Pids => "pids",
            Controller::Memory => "memory",
            Controller::Cpuacct => "cpuacct",
        }
    }
}

/// What is mounted at `/sys/fs/cgroup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupRoot {
    /// A cgroup2 file system: a pure v2 host.
    Cgroup2,
    /// A tmpfs holding v1 hierarchies (and, on hybrid hosts, an empty v2).
    Tmpfs,
    /// Anything else, or nothing.
    Other,
}

/// How the host's cgroups are laid out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "version", rename_all = "kebab-case")]
pub enum CgroupLayout {
    /// cgroup v2, mounted at `root`.
    V2 {
        /// The cgroup2 mount.
        root: PathBuf,
    },
    /// cgroup v1: each controller in a hierarchy of its own.
    V1 {
        /// The controllers found, with their mounts (the freezer first).
        hierarchies: Vec<(Controller, PathBuf)>,
    },
}

impl CgroupLayout {
    /// Looks at this host's `/sys/fs/cgroup` and mountinfo.
    pub fn detect() -> Result<CgroupLayout, CgroupError> {
        let root = Path::new(CGROUP_ROOT);
        let kind = statfs(root)
            .map_err(|e| CgroupError::NoCgroups(format!("{CGROUP_ROOT}: {e}")))?
            .filesystem_type();
        let kind = if kind == CGROUP2_SUPER_MAGIC {
            CgroupRoot::Cgroup2
        } else if kind == TMPFS_MAGIC {
            CgroupRoot::Tmpfs
        } else {
            CgroupRoot::Other
        };
        let mountinfo = read(Path::new("/proc/self/mountinfo")).unwrap_or_default();
        CgroupLayout::from_host(root, kind, &mountinfo)
    }

    /// The layout of a host whose cgroup root `root` is `kind` and whose
    /// mount table is `mountinfo` (the text of `/proc/self/mountinfo`).
    pub fn from_host(
        root: &Path,
        kind: CgroupRoot,
        mountinfo: &str,
    ) -> Result<CgroupLayout, CgroupError> {
        match kind {
            CgroupRoot::Cgroup2 => Ok(CgroupLayout::V2 { root: root.into() }),
            CgroupRoot::Tmpfs => {
                let hierarchies = v1_hierarchies(mountinfo);
                match hierarchies.first() {
                    Some((Controller::Freezer, _)) => Ok(CgroupLayout::V1 { hierarchies }),
                    _ => Err(no_freezer(root)),
                }
            }
            CgroupRoot::Other => Err(no_freezer(root)),
        }
    }

    /// Whether the host offers `controller` to a build's cgroup.
    pub fn offers(&self, controller: Controller) -> bool {
        match self {
            CgroupLayout::V2 { root } => {
                v2_controllers(root).iter().any(|c| c == controller.name())
            }
            CgroupLayout::V1 { hierarchies } => hierarchies.iter().any(|(c, _)| *c == controller),
        }
    }
}

fn no_freezer(root: &Path) -> CgroupError {
    CgroupError::NoCgroups(format!(
        "no cgroup v2 at {} and no v1 freezer hierarchy",
        root.display()
    ))
}

/// The controllers a v2 hierarchy offers.
pub(super) fn v2_controllers(root: &Path) -> Vec<String> {
    read(&root.join("cgroup.controllers"))
        .map(|t| t.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// The v1 hierarchies of the controllers hermetic uses, from mountinfo,
/// the freezer first; the first mount of each controller counts.
fn v1_hierarchies(mountinfo: &str) -> Vec<(Controller, PathBuf)> {
    let mut found: Vec<(Controller, PathBuf)> = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut right = right.split(' ');
        if right.next() != Some("cgroup") {
            continue;
        }
        let options = right.nth(1).unwrap_or_default();
        let Some(mount_point) = left.split(' ').nth(4) else {
            continue;
        };
        for controller in Controller::ALL {
            if options.split(',').any(|o| o == controller.name())
                && !found.iter().any(|(c, _)| *c == controller)
            {
                found.push((controller, PathBuf::from(mount_point)));
            }
        }
    }
    found.sort_by_key(|(c, _)| Controller::ALL.iter().position(|a| a == c));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hybrid host's mountinfo (Debian 11 with systemd's hybrid mode),
    /// cpu and cpuacct sharing one hierarchy.
    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
27 25 0:25 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
28 27 0:26 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
29 27 0:27 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
32 27 0:30 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory
33 27 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,cpu,cpuacct
35 27 0:33 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,pids
37 27 0:35 / /sys/fs/cgroup/freezer rw,nosuid,nodev,noexec,relatime shared:19 - cgroup cgroup rw,freezer
";

    fn root() -> &'static Path {
        Path::new(CGROUP_ROOT)
    }

    #[test]
    fn a_cgroup2_root_is_v2() {
        assert_eq!(
            CgroupLayout::from_host(root(), CgroupRoot::Cgroup2, HYBRID).unwrap(),
            CgroupLayout::V2 {
                root: root().into()
            }
        );
    }

    #[test]
    fn a_hybrid_host_uses_its_v1_hierarchies_freezer_first() {
        let layout = CgroupLayout::from_host(root(), CgroupRoot::Tmpfs, HYBRID).unwrap();
        let cgroup = |p: &str| PathBuf::from("/sys/fs/cgroup").join(p);
        assert_eq!(
            layout,
            CgroupLayout::V1 {
                hierarchies: vec![
                    (Controller::Freezer, cgroup("freezer")),
                    (Controller::Pids, cgroup("pids")),
                    (Controller::Memory, cgroup("memory")),
                    (Controller::Cpuacct, cgroup("cpu,cpuacct")),
                ]
            }
        );
        assert!(layout.offers(Controller::Memory));
    }

    #[test]
    fn v1_without_a_freezer_is_refused() {
        let without: String = HYBRID
            .lines()
            .filter(|l| !l.contains("freezer"))
            .map(|l| format!("{l}\n"))
            .collect();
        let error = CgroupLayout::from_host(root(), CgroupRoot::Tmpfs, &without).unwrap_err();
        assert_eq!(
            error.to_string(),
            "cannot determine the cgroups file system: \
             no cgroup v2 at /sys/fs/cgroup and no v1 freezer hierarchy"
        );
        let only_pids = "35 27 0:33 / /cg/pids rw - cgroup cgroup rw,pids\n\
                         37 27 0:35 / /cg/freezer rw - cgroup cgroup rw,freezer\n";
        let layout = CgroupLayout::from_host(root(), CgroupRoot::Tmpfs, only_pids).unwrap();
        assert!(layout.offers(Controller::Pids));
        assert!(!layout.offers(Controller::Memory));
        assert!(CgroupLayout::from_host(root(), CgroupRoot::Other, HYBRID).is_err());
    }

    #[test]
    fn a_cgroup2_mount_is_not_a_v1_hierarchy() {
        let v2_only = "28 27 0:26 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,freezer\n";
        assert!(v1_hierarchies(v2_only).is_empty());
    }
}
