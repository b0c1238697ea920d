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
//! The snippet runs natively inside this process, so an address outside the oracle's code
//! and scratch pages may be host memory: when the emulator page-faults on such an address
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
    check_snippet, check_state, compare, End, CODE_BASE, CODE_SIZE, SCRATCH_BASE, SCRATCH_SIZE,
};
use std::cell::RefCell;

thread_local! {
    static RUNNER: RefCell<Option<EmuRunner>> = const { RefCell::new(None) };
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
    let Ok(native) = opsvisor_oracle::run(code, &state) else {
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
