//! Transcendental instructions: FSIN, FCOS, FSINCOS, FPTAN, FPATAN, F2XM1, FYL2X and
//! FYL2XP1.
//!
//! Argument rules as on hardware: FSIN/FCOS/FSINCOS/FPTAN leave ST(0) unchanged and set
//! C2 when |ST(0)| >= 2^63; F2XM1 leaves an argument outside [-1, 1] unchanged (PE
//! only, as the host does); infinities, unsupported encodings and (for the logarithms)
//! negative arguments are invalid; NaNs propagate; the special cases of each function's
//! table in the SDM (zeros, infinities) give exact results.
//!
//! Finite results are computed in binary64 arithmetic on the 80-bit operands split into
//! significand and exponent (so the full exponent range is kept) and rebuilt with the
//! exponent afterwards: they are within a few binary64 ulps (about 2^-52 relative) of
//! the exact value, not to the last bit of the 64-bit significand; PE is always
//! reported for them, UE/OE when the rebuilt result is tiny or overflows. The
//! trigonometric argument reduction is exact against the 66-bit approximation of pi
//! the x87 uses (so results for large arguments follow the hardware, not the exact
//! value of pi).

use super::f80::{self, Kind, INDEFINITE};
use super::{env, is_empty, masked, overflow, pop, push, set_st, signal, st, start, underflow};
use crate::arith::softfloat::{self, exc, F80};
use crate::cpu::Cpu;
use crate::decode::{Handler, Op};
use crate::exception::Ex;
use crate::fpu::{fsw, X87};
use core::f64::consts::LN_2;
use iced_x86::Code;
use opsvisor_core::mmu::memory::GuestMemory;

/// The handler for `code` if it is a transcendental instruction.
pub fn select(code: Code) -> Option<Handler> {
    Some(match code {
        Code::Fsin => trig::<0>,
        Code::Fcos => trig::<1>,
        Code::Fptan => trig::<2>,
        Code::Fsincos => trig::<3>,
        Code::F2xm1 => f2xm1,
        Code::Fpatan => binary::<0>,
        Code::Fyl2x => binary::<1>,
        Code::Fyl2xp1 => binary::<2>,
        _ => return None,
    })
}

/// pi * 2^64 rounded to an integer: the 66-bit pi the x87 reduces trigonometric
/// arguments with (pi/2 = `PI66` * 2^-65).
const PI66: u128 = 0x3_243f_6a88_85a3_08d3;
/// pi, pi/2, pi/4 and 3pi/4 rounded to nearest in double extended.
const PI: u128 = 0x4000_c90f_daa2_2168_c235;
const PI_2: u128 = 0x3fff_c90f_daa2_2168_c235;
const PI_4: u128 = 0x3ffe_c90f_daa2_2168_c235;
const PI3_4: u128 = 0x4000_96cb_e3f9_990e_91a8;
/// ln 2 rounded to nearest in double extended.
const LN2_80: u128 = 0x3ffe_b172_17f7_d1cf_79ac;

/// 2^`e` as a binary64 (`e` in the normal range).
fn pow2(e: i32) -> f64 {
    f64::from_bits(((e.clamp(-1022, 1023) + 1023) as u64) << 52)
}

/// A 64-bit significand (integer bit set) as a binary64 in [1, 2], rounded to nearest.
fn sig(m: u64) -> f64 {
    m as f64 * pow2(-63)
}

/// The sign, exponent and significand of a finite nonzero value.
fn split(v: u128) -> (bool, i32, u64) {
    f80::normalize(v).unwrap_or((false, 0, f80::INT))
}

/// `(-1)^neg * f * 2^e` (`f` a finite binary64) in double extended; the flags are PE
/// and, out of the normal range, UE or OE (see [`rebuild`]).
fn compose(x: &X87, neg: bool, f: f64, e: i32) -> (u128, u32) {
    let neg = neg ^ f.is_sign_negative();
    let f = f.abs();
    if f == 0.0 || !f.is_finite() {
        return (f80::zero(neg), exc::PE);
    }
    let bits = f.to_bits();
    let (fe, fm) = if bits >> 52 == 0 {
        // A binary64 denormal: normalise it.
        let lz = (bits << 12).leading_zeros() as i32;
        (-1023 - lz, (bits << 12) << lz)
    } else {
        (
            ((bits >> 52) & 0x7ff) as i32 - 1023,
            ((bits & ((1 << 52) - 1)) | (1 << 52)) << 11,
        )
    };
    rebuild(x, neg, fe.saturating_add(e), fm)
}

/// The approximate result `(-1)^neg * m * 2^(exp - 63)` (`m` with its integer bit set)
/// in double extended, with PE (it is an approximation). Below the normal range it is
/// tiny (UE): with UE masked it is rounded to a denormal or zero, unmasked its exponent
/// is raised by 24576 (the bias-adjusted result, as for arithmetic); above the range
/// likewise with OE (infinity or the largest value, or the exponent lowered by 24576).
fn rebuild(x: &X87, neg: bool, exp: i32, m: u64) -> (u128, u32) {
    const ADJUST: i32 = 24576;
    if let Some(v) = f80::from_normal(neg, exp, m) {
        return (v, exc::PE);
    }
    let over = exp > 0;
    let flag = if over { exc::OE } else { exc::UE };
    if !masked(x, flag) {
        let adj = if over { exp - ADJUST } else { exp + ADJUST };
        if let Some(v) = f80::from_normal(neg, adj, m) {
            return (v, exc::PE | flag);
        }
    }
    // A multiplication by a power of two rounds it.
    let (pe, qe) = if over {
        (
            0x7ffe - f80::BIAS,
            (exp - (0x7ffe - f80::BIAS)).min(0x7ffe - f80::BIAS),
        )
    } else {
        ((exp + 16382).max(1 - f80::BIAS), 1 - f80::BIAS)
    };
    let p = f80::from_normal(neg, pe, m).unwrap_or(f80::zero(neg));
    let q = f80::from_normal(false, qe, f80::INT).unwrap_or(f80::ONE);
    let mut en = env(x, false);
    let r = softfloat::mul(F80, p, q, &mut en);
    (
        r,
        exc::PE | flag | (en.flags & (exc::UE | exc::OE | exc::PE)),
    )
}

/// `v` (finite, nonzero) as an approximate result: exact when normal; a denormal is
/// tiny (see [`rebuild`]).
fn approx_of(x: &X87, v: u128, flags: &mut u32) -> u128 {
    let (neg, e, m) = split(v);
    let (r, fl) = rebuild(x, neg, e, m);
    *flags |= fl;
    r
}

/// A NaN operand's result (quieted; IE for a signaling NaN).
fn quiet(x: &X87, a: u128, b: u128, flags: &mut u32) -> u128 {
    let mut e = env(x, false);
    let r = softfloat::add(F80, a, b, &mut e);
    *flags |= e.flags & exc::IE;
    r
}

/// A computed result: `compose`, its flags added to `flags`.
fn result(x: &X87, neg: bool, f: f64, e: i32, flags: &mut u32) -> u128 {
    let (r, fl) = compose(x, neg, f, e);
    *flags |= fl;
    r
}

/// A constant result (pi and its fractions): inexact.
fn inexact(v: u128, neg: bool, flags: &mut u32) -> u128 {
    *flags |= exc::PE;
    if neg {
        f80::neg(v)
    } else {
        v
    }
}

/// sin and cos of |v| (finite, nonzero, below 2^63), with |v| reduced exactly by
/// multiples of pi/2 taken as `PI66` * 2^-65.
fn sin_cos(v: u128) -> (f64, f64) {
    let (_, e, m) = split(v);
    let (r, q) = if e < -2 {
        // |v| < 1/2 < pi/4: no reduction.
        (sig(m) * pow2(e), 0)
    } else {
        // |v| = m * 2^(e - 63) = (m << (e + 2)) * 2^-65, below 2^128 since e <= 62.
        let big = u128::from(m) << (e + 2);
        let mut k = big / PI66;
        let rem = big % PI66;
        let r = if rem > PI66 / 2 {
            k += 1;
            -((PI66 - rem) as f64)
        } else {
            rem as f64
        };
        (r * pow2(-65), (k & 3) as u8)
    };
    let (s, c) = (m::sin_poly(r), m::cos_poly(r));
    match q {
        0 => (s, c),
        1 => (c, -s),
        2 => (-s, -c),
        _ => (-c, s),
    }
}

fn trig<const K: u8>(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    start(c, op)?;
    let x = &mut c.fpu.x87;
    x.fsw &= !(fsw::C1 | fsw::C2);
    let pushes = K >= 2;
    if is_empty(x, 0) {
        if underflow(x) {
            set_st(x, 0, INDEFINITE);
            if pushes && is_empty(x, 7) {
                push(x, INDEFINITE);
            }
        }
        return Ok(());
    }
    if pushes && !is_empty(x, 7) {
        if overflow(x) {
            set_st(x, 0, INDEFINITE);
            push(x, INDEFINITE);
        }
        return Ok(());
    }
    let v = st(x, 0);
    let mut flags = 0u32;
    let (r0, r1) = match f80::kind(v) {
        Kind::Unsupported | Kind::Infinity => {
            flags |= exc::IE;
            (INDEFINITE, INDEFINITE)
        }
        Kind::Nan => {
            let q = quiet(x, v, v, &mut flags);
            (q, q)
        }
        Kind::Zero => match K {
            1 => (f80::ONE, f80::ONE),
            2 => (v, f80::ONE),
            3 => (v, f80::ONE),
            _ => (v, v),
        },
        Kind::Normal | Kind::Denormal => {
            if f80::kind(v) == Kind::Denormal {
                flags |= exc::DE;
            }
            let (neg, e, _) = split(v);
            if e >= 63 {
                x.fsw |= fsw::C2;
                signal(x, flags);
                return Ok(());
            }
            if e < -32 {
                // sin v = tan v = v and cos v = 1 to far beyond 64 bits; inexact, and
                // tiny when v is a denormal.
                flags |= exc::PE;
                match K {
                    1 => (f80::ONE, 0),
                    2 => (approx_of(x, v, &mut flags), f80::ONE),
                    3 => (approx_of(x, v, &mut flags), f80::ONE),
                    _ => (approx_of(x, v, &mut flags), 0),
                }
            } else {
                let (s, co) = sin_cos(v);
                match K {
                    0 => (result(x, neg, s, 0, &mut flags), 0),
                    1 => (result(x, false, co, 0, &mut flags), 0),
                    2 => (result(x, neg, s / co, 0, &mut flags), f80::ONE),
                    _ => (
                        result(x, neg, s, 0, &mut flags),
                        result(x, false, co, 0, &mut flags),
                    ),
                }
            }
        }
    };
    if signal(x, flags) {
        return Ok(());
    }
    set_st(x, 0, r0);
    if pushes {
        push(x, r1);
    }
    Ok(())
}

fn f2xm1(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    start(c, op)?;
    let x = &mut c.fpu.x87;
    x.fsw &= !fsw::C1;
    if is_empty(x, 0) {
        if underflow(x) {
            set_st(x, 0, INDEFINITE);
        }
        return Ok(());
    }
    let v = st(x, 0);
    let mut flags = 0u32;
    let r = match f80::kind(v) {
        Kind::Unsupported => {
            flags |= exc::IE;
            INDEFINITE
        }
        Kind::Nan => quiet(x, v, v, &mut flags),
        Kind::Zero => v,
        Kind::Infinity => {
            if v & f80::SIGN != 0 {
                f80::neg(f80::ONE)
            } else {
                v
            }
        }
        _ => {
            if f80::kind(v) == Kind::Denormal {
                flags |= exc::DE;
            }
            let (neg, e, m) = split(v);
            if e > 0 || (e == 0 && m != f80::INT) {
                // Outside [-1, 1] the host leaves the argument and reports PE.
                flags |= exc::PE;
                v
            } else if e == 0 {
                // 2^1 - 1 and 2^-1 - 1, exact (PE all the same, as on the host).
                flags |= exc::PE;
                if neg {
                    f80::make(true, (f80::BIAS - 1) as u32, f80::INT)
                } else {
                    f80::ONE
                }
            } else if e < -60 {
                // 2^v - 1 = v ln 2 (1 + v ln 2 / 2 + ...): the product of the
                // significands rounded to 64 bits, then scaled (it may be tiny).
                let mut en = env(x, false);
                let q = softfloat::mul(F80, f80::make(neg, f80::BIAS as u32, m), LN2_80, &mut en);
                let (qn, qe, qm) = split(q);
                let (r, fl) = rebuild(x, qn, qe + e, qm);
                flags |= fl;
                r
            } else {
                let a = sig(m) * pow2(e);
                let a = if neg { -a } else { a };
                result(x, false, m::expm1(a * LN_2), 0, &mut flags)
            }
        }
    };
    if signal(x, flags) {
        return Ok(());
    }
    set_st(x, 0, r);
    Ok(())
}

/// log2 of a finite positive value as (integer part, fraction) binary64s whose sum is
/// the logarithm: the significand's logarithm is taken from its exact distance to 1
/// (or 2), so values near 1 keep their relative accuracy.
fn log2_parts(v: u128) -> (f64, f64) {
    let (_, e, m) = split(v);
    // m / 2^63 in [1, 2): use m / 2^64 in [1/2, 1) above sqrt(2) so |fraction| <= 1/2.
    let (e, eps) = if m > 0xb504_f333_f9de_6484 {
        (e + 1, -(((1u128 << 64) - u128::from(m)) as f64) * pow2(-64))
    } else {
        (e, (m - f80::INT) as f64 * pow2(-63))
    };
    (f64::from(e), m::log1p(eps) / LN_2)
}

fn binary<const K: u8>(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    start(c, op)?;
    let x = &mut c.fpu.x87;
    x.fsw &= !fsw::C1;
    if is_empty(x, 0) || is_empty(x, 1) {
        if underflow(x) {
            set_st(x, 1, INDEFINITE);
            pop(x);
        }
        return Ok(());
    }
    let (a, b) = (st(x, 0), st(x, 1));
    let (ka, kb) = (f80::kind(a), f80::kind(b));
    let mut flags = 0u32;
    if ka == Kind::Denormal || kb == Kind::Denormal {
        flags |= exc::DE;
    }
    let r = if ka == Kind::Unsupported || kb == Kind::Unsupported {
        flags |= exc::IE;
        INDEFINITE
    } else if ka == Kind::Nan || kb == Kind::Nan {
        flags &= !exc::DE;
        quiet(x, a, b, &mut flags)
    } else {
        match K {
            0 => fpatan(x, b, a, &mut flags),
            1 => fyl2x(x, a, b, &mut flags),
            _ => fyl2xp1(x, a, b, &mut flags),
        }
    };
    if signal(x, flags) {
        return Ok(());
    }
    set_st(x, 1, r);
    pop(x);
    Ok(())
}

fn finite(k: Kind) -> bool {
    matches!(k, Kind::Normal | Kind::Denormal)
}

/// atan2(`y`, `x`) (no NaNs or unsupported encodings).
fn fpatan(x87: &X87, y: u128, x: u128, flags: &mut u32) -> u128 {
    let (ky, kx) = (f80::kind(y), f80::kind(x));
    let yn = y & f80::SIGN != 0;
    let xn = x & f80::SIGN != 0;
    match (ky, kx) {
        (Kind::Zero, _) => {
            if xn {
                inexact(PI, yn, flags)
            } else {
                f80::zero(yn)
            }
        }
        (Kind::Infinity, Kind::Infinity) => inexact(if xn { PI3_4 } else { PI_4 }, yn, flags),
        (Kind::Infinity, _) | (_, Kind::Zero) => inexact(PI_2, yn, flags),
        (_, Kind::Infinity) => {
            if xn {
                inexact(PI, yn, flags)
            } else {
                f80::zero(yn)
            }
        }
        _ => {
            let (_, ey, my) = split(y);
            let (_, ex, mx) = split(x);
            let d = ey - ex;
            if d > 70 {
                inexact(PI_2, yn, flags)
            } else if d < -70 {
                if xn {
                    inexact(PI, yn, flags)
                } else {
                    // atan(t) = t for a tiny t: the quotient (of the significands,
                    // rounded to 64 bits, then scaled), which may be tiny.
                    let mut en = env(x87, false);
                    let q = softfloat::div(
                        F80,
                        f80::make(yn, f80::BIAS as u32, my),
                        f80::make(false, f80::BIAS as u32, mx),
                        &mut en,
                    );
                    let (qn, qe, qm) = split(q);
                    let (r, fl) = rebuild(x87, qn, qe + d, qm);
                    *flags |= fl;
                    r
                }
            } else {
                let fy = sig(my) * pow2(d);
                let fx = sig(mx);
                let r = m::atan2(if yn { -fy } else { fy }, if xn { -fx } else { fx });
                result(x87, false, r, 0, flags)
            }
        }
    }
}

/// `y` * log2(`x`) (no NaNs or unsupported encodings).
fn fyl2x(x87: &X87, x: u128, y: u128, flags: &mut u32) -> u128 {
    let (kx, ky) = (f80::kind(x), f80::kind(y));
    let yn = y & f80::SIGN != 0;
    if x & f80::SIGN != 0 && kx != Kind::Zero {
        *flags |= exc::IE;
        return INDEFINITE;
    }
    match (kx, ky) {
        (Kind::Zero, Kind::Zero) | (Kind::Infinity, Kind::Zero) => {
            *flags |= exc::IE;
            INDEFINITE
        }
        (Kind::Zero, _) => {
            // The zero divide takes the place of a denormal y's DE (as on the host).
            if finite(ky) {
                *flags = (*flags & !exc::DE) | exc::ZE;
            }
            f80::inf(!yn)
        }
        (Kind::Infinity, _) => f80::inf(yn),
        _ => {
            let (ip, fp) = log2_parts(x);
            let l = ip + fp;
            match ky {
                _ if l == 0.0 => {
                    if ky == Kind::Infinity {
                        *flags |= exc::IE;
                        INDEFINITE
                    } else {
                        f80::zero(yn)
                    }
                }
                Kind::Zero => f80::zero(yn ^ (l < 0.0)),
                Kind::Infinity => f80::inf(yn ^ (l < 0.0)),
                _ => {
                    let (_, ey, my) = split(y);
                    result(x87, yn, sig(my) * l, ey, flags)
                }
            }
        }
    }
}

/// `y` * log2(1 + `x`) (no NaNs or unsupported encodings).
fn fyl2xp1(x87: &X87, x: u128, y: u128, flags: &mut u32) -> u128 {
    let (kx, ky) = (f80::kind(x), f80::kind(y));
    let yn = y & f80::SIGN != 0;
    let xn = x & f80::SIGN != 0;
    match (kx, ky) {
        (Kind::Zero, Kind::Infinity) | (Kind::Infinity, Kind::Zero) => {
            *flags |= exc::IE;
            INDEFINITE
        }
        (Kind::Zero, _) => f80::zero(yn ^ xn),
        // -inf is invalid (unlike the finite x <= -1 below).
        (Kind::Infinity, _) if xn => {
            *flags |= exc::IE;
            INDEFINITE
        }
        (Kind::Infinity, _) => f80::inf(yn),
        _ => {
            let (_, ex, mx) = split(x);
            // A zero or infinite y gives the signed zero or infinity also for x <= -1.
            match ky {
                Kind::Zero => return f80::zero(yn ^ xn),
                Kind::Infinity => return f80::inf(yn ^ xn),
                _ => {}
            }
            if xn && ex >= 0 {
                // x <= -1, outside the domain: the host returns x, with PE only.
                *flags |= exc::PE;
                return x;
            }
            match ky {
                Kind::Zero => f80::zero(yn ^ xn),
                Kind::Infinity => f80::inf(yn ^ xn),
                _ => {
                    let (_, ey, my) = split(y);
                    if ex < -60 {
                        // log2(1 + x) = x / ln 2 to far beyond 64 bits.
                        result(x87, yn ^ xn, sig(my) * sig(mx) / LN_2, ey + ex, flags)
                    } else if ex >= 60 {
                        let (ip, fp) = log2_parts(x);
                        result(x87, yn, sig(my) * (ip + fp), ey, flags)
                    } else {
                        let fx = sig(mx) * pow2(ex);
                        let l = m::log1p(if xn { -fx } else { fx }) / LN_2;
                        result(x87, yn, sig(my) * l, ey, flags)
                    }
                }
            }
        }
    }
}

/// Elementary functions on binary64 for the no_std build: argument reduction and
/// series, accurate to a few binary64 ulps on the ranges the instructions use.
mod m {
    use core::f64::consts::{FRAC_PI_2, FRAC_PI_4, LN_2};

    /// sin(r) for |r| <= pi/4 (Taylor series).
    pub fn sin_poly(r: f64) -> f64 {
        let r2 = r * r;
        let mut term = r;
        let mut sum = r;
        let mut n = 1.0;
        for _ in 0..12 {
            term = -term * r2 / ((n + 1.0) * (n + 2.0));
            n += 2.0;
            sum += term;
        }
        sum
    }

    /// cos(r) for |r| <= pi/4 (Taylor series).
    pub fn cos_poly(r: f64) -> f64 {
        let r2 = r * r;
        let mut term = 1.0;
        let mut sum = 1.0;
        let mut n = 0.0;
        for _ in 0..12 {
            term = -term * r2 / ((n + 1.0) * (n + 2.0));
            n += 2.0;
            sum += term;
        }
        sum
    }

    /// e^y - 1 for |y| <= 1 (series; no cancellation).
    pub fn expm1(y: f64) -> f64 {
        let mut term = y;
        let mut sum = y;
        let mut n = 1.0;
        for _ in 0..25 {
            n += 1.0;
            term = term * y / n;
            sum += term;
        }
        sum
    }

    /// atanh(z) for |z| < 0.2 (series).
    fn atanh_small(z: f64) -> f64 {
        let z2 = z * z;
        let mut p = z;
        let mut sum = z;
        let mut n = 1.0;
        for _ in 0..30 {
            p *= z2;
            n += 2.0;
            sum += p / n;
        }
        sum
    }

    /// log2(a) for finite a > 0 (0 gives -inf).
    pub fn log2(a: f64) -> f64 {
        if a == 0.0 {
            return f64::NEG_INFINITY;
        }
        if a.is_infinite() {
            return a;
        }
        let mut bits = a.to_bits();
        let mut e = ((bits >> 52) & 0x7ff) as i64;
        if e == 0 {
            // Denormal: scale up by 2^64 first.
            bits = (a * 18_446_744_073_709_551_616.0).to_bits();
            e = ((bits >> 52) & 0x7ff) as i64 - 64;
        }
        let mut m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
        let mut ex = (e - 1023) as f64;
        if m > core::f64::consts::SQRT_2 {
            m *= 0.5;
            ex += 1.0;
        }
        ex + 2.0 * atanh_small((m - 1.0) / (m + 1.0)) / LN_2
    }

    /// ln(1 + x) for |x| < 1.
    pub fn log1p(x: f64) -> f64 {
        let z = x / (2.0 + x);
        if z.abs() < 0.2 {
            2.0 * atanh_small(z)
        } else {
            log2(1.0 + x) * LN_2
        }
    }

    /// atan(t) for |t| <= 1.
    fn atan_unit(t: f64) -> f64 {
        const TAN_PI_8: f64 = 0.414_213_562_373_095_1;
        if t > TAN_PI_8 {
            return FRAC_PI_4 + atan_unit((t - 1.0) / (t + 1.0));
        }
        if t < -TAN_PI_8 {
            return -FRAC_PI_4 + atan_unit((t + 1.0) / (1.0 - t));
        }
        let t2 = t * t;
        let mut p = t;
        let mut sum = t;
        let mut n = 1.0;
        for _ in 0..40 {
            p *= -t2;
            n += 2.0;
            sum += p / n;
        }
        sum
    }

    /// atan2(y, x) with the IEEE special cases.
    pub fn atan2(y: f64, x: f64) -> f64 {
        let pi = core::f64::consts::PI;
        let ys = y.is_sign_negative();
        let sgn = |v: f64| if ys { -v } else { v };
        if y == 0.0 {
            return if x.is_sign_negative() { sgn(pi) } else { y };
        }
        if x == 0.0 {
            return sgn(FRAC_PI_2);
        }
        if x.is_infinite() && y.is_infinite() {
            return sgn(if x > 0.0 { FRAC_PI_4 } else { 3.0 * FRAC_PI_4 });
        }
        if x.is_infinite() {
            return if x > 0.0 { sgn(0.0) } else { sgn(pi) };
        }
        if y.is_infinite() {
            return sgn(FRAC_PI_2);
        }
        let (ay, ax) = (y.abs(), x.abs());
        let base = if ay <= ax {
            atan_unit(ay / ax)
        } else {
            FRAC_PI_2 - atan_unit(ax / ay)
        };
        let v = if x < 0.0 { pi - base } else { base };
        sgn(v)
    }
}
