//! The hooks a build runs: `pre-build-hook` (B55), which may add sandbox
//! paths; `post-build-hook`, after each successful build with `DRV_PATH`
//! and `OUT_PATHS`; `diff-hook` (B89), when `--check` finds a difference.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::BuildError;

fn run(hook: &'static str, command: &str, cmd: &mut Command) -> Result<String, BuildError> {
    let fail = |reason: String| BuildError::Hook {
        hook,
        command: command.to_owned(),
        reason,
    };
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(out.status.to_string()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs the pre-build hook with the derivation (and, for a sandboxed
/// build, the sandbox's scratch directory) and returns the sandbox paths it
/// adds, `T` or `T=S` (not closure-expanded, no `?`).
pub fn pre_build(command: &str, drv: &str, root: Option<&Path>) -> Result<Vec<String>, BuildError> {
    let mut cmd = Command::new(command);
    cmd.arg(drv);
    if let Some(root) = root {
        cmd.arg(root);
    }
    let stdout = run("pre-build-hook", command, &mut cmd)?;
    let mut paths = Vec::new();
    let mut lines = stdout.lines();
    while let Some(line) = lines.next() {
        match line {
            "extra-sandbox-paths" | "extra-chroot-dirs" => {
                for entry in lines.by_ref() {
                    if entry.is_empty() {
                        break;
                    }
                    paths.push(entry.to_owned());
                }
            }
            "" => {}
            other => return Err(BuildError::UnknownHookCommand(other.to_owned())),
        }
    }
    Ok(paths)
}

/// Runs the post-build hook with `DRV_PATH` and `OUT_PATHS` (space-separated).
pub fn post_build(command: &str, drv: &str, outputs: &[String]) -> Result<(), BuildError> {
    let mut cmd = Command::new(command);
    cmd.env("DRV_PATH", drv)
        .env("OUT_PATHS", outputs.join(" "))
        .stdout(Stdio::inherit());
    run("post-build-hook", command, &mut cmd).map(drop)
}

/// Runs the diff hook with the registered output, the new one, the
/// derivation and the build directory; its output is printed.
pub fn diff(
    command: &str,
    existing: &Path,
    new: &Path,
    drv: &str,
    build_dir: &Path,
) -> Result<String, BuildError> {
    let mut cmd = Command::new(command);
    cmd.arg(existing).arg(new).arg(drv).arg(build_dir);
    run("diff-hook", command, &mut cmd)
}
