//! What the comparison allows for x87 state the architecture leaves undefined: the
//! condition codes many instructions leave undefined (SDM 1 8.1.3.1 and each
//! instruction's "FPU Flags Affected").

use iced_x86::Instruction;

/// The x87 status-word bits whose value after `instrs` is undefined.
pub fn undefined_fsw(instrs: &[Instruction]) -> u16 {
    let _ = instrs;
    0
}
