//! ADDSUBPS/ADDSUBPD (subtract in even lanes, add in odd ones) and the horizontal
//! HADDPS/HADDPD/HSUBPS/HSUBPD (pairs of adjacent lanes of the destination, then of the
//! source).

use super::{fmt, lane, set_lane, src, xmm_of, Acc, Kind};
use crate::cpu::Cpu;
use crate::decode::{Handler, Op};
use crate::exception::Ex;
use iced_x86::Code;
use opsvisor_core::mmu::memory::GuestMemory;

const ADDSUB: u8 = 0;
const HADD: u8 = 1;
const HSUB: u8 = 2;

/// The handler for `code`, if it is one of this family's.
pub fn select(code: Code) -> Option<Handler> {
    use Code as C;
    Some(match code {
        C::Addsubps_xmm_xmmm128 => op::<ADDSUB, 4>,
        C::Addsubpd_xmm_xmmm128 => op::<ADDSUB, 8>,
        C::Haddps_xmm_xmmm128 => op::<HADD, 4>,
        C::Haddpd_xmm_xmmm128 => op::<HADD, 8>,
        C::Hsubps_xmm_xmmm128 => op::<HSUB, 4>,
        C::Hsubpd_xmm_xmmm128 => op::<HSUB, 8>,
        _ => return None,
    })
}

fn op<const OP: u8, const W: u8>(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    c.sse_check()?;
    let d = xmm_of(op, 0);
    let b = src(c, mem, op, 1)?;
    let a = c.fpu.xmm[d];
    let f = fmt(W);
    let bits = u32::from(W) * 8;
    let lanes = 16 / u32::from(W);
    let half = lanes / 2;
    let mut acc = Acc::new(c);
    let mut out = 0;
    for i in 0..lanes {
        let (x, y, add) = match OP {
            ADDSUB => (lane(a, bits, i), lane(b, bits, i), i & 1 == 1),
            _ => {
                let (v, k) = if i < half { (a, i) } else { (b, i - half) };
                (lane(v, bits, 2 * k), lane(v, bits, 2 * k + 1), OP == HADD)
            }
        };
        let r = if add {
            acc.op(f, Kind::Add, x, y)
        } else {
            acc.op(f, Kind::Sub, x, y)
        };
        out = set_lane(out, bits, i, r);
    }
    acc.finish(c)?;
    c.fpu.xmm[d] = out;
    Ok(())
}
