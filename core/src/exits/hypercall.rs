//! VMCALL and VMMCALL: the hypercall interface, with KVM's calling convention
//! (Documentation/virt/kvm/x86/hypercalls.rst): the number in RAX, up to four arguments
//! in RBX, RCX, RDX and RSI, the result in RAX, and the instruction retired. The machine
//! offers no hypercall yet, so every number answers -KVM_ENOSYS, and a call from CPL > 0
//! answers -KVM_EPERM, as KVM does. Outside 64-bit mode the result is truncated to
//! 32 bits and zero-extended, as KVM writes it.

use crate::ops::{Gpr, SegReg, Segment, X86Ops};
use crate::platform::Platform;
use crate::vm::{Flow, Vm};

/// KVM's "no such hypercall" (`-KVM_ENOSYS`).
pub const KVM_ENOSYS: i64 = 1000;
/// KVM's "not permitted" (`-KVM_EPERM`): a hypercall from CPL > 0.
pub const KVM_EPERM: i64 = 1;

impl<B: X86Ops, P: Platform> Vm<B, P> {
    #[cold]
    #[inline(never)]
    pub(crate) fn handle_hypercall(&mut self) -> Flow {
        let result = if self.vcpu().backend.cpl() != 0 {
            -KVM_EPERM
        } else {
            -KVM_ENOSYS
        };
        let long64 = self.vcpu().backend.efer() & crate::arch::EFER_LMA != 0
            && self.vcpu().backend.segment(SegReg::Cs).attr & Segment::L != 0;
        let value = if long64 {
            result as u64
        } else {
            u64::from(result as u32)
        };
        self.vcpu().backend.set_gpr(Gpr::Rax, value);
        self.vcpu().backend.skip_emulated_instruction();
        Flow::Resume
    }
}
