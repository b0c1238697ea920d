//! What the comparison allows for SSE results the architecture does not pin down bit
//! for bit: RCPPS/RCPSS/RSQRTPS/RSQRTSS return approximations whose exact bits differ
//! between CPU vendors; the SDM bounds only their relative error.

use iced_x86::Instruction;

/// Whether XMM register `reg` holding `native` on the host and `emu` on the emulator
/// after running `instrs` counts as agreement (called only when the two differ).
pub fn xmm_equivalent(instrs: &[Instruction], reg: usize, native: u128, emu: u128) -> bool {
    let _ = (instrs, reg, native, emu);
    false
}
