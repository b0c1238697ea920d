//! Stack management: FXCH, FFREE, FFREEP, FINCSTP, FDECSTP, FNOP and WAIT/FWAIT.

use super::f80::INDEFINITE;
use super::{is_empty, pop, set_st, st, start, sti, underflow, wait_nm};
use crate::cpu::Cpu;
use crate::decode::{Handler, Op};
use crate::exception::Ex;
use crate::fpu::fsw;
use iced_x86::Code;
use opsvisor_core::mmu::memory::GuestMemory;

/// The handler for `code` if it manages the stack.
pub fn select(code: Code) -> Option<Handler> {
    use Code as C;
    Some(match code {
        C::Fxch_st0_sti | C::Fxch_st0_sti_DDC8 | C::Fxch_st0_sti_DFC8 => fxch,
        C::Ffree_sti => ffree::<false>,
        C::Ffreep_sti => ffree::<true>,
        C::Fincstp => incdec::<1>,
        C::Fdecstp => incdec::<7>,
        C::Fnop => fnop,
        C::Wait => wait,
        _ => return None,
    })
}

fn fxch(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    start(c, op)?;
    let i = if op.i.op_count() > 1 {
        sti(op, 1)
    } else {
        sti(op, 0)
    };
    let x = &mut c.fpu.x87;
    x.fsw &= !fsw::C1;
    let (e0, ei) = (is_empty(x, 0), is_empty(x, i));
    if e0 || ei {
        if !underflow(x) {
            return Ok(());
        }
        // Masked: an empty register takes the indefinite, then the exchange happens.
        if e0 {
            set_st(x, 0, INDEFINITE);
        }
        if ei {
            set_st(x, i, INDEFINITE);
        }
    }
    let (a, b) = (st(x, 0), st(x, i));
    set_st(x, 0, b);
    set_st(x, i, a);
    Ok(())
}

fn ffree<const P: bool>(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    start(c, op)?;
    let i = sti(op, 0);
    let x = &mut c.fpu.x87;
    // The condition codes are undefined; the host clears C1 (and leaves the others).
    x.fsw &= !crate::fpu::fsw::C1;
    let p = x.phys(i);
    x.ftw &= !(1 << p);
    if P {
        pop(x);
    }
    Ok(())
}

fn incdec<const D: usize>(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    start(c, op)?;
    let x = &mut c.fpu.x87;
    x.fsw &= !fsw::C1;
    let t = x.top() + D;
    x.set_top(t);
    Ok(())
}

fn fnop(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    start(c, op)
}

/// WAIT/FWAIT: #NM only with CR0.MP and TS both set, then any pending x87 exception.
fn wait(c: &mut Cpu, _: &mut GuestMemory, _: &Op) -> Result<(), Ex> {
    wait_nm(c)?;
    c.x87_pending_check()
}
