//! CPUID: answered from the CPU policy, with the vCPU's own APIC ID.

use crate::apic::LocalApic;
use crate::cpuid::{CpuidDynamic, CpuidPolicy};
use crate::ops::{Gpr, X86Ops};
use crate::platform::Platform;
use crate::vm::{Flow, Vm};

/// Answer the CPUID that `backend` exited on, from `policy` and the vCPU's `apic`, and
/// retire it. The run loop's handler, and the quick path's (see `exits::quick`).
// Inlined into both: the call costs more than the lookup.
#[inline(always)]
pub(crate) fn answer_cpuid<B: X86Ops>(policy: &CpuidPolicy, apic: &LocalApic, backend: &mut B) {
    let leaf = backend.gpr(Gpr::Rax) as u32;
    // A leaf the policy holds as it is is read from the table a register at a time (see
    // `CpuidPolicy::fixed_leaf`). CPUID writes the full 64-bit registers, zero-extending
    // the 32-bit results.
    let [a, b, c, d] = match policy.fixed_leaf(leaf) {
        Some(regs) => [
            u64::from(regs[0]),
            u64::from(regs[1]),
            u64::from(regs[2]),
            u64::from(regs[3]),
        ],
        None => {
            let subleaf = backend.gpr(Gpr::Rcx) as u32;
            let cr4 = backend.cr4();
            policy
                .lookup_with(leaf, subleaf, || CpuidDynamic {
                    apic_id: apic.id(),
                    osxsave: cr4 & crate::arch::CR4_OSXSAVE != 0,
                    apic_enabled: apic.base_msr() & crate::arch::APIC_BASE_ENABLE != 0,
                    pke: cr4 & crate::arch::CR4_PKE != 0,
                })
                .map(u64::from)
        }
    };
    backend.set_gpr(Gpr::Rax, a);
    backend.set_gpr(Gpr::Rbx, b);
    backend.set_gpr(Gpr::Rcx, c);
    backend.set_gpr(Gpr::Rdx, d);
    backend.skip_emulated_instruction();
}

impl<B: X86Ops, P: Platform> Vm<B, P> {
    #[inline(always)]
    pub(crate) fn handle_cpuid(&mut self) -> Flow {
        let v = &mut self.vcpus[self.cur];
        answer_cpuid(&self.cpuid, &v.apic, &mut v.backend);
        Flow::Resume
    }
}
