//! A flag-setting instruction and the Jcc right after it (`cmp rax, rbx; jb x`,
//! `test ecx, 1; jz x`, `dec rcx; jnz x`, ...) executed as one decoded op: one dispatch
//! instead of two, and the condition folds into the lazy record just written.
//!
//! Fused only in 64-bit code with a canonical target, so the Jcc cannot fault, and only
//! register/register and register/immediate forms, so the first instruction cannot either:
//! the pair always retires as a whole. The fused op's `next_ip` is the Jcc's and its `disp`
//! the branch target. Under single-stepping or an interrupt shadow the block loop runs the
//! first instruction unfused instead ([`Op::fused`] tells it to), so the pair splits at
//! the Jcc, which then runs from a block of its own; the handler never checks for that.

use super::alu::{alu_ri, alu_rr, dec_r, ADD, AND, SUB};
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
        _ => dec_r::<S>(c, mem, op)?,
    }
    // The block loop counts one instruction per op.
    c.retired += 1;
    if c.cond(CC) {
        c.rip = op.disp;
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
    let reg0 = i.op_count() >= 1 && i.op_kind(0) == OpKind::Register;
    let rr = reg0 && i.op_count() == 2 && i.op_kind(1) == OpKind::Register;
    let ri = reg0
        && i.op_count() == 2
        && matches!(
            i.op_kind(1),
            OpKind::Immediate8
                | OpKind::Immediate16
                | OpKind::Immediate32
                | OpKind::Immediate8to16
                | OpKind::Immediate8to32
                | OpKind::Immediate8to64
                | OpKind::Immediate32to64
        );
    if !reg0 || !i.op_register(0).is_gpr() || (a.size != 4 && a.size != 8) {
        return None;
    }
    let form = match (i.mnemonic(), rr, ri) {
        (Mnemonic::Cmp, true, _) => CMP_RR,
        (Mnemonic::Cmp, _, true) => CMP_RI,
        (Mnemonic::Test, true, _) => TEST_RR,
        (Mnemonic::Test, _, true) => TEST_RI,
        (Mnemonic::Sub, _, true) => SUB_RI,
        (Mnemonic::And, _, true) => AND_RI,
        (Mnemonic::Add, _, true) => ADD_RI,
        (Mnemonic::Dec, false, false) if i.op_count() == 1 => DEC_R,
        _ => return None,
    };
    if rr && !i.op_register(1).is_gpr() {
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
                _ => by_cc!(DEC_R, $s),
            }
        };
    }
    Some(if a.size == 4 {
        by_form!(4)
    } else {
        by_form!(8)
    })
}
