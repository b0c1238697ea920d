//! The opsvisor command-line program: boot a kernel on a backend, with the guest's serial
//! console on stdin/stdout (or a file, or nothing) and the guest's debug-exit status as
//! the program's own.
//!
//! What stderr carries: the one line of a bad input or of how a run ended (the program's
//! contract, written whatever the log level), `--stats`' report, and diagnostics through
//! the `log` facade (warnings by default; `-v`, `-vv` and `RUST_LOG` show more).

use opsvisor::args::{self, Command, RunArgs, Serial};
use opsvisor::breakdown::Breakdown;
use opsvisor::exec;
use opsvisor::gdb::{GdbEnd, GdbServer};
use opsvisor::input::{read_file, size_text};
use opsvisor::observer::Observed;
use opsvisor::output::OutputFile;
use opsvisor::terminal::RawTerminal;
use opsvisor::trace::{TraceSummary, TraceWriter};
use opsvisor_backends::{build_machine, restore_machine, Backend, MachineOptions, MMIO_HOLE_START};
use opsvisor_core::platform::{Platform, StdPlatform};
use opsvisor_core::snapshot;
use opsvisor_core::vm::RunOutcome;
use opsvisor_core::X86Ops;
use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

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
/// Exit status when the user ended the run from the console (Ctrl-A x).
const STATUS_QUIT: u8 = 14;

/// Write the program's one line about a bad input or the run's end on stderr.
fn error_line(message: &str) {
    eprintln!("opsvisor: {}", opsvisor::one_line(message));
}

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().skip(1).collect();
    let invocation = match args::parse(&argv) {
        Ok(invocation) => invocation,
        Err(message) => {
            error_line(&format!("{message} (see 'opsvisor --help')"));
            return ExitCode::from(STATUS_BAD_INPUT);
        }
    };
    init_logging(invocation.verbosity);
    match invocation.command {
        Command::Help(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("opsvisor {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Completions(shell) => {
            let mut out = std::io::stdout().lock();
            clap_complete::generate(shell, &mut args::command(), "opsvisor", &mut out);
            match out.flush() {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error_line(&format!("cannot write the completion script: {e}"));
                    ExitCode::from(STATUS_FAILED)
                }
            }
        }
        Command::Exec(args) => exec::main(&args),
        Command::Run(run) => match run_guest(*run) {
            Ok(code) => ExitCode::from(code),
            Err(message) => {
                error_line(&message);
                ExitCode::from(STATUS_BAD_INPUT)
            }
        },
    }
}

/// Diagnostics on stderr through `log`: warnings and errors by default, more with each
/// `-v`; `RUST_LOG` (env_logger's syntax) overrides.
fn init_logging(verbosity: u8) {
    let level = match verbosity {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        2 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level);
    // The gdb stub's protocol chatter (packets gdb sends that it does not implement) only
    // at -vvv.
    let gdbstub = if verbosity >= 3 {
        log::LevelFilter::Trace
    } else {
        log::LevelFilter::Warn
    };
    builder.filter_module("gdbstub", gdbstub);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    builder
        .target(env_logger::Target::Stderr)
        .format(|out, record| {
            let level = match record.level() {
                log::Level::Error => "error: ",
                log::Level::Warn => "warning: ",
                log::Level::Info => "",
                log::Level::Debug => "debug: ",
                log::Level::Trace => "trace: ",
            };
            let text = opsvisor::one_line(&record.args().to_string());
            writeln!(out, "opsvisor: {level}{text}")
        });
    // Only fails when a logger is already set, which nothing else does.
    let _ = builder.try_init();
}

/// The program's side of a platform: the console for its deadline and last output, the
/// exit trace and breakdowns where they are attached.
trait Host: Platform {
    /// The console.
    fn console(&mut self) -> &mut StdPlatform;
    /// Past `at`, outputs that take nothing more drop instead of holding the run.
    fn set_deadline(&mut self, at_ns: Option<u64>) {
        self.console().set_output_deadline(at_ns);
    }
    /// The exit breakdowns, when `--stats` keeps them.
    fn breakdown(&self) -> Option<&Breakdown> {
        None
    }
    /// End the exit trace, if one is written.
    fn finish_trace(&mut self) -> Option<TraceSummary> {
        None
    }
}

impl Host for StdPlatform {
    fn console(&mut self) -> &mut StdPlatform {
        self
    }
}

impl Host for Observed<StdPlatform> {
    fn console(&mut self) -> &mut StdPlatform {
        &mut self.inner
    }

    fn set_deadline(&mut self, at_ns: Option<u64>) {
        self.inner.set_output_deadline(at_ns);
        let now = self.inner.now_ns();
        let at = at_ns.map(|ns| Instant::now() + Duration::from_nanos(ns.saturating_sub(now)));
        if let Some(trace) = &mut self.trace {
            trace.set_deadline(at);
        }
    }

    fn breakdown(&self) -> Option<&Breakdown> {
        self.breakdown.as_deref()
    }

    fn finish_trace(&mut self) -> Option<TraceSummary> {
        self.trace.as_mut().map(TraceWriter::finish)
    }
}

/// The console `--serial` asks for, and for stdio on a terminal the guard that keeps the
/// terminal raw (with QEMU's escape key: Ctrl-A x ends the run) until it is dropped.
fn open_console(serial: &Serial) -> Result<(StdPlatform, Option<RawTerminal>), String> {
    Ok(match serial {
        Serial::Stdio => {
            // From a pipe or a file every byte goes to the guest.
            let terminal = RawTerminal::enter();
            let escape = terminal.is_some();
            let console =
                StdPlatform::with_console_escape(std::io::stdin(), std::io::stdout(), escape);
            (console, terminal)
        }
        Serial::File(path) => {
            let file = OutputFile::create(path).map_err(|e| {
                format!("cannot create the serial output '{}': {e}", path.display())
            })?;
            (StdPlatform::with_console(std::io::empty(), file), None)
        }
        Serial::None => (
            StdPlatform::with_console(std::io::empty(), std::io::sink()),
            None,
        ),
    })
}

fn run_guest(run: RunArgs) -> Result<u8, String> {
    // The terminal stays raw for the run (and the reboots), restored when this returns.
    let (console, _terminal) = open_console(&run.serial)?;
    log::info!(
        "console: {}",
        match &run.serial {
            Serial::Stdio => String::from("stdin and stdout"),
            Serial::File(path) => format!("output to '{}', no input", path.display()),
            Serial::None => String::from("nothing attached"),
        }
    );
    if run.trace.is_none() && !run.breakdown {
        return run_machine(&run, console);
    }
    let trace = run.trace.as_ref().map(TraceWriter::create).transpose()?;
    if let Some(options) = &run.trace {
        log::info!("exit trace: '{}'", options.path.display());
    }
    let host = Observed {
        inner: console,
        trace,
        breakdown: run.breakdown.then(Box::default),
    };
    run_machine(&run, host)
}

/// Build the machine and run it to its end, booting it again after a reset unless
/// `--no-reboot`; the exit status.
fn run_machine<H: Host>(run: &RunArgs, mut platform: H) -> Result<u8, String> {
    let started = Instant::now();
    let mut gdb = run.gdb.as_ref().map(GdbServer::bind).transpose()?;
    let mut timeout = run.machine.timeout;
    if let Some(limit) = timeout {
        // Outputs that stdout or a file does not take wait only until the timeout.
        let end = platform
            .now_ns()
            .saturating_add(u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX));
        platform.set_deadline(Some(end));
    }
    loop {
        let (mut vm, opts) = match &run.restore {
            Some(path) => {
                let mut opts = run.machine.clone();
                opts.timeout = timeout;
                (restore_snapshot(run, path, &opts, platform)?, opts)
            }
            None => boot(run, timeout, platform)?,
        };
        let run_started = Instant::now();
        let outcome = match &mut gdb {
            Some(server) => match server.run(&mut vm)? {
                GdbEnd::Outcome(outcome) => outcome,
                GdbEnd::Killed => {
                    vm.platform.console().drain_output();
                    error_line("ended by gdb (kill)");
                    return Ok(STATUS_QUIT);
                }
            },
            None => run_with_snapshot(&mut vm, run)?,
        };
        let run_secs = match gdb {
            Some(_) => run_started.elapsed().as_secs_f64(),
            None => vm.run_time_ns() as f64 / 1e9,
        };
        log::info!(
            "the run ended after {run_secs:.3} s and {} exits: {outcome:?}",
            vm.stats.total()
        );
        let reboot = !run.no_reboot && gdb.is_none() && run.restore.is_none();
        if outcome == RunOutcome::Reset && reboot {
            if run.stats {
                print_stats(&vm, run_secs);
            }
            log::info!("the guest reset the machine: booting the kernel again");
            if let Some(limit) = run.machine.timeout {
                timeout = Some(limit.saturating_sub(started.elapsed()));
            }
            platform = vm.into_platform();
            continue;
        }
        return Ok(report_end(run, vm, &opts, outcome, run_secs, gdb.is_some()));
    }
}

/// The machine of the snapshot at `path` (`--restore`). The file is read only as far
/// as its machine's RAM justifies: RAM pages, and fw_cfg's copies of the boot files, at
/// most twice the RAM, and 16 MiB for everything else.
fn restore_snapshot<H: Host>(
    run: &RunArgs,
    path: &std::path::Path,
    opts: &MachineOptions,
    platform: H,
) -> Result<opsvisor_backends::Machine<H>, String> {
    use std::io::Read as _;
    let name = path.display();
    let mut prefix = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(1 << 16).read_to_end(&mut prefix))
        .map_err(|e| format!("cannot read snapshot '{name}': {e}"))?;
    let machine = snapshot::peek_machine(&prefix).map_err(|e| format!("{name}: {e}"))?;
    let ram: u64 = machine.ram.iter().map(|r| r.1).sum();
    let mut conflicts = Vec::new();
    if let Some(memory) = run.given.memory.filter(|&m| m != ram) {
        conflicts.push(format!(
            "--memory {} (the snapshot's machine has {})",
            size_text(memory),
            size_text(ram)
        ));
    }
    if let Some(smp) = run.given.smp.filter(|&n| n != machine.vcpus) {
        conflicts.push(format!(
            "--smp {smp} (the snapshot's machine has {} vCPUs)",
            machine.vcpus
        ));
    }
    if run.given.icount && !machine.icount {
        conflicts.push(String::from(
            "--icount (the snapshot's machine keeps host time)",
        ));
    }
    if run.given.cpu {
        conflicts.push(String::from(
            "--cpu (the snapshot's machine keeps the CPU model it was saved with)",
        ));
    }
    if run.given.pc_testdev && !machine.pc_testdev {
        conflicts.push(String::from(
            "--device pc-testdev (the snapshot's machine has none)",
        ));
    }
    if !conflicts.is_empty() {
        return Err(format!(
            "{name}: {} conflict{} with the snapshot; the machine's options come from the file",
            conflicts.join(", "),
            if conflicts.len() == 1 { "s" } else { "" }
        ));
    }
    let limit = ram.saturating_mul(2).saturating_add(16 << 20);
    let bytes = read_file(
        path,
        "snapshot",
        limit,
        &format!("what a machine of {} of RAM saves", size_text(ram)),
    )?;
    let started = Instant::now();
    let vm = restore_machine(&bytes, opts, platform).map_err(|e| format!("{name}: {e}"))?;
    log::info!(
        "restored '{name}' ({} bytes) in {:.3} s: {} of RAM, {} vCPU{}{}",
        bytes.len(),
        started.elapsed().as_secs_f64(),
        size_text(ram),
        machine.vcpus,
        if machine.vcpus == 1 { "" } else { "s" },
        if machine.icount { ", --icount" } else { "" }
    );
    Ok(vm)
}

/// Run the machine, saving it on the way where `--snapshot-at` asks: the run stops
/// after N instructions, the snapshot is written, and the run goes on under what is left
/// of `--max-instructions`.
fn run_with_snapshot<H: Host>(
    vm: &mut opsvisor_backends::Machine<H>,
    run: &RunArgs,
) -> Result<RunOutcome, String> {
    let Some(snap) = &run.snapshot else {
        return Ok(vm.run());
    };
    let limit = vm.config.max_instructions;
    if limit.is_some_and(|max| max < snap.at) {
        log::warn!(
            "--snapshot-at {} is beyond --max-instructions: no snapshot is taken",
            snap.at
        );
        return Ok(vm.run());
    }
    let before = vm.instructions_retired().unwrap_or(0);
    vm.config.max_instructions = Some(snap.at);
    let outcome = vm.run();
    if outcome != RunOutcome::InstructionLimit {
        log::warn!(
            "the run ended before --snapshot-at {}: no snapshot is taken",
            snap.at
        );
        return Ok(outcome);
    }
    let started = Instant::now();
    let bytes = snapshot::save(vm).map_err(|e| format!("cannot take the snapshot: {e}"))?;
    let saved = started.elapsed();
    std::fs::write(&snap.path, &bytes)
        .map_err(|e| format!("cannot write the snapshot '{}': {e}", snap.path.display()))?;
    let done = vm
        .instructions_retired()
        .unwrap_or(0)
        .saturating_sub(before);
    log::info!(
        "snapshot after {done} instructions: {} bytes to '{}' (saved in {:.3} s, written in {:.3} s)",
        bytes.len(),
        snap.path.display(),
        saved.as_secs_f64(),
        (started.elapsed() - saved).as_secs_f64()
    );
    vm.config.max_instructions = limit.map(|max| max.saturating_sub(done));
    if vm.config.max_instructions == Some(0) {
        return Ok(RunOutcome::InstructionLimit);
    }
    Ok(vm.run())
}

/// A machine booted from the kernel (and modules, initrd) of `run`.
fn boot<H: Host>(
    run: &RunArgs,
    timeout: Option<Duration>,
    platform: H,
) -> Result<(opsvisor_backends::Machine<H>, MachineOptions), String> {
    {
        let (kernel, mut opts) = read_inputs(run)?;
        opts.timeout = timeout;
        log::info!(
            "booting '{}' ({} bytes) on the {} backend: {} of RAM, {} vCPU{}",
            run.kernel.display(),
            kernel.len(),
            format!("{:?}", opts.backend).to_lowercase(),
            size_text(opts.memory),
            opts.vcpus,
            if opts.vcpus == 1 { "" } else { "s" }
        );
        let vm = build_machine(&kernel, &opts, platform)
            .map_err(|e| format!("{}: {e}", run.kernel.display()))?;
        // The guest has its copy: the files' bytes are not kept for the run (a reboot
        // reads them again, as a PC's firmware loads the kernel again).
        drop(kernel);
        opts.modules = Vec::new();
        opts.initrd = None;
        Ok((vm, opts))
    }
}

/// The end of a run: statistics, reports, and the exit status.
fn report_end<H: Host>(
    run: &RunArgs,
    mut vm: opsvisor_backends::Machine<H>,
    opts: &MachineOptions,
    outcome: RunOutcome,
    run_secs: f64,
    under_gdb: bool,
) -> u8 {
    {
        let dropped = vm.platform.console().drain_output();
        let trace = vm.platform.finish_trace();
        if run.stats {
            print_stats(&vm, run_secs);
        }
        for vcpu in vm.vcpus() {
            report_unimplemented(&vcpu.backend);
        }
        let mut lost = String::new();
        if dropped != 0 {
            lost = format!(" ({dropped} bytes of guest output were dropped: the console took nothing more before the timeout)");
        }
        if let Some(t) = &trace {
            report_trace(run, t, &mut lost);
        }
        let code = match outcome {
            RunOutcome::DebugExit { status } => {
                if !lost.is_empty() {
                    error_line(&format!("the guest finished{lost}"));
                }
                status as u8
            }
            RunOutcome::PowerOff => {
                if !lost.is_empty() {
                    error_line(&format!("the guest powered off{lost}"));
                }
                STATUS_POWER_OFF
            }
            RunOutcome::Reset => {
                let why = if under_gdb {
                    "a reset ends a run under --gdb"
                } else if run.restore.is_some() {
                    "a reset ends a run from --restore"
                } else {
                    "--no-reboot"
                };
                error_line(&format!("the guest reset the machine ({why}){lost}"));
                STATUS_RESET
            }
            RunOutcome::Quit => {
                error_line(&format!("ended from the console (Ctrl-A x){lost}"));
                STATUS_QUIT
            }
            RunOutcome::TripleFault { rip } => {
                error_line(&format!("the guest triple-faulted at rip {rip:#x}{lost}"));
                STATUS_TRIPLE_FAULT
            }
            RunOutcome::HaltedForever => {
                error_line(&format!(
                    "the guest halted with nothing that could wake it{lost}"
                ));
                STATUS_HALTED
            }
            RunOutcome::InstructionLimit => {
                error_line(&format!(
                    "stopped after the instruction limit ({}){lost}",
                    opts.max_instructions.unwrap_or(0)
                ));
                STATUS_LIMIT
            }
            RunOutcome::Timeout => {
                error_line(&format!("stopped after the timeout{lost}"));
                STATUS_LIMIT
            }
            RunOutcome::Debug { vector } => {
                error_line(&format!(
                    "the backend stopped for a debugger (vector {vector}) with none attached{lost}"
                ));
                STATUS_FAILED
            }
            RunOutcome::Failed(why) => {
                error_line(&format!("{why}{lost}"));
                STATUS_FAILED
            }
        };
        code
    }
}

/// How the exit trace went: a failed file is a warning of its own; records dropped at
/// the deadline join the run's last line, as dropped console output does.
fn report_trace(run: &RunArgs, t: &TraceSummary, lost: &mut String) {
    let path = run
        .trace
        .as_ref()
        .map(|o| o.path.display().to_string())
        .unwrap_or_default();
    match &t.error {
        Some(error) => log::warn!(
            "the exit trace '{path}' is incomplete: writing it failed ({error}); {} records written, {} lost",
            t.written,
            t.dropped
        ),
        None if t.dropped != 0 => lost.push_str(&format!(
            " ({} exit trace records were dropped: '{path}' took nothing more before the timeout)",
            t.dropped
        )),
        None => log::info!("exit trace: {} records written to '{path}'", t.written),
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
        log::debug!("module '{}': {} bytes", path.display(), data.len());
        room -= data.len() as u64;
        opts.modules.push((cmdline.clone(), data));
    }
    if let Some(path) = &run.initrd {
        let bound = format!(
            "the {} of guest RAM below 4 GiB (--memory)",
            size_text(room)
        );
        let data = read_file(path, "initrd", room, &bound)?;
        log::debug!("initrd '{}': {} bytes", path.display(), data.len());
        opts.initrd = Some(data);
    }
    Ok((kernel, opts))
}

/// `--stats`' report; `secs` is how long the run took.
fn print_stats<H: Host>(vm: &opsvisor_backends::Machine<H>, secs: f64) {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "--- opsvisor statistics ({} backend) ---",
        vm.bsp().backend.name()
    );
    // Host time per exit only when it was measured (--stats, not --stats-counts).
    let timed = vm.config.collect_timing;
    let _ = write!(out, "{:<24} {:>12} {:>8}", "exit reason", "count", "share");
    let _ = if timed {
        writeln!(out, " {:>14} {:>10}", "host time", "per exit")
    } else {
        writeln!(out)
    };
    let total = vm.stats.total();
    for (kind, count, ns) in vm.stats.rows() {
        let share = count as f64 * 100.0 / total.max(1) as f64;
        let _ = write!(out, "  {:<22} {count:>12} {share:>7.2}%", kind.name());
        let _ = if timed {
            writeln!(
                out,
                " {:>11.3} ms {:>7} ns",
                ns as f64 / 1e6,
                ns / count.max(1)
            )
        } else {
            writeln!(out)
        };
    }
    let _ = writeln!(out, "{:<24} {:>12}", "total exits", total);
    if let Some(breakdown) = vm.platform.breakdown() {
        out.push_str(&breakdown.report());
    }
    if let Some(instructions) = vm.instructions_retired() {
        let rate = if secs > 0.0 {
            instructions as f64 / secs
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "instructions             {instructions:>12} in {secs:.3} s = {:.1} million/s",
            rate / 1e6
        );
    } else {
        let _ = writeln!(out, "run time                 {secs:.3} s");
    }
    let (unknown, last) = vm.unknown_msr_accesses();
    if unknown > 0 {
        let _ = writeln!(
            out,
            "unknown MSR accesses     {:>12} (last {:#x}), each raised #GP",
            unknown,
            last.unwrap_or(0)
        );
    }
    let _ = std::io::stderr().lock().write_all(out.as_bytes());
}

fn report_unimplemented(vcpu: &Backend) {
    if let Backend::Emu(slot) = vcpu {
        let missing: Vec<String> = slot
            .0
            .unimplemented()
            .map(|(mnemonic, n)| format!("{} x{n}", format!("{mnemonic:?}").to_lowercase()))
            .collect();
        if !missing.is_empty() {
            log::warn!(
                "the guest executed instructions the emulator does not implement (each raised #UD): {}",
                missing.join(", ")
            );
        }
    }
}
