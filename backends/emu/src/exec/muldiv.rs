//! MUL, IMUL (one, two and three operands), DIV, IDIV (#DE), MULX.

use super::rd;
use crate::arith::muldiv::{self, div_flags, DivideError};
use crate::cpu::Cpu;
use crate::decode::Op;
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
