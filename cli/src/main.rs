//! The opsvisor command-line program: boot a kernel on a backend, with the guest's serial
//! console on stdin/stdout and the guest's debug-exit status as the program's own.

use opsvisor::args::{self, Command, RunArgs};
use opsvisor::exec;
use opsvisor::input::{read_file, size_text};
use opsvisor_backends::{build_machine, Backend, MachineOptions, MMIO_HOLE_START};
use opsvisor_core::platform::{Platform, StdPlatform};
use opsvisor_core::vm::RunOutcome;
use opsvisor_core::X86Ops;
use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Instant;

/// Exit status when the guest powered the machine off (ACPI S5).
const STATUS_POWER_OFF: u8 = 0;
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
/// Exit status when the guest reset the machine and `--no-reboot` was given.
const STATUS_RESET: u8 = 12;

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().skip(1).collect();
    match args::parse(&argv) {
        Ok(Command::Help(text)) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Ok(Command::Version) => {
            println!("opsvisor {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Ok(Command::Exec(args)) => exec::main(&args),
        Ok(Command::Run(run)) => match run_guest(*run) {
            Ok(code) => ExitCode::from(code),
            Err(message) => {
                eprintln!("opsvisor: {}", opsvisor::one_line(&message));
                ExitCode::from(STATUS_BAD_INPUT)
            }
        },
        Err(message) => {
            eprintln!("opsvisor: {message} (see 'opsvisor --help')");
            ExitCode::from(STATUS_BAD_INPUT)
        }
    }
}

fn run_guest(run: RunArgs) -> Result<u8, String> {
    let started = Instant::now();
    let mut platform = StdPlatform::new();
    let mut timeout = run.machine.timeout;
    loop {
        let (kernel, mut opts) = read_inputs(&run)?;
        opts.timeout = timeout;
        let mut vm = build_machine(&kernel, &opts, platform)
            .map_err(|e| format!("{}: {e}", run.kernel.display()))?;
        // The guest has its copy: the files' bytes are not kept for the run (a reboot
        // reads them again, as a PC's firmware loads the kernel again).
        drop(kernel);
        opts.modules = Vec::new();
        opts.initrd = None;
        if let Some(timeout) = opts.timeout {
            // Console output waits for a blocked stdout only until the timeout.
            let end = vm
                .platform
                .now_ns()
                .saturating_add(u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX));
            vm.platform.set_output_deadline(Some(end));
        }
        let outcome = vm.run();
        if outcome == RunOutcome::Reset && !run.no_reboot {
            if run.stats {
                print_stats(&vm);
            }
            // Boot the kernel again on a new machine, as a PC that resets runs its
            // firmware again; the console and the time limit carry over.
            if let Some(limit) = run.machine.timeout {
                timeout = Some(limit.saturating_sub(started.elapsed()));
            }
            platform = vm.into_platform();
            continue;
        }
        let dropped = vm.platform.drain_output();
        let lost = if dropped == 0 {
            String::new()
        } else {
            format!(" ({dropped} bytes of guest output were dropped: stdout took nothing more before the timeout)")
        };
        if run.stats {
            print_stats(&vm);
        }
        report_unimplemented(&vm.vcpu);
        let code = match outcome {
            RunOutcome::DebugExit { status } => {
                if dropped != 0 {
                    eprintln!("opsvisor: the guest finished{lost}");
                }
                status as u8
            }
            RunOutcome::PowerOff => {
                if dropped != 0 {
                    eprintln!("opsvisor: the guest powered off{lost}");
                }
                STATUS_POWER_OFF
            }
            RunOutcome::Reset => {
                eprintln!("opsvisor: the guest reset the machine (--no-reboot){lost}");
                STATUS_RESET
            }
            RunOutcome::TripleFault { rip } => {
                eprintln!("opsvisor: the guest triple-faulted at rip {rip:#x}{lost}");
                STATUS_TRIPLE_FAULT
            }
            RunOutcome::HaltedForever => {
                eprintln!("opsvisor: the guest halted with nothing that could wake it{lost}");
                STATUS_HALTED
            }
            RunOutcome::InstructionLimit => {
                eprintln!(
                    "opsvisor: stopped after the instruction limit ({}){lost}",
                    opts.max_instructions.unwrap_or(0)
                );
                STATUS_LIMIT
            }
            RunOutcome::Timeout => {
                eprintln!("opsvisor: stopped after the timeout{lost}");
                STATUS_LIMIT
            }
            RunOutcome::Failed(why) => {
                eprintln!("opsvisor: {why}{lost}");
                STATUS_FAILED
            }
        };
        return Ok(code);
    }
}

/// Read the kernel, the modules and the initrd, each checked against what can fit before
/// it is read (see `input`), into the machine options.
fn read_inputs(run: &RunArgs) -> Result<(Vec<u8>, MachineOptions), String> {
    let mut opts = run.machine.clone();
    let ram = opts.memory;
    let kernel = read_file(
        &run.kernel,
        "kernel",
        ram,
        &format!("the guest's {} of RAM (--memory)", size_text(ram)),
    )?;
    let mut room = ram.min(MMIO_HOLE_START);
    for (path, cmdline) in &run.modules {
        let bound = format!(
            "the {} of guest RAM below 4 GiB left for it (--memory)",
            size_text(room)
        );
        let data = read_file(path, "module", room, &bound)?;
        room -= data.len() as u64;
        opts.modules.push((cmdline.clone(), data));
    }
    if let Some(path) = &run.initrd {
        let bound = format!(
            "the {} of guest RAM below 4 GiB (--memory)",
            size_text(room)
        );
        opts.initrd = Some(read_file(path, "initrd", room, &bound)?);
    }
    Ok((kernel, opts))
}

fn print_stats<P: Platform>(vm: &opsvisor_backends::Machine<P>) {
    let secs = vm.run_time_ns() as f64 / 1e9;
    eprintln!("--- opsvisor statistics ({} backend) ---", vm.vcpu.name());
    eprintln!(
        "{:<20} {:>12} {:>14} {:>10}",
        "exit reason", "count", "host time", "per exit"
    );
    for (kind, count, ns) in vm.stats.rows() {
        eprintln!(
            "{:<20} {:>12} {:>11.3} ms {:>7} ns",
            kind.name(),
            count,
            ns as f64 / 1e6,
            ns / count.max(1)
        );
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
