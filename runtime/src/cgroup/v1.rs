//! The cgroup v1 backend (hybrid hosts): one cgroup per build in each of
//! the freezer, pids, memory and cpuacct hierarchies, ended by freezing the
//! freezer cgroup and killing what is in it.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::files::{io, keyed_file, number, read, write};
use super::{Backend, CgroupError, Controller, Limits, Usage};

/// One build's v1 cgroups.
#[derive(Debug)]
pub(super) struct V1Cgroup {
    /// Its directories, one per hierarchy, the freezer's first.
    dirs: Vec<PathBuf>,
    /// Which controller each directory is for (empty for a leftover found
    /// through the registry, which is only killed and removed).
    controllers: Vec<Controller>,
}

impl V1Cgroup {
    /// The cgroup of each `(controller, directory)`, the freezer first.
    pub(super) fn new(dirs: Vec<(Controller, PathBuf)>) -> V1Cgroup {
        let (controllers, dirs) = dirs.into_iter().unzip();
        V1Cgroup { dirs, controllers }
    }

    /// A leftover v1 cgroup directory, to be killed and removed.
    pub(super) fn leftover(dir: PathBuf) -> V1Cgroup {
        V1Cgroup {
            dirs: vec![dir],
            controllers: Vec::new(),
        }
    }

    fn each(&self) -> impl Iterator<Item = (Controller, &PathBuf)> {
        self.controllers.iter().copied().zip(&self.dirs)
    }
}

impl Backend for V1Cgroup {
    fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    fn main(&self) -> &Path {
        &self.dirs[0]
    }

    fn create(&self, limits: Limits, _owner: Option<(u32, u32)>) -> Result<(), CgroupError> {
        for (controller, dir) in self.each() {
            fs::create_dir_all(dir).map_err(io("creating cgroup", dir))?;
            match controller {
                Controller::Pids => {
                    if let Some(pids) = limits.pids {
                        write(&dir.join("pids.max"), &pids.to_string())?;
                    }
                }
                Controller::Memory => {
                    if let Some(memory) = limits.memory {
                        write(&dir.join("memory.limit_in_bytes"), &memory.to_string())?;
                        // With swap accounting, no swap beyond it.
                        let _ =
                            fs::write(dir.join("memory.memsw.limit_in_bytes"), memory.to_string());
                    }
                }
                Controller::Freezer | Controller::Cpuacct => {}
            }
        }
        Ok(())
    }

    fn kill_at_once(&self) -> Result<bool, CgroupError> {
        Ok(false)
    }

    fn freeze(&self, frozen: bool) {
        let state = self.main().join("freezer.state");
        if !state.exists() {
            return;
        }
        let wanted = if frozen { "FROZEN" } else { "THAWED" };
        let _ = fs::write(&state, wanted);
        for _ in 0..100 {
            if read(&state).is_some_and(|s| s.trim() == wanted) {
                return;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    fn usage(&self) -> Usage {
        let mut usage = Usage::default();
        for (controller, dir) in self.each() {
            match controller {
                Controller::Cpuacct => {
                    let ns = |file| number(&dir.join(file)).unwrap_or(0);
                    usage.user_usec = ns("cpuacct.usage_user") / 1000;
                    usage.system_usec = ns("cpuacct.usage_sys") / 1000;
                }
                Controller::Memory => {
                    usage.peak_memory = number(&dir.join("memory.max_usage_in_bytes"));
                    usage.oom_kills = keyed_file(&dir.join("memory.oom_control"), "oom_kill");
                }
                Controller::Pids => {
                    usage.pids_limit_hits = keyed_file(&dir.join("pids.events"), "max");
                }
                Controller::Freezer => {}
            }
        }
        usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// v1 cgroups in a fake tree (plain directories): what a build used
    /// is gathered from each controller's hierarchy.
    #[test]
    fn usage_is_gathered_from_each_hierarchy() {
        let root = std::env::temp_dir().join(format!("hermetic-cgroup-v1-{}", std::process::id()));
        let dir = |c: Controller| root.join(c.name()).join("hermetic/build-1");
        let cgroup = V1Cgroup::new(Controller::ALL.iter().map(|c| (*c, dir(*c))).collect());
        for path in cgroup.dirs() {
            fs::create_dir_all(path).unwrap();
        }
        let cpuacct = dir(Controller::Cpuacct);
        fs::write(cpuacct.join("cpuacct.usage_user"), "7000\n").unwrap();
        fs::write(cpuacct.join("cpuacct.usage_sys"), "3000\n").unwrap();
        let memory = dir(Controller::Memory);
        fs::write(memory.join("memory.max_usage_in_bytes"), "4096\n").unwrap();
        fs::write(
            memory.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        fs::write(dir(Controller::Pids).join("pids.events"), "max 5\n").unwrap();
        let usage = cgroup.usage();
        let main = cgroup.main().to_path_buf();
        fs::remove_dir_all(&root).unwrap();
        assert_eq!(
            usage,
            Usage {
                user_usec: 7,
                system_usec: 3,
                peak_memory: Some(4096),
                oom_kills: 2,
                pids_limit_hits: 5,
            }
        );
        assert_eq!(main, dir(Controller::Freezer));
    }
}
