//! Compiles hermetic's seccomp profiles to BPF at build time, with the
//! system's libseccomp (libseccomp-dev), for every ABI of the target
//! architecture. The programs are embedded in the crate: building a filter
//! this size takes libseccomp 25–60 ms, more than a whole sandbox start, so no
//! process compiles one at run time.
//!
//! Each ABI gets a context of its own; a rule names its call by the number
//! libseccomp resolves for the build host and lets libseccomp translate it
//! to that ABI (adding a rule by the ABI's own number fails in libseccomp
//! 2.5.4 for some i386 calls, arch_prctl among them). A call libseccomp does
//! not know at all is ruled by its unified number, exactly. The contexts are
//! merged into one program.

#[path = "src/profile.rs"]
#[allow(dead_code)]
mod profile;

use std::collections::BTreeSet;
use std::path::PathBuf;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use profile::{Abi, Action};

fn scmp_arch(abi: Abi) -> ScmpArch {
    match abi {
        Abi::X86_64 => ScmpArch::X8664,
        Abi::X86 => ScmpArch::X86,
        Abi::X32 => ScmpArch::X32,
        Abi::Aarch64 => ScmpArch::Aarch64,
        Abi::Arm => ScmpArch::Arm,
    }
}

fn scmp_action(action: Action) -> ScmpAction {
    match action {
        Action::Allow => ScmpAction::Allow,
        Action::Errno(errno) => ScmpAction::Errno(errno),
    }
}

/// How to add a rule for `name` on `abi`: `Some((syscall, exact))`, or
/// `None` when the call does not exist on that ABI.
fn syscall(name: &str, abi: Abi) -> Option<(ScmpSyscall, bool)> {
    let exists =
        ScmpSyscall::from_name_by_arch(name, scmp_arch(abi)).is_ok_and(|s| s.as_raw_syscall() >= 0);
    if exists {
        let translated = ScmpSyscall::from_name(name).expect("a name known for one ABI resolves");
        return Some((translated, false));
    }
    profile::BY_NUMBER
        .iter()
        .find(|(known, _)| {
            *known == name && (forced_by_number(name) || ScmpSyscall::from_name(name).is_err())
        })
        .map(|(_, number)| {
            (
                ScmpSyscall::from_raw_syscall(abi.unified_number(*number) as i32),
                true,
            )
        })
}

/// Whether `name` is ruled by number although libseccomp knows it: the
/// names listed in HERMETIC_SECCOMP_BY_NUMBER (comma-separated), so that the
/// by-number path, which older libseccomp releases need for fchmodat2, is
/// built and tested on this one too (.ci/run does).
fn forced_by_number(name: &str) -> bool {
    std::env::var("HERMETIC_SECCOMP_BY_NUMBER")
        .is_ok_and(|names| names.split(',').any(|n| n.trim() == name))
}

fn context(
    abi: Abi,
    block_nested_userns: bool,
    found: &mut BTreeSet<&'static str>,
) -> ScmpFilterContext {
    let arch = scmp_arch(abi);
    let mut ctx =
        ScmpFilterContext::new(ScmpAction::Errno(profile::DEFAULT_ERRNO)).expect("seccomp_init");
    if arch != ScmpArch::native() {
        ctx.add_arch(arch).expect("seccomp_arch_add");
        ctx.remove_arch(ScmpArch::native())
            .expect("seccomp_arch_remove");
    }
    // A binary tree instead of a list: a few comparisons per call.
    ctx.set_ctl_optimize(2).expect("SCMP_FLTATR_CTL_OPTIMIZE");
    let mut add = |name: &str, action: Action, comparators: &[ScmpArgCompare]| {
        let Some((syscall, exact)) = syscall(name, abi) else {
            return false;
        };
        let added = if exact {
            ctx.add_rule_conditional_exact(scmp_action(action), syscall, comparators)
        } else {
            ctx.add_rule_conditional(scmp_action(action), syscall, comparators)
        };
        added.unwrap_or_else(|e| panic!("adding a rule for {name} on {}: {e}", abi.name()));
        true
    };
    for name in profile::plain_allowed(block_nested_userns) {
        if add(name, Action::Allow, &[]) {
            found.insert(name);
        }
    }
    for rule in profile::rules(block_nested_userns) {
        // libseccomp refuses a rule that only repeats the default action
        // (clone3 under the block): the call is simply not allowed.
        if rule.action == Action::Errno(profile::DEFAULT_ERRNO) && rule.condition.is_none() {
            continue;
        }
        let comparators: Vec<ScmpArgCompare> = rule
            .condition
            .iter()
            .map(|c| ScmpArgCompare::new(c.arg, ScmpCompareOp::MaskedEqual(c.mask), c.value))
            .collect();
        add(rule.syscall, rule.action, &comparators);
    }
    ctx
}

fn main() {
    println!("cargo:rerun-if-changed=allowlist.txt");
    println!("cargo:rerun-if-changed=src/profile.rs");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=HERMETIC_SECCOMP_BY_NUMBER");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets CARGO_CFG_TARGET_ARCH");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let abis = profile::abis(&arch);
    for block in [false, true] {
        let path = out.join(profile::bpf_file_name(block));
        if abis.is_empty() {
            println!("cargo:warning=no seccomp profile for target architecture {arch}");
            std::fs::write(&path, b"").expect("writing an empty profile");
            continue;
        }
        let mut found = BTreeSet::new();
        let mut merged: Option<ScmpFilterContext> = None;
        for abi in abis {
            let ctx = context(*abi, block, &mut found);
            merged = Some(match merged {
                None => ctx,
                Some(mut into) => {
                    into.merge(ctx).expect("seccomp_merge");
                    into
                }
            });
        }
        let unknown: Vec<&str> = profile::plain_allowed(block)
            .into_iter()
            .filter(|name| !found.contains(name))
            .collect();
        assert!(
            unknown.is_empty(),
            "allowlist.txt names calls libseccomp knows on no ABI of {arch}: {unknown:?}"
        );
        let file = std::fs::File::create(&path).expect("creating the profile file");
        merged
            .expect("at least one ABI")
            .export_bpf(&file)
            .expect("seccomp_export_bpf");
    }
}
