//! The cgroup v2 backend: one cgroup per build below `<root>/hermetic`,
//! limits in `pids.max` and `memory.max`, ended with `cgroup.kill` where
//! the kernel has it (5.14) and by freezing and killing where it does not.

use std::fs;
use std::path::{Path, PathBuf};

use super::files::{io, keyed, keyed_file, number, read, write};
use super::layout::v2_controllers;
use super::{Backend, CgroupError, Limits, Usage};

/// One build's v2 cgroup.
#[derive(Debug)]
pub(super) struct V2Cgroup {
    /// The hierarchy's root (the cgroup2 mount).
    root: PathBuf,
    /// The build's cgroup, as a one-element list for [`Backend::dirs`].
    dir: [PathBuf; 1],
}

impl V2Cgroup {
    /// The cgroup `dir` below `root`.
    pub(super) fn new(root: &Path, dir: PathBuf) -> V2Cgroup {
        V2Cgroup {
            root: root.to_path_buf(),
            dir: [dir],
        }
    }

    fn dir(&self) -> &Path {
        &self.dir[0]
    }
}

impl Backend for V2Cgroup {
    fn dirs(&self) -> &[PathBuf] {
        &self.dir
    }

    fn main(&self) -> &Path {
        self.dir()
    }

    fn create(&self, limits: Limits, owner: Option<(u32, u32)>) -> Result<(), CgroupError> {
        let dir = self.dir();
        let base = dir.parent().unwrap_or(&self.root);
        fs::create_dir_all(base).map_err(io("creating cgroup", base))?;
        // Let the build cgroups use every controller the host offers (the
        // base holds no processes, so it may).
        let offered = v2_controllers(&self.root);
        for parent in [self.root.as_path(), base] {
            for controller in &offered {
                let _ = fs::write(
                    parent.join("cgroup.subtree_control"),
                    format!("+{controller}"),
                );
            }
        }
        fs::create_dir(dir).map_err(io("creating cgroup", dir))?;
        if let Some(pids) = limits.pids {
            write(&dir.join("pids.max"), &pids.to_string())?;
        }
        if let Some(memory) = limits.memory {
            write(&dir.join("memory.max"), &memory.to_string())?;
            let _ = fs::write(dir.join("memory.swap.max"), "0");
        }
        if let Some((uid, gid)) = owner {
            for file in [
                "",
                "cgroup.procs",
                "cgroup.threads",
                "cgroup.subtree_control",
            ] {
                let path = dir.join(file);
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .map_err(io("cannot change ownership of", &path))?;
            }
        }
        Ok(())
    }

    fn kill_at_once(&self) -> Result<bool, CgroupError> {
        let kill_file = self.dir().join("cgroup.kill");
        if !kill_file.exists() {
            return Ok(false);
        }
        write(&kill_file, "1")?;
        Ok(true)
    }

    fn freeze(&self, frozen: bool) {
        let _ = fs::write(
            self.dir().join("cgroup.freeze"),
            if frozen { "1" } else { "0" },
        );
    }

    fn usage(&self) -> Usage {
        let dir = self.dir();
        let stat = read(&dir.join("cpu.stat")).unwrap_or_default();
        let cpu = |key| keyed(&stat, key).unwrap_or(0);
        Usage {
            user_usec: cpu("user_usec"),
            system_usec: cpu("system_usec"),
            peak_memory: number(&dir.join("memory.peak")),
            oom_kills: keyed_file(&dir.join("memory.events"), "oom_kill"),
            pids_limit_hits: keyed_file(&dir.join("pids.events"), "max"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v2 cgroup in a fake tree (a plain directory): what a build used
    /// is read from the kernel's files, absent files reading as nothing.
    #[test]
    fn usage_is_read_from_the_v2_files() {
        let root = std::env::temp_dir().join(format!("hermetic-cgroup-v2-{}", std::process::id()));
        let dir = root.join("hermetic/build-1");
        fs::create_dir_all(&dir).unwrap();
        let cgroup = V2Cgroup::new(&root, dir.clone());
        assert_eq!(cgroup.usage(), Usage::default());
        fs::write(
            dir.join("cpu.stat"),
            "usage_usec 10\nuser_usec 7\nsystem_usec 3\n",
        )
        .unwrap();
        fs::write(dir.join("memory.peak"), "4096\n").unwrap();
        fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n",
        )
        .unwrap();
        fs::write(dir.join("pids.events"), "max 2\n").unwrap();
        let usage = cgroup.usage();
        fs::remove_dir_all(&root).unwrap();
        assert_eq!(
            usage,
            Usage {
                user_usec: 7,
                system_usec: 3,
                peak_memory: Some(4096),
                oom_kills: 1,
                pids_limit_hits: 2,
            }
        );
        assert!(
            !cgroup.kill_at_once().unwrap(),
            "no cgroup.kill, no kill at once"
        );
    }
}
