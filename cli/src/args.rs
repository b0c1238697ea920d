//! Command-line parsing. Hand-written to keep the program's dependencies to the project's
//! own crates; every error names the option and what was wrong with it.

use opsvisor_backends::{BackendKind, FlatMode, MachineOptions};
use std::time::Duration;

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Print this text.
    Help(&'static str),
    /// Print the version.
    Version,
    /// Boot a kernel.
    Run(RunArgs),
    /// Run a snippet from a JSON state (`opsvisor exec`).
    Exec(crate::exec::ExecArgs),
}

/// `opsvisor run` options.
#[derive(Debug)]
pub struct RunArgs {
    /// Kernel image path.
    pub kernel: String,
    /// (path, module command line) for every `--module`.
    pub modules: Vec<(String, String)>,
    /// `--initrd`: the Linux kernel's initial ramdisk.
    pub initrd: Option<String>,
    /// Print exit statistics at the end.
    pub stats: bool,
    /// Everything else, ready for the machine builder.
    pub machine: MachineOptions,
}

pub const USAGE: &str = "\
opsvisor: an x86-64 virtual machine framework (VMX, SVM and emulator backends)

USAGE:
    opsvisor run [OPTIONS] KERNEL
    opsvisor exec [--trace] [--max-instructions N] STATE.json
    opsvisor --help | --version

KERNEL is a multiboot v1 kernel (ELF32, ELF64 or a.out-kludge), a Linux bzImage, an
ELF kernel with a PVH entry note (a Linux vmlinux), or, with --flat, a flat binary.
The guest's COM1 serial port is this program's stdin/stdout. A guest write of V to
port 0xf4 ends the run with exit status (V << 1) | 1, as QEMU's isa-debug-exit.

'opsvisor exec' runs a code snippet on the emulator from a JSON state (mode, registers,
memory regions, code) and prints the final state as JSON; 'opsvisor exec --help' tells
the format.

OPTIONS:
    --backend NAME          backend to run on: emu (default: emu)
    --memory SIZE           guest RAM, e.g. 256M, 1G, 65536K (default: 256M)
    --append STRING         kernel command line (multiboot, Linux)
    --module 'FILE [ARGS]'  add a multiboot module; its string is 'FILE [ARGS]' (repeatable)
    --initrd FILE           initial ramdisk of a Linux kernel (bzImage or PVH)
    --stats                 print exits by reason (count, host time) and instructions/s
    --stats-counts          the same without the host time per exit (no clock reads on
                            the exit path: what benchmarks use)
    --max-instructions N    stop after N guest instructions
    --timeout SECONDS       stop after SECONDS of wall-clock time (decimals allowed)
    --flat                  KERNEL is a flat binary (implied by the three options below)
    --load-addr ADDR        flat binary: guest-physical load address (default: 0x100000)
    --entry ADDR            flat binary: entry point (default: the load address)
    --mode real|protected   flat binary: CPU mode at entry (default: protected)

EXIT STATUS:
    odd     the guest's debug-exit status (V << 1) | 1
    2       bad input: missing or invalid kernel or module, bad option
    4       the guest triple-faulted
    6       the guest halted with interrupts off or no timer to wake it
    8       --timeout or --max-instructions ended the run
    10      the backend could not continue (reported on stderr)
";

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

/// Parse the arguments after the program name.
pub fn parse(argv: &[String]) -> Result<Command, String> {
    match argv.first().map(String::as_str) {
        None | Some("-h" | "--help" | "help") => Ok(Command::Help(USAGE)),
        Some("-V" | "--version") => Ok(Command::Version),
        Some("run") => parse_run(&argv[1..]),
        Some("exec") if argv[1..].iter().any(|a| a == "-h" || a == "--help") => {
            Ok(Command::Help(crate::exec::USAGE))
        }
        Some("exec") => crate::exec::parse_args(&argv[1..]).map(Command::Exec),
        Some(other) => Err(format!("unknown command '{other}'")),
    }
}

fn parse_run(argv: &[String]) -> Result<Command, String> {
    let mut machine = MachineOptions::default();
    let mut modules = Vec::new();
    let mut initrd = None;
    let mut kernel = None;
    let mut stats = false;
    let mut it = argv.iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("option {name} needs a value")),
            }
        };
        match name {
            "-h" | "--help" => return Ok(Command::Help(USAGE)),
            "--backend" => machine.backend = BackendKind::parse(&value(name)?)?,
            "--memory" | "-m" => {
                machine.memory = parse_size(&value(name)?).map_err(|e| format!("--memory: {e}"))?
            }
            "--append" => machine.cmdline = value(name)?,
            "--module" => {
                let spec = value(name)?;
                let path = spec
                    .split_whitespace()
                    .next()
                    .ok_or("--module needs a file name")?
                    .to_string();
                modules.push((path, spec.trim().to_string()));
            }
            "--initrd" => {
                if initrd.replace(value(name)?).is_some() {
                    return Err("--initrd given more than once".into());
                }
            }
            "--stats" => {
                stats = true;
                machine.collect_timing = true;
            }
            "--stats-counts" => stats = true,
            "--max-instructions" => {
                let n = parse_u64(&value(name)?, "--max-instructions")?;
                if n == 0 {
                    return Err("--max-instructions must be at least 1".into());
                }
                machine.max_instructions = Some(n);
            }
            "--timeout" => machine.timeout = Some(parse_timeout(&value(name)?)?),
            "--flat" => machine.flat = true,
            "--load-addr" => {
                machine.flat = true;
                machine.flat_load = parse_u64(&value(name)?, "--load-addr")?;
            }
            "--entry" => {
                machine.flat = true;
                machine.flat_entry = Some(parse_u64(&value(name)?, "--entry")?);
            }
            "--mode" => {
                machine.flat = true;
                machine.flat_mode = match value(name)?.as_str() {
                    "real" => FlatMode::Real,
                    "protected" => FlatMode::Protected,
                    other => {
                        return Err(format!(
                            "invalid --mode '{other}': expected real or protected"
                        ))
                    }
                }
            }
            flag if flag.starts_with('-') && flag.len() > 1 => {
                return Err(format!("unknown option '{flag}'"))
            }
            path => {
                if kernel.replace(path.to_string()).is_some() {
                    return Err(format!("more than one kernel given ('{path}' is extra)"));
                }
            }
        }
    }
    let kernel = kernel.ok_or("no KERNEL given")?;
    Ok(Command::Run(RunArgs {
        kernel,
        modules,
        initrd,
        stats,
        machine,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
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
        let Command::Run(run) = parse(&args(&["run", "--stats-counts", "k.elf"])).unwrap() else {
            panic!("not a run command")
        };
        assert!(run.stats);
        assert!(!run.machine.collect_timing);
        let Command::Run(run) = parse(&args(&["run", "--stats", "k.elf"])).unwrap() else {
            panic!("not a run command")
        };
        assert!(run.stats && run.machine.collect_timing);
    }

    #[test]
    fn run_options_parse() {
        let Command::Run(run) = parse(&args(&[
            "run",
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
        ]))
        .unwrap() else {
            panic!("not a run command")
        };
        assert_eq!(run.kernel, "k.elf");
        assert_eq!(run.machine.memory, 64 << 20);
        assert_eq!(run.machine.cmdline, "console=ttyS0");
        assert_eq!(
            run.modules,
            [("a.bin".to_string(), "a.bin x y".to_string())]
        );
        assert!(run.stats);
        assert_eq!(run.initrd, None);
        assert_eq!(run.machine.max_instructions, Some(256));
        assert_eq!(run.machine.timeout, Some(Duration::from_millis(2500)));
    }

    #[test]
    fn bad_options_name_the_problem() {
        let err = |list: &[&str]| parse(&args(list)).unwrap_err();
        assert!(err(&["run"]).contains("no KERNEL"));
        assert!(err(&["run", "--memory"]).contains("needs a value"));
        assert!(err(&["run", "--memory", "lots", "k"]).contains("invalid size"));
        assert!(err(&["run", "--backend", "kvm", "k"]).contains("unknown backend"));
        assert!(err(&["run", "--frobnicate", "k"]).contains("unknown option"));
        assert!(err(&["run", "a", "b"]).contains("more than one kernel"));
        assert!(err(&["run", "--timeout", "-1", "k"]).contains("positive"));
        assert!(err(&["fly"]).contains("unknown command"));
        assert!(err(&["run", "--initrd", "a", "--initrd", "b", "k"]).contains("more than once"));
        let Command::Run(run) = parse(&args(&["run", "--initrd=rd.gz", "bzImage"])).unwrap() else {
            panic!("not a run command")
        };
        assert_eq!(run.initrd.as_deref(), Some("rd.gz"));
    }
}
