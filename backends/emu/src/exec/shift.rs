//! ROL ROR RCL RCR SHL/SAL SHR SAR, SHLD SHRD, and the BMI2 flagless shifts.

use super::{rd, rd_rmw, wr};
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
            let sc = lazy::size_code(u32::from(S));
            let cf = shift_cf::<K>(u32::from(S), a, u32::from(cnt));
            c.lazy_shift(kind, sc, a, u64::from(cnt), r, cf);
        }
        c.set_s::<S>(op.r[0], r);
        return Ok(());
    }
    let (r, f) = shift(op_of(K), u32::from(S), a, n, c.rflags());
    c.set_s::<S>(op.r[0], r);
    c.set_rflags(f);
    Ok(())
}

/// CF after SHL, SHR or SAR (`K`) of the `size`-byte value `a` (masked to the size) by
/// the nonzero masked count `cnt`: the last bit moved out. Cheaper than asking
/// [`shift`] for its flags, which computes all of them.
#[inline(always)]
fn shift_cf<const K: u8>(size: u32, a: u64, cnt: u32) -> u64 {
    let n = size * 8;
    // 1 <= cnt <= 63, so every shift amount below is under 64.
    match K {
        SHL if cnt <= n => (a >> (n - cnt)) & 1,
        SHR if cnt <= n => (a >> (cnt - 1)) & 1,
        // A left or right shift by more than the width moves out only zeros.
        SHL | SHR => 0,
        // SAR moves out copies of the sign bit once the value is exhausted.
        _ => ((crate::arith::flags::sign_extend(size, a) as i64) >> (cnt - 1).min(63)) as u64 & 1,
    }
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
    let a = rd_rmw(c, mem, op, 0, size)?;
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
    let d = rd_rmw(c, mem, op, 0, size)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arith::flags::{mask, CF};

    /// The CF the lazy shift records keep is the one the eager shift computes, for every
    /// size and masked count, on values that exercise the sign and the edges.
    #[test]
    fn shift_cf_matches_eager() {
        let values = [
            0u64,
            1,
            0x80,
            0x7f,
            0x8000,
            0x8000_0001,
            0x8000_0000_0000_0000,
            0x5555_5555_5555_5555,
            0xaaaa_aaaa_aaaa_aaaa,
            u64::MAX,
        ];
        for size in [1u32, 2, 4, 8] {
            let max = if size == 8 { 63u32 } else { 31 };
            for &v in &values {
                let a = v & mask(size);
                for cnt in 1..=max {
                    for (op, got) in [
                        (ShiftOp::Shl, shift_cf::<SHL>(size, a, cnt)),
                        (ShiftOp::Shr, shift_cf::<SHR>(size, a, cnt)),
                        (ShiftOp::Sar, shift_cf::<SAR>(size, a, cnt)),
                    ] {
                        let want = shift(op, size, a, cnt as u8, 0).1 & CF;
                        assert_eq!(got, want, "{op:?} size {size} a {a:#x} count {cnt}");
                    }
                }
            }
        }
    }
}
