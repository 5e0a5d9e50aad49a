//! [`MountPlan`] → [`CompiledPlan`]: the plan as system-call arguments.
//!
//! Compiling happens in the parent. Every path becomes a C string once, mount
//! options are rendered, and each creation step is tied to the creation
//! layer (a tmpfs or scratch directory the plan mounted) that holds it, by a
//! path relative to that layer's root: [`crate::apply`] then creates entries
//! with `mkdirat`-style calls on a descriptor of the layer, and never walks
//! a path from the host's root.

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use crate::plan::{MountPlan, Step};

/// How many creation layers a plan may declare.
pub const MAX_LAYERS: usize = 4;

/// One system-call-level operation.
#[derive(Debug)]
pub(crate) enum Op {
    Mount {
        source: Option<CString>,
        target: CString,
        fstype: Option<CString>,
        flags: MsFlags,
        data: Option<CString>,
    },
    OpenLayer {
        slot: usize,
        path: CString,
    },
    Repin {
        path: CString,
        fd: std::os::fd::RawFd,
    },
    Mkdir {
        slot: usize,
        relative: CString,
        mode: u32,
    },
    File {
        slot: usize,
        relative: CString,
        mode: u32,
        contents: Option<Vec<u8>>,
    },
    Symlink {
        slot: usize,
        relative: CString,
        target: CString,
    },
    Chmod {
        slot: usize,
        relative: CString,
        mode: u32,
    },
    Chown {
        slot: usize,
        relative: CString,
        uid: u32,
        gid: u32,
    },
    Chdir {
        path: CString,
    },
    PivotRoot {
        new_root: CString,
    },
}

/// A plan ready for [`crate::apply`]: operations tagged with the index of the
/// plan step they come from.
#[derive(Debug)]
pub struct CompiledPlan {
    pub(crate) ops: Vec<(u32, Op)>,
}

/// Why a plan cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// A path or option holds a NUL byte.
    #[error("'{0}' contains a NUL byte")]
    Nul(String),
    /// overlayfs takes its directories in one option string, where `,`, `:`
    /// and `\` have meanings of their own.
    #[error(
        "the path '{0}' contains ',', ':', '\\' or whitespace, which overlayfs cannot take; \
         use a scratch directory without them"
    )]
    OverlayPath(String),
    /// An entry to create lies outside every creation layer.
    #[error("'{0}' is not inside a layer the plan mounted")]
    NoLayer(String),
    /// More layers than [`MAX_LAYERS`].
    #[error("the plan declares more than {MAX_LAYERS} creation layers")]
    TooManyLayers,
    /// A plan without its root step.
    #[error("the plan has no root step")]
    NoRoot,
    /// A host path below the root's mount point, hidden once the root is
    /// mounted, that was not pinned by a descriptor.
    #[error("'{0}' lies below the sandbox root's mount point and is not pinned")]
    Shadowed(String),
}

/// A host directory the parent opened before launching: the child reaches
/// it through `/proc/self/fd/<fd>` even after the sandbox root is mounted
/// over its parent.
#[derive(Debug, Clone, Copy)]
pub struct Pinned<'a> {
    /// The directory's host path.
    pub path: &'a Path,
    /// The descriptor the child inherits (`O_PATH`).
    pub fd: std::os::fd::RawFd,
}

fn c_string(bytes: &[u8]) -> Result<CString, CompileError> {
    CString::new(bytes)
        .map_err(|_| CompileError::Nul(String::from_utf8_lossy(bytes).replace('\0', "\\0")))
}

/// The part of `path` below `base` (both absolute, as bytes): `Some(b"")`
/// when they are equal, `None` when `path` is not inside `base`.
fn below<'a>(path: &'a [u8], base: &[u8]) -> Option<&'a [u8]> {
    if base == b"/" {
        return path.strip_prefix(b"/");
    }
    let rest = path.strip_prefix(base)?;
    if rest.is_empty() {
        Some(rest)
    } else {
        rest.strip_prefix(b"/")
    }
}

fn c_path(path: &Path) -> Result<CString, CompileError> {
    c_string(path.as_os_str().as_encoded_bytes())
}

struct Compiler<'p> {
    /// Host directory of the sandbox root.
    root: Option<PathBuf>,
    /// The directory the child will be in (binds name their targets
    /// relative to it: one path component to look up instead of a dozen).
    cwd: Option<PathBuf>,
    /// Host directories reachable by descriptor.
    pinned: &'p [Pinned<'p>],
    /// Creation layers: sandbox path of each layer's root, by slot.
    layers: Vec<PathBuf>,
    ops: Vec<(u32, Op)>,
}

impl Compiler<'_> {
    /// How the child names host path `path`: through a pinned descriptor
    /// where one covers it (the root may be mounted over its parent).
    fn host_source(&self, path: &Path) -> Result<PathBuf, CompileError> {
        let text = path.as_os_str().as_encoded_bytes();
        for pin in self.pinned {
            if let Some(rest) = below(text, pin.path.as_os_str().as_encoded_bytes()) {
                let mut via = format!("/proc/self/fd/{}", pin.fd).into_bytes();
                if !rest.is_empty() {
                    via.push(b'/');
                    via.extend_from_slice(rest);
                }
                return Ok(PathBuf::from(OsStr::from_bytes(&via)));
            }
        }
        match &self.root {
            Some(root) if below(text, root.as_os_str().as_encoded_bytes()).is_some() => {
                Err(CompileError::Shadowed(path.display().to_string()))
            }
            _ => Ok(path.to_path_buf()),
        }
    }

    fn host_path(&self, inside: &Path) -> Result<PathBuf, CompileError> {
        let root = self.root.as_ref().ok_or(CompileError::NoRoot)?;
        let mut host = root.as_os_str().as_encoded_bytes().to_vec();
        let inside = inside.as_os_str().as_encoded_bytes();
        if inside != b"/" {
            host.extend_from_slice(inside);
        }
        Ok(PathBuf::from(OsStr::from_bytes(&host)))
    }

    fn push(&mut self, step: u32, op: Op) {
        self.ops.push((step, op));
    }

    fn add_layer(&mut self, step: u32, inside: &Path) -> Result<(), CompileError> {
        if self.layers.len() == MAX_LAYERS {
            return Err(CompileError::TooManyLayers);
        }
        let path = c_path(&self.host_path(inside)?)?;
        let slot = self.layers.len();
        self.layers.push(inside.to_path_buf());
        self.push(step, Op::OpenLayer { slot, path });
        Ok(())
    }

    /// `host` as a name in its parent directory, changing into that
    /// directory first unless the child is already there.
    fn relative_to_cwd(&mut self, step: u32, host: &Path) -> Result<PathBuf, CompileError> {
        let (Some(parent), Some(name)) = (host.parent(), host.file_name()) else {
            return Ok(host.to_path_buf());
        };
        if self.cwd.as_deref() != Some(parent) {
            let path = c_path(parent)?;
            self.push(step, Op::Chdir { path });
            self.cwd = Some(parent.to_path_buf());
        }
        Ok(PathBuf::from(name))
    }

    /// The innermost layer holding `inside`, and the path relative to it.
    fn locate(&self, inside: &Path) -> Result<(usize, CString), CompileError> {
        let text = inside.as_os_str().as_encoded_bytes();
        let (slot, relative) = self
            .layers
            .iter()
            .enumerate()
            .filter_map(|(slot, base)| {
                let base = base.as_os_str().as_encoded_bytes();
                below(text, base)
                    .filter(|rest| !rest.is_empty())
                    .map(|rest| (slot, base.len(), rest))
            })
            .max_by_key(|(_, depth, _)| *depth)
            .map(|(slot, _, rest)| (slot, rest))
            .ok_or_else(|| CompileError::NoLayer(inside.display().to_string()))?;
        Ok((slot, c_string(relative)?))
    }

    fn mount(
        &mut self,
        step: u32,
        source: Option<&[u8]>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), CompileError> {
        let op = Op::Mount {
            source: source.map(c_string).transpose()?,
            target: c_path(target)?,
            fstype: fstype.map(|t| c_string(t.as_bytes())).transpose()?,
            flags,
            data: data.map(|d| c_string(d.as_bytes())).transpose()?,
        };
        self.push(step, op);
        Ok(())
    }

    fn step(&mut self, index: u32, step: &Step) -> Result<(), CompileError> {
        let tmpfs_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        match step {
            Step::MakePrivate => {
                self.mount(
                    index,
                    None,
                    Path::new("/"),
                    None,
                    MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                    None,
                )?;
                // The parent's descriptors name mounts of its own namespace,
                // which cannot be bound from here: open the same directories
                // again, in this namespace, at the same numbers.
                for pin in self.pinned {
                    let path = c_path(pin.path)?;
                    self.push(index, Op::Repin { path, fd: pin.fd });
                }
            }
            Step::RootTmpfs {
                mount_point,
                options,
            } => {
                self.root = Some(mount_point.clone());
                self.mount(
                    index,
                    Some(b"tmpfs"),
                    mount_point,
                    Some("tmpfs"),
                    tmpfs_flags,
                    Some(options),
                )?;
                self.add_layer(index, Path::new("/"))?;
            }
            Step::Tmpfs {
                target,
                options,
                layer,
            } => {
                let host = self.host_path(target)?;
                self.mount(
                    index,
                    Some(b"tmpfs"),
                    &host,
                    Some("tmpfs"),
                    tmpfs_flags,
                    Some(options),
                )?;
                if *layer {
                    self.add_layer(index, target)?;
                }
            }
            Step::Mkdir { path, mode } => {
                let (slot, relative) = self.locate(path)?;
                self.push(
                    index,
                    Op::Mkdir {
                        slot,
                        relative,
                        mode: *mode,
                    },
                );
            }
            Step::File {
                path,
                mode,
                contents,
            } => {
                let (slot, relative) = self.locate(path)?;
                let contents = contents.as_ref().map(|c| c.as_bytes().to_vec());
                self.push(
                    index,
                    Op::File {
                        slot,
                        relative,
                        mode: *mode,
                        contents,
                    },
                );
            }
            Step::Symlink { path, target } => {
                let (slot, relative) = self.locate(path)?;
                let target = c_path(target)?;
                self.push(
                    index,
                    Op::Symlink {
                        slot,
                        relative,
                        target,
                    },
                );
            }
            Step::Chmod { path, mode } => {
                let (slot, relative) = self.locate(path)?;
                self.push(
                    index,
                    Op::Chmod {
                        slot,
                        relative,
                        mode: *mode,
                    },
                );
            }
            Step::Bind {
                source,
                target,
                recursive,
                layer,
            } => {
                let host = self.host_path(target)?;
                let mut flags = MsFlags::MS_BIND;
                if *recursive {
                    flags |= MsFlags::MS_REC;
                }
                let source = self.host_source(source)?;
                let mount_at = if *layer {
                    host
                } else {
                    self.relative_to_cwd(index, &host)?
                };
                self.mount(
                    index,
                    Some(source.as_os_str().as_encoded_bytes()),
                    &mount_at,
                    None,
                    flags,
                    None,
                )?;
                if *layer {
                    self.add_layer(index, target)?;
                }
            }
            Step::Overlay {
                target,
                upper,
                work,
                userxattr,
            } => {
                let host = self.host_path(target)?;
                let upper = self.host_source(upper)?;
                let work = self.host_source(work)?;
                for dir in [&host, &upper, &work] {
                    let text = dir.to_string_lossy();
                    if text.contains([',', ':', '\\']) || text.contains(char::is_whitespace) {
                        return Err(CompileError::OverlayPath(text.into_owned()));
                    }
                }
                let mut options = format!(
                    "lowerdir={},upperdir={},workdir={}",
                    host.display(),
                    upper.display(),
                    work.display()
                );
                if *userxattr {
                    options.push_str(",userxattr");
                }
                self.mount(
                    index,
                    Some(b"overlay"),
                    &host,
                    Some("overlay"),
                    MsFlags::empty(),
                    Some(&options),
                )?;
            }
            Step::Sysfs { target } => {
                let host = self.host_path(target)?;
                self.mount(
                    index,
                    Some(b"sysfs"),
                    &host,
                    Some("sysfs"),
                    MsFlags::empty(),
                    None,
                )?;
            }
            Step::Chown { path, uid, gid } => {
                let (slot, relative) = self.locate(path)?;
                self.push(
                    index,
                    Op::Chown {
                        slot,
                        relative,
                        uid: *uid,
                        gid: *gid,
                    },
                );
            }
            Step::Proc { target } => {
                let host = self.host_path(target)?;
                self.mount(
                    index,
                    Some(b"proc"),
                    &host,
                    Some("proc"),
                    MsFlags::empty(),
                    None,
                )?;
            }
            Step::Devpts { target, options } => {
                let host = self.host_path(target)?;
                self.mount(
                    index,
                    Some(b"devpts"),
                    &host,
                    Some("devpts"),
                    MsFlags::empty(),
                    Some(options),
                )?;
            }
            Step::PivotRoot => {
                let root = self.root.clone().ok_or(CompileError::NoRoot)?;
                let new_root = c_path(&root)?;
                self.push(index, Op::PivotRoot { new_root });
            }
        }
        Ok(())
    }
}

impl MountPlan {
    /// Compiles the plan for [`crate::apply`]. Host directories in `pinned`
    /// are reached through their descriptors.
    pub fn compile(&self, pinned: &[Pinned<'_>]) -> Result<CompiledPlan, CompileError> {
        let mut compiler = Compiler {
            root: None,
            cwd: None,
            pinned,
            layers: Vec::new(),
            ops: Vec::with_capacity(self.steps.len() + 4),
        };
        for (index, step) in self.steps.iter().enumerate() {
            compiler.step(index as u32, step)?;
        }
        Ok(CompiledPlan { ops: compiler.ops })
    }
}

impl CompiledPlan {
    /// How many operations it holds.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(steps: Vec<Step>) -> MountPlan {
        MountPlan { steps }
    }

    fn root() -> Step {
        Step::RootTmpfs {
            mount_point: PathBuf::from("/s/x"),
            options: "mode=0750".into(),
        }
    }

    #[test]
    fn below_respects_component_boundaries() {
        assert_eq!(below(b"/a/b/c", b"/a/b"), Some(&b"c"[..]));
        assert_eq!(below(b"/a/b", b"/a/b"), Some(&b""[..]));
        assert_eq!(below(b"/a/bc", b"/a/b"), None);
        assert_eq!(below(b"/x", b"/"), Some(&b"x"[..]));
        assert_eq!(below(b"/", b"/"), Some(&b""[..]));
    }

    #[test]
    fn entries_are_created_relative_to_their_layer() {
        let compiled = plan(vec![
            Step::MakePrivate,
            root(),
            Step::Mkdir {
                path: "/nix/store".into(),
                mode: 0o755,
            },
            Step::Tmpfs {
                target: "/nix/store".into(),
                options: "mode=0755".into(),
                layer: true,
            },
            Step::Mkdir {
                path: "/nix/store/abc".into(),
                mode: 0o755,
            },
        ])
        .compile(&[])
        .unwrap();
        let creations: Vec<(usize, String)> = compiled
            .ops
            .iter()
            .filter_map(|(_, op)| match op {
                Op::Mkdir { slot, relative, .. } => {
                    Some((*slot, relative.to_string_lossy().into_owned()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            creations,
            vec![(0, "nix/store".to_string()), (1, "abc".to_string())]
        );
    }

    #[test]
    fn pinned_directories_are_reached_by_descriptor() {
        let steps = vec![
            Step::MakePrivate,
            root(),
            Step::Mkdir {
                path: "/tmp".into(),
                mode: 0o755,
            },
            Step::Bind {
                source: "/s/x/tmp".into(),
                target: "/tmp".into(),
                recursive: false,
                layer: false,
            },
        ];
        let pinned = [Pinned {
            path: Path::new("/s/x/tmp"),
            fd: 7,
        }];
        let compiled = plan(steps.clone()).compile(&pinned).unwrap();
        assert!(
            compiled
                .ops
                .iter()
                .any(|(_, op)| matches!(op, Op::Repin { fd: 7, .. }))
        );
        assert!(compiled.ops.iter().any(|(_, op)| matches!(
            op,
            Op::Mount { source: Some(source), .. } if source.as_bytes() == b"/proc/self/fd/7"
        )));
        assert_eq!(
            plan(steps).compile(&[]).unwrap_err(),
            CompileError::Shadowed("/s/x/tmp".into())
        );
    }

    #[test]
    fn overlay_refuses_paths_it_cannot_parse() {
        let steps = vec![
            Step::MakePrivate,
            root(),
            Step::Overlay {
                target: "/nix/store".into(),
                upper: "/a,b/store".into(),
                work: "/a/work".into(),
                userxattr: true,
            },
        ];
        assert!(matches!(
            plan(steps).compile(&[]),
            Err(CompileError::OverlayPath(_))
        ));
    }

    #[test]
    fn creation_outside_any_layer_is_refused() {
        let steps = vec![Step::Mkdir {
            path: "/x".into(),
            mode: 0o755,
        }];
        assert!(matches!(
            plan(steps).compile(&[]),
            Err(CompileError::NoLayer(_))
        ));
    }
}
