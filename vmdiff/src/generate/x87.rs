//! x87 instructions: loads and stores of every format from and to `[rbx+disp8]`, the
//! constants, arithmetic in all its forms, compares, the stack and tag operations, the
//! control word, FCMOVcc and FWAIT.
//!
//! Every exception stays masked (the case's initial FCW masks them all, FNINIT and
//! FLDCW keep them masked), so no x87 instruction ever has an unmasked exception
//! pending: that would need #MF or FERR# handling, which the environment leaves out.
//!
//! Left out:
//! - the transcendentals FSIN, FCOS, FSINCOS, FPTAN, FPATAN, F2XM1, FYL2X, FYL2XP1: the
//!   emulator computes them approximately, not to the processor's last bit;
//! - FSTSW, FNSTSW, FSTENV, FNSTENV, FSAVE, FNSAVE, FXSAVE: they copy the condition codes
//!   C0/C2/C3, undefined after most x87 instructions, into a register or memory (and
//!   FIP/FDP/FOP, which the emulator does not track as silicon does);
//! - FLDENV, FRSTOR, FXRSTOR of the data area's random bytes: they would load unmasked
//!   exceptions and register formats vendors treat differently;
//! - FLD m80 and FBLD of random memory: unnormals, pseudo-NaNs and pseudo-denormals are
//!   handled differently between vendors, and invalid BCD digits give an undefined
//!   result; both load only a value stored just before (by MOV items, or by FSTP m80);
//! - the undocumented aliases (FSTP1, FXCH4, FCOM2, FFREEP, ...) and the 287 no-ops
//!   (FENI, FDISI, FSETPM).

use super::emit::{self, Gen};
use crate::case::{Item, Mode};
use alloc::vec::Vec;
use emit::Table;
use iced_x86::{Code, EncodingKind, Instruction, Mnemonic};
use std::sync::OnceLock;

/// The x87 mnemonics drawn (FLDCW and the 80-bit loads get setup items).
pub const MNEMONICS: &[Mnemonic] = &[
    Mnemonic::Fld,
    Mnemonic::Fst,
    Mnemonic::Fstp,
    Mnemonic::Fild,
    Mnemonic::Fist,
    Mnemonic::Fistp,
    Mnemonic::Fisttp,
    Mnemonic::Fbld,
    Mnemonic::Fbstp,
    Mnemonic::Fld1,
    Mnemonic::Fldz,
    Mnemonic::Fldpi,
    Mnemonic::Fldl2e,
    Mnemonic::Fldl2t,
    Mnemonic::Fldlg2,
    Mnemonic::Fldln2,
    Mnemonic::Fadd,
    Mnemonic::Faddp,
    Mnemonic::Fiadd,
    Mnemonic::Fsub,
    Mnemonic::Fsubp,
    Mnemonic::Fisub,
    Mnemonic::Fsubr,
    Mnemonic::Fsubrp,
    Mnemonic::Fisubr,
    Mnemonic::Fmul,
    Mnemonic::Fmulp,
    Mnemonic::Fimul,
    Mnemonic::Fdiv,
    Mnemonic::Fdivp,
    Mnemonic::Fidiv,
    Mnemonic::Fdivr,
    Mnemonic::Fdivrp,
    Mnemonic::Fidivr,
    Mnemonic::Fchs,
    Mnemonic::Fabs,
    Mnemonic::Fsqrt,
    Mnemonic::Frndint,
    Mnemonic::Fscale,
    Mnemonic::Fxtract,
    Mnemonic::Fprem,
    Mnemonic::Fprem1,
    Mnemonic::Fcom,
    Mnemonic::Fcomp,
    Mnemonic::Fcompp,
    Mnemonic::Fucom,
    Mnemonic::Fucomp,
    Mnemonic::Fucompp,
    Mnemonic::Ficom,
    Mnemonic::Ficomp,
    Mnemonic::Fcomi,
    Mnemonic::Fcomip,
    Mnemonic::Fucomi,
    Mnemonic::Fucomip,
    Mnemonic::Ftst,
    Mnemonic::Fxam,
    Mnemonic::Fxch,
    Mnemonic::Fincstp,
    Mnemonic::Fdecstp,
    Mnemonic::Ffree,
    Mnemonic::Fninit,
    Mnemonic::Finit,
    Mnemonic::Fnclex,
    Mnemonic::Fclex,
    Mnemonic::Fldcw,
    Mnemonic::Fnstcw,
    Mnemonic::Fstcw,
    Mnemonic::Fcmovb,
    Mnemonic::Fcmove,
    Mnemonic::Fcmovbe,
    Mnemonic::Fcmovu,
    Mnemonic::Fcmovnb,
    Mnemonic::Fcmovne,
    Mnemonic::Fcmovnbe,
    Mnemonic::Fcmovnu,
    Mnemonic::Fnop,
    Mnemonic::Wait,
];

/// Encodings this family draws from: legacy, fillable, and not an iced alias.
fn x87_usable(code: Code, mode: Mode) -> bool {
    emit::valid_in(code, mode)
        && emit::fillable(code)
        && code.op_code().encoding() == EncodingKind::Legacy
        && !is_alias(code)
}

fn table(mode: Mode) -> &'static Table {
    static TABLES: OnceLock<[Table; 3]> = OnceLock::new();
    emit::table_for(&TABLES, mode, |mode| {
        emit::encodings_by_mnemonic(mode, Some(MNEMONICS), x87_usable)
    })
}

/// iced-x86 names the undocumented alias encodings after their opcode bytes
/// (`Fxch_st0_sti_DDC8`, `Fstp_sti_DFD0`, ...).
fn is_alias(code: Code) -> bool {
    let name = alloc::format!("{code:?}");
    name.rsplit('_').next().is_some_and(|last| {
        last.len() == 4
            && last.starts_with('D')
            && last
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())
    })
}

/// An x87 group: one instruction, after the items storing the operand FLDCW, FLD m80
/// or FBLD loads.
pub(crate) fn group(g: &mut Gen) -> Option<Vec<Item>> {
    let table = table(g.mode);
    if table.is_empty() {
        return None;
    }
    for _ in 0..16 {
        let (_, codes) = &table[g.below(table.len() as u64) as usize];
        let code = g.pick(codes);
        match code {
            Code::Fldcw_m2byte => return fldcw(g),
            Code::Fld_m80fp | Code::Fbld_m80bcd => return load80(g, code),
            _ => {}
        }
        let Some(ins) = emit::fill(g, code) else {
            continue;
        };
        if let Some(bytes) = emit::encode(g.mode, &ins) {
            return Some(alloc::vec![Item::Insn(bytes)]);
        }
    }
    None
}

/// A control word with every exception masked, bit 6 set as FNINIT leaves it, a
/// precision control other than the reserved 01 and any rounding control.
pub fn control_word(pc: u16, rc: u16) -> u16 {
    let pc = if pc & 3 == 1 { 3 } else { pc & 3 };
    0x007f | (pc << 8) | ((rc & 3) << 10)
}

/// `mov word [rbx+d], cw; fldcw [rbx+d]` with a masked control word, or `fnstcw
/// [rbx+d]; fldcw [rbx+d]`.
fn fldcw(g: &mut Gen) -> Option<Vec<Item>> {
    let mode = g.mode;
    let disp = g.disp();
    let at = emit::mem_at(mode, disp);
    let load = emit::item(mode, Instruction::with1(Code::Fldcw_m2byte, at))?;
    let setup = if g.chance(1, 4) {
        emit::item(mode, Instruction::with1(Code::Fnstcw_m2byte, at))?
    } else {
        let cw = control_word(g.below(4) as u16, g.below(4) as u16);
        emit::store16(mode, disp, cw)?
    };
    Some(alloc::vec![setup, load])
}

/// FLD m80 or FBLD of a valid value stored just before: by FSTP m80 (FLD only), or by
/// `mov dword [d], lo; mov dword [d+4], hi; mov word [d+8], top`.
fn load80(g: &mut Gen, code: Code) -> Option<Vec<Item>> {
    let mode = g.mode;
    // The last store's displacement, d + 8, must stay an 8-bit one.
    let disp = g.range(-128, 119);
    let at = emit::mem_at(mode, disp);
    let load = emit::item(mode, Instruction::with1(code, at))?;
    if code == Code::Fld_m80fp && g.chance(1, 4) {
        let store = emit::item(mode, Instruction::with1(Code::Fstp_m80fp, at))?;
        return Some(alloc::vec![store, load]);
    }
    let bytes = if code == Code::Fbld_m80bcd {
        bcd(g)
    } else {
        extended(g)
    };
    let lo = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let hi = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let top = u16::from_le_bytes([bytes[8], bytes[9]]);
    Some(alloc::vec![
        emit::store32(mode, disp, lo)?,
        emit::store32(mode, disp + 4, hi)?,
        emit::store16(mode, disp + 8, top)?,
        load,
    ])
}

/// An 80-bit packed BCD integer: 18 valid digits (often few of them non-zero) and a sign
/// byte of 0x00 or 0x80.
fn bcd(g: &mut Gen) -> [u8; 10] {
    let digits = g.pick(&[1u64, 2, 4, 9, 18]);
    let mut out = [0u8; 10];
    for i in 0..digits {
        let d = g.below(10) as u8;
        let byte = &mut out[(i / 2) as usize];
        *byte |= if i % 2 == 0 { d } else { d << 4 };
    }
    out[9] = if g.chance(1, 2) { 0x80 } else { 0 };
    out
}

/// An 80-bit value of a format every vendor handles alike (see
/// [`crate::layout::fpu_image`]): normal, zero, infinity, NaN or denormal.
fn extended(g: &mut Gen) -> [u8; 10] {
    const INTEGER: u64 = 1 << 63;
    const QUIET: u64 = 1 << 62;
    let sign = if g.chance(1, 2) { 0x8000u16 } else { 0 };
    let frac = g.next() & !INTEGER;
    let (exp, mantissa): (u16, u64) = match g.below(9) {
        0..=2 => (0x3fff - 32 + g.below(65) as u16, INTEGER | frac),
        3 => (0, 0),
        4 => (0x7fff, INTEGER),
        5 => (0x7fff, INTEGER | QUIET | frac),
        6 => (0x7fff, INTEGER | (frac & !QUIET) | 1),
        7 => (0, frac | 1),
        _ => (1 + g.below(0x7ffe) as u16, INTEGER | frac),
    };
    let mut out = [0u8; 10];
    out[..8].copy_from_slice(&mantissa.to_le_bytes());
    out[8..].copy_from_slice(&(sign | exp).to_le_bytes());
    out
}
