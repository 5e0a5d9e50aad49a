//! Layout → [`MountPlan`]: what the sandbox holds, turned into ordered steps.
//!
//! The caller (the runtime) gathers the facts about the host first — what
//! each source is (directory, file, symlink), which `/dev` nodes exist — and
//! describes the sandbox in a [`Layout`]. [`Layout::plan`] is pure: it checks
//! the entries against each other and orders the steps so that
//!
//! * every entry the plan creates lies in a layer the plan mounted itself (the
//!   root tmpfs, the store's lower tmpfs, or the sandbox's own host scratch
//!   directory), never inside a bind mount of a host path, and never below a
//!   symlink it created: creation cannot reach the host's files;
//! * all entries of a layer are created before anything is mounted on them.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::plan::{MountPlan, Step};
use crate::sandbox_path::{SandboxPathError, normalize_target};

/// What a host path is, as `lstat` found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// A directory: bound recursively.
    Directory,
    /// Anything else that is not a symlink (regular file, device node,
    /// socket): bound onto an empty file.
    File,
    /// A symbolic link: recreated with the same target, not followed.
    Symlink {
        /// The link's target, as read.
        target: PathBuf,
    },
}

/// A host path and what it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Source {
    /// The host path.
    pub path: PathBuf,
    /// What it is.
    pub kind: SourceKind,
}

/// A store path that the sandbox holds at `<store dir>/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreInput {
    /// Its base name (`<hash>-<name>`).
    pub name: String,
    /// Where it is on the host (in the real store).
    pub source: Source,
}

/// A `sandbox-paths` entry whose source exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BindEntry {
    /// Where it appears inside the sandbox, as written.
    pub target: PathBuf,
    /// The host source.
    pub source: Source,
}

/// How writes to the store directory reach the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "kind",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case"
)]
pub enum StoreLayer {
    /// An overlay: mount points in a tmpfs (off the host disk), writes in
    /// `upper` (on the real store's filesystem).
    Overlay {
        /// Receives what the builder writes to the store directory.
        upper: PathBuf,
        /// overlayfs's work directory, beside `upper`.
        work: PathBuf,
        /// Inside a user namespace overlayfs needs `userxattr`.
        userxattr: bool,
    },
    /// The host directory bound as the store directory, mount points made
    /// in it (for kernels or filesystems where the overlay cannot be used).
    Direct {
        /// The host directory.
        dir: PathBuf,
    },
}

/// `/dev` as the host offers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DevLayout {
    /// Device nodes to bind: name under `/dev` and host path.
    pub nodes: Vec<(String, PathBuf)>,
    /// Mount a tmpfs on `/dev/shm` with these options (the host has one).
    pub shm_options: Option<String>,
    /// Mount a new devpts instance (the host has `/dev/pts/ptmx`).
    pub devpts: bool,
}

/// Everything the sandbox's filesystem holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Layout {
    /// Host directory the sandbox root (a tmpfs) is mounted on.
    pub root_mount_point: PathBuf,
    /// Mount options of the root tmpfs (mode, owner, size).
    pub root_options: String,
    /// The store directory inside the sandbox (`/nix/store`).
    pub store_dir: PathBuf,
    /// How the store directory is made.
    pub store: StoreLayer,
    /// The input paths.
    pub inputs: Vec<StoreInput>,
    /// The `sandbox-paths` entries whose sources exist.
    pub binds: Vec<BindEntry>,
    /// The build directory inside the sandbox (`/build`).
    pub build_dir: PathBuf,
    /// The host directory bound there.
    pub build_dir_source: PathBuf,
    /// The host directory bound at `/tmp`.
    pub tmp_source: PathBuf,
    /// Files of `/etc`: name and contents.
    pub etc_files: Vec<(String, String)>,
    /// `/dev`.
    pub dev: DevLayout,
    /// Mount a fresh `/sys` (uid-range builds, B46).
    pub sysfs: bool,
    /// Give `/etc` and its files to these host ids and leave it writable
    /// (uid-range builds, B19); otherwise `/etc` becomes 0555 (B37).
    pub etc_owner: Option<(u32, u32)>,
}

/// Why a layout cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// A `sandbox-paths` target is refused by Nix's rules.
    #[error(transparent)]
    SandboxPath(#[from] SandboxPathError),
    /// A file target written with a trailing slash (Nix's text).
    #[error("creating {kind} '{path}': No such file or directory")]
    TrailingSlash {
        /// "regular file" or "symlink".
        kind: &'static str,
        /// The target as written.
        path: String,
    },
    /// A target inside another bind mount, a symlink or a file.
    #[error("sandbox path '{inner}' lies inside '{outer}', which is {what}; list only one of them")]
    Nested {
        /// The inner target.
        inner: String,
        /// The entry it lies in.
        outer: String,
        /// What that entry is.
        what: &'static str,
    },
    /// Two entries want the same place.
    #[error("sandbox path '{path}' is given twice, with different sources")]
    Conflict {
        /// The target.
        path: String,
    },
    /// A target that would hide what the sandbox itself mounts there.
    #[error("sandbox path '{path}' would hide {what}")]
    Hides {
        /// The target.
        path: String,
        /// What it would hide.
        what: &'static str,
    },
    /// The store directory lies inside the build directory (Nix's text).
    #[error("`sandbox-build-dir` must not contain the storeDir")]
    StoreInBuildDir,
    /// A store or build directory that is not an absolute, normal path.
    #[error("'{0}' must be an absolute path without '.' or '..'")]
    BadDirectory(String),
    /// An input name that is not a single path component.
    #[error("'{0}' is not the name of a store path")]
    BadInputName(String),
}

/// How an entry is made.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    /// A plain directory.
    Dir,
    /// A directory that something is mounted on.
    MountDir(Mount),
    /// An empty file that a host file is bound onto.
    MountFile(PathBuf),
    /// A symbolic link.
    Symlink(PathBuf),
    /// A file with contents.
    File(String),
}

/// What is mounted on a [`Node::MountDir`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mount {
    Bind {
        source: PathBuf,
        recursive: bool,
    },
    Proc,
    Sysfs,
    Tmpfs(String),
    Devpts(String),
    /// The store directory's layer (mounted separately).
    Store,
}

impl Mount {
    /// The step that mounts it on `target` (the store's layer has its own).
    fn step(&self, target: PathBuf) -> Option<Step> {
        Some(match self {
            Mount::Bind { source, recursive } => Step::Bind {
                source: source.clone(),
                target,
                recursive: *recursive,
                layer: false,
            },
            Mount::Proc => Step::Proc { target },
            Mount::Sysfs => Step::Sysfs { target },
            Mount::Tmpfs(options) => Step::Tmpfs {
                target,
                options: options.clone(),
                layer: false,
            },
            Mount::Devpts(options) => Step::Devpts {
                target,
                options: options.clone(),
            },
            Mount::Store => return None,
        })
    }
}

/// Where an insertion comes from: the user's `sandbox-paths` win over the
/// sandbox's own skeleton, which yields silently where they cover it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    User,
    Skeleton,
}

/// The entries of one creation layer, by their path inside the sandbox.
///
/// Keyed by the path's bytes: byte order puts every directory before the
/// entries inside it (a prefix sorts first), and comparing bytes is much
/// cheaper than comparing `Path` components, which matters with thousands
/// of inputs.
#[derive(Debug)]
struct Tree {
    /// Where the layer is mounted inside the sandbox.
    root: Vec<u8>,
    nodes: BTreeMap<Vec<u8>, Node>,
}

fn bytes(path: &Path) -> &[u8] {
    path.as_os_str().as_encoded_bytes()
}

fn shown(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

impl Tree {
    fn new(root: &Path) -> Tree {
        Tree {
            root: bytes(root).to_vec(),
            nodes: BTreeMap::new(),
        }
    }

    /// Inserts `node` at `path` (inside the sandbox, below the layer's
    /// root), creating missing parents. Returns `Ok(false)` when a skeleton
    /// entry yields to a user's.
    fn insert(&mut self, path: &Path, node: Node, origin: Origin) -> Result<bool, LayoutError> {
        let path = bytes(path);
        // Every '/' after the layer's root ends an ancestor.
        let start = if self.root == b"/" {
            1
        } else {
            self.root.len() + 1
        };
        for end in (start..path.len()).filter(|&i| path[i] == b'/') {
            let ancestor = &path[..end];
            match self.nodes.get(ancestor) {
                None => {
                    self.nodes.insert(ancestor.to_vec(), Node::Dir);
                }
                Some(Node::Dir) => {}
                Some(other) => {
                    if origin == Origin::Skeleton {
                        return Ok(false);
                    }
                    let what = match other {
                        Node::MountDir(_) => "a mount point",
                        Node::MountFile(_) | Node::File(_) => "a file",
                        Node::Symlink(_) => "a symlink",
                        Node::Dir => unreachable!(),
                    };
                    return Err(LayoutError::Nested {
                        inner: shown(path),
                        outer: shown(ancestor),
                        what,
                    });
                }
            }
        }
        match self.nodes.get(path) {
            None => {
                self.nodes.insert(path.to_vec(), node);
                Ok(true)
            }
            Some(existing) if *existing == node => Ok(true),
            Some(Node::Dir) if !matches!(node, Node::Dir) => match self.first_child(path) {
                None => {
                    self.nodes.insert(path.to_vec(), node);
                    Ok(true)
                }
                Some(_) if origin == Origin::Skeleton => Ok(false),
                Some(child) => Err(LayoutError::Nested {
                    inner: shown(child),
                    outer: shown(path),
                    what: "a mount point",
                }),
            },
            Some(_) if origin == Origin::Skeleton => Ok(false),
            Some(_) => Err(LayoutError::Conflict { path: shown(path) }),
        }
    }

    /// The first entry below `path`, if any.
    fn first_child(&self, path: &[u8]) -> Option<&[u8]> {
        let mut prefix = path.to_vec();
        prefix.push(b'/');
        self.nodes
            .range(prefix.clone()..)
            .next()
            .map(|(p, _)| p.as_slice())
            .filter(|p| p.starts_with(&prefix))
    }

    fn get(&self, path: &Path) -> Option<&Node> {
        self.nodes.get(bytes(path))
    }
}

const DIR_MODE: u32 = 0o755;
const FILE_MODE: u32 = 0o644;

fn check_directory(dir: &Path) -> Result<(), LayoutError> {
    match normalize_target(dir) {
        Ok(normal) if normal == dir && normal.as_os_str() != "/" => Ok(()),
        _ => Err(LayoutError::BadDirectory(dir.display().to_string())),
    }
}

fn node_for(source: &Source) -> Node {
    match &source.kind {
        SourceKind::Directory => Node::MountDir(Mount::Bind {
            source: source.path.clone(),
            recursive: true,
        }),
        SourceKind::File => Node::MountFile(source.path.clone()),
        SourceKind::Symlink { target } => Node::Symlink(target.clone()),
    }
}

impl Layout {
    /// Orders the layout into a [`MountPlan`], refusing entries that collide.
    pub fn plan(&self) -> Result<MountPlan, LayoutError> {
        check_directory(&self.store_dir)?;
        check_directory(&self.build_dir)?;
        if self.store_dir.starts_with(&self.build_dir) {
            return Err(LayoutError::StoreInBuildDir);
        }
        let mut root = Tree::new(Path::new("/"));
        let mut store = Tree::new(&self.store_dir);

        // The inputs, then the user's sandbox paths: they win over the
        // skeleton. Sorted, so that an outer path is met before the paths
        // inside it.
        for input in &self.inputs {
            if input.name.is_empty() || input.name.contains('/') || input.name.starts_with('.') {
                return Err(LayoutError::BadInputName(input.name.clone()));
            }
            let path = self.store_dir.join(&input.name);
            store.insert(&path, node_for(&input.source), Origin::User)?;
        }
        let mut binds: Vec<&BindEntry> = self.binds.iter().collect();
        binds.sort_by(|a, b| a.target.cmp(&b.target));
        for bind in binds {
            self.insert_bind(bind, &mut root, &mut store)?;
        }

        // The skeleton.
        root.insert(&self.store_dir, Node::MountDir(Mount::Store), Origin::User)?;
        root.insert(
            &self.build_dir,
            Node::MountDir(Mount::Bind {
                source: self.build_dir_source.clone(),
                recursive: false,
            }),
            Origin::User,
        )?;
        let skeleton = |root: &mut Tree, path: &str, node: Node| {
            root.insert(Path::new(path), node, Origin::Skeleton)
        };
        skeleton(
            &mut root,
            "/tmp",
            Node::MountDir(Mount::Bind {
                source: self.tmp_source.clone(),
                recursive: false,
            }),
        )?;
        let mut etc_created = false;
        for (name, contents) in &self.etc_files {
            let path = Path::new("/etc").join(name);
            etc_created |= root.insert(&path, Node::File(contents.clone()), Origin::Skeleton)?;
        }
        skeleton(&mut root, "/proc", Node::MountDir(Mount::Proc))?;
        if self.sysfs {
            skeleton(&mut root, "/sys", Node::MountDir(Mount::Sysfs))?;
        }
        for (name, host) in &self.dev.nodes {
            let path = Path::new("/dev").join(name);
            root.insert(&path, Node::MountFile(host.clone()), Origin::Skeleton)?;
        }
        for (name, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            let path = Path::new("/dev").join(name);
            root.insert(
                &path,
                Node::Symlink(PathBuf::from(target)),
                Origin::Skeleton,
            )?;
        }
        if self.dev.devpts && root.get(Path::new("/dev/ptmx")).is_none() {
            let options = "newinstance,ptmxmode=0666,mode=0620".to_string();
            if skeleton(
                &mut root,
                "/dev/pts",
                Node::MountDir(Mount::Devpts(options)),
            )? {
                skeleton(
                    &mut root,
                    "/dev/ptmx",
                    Node::Symlink(PathBuf::from("pts/ptmx")),
                )?;
            }
        }
        // B43: /dev/shm is mounted even when /dev comes from the host.
        let dev_bound = matches!(root.get(Path::new("/dev")), Some(Node::MountDir(_)));
        let mut shm_on_bound_dev = None;
        if let Some(options) = &self.dev.shm_options {
            if dev_bound {
                shm_on_bound_dev = Some(options.clone());
            } else {
                skeleton(
                    &mut root,
                    "/dev/shm",
                    Node::MountDir(Mount::Tmpfs(options.clone())),
                )?;
            }
        }

        let mut steps = vec![
            Step::MakePrivate,
            Step::RootTmpfs {
                mount_point: self.root_mount_point.clone(),
                options: self.root_options.clone(),
            },
        ];
        let mut mounts = Vec::new();
        emit(&root, &mut steps, &mut mounts);

        // The store directory's layer, and its entries.
        match &self.store {
            StoreLayer::Overlay {
                upper,
                work,
                userxattr,
            } => {
                steps.push(Step::Tmpfs {
                    target: self.store_dir.clone(),
                    options: "mode=0755".to_string(),
                    layer: true,
                });
                emit(&store, &mut steps, &mut mounts);
                steps.push(Step::Overlay {
                    target: self.store_dir.clone(),
                    upper: upper.clone(),
                    work: work.clone(),
                    userxattr: *userxattr,
                });
            }
            StoreLayer::Direct { dir } => {
                steps.push(Step::Bind {
                    source: dir.clone(),
                    target: self.store_dir.clone(),
                    recursive: false,
                    layer: true,
                });
                emit(&store, &mut steps, &mut mounts);
            }
        }

        steps.extend(mounts);
        if let Some(options) = shm_on_bound_dev {
            steps.push(Step::Tmpfs {
                target: PathBuf::from("/dev/shm"),
                options,
                layer: false,
            });
        }
        match (etc_created, self.etc_owner) {
            (false, _) => {}
            (true, None) => steps.push(Step::Chmod {
                path: PathBuf::from("/etc"),
                mode: 0o555,
            }),
            (true, Some((uid, gid))) => {
                let etc = PathBuf::from("/etc");
                for path in std::iter::once(etc.clone())
                    .chain(self.etc_files.iter().map(|(name, _)| etc.join(name)))
                {
                    steps.push(Step::Chown { path, uid, gid });
                }
            }
        }
        steps.push(Step::PivotRoot);
        Ok(MountPlan { steps })
    }

    fn insert_bind(
        &self,
        bind: &BindEntry,
        root: &mut Tree,
        store: &mut Tree,
    ) -> Result<(), LayoutError> {
        // B45: a /proc source is ignored.
        if bind.source.path.as_os_str() == "/proc" {
            return Ok(());
        }
        let target = normalize_target(&bind.target)?;
        let shown = || bind.target.display().to_string();
        if target.as_os_str() == "/" {
            return Err(SandboxPathError::Escapes(shown()).into());
        }
        let written = bind.target.as_os_str().as_encoded_bytes();
        if written.ends_with(b"/") {
            match bind.source.kind {
                SourceKind::Directory => {}
                SourceKind::File => {
                    return Err(LayoutError::TrailingSlash {
                        kind: "regular file",
                        path: shown(),
                    });
                }
                SourceKind::Symlink { .. } => {
                    return Err(LayoutError::TrailingSlash {
                        kind: "symlink",
                        path: shown(),
                    });
                }
            }
        }
        let hides = |what| LayoutError::Hides {
            path: shown(),
            what,
        };
        if self.store_dir.starts_with(&target) {
            return Err(hides("the store directory"));
        }
        if target.starts_with(&self.build_dir) || self.build_dir.starts_with(&target) {
            return Err(hides("the build directory"));
        }
        if target.starts_with("/proc") {
            return Err(hides("/proc"));
        }
        let node = node_for(&bind.source);
        if target.starts_with(&self.store_dir) {
            store.insert(&target, node, Origin::User)?;
        } else {
            root.insert(&target, node, Origin::User)?;
        }
        Ok(())
    }
}

/// Appends the creation steps of `tree` to `steps`, and the mounts onto its
/// entries to `mounts`.
fn emit(tree: &Tree, steps: &mut Vec<Step>, mounts: &mut Vec<Step>) {
    for (path, node) in &tree.nodes {
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(path));
        match node {
            Node::Dir => steps.push(Step::Mkdir {
                path,
                mode: DIR_MODE,
            }),
            Node::MountDir(mount) => {
                steps.push(Step::Mkdir {
                    path: path.clone(),
                    mode: DIR_MODE,
                });
                mounts.extend(mount.step(path));
            }
            Node::MountFile(source) => {
                steps.push(Step::File {
                    path: path.clone(),
                    mode: FILE_MODE,
                    contents: None,
                });
                mounts.push(Step::Bind {
                    source: source.clone(),
                    target: path,
                    recursive: false,
                    layer: false,
                });
            }
            Node::Symlink(target) => steps.push(Step::Symlink {
                path,
                target: target.clone(),
            }),
            Node::File(contents) => steps.push(Step::File {
                path,
                mode: FILE_MODE,
                contents: Some(contents.clone()),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(path: &str) -> Source {
        Source {
            path: PathBuf::from(path),
            kind: SourceKind::Directory,
        }
    }

    fn file(path: &str) -> Source {
        Source {
            path: PathBuf::from(path),
            kind: SourceKind::File,
        }
    }

    fn bind(target: &str, source: Source) -> BindEntry {
        BindEntry {
            target: PathBuf::from(target),
            source,
        }
    }

    fn layout() -> Layout {
        Layout {
            root_mount_point: PathBuf::from("/s/scratch"),
            root_options: "mode=0750".into(),
            store_dir: PathBuf::from("/nix/store"),
            store: StoreLayer::Overlay {
                upper: PathBuf::from("/s/scratch/store"),
                work: PathBuf::from("/s/scratch/work"),
                userxattr: false,
            },
            inputs: vec![
                StoreInput {
                    name: "aaa-dir".into(),
                    source: dir("/real/store/aaa-dir"),
                },
                StoreInput {
                    name: "bbb-file".into(),
                    source: file("/real/store/bbb-file"),
                },
                StoreInput {
                    name: "ccc-link".into(),
                    source: Source {
                        path: PathBuf::from("/real/store/ccc-link"),
                        kind: SourceKind::Symlink {
                            target: PathBuf::from("aaa-dir/bin"),
                        },
                    },
                },
            ],
            binds: vec![bind("/bin/sh", file("/usr/bin/busybox"))],
            build_dir: PathBuf::from("/build"),
            build_dir_source: PathBuf::from("/s/scratch/build"),
            tmp_source: PathBuf::from("/s/scratch/tmp"),
            etc_files: vec![
                ("passwd".into(), "p\n".into()),
                ("group".into(), "g\n".into()),
            ],
            dev: DevLayout {
                nodes: vec![("null".into(), PathBuf::from("/dev/null"))],
                shm_options: Some("size=50%".into()),
                devpts: true,
            },
            sysfs: false,
            etc_owner: None,
        }
    }

    fn position(plan: &MountPlan, wanted: impl Fn(&Step) -> bool) -> usize {
        plan.steps.iter().position(wanted).expect("step present")
    }

    #[test]
    fn steps_come_in_a_safe_order() {
        let plan = layout().plan().unwrap();
        assert_eq!(plan.steps[0], Step::MakePrivate);
        assert!(matches!(plan.steps[1], Step::RootTmpfs { .. }));
        assert_eq!(plan.steps.last(), Some(&Step::PivotRoot));
        let lower = position(&plan, |s| matches!(s, Step::Tmpfs { layer: true, .. }));
        let overlay = position(&plan, |s| matches!(s, Step::Overlay { .. }));
        let input_dir = position(&plan, |s| {
            *s == Step::Mkdir {
                path: "/nix/store/aaa-dir".into(),
                mode: 0o755,
            }
        });
        let input_link = position(&plan, |s| {
            *s == Step::Symlink {
                path: "/nix/store/ccc-link".into(),
                target: "aaa-dir/bin".into(),
            }
        });
        assert!(lower < input_dir && input_dir < overlay && input_link < overlay);
        let input_bind = position(
            &plan,
            |s| matches!(s, Step::Bind { target, .. } if target == Path::new("/nix/store/aaa-dir")),
        );
        assert!(overlay < input_bind, "binds go onto the overlay's entries");
        // Every creation precedes every mount inside the root.
        let last_creation = plan
            .steps
            .iter()
            .rposition(|s| {
                matches!(
                    s,
                    Step::Mkdir { .. } | Step::File { .. } | Step::Symlink { .. }
                )
            })
            .unwrap();
        let first_bind = position(&plan, |s| matches!(s, Step::Bind { .. }));
        assert!(last_creation < first_bind);
        // /etc becomes read-only after its files exist.
        let chmod = position(
            &plan,
            |s| matches!(s, Step::Chmod { path, mode: 0o555 } if path == Path::new("/etc")),
        );
        let passwd = position(
            &plan,
            |s| matches!(s, Step::File { path, .. } if path == Path::new("/etc/passwd")),
        );
        assert!(passwd < chmod);
    }

    #[test]
    fn the_skeleton_is_nix_s() {
        let plan = layout().plan().unwrap();
        let has = |step: Step| plan.steps.contains(&step);
        assert!(has(Step::Symlink {
            path: "/dev/fd".into(),
            target: "/proc/self/fd".into()
        }));
        assert!(has(Step::Symlink {
            path: "/dev/stderr".into(),
            target: "/proc/self/fd/2".into()
        }));
        assert!(has(Step::Symlink {
            path: "/dev/ptmx".into(),
            target: "pts/ptmx".into()
        }));
        assert!(has(Step::Proc {
            target: "/proc".into()
        }));
        assert!(has(Step::Devpts {
            target: "/dev/pts".into(),
            options: "newinstance,ptmxmode=0666,mode=0620".into()
        }));
        assert!(has(Step::Tmpfs {
            target: "/dev/shm".into(),
            options: "size=50%".into(),
            layer: false
        }));
        assert!(has(Step::Bind {
            source: "/s/scratch/tmp".into(),
            target: "/tmp".into(),
            recursive: false,
            layer: false
        }));
        assert!(has(Step::Bind {
            source: "/real/store/bbb-file".into(),
            target: "/nix/store/bbb-file".into(),
            recursive: false,
            layer: false
        }));
        assert!(has(Step::Bind {
            source: "/real/store/aaa-dir".into(),
            target: "/nix/store/aaa-dir".into(),
            recursive: true,
            layer: false
        }));
        assert!(
            !plan
                .steps
                .iter()
                .any(|s| matches!(s, Step::Mkdir { path, .. } if path.starts_with("/sys")))
        );
    }

    #[test]
    fn a_bound_dev_replaces_the_skeleton_but_keeps_shm() {
        let mut layout = layout();
        layout.binds.push(bind("/dev", dir("/dev")));
        let plan = layout.plan().unwrap();
        assert!(!plan.steps.iter().any(|s| matches!(s, Step::Devpts { .. })));
        assert!(
            !plan
                .steps
                .iter()
                .any(|s| matches!(s, Step::File { path, .. } if path.starts_with("/dev/")))
        );
        let shm = position(
            &plan,
            |s| matches!(s, Step::Tmpfs { target, .. } if target == Path::new("/dev/shm")),
        );
        let dev = position(
            &plan,
            |s| matches!(s, Step::Bind { target, .. } if target == Path::new("/dev")),
        );
        assert!(dev < shm);
    }

    #[test]
    fn proc_sources_are_ignored() {
        let mut layout = layout();
        layout.binds.push(bind("/myproc", dir("/proc")));
        let plan = layout.plan().unwrap();
        assert!(
            !plan
                .steps
                .iter()
                .any(|s| matches!(s, Step::Bind { source, .. } if source == Path::new("/proc")))
        );
    }

    #[test]
    fn colliding_targets_are_refused_with_the_reason() {
        let refused = |extra: Vec<BindEntry>| {
            let mut layout = layout();
            layout.binds.extend(extra);
            layout.plan().unwrap_err().to_string()
        };
        assert_eq!(
            refused(vec![
                bind("/usr", dir("/usr")),
                bind("/usr/lib/x", file("/x"))
            ]),
            "sandbox path '/usr/lib/x' lies inside '/usr', which is a mount point; list only one of them"
        );
        assert_eq!(
            refused(vec![bind("/", dir("/"))]),
            "sandbox path '/' escapes the chroot"
        );
        assert_eq!(
            refused(vec![bind("/a/..", dir("/a"))]),
            "sandbox path to bind mount in the chroot has an invalid filename: '/a/..'"
        );
        assert_eq!(
            refused(vec![bind("/x/", file("/f"))]),
            "creating regular file '/x/': No such file or directory"
        );
        assert_eq!(
            refused(vec![bind("/nix", dir("/nix"))]),
            "sandbox path '/nix' would hide the store directory"
        );
        assert_eq!(
            refused(vec![bind("/build/x", dir("/x"))]),
            "sandbox path '/build/x' would hide the build directory"
        );
        assert_eq!(
            refused(vec![bind("/proc/sys", dir("/x"))]),
            "sandbox path '/proc/sys' would hide /proc"
        );
        assert_eq!(
            refused(vec![bind("/nix/store/aaa-dir", dir("/elsewhere"))]),
            "sandbox path '/nix/store/aaa-dir' is given twice, with different sources"
        );
        assert_eq!(
            refused(vec![bind("/nix/store/ccc-link/x", dir("/x"))]),
            "sandbox path '/nix/store/ccc-link/x' lies inside '/nix/store/ccc-link', which is a symlink; list only one of them"
        );
    }

    #[test]
    fn user_paths_win_over_the_skeleton() {
        let mut layout = layout();
        layout.binds.push(bind("/etc/hosts", file("/etc/hosts")));
        layout.binds.push(bind("/tmp", dir("/var/tmp")));
        layout
            .etc_files
            .push(("hosts".into(), "127.0.0.1 localhost\n".into()));
        let plan = layout.plan().unwrap();
        assert!(!plan.steps.iter().any(|s| matches!(s, Step::File { path, contents: Some(_), .. } if path == Path::new("/etc/hosts"))));
        assert!(plan.steps.contains(&Step::Bind {
            source: "/var/tmp".into(),
            target: "/tmp".into(),
            recursive: true,
            layer: false
        }));
        assert!(!plan.steps.iter().any(
            |s| matches!(s, Step::Bind { source, .. } if source == Path::new("/s/scratch/tmp"))
        ));
    }

    #[test]
    fn direct_store_layer_makes_entries_in_the_bound_scratch_directory() {
        let mut layout = layout();
        layout.store = StoreLayer::Direct {
            dir: PathBuf::from("/s/scratch/store"),
        };
        let plan = layout.plan().unwrap();
        let store = position(
            &plan,
            |s| matches!(s, Step::Bind { layer: true, target, .. } if target == Path::new("/nix/store")),
        );
        let entry = position(
            &plan,
            |s| matches!(s, Step::Mkdir { path, .. } if path == Path::new("/nix/store/aaa-dir")),
        );
        assert!(store < entry);
        assert!(!plan.steps.iter().any(|s| matches!(s, Step::Overlay { .. })));
    }

    #[test]
    fn uid_range_layouts_get_sys_and_an_etc_of_their_own() {
        let mut layout = layout();
        layout.sysfs = true;
        layout.etc_owner = Some((872415232, 872415232));
        let plan = layout.plan().unwrap();
        assert!(plan.steps.contains(&Step::Sysfs {
            target: "/sys".into()
        }));
        assert!(plan.steps.contains(&Step::Chown {
            path: "/etc".into(),
            uid: 872415232,
            gid: 872415232
        }));
        assert!(plan.steps.contains(&Step::Chown {
            path: "/etc/passwd".into(),
            uid: 872415232,
            gid: 872415232
        }));
        assert!(
            !plan.steps.iter().any(|s| matches!(s, Step::Chmod { .. })),
            "/etc stays writable"
        );
    }

    #[test]
    fn store_inside_build_dir_is_refused() {
        let mut layout = layout();
        layout.build_dir = PathBuf::from("/nix");
        assert_eq!(layout.plan().unwrap_err(), LayoutError::StoreInBuildDir);
    }
}
