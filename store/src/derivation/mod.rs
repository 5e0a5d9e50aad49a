//! Derivations: what they hold, their checks, their path, and the paths of
//! their outputs, as Nix computes them (`hashDerivationModulo`).

pub mod aterm;
pub mod json;

use std::collections::{BTreeMap, BTreeSet};

pub use aterm::{DrvParseError, DrvProblem};
pub use json::DrvJsonError;

use crate::hash::{Hash, HashAlgo};
use crate::path::{BadStorePath, IngestionMethod, StoreDir, StorePath, output_path_name};

/// One output of a derivation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DerivationOutput {
    /// An input-addressed output at a path computed from the derivation.
    InputAddressed(StorePath),
    /// A fixed-output (content-addressed) output whose hash is known in
    /// advance. `path` is the path the derivation names.
    Fixed {
        /// The path the derivation names for it.
        path: StorePath,
        /// Flat or recursive.
        method: IngestionMethod,
        /// The expected hash.
        hash: Hash,
    },
    /// A content-addressed output whose hash is known only after the build
    /// (`ca-derivations`): no path yet.
    Floating {
        /// Flat or recursive.
        method: IngestionMethod,
        /// The algorithm the path will be computed with.
        algo: HashAlgo,
    },
    /// An input-addressed output whose path is not computed yet (it depends
    /// on a floating output).
    Deferred,
}

impl DerivationOutput {
    /// The path the derivation names for the output, if it names one.
    pub fn path(&self) -> Option<&StorePath> {
        match self {
            Self::InputAddressed(path) | Self::Fixed { path, .. } => Some(path),
            Self::Floating { .. } | Self::Deferred => None,
        }
    }

    /// The output as Nix writes it, in the ATerm and on the wire: its path,
    /// its hash algorithm (with `r:` for a recursive hash) and its hash in
    /// hex, each empty where the output has none.
    pub fn parts(&self, store: &StoreDir) -> (String, String, String) {
        match self {
            Self::InputAddressed(path) => (store.print(path), String::new(), String::new()),
            Self::Fixed { path, method, hash } => (
                store.print(path),
                format!("{}{}", method.prefix(), hash.algo()),
                hash.to_hex(),
            ),
            Self::Floating { method, algo } => (
                String::new(),
                format!("{}{algo}", method.prefix()),
                String::new(),
            ),
            Self::Deferred => (String::new(), String::new(), String::new()),
        }
    }
}

/// A derivation: outputs, inputs, the builder and its arguments and
/// environment. Maps are ordered as Nix writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derivation {
    /// The name (the `.drv` file's name without `.drv`).
    pub name: String,
    /// Outputs by name.
    pub outputs: BTreeMap<String, DerivationOutput>,
    /// Input derivations and the outputs of each that the build uses.
    pub input_drvs: BTreeMap<StorePath, BTreeSet<String>>,
    /// Input sources: store paths the build uses as they are.
    pub input_srcs: BTreeSet<StorePath>,
    /// The platform it builds on (`x86_64-linux`).
    pub system: String,
    /// The program run.
    pub builder: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its environment.
    pub env: BTreeMap<String, String>,
}

/// A derivation that does not hold together. Texts follow Nix's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DrvCheckError {
    /// No outputs at all.
    #[error("derivation '{0}' must have at least one output")]
    NoOutputs(String),
    /// A fixed output mixed with others, or not named `out`.
    #[error("derivation '{0}' has a fixed output that is not its only output 'out'")]
    BadFixedOutput(String),
    /// An output name that cannot be part of a store path.
    #[error("derivation '{drv}' has an invalid output name '{output}'")]
    BadOutputName {
        /// The derivation.
        drv: String,
        /// The output's name.
        output: String,
    },
    /// An output's path is not the one its derivation gives.
    #[error("derivation '{drv}' has incorrect output '{actual}', should be '{expected}'")]
    WrongOutputPath {
        /// The derivation.
        drv: String,
        /// The path the derivation names.
        actual: String,
        /// The path Nix computes.
        expected: String,
    },
    /// The output's environment variable is not its path.
    #[error(
        "derivation '{drv}' has incorrect environment variable '{var}', should be '{expected}'"
    )]
    WrongOutputVariable {
        /// The derivation.
        drv: String,
        /// The variable (the output's name).
        var: String,
        /// The path it must hold.
        expected: String,
    },
    /// An input derivation could not be read.
    #[error("cannot read input derivation '{path}': {reason}")]
    MissingInput {
        /// The input derivation.
        path: String,
        /// Why.
        reason: String,
    },
    /// An input derivation lacks an output that is asked for.
    #[error("derivation '{drv}' uses output '{output}' of '{path}', which has no such output")]
    NoSuchInputOutput {
        /// The derivation.
        drv: String,
        /// The input derivation.
        path: String,
        /// The missing output.
        output: String,
    },
    /// A computed path is not a valid store path.
    #[error(transparent)]
    BadPath(#[from] BadStorePath),
}

/// The part of an output's description that was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputPart {
    /// Its path.
    Path,
    /// Its hash algorithm (with `r:` for recursive).
    HashAlgo,
    /// Its hash.
    Hash,
}

impl OutputPart {
    /// The field's name in Nix's JSON.
    pub fn field(self) -> &'static str {
        match self {
            Self::Path => "path",
            Self::HashAlgo => "hashAlgo",
            Self::Hash => "hash",
        }
    }
}

/// An output from the three strings that describe it (in JSON and in the
/// worker protocol), empty standing for absent: input-addressed with a
/// path, fixed with an algorithm and a hash (its path computed when
/// absent), floating with an algorithm alone, deferred with nothing.
pub fn output_from_parts(
    store: &StoreDir,
    drv_name: &str,
    output: &str,
    path: Option<&str>,
    algo: Option<&str>,
    hash: Option<&str>,
) -> Result<DerivationOutput, (OutputPart, String)> {
    fn some(s: Option<&str>) -> Option<&str> {
        s.filter(|s| !s.is_empty())
    }
    let parse_path = |text: &str| {
        store
            .parse(text)
            .map_err(|e| (OutputPart::Path, e.to_string()))
    };
    match (some(path), some(algo), some(hash)) {
        (None, None, None) => Ok(DerivationOutput::Deferred),
        (Some(path), None, None) => Ok(DerivationOutput::InputAddressed(parse_path(path)?)),
        (_, None, Some(_)) => Err((OutputPart::HashAlgo, "missing beside 'hash'".into())),
        (path, Some(algo_text), hash) => {
            let (method, algo_name) = match algo_text.strip_prefix("r:") {
                Some(rest) => (IngestionMethod::Recursive, rest),
                None => (IngestionMethod::Flat, algo_text),
            };
            let algo = HashAlgo::from_name(algo_name).ok_or_else(|| {
                (
                    OutputPart::HashAlgo,
                    format!("unknown hash algorithm '{algo_text}'"),
                )
            })?;
            let Some(hash) = hash else {
                return Ok(DerivationOutput::Floating { method, algo });
            };
            let hash =
                Hash::parse_digest(algo, hash).map_err(|e| (OutputPart::Hash, e.to_string()))?;
            let path = match path {
                Some(path) => parse_path(path)?,
                None => store
                    .make_fixed_output_path(
                        method,
                        &hash,
                        &output_path_name(drv_name, output),
                        &BTreeSet::new(),
                        false,
                    )
                    .map_err(|e| (OutputPart::Path, e.to_string()))?,
            };
            Ok(DerivationOutput::Fixed { path, method, hash })
        }
    }
}

/// The hash of a derivation "modulo" its fixed-output inputs: one hash per
/// output. Fixed-output derivations hash to their output alone, so a changed
/// way of fetching the same bytes changes nothing downstream.
pub type DrvHashes = BTreeMap<String, Hash>;

impl Derivation {
    /// Whether this is a fixed-output derivation.
    pub fn is_fixed_output(&self) -> bool {
        matches!(
            self.outputs.values().next(),
            Some(DerivationOutput::Fixed { .. })
        ) && self.outputs.len() == 1
    }

    /// Every store path the derivation refers to: its input sources and its
    /// input derivations (the references of its `.drv` file).
    pub fn references(&self) -> BTreeSet<StorePath> {
        let mut refs = self.input_srcs.clone();
        refs.extend(self.input_drvs.keys().cloned());
        refs
    }

    /// The `.drv` file's store path, for its ATerm text.
    pub fn drv_path(&self, store: &StoreDir) -> Result<StorePath, BadStorePath> {
        let text = self.to_aterm(store);
        store.make_text_path(
            &format!("{}.drv", self.name),
            &Hash::sha256(text.as_bytes()),
            &self.references(),
        )
    }

    /// Checks the shape of the outputs: at least one, names fit for store
    /// paths, a fixed output alone and named `out`.
    pub fn check_shape(&self, drv: &str) -> Result<(), DrvCheckError> {
        if self.outputs.is_empty() {
            return Err(DrvCheckError::NoOutputs(drv.to_owned()));
        }
        for name in self.outputs.keys() {
            let fits = crate::path::check_name(name, &output_path_name(&self.name, name)).is_ok();
            if !fits || name.is_empty() || name == "drv" {
                return Err(DrvCheckError::BadOutputName {
                    drv: drv.to_owned(),
                    output: name.clone(),
                });
            }
        }
        let fixed = self
            .outputs
            .values()
            .filter(|o| matches!(o, DerivationOutput::Fixed { .. }))
            .count();
        if fixed > 0 && !(self.outputs.len() == 1 && self.outputs.contains_key("out")) {
            return Err(DrvCheckError::BadFixedOutput(drv.to_owned()));
        }
        Ok(())
    }

    /// Nix's `hashDerivationModulo`. `mask_outputs` blanks the derivation's
    /// own output paths (to compute them); inputs are hashed unmasked.
    /// `input_hashes` gives the hashes of an input derivation.
    pub fn hash_modulo(
        &self,
        store: &StoreDir,
        mask_outputs: bool,
        input_hashes: &mut dyn FnMut(&StorePath) -> Result<DrvHashes, DrvCheckError>,
    ) -> Result<DrvHashes, DrvCheckError> {
        if self.is_fixed_output() {
            let mut hashes = DrvHashes::new();
            for (name, output) in &self.outputs {
                if let DerivationOutput::Fixed { path, method, hash } = output {
                    let text = format!(
                        "fixed:out:{}{}:{}:{}",
                        method.prefix(),
                        hash.algo(),
                        hash.to_hex(),
                        store.print(path)
                    );
                    hashes.insert(name.clone(), Hash::sha256(text.as_bytes()));
                }
            }
            return Ok(hashes);
        }
        let mut inputs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (path, wanted) in &self.input_drvs {
            let hashes = input_hashes(path)?;
            for output in wanted {
                let hash = hashes
                    .get(output)
                    .ok_or_else(|| DrvCheckError::NoSuchInputOutput {
                        drv: self.name.clone(),
                        path: store.print(path),
                        output: output.clone(),
                    })?;
                inputs
                    .entry(hash.to_hex())
                    .or_default()
                    .insert(output.clone());
            }
        }
        let text = aterm::print(self, store, mask_outputs, Some(&inputs));
        let hash = Hash::sha256(text.as_bytes());
        Ok(self
            .outputs
            .keys()
            .map(|name| (name.clone(), hash.clone()))
            .collect())
    }

    /// The paths Nix computes for the outputs.
    pub fn expected_output_paths(
        &self,
        store: &StoreDir,
        input_hashes: &mut dyn FnMut(&StorePath) -> Result<DrvHashes, DrvCheckError>,
    ) -> Result<BTreeMap<String, Option<StorePath>>, DrvCheckError> {
        let needs_hash = self
            .outputs
            .values()
            .any(|o| matches!(o, DerivationOutput::InputAddressed(_)));
        let hashes = if needs_hash {
            self.hash_modulo(store, true, input_hashes)?
        } else {
            DrvHashes::new()
        };
        let mut paths = BTreeMap::new();
        for (name, output) in &self.outputs {
            let path_name = output_path_name(&self.name, name);
            let path = match output {
                DerivationOutput::InputAddressed(_) => {
                    let hash = &hashes[name];
                    Some(store.make_path(&format!("output:{name}"), hash, &path_name)?)
                }
                DerivationOutput::Fixed { method, hash, .. } => {
                    Some(store.make_fixed_output_path(
                        *method,
                        hash,
                        &path_name,
                        &BTreeSet::new(),
                        false,
                    )?)
                }
                DerivationOutput::Floating { .. } | DerivationOutput::Deferred => None,
            };
            paths.insert(name.clone(), path);
        }
        Ok(paths)
    }

    /// Computes the paths of input-addressed outputs given without one
    /// (deferred), and sets each output's environment variable to its path,
    /// as `nix derivation add` does for a derivation written by hand.
    pub fn fill_output_paths(
        &mut self,
        store: &StoreDir,
        input_hashes: &mut dyn FnMut(&StorePath) -> Result<DrvHashes, DrvCheckError>,
    ) -> Result<(), DrvCheckError> {
        if !self
            .outputs
            .values()
            .any(|o| matches!(o, DerivationOutput::Deferred))
        {
            for (name, output) in &self.outputs {
                if let Some(path) = output.path() {
                    let var = self.env.entry(name.clone()).or_default();
                    if var.is_empty() {
                        *var = store.print(path);
                    }
                }
            }
            return Ok(());
        }
        let placeholder = StorePath::from_base_name(&format!("{}-placeholder", "0".repeat(32)))?;
        for (name, output) in self.outputs.iter_mut() {
            if matches!(output, DerivationOutput::Deferred) {
                *output = DerivationOutput::InputAddressed(placeholder.clone());
            }
            // Hashed with each output's variable present and empty.
            self.env.entry(name.clone()).or_default();
        }
        for (name, path) in self.expected_output_paths(store, input_hashes)? {
            let Some(path) = path else { continue };
            self.env.insert(name.clone(), store.print(&path));
            if let Some(DerivationOutput::InputAddressed(old)) = self.outputs.get_mut(&name) {
                *old = path;
            }
        }
        Ok(())
    }

    /// Checks that every output path the derivation names is the one Nix
    /// computes, and that each output's environment variable holds it
    /// (Nix's `checkDerivationOutputs`).
    pub fn check_outputs(
        &self,
        store: &StoreDir,
        drv_path: &str,
        input_hashes: &mut dyn FnMut(&StorePath) -> Result<DrvHashes, DrvCheckError>,
    ) -> Result<(), DrvCheckError> {
        self.check_shape(drv_path)?;
        let expected = self.expected_output_paths(store, input_hashes)?;
        for (name, output) in &self.outputs {
            let (Some(actual), Some(Some(expected))) = (output.path(), expected.get(name)) else {
                continue;
            };
            let expected = store.print(expected);
            if store.print(actual) != expected {
                return Err(DrvCheckError::WrongOutputPath {
                    drv: drv_path.to_owned(),
                    actual: store.print(actual),
                    expected,
                });
            }
            if self.env.get(name) != Some(&expected) {
                return Err(DrvCheckError::WrongOutputVariable {
                    drv: drv_path.to_owned(),
                    var: name.clone(),
                    expected,
                });
            }
        }
        Ok(())
    }
}
