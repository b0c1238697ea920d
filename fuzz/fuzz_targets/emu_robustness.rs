//! Arbitrary code bytes run on the emulator in long mode (identity-mapped, interrupts
//! off, no IDT): whatever the bytes do, the host must not panic and the run must end
//! within the instruction budget. The first byte picks where the code sits relative to a
//! page boundary, so instructions that straddle pages are exercised too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opsvisor_benches::{bench_vm_with_memory, CODE_ADDR};
use opsvisor_core::vm::RunOutcome;
use opsvisor_emu::EmuVcpu;

fuzz_target!(|data: &[u8]| {
    let Some((&shift, code)) = data.split_first() else {
        return;
    };
    let mut image = vec![0x90u8; usize::from(shift) % 64];
    image.extend_from_slice(&code[..code.len().min(4096)]);
    // 4 MiB of RAM keeps each execution cheap; the rest of the 4 GiB mapped by the
    // page tables is not RAM, so wild accesses exercise the MMIO path.
    let Ok(mut vm) = bench_vm_with_memory(EmuVcpu::new(), &image, 4 << 20) else {
        return;
    };
    vm.config.max_instructions = Some(10_000);
    // The instruction budget is what must end the run; the clock only catches a run the
    // budget does not bound. 10,000 instructions that each reach the MMIO path cost about
    // 2 s under ASan on a loaded 2-core machine (CI saw `in eax, 0xff; mov [moffs], al`
    // then `add [rax], al` on all-ones RAX time out at 2 s), so the clock allows 8 s,
    // still inside libFuzzer's 10 s per input (scripts/fuzz.sh).
    vm.config.timeout_ns = Some(8_000_000_000);
    let outcome = vm.run();
    assert!(
        !matches!(outcome, RunOutcome::Timeout),
        "the run outlived its instruction budget: {outcome:?} at {:#x}",
        CODE_ADDR
    );
});
