//! The profiles as data: which ABIs, which calls are allowed, which are
//! ruled on their arguments. Shared by the build script, which compiles the
//! profiles to BPF with libseccomp, and by the library, which describes them.
//! Plain data and pure functions only (no dependencies): the build script
//! includes this file as it is.

/// The allow-list: one system call name a line, `#` starts a comment.
pub const ALLOWLIST: &str = include_str!("../allowlist.txt");

/// The names on the allow-list, in order.
pub fn allowed_names() -> impl Iterator<Item = &'static str> {
    ALLOWLIST
        .lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|name| !name.is_empty())
}

/// The errno of every call that is not allowed (D3).
pub const DEFAULT_ERRNO: i32 = 38; // ENOSYS
/// EPERM.
pub const EPERM: i32 = 1;
/// ENOTSUP (EOPNOTSUPP on Linux).
pub const ENOTSUP: i32 = 95;

/// S_ISUID.
pub const S_ISUID: u64 = 0o4000;
/// S_ISGID.
pub const S_ISGID: u64 = 0o2000;
/// CLONE_NEWUSER.
pub const CLONE_NEWUSER: u64 = 0x1000_0000;

/// An ABI a filter covers (the seccomp architecture tokens that libseccomp
/// names this way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abi {
    /// x86_64.
    X86_64,
    /// i386 programs on x86_64.
    X86,
    /// x32 programs on x86_64 (same audit arch as x86_64, numbers with bit 30).
    X32,
    /// aarch64.
    Aarch64,
    /// 32-bit ARM programs on aarch64.
    Arm,
}

impl Abi {
    /// The ABI's name as SPEC and `--print-plan` write it.
    pub fn name(self) -> &'static str {
        match self {
            Abi::X86_64 => "x86_64",
            Abi::X86 => "i386",
            Abi::X32 => "x32",
            Abi::Aarch64 => "aarch64",
            Abi::Arm => "arm",
        }
    }

    /// The number a system call introduced after the unified numbering
    /// (Linux 5.1: 424 and up, the same on every architecture) has on this
    /// ABI; x32 numbers carry bit 30.
    pub fn unified_number(self, number: u32) -> u32 {
        match self {
            Abi::X32 => number | 0x4000_0000,
            _ => number,
        }
    }
}

/// The ABIs of a host of architecture `arch` (Rust's `target_arch`), native
/// first (B68).
pub fn abis(arch: &str) -> &'static [Abi] {
    match arch {
        "x86_64" => &[Abi::X86_64, Abi::X86, Abi::X32],
        "aarch64" => &[Abi::Aarch64, Abi::Arm],
        "x86" => &[Abi::X86],
        "arm" => &[Abi::Arm],
        _ => &[],
    }
}

/// Calls newer than some libseccomp releases, with their unified number,
/// to rule on by number where the library does not know the name.
pub const BY_NUMBER: &[(&str, u32)] = &[("fchmodat2", 452)];

/// What a rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Let the call through.
    Allow,
    /// Fail it with this errno.
    Errno(i32),
}

/// A condition on one argument: `(arg & mask) == value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Condition {
    /// Argument index, from 0.
    pub arg: u32,
    /// Bits to look at.
    pub mask: u64,
    /// What they must be.
    pub value: u64,
}

/// A rule for one system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The call.
    pub syscall: &'static str,
    /// What happens.
    pub action: Action,
    /// When (always, without one).
    pub condition: Option<Condition>,
}

const fn masked(arg: u32, mask: u64, value: u64) -> Option<Condition> {
    Some(Condition { arg, mask, value })
}

/// The chmod family with the index of its mode argument.
pub const CHMOD_FAMILY: [(&str, u32); 4] = [
    ("chmod", 1),
    ("fchmod", 1),
    ("fchmodat", 2),
    ("fchmodat2", 2),
];

/// Calls that the block on nested user namespaces takes off the allow-list.
pub const BLOCKED_NAMES: [&str; 3] = ["clone", "unshare", "clone3"];

/// The rules beyond the allow-list, for a profile with or without the
/// block on nested user namespaces.
pub fn rules(block_nested_userns: bool) -> Vec<Rule> {
    let mut rules = Vec::new();
    for (syscall, arg) in CHMOD_FAMILY {
        let both = S_ISUID | S_ISGID;
        rules.push(Rule {
            syscall,
            action: Action::Allow,
            condition: masked(arg, both, 0),
        });
        for bit in [S_ISUID, S_ISGID] {
            rules.push(Rule {
                syscall,
                action: Action::Errno(EPERM),
                condition: masked(arg, bit, bit),
            });
        }
    }
    for syscall in ["setxattr", "lsetxattr", "fsetxattr"] {
        rules.push(Rule {
            syscall,
            action: Action::Errno(ENOTSUP),
            condition: None,
        });
    }
    if block_nested_userns {
        for syscall in ["clone", "unshare"] {
            rules.push(Rule {
                syscall,
                action: Action::Allow,
                condition: masked(0, CLONE_NEWUSER, 0),
            });
            rules.push(Rule {
                syscall,
                action: Action::Errno(EPERM),
                condition: masked(0, CLONE_NEWUSER, CLONE_NEWUSER),
            });
        }
        // Its flags live in memory seccomp cannot read: ENOSYS, so that
        // libc falls back to clone (B73).
        rules.push(Rule {
            syscall: "clone3",
            action: Action::Errno(DEFAULT_ERRNO),
            condition: None,
        });
    }
    rules
}

/// The allow-list's names for a profile: all of them, less the calls the
/// block rules on.
pub fn plain_allowed(block_nested_userns: bool) -> Vec<&'static str> {
    allowed_names()
        .filter(|name| !(block_nested_userns && BLOCKED_NAMES.contains(name)))
        .collect()
}

/// The file name (in the build's output directory) of a compiled profile;
/// the library embeds these files by the same names.
#[allow(dead_code)] // used by the build script
pub fn bpf_file_name(block_nested_userns: bool) -> &'static str {
    if block_nested_userns {
        "block-nested-userns.bpf"
    } else {
        "default.bpf"
    }
}
