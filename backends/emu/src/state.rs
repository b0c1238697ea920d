//! The emulator's whole-vCPU state for snapshots ([`X86Ops::save_state`] and
//! [`X86Ops::restore_state`]): the state every backend exposes, plus what only the
//! emulator has, carried in [`VcpuState::backend`] as an [`EmuState`].
//!
//! A vCPU is saved at an instruction boundary between two runs. An intercepted
//! instruction still waiting for the core, or an MMIO read being replayed, is mid-way
//! through an instruction and refuses the save; an INS element or an MMIO store the
//! core has completed but the emulator has not yet stored or reported travels with the
//! state, as KVM carries its pending I/O.

use crate::EmuVcpu;
use opsvisor_core::ops::{
    common_vcpu_state, restore_common_vcpu_state, VcpuState, VcpuStateError, X86Ops,
};
use opsvisor_core::snapshot::codec;
use serde::{Deserialize, Serialize};

/// What only the emulator holds of a vCPU's state (the `backend` bytes of its
/// [`VcpuState`]; its fields are encoded as `docs/snapshot.md` describes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmuState {
    /// The current privilege level (CS.DPL as the emulator's own loads set it, which a
    /// conforming code segment makes differ from SS.DPL).
    pub cpl: u8,
    /// DR0-DR7.
    pub dr: [u64; 8],
    /// IA32_DEBUGCTL (BTF).
    pub debugctl: u64,
    /// A debug trap held back by a MOV SS shadow (its DR6 bits; 0: none).
    pub db_held: u64,
    /// The interrupt shadow is a MOV SS one (it also holds back debug traps).
    pub ss_shadow: bool,
    /// XCR0.
    pub xcr0: u64,
    /// PKRU.
    pub pkru: u32,
    /// NMIs blocked (between an NMI's delivery and IRET).
    pub nmi_blocked: bool,
    /// The x87 FCS and FDS, which the 64-bit FXSAVE image has no room for.
    pub fcs: u16,
    /// See `fcs`.
    pub fds: u16,
    /// The core asked for an interrupt window.
    pub irq_window: bool,
    /// The core asked for an NMI window.
    pub nmi_window: bool,
    /// Instructions retired since the vCPU was created.
    pub retired: u64,
    /// The guest TSC (the emulator's count from the TSC the core last handed over).
    pub tsc: u64,
    /// An INS element completed by the core, stored on the next run.
    pub ins_store: Option<(u64, u8, u32, u64)>,
    /// MMIO stores of the last instruction not yet reported.
    pub mmio_writes: [Option<(u64, u8, u64)>; 2],
}

impl EmuVcpu {
    pub(crate) fn save_whole_state(&self) -> Result<VcpuState, VcpuStateError> {
        let c = &self.cpu;
        if c.intercept.is_some() {
            return Err(VcpuStateError::Backend(
                "an intercepted instruction is waiting for the core to complete it".into(),
            ));
        }
        if c.mmio.len != 0 || c.mmio.want.is_some() {
            return Err(VcpuStateError::Backend(
                "an instruction is part-way through its MMIO reads".into(),
            ));
        }
        let mut state = common_vcpu_state(self);
        state.pending_event = self.pending;
        let own = EmuState {
            cpl: c.cpl,
            dr: c.dr,
            debugctl: c.debugctl,
            db_held: c.db_held,
            ss_shadow: c.ss_shadow,
            xcr0: c.xcr0,
            pkru: c.pkru,
            nmi_blocked: c.nmi_blocked,
            fcs: c.fpu.x87.fcs,
            fds: c.fpu.x87.fds,
            irq_window: self.irq_window,
            nmi_window: self.nmi_window,
            retired: c.retired,
            tsc: c.tsc(),
            ins_store: c.ins_store,
            mmio_writes: [c.mmio.write, c.mmio.write2],
        };
        state.backend = codec::encode(&own);
        Ok(state)
    }

    pub(crate) fn restore_whole_state(&mut self, state: &VcpuState) -> Result<(), VcpuStateError> {
        let own: EmuState = codec::decode("emulator", &state.backend).map_err(|e| {
            VcpuStateError::Backend(alloc::format!("field {}: {}", e.field, e.problem))
        })?;
        if own.cpl > 3 {
            return Err(VcpuStateError::Backend(alloc::format!(
                "field cpl: {} is not a privilege level (0 to 3)",
                own.cpl
            )));
        }
        let components = opsvisor_core::arch::XCR0_X87 | opsvisor_core::arch::XCR0_SSE;
        if own.xcr0 & opsvisor_core::arch::XCR0_X87 == 0 || own.xcr0 & !components != 0 {
            return Err(VcpuStateError::Backend(alloc::format!(
                "field xcr0: {:#x} (x87 must be set, and only x87 and SSE exist here)",
                own.xcr0
            )));
        }
        if let Some((_, size, _, _)) = own.ins_store {
            if !matches!(size, 1 | 2 | 4) {
                return Err(VcpuStateError::Backend(alloc::format!(
                    "field ins_store: element size {size} (expected 1, 2 or 4)"
                )));
            }
        }
        for (gpa, size, _) in own.mmio_writes.iter().flatten() {
            if !matches!(size, 1 | 2 | 4 | 8) || gpa.checked_add(u64::from(*size)).is_none() {
                return Err(VcpuStateError::Backend(alloc::format!(
                    "field mmio_writes: a store of {size} bytes at {gpa:#x}"
                )));
            }
        }
        // Everything cached from before (decoded blocks, translations, a block to resume)
        // belongs to another state.
        // The machine's settings for the vCPU (PAUSE exits, event exits) are not guest
        // state and stay as they are.
        let (pause_exits, event_exits) = (self.cpu.pause_exits, self.cpu.event_exits);
        self.vcpu_reset(opsvisor_core::ops::ResetKind::PowerOn);
        self.cpu.pause_exits = pause_exits;
        self.cpu.event_exits = event_exits;
        restore_common_vcpu_state(self, state)?;
        let c = &mut self.cpu;
        c.cpl = own.cpl;
        c.dr = own.dr;
        c.debugctl = own.debugctl;
        c.db_held = own.db_held;
        c.ss_shadow = own.ss_shadow && c.shadow;
        c.xcr0 = own.xcr0;
        c.pkru = own.pkru;
        c.nmi_blocked = own.nmi_blocked;
        c.fpu.x87.fcs = own.fcs;
        c.fpu.x87.fds = own.fds;
        c.retired = own.retired;
        c.tsc_entry = own.tsc;
        c.tsc_base_retired = own.retired;
        c.ins_store = own.ins_store;
        c.mmio.write = own.mmio_writes[0];
        c.mmio.write2 = own.mmio_writes[1];
        c.update_mode();
        c.update_sel();
        crate::debug::update(c);
        self.pending = state.pending_event;
        self.irq_window = own.irq_window;
        self.nmi_window = own.nmi_window;
        self.invalidate_code();
        Ok(())
    }
}
