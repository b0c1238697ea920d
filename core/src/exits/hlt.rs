//! HLT: the vCPU sleeps until an interrupt can be delivered or a timer deadline passes.
//! The host thread blocks in [`Platform::wait`]; it never spins.

use crate::arch::RFLAGS_IF;
use crate::ops::X86Ops;
use crate::platform::Platform;
use crate::vm::{Flow, RunOutcome, Vm};

impl<B: X86Ops, P: Platform> Vm<B, P> {
    pub(crate) fn handle_hlt(&mut self) -> Flow {
        self.vcpu.skip_emulated_instruction();
        loop {
            let now_ns = self.platform.now_ns();
            if let Some(timeout) = self.config.timeout_ns {
                if now_ns.saturating_sub(self.run_started_ns()) >= timeout {
                    return self.stop(RunOutcome::Timeout);
                }
            }
            self.catch_up_clock();
            let interrupts_on = self.vcpu.rflags() & RFLAGS_IF != 0;
            if self.vcpu.event_pending()
                || (interrupts_on && self.apic.pending_interrupt().is_some())
            {
                return Flow::Clock;
            }
            let timer = if interrupts_on {
                self.apic.next_deadline()
            } else {
                None
            };
            // The guest TSC runs at 1 GHz from the host's nanosecond clock plus an offset,
            // so a TSC deadline converts to host time by removing the offset.
            let timer_ns =
                timer.map(|tsc| tsc.wrapping_add_signed(self.msrs.tsc_offset().wrapping_neg()));
            let timeout_ns = self
                .config
                .timeout_ns
                .map(|t| self.run_started_ns().saturating_add(t));
            let wake_ns = match (timer_ns, timeout_ns) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if timer_ns.is_none() {
                // Nothing armed can raise an interrupt: no device here has an interrupt
                // line yet, so the guest would sleep forever.
                return self.stop(RunOutcome::HaltedForever);
            }
            self.platform.wait(wake_ns);
        }
    }
}
