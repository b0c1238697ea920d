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

/// The operand forms [`pick`] specialises.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Form {
    /// Register, register.
    RR,
    /// Register, immediate.
    RI,
    /// Register, memory.
    RM,
    /// Memory, register.
    MR,
    /// Memory, immediate.
    MI,
    /// Anything else (the accumulator forms come as RI).
    Other,
}

/// The handler for an ALU operation `k`, with (`wb`) or without write-back, specialised
/// for the operand `form` and `size`.
pub fn pick(k: u8, wb: bool, form: Form, size: u8) -> Handler {
    macro_rules! table {
        ($($k:ident),*) => {
            match (k, wb, form) {
                $(
                    ($k, true, Form::RR) => super::sized!(alu_rr::<$k, true>, size),
                    ($k, false, Form::RR) => super::sized!(alu_rr::<$k, false>, size),
                    ($k, true, Form::RI) => super::sized!(alu_ri::<$k, true>, size),
                    ($k, false, Form::RI) => super::sized!(alu_ri::<$k, false>, size),
                    ($k, true, Form::RM) => super::sized!(alu_rm::<$k, true>, size),
                    ($k, false, Form::RM) => super::sized!(alu_rm::<$k, false>, size),
                    ($k, true, Form::MR) => super::sized!(alu_mr::<$k, true>, size),
                    ($k, false, Form::MR) => super::sized!(alu_mr::<$k, false>, size),
                    ($k, true, Form::MI) => super::sized!(alu_mi::<$k, true>, size),
                    ($k, false, Form::MI) => super::sized!(alu_mi::<$k, false>, size),
                    ($k, true, Form::Other) => alu_any::<$k, true>,
                    ($k, false, Form::Other) => alu_any::<$k, false>,
                )*
                _ => super::unimplemented,
            }
        };
    }
    table!(ADD, ADC, SUB, SBB, AND, OR, XOR)
}

/// The result of ALU operation `K` on masked operands, without touching the flags (for
/// the memory destinations, whose flags change only once the store has succeeded).
#[inline(always)]
fn result<const K: u8>(c: &Cpu, size: u32, a: u64, b: u64) -> u64 {
    let m = crate::arith::flags::mask(size);
    match K {
        ADD => a.wrapping_add(b) & m,
        SUB => a.wrapping_sub(b) & m,
        AND => a & b & m,
        OR => (a | b) & m,
        XOR => (a ^ b) & m,
        // Only ADC and SBB read a flag (CF) for their result.
        _ => alu(op_of(K), size, a, b, c.rflags()).0,
    }
}

/// Register, memory, operand size `S` (`add r, [m]`, `cmp r, [m]`).
pub fn alu_rm<const K: u8, const WB: bool, const S: u8>(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    op: &Op,
) -> Result<(), Ex> {
    let b = super::load::<S>(c, mem, op)?;
    let a = c.get_s::<S>(op.r[0]);
    let r = exec(c, K, u32::from(S), a, b);
    if WB {
        c.set_s::<S>(op.r[0], r);
    }
    Ok(())
}

/// Memory, register, operand size `S` (`add [m], r`, `cmp [m], r`, `test [m], r`).
pub fn alu_mr<const K: u8, const WB: bool, const S: u8>(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    op: &Op,
) -> Result<(), Ex> {
    let b = c.get_s::<S>(op.r[1]);
    alu_m::<K, WB, S>(c, mem, op, b)
}

/// Memory, immediate, operand size `S` (`add [m], imm`, `cmp [m], imm`).
pub fn alu_mi<const K: u8, const WB: bool, const S: u8>(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    op: &Op,
) -> Result<(), Ex> {
    alu_m::<K, WB, S>(c, mem, op, op.imm)
}

/// Memory destination op `b`: read (checked for writing under `WB`), store the result,
/// then the flags.
#[inline(always)]
fn alu_m<const K: u8, const WB: bool, const S: u8>(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    op: &Op,
    b: u64,
) -> Result<(), Ex> {
    let size = u32::from(S);
    let b = b & crate::arith::flags::mask(size);
    if WB {
        let a = super::load_rmw::<S>(c, mem, op)?;
        let r = result::<K>(c, size, a, b);
        super::store::<S>(c, mem, op, r)?;
        exec(c, K, size, a, b);
    } else {
        let a = super::load::<S>(c, mem, op)?;
        exec(c, K, size, a, b);
    }
    Ok(())
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

/// INC (`DEC` false) or DEC of a memory operand of `S` bytes (Linux's preempt count,
/// reference counts).
pub fn incdec_m<const DEC: bool, const S: u8>(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    op: &Op,
) -> Result<(), Ex> {
    let a = super::load_rmw::<S>(c, mem, op)?;
    let m = crate::arith::flags::mask(u32::from(S));
    let r = if DEC {
        a.wrapping_sub(1)
    } else {
        a.wrapping_add(1)
    } & m;
    super::store::<S>(c, mem, op, r)?;
    incdec::<DEC>(c, u32::from(S), a);
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
