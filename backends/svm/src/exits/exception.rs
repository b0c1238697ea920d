//! Intercepted exceptions (exit codes 0x40-0x5F, vector = code - 0x40; APM 2 15.12):
//! EXITINFO1 holds the error code of the vectors that push one, and for #PF EXITINFO2
//! the faulting address (CR2 is not written). #DB, intercepted only for the step after
//! an IRET that unblocked NMIs, #UD (always intercepted, for VMCALL: see
//! [`super::invalid_opcode`]) and #PF are the backend's; any other becomes core's
//! [`Exit::Exception`].

use super::{code, BackendExit, SvmExit};
use crate::event::exception_has_error_code;
use crate::vmcb::{fields, VmcbAccess};
use opsvisor_core::Exit;

/// #DB.
const DEBUG: u8 = 1;
/// NMI: not an exception, never intercepted as one.
const NMI: u8 = 2;
/// #UD.
const INVALID_OPCODE: u8 = 6;
/// #PF.
pub(crate) const PAGE_FAULT: u8 = 14;

/// Decode an exception exit (`c` in 0x40..=0x5F).
pub(crate) fn decode<V: VmcbAccess>(vmcb: &V, c: u64) -> SvmExit {
    let vector = c.wrapping_sub(code::EXCP0) as u8 & 31;
    let error_code = exception_has_error_code(vector).then(|| vmcb.read(fields::EXITINFO1) as u32);
    match vector {
        PAGE_FAULT => SvmExit::Backend(BackendExit::PageFault {
            address: vmcb.read(fields::EXITINFO2),
            error_code: error_code.unwrap_or(0),
        }),
        DEBUG => SvmExit::Backend(BackendExit::DebugException),
        INVALID_OPCODE => SvmExit::Backend(BackendExit::InvalidOpcode),
        NMI => SvmExit::Backend(BackendExit::Unexpected { code: c }),
        _ => SvmExit::Core(Exit::Exception { vector, error_code }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::decode;
    use super::super::{code, BackendExit, SvmExit};
    use crate::vmcb::fields;
    use opsvisor_core::Exit;

    #[test]
    fn general_protection_with_error_code() {
        assert_eq!(
            decode(
                code::EXCP0 + 13,
                &[(fields::EXITINFO1, 0xffff_0000_0000_0010)]
            ),
            Ok(SvmExit::Core(Exit::Exception {
                vector: 13,
                error_code: Some(0x10)
            }))
        );
    }

    #[test]
    fn machine_check_and_others_without_error_code() {
        for vector in [18u8, 0, 31] {
            assert_eq!(
                decode(code::EXCP0 + u64::from(vector), &[(fields::EXITINFO1, 5)]),
                Ok(SvmExit::Core(Exit::Exception {
                    vector,
                    error_code: None
                })),
                "{vector}"
            );
        }
    }

    #[test]
    fn page_fault_and_debug_are_the_backends() {
        assert_eq!(
            decode(
                code::EXCP0 + 14,
                &[(fields::EXITINFO1, 0x6), (fields::EXITINFO2, 0xdead_b000)]
            ),
            Ok(SvmExit::Backend(BackendExit::PageFault {
                address: 0xdead_b000,
                error_code: 6
            }))
        );
        assert_eq!(
            decode(code::EXCP0 + 1, &[]),
            Ok(SvmExit::Backend(BackendExit::DebugException))
        );
        assert_eq!(
            decode(code::EXCP0 + 2, &[]),
            Ok(SvmExit::Backend(BackendExit::Unexpected {
                code: code::EXCP0 + 2
            }))
        );
    }
}
