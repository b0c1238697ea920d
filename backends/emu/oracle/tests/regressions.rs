//! Mismatches the differential tests found between the emulator and the host CPU (an
//! AMD EPYC when they were recorded), one test each with the exact bytes and state, kept
//! after the fix so the bug stays fixed. Each checks the host's behaviour first, so a test
//! that starts failing on the host side points at a vendor difference, not the emulator
//! (CMPXCHG and MOVSXD follow AMD where Intel documents otherwise).
#![cfg(all(target_os = "linux", target_arch = "x86_64", feature = "emu"))]

use opsvisor_oracle::compare::differential;
use opsvisor_oracle::emu_runner::EmuRunner;
use opsvisor_oracle::{run, End, Exception, State, SCRATCH_BASE, SCRATCH_SIZE, ZF};

const RAX: usize = 0;
const RBX: usize = 3;
const RSI: usize = 6;
const R8: usize = 8;
const R9: usize = 9;
const R10: usize = 10;
const R11: usize = 11;
const R12: usize = 12;
const R13: usize = 13;
const R14: usize = 14;

fn state() -> State {
    let mut s = State::new();
    for (i, b) in s.scratch.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37).wrapping_add(11);
    }
    s
}

fn check(code: &[u8], s: &State) {
    let mut emu = EmuRunner::new().expect("emulator runner");
    if let Err(diff) = differential(&mut emu, code, s) {
        panic!("emulator and host differ:\n{diff}");
    }
}

#[test]
fn rmw_page_fault_reports_read() {
    let mut s = state();
    s.gpr[RBX] = SCRATCH_BASE + SCRATCH_SIZE as u64;
    // add [rbx], eax: the page after the scratch area is not present.
    let code = [0x01, 0x03];
    let native = run(&code, &s).expect("oracle");
    assert_eq!(
        native.end,
        End::Exception(Exception {
            vector: 14,
            error_code: Some(0x6),
            address: Some(SCRATCH_BASE + SCRATCH_SIZE as u64)
        })
    );
    check(&code, &s);
}

#[test]
fn bsf_bsr_32bit_zero_source_clears_upper_half() {
    let mut s = state();
    s.gpr[R8] = 0xffff_ffff_8000_0000;
    s.gpr[R11] = 0x1_0000_0000;
    for code in [[0x45, 0x0f, 0xbc, 0xc3], [0x45, 0x0f, 0xbd, 0xc3]] {
        // bsf r8d, r11d / bsr r8d, r11d: the low 32 bits of r11 are zero.
        let native = run(&code, &s).expect("oracle");
        assert_eq!(native.state.gpr[R8], s.gpr[R8]);
        assert_ne!(native.state.rflags & ZF, 0);
        check(&code, &s);
    }
}

#[test]
fn cmpxchg_32bit_register_failure_zero_extends_destination() {
    let mut s = state();
    s.gpr[RAX] = 0;
    s.gpr[R9] = 0xffff_ffff_8000_0000;
    // cmpxchg r9d, r15d: EAX (0) != R9D, so EAX := R9D and R9 is not written.
    let code = [0x45, 0x0f, 0xb1, 0xf9];
    let native = run(&code, &s).expect("oracle");
    assert_eq!(native.state.gpr[R9], s.gpr[R9]);
    assert_eq!(native.state.gpr[RAX], 0x8000_0000);
    check(&code, &s);
}

#[test]
fn xadd_same_register_keeps_old_value() {
    let mut s = state();
    s.gpr[R10] = 1;
    // xadd r10d, r10d: TEMP = 2; SRC = 1; DEST = TEMP, so r10 = 2.
    let code = [0x45, 0x0f, 0xc1, 0xd2];
    let native = run(&code, &s).expect("oracle");
    assert_eq!(native.state.gpr[R10], 2);
    check(&code, &s);
}

#[test]
fn crc32_is_not_implemented() {
    let mut s = state();
    s.gpr[R10] = 0x1234_5678;
    s.gpr[RSI] = 0xdead_beef_0bad_f00d;
    // crc32 r10, rsi
    let code = [0xf2, 0x4c, 0x0f, 0x38, 0xf1, 0xd6];
    let native = run(&code, &s).expect("oracle");
    assert_eq!(native.end, End::Completed);
    check(&code, &s);
}

#[test]
fn movbe_16bit_loads_and_stores_wrong_bytes() {
    let mut s = state();
    s.gpr[RBX] = SCRATCH_BASE + 0x100;
    s.gpr[R8] = 0x7f;
    // movbe r14w, [rbx]
    let load = [0x66, 0x44, 0x0f, 0x38, 0xf0, 0x33];
    let native = run(&load, &s).expect("oracle");
    let b = &s.scratch[0x100..0x102];
    assert_eq!(
        native.state.gpr[R14] & 0xffff,
        u64::from(u16::from_be_bytes([b[0], b[1]]))
    );
    check(&load, &s);
    // movbe [rbx], r8w
    let store = [0x66, 0x44, 0x0f, 0x38, 0xf1, 0x03];
    let native = run(&store, &s).expect("oracle");
    assert_eq!(&native.state.scratch[0x100..0x102], &[0x00, 0x7f]);
    check(&store, &s);
}

#[test]
fn bt_register_offset_ignores_32bit_address_wrap() {
    let mut s = state();
    s.gpr[R13] = 0x4_77ff_b800;
    // bt [0x71000900], r13 with a 0x67 prefix: 0x71000900 + (r13 >> 3) = 0x1_0000_0000,
    // which wraps to 0 with 32-bit addressing.
    let code = [0x67, 0x4c, 0x0f, 0xa3, 0x2c, 0x25, 0x00, 0x09, 0x00, 0x71];
    let native = run(&code, &s).expect("oracle");
    assert_eq!(
        native.end,
        End::Exception(Exception {
            vector: 14,
            error_code: Some(0x4),
            address: Some(0)
        })
    );
    check(&code, &s);
}

#[test]
fn movsxd_16bit_reads_only_two_bytes() {
    let mut s = state();
    s.gpr[RBX] = SCRATCH_BASE + SCRATCH_SIZE as u64 - 2;
    // movsxd r12w, [rbx]: the two bytes are inside the scratch area, the next two are not.
    let code = [0x66, 0x44, 0x63, 0x23];
    let native = run(&code, &s).expect("oracle");
    assert_eq!(
        native.end,
        End::Exception(Exception {
            vector: 14,
            error_code: Some(0x4),
            address: Some(SCRATCH_BASE + SCRATCH_SIZE as u64)
        })
    );
    assert_eq!(native.state.gpr[R12], s.gpr[R12]);
    check(&code, &s);
}

#[test]
fn string_32bit_address_size_zero_extends_rsi_rdi_rcx() {
    let mut s = state();
    // rep movsb [edi],[esi] with garbage in the upper halves: the 32-bit register
    // updates clear them (the emulator kept them).
    s.gpr[RSI] = 0xf705_adcc_0000_0000 | (SCRATCH_BASE + 0x100);
    s.gpr[7] = 0x4171_6551_0000_0000 | (SCRATCH_BASE + 0x800);
    s.gpr[1] = 0xb954_c16f_0000_0003;
    let code = [0x67, 0xf3, 0xa4];
    let native = run(&code, &s).expect("oracle");
    assert_eq!(native.state.gpr[1], 0);
    assert_eq!(native.state.gpr[RSI], SCRATCH_BASE + 0x103);
    check(&code, &s);
}

#[test]
fn bound_out_of_range_raises_br_in_compatibility_mode() {
    let mut s = state();
    s.bits = 32;
    // bound eax, [ebx]: bounds 0x10..=0x20 at the start of scratch, index 0x21.
    s.gpr[RBX] = SCRATCH_BASE;
    s.scratch[0..8].copy_from_slice(&[0x10, 0, 0, 0, 0x20, 0, 0, 0]);
    s.gpr[RAX] = 0x21;
    let code = [0x62, 0x03];
    let native = run(&code, &s).expect("oracle");
    assert_eq!(
        native.end,
        End::Exception(Exception {
            vector: 5,
            error_code: None,
            address: None
        })
    );
    check(&code, &s);
    s.gpr[RAX] = 0x20;
    check(&code, &s);
}

#[test]
fn enter_new_stack_top_faults_as_a_write() {
    let mut s = state();
    s.gpr[5] = SCRATCH_BASE + 0xb30;
    // enter 0FFF8h, 2: the new stack top is 64 KiB below the scratch area.
    let code = [0xc8, 0xf8, 0xff, 0x02];
    let native = run(&code, &s).expect("oracle");
    match native.end {
        End::Exception(e) => assert_eq!((e.vector, e.error_code), (14, Some(6))),
        End::Completed => panic!("expected a #PF"),
    }
    check(&code, &s);
}

#[test]
fn alignment_check_covers_cmpxchg8b_as_one_8_byte_access() {
    let mut s = state();
    s.rflags |= opsvisor_oracle::AC;
    s.gpr[RBX] = SCRATCH_BASE + 0x594;
    // cmpxchg8b [rbx]: 4-byte aligned, not 8-byte aligned.
    let code = [0x0f, 0xc7, 0x0b];
    let native = run(&code, &s).expect("oracle");
    assert_eq!(
        native.end,
        End::Exception(Exception {
            vector: 17,
            error_code: Some(0),
            address: None
        })
    );
    check(&code, &s);
}

#[test]
fn alignment_check_covers_enter_stack_top_probe() {
    let mut s = state();
    s.rflags |= opsvisor_oracle::AC;
    s.gpr[5] = SCRATCH_BASE + 0x608;
    // enter 0FFFFh, 3: the new stack top is odd, and checked before paging.
    let code = [0xc8, 0xff, 0xff, 0x03];
    let native = run(&code, &s).expect("oracle");
    match native.end {
        End::Exception(e) => assert_eq!(e.vector, 17),
        End::Completed => panic!("expected #AC"),
    }
    check(&code, &s);
}

#[test]
fn non_canonical_stack_relative_access_raises_ss() {
    let mut s = state();
    s.gpr[1] = 0x8000_0000_0000;
    // add [rsp+rcx], cl: found by the emu_differential fuzz target.
    let code = [0x00, 0x0c, 0x0c];
    let native = run(&code, &s).expect("oracle");
    assert_eq!(
        native.end,
        End::Exception(Exception {
            vector: 12,
            error_code: Some(0),
            address: None
        })
    );
    check(&code, &s);
}

#[test]
fn bytes_after_the_snippet_are_the_same_on_both_sides() {
    let s = state();
    // mov eax, [rip]: reads the exit stub that follows the snippet (fuzz finding).
    let code = [0x8b, 0x05, 0, 0, 0, 0];
    check(&code, &s);
}

#[test]
fn cmps_reports_the_destination_fault_first() {
    let mut s = state();
    s.gpr[RSI] = 0xa6a6_d966_6666_af66;
    s.gpr[7] = 0;
    // cmpsb: both operands fault; the host reports #PF at ES:[RDI] (fuzz finding).
    let code = [0xa6];
    check(&code, &s);
}

#[test]
fn ss_override_is_ignored_in_64_bit_mode() {
    let mut s = state();
    s.gpr[7] = 0x8000_0000_0000;
    // add ah, ss:[rdi+2Ch]: the prefix is ignored, a non-canonical address is #GP(0).
    let code = [0x36, 0x02, 0x67, 0x2c];
    let native = run(&code, &s).expect("oracle");
    assert_eq!(
        native.end,
        End::Exception(Exception {
            vector: 13,
            error_code: Some(0),
            address: None
        })
    );
    check(&code, &s);
}

#[test]
fn cmps_reports_the_destination_gp_before_the_source_page_fault() {
    let mut s = state();
    s.gpr[RSI] = 0;
    s.gpr[7] = 0xa6a6_d966_6666_af66;
    let code = [0xa6];
    check(&code, &s);
}

#[test]
fn clflush_checks_its_address_like_a_read() {
    let s = state();
    // clflush [38000007h]: not mapped, so #PF (fuzz finding; the emulator treated
    // CLFLUSH as a plain NOP).
    let code = [0x0f, 0xae, 0x3c, 0x25, 0x07, 0x00, 0x00, 0x38];
    let native = run(&code, &s).expect("oracle");
    assert!(matches!(
        native.end,
        End::Exception(Exception { vector: 14, .. })
    ));
    check(&code, &s);
}

#[test]
fn pause_with_rex_b_is_xchg_r8() {
    let mut s = state();
    s.gpr[RAX] = 0x1234;
    s.gpr[R8] = 0x5678;
    // F3 41 90 and F3 4D 90: iced-x86 reads PAUSE; REX.B makes it XCHG r8d/r8, eAX/rAX
    // (fuzz finding).
    for code in [[0xf3u8, 0x41, 0x90], [0xf3, 0x4d, 0x90]] {
        let native = run(&code, &s).expect("oracle");
        assert_eq!(native.state.gpr[R8], 0x1234);
        check(&code, &s);
    }
}
