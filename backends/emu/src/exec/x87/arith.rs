//! Arithmetic: FADD/FSUB/FSUBR/FMUL/FDIV/FDIVR in their memory (m32fp, m64fp, m16int,
//! m32int), register and popping forms, FSQRT, FABS, FCHS, FRNDINT, FSCALE, FXTRACT,
//! FPREM and FPREM1.
//!
//! Precision control applies to the first six and FSQRT only. An unmasked overflow or
//! underflow with a register destination stores the result with its exponent adjusted
//! by 24576 (down for overflow, up for underflow), computed from operands pre-scaled so
//! that the rounding is the real one.

use super::f80::{self, Kind, INDEFINITE};
use super::load_store::{int80, read_mem, sext, widen};
use super::{
    env, is_empty, masked, overflow, pop, push, set_cc, set_st, signal, st, start, sti, underflow,
    with_roundup, CC,
};
use crate::arith::softfloat::{self, exc, Env, F80};
use crate::cpu::Cpu;
use crate::decode::{Handler, Op};
use crate::exception::Ex;
use crate::fpu::{fsw, X87};
use iced_x86::Code;
use opsvisor_core::mmu::memory::GuestMemory;

/// A basic operation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Bin {
    /// a + b.
    Add,
    /// a - b.
    Sub,
    /// a * b.
    Mul,
    /// a / b.
    Div,
}

const ADD: u8 = 0;
const MUL: u8 = 1;
const SUB: u8 = 4;
const SUBR: u8 = 5;
const DIV: u8 = 6;
const DIVR: u8 = 7;

/// The handler for `code` if it is an arithmetic instruction.
pub fn select(code: Code) -> Option<Handler> {
    use Code as C;
    Some(match code {
        C::Fadd_m32fp => mem_fp::<ADD, 4>,
        C::Fmul_m32fp => mem_fp::<MUL, 4>,
        C::Fsub_m32fp => mem_fp::<SUB, 4>,
        C::Fsubr_m32fp => mem_fp::<SUBR, 4>,
        C::Fdiv_m32fp => mem_fp::<DIV, 4>,
        C::Fdivr_m32fp => mem_fp::<DIVR, 4>,
        C::Fadd_m64fp => mem_fp::<ADD, 8>,
        C::Fmul_m64fp => mem_fp::<MUL, 8>,
        C::Fsub_m64fp => mem_fp::<SUB, 8>,
        C::Fsubr_m64fp => mem_fp::<SUBR, 8>,
        C::Fdiv_m64fp => mem_fp::<DIV, 8>,
        C::Fdivr_m64fp => mem_fp::<DIVR, 8>,
        C::Fiadd_m32int => mem_int::<ADD, 4>,
        C::Fimul_m32int => mem_int::<MUL, 4>,
        C::Fisub_m32int => mem_int::<SUB, 4>,
        C::Fisubr_m32int => mem_int::<SUBR, 4>,
        C::Fidiv_m32int => mem_int::<DIV, 4>,
        C::Fidivr_m32int => mem_int::<DIVR, 4>,
        C::Fiadd_m16int => mem_int::<ADD, 2>,
        C::Fimul_m16int => mem_int::<MUL, 2>,
        C::Fisub_m16int => mem_int::<SUB, 2>,
        C::Fisubr_m16int => mem_int::<SUBR, 2>,
        C::Fidiv_m16int => mem_int::<DIV, 2>,
        C::Fidivr_m16int => mem_int::<DIVR, 2>,
        C::Fadd_st0_sti => st0_sti::<ADD>,
        C::Fmul_st0_sti => st0_sti::<MUL>,
        C::Fsub_st0_sti => st0_sti::<SUB>,
        C::Fsubr_st0_sti => st0_sti::<SUBR>,
        C::Fdiv_st0_sti => st0_sti::<DIV>,
        C::Fdivr_st0_sti => st0_sti::<DIVR>,
        C::Fadd_sti_st0 => sti_st0::<ADD, false>,
        C::Fmul_sti_st0 => sti_st0::<MUL, false>,
        C::Fsub_sti_st0 => sti_st0::<SUB, false>,
        C::Fsubr_sti_st0 => sti_st0::<SUBR, false>,
        C::Fdiv_sti_st0 => sti_st0::<DIV, false>,
        C::Fdivr_sti_st0 => sti_st0::<DIVR, false>,
        C::Faddp_sti_st0 => sti_st0::<ADD, true>,
        C::Fmulp_sti_st0 => sti_st0::<MUL, true>,
        C::Fsubp_sti_st0 => sti_st0::<SUB, true>,
        C::Fsubrp_sti_st0 => sti_st0::<SUBR, true>,
        C::Fdivp_sti_st0 => sti_st0::<DIV, true>,
        C::Fdivrp_sti_st0 => sti_st0::<DIVR, true>,
        C::Fsqrt => fsqrt,
        C::Fabs => fabs_fchs::<false>,
        C::Fchs => fabs_fchs::<true>,
        C::Frndint => frndint,
        C::Fscale => fscale,
        C::Fxtract => fxtract,
        C::Fprem => fprem::<false>,
        C::Fprem1 => fprem::<true>,
        _ => return None,
    })
}

/// `dest OP src` for the ModR/M operation number `o` (FSUBR/FDIVR reverse).
fn operands(o: u8, dest: u128, src: u128) -> (Bin, u128, u128) {
    match o {
        ADD => (Bin::Add, dest, src),
        MUL => (Bin::Mul, dest, src),
        SUB => (Bin::Sub, dest, src),
        SUBR => (Bin::Sub, src, dest),
        DIV => (Bin::Div, dest, src),
        _ => (Bin::Div, src, dest),
    }
}

fn apply(b: Bin, x: u128, y: u128, e: &mut Env) -> u128 {
    match b {
        Bin::Add => softfloat::add(F80, x, y, e),
        Bin::Sub => softfloat::sub(F80, x, y, e),
        Bin::Mul => softfloat::mul(F80, x, y, e),
        Bin::Div => softfloat::div(F80, x, y, e),
    }
}

/// `v` times 2^`delta` with the exponent clamped to the normal range (a value pushed
/// below it becomes the smallest normal of its sign: it then only contributes to the
/// sticky bit; one pushed above becomes the largest).
fn scale_clamped(v: u128, delta: i32) -> u128 {
    match f80::normalize(v) {
        Some((s, e, m)) => {
            let ne = (e + delta).clamp(1 - f80::BIAS, 0x7ffe - f80::BIAS);
            let m = if e + delta < 1 - f80::BIAS {
                f80::INT
            } else {
                m
            };
            f80::make(s, (ne + f80::BIAS) as u32, m)
        }
        None => v,
    }
}

/// Exponent of a finite nonzero value (unbiased, normalised), 0 otherwise.
fn exp_of(v: u128) -> i32 {
    f80::normalize(v).map_or(0, |(_, e, _)| e)
}

/// The shifts of `x` and `y` (as exponents added) that move a product (`mul`) or
/// quotient by `t` while keeping both operands normal: `x` takes as much as fits, `y`
/// the rest. `None` when no split fits (only for operands far out of range).
fn split(x: u128, y: u128, mul: bool, t: i32) -> Option<(i32, i32)> {
    let range = |v: u128| {
        let e = exp_of(v);
        (1 - f80::BIAS - e, 0x7ffe - f80::BIAS - e)
    };
    let ((lx, hx), (ly, hy)) = (range(x), range(y));
    let kx = t.clamp(lx, hx);
    let rest = t - kx;
    let sy = (if mul { rest } else { -rest }).clamp(ly, hy);
    let kx = if mul { t - sy } else { t + sy };
    ((lx..=hx).contains(&kx)).then_some((kx, sy))
}

/// The bias-adjusted result of an unmasked overflow (`over`) or underflow.
fn adjusted(b: Bin, x: u128, y: u128, over: bool, e: &mut Env) -> (u128, bool) {
    const K: i32 = 24576;
    let d = if over { -K } else { K };
    let (x2, y2) = match b {
        Bin::Add | Bin::Sub => (scale_clamped(x, d), scale_clamped(y, d)),
        Bin::Mul | Bin::Div => {
            // Split the scaling between the operands so both stay normal (a denormal
            // operand is normalised by its share), so the rounding is the real one.
            let (kx, ky) = split(x, y, b == Bin::Mul, d).unwrap_or((d, 0));
            (scale_clamped(x, kx), scale_clamped(y, ky))
        }
    };
    e.flags = 0;
    let (r, up) = with_roundup(e, |e| apply(b, x2, y2, e));
    (r, up)
}

/// Compute `x OP y` into ST(`dest`) (then pop when `p`), with every x87 response.
/// `extra` are flags the operand fetch raised (a memory float's SNaN or denormal).
fn finish(c: &mut Cpu, b: Bin, x: u128, y: u128, dest: usize, p: bool, extra: u32) {
    let xs = &mut c.fpu.x87;
    xs.fsw &= !fsw::C1;
    let mut e = env(xs, true);
    let (mut r, mut up) = with_roundup(&mut e, |e| apply(b, x, y, e));
    let mut flags = e.flags | extra;
    // A NaN operand makes the other operand's denormal irrelevant: no DE.
    if f80::is_nan(x) || f80::is_nan(y) {
        flags &= !exc::DE;
    }
    // Nor does a division by zero report the dividend's denormal (as on the host).
    if flags & exc::ZE != 0 {
        flags &= !exc::DE;
    }
    if !masked(xs, exc::UE) && flags & exc::IE == 0 && f80::kind(r) == Kind::Denormal {
        flags |= exc::UE;
    }
    if flags & (exc::IE | exc::DE | exc::ZE) & !u32::from(xs.fcw) == 0 {
        // The bias-adjusted result is inexact only if its own rounding is (the
        // rounding to the destination's range no longer happens).
        if flags & exc::OE != 0 && !masked(xs, exc::OE) {
            (r, up) = adjusted(b, x, y, true, &mut e);
            flags = (flags & !exc::PE) | (e.flags & exc::PE);
        } else if flags & exc::UE != 0 && !masked(xs, exc::UE) {
            (r, up) = adjusted(b, x, y, false, &mut e);
            flags = (flags & !exc::PE) | (e.flags & exc::PE);
        }
    }
    if signal(xs, flags) {
        return;
    }
    set_st(xs, dest, r);
    if up {
        xs.fsw |= fsw::C1;
    }
    if p {
        pop(xs);
    }
}

/// Stack underflow for an arithmetic instruction: the masked response writes the
/// indefinite to the destination (and pops for the popping forms).
fn arith_underflow(x: &mut X87, dest: usize, p: bool) {
    if underflow(x) {
        set_st(x, dest, INDEFINITE);
        if p {
            pop(x);
        }
    }
}

fn mem_fp<const O: u8, const W: u32>(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    op: &Op,
) -> Result<(), Ex> {
    start(c, op)?;
    let raw = read_mem(c, mem, op, W)?;
    let x = &mut c.fpu.x87;
    if is_empty(x, 0) {
        x.fsw &= !fsw::C1;
        arith_underflow(x, 0, false);
        return Ok(());
    }
    let (src, fl) = widen(x, W, raw);
    // A signaling NaN in memory is passed on still signaling (the widening quiets it):
    // against a quiet NaN in ST(0) the x87 returns the quiet one (SDM 1 table 4-7),
    // whatever the significands.
    let (src, fl) = match snan80(W, raw) {
        Some(v) => (v, fl & !exc::IE),
        None => (src, fl),
    };
    let (b, p, q) = operands(O, st(x, 0), src);
    finish(c, b, p, q, 0, false, fl);
    Ok(())
}

/// A `w`-byte memory float that is a signaling NaN as the double-extended signaling NaN
/// with the same sign and payload.
fn snan80(w: u32, raw: u64) -> Option<u128> {
    let (sign, exp, frac, bits) = if w == 4 {
        (raw >> 31 & 1, raw >> 23 & 0xff, raw & 0x7f_ffff, 23)
    } else {
        (raw >> 63, raw >> 52 & 0x7ff, raw & 0xf_ffff_ffff_ffff, 52)
    };
    let all_ones = if w == 4 { 0xff } else { 0x7ff };
    let quiet = 1u64 << (bits - 1);
    if exp != all_ones || frac == 0 || frac & quiet != 0 {
        return None;
    }
    Some(f80::make(
        sign != 0,
        0x7fff,
        f80::INT | (frac << (63 - bits)),
    ))
}

fn mem_int<const O: u8, const W: u32>(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    op: &Op,
) -> Result<(), Ex> {
    start(c, op)?;
    let raw = read_mem(c, mem, op, W)?;
    let x = &mut c.fpu.x87;
    if is_empty(x, 0) {
        x.fsw &= !fsw::C1;
        arith_underflow(x, 0, false);
        return Ok(());
    }
    let src = int80(x, sext(raw, W));
    let (b, p, q) = operands(O, st(x, 0), src);
    finish(c, b, p, q, 0, false, 0);
    Ok(())
}

fn st0_sti<const O: u8>(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    start(c, op)?;
    let i = sti(op, 1);
    let x = &mut c.fpu.x87;
    if is_empty(x, 0) || is_empty(x, i) {
        x.fsw &= !fsw::C1;
        arith_underflow(x, 0, false);
        return Ok(());
    }
    let (b, p, q) = operands(O, st(x, 0), st(x, i));
    finish(c, b, p, q, 0, false, 0);
    Ok(())
}

fn sti_st0<const O: u8, const P: bool>(
    c: &mut Cpu,
    _: &mut GuestMemory,
    op: &Op,
) -> Result<(), Ex> {
    start(c, op)?;
    let i = sti(op, 0);
    let x = &mut c.fpu.x87;
    if is_empty(x, 0) || is_empty(x, i) {
        x.fsw &= !fsw::C1;
        arith_underflow(x, i, P);
        return Ok(());
    }
    let (b, p, q) = operands(O, st(x, i), st(x, 0));
    finish(c, b, p, q, i, P, 0);
    Ok(())
}

/// ST(0) for a one-operand instruction, or `None` after the stack-underflow response
/// (the indefinite in ST(0) when masked).
fn unary_source(x: &mut X87) -> Option<u128> {
    x.fsw &= !fsw::C1;
    if is_empty(x, 0) {
        arith_underflow(x, 0, false);
        return None;
    }
    Some(st(x, 0))
}

fn fsqrt(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    start(c, op)?;
    let x = &mut c.fpu.x87;
    let Some(v) = unary_source(x) else {
        return Ok(());
    };
    let mut e = env(x, true);
    let (r, up) = with_roundup(&mut e, |e| softfloat::sqrt(F80, v, e));
    if signal(x, e.flags) {
        return Ok(());
    }
    set_st(x, 0, r);
    if up {
        x.fsw |= fsw::C1;
    }
    Ok(())
}

fn fabs_fchs<const NEG: bool>(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    start(c, op)?;
    let x = &mut c.fpu.x87;
    let Some(v) = unary_source(x) else {
        return Ok(());
    };
    // Sign operations on the encoding: no exceptions, NaNs included.
    let r = if NEG { f80::neg(v) } else { v & !f80::SIGN };
    set_st(x, 0, r);
    Ok(())
}

fn frndint(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    start(c, op)?;
    let x = &mut c.fpu.x87;
    let Some(v) = unary_source(x) else {
        return Ok(());
    };
    let mut e = env(x, false);
    let round = e.round;
    let (r, up) = with_roundup(&mut e, |e| {
        softfloat::round_to_integral(F80, v, e.round, true, e)
    });
    let _ = round;
    let mut flags = e.flags;
    if f80::kind(v) == Kind::Denormal {
        flags |= exc::DE;
    }
    if signal(x, flags) {
        return Ok(());
    }
    set_st(x, 0, r);
    if up {
        x.fsw |= fsw::C1;
    }
    Ok(())
}

/// The x87 NaN propagation of two operands (at least one a NaN), with IE for a
/// signaling NaN or an unsupported encoding.
fn nan2(x: &X87, a: u128, b: u128, flags: &mut u32) -> u128 {
    let mut e = env(x, false);
    let r = softfloat::add(F80, a, b, &mut e);
    *flags |= e.flags & exc::IE;
    r
}

fn fscale(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    start(c, op)?;
    let x = &mut c.fpu.x87;
    x.fsw &= !fsw::C1;
    if is_empty(x, 0) || is_empty(x, 1) {
        arith_underflow(x, 0, false);
        return Ok(());
    }
    let (a, b) = (st(x, 0), st(x, 1));
    let (ka, kb) = (f80::kind(a), f80::kind(b));
    let mut flags = 0u32;
    if ka == Kind::Denormal || kb == Kind::Denormal {
        flags |= exc::DE;
    }
    let sa = a & f80::SIGN != 0;
    let b_neg = b & f80::SIGN != 0;
    // A NaN operand makes the other one's denormal irrelevant: no DE.
    if ka == Kind::Nan || kb == Kind::Nan {
        flags &= !exc::DE;
    }
    let r = match (ka, kb) {
        (Kind::Unsupported, _) | (_, Kind::Unsupported) => {
            flags |= exc::IE;
            INDEFINITE
        }
        (Kind::Nan, _) | (_, Kind::Nan) => nan2(x, a, b, &mut flags),
        (Kind::Zero, Kind::Infinity) if !b_neg => {
            flags |= exc::IE;
            INDEFINITE
        }
        (Kind::Infinity, Kind::Infinity) if b_neg => {
            flags |= exc::IE;
            INDEFINITE
        }
        (Kind::Zero, _) | (Kind::Infinity, _) => a,
        (_, Kind::Infinity) => {
            if b_neg {
                f80::zero(sa)
            } else {
                f80::inf(sa)
            }
        }
        _ => {
            // Both finite, ST(0) nonzero: ST(0) * 2^trunc(ST(1)).
            let n = match f80::normalize(b) {
                Some((s, e, m)) if e >= 0 => {
                    let mag = if e >= 31 {
                        1i64 << 31
                    } else {
                        (m >> (63 - e)) as i64
                    };
                    if s {
                        -mag
                    } else {
                        mag
                    }
                }
                _ => 0,
            };
            match scale(x, a, n, &mut flags) {
                Some(r) => r,
                None => return Ok(()),
            }
        }
    };
    if signal(x, flags) {
        x.fsw &= !fsw::C1;
        return Ok(());
    }
    set_st(x, 0, r);
    Ok(())
}

/// `a` (finite, nonzero) times 2^`n`, rounded like an arithmetic result; `None` when an
/// unmasked exception suppresses it. Sets C1 for a round-up.
fn scale(x: &mut X87, a: u128, n: i64, flags: &mut u32) -> Option<u128> {
    let (s, e, m) = f80::normalize(a)?;
    let target = i64::from(e) + n;
    if let Some(v) = i32::try_from(target)
        .ok()
        .and_then(|t| f80::from_normal(s, t, m))
    {
        return Some(v);
    }
    let over = target > 0;
    let adj = if over { target - 24576 } else { target + 24576 };
    let unmasked = if over {
        !masked(x, exc::OE)
    } else {
        !masked(x, exc::UE)
    };
    if unmasked {
        if let Some(v) = i32::try_from(adj)
            .ok()
            .and_then(|t| f80::from_normal(s, t, m))
        {
            *flags |= if over { exc::OE } else { exc::UE };
            return Some(v);
        }
        // Out of range even adjusted: the host delivers infinity (rounded up: C1) or
        // zero, inexact, whatever the rounding control.
        *flags |= exc::PE | if over { exc::OE } else { exc::UE };
        if over {
            x.fsw |= fsw::C1;
            return Some(f80::inf(s));
        }
        return Some(f80::zero(s));
    }
    // Out of range: let the multiplication by a power of two round it (overflow to
    // infinity or the largest value, underflow to a denormal or zero).
    let (e1, e2) = if over {
        (
            0x7ffe - f80::BIAS,
            target.min(40000) as i32 - (0x7ffe - f80::BIAS),
        )
    } else {
        let t = target.max(-40000) as i32;
        ((t + 16382).max(-16382), -16382)
    };
    let p = f80::from_normal(s, e1, m)?;
    let q = f80::from_normal(false, e2.clamp(-16382, 16383), f80::INT)?;
    let mut en = env(x, false);
    let (r, up) = with_roundup(&mut en, |en| softfloat::mul(F80, p, q, en));
    *flags |= en.flags & !exc::DE;
    if up {
        x.fsw |= fsw::C1;
    }
    Some(r)
}

fn fxtract(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    start(c, op)?;
    let x = &mut c.fpu.x87;
    x.fsw &= !fsw::C1;
    if is_empty(x, 0) {
        // Masked, the indefinite replaces ST(0) and is pushed (whatever ST(7) holds, as
        // on the host).
        if underflow(x) {
            set_st(x, 0, INDEFINITE);
            push(x, INDEFINITE);
        }
        return Ok(());
    }
    if !is_empty(x, 7) {
        if overflow(x) {
            set_st(x, 0, INDEFINITE);
            push(x, INDEFINITE);
        }
        return Ok(());
    }
    let v = st(x, 0);
    let mut flags = 0u32;
    let s = v & f80::SIGN != 0;
    let (exp, sig) = match f80::kind(v) {
        Kind::Unsupported => {
            flags |= exc::IE;
            (INDEFINITE, INDEFINITE)
        }
        Kind::Nan => {
            let q = nan2(x, v, v, &mut flags);
            (q, q)
        }
        Kind::Zero => {
            flags |= exc::ZE;
            (f80::inf(true), v)
        }
        Kind::Infinity => (f80::inf(false), v),
        Kind::Normal | Kind::Denormal => {
            if f80::kind(v) == Kind::Denormal {
                flags |= exc::DE;
            }
            let (s2, e, m) = f80::normalize(v).unwrap_or((s, 0, f80::INT));
            let ev = int80(x, i64::from(e));
            (ev, f80::make(s2, f80::BIAS as u32, m))
        }
    };
    if signal(x, flags) {
        return Ok(());
    }
    set_st(x, 0, exp);
    push(x, sig);
    Ok(())
}

fn fprem<const IEEE: bool>(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    start(c, op)?;
    let x = &mut c.fpu.x87;
    // Without a partial remainder (stack underflow, an invalid or NaN operand) the
    // host clears C1 and C2 and leaves C0 and C3 as they were, IE masked or not.
    let no_quotient = fsw::C1 | fsw::C2;
    if is_empty(x, 0) || is_empty(x, 1) {
        set_cc(x, no_quotient, 0);
        arith_underflow(x, 0, false);
        return Ok(());
    }
    let (a, b) = (st(x, 0), st(x, 1));
    let (ka, kb) = (f80::kind(a), f80::kind(b));
    let mut flags = 0u32;
    if ka == Kind::Denormal || kb == Kind::Denormal {
        flags |= exc::DE;
    }
    let mut cc = 0u16;
    let mut cc_bits = CC;
    // A NaN operand makes the other one's denormal irrelevant: no DE.
    if ka == Kind::Nan || kb == Kind::Nan {
        flags &= !exc::DE;
    }
    let r = match (ka, kb) {
        (Kind::Unsupported, _) | (_, Kind::Unsupported) => {
            flags |= exc::IE;
            cc_bits = no_quotient;
            INDEFINITE
        }
        (Kind::Nan, _) | (_, Kind::Nan) => {
            cc_bits = no_quotient;
            nan2(x, a, b, &mut flags)
        }
        (Kind::Infinity, _) | (_, Kind::Zero) => {
            flags |= exc::IE;
            cc_bits = no_quotient;
            INDEFINITE
        }
        (Kind::Zero, _) | (_, Kind::Infinity) => a,
        _ => {
            let (r, q, done) = remainder(a, b, IEEE);
            // An incomplete reduction reports C2 alone.
            cc = if done { quotient_cc(q) } else { fsw::C2 };
            r
        }
    };
    // A denormal result (a remainder is exact; also ST(0) returned as it is) is tiny:
    // with UE unmasked it is delivered bias-adjusted, its exponent raised by 24576.
    let r = if cc_bits != no_quotient && !masked(x, exc::UE) && f80::kind(r) == Kind::Denormal {
        flags |= exc::UE;
        let (s, e, m) = f80::normalize(r).unwrap_or((false, 0, f80::INT));
        f80::from_normal(s, e + 24576, m).unwrap_or(r)
    } else {
        r
    };
    if cc_bits == no_quotient {
        set_cc(x, cc_bits, 0);
    }
    if signal(x, flags) {
        // Suppressed by an unmasked exception (a denormal operand too): no quotient.
        set_cc(x, no_quotient, 0);
        return Ok(());
    }
    set_cc(x, cc_bits, cc);
    set_st(x, 0, r);
    Ok(())
}

/// C0, C3, C1 from the low three quotient bits (Q2, Q1, Q0).
fn quotient_cc(q: u64) -> u16 {
    let mut cc = 0;
    if q & 4 != 0 {
        cc |= fsw::C0;
    }
    if q & 2 != 0 {
        cc |= fsw::C3;
    }
    if q & 1 != 0 {
        cc |= fsw::C1;
    }
    cc
}

/// The partial remainder of finite nonzero `a` by `b` (exact): the result, the low
/// quotient bits and whether the reduction is complete. FPREM truncates the quotient,
/// FPREM1 (`ieee`) rounds it to nearest even; an exponent difference of 64 or more is
/// reduced by part of it only (C2 set).
fn remainder(a: u128, b: u128, ieee: bool) -> (u128, u64, bool) {
    let (sa, ea, ma) = f80::normalize(a).unwrap_or((false, 0, f80::INT));
    let (_, eb, mb) = f80::normalize(b).unwrap_or((false, 0, f80::INT));
    let d = ea - eb;
    if d >= 64 {
        let n = 32 + (d & 31);
        let num = u128::from(ma) << n;
        let q = num / u128::from(mb);
        let r = num % u128::from(mb);
        return (build(sa, ea - n, r), q as u64, false);
    }
    if d < -1 || (d == -1 && !ieee) {
        return (a, 0, true);
    }
    // Units of the remainder: 2^(unit - 63).
    let (num, den, unit) = if d >= 0 {
        (u128::from(ma) << d, u128::from(mb), eb)
    } else {
        (u128::from(ma), u128::from(mb) << 1, ea)
    };
    let mut q = num / den;
    let mut r = num % den;
    let mut neg = sa;
    if ieee && (2 * r > den || (2 * r == den && q & 1 != 0)) {
        q += 1;
        r = den - r;
        neg = !neg;
    }
    let v = if r == 0 {
        f80::zero(sa)
    } else {
        build(neg, unit, r)
    };
    (v, q as u64, true)
}

/// `r * 2^(unit - 63)` (exact: `r` < 2^65 and a multiple of the smallest denormal).
fn build(s: bool, unit: i32, r: u128) -> u128 {
    if r == 0 {
        return f80::zero(s);
    }
    let bits = 128 - r.leading_zeros() as i32;
    // Normalise so the top bit is bit 63.
    let shift = bits - 64;
    let (m, e) = if shift >= 0 {
        ((r >> shift) as u64, unit + shift)
    } else {
        ((r << -shift) as u64, unit + shift)
    };
    let biased = e + f80::BIAS;
    if biased >= 1 {
        return f80::make(s, biased.min(0x7ffe) as u32, m);
    }
    let sh = 1 - biased;
    let m = if sh >= 64 { 0 } else { m >> sh };
    f80::make(s, 0, m)
}
