//! RDMSR and WRMSR (exit reasons 31, 32; with MSR bitmaps, only the MSRs whose bitmap
//! bit is set, or outside the bitmap ranges, exit). The MSR index is in ECX and the
//! WRMSR value in EDX:EAX, taken from the saved registers.

use super::{reason, Gprs, VmxExit};
use opsvisor_core::ops::Gpr;
use opsvisor_core::Exit;

/// Decode an RDMSR or WRMSR exit.
pub(crate) fn decode(basic: u16, gprs: &Gprs) -> VmxExit {
    // Only the low 32 bits of RCX, RAX and RDX take part, as in the instruction.
    let index = gprs[Gpr::Rcx as usize] as u32;
    if basic == reason::RDMSR {
        VmxExit::Core(Exit::Rdmsr { index })
    } else {
        let low = gprs[Gpr::Rax as usize] & 0xffff_ffff;
        let high = gprs[Gpr::Rdx as usize] & 0xffff_ffff;
        VmxExit::Core(Exit::Wrmsr {
            index,
            value: (high << 32) | low,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::decode_with;
    use super::super::VmxExit;
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
            decode_with(31, &[], &gprs),
            Ok(VmxExit::Core(Exit::Rdmsr { index: 0xc000_0080 }))
        );
    }

    #[test]
    fn wrmsr_takes_edx_eax_and_ignores_upper_halves() {
        let gprs = regs(0xaaaa_aaaa_0000_0d01, 0x1b, 0xbbbb_bbbb_0000_0001);
        assert_eq!(
            decode_with(32, &[], &gprs),
            Ok(VmxExit::Core(Exit::Wrmsr {
                index: 0x1b,
                value: 0x1_0000_0d01
            }))
        );
    }
}
