//! ROUNDPS/ROUNDSS/ROUNDPD/ROUNDSD: round to an integral value with the mode of imm8
//! bits 1:0, or MXCSR.RC when bit 2 is set; bit 3 suppresses the precision exception.
//! Only a signaling NaN raises IE; denormal operands raise nothing (and read as zero
//! under DAZ).

use super::{fmt, lane, set_lane, src, xmm_of, Acc};
use crate::arith::softfloat::{self as sf, Round};
use crate::cpu::Cpu;
use crate::decode::{Handler, Op};
use crate::exception::Ex;
use iced_x86::Code;
use opsvisor_core::mmu::memory::GuestMemory;

/// The handler for `code`, if it is one of this family's.
pub fn select(code: Code) -> Option<Handler> {
    use Code as C;
    Some(match code {
        C::Roundps_xmm_xmmm128_imm8 => round::<4, true>,
        C::Roundss_xmm_xmmm32_imm8 => round::<4, false>,
        C::Roundpd_xmm_xmmm128_imm8 => round::<8, true>,
        C::Roundsd_xmm_xmmm64_imm8 => round::<8, false>,
        _ => return None,
    })
}

fn round<const W: u8, const PACKED: bool>(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    op: &Op,
) -> Result<(), Ex> {
    c.sse_check()?;
    let d = xmm_of(op, 0);
    let b = src(c, mem, op, 1)?;
    let imm = op.i.immediate8();
    let f = fmt(W);
    let bits = u32::from(W) * 8;
    let lanes = if PACKED { 16 / u32::from(W) } else { 1 };
    let mut acc = Acc::new(c);
    let mode = if imm & 4 != 0 {
        Round::from_rc(acc.mxcsr >> 13)
    } else {
        Round::from_rc(u32::from(imm))
    };
    let signal = imm & 8 == 0;
    let mut out = c.fpu.xmm[d];
    for i in 0..lanes {
        let x = lane(b, bits, i);
        let mut e = acc.env(f);
        let r = sf::round_to_integral(f, x, mode, signal, &mut e);
        acc.record(e.flags);
        out = set_lane(out, bits, i, r);
    }
    acc.finish(c)?;
    c.fpu.xmm[d] = out;
    Ok(())
}
