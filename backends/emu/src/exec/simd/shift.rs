//! Shifts: PSLLW/D/Q, PSRLW/D/Q, PSRAW/D by an immediate or by the low quadword of a
//! register or memory operand (counts past the lane width clear the lane, or fill it
//! with the sign for arithmetic shifts), and the byte shifts PSLLDQ/PSRLDQ.

use super::{lane, pick, put, sx, BinOp};
use crate::decode::{Handler, Op};
use iced_x86::Mnemonic as M;

/// Apply a lane shift by the count in `b` (its low 64 bits) to each `bits`-bit lane.
#[inline(always)]
fn shift_lanes(a: u128, b: u128, w: usize, bits: u32, kind: u8) -> u128 {
    let cnt = b as u64;
    let n = w * 8 / bits as usize;
    let mut r = 0u128;
    for i in 0..n {
        let x = lane(a, i, bits);
        let v = match kind {
            LEFT if cnt < u64::from(bits) => x << cnt,
            RIGHT if cnt < u64::from(bits) => x >> cnt,
            ARITH => (sx(x, bits) >> cnt.min(u64::from(bits) - 1)) as u64,
            _ => 0,
        };
        r |= put(i, bits, v);
    }
    r
}

const LEFT: u8 = 0;
const RIGHT: u8 = 1;
const ARITH: u8 = 2;

macro_rules! shifts {
    ($($(#[$doc:meta])* $name:ident, $bits:expr, $kind:expr;)*) => {$(
        $(#[$doc])*
        pub(crate) struct $name;
        impl BinOp for $name {
            #[inline(always)]
            fn f(a: u128, b: u128, _: u8, w: usize) -> u128 {
                shift_lanes(a, b, w, $bits, $kind)
            }
        }
    )*};
}

shifts! {
    /// PSLLW.
    Psllw, 16, LEFT;
    /// PSLLD.
    Pslld, 32, LEFT;
    /// PSLLQ.
    Psllq, 64, LEFT;
    /// PSRLW.
    Psrlw, 16, RIGHT;
    /// PSRLD.
    Psrld, 32, RIGHT;
    /// PSRLQ.
    Psrlq, 64, RIGHT;
    /// PSRAW.
    Psraw, 16, ARITH;
    /// PSRAD.
    Psrad, 32, ARITH;
}

/// PSLLDQ xmm, imm8: shift the whole register left by imm8 bytes.
pub(crate) struct Pslldq;
impl BinOp for Pslldq {
    #[inline(always)]
    fn f(a: u128, b: u128, _: u8, _: usize) -> u128 {
        if b > 15 {
            0
        } else {
            a << (8 * b as u32)
        }
    }
}

/// PSRLDQ xmm, imm8: shift the whole register right by imm8 bytes.
pub(crate) struct Psrldq;
impl BinOp for Psrldq {
    #[inline(always)]
    fn f(a: u128, b: u128, _: u8, _: usize) -> u128 {
        if b > 15 {
            0
        } else {
            a >> (8 * b as u32)
        }
    }
}

/// The handler for `op` if it is a shift.
pub(super) fn select(op: &Op) -> Option<Handler> {
    Some(match op.i.mnemonic() {
        M::Psllw => pick::<Psllw>(op),
        M::Pslld => pick::<Pslld>(op),
        M::Psllq => pick::<Psllq>(op),
        M::Psrlw => pick::<Psrlw>(op),
        M::Psrld => pick::<Psrld>(op),
        M::Psrlq => pick::<Psrlq>(op),
        M::Psraw => pick::<Psraw>(op),
        M::Psrad => pick::<Psrad>(op),
        M::Pslldq => pick::<Pslldq>(op),
        M::Psrldq => pick::<Psrldq>(op),
        _ => return None,
    })
}
