//! Mismatches the SIMD differential tests (tests/differential_simd.rs) found between the
//! emulator and the host CPU (an AMD EPYC when they were recorded), one test per bug
//! class with the exact bytes and state. Each checks the host's behaviour first, so a
//! test that starts failing on the host side points at a vendor difference rather than
//! the emulator.
#![cfg(all(target_os = "linux", target_arch = "x86_64", feature = "emu"))]

use opsvisor_oracle::compare::differential;
use opsvisor_oracle::emu_runner::EmuRunner;
use opsvisor_oracle::{run, End, Exception, State, SCRATCH_BASE};

const RDI: usize = 7;

/// A state with the x87 stack part full and TOP = 5, so entering or leaving MMX state
/// shows in FSW and the tag word.
fn state() -> State {
    let mut s = State::new();
    for (i, b) in s.scratch.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37).wrapping_add(11);
    }
    s.x87.fsw = 5 << 11;
    s.x87.ftw = 0b1110_0000;
    for (i, st) in s.x87.st.iter_mut().enumerate() {
        *st = 0x3fff_8000_0000_0000_0000 + i as u128;
    }
    s
}

/// Put `v` in MMX register `n`: physical x87 register `n`, which the state keeps in
/// stack order.
fn set_mm(s: &mut State, n: usize, v: u64) {
    let top = usize::from((s.x87.fsw >> 11) & 7);
    s.x87.st[(n + 8 - top) % 8] = u128::from(v) | (0xffff << 64);
}

fn check(code: &[u8], s: &State) {
    let mut emu = EmuRunner::new().expect("emulator runner");
    if let Err(diff) = differential(&mut emu, code, s) {
        panic!("emulator and host differ:\n{diff}");
    }
}

/// EMMS tags every register empty and also sets TOP to 0 (the emulator kept TOP).
#[test]
fn emms_clears_top() {
    let s = state();
    let code = [0x0f, 0x77];
    let native = run(&code, &s).expect("oracle");
    assert_eq!(native.end, End::Completed);
    assert_eq!(native.state.x87.fsw & (7 << 11), 0);
    assert_eq!(native.state.x87.ftw, 0);
    check(&code, &s);
}

/// MASKMOVQ whose destination starts 3 bytes before the mapping, with only the last
/// (mapped) byte selected by the mask: the host faults at rDI although the masked-off
/// bytes are the only ones outside the mapping (the emulator checked and stored only the
/// selected bytes and completed).
#[test]
fn maskmovq_checks_the_whole_destination() {
    let mut s = state();
    s.gpr[RDI] = SCRATCH_BASE - 3;
    set_mm(&mut s, 1, 0xa4a3_a2a1_a0af_aeadu64);
    set_mm(&mut s, 2, 0x8000_0000_0000_0000);
    // maskmovq mm1, mm2
    let code = [0x0f, 0xf7, 0xca];
    let native = run(&code, &s).expect("oracle");
    assert_eq!(
        native.end,
        End::Exception(Exception {
            vector: 14,
            error_code: Some(6),
            address: Some(SCRATCH_BASE - 3)
        })
    );
    check(&code, &s);
}

/// MASKMOVQ that faults still puts the x87 stack in MMX state (TOP 0, all tags valid),
/// unlike the MMX loads, whose faulting source leaves the x87 state alone; the same
/// state with MOVQ mm1, [rdi] is checked as the counterpart.
#[test]
fn maskmovq_fault_enters_mmx_state() {
    let mut s = state();
    s.gpr[RDI] = SCRATCH_BASE - 8;
    set_mm(&mut s, 2, u64::MAX);
    let code = [0x0f, 0xf7, 0xca];
    let native = run(&code, &s).expect("oracle");
    assert!(matches!(native.end, End::Exception(e) if e.vector == 14));
    assert_eq!(native.state.x87.fsw & (7 << 11), 0);
    assert_eq!(native.state.x87.ftw, 0xff);
    check(&code, &s);
    // movq mm1, [rdi]
    let load = [0x0f, 0x6f, 0x0f];
    let native = run(&load, &s).expect("oracle");
    assert!(matches!(native.end, End::Exception(e) if e.vector == 14));
    assert_eq!(native.state.x87.fsw, s.x87.fsw);
    assert_eq!(native.state.x87.ftw, s.x87.ftw);
    check(&load, &s);
}
