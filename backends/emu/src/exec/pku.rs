//! Protection keys for user-mode pages: RDPKRU and WRPKRU (SDM 2). The rights in PKRU
//! are applied by the page walker ([`opsvisor_core::mmu::walk`]) on every translation of
//! a user-mode page for a data access.

use crate::cpu::{cr4, Cpu};
use crate::decode::Op;
use crate::exception::{ud, Ex, GP};
use opsvisor_core::mmu::memory::GuestMemory;

/// RDPKRU: EAX = PKRU, EDX = 0 (#UD without CR4.PKE, #GP(0) unless ECX is 0).
pub fn rdpkru(c: &mut Cpu, _: &mut GuestMemory, _: &Op) -> Result<(), Ex> {
    if c.cr4 & cr4::PKE == 0 {
        return Err(ud());
    }
    if c.gpr[1] as u32 != 0 {
        return Err(GP(0));
    }
    c.set(0, 4, u64::from(c.pkru));
    c.set(2, 4, 0);
    Ok(())
}

/// WRPKRU: PKRU = EAX (#UD without CR4.PKE, #GP(0) unless ECX and EDX are 0). The
/// translations cached under the old rights are dropped.
pub fn wrpkru(c: &mut Cpu, _: &mut GuestMemory, _: &Op) -> Result<(), Ex> {
    if c.cr4 & cr4::PKE == 0 {
        return Err(ud());
    }
    if c.gpr[1] as u32 != 0 || c.gpr[2] as u32 != 0 {
        return Err(GP(0));
    }
    set_pkru(c, c.gpr[0] as u32);
    Ok(())
}

/// Load PKRU, dropping the TLB's translations when the rights change (they were checked
/// against the old value when cached). Instruction fetches do not depend on PKRU.
pub fn set_pkru(c: &mut Cpu, value: u32) {
    if value != c.pkru {
        c.pkru = value;
        c.tlb.flush(true);
    }
}
