//! A profiling aid: one benchmark loop (the same guest programs and VM as the criterion
//! benchmarks) run once through the core's run loop on the emulator, sized by the command
//! line. For `valgrind --tool=callgrind` and `perf`, where criterion's harness is in the way:
//!
//! ```text
//! cargo build --release -p opsvisor-benches --example exit_loop
//! target/release/examples/exit_loop <loop> <iterations>
//! ```
//!
//! `<loop>` is `int`, `mem` or an exit benchmark's name (`baseline_loop`, `cpuid`,
//! `rdmsr_tsc`, ...).

use std::process::ExitCode;
use std::time::Instant;

use opsvisor_benches::{bench_vm, exit_loop_program, int_loop_program, mem_loop_program, ExitLoop};
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
    let mut vm = bench_vm(EmuVcpu::new(), &code)?;
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
    Ok(())
}
