//! The XSAVE feature set against the host CPU: XSAVE, XSAVEOPT, XSAVEC and XRSTOR (with
//! their REX.W forms) for every requested-feature bitmap of the x87 and SSE components,
//! XRSTOR of standard and compacted headers valid and invalid, misaligned areas, and
//! XGETBV's x87 and SSE bits. Both sides run with CR4.OSXSAVE; the emulator's XCR0 is x87 |
//! SSE, the host's has more, so the snippets request no other component.
//!
//! The states have both components in use (not in their initial configuration): a
//! processor may report XINUSE 1 for a component in its initial configuration (SDM 1
//! 13.6), so XSTATE_BV is only defined by the architecture for components in use.
#![cfg(all(target_os = "linux", target_arch = "x86_64", feature = "emu"))]

use opsvisor_oracle::compare::differential;
use opsvisor_oracle::emu_runner::EmuRunner;
use opsvisor_oracle::{run, End, State, SCRATCH_BASE, X87};

const RAX: usize = 0;
const RDX: usize = 2;
const RSI: usize = 6;
/// Where the area goes in the scratch page (64-byte aligned).
const AREA: usize = 0x100;

/// The host has the XSAVE family the emulator implements, enabled by its OS.
fn host_has(feature: &str) -> bool {
    match feature {
        "xsave" => std::arch::is_x86_feature_detected!("xsave"),
        "xsaveopt" => std::arch::is_x86_feature_detected!("xsaveopt"),
        "xsavec" => std::arch::is_x86_feature_detected!("xsavec"),
        _ => false,
    }
}

/// A state with the x87 and SSE components in use, varied by `seed`.
fn state(seed: u64) -> State {
    let mut s = State::new();
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for v in s.xmm.iter_mut() {
        *v = u128::from(next()) << 64 | u128::from(next());
    }
    s.mxcsr = 0x1f80 | (next() as u32 & 0x3f);
    // Two valid registers (ST0, ST1 at physical 7 and 6): normal extended values.
    let mut x87 = X87 {
        fsw: 6 << 11,
        ftw: 0xc0,
        fcw: 0x37f,
        ..X87::default()
    };
    for i in 0..2 {
        let mantissa = next() | (1 << 63);
        let exponent = 0x3fff + (next() % 64) as u128;
        x87.st[i] = exponent << 64 | u128::from(mantissa);
    }
    s.x87 = x87;
    for (i, b) in s.scratch.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(29).wrapping_add(seed as u8);
    }
    s.gpr[RSI] = SCRATCH_BASE + AREA as u64;
    s
}

fn check(code: &[u8], s: &State) {
    let mut emu = EmuRunner::new().expect("emulator runner");
    if let Err(diff) = differential(&mut emu, code, s) {
        panic!("emulator and host differ:\n{diff}");
    }
}

/// The save instructions with [rsi]: (name, bytes, the host feature they need).
const SAVES: [(&str, &[u8], &str); 6] = [
    ("xsave", &[0x0f, 0xae, 0x26], "xsave"),
    ("xsave64", &[0x48, 0x0f, 0xae, 0x26], "xsave"),
    ("xsaveopt", &[0x0f, 0xae, 0x36], "xsaveopt"),
    ("xsaveopt64", &[0x48, 0x0f, 0xae, 0x36], "xsaveopt"),
    ("xsavec", &[0x0f, 0xc7, 0x26], "xsavec"),
    ("xsavec64", &[0x48, 0x0f, 0xc7, 0x26], "xsavec"),
];
const XRSTOR: &[u8] = &[0x0f, 0xae, 0x2e];
const XRSTOR64: &[u8] = &[0x48, 0x0f, 0xae, 0x2e];

#[test]
fn saves_match_the_host_for_every_requested_bitmap() {
    if !opsvisor_oracle::available() || !host_has("xsave") {
        return;
    }
    for (name, code, needs) in SAVES {
        if !host_has(needs) {
            continue;
        }
        for rfbm in 0..4u64 {
            for seed in 1..4 {
                let mut s = state(seed);
                s.gpr[RAX] = rfbm;
                // Bits above the emulator's components in EDX are masked by XCR0 on
                // neither side the same way, so EDX stays 0.
                s.gpr[RDX] = 0;
                let native = run(code, &s).expect("oracle");
                assert_eq!(native.end, End::Completed, "{name} rfbm {rfbm}");
                check(code, &s);
            }
        }
    }
}

#[test]
fn misaligned_areas_fault_as_on_the_host() {
    if !opsvisor_oracle::available() || !host_has("xsave") {
        return;
    }
    for (_, code, needs) in SAVES {
        if !host_has(needs) {
            continue;
        }
        for offset in [8u64, 16, 32, 48] {
            let mut s = state(5);
            s.gpr[RAX] = 3;
            s.gpr[RSI] += offset;
            check(code, &s);
        }
    }
    let mut s = state(6);
    s.gpr[RAX] = 3;
    s.gpr[RSI] += 16;
    check(XRSTOR64, &s);
}

/// Put an area saved from `from` (standard format, both components) at [`AREA`] in
/// `s`'s scratch, then set the header to `xstate_bv`, `xcomp_bv`.
fn with_area(s: &mut State, from: &State, xstate_bv: u64, xcomp_bv: u64) {
    let img = from.to_fxsave();
    let area = &mut s.scratch[AREA..AREA + 576];
    area[..512].copy_from_slice(&img);
    // MXCSR_MASK as both processors report it.
    area[28..32].copy_from_slice(&0xffffu32.to_le_bytes());
    area[512..576].fill(0);
    area[512..520].copy_from_slice(&xstate_bv.to_le_bytes());
    area[520..528].copy_from_slice(&xcomp_bv.to_le_bytes());
}

#[test]
fn xrstor_headers_match_the_host() {
    if !opsvisor_oracle::available() || !host_has("xsave") {
        return;
    }
    let compacted = host_has("xsavec");
    let xcomps: &[u64] = if compacted {
        &[0, 1 << 63, (1 << 63) | 1, (1 << 63) | 2, (1 << 63) | 3, 1]
    } else {
        &[0, 1]
    };
    for code in [XRSTOR, XRSTOR64] {
        for &xcomp_bv in xcomps {
            // XSTATE_BV within x87 | SSE: a bit of a component the host's XCR0 has and
            // the emulator's lacks (AVX) is #GP on the emulator only, as it should be
            // (the emulator's unit tests check it).
            for xstate_bv in [0u64, 1, 2, 3] {
                for rfbm in [1u64, 2, 3] {
                    let mut s = state(7 + xstate_bv);
                    s.gpr[RAX] = rfbm;
                    let from = state(100 + rfbm);
                    with_area(&mut s, &from, xstate_bv, xcomp_bv);
                    let mut emu = EmuRunner::new().expect("emulator runner");
                    if let Err(diff) = differential(&mut emu, code, &s) {
                        panic!("XCOMP_BV {xcomp_bv:#x} XSTATE_BV {xstate_bv} RFBM {rfbm}:\n{diff}");
                    }
                }
            }
        }
    }
}

#[test]
fn xrstor_refuses_reserved_header_bytes_and_mxcsr_bits_as_the_host() {
    if !opsvisor_oracle::available() || !host_has("xsave") {
        return;
    }
    let xcomps: &[u64] = if host_has("xsavec") {
        &[0, (1 << 63) | 3]
    } else {
        &[0]
    };
    for &xcomp_bv in xcomps {
        // A reserved header byte (offset 528 and 560 of the area).
        for at in [528usize, 560] {
            let mut s = state(11);
            s.gpr[RAX] = 3;
            let from = state(12);
            with_area(&mut s, &from, 3, xcomp_bv);
            s.scratch[AREA + at] = 1;
            check(XRSTOR64, &s);
        }
        // A reserved MXCSR bit, with and without the SSE component in XSTATE_BV.
        for xstate_bv in [1u64, 3] {
            for rfbm in [1u64, 2, 3] {
                let mut s = state(13);
                s.gpr[RAX] = rfbm;
                let from = state(14);
                with_area(&mut s, &from, xstate_bv, xcomp_bv);
                s.scratch[AREA + 26] = 1;
                check(XRSTOR64, &s);
            }
        }
    }
}

#[test]
fn save_then_restore_round_trips_as_on_the_host() {
    if !opsvisor_oracle::available() || !host_has("xsave") {
        return;
    }
    // xsave64 [rsi]; pxor xmm0, xmm0; fninit; xrstor64 [rsi]; and the compacted pair.
    let mut standard = vec![0x48, 0x0f, 0xae, 0x26, 0x66, 0x0f, 0xef, 0xc0, 0xdb, 0xe3];
    standard.extend_from_slice(XRSTOR64);
    let mut pairs = vec![standard];
    if host_has("xsavec") {
        let mut c = vec![0x48, 0x0f, 0xc7, 0x26, 0x66, 0x0f, 0xef, 0xc0, 0xdb, 0xe3];
        c.extend_from_slice(XRSTOR64);
        pairs.push(c);
    }
    for code in pairs {
        for rfbm in 1..4u64 {
            let mut s = state(20 + rfbm);
            s.gpr[RAX] = rfbm;
            check(&code, &s);
        }
    }
}

#[test]
fn xgetbv_reports_x87_and_sse() {
    if !opsvisor_oracle::available() || !host_has("xsave") {
        return;
    }
    // xor ecx, ecx; xgetbv; and eax, 3; xor edx, edx: the components both sides have.
    let code = [0x31, 0xc9, 0x0f, 0x01, 0xd0, 0x83, 0xe0, 0x03, 0x31, 0xd2];
    let s = state(30);
    let native = run(&code, &s).expect("oracle");
    assert_eq!(native.state.gpr[RAX], 3);
    check(&code, &s);
    // XCR 2 does not exist: #GP(0).
    let code = [0xb9, 0x02, 0x00, 0x00, 0x00, 0x0f, 0x01, 0xd0];
    check(&code, &s);
}

/// Components in their initial configuration: the emulator reports XINUSE 0 for them
/// (and XSAVEOPT and XSAVEC do not write them). The architecture lets a processor report
/// 1 instead; where the host does, the case is left out rather than compared.
#[test]
fn initial_components_match_a_host_that_tracks_them() {
    if !opsvisor_oracle::available() || !host_has("xsave") {
        return;
    }
    let mut compared = 0;
    for (name, code, needs) in SAVES {
        if !host_has(needs) {
            continue;
        }
        // Both components initial, only SSE initial, only x87 initial.
        for (initial, seed) in [(3u64, 40), (2, 41), (1, 42)] {
            let mut s = state(seed);
            if initial & 1 != 0 {
                s.x87 = X87::default();
            }
            if initial & 2 != 0 {
                s.xmm = [0; 16];
                s.mxcsr = 0x1f80;
            }
            s.gpr[RAX] = 3;
            let native = run(code, &s).expect("oracle");
            let bv = u64::from_le_bytes(
                native.state.scratch[AREA + 512..AREA + 520]
                    .try_into()
                    .unwrap(),
            );
            if bv & initial != 0 {
                eprintln!("{name}: the host reports an initial component in use");
                continue;
            }
            check(code, &s);
            compared += 1;
        }
    }
    eprintln!("{compared} cases compared");
}
