//! Differential property tests of the x87 FPU (every legacy Code with an x87 CPUID
//! feature, FXSAVE/FXRSTOR and WAIT): random instructions from random x87 states on
//! the host CPU and on the emulator (see tests/differential.rs for the harness).
#![cfg(all(target_os = "linux", target_arch = "x86_64", feature = "emu"))]

mod common;

use common::{codes_where, run_code_list, run_code_list_at, run_sequence_list};
use iced_x86::{Code, CpuidFeature, Mnemonic};

use Mnemonic as M;

/// The Codes of the x87 family.
fn x87(code: Code) -> bool {
    if code.encoding() != iced_x86::EncodingKind::Legacy {
        return false;
    }
    if matches!(
        code,
        Code::Wait
            | Code::Fxsave_m512byte
            | Code::Fxsave64_m512byte
            | Code::Fxrstor_m512byte
            | Code::Fxrstor64_m512byte
    ) {
        return true;
    }
    code.cpuid_features().iter().any(|&f| {
        matches!(
            f,
            CpuidFeature::FPU | CpuidFeature::FPU287 | CpuidFeature::FPU387
        )
    })
}

fn group(mnemonics: &[Mnemonic]) -> Vec<Code> {
    codes_where(|c| x87(c) && mnemonics.contains(&c.mnemonic()))
}

const LOAD_STORE: &[Mnemonic] = &[
    M::Fld,
    M::Fst,
    M::Fstp,
    M::Fstpnce,
    M::Fild,
    M::Fist,
    M::Fistp,
    M::Fisttp,
    M::Fbld,
    M::Fbstp,
];
const ARITH: &[Mnemonic] = &[
    M::Fadd,
    M::Faddp,
    M::Fiadd,
    M::Fsub,
    M::Fsubp,
    M::Fisub,
    M::Fsubr,
    M::Fsubrp,
    M::Fisubr,
    M::Fmul,
    M::Fmulp,
    M::Fimul,
    M::Fdiv,
    M::Fdivp,
    M::Fidiv,
    M::Fdivr,
    M::Fdivrp,
    M::Fidivr,
    M::Fsqrt,
    M::Fabs,
    M::Fchs,
    M::Frndint,
    M::Fscale,
    M::Fxtract,
    M::Fprem,
    M::Fprem1,
];
const COMPARE: &[Mnemonic] = &[
    M::Fcom,
    M::Fcomp,
    M::Fcompp,
    M::Fucom,
    M::Fucomp,
    M::Fucompp,
    M::Ficom,
    M::Ficomp,
    M::Fcomi,
    M::Fcomip,
    M::Fucomi,
    M::Fucomip,
    M::Ftst,
    M::Fxam,
    M::Fcmovb,
    M::Fcmove,
    M::Fcmovbe,
    M::Fcmovu,
    M::Fcmovnb,
    M::Fcmovne,
    M::Fcmovnbe,
    M::Fcmovnu,
];
const CONTROL: &[Mnemonic] = &[
    M::Fldcw,
    M::Fnstcw,
    M::Fstcw,
    M::Fnstsw,
    M::Fstsw,
    M::Fnclex,
    M::Fclex,
    M::Fninit,
    M::Finit,
    M::Fldenv,
    M::Fnstenv,
    M::Fstenv,
    M::Frstor,
    M::Fnsave,
    M::Fsave,
    M::Fxsave,
    M::Fxsave64,
    M::Fxrstor,
    M::Fxrstor64,
    M::Wait,
    M::Fneni,
    M::Feni,
    M::Fndisi,
    M::Fdisi,
    M::Fnsetpm,
    M::Fsetpm,
];
const STACK: &[Mnemonic] = &[
    M::Fxch,
    M::Ffree,
    M::Ffreep,
    M::Fincstp,
    M::Fdecstp,
    M::Fnop,
    M::Fld1,
    M::Fldz,
    M::Fldpi,
    M::Fldl2e,
    M::Fldl2t,
    M::Fldlg2,
    M::Fldln2,
];
const TRANSCENDENTAL: &[Mnemonic] = &[
    M::Fsin,
    M::Fcos,
    M::Fsincos,
    M::Fptan,
    M::Fpatan,
    M::F2xm1,
    M::Fyl2x,
    M::Fyl2xp1,
];

#[test]
fn every_x87_code_is_in_a_group() {
    let all: Vec<&[Mnemonic]> = vec![LOAD_STORE, ARITH, COMPARE, CONTROL, STACK, TRANSCENDENTAL];
    let missing: Vec<Code> = codes_where(x87)
        .into_iter()
        .filter(|c| !all.iter().any(|g| g.contains(&c.mnemonic())))
        .collect();
    assert!(missing.is_empty(), "x87 Codes in no group: {missing:?}");
}

#[test]
fn load_store() {
    run_code_list("x87_load_store", group(LOAD_STORE));
}

#[test]
fn arith() {
    run_code_list("x87_arith", group(ARITH));
}

#[test]
fn compare() {
    run_code_list("x87_compare", group(COMPARE));
}

#[test]
fn control() {
    run_code_list("x87_control", group(CONTROL));
}

/// The environment and save-area layouts of 32-bit protected mode (compatibility mode:
/// FIP/FDP as 32-bit offsets with the FCS/FDS selectors) and 32-bit FXSAVE/FXRSTOR.
#[test]
fn environment_32bit() {
    let codes = group(&[
        M::Fldenv,
        M::Fnstenv,
        M::Fstenv,
        M::Frstor,
        M::Fnsave,
        M::Fsave,
        M::Fxsave,
        M::Fxrstor,
    ]);
    run_code_list_at("x87_environment_32", codes, 32);
}

#[test]
fn stack_constants() {
    run_code_list("x87_stack", group(STACK));
}

#[test]
fn transcendental() {
    run_code_list("x87_transcendental", group(TRANSCENDENTAL));
}

#[test]
fn sequences() {
    let mut g = LOAD_STORE.to_vec();
    for m in [ARITH, COMPARE, STACK] {
        g.extend_from_slice(m);
    }
    g.extend_from_slice(&[M::Fnstsw, M::Fnclex, M::Fldcw, M::Wait]);
    run_sequence_list("x87", group(&g));
}
