//! BOUND: check a signed array index against a pair of bounds in memory (#BR when out of
//! range). Outside 64-bit mode only; the decoder gives #UD for it in 64-bit mode.

use crate::cpu::Cpu;
use crate::decode::Op;
use crate::exception::{fault, Ex, BR};
use crate::exec::ea;
use opsvisor_core::mmu::memory::GuestMemory;

/// BOUND r16, m16&16 / BOUND r32, m32&32.
pub fn bound(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let size = u32::from(op.size);
    let a = ea(c, op);
    let lower = c.rd(mem, op.seg, a, size)?;
    let upper = c.rd(
        mem,
        op.seg,
        a.wrapping_add(u64::from(size)) & op.amask,
        size,
    )?;
    let index = c.get(op.r[0], size);
    let signed = |v: u64| -> i64 {
        if size == 2 {
            i64::from(v as u16 as i16)
        } else {
            i64::from(v as u32 as i32)
        }
    };
    let i = signed(index);
    if i < signed(lower) || i > signed(upper) {
        return Err(fault(BR));
    }
    Ok(())
}
