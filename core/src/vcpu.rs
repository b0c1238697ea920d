//! One vCPU of the machine (Linux KVM's `struct kvm_vcpu`): everything that exists once
//! per processor.
//!
//! A [`Vcpu`] holds the backend that runs it (its registers live there), its local APIC,
//! the MSRs the core keeps for it (the TSC offset, MTRRs, ...), where it is in its life
//! ([`MpState`]: running, halted, waiting for a start-up IPI), and the run loop's state
//! for it (the limit handed to its backend, the windows asked for). Everything shared by
//! the vCPUs (memory, buses, devices, the CPUID policy) is the machine's:
//! [`crate::vm::Vm`].
//!
//! The bootstrap processor (index 0) starts in the state its loader gave it; the
//! application processors start in wait-for-SIPI, as after a power-on reset, and are
//! started by INIT and start-up IPIs from another vCPU ([`Vcpu::accept_events`], KVM's
//! `kvm_apic_accept_events`).

use crate::apic::LocalApic;
use crate::msr::MsrState;
use crate::ops::{ResetKind, RunLimit, SegReg, Segment, X86Ops};

/// Where a vCPU is in its life (KVM's `mp_state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MpState {
    /// It runs guest code when its turn comes.
    Runnable,
    /// It executed HLT and sleeps until an interrupt it can take, an NMI, or an INIT.
    Halted,
    /// After a power-on reset (an application processor) or an INIT: it runs nothing
    /// until a start-up IPI arrives.
    WaitForSipi,
}

/// One vCPU: its backend, its local APIC, its MSRs and its run state.
pub struct Vcpu<B: X86Ops> {
    /// The vCPU's index in the machine: 0 for the bootstrap processor. Its local APIC's
    /// initial ID, and what CPUID reports as its APIC ID, are this index.
    index: u32,
    /// The backend that runs it (its registers and the rest of its architectural state).
    pub backend: B,
    /// Its local APIC.
    pub apic: LocalApic,
    /// The MSRs the core holds for it.
    pub msrs: MsrState,
    /// Running, halted, or waiting for SIPI.
    pub(crate) mp_state: MpState,
    /// The limit handed to the backend; refreshed when the clock is read.
    pub(crate) limit: RunLimit,
    /// The backend's retired-instruction count when the current or last run of the
    /// machine started.
    pub(crate) retired_at_start: u64,
    /// Whether the core asked the backend for an interrupt window.
    pub(crate) irq_window: bool,
    /// Whether the core asked the backend for an NMI window.
    pub(crate) nmi_window: bool,
}

impl<B: X86Ops> Vcpu<B> {
    /// vCPU `index` on `backend`: the bootstrap processor (index 0) runnable in whatever
    /// state the backend holds; an application processor reset to its power-on state
    /// and waiting for SIPI.
    pub(crate) fn new(index: u32, mut backend: B, time_slice: u64) -> Vcpu<B> {
        let mp_state = if index == 0 {
            MpState::Runnable
        } else {
            backend.vcpu_reset(ResetKind::PowerOn);
            MpState::WaitForSipi
        };
        Vcpu {
            index,
            backend,
            apic: LocalApic::new(index),
            msrs: MsrState::new(),
            mp_state,
            limit: RunLimit {
                tsc: 0,
                deadline: None,
                max_instructions: time_slice,
            },
            retired_at_start: 0,
            irq_window: false,
            nmi_window: false,
        }
    }

    /// The vCPU's index: 0 for the bootstrap processor, then 1, 2, ...
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Whether it runs, sleeps in HLT or waits for a start-up IPI.
    pub fn mp_state(&self) -> MpState {
        self.mp_state
    }

    /// Act on the INIT and start-up IPIs its APIC received (KVM's
    /// `kvm_apic_accept_events`). INIT resets the vCPU (the backend's INIT reset, the
    /// APIC's [`LocalApic::init_reset`]) and leaves it waiting for SIPI; the bootstrap
    /// processor (IA32_APIC_BASE.BSP) instead runs again from the reset vector, as
    /// hardware does. A start-up IPI starts a vCPU that waits for one in real mode at
    /// `vector << 12` (CS = vector << 8, IP = 0); one that arrives in any other state is
    /// dropped. Returns whether the state changed.
    pub fn accept_events(&mut self) -> bool {
        let mut changed = false;
        if self.apic.take_init() {
            self.backend.vcpu_reset(ResetKind::Init);
            self.apic.init_reset();
            self.irq_window = false;
            self.nmi_window = false;
            self.backend.enable_irq_window(false);
            self.backend.enable_nmi_window(false);
            self.mp_state = if self.apic.base_msr() & crate::apic::APIC_BASE_BSP != 0 {
                MpState::Runnable
            } else {
                MpState::WaitForSipi
            };
            changed = true;
        }
        if let Some(vector) = self.apic.take_sipi() {
            if self.mp_state == MpState::WaitForSipi {
                let selector = u16::from(vector) << 8;
                self.backend
                    .set_segment(SegReg::Cs, &Segment::real_mode(selector, true));
                self.backend.set_rip(0);
                self.mp_state = MpState::Runnable;
                changed = true;
            }
        }
        changed
    }

    /// Whether something is pending that ends a HLT: an event the backend still has to
    /// deliver, an NMI, an INIT or start-up IPI, or, with RFLAGS.IF set, an interrupt the
    /// local APIC would deliver now or an external interrupt from the PIC.
    pub(crate) fn has_wakeup_event(&self) -> bool {
        if self.backend.event_pending()
            || self.apic.nmi_pending()
            || self.apic.init_pending()
            || self.apic.sipi_pending()
        {
            return true;
        }
        self.backend.rflags() & crate::arch::RFLAGS_IF != 0
            && (self.apic.pending_interrupt().is_some() || self.apic.extint_pending())
    }

    /// Whether it can run now: runnable, or halted with a wake-up event pending, or
    /// waiting for SIPI with an INIT or start-up IPI to act on.
    pub(crate) fn can_run(&self) -> bool {
        match self.mp_state {
            MpState::Runnable => true,
            MpState::Halted => self.has_wakeup_event(),
            MpState::WaitForSipi => self.apic.init_pending() || self.apic.sipi_pending(),
        }
    }

    /// The offset from the machine clock to this vCPU's TSC.
    #[inline]
    pub(crate) fn tsc_offset(&self) -> i64 {
        self.msrs.tsc_offset()
    }

    /// This vCPU's TSC value at machine time `ns` (a time before the TSC's zero is its
    /// zero).
    pub(crate) fn ns_to_tsc(&self, ns: u64) -> u64 {
        let tsc = i128::from(ns) + i128::from(self.tsc_offset());
        u64::try_from(tsc.max(0)).unwrap_or(u64::MAX)
    }

    /// The machine time at which this vCPU's TSC reads `tsc`.
    pub(crate) fn tsc_to_ns(&self, tsc: u64) -> u64 {
        let ns = i128::from(tsc) - i128::from(self.tsc_offset());
        u64::try_from(ns.max(0)).unwrap_or(u64::MAX)
    }
}

impl<B: X86Ops> crate::irq::LocalApics for [Vcpu<B>] {
    #[inline]
    fn count(&self) -> usize {
        self.len()
    }
    #[inline]
    fn apic(&self, i: usize) -> &LocalApic {
        &self[i].apic
    }
    #[inline]
    fn apic_mut(&mut self, i: usize) -> &mut LocalApic {
        &mut self[i].apic
    }
}
