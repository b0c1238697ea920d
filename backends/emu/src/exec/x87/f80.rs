//! Bit-level facts about 80-bit double-extended values: fields, classes as FXAM and the
//! tag word see them, and the fixed encodings (indefinite, signed zeros, infinities).
//! No arithmetic: that is [`crate::arith::softfloat`]'s.

/// The 80 bits of a register.
pub const MASK: u128 = (1 << 80) - 1;
/// The sign bit.
pub const SIGN: u128 = 1 << 79;
/// The explicit integer bit.
pub const INT: u64 = 1 << 63;
/// The exponent bias.
pub const BIAS: i32 = 16383;
/// The QNaN floating-point indefinite.
pub const INDEFINITE: u128 = (0xffffu128 << 64) | (0xc000_0000_0000_0000u128);
/// +1.0.
pub const ONE: u128 = (0x3fffu128 << 64) | INT as u128;

/// Sign, biased exponent and significand.
#[inline]
pub fn parts(v: u128) -> (bool, u32, u64) {
    (v & SIGN != 0, ((v >> 64) & 0x7fff) as u32, v as u64)
}

/// Build a value from its fields.
#[inline]
pub fn make(sign: bool, exp: u32, sig: u64) -> u128 {
    (u128::from(sign) << 79) | (u128::from(exp & 0x7fff) << 64) | u128::from(sig)
}

/// The value without its sign, for magnitude comparisons of results of one sign
/// (the encodings of finite values and infinity are ordered like their magnitudes).
#[inline]
pub fn magnitude(v: u128) -> u128 {
    v & (MASK & !SIGN)
}

/// The classes FXAM distinguishes (and the tag word's special/zero/valid).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Unnormals, pseudo-NaNs, pseudo-infinities.
    Unsupported,
    /// Quiet or signaling NaN.
    Nan,
    /// Normal finite.
    Normal,
    /// Infinity.
    Infinity,
    /// Zero.
    Zero,
    /// Denormal or pseudo-denormal.
    Denormal,
}

/// The class of `v`.
pub fn kind(v: u128) -> Kind {
    let (_, e, m) = parts(v);
    let int = m & INT != 0;
    match e {
        0 if m == 0 => Kind::Zero,
        0 => Kind::Denormal,
        0x7fff if !int => Kind::Unsupported,
        0x7fff if m << 1 == 0 => Kind::Infinity,
        0x7fff => Kind::Nan,
        _ if !int => Kind::Unsupported,
        _ => Kind::Normal,
    }
}

/// Whether `v` is a signaling NaN.
pub fn is_snan(v: u128) -> bool {
    kind(v) == Kind::Nan && v & (1 << 62) == 0
}

/// Whether `v` is any NaN.
pub fn is_nan(v: u128) -> bool {
    kind(v) == Kind::Nan
}

/// The two-bit tag FSTENV/FSAVE report for a non-empty register: 0 valid, 1 zero,
/// 2 special (NaN, infinity, denormal, unsupported).
pub fn tag(v: u128) -> u16 {
    match kind(v) {
        Kind::Normal => 0,
        Kind::Zero => 1,
        _ => 2,
    }
}

/// Signed zero.
#[inline]
pub fn zero(sign: bool) -> u128 {
    make(sign, 0, 0)
}

/// Signed infinity.
#[inline]
pub fn inf(sign: bool) -> u128 {
    make(sign, 0x7fff, INT)
}

/// `v` with its sign flipped.
#[inline]
pub fn neg(v: u128) -> u128 {
    v ^ SIGN
}

/// A finite nonzero value normalised: (sign, unbiased exponent of the integer bit,
/// significand with the integer bit set). Denormals and pseudo-denormals are shifted
/// up; the exponent may go below the format's range. `None` for zero, infinities,
/// NaNs and unsupported encodings.
pub fn normalize(v: u128) -> Option<(bool, i32, u64)> {
    let (s, e, m) = parts(v);
    match kind(v) {
        Kind::Normal => Some((s, e as i32 - BIAS, m)),
        Kind::Denormal => {
            let lz = m.leading_zeros() as i32;
            Some((s, 1 - BIAS - lz, m << lz))
        }
        _ => None,
    }
}

/// The value `(-1)^s * m * 2^(exp - 63)` as a normal encoding if the exponent fits
/// the biased range 1..=0x7ffe (`m` must have its integer bit set).
pub fn from_normal(s: bool, exp: i32, m: u64) -> Option<u128> {
    // Checked: callers pass exponents computed from guest operands (FSCALE).
    let b = exp.checked_add(BIAS)?;
    if (1..=0x7ffe).contains(&b) {
        Some(make(s, b as u32, m))
    } else {
        None
    }
}
