//! A derivation's attributes as Nix reads them: from the environment, or
//! from `__json` when the derivation has structured attributes.

use std::collections::BTreeMap;

use hermetic_store::Derivation;
use serde_json::Value;

/// A derivation's attributes.
pub struct Attrs<'a> {
    env: &'a BTreeMap<String, String>,
    structured: Option<serde_json::Map<String, Value>>,
}

impl<'a> Attrs<'a> {
    /// Reads the attributes of `drv`; `None` in `Err` when `__json` is not
    /// a JSON object.
    pub fn of(drv: &'a Derivation) -> Result<Self, String> {
        let structured = match drv.env.get("__json") {
            Some(text) => match serde_json::from_str(text) {
                Ok(Value::Object(map)) => Some(map),
                _ => return Err("the '__json' attribute is not a JSON object".into()),
            },
            None => None,
        };
        Ok(Self {
            env: &drv.env,
            structured,
        })
    }

    /// The structured attributes, if the derivation has them.
    pub fn structured(&self) -> Option<&serde_json::Map<String, Value>> {
        self.structured.as_ref()
    }

    /// A boolean attribute: `true` in `__json`, or `"1"` in the environment.
    pub fn bool(&self, name: &str) -> bool {
        self.bool_or(name, false)
    }

    /// A boolean attribute, `default` when it is not set (Nix's
    /// `getBoolAttr`).
    pub fn bool_or(&self, name: &str, default: bool) -> bool {
        match &self.structured {
            Some(map) => map.get(name).and_then(Value::as_bool).unwrap_or(default),
            None => self.env.get(name).map_or(default, |v| v == "1"),
        }
    }

    /// A string attribute.
    pub fn string(&self, name: &str) -> Option<String> {
        match &self.structured {
            Some(map) => map.get(name).and_then(Value::as_str).map(str::to_owned),
            None => self.env.get(name).cloned(),
        }
    }

    /// A list of strings: a JSON list, or whitespace-separated words.
    pub fn strings(&self, name: &str) -> Vec<String> {
        match &self.structured {
            Some(map) => match map.get(name) {
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
                _ => Vec::new(),
            },
            None => self
                .env
                .get(name)
                .map(|v| v.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
        }
    }
}
