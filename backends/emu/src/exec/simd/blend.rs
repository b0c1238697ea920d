//! Blends: BLENDPS/BLENDPD/PBLENDW choose each lane from the destination or the source
//! by an imm8 bit; BLENDVPS/BLENDVPD/PBLENDVB by the sign bit of the matching lane of
//! the implicit XMM0.

use super::{lane, pick, put, src, BinOp};
use crate::cpu::Cpu;
use crate::decode::{Handler, Op};
use crate::exception::Ex;
use iced_x86::Mnemonic as M;
use opsvisor_core::mmu::memory::GuestMemory;

/// Lane `i` of `bits` from `b` where bit `i` of `sel` is set, else from `a`.
#[inline(always)]
fn blend(a: u128, b: u128, bits: u32, sel: u32) -> u128 {
    let n = 128 / bits as usize;
    let mut r = 0u128;
    for i in 0..n {
        let from = if sel >> i & 1 != 0 { b } else { a };
        r |= put(i, bits, lane(from, i, bits));
    }
    r
}

macro_rules! blends {
    ($($(#[$doc:meta])* $name:ident, $bits:expr;)*) => {$(
        $(#[$doc])*
        pub(crate) struct $name;
        impl BinOp for $name {
            #[inline(always)]
            fn f(a: u128, b: u128, imm: u8, _: usize) -> u128 {
                blend(a, b, $bits, u32::from(imm))
            }
        }
    )*};
}

blends! {
    /// BLENDPS.
    Blendps, 32;
    /// BLENDPD.
    Blendpd, 64;
    /// PBLENDW.
    Pblendw, 16;
}

/// BLENDVPS/BLENDVPD/PBLENDVB xmm1, xmm2/m128, <XMM0> with `BITS`-bit lanes.
fn blendv<const BITS: u32>(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    c.sse_check()?;
    let b = src(c, mem, op, 1)?;
    let mask = c.fpu.xmm[0];
    let n = 128 / BITS as usize;
    let mut sel = 0u32;
    for i in 0..n {
        sel |= ((lane(mask, i, BITS) >> (BITS - 1)) as u32) << i;
    }
    let d = super::xi(op.i.op_register(0));
    c.fpu.xmm[d] = blend(c.fpu.xmm[d], b, BITS, sel);
    Ok(())
}

/// The handler for `op` if it is a blend.
pub(super) fn select(op: &Op) -> Option<Handler> {
    Some(match op.i.mnemonic() {
        M::Blendps => pick::<Blendps>(op),
        M::Blendpd => pick::<Blendpd>(op),
        M::Pblendw => pick::<Pblendw>(op),
        M::Blendvps => blendv::<32>,
        M::Blendvpd => blendv::<64>,
        M::Pblendvb => blendv::<8>,
        _ => return None,
    })
}
