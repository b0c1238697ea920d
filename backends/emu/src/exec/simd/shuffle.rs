//! Shuffles and unpacks: PSHUFB, PSHUFD/PSHUFHW/PSHUFLW/PSHUFW, SHUFPS/SHUFPD, PALIGNR,
//! PUNPCKL*/PUNPCKH* and UNPCKL/HPS/PD, MOVDDUP/MOVSHDUP/MOVSLDUP.

use super::{lane, pick, put, BinOp};
use crate::decode::{Handler, Op};
use iced_x86::Mnemonic as M;

/// PSHUFB: each destination byte takes the byte of itself the source byte selects (its
/// low 3 bits for MMX, 4 for XMM), or zero when the selector's bit 7 is set.
pub(crate) struct Pshufb;
impl BinOp for Pshufb {
    #[inline(always)]
    fn f(a: u128, b: u128, _: u8, w: usize) -> u128 {
        let mut r = 0u128;
        for i in 0..w {
            let s = lane(b, i, 8);
            if s & 0x80 == 0 {
                r |= put(i, 8, lane(a, s as usize & (w - 1), 8));
            }
        }
        r
    }
}

/// PSHUFD: doublewords of the source chosen by the imm8 fields.
pub(crate) struct Pshufd;
impl BinOp for Pshufd {
    #[inline(always)]
    fn f(_: u128, b: u128, imm: u8, _: usize) -> u128 {
        let mut r = 0u128;
        for i in 0..4 {
            r |= put(i, 32, lane(b, usize::from(imm >> (2 * i)) & 3, 32));
        }
        r
    }
}

/// PSHUFW (MMX) and PSHUFLW: words 0-3 of the source chosen by the imm8 fields; the upper
/// quadword (XMM) is copied.
pub(crate) struct Pshuflw;
impl BinOp for Pshuflw {
    #[inline(always)]
    fn f(_: u128, b: u128, imm: u8, _: usize) -> u128 {
        let mut r = b & !0xffff_ffff_ffff_ffffu128;
        for i in 0..4 {
            r |= put(i, 16, lane(b, usize::from(imm >> (2 * i)) & 3, 16));
        }
        r
    }
}

/// PSHUFHW: words 4-7 of the source chosen by the imm8 fields; the low quadword copied.
pub(crate) struct Pshufhw;
impl BinOp for Pshufhw {
    #[inline(always)]
    fn f(_: u128, b: u128, imm: u8, _: usize) -> u128 {
        let mut r = b & 0xffff_ffff_ffff_ffff;
        for i in 0..4 {
            r |= put(
                4 + i,
                16,
                lane(b, 4 + (usize::from(imm >> (2 * i)) & 3), 16),
            );
        }
        r
    }
}

/// SHUFPS: the low two doublewords from the destination, the high two from the source.
pub(crate) struct Shufps;
impl BinOp for Shufps {
    #[inline(always)]
    fn f(a: u128, b: u128, imm: u8, _: usize) -> u128 {
        let sel = |i: u32| usize::from(imm >> (2 * i)) & 3;
        put(0, 32, lane(a, sel(0), 32))
            | put(1, 32, lane(a, sel(1), 32))
            | put(2, 32, lane(b, sel(2), 32))
            | put(3, 32, lane(b, sel(3), 32))
    }
}

/// SHUFPD: the low quadword from the destination, the high one from the source.
pub(crate) struct Shufpd;
impl BinOp for Shufpd {
    #[inline(always)]
    fn f(a: u128, b: u128, imm: u8, _: usize) -> u128 {
        put(0, 64, lane(a, usize::from(imm & 1), 64))
            | put(1, 64, lane(b, usize::from((imm >> 1) & 1), 64))
    }
}

/// PALIGNR: the destination:source concatenation shifted right by imm8 bytes, low half
/// kept.
pub(crate) struct Palignr;
impl BinOp for Palignr {
    #[inline(always)]
    fn f(a: u128, b: u128, imm: u8, w: usize) -> u128 {
        let sh = usize::from(imm);
        let mut r = 0u128;
        for i in 0..w {
            let k = i + sh;
            let byte = if k < w {
                lane(b, k, 8)
            } else if k < 2 * w {
                lane(a, k - w, 8)
            } else {
                0
            };
            r |= put(i, 8, byte);
        }
        r
    }
}

/// Interleave the lanes of the low (`HIGH` false) or high halves of destination and
/// source, destination lanes first.
#[inline(always)]
fn unpack(a: u128, b: u128, w: usize, bits: u32, high: bool) -> u128 {
    let half = w * 4 / bits as usize;
    let from = if high { half } else { 0 };
    let mut r = 0u128;
    for i in 0..half {
        r |= put(2 * i, bits, lane(a, from + i, bits));
        r |= put(2 * i + 1, bits, lane(b, from + i, bits));
    }
    r
}

macro_rules! unpacks {
    ($($(#[$doc:meta])* $name:ident, $bits:expr, $high:expr;)*) => {$(
        $(#[$doc])*
        pub(crate) struct $name;
        impl BinOp for $name {
            #[inline(always)]
            fn f(a: u128, b: u128, _: u8, w: usize) -> u128 {
                unpack(a, b, w, $bits, $high)
            }
        }
    )*};
}

unpacks! {
    /// PUNPCKLBW.
    Punpcklbw, 8, false;
    /// PUNPCKLWD.
    Punpcklwd, 16, false;
    /// PUNPCKLDQ, UNPCKLPS.
    Punpckldq, 32, false;
    /// PUNPCKLQDQ, UNPCKLPD.
    Punpcklqdq, 64, false;
    /// PUNPCKHBW.
    Punpckhbw, 8, true;
    /// PUNPCKHWD.
    Punpckhwd, 16, true;
    /// PUNPCKHDQ, UNPCKHPS.
    Punpckhdq, 32, true;
    /// PUNPCKHQDQ, UNPCKHPD.
    Punpckhqdq, 64, true;
}

/// MOVDDUP: the source's low quadword in both halves (the memory form reads 8 bytes).
pub(crate) struct Movddup;
impl BinOp for Movddup {
    #[inline(always)]
    fn f(_: u128, b: u128, _: u8, _: usize) -> u128 {
        let q = b & 0xffff_ffff_ffff_ffff;
        q | (q << 64)
    }
}

/// MOVSHDUP: the odd doublewords duplicated.
pub(crate) struct Movshdup;
impl BinOp for Movshdup {
    #[inline(always)]
    fn f(_: u128, b: u128, _: u8, _: usize) -> u128 {
        let (x, y) = (lane(b, 1, 32), lane(b, 3, 32));
        put(0, 32, x) | put(1, 32, x) | put(2, 32, y) | put(3, 32, y)
    }
}

/// MOVSLDUP: the even doublewords duplicated.
pub(crate) struct Movsldup;
impl BinOp for Movsldup {
    #[inline(always)]
    fn f(_: u128, b: u128, _: u8, _: usize) -> u128 {
        let (x, y) = (lane(b, 0, 32), lane(b, 2, 32));
        put(0, 32, x) | put(1, 32, x) | put(2, 32, y) | put(3, 32, y)
    }
}

/// The handler for `op` if it is a shuffle or unpack.
pub(super) fn select(op: &Op) -> Option<Handler> {
    Some(match op.i.mnemonic() {
        M::Pshufb => pick::<Pshufb>(op),
        M::Pshufd => pick::<Pshufd>(op),
        M::Pshufw | M::Pshuflw => pick::<Pshuflw>(op),
        M::Pshufhw => pick::<Pshufhw>(op),
        M::Shufps => pick::<Shufps>(op),
        M::Shufpd => pick::<Shufpd>(op),
        M::Palignr => pick::<Palignr>(op),
        M::Punpcklbw => pick::<Punpcklbw>(op),
        M::Punpcklwd => pick::<Punpcklwd>(op),
        M::Punpckldq | M::Unpcklps => pick::<Punpckldq>(op),
        M::Punpcklqdq | M::Unpcklpd => pick::<Punpcklqdq>(op),
        M::Punpckhbw => pick::<Punpckhbw>(op),
        M::Punpckhwd => pick::<Punpckhwd>(op),
        M::Punpckhdq | M::Unpckhps => pick::<Punpckhdq>(op),
        M::Punpckhqdq | M::Unpckhpd => pick::<Punpckhqdq>(op),
        M::Movddup => pick::<Movddup>(op),
        M::Movshdup => pick::<Movshdup>(op),
        M::Movsldup => pick::<Movsldup>(op),
        _ => return None,
    })
}
