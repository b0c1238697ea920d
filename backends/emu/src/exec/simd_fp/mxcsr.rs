//! LDMXCSR and STMXCSR.

use crate::cpu::Cpu;
use crate::decode::{Handler, Op};
use crate::exception::{Ex, GP};
use crate::exec::ea;
use crate::fpu::mxcsr::WRITABLE;
use iced_x86::Code;
use opsvisor_core::mmu::memory::GuestMemory;

/// The handler for `code`, if it is one of this family's.
pub fn select(code: Code) -> Option<Handler> {
    match code {
        Code::Ldmxcsr_m32 => Some(ldmxcsr),
        Code::Stmxcsr_m32 => Some(stmxcsr),
        _ => None,
    }
}

/// LDMXCSR m32: #GP(0) when a reserved bit is set. Loading flags together with their
/// unmasked exceptions raises nothing now (the next SSE instruction that raises one
/// traps).
fn ldmxcsr(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    c.sse_check()?;
    let a = ea(c, op);
    let v = c.rd(mem, op.seg, a, 4)? as u32;
    if v & !WRITABLE != 0 {
        return Err(GP(0));
    }
    c.fpu.mxcsr = v;
    Ok(())
}

/// STMXCSR m32.
fn stmxcsr(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    c.sse_check()?;
    let a = ea(c, op);
    let v = c.fpu.mxcsr;
    c.wr(mem, op.seg, a, 4, u64::from(v))
}
