//! `exportReferencesGraph`: the closure of some inputs handed to the
//! builder, as Nix hands it. Without structured attributes the attribute is
//! `name1 path1 name2 path2 …` and each `nameN` becomes a file in the build
//! directory in `nix-store --register-validity`'s format (deriver left
//! empty); with them it is an object of names to lists of paths, and each
//! name's value in `.attrs.json` becomes the closure's path infos (path,
//! NAR hash in base32, NAR size, references, content address, closure
//! size). A path must be in the derivation's input closure; a derivation
//! in the closure brings its outputs' closures too.

use std::collections::{BTreeMap, BTreeSet};

use hermetic_store::{LocalStore, StorePath};
use serde_json::Value;

use crate::attrs::Attrs;
use crate::env::BuildDirFiles;
use crate::error::BuildError;

/// What a build exports: files (without structured attributes) and the
/// values replacing attributes of `.attrs.json` (with them).
#[derive(Debug, Default)]
pub struct Exported {
    /// Files for the build directory.
    pub files: BuildDirFiles,
    /// Structured attributes' new values.
    pub json: BTreeMap<String, Value>,
}

/// The exports of `drv`, whose input closure is `inputs`.
pub fn exports(
    store: &LocalStore,
    attrs: &Attrs<'_>,
    inputs: &BTreeSet<StorePath>,
    printed: &str,
) -> Result<Exported, BuildError> {
    let bad = |reason: String| BuildError::BadAttrs {
        drv: printed.to_owned(),
        reason,
    };
    let mut exported = Exported::default();
    match attrs.structured() {
        None => {
            let Some(text) = attrs.string("exportReferencesGraph") else {
                return Ok(exported);
            };
            let words: Vec<&str> = text.split_whitespace().collect();
            if words.len() % 2 != 0 {
                return Err(bad(format!(
                    "odd number of tokens in 'exportReferencesGraph': '{text}'"
                )));
            }
            for pair in words.chunks(2) {
                let (file, path) = (pair[0], pair[1]);
                if !is_file_name(file) {
                    return Err(bad(format!(
                        "invalid file name '{file}' in 'exportReferencesGraph'"
                    )));
                }
                let path = store_path(store, path, &bad)?;
                let closure = export_closure(store, &[path], inputs, &bad)?;
                exported
                    .files
                    .push((file.to_owned(), registration(store, &closure)?.into_bytes()));
            }
        }
        Some(json) => {
            let Some(Value::Object(graph)) = json.get("exportReferencesGraph") else {
                return Ok(exported);
            };
            for (name, paths) in graph {
                let paths: Vec<StorePath> = match paths {
                    Value::Array(items) => items
                        .iter()
                        .map(|p| match p {
                            Value::String(s) => store_path(store, s, &bad),
                            other => Err(bad(format!(
                                "'exportReferencesGraph.{name}' holds {other}, not a store path"
                            ))),
                        })
                        .collect::<Result<_, _>>()?,
                    Value::String(s) => vec![store_path(store, s, &bad)?],
                    other => {
                        return Err(bad(format!(
                            "'exportReferencesGraph.{name}' is {other}, not a list of store paths"
                        )));
                    }
                };
                let closure = export_closure(store, &paths, inputs, &bad)?;
                exported
                    .json
                    .insert(name.clone(), path_infos(store, &closure)?);
            }
        }
    }
    Ok(exported)
}

/// Nix's rule for the file names: `[A-Za-z_][A-Za-z0-9_.-]*`.
fn is_file_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

fn store_path(
    store: &LocalStore,
    text: &str,
    bad: &dyn Fn(String) -> BuildError,
) -> Result<StorePath, BuildError> {
    store
        .layout()
        .store_dir
        .parse_within(std::path::Path::new(text))
        .map_err(|_| {
            bad(format!(
                "'exportReferencesGraph' contains a non-store path '{text}'"
            ))
        })
}

/// The closure of `paths`, each of which must be an input, with the
/// closures of the outputs of derivations in it.
fn export_closure(
    store: &LocalStore,
    paths: &[StorePath],
    inputs: &BTreeSet<StorePath>,
    bad: &dyn Fn(String) -> BuildError,
) -> Result<BTreeSet<StorePath>, BuildError> {
    for path in paths {
        if !inputs.contains(path) {
            return Err(bad(format!(
                "cannot export references of path '{}' because it is not in the input closure of the derivation",
                store.layout().store_dir.print(path)
            )));
        }
    }
    let mut closure = store.closure(paths)?;
    let drvs: Vec<StorePath> = closure
        .iter()
        .filter(|p| p.is_derivation())
        .cloned()
        .collect();
    for drv in drvs {
        let outputs: Vec<StorePath> = store
            .read_derivation(&drv)?
            .outputs
            .values()
            .filter_map(|o| o.path().cloned())
            .filter(|p| store.is_valid(p).unwrap_or(false))
            .collect();
        closure.extend(store.closure(&outputs)?);
    }
    Ok(closure)
}

/// `nix-store --register-validity`'s format, derivers left empty.
fn registration(store: &LocalStore, paths: &BTreeSet<StorePath>) -> Result<String, BuildError> {
    let store_dir = &store.layout().store_dir;
    let mut text = String::new();
    for path in paths {
        let info = store.query_info(path)?;
        text.push_str(&format!(
            "{}\n\n{}\n",
            store_dir.print(path),
            info.references.len()
        ));
        for reference in &info.references {
            text.push_str(&format!("{}\n", store_dir.print(reference)));
        }
    }
    Ok(text)
}

/// The path infos `.attrs.json` gets, as Nix's `pathInfoToJSON` without
/// the impure fields and with the closure size.
fn path_infos(store: &LocalStore, paths: &BTreeSet<StorePath>) -> Result<Value, BuildError> {
    let store_dir = &store.layout().store_dir;
    let mut list = Vec::new();
    for path in paths {
        let info = store.query_info(path)?;
        let mut object = serde_json::Map::new();
        object.insert("path".into(), Value::String(store_dir.print(path)));
        object.insert(
            "narHash".into(),
            Value::String(info.nar_hash.to_prefixed_base32()),
        );
        object.insert("narSize".into(), Value::from(info.nar_size));
        object.insert(
            "references".into(),
            Value::Array(
                info.references
                    .iter()
                    .map(|r| Value::String(store_dir.print(r)))
                    .collect(),
            ),
        );
        if let Some(ca) = &info.ca {
            object.insert("ca".into(), Value::String(ca.clone()));
        }
        let mut closure_size = 0;
        for member in store.closure(std::slice::from_ref(path))? {
            closure_size += store.query_info(&member)?.nar_size;
        }
        object.insert("closureSize".into(), Value::from(closure_size));
        list.push(Value::Object(object));
    }
    Ok(Value::Array(list))
}
