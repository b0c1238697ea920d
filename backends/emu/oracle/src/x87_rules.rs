//! What the comparison allows for x87 state the architecture leaves undefined: the
//! condition codes many instructions leave undefined (SDM 1 8.1.3.1 and each
//! instruction's "FPU Flags Affected").

use iced_x86::Instruction;

/// The x87 status-word bits whose value after `instrs` is undefined.
pub fn undefined_fsw(instrs: &[Instruction]) -> u16 {
    let _ = instrs;
    0
}

/// Whether ST(`i`) holding `native` on the host and `emu` on the emulator after running
/// `instrs` counts as agreement (called only when the two differ).
pub fn st_equivalent(instrs: &[Instruction], i: usize, native: u128, emu: u128) -> bool {
    let _ = (instrs, i, native, emu);
    false
}
