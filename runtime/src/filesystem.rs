//! A sandbox's filesystem: the host facts its layout needs (what each input
//! and sandbox path is, which `/dev` nodes exist) and the layout itself.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use hermetic_mountplan::{BindEntry, DevLayout, Layout, StoreInput, StoreLayer, normalize_target};
use hermetic_uidmap::{SANDBOX_GID, SANDBOX_UID};

use crate::error::SandboxError;
use crate::etc;
use crate::identity::Identity;
use crate::scratch::{Scratch, ScratchNeeds};
use crate::sources;
use crate::spec::SandboxSpec;
use hermetic_host as host;

/// Set once overlayfs failed in this process; later sandboxes make their
/// store mount points on disk straight away.
static OVERLAY_UNUSABLE: AtomicBool = AtomicBool::new(false);

/// Remembers that overlayfs cannot be used here.
pub(crate) fn mark_overlay_unusable() {
    OVERLAY_UNUSABLE.store(true, Ordering::Relaxed);
}

fn overlay_usable(identity: &Identity) -> bool {
    if OVERLAY_UNUSABLE.load(Ordering::Relaxed) {
        return false;
    }
    // overlayfs can be mounted inside a user namespace since Linux 5.11.
    identity.is_root() || host::kernel_version().is_some_and(|v| v >= (5, 11))
}

/// The input paths as the store holds them.
pub(crate) fn inputs(spec: &SandboxSpec) -> Result<Vec<StoreInput>, SandboxError> {
    let mut inputs = Vec::with_capacity(spec.inputs.len());
    let Some(first) = spec.inputs.first() else {
        return Ok(inputs);
    };
    let missing = |input: &Path| {
        let input = input.to_path_buf();
        move |source| SandboxError::MissingInput {
            path: input,
            source,
        }
    };
    let store = sources::StoreDir::open(spec.real_store_dir()).map_err(missing(first))?;
    for input in &spec.inputs {
        let name = spec.input_name(input)?;
        let source = store.source(&name).map_err(missing(input))?;
        inputs.push(StoreInput { name, source });
    }
    Ok(inputs)
}

/// The `sandbox-paths` entries whose sources exist (optional ones that do
/// not are skipped; a required one that does not is an error, B50).
pub(crate) fn binds(spec: &SandboxSpec) -> Result<Vec<BindEntry>, SandboxError> {
    let mut binds = Vec::with_capacity(spec.sandbox_paths.len());
    for entry in &spec.sandbox_paths {
        match sources::source(&entry.source) {
            Ok(source) => binds.push(BindEntry {
                target: entry.target.clone(),
                source,
            }),
            Err(error) if entry.optional && error.source.kind() == std::io::ErrorKind::NotFound => {
            }
            Err(error) if entry.optional && error.source.raw_os_error() == Some(libc::ENOTDIR) => {}
            Err(source) => {
                return Err(SandboxError::SandboxPathSource {
                    entry: entry.to_string(),
                    source,
                });
            }
        }
    }
    Ok(binds)
}

/// The device nodes the sandbox binds (B42).
fn dev_nodes(spec: &SandboxSpec) -> Vec<(String, PathBuf)> {
    let mut nodes: Vec<(String, PathBuf)> = host::DEV_NODES
        .iter()
        .filter_map(|name| host::dev_node(name).map(|path| (name.to_string(), path)))
        .collect();
    if spec.kvm
        && let Some(path) = host::dev_node("kvm")
    {
        nodes.push(("kvm".to_string(), path));
    }
    nodes
}

/// The store layer of `scratch`: an overlay when it has a work directory,
/// else the directory itself with any mount points made on disk.
fn store_layer(scratch: &Scratch, identity: &Identity) -> StoreLayer {
    let upper = scratch
        .store
        .clone()
        .expect("a sandbox's scratch has a store layer");
    match &scratch.work {
        Some(work) => StoreLayer::Overlay {
            upper,
            work: work.clone(),
            userxattr: !identity.is_root(),
        },
        None => StoreLayer::Direct { dir: upper },
    }
}

/// The same layout with the store's mount points on disk (no overlayfs).
pub(crate) fn without_overlay(layout: &Layout, scratch: &Scratch) -> Layout {
    let mut layout = layout.clone();
    layout.store = StoreLayer::Direct {
        dir: scratch
            .store
            .clone()
            .expect("a sandbox's scratch has a store layer"),
    };
    layout
}

/// Chooses the scratch directory and describes the sandbox's filesystem.
pub(crate) fn layout(
    spec: &SandboxSpec,
    identity: &Identity,
    scratch_parent: &Path,
) -> Result<(Scratch, Layout), SandboxError> {
    let inputs = inputs(spec)?;
    let binds = binds(spec)?;
    // Mount points in the store directory stay off the host disk in an
    // overlay; a sandbox without any needs no overlay at all.
    let store_entries = !inputs.is_empty()
        || binds.iter().any(|bind| {
            normalize_target(&bind.target).is_ok_and(|t| t.starts_with(&spec.store_dir))
        });
    let needs = ScratchNeeds {
        sandbox: true,
        work: store_entries && overlay_usable(identity),
        build: spec.build_dir.is_none(),
    };
    let scratch = Scratch::choose(scratch_parent, needs);
    // A uid-range build is root inside (B19).
    let (uid, gid) = if spec.uid_range {
        (0, 0)
    } else {
        (SANDBOX_UID, SANDBOX_GID)
    };
    let mut etc_files = vec![
        (
            "passwd".to_string(),
            etc::passwd(uid, gid, &spec.sandbox_build_dir),
        ),
        ("group".to_string(), etc::group(gid)),
    ];
    if spec.network.own_namespace() {
        etc_files.push(("hosts".to_string(), etc::HOSTS.to_string()));
    }
    for (name, contents) in &spec.etc_files {
        etc_files.retain(|(existing, _)| existing != name);
        etc_files.push((name.clone(), contents.clone()));
    }
    let builder = identity.build_user().filter(|_| spec.uid_range);
    let root_options = match (identity.build_user(), builder) {
        // B32: a uid-range build's root belongs to it, mode 0755.
        (_, Some(user)) => format!("mode=0755,uid={},gid={},size=16m", user.uid, user.gid),
        (Some(user), None) => format!("mode=0750,uid=0,gid={},size=16m", user.gid),
        (None, None) => "mode=0750,size=16m".to_string(),
    };
    let layout = Layout {
        root_mount_point: scratch.dir.clone(),
        root_options,
        store_dir: spec.store_dir.clone(),
        store: store_layer(&scratch, identity),
        inputs,
        binds,
        build_dir: spec.sandbox_build_dir.clone(),
        build_dir_source: spec
            .build_dir
            .clone()
            .or_else(|| scratch.build.clone())
            .expect("a scratch build directory when the spec names none"),
        tmp_source: scratch.tmp.clone().expect("a sandbox's scratch has /tmp"),
        etc_files,
        dev: DevLayout {
            nodes: dev_nodes(spec),
            shm_options: host::has_dev_shm().then(|| format!("size={}", spec.sandbox_dev_shm_size)),
            devpts: host::has_devpts(),
        },
        sysfs: spec.uid_range,
        etc_owner: builder.map(|user| (user.uid, user.gid)),
    };
    Ok((scratch, layout))
}
