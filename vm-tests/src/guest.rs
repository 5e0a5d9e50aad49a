//! The guest's initramfs: busybox-static, `vm-tests/guest/init`,
//! hermetic's binaries and integration-test binaries (stripped of debug
//! information), the C probes the tests would otherwise compile, the
//! shared libraries all of these need, and the host's users and groups (the
//! test setup's `nixbld*`, `hermetic-*`). Each kernel's modules follow as an
//! archive of their own.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::cpio::Archive;
use crate::kernel::Kernel;

/// Where the guest keeps the workspace's binaries: test binaries find the
/// binaries they run two directories above themselves, as under `target/`.
pub const GUEST_TARGET: &str = "hermetic/target/debug";

/// Host programs the tests run that busybox lacks or does differently:
/// util-linux's `setpriv`, `prlimit`, `ipcmk` and `ipcrm`, procps's
/// `pgrep`, and passt's `pasta` (B60).
const HOST_TOOLS: [&str; 6] = [
    "/usr/bin/setpriv",
    "/usr/bin/prlimit",
    "/usr/bin/ipcmk",
    "/usr/bin/ipcrm",
    "/usr/bin/pgrep",
    "/usr/bin/pasta",
];

/// Workspace files the tests read at the paths compiled into them
/// (`CARGO_MANIFEST_DIR`), so the guest has them at the same paths.
const WORKSPACE_DATA: [&str; 1] = ["store/tests/fixtures"];

/// What goes into the guest besides the fixed parts.
pub struct GuestContents<'a> {
    /// The workspace's root.
    pub workspace: &'a Path,
    /// Integration-test binaries: name to executable.
    pub tests: &'a BTreeMap<String, PathBuf>,
    /// Extra probe scripts (`--probe`), run in the guest as `probe::NAME`.
    pub probes: &'a [PathBuf],
}

/// Writes the shared archive to `out`; `scratch` holds stripped copies.
pub fn build_base(contents: &GuestContents, scratch: &Path, out: &Path) -> Result<()> {
    std::fs::create_dir_all(scratch)?;
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut archive = Archive::new(BufWriter::new(file));
    let mut dynamic = Vec::new();

    archive.copy("init", &contents.workspace.join("vm-tests/guest/init"))?;
    let busybox = hermetic_host::static_shell()
        .context("no static busybox: apt-get install busybox-static")?;
    archive.copy("bin/busybox", &busybox)?;
    for tool in HOST_TOOLS.map(Path::new) {
        archive
            .copy(&tool.to_string_lossy()[1..], tool)
            .with_context(|| format!("{} (scripts/setup-test-host installs it)", tool.display()))?;
        dynamic.push(tool.to_path_buf());
    }
    // The tests' crate directory must exist for `tests/../store/…` to resolve.
    let in_guest = |path: &Path| path.to_string_lossy()[1..].to_string();
    archive.directory(&in_guest(&contents.workspace.join("tests")))?;
    for data in WORKSPACE_DATA {
        let dir = contents.workspace.join(data);
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            archive.copy(&in_guest(&path), &path)?;
        }
    }
    for dir in [
        "proc", "sys", "dev", "tmp", "run", "root", "newroot", "modules",
    ] {
        archive.directory(dir)?;
    }
    for name in ["passwd", "group"] {
        archive.copy(&format!("etc/{name}"), &Path::new("/etc").join(name))?;
    }
    archive.file("etc/hosts", 0o644, b"127.0.0.1 localhost\n::1 localhost\n")?;
    // The resolver a host has, for what fixed-output builds copy (B36).
    archive.file("etc/resolv.conf", 0o644, b"nameserver 10.0.2.3\n")?;

    let target = contents.workspace.join("target/debug");
    // hold-connections: the daemon-limit tests' client (tests/src/bin).
    for name in ["sandbox-run", "hermetic", "hold-connections"] {
        let stripped = strip(&target.join(name), scratch)?;
        archive.copy(&format!("{GUEST_TARGET}/{name}"), &stripped)?;
        dynamic.push(stripped);
    }
    for (name, executable) in contents.tests {
        let stripped = strip(executable, scratch)?;
        archive.copy(&format!("{GUEST_TARGET}/deps/{name}"), &stripped)?;
        dynamic.push(stripped);
    }
    for probe in build_c_probes(&contents.workspace.join("tests/probes"), scratch)? {
        let name = probe.file_name().unwrap().to_string_lossy().into_owned();
        archive.copy(&format!("hermetic/probes/{name}"), &probe)?;
    }
    for script in contents.probes {
        let name = script
            .file_name()
            .with_context(|| format!("{}: not a file", script.display()))?
            .to_string_lossy()
            .into_owned();
        archive.file(
            &format!("hermetic/guest-probes/{name}"),
            0o755,
            &std::fs::read(script).with_context(|| format!("reading {}", script.display()))?,
        )?;
    }

    // merged-/usr hosts: the loader's path goes through the same links.
    for link in ["lib", "lib64", "lib32", "libx32"] {
        if let Ok(target) = std::fs::read_link(Path::new("/").join(link)) {
            archive.symlink(link, &target.to_string_lossy())?;
        }
    }
    for library in shared_libraries(&dynamic)? {
        let parent = library.parent().unwrap().canonicalize()?;
        let at = parent.join(library.file_name().unwrap());
        archive.copy(&at.to_string_lossy()[1..], &library)?;
    }
    archive.finish()?.flush()?;
    Ok(())
}

/// Writes `kernel`'s initramfs to `out`: the shared archive, then one with
/// its modules under `/modules`.
pub fn build_for_kernel(base: &Path, kernel: &Kernel, out: &Path) -> Result<()> {
    std::fs::copy(base, out).with_context(|| format!("copying to {}", out.display()))?;
    let file = std::fs::OpenOptions::new().append(true).open(out)?;
    let mut archive = Archive::new(BufWriter::new(file));
    for entry in std::fs::read_dir(&kernel.modules)? {
        let path = entry?.path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        archive.copy(&format!("modules/{name}"), &path)?;
    }
    archive.finish()?.flush()?;
    Ok(())
}

/// A copy of `binary` without debug information, in `scratch`.
fn strip(binary: &Path, scratch: &Path) -> Result<PathBuf> {
    let out = scratch.join(binary.file_name().unwrap());
    let status = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&out)
        .arg(binary)
        .status()
        .context("running strip (binutils)")?;
    if !status.success() {
        bail!("strip {} failed: {status}", binary.display());
    }
    Ok(out)
}

/// Builds each `probes/*.c` static for 64 and 32 bits as `<name>64` and
/// `<name>32`, the names `HERMETIC_TEST_PROBES` promises the tests.
fn build_c_probes(probes: &Path, scratch: &Path) -> Result<Vec<PathBuf>> {
    let mut built = Vec::new();
    for entry in
        std::fs::read_dir(probes).with_context(|| format!("reading {}", probes.display()))?
    {
        let source = entry?.path();
        if source.extension().is_none_or(|e| e != "c") {
            continue;
        }
        let stem = source.file_stem().unwrap().to_string_lossy().into_owned();
        for bits in [64, 32] {
            let out = scratch.join(format!("{stem}{bits}"));
            let output = Command::new("gcc")
                .arg(format!("-m{bits}"))
                .args(["-static", "-O2", "-o"])
                .arg(&out)
                .arg(&source)
                .output()
                .context("running gcc")?;
            if !output.status.success() {
                bail!(
                    "gcc -m{bits} -static {} failed (gcc-multilib installed?): {}",
                    source.display(),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            built.push(out);
        }
    }
    Ok(built)
}

/// The shared libraries (and loader) that `binaries` need, from `ldd`.
fn shared_libraries(binaries: &[PathBuf]) -> Result<BTreeSet<PathBuf>> {
    let mut libraries = BTreeSet::new();
    for binary in binaries {
        let output = Command::new("ldd")
            .arg(binary)
            .output()
            .context("running ldd")?;
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(path) = path.filter(|p| p.starts_with('/')) {
                libraries.insert(PathBuf::from(path));
            }
        }
    }
    Ok(libraries)
}
