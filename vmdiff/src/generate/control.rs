//! Control transfer: forward branches (as [`Item::Branch`], resolved when the case is
//! laid out), and the instructions that end a case early in a handler or at a HLT:
//! INT n, INT3, INTO, INT1, UD2, HLT.

use super::emit::{self, Gen};
use crate::case::{BranchOp, Item, MAX_SKIP};
use alloc::vec;
use alloc::vec::Vec;
use iced_x86::{Code, Instruction};

/// One forward branch over 1..=[`MAX_SKIP`] items.
pub(crate) fn branch(g: &mut Gen) -> Item {
    let op = g.weighted(&[
        (8, BranchOp::Jcc),
        (2, BranchOp::Jmp),
        (2, BranchOp::Loop),
        (1, BranchOp::Loope),
        (1, BranchOp::Loopne),
        (2, BranchOp::Jcxz),
        (2, BranchOp::Call),
    ]);
    let cond = if op == BranchOp::Jcc {
        g.below(16) as u8
    } else {
        0
    };
    let skip = g.range(1, i64::from(MAX_SKIP)) as u8;
    Item::Branch { op, cond, skip }
}

/// An instruction that raises an exception or interrupt, or halts.
pub(crate) fn event(g: &mut Gen) -> Option<Vec<Item>> {
    let mode = g.mode;
    let item = match g.weighted(&[(4, 0u8), (2, 1), (2, 2), (1, 3), (2, 4), (1, 5)]) {
        0 => emit::item(
            mode,
            Instruction::with1(Code::Int_imm8, g.below(256) as u32),
        )?,
        1 => emit::bare(mode, Code::Int3)?,
        2 if !g.long() => emit::bare(mode, Code::Into)?,
        3 => emit::bare(mode, Code::Int1)?,
        5 => emit::bare(mode, Code::Hlt)?,
        _ => emit::bare(mode, Code::Ud2)?,
    };
    Some(vec![item])
}
