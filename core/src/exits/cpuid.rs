//! CPUID: answered from the CPU policy, with the vCPU's own APIC ID.

use crate::cpuid::CpuidDynamic;
use crate::ops::{Gpr, X86Ops};
use crate::platform::Platform;
use crate::vm::{Flow, Vm};

impl<B: X86Ops, P: Platform> Vm<B, P> {
    // Inlined into the run loop: the call and its `Flow` return cost more than the lookup.
    #[inline(always)]
    pub(crate) fn handle_cpuid(&mut self) -> Flow {
        let v = &mut self.vcpus[self.cur];
        let leaf = v.backend.gpr(Gpr::Rax) as u32;
        // A leaf the policy holds as it is is read from the table a register at a time
        // (see `CpuidPolicy::fixed_leaf`). CPUID writes the full 64-bit registers,
        // zero-extending the 32-bit results.
        let [a, b, c, d] = match self.cpuid.fixed_leaf(leaf) {
            Some(regs) => [
                u64::from(regs[0]),
                u64::from(regs[1]),
                u64::from(regs[2]),
                u64::from(regs[3]),
            ],
            None => {
                let subleaf = v.backend.gpr(Gpr::Rcx) as u32;
                let (backend, apic) = (&v.backend, &v.apic);
                self.cpuid
                    .lookup_with(leaf, subleaf, || CpuidDynamic {
                        apic_id: apic.id(),
                        osxsave: backend.cr4() & crate::arch::CR4_OSXSAVE != 0,
                        apic_enabled: apic.base_msr() & crate::arch::APIC_BASE_ENABLE != 0,
                        pke: backend.cr4() & crate::arch::CR4_PKE != 0,
                    })
                    .map(u64::from)
            }
        };
        let backend = &mut v.backend;
        backend.set_gpr(Gpr::Rax, a);
        backend.set_gpr(Gpr::Rbx, b);
        backend.set_gpr(Gpr::Rcx, c);
        backend.set_gpr(Gpr::Rdx, d);
        backend.skip_emulated_instruction();
        Flow::Resume
    }
}
