//! The differential harness shared by the test files of each instruction group: random
//! instructions of each iced-x86 `Code` (or short sequences), run on the host CPU and
//! on the emulator, every compared field must agree (see `opsvisor_oracle::compare`).
#![allow(dead_code)]

use iced_x86::{Code, Mnemonic};
use opsvisor_oracle::compare::{compare, disassemble_at, undefined_flags_at};
use opsvisor_oracle::emu_runner::EmuRunner;
use opsvisor_oracle::gen::{build, build_sequence, random_state, supported, BuildCtx, Choices};
use opsvisor_oracle::{run, State};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};
use std::cell::RefCell;
use std::time::Instant;

pub fn codes(mnemonics: &[Mnemonic]) -> Vec<Code> {
    Code::values()
        .filter(|c| mnemonics.contains(&c.mnemonic()) && supported(*c))
        .collect()
}

pub fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

pub fn config(seed: u64, cases: u32) -> Config {
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

pub fn check(code: &[u8], state: &State) -> Result<(), TestCaseError> {
    if undefined_flags_at(code, state.bits).1 {
        return Err(TestCaseError::reject("reads an undefined flag"));
    }
    let fail =
        |e: String| TestCaseError::fail(format!("{e}\n{}", disassemble_at(code, state.bits)));
    let native = run(code, state).map_err(|e| fail(e.to_string()))?;
    let emu = EMU
        .with(|e| e.borrow_mut().run(code, state))
        .map_err(|e| fail(format!("emulator: {e}")))?;
    compare(code, state, &native, &emu).map_err(TestCaseError::fail)
}

/// One case in eight of the general-purpose groups runs with RFLAGS.AC set, so
/// misaligned accesses raise #AC (the oracle's host, like the emulator runner, has
/// CR0.AM set). The FPU/SIMD groups keep AC clear.
fn with_alignment_check(state: &mut State, ch: &mut Choices, code: Code) {
    let general = opsvisor_oracle::groups::group("integer").is_some_and(|g| (g.contains)(code))
        || opsvisor_oracle::groups::group("legacy32").is_some_and(|g| (g.contains)(code));
    if general && ch.below(8) == 0 {
        state.rflags |= opsvisor_oracle::AC;
    }
}

/// Run one Code; `Err` holds the minimal failing case.
pub fn run_code(code: Code, cases: u32) -> Result<u32, String> {
    run_code_at(code, cases, 64)
}

/// [`run_code`] at code size `bits` (32: compatibility mode).
pub fn run_code_at(code: Code, cases: u32, bits: u32) -> Result<u32, String> {
    let mut runner = TestRunner::new(config(0x0dd0_0000 ^ code as u64, cases));
    let built = std::cell::Cell::new(0u32);
    let result = runner.run(&vec(any::<u64>(), 48), |words| {
        let mut ch = Choices::new(&words);
        let mut state = random_state(&mut ch);
        state.bits = bits;
        with_alignment_check(&mut state, &mut ch, code);
        let ctx = BuildCtx {
            bits,
            ..BuildCtx::default()
        };
        let Some(bytes) = build(code, &mut ch, &ctx, &mut state) else {
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
            state.bits = bits;
            with_alignment_check(&mut state, &mut ch, code);
            let ctx = BuildCtx {
                bits,
                ..BuildCtx::default()
            };
            let bytes = build(code, &mut ch, &ctx, &mut state);
            Err(format!(
                "{code:?}: {why}\n  state: {state:?}\n  bytes: {bytes:02x?}"
            ))
        }
        Err(TestError::Abort(why)) => Err(format!("{code:?}: aborted: {why}")),
    }
}

pub fn run_group(name: &str, mnemonics: &[Mnemonic]) {
    run_code_list(name, codes(mnemonics));
}

/// Run the differential test of the coverage group `name` (every Code of it the
/// generator can build), at the group's code size.
pub fn run_group_named(name: &str) {
    let group = opsvisor_oracle::groups::group(name).expect("group exists");
    run_code_list_at(name, group.testable_codes(), group.bits);
}

/// The Codes the generator supports that satisfy `pred` (for groups chosen by CPUID
/// feature or encoding rather than by mnemonic).
pub fn codes_where(pred: impl Fn(Code) -> bool) -> Vec<Code> {
    Code::values()
        .filter(|c| supported(*c) && pred(*c))
        .collect()
}

/// Run every Code of `codes` (see [`run_code`]); all failures are reported together.
pub fn run_code_list(name: &str, codes: Vec<Code>) {
    run_code_list_at(name, codes, 64);
}

/// [`run_code_list`] at code size `bits` (32: compatibility mode).
pub fn run_code_list_at(name: &str, codes: Vec<Code>, bits: u32) {
    assert!(
        !codes.is_empty(),
        "group {name} has no Code the host supports"
    );
    let start = Instant::now();
    let cases = cases();
    let mut failures = Vec::new();
    let mut total = 0u64;
    for &code in &codes {
        match run_code_at(code, cases, bits) {
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
pub fn run_sequences(name: &str, mnemonics: &[Mnemonic]) {
    run_sequence_list(name, codes(mnemonics));
}

/// Random 3-5 instruction sequences drawn from `codes`.
pub fn run_sequence_list(name: &str, codes: Vec<Code>) {
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
