//! HLT: the vCPU sleeps until an NMI or an interrupt it can take is pending (a fixed
//! interrupt of the local APIC, or the PIC's through LINT0), a timer deadline passes (the
//! local APIC's timer, the PIT, the RTC, the ACPI PM timer), or console input raises
//! COM1's interrupt. The host thread blocks in [`Platform::wait`];
//! it never spins.

use crate::arch::RFLAGS_IF;
use crate::ops::X86Ops;
use crate::platform::Platform;
use crate::vm::{earliest, Flow, RunOutcome, Vm, COM1_IRQ};

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
            self.update_platform_timers(now_ns);
            self.update_com1_irq();
            let interrupts_on = self.vcpu.rflags() & RFLAGS_IF != 0;
            if self.vcpu.event_pending()
                || self.apic.nmi_pending()
                || (interrupts_on
                    && (self.apic.pending_interrupt().is_some() || self.apic.extint_pending()))
            {
                return Flow::Clock;
            }
            // Only a maskable interrupt can end this HLT, so the timers matter only while
            // the guest takes interrupts.
            let timer_ns = if interrupts_on {
                self.next_wakeup_ns()
            } else {
                None
            };
            let timeout_ns = self
                .config
                .timeout_ns
                .map(|t| self.run_started_ns().saturating_add(t));
            let wake_ns = earliest(timer_ns, timeout_ns);
            // Console input can wake the guest only through COM1's received-data
            // interrupt, and only by raising its line: a line already high has done all
            // it can.
            let console_wakes = self.devices.com1.console_input_interrupts()
                && !self.devices.irqchip.line(COM1_IRQ)
                && self.platform.console_input_possible();
            if timer_ns.is_none() && !console_wakes {
                // Nothing armed can raise an interrupt: the guest would sleep forever.
                return self.stop(RunOutcome::HaltedForever);
            }
            if !self.platform.wait(wake_ns) && timer_ns.is_none() {
                // No input can ever arrive (the console is closed).
                return self.stop(RunOutcome::HaltedForever);
            }
        }
    }
}
