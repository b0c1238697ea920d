//! MUL, IMUL (one, two and three operands), DIV, IDIV (#DE), MULX.

use super::{load, rd};
use crate::arith::muldiv::{self, div_flags, DivideError};
use crate::cpu::Cpu;
use crate::decode::{Handler, Op};
use crate::exception::{fault, Ex, DE};
use opsvisor_core::mmu::memory::GuestMemory;

/// Store a double-width result: AX for byte operands, rDX:rAX otherwise.
fn store_wide(c: &mut Cpu, size: u32, lo: u64, hi: u64) {
    if size == 1 {
        c.set(0, 2, (hi << 8) | (lo & 0xff));
    } else {
        c.set(0, size, lo);
        c.set(2, size, hi);
    }
}

/// MUL r/m.
pub fn mul(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let size = u32::from(op.size);
    let b = rd(c, mem, op, 0, size)?;
    let (lo, hi, f) = muldiv::mul(size, c.get(0, size), b, c.rflags());
    store_wide(c, size, lo, hi);
    c.set_rflags(f);
    Ok(())
}

/// IMUL r/m (one operand).
pub fn imul1(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let size = u32::from(op.size);
    let b = rd(c, mem, op, 0, size)?;
    let (lo, hi, f) = muldiv::imul_wide(size, c.get(0, size), b, c.rflags());
    store_wide(c, size, lo, hi);
    c.set_rflags(f);
    Ok(())
}

/// IMUL r, r/m and IMUL r, r/m, imm.
pub fn imul(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let size = u32::from(op.size);
    let (a, b) = if op.i.op_count() == 3 {
        (rd(c, mem, op, 1, size)?, op.imm)
    } else {
        (c.get(op.r[0], size), rd(c, mem, op, 1, size)?)
    };
    let (r, f) = muldiv::imul(size, a, b, c.rflags());
    c.set(op.r[0], size, r);
    c.set_rflags(f);
    Ok(())
}

/// IMUL r, r/m and IMUL r, r/m, imm with the operand size `S` and the source's kind
/// chosen at decode (`MEM`: the r/m operand is memory; `IMM`: the three-operand form):
/// [`imul`] without matching on the operands per execution.
pub fn imul_s<const MEM: bool, const IMM: bool, const S: u8>(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    op: &Op,
) -> Result<(), Ex> {
    let src = if MEM {
        load::<S>(c, mem, op)?
    } else {
        c.get_s::<S>(op.r[1])
    };
    let (a, b) = if IMM {
        (src, op.imm)
    } else {
        (c.get_s::<S>(op.r[0]), src)
    };
    let (r, f) = muldiv::imul(u32::from(S), a, b, c.rflags());
    c.set_s::<S>(op.r[0], r);
    c.set_rflags(f);
    Ok(())
}

/// [`imul_s`] with register operands whose flags are dead: a later instruction of the
/// block overwrites CF and OF, the only flags IMUL changes, before anything reads them,
/// and nothing can be observed in between (see [`dead_flags`]). Only the product.
pub fn imul_dead_flags<const IMM: bool, const S: u8>(
    c: &mut Cpu,
    _: &mut GuestMemory,
    op: &Op,
) -> Result<(), Ex> {
    let src = c.get_s::<S>(op.r[1]);
    let (a, b) = if IMM {
        (src, op.imm)
    } else {
        (c.get_s::<S>(op.r[0]), src)
    };
    // The low S bytes of a product depend only on the low S bytes of the factors, signed
    // or not.
    c.set_s::<S>(op.r[0], a.wrapping_mul(b));
    Ok(())
}

/// The handler of `prev`, an instruction of a block followed there by `after` (before
/// a flag setter and the Jcc after it are fused), when its
/// flags are dead there: `prev` is a two- or three-operand IMUL with register operands (it
/// cannot fault, exit or end the block), and `after` starts with instructions that neither
/// read nor write flags (MOV, MOVZX, MOVSX, MOVSXD, LEA, NOT, BSWAP, XCHG, the sign
/// extensions, NOP) up to one that writes CF and OF without reading any flag (ADD, SUB,
/// CMP, AND, OR, XOR, TEST, IMUL), all with register and immediate operands only, so none
/// of them can fault, exit or set `brk` (see [`crate::decode::never_breaks`]). IMUL
/// changes only CF and OF, and the overwriting instruction computes every flag it writes
/// from its operands alone (see `arith::alu`), so the state after it is that of the
/// instructions run exactly; and no boundary in between is visible to the guest or the
/// host: a run stops only between blocks or where an instruction does not retire, and one
/// instruction at a time (single-step, an interrupt shadow, a debugger) rebuilds the first
/// instruction of a block ([`Op::dead_flags`]).
pub fn dead_flags(prev: &Op, after: &[Op]) -> Option<Handler> {
    use iced_x86::{Mnemonic as M, OpKind};
    let i = &prev.i;
    let imul = i.mnemonic() == M::Imul
        && matches!(i.op_count(), 2 | 3)
        && i.op_kind(0) == OpKind::Register
        && i.op_kind(1) == OpKind::Register
        && matches!(prev.size, 2 | 4 | 8);
    if !imul {
        return None;
    }
    for next in after {
        let n = &next.i;
        if !crate::decode::never_breaks(n) {
            return None;
        }
        match n.mnemonic() {
            M::Add | M::Sub | M::Cmp | M::And | M::Or | M::Xor | M::Test | M::Imul => {
                return Some(if i.op_count() == 3 {
                    super::sized!(imul_dead_flags::<true>, prev.size)
                } else {
                    super::sized!(imul_dead_flags::<false>, prev.size)
                });
            }
            M::Mov
            | M::Movzx
            | M::Movsx
            | M::Movsxd
            | M::Lea
            | M::Not
            | M::Bswap
            | M::Xchg
            | M::Nop
            | M::Cbw
            | M::Cwde
            | M::Cdqe
            | M::Cwd
            | M::Cdq
            | M::Cqo => {}
            _ => return None,
        }
    }
    None
}

/// The handler of a two- or three-operand IMUL.
pub fn pick_imul(op: &Op) -> Handler {
    use iced_x86::OpKind;
    let three = op.i.op_count() == 3;
    let kinds_ok = op.i.op_kind(0) == OpKind::Register
        && matches!(op.size, 2 | 4 | 8)
        && match op.i.op_kind(1) {
            OpKind::Register => true,
            OpKind::Memory => op.i.memory_size().size() == usize::from(op.size),
            _ => false,
        };
    if !kinds_ok {
        return imul;
    }
    match (op.i.op_kind(1) == OpKind::Memory, three) {
        (false, false) => super::sized!(imul_s::<false, false>, op.size),
        (false, true) => super::sized!(imul_s::<false, true>, op.size),
        (true, false) => super::sized!(imul_s::<true, false>, op.size),
        (true, true) => super::sized!(imul_s::<true, true>, op.size),
    }
}

/// A division: (size, high half, low half, divisor) to (quotient, remainder).
type DivFn = fn(u32, u64, u64, u64) -> Result<(u64, u64), DivideError>;

fn divide(c: &mut Cpu, mem: &mut GuestMemory, op: &Op, f: DivFn) -> Result<(), Ex> {
    let size = u32::from(op.size);
    let d = rd(c, mem, op, 0, size)?;
    let (hi, lo) = if size == 1 {
        ((c.gpr[0] >> 8) & 0xff, c.gpr[0] & 0xff)
    } else {
        (c.get(2, size), c.get(0, size))
    };
    let (q, r) = f(size, hi, lo, d).map_err(|_| fault(DE))?;
    if size == 1 {
        c.set(0, 2, ((r & 0xff) << 8) | (q & 0xff));
    } else {
        c.set(0, size, q);
        c.set(2, size, r);
    }
    c.set_rflags(div_flags(c.rflags()));
    Ok(())
}

/// DIV r/m.
pub fn div(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    divide(c, mem, op, muldiv::div)
}

/// IDIV r/m.
pub fn idiv(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    divide(c, mem, op, muldiv::idiv)
}

/// MULX r_hi, r_lo, r/m (EDX/RDX implicit, no flags).
pub fn mulx(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let size = u32::from(op.size);
    let b = rd(c, mem, op, 2, size)?;
    let (lo, hi) = muldiv::mulx(size, c.get(2, size), b);
    c.set(op.r[1], size, lo);
    c.set(op.r[0], size, hi);
    Ok(())
}
