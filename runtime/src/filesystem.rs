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
use hermetic_host::{DEV_NODES, HostFacts};

/// Set once overlayfs failed in this process; later sandboxes make their
/// store mount points on disk straight away.
static OVERLAY_UNUSABLE: AtomicBool = AtomicBool::new(false);

/// Remembers that overlayfs cannot be used here.
pub(crate) fn mark_overlay_unusable() {
    OVERLAY_UNUSABLE.store(true, Ordering::Relaxed);
}

fn overlay_usable(identity: &Identity, host: &HostFacts) -> bool {
    if OVERLAY_UNUSABLE.load(Ordering::Relaxed) {
        return false;
    }
    // overlayfs can be mounted inside a user namespace since Linux 5.11.
    identity.is_root() || host.kernel_at_least(5, 11)
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

/// The device nodes the sandbox binds (B42): those of [`DEV_NODES`] the
/// host has, and `kvm` when the spec asks and the host has it.
fn dev_nodes(spec: &SandboxSpec, host: &HostFacts) -> Vec<(String, PathBuf)> {
    let wanted = DEV_NODES.iter().chain(spec.kvm.then_some(&"kvm"));
    wanted
        .filter_map(|name| {
            host.dev_node(name)
                .map(|path| (name.to_string(), path.to_path_buf()))
        })
        .collect()
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

/// Chooses the scratch directory and describes the sandbox's filesystem on
/// `host`.
pub(crate) fn layout(
    spec: &SandboxSpec,
    identity: &Identity,
    scratch_parent: &Path,
    host: &HostFacts,
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
        work: store_entries && overlay_usable(identity, host),
        build: spec.build_dir.is_none(),
    };
    let scratch = match &spec.kept_scratch {
        Some(kept) => Scratch::reuse(kept, needs),
        None => Scratch::choose(scratch_parent, needs),
    };
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
            nodes: dev_nodes(spec, host),
            shm_options: host
                .dev_shm
                .then(|| format!("size={}", spec.sandbox_dev_shm_size)),
            devpts: host.devpts,
        },
        sysfs: spec.uid_range,
        etc_owner: builder.map(|user| (user.uid, user.gid)),
    };
    Ok((scratch, layout))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A made-up host with every `/dev` node, `/dev/shm` and devpts.
    fn host() -> HostFacts {
        HostFacts {
            root: false,
            dev_nodes: DEV_NODES
                .iter()
                .chain(&["kvm"])
                .map(|name| (name.to_string(), PathBuf::from("/dev").join(name)))
                .collect(),
            dev_shm: true,
            devpts: true,
            kernel_version: Some((6, 1)),
            last_capability: 40,
        }
    }

    fn unprivileged() -> Identity {
        Identity::Unprivileged {
            uid: 1000,
            gid: 100,
        }
    }

    /// A store directory holding one input, in a fresh temporary
    /// directory that the test removes.
    struct FakeStore(PathBuf);

    impl FakeStore {
        fn new(label: &str) -> FakeStore {
            let dir = std::env::temp_dir()
                .join(format!("hermetic-layout-{label}-{}", std::process::id()));
            std::fs::create_dir_all(dir.join("store/aaaa-input")).unwrap();
            FakeStore(dir)
        }

        fn spec(&self) -> SandboxSpec {
            let mut spec = SandboxSpec::new(PathBuf::from("/bin/sh"), Vec::new());
            spec.real_store_dir = Some(self.0.join("store"));
            spec.inputs = vec![self.0.join("store/aaaa-input")];
            spec.build_dir = Some(self.0.join("build"));
            spec
        }
    }

    impl Drop for FakeStore {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn plan(spec: &SandboxSpec, identity: &Identity, host: &HostFacts) -> (Scratch, Layout) {
        layout(
            spec,
            identity,
            Path::new("/nonexistent/scratch-parent"),
            host,
        )
        .unwrap()
    }

    #[test]
    fn the_dev_of_a_sandbox_is_what_the_host_has() {
        let store = FakeStore::new("dev");
        let mut spec = store.spec();
        let (_, layout) = plan(&spec, &unprivileged(), &host());
        let names: Vec<&str> = layout.dev.nodes.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, DEV_NODES);
        assert_eq!(layout.dev.shm_options.as_deref(), Some("size=50%"));
        assert!(layout.dev.devpts);

        spec.kvm = true;
        let mut bare = host();
        bare.dev_nodes.retain(|(n, _)| n != "tty");
        bare.dev_shm = false;
        bare.devpts = false;
        let (_, layout) = plan(&spec, &unprivileged(), &bare);
        let names: Vec<&str> = layout.dev.nodes.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["full", "null", "random", "urandom", "zero", "kvm"]);
        assert_eq!(layout.dev.shm_options, None);
        assert!(!layout.dev.devpts);

        bare.dev_nodes.retain(|(n, _)| n != "kvm");
        let (_, layout) = plan(&spec, &unprivileged(), &bare);
        assert!(!layout.dev.nodes.iter().any(|(n, _)| n == "kvm"));
    }

    #[test]
    fn an_unprivileged_sandbox_uses_overlayfs_from_linux_5_11() {
        let store = FakeStore::new("overlay");
        let spec = store.spec();
        let mut old = host();
        old.kernel_version = Some((5, 10));
        let (scratch, layout) = plan(&spec, &unprivileged(), &old);
        assert_eq!(scratch.work, None);
        assert!(matches!(layout.store, StoreLayer::Direct { .. }));
        let (scratch, layout) = plan(&spec, &unprivileged(), &host());
        assert!(scratch.work.is_some());
        assert!(matches!(
            layout.store,
            StoreLayer::Overlay {
                userxattr: true,
                ..
            }
        ));
    }
}
