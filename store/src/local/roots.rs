//! The garbage collector's roots, found as Nix finds them: symlinks under
//! `<state>/gcroots` and `<state>/profiles` (direct, or indirect through a
//! link such as `nix-build`'s `result`), files there named after a store
//! path, the temporary roots of running Nix and hermetic processes
//! (`<state>/temproots/<pid>`), and runtime roots: store paths that
//! running processes use (executable, working directory, open files,
//! mappings, environment) and a few kernel settings.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::error::{StoreError, io_err};
use crate::layout::StoreLayout;
use crate::local::LocalStore;
use crate::path::StorePath;

/// Each root's store path, with the places that hold it (a link's path,
/// `{temp:<pid>}`, a `/proc` file, or `{censored}`).
pub type Roots = BTreeMap<StorePath, BTreeSet<String>>;

/// What untrusted clients see instead of where a runtime or temporary
/// root comes from (Nix's word).
pub const CENSORED: &str = "{censored}";

impl LocalStore {
    /// Every root of the store. With `censor`, where runtime and temporary
    /// roots come from is hidden, as Nix hides it from untrusted clients.
    pub fn find_roots(&self, censor: bool) -> Result<Roots, StoreError> {
        let mut roots = self.find_roots_but_temporary(censor)?;
        self.find_temp_roots(censor, &mut roots)?;
        Ok(roots)
    }

    /// The permanent roots (links and files under `gcroots` and
    /// `profiles`) and the runtime roots.
    pub fn find_roots_but_temporary(&self, censor: bool) -> Result<Roots, StoreError> {
        let mut roots = Roots::new();
        let state = &self.layout.state_dir;
        self.find_link_roots(&state.join("gcroots"), &mut roots)?;
        self.find_link_roots(&state.join("profiles"), &mut roots)?;
        self.find_runtime_roots(censor, &mut roots)?;
        Ok(roots)
    }

    /// The temporary roots of running processes.
    pub fn find_temporary_roots(&self, censor: bool) -> Result<Roots, StoreError> {
        let mut roots = Roots::new();
        self.find_temp_roots(censor, &mut roots)?;
        Ok(roots)
    }

    /// Makes `link` (a symlink outside the store, such as `nix-build`'s
    /// `result`) an indirect root: `<state>/gcroots/auto/<base32 SHA-1 of
    /// its path>` points at it, as Nix's `addIndirectRoot` makes it.
    pub fn add_indirect_root(&self, link: &Path) -> Result<(), StoreError> {
        let mut hasher = crate::hash::AnyHasher::new(crate::hash::HashAlgo::Sha1);
        std::io::Write::write_all(&mut hasher, link.as_os_str().as_encoded_bytes())
            .expect("hashing does not fail");
        let auto = self.layout.state_dir.join("gcroots/auto");
        fs::create_dir_all(&auto).map_err(io_err("create directory", &auto))?;
        let root = auto.join(hasher.finish().to_base32());
        let temp = auto.join(format!(".tmp-{}", crate::pending::unique_id()));
        std::os::unix::fs::symlink(link, &temp).map_err(io_err("create the root", &temp))?;
        fs::rename(&temp, &root).map_err(|e| {
            let _ = fs::remove_file(&temp);
            io_err("rename the root into place", &root)(e)
        })
    }

    /// Makes `gc_root` (an absolute path outside the store) a symlink to
    /// `path` and an indirect root, as Nix's `addPermRoot` does for
    /// `--add-root` and profiles: `path` is a temporary root first, and a
    /// file in the way that is not a link into the store is left alone.
    /// Returns the root's path, `.` and `..` taken out.
    pub fn add_perm_root(&self, path: &StorePath, gc_root: &Path) -> Result<PathBuf, StoreError> {
        self.add_temp_root(path)?;
        let gc_root = make_root_link(&self.layout, path, gc_root)?;
        self.add_indirect_root(&gc_root)?;
        Ok(gc_root)
    }

    /// The valid store path `target` lies in, if any.
    fn root_target(&self, target: &Path) -> Result<Option<StorePath>, StoreError> {
        match self.layout.parse_user_path(target) {
            Ok(path) if self.is_valid(&path)? => Ok(Some(path)),
            Ok(_) => {
                tracing::info!("skipping invalid root '{}'", target.display());
                Ok(None)
            }
            Err(_) => Ok(None),
        }
    }

    fn in_store(&self, target: &Path) -> bool {
        in_store(&self.layout, target)
    }

    /// The roots under `path`: a directory is searched; a symlink into the
    /// store is a root; a symlink elsewhere is an indirect root when what
    /// it names is itself a symlink into the store (a stale one under
    /// `gcroots/auto` is removed, as Nix does); a file named after a valid
    /// store path is a root.
    fn find_link_roots(&self, path: &Path, roots: &mut Roots) -> Result<(), StoreError> {
        let meta = match fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if unreadable(&e) => return Ok(()),
            Err(e) => return Err(io_err("inspect the root", path)(e)),
        };
        let kind = meta.file_type();
        if kind.is_dir() {
            let entries = match fs::read_dir(path) {
                Ok(entries) => entries,
                Err(e) if unreadable(&e) => return Ok(()),
                Err(e) => return Err(io_err("read the roots directory", path)(e)),
            };
            let mut names: Vec<PathBuf> =
                entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            names.sort();
            for entry in names {
                self.find_link_roots(&entry, roots)?;
            }
        } else if kind.is_symlink() {
            let Ok(target) = fs::read_link(path) else {
                return Ok(());
            };
            if self.in_store(&target) {
                if let Some(store_path) = self.root_target(&target)? {
                    add(roots, store_path, path.display().to_string());
                }
                return Ok(());
            }
            // An indirect root: a link to a link (a `result`) into the store.
            let target = path.parent().unwrap_or(Path::new("/")).join(target);
            match fs::symlink_metadata(&target) {
                Err(_) => {
                    let auto = self.layout.state_dir.join("gcroots/auto");
                    if path.starts_with(&auto) {
                        tracing::info!(
                            "removing stale link from '{}' to '{}'",
                            path.display(),
                            target.display()
                        );
                        let _ = fs::remove_file(path);
                    }
                }
                Ok(meta) if meta.file_type().is_symlink() => {
                    if let Ok(target2) = fs::read_link(&target)
                        && self.in_store(&target2)
                        && let Some(store_path) = self.root_target(&target2)?
                    {
                        add(roots, store_path, target.display().to_string());
                    }
                }
                Ok(_) => {}
            }
        } else if kind.is_file() || kind.is_fifo() {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if let Ok(store_path) = StorePath::from_base_name(&name)
                && self.is_valid(&store_path)?
            {
                add(roots, store_path, path.display().to_string());
            }
        }
        Ok(())
    }

    /// Store paths running processes use, and those the kernel will run.
    fn find_runtime_roots(&self, censor: bool, roots: &mut Roots) -> Result<(), StoreError> {
        let mut unchecked: BTreeMap<PathBuf, BTreeSet<String>> = BTreeMap::new();
        let mut note = |target: PathBuf, from: String| {
            unchecked.entry(target).or_default().insert(from);
        };
        let proc_entries = fs::read_dir("/proc").map_err(io_err("read", Path::new("/proc")))?;
        for entry in proc_entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            for link in ["exe", "cwd"] {
                let file = format!("/proc/{pid}/{link}");
                if let Ok(target) = fs::read_link(&file) {
                    note(target, file);
                }
            }
            if let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) {
                for fd in fds.flatten() {
                    let file = fd.path();
                    if let Ok(target) = fs::read_link(&file) {
                        note(target, file.display().to_string());
                    }
                }
            }
            let maps = format!("/proc/{pid}/maps");
            if let Ok(text) = fs::read_to_string(&maps) {
                for line in text.lines() {
                    // The sixth field is the mapped file's path.
                    if let Some(file) = line.split_whitespace().nth(5)
                        && file.starts_with('/')
                    {
                        note(PathBuf::from(file), maps.clone());
                    }
                }
            }
            let environ = format!("/proc/{pid}/environ");
            if let Ok(bytes) = fs::read(&environ) {
                for found in self.store_paths_in(&bytes) {
                    note(found, environ.clone());
                }
            }
        }
        for file in [
            "/proc/sys/kernel/modprobe",
            "/proc/sys/kernel/fbsplash",
            "/proc/sys/kernel/poweroff_cmd",
        ] {
            if let Ok(text) = fs::read_to_string(file) {
                note(PathBuf::from(text.trim_end_matches('\n')), file.to_owned());
            }
        }
        for (target, from) in unchecked {
            if !self.in_store(&target) {
                continue;
            }
            let Ok(path) = self.layout.parse_user_path(&target) else {
                continue;
            };
            if !self.is_valid(&path)? {
                continue;
            }
            if censor {
                add(roots, path, CENSORED.to_owned());
            } else {
                for from in from {
                    add(roots, path.clone(), from);
                }
            }
        }
        Ok(())
    }

    /// The store paths named in `bytes` (a process's environment): the
    /// store directory, a slash, then a name's characters.
    fn store_paths_in(&self, bytes: &[u8]) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let dirs = [
            self.layout.store_dir.as_str().as_bytes().to_vec(),
            self.layout
                .real_store_dir
                .as_os_str()
                .as_encoded_bytes()
                .to_vec(),
        ];
        for mut prefix in dirs {
            prefix.push(b'/');
            let mut at = 0;
            while let Some(offset) = find(&bytes[at..], &prefix) {
                let start = at + offset;
                let name_start = start + prefix.len();
                let name_len = bytes[name_start..]
                    .iter()
                    .take_while(|b| b.is_ascii_alphanumeric() || b"+-._?=".contains(b))
                    .count();
                if name_len > 0 {
                    found.push(PathBuf::from(
                        String::from_utf8_lossy(&bytes[start..name_start + name_len]).into_owned(),
                    ));
                }
                at = name_start + name_len;
            }
        }
        found
    }

    /// The temporary roots of running processes: `<state>/temproots/<pid>`,
    /// store paths each ended by a NUL. A file whose process is gone (its
    /// lock can be taken) is removed, as Nix does.
    fn find_temp_roots(&self, censor: bool, roots: &mut Roots) -> Result<(), StoreError> {
        let dir = self.layout.state_dir.join("temproots");
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if unreadable(&e) => return Ok(()),
            Err(e) => return Err(io_err("read the temporary roots directory", &dir)(e)),
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            let file = match fs::OpenOptions::new().read(true).write(true).open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("open the temporary roots file", &path)(e)),
            };
            match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
                Ok(mut locked) => {
                    // Its process is gone: nothing it named is in use.
                    tracing::info!("removing stale temporary roots file '{}'", path.display());
                    let _ = fs::remove_file(&path);
                    let _ = std::io::Write::write_all(&mut *locked, b"d");
                    continue;
                }
                Err((file, _)) => {
                    let contents = std::io::read_to_string(&file)
                        .map_err(io_err("read the temporary roots file", &path))?;
                    let from = if censor {
                        CENSORED.to_owned()
                    } else {
                        // A daemon connection's file is `<pid>-<n>`.
                        format!("{{temp:{}}}", name.split('-').next().unwrap_or(&name))
                    };
                    for root in contents.split('\0').filter(|r| !r.is_empty()) {
                        if let Ok(store_path) = self.layout.store_dir.parse(root) {
                            add(roots, store_path, from.clone());
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Whether `target` lies in the store directory of `layout` (either name).
fn in_store(layout: &StoreLayout, target: &Path) -> bool {
    target.starts_with(layout.store_dir.as_str()) || target.starts_with(&layout.real_store_dir)
}

/// Makes `gc_root` a symlink to `path` as Nix's `addPermRoot` does,
/// replacing a symlink into the store that is there (made under a
/// temporary name and renamed into place), and returns it, lexically
/// normal; refused inside the store and over anything else. The caller
/// registers it as an indirect root, with its store or through a daemon.
pub fn make_root_link(
    layout: &StoreLayout,
    path: &StorePath,
    gc_root: &Path,
) -> Result<PathBuf, StoreError> {
    let gc_root = lexically_normal(gc_root);
    if in_store(layout, &gc_root) {
        return Err(StoreError::RootInStore(gc_root));
    }
    if let Ok(meta) = fs::symlink_metadata(&gc_root) {
        let into_store = meta.file_type().is_symlink()
            && fs::read_link(&gc_root).is_ok_and(|target| in_store(layout, &target));
        if !into_store {
            return Err(StoreError::RootInTheWay(gc_root));
        }
    }
    if let Some(parent) = gc_root.parent() {
        fs::create_dir_all(parent).map_err(io_err("create directory", parent))?;
    }
    let temp = PathBuf::from(format!(
        "{}.tmp-{}",
        gc_root.display(),
        crate::pending::unique_id()
    ));
    let target = layout.store_dir.print(path);
    std::os::unix::fs::symlink(&target, &temp).map_err(io_err("create the root", &temp))?;
    fs::rename(&temp, &gc_root).map_err(|e| {
        let _ = fs::remove_file(&temp);
        io_err("rename the root into place", &gc_root)(e)
    })?;
    Ok(gc_root)
}

fn add(roots: &mut Roots, path: StorePath, from: String) {
    roots.entry(path).or_default().insert(from);
}

/// A failure Nix passes over when looking for roots.
fn unreadable(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EACCES | libc::ENOENT | libc::ENOTDIR)
    )
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `path` with `.` and `..` taken out without looking at the filesystem
/// (Nix's `canonPath`).
fn lexically_normal(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut normal = PathBuf::from("/");
    for part in path.components() {
        match part {
            Component::Normal(name) => normal.push(name),
            Component::ParentDir => {
                normal.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    normal
}
