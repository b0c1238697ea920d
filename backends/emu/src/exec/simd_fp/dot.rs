//! DPPS/DPPD: products of the lanes selected by imm8 bits 7:4 (others +0.0), summed
//! pairwise ((p0 + p1) + (p2 + p3) for DPPS), the sum stored in the lanes selected by
//! imm8 bits 3:0 (others +0.0). Every multiply and add rounds and raises its own
//! exceptions. The multiplies are a stage of their own (an unmasked exception there traps
//! before the additions, with the usual pre-/post-computation split); the additions are
//! a second stage, in which denormal products raise DE.

use super::{fmt, lane, set_lane, src, xmm_of, Acc, Kind};
use crate::cpu::Cpu;
use crate::decode::{Handler, Op};
use crate::exception::Ex;
use iced_x86::Code;
use opsvisor_core::mmu::memory::GuestMemory;

/// The handler for `code`, if it is one of this family's.
pub fn select(code: Code) -> Option<Handler> {
    match code {
        Code::Dpps_xmm_xmmm128_imm8 => Some(dp::<4>),
        Code::Dppd_xmm_xmmm128_imm8 => Some(dp::<8>),
        _ => None,
    }
}

fn dp<const W: u8>(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    c.sse_check()?;
    let d = xmm_of(op, 0);
    let b = src(c, mem, op, 1)?;
    let a = c.fpu.xmm[d];
    let imm = op.i.immediate8();
    let f = fmt(W);
    let bits = u32::from(W) * 8;
    let lanes = 16 / u32::from(W);
    let mut acc = Acc::new(c);
    let mut p = [0u128; 4];
    for (i, slot) in p.iter_mut().enumerate().take(lanes as usize) {
        if imm >> (4 + i) & 1 != 0 {
            let (x, y) = (lane(a, bits, i as u32), lane(b, bits, i as u32));
            *slot = acc.op(f, Kind::Mul, x, y);
        }
    }
    // The products are a stage of their own: their flags reach MXCSR (and an unmasked
    // one traps) before the additions run, which then see denormal products as
    // denormal operands.
    acc.finish(c)?;
    let mut acc = Acc::new(c);
    let sum = if W == 4 {
        let s01 = acc.op(f, Kind::Add, p[0], p[1]);
        let s23 = acc.op(f, Kind::Add, p[2], p[3]);
        acc.op(f, Kind::Add, s01, s23)
    } else {
        acc.op(f, Kind::Add, p[0], p[1])
    };
    let mut out = 0;
    for i in 0..lanes {
        if imm >> i & 1 != 0 {
            out = set_lane(out, bits, i, sum);
        }
    }
    acc.finish(c)?;
    c.fpu.xmm[d] = out;
    Ok(())
}
