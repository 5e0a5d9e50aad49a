//! `builtin:buildenv`: a user environment (a profile), as Nix builds it: a
//! tree of symlinks into the packages' outputs, packages in priority order
//! (lower first), collisions between files refused unless their priorities
//! differ (the lower number wins), directories merged, packages that
//! installed ones propagate (`nix-support/propagated-user-env-packages`)
//! added after them at priorities from 1000 on; `manifest.nix` links to
//! the manifest.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// One package output to link in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// Its path.
    pub path: PathBuf,
    /// Whether it is active (`nix-env --set-flag active false` turns it off).
    pub active: bool,
    /// Its priority: lower wins a collision.
    pub priority: i64,
}

/// Why a profile could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildenvError {
    /// An attribute the builder needs is missing (Nix's text).
    #[error("attribute '{0}' missing")]
    MissingAttr(&'static str),
    /// `derivations` is not `active priority count paths…` repeated.
    #[error("the 'derivations' attribute is malformed: {0}")]
    Malformed(String),
    /// Two files at one place with one priority (Nix's text).
    #[error(
        "packages '{0}' and '{1}' have the same priority {2}; use 'nix-env --set-flag priority NUMBER INSTALLED_PKGNAME' to change the priority of one of the conflicting packages (0 being the highest priority)"
    )]
    SamePriority(String, String, i64),
    /// A file where a directory is, or the other way round (Nix's texts).
    #[error("collision between {0}")]
    Collision(String),
    /// A filesystem operation failed.
    #[error("{0} '{1}': {2}")]
    Io(&'static str, PathBuf, std::io::Error),
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BuildenvError {
    let path = path.to_owned();
    move |e| BuildenvError::Io(op, path, e)
}

/// Parses the `derivations` attribute: `active priority count path…`, for
/// each package.
pub fn parse_packages(text: &str) -> Result<Vec<Package>, BuildenvError> {
    let mut words = text.split_whitespace();
    let mut packages = Vec::new();
    while let Some(active) = words.next() {
        let number = |w: Option<&str>, what: &str| -> Result<i64, BuildenvError> {
            w.and_then(|w| w.parse().ok())
                .ok_or_else(|| BuildenvError::Malformed(format!("expected {what}")))
        };
        let priority = number(words.next(), "a priority")?;
        let count = number(words.next(), "a number of outputs")?;
        for _ in 0..count {
            let path = words
                .next()
                .ok_or_else(|| BuildenvError::Malformed("an output path is missing".into()))?;
            packages.push(Package {
                path: PathBuf::from(path),
                active: active != "false",
                priority,
            });
        }
    }
    Ok(packages)
}

/// Files that never go into a profile: useless there, or pointless
/// collisions.
const LEFT_OUT: [&str; 7] = [
    "/propagated-build-inputs",
    "/nix-support",
    "/perllocal.pod",
    "/info/dir",
    "/log",
    "/manifest.nix",
    "/manifest.json",
];

#[derive(Default)]
struct State {
    priorities: BTreeMap<PathBuf, i64>,
    warnings: Vec<String>,
}

/// Builds the profile `out` from `packages`; returns the warnings (dangling
/// links, packages that are not directories).
pub fn build_profile(out: &Path, mut packages: Vec<Package>) -> Result<Vec<String>, BuildenvError> {
    fs::create_dir_all(out).map_err(io("creating directory", out))?;
    let mut state = State::default();
    let mut done = BTreeSet::new();
    let mut postponed = BTreeSet::new();
    packages.sort_by(|a, b| (a.priority, &a.path).cmp(&(b.priority, &b.path)));
    let mut add = |state: &mut State,
                   postponed: &mut BTreeSet<PathBuf>,
                   dir: &Path,
                   priority: i64|
     -> Result<(), BuildenvError> {
        if !done.insert(dir.to_owned()) {
            return Ok(());
        }
        create_links(state, dir, out, priority)?;
        if let Ok(text) = fs::read_to_string(dir.join("nix-support/propagated-user-env-packages")) {
            for p in text.split_whitespace() {
                let p = PathBuf::from(p);
                if !done.contains(&p) {
                    postponed.insert(p);
                }
            }
        }
        Ok(())
    };
    for package in packages.iter().filter(|p| p.active) {
        add(&mut state, &mut postponed, &package.path, package.priority)?;
    }
    let mut priority = 1000;
    while !postponed.is_empty() {
        for dir in std::mem::take(&mut postponed) {
            add(&mut state, &mut postponed, &dir, priority)?;
            priority += 1;
        }
    }
    Ok(state.warnings)
}

fn create_links(
    state: &mut State,
    src_dir: &Path,
    dst_dir: &Path,
    priority: i64,
) -> Result<(), BuildenvError> {
    let entries = match fs::read_dir(src_dir) {
        Ok(entries) => entries,
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
            state.warnings.push(format!(
                "not including '{}' in the user environment because it's not a directory",
                src_dir.display()
            ));
            return Ok(());
        }
        Err(e) => return Err(io("reading directory", src_dir)(e)),
    };
    let mut names: Vec<_> = entries
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(io("reading directory", src_dir))?;
    names.sort();
    for name in names {
        if name.as_encoded_bytes().first() == Some(&b'.') {
            continue;
        }
        let src = src_dir.join(&name);
        let dst = dst_dir.join(&name);
        let src_meta = match fs::metadata(&src) {
            Ok(meta) => meta,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                state
                    .warnings
                    .push(format!("skipping dangling symlink '{}'", dst.display()));
                continue;
            }
            Err(e) => return Err(io("getting status of", &src)(e)),
        };
        let text = src.to_string_lossy();
        if LEFT_OUT.iter().any(|suffix| text.ends_with(suffix)) {
            continue;
        }
        let dst_meta = match fs::symlink_metadata(&dst) {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io("getting status of", &dst)(e)),
        };
        if src_meta.is_dir() {
            match &dst_meta {
                Some(meta) if meta.is_dir() => {
                    create_links(state, &src, &dst, priority)?;
                    continue;
                }
                Some(meta) if meta.file_type().is_symlink() => {
                    // Another package's directory linked whole: make it a
                    // directory of links, then add this one's.
                    let target = fs::canonicalize(&dst).map_err(io("resolving", &dst))?;
                    if !fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
                        return Err(BuildenvError::Collision(format!(
                            "'{}' and non-directory '{}'",
                            src.display(),
                            target.display()
                        )));
                    }
                    fs::remove_file(&dst).map_err(io("unlinking", &dst))?;
                    fs::create_dir(&dst).map_err(io("creating directory", &dst))?;
                    let previous = state.priorities.get(&dst).copied().unwrap_or(0);
                    create_links(state, &target, &dst, previous)?;
                    create_links(state, &src, &dst, priority)?;
                    continue;
                }
                _ => {}
            }
        } else if let Some(meta) = &dst_meta {
            if meta.file_type().is_symlink() {
                let previous = state.priorities.get(&dst).copied().unwrap_or(0);
                if previous == priority {
                    let other = fs::read_link(&dst).unwrap_or_default();
                    return Err(BuildenvError::SamePriority(
                        src.display().to_string(),
                        other.display().to_string(),
                        priority,
                    ));
                }
                if previous < priority {
                    continue;
                }
                fs::remove_file(&dst).map_err(io("unlinking", &dst))?;
            } else if meta.is_dir() {
                return Err(BuildenvError::Collision(format!(
                    "non-directory '{}' and directory '{}'",
                    src.display(),
                    dst.display()
                )));
            }
        }
        symlink(&src, &dst).map_err(io("creating symlink", &dst))?;
        state.priorities.insert(dst, priority);
    }
    Ok(())
}

/// The builder: reads `out`, `derivations` and `manifest` from the
/// environment `get` gives, builds the profile and links the manifest.
pub fn run(get: &dyn Fn(&'static str) -> Option<String>) -> Result<Vec<String>, BuildenvError> {
    let attr = |name: &'static str| get(name).ok_or(BuildenvError::MissingAttr(name));
    let out = PathBuf::from(attr("out")?);
    let packages = parse_packages(&attr("derivations")?)?;
    let warnings = build_profile(&out, packages)?;
    let manifest = attr("manifest")?;
    let link = out.join("manifest.nix");
    symlink(&manifest, &link).map_err(io("creating symlink", &link))?;
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
        for (name, text) in files {
            let file = dir.join(name);
            fs::create_dir_all(file.parent().unwrap()).unwrap();
            fs::write(file, text).unwrap();
        }
        dir.to_owned()
    }

    #[test]
    fn links_merge_directories_and_obey_priorities() {
        let root = std::env::temp_dir().join(format!("buildenv-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let a = package(&root.join("a"), &[("bin/hello", "a"), ("share/a", "a")]);
        let b = package(
            &root.join("b"),
            &[
                ("bin/hello", "b"),
                ("bin/other", "b"),
                ("nix-support/x", ""),
            ],
        );
        let text = format!("true 5 1 {} true 4 1 {}", a.display(), b.display());
        let out = root.join("out");
        let warnings = build_profile(&out, parse_packages(&text).unwrap()).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        // b (priority 4) wins bin/hello; bin became a directory of links.
        assert_eq!(
            fs::read_link(out.join("bin/hello")).unwrap(),
            b.join("bin/hello")
        );
        assert_eq!(
            fs::read_link(out.join("bin/other")).unwrap(),
            b.join("bin/other")
        );
        assert_eq!(fs::read_link(out.join("share")).unwrap(), a.join("share"));
        assert!(!out.join("nix-support").exists());
        // Equal priorities collide, with Nix's text.
        let same = format!("true 5 1 {} true 5 1 {}", a.display(), b.display());
        let err = build_profile(&root.join("out2"), parse_packages(&same).unwrap()).unwrap_err();
        assert!(
            err.to_string().contains("have the same priority 5"),
            "{err}"
        );
        // An inactive package is left out.
        let off = format!("false 1 1 {}", b.display());
        build_profile(&root.join("out3"), parse_packages(&off).unwrap()).unwrap();
        assert!(!root.join("out3/bin").exists());
        fs::remove_dir_all(&root).unwrap();
    }
}
