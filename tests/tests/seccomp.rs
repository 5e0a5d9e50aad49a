//! The seccomp filter (SPEC D3, D4, B66–B70), seen from inside a sandbox:
//! a C probe, built static for 64 and 32 bits, makes the calls the profile
//! rules on and prints what they returned.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use hermetic_runtime::SandboxPath;
use hermetic_tests::kernel;
use hermetic_tests::probes::{compiled_probe, host_tool_or_skip};
use hermetic_tests::{TempDir, probe, probe_spec, root_or_skip, run, set_mode};

/// The seccomp probe for `bits` (64 or 32); `None` (with the reason
/// printed) when it cannot be had.
fn built_probe(bits: u32) -> Option<PathBuf> {
    compiled_probe("seccomp_probe", bits)
        .inspect_err(|reason| eprintln!("no {bits}-bit probe: {reason}"))
        .ok()
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

/// What the kernel itself answers the probe's calls: the 64-bit probe with
/// the filter left off, run once per test binary.
fn unfiltered() -> &'static BTreeMap<String, String> {
    static VALUES: OnceLock<BTreeMap<String, String>> = OnceLock::new();
    VALUES.get_or_init(|| run_probe(64, |spec| spec.filter_syscalls = false).unwrap())
}

/// Whether the kernel has `fchmodat2` (6.6 and later), checked against
/// vm-tests' list of kernel differences.
fn kernel_has_fchmodat2() -> bool {
    !kernel::lacks("fchmodat2", unfiltered()["fchmodat2_755"] == "ok")
}

fn check_chmod_family(values: &BTreeMap<String, String>) {
    let kernel_has_fchmodat2 = kernel_has_fchmodat2();
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
    let test = "ordinary_work_succeeds_a_c_compile_with_the_host_compiler";
    if !root_or_skip(test) || !host_tool_or_skip(test, "gcc") {
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
    std::fs::copy(compiled_probe("euid", 64).unwrap(), &euid).unwrap();
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
fn syscalls_this_kernel_lacks_are_listed_and_fall_back() {
    let test = "syscalls_this_kernel_lacks_are_listed_and_fall_back";
    if !root_or_skip(test) {
        return;
    }
    // fchmodat2 (6.6): without it, the filter still refuses setuid and
    // setgid modes, and ordinary modes get the kernel's ENOSYS.
    let values = run_probe(64, |_| {}).expect("the 64-bit probe");
    check_chmod_family(&values);
    // mount_setattr (5.12): hermetic never calls it (B39: binds are not
    // remounted read-only), so a sandbox starts without it, and its inputs
    // are kept from the build user by their ownership.
    let lacks_mount_setattr =
        kernel::lacks("mount_setattr", unfiltered()["mount_setattr"] != "ENOSYS");
    let p = probe("test -w /bin/sh && echo writable=yes || echo writable=no");
    assert_eq!(
        p.get("writable"),
        "no",
        "lacks mount_setattr: {lacks_mount_setattr}"
    );
}

#[test]
fn the_filter_can_be_left_off_to_diagnose_a_build() {
    if !root_or_skip("the_filter_can_be_left_off_to_diagnose_a_build") {
        return;
    }
    let values = unfiltered();
    assert_eq!(values["chmod_4755"], "ok");
    assert_eq!(values["io_uring_setup"], "ok");
}
