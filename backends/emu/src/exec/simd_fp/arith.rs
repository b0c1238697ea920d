//! ADD, SUB, MUL, DIV, SQRT, MIN, MAX (PS/SS/PD/SD) and the approximations RCPPS/RCPSS
//! and RSQRTPS/RSQRTSS. Scalar forms keep the destination's upper lanes.

use super::{fmt, lane, set_lane, src, xmm_of, Acc, Kind};
use crate::arith::softfloat::{self as sf, Class, Env, NanRule, Ordering, Round, F32, F64};
use crate::cpu::Cpu;
use crate::decode::{Handler, Op};
use crate::exception::Ex;
use iced_x86::Code;
use opsvisor_core::mmu::memory::GuestMemory;

const ADD: u8 = 0;
const SUB: u8 = 1;
const MUL: u8 = 2;
const DIV: u8 = 3;
const SQRT: u8 = 4;
const MIN: u8 = 5;
const MAX: u8 = 6;
const RCP: u8 = 7;
const RSQRT: u8 = 8;

/// The handler for `code`, if it is one of this family's.
pub fn select(code: Code) -> Option<Handler> {
    use Code as C;
    Some(match code {
        C::Addps_xmm_xmmm128 => op::<ADD, 4, true>,
        C::Addss_xmm_xmmm32 => op::<ADD, 4, false>,
        C::Addpd_xmm_xmmm128 => op::<ADD, 8, true>,
        C::Addsd_xmm_xmmm64 => op::<ADD, 8, false>,
        C::Subps_xmm_xmmm128 => op::<SUB, 4, true>,
        C::Subss_xmm_xmmm32 => op::<SUB, 4, false>,
        C::Subpd_xmm_xmmm128 => op::<SUB, 8, true>,
        C::Subsd_xmm_xmmm64 => op::<SUB, 8, false>,
        C::Mulps_xmm_xmmm128 => op::<MUL, 4, true>,
        C::Mulss_xmm_xmmm32 => op::<MUL, 4, false>,
        C::Mulpd_xmm_xmmm128 => op::<MUL, 8, true>,
        C::Mulsd_xmm_xmmm64 => op::<MUL, 8, false>,
        C::Divps_xmm_xmmm128 => op::<DIV, 4, true>,
        C::Divss_xmm_xmmm32 => op::<DIV, 4, false>,
        C::Divpd_xmm_xmmm128 => op::<DIV, 8, true>,
        C::Divsd_xmm_xmmm64 => op::<DIV, 8, false>,
        C::Sqrtps_xmm_xmmm128 => op::<SQRT, 4, true>,
        C::Sqrtss_xmm_xmmm32 => op::<SQRT, 4, false>,
        C::Sqrtpd_xmm_xmmm128 => op::<SQRT, 8, true>,
        C::Sqrtsd_xmm_xmmm64 => op::<SQRT, 8, false>,
        C::Minps_xmm_xmmm128 => op::<MIN, 4, true>,
        C::Minss_xmm_xmmm32 => op::<MIN, 4, false>,
        C::Minpd_xmm_xmmm128 => op::<MIN, 8, true>,
        C::Minsd_xmm_xmmm64 => op::<MIN, 8, false>,
        C::Maxps_xmm_xmmm128 => op::<MAX, 4, true>,
        C::Maxss_xmm_xmmm32 => op::<MAX, 4, false>,
        C::Maxpd_xmm_xmmm128 => op::<MAX, 8, true>,
        C::Maxsd_xmm_xmmm64 => op::<MAX, 8, false>,
        C::Rcpps_xmm_xmmm128 => op::<RCP, 4, true>,
        C::Rcpss_xmm_xmmm32 => op::<RCP, 4, false>,
        C::Rsqrtps_xmm_xmmm128 => op::<RSQRT, 4, true>,
        C::Rsqrtss_xmm_xmmm32 => op::<RSQRT, 4, false>,
        _ => return None,
    })
}

/// MIN/MAX: the first operand when it compares less (greater), else the second, which
/// is what a NaN operand or two zeros of any sign give. Any NaN is invalid.
fn min_max(acc: &mut Acc, w: u8, x: u128, y: u128, max: bool) -> u128 {
    let f = fmt(w);
    let mut e = acc.env(f);
    let o = sf::compare(f, x, y, true, &mut e);
    acc.record(e.flags);
    let first = if max {
        o == Ordering::Greater
    } else {
        o == Ordering::Less
    };
    let pick = if first { x } else { y };
    // Under DAZ a denormal operand is read as a zero of its sign.
    if e.daz && sf::classify(f, pick) == Class::Subnormal {
        sf::zero(f, pick >> (f.exp_bits + f.frac_bits) != 0)
    } else {
        pick
    }
}

/// An exact-rounding environment for the approximations, which raise no flags.
fn quiet_env() -> Env {
    Env {
        round: Round::Nearest,
        precision: 53,
        ftz: false,
        daz: false,
        nan: NanRule::Sse,
        flags: 0,
    }
}

/// RCPPS on one lane: denormal inputs count as zeros, results below the normal range
/// are flushed to zero (SDM RCPPS); within range the correctly rounded reciprocal,
/// well inside the architectural relative error of 1.5 * 2^-12.
pub fn rcp(x: u128) -> u128 {
    let sign = x >> 31 != 0;
    match sf::classify(F32, x) {
        Class::QuietNan | Class::SignalingNan => sf::quiet(F32, x),
        Class::Zero | Class::Subnormal => sf::infinity(F32, sign),
        Class::Infinite => sf::zero(F32, sign),
        _ => {
            let r = sf::div(F32, 0x3f80_0000, x, &mut quiet_env());
            match sf::classify(F32, r) {
                Class::Normal | Class::Infinite => r,
                _ => sf::zero(F32, sign),
            }
        }
    }
}

/// RSQRTPS on one lane (see [`rcp`]): negative operands give the default NaN.
pub fn rsqrt(x: u128) -> u128 {
    let sign = x >> 31 != 0;
    match sf::classify(F32, x) {
        Class::QuietNan | Class::SignalingNan => sf::quiet(F32, x),
        Class::Zero | Class::Subnormal => sf::infinity(F32, sign),
        _ if sign => sf::default_nan(F32),
        Class::Infinite => 0,
        _ => {
            let mut e = quiet_env();
            let d = sf::convert(F32, F64, x, &mut e);
            let s = sf::sqrt(F64, d, &mut e);
            let q = sf::div(F64, 0x3ff0_0000_0000_0000, s, &mut e);
            sf::convert(F64, F32, q, &mut e)
        }
    }
}

fn op<const OP: u8, const W: u8, const PACKED: bool>(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    op: &Op,
) -> Result<(), Ex> {
    c.sse_check()?;
    let d = xmm_of(op, 0);
    let b = src(c, mem, op, 1)?;
    let a = c.fpu.xmm[d];
    let f = fmt(W);
    let bits = u32::from(W) * 8;
    let lanes = if PACKED { 16 / u32::from(W) } else { 1 };
    let mut acc = Acc::new(c);
    let mut out = a;
    for i in 0..lanes {
        let (x, y) = (lane(a, bits, i), lane(b, bits, i));
        let r = match OP {
            ADD => acc.op(f, Kind::Add, x, y),
            SUB => acc.op(f, Kind::Sub, x, y),
            MUL => acc.op(f, Kind::Mul, x, y),
            DIV => acc.op(f, Kind::Div, x, y),
            SQRT => acc.op(f, Kind::Sqrt, x, y),
            MIN => min_max(&mut acc, W, x, y, false),
            MAX => min_max(&mut acc, W, x, y, true),
            RCP => rcp(y),
            _ => rsqrt(y),
        };
        out = set_lane(out, bits, i, r);
    }
    acc.finish(c)?;
    c.fpu.xmm[d] = out;
    Ok(())
}
