//! Command-line parsing, on clap (derive): the subcommands `run`, `exec` and
//! `completions`, each with its own `--help`, and the global `-v`. [`parse`] turns every
//! error clap reports into the program's one line naming the option and what was wrong
//! with it.
//!
//! Arguments are `OsString`s, as the operating system gives them: paths stay paths
//! whatever bytes they hold, and `--append` and `--module` strings reach the guest as the
//! bytes given. Option names and numbers must be text. Every option that takes a value
//! takes the next word whatever it starts with (`--timeout -1` is a bad timeout, not an
//! unknown option `-1`), and each may be given once, except `--module` and `-v`.

use crate::trace::{ExitFilter, TraceOptions};
use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use clap::{ArgAction, Args, CommandFactory, Parser, Subcommand};
use opsvisor_backends::{parse_smp, BackendKind, FlatMode, MachineOptions, MAX_MEMORY, MIN_MEMORY};
use opsvisor_clap_errors::Problem;
use opsvisor_core::cpu_model::CpuModel;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::time::Duration;

pub use clap_complete::Shell;

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Print this help text.
    Help(String),
    /// Print the version.
    Version,
    /// Boot a kernel.
    Run(Box<RunArgs>),
    /// Run a snippet from a JSON state (`opsvisor exec`).
    Exec(crate::exec::ExecArgs),
    /// Print a completion script for a shell.
    Completions(Shell),
}

/// A parsed command line: the command and the global options.
#[derive(Debug)]
pub struct Invocation {
    /// What to do.
    pub command: Command,
    /// How many `-v` were given: 0 shows warnings and errors, 1 also what the program
    /// does (info), 2 details (debug), 3 or more everything (trace).
    pub verbosity: u8,
}

/// Where the guest's COM1 goes (`--serial`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Serial {
    /// This program's stdin and stdout.
    #[default]
    Stdio,
    /// Output written to a file (created, or truncated); no input.
    File(PathBuf),
    /// Nothing attached: output is discarded, no input arrives.
    None,
}

/// `opsvisor run` options.
#[derive(Debug)]
pub struct RunArgs {
    /// Kernel image path (with `--restore`, the snapshot's).
    pub kernel: PathBuf,
    /// (path, module string) for every `--module`, in order.
    pub modules: Vec<(PathBuf, Vec<u8>)>,
    /// `--initrd`: the Linux kernel's initial ramdisk.
    pub initrd: Option<PathBuf>,
    /// Print exit statistics at the end (`--stats` or `--stats-counts`).
    pub stats: bool,
    /// `--stats`: with host time per exit and the breakdowns by vCPU, port, MSR, MMIO
    /// address and CPUID leaf (`--stats-counts` alone: counts by reason, nothing on the
    /// exit path but the count).
    pub breakdown: bool,
    /// `--no-reboot`: a guest that resets the machine ends the run instead of starting
    /// again.
    pub no_reboot: bool,
    /// `--serial`: where COM1 goes.
    pub serial: Serial,
    /// `--trace-exits` and `--trace-filter`.
    pub trace: Option<TraceOptions>,
    /// `--gdb` and `--gdb-wait`: a GDB remote stub.
    pub gdb: Option<GdbOptions>,
    /// `--snapshot-at` and `--snapshot-out`.
    pub snapshot: Option<SnapshotOut>,
    /// `--restore`: the snapshot to start from (then `kernel` is its path too).
    pub restore: Option<PathBuf>,
    /// The machine options given explicitly.
    pub given: Given,
    /// Everything else, ready for the machine builder (without the modules' bytes).
    pub machine: MachineOptions,
}

/// `--snapshot-at N --snapshot-out FILE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotOut {
    /// Guest instructions from the start of the run after which the machine is saved.
    pub at: u64,
    /// Where.
    pub path: PathBuf,
}

/// Machine options the command line gave explicitly (with `--restore` the file gives
/// them, and an explicit one that differs is an error).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Given {
    /// `--memory`.
    pub memory: Option<u64>,
    /// `--smp`.
    pub smp: Option<u32>,
    /// `--icount`.
    pub icount: bool,
    /// `--cpu`.
    pub cpu: bool,
    /// `--device pc-testdev`.
    pub pc_testdev: bool,
}

/// Where the GDB stub listens and whether the guest waits for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GdbOptions {
    /// The address to listen on (`--gdb tcp:HOST:PORT`, or `tcp::PORT` for every
    /// interface as QEMU's `-gdb tcp::1234`).
    pub listen: String,
    /// `--gdb-wait`: stop before the guest's first instruction until gdb connects and
    /// continues it (QEMU's `-S`); without it the guest runs and gdb may attach later.
    pub wait: bool,
}

/// `--gdb DEV`: QEMU's spelling of a TCP address, `tcp::PORT` or `tcp:HOST:PORT`.
pub(crate) fn gdb_address(text: &str) -> Result<String, String> {
    let bad = || format!("--gdb: '{text}' is not tcp::PORT or tcp:HOST:PORT");
    let rest = text.strip_prefix("tcp:").ok_or_else(bad)?;
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("--gdb: '{port}' in '{text}' is not a TCP port (0 to 65535)"))?;
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    if host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(bad());
    }
    Ok(format!("{host}:{port}"))
}

/// The first lines of `opsvisor --help`.
const ABOUT: &str = "\
opsvisor: an x86-64 virtual machine framework. This program runs guests on its software
CPU (the emulator backend); the VMX and SVM backends run in opsvisor's bare-metal image
(see 'cargo xtask help').";

/// The end of `opsvisor --help`.
const EXIT_STATUS: &str = "\
Each command has its own help: 'opsvisor run --help', 'opsvisor exec --help'.

EXIT STATUS:
    odd     the guest's debug-exit status (V << 1) | 1 (opsvisor run)
    0       the guest powered the machine off (ACPI S5, e.g. Linux's poweroff); --help,
            --version, completions; opsvisor exec ran its state(s)
    2       bad input: missing or invalid kernel, module or state, bad option (one error
            line on stderr)
    4       the guest triple-faulted
    6       the guest halted with interrupts off or no timer to wake it
    8       --timeout or --max-instructions ended the run
    10      the backend could not continue (reported on stderr)
    12      the guest reset the machine and --no-reboot was given
    14      the run was ended from the console (Ctrl-A x) or by gdb's kill (--gdb)

ENVIRONMENT:
    RUST_LOG    diagnostics to show on stderr, in env_logger's syntax (e.g. debug,
                opsvisor=info); it overrides -v";

/// The end of `opsvisor run --help`.
const RUN_NOTES: &str = "\
KERNEL is, checked in this order as QEMU's -kernel does, a multiboot v1 kernel (ELF32,
ELF64 or a.out-kludge), a Linux bzImage, an ELF kernel with a PVH entry note (a Linux
vmlinux), or, with --flat, a flat binary. The machine is a PC (8259 PICs, I/O APIC, PIT,
CMOS RTC, 8042, PCI host bridge, ACPI with a PM timer and S5, QEMU's fw_cfg). A guest
write of V to port 0xf4 ends the run with exit status (V << 1) | 1, as QEMU's
isa-debug-exit.

LIMITS:
    The kernel file and each module must fit in guest RAM: a file larger than guest RAM
    (or, for modules, than what guest RAM below 4 GiB leaves after the modules before
    it) is refused before it is read. Devices (/dev/zero, ...) are refused; pipes are read
    up to the same bound.

CONSOLE:
    With --serial stdio (the default), on a terminal the console is raw (every key, Ctrl-C
    included, goes to the guest) and Ctrl-A is QEMU's escape key: Ctrl-A x ends the run,
    Ctrl-A Ctrl-A sends Ctrl-A, Ctrl-A h lists the keys. From a pipe or a file every byte
    goes to the guest. Input is read from stdin only as fast as the guest reads it (at
    most 4 KiB ahead). Output waits for its destination when it does not
    take it (a paused terminal, a full pipe, a slow disk), as a serial line with flow
    control does; with --timeout, output not taken when the timeout passes is dropped,
    the count is reported, and the run ends on time.

GDB (--gdb tcp::PORT, --gdb-wait):
    gdb's 'target remote :PORT' sees an x86-64 thread per vCPU (as QEMU's: 'info threads'
    lists \"CPU#0 [running]\", \"CPU#1 [halted]\", ...; 'thread N' picks vCPU N-1's
    registers and page tables): general, segment, x87 and SSE registers, memory by virtual
    address, break and hbreak (nothing is written into guest memory), watch, rwatch,
    awatch (all on every vCPU; a stop names the vCPU's thread), stepi (the thread's vCPU
    alone: the others stay stopped), continue (all vCPUs), Ctrl-C (stops all); 'monitor
    info registers' adds the control registers and EFER of the current vCPU (-a: of every
    vCPU; 'monitor cpu N' makes vCPU N current, as QEMU's monitor). The run's end
    reaches gdb as a process's exit code (the debug exit's status) or signal (SIGSEGV a
    triple fault, SIGSTOP a halt for good, SIGALRM a limit, SIGHUP a reset, which ends
    the run under gdb). detach lets the guest run on; kill ends the run (status 14).

SNAPSHOTS (--snapshot-at N --snapshot-out FILE, --restore FILE, --icount):
    --snapshot-at saves the whole machine (vCPUs, devices, RAM; docs/snapshot.md has the
    format) to FILE once N guest instructions have run, counted, as --max-instructions,
    from the start of the run, then runs on. --restore starts from such a file instead of
    a kernel: RAM, vCPUs and --icount come from it (a different --memory or --smp is an
    error); a guest reset then ends the run as with --no-reboot. With --icount (QEMU's
    -icount shift=0,sleep=off) the machine clock counts guest instructions, 1 ns each, and
    jumps over idle time: a run repeats exactly, and a restored machine continues exactly
    as the one saved did. Without it the clock is the host's and timer interrupts land
    where host time puts them.

EXIT TRACE (--trace-exits FILE):
    One JSON object per line and exit, written as the guest runs (a bounded buffer: a slow
    FILE slows the guest, as the console does), e.g.
      {\"time_ns\":5210,\"vcpu\":0,\"reason\":\"io\",\"rip\":\"0x100a3c\",\"port\":\"0x3f8\",\"size\":1,\"direction\":\"write\",\"value\":\"0x68\"}
    time_ns is the machine clock (ns since the program started), vcpu the vCPU's index,
    rip the vCPU's RIP at the exit: the exiting instruction's (the emulator posts MMIO
    writes, so theirs is the next instruction's), reason one of: cpuid, rdmsr, wrmsr, io, mmio,
    hlt, interrupt-window, nmi-window, preempted, external-interrupt, slat-violation,
    exception, triple-fault, xsetbv, cache-flush, hypercall, cr8, entry-failed,
    emulation-failure, pause (--trace-filter takes these, msr for both MSR kinds, and
    all). Then, by reason: cpuid leaf, subleaf; rdmsr/wrmsr msr, value (rdmsr: absent if the read
    raised #GP); io port, size, direction (read|write), value (a read's: what the guest
    got); mmio gpa, size, direction, value; slat-violation gpa; exception vector,
    error_code (absent if none); xsetbv xcr, value; cr8 direction, value (a MOV to CR8's
    operand, a MOV from CR8's result); entry-failed code, detail. Addresses
    and values are 0x-prefixed hex strings; time_ns, vcpu, size, vector and xcr are
    numbers. jq reads it: jq -r 'select(.reason==\"io\") | .port' FILE | sort | uniq -c";

/// The command line as clap sees it.
#[derive(Parser, Debug)]
#[command(
    name = "opsvisor",
    version,
    about = ABOUT,
    after_help = EXIT_STATUS,
    subcommand_value_name = "COMMAND",
    max_term_width = 100
)]
struct Cli {
    /// More diagnostics on stderr: -v what the program does, -vv details, -vvv all
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Option<Sub>,
}

#[derive(Subcommand, Debug)]
enum Sub {
    /// Boot a kernel on the emulator
    #[command(after_long_help = RUN_NOTES)]
    Run(Box<RunCli>),
    /// Run a code snippet on the emulator from a JSON state and print the final state
    #[command(after_long_help = crate::exec::FORMAT)]
    Exec(crate::exec::ExecCli),
    /// Print a completion script for SHELL (bash, zsh, fish, elvish, powershell)
    #[command(after_long_help = "\
Install for bash, e.g.:  opsvisor completions bash > ~/.local/share/bash-completion/completions/opsvisor
for zsh, into a directory of $fpath as _opsvisor; for fish, ~/.config/fish/completions/opsvisor.fish")]
    Completions {
        /// The shell
        #[arg(value_name = "SHELL", value_parser = Checked(shell))]
        shell: Shell,
    },
}

/// `opsvisor run`, as clap sees it.
#[derive(Args, Debug)]
struct RunCli {
    /// The kernel (as --kernel)
    #[arg(value_name = "KERNEL", value_parser = clap::value_parser!(OsString))]
    kernel_operand: Option<OsString>,
    /// The kernel image (also accepted as the operand KERNEL)
    #[arg(long, value_name = "FILE", allow_hyphen_values = true,
          value_parser = clap::value_parser!(OsString), conflicts_with = "kernel_operand")]
    kernel: Option<OsString>,
    /// Backend to run on: emu [default: emu]
    #[arg(long, value_name = "NAME", allow_hyphen_values = true, value_parser = Checked(backend))]
    backend: Option<BackendKind>,
    /// CPU model, as QEMU's -cpu spells it: max (every feature the backend implements) or
    /// qemu64 (QEMU's baseline: SSE3, CX16, NX, LM), with features added (+F, F=on) or
    /// removed (-F, F=off) by QEMU's names, e.g. max,-la57 or qemu64,+smep,+xsave
    /// [default: max]
    #[arg(long, value_name = "MODEL[,+F][,-F]", allow_hyphen_values = true,
          value_parser = Checked(cpu_model))]
    cpu: Option<CpuModel>,
    /// Guest RAM, e.g. 256M, 1G, 65536K: a multiple of 4K from 2M to 64G [default: 256M]
    #[arg(short = 'm', long, value_name = "SIZE", allow_hyphen_values = true,
          value_parser = Checked(memory_size))]
    memory: Option<u64>,
    /// vCPUs: N or cpus=N, 1 to 255 [default: 1]; vCPU 0 boots the kernel, the others
    /// wait for its INIT and start-up IPIs
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = Checked(parse_smp))]
    smp: Option<u32>,
    /// Kernel command line (multiboot, Linux), passed as given
    #[arg(long, value_name = "STRING", allow_hyphen_values = true,
          value_parser = clap::value_parser!(OsString))]
    append: Option<OsString>,
    /// Add a device (repeatable): pc-testdev (QEMU's ISA test device: ports 0xE0-0xEB and
    /// 0x2000-0x2017, MMIO at 0xFF000000); isa-debug-exit[,iobase=0xf4][,iosize=4] is always
    /// there and accepted as a no-op
    #[arg(long, value_name = "DRIVER[,PROP=VALUE...]", action = ArgAction::Append,
          allow_hyphen_values = true, value_parser = Checked(device))]
    device: Vec<Device>,
    /// Add a multiboot module; its string is 'FILE [ARGS]' (repeatable)
    #[arg(long, value_name = "'FILE [ARGS]'", action = ArgAction::Append,
          allow_hyphen_values = true, value_parser = clap::value_parser!(OsString))]
    module: Vec<OsString>,
    /// Initial ramdisk of a Linux kernel (bzImage or PVH)
    #[arg(long, value_name = "FILE", allow_hyphen_values = true,
          value_parser = clap::value_parser!(OsString))]
    initrd: Option<OsString>,
    /// The guest's COM1: stdio, file:PATH (output only) or none [default: stdio]
    #[arg(long, value_name = "DEV", allow_hyphen_values = true, value_parser = SerialParser)]
    serial: Option<Serial>,
    /// On a guest reset, end the run (status 12) instead of booting again (QEMU's -no-reboot)
    #[arg(long)]
    no_reboot: bool,
    /// At the end, print exits by reason, vCPU, port, MSR, MMIO address, CPUID leaf on stderr
    #[arg(long)]
    stats: bool,
    /// --stats' counts by reason only: no clock reads per exit (what benchmarks use)
    #[arg(long)]
    stats_counts: bool,
    /// Write one JSON line per exit to FILE (see EXIT TRACE below)
    #[arg(long, value_name = "FILE", allow_hyphen_values = true,
          value_parser = clap::value_parser!(OsString))]
    trace_exits: Option<OsString>,
    /// Trace only these exit reasons, comma-separated (see EXIT TRACE below)
    #[arg(long, value_name = "LIST", allow_hyphen_values = true,
          value_parser = Checked(ExitFilter::parse), requires = "trace_exits")]
    trace_filter: Option<ExitFilter>,
    /// Serve GDB's remote protocol on DEV: tcp::PORT (all interfaces) or tcp:HOST:PORT
    #[arg(long, value_name = "DEV", allow_hyphen_values = true, value_parser = Checked(gdb_address))]
    gdb: Option<String>,
    /// With --gdb: stop before the first instruction until gdb continues (QEMU's -S)
    #[arg(long, requires = "gdb")]
    gdb_wait: bool,
    /// Stop after N guest instructions
    #[arg(long, value_name = "N", allow_hyphen_values = true,
          value_parser = Checked(max_instructions))]
    max_instructions: Option<u64>,
    /// Stop after SECONDS of wall-clock time (decimals allowed)
    #[arg(long, value_name = "SECONDS", allow_hyphen_values = true,
          value_parser = Checked(parse_timeout))]
    timeout: Option<Duration>,
    /// KERNEL is a flat binary (implied by --load-addr, --entry and --mode)
    #[arg(long)]
    flat: bool,
    /// Flat binary: guest-physical load address [default: 0x7c00 real, 0x100000 protected]
    #[arg(long, value_name = "ADDR", allow_hyphen_values = true, value_parser = Checked(load_addr))]
    load_addr: Option<u64>,
    /// Flat binary: entry point [default: the load address]
    #[arg(long, value_name = "ADDR", allow_hyphen_values = true, value_parser = Checked(entry))]
    entry: Option<u64>,
    /// Flat binary: CPU mode at entry, real or protected [default: protected]
    #[arg(long, value_name = "MODE", allow_hyphen_values = true, value_parser = Checked(flat_mode))]
    mode: Option<FlatMode>,
    /// Machine clock counts guest instructions, 1 ns each (QEMU's -icount shift=0,sleep=off)
    #[arg(long)]
    icount: bool,
    /// Save the machine to --snapshot-out after N guest instructions (see SNAPSHOTS below)
    #[arg(long, value_name = "N", allow_hyphen_values = true,
          value_parser = Checked(snapshot_at), requires = "snapshot_out", conflicts_with = "gdb")]
    snapshot_at: Option<u64>,
    /// The file --snapshot-at writes (created, or truncated)
    #[arg(long, value_name = "FILE", allow_hyphen_values = true,
          value_parser = clap::value_parser!(OsString), requires = "snapshot_at")]
    snapshot_out: Option<OsString>,
    /// Start from a snapshot instead of a kernel (see SNAPSHOTS below)
    #[arg(long, value_name = "FILE", allow_hyphen_values = true,
          value_parser = clap::value_parser!(OsString),
          conflicts_with_all = ["kernel_operand", "kernel", "append", "module", "initrd",
                                "flat", "load_addr", "entry", "mode"])]
    restore: Option<OsString>,
}

/// A value parser from a function of the value's text: a value that is not UTF-8 is
/// refused naming the option, and the function's error is the error line.
#[derive(Clone)]
pub(crate) struct Checked<T>(pub(crate) fn(&str) -> Result<T, String>);

/// `--name` of `arg` (or its value name, for an operand).
pub(crate) fn arg_name(arg: Option<&clap::Arg>) -> String {
    match arg {
        Some(a) => match a.get_long() {
            Some(long) => format!("--{long}"),
            None => a.get_id().to_string(),
        },
        None => String::from("the value"),
    }
}

impl<T: Clone + Send + Sync + 'static> TypedValueParser for Checked<T> {
    type Value = T;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let text = value.to_str().ok_or_else(|| {
            clap::Error::raw(
                ErrorKind::InvalidUtf8,
                format!(
                    "the value of {} '{}' is not valid UTF-8",
                    arg_name(arg),
                    value.to_string_lossy().escape_debug()
                ),
            )
        })?;
        (self.0)(text).map_err(|message| clap::Error::raw(ErrorKind::ValueValidation, message))
    }
}

/// `--serial`: its value may hold a path that is not UTF-8.
#[derive(Clone)]
struct SerialParser;

impl TypedValueParser for SerialParser {
    type Value = Serial;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<Serial, clap::Error> {
        let bytes = value.as_bytes();
        match bytes {
            b"stdio" => Ok(Serial::Stdio),
            b"none" => Ok(Serial::None),
            _ => match bytes.strip_prefix(b"file:") {
                Some(path) if !path.is_empty() => Ok(Serial::File(PathBuf::from(
                    OsString::from_vec(path.to_vec()),
                ))),
                Some(_) => Err(clap::Error::raw(
                    ErrorKind::ValueValidation,
                    "invalid --serial 'file:': the file name is missing (file:PATH)",
                )),
                None => Err(clap::Error::raw(
                    ErrorKind::ValueValidation,
                    format!(
                        "invalid --serial '{}': expected stdio, file:PATH or none",
                        value.to_string_lossy().escape_debug()
                    ),
                )),
            },
        }
    }
}

/// Parse a size: a number with an optional K, M or G suffix (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (digits, shift) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 10),
        Some((i, 'M' | 'm')) => (&t[..i], 20),
        Some((i, 'G' | 'g')) => (&t[..i], 30),
        _ => (t, 0),
    };
    let n: u64 = digits.parse().map_err(|_| {
        format!("invalid size '{text}': expected a number with an optional K, M or G suffix")
    })?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size '{text}' is too large"))
}

/// Parse a number in decimal or 0x-prefixed hexadecimal.
pub fn parse_u64(text: &str, what: &str) -> Result<u64, String> {
    let t = text.trim().replace('_', "");
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => t.parse(),
    };
    parsed.map_err(|_| format!("invalid {what} '{text}': expected a decimal or 0x-prefixed number"))
}

/// `--snapshot-at`: at least 1.
fn snapshot_at(text: &str) -> Result<u64, String> {
    match parse_u64(text, "--snapshot-at")? {
        0 => Err("--snapshot-at must be at least 1".into()),
        n => Ok(n),
    }
}

/// `--max-instructions` (both commands): at least 1.
pub(crate) fn max_instructions(text: &str) -> Result<u64, String> {
    match parse_u64(text, "--max-instructions")? {
        0 => Err("--max-instructions must be at least 1".into()),
        n => Ok(n),
    }
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("invalid --timeout '{text}': expected seconds, e.g. 10 or 2.5"))?;
    if !secs.is_finite() || secs <= 0.0 || secs > 1e9 {
        return Err(format!(
            "invalid --timeout '{text}': must be a positive number of seconds"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A memory size option's value, checked against the program's range.
fn memory_size(text: &str) -> Result<u64, String> {
    let size = parse_size(text).map_err(|e| format!("--memory: {e}"))?;
    if !(MIN_MEMORY..=MAX_MEMORY).contains(&size) || size % 4096 != 0 {
        return Err(format!(
            "--memory: {text} is not usable: guest RAM is a multiple of 4K from {}M to {}G",
            MIN_MEMORY >> 20,
            MAX_MEMORY >> 30
        ));
    }
    Ok(size)
}

/// A `--device` the machine can be given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Device {
    /// QEMU's `pc-testdev`.
    PcTestdev,
    /// QEMU's `isa-debug-exit` where the machine always has it (port 0xF4, 4 ports).
    IsaDebugExit,
}

/// `--device DRIVER[,PROP=VALUE...]` as QEMU spells it, for the devices this machine has.
fn device(text: &str) -> Result<Device, String> {
    let mut parts = text.split(',');
    let driver = parts.next().unwrap_or("");
    let props: Vec<&str> = parts.collect();
    match driver {
        "pc-testdev" => match props.first() {
            None => Ok(Device::PcTestdev),
            Some(prop) => Err(format!(
                "--device pc-testdev: it has no property '{prop}' (its ports and MMIO window are fixed)"
            )),
        },
        "isa-debug-exit" => {
            for prop in props {
                let ok = match prop.split_once('=') {
                    Some(("iobase", v)) => parse_u64(v, "iobase").is_ok_and(|v| v == 0xf4),
                    Some(("iosize", v)) => parse_u64(v, "iosize").is_ok_and(|v| v == 4),
                    _ => false,
                };
                if !ok {
                    return Err(format!(
                        "--device isa-debug-exit: '{prop}' is not how this machine has it: the device is always at iobase=0xf4,iosize=4"
                    ));
                }
            }
            Ok(Device::IsaDebugExit)
        }
        _ => Err(format!(
            "--device: '{driver}' is not a device this machine can be given: expected pc-testdev, or isa-debug-exit (always present at iobase=0xf4,iosize=4)"
        )),
    }
}

fn backend(text: &str) -> Result<BackendKind, String> {
    BackendKind::parse(text)
}

/// `--cpu`: a model and its feature changes, as QEMU's `-cpu`.
fn cpu_model(text: &str) -> Result<CpuModel, String> {
    CpuModel::parse(text).map_err(|e| format!("invalid --cpu '{text}': {e}"))
}

fn load_addr(text: &str) -> Result<u64, String> {
    parse_u64(text, "--load-addr")
}

fn entry(text: &str) -> Result<u64, String> {
    parse_u64(text, "--entry")
}

fn flat_mode(text: &str) -> Result<FlatMode, String> {
    match text {
        "real" => Ok(FlatMode::Real),
        "protected" => Ok(FlatMode::Protected),
        other => Err(format!(
            "invalid --mode '{other}': expected real or protected"
        )),
    }
}

fn shell(text: &str) -> Result<Shell, String> {
    match text {
        "bash" => Ok(Shell::Bash),
        "zsh" => Ok(Shell::Zsh),
        "fish" => Ok(Shell::Fish),
        "elvish" => Ok(Shell::Elvish),
        "powershell" => Ok(Shell::PowerShell),
        other => Err(format!(
            "unknown shell '{other}' for completions (known: bash, zsh, fish, elvish, powershell)"
        )),
    }
}

/// The command line's clap description (for completions and help).
pub fn command() -> clap::Command {
    Cli::command()
}

/// Parse the arguments after the program name. An error is one line naming the problem.
pub fn parse(argv: &[OsString]) -> Result<Invocation, String> {
    if argv.is_empty() {
        return Ok(Invocation {
            command: Command::Help(render_help(&mut command())),
            verbosity: 0,
        });
    }
    let all = std::iter::once(OsString::from("opsvisor")).chain(argv.iter().cloned());
    let cli = match Cli::try_parse_from(all) {
        Ok(cli) => cli,
        Err(e) => {
            return match e.kind() {
                ErrorKind::DisplayHelp => Ok(Invocation {
                    command: Command::Help(e.render().to_string()),
                    verbosity: 0,
                }),
                ErrorKind::DisplayVersion => Ok(Invocation {
                    command: Command::Version,
                    verbosity: 0,
                }),
                _ => Err(crate::one_line(&error_line(&e, argv))),
            }
        }
    };
    let command = match cli.command {
        None => Command::Help(render_help(&mut command())),
        Some(Sub::Run(run)) => Command::Run(Box::new(run_args(*run)?)),
        Some(Sub::Exec(exec)) => Command::Exec(exec.into_args()?),
        Some(Sub::Completions { shell }) => Command::Completions(shell),
    };
    Ok(Invocation {
        command,
        verbosity: cli.verbose,
    })
}

fn render_help(cmd: &mut clap::Command) -> String {
    cmd.render_long_help().to_string()
}

/// The options of `run`, checked together and ready for the machine builder.
fn run_args(cli: RunCli) -> Result<RunArgs, String> {
    let restore = cli.restore.map(PathBuf::from);
    let kernel = match &restore {
        Some(path) => path.clone().into_os_string(),
        None => cli
            .kernel
            .or(cli.kernel_operand)
            .ok_or("no KERNEL given (or --restore FILE)")?,
    };
    let mut machine = MachineOptions::default();
    if let Some(backend) = cli.backend {
        machine.backend = backend;
    }
    let cpu_given = cli.cpu.is_some();
    if let Some(cpu) = cli.cpu {
        machine.cpu = cpu;
    }
    if let Some(memory) = cli.memory {
        machine.memory = memory;
    }
    if let Some(append) = cli.append {
        machine.cmdline = append.into_vec();
    }
    machine.vcpus = cli.smp.unwrap_or(1);
    machine.pc_testdev = cli.device.contains(&Device::PcTestdev);
    machine.kernel_name = kernel.as_bytes().to_vec();
    machine.max_instructions = cli.max_instructions;
    machine.icount = cli.icount;
    machine.timeout = cli.timeout;
    machine.collect_timing = cli.stats;
    machine.flat = cli.flat || cli.load_addr.is_some() || cli.entry.is_some() || cli.mode.is_some();
    machine.flat_load = cli.load_addr;
    machine.flat_entry = cli.entry;
    if let Some(mode) = cli.mode {
        machine.flat_mode = mode;
    }
    let mut modules = Vec::with_capacity(cli.module.len());
    for spec in &cli.module {
        let spec = spec.as_bytes().trim_ascii();
        let path = spec
            .split(u8::is_ascii_whitespace)
            .next()
            .filter(|p| !p.is_empty())
            .ok_or("--module needs a file name")?;
        modules.push((
            PathBuf::from(OsString::from_vec(path.to_vec())),
            spec.to_vec(),
        ));
    }
    let trace = cli.trace_exits.map(|path| TraceOptions {
        path: PathBuf::from(path),
        filter: cli.trace_filter.unwrap_or_default(),
    });
    Ok(RunArgs {
        kernel: PathBuf::from(kernel),
        modules,
        initrd: cli.initrd.map(PathBuf::from),
        stats: cli.stats || cli.stats_counts,
        breakdown: cli.stats,
        no_reboot: cli.no_reboot,
        serial: cli.serial.unwrap_or_default(),
        trace,
        gdb: cli.gdb.map(|listen| GdbOptions {
            listen,
            wait: cli.gdb_wait,
        }),
        snapshot: cli
            .snapshot_at
            .zip(cli.snapshot_out)
            .map(|(at, path)| SnapshotOut {
                at,
                path: PathBuf::from(path),
            }),
        restore,
        given: Given {
            memory: cli.memory,
            smp: cli.smp,
            icount: cli.icount,
            cpu: cpu_given,
            pc_testdev: machine.pc_testdev,
        },
        machine,
    })
}

/// The first word of `argv` that is not an option: the subcommand, if any.
fn subcommand(argv: &[OsString]) -> Option<&str> {
    argv.iter()
        .find(|a| !a.as_bytes().starts_with(b"-"))
        .and_then(|a| a.to_str())
}

/// One line for a clap error: the option and what was wrong with it.
fn error_line(e: &clap::Error, argv: &[OsString]) -> String {
    match Problem::of(e) {
        Problem::Conflict { option, prior } if option == "--kernel" || prior == "--kernel" => {
            String::from("the kernel is given twice (--kernel and KERNEL): give it once")
        }
        Problem::UnexpectedWord { word } => match subcommand(argv) {
            Some("run") => format!("more than one kernel given ('{word}' is extra)"),
            Some("exec") => format!("more than one state file given ('{word}' is extra)"),
            Some("completions") => format!("completions takes one SHELL ('{word}' is extra)"),
            _ => format!("unknown command '{}'", word.escape_debug()),
        },
        Problem::Missing { what } if what.contains("--trace-exits") => {
            String::from("--trace-filter needs --trace-exits FILE")
        }
        Problem::Missing { .. } if subcommand(argv) == Some("completions") => {
            String::from("completions needs a SHELL (bash, zsh, fish, elvish, powershell)")
        }
        problem => problem.line(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    fn parse_command(argv: &[OsString]) -> Result<Command, String> {
        parse(argv).map(|i| i.command)
    }

    fn run(list: &[&str]) -> RunArgs {
        let mut all = vec!["run"];
        all.extend_from_slice(list);
        match parse_command(&args(&all)) {
            Ok(Command::Run(run)) => *run,
            other => panic!("not a run command: {other:?}"),
        }
    }

    fn err(list: &[&str]) -> String {
        let e = parse_command(&args(list)).unwrap_err();
        assert!(!e.contains('\n'), "one line: {e}");
        e
    }

    #[test]
    fn gdb_options_take_qemus_address_spelling() {
        let r = run(&["--gdb", "tcp::1234", "k.elf"]);
        assert_eq!(
            r.gdb,
            Some(GdbOptions {
                listen: "0.0.0.0:1234".into(),
                wait: false
            })
        );
        let r = run(&["--gdb=tcp:127.0.0.1:0", "--gdb-wait", "k.elf"]);
        assert_eq!(
            r.gdb,
            Some(GdbOptions {
                listen: "127.0.0.1:0".into(),
                wait: true
            })
        );
        assert_eq!(run(&["k.elf"]).gdb, None);
        for (line, want) in [
            (
                &["run", "--gdb", "1234", "k"][..],
                "is not tcp::PORT or tcp:HOST:PORT",
            ),
            (
                &["run", "--gdb", "tcp:1234", "k"],
                "is not tcp::PORT or tcp:HOST:PORT",
            ),
            (&["run", "--gdb", "tcp::70000", "k"], "is not a TCP port"),
            (&["run", "--gdb", "tcp::x", "k"], "is not a TCP port"),
            (&["run", "--gdb-wait", "k"], "--gdb"),
            (&["run", "k", "--gdb"], "--gdb needs a value"),
        ] {
            let e = err(line);
            assert!(e.contains(want), "{line:?}: {e}");
        }
    }

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12X").is_err());
        assert!(parse_size("99999999999G").is_err());
    }

    #[test]
    fn stats_counts_reads_no_clock_per_exit() {
        let r = run(&["--stats-counts", "k.elf"]);
        assert!(r.stats && !r.breakdown);
        assert!(!r.machine.collect_timing);
        let r = run(&["--stats", "k.elf"]);
        assert!(r.stats && r.breakdown && r.machine.collect_timing);
    }

    #[test]
    fn devices_in_qemus_spelling() {
        let r = run(&["k.elf"]);
        assert!(!r.machine.pc_testdev, "no test device unless asked for");
        assert_eq!(r.machine.kernel_name, b"k.elf");
        let r = run(&["--device", "pc-testdev", "--kernel", "dir/k.elf"]);
        assert!(r.machine.pc_testdev);
        assert_eq!(r.machine.kernel_name, b"dir/k.elf", "the path as given");
        let r = run(&[
            "--device=isa-debug-exit,iobase=0xf4,iosize=0x4",
            "--device",
            "pc-testdev",
            "--device",
            "isa-debug-exit",
            "k",
        ]);
        assert!(r.machine.pc_testdev);
        assert!(
            !run(&["--device", "isa-debug-exit,iobase=244,iosize=4", "k"])
                .machine
                .pc_testdev
        );
        assert_eq!(
            err(&["run", "--device", "e1000", "k"]),
            "--device: 'e1000' is not a device this machine can be given: expected pc-testdev, or isa-debug-exit (always present at iobase=0xf4,iosize=4)"
        );
        assert!(
            err(&["run", "--device", "isa-debug-exit,iobase=0x501", "k"])
                .contains("'iobase=0x501' is not how this machine has it")
        );
        assert!(
            err(&["run", "--device", "pc-testdev,id=t", "k"]).contains("it has no property 'id=t'")
        );
        assert!(err(&["run", "--device", "k"]).contains("--device"));
    }

    #[test]
    fn run_options_parse() {
        let run = run(&[
            "--memory",
            "64M",
            "--append=console=ttyS0",
            "--module",
            "a.bin x y",
            "--stats",
            "--max-instructions",
            "0x100",
            "--timeout",
            "2.5",
            "k.elf",
        ]);
        assert_eq!(run.kernel, PathBuf::from("k.elf"));
        assert_eq!(run.machine.memory, 64 << 20);
        assert_eq!(run.machine.cmdline, b"console=ttyS0");
        assert_eq!(
            run.modules,
            [(PathBuf::from("a.bin"), b"a.bin x y".to_vec())]
        );
        assert!(run.stats);
        assert!(run.machine.collect_timing);
        assert_eq!(run.initrd, None);
        assert!(!run.no_reboot);
        assert_eq!(run.machine.max_instructions, Some(256));
        assert_eq!(run.machine.timeout, Some(Duration::from_millis(2500)));
        assert_eq!(run.serial, Serial::Stdio);
        assert_eq!(run.machine.vcpus, 1, "one vCPU unless --smp says more");
        assert!(run.trace.is_none());
    }

    #[test]
    fn qemu_spellings_parse() {
        let r = run(&["--kernel", "bzImage", "-m", "1G", "--smp", "1"]);
        assert_eq!(r.kernel, PathBuf::from("bzImage"));
        assert_eq!(r.machine.memory, 1 << 30);
        assert_eq!(r.machine.vcpus, 1);
        assert_eq!(run(&["--smp=cpus=1", "k"]).machine.vcpus, 1);
        assert_eq!(run(&["--smp", "4", "k"]).machine.vcpus, 4);
        assert_eq!(run(&["--smp=cpus=64", "k"]).machine.vcpus, 64);
        assert_eq!(run(&["--smp", "255", "k"]).machine.vcpus, 255);
        assert_eq!(run(&["--serial", "none", "k"]).serial, Serial::None);
        assert_eq!(
            run(&["--serial=file:/tmp/com1.log", "k"]).serial,
            Serial::File(PathBuf::from("/tmp/com1.log"))
        );
        assert_eq!(run(&["--serial", "stdio", "k"]).serial, Serial::Stdio);
        assert_eq!(
            err(&["run", "--kernel", "a", "b"]),
            "the kernel is given twice (--kernel and KERNEL): give it once"
        );
        assert_eq!(
            err(&["run", "--smp", "256", "k"]),
            "--smp: '256' is not a vCPU count: expected N or cpus=N with N from 1 to 255 (topology options such as sockets= and cores= are not taken: the vCPUs are the cores of one package)"
        );
        assert!(err(&["run", "--smp", "many", "k"]).contains("'many' is not a vCPU count"));
        assert_eq!(
            err(&["run", "--serial", "pty", "k"]),
            "invalid --serial 'pty': expected stdio, file:PATH or none"
        );
        assert!(err(&["run", "--serial", "file:", "k"]).contains("file name is missing"));
        assert!(err(&["run", "--serial", "none", "--serial", "stdio", "k"])
            .contains("option --serial is given more than once"));
    }

    #[test]
    fn trace_options_parse() {
        let r = run(&["--trace-exits", "t.jsonl", "--trace-filter", "io,msr", "k"]);
        let t = r.trace.expect("tracing");
        assert_eq!(t.path, PathBuf::from("t.jsonl"));
        assert_eq!(t.filter, ExitFilter::parse("io,rdmsr,wrmsr").unwrap());
        let r = run(&["--trace-exits", "t.jsonl", "k"]);
        assert_eq!(r.trace.expect("tracing").filter, ExitFilter::default());
        assert_eq!(
            err(&["run", "--trace-filter", "io", "k"]),
            "--trace-filter needs --trace-exits FILE"
        );
        assert!(err(&[
            "run",
            "--trace-exits",
            "t",
            "--trace-filter",
            "io,bogus",
            "k"
        ])
        .contains("unknown exit reason 'bogus'"));
        assert!(err(&["run", "--trace-exits", "k"]).contains("no KERNEL"));
    }

    #[test]
    fn linux_options_parse() {
        let r = run(&["--initrd=rd.gz", "--no-reboot", "bzImage"]);
        assert_eq!(r.initrd, Some(PathBuf::from("rd.gz")));
        assert!(r.no_reboot);
        assert!(err(&["run", "--initrd", "a", "--initrd", "b", "k"]).contains("more than once"));
        assert!(err(&["run", "--no-reboot=yes", "k"]).contains("--no-reboot"));
    }

    #[test]
    fn arguments_that_are_not_utf8_stay_bytes() {
        let kernel = OsString::from_vec(b"k\xff.elf".to_vec());
        let append = OsString::from_vec(b"root=\xfe\xff".to_vec());
        let module = OsString::from_vec(b"m\xff.bin arg\xfe".to_vec());
        let serial = OsString::from_vec(b"file:/tmp/c\xff".to_vec());
        let argv = vec![
            OsString::from("run"),
            OsString::from("--append"),
            append,
            OsString::from("--module"),
            module,
            OsString::from("--serial"),
            serial,
            kernel.clone(),
        ];
        let Ok(Command::Run(run)) = parse_command(&argv) else {
            panic!("parsed")
        };
        assert_eq!(run.kernel, PathBuf::from(kernel));
        assert_eq!(run.machine.cmdline, b"root=\xfe\xff");
        assert_eq!(
            run.modules,
            [(
                PathBuf::from(OsString::from_vec(b"m\xff.bin".to_vec())),
                b"m\xff.bin arg\xfe".to_vec()
            )]
        );
        assert_eq!(
            run.serial,
            Serial::File(PathBuf::from(OsString::from_vec(b"/tmp/c\xff".to_vec())))
        );
        // A name or a number that is not text is an error, not a panic.
        let bad = vec![
            OsString::from("run"),
            OsString::from_vec(b"--memory=\xff".to_vec()),
            OsString::from("k"),
        ];
        assert!(parse(&bad).unwrap_err().contains("not valid UTF-8"));
        let bad = vec![OsString::from_vec(b"\xffrun".to_vec())];
        assert!(parse(&bad).unwrap_err().contains("unknown command"));
    }

    #[test]
    fn flat_options_and_the_end_of_options() {
        let r = run(&["--mode", "real", "boot.bin"]);
        assert!(r.machine.flat);
        assert_eq!(r.machine.flat_mode, FlatMode::Real);
        assert_eq!(r.machine.flat_load, None, "the mode picks the default");
        let r = run(&["--flat", "--", "-odd-name"]);
        assert_eq!(r.kernel, PathBuf::from("-odd-name"));
        // A value may start with '-': it is the option's value.
        let r = run(&["--append", "-v quiet", "k"]);
        assert_eq!(r.machine.cmdline, b"-v quiet");
    }

    #[test]
    fn bad_options_name_the_problem() {
        assert!(err(&["run"]).contains("no KERNEL"));
        assert!(err(&["run", "--memory"]).contains("needs a value"));
        assert!(err(&["run", "--memory", "lots", "k"]).contains("invalid size"));
        assert!(err(&["run", "--memory", "1M", "k"]).contains("from 2M to 64G"));
        assert!(err(&["run", "--memory", "100G", "k"]).contains("from 2M to 64G"));
        assert!(err(&["run", "--smp", "0", "k"]).contains("1 to 255"));
        assert!(err(&["run", "--smp", "4,sockets=2", "k"]).contains("not a vCPU count"));
        assert!(err(&["run", "--smp", "2", "--smp", "2", "k"]).contains("more than once"));
        assert!(err(&["run", "--backend", "kvm", "k"]).contains("unknown backend"));
        assert!(err(&["run", "--backend", "vmx", "k"]).contains("bare-metal image"));
        assert!(err(&["run", "--frobnicate", "k"]).contains("unknown option"));
        assert!(err(&["run", "a", "b"]).contains("more than one kernel"));
        assert!(err(&["run", "--timeout", "-1", "k"]).contains("positive"));
        assert!(err(&["fly"]).contains("unknown command"));
        assert_eq!(
            err(&["run", "--stats=yes", "k"]),
            "option --stats takes no value (got 'yes')"
        );
        assert!(err(&["run", "--flat=1", "k"]).contains("takes no value"));
        assert_eq!(
            err(&["run", "--memory", "64M", "--memory=128M", "k"]),
            "option --memory is given more than once"
        );
        assert!(err(&["run", "-m", "64M", "--memory", "64M", "k"]).contains("more than once"));
        assert!(err(&["run", "--timeout", "1", "--timeout", "2", "k"]).contains("more than once"));
        assert!(err(&["run", "--module", "  ", "k"]).contains("needs a file name"));
        assert_eq!(
            err(&["run", "--max-instructions", "0", "k"]),
            "--max-instructions must be at least 1"
        );
        assert!(err(&["run", "--mode", "long", "k"]).contains("expected real or protected"));
    }

    #[test]
    fn cpu_models_parse() {
        use opsvisor_core::cpu_model::ModelName;
        use opsvisor_core::cpuid::Feature;
        let r = run(&["k"]);
        assert_eq!(r.machine.cpu, CpuModel::default());
        let r = run(&["--cpu", "qemu64,+smep,-nx", "k"]);
        assert_eq!(r.machine.cpu.model, ModelName::Qemu64);
        assert_eq!(
            r.machine.cpu.changes,
            [(Feature::Smep, true), (Feature::Nx, false)]
        );
        assert_eq!(
            err(&["run", "--cpu", "486", "k"]),
            "invalid --cpu '486': unknown CPU model '486' (expected one of: max, qemu64)"
        );
        assert!(err(&["run", "--cpu=max,+warp", "k"]).contains("unknown CPU feature 'warp'"));
        assert!(err(&["run", "--cpu", "max", "--cpu", "max", "k"]).contains("more than once"));
    }

    #[test]
    fn modules_may_repeat() {
        let r = run(&["--module", "a", "--module", "b c", "k"]);
        assert_eq!(r.modules.len(), 2);
    }

    #[test]
    fn help_version_and_completions() {
        for argv in [&[][..], &["--help"], &["help"], &["-h"]] {
            let Ok(Command::Help(text)) = parse_command(&args(argv)) else {
                panic!("{argv:?}: not help");
            };
            assert!(text.contains("the VMX and SVM backends run in opsvisor's bare-metal image"));
            assert!(text.contains("run"), "{text}");
            assert!(text.contains("completions"), "{text}");
        }
        let Ok(Command::Help(text)) = parse_command(&args(&["run", "--help"])) else {
            panic!("run --help");
        };
        for option in [
            "--kernel",
            "--initrd",
            "--append",
            "--memory",
            "-m",
            "--smp",
            "--serial",
            "--no-reboot",
            "--trace-exits",
            "--trace-filter",
            "EXIT TRACE",
            "LIMITS",
        ] {
            assert!(text.contains(option), "{option} missing from: {text}");
        }
        let Ok(Command::Help(text)) = parse_command(&args(&["help", "exec"])) else {
            panic!("help exec");
        };
        assert!(text.contains("Batch mode"), "{text}");
        assert!(matches!(
            parse_command(&args(&["--version"])),
            Ok(Command::Version)
        ));
        assert!(matches!(
            parse_command(&args(&["completions", "bash"])),
            Ok(Command::Completions(Shell::Bash))
        ));
        assert!(err(&["completions", "tcsh"]).contains("unknown shell 'tcsh'"));
        assert!(err(&["completions"]).contains("needs a SHELL"));
    }

    #[test]
    fn verbosity_counts() {
        let v = |list: &[&str]| parse(&args(list)).map(|i| i.verbosity);
        assert_eq!(v(&["run", "k"]), Ok(0));
        assert_eq!(v(&["-v", "run", "k"]), Ok(1));
        assert_eq!(v(&["run", "-vv", "k"]), Ok(2));
        assert_eq!(v(&["run", "-v", "k", "-v"]), Ok(2));
    }
}
