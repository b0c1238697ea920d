//! CMPPS/CMPSS/CMPPD/CMPSD (predicates 0-7 in imm8 bits 2:0) and COMISS/COMISD/
//! UCOMISS/UCOMISD.

use super::{fmt, lane, set_lane, src, xmm_of, Acc};
use crate::arith::flags::{CF, PF, ZF};
use crate::arith::softfloat::{self as sf, Ordering};
use crate::cpu::Cpu;
use crate::decode::{Handler, Op};
use crate::exception::Ex;
use iced_x86::Code;
use opsvisor_core::mmu::memory::GuestMemory;

/// The handler for `code`, if it is one of this family's.
pub fn select(code: Code) -> Option<Handler> {
    use Code as C;
    Some(match code {
        C::Cmpps_xmm_xmmm128_imm8 => cmp::<4, true>,
        C::Cmpss_xmm_xmmm32_imm8 => cmp::<4, false>,
        C::Cmppd_xmm_xmmm128_imm8 => cmp::<8, true>,
        C::Cmpsd_xmm_xmmm64_imm8 => cmp::<8, false>,
        C::Comiss_xmm_xmmm32 => comis::<4, true>,
        C::Comisd_xmm_xmmm64 => comis::<8, true>,
        C::Ucomiss_xmm_xmmm32 => comis::<4, false>,
        C::Ucomisd_xmm_xmmm64 => comis::<8, false>,
        _ => return None,
    })
}

/// Predicate `p` (0-7: EQ LT LE UNORD NEQ NLT NLE ORD) on an ordering; whether the
/// predicate signals on QNaNs.
pub fn predicate(p: u8, o: Ordering) -> bool {
    use Ordering::*;
    match p & 7 {
        0 => o == Equal,
        1 => o == Less,
        2 => matches!(o, Less | Equal),
        3 => o == Unordered,
        4 => o != Equal,
        5 => o != Less,
        6 => !matches!(o, Less | Equal),
        _ => o != Unordered,
    }
}

/// Whether predicate `p` raises IE for a QNaN operand (LT, LE, NLT, NLE).
fn signaling(p: u8) -> bool {
    matches!(p & 7, 1 | 2 | 5 | 6)
}

fn cmp<const W: u8, const PACKED: bool>(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    op: &Op,
) -> Result<(), Ex> {
    c.sse_check()?;
    let d = xmm_of(op, 0);
    let b = src(c, mem, op, 1)?;
    let a = c.fpu.xmm[d];
    let p = op.i.immediate8();
    let f = fmt(W);
    let bits = u32::from(W) * 8;
    let lanes = if PACKED { 16 / u32::from(W) } else { 1 };
    let mut acc = Acc::new(c);
    let mut out = a;
    for i in 0..lanes {
        let mut e = acc.env(f);
        let o = sf::compare(f, lane(a, bits, i), lane(b, bits, i), signaling(p), &mut e);
        acc.record(e.flags);
        let r = if predicate(p, o) { u128::MAX } else { 0 };
        out = set_lane(out, bits, i, r);
    }
    acc.finish(c)?;
    c.fpu.xmm[d] = out;
    Ok(())
}

fn comis<const W: u8, const SIGNALING: bool>(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    op: &Op,
) -> Result<(), Ex> {
    c.sse_check()?;
    let a = c.fpu.xmm[xmm_of(op, 0)];
    let b = src(c, mem, op, 1)?;
    let f = fmt(W);
    let bits = u32::from(W) * 8;
    let mut acc = Acc::new(c);
    let mut e = acc.env(f);
    let o = sf::compare(f, lane(a, bits, 0), lane(b, bits, 0), SIGNALING, &mut e);
    acc.record(e.flags);
    acc.finish(c)?;
    let zpc = match o {
        Ordering::Unordered => ZF | PF | CF,
        Ordering::Less => CF,
        Ordering::Equal => ZF,
        Ordering::Greater => 0,
    };
    // OF, SF and AF are cleared.
    let status = crate::arith::flags::ARITH;
    c.update_flags(|rf| (rf & !status) | zpc);
    Ok(())
}
