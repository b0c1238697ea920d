//! Differential property tests of the SSE-family floating-point instructions (legacy
//! encodings): arithmetic, MIN/MAX, approximations, compares, conversions, rounding,
//! horizontal operations, dot products and MXCSR loads and stores, from random XMM and
//! MXCSR states (float edge cases, random rounding, DAZ/FTZ, unmasked exceptions), on
//! the host CPU and on the emulator. See tests/differential.rs for the harness.
#![cfg(all(target_os = "linux", target_arch = "x86_64", feature = "emu"))]

mod common;

use common::{codes_where, run_code_list, run_sequence_list};
use iced_x86::{Code, EncodingKind, Mnemonic};

use Mnemonic as M;

const ARITH: &[Mnemonic] = &[
    M::Addps,
    M::Addss,
    M::Addpd,
    M::Addsd,
    M::Subps,
    M::Subss,
    M::Subpd,
    M::Subsd,
    M::Mulps,
    M::Mulss,
    M::Mulpd,
    M::Mulsd,
    M::Divps,
    M::Divss,
    M::Divpd,
    M::Divsd,
    M::Sqrtps,
    M::Sqrtss,
    M::Sqrtpd,
    M::Sqrtsd,
    M::Minps,
    M::Minss,
    M::Minpd,
    M::Minsd,
    M::Maxps,
    M::Maxss,
    M::Maxpd,
    M::Maxsd,
];
const APPROX: &[Mnemonic] = &[M::Rcpps, M::Rcpss, M::Rsqrtps, M::Rsqrtss];
const COMPARE: &[Mnemonic] = &[
    M::Cmpps,
    M::Cmpss,
    M::Cmppd,
    M::Cmpsd,
    M::Comiss,
    M::Comisd,
    M::Ucomiss,
    M::Ucomisd,
];
const CONVERT: &[Mnemonic] = &[
    M::Cvtpi2ps,
    M::Cvtps2pi,
    M::Cvttps2pi,
    M::Cvtpi2pd,
    M::Cvtpd2pi,
    M::Cvttpd2pi,
    M::Cvtsi2ss,
    M::Cvtsi2sd,
    M::Cvtss2si,
    M::Cvttss2si,
    M::Cvtsd2si,
    M::Cvttsd2si,
    M::Cvtps2pd,
    M::Cvtpd2ps,
    M::Cvtss2sd,
    M::Cvtsd2ss,
    M::Cvtdq2ps,
    M::Cvtps2dq,
    M::Cvttps2dq,
    M::Cvtdq2pd,
    M::Cvtpd2dq,
    M::Cvttpd2dq,
];
const OTHER: &[Mnemonic] = &[
    M::Addsubps,
    M::Addsubpd,
    M::Haddps,
    M::Haddpd,
    M::Hsubps,
    M::Hsubpd,
    M::Roundps,
    M::Roundss,
    M::Roundpd,
    M::Roundsd,
    M::Dpps,
    M::Dppd,
    M::Ldmxcsr,
    M::Stmxcsr,
];

/// The legacy-encoded Codes of `mnemonics` (the string instruction CMPSD shares its
/// mnemonic with the SSE compare and is not one of them).
fn legacy(mnemonics: &'static [Mnemonic]) -> Vec<Code> {
    codes_where(move |c| {
        c.encoding() == EncodingKind::Legacy
            && mnemonics.contains(&c.mnemonic())
            && c != Code::Cmpsd_m32_m32
    })
}

#[test]
fn sse_fp_arithmetic() {
    run_code_list("sse-fp-arith", legacy(ARITH));
}

#[test]
fn sse_fp_approximations() {
    run_code_list("sse-fp-approx", legacy(APPROX));
}

#[test]
fn sse_fp_compares() {
    run_code_list("sse-fp-compare", legacy(COMPARE));
}

#[test]
fn sse_fp_conversions() {
    run_code_list("sse-fp-convert", legacy(CONVERT));
}

#[test]
fn sse_fp_horizontal_round_dot_mxcsr() {
    run_code_list("sse-fp-other", legacy(OTHER));
}

/// Sequences mix the families so that flags accumulate in MXCSR across instructions and
/// results feed later operations. The approximations are left out: their results are
/// compared within a tolerance, which later arithmetic would amplify.
#[test]
fn sse_fp_sequences() {
    let mut codes = legacy(ARITH);
    for group in [COMPARE, CONVERT, OTHER] {
        codes.extend(legacy(group));
    }
    run_sequence_list("sse-fp", codes);
}
