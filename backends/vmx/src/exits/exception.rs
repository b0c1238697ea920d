//! Exception or NMI (exit reason 0): an exception whose exception-bitmap bit is set, or
//! a host NMI under "NMI exiting" (SDM 3C 28.2.2 for the exit information).

use super::{read, BackendExit, DecodeError, VmxExit};
use crate::event::{InterruptionInfo, InterruptionType};
use crate::vmcs::{fields, VmcsAccess};
use opsvisor_core::Exit;

/// #DB.
const DEBUG: u8 = 1;
/// #PF.
const PAGE_FAULT: u8 = 14;

/// Decode an exception-or-NMI exit.
pub(crate) fn decode<V: VmcsAccess>(vmcs: &V) -> Result<VmxExit, DecodeError> {
    let raw = read(vmcs, fields::VM_EXIT_INTR_INFO)? as u32;
    let info = InterruptionInfo(raw);
    let invalid = DecodeError::InvalidInterruptionInfo {
        field: fields::VM_EXIT_INTR_INFO,
        info: raw,
    };
    if !info.valid() {
        return Err(invalid);
    }
    let vector = info.vector();
    let kind = info.kind().ok_or(invalid)?;
    match kind {
        InterruptionType::Nmi if vector == 2 && !info.has_error_code() => {
            return Ok(VmxExit::Backend(BackendExit::HostNmi));
        }
        InterruptionType::HardwareException
        | InterruptionType::SoftwareException
        | InterruptionType::PrivilegedSoftwareException
            if vector < 32 && vector != 2 => {}
        // External and software interrupts have their own exit reasons or none;
        // "other event" is entry-only.
        _ => return Err(invalid),
    }
    // Only hardware exceptions push error codes.
    if info.has_error_code() && kind != InterruptionType::HardwareException {
        return Err(invalid);
    }
    let error_code = if info.has_error_code() {
        Some(read(vmcs, fields::VM_EXIT_INTR_ERROR_CODE)? as u32)
    } else {
        None
    };
    match vector {
        PAGE_FAULT => {
            let address = read(vmcs, fields::EXIT_QUALIFICATION)?;
            // #PF always pushes an error code.
            let error_code = error_code.ok_or(invalid)?;
            Ok(VmxExit::Backend(BackendExit::PageFault {
                address,
                error_code,
            }))
        }
        DEBUG => {
            let qualification = read(vmcs, fields::EXIT_QUALIFICATION)?;
            // Defined bits: B0-B3 (3:0), BD (13), BS (14), RTM (16).
            let defined = 0xf | (1 << 13) | (1 << 14) | (1 << 16);
            Ok(VmxExit::Backend(BackendExit::DebugException {
                pending_dr6: qualification & defined,
                int1: kind == InterruptionType::PrivilegedSoftwareException,
            }))
        }
        _ => Ok(VmxExit::Core(Exit::Exception { vector, error_code })),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::decode;
    use super::super::{BackendExit, DecodeError, VmxExit};
    use crate::vmcs::fields;
    use opsvisor_core::Exit;

    #[test]
    fn general_protection_with_error_code() {
        assert_eq!(
            decode(
                0,
                &[
                    (fields::VM_EXIT_INTR_INFO, 0x8000_0b0d),
                    (fields::VM_EXIT_INTR_ERROR_CODE, 0x10),
                ]
            ),
            Ok(VmxExit::Core(Exit::Exception {
                vector: 13,
                error_code: Some(0x10)
            }))
        );
    }

    #[test]
    fn invalid_opcode_and_breakpoint_without_error_code() {
        assert_eq!(
            decode(0, &[(fields::VM_EXIT_INTR_INFO, 0x8000_0306)]),
            Ok(VmxExit::Core(Exit::Exception {
                vector: 6,
                error_code: None
            }))
        );
        // INT3: software exception.
        assert_eq!(
            decode(0, &[(fields::VM_EXIT_INTR_INFO, 0x8000_0603)]),
            Ok(VmxExit::Core(Exit::Exception {
                vector: 3,
                error_code: None
            }))
        );
    }

    #[test]
    fn page_fault_reports_the_address() {
        assert_eq!(
            decode(
                0,
                &[
                    (fields::VM_EXIT_INTR_INFO, 0x8000_0b0e),
                    (fields::VM_EXIT_INTR_ERROR_CODE, 0x7),
                    (fields::EXIT_QUALIFICATION, 0xffff_8000_dead_b000),
                ]
            ),
            Ok(VmxExit::Backend(BackendExit::PageFault {
                address: 0xffff_8000_dead_b000,
                error_code: 7
            }))
        );
        assert_eq!(
            decode(0, &[(fields::VM_EXIT_INTR_INFO, 0x8000_030e)]),
            Err(DecodeError::InvalidInterruptionInfo {
                field: fields::VM_EXIT_INTR_INFO,
                info: 0x8000_030e
            })
        );
    }

    #[test]
    fn debug_exception_reports_dr6_bits() {
        assert_eq!(
            decode(
                0,
                &[
                    (fields::VM_EXIT_INTR_INFO, 0x8000_0301),
                    (fields::EXIT_QUALIFICATION, 0x4001 | 0xff00_0000),
                ]
            ),
            Ok(VmxExit::Backend(BackendExit::DebugException {
                pending_dr6: 0x4001,
                int1: false
            }))
        );
        assert_eq!(
            decode(0, &[(fields::VM_EXIT_INTR_INFO, 0x8000_0501)]),
            Ok(VmxExit::Backend(BackendExit::DebugException {
                pending_dr6: 0,
                int1: true
            }))
        );
    }

    #[test]
    fn host_nmi() {
        assert_eq!(
            decode(0, &[(fields::VM_EXIT_INTR_INFO, 0x8000_0202)]),
            Ok(VmxExit::Backend(BackendExit::HostNmi))
        );
    }

    #[test]
    fn garbage_interruption_information_is_an_error() {
        for raw in [
            0u32,        // not valid
            0x0000_0b0d, // valid bit clear
            0x8000_0030, // external interrupt
            0x8000_0480, // software interrupt
            0x8000_0700, // other event
            0x8000_0100, // reserved type
            0x8000_0320, // hardware exception 32
            0x8000_0302, // NMI vector as an exception
            0x8000_0203, // NMI type with vector 3
            0x8000_0e03, // software exception with an error code
        ] {
            assert_eq!(
                decode(0, &[(fields::VM_EXIT_INTR_INFO, raw.into())]),
                Err(DecodeError::InvalidInterruptionInfo {
                    field: fields::VM_EXIT_INTR_INFO,
                    info: raw
                }),
                "{raw:#x}"
            );
        }
    }
}
