//! The reference checks a derivation can ask for on its outputs (B87):
//! `allowedReferences`, `disallowedReferences`, `allowedRequisites`,
//! `disallowedRequisites`, `maxSize` and `maxClosureSize`, from the
//! environment or, with structured attributes, from `outputChecks.<out>`.

use std::collections::{BTreeMap, BTreeSet};

use hermetic_store::{LocalStore, PathInfo, StoreDir, StorePath};
use serde_json::Value;

use crate::attrs::Attrs;
use crate::error::BuildError;

/// The checks asked for one output.
#[derive(Debug, Default)]
struct OutputChecks {
    allowed_references: Option<Vec<String>>,
    disallowed_references: Vec<String>,
    allowed_requisites: Option<Vec<String>>,
    disallowed_requisites: Vec<String>,
    max_size: Option<u64>,
    max_closure_size: Option<u64>,
}

fn strings(value: Option<&Value>) -> Option<Vec<String>> {
    value.and_then(Value::as_array).map(|items| {
        items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    })
}

fn checks_for(attrs: &Attrs<'_>, output: &str) -> OutputChecks {
    match attrs.structured() {
        Some(map) => {
            let Some(checks) = map.get("outputChecks").and_then(|c| c.get(output)) else {
                return OutputChecks::default();
            };
            OutputChecks {
                allowed_references: strings(checks.get("allowedReferences")),
                disallowed_references: strings(checks.get("disallowedReferences"))
                    .unwrap_or_default(),
                allowed_requisites: strings(checks.get("allowedRequisites")),
                disallowed_requisites: strings(checks.get("disallowedRequisites"))
                    .unwrap_or_default(),
                max_size: checks.get("maxSize").and_then(Value::as_u64),
                max_closure_size: checks.get("maxClosureSize").and_then(Value::as_u64),
            }
        }
        None => {
            let list = |name: &str| attrs.string(name).map(|_| attrs.strings(name));
            OutputChecks {
                allowed_references: list("allowedReferences"),
                disallowed_references: attrs.strings("disallowedReferences"),
                allowed_requisites: list("allowedRequisites"),
                disallowed_requisites: attrs.strings("disallowedRequisites"),
                max_size: None,
                max_closure_size: None,
            }
        }
    }
}

/// Store paths named by a check: paths, or names of this derivation's outputs.
fn resolve(
    specs: &[String],
    store_dir: &StoreDir,
    outputs: &BTreeMap<String, StorePath>,
) -> Result<BTreeSet<StorePath>, BuildError> {
    specs
        .iter()
        .map(|spec| match outputs.get(spec) {
            Some(path) => Ok(path.clone()),
            None => store_dir
                .parse(spec)
                .map_err(|_| BuildError::IllegalReferenceSpecifier(spec.clone())),
        })
        .collect()
}

/// Checks every output's references and sizes. `infos` are the new
/// outputs (not registered yet); their references may be valid paths or
/// each other.
pub fn check_outputs(
    store: &LocalStore,
    attrs: &Attrs<'_>,
    outputs: &BTreeMap<String, StorePath>,
    infos: &[PathInfo],
) -> Result<(), BuildError> {
    let store_dir = &store.layout().store_dir;
    let new: BTreeMap<&StorePath, &PathInfo> = infos.iter().map(|i| (&i.path, i)).collect();
    let closure_of = |start: &StorePath| -> Result<(BTreeSet<StorePath>, u64), BuildError> {
        let mut seen = BTreeSet::new();
        let mut size = 0;
        let mut queue = vec![start.clone()];
        while let Some(path) = queue.pop() {
            if !seen.insert(path.clone()) {
                continue;
            }
            let (references, nar_size) = match new.get(&path) {
                Some(info) => (info.references.clone(), info.nar_size),
                None => {
                    let info = store.query_info(&path)?;
                    (info.references, info.nar_size)
                }
            };
            size += nar_size;
            queue.extend(references);
        }
        Ok((seen, size))
    };
    for (name, path) in outputs {
        let checks = checks_for(attrs, name);
        let Some(info) = new.get(path) else { continue };
        let printed = store_dir.print(path);
        if let Some(max) = checks.max_size
            && info.nar_size > max
        {
            return Err(BuildError::TooLarge {
                path: printed,
                size: info.nar_size,
                limit: max,
            });
        }
        let needs_closure = checks.allowed_requisites.is_some()
            || !checks.disallowed_requisites.is_empty()
            || checks.max_closure_size.is_some();
        let (closure, closure_size) = if needs_closure {
            closure_of(path)?
        } else {
            (BTreeSet::new(), 0)
        };
        if let Some(max) = checks.max_closure_size
            && closure_size > max
        {
            return Err(BuildError::ClosureTooLarge {
                path: printed,
                size: closure_size,
                limit: max,
            });
        }
        // As Nix: a reference to itself counts against the reference
        // checks; only the requisite checks leave the output itself out.
        let references = &info.references;
        let mut closure_without_self = closure.clone();
        closure_without_self.remove(path);
        let mut bad = BTreeSet::new();
        if let Some(allowed) = &checks.allowed_references {
            let allowed = resolve(allowed, store_dir, outputs)?;
            bad.extend(references.iter().filter(|r| !allowed.contains(*r)).cloned());
        }
        let disallowed = resolve(&checks.disallowed_references, store_dir, outputs)?;
        bad.extend(
            references
                .iter()
                .filter(|r| disallowed.contains(*r))
                .cloned(),
        );
        if let Some(allowed) = &checks.allowed_requisites {
            let allowed = resolve(allowed, store_dir, outputs)?;
            bad.extend(
                closure_without_self
                    .iter()
                    .filter(|r| !allowed.contains(*r))
                    .cloned(),
            );
        }
        let disallowed = resolve(&checks.disallowed_requisites, store_dir, outputs)?;
        bad.extend(
            closure_without_self
                .iter()
                .filter(|r| disallowed.contains(*r))
                .cloned(),
        );
        if !bad.is_empty() {
            let list: String = bad
                .iter()
                .map(|p| format!("\n  {}", store_dir.print(p)))
                .collect();
            return Err(BuildError::ForbiddenReferences {
                output: name.clone(),
                list,
            });
        }
    }
    Ok(())
}
