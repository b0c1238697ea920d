//! Element extraction and insertion: PEXTRB/W/D/Q and EXTRACTPS into a general register
//! (zero-extended) or memory, PEXTRW from MMX, PINSRB/W/D/Q (MMX and XMM), INSERTPS.

use super::{check, lane, load, mi, put, reg_val, src, store, xi};
use crate::cpu::Cpu;
use crate::decode::{reg_code, Handler, Op};
use crate::exception::Ex;
use iced_x86::{Mnemonic as M, OpKind};
use opsvisor_core::mmu::memory::GuestMemory;

/// PEXTR* / EXTRACTPS r/m, mm|xmm, imm8: lane imm8 (modulo the lane count) of `BITS`.
fn extract<const BITS: u32>(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let s = op.i.op_register(1);
    let mmx = s.is_mm();
    check(c, mmx)?;
    let lanes = if mmx { 64 / BITS } else { 128 / BITS } as usize;
    let v = lane(reg_val(c, s), op.imm as usize & (lanes - 1), BITS);
    match op.i.op_kind(0) {
        OpKind::Memory => store(c, mem, op, BITS as usize / 8, u128::from(v), false)?,
        _ => c.set(reg_code(op.i.op_register(0)), 8, v),
    }
    if mmx {
        c.fpu.enter_mmx();
    }
    Ok(())
}

/// PINSR* mm|xmm, r/m, imm8: the low `BITS` of the source into lane imm8 (modulo the
/// lane count).
fn insert<const BITS: u32>(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let d = op.i.op_register(0);
    let mmx = d.is_mm();
    check(c, mmx)?;
    let v = lane(src(c, mem, op, 1)?, 0, BITS);
    let lanes = if mmx { 64 / BITS } else { 128 / BITS } as usize;
    let i = op.imm as usize & (lanes - 1);
    let m = put(i, BITS, u64::MAX);
    let old = reg_val(c, d);
    let new = (old & !m) | put(i, BITS, v);
    if mmx {
        c.fpu.set_mm(mi(d), new as u64);
    } else {
        c.fpu.xmm[xi(d)] = new;
    }
    Ok(())
}

/// INSERTPS xmm1, xmm2/m32, imm8: a doubleword (from the register, the one imm8[7:6]
/// selects; from memory, the 32-bit operand) into lane imm8[5:4], then the lanes of
/// imm8[3:0] zeroed.
fn insertps(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    c.sse_check()?;
    let imm = op.imm as u8;
    let v = match op.i.op_kind(1) {
        OpKind::Memory => load(c, mem, op, 4, false)? as u64,
        _ => lane(
            reg_val(c, op.i.op_register(1)),
            usize::from(imm >> 6) & 3,
            32,
        ),
    };
    let d = xi(op.i.op_register(0));
    let at = usize::from(imm >> 4) & 3;
    let mut r = (c.fpu.xmm[d] & !put(at, 32, u64::MAX)) | put(at, 32, v);
    for i in 0..4 {
        if imm >> i & 1 != 0 {
            r &= !put(i, 32, u64::MAX);
        }
    }
    c.fpu.xmm[d] = r;
    Ok(())
}

/// The handler for `op` if it is an extraction or insertion.
pub(super) fn select(op: &Op) -> Option<Handler> {
    Some(match op.i.mnemonic() {
        M::Pextrb => extract::<8>,
        M::Pextrw => extract::<16>,
        M::Pextrd | M::Extractps => extract::<32>,
        M::Pextrq => extract::<64>,
        M::Pinsrb => insert::<8>,
        M::Pinsrw => insert::<16>,
        M::Pinsrd => insert::<32>,
        M::Pinsrq => insert::<64>,
        M::Insertps => insertps,
        _ => return None,
    })
}
