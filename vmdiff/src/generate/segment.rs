//! Segmentation: segment-register loads (MOV, POP, LDS/LES/LFS/LGS/LSS) with selectors
//! from a menu of the environment's GDT/LDT (valid, null, not present, wrong type, DPL 3,
//! beyond the limit), MOV from segment registers, MOV SS with its interrupt shadow,
//! LAR/LSL/VERR/VERW, LLDT/LTR and SLDT/STR.
//!
//! In real mode a "selector" is a paragraph: the menu there keeps `[bx+disp8]` and the
//! stack inside RAM and away from the vector table and the code.

use super::emit::{self, Gen};
use crate::case::{Item, Mode};
use crate::layout::{selector, DATA, STACK};
use alloc::vec;
use alloc::vec::Vec;
use iced_x86::{Code, Instruction, Register};

/// Selectors for data-segment loads and descriptor instructions in protected modes.
const MENU: &[u16] = &[
    0,
    3,
    selector::CODE32,
    selector::DATA,
    selector::DATA | 3,
    selector::CODE64,
    selector::TSS,
    // The upper half of the 16-byte long-mode TSS descriptor (a null descriptor outside
    // long mode).
    selector::TSS + 8,
    selector::CODE16,
    selector::DATA16,
    selector::DATA_DPL3,
    selector::DATA_DPL3 | 3,
    selector::DATA_READ_ONLY,
    selector::CODE_EXECUTE_ONLY,
    selector::LDT,
    selector::DATA_NOT_PRESENT,
    selector::DATA_SMALL,
    selector::LDT_DATA,
    selector::LDT_CODE,
    // The last GDT slot is a null descriptor; then beyond the GDT and LDT limits.
    0x70,
    0x78,
    0x80,
    0xfff8,
    0x14,
];

/// Selectors for SS outside 64-bit mode: each either loads a segment whose limit covers
/// the stack, or faults on the load. (A loaded SS that cannot hold the stack would fault
/// on every push, delivery included: a triple fault rather than a halted case.)
const SS_MENU: &[u16] = &[
    0,
    3,
    selector::DATA,
    selector::DATA | 3,
    selector::CODE32,
    selector::DATA_DPL3,
    selector::DATA_READ_ONLY,
    selector::DATA_NOT_PRESENT,
    selector::CODE_EXECUTE_ONLY,
    selector::TSS,
    selector::LDT_DATA,
    0x78,
];

/// Real-mode paragraphs: the data area's, a few next to it, the stack's, unused RAM.
const REAL_MENU: &[u16] = &[
    (DATA >> 4) as u16,
    (DATA >> 4) as u16 + 0x10,
    (DATA >> 4) as u16 + 0x80,
    (STACK >> 4) as u16,
    0,
    0x5000,
    0x6000,
    0x7000,
];

/// A selector for `sreg` in the mode.
pub(crate) fn selector_for(g: &mut Gen, sreg: Register) -> u16 {
    if g.real() {
        g.pick(REAL_MENU)
    } else if sreg == Register::SS && !g.long() {
        g.pick(SS_MENU)
    } else if g.chance(1, 4) {
        selector::DATA
    } else {
        g.pick(MENU)
    }
}

/// A selector for the descriptor instructions (LAR, LSL, VERR, VERW, LLDT, LTR).
fn any_selector(g: &mut Gen) -> u16 {
    if g.chance(1, 8) {
        g.value(16) as u16
    } else {
        g.pick(MENU)
    }
}

fn sreg(g: &mut Gen) -> Register {
    g.pick(&[
        Register::DS,
        Register::ES,
        Register::FS,
        Register::GS,
        Register::SS,
    ])
}

/// A segmentation group.
pub(crate) fn group(
    g: &mut Gen,
    shadow_next: &mut dyn FnMut(&mut Gen) -> Option<Item>,
) -> Option<Vec<Item>> {
    match g.weighted(&[
        (5, 0u8),
        (2, 1),
        (2, 2),
        (2, 3),
        (3, 4),
        (2, 5),
        (3, 6),
        (2, 7),
        (1, 8),
    ]) {
        0 => mov_sreg(g),
        1 => mov_sreg_mem(g),
        2 => pop_sreg(g),
        3 => far_pointer(g),
        4 => mov_from_sreg(g),
        5 => {
            // MOV SS, then one more instruction inside its interrupt shadow.
            let mut items = load_ss(g)?;
            items.push(shadow_next(g)?);
            Some(items)
        }
        6 if !g.real() => access_check(g),
        7 if !g.real() => lldt_ltr(g),
        8 if !g.real() => store_table_register(g),
        _ => mov_from_sreg(g),
    }
}

/// `mov eax, sel; mov sreg, ax`.
fn mov_sreg(g: &mut Gen) -> Option<Vec<Item>> {
    let s = sreg(g);
    let sel = selector_for(g, s);
    let r = emit::scratch(g, 4);
    Some(vec![
        emit::mov_imm32(g.mode, r, u32::from(sel))?,
        emit::item(
            g.mode,
            Instruction::with2(Code::Mov_Sreg_rm16, s, emit::reg16(r)),
        )?,
    ])
}

/// `mov eax, sel; mov ss, ax`.
fn load_ss(g: &mut Gen) -> Option<Vec<Item>> {
    let sel = selector_for(g, Register::SS);
    let r = emit::scratch(g, 4);
    Some(vec![
        emit::mov_imm32(g.mode, r, u32::from(sel))?,
        emit::item(
            g.mode,
            Instruction::with2(Code::Mov_Sreg_rm16, Register::SS, emit::reg16(r)),
        )?,
    ])
}

/// `mov word [rbx+d], sel; mov sreg, [rbx+d]`.
fn mov_sreg_mem(g: &mut Gen) -> Option<Vec<Item>> {
    let s = sreg(g);
    let sel = selector_for(g, s);
    let d = g.disp();
    Some(vec![
        emit::store16(g.mode, d, sel)?,
        emit::item(
            g.mode,
            Instruction::with2(Code::Mov_Sreg_rm16, s, emit::mem_at(g.mode, d)),
        )?,
    ])
}

/// `push sel; pop sreg` (64-bit code can pop only FS and GS).
fn pop_sreg(g: &mut Gen) -> Option<Vec<Item>> {
    let mode = g.mode;
    let s = if g.long() {
        g.pick(&[Register::FS, Register::GS])
    } else {
        sreg(g)
    };
    let sel = selector_for(g, s);
    let (push, pop) = match (mode.bitness(), s) {
        (16, Register::DS) => (Code::Push_imm16, Code::Popw_DS),
        (16, Register::ES) => (Code::Push_imm16, Code::Popw_ES),
        (16, Register::SS) => (Code::Push_imm16, Code::Popw_SS),
        (16, Register::FS) => (Code::Push_imm16, Code::Popw_FS),
        (16, _) => (Code::Push_imm16, Code::Popw_GS),
        (32, Register::DS) => (Code::Pushd_imm32, Code::Popd_DS),
        (32, Register::ES) => (Code::Pushd_imm32, Code::Popd_ES),
        (32, Register::SS) => (Code::Pushd_imm32, Code::Popd_SS),
        (32, Register::FS) => (Code::Pushd_imm32, Code::Popd_FS),
        (32, _) => (Code::Pushd_imm32, Code::Popd_GS),
        (_, Register::FS) => (Code::Pushq_imm32, Code::Popq_FS),
        (_, _) => (Code::Pushq_imm32, Code::Popq_GS),
    };
    Some(vec![
        emit::item(mode, Instruction::with1(push, u32::from(sel)))?,
        emit::bare(mode, pop)?,
    ])
}

/// A far pointer stored at `[rbx+d]`, then LDS/LES/LFS/LGS/LSS from it.
fn far_pointer(g: &mut Gen) -> Option<Vec<Item>> {
    let mode = g.mode;
    let d = g.range(-128, 120);
    let offset = g.value(32) as u32;
    let which = if g.long() {
        // LDS/LES do not exist in 64-bit code.
        g.pick(&[Register::FS, Register::GS, Register::SS])
    } else {
        g.pick(&[
            Register::DS,
            Register::ES,
            Register::FS,
            Register::GS,
            Register::SS,
        ])
    };
    let sel = selector_for(g, which);
    let wide = mode != Mode::Real && (g.long() || g.chance(3, 4));
    let code = match (which, wide) {
        (Register::DS, false) => Code::Lds_r16_m1616,
        (Register::DS, true) => Code::Lds_r32_m1632,
        (Register::ES, false) => Code::Les_r16_m1616,
        (Register::ES, true) => Code::Les_r32_m1632,
        (Register::FS, false) => Code::Lfs_r16_m1616,
        (Register::FS, true) => Code::Lfs_r32_m1632,
        (Register::GS, false) => Code::Lgs_r16_m1616,
        (Register::GS, true) => Code::Lgs_r32_m1632,
        (_, false) => Code::Lss_r16_m1616,
        (_, true) => Code::Lss_r32_m1632,
    };
    let (size, sel_at) = if wide { (4, 4) } else { (2, 2) };
    let reg = emit::scratch(g, size);
    let store_offset = if wide {
        emit::store32(mode, d, offset)?
    } else {
        emit::store16(mode, d, offset as u16)?
    };
    Some(vec![
        store_offset,
        emit::store16(mode, d + sel_at, sel)?,
        emit::item(mode, Instruction::with2(code, reg, emit::mem_at(mode, d)))?,
    ])
}

/// MOV from a segment register (CS included) to a register or `[rbx+d]`.
fn mov_from_sreg(g: &mut Gen) -> Option<Vec<Item>> {
    let mode = g.mode;
    let s = g.pick(&[
        Register::ES,
        Register::CS,
        Register::SS,
        Register::DS,
        Register::FS,
        Register::GS,
    ]);
    let ins = if g.chance(1, 3) {
        Instruction::with2(Code::Mov_rm16_Sreg, emit::mem(g), s)
    } else {
        let size = if g.long() {
            g.pick(&[2u32, 4, 8])
        } else {
            g.pick(&[2u32, 4])
        };
        let r = emit::scratch(g, size);
        let code = match size {
            2 => Code::Mov_rm16_Sreg,
            4 => Code::Mov_r32m16_Sreg,
            _ => Code::Mov_r64m16_Sreg,
        };
        Instruction::with2(code, r, s)
    };
    Some(vec![emit::item(mode, ins)?])
}

/// LAR/LSL/VERR/VERW on a selector from the menu (or whatever the register holds).
fn access_check(g: &mut Gen) -> Option<Vec<Item>> {
    let mode = g.mode;
    let mut items = Vec::new();
    let src = emit::scratch(g, 4);
    if g.chance(3, 4) {
        let sel = any_selector(g);
        items.push(emit::mov_imm32(mode, src, u32::from(sel))?);
    }
    let ins = match g.below(4) {
        0 | 1 => {
            let lar = g.chance(1, 2);
            let size = if g.long() {
                g.pick(&[2u32, 4, 8])
            } else {
                g.pick(&[2u32, 4])
            };
            let dst = emit::scratch(g, size);
            let code = match (lar, size) {
                (true, 2) => Code::Lar_r16_rm16,
                (true, 4) => Code::Lar_r32_r32m16,
                (true, _) => Code::Lar_r64_r64m16,
                (false, 2) => Code::Lsl_r16_rm16,
                (false, 4) => Code::Lsl_r32_r32m16,
                (false, _) => Code::Lsl_r64_r64m16,
            };
            let source = match size {
                2 => emit::reg16(src),
                4 => src,
                _ => src.full_register(),
            };
            Instruction::with2(code, dst, source)
        }
        2 => Instruction::with1(Code::Verr_rm16, emit::reg16(src)),
        _ => Instruction::with1(Code::Verw_rm16, emit::reg16(src)),
    };
    items.push(emit::item(mode, ins)?);
    Some(items)
}

/// LLDT with the null selector, the LDT or a data selector (#GP); LTR with the TSS
/// (busy: #GP) or another selector.
fn lldt_ltr(g: &mut Gen) -> Option<Vec<Item>> {
    let mode = g.mode;
    let r = emit::scratch(g, 4);
    let (code, sel) = if g.chance(2, 3) {
        let sel = g.pick(&[0, selector::LDT, selector::LDT, selector::DATA, 0x78]);
        (Code::Lldt_rm16, sel)
    } else {
        let sel = g.pick(&[
            selector::TSS,
            selector::TSS,
            0,
            selector::DATA,
            selector::LDT,
        ]);
        (Code::Ltr_rm16, sel)
    };
    if g.chance(1, 3) {
        let d = g.disp();
        Some(vec![
            emit::store16(mode, d, sel)?,
            emit::item(mode, Instruction::with1(code, emit::mem_at(mode, d)))?,
        ])
    } else {
        Some(vec![
            emit::mov_imm32(mode, r, u32::from(sel))?,
            emit::item(mode, Instruction::with1(code, emit::reg16(r)))?,
        ])
    }
}

/// SLDT/STR to a register or `[rbx+d]`.
fn store_table_register(g: &mut Gen) -> Option<Vec<Item>> {
    let mode = g.mode;
    let sldt = g.chance(1, 2);
    let ins = if g.chance(1, 3) {
        let code = if sldt {
            Code::Sldt_rm16
        } else {
            Code::Str_rm16
        };
        Instruction::with1(code, emit::mem(g))
    } else {
        let size = if g.long() {
            g.pick(&[2u32, 4, 8])
        } else {
            g.pick(&[2u32, 4])
        };
        let code = match (sldt, size) {
            (true, 2) => Code::Sldt_rm16,
            (true, 4) => Code::Sldt_r32m16,
            (true, _) => Code::Sldt_r64m16,
            (false, 2) => Code::Str_rm16,
            (false, 4) => Code::Str_r32m16,
            (false, _) => Code::Str_r64m16,
        };
        Instruction::with1(code, emit::scratch(g, size))
    };
    Some(vec![emit::item(mode, ins)?])
}
