//! A profiling aid: one benchmark loop (the same guest programs and VM as the criterion
//! benchmarks) run once through the core's run loop on the emulator, sized by the command
//! line. For `valgrind --tool=callgrind` and `perf`, where criterion's harness is in the way:
//!
//! ```text
//! cargo build --release -p opsvisor-benches --example exit_loop
//! target/release/examples/exit_loop <loop> <iterations> [trace FILE | breakdown]
//! ```
//!
//! `<loop>` is `int`, `mem` or an exit benchmark's name (`baseline_loop`, `cpuid`,
//! `rdmsr_tsc`, ...). `trace FILE` writes the exit trace of `opsvisor run --trace-exits`
//! to FILE as the loop runs, `breakdown` counts `--stats`' per-port/MSR/CPUID tables.

use std::process::ExitCode;
use std::time::Instant;

use opsvisor::breakdown::Breakdown;
use opsvisor::observer::Observed;
use opsvisor::trace::{ExitFilter, TraceOptions, TraceWriter};
use opsvisor_benches::{
    bench_vm_on, exit_loop_program, int_loop_program, mem_loop_program, ExitLoop, MEMORY,
};
use opsvisor_core::platform::{CapturePlatform, Platform};
use opsvisor_core::vm::RunOutcome;
use opsvisor_emu::EmuVcpu;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("exit_loop: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_else(|| "cpuid".into());
    let iterations: u64 = match args.next() {
        Some(s) => s
            .parse()
            .map_err(|_| format!("iterations must be a number, not {s:?}"))?,
        None => 1_000_000,
    };
    let code = match kind.as_str() {
        "int" => int_loop_program(iterations)?,
        "mem" => mem_loop_program(iterations)?,
        name => {
            let Some(exit) = ExitLoop::ALL.into_iter().find(|e| e.name() == name) else {
                let names: Vec<_> = ExitLoop::ALL.iter().map(|e| e.name()).collect();
                return Err(format!(
                    "unknown loop {name:?}: expected int, mem or one of {}",
                    names.join(", ")
                ));
            };
            exit_loop_program(exit, iterations)?
        }
    };
    match (args.next().as_deref(), args.next()) {
        (None, _) => run_loop(&kind, iterations, &code, CapturePlatform::new()).map(drop),
        (Some("trace"), Some(path)) => {
            let options = TraceOptions {
                path: path.into(),
                filter: ExitFilter::default(),
            };
            let host = Observed {
                inner: CapturePlatform::new(),
                trace: Some(TraceWriter::create(&options)?),
                breakdown: None,
            };
            let mut host = run_loop(&kind, iterations, &code, host)?;
            let summary = host.trace.as_mut().map(TraceWriter::finish);
            println!("trace: {summary:?}");
            Ok(())
        }
        (Some("breakdown"), None) => {
            let host = Observed {
                inner: CapturePlatform::new(),
                trace: None,
                breakdown: Some(Box::<Breakdown>::default()),
            };
            run_loop(&kind, iterations, &code, host).map(drop)
        }
        (Some(other), _) => Err(format!(
            "unknown observer {other:?}: expected 'trace FILE' or 'breakdown'"
        )),
    }
}

/// Run the loop on `platform`; the platform back, for what it observed.
fn run_loop<P: Platform>(
    kind: &str,
    iterations: u64,
    code: &[u8],
    platform: P,
) -> Result<P, String> {
    let mut vm = bench_vm_on(EmuVcpu::new(), code, MEMORY, platform)?;
    let started = Instant::now();
    let outcome = vm.run();
    let took = started.elapsed();
    if outcome != (RunOutcome::DebugExit { status: 1 }) {
        return Err(format!("the {kind} loop ended with {outcome:?}"));
    }
    println!(
        "{kind}: {iterations} iterations in {took:?} = {:.2} ns/iteration",
        took.as_nanos() as f64 / iterations as f64
    );
    Ok(vm.into_platform())
}
