//! x87 mismatches the differential tests found between the emulator and the host CPU
//! (an AMD EPYC when they were recorded), one test per bug class with the exact bytes and
//! state (see tests/regressions.rs). Each checks the host's behaviour first, so a test
//! that starts failing on the host side points at a vendor difference (several of these
//! are AMD behaviours the SDM leaves undefined), not the emulator.
#![cfg(all(target_os = "linux", target_arch = "x86_64", feature = "emu"))]

use opsvisor_oracle::compare::differential;
use opsvisor_oracle::emu_runner::EmuRunner;
use opsvisor_oracle::{run, End, Exception, Outcome, State, SCRATCH_BASE, SCRATCH_SIZE};

const RBX: usize = 3;

// Status word bits.
const IE: u16 = 1;
const DE: u16 = 2;
const ZE: u16 = 4;
const OE: u16 = 8;
const UE: u16 = 0x10;
const PE: u16 = 0x20;
const SF: u16 = 0x40;
const ES: u16 = 0x80;
const C0: u16 = 0x100;
const C1: u16 = 0x200;
const C2: u16 = 0x400;
const C3: u16 = 0x4000;
const B: u16 = 0x8000;
const FLAGS: u16 = 0x3f;
const TOP: u16 = 7 << 11;

// Double-extended values.
const ONE: u128 = 0x3fff_8000_0000_0000_0000;
const TWO: u128 = 0x4000_8000_0000_0000_0000;
const QNAN: u128 = 0x7fff_c000_0000_0000_0000;
const INDEFINITE: u128 = 0xffff_c000_0000_0000_0000;
const NEG_INF: u128 = 0xffff_8000_0000_0000_0000;
const DENORMAL: u128 = 0x0000_5c3f_42f8_30e5_7a06;
const HUGE: u128 = 0x7000_8000_0000_0000_0000;

/// A state with TOP = 0 (so ST(i) is physical register i), the registers `st` in
/// ST(0), ST(1), ... (the rest empty unless `ftw` says otherwise) and RBX pointing
/// into the scratch area at `rbx_off`.
fn fpu(fcw: u16, fsw: u16, ftw: u8, st: &[u128], rbx_off: u64) -> State {
    let mut s = State::new();
    for (i, b) in s.scratch.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37).wrapping_add(11);
    }
    s.x87.fcw = fcw;
    s.x87.fsw = fsw;
    s.x87.ftw = ftw;
    for (i, v) in st.iter().enumerate() {
        s.x87.st[i] = *v;
    }
    s.gpr[RBX] = SCRATCH_BASE.wrapping_add(rbx_off);
    s
}

fn native(code: &[u8], s: &State) -> Outcome {
    run(code, s).expect("oracle")
}

fn check(code: &[u8], s: &State) {
    let mut emu = EmuRunner::new().expect("emulator runner");
    if let Err(diff) = differential(&mut emu, code, s) {
        panic!("emulator and host differ:\n{diff}");
    }
}

fn pf(address: u64, write: bool) -> End {
    End::Exception(Exception {
        vector: 14,
        error_code: Some(if write { 6 } else { 4 }),
        address: Some(address),
    })
}

const PAGE_END: u64 = SCRATCH_SIZE as u64;

#[test]
fn store_checks_destination_before_stack_underflow() {
    // fst dword [rbx] from an empty ST(0), IE unmasked, RBX in the missing page after
    // the scratch area: #PF, and the status word keeps no trace of the underflow.
    let s = fpu(0x037e, 0, 0, &[], PAGE_END);
    let code = [0xd9, 0x13];
    let n = native(&code, &s);
    assert_eq!(n.end, pf(SCRATCH_BASE + PAGE_END, true));
    assert_eq!(n.state.x87.fsw, 0);
    check(&code, &s);
    // fistp qword [rbx] crossing into the missing page: the page start is reported.
    let s = fpu(0x037f, 0, 1, &[ONE], PAGE_END - 4);
    let code = [0xdf, 0x3b];
    assert_eq!(native(&code, &s).end, pf(SCRATCH_BASE + PAGE_END, true));
    check(&code, &s);
}

#[test]
fn unmasked_store_overflow_reports_neither_precision_nor_c1() {
    // fst qword [rbx] of a value too large for binary64, OE unmasked: nothing stored,
    // OE and ES, no PE, C1 clear.
    let s = fpu(0x0377, 0, 1, &[HUGE | 0x1234], 0x100);
    let code = [0xdd, 0x13];
    let n = native(&code, &s);
    assert_eq!(n.state.x87.fsw & (FLAGS | C1 | ES), OE | ES);
    assert_eq!(n.state.scratch, s.scratch);
    check(&code, &s);
}

#[test]
fn fstpnce_from_empty_st0_only_pops() {
    // fstpnce st(4) (d9 dc) from an empty ST(0): no IE, no SF; TOP + 1.
    let s = fpu(
        0x037f,
        0,
        0xfe,
        &[QNAN, ONE, ONE, ONE, NEG_INF, ONE, ONE, ONE],
        0,
    );
    let code = [0xd9, 0xdc];
    let n = native(&code, &s);
    assert_eq!(n.state.x87.fsw, 1 << 11);
    assert_eq!(n.state.x87.ftw, 0xfe);
    check(&code, &s);
}

#[test]
fn compare_underflow_with_ie_unmasked_reports_unordered() {
    // fcomp st(7) with ST(7) empty, IE unmasked: C3 C2 C0 set, no pop.
    let s = fpu(0x037e, 0, 0x7f, &[ONE; 7], 0);
    let code = [0xd8, 0xdf];
    let n = native(&code, &s);
    assert_eq!(n.state.x87.fsw, B | C3 | C2 | C0 | ES | SF | IE);
    check(&code, &s);
}

#[test]
fn compares_set_codes_with_ie_unmasked() {
    // fcomp st(1) with a quiet NaN, IE unmasked: unordered, the pop suppressed.
    let s = fpu(0x037e, 0, 3, &[QNAN, ONE], 0);
    let code = [0xd8, 0xd9];
    let n = native(&code, &s);
    assert_eq!(n.state.x87.fsw, B | C3 | C2 | C0 | ES | IE);
    check(&code, &s);
    // fcomi st, st(1): EFLAGS unordered too.
    let code = [0xdb, 0xf1];
    assert_eq!(native(&code, &s).state.rflags & 0x45, 0x45);
    check(&code, &s);
}

#[test]
fn fcomi_and_fcmov_leave_c1() {
    // fxam of a negative value sets C1; fcomi st, st(1) and fcmovb st, st(1) leave it.
    let s = fpu(0x037f, 0, 3, &[NEG_INF, ONE], 0);
    for code in [[0xd9, 0xe5, 0xdb, 0xf1], [0xd9, 0xe5, 0xda, 0xc1]] {
        let n = native(&code, &s);
        assert_ne!(n.state.x87.fsw & C1, 0);
        check(&code, &s);
    }
}

#[test]
fn ffree_clears_c1() {
    let s = fpu(0x037f, C1, 0xff, &[ONE; 8], 0);
    for code in [[0xdd, 0xc3], [0xdf, 0xc3]] {
        assert_eq!(native(&code, &s).state.x87.fsw & C1, 0);
        check(&code, &s);
    }
}

#[test]
fn fld_empty_source_on_full_stack_is_underflow() {
    // fld st(6) with ST(6) empty and ST(7) full: underflow (C1 clear), the indefinite
    // pushed.
    let mut st = [ONE; 8];
    st[6] = 0;
    let s = fpu(0x037f, 0, 0xbf, &st, 0);
    let code = [0xd9, 0xc6];
    let n = native(&code, &s);
    assert_eq!(n.state.x87.fsw, (7 << 11) | SF | IE);
    assert_eq!(n.state.x87.st[0], INDEFINITE);
    check(&code, &s);
}

#[test]
fn fxtract_underflow_pushes_indefinite_on_full_stack() {
    let s = fpu(0x037f, 0, 0xfe, &[0, ONE, ONE, ONE, ONE, ONE, ONE, ONE], 0);
    let code = [0xd9, 0xf4];
    let n = native(&code, &s);
    assert_eq!(n.state.x87.fsw & TOP, 7 << 11);
    assert_eq!(n.state.x87.st[0..2], [INDEFINITE, INDEFINITE]);
    check(&code, &s);
}

#[test]
fn memory_snan_against_register_qnan_gives_the_qnan() {
    // fsubr st, dword [rbx]: ST(0) a quiet NaN, the memory operand a signaling NaN with
    // a larger payload: IE, and the result is ST(0)'s quiet NaN.
    let mut s = fpu(0x037f, 0, 1, &[QNAN], 0x100);
    s.scratch[0x100..0x104].copy_from_slice(&0xff91_7180u32.to_le_bytes());
    let code = [0xd8, 0x2b];
    let n = native(&code, &s);
    assert_eq!(n.state.x87.st[0], QNAN);
    assert_eq!(n.state.x87.fsw & FLAGS, IE);
    check(&code, &s);
}

#[test]
fn unmasked_underflow_of_denormal_square_is_bias_adjusted() {
    // fmul st, st(0) of a denormal, UE unmasked: the exact square scaled by 2^24576.
    let s = fpu(0x036f, 0, 1, &[DENORMAL], 0);
    let code = [0xd8, 0xc8];
    let n = native(&code, &s);
    assert_eq!(n.state.x87.st[0], 0x2002_84f6_1f11_ab47_a9ee);
    check(&code, &s);
}

#[test]
fn unmasked_underflow_reports_precision_only_if_adjusted_result_is_inexact() {
    // fsub st, st(1): 2^-16382 - 2^-16382 * (1 + 2^-60), exact once adjusted.
    let a = 0x0001_8000_0000_0000_0000u128;
    let s = fpu(0x036f, 0, 3, &[a, a | 0x10], 0);
    let code = [0xd8, 0xe1];
    let n = native(&code, &s);
    assert_eq!(n.state.x87.fsw & (FLAGS | ES), UE | ES);
    check(&code, &s);
}

#[test]
fn division_by_zero_reports_no_denormal() {
    // fdivr st, st(1): denormal / 0.
    let s = fpu(0x037f, 0, 3, &[0, DENORMAL], 0);
    let code = [0xd8, 0xf9];
    let n = native(&code, &s);
    assert_eq!(n.state.x87.fsw & FLAGS, ZE);
    check(&code, &s);
}

#[test]
fn fprem_without_quotient_keeps_c0_and_c3() {
    // A NaN operand, an empty ST(1), or an unmasked denormal: C1 and C2 cleared, C0 and
    // C3 as they were.
    let all = C0 | C1 | C2 | C3;
    let cases = [
        fpu(0x037f, all, 3, &[INDEFINITE, NEG_INF], 0),
        fpu(0x037f, all, 1, &[ONE], 0),
        fpu(0x037d, all, 3, &[TWO, DENORMAL], 0),
    ];
    for s in &cases {
        for code in [[0xd9, 0xf8], [0xd9, 0xf5]] {
            let n = native(&code, s);
            assert_eq!(n.state.x87.fsw & all, C0 | C3);
            check(&code, s);
        }
    }
}

#[test]
fn fprem_denormal_result_with_ue_unmasked_is_bias_adjusted() {
    // fprem1 of a denormal by -infinity: ST(0) is the result, raised by 2^24576.
    let s = fpu(0x036f, 0, 3, &[DENORMAL, NEG_INF], 0);
    let code = [0xd9, 0xf5];
    let n = native(&code, &s);
    assert_eq!(n.state.x87.fsw & (UE | ES), UE | ES);
    assert_eq!(n.state.x87.st[0] >> 64, 0x6000);
    check(&code, &s);
}

#[test]
fn incomplete_fprem_reports_c2_alone() {
    // 2^100 rem 3: the exponent difference is over 63, so the reduction is partial.
    let big = 0x4063_8000_0000_0000_0000u128;
    let three = 0x4000_c000_0000_0000_0000u128;
    let s = fpu(0x037f, C0 | C1 | C3, 3, &[big, three], 0);
    let code = [0xd9, 0xf8];
    assert_eq!(native(&code, &s).state.x87.fsw & (C0 | C1 | C2 | C3), C2);
    check(&code, &s);
}

#[test]
fn fscale_far_out_of_range_with_oe_unmasked_gives_infinity() {
    // fscale of 1 by 2^40, OE unmasked and rounding toward zero: too large even for the
    // bias-adjusted result: infinity, OE PE and C1.
    let s = fpu(0x0f77, 0, 3, &[ONE, 0x4027_8000_0000_0000_0000], 0);
    let code = [0xd9, 0xfd];
    let n = native(&code, &s);
    assert_eq!(n.state.x87.st[0], 0x7fff_8000_0000_0000_0000);
    assert_eq!(n.state.x87.fsw & (FLAGS | C1), OE | PE | C1);
    check(&code, &s);
    // A scale count beyond the i32 range must not overflow in the emulator.
    let s = fpu(0x037f, 0, 3, &[ONE, 0x403f_8000_0000_0000_0000], 0);
    check(&code, &s);
}

#[test]
fn environment_fault_address_is_the_last_byte_when_crossing() {
    // fnstenv [rbx] (28 bytes) from 4 bytes before the missing page: the first dword
    // fits, so the #PF reports the image's last byte; fldenv likewise.
    let s = fpu(0x037f, 0, 1, &[ONE], PAGE_END - 4);
    let code = [0xd9, 0x33];
    assert_eq!(
        native(&code, &s).end,
        pf(SCRATCH_BASE + PAGE_END + 23, true)
    );
    check(&code, &s);
    let code = [0xd9, 0x23];
    assert_eq!(
        native(&code, &s).end,
        pf(SCRATCH_BASE + PAGE_END + 23, false)
    );
    check(&code, &s);
    // The 14-byte form from one byte before: its first word crosses: the page start.
    let s = fpu(0x037f, 0, 1, &[ONE], PAGE_END - 1);
    let code = [0x66, 0xd9, 0x33];
    assert_eq!(native(&code, &s).end, pf(SCRATCH_BASE + PAGE_END, true));
    check(&code, &s);
    // fxrstor [rbx] with the whole image in the missing page: its last byte.
    let s = fpu(0x037f, 0, 1, &[ONE], PAGE_END + 0x20);
    let code = [0x0f, 0xae, 0x0b];
    assert_eq!(
        native(&code, &s).end,
        pf(SCRATCH_BASE + PAGE_END + 0x21f, false)
    );
    check(&code, &s);
}

#[test]
fn fsin_reduces_with_the_66_bit_pi() {
    // fsin of pi_80 * 2^61: reduced by the 66-bit pi, not the exact one.
    let s = fpu(0x037f, 0, 1, &[0x403d_c90f_daa2_2168_c235], 0);
    let code = [0xd9, 0xfe];
    let n = native(&code, &s);
    assert_eq!(n.state.x87.st[0], 0x3ffb_ff55_7774_3771_ae50);
    check(&code, &s);
}

#[test]
fn fsin_of_denormal_with_ue_unmasked_is_bias_adjusted() {
    let s = fpu(0x0742, 0, 1, &[0x0000_2be4_d057_3b08_65c9], 0);
    let code = [0xd9, 0xfe];
    let n = native(&code, &s);
    assert_eq!(n.state.x87.st[0] >> 64, 0x5fff);
    check(&code, &s);
    // fcos of a denormal is 1: no underflow.
    let s = fpu(0x037f, 0, 1, &[DENORMAL], 0);
    let code = [0xd9, 0xff];
    assert_eq!(native(&code, &s).state.x87.fsw & FLAGS, DE | PE);
    check(&code, &s);
}

#[test]
fn transcendental_out_of_domain_results() {
    // f2xm1 of 3 leaves it (PE); of -1 gives -1/2.
    for (v, r) in [
        (
            0x4000_c000_0000_0000_0000u128,
            0x4000_c000_0000_0000_0000u128,
        ),
        (0xbfff_8000_0000_0000_0000, 0xbffe_8000_0000_0000_0000),
    ] {
        let s = fpu(0x037f, 0, 1, &[v], 0);
        let code = [0xd9, 0xf0];
        let n = native(&code, &s);
        assert_eq!(n.state.x87.st[0], r);
        assert_eq!(n.state.x87.fsw & FLAGS, PE);
        check(&code, &s);
    }
    // fyl2xp1 with x <= -1 returns x (PE only); with y = 0 the signed zero; with x = -inf IE.
    let code = [0xd9, 0xf9];
    let s = fpu(0x037f, 0, 3, &[0xc000_8000_0000_0000_0000, TWO], 0);
    let n = native(&code, &s);
    assert_eq!(n.state.x87.st[0], 0xc000_8000_0000_0000_0000);
    check(&code, &s);
    let s = fpu(0x037f, 0, 3, &[0xc000_8000_0000_0000_0000, 0], 0);
    assert_eq!(native(&code, &s).state.x87.st[0], 1 << 79);
    check(&code, &s);
    let s = fpu(0x037f, 0, 3, &[NEG_INF, ONE], 0);
    assert_eq!(native(&code, &s).state.x87.st[0], INDEFINITE);
    check(&code, &s);
}

#[test]
fn fyl2x_of_zero_reports_zero_divide_not_denormal() {
    let s = fpu(0x037f, 0, 3, &[0, DENORMAL], 0);
    let code = [0xd9, 0xf1];
    assert_eq!(native(&code, &s).state.x87.fsw & FLAGS, ZE);
    check(&code, &s);
}

#[test]
fn denormal_is_loaded_with_de_unmasked() {
    // fld dword [rbx] of a binary32 denormal, DE unmasked: loaded, DE and ES.
    let mut s = fpu(0x037d, 0, 0, &[], 0x100);
    s.scratch[0x100..0x104].copy_from_slice(&0x0000_1234u32.to_le_bytes());
    let code = [0xd9, 0x03];
    let n = native(&code, &s);
    assert_eq!(n.state.x87.fsw & (FLAGS | ES | TOP), DE | ES | (7 << 11));
    assert_eq!(n.state.x87.ftw, 0x80);
    check(&code, &s);
}

#[test]
fn unmasked_invalid_divide_or_denormal_reports_nothing_else() {
    // fdiv st, st(1): 1 / 0 with ZE unmasked: ZE alone (no PE), ST(0) unchanged.
    let s = fpu(0x037b, 0, 3, &[ONE, 0], 0);
    let code = [0xd8, 0xf1];
    let n = native(&code, &s);
    assert_eq!(n.state.x87.fsw & FLAGS, ZE);
    assert_eq!(n.state.x87.st[0], ONE);
    check(&code, &s);
}

#[test]
fn invalid_wins_over_denormal() {
    // fsqrt of a negative denormal: IE, no DE.
    let s = fpu(0x037f, 0, 1, &[DENORMAL | 1 << 79], 0);
    let code = [0xd9, 0xfa];
    assert_eq!(native(&code, &s).state.x87.fsw & FLAGS, IE);
    check(&code, &s);
}

#[test]
fn nan_operand_means_no_denormal() {
    // fadd st, st(1): a quiet NaN plus a denormal: no flags at all.
    let s = fpu(0x037f, 0, 3, &[QNAN, DENORMAL], 0);
    let code = [0xd8, 0xc1];
    assert_eq!(native(&code, &s).state.x87.fsw & FLAGS, 0);
    check(&code, &s);
}
