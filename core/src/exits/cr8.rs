//! MOV to and from CR8: CR8 is the local APIC's task-priority register, one value with
//! the TPR that the xAPIC page and the x2APIC MSR show (SDM 3A 10.8.6.1: CR8 bits 3:0
//! are TPR bits 7:4), so interrupt delivery honours whichever the guest wrote.

use crate::exit::Direction;
use crate::ops::{Gpr, X86Ops};
use crate::platform::Platform;
use crate::vm::{Flow, Vm};

impl<B: X86Ops, P: Platform> Vm<B, P> {
    pub(crate) fn handle_cr8(&mut self, direction: Direction, gpr: Gpr) -> Flow {
        match direction {
            Direction::Write => {
                let value = self.vcpu().backend.gpr(gpr);
                // Bits 63:4 are reserved (SDM 3A 2.5).
                if value > 15 {
                    return self.inject_gp();
                }
                self.vcpu().apic.set_cr8(value as u8);
                self.vcpu().backend.skip_emulated_instruction();
                // A lower priority may let a requested interrupt through.
                Flow::Events
            }
            Direction::Read => {
                let value = u64::from(self.vcpu().apic.cr8());
                self.platform.observe_read(value);
                self.vcpu().backend.set_gpr(gpr, value);
                self.vcpu().backend.skip_emulated_instruction();
                Flow::Resume
            }
        }
    }
}
