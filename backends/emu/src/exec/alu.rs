//! ADD ADC SUB SBB AND OR XOR CMP TEST INC DEC NEG NOT, and the BCD adjustments.

use super::{rd, wr};
use crate::arith::alu::{alu, dec as adec, inc as ainc, neg as aneg, AluOp};
use crate::arith::bcd;
use crate::cpu::Cpu;
use crate::decode::{Handler, Op};
use crate::exception::{fault, ud, Ex, DE};
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

/// Register, register, operand size `S`.
pub fn alu_rr<const K: u8, const WB: bool, const S: u8>(
    c: &mut Cpu,
    _: &mut GuestMemory,
    op: &Op,
) -> Result<(), Ex> {
    let a = c.get_s::<S>(op.r[0]);
    let b = c.get_s::<S>(op.r[1]);
    let (r, f) = alu(op_of(K), u32::from(S), a, b, c.rflags);
    if WB {
        c.set_s::<S>(op.r[0], r);
    }
    c.rflags = f;
    Ok(())
}

/// Register, immediate, operand size `S`.
pub fn alu_ri<const K: u8, const WB: bool, const S: u8>(
    c: &mut Cpu,
    _: &mut GuestMemory,
    op: &Op,
) -> Result<(), Ex> {
    let a = c.get_s::<S>(op.r[0]);
    let (r, f) = alu(op_of(K), u32::from(S), a, op.imm, c.rflags);
    if WB {
        c.set_s::<S>(op.r[0], r);
    }
    c.rflags = f;
    Ok(())
}

/// Any operand forms (memory destination or source).
pub fn alu_any<const K: u8, const WB: bool>(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    op: &Op,
) -> Result<(), Ex> {
    let size = u32::from(op.size);
    let a = rd(c, mem, op, 0, size)?;
    let b = rd(c, mem, op, 1, size)?;
    let (r, f) = alu(op_of(K), size, a, b, c.rflags);
    if WB {
        wr(c, mem, op, 0, size, r)?;
    }
    c.rflags = f;
    Ok(())
}

/// INC register, operand size `S`.
pub fn inc_r<const S: u8>(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let (r, f) = ainc(u32::from(S), c.get_s::<S>(op.r[0]), c.rflags);
    c.set_s::<S>(op.r[0], r);
    c.rflags = f;
    Ok(())
}

/// DEC register, operand size `S`.
pub fn dec_r<const S: u8>(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let (r, f) = adec(u32::from(S), c.get_s::<S>(op.r[0]), c.rflags);
    c.set_s::<S>(op.r[0], r);
    c.rflags = f;
    Ok(())
}

fn unary(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    op: &Op,
    f: fn(u32, u64, u64) -> (u64, u64),
) -> Result<(), Ex> {
    let size = u32::from(op.size);
    let a = rd(c, mem, op, 0, size)?;
    let (r, fl) = f(size, a, c.rflags);
    wr(c, mem, op, 0, size, r)?;
    c.rflags = fl;
    Ok(())
}

/// INC r/m.
pub fn inc(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    unary(c, mem, op, ainc)
}

/// DEC r/m.
pub fn dec(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    unary(c, mem, op, adec)
}

/// NEG r/m.
pub fn neg(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    unary(c, mem, op, aneg)
}

/// NOT r/m (no flags).
pub fn not(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    unary(c, mem, op, |_, a, f| (!a, f))
}

/// DAA DAS AAA AAS AAM AAD (legacy modes only; #UD in 64-bit mode).
pub fn bcd(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    if c.long64() {
        return Err(ud());
    }
    let al = c.gpr[0] as u8;
    let ax = c.gpr[0] as u16;
    let f = c.rflags;
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
    c.rflags = nf;
    Ok(())
}
