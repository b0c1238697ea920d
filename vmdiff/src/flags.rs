//! Status flags an instruction leaves undefined.
//!
//! The SDM leaves some flags undefined after many instructions (MUL, DIV, shifts and
//! rotates by more than one, BSF/BSR, the BCD adjusts, LZCNT/TZCNT, BMI, ...). Silicon,
//! Bochs and the emulator each produce something there, and not the same thing, so the
//! comparison leaves out every flag an instruction of the case may leave undefined, and
//! the generator follows each such instruction with [`SETTLE`], which defines all six
//! status flags before anything can read them.

use crate::case::{Case, Item};
use iced_x86::{Decoder, DecoderOptions, RflagsBits};

/// `cmp al, al`: writes CF, PF, AF, ZF, SF and OF with defined values, in every mode.
pub const SETTLE: [u8; 2] = [0x38, 0xc0];

/// The RFLAGS bits (architectural positions) that `bytes`, one instruction decoded at
/// `bitness`, leaves undefined; 0 if it does not decode.
pub fn undefined_by(bytes: &[u8], bitness: u32) -> u64 {
    let mut decoder = Decoder::with_ip(bitness, bytes, 0, DecoderOptions::NONE);
    let insn = decoder.decode();
    if insn.is_invalid() {
        return 0;
    }
    let undefined = insn.rflags_undefined();
    [
        (RflagsBits::CF, 1 << 0),
        (RflagsBits::PF, 1 << 2),
        (RflagsBits::AF, 1 << 4),
        (RflagsBits::ZF, 1 << 6),
        (RflagsBits::SF, 1 << 7),
        (RflagsBits::OF, 1 << 11),
    ]
    .iter()
    .filter(|(bit, _)| undefined & bit != 0)
    .fold(0, |acc, (_, x86)| acc | x86)
}

/// Every flag some instruction of `case` may leave undefined.
pub fn undefined_flags(case: &Case) -> u64 {
    let bits = case.mode.bitness();
    case.items
        .iter()
        .map(|item| match item {
            Item::Insn(bytes) => undefined_by(bytes, bits),
            Item::Branch { .. } => 0,
        })
        .fold(0, |acc, f| acc | f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instructions() {
        // mul ecx: SF, ZF, AF, PF undefined.
        assert_eq!(undefined_by(&[0xf7, 0xe1], 32), 0xd4);
        // add eax, ecx: all defined.
        assert_eq!(undefined_by(&[0x01, 0xc8], 64), 0);
        // bsf eax, ecx: all but ZF.
        assert_eq!(undefined_by(&[0x0f, 0xbc, 0xc1], 16), 0x895);
        assert_eq!(undefined_by(&SETTLE, 16), 0);
    }
}
