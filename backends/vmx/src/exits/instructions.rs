//! Intercepted instructions: XSETBV (55), INVD (13) and WBINVD (54), VMCALL (18, the
//! hypercall), the other VMX instructions (19-27, INVEPT 50, INVVPID 53, VMFUNC 59),
//! which a guest without VMX sees raise #UD, INVLPG (14, shadow paging), and the
//! instructions intercepted only to be refused. Every other defined reason that reaches
//! this module is one this backend's controls never cause.

use super::{read, reason, BackendExit, DecodeError, Gprs, VmxExit};
use crate::vmcs::{fields, VmcsAccess};
use opsvisor_core::ops::Gpr;
use opsvisor_core::Exit;

/// Whether `basic` is the exit of a VMX instruction other than VMCALL, which a guest
/// without VMX must see raise #UD.
fn is_vmx_instruction(basic: u16) -> bool {
    matches!(
        basic,
        reason::VMCLEAR..=reason::VMXON | reason::INVEPT | reason::INVVPID | reason::VMFUNC
    )
}

/// Whether `basic` is an instruction this backend intercepts in order to refuse it
/// (#UD or #GP in the guest): MWAIT/MONITOR would idle the physical processor, RDPMC
/// would read the host's counters, and GETSEC, SEAMCALL, TDCALL, RDMSRLIST and
/// WRMSRLIST exit unconditionally and are not offered to guests.
fn is_refused(basic: u16) -> bool {
    matches!(
        basic,
        reason::GETSEC
            | reason::RDPMC
            | reason::MWAIT
            | reason::MONITOR
            | reason::SEAMCALL
            | reason::TDCALL
            | reason::RDMSRLIST
            | reason::WRMSRLIST
    )
}

/// Decode an instruction exit (or report an unexpected one).
pub(crate) fn decode<V: VmcsAccess>(
    vmcs: &V,
    basic: u16,
    gprs: &Gprs,
) -> Result<VmxExit, DecodeError> {
    Ok(match basic {
        reason::XSETBV => {
            let low = gprs[Gpr::Rax as usize] & 0xffff_ffff;
            let high = gprs[Gpr::Rdx as usize] & 0xffff_ffff;
            VmxExit::Core(Exit::Xsetbv {
                index: gprs[Gpr::Rcx as usize] as u32,
                value: (high << 32) | low,
            })
        }
        reason::INVD | reason::WBINVD => VmxExit::Core(Exit::CacheFlush),
        reason::VMCALL => VmxExit::Core(Exit::Hypercall),
        // Only with PAUSE exiting, which the core asks for on a machine of several
        // vCPUs.
        reason::PAUSE => VmxExit::Core(Exit::Pause),
        b if is_vmx_instruction(b) => {
            VmxExit::Backend(BackendExit::RefusedInstruction { reason: b })
        }
        reason::INVLPG => VmxExit::Backend(BackendExit::Invlpg {
            address: read(vmcs, fields::EXIT_QUALIFICATION)?,
        }),
        b if is_refused(b) => VmxExit::Backend(BackendExit::RefusedInstruction { reason: b }),
        b => VmxExit::Backend(BackendExit::Unexpected { reason: b }),
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{decode, decode_with};
    use super::super::{BackendExit, VmxExit};
    use super::*;

    #[test]
    fn pause_is_the_cores() {
        assert_eq!(decode(40, &[]), Ok(VmxExit::Core(Exit::Pause)));
    }

    #[test]
    fn xsetbv_takes_ecx_and_edx_eax() {
        let mut gprs = [0; 16];
        gprs[Gpr::Rcx as usize] = 0xffff_0000_0000_0000;
        gprs[Gpr::Rax as usize] = 0xffff_ffff_0000_0007;
        gprs[Gpr::Rdx as usize] = 0x2;
        assert_eq!(
            decode_with(55, &[], &gprs),
            Ok(VmxExit::Core(Exit::Xsetbv {
                index: 0,
                value: 0x2_0000_0007
            }))
        );
    }

    #[test]
    fn cache_flushes() {
        assert_eq!(decode(13, &[]), Ok(VmxExit::Core(Exit::CacheFlush)));
        assert_eq!(decode(54, &[]), Ok(VmxExit::Core(Exit::CacheFlush)));
    }

    #[test]
    fn vmcall_is_the_hypercall_and_other_vmx_instructions_are_refused() {
        assert_eq!(decode(18, &[]), Ok(VmxExit::Core(Exit::Hypercall)));
        for basic in (19..=27).chain([50, 53, 59]) {
            assert_eq!(
                decode(basic, &[]),
                Ok(VmxExit::Backend(BackendExit::RefusedInstruction {
                    reason: basic as u16
                })),
                "{basic}"
            );
        }
    }

    #[test]
    fn invlpg_reports_the_address() {
        assert_eq!(
            decode(14, &[(fields::EXIT_QUALIFICATION, 0xffff_8000_0010_0000)]),
            Ok(VmxExit::Backend(BackendExit::Invlpg {
                address: 0xffff_8000_0010_0000
            }))
        );
    }

    #[test]
    fn refused_and_unexpected() {
        for basic in [11u16, 15, 36, 39, 76, 77, 78, 79] {
            assert_eq!(
                decode(basic.into(), &[]),
                Ok(VmxExit::Backend(BackendExit::RefusedInstruction {
                    reason: basic
                })),
                "{basic}"
            );
        }
        // RDTSC, MOV DR, MTF, APIC access, PML full: controls this backend leaves off.
        for basic in [5u16, 6, 16, 17, 29, 37, 43, 44, 46, 47, 51, 57, 62, 63, 75] {
            assert_eq!(
                decode(basic.into(), &[]),
                Ok(VmxExit::Backend(BackendExit::Unexpected { reason: basic })),
                "{basic}"
            );
        }
    }
}
