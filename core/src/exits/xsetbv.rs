//! XSETBV: XCR0 is checked against the CPU model here (KVM's `__kvm_set_xcr`) and then
//! loaded into the backend.

use crate::arch::{XCR0_SSE, XCR0_X87};
use crate::ops::X86Ops;
use crate::platform::Platform;
use crate::vm::{Flow, Vm};

/// Whether the guest may load `value` into XCR `index` when its CPU model supports the
/// XCR0 bits `supported` (SDM 2, XSETBV): only XCR0 exists, bit 0 (x87) must be set, and
/// no bit outside the model's state components may be; AVX state (bit 2) needs SSE.
pub fn xsetbv_allowed(index: u32, value: u64, supported: u64) -> bool {
    const AVX: u64 = 1 << 2;
    index == 0
        && value & XCR0_X87 != 0
        && value & !supported == 0
        && (value & AVX == 0 || value & XCR0_SSE != 0)
}

impl<B: X86Ops, P: Platform> Vm<B, P> {
    /// XSETBV. The backend has made the checks that come before the exit (#UD without
    /// CR4.OSXSAVE); the core checks the privilege level and the value (#GP(0)).
    #[cold]
    #[inline(never)]
    pub(crate) fn handle_xsetbv(&mut self, index: u32, value: u64) -> Flow {
        if self.vcpu().backend.cpl() != 0
            || !xsetbv_allowed(index, value, self.cpuid.xcr0_supported())
        {
            return self.inject_gp();
        }
        self.vcpu().backend.set_xcr0(value);
        self.vcpu().backend.skip_emulated_instruction();
        Flow::Resume
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xcr0_rules() {
        let x87_sse = XCR0_X87 | XCR0_SSE;
        assert!(xsetbv_allowed(0, 1, x87_sse));
        assert!(xsetbv_allowed(0, 3, x87_sse));
        // x87 cannot be turned off.
        assert!(!xsetbv_allowed(0, 2, x87_sse));
        assert!(!xsetbv_allowed(0, 0, x87_sse));
        // AVX is not a component of the model.
        assert!(!xsetbv_allowed(0, 7, x87_sse));
        // AVX without SSE is invalid even where AVX exists.
        assert!(!xsetbv_allowed(0, 5, 7));
        assert!(xsetbv_allowed(0, 7, 7));
        // Only XCR0 exists; without XSAVE nothing may be loaded.
        assert!(!xsetbv_allowed(1, 1, x87_sse));
        assert!(!xsetbv_allowed(0, 1, 0));
        assert!(!xsetbv_allowed(0, 1 << 63 | 1, x87_sse));
    }
}
