//! Packs with saturation (PACKSSWB PACKSSDW PACKUSWB PACKUSDW) and the SSE4.1 sign and
//! zero extensions (PMOVSX*, PMOVZX*).

use super::{lane, pick, put, sat_s, sat_u, slane, BinOp};
use crate::decode::{Handler, Op};
use iced_x86::Mnemonic as M;

/// Narrow the signed `bits`-bit lanes of destination (low half of the result) and source
/// (high half) to `bits / 2`, saturating signed or unsigned.
#[inline(always)]
fn pack(a: u128, b: u128, w: usize, bits: u32, signed: bool) -> u128 {
    let n = w * 8 / bits as usize;
    let out = bits / 2;
    let sat = |x: i64| if signed { sat_s(x, out) } else { sat_u(x, out) };
    let mut r = 0u128;
    for i in 0..n {
        r |= put(i, out, sat(slane(a, i, bits)));
        r |= put(n + i, out, sat(slane(b, i, bits)));
    }
    r
}

macro_rules! packs {
    ($($(#[$doc:meta])* $name:ident, $bits:expr, $signed:expr;)*) => {$(
        $(#[$doc])*
        pub(crate) struct $name;
        impl BinOp for $name {
            #[inline(always)]
            fn f(a: u128, b: u128, _: u8, w: usize) -> u128 {
                pack(a, b, w, $bits, $signed)
            }
        }
    )*};
}

packs! {
    /// PACKSSWB.
    Packsswb, 16, true;
    /// PACKSSDW.
    Packssdw, 32, true;
    /// PACKUSWB.
    Packuswb, 16, false;
    /// PACKUSDW.
    Packusdw, 32, false;
}

/// Widen the low lanes of the source from `from` to `to` bits, sign- or zero-extended.
#[inline(always)]
fn extend(b: u128, from: u32, to: u32, signed: bool) -> u128 {
    let n = 128 / to as usize;
    let mut r = 0u128;
    for i in 0..n {
        let v = if signed {
            slane(b, i, from) as u64
        } else {
            lane(b, i, from)
        };
        r |= put(i, to, v);
    }
    r
}

macro_rules! extends {
    ($($(#[$doc:meta])* $name:ident, $from:expr, $to:expr, $signed:expr;)*) => {$(
        $(#[$doc])*
        pub(crate) struct $name;
        impl BinOp for $name {
            #[inline(always)]
            fn f(_: u128, b: u128, _: u8, _: usize) -> u128 {
                extend(b, $from, $to, $signed)
            }
        }
    )*};
}

extends! {
    /// PMOVSXBW.
    Pmovsxbw, 8, 16, true;
    /// PMOVSXBD.
    Pmovsxbd, 8, 32, true;
    /// PMOVSXBQ.
    Pmovsxbq, 8, 64, true;
    /// PMOVSXWD.
    Pmovsxwd, 16, 32, true;
    /// PMOVSXWQ.
    Pmovsxwq, 16, 64, true;
    /// PMOVSXDQ.
    Pmovsxdq, 32, 64, true;
    /// PMOVZXBW.
    Pmovzxbw, 8, 16, false;
    /// PMOVZXBD.
    Pmovzxbd, 8, 32, false;
    /// PMOVZXBQ.
    Pmovzxbq, 8, 64, false;
    /// PMOVZXWD.
    Pmovzxwd, 16, 32, false;
    /// PMOVZXWQ.
    Pmovzxwq, 16, 64, false;
    /// PMOVZXDQ.
    Pmovzxdq, 32, 64, false;
}

/// The handler for `op` if it is a pack or extension.
pub(super) fn select(op: &Op) -> Option<Handler> {
    Some(match op.i.mnemonic() {
        M::Packsswb => pick::<Packsswb>(op),
        M::Packssdw => pick::<Packssdw>(op),
        M::Packuswb => pick::<Packuswb>(op),
        M::Packusdw => pick::<Packusdw>(op),
        M::Pmovsxbw => pick::<Pmovsxbw>(op),
        M::Pmovsxbd => pick::<Pmovsxbd>(op),
        M::Pmovsxbq => pick::<Pmovsxbq>(op),
        M::Pmovsxwd => pick::<Pmovsxwd>(op),
        M::Pmovsxwq => pick::<Pmovsxwq>(op),
        M::Pmovsxdq => pick::<Pmovsxdq>(op),
        M::Pmovzxbw => pick::<Pmovzxbw>(op),
        M::Pmovzxbd => pick::<Pmovzxbd>(op),
        M::Pmovzxbq => pick::<Pmovzxbq>(op),
        M::Pmovzxwd => pick::<Pmovzxwd>(op),
        M::Pmovzxwq => pick::<Pmovzxwq>(op),
        M::Pmovzxdq => pick::<Pmovzxdq>(op),
        _ => return None,
    })
}
