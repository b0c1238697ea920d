//! MMX and SSE/SSE2/SSE3/SSSE3/SSE4.1/SSE4.2 instructions, integer and floating point:
//! moves (aligned and unaligned memory forms), arithmetic, logic, compares (COMISS and
//! UCOMISD set EFLAGS, all defined), shuffles, unpacks, packs, conversions, mask
//! extraction, inserts and extracts, the SSE4.2 string compares, rounding, dot products,
//! MXCSR through LDMXCSR/STMXCSR, and EMMS.
//!
//! The candidates are every legacy-encoded iced-x86 `Code` whose CPUID features are all
//! among MMX and SSE..SSE4.2 (the extensions the emulator's CPUID reports), grouped by
//! mnemonic; a mnemonic is drawn first, then one of its encodings, as in
//! [`super::integer`]. Left out:
//! - anything VEX/EVEX encoded (AVX and later) and every other extension (AES,
//!   PCLMULQDQ, SHA, SSE4A, 3DNow!, ...): the emulator's CPUID does not report them and
//!   it raises #UD, where Bochs' Skylake model or silicon would run them — a CPUID
//!   policy difference, not a bug;
//! - RCPPS, RCPSS, RSQRTPS, RSQRTSS: their approximations are vendor-specific;
//! - MASKMOVQ and MASKMOVDQU: they store to DS:rDI, which is not a data-area pointer;
//! - LDMXCSR of an arbitrary value: LDMXCSR only loads what STMXCSR just stored, or a
//!   value stored just before with every exception masked and no reserved bit set (an
//!   unmasked exception flag would trap later, and reserved bits #GP, which is
//!   deterministic but would then be the whole case);
//! - the fences, PAUSE and the prefetches: no architectural effect to compare;
//! - CRC32 (in [`super::integer`]: general registers only) and FISTTP (in
//!   [`super::x87`]).
//!
//! Memory operands are `[rbx+disp8]`, 16-byte aligned three times in four: legacy SSE
//! instructions with a 16-byte operand raise #GP on a misaligned one, so a random
//! displacement alone would make nearly every such case end in the #GP handler. MMX
//! groups end with EMMS three times in four, so that x87 code after them sees empty
//! registers rather than the NaN-like values MMX writes leave in the x87 view.

use super::emit::{self, Gen};
use crate::case::{Item, Mode};
use alloc::vec::Vec;
use emit::Table;
use iced_x86::{Code, CpuidFeature, EncodingKind, Instruction, Mnemonic, OpKind};
use std::sync::OnceLock;

/// The extensions whose instructions are candidates.
const FEATURES: &[CpuidFeature] = &[
    CpuidFeature::MMX,
    CpuidFeature::SSE,
    CpuidFeature::SSE2,
    CpuidFeature::SSE3,
    CpuidFeature::SSSE3,
    CpuidFeature::SSE4_1,
    CpuidFeature::SSE4_2,
];

/// Mnemonics of those extensions that are never drawn from the table (see the module
/// documentation for why; LDMXCSR, STMXCSR and EMMS are emitted by their own groups).
pub const LEFT_OUT: &[Mnemonic] = &[
    Mnemonic::Rcpps,
    Mnemonic::Rcpss,
    Mnemonic::Rsqrtps,
    Mnemonic::Rsqrtss,
    Mnemonic::Maskmovq,
    Mnemonic::Maskmovdqu,
    Mnemonic::Ldmxcsr,
    Mnemonic::Stmxcsr,
    Mnemonic::Emms,
    Mnemonic::Lfence,
    Mnemonic::Mfence,
    Mnemonic::Sfence,
    Mnemonic::Pause,
    Mnemonic::Prefetchnta,
    Mnemonic::Prefetcht0,
    Mnemonic::Prefetcht1,
    Mnemonic::Prefetcht2,
    Mnemonic::Crc32,
    Mnemonic::Fisttp,
];

fn table(mode: Mode) -> &'static Table {
    static TABLES: OnceLock<[Table; 3]> = OnceLock::new();
    emit::table_for(&TABLES, mode, |mode| {
        emit::encodings_by_mnemonic(mode, None, usable)
    })
}

/// Whether `code` is a candidate in `mode` (see the module documentation).
pub(crate) fn usable(code: Code, mode: Mode) -> bool {
    let features = code.cpuid_features();
    emit::valid_in(code, mode)
        && emit::fillable(code)
        && code.op_code().encoding() == EncodingKind::Legacy
        && !features.is_empty()
        && features.iter().all(|f| FEATURES.contains(f))
        && !LEFT_OUT.contains(&code.mnemonic())
}

/// A SIMD group: an MMX/SSE instruction (with EMMS after an MMX one, usually), an MXCSR
/// access, or EMMS alone.
pub(crate) fn group(g: &mut Gen) -> Option<Vec<Item>> {
    match g.weighted(&[(30, 0u8), (2, 1), (1, 2)]) {
        0 => instruction(g),
        1 => mxcsr(g),
        _ => Some(alloc::vec![emit::bare(g.mode, Code::Emms)?]),
    }
}

fn instruction(g: &mut Gen) -> Option<Vec<Item>> {
    let table = table(g.mode);
    if table.is_empty() {
        return None;
    }
    for _ in 0..16 {
        let (_, codes) = &table[g.below(table.len() as u64) as usize];
        let code = g.pick(codes);
        let Some(mut ins) = emit::fill(g, code) else {
            continue;
        };
        if g.chance(3, 4) {
            emit::align_mem(g, &mut ins, 16);
        }
        let Some(bytes) = emit::encode(g.mode, &ins) else {
            continue;
        };
        let mut items = alloc::vec![Item::Insn(bytes)];
        if uses_mmx(&ins) && g.chance(3, 4) {
            items.push(emit::bare(g.mode, Code::Emms)?);
        }
        return Some(items);
    }
    None
}

/// Whether `ins` names an MMX register (and so puts the x87 unit in MMX state).
fn uses_mmx(ins: &Instruction) -> bool {
    (0..ins.op_count()).any(|i| ins.op_kind(i) == OpKind::Register && ins.op_register(i).is_mm())
}

/// `stmxcsr [rbx+d]`, `stmxcsr [rbx+d]; ldmxcsr [rbx+d]`, or `mov dword [rbx+d], v;
/// ldmxcsr [rbx+d]` with `v` a valid MXCSR: every exception masked, random flags, RC,
/// FTZ and DAZ, no reserved bit.
fn mxcsr(g: &mut Gen) -> Option<Vec<Item>> {
    let mode = g.mode;
    let disp = g.disp() & !3;
    let at = emit::mem_at(mode, disp);
    let store = emit::item(mode, Instruction::with1(Code::Stmxcsr_m32, at))?;
    let load = emit::item(mode, Instruction::with1(Code::Ldmxcsr_m32, at))?;
    Some(match g.below(3) {
        0 => alloc::vec![store],
        1 => alloc::vec![store, load],
        _ => {
            let value = (g.next() as u32 & 0xffff) | MXCSR_MASKS;
            alloc::vec![emit::store32(mode, disp, value)?, load]
        }
    })
}

/// MXCSR's exception mask bits (7-12).
pub const MXCSR_MASKS: u32 = 0x1f80;
