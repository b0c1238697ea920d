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

use common::run_sequences;
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

/// Every Code of the integer group (see `opsvisor_oracle::groups`).
#[test]
fn integer() {
    common::run_group_named("integer");
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

/// The legacy forms, in compatibility mode.
#[test]
fn legacy32() {
    common::run_group_named("legacy32");
}

/// The MMX, SSE, ..., SSE4.2 groups: every Code of each (integer and floating-point
/// forms alike) against the host CPU.
#[test]
fn mmx() {
    common::run_group_named("mmx");
}

#[test]
fn sse() {
    common::run_group_named("sse");
}

#[test]
fn sse2() {
    common::run_group_named("sse2");
}

#[test]
fn sse3() {
    common::run_group_named("sse3");
}

#[test]
fn ssse3() {
    common::run_group_named("ssse3");
}

#[test]
fn sse4_1() {
    common::run_group_named("sse4_1");
}

#[test]
fn sse4_2() {
    common::run_group_named("sse4_2");
}

/// The x87 and FXSAVE/FXRSTOR groups (tests/differential_x87.rs adds x87 sequences, the
/// 32-bit environment layouts and per-family runs).
#[test]
fn x87() {
    common::run_group_named("x87");
}

#[test]
fn fxsr() {
    common::run_group_named("fxsr");
}
