//! Differential property tests: random instructions of each iced-x86 `Code` in a group,
//! from random states, on the host CPU (the native oracle) and on the emulator; every
//! compared field must agree (see `opsvisor_oracle::compare`).
//!
//! Each Code gets `PROPTEST_CASES` cases (default 256) from a fixed seed derived from the
//! Code, so CI runs are reproducible; set `PROPTEST_RNG_SEED` to explore other inputs.
//! A failing Code is shrunk to a minimal case, and all failing Codes of a group are
//! reported together.
//!
//! Mismatches found are fixed in the emulator and recorded in tests/regressions.rs.
#![cfg(all(target_os = "linux", target_arch = "x86_64", feature = "emu"))]

mod common;

use common::{run_group, run_sequences};
use iced_x86::Mnemonic;

use Mnemonic as M;

const ALU: &[Mnemonic] = &[
    M::Add,
    M::Or,
    M::Adc,
    M::Sbb,
    M::And,
    M::Sub,
    M::Xor,
    M::Cmp,
    M::Test,
];
const UNARY: &[Mnemonic] = &[M::Inc, M::Dec, M::Neg, M::Not];
const SHIFTS: &[Mnemonic] = &[
    M::Rol,
    M::Ror,
    M::Rcl,
    M::Rcr,
    M::Shl,
    M::Sal,
    M::Shr,
    M::Sar,
    M::Shld,
    M::Shrd,
];
const MULDIV: &[Mnemonic] = &[M::Mul, M::Imul, M::Div, M::Idiv];
const BITS: &[Mnemonic] = &[
    M::Bt,
    M::Bts,
    M::Btr,
    M::Btc,
    M::Bsf,
    M::Bsr,
    M::Lzcnt,
    M::Popcnt,
    M::Tzcnt,
];
const BMI_ADX: &[Mnemonic] = &[
    M::Andn,
    M::Bextr,
    M::Blsi,
    M::Blsmsk,
    M::Blsr,
    M::Bzhi,
    M::Mulx,
    M::Pdep,
    M::Pext,
    M::Rorx,
    M::Sarx,
    M::Shlx,
    M::Shrx,
    M::Adcx,
    M::Adox,
];
const MOVES: &[Mnemonic] = &[
    M::Mov,
    M::Movzx,
    M::Movsx,
    M::Movsxd,
    M::Lea,
    M::Bswap,
    M::Movbe,
    M::Cbw,
    M::Cwde,
    M::Cdqe,
    M::Cwd,
    M::Cdq,
    M::Cqo,
];
const CMOV_SETCC: &[Mnemonic] = &[
    M::Cmovo,
    M::Cmovno,
    M::Cmovb,
    M::Cmovae,
    M::Cmove,
    M::Cmovne,
    M::Cmovbe,
    M::Cmova,
    M::Cmovs,
    M::Cmovns,
    M::Cmovp,
    M::Cmovnp,
    M::Cmovl,
    M::Cmovge,
    M::Cmovle,
    M::Cmovg,
    M::Seto,
    M::Setno,
    M::Setb,
    M::Setae,
    M::Sete,
    M::Setne,
    M::Setbe,
    M::Seta,
    M::Sets,
    M::Setns,
    M::Setp,
    M::Setnp,
    M::Setl,
    M::Setge,
    M::Setle,
    M::Setg,
];
const XCHG: &[Mnemonic] = &[M::Xchg, M::Xadd, M::Cmpxchg, M::Cmpxchg8b, M::Cmpxchg16b];
const MISC: &[Mnemonic] = &[
    M::Crc32,
    M::Clc,
    M::Stc,
    M::Cmc,
    M::Cld,
    M::Std,
    M::Lahf,
    M::Sahf,
    M::Push,
    M::Pop,
];

#[test]
fn alu() {
    run_group("alu", ALU);
}

#[test]
fn unary() {
    run_group("unary", UNARY);
}

#[test]
fn shifts() {
    run_group("shifts", SHIFTS);
}

#[test]
fn muldiv() {
    run_group("muldiv", MULDIV);
}

#[test]
fn bits() {
    run_group("bits", BITS);
}

#[test]
fn bmi_adx() {
    run_group("bmi_adx", BMI_ADX);
}

#[test]
fn moves() {
    run_group("moves", MOVES);
}

#[test]
fn cmov_setcc() {
    run_group("cmov_setcc", CMOV_SETCC);
}

#[test]
fn xchg() {
    run_group("xchg", XCHG);
}

#[test]
fn misc() {
    run_group("misc", MISC);
}

#[test]
fn sequences_alu_shifts() {
    let mut group = ALU.to_vec();
    group.extend_from_slice(UNARY);
    group.extend_from_slice(SHIFTS);
    run_sequences("alu_shifts", &group);
}

#[test]
fn sequences_mixed() {
    let mut group = MULDIV.to_vec();
    for g in [BITS, BMI_ADX, MOVES, CMOV_SETCC, XCHG] {
        group.extend_from_slice(g);
    }
    run_sequences("mixed", &group);
}

const STRINGS: &[Mnemonic] = &[
    M::Movsb,
    M::Movsw,
    M::Movsd,
    M::Movsq,
    M::Cmpsb,
    M::Cmpsw,
    M::Cmpsd,
    M::Cmpsq,
    M::Stosb,
    M::Stosw,
    M::Stosd,
    M::Stosq,
    M::Lodsb,
    M::Lodsw,
    M::Lodsd,
    M::Lodsq,
    M::Scasb,
    M::Scasw,
    M::Scasd,
    M::Scasq,
];

#[test]
fn strings() {
    // MOVSD and CMPSD are also SSE2 mnemonics: keep the string forms.
    let codes = common::codes_where(|c| {
        STRINGS.contains(&c.mnemonic())
            && !c
                .cpuid_features()
                .iter()
                .any(|f| *f == iced_x86::CpuidFeature::SSE2)
    });
    common::run_code_list("strings", codes);
}

/// The forms that exist only outside 64-bit mode, run in compatibility mode: BCD
/// adjusts, PUSHA/POPA, BOUND, ARPL, LES/LDS.
const LEGACY32: &[Mnemonic] = &[
    M::Daa,
    M::Das,
    M::Aaa,
    M::Aas,
    M::Aam,
    M::Aad,
    M::Pusha,
    M::Pushad,
    M::Popa,
    M::Popad,
    M::Bound,
    M::Arpl,
    M::Les,
    M::Lds,
];

#[test]
fn legacy32() {
    let codes: Vec<iced_x86::Code> = iced_x86::Code::values()
        .filter(|c| LEGACY32.contains(&c.mnemonic()) && opsvisor_oracle::gen::supported_legacy32(*c))
        .collect();
    assert!(codes.len() >= 14, "legacy group: {codes:?}");
    common::run_code_list_at("legacy32", codes, 32);
}
