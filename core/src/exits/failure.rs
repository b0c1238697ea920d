//! Exits that end the run with an explanation.

use crate::exit::Exit;
use crate::ops::X86Ops;
use crate::platform::Platform;
use crate::vm::{Flow, RunOutcome, Vm};
use alloc::format;

impl<B: X86Ops, P: Platform> Vm<B, P> {
    #[cold]
    #[inline(never)]
    pub(crate) fn handle_failure(&mut self, exit: Exit) -> Flow {
        let rip = self.vcpu.rip();
        let why = match exit {
            Exit::SlatViolation { gpa } => {
                format!("guest accessed guest-physical {gpa:#x}, which is neither RAM nor a device it can execute from (rip {rip:#x})")
            }
            Exit::Exception { vector, error_code } => {
                format!("unexpected intercepted exception {vector} (error code {error_code:?}) at rip {rip:#x}")
            }
            Exit::EntryFailed { reason, detail } => {
                format!(
                    "{} could not enter the guest: reason {reason:#x}, detail {detail:#x}",
                    self.vcpu.name()
                )
            }
            Exit::EmulationFailure { rip } => {
                format!(
                    "{} could not complete the instruction at rip {rip:#x}",
                    self.vcpu.name()
                )
            }
            other => format!("unexpected exit {other:?} at rip {rip:#x}"),
        };
        self.stop(RunOutcome::Failed(why))
    }
}
