//! Integer arithmetic: add and subtract (wrapping and saturating), multiplies and
//! multiply-adds, averages, minimum and maximum, absolute value, sign, sums of absolute
//! differences, horizontal add and subtract, PHMINPOSUW.

use super::{lane, pick, put, sat_s, sat_u, sx, BinOp};
use crate::decode::{Handler, Op};
use iced_x86::Mnemonic as M;

lanewise! {
    /// PADDB.
    Paddb, 8, |a, b| a.wrapping_add(b);
    /// PADDW.
    Paddw, 16, |a, b| a.wrapping_add(b);
    /// PADDD.
    Paddd, 32, |a, b| a.wrapping_add(b);
    /// PADDQ.
    Paddq, 64, |a, b| a.wrapping_add(b);
    /// PSUBB.
    Psubb, 8, |a, b| a.wrapping_sub(b);
    /// PSUBW.
    Psubw, 16, |a, b| a.wrapping_sub(b);
    /// PSUBD.
    Psubd, 32, |a, b| a.wrapping_sub(b);
    /// PSUBQ.
    Psubq, 64, |a, b| a.wrapping_sub(b);
    /// PADDSB.
    Paddsb, 8, |a, b| sat_s(sx(a, 8) + sx(b, 8), 8);
    /// PADDSW.
    Paddsw, 16, |a, b| sat_s(sx(a, 16) + sx(b, 16), 16);
    /// PSUBSB.
    Psubsb, 8, |a, b| sat_s(sx(a, 8) - sx(b, 8), 8);
    /// PSUBSW.
    Psubsw, 16, |a, b| sat_s(sx(a, 16) - sx(b, 16), 16);
    /// PADDUSB.
    Paddusb, 8, |a, b| sat_u((a + b) as i64, 8);
    /// PADDUSW.
    Paddusw, 16, |a, b| sat_u((a + b) as i64, 16);
    /// PSUBUSB.
    Psubusb, 8, |a, b| sat_u(a as i64 - b as i64, 8);
    /// PSUBUSW.
    Psubusw, 16, |a, b| sat_u(a as i64 - b as i64, 16);
    /// PMULLW: the low halves of the products.
    Pmullw, 16, |a, b| a.wrapping_mul(b);
    /// PMULHW: the high halves of the signed products.
    Pmulhw, 16, |a, b| ((sx(a, 16) * sx(b, 16)) >> 16) as u64;
    /// PMULHUW: the high halves of the unsigned products.
    Pmulhuw, 16, |a, b| (a * b) >> 16;
    /// PMULLD.
    Pmulld, 32, |a, b| a.wrapping_mul(b);
    /// PMULUDQ: the even unsigned doublewords multiplied into quadwords.
    Pmuludq, 64, |a, b| (a & 0xffff_ffff) * (b & 0xffff_ffff);
    /// PMULDQ: the even signed doublewords multiplied into quadwords.
    Pmuldq, 64, |a, b| (sx(a, 32) * sx(b, 32)) as u64;
    /// PMULHRSW: signed products scaled by 2^-15 and rounded.
    Pmulhrsw, 16, |a, b| ((((sx(a, 16) * sx(b, 16)) >> 14) + 1) >> 1) as u64;
    /// PMADDWD: pairs of signed word products added (0x8000 * 0x8000 twice wraps).
    Pmaddwd, 32, |a, b| {
        let lo = sx(a, 16) * sx(b, 16);
        let hi = sx(a >> 16, 16) * sx(b >> 16, 16);
        (lo + hi) as u64
    };
    /// PMADDUBSW: unsigned destination bytes times signed source bytes, pairs added with
    /// signed saturation.
    Pmaddubsw, 16, |a, b| {
        let lo = (a & 0xff) as i64 * sx(b, 8);
        let hi = ((a >> 8) & 0xff) as i64 * sx(b >> 8, 8);
        sat_s(lo + hi, 16)
    };
    /// PAVGB: rounded unsigned average.
    Pavgb, 8, |a, b| (a + b + 1) >> 1;
    /// PAVGW.
    Pavgw, 16, |a, b| (a + b + 1) >> 1;
    /// PMINUB.
    Pminub, 8, |a, b| a.min(b);
    /// PMINUW.
    Pminuw, 16, |a, b| a.min(b);
    /// PMINUD.
    Pminud, 32, |a, b| a.min(b);
    /// PMAXUB.
    Pmaxub, 8, |a, b| a.max(b);
    /// PMAXUW.
    Pmaxuw, 16, |a, b| a.max(b);
    /// PMAXUD.
    Pmaxud, 32, |a, b| a.max(b);
    /// PMINSB.
    Pminsb, 8, |a, b| if sx(a, 8) < sx(b, 8) { a } else { b };
    /// PMINSW.
    Pminsw, 16, |a, b| if sx(a, 16) < sx(b, 16) { a } else { b };
    /// PMINSD.
    Pminsd, 32, |a, b| if sx(a, 32) < sx(b, 32) { a } else { b };
    /// PMAXSB.
    Pmaxsb, 8, |a, b| if sx(a, 8) > sx(b, 8) { a } else { b };
    /// PMAXSW.
    Pmaxsw, 16, |a, b| if sx(a, 16) > sx(b, 16) { a } else { b };
    /// PMAXSD.
    Pmaxsd, 32, |a, b| if sx(a, 32) > sx(b, 32) { a } else { b };
    /// PABSB: of the source; the most negative value stays as it is.
    Pabsb, 8, |_a, b| sx(b, 8).unsigned_abs();
    /// PABSW.
    Pabsw, 16, |_a, b| sx(b, 16).unsigned_abs();
    /// PABSD.
    Pabsd, 32, |_a, b| sx(b, 32).unsigned_abs();
    /// PSIGNB: negate, zero or keep each destination lane by the source lane's sign.
    Psignb, 8, |a, b| sign(a, b, 8);
    /// PSIGNW.
    Psignw, 16, |a, b| sign(a, b, 16);
    /// PSIGND.
    Psignd, 32, |a, b| sign(a, b, 32);
    /// PSADBW: per quadword, the sum of the absolute byte differences.
    Psadbw, 64, |a, b| {
        let mut s = 0u64;
        for k in 0..8 {
            let x = (a >> (8 * k)) & 0xff;
            let y = (b >> (8 * k)) & 0xff;
            s += x.abs_diff(y);
        }
        s
    };
}

#[inline(always)]
fn sign(a: u64, b: u64, bits: u32) -> u64 {
    match sx(b, bits) {
        s if s < 0 => a.wrapping_neg(),
        0 => 0,
        _ => a,
    }
}

/// Horizontal operation: adjacent lane pairs of the destination give the low half of
/// the result, those of the source the high half.
#[inline(always)]
fn horiz(a: u128, b: u128, w: usize, bits: u32, f: impl Fn(u64, u64) -> u64) -> u128 {
    let half = w * 4 / bits as usize;
    let mut r = 0u128;
    for i in 0..half {
        r |= put(i, bits, f(lane(a, 2 * i, bits), lane(a, 2 * i + 1, bits)));
        r |= put(
            half + i,
            bits,
            f(lane(b, 2 * i, bits), lane(b, 2 * i + 1, bits)),
        );
    }
    r
}

macro_rules! horizontal {
    ($($(#[$doc:meta])* $name:ident, $bits:expr, |$x:ident, $y:ident| $e:expr;)*) => {$(
        $(#[$doc])*
        pub(crate) struct $name;
        impl BinOp for $name {
            #[inline(always)]
            fn f(a: u128, b: u128, _: u8, w: usize) -> u128 {
                horiz(a, b, w, $bits, |$x, $y| $e)
            }
        }
    )*};
}

horizontal! {
    /// PHADDW.
    Phaddw, 16, |x, y| x.wrapping_add(y);
    /// PHADDD.
    Phaddd, 32, |x, y| x.wrapping_add(y);
    /// PHADDSW.
    Phaddsw, 16, |x, y| sat_s(sx(x, 16) + sx(y, 16), 16);
    /// PHSUBW.
    Phsubw, 16, |x, y| x.wrapping_sub(y);
    /// PHSUBD.
    Phsubd, 32, |x, y| x.wrapping_sub(y);
    /// PHSUBSW.
    Phsubsw, 16, |x, y| sat_s(sx(x, 16) - sx(y, 16), 16);
}

/// MPSADBW: eight sums of absolute differences between a 4-byte block of the source
/// (imm8[1:0]) and sliding 4-byte windows of an 11-byte destination block (imm8[2]).
pub(crate) struct Mpsadbw;
impl BinOp for Mpsadbw {
    fn f(a: u128, b: u128, imm: u8, _: usize) -> u128 {
        let aoff = usize::from((imm >> 2) & 1) * 4;
        let boff = usize::from(imm & 3) * 4;
        let mut r = 0u128;
        for i in 0..8 {
            let mut s = 0u64;
            for j in 0..4 {
                s += lane(a, aoff + i + j, 8).abs_diff(lane(b, boff + j, 8));
            }
            r |= put(i, 16, s);
        }
        r
    }
}

/// PHMINPOSUW: the smallest unsigned word of the source (the first if repeated) and its
/// index; the rest of the destination is zeroed.
pub(crate) struct Phminposuw;
impl BinOp for Phminposuw {
    fn f(_: u128, b: u128, _: u8, _: usize) -> u128 {
        let mut best = lane(b, 0, 16);
        let mut at = 0u64;
        for i in 1..8 {
            let v = lane(b, i, 16);
            if v < best {
                best = v;
                at = i as u64;
            }
        }
        u128::from(best | (at << 16))
    }
}

/// The handler for `op` if it is integer arithmetic.
pub(super) fn select(op: &Op) -> Option<Handler> {
    Some(match op.i.mnemonic() {
        M::Paddb => pick::<Paddb>(op),
        M::Paddw => pick::<Paddw>(op),
        M::Paddd => pick::<Paddd>(op),
        M::Paddq => pick::<Paddq>(op),
        M::Psubb => pick::<Psubb>(op),
        M::Psubw => pick::<Psubw>(op),
        M::Psubd => pick::<Psubd>(op),
        M::Psubq => pick::<Psubq>(op),
        M::Paddsb => pick::<Paddsb>(op),
        M::Paddsw => pick::<Paddsw>(op),
        M::Psubsb => pick::<Psubsb>(op),
        M::Psubsw => pick::<Psubsw>(op),
        M::Paddusb => pick::<Paddusb>(op),
        M::Paddusw => pick::<Paddusw>(op),
        M::Psubusb => pick::<Psubusb>(op),
        M::Psubusw => pick::<Psubusw>(op),
        M::Pmullw => pick::<Pmullw>(op),
        M::Pmulhw => pick::<Pmulhw>(op),
        M::Pmulhuw => pick::<Pmulhuw>(op),
        M::Pmulld => pick::<Pmulld>(op),
        M::Pmuludq => pick::<Pmuludq>(op),
        M::Pmuldq => pick::<Pmuldq>(op),
        M::Pmulhrsw => pick::<Pmulhrsw>(op),
        M::Pmaddwd => pick::<Pmaddwd>(op),
        M::Pmaddubsw => pick::<Pmaddubsw>(op),
        M::Pavgb => pick::<Pavgb>(op),
        M::Pavgw => pick::<Pavgw>(op),
        M::Pminub => pick::<Pminub>(op),
        M::Pminuw => pick::<Pminuw>(op),
        M::Pminud => pick::<Pminud>(op),
        M::Pmaxub => pick::<Pmaxub>(op),
        M::Pmaxuw => pick::<Pmaxuw>(op),
        M::Pmaxud => pick::<Pmaxud>(op),
        M::Pminsb => pick::<Pminsb>(op),
        M::Pminsw => pick::<Pminsw>(op),
        M::Pminsd => pick::<Pminsd>(op),
        M::Pmaxsb => pick::<Pmaxsb>(op),
        M::Pmaxsw => pick::<Pmaxsw>(op),
        M::Pmaxsd => pick::<Pmaxsd>(op),
        M::Pabsb => pick::<Pabsb>(op),
        M::Pabsw => pick::<Pabsw>(op),
        M::Pabsd => pick::<Pabsd>(op),
        M::Psignb => pick::<Psignb>(op),
        M::Psignw => pick::<Psignw>(op),
        M::Psignd => pick::<Psignd>(op),
        M::Psadbw => pick::<Psadbw>(op),
        M::Phaddw => pick::<Phaddw>(op),
        M::Phaddd => pick::<Phaddd>(op),
        M::Phaddsw => pick::<Phaddsw>(op),
        M::Phsubw => pick::<Phsubw>(op),
        M::Phsubd => pick::<Phsubd>(op),
        M::Phsubsw => pick::<Phsubsw>(op),
        M::Mpsadbw => pick::<Mpsadbw>(op),
        M::Phminposuw => pick::<Phminposuw>(op),
        _ => return None,
    })
}
