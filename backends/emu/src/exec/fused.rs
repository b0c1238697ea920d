//! A flag-setting instruction and the Jcc right after it (`cmp rax, rbx; jb x`,
//! `test ecx, 1; jz x`, `dec rcx; jnz x`, `cmp byte [rax], 0; je x`, ...) executed as one
//! decoded op: one dispatch instead of two, and the condition folds into the lazy record
//! just written.
//!
//! Fused only in 64-bit code with a canonical target, so the Jcc cannot fault. The first
//! instruction may be a register form or a comparison with a memory operand (CMP, TEST:
//! nothing written): if its access faults or exits, the op has done nothing and nothing
//! retires, as for the instruction alone; once it succeeds the pair retires as a whole.
//! The fused op's `next_ip` is the Jcc's and its `target` the branch target. Under
//! single-stepping or an interrupt shadow the block loop runs the first instruction
//! unfused instead ([`Op::fused`] tells it to), so the pair splits at the Jcc, which then
//! runs from a block of its own; the handler never checks for that.

use super::alu::{alu_mi, alu_mr, alu_ri, alu_rm, alu_rr, dec_r, ADD, AND, SUB};
use crate::cpu::Cpu;
use crate::decode::{Handler, Op};
use crate::exception::Ex;
use iced_x86::{Mnemonic, OpKind};
use opsvisor_core::mmu::memory::GuestMemory;

const CMP_RR: u8 = 0;
const CMP_RI: u8 = 1;
const TEST_RR: u8 = 2;
const TEST_RI: u8 = 3;
const SUB_RI: u8 = 4;
const AND_RI: u8 = 5;
const ADD_RI: u8 = 6;
const DEC_R: u8 = 7;
const ADD_RR: u8 = 8;
const SUB_RR: u8 = 9;
const CMP_RM: u8 = 10;
const CMP_MR: u8 = 11;
const CMP_MI: u8 = 12;
const TEST_MR: u8 = 13;
const TEST_MI: u8 = 14;

/// Flag-setting form `F` of size `S`, then Jcc with condition `CC` (see [`super::CCS`]).
pub fn fused<const F: u8, const S: u8, const CC: u8>(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    op: &Op,
) -> Result<(), Ex> {
    match F {
        CMP_RR => alu_rr::<SUB, false, S>(c, mem, op)?,
        CMP_RI => alu_ri::<SUB, false, S>(c, mem, op)?,
        TEST_RR => alu_rr::<AND, false, S>(c, mem, op)?,
        TEST_RI => alu_ri::<AND, false, S>(c, mem, op)?,
        SUB_RI => alu_ri::<SUB, true, S>(c, mem, op)?,
        AND_RI => alu_ri::<AND, true, S>(c, mem, op)?,
        ADD_RI => alu_ri::<ADD, true, S>(c, mem, op)?,
        ADD_RR => alu_rr::<ADD, true, S>(c, mem, op)?,
        SUB_RR => alu_rr::<SUB, true, S>(c, mem, op)?,
        CMP_RM => alu_rm::<SUB, false, S>(c, mem, op)?,
        CMP_MR => alu_mr::<SUB, false, S>(c, mem, op)?,
        CMP_MI => alu_mi::<SUB, false, S>(c, mem, op)?,
        TEST_MR => alu_mr::<AND, false, S>(c, mem, op)?,
        TEST_MI => alu_mi::<AND, false, S>(c, mem, op)?,
        _ => dec_r::<S>(c, mem, op)?,
    }
    // The block loop counts one instruction per op.
    c.retired += 1;
    if c.cond(CC) {
        c.rip = op.target;
    }
    Ok(())
}

/// The fused handler for flag-setter `a` followed by Jcc `j` in `bits`-bit code, if the
/// pair qualifies (see the module documentation).
pub fn pick(a: &Op, j: &Op, bits: u8) -> Option<Handler> {
    let t = j.imm;
    if bits != 64 || !j.i.is_jcc_short_or_near() || ((t as i64) << 16 >> 16) as u64 != t {
        return None;
    }
    let i = &a.i;
    if i.op_count() == 0 || i.op_count() > 2 {
        return None;
    }
    let k0 = i.op_kind(0);
    let k1 = if i.op_count() == 2 {
        i.op_kind(1)
    } else {
        OpKind::Register
    };
    let gpr = |n: u32| i.op_kind(n) != OpKind::Register || i.op_register(n).is_gpr();
    let imm = matches!(
        k1,
        OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64
    );
    let two = i.op_count() == 2;
    let (reg, memory) = (OpKind::Register, OpKind::Memory);
    let form = match i.mnemonic() {
        Mnemonic::Cmp if two && k0 == reg && k1 == reg => CMP_RR,
        Mnemonic::Cmp if two && k0 == reg && imm => CMP_RI,
        Mnemonic::Cmp if two && k0 == reg && k1 == memory => CMP_RM,
        Mnemonic::Cmp if two && k0 == memory && k1 == reg => CMP_MR,
        Mnemonic::Cmp if two && k0 == memory && imm => CMP_MI,
        Mnemonic::Test if two && k0 == reg && k1 == reg => TEST_RR,
        Mnemonic::Test if two && k0 == reg && imm => TEST_RI,
        Mnemonic::Test if two && k0 == memory && k1 == reg => TEST_MR,
        Mnemonic::Test if two && k0 == memory && imm => TEST_MI,
        Mnemonic::Sub if two && k0 == reg && imm => SUB_RI,
        Mnemonic::Sub if two && k0 == reg && k1 == reg => SUB_RR,
        Mnemonic::And if two && k0 == reg && imm => AND_RI,
        Mnemonic::Add if two && k0 == reg && imm => ADD_RI,
        Mnemonic::Add if two && k0 == reg && k1 == reg => ADD_RR,
        Mnemonic::Dec if !two && k0 == reg => DEC_R,
        _ => return None,
    };
    if !gpr(0) || (two && !gpr(1)) {
        return None;
    }
    let mem_form = matches!(form, CMP_RM | CMP_MR | CMP_MI | TEST_MR | TEST_MI);
    let size_ok = if mem_form {
        // Every operand size, the memory operand's the same as the instruction's.
        i.memory_size().size() == usize::from(a.size)
    } else {
        a.size == 4 || a.size == 8
    };
    if !size_ok {
        return None;
    }
    macro_rules! by_cc {
        ($f:ident, $s:literal) => {
            match j.aux {
                3 => fused::<$f, $s, 3> as Handler,
                4 => fused::<$f, $s, 4>,
                5 => fused::<$f, $s, 5>,
                6 => fused::<$f, $s, 6>,
                7 => fused::<$f, $s, 7>,
                8 => fused::<$f, $s, 8>,
                9 => fused::<$f, $s, 9>,
                10 => fused::<$f, $s, 10>,
                13 => fused::<$f, $s, 13>,
                14 => fused::<$f, $s, 14>,
                15 => fused::<$f, $s, 15>,
                16 => fused::<$f, $s, 16>,
                _ => return None,
            }
        };
    }
    macro_rules! by_form {
        ($s:literal) => {
            match form {
                CMP_RR => by_cc!(CMP_RR, $s),
                CMP_RI => by_cc!(CMP_RI, $s),
                TEST_RR => by_cc!(TEST_RR, $s),
                TEST_RI => by_cc!(TEST_RI, $s),
                SUB_RI => by_cc!(SUB_RI, $s),
                AND_RI => by_cc!(AND_RI, $s),
                ADD_RI => by_cc!(ADD_RI, $s),
                ADD_RR => by_cc!(ADD_RR, $s),
                SUB_RR => by_cc!(SUB_RR, $s),
                CMP_RM => by_cc!(CMP_RM, $s),
                CMP_MR => by_cc!(CMP_MR, $s),
                CMP_MI => by_cc!(CMP_MI, $s),
                TEST_MR => by_cc!(TEST_MR, $s),
                TEST_MI => by_cc!(TEST_MI, $s),
                _ => by_cc!(DEC_R, $s),
            }
        };
    }
    // Byte and word comparisons with memory (`cmp byte [rax], 0`) fuse too; their register
    // forms are rare enough to leave alone.
    macro_rules! by_mem_form {
        ($s:literal) => {
            match form {
                CMP_RM => by_cc!(CMP_RM, $s),
                CMP_MR => by_cc!(CMP_MR, $s),
                CMP_MI => by_cc!(CMP_MI, $s),
                TEST_MR => by_cc!(TEST_MR, $s),
                _ => by_cc!(TEST_MI, $s),
            }
        };
    }
    Some(match a.size {
        1 => by_mem_form!(1),
        2 => by_mem_form!(2),
        4 => by_form!(4),
        _ => by_form!(8),
    })
}
