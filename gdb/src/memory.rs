//! Guest memory by virtual address, as gdb reads and writes it: each page translated by
//! core's walker with the vCPU's paging registers (paging off: the address is
//! physical).

use opsvisor_core::mmu::walk::{walk, Access, PagingRegs};
use opsvisor_core::ops::X86Ops;
use opsvisor_core::GuestMemory;

/// The translation registers of `v` now.
pub fn paging(v: &impl X86Ops) -> PagingRegs {
    PagingRegs {
        cr0: v.cr0(),
        cr3: v.cr3(),
        cr4: v.cr4(),
        efer: v.efer(),
        // A debugger's accesses are not the guest's: protection keys do not stop them
        // (as QEMU's gdbstub reads through the page tables alone).
        pkru: 0,
    }
}

/// The guest-physical address of virtual `addr`, if it is mapped (the walk sets the
/// accessed bits, as the guest's own access would).
pub fn translate(mem: &mut GuestMemory, regs: &PagingRegs, addr: u64, write: bool) -> Option<u64> {
    let access = Access {
        write,
        ..Access::default()
    };
    walk(mem, regs, addr, access).ok().map(|t| t.gpa)
}

/// Read `data.len()` bytes at virtual `start`: how many were read before the first
/// unmapped page or one outside guest RAM (0: none).
pub fn read_virtual(
    mem: &mut GuestMemory,
    regs: &PagingRegs,
    start: u64,
    data: &mut [u8],
) -> usize {
    let mut done = 0;
    while done < data.len() {
        let addr = start.wrapping_add(done as u64);
        let in_page = (0x1000 - (addr & 0xfff)) as usize;
        let n = in_page.min(data.len() - done);
        let Some(gpa) = translate(mem, regs, addr, false) else {
            break;
        };
        if mem.read(gpa, &mut data[done..done + n]).is_err() {
            break;
        }
        done += n;
    }
    done
}

/// Write `data` at virtual `start`; `false` at the first page that is unmapped or not
/// guest RAM (the pages before it are written).
pub fn write_virtual(mem: &mut GuestMemory, regs: &PagingRegs, start: u64, data: &[u8]) -> bool {
    let mut done = 0;
    while done < data.len() {
        let addr = start.wrapping_add(done as u64);
        let in_page = (0x1000 - (addr & 0xfff)) as usize;
        let n = in_page.min(data.len() - done);
        let Some(gpa) = translate(mem, regs, addr, true) else {
            return false;
        };
        if mem.write(gpa, &data[done..done + n]).is_err() {
            return false;
        }
        done += n;
    }
    true
}
