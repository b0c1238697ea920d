//! Exit decoding: from the VMCB's EXITCODE, EXITINFO1 and EXITINFO2 to core's [`Exit`],
//! or to a [`BackendExit`] for what the backend handles itself.
//!
//! [`ExitDecoder::decode`] reads the exit code, then only what that code needs (each
//! family in its own module), through [`VmcbAccess`]. Guest RCX and RDX are not in the
//! VMCB: the world switch saves them, and the decoder takes the guest registers as
//! [`Gprs`] (RAX, which is in the VMCB, copied there too). Nothing here panics on any
//! VMCB content: an exit code or information that the APM does not define decodes to a
//! [`DecodeError`].

pub mod cache;
pub mod cpuid;
pub mod cr;
pub mod exception;
pub mod hlt;
pub mod instructions;
pub mod interrupt;
pub mod invalid;
pub mod invalid_opcode;
pub mod io;
pub mod msr;
pub mod npf;
pub mod shutdown;
pub mod svm_instructions;
pub mod vmmcall;
pub mod xsetbv;

pub use cr::{ControlRegister, CrAccess, CrOperand};
pub use io::{IoInfo, StringIo};
pub use npf::NestedPageFault;

use crate::vmcb::{fields, VmcbAccess};
use core::fmt;
use opsvisor_core::Exit;

/// Exit codes (APM 2 appendix C).
pub mod code {
    /// Read of CR0 (CR n is `CR0_READ + n`).
    pub const CR0_READ: u64 = 0x000;
    /// Read of CR15.
    pub const CR15_READ: u64 = 0x00f;
    /// Write of CR0 (CR n is `CR0_WRITE + n`).
    pub const CR0_WRITE: u64 = 0x010;
    /// Write of CR15.
    pub const CR15_WRITE: u64 = 0x01f;
    /// Read of DR0.
    pub const DR0_READ: u64 = 0x020;
    /// Write of DR15.
    pub const DR15_WRITE: u64 = 0x03f;
    /// Exception vector 0 (vector n is `EXCP0 + n`).
    pub const EXCP0: u64 = 0x040;
    /// Exception vector 31.
    pub const EXCP31: u64 = 0x05f;
    /// Physical INTR.
    pub const INTR: u64 = 0x060;
    /// Physical NMI.
    pub const NMI: u64 = 0x061;
    /// Physical SMI.
    pub const SMI: u64 = 0x062;
    /// Physical INIT.
    pub const INIT: u64 = 0x063;
    /// Virtual interrupt.
    pub const VINTR: u64 = 0x064;
    /// CR0 write changing bits other than TS and MP.
    pub const CR0_SEL_WRITE: u64 = 0x065;
    /// IDTR read.
    pub const IDTR_READ: u64 = 0x066;
    /// TR write.
    pub const TR_WRITE: u64 = 0x06d;
    /// RDTSC.
    pub const RDTSC: u64 = 0x06e;
    /// RDPMC.
    pub const RDPMC: u64 = 0x06f;
    /// PUSHF.
    pub const PUSHF: u64 = 0x070;
    /// POPF.
    pub const POPF: u64 = 0x071;
    /// CPUID.
    pub const CPUID: u64 = 0x072;
    /// RSM.
    pub const RSM: u64 = 0x073;
    /// IRET.
    pub const IRET: u64 = 0x074;
    /// INT n.
    pub const SWINT: u64 = 0x075;
    /// INVD.
    pub const INVD: u64 = 0x076;
    /// PAUSE.
    pub const PAUSE: u64 = 0x077;
    /// HLT.
    pub const HLT: u64 = 0x078;
    /// INVLPG.
    pub const INVLPG: u64 = 0x079;
    /// INVLPGA.
    pub const INVLPGA: u64 = 0x07a;
    /// IN, OUT, INS, OUTS.
    pub const IOIO: u64 = 0x07b;
    /// RDMSR, WRMSR.
    pub const MSR: u64 = 0x07c;
    /// Task switch.
    pub const TASK_SWITCH: u64 = 0x07d;
    /// FERR freeze.
    pub const FERR_FREEZE: u64 = 0x07e;
    /// Shutdown.
    pub const SHUTDOWN: u64 = 0x07f;
    /// VMRUN.
    pub const VMRUN: u64 = 0x080;
    /// VMMCALL.
    pub const VMMCALL: u64 = 0x081;
    /// VMLOAD.
    pub const VMLOAD: u64 = 0x082;
    /// VMSAVE.
    pub const VMSAVE: u64 = 0x083;
    /// STGI.
    pub const STGI: u64 = 0x084;
    /// CLGI.
    pub const CLGI: u64 = 0x085;
    /// SKINIT.
    pub const SKINIT: u64 = 0x086;
    /// RDTSCP.
    pub const RDTSCP: u64 = 0x087;
    /// ICEBP.
    pub const ICEBP: u64 = 0x088;
    /// WBINVD, WBNOINVD.
    pub const WBINVD: u64 = 0x089;
    /// MONITOR, MONITORX.
    pub const MONITOR: u64 = 0x08a;
    /// MWAIT, MWAITX.
    pub const MWAIT: u64 = 0x08b;
    /// MWAIT with the monitor armed.
    pub const MWAIT_CONDITIONAL: u64 = 0x08c;
    /// XSETBV.
    pub const XSETBV: u64 = 0x08d;
    /// RDPRU.
    pub const RDPRU: u64 = 0x08e;
    /// EFER write (trap).
    pub const EFER_WRITE_TRAP: u64 = 0x08f;
    /// CR0 write (trap; CR n is `CR0_WRITE_TRAP + n`).
    pub const CR0_WRITE_TRAP: u64 = 0x090;
    /// CR15 write (trap).
    pub const CR15_WRITE_TRAP: u64 = 0x09f;
    /// INVLPGB.
    pub const INVLPGB: u64 = 0x0a0;
    /// Illegal INVLPGB.
    pub const INVLPGB_ILLEGAL: u64 = 0x0a1;
    /// INVPCID.
    pub const INVPCID: u64 = 0x0a2;
    /// MCOMMIT.
    pub const MCOMMIT: u64 = 0x0a3;
    /// TLBSYNC.
    pub const TLBSYNC: u64 = 0x0a4;
    /// Bus lock.
    pub const BUS_LOCK: u64 = 0x0a5;
    /// Nested page fault.
    pub const NPF: u64 = 0x400;
    /// AVIC: incomplete IPI.
    pub const AVIC_INCOMPLETE_IPI: u64 = 0x401;
    /// AVIC: access not accelerated.
    pub const AVIC_NOACCEL: u64 = 0x402;
    /// VMGEXIT (SEV-ES).
    pub const VMGEXIT: u64 = 0x403;
    /// VMRUN found the VMCB invalid (-1).
    pub const INVALID: u64 = u64::MAX;
    /// VMRUN found the VMCB busy (-2).
    pub const BUSY: u64 = u64::MAX - 1;
    /// Idle required (-3).
    pub const IDLE_REQUIRED: u64 = u64::MAX - 2;
    /// Invalid PMC state (-4).
    pub const INVALID_PMC: u64 = u64::MAX - 3;

    /// Whether the APM defines `code`.
    pub fn is_defined(code: u64) -> bool {
        matches!(code, 0..=BUS_LOCK | NPF..=VMGEXIT | INVALID_PMC..=INVALID)
    }
}

/// The saved guest general registers, indexed by [`opsvisor_core::ops::Gpr`]: RAX as
/// the VMCB holds it, the others as the world switch saved them; the RSP slot is not
/// used (guest RSP lives in the VMCB).
pub type Gprs = [u64; 16];

/// A decoded exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SvmExit {
    /// An exit core handles, already in its terms.
    Core(Exit),
    /// An exit the backend handles (or turns into a core exit) itself.
    Backend(BackendExit),
}

/// Exits that core's [`Exit`] cannot express exactly; the backend handles them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendExit {
    /// A physical interrupt arrived (the host timer that bounds a run, on hardware).
    HostInterrupt,
    /// A physical NMI.
    HostNmi,
    /// A physical SMI (taken by the firmware once the host sets GIF again).
    HostSmi,
    /// INIT.
    Init,
    /// MOV to or from CR0, CR3, CR4 or CR8, or a selective CR0 write.
    ControlRegister(CrAccess),
    /// INS or OUTS, possibly with REP: the backend moves one element per exit of
    /// [`Exit::Io`] between the port and guest memory.
    StringIo(StringIo),
    /// An access the nested page tables do not allow.
    NestedPageFault(NestedPageFault),
    /// RDTSC: the guest's TSC is core's clock.
    Rdtsc,
    /// RDTSCP.
    Rdtscp,
    /// IRET, intercepted while an injected NMI blocks further NMIs.
    Iret,
    /// An intercepted #PF.
    PageFault {
        /// The faulting linear address (EXITINFO2; would-be CR2).
        address: u64,
        /// The page-fault error code (EXITINFO1).
        error_code: u32,
    },
    /// An intercepted #DB (the step after an IRET that unblocked NMIs).
    DebugException,
    /// An intercepted #UD: VMCALL, which the backend completes as the hypercall, or an
    /// invalid opcode that goes back to the guest.
    InvalidOpcode,
    /// An SVM instruction (VMRUN, VMLOAD, VMSAVE, STGI, CLGI, SKINIT, INVLPGA): the
    /// guest's CPUID offers no SVM, so it gets #UD.
    SvmInstruction {
        /// The exit code, naming the instruction.
        code: u64,
    },
    /// An instruction this backend intercepts to refuse it with #UD (RDPMC, RDPRU,
    /// MONITOR, MWAIT).
    RefusedInstruction {
        /// The exit code, naming the instruction.
        code: u64,
    },
    /// VMRUN refused the VMCB (VMEXIT_INVALID): the backend finds which consistency
    /// check failed.
    Invalid,
    /// A defined exit that this backend's intercepts never cause: a backend bug or a
    /// misbehaving processor.
    Unexpected {
        /// The exit code.
        code: u64,
    },
}

/// VMCB content that does not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The exit code is not one the APM defines.
    UnknownExitCode(u64),
    /// EXITINFO1 has a value the APM does not define for this exit.
    InvalidExitInfo {
        /// The exit code.
        code: u64,
        /// EXITINFO1.
        info1: u64,
    },
    /// EXITINTINFO does not decode.
    InvalidExitIntInfo(u64),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::UnknownExitCode(c) => write!(f, "unknown #VMEXIT code {c:#x}"),
            DecodeError::InvalidExitInfo { code, info1 } => {
                write!(f, "invalid EXITINFO1 {info1:#x} for exit code {code:#x}")
            }
            DecodeError::InvalidExitIntInfo(v) => write!(f, "invalid EXITINTINFO {v:#x}"),
        }
    }
}

/// The exit code, with VMEXIT_INVALID recognised by its low 32 bits: QEMU stores it as
/// 0x00000000_FFFFFFFF, Bochs and silicon as -1.
pub fn exit_code<V: VmcbAccess>(vmcb: &V) -> u64 {
    let raw = vmcb.read(fields::EXITCODE);
    if raw as u32 == u32::MAX {
        code::INVALID
    } else {
        raw
    }
}

/// Whether the exit with `code` is an instruction intercept that core (or the backend)
/// completes by retiring the instruction: its length must be known, from NRIP save,
/// EXITINFO2 (I/O) or decoding.
pub fn retires_instruction(code: u64) -> bool {
    matches!(
        code,
        code::CR0_READ
            ..=code::CR15_WRITE
                | code::CR0_SEL_WRITE
                | code::RDTSC
                | code::CPUID
                | code::INVD
                | code::HLT
                | code::IOIO
                | code::MSR
                | code::RDTSCP
                | code::WBINVD
                | code::XSETBV
                | code::VMMCALL
                | code::PAUSE
    )
}

/// The exit decoder, configured from the capabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitDecoder {
    /// Decode assists: CR exits name their register, INS/OUTS their segment, nested
    /// page faults come with the instruction bytes.
    pub decode_assists: bool,
}

impl ExitDecoder {
    /// A decoder for a processor with (or without) decode assists.
    pub fn new(decode_assists: bool) -> Self {
        ExitDecoder { decode_assists }
    }

    /// Decode the exit recorded in `vmcb`; `gprs` are the guest registers saved at
    /// the exit.
    pub fn decode<V: VmcbAccess>(&self, vmcb: &V, gprs: &Gprs) -> Result<SvmExit, DecodeError> {
        let c = exit_code(vmcb);
        if !code::is_defined(c) {
            return Err(DecodeError::UnknownExitCode(c));
        }
        match c {
            code::CPUID => Ok(cpuid::decode()),
            code::HLT => Ok(hlt::decode()),
            code::MSR => msr::decode(vmcb, gprs),
            code::IOIO => io::decode(vmcb, gprs, self.decode_assists),
            code::NPF => Ok(npf::decode(vmcb)),
            code::INTR | code::NMI | code::SMI | code::INIT | code::VINTR => {
                Ok(interrupt::decode(c))
            }
            code::SHUTDOWN => Ok(shutdown::decode()),
            code::CR0_READ..=code::CR15_WRITE | code::CR0_SEL_WRITE => {
                Ok(cr::decode(vmcb, c, self.decode_assists))
            }
            code::XSETBV => Ok(xsetbv::decode(gprs)),
            code::INVD | code::WBINVD => Ok(cache::decode()),
            code::VMMCALL => Ok(vmmcall::decode()),
            code::EXCP0..=code::EXCP31 => Ok(exception::decode(vmcb, c)),
            code::INVALID => Ok(invalid::decode()),
            c if svm_instructions::is_svm_instruction(c) => Ok(svm_instructions::decode(c)),
            c => Ok(instructions::decode(c)),
        }
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use super::*;
    use crate::vmcb::{Field, InMemoryVmcb};

    /// The decoder of a processor with decode assists.
    pub const ASSISTED: ExitDecoder = ExitDecoder {
        decode_assists: true,
    };
    /// The decoder of one without (Bochs, QEMU).
    pub const PLAIN: ExitDecoder = ExitDecoder {
        decode_assists: false,
    };

    /// A VMCB holding one scripted exit.
    pub fn scripted(exit_code: u64, pairs: &[(Field, u64)]) -> InMemoryVmcb {
        let mut vmcb = InMemoryVmcb::new();
        vmcb.set_exit_info(fields::EXITCODE, exit_code)
            .expect("known field");
        vmcb.script(pairs).expect("known fields");
        vmcb
    }

    /// Decode a scripted exit with zeroed registers.
    pub fn decode(exit_code: u64, pairs: &[(Field, u64)]) -> Result<SvmExit, DecodeError> {
        PLAIN.decode(&scripted(exit_code, pairs), &[0; 16])
    }

    /// Decode a scripted exit with the given registers.
    pub fn decode_with(
        exit_code: u64,
        pairs: &[(Field, u64)],
        gprs: &Gprs,
    ) -> Result<SvmExit, DecodeError> {
        PLAIN.decode(&scripted(exit_code, pairs), gprs)
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::*;
    use super::*;

    #[test]
    fn undefined_exit_codes_are_errors() {
        for raw in [
            0xa6u64,
            0xff,
            0x3ff,
            0x404,
            0x1_0000,
            u64::MAX - 4,
            0x8000_0000_0000_0000,
        ] {
            assert_eq!(
                decode(raw, &[]),
                Err(DecodeError::UnknownExitCode(raw)),
                "{raw:#x}"
            );
        }
    }

    #[test]
    fn vmexit_invalid_is_recognised_by_its_low_half() {
        // QEMU reports 0x00000000ffffffff, Bochs and silicon -1.
        for raw in [u64::MAX, 0xffff_ffff] {
            assert_eq!(
                decode(raw, &[]),
                Ok(SvmExit::Backend(BackendExit::Invalid)),
                "{raw:#x}"
            );
        }
        assert_eq!(
            decode(code::BUSY, &[]),
            Ok(SvmExit::Backend(BackendExit::Unexpected {
                code: code::BUSY
            }))
        );
    }

    #[test]
    fn every_code_decodes_without_panic() {
        // Whatever the exit code and garbage exit information, decoding returns.
        let garbage = [
            (fields::EXITINFO1, u64::MAX),
            (fields::EXITINFO2, u64::MAX),
            (fields::EXITINTINFO, u64::MAX),
        ];
        for c in (0..0x500).chain([u64::MAX, u64::MAX - 1, u64::MAX - 2, u64::MAX - 3]) {
            for decoder in [ASSISTED, PLAIN] {
                let _ = decoder.decode(&scripted(c, &garbage), &[u64::MAX; 16]);
                let _ = decoder.decode(&scripted(c, &[]), &[0; 16]);
            }
        }
    }

    #[test]
    fn instruction_intercepts_retire_and_events_do_not() {
        for c in [
            code::CPUID,
            code::MSR,
            code::HLT,
            code::IOIO,
            code::XSETBV,
            0x010,
        ] {
            assert!(retires_instruction(c), "{c:#x}");
        }
        for c in [
            code::NPF,
            code::INTR,
            code::VINTR,
            code::SHUTDOWN,
            code::VMRUN,
            0x4e,
        ] {
            assert!(!retires_instruction(c), "{c:#x}");
        }
        extern crate std;
        use std::string::ToString;
        assert_eq!(
            DecodeError::UnknownExitCode(0xa6).to_string(),
            "unknown #VMEXIT code 0xa6"
        );
    }
}
