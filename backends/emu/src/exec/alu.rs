//! ADD ADC SUB SBB AND OR XOR CMP TEST INC DEC NEG NOT, and the BCD adjustments.

use super::{rd, rd_rmw, wr};
use crate::arith::alu::{alu, neg as aneg, AluOp};
use crate::arith::bcd;
use crate::cpu::Cpu;
use crate::decode::{Handler, Op};
use crate::exception::{fault, ud, Ex, DE};
use crate::lazy;
use iced_x86::Mnemonic;
use opsvisor_core::mmu::memory::GuestMemory;

/// ADD.
pub const ADD: u8 = 0;
/// ADC.
pub const ADC: u8 = 1;
/// SUB (and CMP).
pub const SUB: u8 = 2;
/// SBB.
pub const SBB: u8 = 3;
/// AND (and TEST).
pub const AND: u8 = 4;
/// OR.
pub const OR: u8 = 5;
/// XOR.
pub const XOR: u8 = 6;

#[inline(always)]
const fn op_of(k: u8) -> AluOp {
    match k {
        ADD => AluOp::Add,
        ADC => AluOp::Adc,
        SUB => AluOp::Sub,
        SBB => AluOp::Sbb,
        AND => AluOp::And,
        OR => AluOp::Or,
        _ => AluOp::Xor,
    }
}

/// The handler for an ALU operation `k`, with (`wb`) or without write-back, specialised
/// for the register/register and register/immediate forms and their operand `size`.
pub fn pick(k: u8, wb: bool, rr: bool, ri: bool, size: u8) -> Handler {
    macro_rules! table {
        ($($k:ident),*) => {
            match (k, wb, rr, ri) {
                $(
                    ($k, true, true, _) => super::sized!(alu_rr::<$k, true>, size),
                    ($k, false, true, _) => super::sized!(alu_rr::<$k, false>, size),
                    ($k, true, _, true) => super::sized!(alu_ri::<$k, true>, size),
                    ($k, false, _, true) => super::sized!(alu_ri::<$k, false>, size),
                    ($k, true, _, _) => alu_any::<$k, true>,
                    ($k, false, _, _) => alu_any::<$k, false>,
                )*
                _ => super::unimplemented,
            }
        };
    }
    table!(ADD, ADC, SUB, SBB, AND, OR, XOR)
}

/// Execute ALU operation `K` on `size`-byte operands and set the flags: ADD SUB AND OR
/// XOR (and CMP TEST) leave a lazy record (see [`crate::lazy`]), ADC and SBB read CF and
/// stay eager.
#[inline(always)]
fn exec(c: &mut Cpu, k: u8, size: u32, a: u64, b: u64) -> u64 {
    let m = crate::arith::flags::mask(size);
    let (a, b) = (a & m, b & m);
    let sc = lazy::size_code(size);
    match k {
        ADD => {
            let r = a.wrapping_add(b) & m;
            c.lazy(lazy::ADD, sc, a, b, r);
            r
        }
        SUB => {
            let r = a.wrapping_sub(b) & m;
            c.lazy(lazy::SUB, sc, a, b, r);
            r
        }
        AND | OR | XOR => {
            let r = match k {
                AND => a & b,
                OR => a | b,
                _ => a ^ b,
            };
            c.lazy(lazy::LOGIC, sc, 0, 0, r);
            r
        }
        _ => {
            let (r, f) = alu(op_of(k), size, a, b, c.rflags());
            c.set_rflags(f);
            r
        }
    }
}

/// Register, register, operand size `S`.
// Inlined into the fused compare-and-branch handlers (`exec::fused`).
#[inline(always)]
pub fn alu_rr<const K: u8, const WB: bool, const S: u8>(
    c: &mut Cpu,
    _: &mut GuestMemory,
    op: &Op,
) -> Result<(), Ex> {
    let a = c.get_s::<S>(op.r[0]);
    let b = c.get_s::<S>(op.r[1]);
    let r = exec(c, K, u32::from(S), a, b);
    if WB {
        c.set_s::<S>(op.r[0], r);
    }
    Ok(())
}

/// Register, immediate, operand size `S`.
// Inlined into the fused compare-and-branch handlers (`exec::fused`).
#[inline(always)]
pub fn alu_ri<const K: u8, const WB: bool, const S: u8>(
    c: &mut Cpu,
    _: &mut GuestMemory,
    op: &Op,
) -> Result<(), Ex> {
    let a = c.get_s::<S>(op.r[0]);
    let r = exec(c, K, u32::from(S), a, op.imm);
    if WB {
        c.set_s::<S>(op.r[0], r);
    }
    Ok(())
}

/// Any operand forms (memory destination or source).
pub fn alu_any<const K: u8, const WB: bool>(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    op: &Op,
) -> Result<(), Ex> {
    let size = u32::from(op.size);
    let a = if WB {
        rd_rmw(c, mem, op, 0, size)?
    } else {
        rd(c, mem, op, 0, size)?
    };
    let b = rd(c, mem, op, 1, size)?;
    if WB {
        // The flags change only once the store has succeeded (a faulting store leaves them).
        // Only ADC and SBB read a flag (CF) for their result.
        let f = if K == ADC || K == SBB { c.rflags() } else { 0 };
        let (r, _) = alu(op_of(K), size, a, b, f);
        wr(c, mem, op, 0, size, r)?;
    }
    exec(c, K, size, a, b);
    Ok(())
}

/// INC (`DEC` false) or DEC of `a`, `size` bytes: the result, with a lazy record.
#[inline(always)]
fn incdec<const DEC: bool>(c: &mut Cpu, size: u32, a: u64) -> u64 {
    let m = crate::arith::flags::mask(size);
    let a = a & m;
    if DEC {
        let r = a.wrapping_sub(1) & m;
        c.lazy_incdec(lazy::DEC, lazy::size_code(size), a, r);
        r
    } else {
        let r = a.wrapping_add(1) & m;
        c.lazy_incdec(lazy::INC, lazy::size_code(size), a, r);
        r
    }
}

/// INC register, operand size `S`.
pub fn inc_r<const S: u8>(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let r = incdec::<false>(c, u32::from(S), c.get_s::<S>(op.r[0]));
    c.set_s::<S>(op.r[0], r);
    Ok(())
}

/// DEC register, operand size `S`.
// Inlined into the fused compare-and-branch handlers (`exec::fused`).
#[inline(always)]
pub fn dec_r<const S: u8>(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let r = incdec::<true>(c, u32::from(S), c.get_s::<S>(op.r[0]));
    c.set_s::<S>(op.r[0], r);
    Ok(())
}

/// INC (`DEC` false) or DEC r/m.
fn incdec_rm<const DEC: bool>(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let size = u32::from(op.size);
    let a = rd_rmw(c, mem, op, 0, size)?;
    let m = crate::arith::flags::mask(size);
    let r = if DEC {
        a.wrapping_sub(1)
    } else {
        a.wrapping_add(1)
    } & m;
    wr(c, mem, op, 0, size, r)?;
    incdec::<DEC>(c, size, a);
    Ok(())
}

fn unary(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    op: &Op,
    f: fn(u32, u64, u64) -> (u64, u64),
) -> Result<(), Ex> {
    let size = u32::from(op.size);
    let a = rd_rmw(c, mem, op, 0, size)?;
    let (r, fl) = f(size, a, c.rflags());
    wr(c, mem, op, 0, size, r)?;
    c.set_rflags(fl);
    Ok(())
}

/// INC r/m.
pub fn inc(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    incdec_rm::<false>(c, mem, op)
}

/// DEC r/m.
pub fn dec(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    incdec_rm::<true>(c, mem, op)
}

/// NEG r/m.
pub fn neg(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    unary(c, mem, op, aneg)
}

/// NOT r/m (no flags).
pub fn not(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let size = u32::from(op.size);
    let a = rd_rmw(c, mem, op, 0, size)?;
    // The flags (possibly a lazy record) are left alone.
    wr(c, mem, op, 0, size, !a)
}

/// DAA DAS AAA AAS AAM AAD (legacy modes only; #UD in 64-bit mode).
pub fn bcd(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    if c.long64() {
        return Err(ud());
    }
    let al = c.gpr[0] as u8;
    let ax = c.gpr[0] as u16;
    let f = c.rflags();
    let (new_ax, nf): (u16, u64) = match op.i.mnemonic() {
        Mnemonic::Daa => {
            let (v, nf) = bcd::daa(al, f);
            ((ax & 0xff00) | u16::from(v), nf)
        }
        Mnemonic::Das => {
            let (v, nf) = bcd::das(al, f);
            ((ax & 0xff00) | u16::from(v), nf)
        }
        Mnemonic::Aaa => bcd::aaa(ax, f),
        Mnemonic::Aas => bcd::aas(ax, f),
        Mnemonic::Aam => bcd::aam(al, op.imm as u8, f).map_err(|_| fault(DE))?,
        _ => bcd::aad(ax, op.imm as u8, f),
    };
    c.set(0, 2, u64::from(new_ax));
    c.set_rflags(nf);
    Ok(())
}
