//! Differential fuzzing: arbitrary code bytes from an arbitrary initial state run on the
//! host CPU (the native oracle) and on the emulator (`EmuRunner`); any difference that
//! `compare::compare` reports, or an emulator error or panic, is a failure.
//!
//! Input: byte 0 gives the snippet length (1..=32), the snippet follows, and the rest are
//! the words `gen::random_state` draws the registers, flags, scratch and FPU state from.
//! Snippets `check_snippet` rejects (system calls, control transfers, privileged
//! instructions) and states `check_state` rejects are skipped. A snippet on which the
//! emulator raises #UD while the host does not is skipped too: that is an instruction the
//! emulator does not implement yet, reported by its `unimplemented()` list, not a bug.
//!
//! The snippet runs natively in a forked child (see [`native`]): a fuzzed snippet can
//! reach host memory (an address learned from the exit stub on the code page, or from
//! libFuzzer's compare tracing), and a store there must not corrupt the fuzzer. The
//! emulator side runs in this process, so its crashes are found. An address outside the
//! oracle's code and scratch pages may be host memory: when the emulator page-faults on such an address
//! and the host did not fault the same way, the input is skipped (the host had memory
//! there), and so is a page fault on an upper-half address, whose present bit depends on
//! the host kernel's mappings. For the same reason the target is built without ASan
//! (`scripts/fuzz.sh` passes `-s none`): ASan's shadow maps most of the lower half.
//!
//! Snippets with INT1 (ICEBP) are skipped: on the Firecracker/KVM hosts this runs on, the
//! host reports its #DB with RIP at the INT1, where the SDM (and the emulator) put it
//! after the instruction. So are snippets that read a segment selector (`mov r/m, Sreg`,
//! `push fs`): the values are Linux's on one side and the runner's on the other.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opsvisor_oracle::emu_runner::EmuRunner;
use opsvisor_oracle::gen::{random_state, Choices};
use opsvisor_oracle::{
    check_snippet, check_state, compare, End, Exception, Outcome, State, CODE_BASE, CODE_SIZE,
    SCRATCH_BASE, SCRATCH_SIZE,
};
use std::cell::RefCell;

thread_local! {
    static RUNNER: RefCell<Option<EmuRunner>> = const { RefCell::new(None) };
}

/// Serialise an outcome for the pipe from the child (fixed layout, little endian).
fn encode(o: &Outcome) -> Vec<u8> {
    let mut b = Vec::with_capacity(5000);
    let s = &o.state;
    for g in s.gpr {
        b.extend_from_slice(&g.to_le_bytes());
    }
    b.extend_from_slice(&s.rflags.to_le_bytes());
    b.extend_from_slice(&s.to_fxsave());
    b.extend_from_slice(&s.scratch);
    b.extend_from_slice(&o.rip_offset.to_le_bytes());
    match o.end {
        End::Completed => b.push(0),
        End::Exception(e) => {
            b.push(1);
            b.push(e.vector);
            b.extend_from_slice(&e.error_code.map_or(u64::MAX, u64::from).to_le_bytes());
            b.extend_from_slice(&e.address.map_or(0, |a| a).to_le_bytes());
            b.push(u8::from(e.address.is_some()));
        }
    }
    b
}

/// The inverse of [`encode`], on top of the input state (`None` if short).
fn decode(b: &[u8], initial: &State) -> Option<Outcome> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = b.get(at..at + n)?;
        at += n;
        Some(s)
    };
    let u64_of = |s: &[u8]| u64::from_le_bytes(s.try_into().unwrap_or([0; 8]));
    let mut state = initial.clone();
    for g in state.gpr.iter_mut() {
        *g = u64_of(take(8)?);
    }
    state.rflags = u64_of(take(8)?);
    let fx: [u8; 512] = take(512)?.try_into().ok()?;
    state.set_fxsave(&fx);
    state.scratch.copy_from_slice(take(SCRATCH_SIZE)?);
    let rip_offset = u64_of(take(8)?);
    let end = match take(1)?[0] {
        0 => End::Completed,
        _ => {
            let vector = take(1)?[0];
            let ec = u64_of(take(8)?);
            let addr = u64_of(take(8)?);
            let has_addr = take(1)?[0] != 0;
            End::Exception(Exception {
                vector,
                error_code: (ec != u64::MAX).then_some(ec as u32),
                address: has_addr.then_some(addr),
            })
        }
    };
    Some(Outcome {
        state,
        rip_offset,
        end,
    })
}

/// Run the snippet on the host CPU in a forked child and read its outcome back; `None`
/// when the child could not report (it crashed: the snippet hit host memory).
fn native(code: &[u8], state: &State) -> Option<Outcome> {
    // Map the oracle's pages and install its handlers once, here, so every child
    // inherits them instead of setting them up again.
    if !opsvisor_oracle::available() {
        return None;
    }
    let mut fds = [0i32; 2];
    // SAFETY: pipe writes two descriptors into the array.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: the child only runs the oracle, writes to the pipe and _exits; it never
    // returns into libFuzzer.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let bytes = opsvisor_oracle::run(code, state).map(|o| encode(&o));
        if let Ok(bytes) = bytes {
            let mut off = 0;
            while off < bytes.len() {
                // SAFETY: writing our own buffer to our pipe.
                let n =
                    unsafe { libc::write(fds[1], bytes[off..].as_ptr().cast(), bytes.len() - off) };
                if n <= 0 {
                    break;
                }
                off += n as usize;
            }
        }
        // SAFETY: ends the child without running the parent's exit handlers.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: closing our copy of the write end.
    unsafe { libc::close(fds[1]) };
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        // SAFETY: reading into our buffer.
        let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
    // SAFETY: closing our read end and reaping the child.
    unsafe {
        libc::close(fds[0]);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
    }
    decode(&out, state)
}

/// The #PF address of an outcome, if it ended in a page fault.
fn pf_address(end: &End) -> Option<u64> {
    match end {
        End::Exception(e) if e.vector == 14 => e.address,
        _ => None,
    }
}

/// Whether the oracle maps `addr` (on both sides).
fn oracle_page(addr: u64) -> bool {
    let scratch = SCRATCH_BASE..SCRATCH_BASE + SCRATCH_SIZE as u64;
    (CODE_BASE..CODE_BASE + CODE_SIZE).contains(&addr) || scratch.contains(&addr)
}

/// Instructions whose result depends on the host rather than the CPU: INT1 (see above),
/// reads of a segment register's selector (Linux's on the host, the emulator runner's
/// own on the emulator), of the time, random numbers, CPUID and processor IDs, the
/// host's FS/GS base, and descriptor queries of the two different GDTs; and what the
/// coverage groups leave out for the reasons they record (vendor-specific hint NOPs,
/// ...: `opsvisor_oracle::groups::EXCLUDED`).
fn host_specific(i: &iced_x86::Instruction) -> bool {
    use iced_x86::Mnemonic as M;
    // Approximations: the x87 transcendentals (binary64 inside the emulator) and
    // RCP/RSQRT (vendor tables). The comparison allows for them only in the register
    // they land in (`x87_rules`, `sse_rules`); later instructions (an MMX add on the
    // aliased register, arithmetic on the result) carry the difference anywhere.
    if matches!(
        i.mnemonic(),
        M::Fsin
            | M::Fcos
            | M::Fsincos
            | M::Fptan
            | M::Fpatan
            | M::F2xm1
            | M::Fyl2x
            | M::Fyl2xp1
            | M::Rcpps
            | M::Rcpss
            | M::Rsqrtps
            | M::Rsqrtss
    ) {
        return true;
    }
    if opsvisor_oracle::groups::EXCLUDED
        .iter()
        .any(|(m, _)| *m == i.mnemonic())
    {
        return true;
    }
    matches!(
        i.mnemonic(),
        M::Int1
            | M::Rdtsc
            | M::Rdtscp
            | M::Rdrand
            | M::Rdseed
            | M::Rdpid
            | M::Rdpmc
            | M::Cpuid
            | M::Xgetbv
            | M::Rdpkru
            | M::Rdfsbase
            | M::Rdgsbase
            | M::Lar
            | M::Lsl
            | M::Verr
            | M::Verw
    ) || (0..i.op_count()).any(|n| i.op_register(n).is_segment_register())
}

fn is_ud(end: &End) -> bool {
    matches!(end, End::Exception(e) if e.vector == 6)
}

fuzz_target!(|data: &[u8]| {
    let Some((&len, rest)) = data.split_first() else {
        return;
    };
    let len = usize::from(len % 32) + 1;
    if rest.len() < len {
        return;
    }
    let (code, tail) = rest.split_at(len);
    if check_snippet(code).is_err() || compare::decode(code).iter().any(host_specific) {
        return;
    }
    let words: Vec<u64> = tail
        .chunks(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            u64::from_le_bytes(b)
        })
        .collect();
    let state = random_state(&mut Choices::new(&words));
    if check_state(&state).is_err() {
        return;
    }
    let Some(native) = native(code, &state) else {
        return;
    };
    RUNNER.with(|cell| {
        let mut slot = cell.borrow_mut();
        let runner = match slot.as_mut() {
            Some(r) => r,
            None => slot.insert(EmuRunner::new().expect("the emulator runner builds")),
        };
        let emu = match runner.run(code, &state) {
            Ok(o) => o,
            Err(e) => panic!(
                "emulator: {e}\n{}  bytes: {code:02x?}",
                compare::disassemble(code)
            ),
        };
        if is_ud(&emu.end) && !is_ud(&native.end) {
            return;
        }
        if let Some(addr) = pf_address(&emu.end) {
            let host_memory = !oracle_page(addr) && native.end != emu.end;
            if host_memory || addr >> 63 != 0 {
                return;
            }
        }
        if let Err(diff) = compare::compare(code, &state, &native, &emu) {
            panic!("the emulator differs from the host CPU:\n{diff}");
        }
    });
});
