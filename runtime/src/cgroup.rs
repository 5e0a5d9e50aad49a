//! A cgroup of its own for each build (SPEC D7, B80, B81): where the host
//! has cgroup v2, one v2 cgroup, ended with `cgroup.kill` where the kernel
//! has it; on hybrid hosts (v1 controllers, an empty v2 hierarchy), one
//! cgroup in each of the v1 freezer, pids, memory and cpuacct hierarchies,
//! ended by freezing it and killing what is in it.
//!
//! A build's cgroups are recorded under `<state>/cgroups/<uid>` while they
//! exist, so that a supervisor killed mid-build leaves a record the next
//! start reads to remove them.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, TMPFS_MAGIC, statfs};
use nix::unistd::Pid;
use serde::Serialize;

/// The directory below each hierarchy's root that holds hermetic's builds.
const BASE: &str = "hermetic";

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
    const ALL: [Controller; 4] = [
        Controller::Freezer,
        Controller::Pids,
        Controller::Memory,
        Controller::Cpuacct,
    ];

    fn name(self) -> &'static str {
        match self {
            Controller::Freezer => "freezer",
            Controller::Pids => "pids",
            Controller::Memory => "memory",
            Controller::Cpuacct => "cpuacct",
        }
    }
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

/// Limits on one build (beyond Nix: `max-build-pids`, `max-build-memory`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Most processes (and threads) at once.
    pub pids: Option<u64>,
    /// Most memory, in bytes (no swap beyond it).
    pub memory: Option<u64>,
}

/// What a build used, and which limits stopped it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Usage {
    /// CPU time in user mode, in microseconds.
    pub user_usec: u64,
    /// CPU time in kernel mode, in microseconds.
    pub system_usec: u64,
    /// The most memory it held at once, in bytes, where the kernel says.
    pub peak_memory: Option<u64>,
    /// Processes the kernel killed for going over the memory limit.
    pub oom_kills: u64,
    /// Times a fork failed because of the pids limit.
    pub pids_limit_hits: u64,
}

/// A cgroup operation that failed, with the path.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No cgroup filesystem to use.
    #[error("cannot determine the cgroups file system: {0}")]
    NoCgroups(String),
    /// A limit needs a controller the host does not offer.
    #[error("'{setting}' needs the cgroup {controller} controller, which this host does not offer")]
    NoController {
        /// The setting.
        setting: &'static str,
        /// The controller.
        controller: &'static str,
    },
    /// A file operation failed.
    #[error("{operation} '{path}'")]
    Io {
        /// What.
        operation: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The cgroup did not empty (Nix's text).
    #[error("cannot kill cgroup '{0}'")]
    Unkillable(PathBuf),
}

fn io(operation: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError {
    let path = path.to_path_buf();
    move |source| CgroupError::Io {
        operation,
        path,
        source,
    }
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(io("writing", path))
}

fn read(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok()
}

/// The value of `key` in a flat-keyed file (`key value` lines).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

impl CgroupLayout {
    /// Looks at `/sys/fs/cgroup`: pure v2, or v1 controllers (a hybrid host,
    /// whose empty v2 hierarchy has no controllers to limit a build with).
    pub fn detect() -> Result<CgroupLayout, CgroupError> {
        let root = Path::new("/sys/fs/cgroup");
        let kind = statfs(root)
            .map_err(|e| CgroupError::NoCgroups(format!("/sys/fs/cgroup: {e}")))?
            .filesystem_type();
        if kind == CGROUP2_SUPER_MAGIC {
            return Ok(CgroupLayout::V2 { root: root.into() });
        }
        if kind == TMPFS_MAGIC {
            let hierarchies = v1_hierarchies();
            if hierarchies
                .first()
                .is_some_and(|(c, _)| *c == Controller::Freezer)
            {
                return Ok(CgroupLayout::V1 { hierarchies });
            }
        }
        Err(CgroupError::NoCgroups(
            "no cgroup v2 at /sys/fs/cgroup and no v1 freezer hierarchy".into(),
        ))
    }

    /// The controllers a v2 hierarchy offers.
    fn v2_controllers(root: &Path) -> Vec<String> {
        read(&root.join("cgroup.controllers"))
            .map(|t| t.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// Whether the host can limit processes and memory.
    pub fn offers(&self, controller: Controller) -> bool {
        match self {
            CgroupLayout::V2 { root } => Self::v2_controllers(root)
                .iter()
                .any(|c| c == controller.name()),
            CgroupLayout::V1 { hierarchies } => hierarchies.iter().any(|(c, _)| *c == controller),
        }
    }
}

/// The v1 hierarchies of the controllers hermetic uses, from mountinfo,
/// the freezer first.
fn v1_hierarchies() -> Vec<(Controller, PathBuf)> {
    let mountinfo = read(Path::new("/proc/self/mountinfo")).unwrap_or_default();
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

/// One build's cgroup(s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildCgroup {
    /// Its name below hermetic's base in each hierarchy.
    pub name: String,
    /// Its directories: one (v2), or one per v1 controller.
    pub dirs: Vec<PathBuf>,
    /// The directory whose `cgroup.procs` lists the build's processes (the
    /// v2 cgroup, or the v1 freezer cgroup).
    main: PathBuf,
    v2: bool,
    /// Where each v1 controller's directory is.
    controllers: Vec<(Controller, PathBuf)>,
}

impl BuildCgroup {
    /// Makes the cgroup `name` with `limits`; with `owner`, the build user
    /// gets the cgroup to manage (B80: directory, `cgroup.procs`,
    /// `cgroup.threads`, `cgroup.subtree_control`), for nested containers.
    /// A leftover cgroup of that name is removed first.
    pub fn create(
        layout: &CgroupLayout,
        name: &str,
        limits: Limits,
        owner: Option<(u32, u32)>,
    ) -> Result<BuildCgroup, CgroupError> {
        let cgroup = BuildCgroup::planned(layout, name);
        cgroup.destroy()?;
        for (setting, controller, wanted) in [
            ("max-build-pids", Controller::Pids, limits.pids.is_some()),
            (
                "max-build-memory",
                Controller::Memory,
                limits.memory.is_some(),
            ),
        ] {
            if wanted && !layout.offers(controller) {
                return Err(CgroupError::NoController {
                    setting,
                    controller: controller.name(),
                });
            }
        }
        match layout {
            CgroupLayout::V2 { root } => {
                let base = root.join(BASE);
                fs::create_dir_all(&base).map_err(io("creating cgroup", &base))?;
                // Let the build cgroups use every controller the host
                // offers (the base holds no processes, so it may).
                let offered = CgroupLayout::v2_controllers(root);
                for parent in [root.as_path(), base.as_path()] {
                    for controller in &offered {
                        let _ = fs::write(
                            parent.join("cgroup.subtree_control"),
                            format!("+{controller}"),
                        );
                    }
                }
                fs::create_dir(&cgroup.main).map_err(io("creating cgroup", &cgroup.main))?;
                if let Some(pids) = limits.pids {
                    write(&cgroup.main.join("pids.max"), &pids.to_string())?;
                }
                if let Some(memory) = limits.memory {
                    write(&cgroup.main.join("memory.max"), &memory.to_string())?;
                    let _ = fs::write(cgroup.main.join("memory.swap.max"), "0");
                }
                if let Some((uid, gid)) = owner {
                    for file in [
                        "",
                        "cgroup.procs",
                        "cgroup.threads",
                        "cgroup.subtree_control",
                    ] {
                        let path = cgroup.main.join(file);
                        std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                            .map_err(io("cannot change ownership of", &path))?;
                    }
                }
            }
            CgroupLayout::V1 { .. } => {
                for (controller, dir) in &cgroup.controllers {
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
                                let _ = fs::write(
                                    dir.join("memory.memsw.limit_in_bytes"),
                                    memory.to_string(),
                                );
                            }
                        }
                        Controller::Freezer | Controller::Cpuacct => {}
                    }
                }
            }
        }
        Ok(cgroup)
    }

    /// The cgroup `name` of `layout`, where it would be (nothing is
    /// created).
    pub fn planned(layout: &CgroupLayout, name: &str) -> BuildCgroup {
        match layout {
            CgroupLayout::V2 { root } => {
                let dir = root.join(BASE).join(name);
                BuildCgroup {
                    name: name.to_string(),
                    dirs: vec![dir.clone()],
                    main: dir,
                    v2: true,
                    controllers: Vec::new(),
                }
            }
            CgroupLayout::V1 { hierarchies } => {
                let controllers: Vec<(Controller, PathBuf)> = hierarchies
                    .iter()
                    .map(|(c, mount)| (*c, mount.join(BASE).join(name)))
                    .collect();
                BuildCgroup {
                    name: name.to_string(),
                    dirs: controllers.iter().map(|(_, d)| d.clone()).collect(),
                    main: controllers[0].1.clone(),
                    v2: false,
                    controllers,
                }
            }
        }
    }

    /// Moves process `pid` into the cgroup(s).
    pub fn attach(&self, pid: Pid) -> std::io::Result<()> {
        for dir in &self.dirs {
            fs::write(dir.join("cgroup.procs"), pid.as_raw().to_string())?;
        }
        Ok(())
    }

    /// The processes in the cgroup, sub-cgroups included.
    pub fn processes(&self) -> Vec<Pid> {
        let mut pids = Vec::new();
        collect_processes(&self.main, &mut pids);
        pids
    }

    /// Kills every process of the build and waits until none is left.
    pub fn kill(&self) -> Result<(), CgroupError> {
        // An empty cgroup stays empty: only its own processes could add one.
        if !self.main.exists() || self.processes().is_empty() {
            return Ok(());
        }
        let kill_file = self.main.join("cgroup.kill");
        if self.v2 && kill_file.exists() {
            write(&kill_file, "1")?;
        } else {
            self.freeze(true);
            for pid in self.processes() {
                let _ = kill(pid, Signal::SIGKILL);
            }
            self.freeze(false);
        }
        // Wait for the kernel to finish them off; kill stragglers (forked
        // between listing and freezing) on the way (B80).
        let mut pause = Duration::from_millis(1);
        for _ in 0..20 {
            let left = self.processes();
            if left.is_empty() {
                return Ok(());
            }
            for pid in left {
                tracing::debug!(pid = pid.as_raw(), "killing stray builder process");
                let _ = kill(pid, Signal::SIGKILL);
            }
            tracing::debug!(ms = pause.as_millis() as u64, cgroup = %self.main.display(), "waiting for the cgroup to become empty");
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(200));
        }
        Err(CgroupError::Unkillable(self.main.clone()))
    }

    fn freeze(&self, frozen: bool) {
        if self.v2 {
            let _ = fs::write(
                self.main.join("cgroup.freeze"),
                if frozen { "1" } else { "0" },
            );
            return;
        }
        let state = self.main.join("freezer.state");
        let wanted = if frozen { "FROZEN" } else { "THAWED" };
        let _ = fs::write(&state, wanted);
        for _ in 0..100 {
            if read(&state).is_some_and(|s| s.trim() == wanted) {
                return;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// What the build used, and which limits it ran into.
    pub fn usage(&self) -> Usage {
        let mut usage = Usage::default();
        if self.v2 {
            if let Some(stat) = read(&self.main.join("cpu.stat")) {
                usage.user_usec = keyed(&stat, "user_usec").unwrap_or(0);
                usage.system_usec = keyed(&stat, "system_usec").unwrap_or(0);
            }
            usage.peak_memory =
                read(&self.main.join("memory.peak")).and_then(|t| t.trim().parse().ok());
            usage.oom_kills = read(&self.main.join("memory.events"))
                .and_then(|t| keyed(&t, "oom_kill"))
                .unwrap_or(0);
            usage.pids_limit_hits = read(&self.main.join("pids.events"))
                .and_then(|t| keyed(&t, "max"))
                .unwrap_or(0);
            return usage;
        }
        for (controller, dir) in &self.controllers {
            match controller {
                Controller::Cpuacct => {
                    let ns =
                        |file| read(&dir.join(file)).and_then(|t| t.trim().parse::<u64>().ok());
                    usage.user_usec = ns("cpuacct.usage_user").unwrap_or(0) / 1000;
                    usage.system_usec = ns("cpuacct.usage_sys").unwrap_or(0) / 1000;
                }
                Controller::Memory => {
                    usage.peak_memory = read(&dir.join("memory.max_usage_in_bytes"))
                        .and_then(|t| t.trim().parse().ok());
                    usage.oom_kills = read(&dir.join("memory.oom_control"))
                        .and_then(|t| keyed(&t, "oom_kill"))
                        .unwrap_or(0);
                }
                Controller::Pids => {
                    usage.pids_limit_hits = read(&dir.join("pids.events"))
                        .and_then(|t| keyed(&t, "max"))
                        .unwrap_or(0);
                }
                Controller::Freezer => {}
            }
        }
        usage
    }

    /// Kills what is left and removes the cgroup(s), sub-cgroups the build
    /// made included.
    pub fn destroy(&self) -> Result<(), CgroupError> {
        self.kill()?;
        for dir in &self.dirs {
            remove_cgroup_tree(dir)?;
        }
        Ok(())
    }
}

fn collect_processes(dir: &Path, pids: &mut Vec<Pid>) {
    if let Some(text) = read(&dir.join("cgroup.procs")) {
        pids.extend(
            text.lines()
                .filter_map(|l| l.trim().parse().ok())
                .map(Pid::from_raw),
        );
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                collect_processes(&entry.path(), pids);
            }
        }
    }
}

/// Removes a cgroup directory and the cgroups below it, deepest first.
fn remove_cgroup_tree(dir: &Path) -> Result<(), CgroupError> {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&entry.path())?;
            }
        }
    }
    match fs::remove_dir(dir) {
        Ok(()) => {
            tracing::debug!(cgroup = %dir.display(), "deleting cgroup");
            Ok(())
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("deleting cgroup", dir)(e)),
    }
}

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
        .dirs
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
            let leftover = BuildCgroup {
                name: String::new(),
                dirs: vec![dir.clone()],
                main: dir.clone(),
                v2: dir.join("cgroup.kill").exists() || !dir.join("freezer.state").exists(),
                controllers: Vec::new(),
            };
            if let Err(error) = leftover.destroy() {
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
    fn keyed_files_are_read() {
        let text = "usage_usec 10\nuser_usec 7\nsystem_usec 3\n";
        assert_eq!(keyed(text, "user_usec"), Some(7));
        assert_eq!(keyed(text, "system_usec"), Some(3));
        assert_eq!(keyed(text, "nothing"), None);
        assert_eq!(
            keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n", "oom_kill"),
            Some(2)
        );
    }

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
