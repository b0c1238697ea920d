//! Task switch (exit reason 9): task switches always exit in VMX non-root operation
//! (SDM 3C 26.1.2); the qualification names the new TSS and the cause (table 28-2).

use super::{read, reason, BackendExit, DecodeError, VmxExit};
use crate::vmcs::{fields, VmcsAccess};

/// What started the task switch (qualification bits 31:30).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskSwitchSource {
    /// CALL instruction.
    Call,
    /// IRET instruction.
    Iret,
    /// JMP instruction.
    Jmp,
    /// A task gate in the IDT (the event is in the IDT-vectoring information).
    TaskGate,
}

/// A decoded task-switch exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskSwitch {
    /// Selector of the new task's TSS.
    pub selector: u16,
    /// What caused the switch.
    pub source: TaskSwitchSource,
}

/// Decode a task-switch exit.
pub(crate) fn decode<V: VmcsAccess>(vmcs: &V) -> Result<VmxExit, DecodeError> {
    let qualification = read(vmcs, fields::EXIT_QUALIFICATION)?;
    // Bits 29:16 and 63:32 are reserved (0).
    if qualification & !0xc000_ffff != 0 {
        return Err(DecodeError::InvalidQualification {
            reason: reason::TASK_SWITCH,
            qualification,
        });
    }
    let source = match (qualification >> 30) & 3 {
        0 => TaskSwitchSource::Call,
        1 => TaskSwitchSource::Iret,
        2 => TaskSwitchSource::Jmp,
        _ => TaskSwitchSource::TaskGate,
    };
    Ok(VmxExit::Backend(BackendExit::TaskSwitch(TaskSwitch {
        selector: (qualification & 0xffff) as u16,
        source,
    })))
}

#[cfg(test)]
mod tests {
    use super::super::test_util::decode;
    use super::super::{BackendExit, DecodeError, VmxExit};
    use super::*;

    #[test]
    fn task_switch_sources() {
        for (bits, source) in [
            (0u64, TaskSwitchSource::Call),
            (1, TaskSwitchSource::Iret),
            (2, TaskSwitchSource::Jmp),
            (3, TaskSwitchSource::TaskGate),
        ] {
            assert_eq!(
                decode(9, &[(fields::EXIT_QUALIFICATION, (bits << 30) | 0x28)]),
                Ok(VmxExit::Backend(BackendExit::TaskSwitch(TaskSwitch {
                    selector: 0x28,
                    source
                })))
            );
        }
        assert_eq!(
            decode(9, &[(fields::EXIT_QUALIFICATION, 0x1_0028)]),
            Err(DecodeError::InvalidQualification {
                reason: 9,
                qualification: 0x1_0028
            })
        );
    }
}
