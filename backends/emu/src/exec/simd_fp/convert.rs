//! The CVT* conversions between single, double, 32- and 64-bit integers, in XMM, MMX
//! and general registers.
//!
//! The forms with an MMX register operand make the x87 -> MMX transition (TOP = 0, all
//! tags valid) and, like MMX instructions, fault on a pending x87 exception; with a
//! memory source they are plain SSE instructions. Float-to-integer conversions that are
//! invalid (NaN, out of range) store the integer indefinite, the lowest integer.

use super::{fmt, is_mm, lane, set_lane, src, xmm_of, Acc, Kind};
use crate::arith::softfloat as sf;
use crate::cpu::Cpu;
use crate::decode::{Handler, Op};
use crate::exception::Ex;
use iced_x86::{Code, Register};
use opsvisor_core::mmu::memory::GuestMemory;

/// Integer results go to an XMM register (the rest zeroed).
const TO_XMM: u8 = 0;
/// Integer results go to an MMX register.
const TO_MM: u8 = 1;
/// The integer result goes to a general register.
const TO_GPR: u8 = 2;

/// The handler for `code`, if it is one of this family's.
pub fn select(code: Code) -> Option<Handler> {
    use Code as C;
    Some(match code {
        C::Cvtps2pd_xmm_xmmm64 => ff::<4, 8, 2, true>,
        C::Cvtpd2ps_xmm_xmmm128 => ff::<8, 4, 2, true>,
        C::Cvtss2sd_xmm_xmmm32 => ff::<4, 8, 1, false>,
        C::Cvtsd2ss_xmm_xmmm64 => ff::<8, 4, 1, false>,
        C::Cvtdq2ps_xmm_xmmm128 => int_to_fp::<32, 4, 4, true>,
        C::Cvtdq2pd_xmm_xmmm64 => int_to_fp::<32, 8, 2, true>,
        C::Cvtpi2ps_xmm_mmm64 => int_to_fp::<32, 4, 2, false>,
        C::Cvtpi2pd_xmm_mmm64 => int_to_fp::<32, 8, 2, true>,
        C::Cvtsi2ss_xmm_rm32 => int_to_fp::<32, 4, 1, false>,
        C::Cvtsi2ss_xmm_rm64 => int_to_fp::<64, 4, 1, false>,
        C::Cvtsi2sd_xmm_rm32 => int_to_fp::<32, 8, 1, false>,
        C::Cvtsi2sd_xmm_rm64 => int_to_fp::<64, 8, 1, false>,
        C::Cvtps2dq_xmm_xmmm128 => fp_to_int::<4, 32, 4, false, TO_XMM>,
        C::Cvttps2dq_xmm_xmmm128 => fp_to_int::<4, 32, 4, true, TO_XMM>,
        C::Cvtpd2dq_xmm_xmmm128 => fp_to_int::<8, 32, 2, false, TO_XMM>,
        C::Cvttpd2dq_xmm_xmmm128 => fp_to_int::<8, 32, 2, true, TO_XMM>,
        C::Cvtps2pi_mm_xmmm64 => fp_to_int::<4, 32, 2, false, TO_MM>,
        C::Cvttps2pi_mm_xmmm64 => fp_to_int::<4, 32, 2, true, TO_MM>,
        C::Cvtpd2pi_mm_xmmm128 => fp_to_int::<8, 32, 2, false, TO_MM>,
        C::Cvttpd2pi_mm_xmmm128 => fp_to_int::<8, 32, 2, true, TO_MM>,
        C::Cvtss2si_r32_xmmm32 => fp_to_int::<4, 32, 1, false, TO_GPR>,
        C::Cvtss2si_r64_xmmm32 => fp_to_int::<4, 64, 1, false, TO_GPR>,
        C::Cvttss2si_r32_xmmm32 => fp_to_int::<4, 32, 1, true, TO_GPR>,
        C::Cvttss2si_r64_xmmm32 => fp_to_int::<4, 64, 1, true, TO_GPR>,
        C::Cvtsd2si_r32_xmmm64 => fp_to_int::<8, 32, 1, false, TO_GPR>,
        C::Cvtsd2si_r64_xmmm64 => fp_to_int::<8, 64, 1, false, TO_GPR>,
        C::Cvttsd2si_r32_xmmm64 => fp_to_int::<8, 32, 1, true, TO_GPR>,
        C::Cvttsd2si_r64_xmmm64 => fp_to_int::<8, 64, 1, true, TO_GPR>,
        _ => return None,
    })
}

/// The checks of an instruction: SSE's, and for an MMX register operand also the pending
/// x87 exception check of MMX instructions.
fn checks(c: &Cpu, op: &Op) -> Result<bool, Ex> {
    c.sse_check()?;
    let mmx = is_mm(op, 0) || is_mm(op, 1);
    if mmx {
        c.x87_pending_check()?;
    }
    Ok(mmx)
}

/// `N` lanes of `FROM`-byte floats to `TO`-byte floats; `WHOLE` writes the results
/// alone (the rest of the destination zeroed), else they replace the low lanes.
fn ff<const FROM: u8, const TO: u8, const N: u32, const WHOLE: bool>(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    op: &Op,
) -> Result<(), Ex> {
    c.sse_check()?;
    let d = xmm_of(op, 0);
    let s = src(c, mem, op, 1)?;
    let (from, to) = (fmt(FROM), fmt(TO));
    let (fb, tb) = (u32::from(FROM) * 8, u32::from(TO) * 8);
    let mut acc = Acc::new(c);
    let mut out = if WHOLE { 0 } else { c.fpu.xmm[d] };
    for i in 0..N {
        let x = lane(s, fb, i);
        let r = acc.op(to, Kind::Cvt(from), x, 0);
        out = set_lane(out, tb, i, r);
    }
    acc.finish(c)?;
    c.fpu.xmm[d] = out;
    Ok(())
}

/// `N` lanes of `BITS`-bit signed integers to `TO`-byte floats (see [`ff`] for `WHOLE`).
fn int_to_fp<const BITS: u32, const TO: u8, const N: u32, const WHOLE: bool>(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    op: &Op,
) -> Result<(), Ex> {
    let mmx = checks(c, op)?;
    let d = xmm_of(op, 0);
    let s = src(c, mem, op, 1)?;
    let to = fmt(TO);
    let tb = u32::from(TO) * 8;
    let mut acc = Acc::new(c);
    let mut out = if WHOLE { 0 } else { c.fpu.xmm[d] };
    for i in 0..N {
        let raw = lane(s, BITS, i) as u64;
        let v = if BITS == 32 {
            i64::from(raw as u32 as i32)
        } else {
            raw as i64
        };
        let mut e = acc.env(to);
        let r = sf::from_int(to, v, &mut e);
        acc.record(e.flags);
        out = set_lane(out, tb, i, r);
    }
    if mmx {
        c.fpu.enter_mmx();
    }
    acc.finish(c)?;
    c.fpu.xmm[d] = out;
    Ok(())
}

/// `N` lanes of `FROM`-byte floats to `BITS`-bit integers, rounded with MXCSR.RC or
/// truncated, into the destination kind `DEST`.
fn fp_to_int<const FROM: u8, const BITS: u32, const N: u32, const TRUNC: bool, const DEST: u8>(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    op: &Op,
) -> Result<(), Ex> {
    let mmx = checks(c, op)?;
    let s = src(c, mem, op, 1)?;
    let from = fmt(FROM);
    let fb = u32::from(FROM) * 8;
    let mut acc = Acc::new(c);
    let mut out = 0u128;
    for i in 0..N {
        let mut e = acc.env(from);
        let v = sf::to_int(from, lane(s, fb, i), BITS, TRUNC, &mut e);
        acc.record(e.flags);
        let bits = match v {
            Some(v) => v as u64 as u128,
            None => 1u128 << (BITS - 1),
        };
        out = set_lane(out, BITS, i, bits);
    }
    if mmx {
        c.fpu.enter_mmx();
    }
    acc.finish(c)?;
    match DEST {
        TO_XMM => c.fpu.xmm[xmm_of(op, 0)] = out,
        TO_MM => {
            let k = (op.i.op_register(0) as usize).wrapping_sub(Register::MM0 as usize);
            c.fpu.set_mm(k & 7, out as u64);
        }
        _ => c.set(op.r[0], BITS / 8, out as u64),
    }
    Ok(())
}
