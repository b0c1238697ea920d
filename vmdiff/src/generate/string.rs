//! String instructions (MOVS/CMPS/STOS/LODS/SCAS, with and without REP/REPE/REPNE).
//!
//! Each comes as one item preceded by separate setup items, `lea rsi/rdi, [rbx+disp8]`
//! and `mov ecx, 0..=8`, so that the pointers stay inside the data area (at most eight
//! elements of eight bytes either way from a point within 128 bytes of RBX) and a case
//! minimized by dropping items still runs.

use super::emit::{self, Gen};
use crate::case::{Item, Mode};
use alloc::vec::Vec;
use iced_x86::{Code, Instruction, RepPrefixKind};

/// Which pointer registers a string instruction uses.
#[derive(Clone, Copy)]
pub(crate) struct Uses {
    pub(crate) rsi: bool,
    pub(crate) rdi: bool,
}

/// The setup items: `lea rsi, [rbx+d]` / `lea rdi, [rbx+d]` as `uses` asks, then
/// `mov ecx, n` (`mov cx, n` in 16-bit code).
pub(crate) fn setup(g: &mut Gen, uses: Uses) -> Option<Vec<Item>> {
    let mode = g.mode;
    let mut out = Vec::new();
    // Keep the first and last elements inside [rbx-128, rbx+127+64].
    let lea = match mode.bitness() {
        16 => Code::Lea_r16_m,
        32 => Code::Lea_r32_m,
        _ => Code::Lea_r64_m,
    };
    for (wanted, reg) in [
        (uses.rsi, iced_x86::Register::RSI),
        (uses.rdi, iced_x86::Register::RDI),
    ] {
        if wanted {
            let d = g.disp();
            out.push(emit::item(
                mode,
                Instruction::with2(lea, emit::reg_native(mode, reg), emit::mem_at(mode, d)),
            )?);
        }
    }
    let n = g.below(9) as u16;
    out.push(if mode == Mode::Real {
        emit::mov_imm16(mode, iced_x86::Register::CX, n)?
    } else {
        emit::mov_imm32(mode, iced_x86::Register::ECX, u32::from(n))?
    });
    Some(out)
}

/// A REP prefix: none, REP/REPE (F3) or, for the comparing ones, REPNE (F2).
fn rep(g: &mut Gen, compares: bool) -> RepPrefixKind {
    match g.below(if compares { 3 } else { 2 }) {
        0 => RepPrefixKind::None,
        1 => RepPrefixKind::Repe,
        _ => RepPrefixKind::Repne,
    }
}

/// Element size: 1, 2, 4 or (64-bit code) 8 bytes.
pub(crate) fn element(g: &mut Gen) -> usize {
    let n = if g.long() { 4 } else { 3 };
    g.below(n) as usize
}

/// A string-instruction group: setup items, then the instruction.
pub(crate) fn group(g: &mut Gen) -> Option<Vec<Item>> {
    let mode = g.mode;
    let bits = g.bits();
    let seg = iced_x86::Register::None;
    let size = element(g);
    let kind = g.below(5);
    let (uses, ins) = match kind {
        0 => {
            let r = rep(g, false);
            let f = [
                Instruction::with_movsb,
                Instruction::with_movsw,
                Instruction::with_movsd,
                Instruction::with_movsq,
            ][size];
            (
                Uses {
                    rsi: true,
                    rdi: true,
                },
                f(bits, seg, r),
            )
        }
        1 => {
            let r = rep(g, true);
            let f = [
                Instruction::with_cmpsb,
                Instruction::with_cmpsw,
                Instruction::with_cmpsd,
                Instruction::with_cmpsq,
            ][size];
            (
                Uses {
                    rsi: true,
                    rdi: true,
                },
                f(bits, seg, r),
            )
        }
        2 => {
            let r = rep(g, false);
            let f = [
                Instruction::with_stosb,
                Instruction::with_stosw,
                Instruction::with_stosd,
                Instruction::with_stosq,
            ][size];
            (
                Uses {
                    rsi: false,
                    rdi: true,
                },
                f(bits, r),
            )
        }
        3 => {
            let r = rep(g, false);
            let f = [
                Instruction::with_lodsb,
                Instruction::with_lodsw,
                Instruction::with_lodsd,
                Instruction::with_lodsq,
            ][size];
            (
                Uses {
                    rsi: true,
                    rdi: false,
                },
                f(bits, seg, r),
            )
        }
        _ => {
            let r = rep(g, true);
            let f = [
                Instruction::with_scasb,
                Instruction::with_scasw,
                Instruction::with_scasd,
                Instruction::with_scasq,
            ][size];
            (
                Uses {
                    rsi: false,
                    rdi: true,
                },
                f(bits, r),
            )
        }
    };
    let mut items = setup(g, uses)?;
    items.push(emit::item(mode, ins)?);
    Some(items)
}
