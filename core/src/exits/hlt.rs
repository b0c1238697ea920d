//! HLT: the vCPU sleeps until an NMI, an INIT or start-up IPI, or an interrupt it can
//! take is pending (a fixed interrupt of the local APIC, or the PIC's through LINT0).
//! Its turn ends; the scheduler ([`crate::sched`]) runs the other vCPUs, and when none
//! can run, the host thread blocks in [`crate::platform::Platform::wait`] until a timer
//! deadline passes (the local APIC's timer, the PIT, the RTC, the ACPI PM timer) or
//! console input raises COM1's interrupt: it never spins.

use crate::ops::X86Ops;
use crate::platform::Platform;
use crate::vm::{Flow, MpState, Vm};

impl<B: X86Ops, P: Platform> Vm<B, P> {
    pub(crate) fn handle_hlt(&mut self) -> Flow {
        self.vcpu().backend.skip_emulated_instruction();
        // Time may already have made an interrupt pending: look with the clock as it is
        // now before sleeping.
        let now_ns = self.now_ns();
        self.catch_up_clock();
        self.update_platform_timers(now_ns);
        self.update_com1_irq();
        let v = self.vcpu();
        if v.has_wakeup_event() {
            return Flow::Clock;
        }
        v.mp_state = MpState::Halted;
        Flow::Yield
    }
}
