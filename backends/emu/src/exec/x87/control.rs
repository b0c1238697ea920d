//! The control and status words: FLDCW, FNSTCW/FSTCW, FNSTSW/FSTSW (memory and AX),
//! FNCLEX/FCLEX, FNINIT/FINIT, and the 8087/287 leftovers FNENI/FNDISI/FNSETPM (and
//! their waiting forms), which later processors execute as no-ops.
//!
//! These are control instructions: they leave the last-instruction pointers alone, and
//! the non-waiting FN* forms do not raise a pending #MF.

use super::start_control;
use crate::cpu::Cpu;
use crate::decode::{Handler, Op};
use crate::exception::Ex;
use crate::exec::ea;
use crate::fpu::{fcw, fsw, X87};
use iced_x86::Code;
use opsvisor_core::mmu::memory::GuestMemory;

/// The handler for `code` if it is a control-word or status-word instruction.
pub fn select(code: Code) -> Option<Handler> {
    use Code as C;
    Some(match code {
        C::Fldcw_m2byte => fldcw,
        C::Fnstcw_m2byte => fstcw::<false>,
        C::Fstcw_m2byte => fstcw::<true>,
        C::Fnstsw_m2byte => fstsw_m::<false>,
        C::Fstsw_m2byte => fstsw_m::<true>,
        C::Fnstsw_AX => fstsw_ax::<false>,
        C::Fstsw_AX => fstsw_ax::<true>,
        C::Fnclex => fclex::<false>,
        C::Fclex => fclex::<true>,
        C::Fninit => finit::<false>,
        C::Finit => finit::<true>,
        C::Fneni | C::Fndisi | C::Fnsetpm => legacy_nop::<false>,
        C::Feni | C::Fdisi | C::Fsetpm => legacy_nop::<true>,
        _ => return None,
    })
}

/// The control word as stored: bit 6 reads as one, the reserved bits 7 and 13-15 as
/// zero.
pub fn clean_fcw(v: u16) -> u16 {
    (v & 0x1f3f) | 0x40
}

/// Recompute ES and B from the exception flags and masks (after the masks or flags
/// were loaded).
pub fn update_summary(x: &mut X87) {
    let pending = x.fsw & !x.fcw & 0x3f != 0;
    if pending {
        x.fsw |= fsw::ES | fsw::B;
    } else {
        x.fsw &= !(fsw::ES | fsw::B);
    }
}

fn fldcw(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    start_control(c, true)?;
    let a = ea(c, op);
    let v = c.rd(mem, op.seg, a, 2)? as u16;
    let x = &mut c.fpu.x87;
    x.fcw = clean_fcw(v);
    update_summary(x);
    Ok(())
}

fn fstcw<const W: bool>(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    start_control(c, W)?;
    let a = ea(c, op);
    let v = c.fpu.x87.fcw;
    c.wr(mem, op.seg, a, 2, u64::from(v))
}

fn fstsw_m<const W: bool>(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    start_control(c, W)?;
    let a = ea(c, op);
    let v = c.fpu.x87.fsw;
    c.wr(mem, op.seg, a, 2, u64::from(v))
}

fn fstsw_ax<const W: bool>(c: &mut Cpu, _: &mut GuestMemory, _: &Op) -> Result<(), Ex> {
    start_control(c, W)?;
    let v = c.fpu.x87.fsw;
    c.set(0, 2, u64::from(v));
    Ok(())
}

fn fclex<const W: bool>(c: &mut Cpu, _: &mut GuestMemory, _: &Op) -> Result<(), Ex> {
    start_control(c, W)?;
    c.fpu.x87.fsw &= !(fsw::FLAGS | fsw::SF | fsw::ES | fsw::B);
    Ok(())
}

/// The FNINIT state: control word 037Fh, status word 0 (TOP 0), every register empty,
/// pointers and opcode cleared. The register contents stay.
pub fn init(x: &mut X87) {
    x.fcw = fcw::DEFAULT;
    x.fsw = 0;
    x.ftw = 0;
    x.fop = 0;
    x.fip = 0;
    x.fcs = 0;
    x.fdp = 0;
    x.fds = 0;
}

fn finit<const W: bool>(c: &mut Cpu, _: &mut GuestMemory, _: &Op) -> Result<(), Ex> {
    start_control(c, W)?;
    init(&mut c.fpu.x87);
    Ok(())
}

fn legacy_nop<const W: bool>(c: &mut Cpu, _: &mut GuestMemory, _: &Op) -> Result<(), Ex> {
    start_control(c, W)
}
