//! From a [`SandboxSpec`] to a prepared [`Sandbox`]: checks, host facts,
//! and the whole plan, computed before anything is created.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use hermetic_mountplan::{BindEntry, DevLayout, Layout, MountPlan, Step, StoreInput, StoreLayer};
use hermetic_namespaces::sys::CStringArray;
use hermetic_namespaces::{Exec, IdMaps, Namespaces, UserNamespace};
use hermetic_uidmap::{SANDBOX_GID, SANDBOX_UID, SandboxIds};
use serde::Serialize;

use crate::error::SandboxError;
use crate::etc;
use crate::host;
use crate::scratch::Scratch;
use crate::spec::{BuildUser, SandboxSpec};

/// Who the sandbox runs as on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Identity {
    /// hermetic runs as root: the sandbox is set up as root in its own
    /// namespaces, then enters a user namespace as the build user.
    Root {
        /// The build user.
        build_user: BuildUser,
    },
    /// hermetic runs as an ordinary user: the sandbox's user namespace
    /// exists from the start and maps the caller's own ids.
    Unprivileged {
        /// The caller's uid.
        uid: u32,
        /// The caller's gid.
        gid: u32,
    },
}

impl Identity {
    /// The identity of the calling process, checked against the spec.
    pub fn of_caller(spec: &SandboxSpec) -> Result<Identity, SandboxError> {
        let euid = nix::unistd::geteuid().as_raw();
        if euid == 0 {
            let user = spec.build_user.ok_or(SandboxError::RootWithoutBuildUser)?;
            if user.uid == 0 || user.gid == 0 {
                return Err(SandboxError::RootBuildUser {
                    uid: user.uid,
                    gid: user.gid,
                });
            }
            return Ok(Identity::Root { build_user: user });
        }
        let (uid, gid) = (euid, nix::unistd::getegid().as_raw());
        match spec.build_user {
            Some(user) if (user.uid, user.gid) != (uid, gid) => {
                Err(SandboxError::ForeignBuildUser {
                    uid: user.uid,
                    gid: user.gid,
                })
            }
            _ => Ok(Identity::Unprivileged { uid, gid }),
        }
    }

    /// The host uid and gid of the builder.
    pub fn host_ids(&self) -> (u32, u32) {
        match *self {
            Identity::Root { build_user } => (build_user.uid, build_user.gid),
            Identity::Unprivileged { uid, gid } => (uid, gid),
        }
    }

    /// The build user, when there is one (root).
    pub fn build_user(&self) -> Option<BuildUser> {
        match *self {
            Identity::Root { build_user } => Some(build_user),
            Identity::Unprivileged { .. } => None,
        }
    }
}

/// The process the builder starts as (printed by `--print-plan`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ProcessPlan {
    /// argv, argv[0] the builder's base name (B63).
    pub argv: Vec<String>,
    /// The working directory.
    pub cwd: PathBuf,
    /// The uid and gid inside.
    pub ids: (u32, u32),
    /// The id maps, as written to `/proc/<pid>/{uid,gid}_map`.
    pub uid_map: String,
    /// See `uid_map`.
    pub gid_map: String,
    /// The namespaces.
    pub namespaces: Vec<&'static str>,
    /// umask at exec (D6).
    pub umask: String,
    /// Personality flags added (B75, B76).
    pub personality: String,
    /// The soft core size limit (B65).
    pub core_limit: u64,
    /// Capabilities at exec (D5).
    pub capabilities: &'static str,
    /// no_new_privs (B70).
    pub no_new_privs: bool,
    /// Where stdin comes from and output goes.
    pub stdio: &'static str,
    /// Host and domain name (B17).
    pub uts: (&'static str, &'static str),
}

/// A sandbox ready to run: everything decided, nothing created yet.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Sandbox {
    /// The spec it was made from.
    pub spec: SandboxSpec,
    /// Who it runs as.
    pub identity: Identity,
    /// Its scratch directory (created when it runs).
    pub scratch: Scratch,
    /// The process it starts.
    pub process: ProcessPlan,
    /// Its filesystem.
    pub mount_plan: MountPlan,
    #[serde(skip)]
    pub(crate) layout: Layout,
}

/// Set once overlayfs failed in this process; later sandboxes make their
/// store mount points on disk straight away.
static OVERLAY_UNUSABLE: AtomicBool = AtomicBool::new(false);

pub(crate) fn mark_overlay_unusable() {
    OVERLAY_UNUSABLE.store(true, Ordering::Relaxed);
}

fn overlay_usable(identity: &Identity) -> bool {
    if OVERLAY_UNUSABLE.load(Ordering::Relaxed) {
        return false;
    }
    match identity {
        Identity::Root { .. } => true,
        // overlayfs can be mounted inside a user namespace since Linux 5.11.
        Identity::Unprivileged { .. } => host::kernel_version().is_some_and(|v| v >= (5, 11)),
    }
}

/// The store layer of `scratch`: an overlay when it has a work directory,
/// else the directory itself with any mount points made on disk.
pub(crate) fn store_layer(scratch: &Scratch, identity: &Identity) -> StoreLayer {
    match &scratch.work {
        Some(work) => StoreLayer::Overlay {
            upper: scratch.store.clone(),
            work: work.clone(),
            userxattr: matches!(identity, Identity::Unprivileged { .. }),
        },
        None => StoreLayer::Direct {
            dir: scratch.store.clone(),
        },
    }
}

fn scratch_parent(spec: &SandboxSpec) -> PathBuf {
    if let Some(parent) = &spec.scratch_parent {
        return parent.clone();
    }
    let store = spec.real_store_dir();
    if nix::unistd::access(store, nix::unistd::AccessFlags::W_OK).is_ok() {
        return store.to_path_buf();
    }
    tracing::debug!(store = %store.display(), "store not writable: scratch goes to the temporary directory");
    std::env::temp_dir()
}

impl Sandbox {
    /// Checks `spec` against the host and plans the sandbox.
    pub fn prepare(spec: &SandboxSpec) -> Result<Sandbox, SandboxError> {
        spec.validate()?;
        let identity = Identity::of_caller(spec)?;
        let (host_uid, host_gid) = identity.host_ids();

        let mut inputs = Vec::with_capacity(spec.inputs.len());
        if let Some(first) = spec.inputs.first() {
            let missing = |input: &Path| {
                let input = input.to_path_buf();
                move |source| SandboxError::MissingInput {
                    path: input,
                    source,
                }
            };
            let store = host::StoreDir::open(spec.real_store_dir()).map_err(missing(first))?;
            for input in &spec.inputs {
                let name = spec.input_name(input)?;
                let source = store.source(&name).map_err(missing(input))?;
                inputs.push(StoreInput { name, source });
            }
        }
        let mut binds = Vec::with_capacity(spec.sandbox_paths.len());
        for entry in &spec.sandbox_paths {
            match host::source(&entry.source) {
                Ok(source) => binds.push(BindEntry {
                    target: entry.target.clone(),
                    source,
                }),
                Err(error)
                    if entry.optional && error.source.kind() == std::io::ErrorKind::NotFound => {}
                Err(error)
                    if entry.optional && error.source.raw_os_error() == Some(libc::ENOTDIR) => {}
                Err(source) => {
                    return Err(SandboxError::SandboxPathSource {
                        entry: entry.to_string(),
                        source,
                    });
                }
            }
        }

        let mut dev_nodes: Vec<(String, PathBuf)> = host::DEV_NODES
            .iter()
            .filter_map(|name| host::dev_node(name).map(|path| (name.to_string(), path)))
            .collect();
        if spec.kvm
            && let Some(path) = host::dev_node("kvm")
        {
            dev_nodes.push(("kvm".to_string(), path));
        }

        // Mount points in the store directory stay off the host disk in an
        // overlay; a sandbox without any needs no overlay at all.
        let store_entries = !inputs.is_empty()
            || binds.iter().any(|bind| {
                hermetic_mountplan::normalize_target(&bind.target)
                    .is_ok_and(|t| t.starts_with(&spec.store_dir))
            });
        let overlay = store_entries && overlay_usable(&identity);
        let scratch = Scratch::choose(&scratch_parent(spec), spec.build_dir.is_none(), overlay);
        let mut etc_files = vec![
            (
                "passwd".to_string(),
                etc::passwd(SANDBOX_UID, SANDBOX_GID, &spec.sandbox_build_dir),
            ),
            ("group".to_string(), etc::group(SANDBOX_GID)),
        ];
        if spec.network.own_namespace() {
            etc_files.push(("hosts".to_string(), etc::HOSTS.to_string()));
        }
        let root_options = match identity {
            Identity::Root { build_user } => {
                format!("mode=0750,uid=0,gid={},size=16m", build_user.gid)
            }
            Identity::Unprivileged { .. } => "mode=0750,size=16m".to_string(),
        };
        let layout = Layout {
            root_mount_point: scratch.dir.clone(),
            root_options,
            store_dir: spec.store_dir.clone(),
            store: store_layer(&scratch, &identity),
            inputs,
            binds,
            build_dir: spec.sandbox_build_dir.clone(),
            build_dir_source: spec
                .build_dir
                .clone()
                .or_else(|| scratch.build.clone())
                .expect("a scratch build directory when the spec names none"),
            tmp_source: scratch.tmp.clone(),
            etc_files,
            dev: DevLayout {
                nodes: dev_nodes,
                shm_options: host::has_dev_shm()
                    .then(|| format!("size={}", spec.sandbox_dev_shm_size)),
                devpts: host::has_devpts(),
            },
        };
        let mount_plan = layout.plan()?;

        let ids = SandboxIds::ordinary(host_uid, host_gid);
        let mut namespaces = vec!["user", "mount", "pid", "uts", "ipc"];
        if spec.network.own_namespace() {
            namespaces.push("net");
        }
        let process = ProcessPlan {
            argv: argv(spec),
            cwd: spec.sandbox_build_dir.clone(),
            ids: (SANDBOX_UID, SANDBOX_GID),
            uid_map: ids.uid.render(),
            gid_map: ids.gid.render(),
            namespaces,
            umask: "0022".into(),
            personality: format!("{:#x}", spec.personality()),
            core_limit: 0,
            capabilities: "none",
            no_new_privs: true,
            stdio: "stdin /dev/null; stdout and stderr one pseudo-terminal in raw mode",
            uts: ("localhost", "(none)"),
        };
        tracing::debug!(
            inputs = spec.inputs.len(),
            sandbox_paths = spec.sandbox_paths.len(),
            steps = mount_plan.steps.len(),
            overlay,
            ?identity,
            "planned the sandbox"
        );
        Ok(Sandbox {
            spec: spec.clone(),
            identity,
            scratch,
            process,
            mount_plan,
            layout,
        })
    }

    /// The index of the overlay step, if the plan has one.
    pub(crate) fn overlay_step(plan: &MountPlan) -> Option<usize> {
        plan.steps
            .iter()
            .position(|step| matches!(step, Step::Overlay { .. }))
    }

    /// The same plan with the store's mount points on disk (no overlayfs).
    pub(crate) fn plan_without_overlay(&self) -> Result<MountPlan, SandboxError> {
        let mut layout = self.layout.clone();
        layout.store = StoreLayer::Direct {
            dir: self.scratch.store.clone(),
        };
        Ok(layout.plan()?)
    }

    /// The launcher's description of the builder process.
    pub(crate) fn exec(&self, controlling_terminal: bool) -> Result<Exec, SandboxError> {
        let c = |text: &str| {
            CString::new(text).map_err(|_| {
                SandboxError::Spec(crate::spec::SpecError::Nul {
                    context: "string",
                    value: text.replace('\0', "\\0"),
                })
            })
        };
        let argv = self
            .process
            .argv
            .iter()
            .map(|a| c(a))
            .collect::<Result<Vec<_>, _>>()?;
        let envp = self
            .spec
            .env
            .iter()
            .map(|(name, value)| c(&format!("{name}={value}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Exec {
            program: c(&self.spec.builder.to_string_lossy())?,
            argv: CStringArray::new(argv),
            envp: CStringArray::new(envp),
            cwd: c(&self.spec.sandbox_build_dir.to_string_lossy())?,
            umask: 0o022,
            personality: Some(self.spec.personality()),
            no_core_dumps: true,
            drop_capabilities: true,
            last_capability: host::last_capability(),
            no_new_privs: true,
            controlling_terminal,
        })
    }

    /// The namespaces and id maps of the launch.
    pub(crate) fn namespaces(&self) -> (Namespaces, UserNamespace) {
        let namespaces = Namespaces {
            net: self.spec.network.own_namespace(),
            ..Namespaces::SANDBOX
        };
        let maps = IdMaps {
            uid_map: self.process.uid_map.clone(),
            gid_map: self.process.gid_map.clone(),
            deny_setgroups: true,
            uid: SANDBOX_UID,
            gid: SANDBOX_GID,
        };
        let user_namespace = match self.identity {
            Identity::Root { .. } => UserNamespace::AfterSetup(maps),
            Identity::Unprivileged { .. } => UserNamespace::AtClone(maps),
        };
        (namespaces, user_namespace)
    }

    /// The host path of the build directory.
    pub fn build_dir_on_host(&self) -> &Path {
        &self.layout.build_dir_source
    }
}

/// argv: the builder's base name, then the arguments (B63).
fn argv(spec: &SandboxSpec) -> Vec<String> {
    let name = spec
        .builder
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| spec.builder.to_string_lossy().into_owned());
    std::iter::once(name)
        .chain(spec.args.iter().cloned())
        .collect()
}
