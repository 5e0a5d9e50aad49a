//! The builder's environment (B62) and the files it gets in its build
//! directory: `passAsFile` attributes, and `.attrs.json` / `.attrs.sh` for
//! structured attributes.

use std::collections::BTreeMap;
use std::path::Path;

use hermetic_runtime::environment::builder_environment;
use hermetic_store::{Derivation, Hash};
use serde_json::Value;

use crate::attrs::Attrs;
use crate::export_graph::Exported;

/// Files the build directory gets: name and contents.
pub type BuildDirFiles = Vec<(String, Vec<u8>)>;

/// The environment and the build directory's files of one build.
#[derive(Debug, Default)]
pub struct BuilderWorld {
    /// The whole environment.
    pub env: BTreeMap<String, String>,
    /// Files to write into the build directory.
    pub files: BuildDirFiles,
}

/// Builds the environment of `drv`. `build_dir` is the build directory as
/// the builder sees it (`/build`, or the host directory when unsandboxed);
/// `outputs` maps output names to their paths; `exported` is what
/// `exportReferencesGraph` adds.
pub fn builder_world(
    drv: &Derivation,
    attrs: &Attrs<'_>,
    store_dir: &Path,
    build_dir: &Path,
    cores: usize,
    outputs: &BTreeMap<String, String>,
    exported: &Exported,
) -> BuilderWorld {
    let mut files = Vec::new();
    let mut attributes: Vec<(String, String)> = Vec::new();
    let in_build_dir = |name: &str| build_dir.join(name).display().to_string();
    match attrs.structured() {
        None => {
            let pass_as_file = attrs.strings("passAsFile");
            for (name, value) in &drv.env {
                if pass_as_file.contains(name) {
                    let file = format!(".attr-{}", Hash::sha256(name.as_bytes()).to_base32());
                    attributes.push((format!("{name}Path"), in_build_dir(&file)));
                    files.push((file, value.clone().into_bytes()));
                } else {
                    attributes.push((name.clone(), value.clone()));
                }
            }
            files.extend(exported.files.iter().cloned());
        }
        Some(structured) => {
            let mut json = structured.clone();
            for (name, value) in &exported.json {
                json.insert(name.clone(), value.clone());
            }
            json.insert(
                "outputs".into(),
                Value::Object(
                    outputs
                        .iter()
                        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                        .collect(),
                ),
            );
            files.push((
                ".attrs.json".into(),
                Value::Object(json.clone()).to_string().into_bytes(),
            ));
            files.push((".attrs.sh".into(), attrs_sh(&json).into_bytes()));
            attributes.push(("NIX_ATTRS_JSON_FILE".into(), in_build_dir(".attrs.json")));
            attributes.push(("NIX_ATTRS_SH_FILE".into(), in_build_dir(".attrs.sh")));
        }
    }
    let mut env = builder_environment(
        store_dir,
        build_dir,
        cores,
        attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    if drv.is_fixed_output() {
        env.insert("NIX_OUTPUT_CHECKED".into(), "1".into());
        for name in attrs.strings("impureEnvVars") {
            if name == "NIX_LOG_FD" || name == "TERM" {
                continue;
            }
            // Lix leaves a listed variable that is not set unset.
            if let Ok(value) = std::env::var(&name) {
                env.insert(name, value);
            }
        }
    }
    // Output placeholders (`builtins.placeholder "out"`) become the
    // outputs' paths, in the environment and the files, as Nix rewrites
    // them.
    let rewrites = placeholder_rewrites(outputs);
    for value in env.values_mut() {
        *value = rewrite(value, &rewrites);
    }
    for (_, contents) in &mut files {
        if let Ok(text) = std::str::from_utf8(contents) {
            *contents = rewrite(text, &rewrites).into_bytes();
        }
    }
    BuilderWorld { env, files }
}

/// Each output's placeholder, `/` and the base32 SHA-256 of
/// `nix-output:<name>`, with the path it stands for.
pub fn placeholder_rewrites(outputs: &BTreeMap<String, String>) -> Vec<(String, String)> {
    outputs
        .iter()
        .map(|(name, path)| {
            let hash = Hash::sha256(format!("nix-output:{name}").as_bytes());
            (format!("/{}", hash.to_base32()), path.clone())
        })
        .collect()
}

/// `text` with each placeholder of `rewrites` replaced.
pub fn rewrite(text: &str, rewrites: &[(String, String)]) -> String {
    rewrites
        .iter()
        .fold(text.to_owned(), |text, (from, to)| text.replace(from, to))
}

fn shell_escape(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A value `.attrs.sh` writes as Nix 2.8 does: a number only when it is
/// whole (a float such as 1.5 is left out), null as `''`.
fn simple(value: &Value) -> Option<String> {
    match value {
        Value::Null => Some("''".into()),
        Value::Bool(b) => Some(if *b { "1".into() } else { String::new() }),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Some(i.to_string()),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(format!("{f:.0}")),
            _ => None,
        },
        Value::String(s) => Some(shell_escape(s)),
        _ => None,
    }
}

fn is_shell_name(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `.attrs.sh`: each top-level attribute with a shell name and a simple
/// value (or a list or attribute set of simple values) as a `declare`.
pub fn attrs_sh(json: &serde_json::Map<String, Value>) -> String {
    let mut out = String::new();
    for (key, value) in json {
        if !is_shell_name(key) {
            continue;
        }
        if let Some(s) = simple(value) {
            out.push_str(&format!("declare {key}={s}\n"));
            continue;
        }
        match value {
            Value::Array(items) => {
                if let Some(items) = items.iter().map(simple).collect::<Option<Vec<_>>>() {
                    let joined: String = items.iter().map(|s| format!("{s} ")).collect();
                    out.push_str(&format!("declare -a {key}=({joined})\n"));
                }
            }
            Value::Object(map) => {
                let items: Option<Vec<String>> = map
                    .iter()
                    .map(|(k, v)| simple(v).map(|s| format!("[{}]={s} ", shell_escape(k))))
                    .collect();
                if let Some(items) = items {
                    out.push_str(&format!("declare -A {key}=({})\n", items.concat()));
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hermetic_store::StoreDir;

    #[test]
    fn pass_as_file_and_structured_attrs() {
        let text = r#"Derive([("out","/nix/store/bfarivjzrbkrccd3zrblx1zgpssp56x6-paf","","")],[],[],"x86_64-linux","/bin/sh",["-c","cat $fooPath > $out"],[("builder","/bin/sh"),("foo","bar\n\"quoted\" \\ tab\t"),("name","paf"),("out","/nix/store/bfarivjzrbkrccd3zrblx1zgpssp56x6-paf"),("passAsFile","foo"),("system","x86_64-linux")])"#;
        let drv = Derivation::from_aterm(text.as_bytes(), &StoreDir::default(), "paf").unwrap();
        let attrs = Attrs::of(&drv).unwrap();
        let world = builder_world(
            &drv,
            &attrs,
            Path::new("/nix/store"),
            Path::new("/build"),
            2,
            &BTreeMap::new(),
            &Exported::default(),
        );
        let file = format!(".attr-{}", Hash::sha256(b"foo").to_base32());
        assert_eq!(world.env["fooPath"], format!("/build/{file}"));
        assert!(!world.env.contains_key("foo"));
        assert_eq!(
            world.files,
            vec![(file, b"bar\n\"quoted\" \\ tab\t".to_vec())]
        );

        let json: serde_json::Map<String, Value> = serde_json::from_str(
            r#"{"b":true,"f":false,"i":3,"s":"it's","l":[1,"x"],"o":{"k":"v"},"deep":[[1]],"bad-name":1,"half":1.5,"whole":2.0,"n":null,"fl":[1.5]}"#,
        )
        .unwrap();
        // As Nix 2.8 writes it: a float that is not whole is left out (and
        // so is a list holding one), null is ''.
        assert_eq!(
            attrs_sh(&json),
            "declare b=1\ndeclare f=\ndeclare i=3\ndeclare -a l=(1 'x' )\ndeclare n=''\ndeclare -A o=(['k']='v' )\ndeclare s='it'\\''s'\ndeclare whole=2\n"
        );
    }

    #[test]
    fn output_placeholders_become_the_outputs_paths() {
        let outputs: BTreeMap<String, String> =
            [("out".to_owned(), "/nix/store/aaaa-x".to_owned())].into();
        let rewrites = placeholder_rewrites(&outputs);
        // `builtins.placeholder "out"`, as Nix prints it.
        assert_eq!(
            rewrites[0].0,
            "/1rz4g4znpzjwh1xymhjpm42vipw92pr73vdgl6xs1hycac8kf2n9"
        );
        assert_eq!(
            rewrite(
                "cat /1rz4g4znpzjwh1xymhjpm42vipw92pr73vdgl6xs1hycac8kf2n9/bin",
                &rewrites
            ),
            "cat /nix/store/aaaa-x/bin"
        );
    }
}
