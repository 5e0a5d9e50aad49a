//! Helpers for the build tests: a store of the test's own with its own
//! nix.conf, derivations made with the store library (output paths
//! computed as Nix computes them), and `hermetic build` run against it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hermetic_store::{
    Derivation, DerivationOutput, Hash, IngestionMethod, LocalStore, StoreDir, StoreLayout,
    StorePath,
};

use crate::{TempDir, hermetic};

/// A store for builds, with its own configuration directory.
pub struct BuildHost {
    /// Holds the store, its state and the configuration.
    pub dir: TempDir,
    diverted: bool,
}

impl BuildHost {
    /// A store under a root (`--store DIR`): paths written `/nix/store`,
    /// so the sandbox is forced (B5).
    pub fn diverted(label: &str) -> BuildHost {
        Self::new(label, true)
    }

    /// A store whose logical directory is its real one (`NIX_STORE_DIR`
    /// and `NIX_STATE_DIR` in the test's directory): the `sandbox` setting
    /// decides.
    pub fn undiverted(label: &str) -> BuildHost {
        Self::new(label, false)
    }

    fn new(label: &str, diverted: bool) -> BuildHost {
        let host = BuildHost {
            dir: TempDir::new(label),
            diverted,
        };
        std::fs::create_dir_all(host.dir.path.join("conf")).unwrap();
        host.conf("");
        host
    }

    /// Writes nix.conf: the test's base settings, then `extra`.
    pub fn conf(&self, extra: &str) {
        let users = if nix::unistd::geteuid().is_root() {
            "build-users-group = nixbld\n"
        } else {
            "build-users-group =\n"
        };
        std::fs::write(
            self.dir.path.join("conf/nix.conf"),
            format!("sandbox = true\nsandbox-fallback = false\n{users}{extra}\n"),
        )
        .unwrap();
    }

    /// The store's layout.
    pub fn layout(&self) -> StoreLayout {
        if self.diverted {
            StoreLayout::under_root(&self.dir.path.join("root"))
        } else {
            let store = self.dir.path.join("store");
            StoreLayout {
                store_dir: StoreDir::new(store.to_str().unwrap()).unwrap(),
                real_store_dir: store,
                state_dir: self.dir.path.join("state"),
                log_dir: self.dir.path.join("log"),
            }
        }
    }

    /// The host-wide state directory its commands are given (build-user
    /// locks, cgroup records): the test's own, so that tests running at
    /// once do not see each other's locks. For an undiverted store it is
    /// the store's state directory.
    pub fn host_state_dir(&self) -> PathBuf {
        if self.diverted {
            self.dir.path.join("host-state")
        } else {
            self.dir.path.join("state")
        }
    }

    /// `hermetic ARGS` on this store, with this configuration.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = self.with_env(hermetic());
        if self.diverted {
            command.arg("--store").arg(self.dir.path.join("root"));
        }
        command.args(args);
        command
    }

    /// `sandbox-run` with this configuration and host state, and the
    /// store as the environment names it (an undiverted one); a diverted
    /// store needs `--store` among its arguments.
    pub fn sandbox_run(&self) -> Command {
        self.with_env(crate::sandbox_run())
    }

    fn with_env(&self, program: PathBuf) -> Command {
        let mut command = Command::new(program);
        command
            .env("NIX_CONF_DIR", self.dir.path.join("conf"))
            .env_remove("NIX_CONFIG")
            .env("NIX_STATE_DIR", self.host_state_dir());
        if !self.diverted {
            command.env("NIX_STORE_DIR", self.dir.path.join("store"));
        }
        command
    }

    /// Runs `hermetic ARGS`.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Opens the store.
    pub fn store(&self) -> LocalStore {
        LocalStore::open(self.layout()).unwrap()
    }

    /// The printed path of a store path.
    pub fn print(&self, path: &StorePath) -> String {
        self.layout().store_dir.print(path)
    }

    /// Where a store path really is.
    pub fn real(&self, path: &StorePath) -> PathBuf {
        self.layout().real_path(path)
    }
}

/// A derivation to make: `/bin/sh -c SCRIPT` with attributes.
pub struct DrvSpec<'a> {
    /// Its name.
    pub name: &'a str,
    /// The shell script its builder runs.
    pub script: &'a str,
    /// More attributes.
    pub env: Vec<(&'a str, String)>,
    /// Input derivations and the outputs used.
    pub inputs: Vec<(StorePath, Vec<&'a str>)>,
    /// Input sources.
    pub sources: Vec<StorePath>,
    /// Output names (default `out`).
    pub outputs: Vec<&'a str>,
    /// A fixed output: method and hash.
    pub fixed: Option<(IngestionMethod, Hash)>,
}

impl<'a> DrvSpec<'a> {
    /// A derivation `name` running `script`.
    pub fn new(name: &'a str, script: &'a str) -> Self {
        DrvSpec {
            name,
            script,
            env: Vec::new(),
            inputs: Vec::new(),
            sources: Vec::new(),
            outputs: vec!["out"],
            fixed: None,
        }
    }

    /// Adds an attribute.
    pub fn attr(mut self, name: &'a str, value: impl Into<String>) -> Self {
        self.env.push((name, value.into()));
        self
    }

    /// Uses an output of another derivation, exported as attribute `name`.
    pub fn input(
        mut self,
        name: &'a str,
        drv: &StorePath,
        output: &'a str,
        host: &BuildHost,
    ) -> Self {
        let store = host.store();
        let outputs: BTreeMap<_, _> = store.derivation_outputs(drv).unwrap().into_iter().collect();
        self.env.push((name, host.print(&outputs[output])));
        self.inputs.push((drv.clone(), vec![output]));
        self
    }

    /// Adds an input source (a valid store path).
    pub fn source(mut self, path: StorePath) -> Self {
        self.sources.push(path);
        self
    }

    /// Makes it fixed-output.
    pub fn fixed(mut self, method: IngestionMethod, hash: Hash) -> Self {
        self.fixed = Some((method, hash));
        self
    }

    /// Adds the derivation to the host's store and returns its path.
    pub fn add_to(self, host: &BuildHost) -> StorePath {
        let layout = host.layout();
        let dir = &layout.store_dir;
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        env.insert("name".into(), self.name.into());
        env.insert("system".into(), hermetic_host::system());
        env.insert("builder".into(), "/bin/sh".into());
        if self.outputs != ["out"] {
            env.insert("outputs".into(), self.outputs.join(" "));
        }
        for (k, v) in &self.env {
            env.insert((*k).into(), v.clone());
        }
        // As Nix: each output's variable exists (empty) while the paths are
        // computed, then holds its path.
        for output in &self.outputs {
            env.insert((*output).into(), String::new());
        }
        let placeholder =
            StorePath::from_base_name(&format!("{}-placeholder", "0".repeat(32))).unwrap();
        let mut drv = Derivation {
            name: self.name.into(),
            outputs: self
                .outputs
                .iter()
                .map(|o| {
                    (
                        o.to_string(),
                        DerivationOutput::InputAddressed(placeholder.clone()),
                    )
                })
                .collect(),
            input_drvs: self
                .inputs
                .iter()
                .map(|(p, outs)| {
                    (
                        p.clone(),
                        outs.iter().map(|o| o.to_string()).collect::<BTreeSet<_>>(),
                    )
                })
                .collect(),
            input_srcs: self.sources.iter().cloned().collect(),
            system: hermetic_host::system(),
            builder: "/bin/sh".into(),
            args: vec!["-c".into(), self.script.into()],
            env,
        };
        if let Some((method, hash)) = &self.fixed {
            let path = dir
                .make_fixed_output_path(*method, hash, self.name, &BTreeSet::new(), false)
                .unwrap();
            drv.outputs.insert(
                "out".into(),
                DerivationOutput::Fixed {
                    path: path.clone(),
                    method: *method,
                    hash: hash.clone(),
                },
            );
            drv.env.insert("out".into(), dir.print(&path));
        } else {
            let mut store = host.store();
            let paths = drv
                .expected_output_paths(dir, &mut |p| store.drv_hashes(p))
                .unwrap();
            for (name, path) in paths {
                let path = path.unwrap();
                drv.env.insert(name.clone(), dir.print(&path));
                drv.outputs
                    .insert(name, DerivationOutput::InputAddressed(path));
            }
            return store.add_derivation(&drv).unwrap();
        }
        host.store().add_derivation(&drv).unwrap()
    }
}

/// The outputs a derivation in the host's store names.
pub fn outputs_of(host: &BuildHost, drv: &StorePath) -> BTreeMap<String, StorePath> {
    host.store()
        .derivation_outputs(drv)
        .unwrap()
        .into_iter()
        .collect()
}

/// The stderr of an output, as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A path's real location as text.
pub fn text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

impl DrvSpec<'_> {
    /// Adds the derivation with these outputs.
    pub fn add_outputs(mut self, outputs: &[&'static str], host: &BuildHost) -> StorePath {
        self.outputs = outputs.to_vec();
        self.env.retain(|(k, _)| *k != "outputs");
        self.add_to(host)
    }
}
