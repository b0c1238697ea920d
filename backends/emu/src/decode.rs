//! Decoding: an iced-x86 [`Instruction`] becomes an [`Op`], with its register operands,
//! memory operand and immediate extracted once and its handler chosen once, so executing a
//! cached instruction never inspects the iced structure again on the common paths.

use crate::cpu::{sr, Cpu, ZERO_REG};
use crate::exception::Ex;
use crate::exec;
use iced_x86::{Code, FlowControl, Instruction, Mnemonic, OpKind, Register};
use opsvisor_core::mmu::memory::GuestMemory;

/// An instruction handler. `Op::next_ip` has already been stored in RIP when it runs;
/// control transfers overwrite RIP. On `Err` the caller restores RIP to the instruction.
pub type Handler = fn(&mut Cpu, &mut GuestMemory, &Op) -> Result<(), Ex>;

/// A decoded instruction ready to execute.
#[derive(Clone, Debug)]
pub struct Op {
    /// The handler.
    pub h: Handler,
    /// RIP of the next instruction (masked to the code size).
    pub next_ip: u64,
    /// The first immediate, sign- or zero-extended as the instruction defines.
    pub imm: u64,
    /// Memory displacement (for RIP-relative operands: the absolute address).
    pub disp: u64,
    /// Operand size of operand 0 in bytes (or the instruction's operand size).
    pub size: u8,
    /// Size of operand 1 in bytes (register or memory), 0 if neither.
    pub size1: u8,
    /// Register codes of operands 0..2 (see [`Cpu::get`]); `ZERO_REG` if not registers.
    pub r: [u8; 3],
    /// Memory base register (`ZERO_REG` for none).
    pub base: u8,
    /// Memory index register (`ZERO_REG` for none).
    pub index: u8,
    /// Index scale shift (0-3).
    pub scale: u8,
    /// Effective segment of the memory operand.
    pub seg: u8,
    /// Address-size mask.
    pub amask: u64,
    /// Handler-specific detail (ALU operation, condition, ...).
    pub aux: u8,
    /// A flag setter that absorbed the Jcc after it (see [`crate::exec::fused`]): `h`,
    /// `next_ip` and `target` are the pair's, `i` is the flag setter alone.
    pub fused: bool,
    /// `h` relies on the next instruction of the block overwriting the flags it leaves
    /// stale (see [`crate::exec::muldiv::dead_flags`]): run alone, the instruction needs
    /// the handler [`build`] chooses.
    pub dead_flags: bool,
    /// The branch target of a fused pair's Jcc.
    pub target: u64,
    /// Position in its block (set by [`crate::cache::decode_block`]): the instructions
    /// before it retired when it faults or exits.
    pub pos: u8,
    /// The decoded instruction.
    pub i: Instruction,
}

/// Whether `m` is one of the sixteen CMOVcc.
pub fn is_cmovcc(m: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(
        m,
        M::Cmovo
            | M::Cmovno
            | M::Cmovb
            | M::Cmovae
            | M::Cmove
            | M::Cmovne
            | M::Cmovbe
            | M::Cmova
            | M::Cmovs
            | M::Cmovns
            | M::Cmovp
            | M::Cmovnp
            | M::Cmovl
            | M::Cmovge
            | M::Cmovle
            | M::Cmovg
    )
}

/// Whether `m` is one of the sixteen SETcc.
pub fn is_setcc(m: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(
        m,
        M::Seto
            | M::Setno
            | M::Setb
            | M::Setae
            | M::Sete
            | M::Setne
            | M::Setbe
            | M::Seta
            | M::Sets
            | M::Setns
            | M::Setp
            | M::Setnp
            | M::Setl
            | M::Setge
            | M::Setle
            | M::Setg
    )
}

/// Register code of a general register operand: number in bits 0-3, bit 4 for AH..BH.
pub fn reg_code(r: Register) -> u8 {
    let n = r as u32;
    if r.is_gpr8() {
        let k = n - Register::AL as u32;
        match k {
            0..=3 => k as u8,
            4..=7 => (k - 4) as u8 | 0x10,
            _ => (k - 4) as u8,
        }
    } else if r.is_gpr16() {
        (n - Register::AX as u32) as u8
    } else if r.is_gpr32() {
        (n - Register::EAX as u32) as u8
    } else if r.is_gpr64() {
        (n - Register::RAX as u32) as u8
    } else {
        ZERO_REG
    }
}

/// The segment of the memory operand. In 64-bit mode ES, CS, SS and DS override prefixes
/// are ignored (SDM 1 3.3.7.1): the operand uses its default segment, which matters for
/// the fault a non-canonical address raises (#SS only for the stack segment's default
/// users, RSP/RBP-based operands).
fn effective_segment(i: &Instruction, bits: u32) -> Register {
    let seg = i.memory_segment();
    if bits != 64
        || !matches!(
            i.segment_prefix(),
            Register::ES | Register::CS | Register::SS | Register::DS
        )
    {
        return seg;
    }
    match i.memory_base() {
        Register::RSP | Register::RBP | Register::ESP | Register::EBP => Register::SS,
        _ => Register::DS,
    }
}

/// Correct iced-x86's reading of `F3 REX.B 90`: iced decodes it as PAUSE, but REX.B
/// makes opcode 90 `XCHG r8, rAX` (only plain 90 is NOP/PAUSE), which is what the
/// processor executes (observed on the host by the emu_differential fuzz target).
/// `bytes` are the instruction's own bytes.
pub fn correct_decode(i: Instruction, bytes: &[u8], bits: u32) -> Instruction {
    if bits != 64 || i.code() != Code::Pause || bytes.len() < 2 {
        return i;
    }
    let rex = bytes[bytes.len() - 2];
    if rex & 0xf1 != 0x41 {
        return i;
    }
    let operand16 = bytes[..bytes.len() - 2].contains(&0x66);
    let (code, r8, acc) = if rex & 8 != 0 {
        (Code::Xchg_r64_RAX, Register::R8, Register::RAX)
    } else if operand16 {
        (Code::Xchg_r16_AX, Register::R8W, Register::AX)
    } else {
        (Code::Xchg_r32_EAX, Register::R8D, Register::EAX)
    };
    match Instruction::with2(code, r8, acc) {
        Ok(mut x) => {
            x.set_len(i.len());
            x.set_ip(i.ip());
            x.set_next_ip(i.next_ip());
            x
        }
        Err(_) => i,
    }
}

/// Index of a segment register in [`Cpu::seg`].
pub fn seg_index(r: Register) -> u8 {
    match r {
        Register::ES => sr::ES,
        Register::CS => sr::CS,
        Register::SS => sr::SS,
        Register::FS => sr::FS,
        Register::GS => sr::GS,
        _ => sr::DS,
    }
}

fn operand_size(i: &Instruction, n: u32) -> u8 {
    if n >= i.op_count() {
        return 0;
    }
    match i.op_kind(n) {
        OpKind::Register => i.op_register(n).size() as u8,
        OpKind::Memory => i.memory_size().size() as u8,
        _ => 0,
    }
}

/// Whether decoding of a block stops after this instruction.
pub fn ends_block(i: &Instruction) -> bool {
    i.flow_control() != FlowControl::Next
        || matches!(
            i.mnemonic(),
            Mnemonic::Hlt
                | Mnemonic::Cpuid
                | Mnemonic::Rdmsr
                | Mnemonic::Wrmsr
                | Mnemonic::Sti
                | Mnemonic::Popf
        )
}

/// Whether executing `i` can never set [`Cpu::brk`]: a conservative list of register and
/// immediate forms of data, arithmetic and near-branch instructions (no memory access, so
/// no store to code or MMIO; no mode, paging, segment, flag-control or stack change), and
/// CPUID, which only exits. A block made only of such instructions runs without a check
/// after each one (see `run_linked`).
pub fn never_breaks(i: &Instruction) -> bool {
    let m = i.mnemonic();
    let listed = i.is_jcc_short_or_near()
        || matches!(
            m,
            Mnemonic::Add
                | Mnemonic::Or
                | Mnemonic::Adc
                | Mnemonic::Sbb
                | Mnemonic::And
                | Mnemonic::Sub
                | Mnemonic::Xor
                | Mnemonic::Cmp
                | Mnemonic::Test
                | Mnemonic::Inc
                | Mnemonic::Dec
                | Mnemonic::Neg
                | Mnemonic::Not
                | Mnemonic::Shl
                | Mnemonic::Sal
                | Mnemonic::Shr
                | Mnemonic::Sar
                | Mnemonic::Rol
                | Mnemonic::Ror
                | Mnemonic::Rcl
                | Mnemonic::Rcr
                | Mnemonic::Mov
                | Mnemonic::Movzx
                | Mnemonic::Movsx
                | Mnemonic::Movsxd
                | Mnemonic::Xchg
                | Mnemonic::Lea
                | Mnemonic::Nop
                | Mnemonic::Imul
                | Mnemonic::Bswap
                | Mnemonic::Bt
                | Mnemonic::Bts
                | Mnemonic::Btr
                | Mnemonic::Btc
                | Mnemonic::Bsf
                | Mnemonic::Bsr
                | Mnemonic::Cbw
                | Mnemonic::Cwde
                | Mnemonic::Cdqe
                | Mnemonic::Cwd
                | Mnemonic::Cdq
                | Mnemonic::Cqo
                | Mnemonic::Jmp
                | Mnemonic::Cpuid
        );
    listed
        && (0..i.op_count()).all(|n| match i.op_kind(n) {
            OpKind::Register => i.op_register(n).is_gpr(),
            // LEA computes an address without accessing it.
            OpKind::Memory => m == Mnemonic::Lea,
            OpKind::NearBranch16
            | OpKind::NearBranch32
            | OpKind::NearBranch64
            | OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64 => true,
            _ => false,
        })
}

/// Build the [`Op`] for `i`, decoded in `bits`-bit code.
pub fn build(i: &Instruction, bits: u32) -> Op {
    let ipmask = match bits {
        64 => u64::MAX,
        32 => 0xffff_ffff,
        _ => 0xffff,
    };
    let mut r = [ZERO_REG; 3];
    for (n, slot) in r.iter_mut().enumerate() {
        if (n as u32) < i.op_count() && i.op_kind(n as u32) == OpKind::Register {
            *slot = reg_code(i.op_register(n as u32));
        }
    }
    let mut imm = 0;
    for n in 0..i.op_count() {
        if matches!(
            i.op_kind(n),
            OpKind::Immediate8
                | OpKind::Immediate16
                | OpKind::Immediate32
                | OpKind::Immediate64
                | OpKind::Immediate8to16
                | OpKind::Immediate8to32
                | OpKind::Immediate8to64
                | OpKind::Immediate32to64
                | OpKind::Immediate8_2nd
        ) {
            imm = i.immediate(n);
            break;
        }
    }
    let (base, disp) = match i.memory_base() {
        Register::RIP | Register::EIP => (ZERO_REG, i.memory_displacement64()),
        Register::None => (ZERO_REG, i.memory_displacement64()),
        b => (reg_code(b), i.memory_displacement64()),
    };
    let index = match i.memory_index() {
        Register::None => ZERO_REG,
        x => reg_code(x),
    };
    let scale = match i.memory_index_scale() {
        2 => 1,
        4 => 2,
        8 => 3,
        _ => 0,
    };
    let amask = if i.memory_base() == Register::RIP {
        u64::MAX
    } else {
        match i.memory_displ_size() {
            _ if i.memory_base().is_gpr16() || i.memory_index().is_gpr16() => 0xffff,
            _ if i.memory_base().is_gpr32()
                || i.memory_index().is_gpr32()
                || i.memory_base() == Register::EIP =>
            {
                0xffff_ffff
            }
            _ if i.memory_base().is_gpr64() || i.memory_index().is_gpr64() => u64::MAX,
            // No base or index: iced reports the displacement size as the address size
            // (8 for a 64-bit address, even though the encoding holds a sign-extended
            // disp32), so 4 is a 32-bit address also in 64-bit code (the 0x67 prefix) and
            // wraps at 4 GiB.
            2 => 0xffff,
            4 => 0xffff_ffff,
            8 => u64::MAX,
            _ => {
                if bits == 64 {
                    u64::MAX
                } else if bits == 32 {
                    0xffff_ffff
                } else {
                    0xffff
                }
            }
        }
    };
    let mut size = operand_size(i, 0);
    let size1 = operand_size(i, 1);
    if size == 0 {
        size = size1;
    }
    let mut op = Op {
        h: exec::unimplemented,
        next_ip: i.next_ip() & ipmask,
        imm,
        disp,
        size,
        size1,
        r,
        base,
        index,
        scale,
        seg: seg_index(effective_segment(i, bits)),
        amask,
        aux: 0,
        fused: false,
        dead_flags: false,
        target: 0,
        pos: 0,
        i: *i,
    };
    let _implemented = exec::select(&mut op, bits);
    op
}

/// The address-size mask of string instructions and LOOP/JCXZ (their implicit registers).
pub fn addr_mask(i: &Instruction) -> u64 {
    match i.code() {
        // The explicit forms carry the address size in the decoded register operands.
        Code::Loopne_rel8_16_CX
        | Code::Loope_rel8_16_CX
        | Code::Loop_rel8_16_CX
        | Code::Jcxz_rel8_16 => 0xffff,
        Code::Loopne_rel8_32_CX | Code::Loope_rel8_32_CX | Code::Loop_rel8_32_CX => 0xffff,
        Code::Loopne_rel8_16_ECX
        | Code::Loope_rel8_16_ECX
        | Code::Loop_rel8_16_ECX
        | Code::Loopne_rel8_32_ECX
        | Code::Loope_rel8_32_ECX
        | Code::Loop_rel8_32_ECX
        | Code::Loopne_rel8_64_ECX
        | Code::Loope_rel8_64_ECX
        | Code::Loop_rel8_64_ECX
        | Code::Jecxz_rel8_16
        | Code::Jecxz_rel8_32
        | Code::Jecxz_rel8_64 => 0xffff_ffff,
        Code::Loopne_rel8_16_RCX
        | Code::Loope_rel8_16_RCX
        | Code::Loop_rel8_16_RCX
        | Code::Loopne_rel8_64_RCX
        | Code::Loope_rel8_64_RCX
        | Code::Loop_rel8_64_RCX
        | Code::Jrcxz_rel8_16
        | Code::Jrcxz_rel8_64 => u64::MAX,
        _ => {
            // String instructions: the address size is that of their memory operands.
            let r = if i.op_count() > 0 && is_string_mem(i.op_kind(0)) {
                string_reg(i, 0)
            } else if i.op_count() > 1 && is_string_mem(i.op_kind(1)) {
                string_reg(i, 1)
            } else {
                Register::None
            };
            if r.is_gpr16() {
                0xffff
            } else if r.is_gpr32() {
                0xffff_ffff
            } else {
                u64::MAX
            }
        }
    }
}

fn is_string_mem(k: OpKind) -> bool {
    matches!(
        k,
        OpKind::MemorySegSI
            | OpKind::MemorySegESI
            | OpKind::MemorySegRSI
            | OpKind::MemoryESDI
            | OpKind::MemoryESEDI
            | OpKind::MemoryESRDI
            | OpKind::MemorySegDI
            | OpKind::MemorySegEDI
            | OpKind::MemorySegRDI
    )
}

fn string_reg(i: &Instruction, n: u32) -> Register {
    match i.op_kind(n) {
        OpKind::MemorySegSI | OpKind::MemorySegDI => Register::SI,
        OpKind::MemorySegESI | OpKind::MemorySegEDI => Register::ESI,
        OpKind::MemorySegRSI | OpKind::MemorySegRDI => Register::RSI,
        OpKind::MemoryESDI => Register::DI,
        OpKind::MemoryESEDI => Register::EDI,
        OpKind::MemoryESRDI => Register::RDI,
        _ => Register::None,
    }
}

#[cfg(test)]
mod tests {
    use super::build;
    use iced_x86::{Decoder, DecoderOptions};

    fn amask(bytes: &[u8], bits: u32) -> u64 {
        let i = Decoder::with_ip(bits, bytes, 0, DecoderOptions::NONE).decode();
        build(&i, bits).amask
    }

    /// An absolute `[disp32]` operand (no base, no index) wraps with the address size:
    /// 64-bit by default in 64-bit code (the displacement is sign-extended), 32-bit with
    /// the 0x67 prefix, and in 32-bit code.
    #[test]
    fn absolute_operand_address_size() {
        // mov eax, [0x80000000] (SIB, no base or index)
        let plain = [0x8b, 0x04, 0x25, 0x00, 0x00, 0x00, 0x80];
        assert_eq!(amask(&plain, 64), u64::MAX);
        let short = [0x67, 0x8b, 0x04, 0x25, 0x00, 0x00, 0x00, 0x80];
        assert_eq!(amask(&short, 64), 0xffff_ffff);
        // mov eax, [0x80000000] in 32-bit code (mod 00, r/m 101)
        assert_eq!(
            amask(&[0x8b, 0x05, 0x00, 0x00, 0x00, 0x80], 32),
            0xffff_ffff
        );
        // and with 0x67 there: a 16-bit address
        assert_eq!(amask(&[0x67, 0x8b, 0x06, 0x00, 0x80], 32), 0xffff);
    }
}
