//! RDMSR and WRMSR: answered by the MSR table; an access it refuses raises #GP(0).

use crate::apic::{X2APIC_MSR_FIRST, X2APIC_MSR_LAST};
use crate::msr::MsrContext;
use crate::ops::{Event, Gpr, X86Ops};
use crate::platform::Platform;
use crate::vm::{Flow, Vm};

/// IA32_APIC_BASE: writes change the APIC's mode (and move or remove the xAPIC page).
const MSR_APIC_BASE: u32 = 0x1b;
/// The x2APIC ICR: a write sends an IPI.
const MSR_X2APIC_ICR: u32 = 0x830;
/// The x2APIC SELF IPI register.
const MSR_X2APIC_SELF_IPI: u32 = 0x83f;
/// IA32_TSC.
pub(crate) const MSR_TSC: u32 = 0x10;
/// IA32_TSC, IA32_TSC_ADJUST and IA32_TSC_DEADLINE change when timers fire.
const TIME_MSRS: [u32; 3] = [MSR_TSC, 0x3b, 0x6e0];

/// Whether an MSR access needs the current time: the TSC MSRs and the x2APIC timer
/// registers (x2APIC MSR `0x800 + offset / 16` mirrors the xAPIC register at `offset`).
fn msr_needs_clock(index: u32) -> bool {
    TIME_MSRS.contains(&index)
        || ((X2APIC_MSR_FIRST..=X2APIC_MSR_LAST).contains(&index)
            && super::mmio::apic_register_is_timer((index - X2APIC_MSR_FIRST) << 4))
}

/// Whether an MSR write may change which interrupt is pending (EOI, TPR, ICR, SELF IPI,
/// LVT and SVR writes: anything in the x2APIC range, and IA32_APIC_BASE).
fn msr_changes_events(index: u32) -> bool {
    index == MSR_APIC_BASE || (X2APIC_MSR_FIRST..=X2APIC_MSR_LAST).contains(&index)
}

/// #GP.
const GP_VECTOR: u8 = 13;

/// RDMSR read `value`: EDX:EAX take it and the instruction retires. The run loop's
/// handler, and the quick path's for the TSC (see `exits::quick`).
#[inline(always)]
pub(crate) fn complete_rdmsr<B: X86Ops, P: Platform>(
    backend: &mut B,
    platform: &mut P,
    value: u64,
) {
    backend.set_gpr(Gpr::Rax, value & 0xffff_ffff);
    backend.set_gpr(Gpr::Rdx, value >> 32);
    backend.skip_emulated_instruction();
    platform.observe_read(value);
}

impl<B: X86Ops, P: Platform> Vm<B, P> {
    /// The current vCPU's MSRs and what accessing them needs.
    fn msr_context(&mut self) -> (&mut crate::msr::MsrState, MsrContext<'_, B>) {
        let v = &mut self.vcpus[self.cur];
        let host_tsc = v
            .limit
            .tsc
            .wrapping_add_signed(v.msrs.tsc_offset().wrapping_neg());
        (
            &mut v.msrs,
            MsrContext {
                vcpu: &mut v.backend,
                apic: &mut v.apic,
                cpuid: &self.cpuid,
                host_tsc,
            },
        )
    }

    // Inlined into the run loop for the common time read, which is then a few moves.
    #[inline(always)]
    pub(crate) fn handle_rdmsr(&mut self, index: u32) -> Flow {
        if index == MSR_TSC {
            // IA32_TSC is the counter RDTSC reads (SDM 3B 18.17): a backend that counts it
            // between the core's clock reads (the emulator) gives the value its RDTSC
            // would, with no read of the host clock, which costs more than the rest of
            // the exit.
            if let Some(tsc) = self.vcpus[self.cur].backend.guest_tsc() {
                return self.complete_rdmsr(tsc);
            }
        }
        self.handle_rdmsr_table(index)
    }

    /// RDMSR answered by the MSR table (or, for IA32_TSC on a backend that does not count
    /// it, the clock).
    #[inline(never)]
    fn handle_rdmsr_table(&mut self, index: u32) -> Flow {
        if index == MSR_TSC {
            // The MSR table's answer, the host clock plus the TSC offset, is the TSC the
            // clock was just caught up to.
            self.catch_up_clock();
            let value = self.vcpus[self.cur].limit.tsc;
            return self.complete_rdmsr(value);
        }
        if msr_needs_clock(index) {
            // The TSC and the APIC timer's current count must be read against the clock
            // as it is now, not as of the last clock read.
            self.catch_up_clock();
        }
        let (msrs, cx) = self.msr_context();
        match msrs.read(index, cx) {
            Ok(value) => self.complete_rdmsr(value),
            Err(_) => self.inject_gp(),
        }
    }

    /// RDMSR read `value`: EDX:EAX take it and the instruction retires.
    #[inline(always)]
    fn complete_rdmsr(&mut self, value: u64) -> Flow {
        complete_rdmsr(&mut self.vcpus[self.cur].backend, &mut self.platform, value);
        Flow::Resume
    }

    pub(crate) fn handle_wrmsr(&mut self, index: u32, value: u64) -> Flow {
        let timer_related = msr_needs_clock(index);
        if timer_related {
            self.catch_up_clock();
        }
        let (msrs, cx) = self.msr_context();
        match msrs.write(index, value, cx) {
            Ok(()) => {
                self.vcpu().backend.skip_emulated_instruction();
                if index == MSR_X2APIC_ICR || index == MSR_X2APIC_SELF_IPI {
                    self.route_ipi();
                }
                // A new deadline, an EOI, a TPR change or an IPI alter what is pending and
                // when.
                if timer_related {
                    Flow::Clock
                } else if msr_changes_events(index) {
                    Flow::Events
                } else {
                    Flow::Resume
                }
            }
            Err(_) => self.inject_gp(),
        }
    }

    /// Queue #GP(0) for the instruction that caused the exit (it is not retired).
    pub(crate) fn inject_gp(&mut self) -> Flow {
        self.vcpu().backend.inject_event(Event::Exception {
            vector: GP_VECTOR,
            error_code: Some(0),
        });
        Flow::Resume
    }
}
