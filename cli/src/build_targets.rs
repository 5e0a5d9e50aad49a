//! What `hermetic build` is asked for, as Nix users type it: a derivation
//! with the outputs wanted (`DRV^out,dev`, `DRV!out`, `DRV^*`), or a store
//! path to make valid; and the links `-o`/`--out-link` makes, named as
//! `nix-build` names them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The outputs wanted of a derivation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// All of them (no suffix, or `^*`).
    All,
    /// Those named.
    Names(BTreeSet<String>),
}

impl Wanted {
    /// Whether the output `name` is wanted.
    pub fn includes(&self, name: &str) -> bool {
        match self {
            Wanted::All => true,
            Wanted::Names(names) => names.contains(name),
        }
    }
}

/// Splits an argument into the path it names and the outputs wanted: the
/// part after the last `^` or `!` when it is `*` or a comma-separated list
/// of output names; otherwise the whole argument is the path and every
/// output is wanted. The flag says whether a suffix was given.
pub fn split_outputs(arg: &str) -> (&str, Wanted, bool) {
    let Some(at) = arg.rfind(['^', '!']) else {
        return (arg, Wanted::All, false);
    };
    let (path, suffix) = (&arg[..at], &arg[at + 1..]);
    if suffix == "*" {
        return (path, Wanted::All, true);
    }
    let names: BTreeSet<String> = suffix.split(',').map(str::to_owned).collect();
    let is_name = |name: &String| {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-._?=".contains(&b))
    };
    if path.is_empty() || !names.iter().all(is_name) {
        return (arg, Wanted::All, false);
    }
    (path, Wanted::Names(names), true)
}

/// The link `-o LINK` makes for output `output` of the `counter`th target
/// (from 0): `LINK`, `LINK-dev`, `LINK-2`, `LINK-2-dev`, as `nix-build`
/// names them; relative to `cwd` unless absolute.
pub fn link_path(cwd: &Path, out_link: &Path, counter: usize, output: &str) -> PathBuf {
    let mut name = out_link.as_os_str().to_owned();
    if counter > 0 {
        name.push(format!("-{}", counter + 1));
    }
    if output != "out" {
        name.push(format!("-{output}"));
    }
    cwd.join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Wanted {
        Wanted::Names(list.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn outputs_are_split_off_as_nix_writes_them() {
        let drv = "/nix/store/aaaa-x.drv";
        assert_eq!(
            split_outputs(&format!("{drv}^out,dev")),
            (drv, names(&["out", "dev"]), true)
        );
        assert_eq!(
            split_outputs(&format!("{drv}!lib")),
            (drv, names(&["lib"]), true)
        );
        assert_eq!(split_outputs(&format!("{drv}^*")), (drv, Wanted::All, true));
        assert_eq!(split_outputs(drv), (drv, Wanted::All, false));
        // Not an output list: the whole argument is a path.
        assert_eq!(
            split_outputs("dir^/file.json"),
            ("dir^/file.json", Wanted::All, false)
        );
        assert_eq!(split_outputs("^out"), ("^out", Wanted::All, false));
        assert!(names(&["dev"]).includes("dev") && !names(&["dev"]).includes("out"));
    }

    #[test]
    fn links_are_named_as_nix_build_names_them() {
        let cwd = Path::new("/home/u");
        let link = |counter, output| link_path(cwd, Path::new("result"), counter, output);
        assert_eq!(link(0, "out"), PathBuf::from("/home/u/result"));
        assert_eq!(link(0, "dev"), PathBuf::from("/home/u/result-dev"));
        assert_eq!(link(1, "out"), PathBuf::from("/home/u/result-2"));
        assert_eq!(link(2, "lib"), PathBuf::from("/home/u/result-3-lib"));
        assert_eq!(
            link_path(cwd, Path::new("/tmp/r"), 0, "out"),
            PathBuf::from("/tmp/r")
        );
    }
}
