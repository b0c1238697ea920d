//! The opsvisor command-line program: boot a kernel on a backend, with the guest's serial
//! console on stdin/stdout and the guest's debug-exit status as the program's own.

mod args;
mod exec;

use args::{Command, RunArgs};
use opsvisor_backends::{build_machine, Backend};
use opsvisor_core::platform::{Platform, StdPlatform};
use opsvisor_core::vm::RunOutcome;
use opsvisor_core::X86Ops;
use std::process::ExitCode;

/// Exit status for bad input: a missing or invalid kernel, a bad option.
const STATUS_BAD_INPUT: u8 = 2;
/// Exit status when the guest triple-faulted.
const STATUS_TRIPLE_FAULT: u8 = 4;
/// Exit status when the guest halted with nothing to wake it.
const STATUS_HALTED: u8 = 6;
/// Exit status when `--timeout` or `--max-instructions` ended the run.
const STATUS_LIMIT: u8 = 8;
/// Exit status when the backend could not go on (an internal limitation).
const STATUS_FAILED: u8 = 10;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match args::parse(&argv) {
        Ok(Command::Help(text)) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Ok(Command::Version) => {
            println!("opsvisor {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Ok(Command::Exec(args)) => match exec::exec(&args) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("opsvisor: {message}");
                ExitCode::from(STATUS_BAD_INPUT)
            }
        },
        Ok(Command::Run(run)) => match run_guest(&run) {
            Ok(code) => ExitCode::from(code),
            Err(message) => {
                eprintln!("opsvisor: {message}");
                ExitCode::from(STATUS_BAD_INPUT)
            }
        },
        Err(message) => {
            eprintln!("opsvisor: {message} (see 'opsvisor --help')");
            ExitCode::from(STATUS_BAD_INPUT)
        }
    }
}

fn read_file(path: &str, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {what} '{path}': {e}"))
}

fn run_guest(run: &RunArgs) -> Result<u8, String> {
    let kernel = read_file(&run.kernel, "kernel")?;
    let mut opts = run.machine.clone();
    for (path, cmdline) in &run.modules {
        opts.modules
            .push((cmdline.clone(), read_file(path, "module")?));
    }
    if let Some(path) = &run.initrd {
        opts.initrd = Some(read_file(path, "initrd")?);
    }
    let mut vm = build_machine(&kernel, &opts, StdPlatform::new())
        .map_err(|e| format!("{}: {e}", run.kernel))?;
    let outcome = vm.run();
    vm.platform.console_flush();
    if run.stats {
        print_stats(&vm);
    }
    report_unimplemented(&vm.vcpu);
    let code = match outcome {
        RunOutcome::DebugExit { status } => status as u8,
        RunOutcome::TripleFault { rip } => {
            eprintln!("opsvisor: the guest triple-faulted at rip {rip:#x}");
            STATUS_TRIPLE_FAULT
        }
        RunOutcome::HaltedForever => {
            eprintln!("opsvisor: the guest halted with nothing that could wake it");
            STATUS_HALTED
        }
        RunOutcome::InstructionLimit => {
            eprintln!(
                "opsvisor: stopped after the instruction limit ({})",
                opts.max_instructions.unwrap_or(0)
            );
            STATUS_LIMIT
        }
        RunOutcome::Timeout => {
            eprintln!("opsvisor: stopped after the timeout");
            STATUS_LIMIT
        }
        RunOutcome::Failed(why) => {
            eprintln!("opsvisor: {why}");
            STATUS_FAILED
        }
    };
    Ok(code)
}

fn print_stats<P: Platform>(vm: &opsvisor_backends::Machine<P>) {
    let secs = vm.run_time_ns() as f64 / 1e9;
    eprintln!("--- opsvisor statistics ({} backend) ---", vm.vcpu.name());
    let timed = vm.config.collect_timing;
    if timed {
        eprintln!(
            "{:<20} {:>12} {:>14} {:>10}",
            "exit reason", "count", "host time", "per exit"
        );
    } else {
        eprintln!("{:<20} {:>12}", "exit reason", "count");
    }
    for (kind, count, ns) in vm.stats.rows() {
        if timed {
            eprintln!(
                "{:<20} {:>12} {:>11.3} ms {:>7} ns",
                kind.name(),
                count,
                ns as f64 / 1e6,
                ns / count.max(1)
            );
        } else {
            eprintln!("{:<20} {:>12}", kind.name(), count);
        }
    }
    eprintln!("{:<20} {:>12}", "total exits", vm.stats.total());
    if let Some(instructions) = vm.vcpu.instructions_retired() {
        let rate = if secs > 0.0 {
            instructions as f64 / secs
        } else {
            0.0
        };
        eprintln!(
            "instructions         {instructions:>12} in {secs:.3} s = {:.1} million/s",
            rate / 1e6
        );
    } else {
        eprintln!("run time             {secs:.3} s");
    }
    if vm.msrs.unknown_accesses() > 0 {
        eprintln!(
            "unknown MSR accesses {:>12} (last {:#x}), each raised #GP",
            vm.msrs.unknown_accesses(),
            vm.msrs.last_unknown().unwrap_or(0)
        );
    }
}

fn report_unimplemented(vcpu: &Backend) {
    if let Backend::Emu(slot) = vcpu {
        let missing: Vec<String> = slot
            .0
            .unimplemented()
            .map(|(mnemonic, n)| format!("{} x{n}", format!("{mnemonic:?}").to_lowercase()))
            .collect();
        if !missing.is_empty() {
            eprintln!(
                "opsvisor: the guest executed instructions the emulator does not implement (each raised #UD): {}",
                missing.join(", ")
            );
        }
    }
}
