//! PAUSE, which the backends report only when the core asks ([`X86Ops::set_pause_exiting`],
//! on machines of several vCPUs): the guest spins waiting for something, which another
//! vCPU must do (release a lock, answer an IPI), so the spinning vCPU's turn ends and the
//! others run (KVM's PAUSE-loop exiting and `kvm_vcpu_on_spin`).

use crate::ops::X86Ops;
use crate::platform::Platform;
use crate::vm::{Flow, Vm};

impl<B: X86Ops, P: Platform> Vm<B, P> {
    pub(crate) fn handle_pause(&mut self) -> Flow {
        self.vcpu().backend.skip_emulated_instruction();
        if self.vcpus.len() > 1 {
            Flow::Yield
        } else {
            Flow::Resume
        }
    }
}
