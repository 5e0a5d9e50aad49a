//! Nix's built-in builders (`builder = "builtin:NAME"`), run as Lix runs
//! them: a helper program inside the build's own sandbox. The helper is
//! hermetic itself (`hermetic __builtin NAME`), started through its dynamic
//! loader with the program and the shared libraries it runs with bound
//! read-only at their host paths, so the sandbox gains nothing a builder
//! could use but hermetic's own code; the builtin reads its attributes
//! from the environment as any builder does.

pub mod buildenv;
pub mod fetchurl;
pub mod unpack_channel;

use std::path::{Path, PathBuf};

use hermetic_runtime::SandboxPath;

/// The built-in builders hermetic has.
pub const BUILTINS: [&str; 3] = ["buildenv", "fetchurl", "unpack-channel"];

/// How a build runs a builtin: the program, its arguments and the host
/// files the sandbox needs for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Helper {
    /// What to execute.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Host files bound read-only at their own paths.
    pub binds: Vec<SandboxPath>,
}

/// The helper for `builtin:NAME`, from this process's own executable and
/// the shared libraries mapped into it; `Err` with Nix's text when hermetic
/// has no such builtin.
pub fn helper(name: &str) -> Result<Helper, String> {
    if !BUILTINS.contains(&name) {
        return Err(format!("unsupported builtin builder '{name}'"));
    }
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find hermetic's own program for builtin:{name}: {e}"))?;
    let maps = std::fs::read_to_string("/proc/self/maps")
        .map_err(|e| format!("cannot read /proc/self/maps for builtin:{name}: {e}"))?;
    let libraries = shared_libraries(&maps);
    let loader = libraries.iter().find(|l| is_loader(l)).cloned();
    let mut args = Vec::new();
    let program = match &loader {
        // A dynamic program: through its loader, which then needs no path
        // of its own in the sandbox, and finds the libraries where they are.
        Some(loader) => {
            let mut dirs: Vec<String> = libraries
                .iter()
                .filter_map(|l| l.parent().map(|d| d.display().to_string()))
                .collect();
            dirs.dedup();
            args.extend(["--library-path".to_owned(), dirs.join(":")]);
            args.push(exe.display().to_string());
            loader.clone()
        }
        None => exe.clone(),
    };
    args.extend(["__builtin".to_owned(), name.to_owned()]);
    // Each library under its own name, and under the shorter names that
    // lead to it on the host (`libsqlite3.so.0` for `libsqlite3.so.0.8.6`):
    // the loader looks for the names programs ask for.
    let mut binds: Vec<SandboxPath> = std::iter::once(exe.clone())
        .chain(libraries.iter().cloned())
        .map(|path| SandboxPath {
            target: path.clone(),
            source: path,
            optional: false,
        })
        .collect();
    for library in &libraries {
        for alias in aliases(library) {
            binds.push(SandboxPath {
                target: alias,
                source: library.clone(),
                optional: false,
            });
        }
    }
    Ok(Helper {
        program,
        args,
        binds,
    })
}

/// The shared libraries (and loader) mapped into a process, by
/// `/proc/<pid>/maps`: files named `*.so` or `*.so.<version>`, each once.
fn shared_libraries(maps: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = Vec::new();
    for line in maps.lines() {
        let Some(file) = line.split_whitespace().nth(5) else {
            continue;
        };
        let path = Path::new(file);
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let shared = name.ends_with(".so") || name.contains(".so.");
        if file.starts_with('/') && shared && !found.iter().any(|f| f == path) {
            found.push(path.to_owned());
        }
    }
    found.sort();
    found
}

/// The names beside `library` that are its version-shortened names and
/// lead to it on the host.
fn aliases(library: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (library.parent(), library.file_name()) else {
        return Vec::new();
    };
    let name = name.to_string_lossy();
    let Some(at) = name.find(".so.") else {
        return Vec::new();
    };
    let real = std::fs::canonicalize(library).ok();
    let mut shorter = name.to_string();
    let mut found = Vec::new();
    while shorter.len() > at + 3 {
        shorter.truncate(shorter.rfind('.').unwrap_or(at + 3));
        let candidate = dir.join(&shorter);
        if std::fs::canonicalize(&candidate).ok() == real && real.is_some() {
            found.push(candidate);
        }
    }
    found
}

fn is_loader(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("ld-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_helper_is_this_program_through_its_loader_with_its_libraries() {
        let maps = "\
55d0-55d1 r--p 00000000 08:01 1 /usr/bin/hermetic
7f00-7f01 r-xp 00000000 08:01 2 /usr/lib/x86_64-linux-gnu/libc.so.6
7f01-7f02 r--p 00001000 08:01 2 /usr/lib/x86_64-linux-gnu/libc.so.6
7f02-7f03 rw-s 00000000 08:01 3 /nix/var/nix/db/db.sqlite-shm
7f03-7f04 r-xp 00000000 08:01 4 /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
7ffc-7ffd rw-p 00000000 00:00 0 [stack]
";
        let libraries = shared_libraries(maps);
        assert_eq!(
            libraries,
            [
                PathBuf::from("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
                PathBuf::from("/usr/lib/x86_64-linux-gnu/libc.so.6"),
            ]
        );
        assert!(is_loader(&libraries[0]));
        assert!(
            helper("fetchgit")
                .unwrap_err()
                .contains("unsupported builtin builder 'fetchgit'")
        );
        let real = helper("buildenv").unwrap();
        assert!(
            real.args
                .ends_with(&["__builtin".to_owned(), "buildenv".to_owned()])
        );
    }
}
