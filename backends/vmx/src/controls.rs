//! The VM-execution, VM-exit and VM-entry controls this backend runs with, computed
//! against the capability MSRs (SDM 3C 25.6-25.8, A.3-A.5).
//!
//! For each control word the backend asks for the bits it needs, the processor's
//! must-be-one bits are added, and a needed control the processor cannot set is an
//! error naming it. Optional controls (EPT, VPID, unrestricted guest, the preemption
//! timer, the secondary controls, EFER/PAT switching, ...) are used when available and
//! reported in [`Features`].

use crate::caps::{ControlCap, EptVpidCaps, InveptType, InvvpidType, VmxCaps};
use crate::vmcs::{fields, VmcsAccess, VmxError};
use core::fmt;

/// Pin-based VM-execution controls (SDM 3C 25.6.1).
pub mod pin_based {
    /// External-interrupt exiting.
    pub const EXTERNAL_INTERRUPT_EXITING: u32 = 1 << 0;
    /// NMI exiting.
    pub const NMI_EXITING: u32 = 1 << 3;
    /// Virtual NMIs.
    pub const VIRTUAL_NMIS: u32 = 1 << 5;
    /// Activate VMX-preemption timer.
    pub const ACTIVATE_PREEMPTION_TIMER: u32 = 1 << 6;
    /// Process posted interrupts.
    pub const PROCESS_POSTED_INTERRUPTS: u32 = 1 << 7;
}

/// Primary processor-based VM-execution controls (SDM 3C 25.6.2, table 25-6).
pub mod proc_based {
    /// Interrupt-window exiting.
    pub const INTERRUPT_WINDOW_EXITING: u32 = 1 << 2;
    /// Use TSC offsetting.
    pub const USE_TSC_OFFSETTING: u32 = 1 << 3;
    /// HLT exiting.
    pub const HLT_EXITING: u32 = 1 << 7;
    /// INVLPG exiting.
    pub const INVLPG_EXITING: u32 = 1 << 9;
    /// MWAIT exiting.
    pub const MWAIT_EXITING: u32 = 1 << 10;
    /// RDPMC exiting.
    pub const RDPMC_EXITING: u32 = 1 << 11;
    /// RDTSC exiting.
    pub const RDTSC_EXITING: u32 = 1 << 12;
    /// CR3-load exiting.
    pub const CR3_LOAD_EXITING: u32 = 1 << 15;
    /// CR3-store exiting.
    pub const CR3_STORE_EXITING: u32 = 1 << 16;
    /// Activate tertiary controls.
    pub const ACTIVATE_TERTIARY_CONTROLS: u32 = 1 << 17;
    /// CR8-load exiting.
    pub const CR8_LOAD_EXITING: u32 = 1 << 19;
    /// CR8-store exiting.
    pub const CR8_STORE_EXITING: u32 = 1 << 20;
    /// Use TPR shadow.
    pub const USE_TPR_SHADOW: u32 = 1 << 21;
    /// NMI-window exiting.
    pub const NMI_WINDOW_EXITING: u32 = 1 << 22;
    /// MOV-DR exiting.
    pub const MOV_DR_EXITING: u32 = 1 << 23;
    /// Unconditional I/O exiting.
    pub const UNCONDITIONAL_IO_EXITING: u32 = 1 << 24;
    /// Use I/O bitmaps.
    pub const USE_IO_BITMAPS: u32 = 1 << 25;
    /// Monitor trap flag.
    pub const MONITOR_TRAP_FLAG: u32 = 1 << 27;
    /// Use MSR bitmaps.
    pub const USE_MSR_BITMAPS: u32 = 1 << 28;
    /// MONITOR exiting.
    pub const MONITOR_EXITING: u32 = 1 << 29;
    /// PAUSE exiting.
    pub const PAUSE_EXITING: u32 = 1 << 30;
    /// Activate secondary controls.
    pub const ACTIVATE_SECONDARY_CONTROLS: u32 = 1 << 31;
}

/// Secondary processor-based VM-execution controls (SDM 3C 25.6.2, table 25-7).
pub mod proc_based2 {
    /// Virtualize APIC accesses.
    pub const VIRTUALIZE_APIC_ACCESSES: u32 = 1 << 0;
    /// Enable EPT.
    pub const ENABLE_EPT: u32 = 1 << 1;
    /// Descriptor-table exiting.
    pub const DESCRIPTOR_TABLE_EXITING: u32 = 1 << 2;
    /// Enable RDTSCP.
    pub const ENABLE_RDTSCP: u32 = 1 << 3;
    /// Virtualize x2APIC mode.
    pub const VIRTUALIZE_X2APIC_MODE: u32 = 1 << 4;
    /// Enable VPID.
    pub const ENABLE_VPID: u32 = 1 << 5;
    /// WBINVD exiting.
    pub const WBINVD_EXITING: u32 = 1 << 6;
    /// Unrestricted guest.
    pub const UNRESTRICTED_GUEST: u32 = 1 << 7;
    /// APIC-register virtualization.
    pub const APIC_REGISTER_VIRTUALIZATION: u32 = 1 << 8;
    /// Virtual-interrupt delivery.
    pub const VIRTUAL_INTERRUPT_DELIVERY: u32 = 1 << 9;
    /// PAUSE-loop exiting.
    pub const PAUSE_LOOP_EXITING: u32 = 1 << 10;
    /// RDRAND exiting.
    pub const RDRAND_EXITING: u32 = 1 << 11;
    /// Enable INVPCID.
    pub const ENABLE_INVPCID: u32 = 1 << 12;
    /// Enable VM functions.
    pub const ENABLE_VM_FUNCTIONS: u32 = 1 << 13;
    /// VMCS shadowing.
    pub const VMCS_SHADOWING: u32 = 1 << 14;
    /// RDSEED exiting.
    pub const RDSEED_EXITING: u32 = 1 << 16;
    /// Enable PML.
    pub const ENABLE_PML: u32 = 1 << 17;
    /// EPT-violation #VE.
    pub const EPT_VIOLATION_VE: u32 = 1 << 18;
    /// Enable XSAVES/XRSTORS.
    pub const ENABLE_XSAVES: u32 = 1 << 20;
    /// Mode-based execute control for EPT.
    pub const MODE_BASED_EXECUTE_CONTROL: u32 = 1 << 22;
    /// Use TSC scaling.
    pub const USE_TSC_SCALING: u32 = 1 << 25;
}

/// Primary VM-exit controls (SDM 3C 25.7.1, table 25-13).
pub mod exit_ctls {
    /// Save debug controls.
    pub const SAVE_DEBUG_CONTROLS: u32 = 1 << 2;
    /// Host address-space size.
    pub const HOST_ADDRESS_SPACE_SIZE: u32 = 1 << 9;
    /// Load IA32_PERF_GLOBAL_CTRL.
    pub const LOAD_PERF_GLOBAL_CTRL: u32 = 1 << 12;
    /// Acknowledge interrupt on exit.
    pub const ACK_INTERRUPT_ON_EXIT: u32 = 1 << 15;
    /// Save IA32_PAT.
    pub const SAVE_PAT: u32 = 1 << 18;
    /// Load IA32_PAT.
    pub const LOAD_PAT: u32 = 1 << 19;
    /// Save IA32_EFER.
    pub const SAVE_EFER: u32 = 1 << 20;
    /// Load IA32_EFER.
    pub const LOAD_EFER: u32 = 1 << 21;
    /// Save VMX-preemption timer value.
    pub const SAVE_PREEMPTION_TIMER: u32 = 1 << 22;
}

/// VM-entry controls (SDM 3C 25.8.1, table 25-15).
pub mod entry_ctls {
    /// Load debug controls.
    pub const LOAD_DEBUG_CONTROLS: u32 = 1 << 2;
    /// IA-32e mode guest.
    pub const IA32E_MODE_GUEST: u32 = 1 << 9;
    /// Entry to SMM.
    pub const ENTRY_TO_SMM: u32 = 1 << 10;
    /// Deactivate dual-monitor treatment.
    pub const DEACTIVATE_DUAL_MONITOR: u32 = 1 << 11;
    /// Load IA32_PERF_GLOBAL_CTRL.
    pub const LOAD_PERF_GLOBAL_CTRL: u32 = 1 << 13;
    /// Load IA32_PAT.
    pub const LOAD_PAT: u32 = 1 << 14;
    /// Load IA32_EFER.
    pub const LOAD_EFER: u32 = 1 << 15;
}

/// One of the five control words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlWord {
    /// Pin-based VM-execution controls.
    PinBased,
    /// Primary processor-based VM-execution controls.
    PrimaryProcBased,
    /// Secondary processor-based VM-execution controls.
    SecondaryProcBased,
    /// VM-exit controls.
    Exit,
    /// VM-entry controls.
    Entry,
}

impl ControlWord {
    /// The word's name as the SDM writes it.
    pub fn name(self) -> &'static str {
        match self {
            ControlWord::PinBased => "pin-based VM-execution controls",
            ControlWord::PrimaryProcBased => "primary processor-based VM-execution controls",
            ControlWord::SecondaryProcBased => "secondary processor-based VM-execution controls",
            ControlWord::Exit => "VM-exit controls",
            ControlWord::Entry => "VM-entry controls",
        }
    }

    /// The SDM's name of control `bit` of this word (for the controls this backend
    /// asks for; others are "reserved or unused").
    pub fn control_name(self, bit: u8) -> &'static str {
        use ControlWord::*;
        match (self, bit) {
            (PinBased, 0) => "external-interrupt exiting",
            (PinBased, 3) => "NMI exiting",
            (PinBased, 5) => "virtual NMIs",
            (PinBased, 6) => "activate VMX-preemption timer",
            (PrimaryProcBased, 2) => "interrupt-window exiting",
            (PrimaryProcBased, 3) => "use TSC offsetting",
            (PrimaryProcBased, 7) => "HLT exiting",
            (PrimaryProcBased, 9) => "INVLPG exiting",
            (PrimaryProcBased, 10) => "MWAIT exiting",
            (PrimaryProcBased, 11) => "RDPMC exiting",
            (PrimaryProcBased, 15) => "CR3-load exiting",
            (PrimaryProcBased, 16) => "CR3-store exiting",
            (PrimaryProcBased, 19) => "CR8-load exiting",
            (PrimaryProcBased, 20) => "CR8-store exiting",
            (PrimaryProcBased, 22) => "NMI-window exiting",
            (PrimaryProcBased, 25) => "use I/O bitmaps",
            (PrimaryProcBased, 28) => "use MSR bitmaps",
            (PrimaryProcBased, 29) => "MONITOR exiting",
            (PrimaryProcBased, 31) => "activate secondary controls",
            (SecondaryProcBased, 1) => "enable EPT",
            (SecondaryProcBased, 3) => "enable RDTSCP",
            (SecondaryProcBased, 5) => "enable VPID",
            (SecondaryProcBased, 6) => "WBINVD exiting",
            (SecondaryProcBased, 7) => "unrestricted guest",
            (SecondaryProcBased, 12) => "enable INVPCID",
            (SecondaryProcBased, 20) => "enable XSAVES/XRSTORS",
            (Exit, 2) => "save debug controls",
            (Exit, 9) => "host address-space size",
            (Exit, 15) => "acknowledge interrupt on exit",
            (Exit, 18) => "save IA32_PAT",
            (Exit, 19) => "load IA32_PAT",
            (Exit, 20) => "save IA32_EFER",
            (Exit, 21) => "load IA32_EFER",
            (Exit, 22) => "save VMX-preemption timer value",
            (Entry, 2) => "load debug controls",
            (Entry, 9) => "IA-32e mode guest",
            (Entry, 14) => "load IA32_PAT",
            (Entry, 15) => "load IA32_EFER",
            _ => "reserved or unused",
        }
    }
}

/// A control word the processor cannot set up as this backend needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlError {
    /// A control the backend needs cannot be 1 (its allowed-1 bit is clear).
    Unsupported {
        /// The control word.
        word: ControlWord,
        /// The bit.
        bit: u8,
        /// The control's name.
        name: &'static str,
    },
    /// A control the backend switches at run time is fixed to 1 (its allowed-0 bit is
    /// set), so it could never be turned off.
    FixedOn {
        /// The control word.
        word: ControlWord,
        /// The bit.
        bit: u8,
        /// The control's name.
        name: &'static str,
    },
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::Unsupported { word, bit, name } => write!(
                f,
                "VMX control \"{name}\" ({} bit {bit}) is required but not supported",
                word.name()
            ),
            ControlError::FixedOn { word, bit, name } => write!(
                f,
                "VMX control \"{name}\" ({} bit {bit}) must be switchable but is fixed to 1",
                word.name()
            ),
        }
    }
}

/// What the processor offered beyond the required controls, as enabled in [`Controls`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// The secondary processor-based controls are active.
    pub secondary_controls: bool,
    /// EPT is enabled (4-level, write-back, with INVEPT).
    pub ept: bool,
    /// VPID is enabled (with INVVPID).
    pub vpid: bool,
    /// Unrestricted guest: real mode and unpaged protected mode run directly.
    pub unrestricted_guest: bool,
    /// The VMX-preemption timer is active.
    pub preemption_timer: bool,
    /// The timer's value is saved on exit.
    pub preemption_timer_save: bool,
    /// The timer counts down at TSC >> this rate.
    pub preemption_timer_rate: u8,
    /// Virtual NMIs (NMI blocking tracked by the processor).
    pub virtual_nmis: bool,
    /// NMI-window exiting may be turned on.
    pub nmi_window: bool,
    /// RDTSCP runs in the guest.
    pub rdtscp: bool,
    /// INVPCID runs in the guest.
    pub invpcid: bool,
    /// XSAVES/XRSTORS run in the guest.
    pub xsaves: bool,
    /// WBINVD exits.
    pub wbinvd_exiting: bool,
    /// Guest and host IA32_EFER are switched by VM entry and exit (load on entry, save
    /// and load on exit); otherwise MSR-load lists must do it.
    pub efer_switch: bool,
    /// Guest and host IA32_PAT are switched likewise.
    pub pat_switch: bool,
    /// DR7 and IA32_DEBUGCTL are switched likewise.
    pub debug_controls_switch: bool,
    /// The INVEPT type to flush this guest's EPT mappings, when EPT is on.
    pub invept: Option<InveptType>,
    /// The INVVPID type to flush this guest's mappings, when VPID is on.
    pub invvpid: Option<InvvpidType>,
    /// EPT may map 2-MiB pages.
    pub ept_2m_pages: bool,
    /// EPT may map 1-GiB pages.
    pub ept_1g_pages: bool,
    /// EPT accessed/dirty flags may be enabled.
    pub ept_accessed_dirty: bool,
    /// INS/OUTS exits report the VM-exit instruction information.
    pub ins_outs_info: bool,
    /// VM entry accepts a hardware exception with or without error code whatever its
    /// vector.
    pub any_exception_error_code: bool,
}

/// The control words to run with, and what they enable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Controls {
    /// Pin-based VM-execution controls.
    pub pin: u32,
    /// Primary processor-based VM-execution controls, without the dynamic bits
    /// ([`Controls::DYNAMIC_PROC`]).
    pub proc: u32,
    /// Secondary processor-based VM-execution controls (0 when not activated).
    pub proc2: u32,
    /// VM-exit controls.
    pub exit: u32,
    /// VM-entry controls, without IA-32e mode guest (set per guest state).
    pub entry: u32,
    /// What is enabled.
    pub features: Features,
}

/// The primary controls every guest needs: intercepts that keep the host in charge
/// (HLT, MWAIT/MONITOR, RDPMC, CR8 which would otherwise reach the real TPR), the I/O and
/// MSR bitmaps, and TSC offsetting.
const PROC_REQUIRED: u32 = proc_based::HLT_EXITING
    | proc_based::USE_TSC_OFFSETTING
    | proc_based::MWAIT_EXITING
    | proc_based::RDPMC_EXITING
    | proc_based::CR8_LOAD_EXITING
    | proc_based::CR8_STORE_EXITING
    | proc_based::USE_IO_BITMAPS
    | proc_based::USE_MSR_BITMAPS
    | proc_based::MONITOR_EXITING;

/// Without EPT the backend shadows the guest's page tables and must see every CR3
/// load/store and INVLPG.
const PROC_SHADOW_PAGING: u32 =
    proc_based::INVLPG_EXITING | proc_based::CR3_LOAD_EXITING | proc_based::CR3_STORE_EXITING;

impl Controls {
    /// Primary processor-based controls the backend turns on and off between entries.
    pub const DYNAMIC_PROC: u32 =
        proc_based::INTERRUPT_WINDOW_EXITING | proc_based::NMI_WINDOW_EXITING;

    /// Compute the controls for the processor described by `caps`.
    pub fn compute(caps: &VmxCaps) -> Result<Controls, ControlError> {
        use proc_based2 as p2;

        let no_secondary = ControlCap {
            must_be_one: 0,
            may_be_one: 0,
        };
        let cap2 = caps.proc2.unwrap_or(no_secondary);
        let ept_caps = caps.ept_vpid.unwrap_or(EptVpidCaps(0));

        let ept = cap2.allows(p2::ENABLE_EPT) && ept_caps.ept_usable();
        // SDM 3C 27.2.1.1: unrestricted guest requires enable EPT.
        let unrestricted_guest = ept && cap2.allows(p2::UNRESTRICTED_GUEST);
        let vpid = cap2.allows(p2::ENABLE_VPID) && ept_caps.invvpid_type().is_some();
        let mut want2 = 0;
        for (bit, on) in [
            (p2::ENABLE_EPT, ept),
            (p2::UNRESTRICTED_GUEST, unrestricted_guest),
            (p2::ENABLE_VPID, vpid),
        ] {
            if on {
                want2 |= bit;
            }
        }
        // Instructions that raise #UD in the guest unless enabled, and a cache flush
        // the core wants to see.
        for bit in [
            p2::ENABLE_RDTSCP,
            p2::ENABLE_INVPCID,
            p2::ENABLE_XSAVES,
            p2::WBINVD_EXITING,
        ] {
            if cap2.allows(bit) {
                want2 |= bit;
            }
        }
        let secondary = caps.proc2.is_some() && (want2 | cap2.must_be_one) != 0;
        let proc2 = if secondary {
            finish(ControlWord::SecondaryProcBased, cap2, want2, 0)?
        } else {
            0
        };

        let virtual_nmis = caps.pin.allows(pin_based::VIRTUAL_NMIS);
        let preemption_timer = caps.pin.allows(pin_based::ACTIVATE_PREEMPTION_TIMER);
        let mut want_pin = pin_based::EXTERNAL_INTERRUPT_EXITING | pin_based::NMI_EXITING;
        if virtual_nmis {
            want_pin |= pin_based::VIRTUAL_NMIS;
        }
        if preemption_timer {
            want_pin |= pin_based::ACTIVATE_PREEMPTION_TIMER;
        }
        let pin = finish(ControlWord::PinBased, caps.pin, want_pin, 0)?;

        // SDM 3C 27.2.1.1: NMI-window exiting requires virtual NMIs.
        let nmi_window = virtual_nmis && caps.proc.allows(proc_based::NMI_WINDOW_EXITING);
        let mut want_proc = PROC_REQUIRED;
        if !ept {
            want_proc |= PROC_SHADOW_PAGING;
        }
        if secondary {
            want_proc |= proc_based::ACTIVATE_SECONDARY_CONTROLS;
        }
        let mut dynamic = proc_based::INTERRUPT_WINDOW_EXITING;
        if nmi_window {
            dynamic |= proc_based::NMI_WINDOW_EXITING;
        }
        let proc = finish(ControlWord::PrimaryProcBased, caps.proc, want_proc, dynamic)?;

        // Switching a register needs every half of the switch, or none is used.
        let efer_switch = caps.entry.allows(entry_ctls::LOAD_EFER)
            && caps
                .exit
                .allows(exit_ctls::SAVE_EFER | exit_ctls::LOAD_EFER);
        let pat_switch = caps.entry.allows(entry_ctls::LOAD_PAT)
            && caps.exit.allows(exit_ctls::SAVE_PAT | exit_ctls::LOAD_PAT);
        let debug_controls_switch = caps.entry.allows(entry_ctls::LOAD_DEBUG_CONTROLS)
            && caps.exit.allows(exit_ctls::SAVE_DEBUG_CONTROLS);
        let preemption_timer_save =
            preemption_timer && caps.exit.allows(exit_ctls::SAVE_PREEMPTION_TIMER);

        let mut want_exit = exit_ctls::HOST_ADDRESS_SPACE_SIZE | exit_ctls::ACK_INTERRUPT_ON_EXIT;
        let mut want_entry = 0;
        if efer_switch {
            want_exit |= exit_ctls::SAVE_EFER | exit_ctls::LOAD_EFER;
            want_entry |= entry_ctls::LOAD_EFER;
        }
        if pat_switch {
            want_exit |= exit_ctls::SAVE_PAT | exit_ctls::LOAD_PAT;
            want_entry |= entry_ctls::LOAD_PAT;
        }
        if debug_controls_switch {
            want_exit |= exit_ctls::SAVE_DEBUG_CONTROLS;
            want_entry |= entry_ctls::LOAD_DEBUG_CONTROLS;
        }
        if preemption_timer_save {
            want_exit |= exit_ctls::SAVE_PREEMPTION_TIMER;
        }
        let exit = finish(ControlWord::Exit, caps.exit, want_exit, 0)?;
        let entry = finish(
            ControlWord::Entry,
            caps.entry,
            want_entry,
            entry_ctls::IA32E_MODE_GUEST,
        )?;

        Ok(Controls {
            pin,
            proc,
            proc2,
            exit,
            entry,
            features: Features {
                secondary_controls: secondary,
                ept,
                vpid,
                unrestricted_guest,
                preemption_timer,
                preemption_timer_save,
                preemption_timer_rate: caps.misc.preemption_timer_rate(),
                virtual_nmis,
                nmi_window,
                rdtscp: proc2 & p2::ENABLE_RDTSCP != 0,
                invpcid: proc2 & p2::ENABLE_INVPCID != 0,
                xsaves: proc2 & p2::ENABLE_XSAVES != 0,
                wbinvd_exiting: proc2 & p2::WBINVD_EXITING != 0,
                efer_switch,
                pat_switch,
                debug_controls_switch,
                invept: if ept { ept_caps.invept_type() } else { None },
                invvpid: if vpid { ept_caps.invvpid_type() } else { None },
                ept_2m_pages: ept && ept_caps.pages_2m(),
                ept_1g_pages: ept && ept_caps.pages_1g(),
                ept_accessed_dirty: ept && ept_caps.accessed_dirty(),
                ins_outs_info: caps.basic.ins_outs_info(),
                any_exception_error_code: caps.basic.any_exception_error_code(),
            },
        })
    }

    /// Write the five control words into `vmcs` (the secondary word only when
    /// activated, since the field may not exist otherwise).
    pub fn write<V: VmcsAccess>(&self, vmcs: &mut V) -> Result<(), VmxError> {
        vmcs.write(fields::PIN_BASED_VM_EXEC_CONTROLS, self.pin.into())?;
        vmcs.write(
            fields::PRIMARY_PROC_BASED_VM_EXEC_CONTROLS,
            self.proc.into(),
        )?;
        if self.features.secondary_controls {
            vmcs.write(
                fields::SECONDARY_PROC_BASED_VM_EXEC_CONTROLS,
                self.proc2.into(),
            )?;
        }
        vmcs.write(fields::VM_EXIT_CONTROLS, self.exit.into())?;
        vmcs.write(fields::VM_ENTRY_CONTROLS, self.entry.into())
    }
}

/// One control word: `want` must be settable and is set, `dynamic` must be settable
/// and clearable and is left clear, and the processor's must-be-one bits are added.
fn finish(
    word: ControlWord,
    cap: ControlCap,
    want: u32,
    dynamic: u32,
) -> Result<u32, ControlError> {
    let missing = (want | dynamic) & !cap.may_be_one;
    if missing != 0 {
        let bit = missing.trailing_zeros() as u8;
        return Err(ControlError::Unsupported {
            word,
            bit,
            name: word.control_name(bit),
        });
    }
    let fixed = dynamic & cap.must_be_one;
    if fixed != 0 {
        let bit = fixed.trailing_zeros() as u8;
        return Err(ControlError::FixedOn {
            word,
            bit,
            name: word.control_name(bit),
        });
    }
    Ok(cap.must_be_one | want)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::fixtures::*;
    use crate::vmcs::InMemoryVmcs;

    fn controls(fixture: &MsrFixture) -> Result<Controls, ControlError> {
        Controls::compute(&VmxCaps::read(fixture).expect("fixture reads"))
    }

    #[test]
    fn skylake_gets_everything() {
        let c = controls(&CORE_I7_SKYLAKE_X).unwrap();
        assert_eq!(c.pin, 0x7f);
        assert_eq!(c.proc, 0xb618_6dfa);
        assert_eq!(c.proc2, 0x0010_10ea);
        assert_eq!(c.exit, 0x007f_efff);
        assert_eq!(c.entry, 0x0000_d1ff);
        let f = c.features;
        assert!(f.secondary_controls && f.ept && f.vpid && f.unrestricted_guest);
        assert!(f.preemption_timer && f.preemption_timer_save && f.virtual_nmis);
        assert!(f.nmi_window && f.rdtscp && f.invpcid && f.xsaves && f.wbinvd_exiting);
        assert!(f.efer_switch && f.pat_switch && f.debug_controls_switch);
        assert_eq!(f.invept, Some(InveptType::SingleContext));
        assert_eq!(f.invvpid, Some(InvvpidType::SingleContext));
        assert!(f.ept_2m_pages && f.ept_1g_pages && f.ept_accessed_dirty);
        assert!(f.ins_outs_info && !f.any_exception_error_code);
        // The dynamic and shadow-paging controls stay clear.
        assert_eq!(c.proc & Controls::DYNAMIC_PROC, 0);
        assert_eq!(c.proc & PROC_SHADOW_PAGING, 0);
        assert_eq!(c.entry & entry_ctls::IA32E_MODE_GUEST, 0);
    }

    #[test]
    fn every_word_is_legal_for_the_processor() {
        for fixture in [&CORE_I7_SKYLAKE_X, &TIGERLAKE, &CORE2_PENRYN_T9600] {
            let caps = VmxCaps::read(fixture).unwrap();
            let c = Controls::compute(&caps).unwrap();
            assert!(caps.pin.accepts(c.pin));
            assert!(caps.proc.accepts(c.proc));
            assert!(caps.proc.accepts(c.proc | Controls::DYNAMIC_PROC) || !c.features.nmi_window);
            assert!(caps.exit.accepts(c.exit));
            assert!(caps.entry.accepts(c.entry));
            assert!(caps.entry.accepts(c.entry | entry_ctls::IA32E_MODE_GUEST));
            if let Some(cap2) = caps.proc2 {
                assert!(cap2.accepts(c.proc2));
            }
        }
    }

    #[test]
    fn tigerlake_matches_skylake_and_reports_error_code_relaxation() {
        let sky = controls(&CORE_I7_SKYLAKE_X).unwrap();
        let tgl = controls(&TIGERLAKE).unwrap();
        assert_eq!(
            (tgl.pin, tgl.proc, tgl.proc2),
            (sky.pin, sky.proc, sky.proc2)
        );
        assert_eq!((tgl.exit, tgl.entry), (sky.exit, sky.entry));
        assert!(tgl.features.any_exception_error_code);
    }

    #[test]
    fn penryn_drops_the_optional_controls_and_shadows_paging() {
        let c = controls(&CORE2_PENRYN_T9600).unwrap();
        let f = c.features;
        assert!(!f.ept && !f.vpid && !f.unrestricted_guest);
        assert!(!f.preemption_timer && !f.preemption_timer_save);
        assert!(!f.efer_switch && !f.pat_switch);
        assert!(!f.rdtscp && !f.invpcid && !f.xsaves);
        assert_eq!(f.invept, None);
        assert_eq!(f.invvpid, None);
        // Virtual NMIs (pin bit 5) exist, so the NMI window does too.
        assert!(f.virtual_nmis && f.nmi_window);
        // WBINVD exiting is the one secondary control: the secondary word is active.
        assert!(f.secondary_controls && f.wbinvd_exiting);
        assert_eq!(c.proc2, proc_based2::WBINVD_EXITING);
        assert_eq!(c.pin, 0x3f);
        assert_eq!(c.proc, 0xb619_effa);
        assert_eq!(c.proc & PROC_SHADOW_PAGING, PROC_SHADOW_PAGING);
        assert_eq!(c.exit, 0x0003_efff);
        assert_eq!(c.entry, 0x0000_11ff);
    }

    #[test]
    fn missing_required_control_is_named() {
        let mut fixture = CORE_I7_SKYLAKE_X;
        fixture.true_procbased = fixture
            .true_procbased
            .map(|v| v & !(u64::from(proc_based::HLT_EXITING) << 32));
        let err = controls(&fixture).unwrap_err();
        assert_eq!(
            err,
            ControlError::Unsupported {
                word: ControlWord::PrimaryProcBased,
                bit: 7,
                name: "HLT exiting"
            }
        );
        extern crate std;
        use std::string::ToString;
        assert_eq!(
            err.to_string(),
            "VMX control \"HLT exiting\" (primary processor-based VM-execution controls bit 7) \
             is required but not supported"
        );

        let mut fixture = CORE2_PENRYN_T9600;
        fixture.true_exit = fixture
            .true_exit
            .map(|v| v & !(u64::from(exit_ctls::ACK_INTERRUPT_ON_EXIT) << 32));
        assert_eq!(
            controls(&fixture),
            Err(ControlError::Unsupported {
                word: ControlWord::Exit,
                bit: 15,
                name: "acknowledge interrupt on exit"
            })
        );
    }

    #[test]
    fn without_ept_the_shadow_paging_intercepts_are_required() {
        let mut fixture = CORE2_PENRYN_T9600;
        fixture.true_procbased = fixture
            .true_procbased
            .map(|v| v & !(u64::from(proc_based::CR3_LOAD_EXITING) << 32));
        assert_eq!(
            controls(&fixture),
            Err(ControlError::Unsupported {
                word: ControlWord::PrimaryProcBased,
                bit: 15,
                name: "CR3-load exiting"
            })
        );
    }

    #[test]
    fn dynamic_control_fixed_to_one_is_an_error() {
        let mut fixture = CORE_I7_SKYLAKE_X;
        fixture.true_entry = fixture
            .true_entry
            .map(|v| v | u64::from(entry_ctls::IA32E_MODE_GUEST));
        assert_eq!(
            controls(&fixture),
            Err(ControlError::FixedOn {
                word: ControlWord::Entry,
                bit: 9,
                name: "IA-32e mode guest"
            })
        );
    }

    #[test]
    fn ept_without_write_back_is_dropped_with_unrestricted_guest() {
        let mut fixture = CORE_I7_SKYLAKE_X;
        fixture.ept_vpid_cap = fixture.ept_vpid_cap.map(|v| v & !(1 << 14));
        let c = controls(&fixture).unwrap();
        assert!(!c.features.ept && !c.features.unrestricted_guest);
        assert!(!c.features.ept_2m_pages);
        assert!(c.features.vpid, "VPID does not depend on EPT");
        assert_eq!(
            c.proc2 & (proc_based2::ENABLE_EPT | proc_based2::UNRESTRICTED_GUEST),
            0
        );
        assert_eq!(c.proc & PROC_SHADOW_PAGING, PROC_SHADOW_PAGING);
    }

    #[test]
    fn vpid_without_invvpid_is_dropped() {
        let mut fixture = CORE_I7_SKYLAKE_X;
        fixture.ept_vpid_cap = fixture.ept_vpid_cap.map(|v| v & !(1 << 32));
        let c = controls(&fixture).unwrap();
        assert!(!c.features.vpid && c.features.ept);
        assert_eq!(c.proc2 & proc_based2::ENABLE_VPID, 0);
    }

    #[test]
    fn nmi_window_needs_virtual_nmis() {
        let mut fixture = CORE2_PENRYN_T9600;
        fixture.true_pinbased = fixture
            .true_pinbased
            .map(|v| v & !(u64::from(pin_based::VIRTUAL_NMIS) << 32));
        let c = controls(&fixture).unwrap();
        assert!(!c.features.virtual_nmis && !c.features.nmi_window);
    }

    #[test]
    fn no_secondary_controls_at_all() {
        let mut fixture = CORE2_PENRYN_T9600;
        fixture.true_procbased = fixture.true_procbased.map(|v| v & !(1 << 63));
        fixture.procbased &= !(1 << 63);
        let c = controls(&fixture).unwrap();
        assert!(!c.features.secondary_controls && !c.features.wbinvd_exiting);
        assert_eq!(c.proc2, 0);
        assert_eq!(c.proc & proc_based::ACTIVATE_SECONDARY_CONTROLS, 0);
    }

    #[test]
    fn controls_are_written_to_the_vmcs() {
        let c = controls(&CORE_I7_SKYLAKE_X).unwrap();
        let mut vmcs = InMemoryVmcs::new();
        c.write(&mut vmcs).unwrap();
        assert_eq!(vmcs.read(fields::PIN_BASED_VM_EXEC_CONTROLS), Ok(0x7f));
        assert_eq!(
            vmcs.read(fields::PRIMARY_PROC_BASED_VM_EXEC_CONTROLS),
            Ok(0xb618_6dfa)
        );
        assert_eq!(
            vmcs.read(fields::SECONDARY_PROC_BASED_VM_EXEC_CONTROLS),
            Ok(0x0010_10ea)
        );
        assert_eq!(vmcs.read(fields::VM_EXIT_CONTROLS), Ok(0x007f_efff));
        assert_eq!(vmcs.read(fields::VM_ENTRY_CONTROLS), Ok(0xd1ff));
    }
}
