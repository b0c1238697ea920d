//! Exits that end the run with an explanation, and instructions the core refuses.

use crate::exit::Exit;
use crate::ops::{Event, X86Ops};
use crate::platform::Platform;
use crate::vm::{Flow, RunOutcome, Vm};
use alloc::format;

/// #UD.
const UD_VECTOR: u8 = 6;
/// #DB.
const DB_VECTOR: u8 = 1;
/// #BP.
const BP_VECTOR: u8 = 3;

impl<B: X86Ops, P: Platform> Vm<B, P> {
    /// XSETBV (no XSAVE in any CPU model yet) and VMCALL/VMMCALL (no hypercall interface):
    /// the guest sees #UD, as on a CPU without them.
    #[cold]
    #[inline(never)]
    pub(crate) fn handle_undefined_instruction(&mut self) -> Flow {
        self.vcpu().backend.inject_event(Event::Exception {
            vector: UD_VECTOR,
            error_code: None,
        });
        Flow::Resume
    }

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
