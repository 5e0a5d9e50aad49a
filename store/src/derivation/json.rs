//! The JSON form of derivations that `nix show-derivation` prints: an object
//! from each `.drv` path to its outputs, inputs, builder and environment.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{Derivation, DerivationOutput};
use crate::path::{StoreDir, StorePath};

/// Why a derivation's JSON was refused: the derivation and the field.
#[derive(Debug, thiserror::Error)]
pub enum DrvJsonError {
    /// Not JSON of the right shape (serde says where).
    #[error("bad derivation JSON")]
    Syntax(#[source] serde_json::Error),
    /// A field whose value is wrong.
    #[error("bad derivation JSON for '{drv}', field '{field}': {problem}")]
    Field {
        /// The derivation's path.
        drv: String,
        /// The field (`outputs.out.hash`, `inputSrcs`, …).
        field: String,
        /// What was wrong.
        problem: String,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonOutput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(rename = "hashAlgo", default, skip_serializing_if = "Option::is_none")]
    hash_algo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hash: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonDerivation {
    #[serde(default, skip_serializing)]
    name: Option<String>,
    outputs: BTreeMap<String, JsonOutput>,
    #[serde(rename = "inputSrcs")]
    input_srcs: Vec<String>,
    #[serde(rename = "inputDrvs")]
    input_drvs: BTreeMap<String, Vec<String>>,
    system: String,
    builder: String,
    args: Vec<String>,
    env: BTreeMap<String, String>,
}

fn field_error(drv: &str, field: impl Into<String>, problem: impl ToString) -> DrvJsonError {
    DrvJsonError::Field {
        drv: drv.to_owned(),
        field: field.into(),
        problem: problem.to_string(),
    }
}

fn from_json_one(
    store: &StoreDir,
    drv_path: &str,
    json: JsonDerivation,
) -> Result<(StorePath, Derivation), DrvJsonError> {
    let path = store
        .parse(drv_path)
        .map_err(|e| field_error(drv_path, "the derivation's path", e))?;
    let name = match path.name().strip_suffix(".drv") {
        Some(name) => name.to_owned(),
        None => {
            return Err(field_error(
                drv_path,
                "the derivation's path",
                "does not end in '.drv'",
            ));
        }
    };
    if let Some(given) = &json.name
        && *given != name
    {
        return Err(field_error(
            drv_path,
            "name",
            format!("'{given}' is not the path's name '{name}'"),
        ));
    }
    Ok((path, derivation_from(store, drv_path, name, json)?))
}

/// The derivation a JSON object describes; `label` names it in errors.
fn derivation_from(
    store: &StoreDir,
    drv_path: &str,
    name: String,
    json: JsonDerivation,
) -> Result<Derivation, DrvJsonError> {
    let store_path = |field: String, text: &str| {
        store
            .parse(text)
            .map_err(|e| field_error(drv_path, field, e))
    };
    let mut outputs = BTreeMap::new();
    for (out_name, out) in json.outputs {
        let field = format!("outputs.{out_name}");
        let output = super::output_from_parts(
            store,
            &name,
            &out_name,
            out.path.as_deref(),
            out.hash_algo.as_deref(),
            out.hash.as_deref(),
        )
        .map_err(|(part, problem)| {
            field_error(drv_path, format!("{field}.{}", part.field()), problem)
        })?;
        outputs.insert(out_name, output);
    }
    let input_srcs = json
        .input_srcs
        .iter()
        .map(|p| store_path("inputSrcs".to_owned(), p))
        .collect::<Result<BTreeSet<_>, _>>()?;
    let mut input_drvs = BTreeMap::new();
    for (p, wanted) in json.input_drvs {
        let key = store_path("inputDrvs".to_owned(), &p)?;
        input_drvs.insert(key, wanted.into_iter().collect());
    }
    for (field, value) in [("system", &json.system), ("builder", &json.builder)] {
        if value.contains('\0') {
            return Err(field_error(drv_path, field, "a string contains a NUL byte"));
        }
    }
    let nul = json.args.iter().any(|a| a.contains('\0'))
        || json
            .env
            .iter()
            .any(|(k, v)| k.contains('\0') || v.contains('\0'));
    if nul {
        return Err(field_error(
            drv_path,
            "args/env",
            "a string contains a NUL byte",
        ));
    }
    Ok(Derivation {
        name,
        outputs,
        input_drvs,
        input_srcs,
        system: json.system,
        builder: json.builder,
        args: json.args,
        env: json.env,
    })
}

/// Parses the JSON that `nix show-derivation` prints: each `.drv` path with
/// its derivation.
pub fn parse(text: &[u8], store: &StoreDir) -> Result<Vec<(StorePath, Derivation)>, DrvJsonError> {
    let all: BTreeMap<String, JsonDerivation> =
        serde_json::from_slice(text).map_err(DrvJsonError::Syntax)?;
    all.into_iter()
        .map(|(path, json)| from_json_one(store, &path, json))
        .collect()
}

/// Parses one derivation given as a bare object with a `name` field (the
/// form newer Nix versions print, and a convenient one to write by hand).
pub fn parse_one(text: &[u8], store: &StoreDir) -> Result<Derivation, DrvJsonError> {
    let json: JsonDerivation = serde_json::from_slice(text).map_err(DrvJsonError::Syntax)?;
    let name = json
        .name
        .clone()
        .ok_or_else(|| field_error("(a derivation object)", "name", "missing"))?;
    derivation_from(store, &name, name.clone(), json)
}

/// Writes derivations as `nix show-derivation` does (two-space indent,
/// fields in Nix's order).
pub fn print(store: &StoreDir, drvs: &[(StorePath, Derivation)]) -> String {
    let all: BTreeMap<String, JsonDerivation> = drvs
        .iter()
        .map(|(path, drv)| {
            let outputs = drv
                .outputs
                .iter()
                .map(|(name, output)| {
                    let json = match output {
                        DerivationOutput::InputAddressed(path) => JsonOutput {
                            path: Some(store.print(path)),
                            hash_algo: None,
                            hash: None,
                        },
                        DerivationOutput::Fixed { path, method, hash } => JsonOutput {
                            path: Some(store.print(path)),
                            hash_algo: Some(format!("{}{}", method.prefix(), hash.algo())),
                            hash: Some(hash.to_hex()),
                        },
                        DerivationOutput::Floating { method, algo } => JsonOutput {
                            path: None,
                            hash_algo: Some(format!("{}{algo}", method.prefix())),
                            hash: None,
                        },
                        DerivationOutput::Deferred => JsonOutput {
                            path: None,
                            hash_algo: None,
                            hash: None,
                        },
                    };
                    (name.clone(), json)
                })
                .collect();
            let json = JsonDerivation {
                name: None,
                outputs,
                input_srcs: drv.input_srcs.iter().map(|p| store.print(p)).collect(),
                input_drvs: drv
                    .input_drvs
                    .iter()
                    .map(|(p, w)| (store.print(p), w.iter().cloned().collect()))
                    .collect(),
                system: drv.system.clone(),
                builder: drv.builder.clone(),
                args: drv.args.clone(),
                env: drv.env.clone(),
            };
            (store.print(path), json)
        })
        .collect();
    serde_json::to_string_pretty(&all).expect("derivations serialise to JSON")
}
