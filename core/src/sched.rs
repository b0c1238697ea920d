//! How a machine's vCPUs share the host thread: deterministic turns, round robin.
//!
//! [`crate::vm::Vm::run`] runs every vCPU on the thread that calls it. A vCPU runs a
//! *turn*: until it has retired [`crate::vm::VmConfig::smp_turn`] instructions (or, on a backend
//! that does not count them, for [`crate::vm::VmConfig::smp_turn_ns`] of host time), until it
//! executes PAUSE (the spin-wait hint: whatever it waits for needs another vCPU to run,
//! so it gives way at once, as KVM's PAUSE-loop exiting yields), or until it halts or
//! waits for SIPI. Then the next vCPU in index order that can run takes its turn; a
//! halted vCPU can run again once an interrupt it can take, an NMI, or an INIT or
//! start-up IPI is pending for it. When no vCPU can run, the thread sleeps in
//! [`Platform::wait`] until the earliest timer that could wake one, or console input
//! (`idle`): a halted vCPU costs no host time. With one vCPU none of this applies:
//! its run is one long turn, exactly the single-vCPU loop.
//!
//! Why turns on one thread rather than a host thread per vCPU:
//!
//! - **Correctness comes free.** Only one vCPU touches guest memory at a time, and it
//!   switches only at instruction boundaries, so every instruction (LOCK-prefixed or not,
//!   XCHG, a split access, a REP element) is atomic with respect to the others, and the
//!   order of memory accesses is sequentially consistent: an execution the x86 memory
//!   model (TSO) allows. No host atomics, no locks on the exit path, no data race between
//!   host threads on guest memory, and the devices stay plain `&mut` state.
//! - **Determinism.** Where each turn ends depends on the guest's instructions, not on
//!   the host's scheduling (timer interrupts aside, whose delivery depends on the clock
//!   as before), which snapshots and debugging need.
//! - **The host has 2 cores** shared with other work: a thread per vCPU would not run
//!   four vCPUs in parallel anyway, and would spin host cores on guest spinlocks.
//!
//! What it costs: the guest's vCPUs run one at a time, so a CPU-bound guest gets one
//! host core's worth of emulation whatever `--smp` says. The README's section on several
//! vCPUs has the measurements.
//!
//! Fairness: turns go round robin and every turn ends within its budget, so no vCPU is
//! starved; a spinning vCPU gives its turn away at its first PAUSE, so the lock holder
//! or the IPI target it waits for runs next. Timers of halted vCPUs end the running
//! vCPU's slice when they expire (the run limit's deadline includes them), so a sleeping
//! vCPU wakes on time even while another computes.

use crate::ops::X86Ops;
use crate::platform::Platform;
use crate::vm::{earliest, MpState, RunOutcome, Vm, COM1_IRQ};

/// Instructions in one vCPU's turn (the default [`crate::vm::VmConfig::smp_turn`]).
pub const DEFAULT_TURN: u64 = 50_000;
/// Host time one turn may take at most (the default [`crate::vm::VmConfig::smp_turn_ns`]): 2 ms.
pub const DEFAULT_TURN_NS: u64 = 2_000_000;

impl<B: X86Ops, P: Platform> Vm<B, P> {
    /// Run the vCPUs in turns until the run stops.
    pub(crate) fn run_vcpus(&mut self) -> RunOutcome {
        if core::mem::take(&mut self.resume_turn)
            && self.vcpus[self.cur].mp_state == MpState::Runnable
        {
            if let Some(outcome) = self.continue_turn() {
                return outcome;
            }
        }
        loop {
            match self.next_vcpu() {
                Some(i) => {
                    self.cur = i;
                    if let Some(outcome) = self.run_turn() {
                        return outcome;
                    }
                }
                None => {
                    if let Some(outcome) = self.idle() {
                        return outcome;
                    }
                }
            }
        }
    }

    /// The vCPU whose turn comes next: the first after the current one, in index order
    /// and wrapping around to it, that can run. Halted vCPUs have their timers brought
    /// to the present first, so an expiry during the last turn wakes them.
    fn next_vcpu(&mut self) -> Option<usize> {
        let n = self.vcpus.len();
        if n == 1 {
            return self.vcpus[0].can_run().then_some(0);
        }
        let now_ns = self.now_ns();
        for k in 1..=n {
            let i = (self.cur + k) % n;
            let v = &mut self.vcpus[i];
            if v.mp_state == MpState::Halted {
                v.apic.update(v.ns_to_tsc(now_ns));
            }
            if v.can_run() {
                return Some(i);
            }
        }
        None
    }

    /// A halted vCPU's timer came due during the current turn (the turn's run limit ends
    /// there, see [`crate::vm::Vm::halted_wakeup_ns`]): bring the timers of the halted
    /// vCPUs to `now_ns`. Returns whether one of them can now run, which ends the turn so
    /// that it takes its interrupt promptly, as a processor of its own would. Once
    /// brought up to date, a timer whose interrupt is requested no longer counts as due,
    /// so this cannot end turn after turn without progress.
    pub(crate) fn wake_halted(&mut self, now_ns: u64) -> bool {
        if self.halted_wakeup_ns().is_none_or(|ns| ns > now_ns) {
            return false;
        }
        let cur = self.cur;
        let mut woken = false;
        for (i, v) in self.vcpus.iter_mut().enumerate() {
            if i != cur && v.mp_state == MpState::Halted {
                v.apic.update(v.ns_to_tsc(now_ns));
                woken |= v.can_run();
            }
        }
        woken
    }

    /// The current vCPU's turn begins: its budget of instructions and host time.
    pub(crate) fn start_turn(&mut self) {
        let now_ns = self.now_ns();
        self.turn_end_ns = now_ns.saturating_add(self.config.smp_turn_ns.max(1));
        let v = &self.vcpus[self.cur];
        let retired = v.backend.instructions_retired().unwrap_or(0);
        self.turn_end_retired = retired.saturating_add(self.config.smp_turn.max(1));
    }

    /// What is left of the current vCPU's turn at `now_ns`, in instructions (unbounded
    /// for a backend that does not count them); `None` when it is over.
    pub(crate) fn turn_left(&self, now_ns: u64) -> Option<u64> {
        if now_ns >= self.turn_end_ns {
            return None;
        }
        match self.vcpus[self.cur].backend.instructions_retired() {
            Some(retired) => match self.turn_end_retired.saturating_sub(retired) {
                0 => None,
                left => Some(left),
            },
            None => Some(u64::MAX),
        }
    }

    /// The host time at which the current turn ends, with several vCPUs: a deadline for
    /// backends that do not count instructions.
    pub(crate) fn turn_end_ns(&self) -> u64 {
        self.turn_end_ns
    }

    /// No vCPU can run: sleep until one can. Every halted vCPU's timer and the platform
    /// timers are brought to the present; a vCPU with something to take wakes the
    /// machine (`None`). Otherwise the thread waits for the earliest timer that could
    /// interrupt a halted vCPU with interrupts enabled, or for console input that could
    /// raise COM1's interrupt. With nothing that could ever wake a vCPU (every one halted
    /// with interrupts off or with no timer armed, or waiting for SIPI) the run ends:
    /// [`RunOutcome::HaltedForever`].
    pub(crate) fn idle(&mut self) -> Option<RunOutcome> {
        loop {
            let host_ns = self.platform.now_ns();
            if let Some(timeout) = self.config.timeout_ns {
                if host_ns.saturating_sub(self.run_started_ns()) >= timeout {
                    return Some(RunOutcome::Timeout);
                }
            }
            let now_ns = self.clock_at(host_ns);
            if self.platform.stop_requested() {
                return Some(RunOutcome::Quit);
            }
            for v in &mut self.vcpus {
                if v.mp_state == MpState::Halted {
                    v.apic.update(v.ns_to_tsc(now_ns));
                }
            }
            self.update_platform_timers(now_ns);
            self.update_com1_irq();
            if self.vcpus.iter().any(|v| v.can_run()) {
                return None;
            }
            // Only a maskable interrupt can end these HLTs, so the timers matter only
            // while some halted vCPU takes interrupts.
            let takes_interrupts = self.vcpus.iter().any(|v| {
                v.mp_state == MpState::Halted && v.backend.rflags() & crate::arch::RFLAGS_IF != 0
            });
            let timer_ns = if takes_interrupts {
                earliest(self.halted_wakeup_ns(), self.devices.next_deadline())
            } else {
                None
            };
            if self.config.icount && self.instructions_retired().is_some() {
                if let Some(t) = timer_ns {
                    // Virtual time: nothing happens until the timer, so it is now, unless
                    // console input is there to be taken first.
                    if !self.platform.console_input_ready() {
                        self.idle_ns = self.idle_ns.wrapping_add(t.saturating_sub(now_ns));
                    }
                    continue;
                }
            }
            let timeout_ns = self
                .config
                .timeout_ns
                .map(|t| self.run_started_ns().saturating_add(t));
            // The wait is on the host clock: the timer's distance from now, from now.
            let timer_host_ns = timer_ns.map(|t| host_ns.saturating_add(t.saturating_sub(now_ns)));
            let wake_ns = earliest(timer_host_ns, timeout_ns);
            // Console input can wake a vCPU only through COM1's received-data interrupt,
            // and only by raising its line: a line already high has done all it can.
            let console_wakes = takes_interrupts
                && self.devices.com1.console_input_interrupts()
                && !self.devices.irqchip.line(COM1_IRQ)
                && self.platform.console_input_possible();
            if timer_ns.is_none() && !console_wakes {
                // Nothing armed can raise an interrupt: the guest would sleep forever.
                return Some(RunOutcome::HaltedForever);
            }
            if !self.platform.wait(wake_ns) && timer_ns.is_none() {
                // No input can ever arrive (the console is closed).
                return Some(RunOutcome::HaltedForever);
            }
        }
    }
}
