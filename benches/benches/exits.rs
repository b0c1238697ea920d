//! The round trip of one exit through the whole path on the emulator: guest instruction
//! → exit → core handler → resume. Each benchmark runs a guest loop that makes one exit
//! per iteration; `baseline_loop` is the same loop without the exiting instruction, to
//! subtract. `dispatch/*` compares a CPUID round trip through the `Backend` enum with
//! the same round trip on the bare emulator type: the enum dispatch must cost nothing.
//! `exit_traced/*` is `exit/*` with `opsvisor run --trace-exits` on (every exit formatted
//! into the trace's chunks; the writer thread writes them to a sink), and
//! `exit_breakdown/*` with `--stats`' per-port/MSR/CPUID tables counting (without the
//! per-exit clock reads of its timing): the difference to `exit/*` is the cost per exit.
// criterion_group! generates public functions without documentation.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use opsvisor::breakdown::Breakdown;
use opsvisor::observer::Observed;
use opsvisor::trace::{ExitFilter, TraceWriter};
use opsvisor_backends::Backend;
use opsvisor_benches::{bench_vm, bench_vm_on, exit_loop_program, ExitLoop, MEMORY};
use opsvisor_core::platform::CapturePlatform;
use opsvisor_core::vm::RunOutcome;
use opsvisor_core::{EmuSlot, X86Ops};
use opsvisor_emu::EmuVcpu;
use std::time::{Duration, Instant};

/// Run `iters` iterations of `kind`'s loop on `make()`'s backend and time the run only.
fn time_loop<B: X86Ops>(make: impl Fn() -> B, kind: ExitLoop, iters: u64) -> Duration {
    let code = exit_loop_program(kind, iters.max(1)).expect("benchmark guest assembles");
    let mut vm = bench_vm(make(), &code).expect("benchmark guest loads");
    let start = Instant::now();
    let outcome = vm.run();
    let took = start.elapsed();
    assert_eq!(
        outcome,
        RunOutcome::DebugExit { status: 1 },
        "{} guest failed",
        kind.name()
    );
    took
}

fn exit_round_trips(c: &mut Criterion) {
    let mut group = c.benchmark_group("exit");
    for kind in ExitLoop::ALL {
        group.bench_function(kind.name(), |b| {
            b.iter_custom(|iters| time_loop(|| Backend::from(EmuSlot(EmuVcpu::new())), kind, iters))
        });
    }
    group.finish();
}

/// [`time_loop`] on the emulator with the exit trace (`trace`) or the breakdowns on.
fn time_observed_loop(kind: ExitLoop, iters: u64, trace: bool) -> Duration {
    let code = exit_loop_program(kind, iters.max(1)).expect("benchmark guest assembles");
    let host = Observed {
        inner: CapturePlatform::new(),
        trace: trace.then(|| {
            TraceWriter::with_output(std::io::sink(), ExitFilter::default()).expect("writer")
        }),
        breakdown: (!trace).then(Box::<Breakdown>::default),
    };
    let mut vm = bench_vm_on(Backend::from(EmuSlot(EmuVcpu::new())), &code, MEMORY, host)
        .expect("benchmark guest loads");
    let start = Instant::now();
    let outcome = vm.run();
    let took = start.elapsed();
    assert_eq!(outcome, RunOutcome::DebugExit { status: 1 });
    if let Some(trace) = &mut vm.platform.trace {
        let summary = trace.finish();
        assert_eq!(summary.dropped, 0);
    }
    took
}

fn observed_round_trips(c: &mut Criterion) {
    for (group, trace) in [("exit_traced", true), ("exit_breakdown", false)] {
        let mut group = c.benchmark_group(group);
        for kind in ExitLoop::ALL {
            group.bench_function(kind.name(), |b| {
                b.iter_custom(|iters| time_observed_loop(kind, iters, trace))
            });
        }
        group.finish();
    }
}

fn dispatch(c: &mut Criterion) {
    let mut group = c.benchmark_group("dispatch");
    group.bench_function("cpuid_through_backend_enum", |b| {
        b.iter_custom(|iters| {
            time_loop(
                || Backend::from(EmuSlot(EmuVcpu::new())),
                ExitLoop::Cpuid,
                iters,
            )
        })
    });
    group.bench_function("cpuid_direct_emu", |b| {
        b.iter_custom(|iters| time_loop(EmuVcpu::new, ExitLoop::Cpuid, iters))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    targets = exit_round_trips, dispatch, observed_round_trips
}
criterion_main!(benches);
