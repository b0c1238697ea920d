//! Comparing two outcomes of the same snippet, leaving out what the architecture leaves
//! undefined.
//!
//! Compared: how the run ended (completed, or the exception's vector, error code and
//! #PF address), RIP as an offset into the snippet, all sixteen general registers, the
//! scratch area, and RFLAGS' status flags, DF and AC minus the flags iced-x86 reports
//! as undefined for the snippet's instructions. Not compared yet: x87/SSE state (the
//! emulator has none).

use crate::{Outcome, State, AC, AF, CF, CODE_BASE, DF, OF, PF, SF, ZF};
use iced_x86::{Decoder, DecoderOptions, Formatter, Instruction, IntelFormatter, RflagsBits};

/// The RFLAGS bits compared at all.
pub const COMPARED_FLAGS: u64 = CF | PF | AF | ZF | SF | OF | DF | AC;

/// Translate iced-x86's `RflagsBits` into RFLAGS bit positions.
pub fn rflags_from_iced(bits: u32) -> u64 {
    let map = [
        (RflagsBits::OF, OF),
        (RflagsBits::SF, SF),
        (RflagsBits::ZF, ZF),
        (RflagsBits::AF, AF),
        (RflagsBits::CF, CF),
        (RflagsBits::PF, PF),
        (RflagsBits::DF, DF),
        (RflagsBits::AC, AC),
    ];
    map.iter()
        .filter(|(iced, _)| bits & iced != 0)
        .fold(0, |acc, (_, f)| acc | f)
}

/// Decode a snippet (at [`CODE_BASE`]).
pub fn decode(code: &[u8]) -> Vec<Instruction> {
    decode_at(code, 64)
}

/// [`decode`] at code size `bits`.
pub fn decode_at(code: &[u8], bits: u32) -> Vec<Instruction> {
    let mut d = Decoder::with_ip(bits, code, CODE_BASE, DecoderOptions::NONE);
    let mut out = Vec::new();
    while d.can_decode() {
        out.push(d.decode());
    }
    out
}

/// Disassemble a snippet, one instruction per line with its offset.
pub fn disassemble(code: &[u8]) -> String {
    disassemble_at(code, 64)
}

/// [`disassemble`] at code size `bits`.
pub fn disassemble_at(code: &[u8], bits: u32) -> String {
    let mut f = IntelFormatter::new();
    let mut text = String::new();
    for i in decode_at(code, bits) {
        let mut line = String::new();
        f.format(&i, &mut line);
        text.push_str(&format!(
            "  +{:#x}: {line}\n",
            i.ip().wrapping_sub(CODE_BASE)
        ));
    }
    text
}

/// Flag-dependence of a snippet: the flags whose final value is undefined, and whether
/// some instruction reads a flag an earlier one left undefined (then its result is not
/// predictable either, and the snippet is unfit for comparison).
pub fn undefined_flags(code: &[u8]) -> (u64, bool) {
    undefined_flags_at(code, 64)
}

/// [`undefined_flags`] at code size `bits`.
pub fn undefined_flags_at(code: &[u8], bits: u32) -> (u64, bool) {
    undefined_flags_of(&decode_at(code, bits))
}

/// [`undefined_flags`] of decoded instructions.
fn undefined_flags_of(instrs: &[Instruction]) -> (u64, bool) {
    let mut undefined = 0u64;
    let mut reads_undefined = false;
    for i in instrs {
        if rflags_from_iced(i.rflags_read()) & undefined != 0 {
            reads_undefined = true;
        }
        let written = rflags_from_iced(i.rflags_modified());
        let now_undefined = rflags_from_iced(i.rflags_undefined());
        undefined = (undefined & !written) | now_undefined;
    }
    (undefined, reads_undefined)
}

/// Compare the outcomes of `code` run from `initial` on the reference (`native`) and the
/// emulator (`emu`); `Err` describes every difference.
pub fn compare(
    code: &[u8],
    initial: &State,
    native: &Outcome,
    emu: &Outcome,
) -> Result<(), String> {
    let mut diffs = Vec::new();
    if native.end != emu.end {
        diffs.push(format!("end: native {:?}, emu {:?}", native.end, emu.end));
    }
    if native.rip_offset != emu.rip_offset {
        diffs.push(format!(
            "rip: native +{:#x}, emu +{:#x}",
            native.rip_offset, emu.rip_offset
        ));
    }
    for (n, (a, b)) in native
        .state
        .gpr
        .iter()
        .zip(emu.state.gpr.iter())
        .enumerate()
    {
        // After compatibility mode the upper halves of RAX..RDI are undefined.
        let m = if initial.bits == 32 && n < 8 {
            0xffff_ffff
        } else {
            u64::MAX
        };
        if a & m != b & m {
            diffs.push(format!(
                "{}: native {a:#x}, emu {b:#x} (was {:#x})",
                crate::gpr_name(n),
                initial.gpr[n]
            ));
        }
    }
    // What the state holds was left by the instructions that retired: those before the
    // host's final RIP (all of them when the snippet completed; a fault stops before the
    // faulting one).
    let retired = usize::try_from(native.rip_offset).map_or(code.len(), |n| n.min(code.len()));
    let executed = decode_at(&code[..retired], initial.bits);
    let (undefined, _) = undefined_flags_of(&executed);
    let mask = COMPARED_FLAGS & !undefined;
    if native.state.rflags & mask != emu.state.rflags & mask {
        diffs.push(format!(
            "rflags: native {:#x}, emu {:#x} (compared bits {mask:#x}, was {:#x})",
            native.state.rflags & mask,
            emu.state.rflags & mask,
            initial.rflags
        ));
    }
    compare_fpu(&executed, &native.state, &emu.state, &mut diffs);
    let fxsave = executed.iter().any(|i| {
        matches!(
            i.mnemonic(),
            iced_x86::Mnemonic::Fxsave
                | iced_x86::Mnemonic::Fxsave64
                | iced_x86::Mnemonic::Xsave
                | iced_x86::Mnemonic::Xsave64
                | iced_x86::Mnemonic::Xsaveopt
                | iced_x86::Mnemonic::Xsaveopt64
                | iced_x86::Mnemonic::Xsavec
                | iced_x86::Mnemonic::Xsavec64
        )
    });
    let differing: Vec<usize> = (0..native.state.scratch.len().min(emu.state.scratch.len()))
        .filter(|&i| native.state.scratch[i] != emu.state.scratch[i])
        .filter(|&i| {
            !(fxsave && mxcsr_mask_difference(&native.state.scratch, &emu.state.scratch, i))
        })
        .collect();
    if let (Some(first), Some(last)) = (differing.first(), differing.last()) {
        let (first, last) = (*first, *last);
        diffs.push(format!(
            "scratch differs at {} bytes in +{first:#x}..=+{last:#x}: native {:02x?}, emu {:02x?}",
            differing.len(),
            &native.state.scratch[first..=last.min(first + 15)],
            &emu.state.scratch[first..=last.min(first + 15)],
        ));
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}  bytes: {:02x?}\n  {}",
            disassemble_at(code, initial.bits),
            code,
            diffs.join("\n  ")
        ))
    }
}

/// Compare the SSE and x87 state: XMM registers (lanes an approximate instruction
/// produced are compared within its architectural error bound, see
/// [`crate::sse_rules`]), MXCSR, and the x87 control, status (less the condition codes
/// the instructions leave undefined, see [`crate::x87_rules`]) and tag words and
/// registers. FIP, FDP and FOP are not compared: whether FXSAVE stores them depends on
/// the host CPU (AMD stores them only while an exception is pending).
fn compare_fpu(instrs: &[Instruction], native: &State, emu: &State, diffs: &mut Vec<String>) {
    for (n, (a, b)) in native.xmm.iter().zip(emu.xmm.iter()).enumerate() {
        if a != b && !crate::sse_rules::xmm_equivalent(instrs, n, *a, *b) {
            diffs.push(format!("xmm{n}: native {a:#034x}, emu {b:#034x}"));
        }
    }
    if native.mxcsr != emu.mxcsr {
        diffs.push(format!(
            "mxcsr: native {:#x}, emu {:#x}",
            native.mxcsr, emu.mxcsr
        ));
    }
    let (x, y) = (&native.x87, &emu.x87);
    if x.fcw != y.fcw {
        diffs.push(format!("fcw: native {:#x}, emu {:#x}", x.fcw, y.fcw));
    }
    let fsw_mask = !crate::x87_rules::undefined_fsw(instrs);
    if x.fsw & fsw_mask != y.fsw & fsw_mask {
        diffs.push(format!(
            "fsw: native {:#x}, emu {:#x} (compared bits {fsw_mask:#x})",
            x.fsw, y.fsw
        ));
    }
    if x.ftw != y.ftw {
        diffs.push(format!("ftw: native {:#x}, emu {:#x}", x.ftw, y.ftw));
    }
    for (i, (a, b)) in x.st.iter().zip(y.st.iter()).enumerate() {
        if a != b && !crate::x87_rules::st_equivalent(instrs, i, *a, *b) {
            diffs.push(format!("st({i}): native {a:#022x}, emu {b:#022x}"));
        }
    }
}

/// Whether byte `i` of the scratch area lies in the MXCSR_MASK field (bytes 28-31) of an
/// FXSAVE image or an XSAVE area's legacy region (16-byte aligned, so at offset 12 mod 16) where the host stored AMD's
/// 0x0002FFFF (bit 17: misaligned-SSE mode, a capability the emulator does not have)
/// and the emulator its own 0x0000FFFF. MXCSR_MASK describes the CPU, not the state.
fn mxcsr_mask_difference(native: &[u8], emu: &[u8], i: usize) -> bool {
    let start = i - (i % 16) + 12;
    if i < start || i >= start + 4 || start + 4 > native.len() {
        return false;
    }
    native[start..start + 4] == [0xff, 0xff, 0x02, 0x00]
        && emu[start..start + 4] == [0xff, 0xff, 0x00, 0x00]
}

/// Run `code` from `state` on the host and on the emulator and compare.
#[cfg(feature = "emu")]
pub fn differential(
    runner: &mut crate::emu_runner::EmuRunner,
    code: &[u8],
    state: &State,
) -> Result<(), String> {
    let native = crate::run(code, state).map_err(|e| format!("{e}\n{}", disassemble(code)))?;
    let emu = runner
        .run(code, state)
        .map_err(|e| format!("emulator: {e}\n{}  bytes: {code:02x?}", disassemble(code)))?;
    compare(code, state, &native, &emu)
}
