//! Where each build runs when `builders` names machines: Nix's
//! `build-remote` decision. A machine that fits the derivation (system,
//! features) and has a free slot takes it, the least loaded for its speed
//! first; with none free it waits if it cannot be built here, else runs
//! here; `preferLocalBuild` derivations run here unless `max-jobs` is 0.
//! `max-jobs = 0` builds only remotely. A machine that cannot be reached
//! is not tried again in this run.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use hermetic_config::settings::Settings;
use hermetic_remote::client::Said;
use hermetic_remote::machines::{Choice, Machine, choose};
use hermetic_remote::ssh::SshStore;
use hermetic_store::{Derivation, LocalStore, StoreLayout, StorePath};

use crate::attrs::Attrs;
use crate::error::BuildError;
use crate::goal::BuildFailure;
use crate::log::{SharedLog, SharedLogFile};
use crate::schedule::Progress;

/// Where one build goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Here.
    Local,
    /// On the machine at this index.
    Remote(usize),
}

/// What to do with a ready build now.
#[derive(Debug)]
pub enum Decision {
    /// Start it there.
    Start(Place),
    /// Leave it until a build ends.
    Wait,
    /// It can be built nowhere: it fails with this error.
    Nowhere(BuildError),
}

/// The machines and their slots, for one run of builds.
#[derive(Default)]
pub struct Dispatcher {
    /// The machines of `builders`.
    pub machines: Vec<Machine>,
    busy: Vec<u64>,
    disabled: BTreeSet<usize>,
    local_running: usize,
    /// Connections a build left open, by machine: the next build there
    /// uses one instead of logging in again.
    idle: Vec<Vec<SshStore>>,
}

impl Dispatcher {
    /// The machines of `builders` (an `@FILE` that does not exist is no
    /// machine, as in Nix).
    pub fn new(settings: &Settings) -> Result<Dispatcher, BuildError> {
        let machines =
            hermetic_remote::machines::parse(&settings.builders, &settings.system, &mut |file| {
                std::fs::read_to_string(file).ok()
            })?;
        Ok(Dispatcher {
            busy: vec![0; machines.len()],
            idle: machines.iter().map(|_| Vec::new()).collect(),
            machines,
            ..Dispatcher::default()
        })
    }

    /// Decides for a ready build of `drv` (printed `drv_path`; `check`: a
    /// `--check` build, which runs here, as in Nix); `say` gets Nix's
    /// warning when no machine fits.
    pub fn decide(
        &self,
        settings: &Settings,
        drv: &Derivation,
        drv_path: &str,
        check: bool,
        say: &dyn Fn(String),
    ) -> Decision {
        let attrs = Attrs::of(drv).ok();
        let required = attrs
            .as_ref()
            .map(|a| a.strings("requiredSystemFeatures"))
            .unwrap_or_default();
        let local_kind = crate::mode::builds_here(settings, &drv.system, &required);
        let features: BTreeSet<String> = required.into_iter().collect();
        let local_allowed = settings.max_jobs > 0;
        let local_free = local_allowed && self.local_running < settings.max_jobs;
        let here = || {
            if local_free {
                Decision::Start(Place::Local)
            } else {
                Decision::Wait
            }
        };
        let prefer_local = check || attrs.as_ref().is_some_and(|a| a.bool("preferLocalBuild"));
        if self.machines.is_empty() || (prefer_local && local_allowed && local_kind) {
            return if local_allowed {
                here()
            } else {
                Decision::Nowhere(BuildError::CannotStart(
                    "either increase '--max-jobs' or enable remote builds.",
                ))
            };
        }
        let system = drv.system.as_str();
        match choose(
            &self.machines,
            &self.busy,
            &self.disabled,
            system,
            &features,
        ) {
            Choice::Machine(index) => Decision::Start(Place::Remote(index)),
            // Busy machines: here if it can be, else when one is free.
            Choice::AllBusy if local_kind && local_free => Decision::Start(Place::Local),
            Choice::AllBusy => Decision::Wait,
            Choice::NoneFits => {
                let decision = if local_allowed {
                    // Here, where the build says what it needs if it
                    // cannot be built here either.
                    here()
                } else {
                    Decision::Nowhere(BuildError::CannotStart(
                        "remote machines may not have all required system features.",
                    ))
                };
                let builds_here = local_kind && local_allowed;
                if !builds_here && !matches!(decision, Decision::Wait) {
                    say(self.none_fits(drv_path, system, &features));
                }
                decision
            }
        }
    }

    /// Nix's hint when no machine fits a derivation.
    fn none_fits(&self, drv_path: &str, system: &str, features: &BTreeSet<String>) -> String {
        let name = drv_path.rsplit('/').next().unwrap_or(drv_path);
        let join = |items: &mut dyn Iterator<Item = &String>| {
            items.map(String::as_str).collect::<Vec<_>>().join(", ")
        };
        let mut text = format!(
            "Failed to find a machine for remote build!\nderivation: {name}\nrequired (system, \
             features): ({system}, {})\n{} available machines:\n(systems, maxjobs, \
             supportedFeatures, mandatoryFeatures)",
            join(&mut features.iter()),
            self.machines.len()
        );
        for machine in &self.machines {
            text.push_str(&format!(
                "\n({}, {}, {}, {})",
                join(&mut machine.systems.iter()),
                machine.max_jobs,
                join(&mut machine.supported_features.iter()),
                join(&mut machine.mandatory_features.iter())
            ));
        }
        text
    }

    /// A build starts there.
    pub fn take(&mut self, place: Place) {
        match place {
            Place::Local => self.local_running += 1,
            Place::Remote(index) => self.busy[index] += 1,
        }
    }

    /// A build there ended.
    pub fn release(&mut self, place: Place) {
        match place {
            Place::Local => self.local_running -= 1,
            Place::Remote(index) => self.busy[index] -= 1,
        }
    }

    /// The machine at `index` could not be reached: not tried again.
    pub fn disable(&mut self, index: usize) {
        self.disabled.insert(index);
    }

    /// An open connection to the machine at `index` a build left, if any.
    pub fn connection(&mut self, index: usize) -> Option<SshStore> {
        while let Some(mut connection) = self.idle[index].pop() {
            if connection.is_open() {
                return Some(connection);
            }
        }
        None
    }

    /// Keeps a connection to the machine at `index` for the next build.
    pub fn keep(&mut self, index: usize, connection: SshStore) {
        self.idle[index].push(connection);
    }
}

/// How a build thread ended.
pub enum Ended {
    /// The build ran: its outputs, or why it failed.
    Built(Result<BTreeMap<String, StorePath>, BuildFailure>),
    /// It ran on a machine and succeeded: its outputs, and the connection
    /// for the next build there.
    BuiltThere(BTreeMap<String, StorePath>, SshStore),
    /// Its machine could not be reached (the message says so): the build
    /// is placed again.
    Unreachable(String),
}

/// A build for a machine: the machine, the derivation, and its outputs'
/// locks if they were taken.
pub struct RemoteBuild<'a> {
    /// The machine.
    pub machine: &'a Machine,
    /// Its time limits and whether the machine substitutes inputs.
    pub how: hermetic_remote::build_remote::RemoteSettings,
    /// The derivation's path.
    pub drv_path: &'a StorePath,
    /// The derivation.
    pub drv: &'a Derivation,
    /// Its outputs' locks.
    pub held: Option<Vec<hermetic_store::lock::PathLock>>,
    /// Where its log is kept here (`keep-build-log`), as a local build's.
    pub log_file: Option<hermetic_store::local::build_log::BuildLogFile>,
    /// Readable when the run is interrupted: the machine's connection is
    /// ended, which ends the build there.
    pub cancel: Option<std::os::fd::BorrowedFd<'a>>,
}

/// Runs `build`: connects to its machine (or uses `connection`), then
/// tells `progress` of `started` (with the machine), passes the builder's
/// lines to those watching the build and registers the outputs here.
pub fn build_remotely(
    build: RemoteBuild<'_>,
    connection: Option<SshStore>,
    layout: &StoreLayout,
    log: SharedLog,
    started: Progress,
    progress: &(dyn Fn(Progress) + Sync),
) -> Ended {
    let RemoteBuild {
        machine,
        how,
        drv_path,
        drv,
        held,
        log_file,
        cancel,
    } = build;
    // What the machine says on stderr (for ssh://, the builder's log) is
    // the build's log too, as Nix's hook passes it on; both are kept in
    // the log file as they come.
    let _watch = crate::log::watch(drv_path, log);
    let kept = SharedLogFile::new(log_file);
    let mut stderr_lines = crate::log::PrefixedLines::new(drv_path, &drv.name);
    let stderr_kept = kept.clone();
    let on_stderr = Box::new(move |said: &[u8]| {
        stderr_kept.write(said);
        let _ = stderr_lines.write_all(said);
    });
    let opened = match connection {
        Some(connection) => {
            connection.redirect(on_stderr);
            Ok(connection)
        }
        None => SshStore::open(machine, on_stderr),
    };
    let mut remote = match opened {
        Ok(remote) => remote,
        Err(e) => {
            kept.finish();
            return Ended::Unreachable(format!(
                "cannot build on '{}': {}",
                machine.store_uri,
                hermetic_store::error_chain(&e)
            ));
        }
    };
    progress(started);
    let mut lines = crate::log::PrefixedLines::new(drv_path, &drv.name);
    let result = LocalStore::open(layout.clone())
        .map_err(BuildFailure::from)
        .and_then(|mut store| {
            let mut said = |said: Said| match said {
                Said::BuildLog(line) => {
                    let line = format!("{line}\n");
                    kept.write(line.as_bytes());
                    let _ = lines.write_all(line.as_bytes());
                }
                Said::Line(text) => progress(Progress::Message(text)),
                Said::Started(_) => {}
            };
            remote
                .cancellable(cancel, |remote| {
                    hermetic_remote::build_remote::build_on(
                        remote, &mut store, drv_path, drv, held, how, &mut said,
                    )
                })
                .map_err(|e| {
                    if crate::schedule::cancelled(cancel) {
                        BuildError::Interrupted(layout.store_dir.print(drv_path)).into()
                    } else {
                        BuildError::Remote(e).into()
                    }
                })
        });
    // Its lines go nowhere until the next build takes it.
    remote.redirect(Box::new(|_| {}));
    if let Some(warning) = kept.finish() {
        progress(Progress::Message(warning));
    }
    match result {
        Ok(outputs) => Ended::BuiltThere(outputs, remote),
        Err(failure) => Ended::Built(Err(failure)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drv(system: &str, env: &[(&str, &str)]) -> Derivation {
        Derivation {
            name: "x".into(),
            outputs: Default::default(),
            input_drvs: Default::default(),
            input_srcs: Default::default(),
            system: system.into(),
            builder: "/bin/sh".into(),
            args: Vec::new(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    fn settings(builders: &str, max_jobs: usize) -> Settings {
        let mut settings = Settings::for_caller();
        settings.builders = builders.into();
        settings.max_jobs = max_jobs;
        settings.system = "x86_64-linux".into();
        settings.system_features = vec!["big".into()];
        settings
    }

    fn place(decision: Decision) -> Option<Place> {
        match decision {
            Decision::Start(place) => Some(place),
            _ => None,
        }
    }

    #[test]
    fn builds_go_where_nix_sends_them() {
        let quiet = |_: String| {};
        let s = settings("a x86_64-linux - 1; b aarch64-linux - 2", 1);
        let mut d = Dispatcher::new(&s).unwrap();
        let here = drv("x86_64-linux", &[]);
        // A free machine first, then here, then wait.
        assert_eq!(
            place(d.decide(&s, &here, "/d", false, &quiet)),
            Some(Place::Remote(0))
        );
        d.take(Place::Remote(0));
        assert_eq!(
            place(d.decide(&s, &here, "/d", false, &quiet)),
            Some(Place::Local)
        );
        d.take(Place::Local);
        assert!(matches!(
            d.decide(&s, &here, "/d", false, &quiet),
            Decision::Wait
        ));
        // Only b builds aarch64; busy, it is waited for.
        let arm = drv("aarch64-linux", &[]);
        assert_eq!(
            place(d.decide(&s, &arm, "/d", false, &quiet)),
            Some(Place::Remote(1))
        );
        d.take(Place::Remote(1));
        d.take(Place::Remote(1));
        assert!(matches!(
            d.decide(&s, &arm, "/d", false, &quiet),
            Decision::Wait
        ));
        // preferLocalBuild stays here.
        d.release(Place::Local);
        d.release(Place::Remote(0));
        let local = drv("x86_64-linux", &[("preferLocalBuild", "1")]);
        assert_eq!(
            place(d.decide(&s, &local, "/d", false, &quiet)),
            Some(Place::Local)
        );
        // A --check build stays here.
        assert_eq!(
            place(d.decide(&s, &here, "/d", true, &quiet)),
            Some(Place::Local)
        );
        // An unreachable machine is passed over.
        d.disable(0);
        assert_eq!(
            place(d.decide(&s, &here, "/d", false, &quiet)),
            Some(Place::Local)
        );
    }

    #[test]
    fn with_max_jobs_0_nothing_is_built_here() {
        let said = std::cell::RefCell::new(Vec::new());
        let say = |text: String| said.borrow_mut().push(text);
        let none = settings("", 0);
        let d = Dispatcher::new(&none).unwrap();
        let here = drv("x86_64-linux", &[("preferLocalBuild", "1")]);
        let Decision::Nowhere(error) = d.decide(&none, &here, "/d", false, &say) else {
            panic!("built somewhere")
        };
        assert_eq!(
            error.to_string(),
            "unable to start any build; either increase '--max-jobs' or enable remote builds.\n\
             https://nixos.org/manual/nix/stable/advanced-topics/distributed-builds.html"
        );
        let s = settings("a x86_64-linux - 1 1 - -", 0);
        let d = Dispatcher::new(&s).unwrap();
        let big = drv("x86_64-linux", &[("requiredSystemFeatures", "big")]);
        let Decision::Nowhere(error) = d.decide(&s, &big, "/nix/store/h-big.drv", false, &say)
        else {
            panic!("built somewhere")
        };
        assert!(
            error
                .to_string()
                .contains("remote machines may not have all required")
        );
        assert_eq!(
            said.borrow()[0],
            "Failed to find a machine for remote build!\nderivation: h-big.drv\nrequired (system, \
             features): (x86_64-linux, big)\n1 available machines:\n(systems, maxjobs, \
             supportedFeatures, mandatoryFeatures)\n(x86_64-linux, 1, , )"
        );
    }
}
