//! Stack instructions: PUSH/POP of registers, immediates and `[rbx+disp8]`, PUSHF/POPF,
//! PUSHA/POPA, ENTER/LEAVE.
//!
//! Whatever pops into RBX/RSP or loads RSP from RBP is paired with what makes the value a
//! good one (PUSHA before POPA, ENTER before LEAVE), and POPF only ever pops flags read by
//! PUSHF with IF/AC/DF changed, never TF.

use super::emit::{self, Gen};
use crate::case::{Item, Mode};
use alloc::vec;
use alloc::vec::Vec;
use iced_x86::{Code, Instruction, Register};

/// A group of stack items.
pub(crate) fn group(g: &mut Gen) -> Option<Vec<Item>> {
    let mode = g.mode;
    match g.weighted(&[
        (6, 0u8),
        (4, 1),
        (3, 2),
        (2, 3),
        (2, 4),
        (2, 5),
        (3, 6),
        (2, 7),
    ]) {
        0 => Some(vec![push(g)?]),
        1 => Some(vec![pop(g)?]),
        2 => Some(vec![push(g)?, pop(g)?]),
        3 => Some(vec![emit::bare(mode, pushf_code(mode))?]),
        4 => flags(g),
        5 => pusha(g),
        6 => enter(g),
        _ => Some(vec![
            emit::bare(mode, pushf_code(mode))?,
            emit::bare(mode, popf_code(mode))?,
        ]),
    }
}

fn pushf_code(mode: Mode) -> Code {
    match mode.bitness() {
        16 => Code::Pushfw,
        32 => Code::Pushfd,
        _ => Code::Pushfq,
    }
}

fn popf_code(mode: Mode) -> Code {
    match mode.bitness() {
        16 => Code::Popfw,
        32 => Code::Popfd,
        _ => Code::Popfq,
    }
}

/// PUSH of a register (any, RBX/RSP included), an immediate or `[rbx+disp8]`, in the
/// mode's operand sizes.
fn push(g: &mut Gen) -> Option<Item> {
    let mode = g.mode;
    let codes: &[Code] = match mode.bitness() {
        16 | 32 => &[
            Code::Push_r16,
            Code::Push_r32,
            Code::Push_rm16,
            Code::Push_rm32,
            Code::Push_imm16,
            Code::Pushd_imm32,
            Code::Pushw_imm8,
            Code::Pushd_imm8,
        ],
        _ => &[
            Code::Push_r16,
            Code::Push_r64,
            Code::Push_rm16,
            Code::Push_rm64,
            Code::Push_imm16,
            Code::Pushq_imm32,
            Code::Pushw_imm8,
            Code::Pushq_imm8,
        ],
    };
    for _ in 0..8 {
        let code = g.pick(codes);
        // PUSH writes RSP by design: build it without the RBX/RSP write filter.
        let mut ins = Instruction::default();
        ins.set_code(code);
        match code {
            Code::Push_r16 => reg_op(&mut ins, emit::any_reg(g, 2)),
            Code::Push_r32 => reg_op(&mut ins, emit::any_reg(g, 4)),
            Code::Push_r64 => reg_op(&mut ins, emit::any_reg(g, 8)),
            Code::Push_rm16 | Code::Push_rm32 | Code::Push_rm64 => {
                emit::set_mem(&mut ins, 0, emit::mem(g))
            }
            _ => match emit::fill_raw(g, code) {
                Some(filled) => ins = filled,
                None => continue,
            },
        }
        if let Some(bytes) = emit::encode(mode, &ins) {
            return Some(Item::Insn(bytes));
        }
    }
    None
}

/// POP into a register other than RBX/RSP, or into `[rbx+disp8]`.
fn pop(g: &mut Gen) -> Option<Item> {
    let mode = g.mode;
    let (native, size) = match mode.bitness() {
        16 | 32 => (
            [Code::Pop_r16, Code::Pop_r32, Code::Pop_rm16, Code::Pop_rm32],
            [2, 4, 2, 4],
        ),
        _ => (
            [Code::Pop_r16, Code::Pop_r64, Code::Pop_rm16, Code::Pop_rm64],
            [2, 8, 2, 8],
        ),
    };
    let k = g.below(4) as usize;
    let mut ins = Instruction::default();
    ins.set_code(native[k]);
    if k < 2 {
        reg_op(&mut ins, emit::scratch(g, size[k]));
    } else {
        emit::set_mem(&mut ins, 0, emit::mem(g));
    }
    emit::encode(mode, &ins).map(Item::Insn)
}

fn reg_op(ins: &mut Instruction, reg: Register) {
    ins.set_op0_kind(iced_x86::OpKind::Register);
    ins.set_op0_register(reg);
}

/// `pushf; pop r; xor/or/and r, IF|AC|DF bits; push r; popf`.
fn flags(g: &mut Gen) -> Option<Vec<Item>> {
    let mode = g.mode;
    // Real mode uses the 32-bit forms so that AC (bit 18) is reachable.
    let (pushf, popf, pop_r, push_r) = match mode.bitness() {
        16 | 32 => (Code::Pushfd, Code::Popfd, Code::Pop_r32, Code::Push_r32),
        _ => (Code::Pushfq, Code::Popfq, Code::Pop_r64, Code::Push_r64),
    };
    let size = if g.long() { 8 } else { 4 };
    let reg = emit::scratch(g, size);
    const IF: u32 = 1 << 9;
    const DF: u32 = 1 << 10;
    const AC: u32 = 1 << 18;
    let mut bits = 0;
    while bits == 0 {
        bits = g.pick(&[IF, DF, AC, IF | DF, DF | AC, IF | AC, IF | DF | AC]);
    }
    let r32 = emit::reg32(reg);
    let op = match g.below(3) {
        0 => Instruction::with2(Code::Xor_rm32_imm32, r32, bits),
        1 => Instruction::with2(Code::Or_rm32_imm32, r32, bits),
        _ => Instruction::with2(Code::And_rm32_imm32, r32, !bits),
    };
    Some(vec![
        emit::bare(mode, pushf)?,
        emit::item(mode, Instruction::with1(pop_r, reg))?,
        emit::item(mode, op)?,
        emit::item(mode, Instruction::with1(push_r, reg))?,
        emit::bare(mode, popf)?,
    ])
}

/// PUSHA alone or PUSHA; POPA (POPA restores RBX/RSP from what PUSHA saved).
fn pusha(g: &mut Gen) -> Option<Vec<Item>> {
    if g.long() {
        return Some(vec![push(g)?]);
    }
    let mode = g.mode;
    let (pusha, popa) = if g.chance(1, 2) {
        (Code::Pushaw, Code::Popaw)
    } else {
        (Code::Pushad, Code::Popad)
    };
    if g.chance(1, 4) {
        Some(vec![emit::bare(mode, pusha)?])
    } else {
        Some(vec![emit::bare(mode, pusha)?, emit::bare(mode, popa)?])
    }
}

/// ENTER with a small frame, alone or followed by LEAVE (LEAVE alone would load RSP from
/// a random RBP).
fn enter(g: &mut Gen) -> Option<Vec<Item>> {
    let mode = g.mode;
    let (enter, leave) = match mode.bitness() {
        16 => (Code::Enterw_imm16_imm8, Code::Leavew),
        32 => (Code::Enterd_imm16_imm8, Code::Leaved),
        _ => (Code::Enterq_imm16_imm8, Code::Leaveq),
    };
    let size = g.pick(&[0u32, 4, 8, 16, 0x40, 0x100]);
    // Levels above 1 copy frame pointers from [rbp-n]: reads at a random RBP, harmless.
    let level = g.weighted(&[(6, 0u32), (4, 1), (1, 2), (1, 3)]);
    let first = emit::item(mode, Instruction::with2(enter, size, level))?;
    if g.chance(2, 3) {
        Some(vec![first, emit::bare(mode, leave)?])
    } else {
        Some(vec![first])
    }
}
