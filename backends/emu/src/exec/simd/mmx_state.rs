//! EMMS: leave MMX state by tagging every x87 register empty. TOP is cleared too (SDM 1
//! table 9-2 lists TOP as 000B after EMMS, and the hardware the oracle runs on agrees).

use crate::cpu::Cpu;
use crate::decode::Op;
use crate::exception::Ex;
use opsvisor_core::mmu::memory::GuestMemory;

/// EMMS.
pub(super) fn emms(c: &mut Cpu, _: &mut GuestMemory, _: &Op) -> Result<(), Ex> {
    c.mmx_check()?;
    c.fpu.x87.ftw = 0;
    c.fpu.x87.set_top(0);
    Ok(())
}
