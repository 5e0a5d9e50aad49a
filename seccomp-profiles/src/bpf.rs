//! A classic-BPF interpreter for seccomp programs: runs a filter over a
//! `seccomp_data` the way the kernel does, to check a compiled profile's
//! answer for calls the running kernel cannot make (x32 on a kernel without
//! it, say) and to explain what a filter does with a call.

/// The input of a seccomp filter (`struct seccomp_data`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeccompData {
    /// The system call number.
    pub nr: u32,
    /// The audit architecture token.
    pub arch: u32,
    /// The instruction pointer.
    pub instruction_pointer: u64,
    /// The arguments.
    pub args: [u64; 6],
}

/// The audit architecture of x86_64 (and of x32 calls).
pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// The audit architecture of i386.
pub const AUDIT_ARCH_I386: u32 = 0x4000_0003;
/// The bit that marks an x32 call on x86_64.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// What a filter decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// SECCOMP_RET_ALLOW.
    Allow,
    /// SECCOMP_RET_ERRNO with this errno.
    Errno(u16),
    /// SECCOMP_RET_KILL_THREAD or _PROCESS.
    Kill,
    /// Another action (trap, trace, log, notify), as returned.
    Other(u32),
}

impl Verdict {
    fn from_return(value: u32) -> Verdict {
        match value & 0xffff_0000 {
            0x7fff_0000 => Verdict::Allow,
            0x0005_0000 => Verdict::Errno((value & 0xffff) as u16),
            0x0000_0000 | 0x8000_0000 => Verdict::Kill,
            _ => Verdict::Other(value),
        }
    }
}

/// Why a program could not be run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BpfError {
    /// The bytes are not whole 8-byte instructions.
    Length,
    /// An opcode this interpreter does not know.
    Opcode(u16),
    /// A jump or load out of range.
    OutOfRange(usize),
    /// The program ended without returning.
    FellOff,
}

/// One instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instruction {
    /// Opcode.
    pub code: u16,
    /// Jump offset if true.
    pub jt: u8,
    /// Jump offset if false.
    pub jf: u8,
    /// Operand.
    pub k: u32,
}

/// Splits a program, as libseccomp exports it (native byte order), into
/// instructions.
pub fn instructions(program: &[u8]) -> Result<Vec<Instruction>, BpfError> {
    if program.len() % 8 != 0 {
        return Err(BpfError::Length);
    }
    Ok(program
        .chunks_exact(8)
        .map(|c| Instruction {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

fn load_word(data: &SeccompData, offset: u32) -> Result<u32, BpfError> {
    let word = |value: u64, high: bool| {
        if high {
            (value >> 32) as u32
        } else {
            value as u32
        }
    };
    // Arguments are little-endian 64-bit words on the architectures we
    // build for: the low half first.
    Ok(match offset {
        0 => data.nr,
        4 => data.arch,
        8 => word(data.instruction_pointer, false),
        12 => word(data.instruction_pointer, true),
        16..=63 if offset % 4 == 0 => {
            let index = ((offset - 16) / 8) as usize;
            word(data.args[index], (offset - 16) % 8 == 4)
        }
        _ => return Err(BpfError::OutOfRange(offset as usize)),
    })
}

/// Runs `program` over `data` and returns what it decided.
pub fn evaluate(program: &[Instruction], data: &SeccompData) -> Result<Verdict, BpfError> {
    let (mut a, mut x) = (0u32, 0u32);
    let mut memory = [0u32; 16];
    let mut pc = 0usize;
    loop {
        let insn = *program.get(pc).ok_or(BpfError::FellOff)?;
        pc += 1;
        let jump = |pc: usize, taken: bool| {
            pc + if taken {
                insn.jt as usize
            } else {
                insn.jf as usize
            }
        };
        match insn.code {
            0x20 => a = load_word(data, insn.k)?, // ld  [k]
            0x00 => a = insn.k,                   // ld  #k
            0x60 => {
                a = *memory
                    .get(insn.k as usize)
                    .ok_or(BpfError::OutOfRange(insn.k as usize))?
            } // ld M[k]
            0x61 => {
                x = *memory
                    .get(insn.k as usize)
                    .ok_or(BpfError::OutOfRange(insn.k as usize))?
            } // ldx M[k]
            0x01 => x = insn.k,                   // ldx #k
            0x02 => {
                *memory
                    .get_mut(insn.k as usize)
                    .ok_or(BpfError::OutOfRange(insn.k as usize))? = a
            } // st M[k]
            0x03 => {
                *memory
                    .get_mut(insn.k as usize)
                    .ok_or(BpfError::OutOfRange(insn.k as usize))? = x
            } // stx M[k]
            0x07 => x = a,                        // tax
            0x87 => a = x,                        // txa
            0x54 => a &= insn.k,                  // and #k
            0x44 => a |= insn.k,                  // or  #k
            0x04 => a = a.wrapping_add(insn.k),   // add #k
            0x14 => a = a.wrapping_sub(insn.k),   // sub #k
            0x05 => pc += insn.k as usize,        // ja
            0x15 => pc = jump(pc, a == insn.k),   // jeq #k
            0x25 => pc = jump(pc, a > insn.k),    // jgt #k
            0x35 => pc = jump(pc, a >= insn.k),   // jge #k
            0x45 => pc = jump(pc, a & insn.k != 0), // jset #k
            0x1d => pc = jump(pc, a == x),        // jeq x
            0x2d => pc = jump(pc, a > x),         // jgt x
            0x3d => pc = jump(pc, a >= x),        // jge x
            0x4d => pc = jump(pc, a & x != 0),    // jset x
            0x06 => return Ok(Verdict::from_return(insn.k)), // ret #k
            0x16 => return Ok(Verdict::from_return(a)), // ret a
            code => return Err(BpfError::Opcode(code)),
        }
    }
}
