//! ROL ROR RCL RCR SHL/SAL SHR SAR, SHLD SHRD, and the BMI2 flagless shifts.

use super::{rd, wr};
use crate::arith::shift::{rorx, sarx, shift, shld as ashld, shlx, shrd as ashrd, shrx, ShiftOp};
use crate::cpu::Cpu;
use crate::decode::{Handler, Op};
use crate::exception::Ex;
use crate::lazy;
use iced_x86::{Mnemonic, OpKind};
use opsvisor_core::mmu::memory::GuestMemory;

const ROL: u8 = 0;
const ROR: u8 = 1;
const RCL: u8 = 2;
const RCR: u8 = 3;
const SHL: u8 = 4;
const SHR: u8 = 5;
const SAR: u8 = 6;

#[inline(always)]
const fn op_of(k: u8) -> ShiftOp {
    match k {
        ROL => ShiftOp::Rol,
        ROR => ShiftOp::Ror,
        RCL => ShiftOp::Rcl,
        RCR => ShiftOp::Rcr,
        SHL => ShiftOp::Shl,
        SHR => ShiftOp::Shr,
        _ => ShiftOp::Sar,
    }
}

/// The handler for shift/rotate `s`: register destinations get an instance per operand
/// size and count source (CL or immediate), memory destinations the general one.
pub fn pick(s: ShiftOp, op: &Op) -> Handler {
    let reg = op.i.op_count() == 2 && op.i.op_kind(0) == OpKind::Register;
    if !reg {
        return match s {
            ShiftOp::Rol => sh::<ROL>,
            ShiftOp::Ror => sh::<ROR>,
            ShiftOp::Rcl => sh::<RCL>,
            ShiftOp::Rcr => sh::<RCR>,
            ShiftOp::Shl => sh::<SHL>,
            ShiftOp::Shr => sh::<SHR>,
            ShiftOp::Sar => sh::<SAR>,
        };
    }
    let cl = op.i.op_kind(1) == OpKind::Register;
    macro_rules! by_count {
        ($k:ident) => {
            if cl {
                super::sized!(sh_r::<$k, true>, op.size)
            } else {
                super::sized!(sh_r::<$k, false>, op.size)
            }
        };
    }
    match s {
        ShiftOp::Rol => by_count!(ROL),
        ShiftOp::Ror => by_count!(ROR),
        ShiftOp::Rcl => by_count!(RCL),
        ShiftOp::Rcr => by_count!(RCR),
        ShiftOp::Shl => by_count!(SHL),
        ShiftOp::Shr => by_count!(SHR),
        ShiftOp::Sar => by_count!(SAR),
    }
}

/// A shift or rotate of a register of size `S` by CL (`CL`) or an immediate.
pub fn sh_r<const K: u8, const CL: bool, const S: u8>(
    c: &mut Cpu,
    _: &mut GuestMemory,
    op: &Op,
) -> Result<(), Ex> {
    let n = if CL { c.gpr[1] as u8 } else { op.imm as u8 };
    let a = c.get_s::<S>(op.r[0]);
    if K == SHL || K == SHR || K == SAR {
        // Lazy flags (see `crate::lazy`): the result does not depend on the flags, and a
        // masked count of 0 leaves them alone.
        let (r, _) = shift(op_of(K), u32::from(S), a, n, 0);
        let cnt = n & if S == 8 { 0x3f } else { 0x1f };
        if cnt != 0 {
            let kind = match K {
                SHL => lazy::SHL,
                SHR => lazy::SHR,
                _ => lazy::SAR,
            };
            c.lazy(kind, lazy::size_code(u32::from(S)), a, u64::from(cnt), r);
        }
        c.set_s::<S>(op.r[0], r);
        return Ok(());
    }
    let (r, f) = shift(op_of(K), u32::from(S), a, n, c.rflags());
    c.set_s::<S>(op.r[0], r);
    c.set_rflags(f);
    Ok(())
}

/// The count operand (operand `n`): CL or an immediate (1 for the D0/D1 forms).
#[inline(always)]
fn count(c: &Cpu, op: &Op, n: u32) -> u8 {
    if op.i.op_kind(n) == OpKind::Register {
        c.gpr[1] as u8
    } else {
        op.imm as u8
    }
}

/// A shift or rotate of r/m by CL or an immediate.
pub fn sh<const K: u8>(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let size = u32::from(op.size);
    let n = count(c, op, 1);
    if op.i.op_kind(0) == OpKind::Register {
        let (r, f) = shift(op_of(K), size, c.get(op.r[0], size), n, c.rflags());
        c.set(op.r[0], size, r);
        c.set_rflags(f);
        return Ok(());
    }
    let a = rd(c, mem, op, 0, size)?;
    let (r, f) = shift(op_of(K), size, a, n, c.rflags());
    wr(c, mem, op, 0, size, r)?;
    c.set_rflags(f);
    Ok(())
}

/// SHLD r/m, r, imm8/CL.
pub fn shld(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    double(c, mem, op, ashld)
}

/// SHRD r/m, r, imm8/CL.
pub fn shrd(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    double(c, mem, op, ashrd)
}

fn double(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    op: &Op,
    f: fn(u32, u64, u64, u8, u64) -> (u64, u64),
) -> Result<(), Ex> {
    let size = u32::from(op.size);
    let n = count(c, op, 2);
    let d = rd(c, mem, op, 0, size)?;
    let s = c.get(op.r[1], size);
    let (r, fl) = f(size, d, s, n, c.rflags());
    wr(c, mem, op, 0, size, r)?;
    c.set_rflags(fl);
    Ok(())
}

/// SARX SHLX SHRX RORX (no flags).
pub fn bmi2_shift(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let size = u32::from(op.size);
    let a = rd(c, mem, op, 1, size)?;
    let r = match op.i.mnemonic() {
        Mnemonic::Sarx => sarx(size, a, c.get(op.r[2], size)),
        Mnemonic::Shlx => shlx(size, a, c.get(op.r[2], size)),
        Mnemonic::Shrx => shrx(size, a, c.get(op.r[2], size)),
        _ => rorx(size, a, op.imm as u8),
    };
    c.set(op.r[0], size, r);
    Ok(())
}
