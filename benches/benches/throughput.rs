//! The emulator's guest instructions per second on an integer/branch loop and a
//! memory/string loop (criterion reports "elements/s" = guest instructions/s).
// criterion_group! generates public functions without documentation.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use opsvisor_backends::Backend;
use opsvisor_benches::{
    bench_vm, int_loop_program, mem_loop_program, INT_LOOP_INSTRUCTIONS, MEM_LOOP_INSTRUCTIONS,
};
use opsvisor_core::vm::RunOutcome;
use opsvisor_core::EmuSlot;
use opsvisor_emu::EmuVcpu;
use std::time::{Duration, Instant};

/// Iterations per timed run: large enough that start-up (decoding, the first TLB
/// misses) is noise.
const ITERATIONS: u64 = 2_000_000;

fn run(program: &[u8]) -> Duration {
    let mut vm =
        bench_vm(Backend::from(EmuSlot(EmuVcpu::new())), program).expect("benchmark guest loads");
    let start = Instant::now();
    let outcome = vm.run();
    let took = start.elapsed();
    assert_eq!(outcome, RunOutcome::DebugExit { status: 1 });
    took
}

fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("emu_throughput");
    group.sample_size(10);
    for (name, program, per_iteration) in [
        (
            "int_branch_loop",
            int_loop_program(ITERATIONS),
            INT_LOOP_INSTRUCTIONS,
        ),
        (
            "mem_string_loop",
            mem_loop_program(ITERATIONS),
            MEM_LOOP_INSTRUCTIONS,
        ),
    ] {
        let program = program.expect("benchmark guest assembles");
        group.throughput(Throughput::Elements(ITERATIONS * per_iteration));
        group.bench_function(name, |b| {
            b.iter_custom(|iters| (0..iters).map(|_| run(&program)).sum())
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    targets = throughput
}
criterion_main!(benches);
