//! XSETBV (exit code 0x8D): the XCR number in ECX, the value in EDX:EAX.

use super::{Gprs, SvmExit};
use opsvisor_core::ops::Gpr;
use opsvisor_core::Exit;

/// Decode an XSETBV exit.
pub(crate) fn decode(gprs: &Gprs) -> SvmExit {
    let low = gprs[Gpr::Rax as usize] & 0xffff_ffff;
    let high = gprs[Gpr::Rdx as usize] & 0xffff_ffff;
    SvmExit::Core(Exit::Xsetbv {
        index: gprs[Gpr::Rcx as usize] as u32,
        value: (high << 32) | low,
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_util::decode_with;
    use super::super::{code, SvmExit};
    use opsvisor_core::ops::Gpr;
    use opsvisor_core::Exit;

    #[test]
    fn xsetbv_takes_ecx_and_edx_eax() {
        let mut gprs = [0; 16];
        gprs[Gpr::Rcx as usize] = 0xffff_0000_0000_0000;
        gprs[Gpr::Rax as usize] = 0xffff_ffff_0000_0007;
        gprs[Gpr::Rdx as usize] = 0x2;
        assert_eq!(
            decode_with(code::XSETBV, &[], &gprs),
            Ok(SvmExit::Core(Exit::Xsetbv {
                index: 0,
                value: 0x2_0000_0007
            }))
        );
    }
}
