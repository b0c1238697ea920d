//! Differential tests of the MMX/SSE-family instructions that are not floating-point
//! arithmetic (the emulator's `exec::simd` family): every legacy-encoded Code whose CPUID
//! features are among MMX, SSE..SSE4.2, less the floating-point arithmetic, CRC32,
//! POPCNT, fences, prefetches, CLFLUSH and MONITOR/MWAIT (see [`in_scope`]).
//!
//! Random instructions of each Code run from random states (random XMM lanes, x87/MMX
//! registers, MXCSR) on the host CPU and on the emulator; the whole state must agree.
//! MASKMOVQ/MASKMOVDQU (memory operand: the implicit DS:[rDI]) are also built here by
//! hand, with all-zero and all-one masks and destinations across the mapping's ends
//! more often than the generator makes them.
#![cfg(all(target_os = "linux", target_arch = "x86_64", feature = "emu"))]

mod common;

use common::{cases, check, codes_where, config, run_code_list, run_sequence_list};
use iced_x86::{Code, CpuidFeature as F, Decoder, DecoderOptions, Encoder, EncodingKind};
use iced_x86::{Instruction, Mnemonic as M, Register};
use opsvisor_oracle::gen::{build, random_state, supported, BuildCtx, Choices};
use opsvisor_oracle::{CODE_BASE, SCRATCH_BASE, SCRATCH_SIZE};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{TestError, TestRunner};

/// Floating-point arithmetic, conversions and MXCSR access: owned by the SSE
/// floating-point family.
fn is_fp_arith(m: M) -> bool {
    matches!(
        m,
        M::Addps
            | M::Addss
            | M::Addpd
            | M::Addsd
            | M::Subps
            | M::Subss
            | M::Subpd
            | M::Subsd
            | M::Mulps
            | M::Mulss
            | M::Mulpd
            | M::Mulsd
            | M::Divps
            | M::Divss
            | M::Divpd
            | M::Divsd
            | M::Sqrtps
            | M::Sqrtss
            | M::Sqrtpd
            | M::Sqrtsd
            | M::Minps
            | M::Minss
            | M::Minpd
            | M::Minsd
            | M::Maxps
            | M::Maxss
            | M::Maxpd
            | M::Maxsd
            | M::Rcpps
            | M::Rcpss
            | M::Rsqrtps
            | M::Rsqrtss
            | M::Cmpps
            | M::Cmpss
            | M::Cmppd
            | M::Cmpsd
            | M::Comiss
            | M::Comisd
            | M::Ucomiss
            | M::Ucomisd
            | M::Addsubps
            | M::Addsubpd
            | M::Haddps
            | M::Haddpd
            | M::Hsubps
            | M::Hsubpd
            | M::Roundps
            | M::Roundpd
            | M::Roundss
            | M::Roundsd
            | M::Dpps
            | M::Dppd
            | M::Ldmxcsr
            | M::Stmxcsr
    ) || format!("{m:?}").starts_with("Cvt")
}

/// Whether `code` belongs to the integer/data-movement SIMD family.
fn in_scope(code: Code) -> bool {
    const FEATURES: [F; 7] = [
        F::MMX,
        F::SSE,
        F::SSE2,
        F::SSE3,
        F::SSSE3,
        F::SSE4_1,
        F::SSE4_2,
    ];
    let f = code.cpuid_features();
    let m = code.mnemonic();
    code.encoding() == EncodingKind::Legacy
        && !f.is_empty()
        && f.iter().all(|x| FEATURES.contains(x))
        && !is_fp_arith(m)
        && !matches!(
            m,
            M::Crc32
                | M::Popcnt
                | M::Lfence
                | M::Mfence
                | M::Sfence
                | M::Prefetch
                | M::Prefetchw
                | M::Prefetchnta
                | M::Prefetcht0
                | M::Prefetcht1
                | M::Prefetcht2
                | M::Clflush
                | M::Monitor
                | M::Mwait
        )
}

fn is_move(m: M) -> bool {
    let name = format!("{m:?}");
    name.starts_with("Mov") || matches!(m, M::Lddqu | M::Pmovmskb | M::Emms)
}

fn is_string_compare(m: M) -> bool {
    matches!(
        m,
        M::Pcmpestri | M::Pcmpestri64 | M::Pcmpestrm | M::Pcmpestrm64 | M::Pcmpistri | M::Pcmpistrm
    )
}

fn is_arith(m: M) -> bool {
    let name = format!("{m:?}");
    [
        "Padd", "Psub", "Pmul", "Pmadd", "Pavg", "Pmin", "Pmax", "Pabs", "Psign", "Phadd", "Phsub",
        "Psad",
    ]
    .iter()
    .any(|p| name.starts_with(p))
        || matches!(m, M::Mpsadbw | M::Phminposuw)
}

/// Codes also hand-tested below.
const HAND_TESTED: [Code; 2] = [Code::Maskmovq_rDI_mm_mm, Code::Maskmovdqu_rDI_xmm_xmm];

/// Every in-scope Code is either generated or hand-tested, and the emulator implements
/// all of them (none falls through to the counted #UD).
#[test]
fn scope_is_covered_and_implemented() {
    let scope: Vec<Code> = Code::values().filter(|c| in_scope(*c)).collect();
    let words: Vec<u64> = (0..64u64)
        .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .collect();
    let mut generated = 0;
    let mut missing = Vec::new();
    for &code in &scope {
        let bytes = if supported(code) {
            generated += 1;
            // Some choices do not encode: try a few word streams.
            (0..16u64).find_map(|k| {
                let w: Vec<u64> = words.iter().map(|x| x.rotate_left(k as u32)).collect();
                let mut ch = Choices::new(&w);
                let mut state = random_state(&mut ch);
                build(code, &mut ch, &BuildCtx::default(), &mut state)
            })
        } else if HAND_TESTED.contains(&code) {
            Some(maskmov_bytes(
                code == Code::Maskmovdqu_rDI_xmm_xmm,
                1,
                2,
                64,
            ))
        } else {
            None
        };
        let Some(bytes) = bytes else {
            missing.push(format!("{code:?}: neither generated nor hand-tested"));
            continue;
        };
        let i = Decoder::with_ip(64, &bytes, CODE_BASE, DecoderOptions::NONE).decode();
        assert_eq!(i.code(), code);
        if !opsvisor_emu::exec::is_implemented(&i, 64) {
            missing.push(format!("{code:?}: not implemented"));
        }
    }
    eprintln!(
        "simd scope: {} Codes, {generated} generated, {} also hand-tested",
        scope.len(),
        HAND_TESTED.len()
    );
    assert!(missing.is_empty(), "{}", missing.join("\n"));
    assert_eq!(scope.len(), 303, "the scope changed: update the report");
}

fn group(pred: impl Fn(M) -> bool) -> Vec<Code> {
    codes_where(|c| in_scope(c) && pred(c.mnemonic()))
}

#[test]
fn moves() {
    run_code_list("simd moves", group(is_move));
}

#[test]
fn integer_arithmetic() {
    run_code_list("simd arithmetic", group(is_arith));
}

#[test]
fn string_compares() {
    run_code_list("simd string compares", group(is_string_compare));
}

#[test]
fn logic_shifts_shuffles_packs_compares_blends_inserts() {
    run_code_list(
        "simd other",
        group(|m| !is_move(m) && !is_arith(m) && !is_string_compare(m)),
    );
}

/// Sequences mixing MMX and XMM instructions, moves between the register files, EMMS:
/// the MMX state transitions and register aliasing carry across instructions.
#[test]
fn sequences() {
    run_sequence_list("simd", group(|_| true));
}

/// MASKMOVQ/MASKMOVDQU with `rdi`-relative (or `edi` with `a32`) bytes.
fn maskmov_bytes(xmm: bool, data: usize, mask: usize, address_size: u32) -> Vec<u8> {
    let first = if xmm { Register::XMM0 } else { Register::MM0 };
    let reg = |n: usize| Register::values().nth(first as usize + n).unwrap_or(first);
    let i = if xmm {
        Instruction::with_maskmovdqu(address_size, reg(data), reg(mask), Register::None)
    } else {
        Instruction::with_maskmovq(address_size, reg(data), reg(mask), Register::None)
    }
    .expect("maskmov");
    let mut e = Encoder::new(64);
    e.encode(&i, CODE_BASE).expect("encode maskmov");
    e.take_buffer()
}

fn run_maskmov(xmm: bool) {
    let cases = cases();
    let mut runner = TestRunner::new(config(0x3a5c_0000 + u64::from(xmm), cases));
    let result = runner.run(&vec(any::<u64>(), 48), |words| {
        let mut ch = Choices::new(&words);
        let mut state = random_state(&mut ch);
        let regs = if xmm { 16 } else { 8 };
        let data = ch.below(regs) as usize;
        let mask = ch.below(regs) as usize;
        let a32 = ch.below(4) == 0;
        // Mostly inside the scratch area, sometimes across its end or before it.
        let w = if xmm { 16 } else { 8 };
        let off = match ch.below(8) {
            0 => SCRATCH_SIZE as u64 - w + 1 + ch.below(w),
            1 => 0u64.wrapping_sub(1 + ch.below(w)),
            _ => ch.below(SCRATCH_SIZE as u64 - w + 1),
        };
        let mut rdi = SCRATCH_BASE.wrapping_add(off);
        if a32 {
            // Garbage above bit 31 that the 32-bit address size must drop.
            rdi = (rdi & 0xffff_ffff) | (ch.word() << 32);
        }
        state.gpr[7] = rdi;
        // Masks: random bytes, all zero or all ones now and then.
        match ch.below(8) {
            0 => set_vec(&mut state, xmm, mask, 0),
            1 => set_vec(&mut state, xmm, mask, u128::MAX),
            _ => {}
        }
        let bytes = maskmov_bytes(xmm, data, mask, if a32 { 32 } else { 64 });
        check(&bytes, &state)
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, _)) => panic!("maskmov (xmm {xmm}): {why}"),
        Err(TestError::Abort(why)) => panic!("maskmov (xmm {xmm}): aborted: {why}"),
    }
}

/// Put `v` in XMM `n` or MMX `n` (as the x87 register MMX `n` aliases, exponent all ones).
fn set_vec(s: &mut opsvisor_oracle::State, xmm: bool, n: usize, v: u128) {
    if xmm {
        s.xmm[n] = v;
    } else {
        // The state stores the x87 registers in stack order; MMX n is physical n.
        let top = usize::from((s.x87.fsw >> 11) & 7);
        let i = (n + 8 - top) % 8;
        s.x87.st[i] = (v & u128::from(u64::MAX)) | (0xffffu128 << 64);
    }
}

#[test]
fn maskmovq() {
    run_maskmov(false);
}

#[test]
fn maskmovdqu() {
    run_maskmov(true);
}
