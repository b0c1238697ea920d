//! Exit decoding: from the VMCS's exit-information fields to core's [`Exit`], or to a
//! [`BackendExit`] for what the backend handles itself.
//!
//! [`ExitDecoder::decode`] reads the exit reason, then only the fields that reason
//! needs (each family in its own module), through [`VmcsAccess`]. Guest RAX, RCX and RDX
//! are not in the VMCS: the entry code saves them, and the decoder takes them as
//! [`Gprs`]. Nothing here panics on any VMCS content: an exit reason, qualification or
//! information field that the SDM does not define decodes to a [`DecodeError`].

pub mod cpuid;
pub mod cr;
pub mod entry_failure;
pub mod ept;
pub mod exception;
pub mod hlt;
pub mod instructions;
pub mod interrupt;
pub mod io;
pub mod msr;
pub mod task_switch;
pub mod triple_fault;

pub use cr::{ControlRegister, CrAccess};
pub use ept::{EptAccess, EptViolation};
pub use io::{AddressSize, IoQualification, StringIo, StringIoOperand};
pub use task_switch::{TaskSwitch, TaskSwitchSource};

use crate::caps::VmxCaps;
use crate::vmcs::{fields, Field, VmcsAccess, VmxError};
use core::fmt;
use opsvisor_core::Exit;

/// Basic exit reasons (SDM 3C appendix C).
pub mod reason {
    /// Exception or non-maskable interrupt.
    pub const EXCEPTION_OR_NMI: u16 = 0;
    /// External interrupt.
    pub const EXTERNAL_INTERRUPT: u16 = 1;
    /// Triple fault.
    pub const TRIPLE_FAULT: u16 = 2;
    /// INIT signal.
    pub const INIT_SIGNAL: u16 = 3;
    /// Start-up IPI.
    pub const SIPI: u16 = 4;
    /// I/O system-management interrupt.
    pub const IO_SMI: u16 = 5;
    /// Other SMI.
    pub const OTHER_SMI: u16 = 6;
    /// Interrupt window.
    pub const INTERRUPT_WINDOW: u16 = 7;
    /// NMI window.
    pub const NMI_WINDOW: u16 = 8;
    /// Task switch.
    pub const TASK_SWITCH: u16 = 9;
    /// CPUID.
    pub const CPUID: u16 = 10;
    /// GETSEC.
    pub const GETSEC: u16 = 11;
    /// HLT.
    pub const HLT: u16 = 12;
    /// INVD.
    pub const INVD: u16 = 13;
    /// INVLPG.
    pub const INVLPG: u16 = 14;
    /// RDPMC.
    pub const RDPMC: u16 = 15;
    /// RDTSC.
    pub const RDTSC: u16 = 16;
    /// RSM in SMM.
    pub const RSM: u16 = 17;
    /// VMCALL.
    pub const VMCALL: u16 = 18;
    /// VMCLEAR.
    pub const VMCLEAR: u16 = 19;
    /// VMLAUNCH.
    pub const VMLAUNCH: u16 = 20;
    /// VMPTRLD.
    pub const VMPTRLD: u16 = 21;
    /// VMPTRST.
    pub const VMPTRST: u16 = 22;
    /// VMREAD.
    pub const VMREAD: u16 = 23;
    /// VMRESUME.
    pub const VMRESUME: u16 = 24;
    /// VMWRITE.
    pub const VMWRITE: u16 = 25;
    /// VMXOFF.
    pub const VMXOFF: u16 = 26;
    /// VMXON.
    pub const VMXON: u16 = 27;
    /// Control-register accesses.
    pub const CONTROL_REGISTER_ACCESS: u16 = 28;
    /// MOV DR.
    pub const MOV_DR: u16 = 29;
    /// I/O instruction.
    pub const IO_INSTRUCTION: u16 = 30;
    /// RDMSR.
    pub const RDMSR: u16 = 31;
    /// WRMSR.
    pub const WRMSR: u16 = 32;
    /// VM-entry failure due to invalid guest state.
    pub const ENTRY_FAILURE_GUEST_STATE: u16 = 33;
    /// VM-entry failure due to MSR loading.
    pub const ENTRY_FAILURE_MSR_LOADING: u16 = 34;
    /// MWAIT.
    pub const MWAIT: u16 = 36;
    /// Monitor trap flag.
    pub const MONITOR_TRAP_FLAG: u16 = 37;
    /// MONITOR.
    pub const MONITOR: u16 = 39;
    /// PAUSE.
    pub const PAUSE: u16 = 40;
    /// VM-entry failure due to machine-check event.
    pub const ENTRY_FAILURE_MACHINE_CHECK: u16 = 41;
    /// TPR below threshold.
    pub const TPR_BELOW_THRESHOLD: u16 = 43;
    /// APIC access.
    pub const APIC_ACCESS: u16 = 44;
    /// Virtualized EOI.
    pub const VIRTUALIZED_EOI: u16 = 45;
    /// Access to GDTR or IDTR.
    pub const GDTR_IDTR_ACCESS: u16 = 46;
    /// Access to LDTR or TR.
    pub const LDTR_TR_ACCESS: u16 = 47;
    /// EPT violation.
    pub const EPT_VIOLATION: u16 = 48;
    /// EPT misconfiguration.
    pub const EPT_MISCONFIGURATION: u16 = 49;
    /// INVEPT.
    pub const INVEPT: u16 = 50;
    /// RDTSCP.
    pub const RDTSCP: u16 = 51;
    /// VMX-preemption timer expired.
    pub const PREEMPTION_TIMER_EXPIRED: u16 = 52;
    /// INVVPID.
    pub const INVVPID: u16 = 53;
    /// WBINVD or WBNOINVD.
    pub const WBINVD: u16 = 54;
    /// XSETBV.
    pub const XSETBV: u16 = 55;
    /// APIC write.
    pub const APIC_WRITE: u16 = 56;
    /// RDRAND.
    pub const RDRAND: u16 = 57;
    /// INVPCID.
    pub const INVPCID: u16 = 58;
    /// VMFUNC.
    pub const VMFUNC: u16 = 59;
    /// ENCLS.
    pub const ENCLS: u16 = 60;
    /// RDSEED.
    pub const RDSEED: u16 = 61;
    /// Page-modification log full.
    pub const PML_FULL: u16 = 62;
    /// XSAVES.
    pub const XSAVES: u16 = 63;
    /// XRSTORS.
    pub const XRSTORS: u16 = 64;
    /// PCONFIG.
    pub const PCONFIG: u16 = 65;
    /// SPP-related event.
    pub const SPP_EVENT: u16 = 66;
    /// UMWAIT.
    pub const UMWAIT: u16 = 67;
    /// TPAUSE.
    pub const TPAUSE: u16 = 68;
    /// LOADIWKEY.
    pub const LOADIWKEY: u16 = 69;
    /// ENCLV.
    pub const ENCLV: u16 = 70;
    /// SGX conflict.
    pub const SGX_CONFLICT: u16 = 71;
    /// ENQCMD PASID translation failure.
    pub const ENQCMD_PASID_FAILURE: u16 = 72;
    /// ENQCMDS PASID translation failure.
    pub const ENQCMDS_PASID_FAILURE: u16 = 73;
    /// Bus lock.
    pub const BUS_LOCK: u16 = 74;
    /// Instruction timeout (notify).
    pub const INSTRUCTION_TIMEOUT: u16 = 75;
    /// SEAMCALL.
    pub const SEAMCALL: u16 = 76;
    /// TDCALL.
    pub const TDCALL: u16 = 77;
    /// RDMSRLIST.
    pub const RDMSRLIST: u16 = 78;
    /// WRMSRLIST.
    pub const WRMSRLIST: u16 = 79;

    /// Whether the SDM defines basic exit reason `basic` (0..=79 except 35, 38, 42).
    pub fn is_defined(basic: u16) -> bool {
        basic <= WRMSRLIST && !matches!(basic, 35 | 38 | 42)
    }
}

/// The exit-reason field (SDM 3C 25.9.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitReason(pub u32);

impl ExitReason {
    /// Bits 15:0, the basic exit reason.
    pub fn basic(self) -> u16 {
        (self.0 & 0xffff) as u16
    }
    /// Bit 27: the exit happened in enclave mode.
    pub fn enclave_mode(self) -> bool {
        self.0 & (1 << 27) != 0
    }
    /// Bit 28: a monitor-trap-flag exit is pending.
    pub fn pending_mtf(self) -> bool {
        self.0 & (1 << 28) != 0
    }
    /// Bit 29: the exit came from VMX root operation (SMM dual-monitor only).
    pub fn from_root(self) -> bool {
        self.0 & (1 << 29) != 0
    }
    /// Bit 31: VM entry failed.
    pub fn entry_failure(self) -> bool {
        self.0 & (1 << 31) != 0
    }
}

/// The saved guest general registers, indexed by [`opsvisor_core::ops::Gpr`] (the RSP
/// slot is not used: guest RSP lives in the VMCS).
pub type Gprs = [u64; 16];

/// A decoded exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmxExit {
    /// An exit core handles, already in its terms.
    Core(Exit),
    /// An exit the backend handles (or turns into a core exit) itself.
    Backend(BackendExit),
}

/// Exits that core's [`Exit`] cannot express exactly; the backend handles them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendExit {
    /// A host interrupt arrived; with "acknowledge interrupt on exit" the processor
    /// took it from the interrupt controller and `vector` must be dispatched to the
    /// host's handler before the backend reports [`Exit::ExternalInterrupt`].
    HostInterrupt {
        /// The acknowledged vector, or `None` if the interrupt was not acknowledged.
        vector: Option<u8>,
    },
    /// A host NMI (NMI exiting): dispatch it to the host's NMI handler.
    HostNmi,
    /// An INIT signal (multiprocessor guests).
    Init,
    /// A start-up IPI with this vector (multiprocessor guests).
    Sipi {
        /// The SIPI vector: the guest starts at `vector << 12`.
        vector: u8,
    },
    /// An intercepted #PF (shadow paging); CR2 was not written.
    PageFault {
        /// The faulting linear address (would-be CR2).
        address: u64,
        /// The page-fault error code.
        error_code: u32,
    },
    /// An intercepted #DB; DR6 was not written.
    DebugException {
        /// The exit qualification: the DR6 bits the exception would have set (B0-B3,
        /// BD, BS, RTM).
        pending_dr6: u64,
        /// The #DB came from INT1 (privileged software exception).
        int1: bool,
    },
    /// MOV to/from CR0, CR3, CR4 or CR8, CLTS or LMSW.
    ControlRegister(CrAccess),
    /// INS or OUTS, possibly with REP: the backend moves one element per exit of
    /// [`Exit::Io`] between the port and guest memory.
    StringIo(StringIo),
    /// An access the EPT does not allow.
    EptViolation(EptViolation),
    /// An EPT entry with an illegal combination of bits: a bug in the EPT builder.
    EptMisconfiguration {
        /// The guest-physical address whose walk met the entry.
        gpa: u64,
    },
    /// INVLPG (shadow paging).
    Invlpg {
        /// The linear-address operand.
        address: u64,
    },
    /// A task switch (through CALL, IRET, JMP or a task gate in the IDT).
    TaskSwitch(TaskSwitch),
    /// An instruction this backend intercepts to refuse it (MONITOR, MWAIT, RDPMC,
    /// GETSEC): the backend injects #UD (or #GP) rather than run it.
    RefusedInstruction {
        /// The basic exit reason, naming the instruction.
        reason: u16,
    },
    /// A defined exit that this backend's controls never cause (for instance MOV DR,
    /// APIC access or RDTSC): a backend bug or a misbehaving processor.
    Unexpected {
        /// The basic exit reason.
        reason: u16,
    },
}

/// VMCS content that does not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// A VMREAD failed.
    Vmcs {
        /// The field.
        field: Field,
        /// The failure.
        error: VmxError,
    },
    /// The exit reason is not one the SDM defines (raw field value).
    UnknownExitReason(u32),
    /// An interruption-information field is not valid or inconsistent for this exit.
    InvalidInterruptionInfo {
        /// The field it came from.
        field: Field,
        /// Its raw value.
        info: u32,
    },
    /// The exit qualification has a value the SDM does not define for this exit.
    InvalidQualification {
        /// The basic exit reason.
        reason: u16,
        /// The raw qualification.
        qualification: u64,
    },
    /// The VM-exit instruction information has a value the SDM does not define.
    InvalidInstructionInfo {
        /// The basic exit reason.
        reason: u16,
        /// The raw field.
        info: u32,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Vmcs { field, error } => write!(
                f,
                "VMREAD of {} ({:#06x}) failed: {error}",
                field.name().unwrap_or("unknown field"),
                field.encoding()
            ),
            DecodeError::UnknownExitReason(raw) => write!(f, "unknown VM-exit reason {raw:#x}"),
            DecodeError::InvalidInterruptionInfo { field, info } => write!(
                f,
                "invalid interruption information {info:#x} in {}",
                field.name().unwrap_or("unknown field")
            ),
            DecodeError::InvalidQualification {
                reason,
                qualification,
            } => write!(
                f,
                "invalid exit qualification {qualification:#x} for exit reason {reason}"
            ),
            DecodeError::InvalidInstructionInfo { reason, info } => write!(
                f,
                "invalid VM-exit instruction information {info:#x} for exit reason {reason}"
            ),
        }
    }
}

/// VMREAD with the field named in the error.
pub(crate) fn read<V: VmcsAccess>(vmcs: &V, field: Field) -> Result<u64, DecodeError> {
    vmcs.read(field)
        .map_err(|error| DecodeError::Vmcs { field, error })
}

/// The exit decoder, configured from the capability MSRs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitDecoder {
    /// INS/OUTS exits report the VM-exit instruction information (IA32_VMX_BASIC bit
    /// 54); without it the string-I/O operand is left for the backend to decode.
    pub ins_outs_info: bool,
}

impl ExitDecoder {
    /// A decoder for the processor described by `caps`.
    pub fn new(caps: &VmxCaps) -> Self {
        ExitDecoder {
            ins_outs_info: caps.basic.ins_outs_info(),
        }
    }

    /// Decode the exit recorded in `vmcs`; `gprs` are the guest registers saved at
    /// the exit.
    pub fn decode<V: VmcsAccess>(&self, vmcs: &V, gprs: &Gprs) -> Result<VmxExit, DecodeError> {
        // The field is 32 bits wide.
        let raw = read(vmcs, fields::VM_EXIT_REASON)? as u32;
        let exit_reason = ExitReason(raw);
        let basic = exit_reason.basic();
        if exit_reason.entry_failure() || entry_failure::is_entry_failure_reason(basic) {
            return entry_failure::decode(vmcs, exit_reason);
        }
        // Bits 30, 25:17 are reserved; bit 16 is always 0 (SDM 3C 25.9.1).
        if raw & 0x43ff_0000 != 0 || !reason::is_defined(basic) {
            return Err(DecodeError::UnknownExitReason(raw));
        }
        use reason::*;
        match basic {
            EXCEPTION_OR_NMI => exception::decode(vmcs),
            EXTERNAL_INTERRUPT
            | INIT_SIGNAL
            | SIPI
            | INTERRUPT_WINDOW
            | NMI_WINDOW
            | PREEMPTION_TIMER_EXPIRED => interrupt::decode(vmcs, basic),
            TRIPLE_FAULT => Ok(triple_fault::decode()),
            TASK_SWITCH => task_switch::decode(vmcs),
            CPUID => Ok(cpuid::decode()),
            HLT => Ok(hlt::decode()),
            CONTROL_REGISTER_ACCESS => cr::decode(vmcs),
            IO_INSTRUCTION => io::decode(vmcs, gprs, self.ins_outs_info),
            RDMSR | WRMSR => Ok(msr::decode(basic, gprs)),
            EPT_VIOLATION | EPT_MISCONFIGURATION => ept::decode(vmcs, basic),
            _ => instructions::decode(vmcs, basic, gprs),
        }
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use super::*;
    use crate::vmcs::InMemoryVmcs;

    /// The decoder of a processor with INS/OUTS information (every Bochs model).
    pub const DECODER: ExitDecoder = ExitDecoder {
        ins_outs_info: true,
    };

    /// A VMCS holding one scripted exit.
    pub fn scripted(reason: u32, pairs: &[(Field, u64)]) -> InMemoryVmcs {
        let mut vmcs = InMemoryVmcs::new();
        vmcs.set_exit_info(fields::VM_EXIT_REASON, reason.into())
            .expect("known field");
        vmcs.script(pairs).expect("known fields");
        vmcs
    }

    /// Decode a scripted exit with zeroed registers.
    pub fn decode(reason: u32, pairs: &[(Field, u64)]) -> Result<VmxExit, DecodeError> {
        DECODER.decode(&scripted(reason, pairs), &[0; 16])
    }

    /// Decode a scripted exit with the given registers.
    pub fn decode_with(
        reason: u32,
        pairs: &[(Field, u64)],
        gprs: &Gprs,
    ) -> Result<VmxExit, DecodeError> {
        DECODER.decode(&scripted(reason, pairs), gprs)
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::*;
    use super::*;
    use crate::caps::fixtures::{CORE2_PENRYN_T9600, CORE_I7_SKYLAKE_X};

    #[test]
    fn decoder_follows_ins_outs_capability() {
        let caps = VmxCaps::read(&CORE_I7_SKYLAKE_X).unwrap();
        assert!(ExitDecoder::new(&caps).ins_outs_info);
        let mut fixture = CORE2_PENRYN_T9600;
        fixture.basic &= !(1 << 54);
        let caps = VmxCaps::read(&fixture).unwrap();
        assert!(!ExitDecoder::new(&caps).ins_outs_info);
    }

    #[test]
    fn undefined_exit_reasons_are_errors() {
        for raw in [
            35u32,
            38,
            42,
            80,
            0xffff,
            0x0001_000a,
            0x4000_000a,
            0x0200_000a,
        ] {
            assert_eq!(
                decode(raw, &[]),
                Err(DecodeError::UnknownExitReason(raw)),
                "{raw:#x}"
            );
        }
    }

    #[test]
    fn flag_bits_do_not_change_the_decode() {
        // Pending MTF (28) and enclave mode (27) are informational.
        assert_eq!(
            decode(0x1800_0000 | 10, &[]),
            Ok(VmxExit::Core(Exit::Cpuid))
        );
        assert!(ExitReason(0x1000_0000).pending_mtf());
        assert!(ExitReason(0x0800_0000).enclave_mode());
        assert!(ExitReason(0x2000_0000).from_root());
    }

    #[test]
    fn every_u16_reason_decodes_without_panic() {
        // Whatever the exit reason and a garbage qualification/information, decoding
        // returns a value.
        let garbage = [
            (fields::EXIT_QUALIFICATION, u64::MAX),
            (fields::VM_EXIT_INTR_INFO, 0xffff_ffff),
            (fields::VM_EXIT_INSTRUCTION_INFO, 0xffff_ffff),
            (fields::GUEST_PHYSICAL_ADDRESS, u64::MAX),
            (fields::GUEST_LINEAR_ADDRESS, u64::MAX),
        ];
        for basic in 0..=u32::from(u16::MAX) {
            for flags in [0, 1 << 31] {
                let _ = decode(basic | flags, &garbage);
                let _ = decode(basic | flags, &[]);
            }
        }
    }

    #[test]
    fn exit_during_event_delivery_decodes_and_reinjects() {
        use crate::event::VectoringEvent;
        use opsvisor_core::ops::Event;
        // An EPT violation while delivering external interrupt 0x20 (the IDT entry's
        // page is not mapped): the exit decodes as usual, and the interrupt is
        // delivered again on the next entry.
        let mut vmcs = scripted(
            48,
            &[
                (fields::EXIT_QUALIFICATION, 0x181),
                (fields::GUEST_PHYSICAL_ADDRESS, 0x0010_0100),
                (fields::GUEST_LINEAR_ADDRESS, 0x0010_0100),
                (fields::IDT_VECTORING_INFO, 0x8000_0020),
            ],
        );
        let exit = DECODER.decode(&vmcs, &[0; 16]).unwrap();
        assert!(matches!(
            exit,
            VmxExit::Backend(BackendExit::EptViolation(EptViolation {
                gpa: 0x0010_0100,
                ..
            }))
        ));
        let pending = VectoringEvent::read(&vmcs).unwrap().unwrap();
        assert_eq!(
            pending.to_core_event(),
            Some(Event::ExternalInterrupt(0x20))
        );
        pending.reinject(&mut vmcs).unwrap();
        assert_eq!(vmcs.read(fields::VM_ENTRY_INTR_INFO), Ok(0x8000_0020));
    }

    #[test]
    fn vmcs_read_failure_is_reported_with_the_field() {
        struct Broken;
        impl VmcsAccess for Broken {
            fn read(&self, _: Field) -> Result<u64, VmxError> {
                Err(VmxError::FailInvalid)
            }
            fn write(&mut self, _: Field, _: u64) -> Result<(), VmxError> {
                Err(VmxError::FailInvalid)
            }
        }
        assert_eq!(
            DECODER.decode(&Broken, &[0; 16]),
            Err(DecodeError::Vmcs {
                field: fields::VM_EXIT_REASON,
                error: VmxError::FailInvalid
            })
        );
        extern crate std;
        use std::string::ToString;
        assert_eq!(
            DecodeError::Vmcs {
                field: fields::VM_EXIT_REASON,
                error: VmxError::FailInvalid
            }
            .to_string(),
            "VMREAD of VM_EXIT_REASON (0x4402) failed: VMfailInvalid (no current VMCS)"
        );
    }
}
