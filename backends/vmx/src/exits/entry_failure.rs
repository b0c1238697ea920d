//! VM-entry failures: an exit reason with bit 31 set (invalid guest state 33, MSR
//! loading 34, machine-check event 41; SDM 3C 27.8) after VMLAUNCH/VMRESUME got past
//! the control and host-state checks, and the VMfail outcomes of those instructions
//! themselves (SDM 3C 27.1-27.2, VM-instruction errors 7 and 8 for bad controls or
//! host state).
//!
//! Both become core's [`Exit::EntryFailed`]: `reason` is the exit reason (bit 31 set)
//! or the VM-instruction error number (bit 31 clear; 0 for VMfailInvalid), `detail`
//! the exit qualification. [`EntryFailure::from_exit`] types them back for reports.

use super::{read, reason, DecodeError, ExitReason, VmxExit};
use crate::vmcs::{fields, InstructionError, VmcsAccess, VmxError};
use core::fmt;
use opsvisor_core::Exit;

/// Whether `basic` is one of the VM-entry failure reasons.
pub(crate) fn is_entry_failure_reason(basic: u16) -> bool {
    matches!(
        basic,
        reason::ENTRY_FAILURE_GUEST_STATE
            | reason::ENTRY_FAILURE_MSR_LOADING
            | reason::ENTRY_FAILURE_MACHINE_CHECK
    )
}

/// Decode a VM-entry failure exit.
pub(crate) fn decode<V: VmcsAccess>(
    vmcs: &V,
    exit_reason: ExitReason,
) -> Result<VmxExit, DecodeError> {
    Ok(VmxExit::Core(Exit::EntryFailed {
        reason: exit_reason.0,
        detail: read(vmcs, fields::EXIT_QUALIFICATION)?,
    }))
}

/// Core's exit for a VMLAUNCH/VMRESUME that failed as an instruction (VMfail).
pub fn instruction_failure(error: VmxError) -> Exit {
    Exit::EntryFailed {
        reason: match error {
            VmxError::FailInvalid => 0,
            VmxError::FailValid(InstructionError(number)) => number,
        },
        detail: 0,
    }
}

/// The exit qualification of an invalid-guest-state failure (SDM 3C 27.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestStateFailure {
    /// Any check but those below.
    Default,
    /// Loading the PDPTEs failed.
    PdpteLoad,
    /// NMI injection while blocking by STI.
    NmiBlockedBySti,
    /// Invalid VMCS link pointer.
    VmcsLinkPointer,
    /// A value the SDM does not define.
    Unknown(u64),
}

/// A typed view of an [`Exit::EntryFailed`] produced by this backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryFailure {
    /// VMLAUNCH/VMRESUME failed as an instruction.
    Instruction(VmxError),
    /// Invalid guest state (reason 33).
    GuestState(GuestStateFailure),
    /// Loading the MSR with this 1-based index in the VM-entry MSR-load list failed
    /// (reason 34).
    MsrLoad {
        /// 1-based entry index.
        entry: u64,
    },
    /// A machine-check event during VM entry (reason 41).
    MachineCheck,
    /// An exit reason with bit 31 set but another basic reason.
    Other {
        /// Raw exit reason.
        reason: u32,
        /// Exit qualification.
        qualification: u64,
    },
}

impl EntryFailure {
    /// Type an [`Exit::EntryFailed`]'s `reason` and `detail`.
    pub fn from_exit(reason: u32, detail: u64) -> EntryFailure {
        let exit_reason = ExitReason(reason);
        if !exit_reason.entry_failure() && !is_entry_failure_reason(exit_reason.basic()) {
            return EntryFailure::Instruction(match reason {
                0 => VmxError::FailInvalid,
                n => VmxError::FailValid(InstructionError(n)),
            });
        }
        match exit_reason.basic() {
            reason::ENTRY_FAILURE_GUEST_STATE => EntryFailure::GuestState(match detail {
                0 => GuestStateFailure::Default,
                2 => GuestStateFailure::PdpteLoad,
                3 => GuestStateFailure::NmiBlockedBySti,
                4 => GuestStateFailure::VmcsLinkPointer,
                other => GuestStateFailure::Unknown(other),
            }),
            reason::ENTRY_FAILURE_MSR_LOADING => EntryFailure::MsrLoad { entry: detail },
            reason::ENTRY_FAILURE_MACHINE_CHECK => EntryFailure::MachineCheck,
            _ => EntryFailure::Other {
                reason,
                qualification: detail,
            },
        }
    }
}

impl fmt::Display for EntryFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntryFailure::Instruction(e) => write!(f, "VM entry failed: {e}"),
            EntryFailure::GuestState(detail) => {
                write!(f, "VM entry failed: invalid guest state ({detail:?})")
            }
            EntryFailure::MsrLoad { entry } => {
                write!(f, "VM entry failed loading MSR-load entry {entry}")
            }
            EntryFailure::MachineCheck => f.write_str("VM entry failed: machine-check event"),
            EntryFailure::Other {
                reason,
                qualification,
            } => write!(
                f,
                "VM entry failed: exit reason {reason:#x}, qualification {qualification:#x}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::decode;
    use super::super::VmxExit;
    use super::*;

    #[test]
    fn invalid_guest_state_as_bochs_reports_it() {
        let exit = decode(0x8000_0021, &[]).unwrap();
        assert_eq!(
            exit,
            VmxExit::Core(Exit::EntryFailed {
                reason: 0x8000_0021,
                detail: 0
            })
        );
        let VmxExit::Core(Exit::EntryFailed { reason, detail }) = exit else {
            unreachable!()
        };
        assert_eq!(
            EntryFailure::from_exit(reason, detail),
            EntryFailure::GuestState(GuestStateFailure::Default)
        );
    }

    #[test]
    fn msr_loading_failure_names_the_entry() {
        let exit = decode(0x8000_0022, &[(fields::EXIT_QUALIFICATION, 3)]).unwrap();
        assert_eq!(
            exit,
            VmxExit::Core(Exit::EntryFailed {
                reason: 0x8000_0022,
                detail: 3
            })
        );
        assert_eq!(
            EntryFailure::from_exit(0x8000_0022, 3),
            EntryFailure::MsrLoad { entry: 3 }
        );
    }

    #[test]
    fn machine_check_and_odd_failures() {
        assert_eq!(
            EntryFailure::from_exit(0x8000_0029, 0),
            EntryFailure::MachineCheck
        );
        // Bit 31 with a basic reason that is not an entry failure: still a failure.
        assert_eq!(
            decode(0x8000_000a, &[(fields::EXIT_QUALIFICATION, 9)]),
            Ok(VmxExit::Core(Exit::EntryFailed {
                reason: 0x8000_000a,
                detail: 9
            }))
        );
        assert_eq!(
            EntryFailure::from_exit(0x8000_000a, 9),
            EntryFailure::Other {
                reason: 0x8000_000a,
                qualification: 9
            }
        );
        assert_eq!(
            EntryFailure::from_exit(0x8000_0021, 4),
            EntryFailure::GuestState(GuestStateFailure::VmcsLinkPointer)
        );
        assert_eq!(
            EntryFailure::from_exit(0x8000_0021, 77),
            EntryFailure::GuestState(GuestStateFailure::Unknown(77))
        );
    }

    #[test]
    fn vmfail_becomes_entry_failed() {
        let bad_controls = VmxError::FailValid(InstructionError::ENTRY_INVALID_CONTROLS);
        let exit = instruction_failure(bad_controls);
        assert_eq!(
            exit,
            Exit::EntryFailed {
                reason: 7,
                detail: 0
            }
        );
        assert_eq!(
            EntryFailure::from_exit(7, 0),
            EntryFailure::Instruction(bad_controls)
        );
        assert_eq!(
            instruction_failure(VmxError::FailInvalid),
            Exit::EntryFailed {
                reason: 0,
                detail: 0
            }
        );
        assert_eq!(
            EntryFailure::from_exit(0, 0),
            EntryFailure::Instruction(VmxError::FailInvalid)
        );
        extern crate std;
        use std::string::ToString;
        assert_eq!(
            EntryFailure::from_exit(8, 0).to_string(),
            "VM entry failed: VMfailValid: VM-instruction error 8: VM entry with invalid \
             host-state field(s)"
        );
    }
}
