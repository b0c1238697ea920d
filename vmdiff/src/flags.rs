//! Status flags an instruction leaves undefined.
//!
//! The SDM leaves some flags undefined after many instructions (MUL, DIV, shifts and
//! rotates by more than one, BSF/BSR, the BCD adjusts, LZCNT/TZCNT, BMI, ...). Silicon,
//! Bochs and the emulator each produce something there, and not the same thing, so the
//! comparison leaves out every flag an instruction of the case may leave undefined, and
//! the generator follows each such instruction with [`SETTLE`], which defines all six
//! status flags before anything can read them.
//!
//! The x87 condition codes C0, C2 and C3 are undefined after most x87 instructions
//! (arithmetic, loads, stores, constants, ...; SDM 1 8.1.3 and each instruction's
//! "FPU flags affected"): only the compares, FTST and FXAM define them. A case with any
//! other x87 instruction leaves them out of the FSW comparison ([`undefined_fsw`]); C1
//! is defined by nearly every x87 instruction and stays compared.

use crate::case::{Case, Item};
use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, RflagsBits};

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

/// FSW condition codes C0 (bit 8), C2 (bit 10) and C3 (bit 14).
pub const FSW_C0_C2_C3: u16 = (1 << 8) | (1 << 10) | (1 << 14);

/// Whether `bytes` (one instruction) is an x87 instruction: its opcode, after the
/// prefixes, is one of the escapes D8-DF, or it is FWAIT followed by one (FSTCW, FINIT,
/// FCLEX, ... decode as one instruction). FWAIT alone is not: it changes no flags.
fn is_x87(bytes: &[u8], bitness: u32) -> bool {
    let mut rest = bytes;
    while let Some((&b, tail)) = rest.split_first() {
        let prefix = matches!(
            b,
            0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0x66 | 0x67 | 0xf0 | 0xf2 | 0xf3 | 0x9b
        ) || (bitness == 64 && (0x40..=0x4f).contains(&b));
        if !prefix {
            return (0xd8..=0xdf).contains(&b);
        }
        rest = tail;
    }
    false
}

/// Whether `insn` is an x87 instruction that defines C0, C2 and C3: the compares
/// (FCOM, FUCOM, FICOM and their popping forms), FTST and FXAM. FCOMI and FUCOMI write
/// EFLAGS and leave C0/C2/C3 "not affected", which keeps them defined as well.
fn defines_condition_codes(insn: &Instruction) -> bool {
    matches!(
        insn.mnemonic(),
        Mnemonic::Fcom
            | Mnemonic::Fcomp
            | Mnemonic::Fcompp
            | Mnemonic::Fucom
            | Mnemonic::Fucomp
            | Mnemonic::Fucompp
            | Mnemonic::Ficom
            | Mnemonic::Ficomp
            | Mnemonic::Ftst
            | Mnemonic::Fxam
            | Mnemonic::Fcomi
            | Mnemonic::Fcomip
            | Mnemonic::Fucomi
            | Mnemonic::Fucomip
    )
}

/// The FSW bits `bytes`, one instruction decoded at `bitness`, leaves undefined: C0, C2
/// and C3 for an x87 instruction other than a compare, FTST or FXAM; else 0 (also if it
/// does not decode).
pub fn fsw_undefined_by(bytes: &[u8], bitness: u32) -> u16 {
    let mut decoder = Decoder::with_ip(bitness, bytes, 0, DecoderOptions::NONE);
    let insn = decoder.decode();
    if insn.is_invalid() || !is_x87(bytes, bitness) || defines_condition_codes(&insn) {
        return 0;
    }
    FSW_C0_C2_C3
}

/// The FSW bits the comparison leaves out for `case`: C0, C2 and C3 if some
/// instruction of the case may leave them undefined, else none.
pub fn undefined_fsw(case: &Case) -> u16 {
    let bits = case.mode.bitness();
    case.items
        .iter()
        .map(|item| match item {
            Item::Insn(bytes) => fsw_undefined_by(bytes, bits),
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
        // comiss xmm0, xmm1; pcmpistri xmm0, xmm1, 0; ptest xmm0, xmm1; fcomi st0, st1:
        // every flag they touch is defined, so they need no settling.
        for bytes in [
            &[0x0f, 0x2f, 0xc1][..],
            &[0x66, 0x0f, 0x3a, 0x63, 0xc1, 0x00],
            &[0x66, 0x0f, 0x38, 0x17, 0xc1],
            &[0xdb, 0xf1],
        ] {
            assert_eq!(undefined_by(bytes, 64), 0, "{bytes:02x?}");
        }
    }

    #[test]
    fn x87_condition_codes() {
        // fadd st0, st1; fld1; fld dword [rbx]; fninit; fstcw [rbx]; fild qword [rbx]
        // with a segment prefix: C0/C2/C3 undefined.
        for bytes in [
            &[0xd8, 0xc1][..],
            &[0xd9, 0xe8],
            &[0xd9, 0x03],
            &[0xdb, 0xe3],
            &[0x9b, 0xd9, 0x3b],
            &[0x64, 0xdf, 0x2b],
        ] {
            assert_eq!(fsw_undefined_by(bytes, 32), FSW_C0_C2_C3, "{bytes:02x?}");
        }
        // fcom st1; fucompp; ftst; fxam; fcomi st0, st1; ficom word [rbx]: defined.
        for bytes in [
            &[0xd8, 0xd1][..],
            &[0xda, 0xe9],
            &[0xd9, 0xe4],
            &[0xd9, 0xe5],
            &[0xdb, 0xf1],
            &[0xde, 0x13],
        ] {
            assert_eq!(fsw_undefined_by(bytes, 64), 0, "{bytes:02x?}");
        }
        // Not x87: add eax, ecx; addps xmm0, xmm1; emms; paddb mm0, mm1; fwait.
        for bytes in [
            &[0x01, 0xc8][..],
            &[0x0f, 0x58, 0xc1],
            &[0x0f, 0x77],
            &[0x0f, 0xfc, 0xc1],
            &[0x9b],
        ] {
            assert_eq!(fsw_undefined_by(bytes, 64), 0, "{bytes:02x?}");
        }
    }
}
