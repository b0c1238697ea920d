//! IEEE 754 binary floating point in software, with the x86 choices the standard leaves
//! open: which NaN an operation returns, the default NaN, tininess detected after
//! rounding, the denormal-operand flag, flush-to-zero and denormals-are-zero, and the x87
//! precision control (results rounded to 24 or 53 significand bits but kept in the
//! 15-bit exponent range).
//!
//! Values travel as raw bit patterns in the low bits of a `u128` together with their
//! [`Format`]; the SSE (`F32`, `F64`) and x87 (`F80`) instructions share one
//! implementation. Exception flags accumulate in [`Env::flags`] in the bit positions
//! MXCSR and the x87 status word share; the callers decide, from the masks, whether a
//! raised flag becomes #XM/#MF and whether the result is written.
//!
//! CONTRACT (written by the lead before the implementation, so the SSE and x87 helpers
//! can code against it; the bodies are being filled in).

/// Exception flags (MXCSR bits 0-5, x87 status word bits 0-5).
pub mod exc {
    /// Invalid operation.
    pub const IE: u32 = 1;
    /// Denormal operand.
    pub const DE: u32 = 2;
    /// Divide by zero.
    pub const ZE: u32 = 4;
    /// Overflow.
    pub const OE: u32 = 8;
    /// Underflow.
    pub const UE: u32 = 0x10;
    /// Precision (inexact result).
    pub const PE: u32 = 0x20;
}

/// Rounding mode, in the RC encoding of MXCSR and the x87 control word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Round {
    /// To nearest, ties to even (RC = 0).
    Nearest,
    /// Towards negative infinity (RC = 1).
    Down,
    /// Towards positive infinity (RC = 2).
    Up,
    /// Towards zero (RC = 3).
    Zero,
}

impl Round {
    /// The mode for a two-bit RC field.
    pub fn from_rc(rc: u32) -> Round {
        match rc & 3 {
            0 => Round::Nearest,
            1 => Round::Down,
            2 => Round::Up,
            _ => Round::Zero,
        }
    }
}

/// A binary floating-point format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Format {
    /// Exponent field width.
    pub exp_bits: u32,
    /// Stored fraction bits (not counting an implicit integer bit).
    pub frac_bits: u32,
    /// Whether the integer bit is stored (x87 double extended).
    pub explicit_int: bool,
}

/// IEEE single precision.
pub const F32: Format = Format {
    exp_bits: 8,
    frac_bits: 23,
    explicit_int: false,
};
/// IEEE double precision.
pub const F64: Format = Format {
    exp_bits: 11,
    frac_bits: 52,
    explicit_int: false,
};
/// x87 double extended (64-bit significand with explicit integer bit).
pub const F80: Format = Format {
    exp_bits: 15,
    frac_bits: 63,
    explicit_int: true,
};

/// Which NaN an operation with NaN operands returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NanRule {
    /// SSE: the first source operand's NaN if it is one, else the second's, quieted.
    Sse,
    /// x87: of two NaNs the one with the larger significand (the first on a tie), quieted.
    /// (As measured on hardware: a QNaN wins over an SNaN, and a tie goes to the
    /// positive NaN.)
    X87,
}

/// The environment of an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Env {
    /// Rounding mode.
    pub round: Round,
    /// Significand bits results are rounded to: 24, 53 or 64 for the x87 precision
    /// control; the format's own precision for SSE.
    pub precision: u32,
    /// Flush tiny results to zero (MXCSR.FTZ when UE is masked): the result becomes a
    /// signed zero and UE and PE are raised.
    pub ftz: bool,
    /// Treat denormal operands as zero, without DE (MXCSR.DAZ).
    pub daz: bool,
    /// NaN propagation rule.
    pub nan: NanRule,
    /// Exception flags raised so far ([`exc`] bits).
    pub flags: u32,
}

impl Env {
    /// The environment MXCSR describes for a `fmt` operation (FTZ applies only while UE
    /// is masked, as on hardware).
    pub fn sse(mxcsr: u32, fmt: Format) -> Env {
        Env {
            round: Round::from_rc(mxcsr >> 13),
            precision: fmt.frac_bits + 1,
            ftz: mxcsr & (1 << 15) != 0 && mxcsr & (1 << 11) != 0,
            daz: mxcsr & (1 << 6) != 0,
            nan: NanRule::Sse,
            flags: 0,
        }
    }

    /// The environment the x87 control word describes.
    pub fn x87(fcw: u16) -> Env {
        Env {
            round: Round::from_rc(u32::from(fcw >> 10)),
            precision: match (fcw >> 8) & 3 {
                0 => 24,
                2 => 53,
                _ => 64,
            },
            ftz: false,
            daz: false,
            nan: NanRule::X87,
            flags: 0,
        }
    }
}

/// The result of a comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ordering {
    /// a < b.
    Less,
    /// a == b.
    Equal,
    /// a > b.
    Greater,
    /// One operand is a NaN.
    Unordered,
}

/// The class of a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// +0 or -0.
    Zero,
    /// Denormal (for F80 also pseudo-denormals).
    Subnormal,
    /// Normal.
    Normal,
    /// Infinity.
    Infinite,
    /// Quiet NaN.
    QuietNan,
    /// Signaling NaN.
    SignalingNan,
    /// F80 encodings the x87 no longer supports (unnormals, pseudo-NaNs, pseudo-infinities):
    /// invalid operands.
    Unsupported,
}

// ---------------------------------------------------------------------------------------
// Implementation.
//
// A finite value is handled unpacked as `(-1)^sign * sig * 2^exp` with `sig` an integer in
// a u128. Operations compute an exact (or exact-plus-sticky-bit) unpacked result and
// `round_pack` rounds it once to the destination precision and exponent range, so every
// result is correctly rounded. The sticky bit is "jammed" into bit 0 of `sig` far below
// the rounding position, which keeps the rounding decision exact.
// ---------------------------------------------------------------------------------------

/// Width of the stored significand field (the fraction plus an explicit integer bit).
fn mant_bits(f: Format) -> u32 {
    f.frac_bits + u32::from(f.explicit_int)
}

/// Exponent bias.
fn bias(f: Format) -> i32 {
    (1i32 << (f.exp_bits - 1)) - 1
}

/// Largest biased exponent (infinities and NaNs).
fn exp_max(f: Format) -> u128 {
    (1u128 << f.exp_bits) - 1
}

/// Significand precision of the format (integer bit included).
fn fmt_precision(f: Format) -> u32 {
    f.frac_bits + 1
}

fn sign_of(f: Format, a: u128) -> bool {
    (a >> (f.exp_bits + mant_bits(f))) & 1 != 0
}

fn biased_exp(f: Format, a: u128) -> u128 {
    (a >> mant_bits(f)) & exp_max(f)
}

fn mant_of(f: Format, a: u128) -> u128 {
    a & ((1u128 << mant_bits(f)) - 1)
}

fn sign_bit(f: Format) -> u128 {
    1u128 << (f.exp_bits + mant_bits(f))
}

/// The quiet bit of a NaN (the top fraction bit).
fn quiet_bit(f: Format) -> u128 {
    1u128 << (f.frac_bits - 1)
}

/// Keep only the bits that belong to the format.
fn canon(f: Format, a: u128) -> u128 {
    a & ((sign_bit(f) << 1) - 1)
}

/// A signed zero.
pub fn zero(f: Format, sign: bool) -> u128 {
    if sign {
        sign_bit(f)
    } else {
        0
    }
}

/// A signed infinity.
pub fn infinity(f: Format, sign: bool) -> u128 {
    let int = if f.explicit_int {
        1u128 << f.frac_bits
    } else {
        0
    };
    zero(f, sign) | (exp_max(f) << mant_bits(f)) | int
}

/// The largest finite magnitude with `precision` significand bits, signed.
fn max_finite(f: Format, sign: bool, precision: u32) -> u128 {
    let p = precision.min(fmt_precision(f)) as i32;
    let m = (1u128 << p) - 1;
    pack(f, sign, m, bias(f) - (p - 1))
}

/// Whether `a` is a NaN (quiet or signaling).
pub fn is_nan(f: Format, a: u128) -> bool {
    matches!(classify(f, a), Class::QuietNan | Class::SignalingNan)
}

/// `a` with the sign bit flipped.
pub fn negate(f: Format, a: u128) -> u128 {
    canon(f, a) ^ sign_bit(f)
}

/// `a` with its quiet bit set (meaningful for NaNs).
pub fn quiet(f: Format, a: u128) -> u128 {
    canon(f, a) | quiet_bit(f)
}

/// The default ("indefinite") NaN: sign set, quiet bit set, rest zero.
pub fn default_nan(f: Format) -> u128 {
    infinity(f, true) | quiet_bit(f)
}

/// The class of `a`.
pub fn classify(f: Format, a: u128) -> Class {
    let e = biased_exp(f, a);
    let m = mant_of(f, a);
    let int_bit = 1u128 << f.frac_bits;
    let frac = m & (int_bit - 1);
    if f.explicit_int {
        let int = m & int_bit != 0;
        if e == exp_max(f) {
            if !int {
                Class::Unsupported
            } else if frac == 0 {
                Class::Infinite
            } else if frac & quiet_bit(f) != 0 {
                Class::QuietNan
            } else {
                Class::SignalingNan
            }
        } else if e == 0 {
            if m == 0 {
                Class::Zero
            } else {
                Class::Subnormal
            }
        } else if int {
            Class::Normal
        } else {
            Class::Unsupported
        }
    } else if e == exp_max(f) {
        if frac == 0 {
            Class::Infinite
        } else if frac & quiet_bit(f) != 0 {
            Class::QuietNan
        } else {
            Class::SignalingNan
        }
    } else if e == 0 {
        if frac == 0 {
            Class::Zero
        } else {
            Class::Subnormal
        }
    } else {
        Class::Normal
    }
}

/// An unpacked operand.
#[derive(Clone, Copy, Debug)]
struct Unpacked {
    class: Class,
    sign: bool,
    /// Exponent of bit 0 of `sig` (finite nonzero values only).
    exp: i32,
    /// Integer significand (finite nonzero values only; nonzero then).
    sig: u128,
}

/// Unpack `a`; a denormal becomes a zero under DAZ, else raises DE when `flag_de`.
fn unpack(f: Format, a: u128, env: &mut Env, flag_de: bool) -> Unpacked {
    let mut class = classify(f, a);
    let sign = sign_of(f, a);
    let e = biased_exp(f, a);
    let m = mant_of(f, a);
    let mut sig = 0;
    let mut exp = 0;
    match class {
        Class::Normal => {
            sig = if f.explicit_int {
                m
            } else {
                m | (1u128 << f.frac_bits)
            };
            exp = e as i32 - bias(f) - f.frac_bits as i32;
        }
        Class::Subnormal => {
            if env.daz {
                class = Class::Zero;
            } else {
                if flag_de {
                    env.flags |= exc::DE;
                }
                sig = m;
                exp = 1 - bias(f) - f.frac_bits as i32;
            }
        }
        _ => {}
    }
    Unpacked {
        class,
        sign,
        exp,
        sig,
    }
}

fn is_nan_class(c: Class) -> bool {
    matches!(c, Class::QuietNan | Class::SignalingNan)
}

/// NaN and unsupported-operand handling shared by the two-operand operations: `Some`
/// result when an operand is a NaN or unsupported.
fn nan_pair(f: Format, a: u128, b: u128, env: &mut Env) -> Option<u128> {
    let (ca, cb) = (classify(f, a), classify(f, b));
    if ca == Class::Unsupported || cb == Class::Unsupported {
        env.flags |= exc::IE;
        return Some(default_nan(f));
    }
    let (na, nb) = (is_nan_class(ca), is_nan_class(cb));
    if !na && !nb {
        return None;
    }
    if ca == Class::SignalingNan || cb == Class::SignalingNan {
        env.flags |= exc::IE;
    }
    let pick = match env.nan {
        NanRule::Sse => {
            if na {
                a
            } else {
                b
            }
        }
        NanRule::X87 => {
            if na && nb {
                // SDM Table 4-7: a QNaN wins over an SNaN; between two of a kind the
                // larger significand, the first on a tie.
                match (ca, cb) {
                    (Class::QuietNan, Class::SignalingNan) => a,
                    (Class::SignalingNan, Class::QuietNan) => b,
                    _ => {
                        let fmask = (1u128 << f.frac_bits) - 1;
                        let (fa, fb) = (a & fmask, b & fmask);
                        // On a tie the positive NaN wins (as the x87 does).
                        if fb > fa || (fb == fa && sign_of(f, a) && !sign_of(f, b)) {
                            b
                        } else {
                            a
                        }
                    }
                }
            } else if na {
                a
            } else {
                b
            }
        }
    };
    Some(quiet(f, pick))
}

/// NaN handling of a one-operand operation.
fn nan_one(f: Format, a: u128, env: &mut Env) -> Option<u128> {
    match classify(f, a) {
        Class::Unsupported => {
            env.flags |= exc::IE;
            Some(default_nan(f))
        }
        Class::SignalingNan => {
            env.flags |= exc::IE;
            Some(quiet(f, a))
        }
        Class::QuietNan => Some(canon(f, a)),
        _ => None,
    }
}

fn bitlen(x: u128) -> i32 {
    128 - x.leading_zeros() as i32
}

/// `x >> n` with the bits shifted out OR-ed into bit 0.
fn shr_jam(x: u128, n: u32) -> u128 {
    if n == 0 {
        x
    } else if n >= 128 {
        u128::from(x != 0)
    } else {
        (x >> n) | u128::from(x & ((1u128 << n) - 1) != 0)
    }
}

/// Round `sig * 2^exp` to an integer multiple of `2^lsb`: the multiple, and whether it
/// was inexact.
fn round_at(sign: bool, exp: i32, sig: u128, lsb: i32, round: Round) -> (u128, bool) {
    if lsb <= exp {
        // Callers only ask for left shifts that keep the value within the precision.
        let sh = (exp - lsb) as u32;
        return (sig.checked_shl(sh).unwrap_or(0), false);
    }
    let shift = (lsb - exp) as u32;
    let (m, rem) = if shift >= 128 {
        (0, sig)
    } else {
        (sig >> shift, sig & ((1u128 << shift) - 1))
    };
    if rem == 0 {
        return (m, false);
    }
    let up = match round {
        Round::Nearest => {
            if shift > 128 {
                false
            } else {
                let half = 1u128 << (shift - 1);
                rem > half || (rem == half && m & 1 != 0)
            }
        }
        Round::Zero => false,
        Round::Up => !sign,
        Round::Down => sign,
    };
    (m + u128::from(up), true)
}

/// Pack a finite `m * 2^lsb` (m below 2^precision) known to be within the exponent range.
fn pack(f: Format, sign: bool, m: u128, lsb: i32) -> u128 {
    if m == 0 {
        return zero(f, sign);
    }
    let b = bias(f);
    let emin = 1 - b;
    let lead = lsb + bitlen(m) - 1;
    let fb = f.frac_bits as i32;
    let (be, s) = if lead >= emin {
        ((lead + b) as u128, m << ((lsb - (lead - fb)) as u32))
    } else {
        (0, m << ((lsb - (emin - fb)) as u32))
    };
    let field = if f.explicit_int {
        s
    } else {
        s & ((1u128 << f.frac_bits) - 1)
    };
    zero(f, sign) | (be << mant_bits(f)) | field
}

/// Round the nonzero `sig * 2^exp` to `precision` bits in the exponent range of `f`,
/// raising OE/UE/PE and applying FTZ.
fn round_pack(f: Format, precision: u32, sign: bool, exp: i32, sig: u128, env: &mut Env) -> u128 {
    if sig == 0 {
        return zero(f, sign);
    }
    let p = precision.clamp(2, fmt_precision(f)) as i32;
    let b = bias(f);
    let emin = 1 - b;
    let emax = b;
    let lead = exp + bitlen(sig) - 1;
    // Tininess is detected after rounding: the value rounded to `p` bits with an
    // unbounded exponent range is below the smallest normal.
    let mut tiny = lead < emin;
    if lead == emin - 1 {
        let (m, _) = round_at(sign, exp, sig, lead - (p - 1), env.round);
        if m >> p != 0 {
            tiny = false;
        }
    }
    if tiny && env.ftz {
        env.flags |= exc::UE | exc::PE;
        return zero(f, sign);
    }
    let mut lsb = lead.max(emin) - (p - 1);
    let (mut m, inexact) = round_at(sign, exp, sig, lsb, env.round);
    if m >> p != 0 {
        m >>= 1;
        lsb += 1;
    }
    if m != 0 && lsb + bitlen(m) - 1 > emax {
        env.flags |= exc::OE | exc::PE;
        let to_inf = match env.round {
            Round::Nearest => true,
            Round::Zero => false,
            Round::Up => !sign,
            Round::Down => sign,
        };
        return if to_inf {
            infinity(f, sign)
        } else {
            max_finite(f, sign, p as u32)
        };
    }
    if inexact {
        env.flags |= exc::PE;
        if tiny {
            env.flags |= exc::UE;
        }
    }
    pack(f, sign, m, lsb)
}

/// Precision arithmetic results are rounded to: the x87 precision control for F80, the
/// format's own precision otherwise.
fn arith_precision(f: Format, env: &Env) -> u32 {
    if f.explicit_int {
        env.precision.clamp(2, fmt_precision(f))
    } else {
        fmt_precision(f)
    }
}

/// Whether a result `r` of an arithmetic operation that raised `flags` met the underflow
/// condition (tiny after rounding, exact or not): what an unmasked UE traps on. With UE
/// masked the operations raise UE only for tiny inexact results; an exact tiny result is
/// a denormal, which this recognizes.
pub fn underflow_condition(f: Format, r: u128, flags: u32) -> bool {
    flags & exc::UE != 0 || classify(f, r) == Class::Subnormal
}

fn add_signed(f: Format, a: u128, b: u128, negate_b: bool, env: &mut Env) -> u128 {
    if let Some(n) = nan_pair(f, a, b, env) {
        return n;
    }
    let x = unpack(f, a, env, true);
    let mut y = unpack(f, b, env, true);
    y.sign ^= negate_b;
    match (x.class, y.class) {
        (Class::Infinite, Class::Infinite) => {
            if x.sign != y.sign {
                env.flags |= exc::IE;
                return default_nan(f);
            }
            return infinity(f, x.sign);
        }
        (Class::Infinite, _) => return infinity(f, x.sign),
        (_, Class::Infinite) => return infinity(f, y.sign),
        (Class::Zero, Class::Zero) => {
            let s = if x.sign == y.sign {
                x.sign
            } else {
                env.round == Round::Down
            };
            return zero(f, s);
        }
        (Class::Zero, _) => {
            return round_pack(f, arith_precision(f, env), y.sign, y.exp, y.sig, env);
        }
        (_, Class::Zero) => {
            return round_pack(f, arith_precision(f, env), x.sign, x.exp, x.sig, env);
        }
        _ => {}
    }
    // Both finite nonzero. Significands have at most 64 bits; place them at bit 62 up so
    // the sum has room for a carry and 62 guard bits below the operands.
    let (mut hi, mut lo) = (x, y);
    if lo.exp > hi.exp {
        core::mem::swap(&mut hi, &mut lo);
    }
    let hs = hi.sig << 62;
    let diff = (hi.exp - lo.exp) as u32;
    let ls = shr_jam(lo.sig << 62, diff);
    let exp = hi.exp - 62;
    let (sign, sig) = if hi.sign == lo.sign {
        (hi.sign, hs + ls)
    } else if hs >= ls {
        (hi.sign, hs - ls)
    } else {
        (lo.sign, ls - hs)
    };
    if sig == 0 {
        return zero(f, env.round == Round::Down);
    }
    round_pack(f, arith_precision(f, env), sign, exp, sig, env)
}

/// a + b.
pub fn add(f: Format, a: u128, b: u128, env: &mut Env) -> u128 {
    add_signed(f, a, b, false, env)
}

/// a - b.
pub fn sub(f: Format, a: u128, b: u128, env: &mut Env) -> u128 {
    add_signed(f, a, b, true, env)
}

/// a * b.
pub fn mul(f: Format, a: u128, b: u128, env: &mut Env) -> u128 {
    if let Some(n) = nan_pair(f, a, b, env) {
        return n;
    }
    let x = unpack(f, a, env, true);
    let y = unpack(f, b, env, true);
    let sign = x.sign != y.sign;
    match (x.class, y.class) {
        (Class::Infinite, Class::Zero) | (Class::Zero, Class::Infinite) => {
            env.flags |= exc::IE;
            default_nan(f)
        }
        (Class::Infinite, _) | (_, Class::Infinite) => infinity(f, sign),
        (Class::Zero, _) | (_, Class::Zero) => zero(f, sign),
        _ => round_pack(
            f,
            arith_precision(f, env),
            sign,
            x.exp + y.exp,
            x.sig * y.sig,
            env,
        ),
    }
}

/// a / b.
pub fn div(f: Format, a: u128, b: u128, env: &mut Env) -> u128 {
    if let Some(n) = nan_pair(f, a, b, env) {
        return n;
    }
    let x = unpack(f, a, env, false);
    let y = unpack(f, b, env, false);
    let sign = x.sign != y.sign;
    // A finite nonzero dividend over zero raises ZE alone (divide-by-zero outranks the
    // denormal-operand exception); every other case flags denormal operands.
    let finite_over_zero =
        matches!(x.class, Class::Normal | Class::Subnormal) && y.class == Class::Zero;
    if !finite_over_zero && (x.class == Class::Subnormal || y.class == Class::Subnormal) {
        env.flags |= exc::DE;
    }
    match (x.class, y.class) {
        (Class::Infinite, Class::Infinite) | (Class::Zero, Class::Zero) => {
            env.flags |= exc::IE;
            default_nan(f)
        }
        (Class::Infinite, _) => infinity(f, sign),
        (_, Class::Infinite) | (Class::Zero, _) => zero(f, sign),
        (_, Class::Zero) => {
            env.flags |= exc::ZE;
            infinity(f, sign)
        }
        _ => {
            // Normalize both significands to 64 bits; the 64-bit shifted quotient has
            // 64-65 bits, two more quotient bits give a guard bit for every precision.
            let na = x.sig << (64 - bitlen(x.sig));
            let ea = x.exp - (64 - bitlen(x.sig));
            let nb = y.sig << (64 - bitlen(y.sig));
            let eb = y.exp - (64 - bitlen(y.sig));
            let num = na << 64;
            let mut q = num / nb;
            let mut r = num % nb;
            q = (q << 2) | ((r << 2) / nb);
            r = (r << 2) % nb;
            let q = q | u128::from(r != 0);
            round_pack(f, arith_precision(f, env), sign, ea - eb - 66, q, env)
        }
    }
}

/// Integer square root digit by digit of `n * 4^pairs_extra` (n below 2^70):
/// root and whether a remainder was left.
fn isqrt_ext(n: u128, extra_pairs: u32) -> (u128, bool) {
    let pairs_n = (bitlen(n) as u32).div_ceil(2);
    let mut root: u128 = 0;
    let mut rem: u128 = 0;
    for i in (0..pairs_n + extra_pairs).rev() {
        let two = if i >= extra_pairs {
            (n >> (2 * (i - extra_pairs))) & 3
        } else {
            0
        };
        rem = (rem << 2) | two;
        let trial = (root << 2) | 1;
        if rem >= trial {
            rem -= trial;
            root = (root << 1) | 1;
        } else {
            root <<= 1;
        }
    }
    (root, rem != 0)
}

/// Square root.
pub fn sqrt(f: Format, a: u128, env: &mut Env) -> u128 {
    if let Some(n) = nan_one(f, a, env) {
        return n;
    }
    let x = unpack(f, a, env, false);
    match x.class {
        Class::Zero => return zero(f, x.sign),
        Class::Infinite if !x.sign => return infinity(f, false),
        _ => {}
    }
    // A negative operand is invalid; the invalid operation outranks a denormal operand.
    if x.sign {
        env.flags |= exc::IE;
        return default_nan(f);
    }
    if x.class == Class::Subnormal {
        env.flags |= exc::DE;
    }
    // Normalize to 64 bits so the root always has enough bits, then make the exponent
    // even.
    let norm = 64 - bitlen(x.sig);
    let (mut s, mut e) = (x.sig << norm, x.exp - norm);
    if e & 1 != 0 {
        s <<= 1;
        e -= 1;
    }
    // The root of a 65-bit significand has 33 bits; 35 zero pairs more give 68 bits.
    let (root, inexact) = isqrt_ext(s, 35);
    let sig = (root << 1) | u128::from(inexact);
    round_pack(f, arith_precision(f, env), false, e / 2 - 35 - 1, sig, env)
}

/// Convert between formats (rounding when narrowing; a signaling NaN is quieted with IE).
pub fn convert(from: Format, to: Format, a: u128, env: &mut Env) -> u128 {
    let x = unpack(from, a, env, true);
    match x.class {
        Class::Unsupported => {
            env.flags |= exc::IE;
            default_nan(to)
        }
        Class::QuietNan | Class::SignalingNan => {
            if x.class == Class::SignalingNan {
                env.flags |= exc::IE;
            }
            // The payload keeps its top bits.
            let frac = a & ((1u128 << from.frac_bits) - 1);
            let moved = if to.frac_bits >= from.frac_bits {
                frac << (to.frac_bits - from.frac_bits)
            } else {
                frac >> (from.frac_bits - to.frac_bits)
            };
            infinity(to, x.sign) | moved | quiet_bit(to)
        }
        Class::Infinite => infinity(to, x.sign),
        Class::Zero => zero(to, x.sign),
        Class::Normal | Class::Subnormal => {
            round_pack(to, fmt_precision(to), x.sign, x.exp, x.sig, env)
        }
    }
}

/// Convert a signed integer (rounding when it does not fit the precision).
pub fn from_int(to: Format, v: i64, env: &mut Env) -> u128 {
    if v == 0 {
        return zero(to, false);
    }
    round_pack(
        to,
        fmt_precision(to),
        v < 0,
        0,
        u128::from(v.unsigned_abs()),
        env,
    )
}

/// Convert to a signed integer of `width` bits (16, 32 or 64), rounding with
/// `env.round` or truncating. `None` (with IE raised) for NaNs and out-of-range values:
/// the caller stores the integer indefinite.
pub fn to_int(from: Format, a: u128, width: u32, truncate: bool, env: &mut Env) -> Option<i64> {
    let x = unpack(from, a, env, false);
    match x.class {
        Class::Zero => return Some(0),
        Class::Normal | Class::Subnormal => {}
        _ => {
            env.flags |= exc::IE;
            return None;
        }
    }
    let round = if truncate { Round::Zero } else { env.round };
    let width = width.clamp(2, 64);
    // Anything at or above 2^64 is out of range for every width; avoid huge shifts.
    if x.exp + bitlen(x.sig) > 65 {
        env.flags |= exc::IE;
        return None;
    }
    let (m, inexact) = round_at(x.sign, x.exp, x.sig, 0, round);
    let limit = 1u128 << (width - 1);
    let ok = if x.sign { m <= limit } else { m < limit };
    if !ok {
        env.flags |= exc::IE;
        return None;
    }
    if inexact {
        env.flags |= exc::PE;
    }
    // m fits in width-1 bits (or is exactly 2^(width-1) negated).
    let v = if x.sign { 0i128 - m as i128 } else { m as i128 };
    i64::try_from(v).ok()
}

/// Round to an integral value in the same format with `round`; PE is raised for an
/// inexact result only when `signal_inexact`.
///
/// DE is raised for a denormal operand under the x87 NaN rule only (FRNDINT signals it,
/// ROUNDPS/ROUNDSS do not).
pub fn round_to_integral(
    f: Format,
    a: u128,
    round: Round,
    signal_inexact: bool,
    env: &mut Env,
) -> u128 {
    if let Some(n) = nan_one(f, a, env) {
        return n;
    }
    let x87 = env.nan == NanRule::X87;
    let x = unpack(f, a, env, x87);
    match x.class {
        Class::Zero => return zero(f, x.sign),
        Class::Infinite => return canon(f, a),
        _ => {}
    }
    if x.exp >= 0 {
        return canon(f, a);
    }
    let (m, inexact) = round_at(x.sign, x.exp, x.sig, 0, round);
    if inexact && signal_inexact {
        env.flags |= exc::PE;
    }
    // m is at most 2^precision: representable exactly.
    let mut quiet_env = *env;
    round_pack(f, fmt_precision(f), x.sign, 0, m, &mut quiet_env)
}

/// Compare; IE for a signaling NaN operand, or for any NaN when `signaling`; DE for a
/// denormal operand.
pub fn compare(f: Format, a: u128, b: u128, signaling: bool, env: &mut Env) -> Ordering {
    let (ca, cb) = (classify(f, a), classify(f, b));
    if ca == Class::Unsupported || cb == Class::Unsupported {
        env.flags |= exc::IE;
        return Ordering::Unordered;
    }
    if is_nan_class(ca) || is_nan_class(cb) {
        if signaling || ca == Class::SignalingNan || cb == Class::SignalingNan {
            env.flags |= exc::IE;
        }
        return Ordering::Unordered;
    }
    let x = unpack(f, a, env, true);
    let y = unpack(f, b, env, true);
    // Order magnitudes by (leading-bit exponent, normalized significand); zero lowest.
    let mag = |u: &Unpacked| -> Option<(i32, u128)> {
        match u.class {
            Class::Zero => None,
            Class::Infinite => Some((i32::MAX, 0)),
            _ => {
                let n = bitlen(u.sig);
                Some((u.exp + n - 1, u.sig << (128 - n)))
            }
        }
    };
    let (mx, my) = (mag(&x), mag(&y));
    let cmp_mag = mx.cmp(&my);
    let (sx, sy) = (x.sign && mx.is_some(), y.sign && my.is_some());
    use core::cmp::Ordering as O;
    let r = match (sx, sy) {
        (false, false) => cmp_mag,
        (true, true) => cmp_mag.reverse(),
        (false, true) => O::Greater,
        (true, false) => O::Less,
    };
    match r {
        O::Less => Ordering::Less,
        O::Equal => Ordering::Equal,
        O::Greater => Ordering::Greater,
    }
}

/// `a * 2^n` rounded into the format (FSCALE's core; `n` is clamped far outside the
/// exponent range, where the result has overflowed or underflowed anyway).
pub fn scale(f: Format, a: u128, n: i64, env: &mut Env) -> u128 {
    if let Some(r) = nan_one(f, a, env) {
        return r;
    }
    let x = unpack(f, a, env, true);
    match x.class {
        Class::Zero | Class::Infinite => canon(f, a),
        _ => {
            let n = n.clamp(-100_000, 100_000) as i32;
            round_pack(f, arith_precision(f, env), x.sign, x.exp + n, x.sig, env)
        }
    }
}

/// The unbiased exponent and the significand scaled into [1, 2) of a finite nonzero
/// value (FXTRACT's core): `a == sig * 2^exp`, `sig` in the same format. `None` for zeros,
/// infinities, NaNs and unsupported encodings. Denormals are normalized.
pub fn frexp(f: Format, a: u128) -> Option<(i32, u128)> {
    let mut env = Env {
        round: Round::Nearest,
        precision: fmt_precision(f),
        ftz: false,
        daz: false,
        nan: NanRule::X87,
        flags: 0,
    };
    let x = unpack(f, a, &mut env, false);
    match x.class {
        Class::Normal | Class::Subnormal => {
            let n = bitlen(x.sig);
            let e = x.exp + n - 1;
            let sig = pack(f, x.sign, x.sig, -(n - 1));
            Some((e, sig))
        }
        _ => None,
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests;
