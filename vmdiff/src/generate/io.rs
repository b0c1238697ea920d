//! Port I/O: IN/OUT with AL/AX/EAX in the imm8 and DX forms, and INS/OUTS with the
//! string family's setup items, on a fixed set of ports (POST code, the UART, the PIC's
//! mask register, an unclaimed port, PCI configuration, fw_cfg) and, rarely, the
//! debug-exit port that ends the run.
//!
//! Only ports whose answers do not depend on when they are read: the two runs of a case
//! happen one after the other, so the PIT, port 0x61 (its refresh toggle and channel 2's
//! output), the CMOS clock and the ACPI PM timer would read differently in each.

use super::emit::{self, Gen};
use super::string::{self, Uses};
use crate::case::{Item, Mode};
use alloc::vec;
use alloc::vec::Vec;
use iced_x86::{Code, Instruction, Register, RepPrefixKind};

/// The debug-exit port: a write ends the run.
const EXIT_PORT: u16 = 0xf4;

fn port(g: &mut Gen) -> u16 {
    if g.chance(1, 40) {
        return EXIT_PORT;
    }
    g.pick(&[
        0x80, 0x3f8, 0x3f9, 0x3fa, 0x3fb, 0x3fc, 0x3fd, 0x3fe, 0x3ff, 0x21, 0x1234, 0xcf8, 0xcfc,
        0x510, 0x511,
    ])
}

/// `mov dx, port` (or `mov edx, port`).
fn set_dx(g: &mut Gen, port: u16) -> Option<Item> {
    if g.real() || g.chance(1, 2) {
        emit::mov_imm16(g.mode, Register::DX, port)
    } else {
        emit::mov_imm32(g.mode, Register::EDX, u32::from(port))
    }
}

/// An I/O group.
pub(crate) fn group(g: &mut Gen) -> Option<Vec<Item>> {
    let mode = g.mode;
    let p = port(g);
    let width = g.below(3) as usize;
    match g.below(5) {
        // IN/OUT imm8 (only ports below 256 have this form).
        0 | 1 if p < 0x100 => {
            let out = g.chance(1, 2);
            let code = if out {
                [Code::Out_imm8_AL, Code::Out_imm8_AX, Code::Out_imm8_EAX][width]
            } else {
                [Code::In_AL_imm8, Code::In_AX_imm8, Code::In_EAX_imm8][width]
            };
            let acc = [Register::AL, Register::AX, Register::EAX][width];
            let ins = if out {
                Instruction::with2(code, u32::from(p), acc)
            } else {
                Instruction::with2(code, acc, u32::from(p))
            };
            Some(vec![emit::item(mode, ins)?])
        }
        0..=2 => {
            let out = g.chance(1, 2);
            let acc = [Register::AL, Register::AX, Register::EAX][width];
            let ins = if out {
                let code = [Code::Out_DX_AL, Code::Out_DX_AX, Code::Out_DX_EAX][width];
                Instruction::with2(code, Register::DX, acc)
            } else {
                let code = [Code::In_AL_DX, Code::In_AX_DX, Code::In_EAX_DX][width];
                Instruction::with2(code, acc, Register::DX)
            };
            Some(vec![set_dx(g, p)?, emit::item(mode, ins)?])
        }
        _ => strings(g, p, width),
    }
}

/// INS/OUTS: `lea rdi/rsi, [rbx+d]; mov ecx, n; mov dx, port; [rep] ins/outs`.
fn strings(g: &mut Gen, p: u16, width: usize) -> Option<Vec<Item>> {
    let mode: Mode = g.mode;
    let bits = g.bits();
    let rep = if g.chance(1, 2) {
        RepPrefixKind::Repe
    } else {
        RepPrefixKind::None
    };
    let out = g.chance(1, 2);
    let ins = if out {
        [
            Instruction::with_outsb,
            Instruction::with_outsw,
            Instruction::with_outsd,
        ][width](bits, Register::None, rep)
    } else {
        [
            Instruction::with_insb,
            Instruction::with_insw,
            Instruction::with_insd,
        ][width](bits, rep)
    };
    let mut items = string::setup(
        g,
        Uses {
            rsi: out,
            rdi: !out,
        },
    )?;
    items.push(set_dx(g, p)?);
    items.push(emit::item(mode, ins)?);
    Some(items)
}
