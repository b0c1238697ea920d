//! The native oracle and the emulator runner on hand-written snippets: each way a run can
//! end, state round trips, and snippet rejection.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use opsvisor_oracle::{
    run, End, Exception, OracleError, State, CF, CODE_BASE, SCRATCH_BASE, SCRATCH_SIZE, ZF,
};

const RAX: usize = 0;
const RCX: usize = 1;
const RDX: usize = 2;
const RBX: usize = 3;

fn state() -> State {
    let mut s = State::new();
    for (i, g) in s.gpr.iter_mut().enumerate() {
        if i != 4 {
            *g = 0x1111_1111_1111_1111 * i as u64;
        }
    }
    s
}

/// Run on both sides and check they agree (the emulator has no SSE, so only the
/// integer state is compared).
fn both(code: &[u8], s: &State) -> opsvisor_oracle::Outcome {
    let native = run(code, s).expect("oracle run");
    #[cfg(feature = "emu")]
    {
        let mut emu = opsvisor_oracle::emu_runner::EmuRunner::new().expect("emu setup");
        let e = emu.run(code, s).expect("emu run");
        assert_eq!(e.end, native.end, "end");
        assert_eq!(e.rip_offset, native.rip_offset, "rip");
        assert_eq!(e.state.gpr, native.state.gpr, "gprs");
        let mask = 0x8d5 | (1 << 10);
        assert_eq!(e.state.rflags & mask, native.state.rflags & mask, "rflags");
        assert!(e.state.scratch == native.state.scratch, "scratch");
    }
    native
}

#[test]
fn completes_with_registers_and_flags() {
    let mut s = state();
    s.gpr[RAX] = u64::MAX;
    s.gpr[RBX] = 1;
    // add rax, rbx
    let o = both(&[0x48, 0x01, 0xd8], &s);
    assert_eq!(o.end, End::Completed);
    assert_eq!(o.rip_offset, 3);
    assert_eq!(o.state.gpr[RAX], 0);
    assert_eq!(o.state.rflags & (CF | ZF), CF | ZF);
    for i in 1..16 {
        assert_eq!(o.state.gpr[i], s.gpr[i], "register {i} unchanged");
    }
}

#[test]
fn empty_snippet_round_trips_everything() {
    let mut s = state();
    s.rflags = 0x2 | CF | (1 << 11) | (1 << 10);
    s.xmm[3] = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;
    s.mxcsr = 0x1f80 | (1 << 13);
    s.scratch[5] = 0x5a;
    let o = run(&[], &s).expect("run");
    assert_eq!(o.end, End::Completed);
    assert_eq!(o.state.gpr, s.gpr);
    assert_eq!(o.state.rflags & 0xfff, s.rflags | (1 << 9));
    assert_eq!(o.state.xmm, s.xmm);
    assert_eq!(o.state.mxcsr, s.mxcsr);
    assert_eq!(o.state.scratch, s.scratch);
}

#[test]
fn sse_state_is_loaded_and_saved() {
    let mut s = state();
    s.xmm[0] = 5;
    s.xmm[1] = 7;
    // paddq xmm0, xmm1
    let o = run(&[0x66, 0x0f, 0xd4, 0xc1], &s).expect("run");
    assert_eq!(o.state.xmm[0], 12);
}

#[test]
fn divide_error() {
    let mut s = state();
    s.gpr[RCX] = 0;
    // div rcx
    let o = both(&[0x48, 0xf7, 0xf1], &s);
    assert_eq!(
        o.end,
        End::Exception(Exception {
            vector: 0,
            error_code: None,
            address: None
        })
    );
    assert_eq!(o.rip_offset, 0);
}

#[test]
fn invalid_opcode_after_an_instruction() {
    let s = state();
    // inc rdx; ud2
    let o = both(&[0x48, 0xff, 0xc2, 0x0f, 0x0b], &s);
    assert_eq!(
        o.end,
        End::Exception(Exception {
            vector: 6,
            error_code: None,
            address: None
        })
    );
    assert_eq!(o.rip_offset, 3);
    assert_eq!(o.state.gpr[RDX], s.gpr[RDX] + 1);
}

#[test]
fn page_fault_past_the_scratch_area() {
    let mut s = state();
    s.gpr[RBX] = SCRATCH_BASE + SCRATCH_SIZE as u64 - 4;
    // mov [rbx], rax: 4 bytes in, 4 bytes out.
    let o = both(&[0x48, 0x89, 0x03], &s);
    assert_eq!(
        o.end,
        End::Exception(Exception {
            vector: 14,
            error_code: Some(0x6),
            address: Some(SCRATCH_BASE + SCRATCH_SIZE as u64)
        })
    );
}

#[test]
fn write_to_code_page_is_a_protection_fault() {
    let mut s = state();
    s.gpr[RBX] = CODE_BASE + 0x100;
    // mov [rbx], rax
    let o = both(&[0x48, 0x89, 0x03], &s);
    assert_eq!(
        o.end,
        End::Exception(Exception {
            vector: 14,
            error_code: Some(0x7),
            address: Some(CODE_BASE + 0x100)
        })
    );
}

#[test]
fn general_protection_on_non_canonical_address() {
    let mut s = state();
    s.gpr[RBX] = 0x8000_0000_0000_0000;
    // mov rax, [rbx]
    let o = both(&[0x48, 0x8b, 0x03], &s);
    assert_eq!(
        o.end,
        End::Exception(Exception {
            vector: 13,
            error_code: Some(0),
            address: None
        })
    );
}

#[test]
fn breakpoint_reports_the_next_instruction() {
    let s = state();
    let o = both(&[0x90, 0xcc, 0x90], &s);
    assert_eq!(
        o.end,
        End::Exception(Exception {
            vector: 3,
            error_code: None,
            address: None
        })
    );
    assert_eq!(o.rip_offset, 2);
}

#[test]
fn stack_in_scratch() {
    let s = state();
    // push rax; pop rcx
    let o = both(&[0x50, 0x59], &s);
    assert_eq!(o.end, End::Completed);
    assert_eq!(o.state.gpr[RCX], s.gpr[RAX]);
    let at = (s.gpr[4] - 8 - SCRATCH_BASE) as usize;
    assert_eq!(&o.state.scratch[at..at + 8], &s.gpr[RAX].to_le_bytes());
}

#[test]
fn faults_in_many_threads_at_once() {
    let handles: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..200u64 {
                    let mut s = state();
                    s.gpr[RCX] = i % 3;
                    s.gpr[RDX] = 0;
                    let o = run(&[0x48, 0xf7, 0xf1], &s).expect("run");
                    let faulted = matches!(o.end, End::Exception(e) if e.vector == 0);
                    assert_eq!(faulted, i % 3 == 0, "thread {t} iteration {i}");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
}

#[test]
fn dangerous_snippets_are_rejected() {
    let s = state();
    for (code, what) in [
        (&[0x0f, 0x05][..], "syscall"),
        (&[0xcd, 0x80][..], "int 0x80"),
        (&[0xeb, 0xfe][..], "jmp $"),
        (&[0xc3][..], "ret"),
        (&[0xf4][..], "hlt"),
        (&[0x8e, 0xd8][..], "mov ds, ax"),
        (&[0x64, 0x48, 0x89, 0x03][..], "mov fs:[rbx], rax"),
        (&[0x0f, 0x01, 0xef][..], "wrpkru"),
        (&[0x48][..], "a cut-short instruction"),
    ] {
        assert!(
            matches!(run(code, &s), Err(OracleError::Rejected(_))),
            "{what} must be rejected"
        );
    }
}

#[test]
fn bad_state_is_refused() {
    let mut s = state();
    s.scratch.pop();
    assert!(matches!(run(&[], &s), Err(OracleError::BadState(_))));
    let mut s = state();
    s.mxcsr = 0x1_0000;
    assert!(matches!(run(&[], &s), Err(OracleError::BadState(_))));
}
