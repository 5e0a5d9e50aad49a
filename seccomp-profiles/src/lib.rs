//! Seccomp profiles as data, compiled to BPF for every ABI the host runs
//! (SPEC D3, D4, B66–B70, B72–B74).
//!
//! The default profile is Lix's kind of allow-list: every call not on
//! `allowlist.txt` fails with ENOSYS; the chmod family fails with EPERM when
//! the mode has S_ISUID or S_ISGID; the setxattr family with ENOTSUP;
//! io_uring is not allowed. The optional block on nested user namespaces
//! adds: `clone` and `unshare` with CLONE_NEWUSER fail with EPERM, `clone3`
//! with ENOSYS.
//!
//! The build script compiles both profiles with libseccomp, so no process
//! compiles a filter at run time: a [`Profile`] hands out the ready program.

pub mod bpf;
mod profile;

use std::sync::OnceLock;

use serde::Serialize;

pub use profile::{
    ALLOWLIST, Abi, Action, BY_NUMBER, CHMOD_FAMILY, Condition, DEFAULT_ERRNO, Rule, allowed_names,
    plain_allowed, rules,
};

/// One instruction of a seccomp program, as the kernel takes it.
pub type SockFilter = libc::sock_filter;

static DEFAULT_BPF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/default.bpf"));
static BLOCK_BPF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/block-nested-userns.bpf"));

/// A seccomp profile: the default one, with or without the block on nested
/// user namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    /// `sandbox-block-nested-userns`.
    pub block_nested_userns: bool,
}

/// What a profile does, for `sandbox-run --print-plan`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Description {
    /// The profile's name.
    pub name: &'static str,
    /// The ABIs the program covers.
    pub abis: Vec<&'static str>,
    /// What a call not allowed gets.
    pub default_action: String,
    /// How many calls the allow-list names.
    pub allowed_calls: usize,
    /// The rules beyond the allow-list.
    pub rules: Vec<String>,
    /// Whether the block on nested user namespaces is on.
    pub block_nested_userns: bool,
    /// The size of the compiled program, in instructions.
    pub instructions: usize,
}

fn errno_name(errno: i32) -> String {
    match errno {
        1 => "EPERM".into(),
        38 => "ENOSYS".into(),
        95 => "ENOTSUP".into(),
        other => format!("errno {other}"),
    }
}

impl Rule {
    /// The rule in words, e.g. `chmod: EPERM if arg1 & 0o4000 == 0o4000`.
    pub fn describe(&self) -> String {
        let action = match self.action {
            Action::Allow => "allow".to_string(),
            Action::Errno(errno) => errno_name(errno),
        };
        match self.condition {
            None => format!("{}: {action}", self.syscall),
            Some(c) => format!(
                "{}: {action} if arg{} & {:#o} == {:#o}",
                self.syscall, c.arg, c.mask, c.value
            ),
        }
    }
}

impl Profile {
    /// The profile for a sandbox.
    pub fn new(block_nested_userns: bool) -> Profile {
        Profile {
            block_nested_userns,
        }
    }

    /// Its name.
    pub fn name(&self) -> &'static str {
        if self.block_nested_userns {
            "default+block-nested-userns"
        } else {
            "default"
        }
    }

    /// The ABIs the compiled program covers (this build's architecture).
    pub fn abis(&self) -> &'static [Abi] {
        profile::abis(std::env::consts::ARCH)
    }

    /// The compiled program, as libseccomp exported it (empty on an
    /// architecture without a profile).
    pub fn bpf(&self) -> &'static [u8] {
        if self.block_nested_userns {
            BLOCK_BPF
        } else {
            DEFAULT_BPF
        }
    }

    /// The compiled program as instructions for the kernel, decoded once per
    /// process.
    pub fn program(&self) -> &'static [SockFilter] {
        static DEFAULT: OnceLock<Vec<SockFilter>> = OnceLock::new();
        static BLOCK: OnceLock<Vec<SockFilter>> = OnceLock::new();
        let cell = if self.block_nested_userns {
            &BLOCK
        } else {
            &DEFAULT
        };
        cell.get_or_init(|| {
            bpf::instructions(self.bpf())
                .expect("the build script exports whole instructions")
                .into_iter()
                .map(|i| SockFilter {
                    code: i.code,
                    jt: i.jt,
                    jf: i.jf,
                    k: i.k,
                })
                .collect()
        })
    }

    /// What it does, in words.
    pub fn describe(&self) -> Description {
        Description {
            name: self.name(),
            abis: self.abis().iter().map(|abi| abi.name()).collect(),
            default_action: errno_name(DEFAULT_ERRNO),
            allowed_calls: plain_allowed(self.block_nested_userns).len(),
            rules: rules(self.block_nested_userns)
                .iter()
                .map(Rule::describe)
                .collect(),
            block_nested_userns: self.block_nested_userns,
            instructions: self.program().len(),
        }
    }
}

#[cfg(test)]
mod tests;
