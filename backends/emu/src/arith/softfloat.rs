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

/// The default ("indefinite") NaN: sign set, quiet bit set, rest zero.
pub fn default_nan(f: Format) -> u128 {
    let _ = f;
    todo!("softfloat: default_nan")
}

/// The class of `a`.
pub fn classify(f: Format, a: u128) -> Class {
    let _ = (f, a);
    todo!("softfloat: classify")
}

/// a + b.
pub fn add(f: Format, a: u128, b: u128, env: &mut Env) -> u128 {
    let _ = (f, a, b, env);
    todo!("softfloat: add")
}

/// a - b.
pub fn sub(f: Format, a: u128, b: u128, env: &mut Env) -> u128 {
    let _ = (f, a, b, env);
    todo!("softfloat: sub")
}

/// a * b.
pub fn mul(f: Format, a: u128, b: u128, env: &mut Env) -> u128 {
    let _ = (f, a, b, env);
    todo!("softfloat: mul")
}

/// a / b.
pub fn div(f: Format, a: u128, b: u128, env: &mut Env) -> u128 {
    let _ = (f, a, b, env);
    todo!("softfloat: div")
}

/// Square root.
pub fn sqrt(f: Format, a: u128, env: &mut Env) -> u128 {
    let _ = (f, a, env);
    todo!("softfloat: sqrt")
}

/// Convert between formats (rounding when narrowing; a signaling NaN is quieted with IE).
pub fn convert(from: Format, to: Format, a: u128, env: &mut Env) -> u128 {
    let _ = (from, to, a, env);
    todo!("softfloat: convert")
}

/// Convert a signed integer (rounding when it does not fit the precision).
pub fn from_int(to: Format, v: i64, env: &mut Env) -> u128 {
    let _ = (to, v, env);
    todo!("softfloat: from_int")
}

/// Convert to a signed integer of `width` bits (16, 32 or 64), rounding with
/// `env.round` or truncating. `None` (with IE raised) for NaNs and out-of-range values:
/// the caller stores the integer indefinite.
pub fn to_int(from: Format, a: u128, width: u32, truncate: bool, env: &mut Env) -> Option<i64> {
    let _ = (from, a, width, truncate, env);
    todo!("softfloat: to_int")
}

/// Round to an integral value in the same format with `round`; PE is raised for an
/// inexact result only when `signal_inexact`.
pub fn round_to_integral(
    f: Format,
    a: u128,
    round: Round,
    signal_inexact: bool,
    env: &mut Env,
) -> u128 {
    let _ = (f, a, round, signal_inexact, env);
    todo!("softfloat: round_to_integral")
}

/// Compare; IE for a signaling NaN operand, or for any NaN when `signaling`; DE for a
/// denormal operand.
pub fn compare(f: Format, a: u128, b: u128, signaling: bool, env: &mut Env) -> Ordering {
    let _ = (f, a, b, signaling, env);
    todo!("softfloat: compare")
}
