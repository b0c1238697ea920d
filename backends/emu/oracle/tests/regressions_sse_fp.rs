//! Mismatches of the SSE floating-point instructions the differential tests (and the
//! softfloat unit tests against the host) found, one test each with the exact bytes and
//! state, kept after the fix. Each checks the host's behaviour first, so a failure on the
//! host side points at a vendor difference rather than the emulator.
#![cfg(all(target_os = "linux", target_arch = "x86_64", feature = "emu"))]

use opsvisor_oracle::compare::differential;
use opsvisor_oracle::emu_runner::EmuRunner;
use opsvisor_oracle::{run, End, Exception, State};

const XM: u8 = 19;

fn check(code: &[u8], s: &State) {
    let mut emu = EmuRunner::new().expect("emulator runner");
    if let Err(diff) = differential(&mut emu, code, s) {
        panic!("emulator and host differ:\n{diff}");
    }
}

fn with(xmm0: u128, xmm1: u128, mxcsr: u32) -> State {
    let mut s = State::new();
    s.xmm[0] = xmm0;
    s.xmm[1] = xmm1;
    s.mxcsr = mxcsr;
    s
}

fn xm() -> End {
    End::Exception(Exception {
        vector: XM,
        error_code: None,
        address: None,
    })
}

/// An unmasked underflow traps with UE alone when the product is exact at full
/// precision, although delivering it as a denormal would have been inexact: PE follows
/// the unbounded-exponent result, not the masked one.
#[test]
fn unmasked_underflow_reports_pe_of_the_unbounded_result() {
    // 2^-100 * (1 + 2^-23) times 2^-40, UM clear.
    let s = with(0x0d80_0001, 0x2b80_0000, 0x1780);
    let code = [0xf3, 0x0f, 0x59, 0xc1]; // mulss xmm0, xmm1
    let native = run(&code, &s).expect("oracle");
    assert_eq!(native.end, xm());
    assert_eq!(native.state.mxcsr & 0x3f, 0x10);
    check(&code, &s);
}

/// The same for an unmasked overflow: the doubled largest single is exact with an
/// unbounded exponent, so OE comes without PE.
#[test]
fn unmasked_overflow_reports_pe_of_the_unbounded_result() {
    let s = with(0x7f7f_ffff, 0x7f7f_ffff, 0x1b80);
    let code = [0xf3, 0x0f, 0x58, 0xc1]; // addss xmm0, xmm1
    let native = run(&code, &s).expect("oracle");
    assert_eq!(native.end, xm());
    assert_eq!(native.state.mxcsr & 0x3f, 0x08);
    check(&code, &s);
}

/// DPPS multiplies and adds in two stages: the products' flags are recorded, then a
/// denormal product raises DE as an operand of the additions (unmasked here).
#[test]
fn dpps_denormal_product_raises_de_in_the_add_stage() {
    let s = with(0x16cb_7bf4 << 64, 0x0e4a_a25f << 64, 0x5a80);
    let code = [0x66, 0x0f, 0x3a, 0x40, 0xc1, 0x40]; // dpps xmm0, xmm1, 0x40
    let native = run(&code, &s).expect("oracle");
    assert_eq!(native.end, xm());
    assert_eq!(native.state.mxcsr & 0x3f, 0x32);
    check(&code, &s);
}

/// A denormal divided by zero raises ZE alone: divide-by-zero outranks the denormal
/// operand.
#[test]
fn denormal_divided_by_zero_raises_only_ze() {
    let s = with(1, 0, 0x1f80);
    let code = [0xf3, 0x0f, 0x5e, 0xc1]; // divss xmm0, xmm1
    let native = run(&code, &s).expect("oracle");
    assert_eq!(native.state.mxcsr & 0x3f, 0x04);
    check(&code, &s);
}

/// The square root of a negative denormal is invalid without DE.
#[test]
fn sqrt_of_negative_denormal_raises_only_ie() {
    let s = with(0, 0x8000_0001, 0x1f80);
    let code = [0xf3, 0x0f, 0x51, 0xc1]; // sqrtss xmm0, xmm1
    let native = run(&code, &s).expect("oracle");
    assert_eq!(native.state.mxcsr & 0x3f, 0x01);
    check(&code, &s);
}
