//! CPUID: answered from the CPU policy.

use crate::cpuid::CpuidDynamic;
use crate::ops::{Gpr, X86Ops};
use crate::platform::Platform;
use crate::vm::{Flow, Vm};

impl<B: X86Ops, P: Platform> Vm<B, P> {
    // Inlined into the run loop: the call and its `Flow` return cost more than the lookup.
    #[inline(always)]
    pub(crate) fn handle_cpuid(&mut self) -> Flow {
        let leaf = self.vcpu.gpr(Gpr::Rax) as u32;
        let subleaf = self.vcpu.gpr(Gpr::Rcx) as u32;
        let vcpu = &self.vcpu;
        let apic = &self.apic;
        let [a, b, c, d] = self.cpuid.lookup_with(leaf, subleaf, || CpuidDynamic {
            apic_id: 0,
            osxsave: vcpu.cr4() & crate::arch::CR4_OSXSAVE != 0,
            apic_enabled: apic.base_msr() & crate::arch::APIC_BASE_ENABLE != 0,
            pke: vcpu.cr4() & crate::arch::CR4_PKE != 0,
        });
        // CPUID writes the full 64-bit registers, zero-extending the 32-bit results.
        self.vcpu.set_gpr(Gpr::Rax, u64::from(a));
        self.vcpu.set_gpr(Gpr::Rbx, u64::from(b));
        self.vcpu.set_gpr(Gpr::Rcx, u64::from(c));
        self.vcpu.set_gpr(Gpr::Rdx, u64::from(d));
        self.vcpu.skip_emulated_instruction();
        Flow::Resume
    }
}
