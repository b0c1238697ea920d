//! Command-line parsing. Hand-written to keep the program's dependencies to the project's
//! own crates; every error names the option and what was wrong with it.
//!
//! Arguments are `OsString`s, as the operating system gives them: paths stay paths
//! whatever bytes they hold, and `--append` and `--module` strings reach the guest as the
//! bytes given. Option names and numbers must be text.

use opsvisor_backends::{BackendKind, FlatMode, MachineOptions, MAX_MEMORY, MIN_MEMORY};
use opsvisor_core::cpu_model::CpuModel;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::time::Duration;

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Print this text.
    Help(&'static str),
    /// Print the version.
    Version,
    /// Boot a kernel.
    Run(Box<RunArgs>),
    /// Run a snippet from a JSON state (`opsvisor exec`).
    Exec(crate::exec::ExecArgs),
}

/// `opsvisor run` options.
#[derive(Debug)]
pub struct RunArgs {
    /// Kernel image path.
    pub kernel: PathBuf,
    /// (path, module string) for every `--module`, in order.
    pub modules: Vec<(PathBuf, Vec<u8>)>,
    /// `--initrd`: the Linux kernel's initial ramdisk.
    pub initrd: Option<PathBuf>,
    /// Print exit statistics at the end.
    pub stats: bool,
    /// `--no-reboot`: a guest that resets the machine ends the run instead of starting
    /// again.
    pub no_reboot: bool,
    /// Everything else, ready for the machine builder (without the modules' bytes).
    pub machine: MachineOptions,
}

/// `opsvisor --help`.
pub const USAGE: &str = "\
opsvisor: an x86-64 virtual machine framework. This program runs guests on its software
CPU (the emulator backend); the VMX backend runs in opsvisor's bare-metal image
(see 'cargo xtask help'), and the SVM backend is not implemented yet.

USAGE:
    opsvisor run [OPTIONS] KERNEL
    opsvisor exec [OPTIONS] STATE.json      ('opsvisor exec --help' tells the format)
    opsvisor --help | --version

KERNEL is a multiboot v1 kernel (ELF32, ELF64 or a.out-kludge), a Linux bzImage, an
ELF kernel with a PVH entry note (a Linux vmlinux), or, with --flat, a flat binary. The
machine is a PC (8259 PICs, I/O APIC, PIT, CMOS RTC, 8042, PCI host bridge, ACPI with
a PM timer and S5, QEMU's fw_cfg). The guest's COM1 serial port is this program's
stdin/stdout. A guest write of V to port 0xf4 ends the run with exit status (V << 1) | 1,
as QEMU's isa-debug-exit.

OPTIONS (each at most once, except --module):
    --backend NAME          backend to run on: emu (default: emu)
    --cpu MODEL[,+F][,-F]   CPU model: max (every feature the backend implements; the
                            default) or qemu64 (QEMU's baseline: SSE3, CX16, NX, LM),
                            with features added (+F, F=on) or removed (-F, F=off) as
                            QEMU names them, e.g. --cpu max,-la57 or --cpu qemu64,+smep
    --memory SIZE           guest RAM, e.g. 256M, 1G, 65536K: a multiple of 4K from 2M to
                            64G (default: 256M)
    --append STRING         kernel command line (multiboot, Linux), passed as given
    --module 'FILE [ARGS]'  add a multiboot module; its string is 'FILE [ARGS]' (repeatable)
    --initrd FILE           initial ramdisk of a Linux kernel (bzImage or PVH)
    --stats                 print exits by reason (count, host time) and instructions/s
    --max-instructions N    stop after N guest instructions
    --timeout SECONDS       stop after SECONDS of wall-clock time (decimals allowed)
    --flat                  KERNEL is a flat binary (implied by the three options below)
    --load-addr ADDR        flat binary: guest-physical load address (default: 0x7c00 in
                            real mode, 0x100000 in protected mode)
    --entry ADDR            flat binary: entry point (default: the load address)
    --mode real|protected   flat binary: CPU mode at entry (default: protected)
    --no-reboot             a guest that resets the machine ends the run (status 12)
                            instead of booting the kernel again, as QEMU's -no-reboot
    --                      the next argument is KERNEL, even if it starts with '-'

LIMITS:
    The kernel file and each module must fit in guest RAM: a file larger than guest RAM
    (or, for modules, than what guest RAM below 4 GiB leaves after the modules before
    it) is refused before it is read. Devices (/dev/zero, ...) are refused; pipes are read
    up to the same bound.

CONSOLE:
    Input is read from stdin only as fast as the guest reads it (at most 4 KiB ahead).
    Output waits for stdout when stdout does not take it (a paused terminal, a full pipe),
    as a serial line with flow control does; with --timeout, output stdout has not taken
    when the timeout passes is dropped, the count is reported, and the run ends on time.

EXIT STATUS:
    odd     the guest's debug-exit status (V << 1) | 1
    0       the guest powered the machine off (ACPI S5, e.g. Linux's poweroff); --help,
            --version
    2       bad input: missing or invalid kernel or module, bad option (one error line)
    4       the guest triple-faulted
    6       the guest halted with interrupts off or no timer to wake it
    8       --timeout or --max-instructions ended the run
    10      the backend could not continue (reported on stderr)
    12      the guest reset the machine and --no-reboot was given
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

/// An argument as text, for option names and numbers.
fn text<'a>(arg: &'a OsStr, what: &str) -> Result<&'a str, String> {
    arg.to_str().ok_or_else(|| {
        format!(
            "{what} '{}' is not valid UTF-8",
            arg.to_string_lossy().escape_debug()
        )
    })
}

/// One command-line word, taken apart: an option (`--name` or `--name=value`, `-x`) or
/// an operand.
pub enum Word<'a> {
    /// An option, with the value given inline after `=`, if any.
    Option(&'a str, Option<&'a OsStr>),
    /// Anything else.
    Operand(&'a OsStr),
}

fn word(arg: &OsStr) -> Result<Word<'_>, String> {
    let bytes = arg.as_bytes();
    if bytes.len() < 2 || bytes[0] != b'-' {
        return Ok(Word::Operand(arg));
    }
    let (name, inline) = match bytes.iter().position(|&b| b == b'=') {
        Some(i) if bytes.starts_with(b"--") => {
            (&bytes[..i], Some(OsStr::from_bytes(&bytes[i + 1..])))
        }
        _ => (bytes, None),
    };
    let name = text(OsStr::from_bytes(name), "option")?;
    Ok(Word::Option(name, inline))
}

/// Walks the words after the command, handing out option values and refusing options
/// given twice.
pub struct Words<'a> {
    rest: std::slice::Iter<'a, OsString>,
    seen: Vec<&'static str>,
    /// After `--`: everything is an operand.
    operands_only: bool,
}

impl<'a> Words<'a> {
    /// The words in `argv`.
    pub fn new(argv: &'a [OsString]) -> Words<'a> {
        Words {
            rest: argv.iter(),
            seen: Vec::new(),
            operands_only: false,
        }
    }

    /// The next word: `Ok(None)` at the end.
    pub fn next_word(&mut self) -> Result<Option<Word<'a>>, String> {
        let Some(arg) = self.rest.next() else {
            return Ok(None);
        };
        if self.operands_only {
            return Ok(Some(Word::Operand(arg)));
        }
        if arg.as_bytes() == b"--" {
            self.operands_only = true;
            return self.next_word();
        }
        word(arg).map(Some)
    }

    /// Note that `name` was given; an error if it was given before.
    pub fn once(&mut self, name: &'static str) -> Result<(), String> {
        if self.seen.contains(&name) {
            return Err(format!("option {name} is given more than once"));
        }
        self.seen.push(name);
        Ok(())
    }

    /// The value of option `name`: inline (`--name=value`) or the next word.
    pub fn value(&mut self, name: &str, inline: Option<&'a OsStr>) -> Result<&'a OsStr, String> {
        match inline {
            Some(v) => Ok(v),
            None => self
                .rest
                .next()
                .map(OsString::as_os_str)
                .ok_or_else(|| format!("option {name} needs a value")),
        }
    }

    /// The value of option `name` as text.
    pub fn text_value(&mut self, name: &str, inline: Option<&'a OsStr>) -> Result<&'a str, String> {
        let v = self.value(name, inline)?;
        text(v, &format!("the value of {name}"))
    }
}

/// A flag must not be given a value (`--stats=yes`).
pub fn no_value(name: &str, inline: Option<&OsStr>) -> Result<(), String> {
    match inline {
        None => Ok(()),
        Some(v) => Err(format!(
            "option {name} takes no value (got '{}')",
            v.to_string_lossy()
        )),
    }
}

/// Parse the arguments after the program name. An error is one line naming the problem.
pub fn parse(argv: &[OsString]) -> Result<Command, String> {
    parse_words(argv).map_err(|e| crate::one_line(&e))
}

fn parse_words(argv: &[OsString]) -> Result<Command, String> {
    let Some(first) = argv.first() else {
        return Ok(Command::Help(USAGE));
    };
    let rest = &argv[1..];
    match first.to_str() {
        Some("-h" | "--help" | "help") => Ok(Command::Help(USAGE)),
        Some("-V" | "--version") => Ok(Command::Version),
        Some("run") => parse_run(rest),
        Some("exec") => crate::exec::parse_args(rest),
        _ => Err(format!(
            "unknown command '{}'",
            first.to_string_lossy().escape_debug()
        )),
    }
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

fn parse_run(argv: &[OsString]) -> Result<Command, String> {
    let mut machine = MachineOptions::default();
    let mut modules = Vec::new();
    let mut kernel: Option<PathBuf> = None;
    let mut initrd: Option<PathBuf> = None;
    let mut stats = false;
    let mut no_reboot = false;
    let mut words = Words::new(argv);
    while let Some(w) = words.next_word()? {
        let (name, inline) = match w {
            Word::Operand(path) => {
                if kernel.is_some() {
                    return Err(format!(
                        "more than one kernel given ('{}' is extra)",
                        path.to_string_lossy()
                    ));
                }
                kernel = Some(PathBuf::from(path));
                continue;
            }
            Word::Option(name, inline) => (name, inline),
        };
        match name {
            "-h" | "--help" => return Ok(Command::Help(USAGE)),
            "--backend" => {
                words.once("--backend")?;
                machine.backend = BackendKind::parse(words.text_value(name, inline)?)?;
            }
            "--cpu" => {
                words.once("--cpu")?;
                let spec = words.text_value(name, inline)?;
                machine.cpu =
                    CpuModel::parse(spec).map_err(|e| format!("invalid --cpu '{spec}': {e}"))?;
            }
            "--memory" | "-m" => {
                words.once("--memory")?;
                machine.memory = memory_size(words.text_value(name, inline)?)?;
            }
            "--append" => {
                words.once("--append")?;
                machine.cmdline = words.value(name, inline)?.as_bytes().to_vec();
            }
            "--module" => {
                let spec = words.value(name, inline)?.as_bytes().trim_ascii();
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
            "--initrd" => {
                words.once("--initrd")?;
                initrd = Some(PathBuf::from(words.value(name, inline)?));
            }
            "--no-reboot" => {
                words.once("--no-reboot")?;
                no_value(name, inline)?;
                no_reboot = true;
            }
            "--stats" => {
                words.once("--stats")?;
                no_value(name, inline)?;
                stats = true;
                machine.collect_timing = true;
            }
            "--max-instructions" => {
                words.once("--max-instructions")?;
                let n = parse_u64(words.text_value(name, inline)?, "--max-instructions")?;
                if n == 0 {
                    return Err("--max-instructions must be at least 1".into());
                }
                machine.max_instructions = Some(n);
            }
            "--timeout" => {
                words.once("--timeout")?;
                machine.timeout = Some(parse_timeout(words.text_value(name, inline)?)?);
            }
            "--flat" => {
                words.once("--flat")?;
                no_value(name, inline)?;
                machine.flat = true;
            }
            "--load-addr" => {
                words.once("--load-addr")?;
                machine.flat = true;
                machine.flat_load =
                    Some(parse_u64(words.text_value(name, inline)?, "--load-addr")?);
            }
            "--entry" => {
                words.once("--entry")?;
                machine.flat = true;
                machine.flat_entry = Some(parse_u64(words.text_value(name, inline)?, "--entry")?);
            }
            "--mode" => {
                words.once("--mode")?;
                machine.flat = true;
                machine.flat_mode = match words.text_value(name, inline)? {
                    "real" => FlatMode::Real,
                    "protected" => FlatMode::Protected,
                    other => {
                        return Err(format!(
                            "invalid --mode '{other}': expected real or protected"
                        ))
                    }
                }
            }
            other => return Err(format!("unknown option '{other}'")),
        }
    }
    let kernel = kernel.ok_or("no KERNEL given")?;
    Ok(Command::Run(Box::new(RunArgs {
        kernel,
        modules,
        initrd,
        stats,
        no_reboot,
        machine,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    fn run(list: &[&str]) -> RunArgs {
        let mut all = vec!["run"];
        all.extend_from_slice(list);
        match parse(&args(&all)) {
            Ok(Command::Run(run)) => *run,
            other => panic!("not a run command: {other:?}"),
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
        assert_eq!(run.initrd, None);
        assert!(!run.no_reboot);
        assert_eq!(run.machine.max_instructions, Some(256));
        assert_eq!(run.machine.timeout, Some(Duration::from_millis(2500)));
    }

    #[test]
    fn linux_options_parse() {
        let r = run(&["--initrd=rd.gz", "--no-reboot", "bzImage"]);
        assert_eq!(r.initrd, Some(PathBuf::from("rd.gz")));
        assert!(r.no_reboot);
        let err = |list: &[&str]| parse(&args(list)).unwrap_err();
        assert!(err(&["run", "--initrd", "a", "--initrd", "b", "k"]).contains("more than once"));
        assert!(err(&["run", "--no-reboot=yes", "k"]).contains("--no-reboot"));
    }

    #[test]
    fn arguments_that_are_not_utf8_stay_bytes() {
        let kernel = OsString::from_vec(b"k\xff.elf".to_vec());
        let append = OsString::from_vec(b"root=\xfe\xff".to_vec());
        let module = OsString::from_vec(b"m\xff.bin arg\xfe".to_vec());
        let argv = vec![
            OsString::from("run"),
            OsString::from("--append"),
            append,
            OsString::from("--module"),
            module,
            kernel.clone(),
        ];
        let Ok(Command::Run(run)) = parse(&argv) else {
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
    }

    #[test]
    fn bad_options_name_the_problem() {
        let err = |list: &[&str]| parse(&args(list)).unwrap_err();
        assert!(err(&["run"]).contains("no KERNEL"));
        assert!(err(&["run", "--memory"]).contains("needs a value"));
        assert!(err(&["run", "--memory", "lots", "k"]).contains("invalid size"));
        assert!(err(&["run", "--memory", "1M", "k"]).contains("from 2M to 64G"));
        assert!(err(&["run", "--memory", "100G", "k"]).contains("from 2M to 64G"));
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
        let err = |list: &[&str]| parse(&args(list)).unwrap_err();
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
}
