//! RDMSR and WRMSR (exit code 0x7C; EXITINFO1 0 for RDMSR, 1 for WRMSR). Only MSRs
//! whose permission-map bit is set, or outside the map's ranges, exit. The MSR index is
//! in ECX and the WRMSR value in EDX:EAX.

use super::{code, DecodeError, Gprs, SvmExit};
use crate::vmcb::{fields, VmcbAccess};
use opsvisor_core::ops::Gpr;
use opsvisor_core::Exit;

/// Decode an MSR exit.
pub(crate) fn decode<V: VmcbAccess>(vmcb: &V, gprs: &Gprs) -> Result<SvmExit, DecodeError> {
    // Only the low 32 bits of RCX, RAX and RDX take part, as in the instruction.
    let index = gprs[Gpr::Rcx as usize] as u32;
    match vmcb.read(fields::EXITINFO1) {
        0 => Ok(SvmExit::Core(Exit::Rdmsr { index })),
        1 => {
            let low = gprs[Gpr::Rax as usize] & 0xffff_ffff;
            let high = gprs[Gpr::Rdx as usize] & 0xffff_ffff;
            Ok(SvmExit::Core(Exit::Wrmsr {
                index,
                value: (high << 32) | low,
            }))
        }
        info1 => Err(DecodeError::InvalidExitInfo {
            code: code::MSR,
            info1,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::decode_with;
    use super::super::{code, DecodeError, SvmExit};
    use crate::vmcb::fields;
    use opsvisor_core::ops::Gpr;
    use opsvisor_core::Exit;

    fn regs(rax: u64, rcx: u64, rdx: u64) -> [u64; 16] {
        let mut gprs = [0xdead_beef_dead_beef; 16];
        gprs[Gpr::Rax as usize] = rax;
        gprs[Gpr::Rcx as usize] = rcx;
        gprs[Gpr::Rdx as usize] = rdx;
        gprs
    }

    #[test]
    fn rdmsr_takes_ecx() {
        let gprs = regs(0, 0xffff_ffff_c000_0080, 0);
        assert_eq!(
            decode_with(code::MSR, &[(fields::EXITINFO1, 0)], &gprs),
            Ok(SvmExit::Core(Exit::Rdmsr { index: 0xc000_0080 }))
        );
    }

    #[test]
    fn wrmsr_takes_edx_eax_and_ignores_upper_halves() {
        let gprs = regs(0xaaaa_aaaa_0000_0d01, 0x1b, 0xbbbb_bbbb_0000_0001);
        assert_eq!(
            decode_with(code::MSR, &[(fields::EXITINFO1, 1)], &gprs),
            Ok(SvmExit::Core(Exit::Wrmsr {
                index: 0x1b,
                value: 0x1_0000_0d01
            }))
        );
    }

    #[test]
    fn other_exit_information_is_an_error() {
        assert_eq!(
            decode_with(code::MSR, &[(fields::EXITINFO1, 2)], &[0; 16]),
            Err(DecodeError::InvalidExitInfo {
                code: code::MSR,
                info1: 2
            })
        );
    }
}
