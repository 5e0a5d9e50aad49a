//! From a [`SandboxSpec`] to a prepared [`Sandbox`]: checks, host facts,
//! and the whole plan, computed before anything is created.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use hermetic_mountplan::{Layout, MountPlan, Step};
use hermetic_namespaces::{Exec, HostIds, IdMaps, Namespaces, UserNamespace, Uts};
use hermetic_seccomp_profiles::{Description, Profile};
use hermetic_sys::CStringArray;
use hermetic_uidmap::pool::RANGE_SIZE;
use hermetic_uidmap::{SANDBOX_GID, SANDBOX_UID, SandboxIds};
use serde::Serialize;

use crate::environment::BUILD_DIR_VARIABLES;
use crate::error::SandboxError;
use crate::filesystem;
use crate::identity::{Identity, supplementary_groups};
use crate::scratch::{Scratch, ScratchNeeds};
use crate::spec::{SandboxSpec, SpecError};
use hermetic_host::HostFacts;

/// The process the builder starts as (printed by `--print-plan`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ProcessPlan {
    /// argv, argv[0] the builder's base name (B63).
    pub argv: Vec<String>,
    /// The working directory, as the builder sees it.
    pub cwd: PathBuf,
    /// The uid and gid the builder sees.
    pub ids: (u32, u32),
    /// Supplementary groups (an unsandboxed build keeps the build user's).
    pub groups: Vec<u32>,
    /// The id maps, as written to `/proc/<pid>/{uid,gid}_map`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid_map: Option<String>,
    /// See `uid_map`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gid_map: Option<String>,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uts: Option<(&'static str, &'static str)>,
    /// The seccomp profile installed before exec (D3, D4).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<Description>,
}

/// A sandbox ready to run: everything decided, nothing created yet.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Sandbox {
    /// The spec it was made from (printed beside the sandbox, by
    /// [`crate::job::PrintedPlan`]).
    #[serde(skip)]
    pub spec: SandboxSpec,
    /// Who it runs as.
    pub identity: Identity,
    /// Its scratch directory (created when it runs).
    pub scratch: Scratch,
    /// The process it starts.
    pub process: ProcessPlan,
    /// Its filesystem (empty for an unsandboxed build).
    pub mount_plan: MountPlan,
    /// The filesystem's layout (sandboxes only), kept to plan again without
    /// overlayfs.
    #[serde(skip)]
    pub(crate) layout: Option<Layout>,
    /// The build directory on the host.
    #[serde(skip)]
    build_dir: PathBuf,
    /// The seccomp profile installed before exec, chosen once here
    /// (`process.seccomp` describes it).
    #[serde(skip)]
    seccomp: Option<Profile>,
}

/// The directory scratch directories are made in: the spec's, else the
/// real store directory when writable (D11), else the temporary directory.
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

/// Lix's text, for a `/homeless-shelter` that would make an unsandboxed
/// build impure (B9).
pub const HOMELESS_SHELTER: &str = "/homeless-shelter";

impl Sandbox {
    /// Checks `spec` against the host and plans the sandbox (or, with
    /// `sandbox: false`, the unsandboxed build).
    pub fn prepare(spec: &SandboxSpec) -> Result<Sandbox, SandboxError> {
        spec.validate()?;
        let identity = Identity::of_caller(spec)?;
        if spec.uid_range {
            if !spec.sandbox {
                return Err(SandboxError::UidRangeUnsandboxed);
            }
            match identity.build_user() {
                Some(user) if user.count >= RANGE_SIZE => {}
                Some(user) => {
                    return Err(SandboxError::UidRangeWithoutRange(format!(
                        "build user {} has {} of them",
                        user.uid, user.count
                    )));
                }
                None => {
                    return Err(SandboxError::UidRangeWithoutRange(
                        "this process is not root and has none".into(),
                    ));
                }
            }
        }
        // The block on nested user namespaces never applies to uid-range
        // builds, which exist to run nested containers (D4).
        let block = spec.sandbox_block_nested_userns && !spec.uid_range;
        let seccomp = spec.filter_syscalls.then(|| Profile::new(block));
        if let Some(profile) = seccomp
            && profile.program().is_empty()
        {
            return Err(SandboxError::NoSeccompProfile {
                arch: std::env::consts::ARCH,
            });
        }
        let (host_uid, host_gid) = identity.host_ids();
        let parent = scratch_parent(spec);
        let common = |cwd, ids, groups, uid_map, gid_map, namespaces, uts| ProcessPlan {
            argv: argv(spec),
            cwd,
            ids,
            groups,
            uid_map,
            gid_map,
            namespaces,
            umask: "0022".into(),
            personality: format!("{:#x}", spec.personality()),
            core_limit: 0,
            capabilities: "none",
            no_new_privs: true,
            stdio: "stdin /dev/null; stdout and stderr one pseudo-terminal in raw mode",
            uts,
            seccomp: seccomp.map(|p| p.describe()),
        };

        let sandbox = if spec.sandbox {
            let (scratch, layout) = filesystem::layout(spec, &identity, &parent, HostFacts::get())?;
            let mount_plan = layout.plan()?;
            let (ids, inside) = if spec.uid_range {
                (SandboxIds::range(host_uid, host_gid), (0, 0))
            } else {
                (
                    SandboxIds::ordinary(host_uid, host_gid),
                    (SANDBOX_UID, SANDBOX_GID),
                )
            };
            let mut namespaces = vec!["user", "mount", "pid", "uts", "ipc"];
            if spec.network.own_namespace() {
                namespaces.push("net");
            }
            let mut process = common(
                spec.sandbox_build_dir.clone(),
                inside,
                Vec::new(),
                Some(ids.uid.render()),
                Some(ids.gid.render()),
                namespaces,
                Some(("localhost", "(none)")),
            );
            if spec.uid_range {
                process.capabilities = "all, as root of its own user namespace (B19, D5)";
            }
            Sandbox {
                spec: spec.clone(),
                identity,
                build_dir: layout.build_dir_source.clone(),
                scratch,
                process,
                mount_plan,
                layout: Some(layout),
                seccomp,
            }
        } else {
            if Path::new(HOMELESS_SHELTER).exists() {
                return Err(SandboxError::HomelessShelter);
            }
            let needs = ScratchNeeds {
                sandbox: false,
                work: false,
                build: spec.build_dir.is_none(),
            };
            let scratch = match &spec.kept_scratch {
                Some(kept) => Scratch::reuse(kept, needs),
                None => Scratch::choose(&parent, needs),
            };
            let build_dir = spec
                .build_dir
                .clone()
                .or_else(|| scratch.build.clone())
                .expect("a scratch build directory when the spec names none");
            let groups = match identity.build_user() {
                Some(user) => supplementary_groups(user.uid, user.gid),
                None => Vec::new(),
            };
            let process = common(
                build_dir.clone(),
                (host_uid, host_gid),
                groups,
                None,
                None,
                vec![],
                None,
            );
            Sandbox {
                spec: spec.clone(),
                identity,
                build_dir,
                scratch,
                process,
                mount_plan: MountPlan { steps: Vec::new() },
                layout: None,
                seccomp,
            }
        };
        tracing::debug!(
            sandboxed = spec.sandbox,
            inputs = spec.inputs.len(),
            sandbox_paths = spec.sandbox_paths.len(),
            steps = sandbox.mount_plan.steps.len(),
            overlay = sandbox.scratch.work.is_some(),
            identity = ?sandbox.identity,
            "planned"
        );
        Ok(sandbox)
    }

    /// The index of the overlay step, if the plan has one.
    pub(crate) fn overlay_step(plan: &MountPlan) -> Option<usize> {
        plan.steps
            .iter()
            .position(|step| matches!(step, Step::Overlay { .. }))
    }

    /// The same plan with the store's mount points on disk (no overlayfs).
    pub(crate) fn plan_without_overlay(&self) -> Result<MountPlan, SandboxError> {
        let layout = self.layout.as_ref().expect("only a sandbox has an overlay");
        Ok(filesystem::without_overlay(layout, &self.scratch).plan()?)
    }

    /// The builder's environment: the spec's, with the build directory's
    /// variables pointing at the host directory when unsandboxed (B62).
    fn environment(&self) -> Vec<String> {
        let inside = self.spec.sandbox_build_dir.to_string_lossy();
        let host = self.build_dir.to_string_lossy();
        self.spec
            .env
            .iter()
            .map(|(name, value)| {
                let moved = !self.spec.sandbox
                    && BUILD_DIR_VARIABLES.contains(&name.as_str())
                    && *value == inside;
                format!("{name}={}", if moved { &host } else { value.as_str() })
            })
            .collect()
    }

    /// The launcher's description of the builder process.
    pub(crate) fn exec(&self, controlling_terminal: bool) -> Result<Exec, SandboxError> {
        let c = |text: String| {
            CString::new(text.as_bytes()).map_err(|_| {
                SandboxError::Spec(SpecError::Nul {
                    context: "string",
                    value: text.replace('\0', "\\0"),
                })
            })
        };
        let argv = self
            .process
            .argv
            .iter()
            .cloned()
            .map(c)
            .collect::<Result<Vec<_>, _>>()?;
        let envp = self
            .environment()
            .into_iter()
            .map(c)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Exec {
            program: c(self.spec.builder.to_string_lossy().into_owned())?,
            argv: CStringArray::new(argv),
            envp: CStringArray::new(envp),
            cwd: c(self.process.cwd.to_string_lossy().into_owned())?,
            umask: 0o022,
            personality: Some(self.spec.personality()),
            no_core_dumps: true,
            // An unprivileged unsandboxed builder has no capability to drop
            // (and no CAP_SETPCAP to drop the bounding set with);
            // no_new_privs keeps it from gaining any. A uid-range builder is
            // root of its own user namespace and keeps its capabilities (D5).
            drop_capabilities: (self.spec.sandbox || self.identity.is_root())
                && !self.spec.uid_range,
            last_capability: HostFacts::get().last_capability,
            no_new_privs: true,
            controlling_terminal,
            seccomp: self.seccomp.map(|profile| profile.program()),
        })
    }

    /// The namespaces, user namespace, group handling and host name of the
    /// launch.
    pub(crate) fn launch_shape(&self) -> (Namespaces, UserNamespace, bool, Option<Uts>) {
        if !self.spec.sandbox {
            let none = Namespaces {
                mount: false,
                pid: false,
                net: false,
                uts: false,
                ipc: false,
            };
            let ids = self.identity.build_user().map(|user| HostIds {
                uid: user.uid,
                gid: user.gid,
                groups: self.process.groups.clone(),
            });
            return (none, UserNamespace::None(ids), false, None);
        }
        let namespaces = Namespaces {
            net: self.spec.network.own_namespace(),
            ..Namespaces::SANDBOX
        };
        let maps = IdMaps {
            uid_map: self.process.uid_map.clone().unwrap_or_default(),
            gid_map: self.process.gid_map.clone().unwrap_or_default(),
            // A uid-range build may set its groups (B19).
            deny_setgroups: !self.spec.uid_range,
            uid: self.process.ids.0,
            gid: self.process.ids.1,
        };
        let user_namespace = if self.identity.is_root() {
            UserNamespace::AfterSetup(maps)
        } else {
            UserNamespace::AtClone(maps)
        };
        let uts = Uts {
            hostname: c"localhost".into(),
            domainname: c"(none)".into(),
        };
        (
            namespaces,
            user_namespace,
            self.identity.is_root(),
            Some(uts),
        )
    }

    /// The host path of the build directory.
    pub fn build_dir_on_host(&self) -> &Path {
        &self.build_dir
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
