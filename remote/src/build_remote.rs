//! One derivation built on another machine, as Nix's `build-remote` does
//! it: the closure of its inputs copied there (only what it lacks), the
//! derivation sent whole (`BuildDerivation`, its input derivations' outputs
//! among its sources), the log passed on as it comes, the outputs copied
//! back, each checked against the NAR hash and size the machine gives
//! before it is registered here.

use std::collections::{BTreeMap, BTreeSet};

use hermetic_store::{Derivation, LocalStore, PathInfo, StorePath};

use crate::client::{ClientError, Said, WireDerivation, WirePathInfo};
use crate::serve_client::BuildLimits;
use crate::ssh::SshStore;

/// How a build goes to a machine: the settings of the local side that
/// shape it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemoteSettings {
    /// Its time limits (`max-silent-time`, `timeout`).
    pub limits: BuildLimits,
    /// `builders-use-substitutes`: the machine fetches what it lacks of
    /// the inputs from its own substituters first; only what it still
    /// lacks is copied from here.
    pub substitute_inputs: bool,
}

/// Builds `drv` (at `drv_path`, whose inputs are valid in `store`) on
/// the machine `remote` is connected to, as `how` says, and registers
/// its outputs in `store`; `said` gets the machine's messages and its
/// builder's log lines. `held` (the outputs' locks, if the caller took them) is let go
/// before the outputs are imported, which lock each path themselves. A
/// failure there or on the way is its message, naming the machine.
pub fn build_on(
    remote: &mut SshStore,
    store: &mut LocalStore,
    drv_path: &StorePath,
    drv: &Derivation,
    held: Option<Vec<hermetic_store::lock::PathLock>>,
    how: RemoteSettings,
    said: &mut dyn FnMut(Said),
) -> Result<BTreeMap<String, StorePath>, String> {
    let uri = remote.uri.clone();
    let uri = uri.as_str();
    let store_dir = store.layout().store_dir.clone();
    let printed_drv = store_dir.print(drv_path);
    let local = |e: hermetic_store::StoreError| hermetic_store::error_chain(&e);
    let lost = |remote: &SshStore, e: ClientError| {
        let said = remote.said();
        format!(
            "build of '{printed_drv}' on '{uri}' failed: {}{}",
            hermetic_store::error_chain(&e),
            if said.is_empty() {
                String::new()
            } else {
                format!(": {said}")
            }
        )
    };

    // The inputs: the sources and the input derivations' outputs, with
    // everything they refer to.
    let mut inputs: Vec<StorePath> = drv.input_srcs.iter().cloned().collect();
    for (input, wanted) in &drv.input_drvs {
        let input_drv = store.read_derivation(input).map_err(local)?;
        for name in wanted {
            if let Some(path) = input_drv.outputs.get(name).and_then(|o| o.path()) {
                inputs.push(path.clone());
            }
        }
    }
    let closure = store.closure(&inputs).map_err(local)?;
    let printed: BTreeSet<String> = closure.iter().map(|p| store_dir.print(p)).collect();
    let there = remote
        .client
        .query_valid_paths(&printed, how.substitute_inputs, said)
        .map_err(|e| lost(remote, e))?;
    let missing: Vec<PathInfo> = closure
        .iter()
        .filter(|p| !there.contains(&store_dir.print(p)))
        .map(|p| store.query_info(p))
        .collect::<Result<_, _>>()
        .map_err(local)?;
    for info in in_dependency_order(missing) {
        let wire = WirePathInfo {
            deriver: info
                .deriver
                .as_ref()
                .map(|d| store_dir.print(d))
                .unwrap_or_default(),
            nar_hash: info.nar_hash.to_hex(),
            references: info.references.iter().map(|r| store_dir.print(r)).collect(),
            registration_time: info.registration_time.max(0) as u64,
            nar_size: info.nar_size,
            ultimate: false,
            sigs: info.sigs.iter().cloned().collect(),
            ca: info.ca.clone().unwrap_or_default(),
        };
        let real = store.layout().real_path(&info.path);
        let printed = store_dir.print(&info.path);
        // A NAR that cannot be made here is said as such, not as the
        // connection's failure.
        let mut unmade = None;
        let mut dump = |mut w: &mut dyn std::io::Write| {
            hermetic_store::nar::dump(&real, &mut w).map_err(|e| {
                let said = e.to_string();
                unmade = Some(e);
                std::io::Error::other(said)
            })
        };
        let added = remote
            .client
            .add_to_store_nar(&printed, &wire, &mut dump, said);
        if let Some(e) = unmade {
            return Err(format!("cannot copy '{printed}' to '{uri}': {e}"));
        }
        added.map_err(|e| lost(remote, e))?;
    }

    // The build, its input derivations' outputs among its sources.
    let wire = WireDerivation {
        outputs: drv
            .outputs
            .iter()
            .map(|(name, output)| (name.clone(), output.parts(&store_dir)))
            .collect(),
        input_srcs: if drv.input_drvs.is_empty() {
            drv.input_srcs.iter().map(|p| store_dir.print(p)).collect()
        } else {
            printed
        },
        system: drv.system.clone(),
        builder: drv.builder.clone(),
        args: drv.args.clone(),
        env: drv.env.clone(),
    };
    let result = remote
        .client
        .build_derivation(&printed_drv, &wire, how.limits, said)
        .map_err(|e| lost(remote, e))?;
    if !result.success() {
        return Err(format!(
            "build of '{printed_drv}' on '{uri}' failed: {}",
            result.error.trim_end()
        ));
    }

    // The outputs, back: checked as they are imported.
    let mut outputs = BTreeMap::new();
    let mut fetch = Vec::new();
    for (name, output) in &drv.outputs {
        let Some(path) = output.path() else {
            return Err(format!(
                "cannot build '{printed_drv}' remotely: its output '{name}' has no path yet"
            ));
        };
        outputs.insert(name.clone(), path.clone());
        if store.is_valid(path).map_err(local)? {
            continue;
        }
        let printed_path = store_dir.print(path);
        let info = remote
            .client
            .query_path_info(&printed_path, said)
            .map_err(|e| lost(remote, e))?
            .ok_or_else(|| {
                format!("'{uri}' did not produce '{printed_path}' of '{printed_drv}'")
            })?;
        fetch.push(path_info(&store_dir, path, drv_path, &info)?);
    }
    drop(held);
    for info in in_dependency_order(fetch) {
        let printed_path = store_dir.print(&info.path);
        remote
            .client
            .nar_from_path(&printed_path, said)
            .map_err(|e| lost(remote, e))?;
        let size = info.nar_size;
        store
            .import_nar(info, &mut remote.client.nar(size), None)
            .map_err(|e| {
                format!(
                    "cannot copy '{printed_path}' from '{uri}': {}",
                    hermetic_store::error_chain(&e)
                )
            })?;
    }
    Ok(outputs)
}

/// An output's metadata as the machine gives it, for its import here.
fn path_info(
    store_dir: &hermetic_store::StoreDir,
    path: &StorePath,
    drv_path: &StorePath,
    info: &WirePathInfo,
) -> Result<PathInfo, String> {
    let printed = store_dir.print(path);
    let nar_hash =
        hermetic_store::Hash::parse(&info.nar_hash, Some(hermetic_store::HashAlgo::Sha256))
            .map_err(|e| format!("the NAR hash of '{printed}' is not one: {e}"))?;
    let references = info
        .references
        .iter()
        .map(|r| store_dir.parse(r))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("a reference of '{printed}' is not a store path: {e}"))?;
    Ok(PathInfo {
        path: path.clone(),
        nar_hash,
        nar_size: info.nar_size,
        references,
        deriver: Some(drv_path.clone()),
        registration_time: 0,
        ca: (!info.ca.is_empty()).then(|| info.ca.clone()),
        sigs: info.sigs.iter().cloned().collect(),
        ultimate: false,
    })
}

/// Paths ordered so that each comes after those of them it refers to.
fn in_dependency_order(mut paths: Vec<PathInfo>) -> Vec<PathInfo> {
    let mut ordered = Vec::with_capacity(paths.len());
    let mut placed: BTreeSet<StorePath> = BTreeSet::new();
    while !paths.is_empty() {
        let among: BTreeSet<StorePath> = paths.iter().map(|p| p.path.clone()).collect();
        let (ready, rest): (Vec<PathInfo>, Vec<PathInfo>) = paths.into_iter().partition(|info| {
            info.references
                .iter()
                .all(|r| *r == info.path || placed.contains(r) || !among.contains(r))
        });
        if ready.is_empty() {
            // A cycle, which a store does not hold: keep the order given.
            ordered.extend(rest);
            break;
        }
        placed.extend(ready.iter().map(|p| p.path.clone()));
        ordered.extend(ready);
        paths = rest;
    }
    ordered
}
