//! Snapshot fuzzing, the way hypervisor snapshot fuzzers work: a guest booted once and
//! saved while it waits for console input (the corpus guest `com1_rx` after its "ready
//! for console input", `fuzz/snapshots/com1_rx_waiting.snap`, 2 MiB of RAM, --icount),
//! restored for every input, which it then receives on COM1 byte by byte (by interrupt)
//! within an instruction budget. The host must not panic, and the run must end within
//! the budget. The snapshot is regenerated with
//! `opsvisor run --memory 2M --icount --snapshot-at 1000000 --snapshot-out
//! fuzz/snapshots/com1_rx_waiting.snap --max-instructions 1000000 --serial none
//! <corpus guest com1_rx>`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opsvisor_backends::{restore_machine, Machine, MachineOptions};
use opsvisor_core::platform::CapturePlatform;
use opsvisor_core::vm::RunOutcome;

const WAITING: &[u8] = include_bytes!("../snapshots/com1_rx_waiting.snap");

fuzz_target!(|data: &[u8]| {
    let opts = MachineOptions {
        max_instructions: Some(2_000_000),
        timeout: Some(std::time::Duration::from_secs(8)),
        ..MachineOptions::default()
    };
    let mut console = CapturePlatform::new();
    console.input.extend(&data[..data.len().min(256)]);
    let mut vm: Machine<CapturePlatform> =
        restore_machine(WAITING, &opts, console).expect("the checked-in snapshot restores");
    let outcome = vm.run();
    assert!(
        !matches!(outcome, RunOutcome::Timeout | RunOutcome::Failed(_)),
        "{outcome:?}"
    );
});
