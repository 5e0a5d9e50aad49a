//! The compiled programs, run through the interpreter for every ABI: what
//! the kernel will answer, including for ABIs this kernel may not run.

use std::collections::BTreeSet;

use crate::bpf::{
    AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, SeccompData, Verdict, X32_SYSCALL_BIT, evaluate,
    instructions,
};
use crate::{Profile, allowed_names};

const EPERM: Verdict = Verdict::Errno(1);
const ENOSYS: Verdict = Verdict::Errno(38);
const ENOTSUP: Verdict = Verdict::Errno(95);

/// A call on one ABI: (audit arch, number).
#[derive(Clone, Copy)]
struct Call {
    arch: u32,
    nr: u32,
}

fn verdict(profile: Profile, call: Call, args: [u64; 6]) -> Verdict {
    let program = instructions(profile.bpf()).unwrap();
    let data = SeccompData {
        nr: call.nr,
        arch: call.arch,
        instruction_pointer: 0,
        args,
    };
    evaluate(&program, &data).unwrap()
}

/// The numbers of the calls these tests make, on x86_64, i386 and x32.
fn numbers(name: &str) -> [Call; 3] {
    let (x86_64, i386) = match name {
        "read" => (0, 3),
        "chmod" => (90, 15),
        "fchmod" => (91, 94),
        "fchmodat" => (268, 306),
        "fchmodat2" => (452, 452),
        "setxattr" => (188, 226),
        "lsetxattr" => (189, 227),
        "fsetxattr" => (190, 228),
        "clone" => (56, 120),
        "unshare" => (272, 310),
        "clone3" => (435, 435),
        "io_uring_setup" => (425, 425),
        "io_uring_enter" => (426, 426),
        "unassigned" => (999, 999),
        other => panic!("no number for {other}"),
    };
    [
        Call {
            arch: AUDIT_ARCH_X86_64,
            nr: x86_64,
        },
        Call {
            arch: AUDIT_ARCH_I386,
            nr: i386,
        },
        Call {
            arch: AUDIT_ARCH_X86_64,
            nr: x86_64 | X32_SYSCALL_BIT,
        },
    ]
}

fn with_arg(index: usize, value: u64) -> [u64; 6] {
    let mut args = [0; 6];
    args[index] = value;
    args
}

#[cfg(target_arch = "x86_64")]
#[test]
fn setuid_and_setgid_modes_fail_on_every_abi() {
    for block in [false, true] {
        let profile = Profile::new(block);
        for (name, arg) in crate::CHMOD_FAMILY {
            for call in numbers(name) {
                let v = |mode: u64| verdict(profile, call, with_arg(arg as usize, mode));
                assert_eq!(
                    v(0o4755),
                    EPERM,
                    "{name} u+s on {:#x}/{:#x}",
                    call.arch,
                    call.nr
                );
                assert_eq!(v(0o2755), EPERM, "{name} g+s");
                assert_eq!(v(0o6755), EPERM, "{name} ug+s");
                assert_eq!(v(0o1777), Verdict::Allow, "{name} sticky");
                assert_eq!(v(0o755), Verdict::Allow, "{name} plain");
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn high_argument_bits_do_not_hide_setuid() {
    let profile = Profile::new(false);
    let [x86_64, _, x32] = numbers("chmod");
    for call in [x86_64, x32] {
        assert_eq!(
            verdict(profile, call, with_arg(1, 0xffff_0000_0000_0000 | 0o4755)),
            EPERM
        );
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn xattrs_io_uring_and_unknown_calls() {
    let profile = Profile::new(false);
    for name in ["setxattr", "lsetxattr", "fsetxattr"] {
        for call in numbers(name) {
            assert_eq!(verdict(profile, call, [0; 6]), ENOTSUP, "{name}");
        }
    }
    for name in ["io_uring_setup", "io_uring_enter", "unassigned"] {
        for call in numbers(name) {
            assert_eq!(verdict(profile, call, [0; 6]), ENOSYS, "{name}");
        }
    }
    for call in numbers("read") {
        assert_eq!(verdict(profile, call, [0; 6]), Verdict::Allow);
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn foreign_architectures_are_killed() {
    const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;
    let call = Call {
        arch: AUDIT_ARCH_AARCH64,
        nr: 63,
    };
    assert_eq!(verdict(Profile::new(false), call, [0; 6]), Verdict::Kill);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn the_block_refuses_new_user_namespaces_only() {
    const CLONE_NEWUSER: u64 = 0x1000_0000;
    const CLONE_NEWNS: u64 = 0x0002_0000;
    let off = Profile::new(false);
    let on = Profile::new(true);
    for name in ["clone", "unshare"] {
        for call in numbers(name) {
            assert_eq!(
                verdict(off, call, with_arg(0, CLONE_NEWUSER)),
                Verdict::Allow,
                "{name} off"
            );
            assert_eq!(
                verdict(on, call, with_arg(0, CLONE_NEWUSER | CLONE_NEWNS)),
                EPERM,
                "{name} on"
            );
            assert_eq!(
                verdict(on, call, with_arg(0, CLONE_NEWNS)),
                Verdict::Allow,
                "{name} on, no userns"
            );
            assert_eq!(
                verdict(on, call, with_arg(0, 0x11)),
                Verdict::Allow,
                "{name} on, fork-like"
            );
        }
    }
    for call in numbers("clone3") {
        assert_eq!(verdict(off, call, [0; 6]), Verdict::Allow);
        assert_eq!(verdict(on, call, [0; 6]), ENOSYS);
    }
}

#[test]
fn the_allowlist_names_each_call_once_and_none_the_rules_own() {
    let names: Vec<&str> = allowed_names().collect();
    let unique: BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(names.len(), unique.len(), "a name is listed twice");
    for ruled in [
        "chmod",
        "fchmod",
        "fchmodat",
        "fchmodat2",
        "setxattr",
        "lsetxattr",
        "fsetxattr",
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
    ] {
        assert!(!unique.contains(ruled), "{ruled} is on the allow-list");
    }
    for needed in [
        "read",
        "execve",
        "clone",
        "clone3",
        "unshare",
        "mount",
        "ptrace",
        "bpf",
        "chown32",
        "socketcall",
    ] {
        assert!(unique.contains(needed), "{needed} is missing");
    }
}

#[test]
fn descriptions_name_the_rules() {
    let on = Profile::new(true).describe();
    assert_eq!(on.name, "default+block-nested-userns");
    assert!(on.block_nested_userns);
    assert!(
        on.rules
            .contains(&"chmod: EPERM if arg1 & 0o4000 == 0o4000".to_string()),
        "{:?}",
        on.rules
    );
    assert!(on.rules.contains(&"clone3: ENOSYS".to_string()));
    assert!(on.instructions > 0);
    let off = Profile::new(false).describe();
    assert!(!off.rules.iter().any(|r| r.starts_with("clone")));
    assert_eq!(off.default_action, "ENOSYS");
    if cfg!(target_arch = "x86_64") {
        assert_eq!(off.abis, vec!["x86_64", "i386", "x32"]);
    }
}
