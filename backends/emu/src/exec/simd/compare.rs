//! Lane compares: PCMPEQB/W/D/Q and the signed PCMPGTB/W/D/Q; each lane becomes all
//! ones when the comparison holds, else zero.

use super::{pick, sx};
use crate::decode::{Handler, Op};
use iced_x86::Mnemonic as M;

/// All ones (truncated to the lane) when `c` holds.
#[inline(always)]
fn ones(c: bool) -> u64 {
    if c {
        u64::MAX
    } else {
        0
    }
}

lanewise! {
    /// PCMPEQB.
    Pcmpeqb, 8, |a, b| ones(a == b);
    /// PCMPEQW.
    Pcmpeqw, 16, |a, b| ones(a == b);
    /// PCMPEQD.
    Pcmpeqd, 32, |a, b| ones(a == b);
    /// PCMPEQQ.
    Pcmpeqq, 64, |a, b| ones(a == b);
    /// PCMPGTB.
    Pcmpgtb, 8, |a, b| ones(sx(a, 8) > sx(b, 8));
    /// PCMPGTW.
    Pcmpgtw, 16, |a, b| ones(sx(a, 16) > sx(b, 16));
    /// PCMPGTD.
    Pcmpgtd, 32, |a, b| ones(sx(a, 32) > sx(b, 32));
    /// PCMPGTQ.
    Pcmpgtq, 64, |a, b| ones((a as i64) > (b as i64));
}

/// The handler for `op` if it is a lane compare.
pub(super) fn select(op: &Op) -> Option<Handler> {
    Some(match op.i.mnemonic() {
        M::Pcmpeqb => pick::<Pcmpeqb>(op),
        M::Pcmpeqw => pick::<Pcmpeqw>(op),
        M::Pcmpeqd => pick::<Pcmpeqd>(op),
        M::Pcmpeqq => pick::<Pcmpeqq>(op),
        M::Pcmpgtb => pick::<Pcmpgtb>(op),
        M::Pcmpgtw => pick::<Pcmpgtw>(op),
        M::Pcmpgtd => pick::<Pcmpgtd>(op),
        M::Pcmpgtq => pick::<Pcmpgtq>(op),
        _ => return None,
    })
}
