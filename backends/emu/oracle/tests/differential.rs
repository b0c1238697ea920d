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

use iced_x86::{Code, Mnemonic};
use opsvisor_oracle::compare::{compare, disassemble, undefined_flags};
use opsvisor_oracle::emu_runner::EmuRunner;
use opsvisor_oracle::gen::{build, build_sequence, random_state, supported, BuildCtx, Choices};
use opsvisor_oracle::{run, State};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};
use std::cell::RefCell;
use std::time::Instant;

fn codes(mnemonics: &[Mnemonic]) -> Vec<Code> {
    Code::values()
        .filter(|c| mnemonics.contains(&c.mnemonic()) && supported(*c))
        .collect()
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn config(seed: u64, cases: u32) -> Config {
    let rng_seed = match std::env::var("PROPTEST_RNG_SEED") {
        Ok(v) => v.parse().map(RngSeed::Fixed).unwrap_or(RngSeed::Random),
        Err(_) => RngSeed::Fixed(seed),
    };
    Config {
        cases,
        failure_persistence: None,
        rng_seed,
        max_shrink_iters: 2000,
        max_global_rejects: cases.saturating_mul(4).max(1024),
        ..Config::default()
    }
}

thread_local! {
    static EMU: RefCell<EmuRunner> = RefCell::new(EmuRunner::new().expect("emulator runner"));
}

fn check(code: &[u8], state: &State) -> Result<(), TestCaseError> {
    if undefined_flags(code).1 {
        return Err(TestCaseError::reject("reads an undefined flag"));
    }
    let fail = |e: String| TestCaseError::fail(format!("{e}\n{}", disassemble(code)));
    let native = run(code, state).map_err(|e| fail(e.to_string()))?;
    let emu = EMU
        .with(|e| e.borrow_mut().run(code, state))
        .map_err(|e| fail(format!("emulator: {e}")))?;
    compare(code, state, &native, &emu).map_err(TestCaseError::fail)
}

/// Run one Code; `Err` holds the minimal failing case.
fn run_code(code: Code, cases: u32) -> Result<u32, String> {
    let mut runner = TestRunner::new(config(0x0dd0_0000 ^ code as u64, cases));
    let built = std::cell::Cell::new(0u32);
    let result = runner.run(&vec(any::<u64>(), 48), |words| {
        let mut ch = Choices::new(&words);
        let mut state = random_state(&mut ch);
        let Some(bytes) = build(code, &mut ch, &BuildCtx::default(), &mut state) else {
            return Err(TestCaseError::reject("not encodable"));
        };
        built.set(built.get() + 1);
        check(&bytes, &state)
    });
    match result {
        Ok(()) => Ok(built.get()),
        Err(TestError::Fail(why, words)) => {
            let mut ch = Choices::new(&words);
            let mut state = random_state(&mut ch);
            let bytes = build(code, &mut ch, &BuildCtx::default(), &mut state);
            Err(format!(
                "{code:?}: {why}\n  state: {state:?}\n  bytes: {bytes:02x?}"
            ))
        }
        Err(TestError::Abort(why)) => Err(format!("{code:?}: aborted: {why}")),
    }
}

fn run_group(name: &str, mnemonics: &[Mnemonic]) {
    let codes = codes(mnemonics);
    assert!(
        !codes.is_empty(),
        "group {name} has no Code the host supports"
    );
    let start = Instant::now();
    let cases = cases();
    let mut failures = Vec::new();
    let mut total = 0u64;
    for &code in &codes {
        match run_code(code, cases) {
            Ok(n) => total += u64::from(n),
            Err(f) => failures.push(f),
        }
    }
    eprintln!(
        "group {name}: {} Codes, {total} cases run, {} failing, {:.1}s",
        codes.len(),
        failures.len(),
        start.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "group {name}: {} of {} Codes mismatch:\n\n{}",
        failures.len(),
        codes.len(),
        failures.join("\n\n")
    );
}

/// Random 3-5 instruction sequences drawn from the group's Codes.
fn run_sequences(name: &str, mnemonics: &[Mnemonic]) {
    let codes = codes(mnemonics);
    let start = Instant::now();
    let cases = cases().saturating_mul(8);
    let mut runner = TestRunner::new(config(0x5e90_0000 ^ name.len() as u64, cases));
    let result = runner.run(&vec(any::<u64>(), 160), |words| {
        let mut ch = Choices::new(&words);
        let count = 3 + ch.below(3) as usize;
        let (bytes, state) = build_sequence(&codes, count, &mut ch);
        check(&bytes, &state)
    });
    eprintln!(
        "sequences {name}: {cases} cases, {:.1}s",
        start.elapsed().as_secs_f64()
    );
    if let Err(e) = result {
        let detail = match &e {
            TestError::Fail(_, words) => {
                let mut ch = Choices::new(words);
                let count = 3 + ch.below(3) as usize;
                let (_, state) = build_sequence(&codes, count, &mut ch);
                format!("\n  state: {state:?}")
            }
            TestError::Abort(_) => String::new(),
        };
        panic!("sequences {name}: {e}{detail}");
    }
}

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
