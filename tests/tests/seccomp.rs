//! The seccomp filter (SPEC D3, D4, B66–B70), seen from inside a sandbox:
//! a C probe, built static for 64 and 32 bits, makes the calls the profile
//! rules on and prints what they returned.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use hermetic_runtime::SandboxPath;
use hermetic_tests::{TempDir, probe, probe_spec, root_or_skip, run, set_mode};

const PROBE_SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/probes/seccomp_probe.c");

/// The probe for `bits` (64 or 32), built once per test binary into a
/// directory every user can read; `None` (with the reason printed) when
/// the compiler cannot build it.
fn built_probe(bits: u32) -> Option<PathBuf> {
    static PROBES: OnceLock<BTreeMap<u32, Option<PathBuf>>> = OnceLock::new();
    PROBES
        .get_or_init(|| {
            let dir = std::env::temp_dir().join("hermetic-tests-probes");
            std::fs::create_dir_all(&dir).unwrap();
            set_mode(&dir, 0o755);
            [64, 32]
                .into_iter()
                .map(|bits| {
                    let partial = dir.join(format!(".probe{bits}-{}", std::process::id()));
                    let mut gcc = Command::new("gcc");
                    if bits == 32 {
                        gcc.arg("-m32");
                    }
                    let built = gcc
                        .args(["-static", "-O2", "-o"])
                        .arg(&partial)
                        .arg(PROBE_SOURCE)
                        .output()
                        .expect("gcc runs");
                    if !built.status.success() {
                        eprintln!(
                            "cannot build the {bits}-bit probe (gcc -m32 -static needs gcc-multilib; \
                             scripts/setup-test-host installs it): {}",
                            String::from_utf8_lossy(&built.stderr)
                        );
                        return (bits, None);
                    }
                    let probe = dir.join(format!("probe{bits}"));
                    std::fs::rename(&partial, &probe).unwrap();
                    (bits, Some(probe))
                })
                .collect()
        })
        .get(&bits)
        .cloned()
        .flatten()
}

/// Runs the `bits`-bit probe as a sandbox's builder; `configure` adjusts
/// the spec first.
fn run_probe(
    bits: u32,
    configure: impl FnOnce(&mut hermetic_runtime::SandboxSpec),
) -> Option<BTreeMap<String, String>> {
    let probe = built_probe(bits)?;
    let mut spec = probe_spec("");
    spec.builder = PathBuf::from("/probe");
    spec.args.clear();
    spec.sandbox_paths.push(SandboxPath {
        target: PathBuf::from("/probe"),
        source: probe,
        optional: false,
    });
    configure(&mut spec);
    let result = run(&spec).unwrap_or_else(|e| panic!("{}", hermetic_tests::chain(&e)));
    assert_eq!(result.status.code(), 0, "{}", result.output);
    Some(result.values())
}

fn check_chmod_family(values: &BTreeMap<String, String>) {
    let kernel_has_fchmodat2 = values["fchmodat2_755"] == "ok";
    for call in ["chmod", "fchmod", "fchmodat", "fchmodat2"] {
        for mode in ["4755", "2755"] {
            assert_eq!(
                values[&format!("{call}_{mode}")],
                "EPERM",
                "{call} {mode}: {values:?}"
            );
        }
        for mode in ["1777", "755"] {
            let expected = if call == "fchmodat2" && !kernel_has_fchmodat2 {
                "ENOSYS"
            } else {
                "ok"
            };
            assert_eq!(
                values[&format!("{call}_{mode}")],
                expected,
                "{call} {mode}: {values:?}"
            );
        }
    }
}

#[test]
fn setuid_and_setgid_modes_fail_through_every_chmod_call_64_bit() {
    if !root_or_skip("setuid_and_setgid_modes_fail_through_every_chmod_call_64_bit") {
        return;
    }
    let values = run_probe(64, |_| {}).expect("the 64-bit probe builds with the host compiler");
    assert_eq!(values["pointer_bits"], "64");
    check_chmod_family(&values);
}

#[test]
fn a_32_bit_program_runs_and_meets_the_same_rules() {
    if !root_or_skip("a_32_bit_program_runs_and_meets_the_same_rules") {
        return;
    }
    let Some(values) = run_probe(32, |spec| spec.system = "i686-linux".into()) else {
        eprintln!("skipped: no 32-bit probe (see above)");
        return;
    };
    assert_eq!(values["pointer_bits"], "32");
    assert_eq!(values["machine"], "i686", "B75: 32-bit personality");
    check_chmod_family(&values);
    assert_eq!(values["setxattr"], "ENOTSUP");
    assert_eq!(values["io_uring_setup"], "ENOSYS");
    assert_eq!(values["unassigned"], "ENOSYS");
    assert_eq!(values["fork"], "ok");
}

#[test]
fn xattrs_io_uring_and_unassigned_calls() {
    if !root_or_skip("xattrs_io_uring_and_unassigned_calls") {
        return;
    }
    let values = run_probe(64, |_| {}).unwrap();
    assert_eq!(values["setxattr"], "ENOTSUP");
    assert_eq!(values["io_uring_setup"], "ENOSYS");
    assert_eq!(values["unassigned"], "ENOSYS");
    assert_eq!(values["fork"], "ok");
}

#[test]
fn x32_calls_meet_the_same_rules() {
    if !root_or_skip("x32_calls_meet_the_same_rules") || std::env::consts::ARCH != "x86_64" {
        return;
    }
    let values = run_probe(64, |_| {}).unwrap();
    if values["x32"] != "enabled" {
        eprintln!(
            "skipped: this kernel runs no x32 programs (CONFIG_X86_X32_ABI off, or syscall.x32=n); \
             the profile's x32 rules are checked against the compiled program in seccomp-profiles"
        );
        return;
    }
    assert_eq!(values["x32_chmod_4755"], "EPERM");
}

#[test]
fn nested_user_namespaces_work_unless_blocked() {
    if !root_or_skip("nested_user_namespaces_work_unless_blocked") {
        return;
    }
    // Off (the default): a nested user namespace works, by every call.
    let nested = probe("unshare -U true && echo nested=ok");
    assert_eq!(nested.get("nested"), "ok", "{}", nested.output);
    let values = run_probe(64, |_| {}).unwrap();
    for call in ["clone3_newuser", "clone_newuser", "unshare_newuser"] {
        assert_eq!(values[call], "ok", "{call}");
    }
    // On (D4): EPERM for clone and unshare, ENOSYS for clone3, and forks
    // go on working.
    let mut spec = probe_spec("unshare -U true");
    spec.sandbox_block_nested_userns = true;
    let blocked = run(&spec).unwrap();
    assert_ne!(blocked.status.code(), 0);
    assert!(
        blocked.output.contains("Operation not permitted"),
        "{}",
        blocked.output
    );
    let values = run_probe(64, |spec| spec.sandbox_block_nested_userns = true).unwrap();
    assert_eq!(values["clone3_newuser"], "ENOSYS");
    assert_eq!(values["clone_newuser"], "EPERM");
    assert_eq!(values["unshare_newuser"], "EPERM");
    assert_eq!(values["fork"], "ok");
}

#[test]
fn ordinary_work_succeeds_a_c_compile_with_the_host_compiler() {
    if !root_or_skip("ordinary_work_succeeds_a_c_compile_with_the_host_compiler") {
        return;
    }
    // The host's toolchain bound in (/usr, and /lib, /lib64 as they are:
    // symlinks on a merged-/usr host, directories elsewhere).
    let mut spec = probe_spec(
        "printf '#include <stdio.h>\\nint main(void) { puts(\"compiled-and-ran\"); return 0; }\\n' > hello.c && \
         gcc -O2 -o hello hello.c && ./hello && for f in a b c; do echo $f > $f; done && cat a b c | wc -l",
    );
    for path in ["/usr", "/lib?", "/lib64?", "/lib32?"] {
        spec.sandbox_paths.push(path.parse().unwrap());
    }
    spec.env.insert("PATH".into(), "/usr/bin:/bin".into());
    let p = run(&spec).unwrap();
    assert_eq!(p.status.code(), 0, "{}", p.output);
    assert!(p.output.contains("compiled-and-ran\n3\n"), "{}", p.output);
}

#[test]
fn a_setuid_binary_gains_nothing() {
    if !root_or_skip("a_setuid_binary_gains_nothing") {
        return;
    }
    // A setuid-root program that prints its effective uid.
    let dir = TempDir::new("setuid");
    set_mode(&dir.path, 0o755);
    let euid = dir.path.join("euid");
    let built = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&euid)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/probes/euid.c"))
        .status()
        .expect("gcc runs");
    assert!(built.success());
    set_mode(&euid, 0o4755);
    // Made visible through sandbox-paths.
    let mut spec = probe_spec(
        "/bin/euid; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status | tr -d '\\t' | tr ':' '='",
    );
    spec.sandbox_paths
        .push(format!("/bin/euid={}", euid.display()).parse().unwrap());
    let p = run(&spec).unwrap();
    assert_eq!(p.get("euid"), "1000");
    assert_eq!(p.get("CapEff"), "0000000000000000");
    assert_eq!(p.get("NoNewPrivs"), "1");
    // Unsandboxed, where host root is root: only no_new_privs stands
    // between the build user and the setuid-root program (without it, it
    // prints euid=0).
    let mut spec = probe_spec("");
    spec.sandbox = false;
    spec.builder = euid;
    spec.args.clear();
    let p = run(&spec).unwrap();
    assert_eq!(
        p.get("euid"),
        hermetic_tests::build_user().uid.to_string(),
        "{}",
        p.output
    );
}

#[test]
fn unsandboxed_builds_are_filtered_too() {
    if !root_or_skip("unsandboxed_builds_are_filtered_too") {
        return;
    }
    // B69: no namespaces, the host's filesystem, the build user's ids, and
    // the same filter.
    let probe = built_probe(64).unwrap();
    let mut spec = probe_spec("");
    spec.sandbox = false;
    spec.builder = probe;
    spec.args.clear();
    let p = run(&spec).unwrap_or_else(|e| panic!("{}", hermetic_tests::chain(&e)));
    let values = p.values();
    check_chmod_family(&values);
    assert_eq!(values["setxattr"], "ENOTSUP");
    // Its own ids and namespaces: the host's.
    let mut spec = probe_spec("");
    spec.sandbox = false;
    spec.builder = PathBuf::from("/bin/sh");
    spec.args = vec![
        "-c".into(),
        "echo uid=$(id -u); echo mnt=$(readlink /proc/self/ns/mnt); echo cwd=$(pwd); \
         echo seccomp=$(grep '^Seccomp:' /proc/self/status | cut -f2)"
            .into(),
    ];
    spec.env.insert("PATH".into(), "/usr/bin:/bin".into());
    let p = run(&spec).unwrap();
    assert_eq!(p.get("uid"), hermetic_tests::build_user().uid.to_string());
    let host_mnt = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    assert_eq!(p.get("mnt"), host_mnt.to_string_lossy());
    assert!(
        Path::new(p.get("cwd")).is_absolute() && p.get("cwd") != "/build",
        "{}",
        p.get("cwd")
    );
    assert_eq!(p.get("seccomp"), "2");
}

#[test]
fn the_filter_can_be_left_off_to_diagnose_a_build() {
    if !root_or_skip("the_filter_can_be_left_off_to_diagnose_a_build") {
        return;
    }
    let values = run_probe(64, |spec| spec.filter_syscalls = false).unwrap();
    assert_eq!(values["chmod_4755"], "ok");
    assert_eq!(values["io_uring_setup"], "ok");
}
