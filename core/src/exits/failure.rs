//! Exits that end the run with an explanation.

use crate::exit::Exit;
use crate::ops::X86Ops;
use crate::platform::Platform;
use crate::vm::{Flow, RunOutcome, Vm};
use alloc::format;

/// #DB.
const DB_VECTOR: u8 = 1;
/// #BP.
const BP_VECTOR: u8 = 3;

impl<B: X86Ops, P: Platform> Vm<B, P> {
    #[cold]
    #[inline(never)]
    pub(crate) fn handle_failure(&mut self, exit: Exit) -> Flow {
        if let Exit::Exception {
            vector: vector @ (DB_VECTOR | BP_VECTOR),
            ..
        } = exit
        {
            // A backend intercepts #DB and #BP only when a debugger asks it to stop.
            return self.stop(RunOutcome::Debug { vector });
        }
        let rip = self.vcpu().backend.rip();
        let name = self.vcpu().backend.name();
        let index = self.cur;
        let why = match exit {
            Exit::SlatViolation { gpa } => {
                format!("guest accessed guest-physical {gpa:#x}, which is neither RAM nor a device it can execute from (rip {rip:#x})")
            }
            Exit::Exception { vector, error_code } => {
                format!("unexpected intercepted exception {vector} (error code {error_code:?}) at rip {rip:#x}")
            }
            Exit::EntryFailed { reason, detail } => {
                format!(
                    "{name} could not enter the guest (vCPU {index}): reason {reason:#x}, detail {detail:#x}"
                )
            }
            Exit::EmulationFailure { rip } => {
                format!("{name} could not complete the instruction at rip {rip:#x}")
            }
            other => format!("unexpected exit {other:?} at rip {rip:#x}"),
        };
        self.stop(RunOutcome::Failed(why))
    }
}
