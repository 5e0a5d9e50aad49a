//! The C probes of `tests/probes/`: built static by the host's gcc, or taken
//! ready-built from the directory `HERMETIC_TEST_PROBES` names (vm-tests'
//! guests carry no compiler; the harness builds them on the host).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use crate::set_mode;

/// The environment variable naming a directory of ready-built probes, one
/// file `<name><bits>` (`seccomp_probe64`, say) per probe and word size.
pub const PREBUILT_PROBES: &str = "HERMETIC_TEST_PROBES";

/// The environment variable that turns a missing host tool into a test
/// failure instead of a skip (CI sets it: there every tool is installed).
pub const REQUIRE_HOST_TOOLS: &str = "HERMETIC_REQUIRE_HOST_TOOLS";

/// The probe `tests/probes/<name>.c` for `bits` (64 or 32), static, in a
/// directory every user can read; built once per process. `Err` says why it
/// cannot be had (no compiler, no 32-bit libc).
pub fn compiled_probe(name: &str, bits: u32) -> Result<PathBuf, String> {
    type Built = BTreeMap<(String, u32), Result<PathBuf, String>>;
    static BUILT: OnceLock<Mutex<Built>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    built
        .entry((name.to_string(), bits))
        .or_insert_with(|| find_or_build(name, bits))
        .clone()
}

fn find_or_build(name: &str, bits: u32) -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os(PREBUILT_PROBES) {
        let probe = PathBuf::from(dir).join(format!("{name}{bits}"));
        return if probe.exists() {
            Ok(probe)
        } else {
            Err(format!("{} is missing", probe.display()))
        };
    }
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("probes")
        .join(format!("{name}.c"));
    let dir = std::env::temp_dir().join("hermetic-tests-probes");
    std::fs::create_dir_all(&dir).unwrap();
    set_mode(&dir, 0o755);
    let partial = dir.join(format!(".{name}{bits}-{}", std::process::id()));
    let mut gcc = Command::new("gcc");
    if bits == 32 {
        gcc.arg("-m32");
    }
    let built = gcc
        .args(["-static", "-O2", "-o"])
        .arg(&partial)
        .arg(&source)
        .output()
        .map_err(|e| format!("gcc: {e}"))?;
    if !built.status.success() {
        return Err(format!(
            "gcc cannot build {} for {bits} bits (gcc -m32 -static needs gcc-multilib; \
             scripts/setup-test-host installs it): {}",
            source.display(),
            String::from_utf8_lossy(&built.stderr)
        ));
    }
    let probe = dir.join(format!("{name}{bits}"));
    std::fs::rename(&partial, &probe).unwrap();
    Ok(probe)
}

/// Whether the host tool `tool` runs (`tool --version`); prints why `test`
/// is skipped if not, or fails it when `HERMETIC_REQUIRE_HOST_TOOLS` is set.
pub fn host_tool_or_skip(test: &str, tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os(REQUIRE_HOST_TOOLS).is_none(),
            "{test}: {REQUIRE_HOST_TOOLS} is set but {tool} does not run \
             (scripts/setup-test-host installs it)"
        );
        eprintln!("skipped {test}: no {tool} on this host");
    }
    found
}
