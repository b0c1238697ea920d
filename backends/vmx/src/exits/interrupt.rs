//! Interrupt-type exits: external interrupt (1), INIT (3), SIPI (4), interrupt window
//! (7), NMI window (8) and VMX-preemption timer expiry (52).

use super::{read, reason, BackendExit, DecodeError, VmxExit};
use crate::event::{InterruptionInfo, InterruptionType};
use crate::vmcs::{fields, VmcsAccess};
use opsvisor_core::Exit;

/// Decode one of the exits above (`basic` is one of their reasons).
pub(crate) fn decode<V: VmcsAccess>(vmcs: &V, basic: u16) -> Result<VmxExit, DecodeError> {
    Ok(match basic {
        reason::EXTERNAL_INTERRUPT => VmxExit::Backend(BackendExit::HostInterrupt {
            vector: acknowledged_vector(vmcs)?,
        }),
        reason::INIT_SIGNAL => VmxExit::Backend(BackendExit::Init),
        reason::SIPI => {
            let qualification = read(vmcs, fields::EXIT_QUALIFICATION)?;
            // Bits 7:0 hold the vector; the rest are 0.
            if qualification > 0xff {
                return Err(DecodeError::InvalidQualification {
                    reason: basic,
                    qualification,
                });
            }
            VmxExit::Backend(BackendExit::Sipi {
                vector: qualification as u8,
            })
        }
        reason::INTERRUPT_WINDOW => VmxExit::Core(Exit::InterruptWindow),
        reason::NMI_WINDOW => VmxExit::Core(Exit::NmiWindow),
        reason::PREEMPTION_TIMER_EXPIRED => VmxExit::Core(Exit::Preempted),
        _ => VmxExit::Backend(BackendExit::Unexpected { reason: basic }),
    })
}

/// With "acknowledge interrupt on exit", the exit interruption information holds the
/// vector as a valid external interrupt; without it, the field is invalid.
fn acknowledged_vector<V: VmcsAccess>(vmcs: &V) -> Result<Option<u8>, DecodeError> {
    let raw = read(vmcs, fields::VM_EXIT_INTR_INFO)? as u32;
    let info = InterruptionInfo(raw);
    if !info.valid() {
        return Ok(None);
    }
    if info.kind() != Some(InterruptionType::ExternalInterrupt) || info.has_error_code() {
        return Err(DecodeError::InvalidInterruptionInfo {
            field: fields::VM_EXIT_INTR_INFO,
            info: raw,
        });
    }
    Ok(Some(info.vector()))
}

#[cfg(test)]
mod tests {
    use super::super::test_util::decode;
    use super::super::{BackendExit, DecodeError, VmxExit};
    use crate::vmcs::fields;
    use opsvisor_core::Exit;

    #[test]
    fn acknowledged_external_interrupt_carries_its_vector() {
        assert_eq!(
            decode(1, &[(fields::VM_EXIT_INTR_INFO, 0x8000_00ec)]),
            Ok(VmxExit::Backend(BackendExit::HostInterrupt {
                vector: Some(0xec)
            }))
        );
        assert_eq!(
            decode(1, &[]),
            Ok(VmxExit::Backend(BackendExit::HostInterrupt {
                vector: None
            }))
        );
    }

    #[test]
    fn external_interrupt_with_wrong_type_is_an_error() {
        assert_eq!(
            decode(1, &[(fields::VM_EXIT_INTR_INFO, 0x8000_0202)]),
            Err(DecodeError::InvalidInterruptionInfo {
                field: fields::VM_EXIT_INTR_INFO,
                info: 0x8000_0202
            })
        );
    }

    #[test]
    fn windows_and_timer() {
        assert_eq!(decode(7, &[]), Ok(VmxExit::Core(Exit::InterruptWindow)));
        assert_eq!(decode(8, &[]), Ok(VmxExit::Core(Exit::NmiWindow)));
        assert_eq!(decode(52, &[]), Ok(VmxExit::Core(Exit::Preempted)));
    }

    #[test]
    fn init_and_sipi() {
        assert_eq!(decode(3, &[]), Ok(VmxExit::Backend(BackendExit::Init)));
        assert_eq!(
            decode(4, &[(fields::EXIT_QUALIFICATION, 0x9f)]),
            Ok(VmxExit::Backend(BackendExit::Sipi { vector: 0x9f }))
        );
        assert_eq!(
            decode(4, &[(fields::EXIT_QUALIFICATION, 0x1_009f)]),
            Err(DecodeError::InvalidQualification {
                reason: 4,
                qualification: 0x1_009f
            })
        );
    }
}
