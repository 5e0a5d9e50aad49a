//! Reading and writing cgroup files, shared by both backends: errors that
//! carry the operation and the path, flat-keyed files, process lists and
//! removal of a cgroup tree.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use nix::unistd::Pid;

use super::CgroupError;

/// Makes a `map_err` closure for a failed `operation` on `path`.
pub(super) fn io(
    operation: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> CgroupError {
    let path = path.to_path_buf();
    move |source| CgroupError::Io {
        operation,
        path,
        source,
    }
}

/// Writes `value` to a cgroup file.
pub(super) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(io("writing", path))
}

/// A cgroup file's text, or `None` where the kernel does not offer it.
pub(super) fn read(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok()
}

/// A file holding one number.
pub(super) fn number(path: &Path) -> Option<u64> {
    read(path).and_then(|t| t.trim().parse().ok())
}

/// The value of `key` in a flat-keyed file (`key value` lines).
pub(super) fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The value of `key` in the flat-keyed file at `path`, 0 when absent.
pub(super) fn keyed_file(path: &Path, key: &str) -> u64 {
    read(path).and_then(|t| keyed(&t, key)).unwrap_or(0)
}

/// Adds the processes of the cgroup `dir` and of its sub-cgroups to `pids`.
pub(super) fn collect_processes(dir: &Path, pids: &mut Vec<Pid>) {
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
pub(super) fn remove_cgroup_tree(dir: &Path) -> Result<(), CgroupError> {
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
}
