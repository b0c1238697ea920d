//! The command line of `cargo xtask`.

use std::path::PathBuf;
use std::time::Duration;

/// The default Bochs CPU model: Skylake-X has VMX with EPT, VPID and unrestricted guest.
pub const DEFAULT_BOCHS_CPU: &str = "corei7_skylake_x";
/// Default limit on one emulator run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Default Bochs instructions per emulated second. Bochs' clock advances with the
/// instructions it emulates, so this sets how much emulated time one VM exit costs: at
/// 5 000 000 a timer tick's exits (~4 400 instructions) take ~0.9 ms, longer than the
/// 0.5 ms period apic_timer_periodic programs, and the guest never gets past its
/// interrupts on the VMX backend. At 50 000 000 every corpus guest passes, and the
/// BIOS's timed waits cost well under a second more.
pub const DEFAULT_IPS: u64 = 50_000_000;
/// Default RAM of the emulated machine, MiB (the image keeps 64 MiB for the guest and
/// needs some for itself).
pub const DEFAULT_MEGS: u32 = 256;

/// Where the guest comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuestSpec {
    /// A file.
    Path(PathBuf),
    /// A corpus guest (guests/src/bin/NAME.rs), built on demand.
    Corpus(String),
}

/// Options shared by the commands that run the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOptions {
    /// The guest.
    pub guest: GuestSpec,
    /// Bochs CPU model.
    pub cpu: String,
    /// Give up after this long.
    pub timeout: Duration,
    /// Machine RAM, MiB.
    pub megs: u32,
    /// Bochs: instructions per emulated second (sets how fast the TSC runs against the
    /// instructions executed).
    pub ips: u64,
    /// The image's command line (`mem=<MiB>`, `interactive`).
    pub append: String,
    /// QEMU: boot the GRUB ISO instead of `-kernel`/`-initrd`.
    pub iso: bool,
}

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Print the help text.
    Help,
    /// Build the image and print its path.
    Image,
    /// Build a GRUB ISO with the image and the guest.
    Iso {
        /// The guest and the image's command line.
        run: RunOptions,
        /// Where to write it (default: next to the image).
        out: Option<PathBuf>,
    },
    /// Write a bootable USB disk image (the hybrid ISO).
    Usb {
        /// The guest and the image's command line.
        run: RunOptions,
        /// The file to write.
        out: PathBuf,
    },
    /// Run under Bochs.
    Bochs(RunOptions),
    /// Boot every corpus guest in turn under Bochs on the VMX backend (`backend=vmx`
    /// is added to the image's command line); the guest in the options is unused.
    BochsCorpus(RunOptions),
    /// Run under QEMU TCG.
    Qemu(RunOptions),
    /// Run under QEMU with KVM (nested VMX).
    QemuKvm(RunOptions),
    /// Differential run: generated cases on VMX against the emulator inside the image.
    VmxDiff(DiffOptions),
    /// The peer benchmark: the bench guest's workloads on opsvisor, QEMU TCG and Bochs.
    BenchPeers(BenchOptions),
    /// Regenerate docs/emu-coverage.md, or with `check` fail when it is out of date.
    Coverage {
        /// Only check.
        check: bool,
    },
}

/// The peer benchmark's workloads and their default N (iterations of the short run):
/// each k·N run takes a few seconds on opsvisor's emulator.
pub const BENCH_WORKLOADS: [(&str, u64); 3] = [("int", 1000), ("mem", 25), ("exit", 2000)];
/// Default k: the long run does k·N iterations.
pub const DEFAULT_BENCH_K: u64 = 4;
/// Where `scripts/linux-guest.sh` puts the Linux guest, relative to the workspace root.
pub const DEFAULT_LINUX_GUEST: &str = "target/linux-guest";
/// Default limit on one run of the peer benchmark.
pub const DEFAULT_BENCH_TIMEOUT: Duration = Duration::from_secs(600);

/// A machine the peer benchmark runs the guest on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// `opsvisor run` (the emulator backend).
    Opsvisor,
    /// QEMU TCG (`qemu-system-x86_64 -accel tcg -kernel`).
    Qemu,
    /// Bochs, booting the guest from a GRUB ISO.
    Bochs,
}

impl Peer {
    /// The name on the command line and in the table.
    pub fn name(self) -> &'static str {
        match self {
            Peer::Opsvisor => "opsvisor",
            Peer::Qemu => "qemu",
            Peer::Bochs => "bochs",
        }
    }
}

/// Options of `bench-peers`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BenchOptions {
    /// Workloads to run, each with its N.
    pub workloads: Vec<(String, u64)>,
    /// The long run does k·N iterations.
    pub k: u64,
    /// The peers asked for (`None`: opsvisor, QEMU, and Bochs if installed).
    pub peers: Option<Vec<Peer>>,
    /// Runs per point; the least CPU time counts.
    pub repeat: u32,
    /// The opsvisor program to measure (default: build target/release/opsvisor).
    pub opsvisor: Option<PathBuf>,
    /// Limit on one run.
    pub timeout: Duration,
    /// The Linux boot: the directory holding `vmlinuz` and `initrd.gz`
    /// (`scripts/linux-guest.sh`), and whether it was asked for (`--linux`) or is only
    /// used if it is there (the default `target/linux-guest`).
    pub linux: Option<(PathBuf, bool)>,
}

impl BenchOptions {
    /// The peers to run, opsvisor first.
    pub fn peers(&self) -> Vec<Peer> {
        match &self.peers {
            Some(p) => p.clone(),
            None => {
                let mut p = vec![Peer::Opsvisor, Peer::Qemu];
                if on_path("bochs") {
                    p.push(Peer::Bochs);
                }
                p
            }
        }
    }
}

/// Whether `tool` is an executable file in a directory of PATH.
pub fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// The help text.
/// Default number of differential cases.
pub const DEFAULT_DIFF_CASES: usize = 100;
/// Time allowed per differential case on top of [`DEFAULT_TIMEOUT`] when `--timeout`
/// is not given.
pub const DIFF_TIME_PER_CASE: Duration = Duration::from_millis(200);
/// Default seed of the differential case generator.
pub const DEFAULT_DIFF_SEED: u64 = 1;

/// Where the differential cases run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiffTarget {
    /// Headless Bochs with a VMX CPU model.
    Bochs,
    /// QEMU with KVM and nested VMX.
    QemuKvm,
    /// Write a bootable USB disk image with the cases, for bare metal.
    Usb(PathBuf),
    /// Decode the differences in a serial log captured elsewhere.
    Report(PathBuf),
}

/// Options of `vmx-diff`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiffOptions {
    /// Machine options (the guest is the generated pack).
    pub run: RunOptions,
    /// How many cases.
    pub cases: usize,
    /// The generator's seed.
    pub seed: u64,
    /// Mode names to generate for (empty: all).
    pub modes: Vec<String>,
    /// Where to run them.
    pub target: DiffTarget,
}

pub const HELP: &str = "\
cargo xtask: build the opsvisor bare-metal image and run it under Bochs and QEMU

USAGE:
    cargo xtask image                       build the image, print its path
    cargo xtask iso GUEST [--out FILE]      GRUB ISO: the image (multiboot2) + GUEST as module
    cargo xtask usb GUEST OUT.img           bootable USB disk image (the hybrid GRUB ISO)
    cargo xtask bochs GUEST [OPTIONS]       boot under headless Bochs
    cargo xtask bochs-vmx GUEST [OPTIONS]   the same, named for its VMX CPU model
    cargo xtask bochs-vmx --corpus [OPTIONS]
                                            every corpus guest in turn on the VMX backend
                                            (backend=vmx): one PASS/FAIL line per guest and
                                            a summary (alias: cargo xtask corpus-vmx)
    cargo xtask qemu GUEST [OPTIONS]        boot under QEMU TCG (-kernel, PVH)
    cargo xtask qemu-kvm GUEST [OPTIONS]    boot under QEMU with KVM (-cpu host, nested VMX)
    cargo xtask vmx-diff [DIFF OPTIONS] [OPTIONS]
                                            differential run: generate proptest cases (short
                                            random instruction sequences, system instructions
                                            included, from random states in real, 32-bit
                                            protected, paged (2-level and PAE), long and
                                            compatibility mode, at CPL 0 or 3),
                                            boot the image with them under Bochs, run each on
                                            VMX and on the emulator in the image, and report
                                            every difference with the case minimized
    cargo xtask bench-peers [BENCH OPTIONS] the peer benchmark: the same guest workloads on
                                            opsvisor's emulator, QEMU TCG and Bochs (if
                                            installed); guest instructions per CPU second and
                                            the ratio to QEMU, per workload
    cargo xtask coverage [--check]          regenerate docs/emu-coverage.md (the emulator's
                                            instruction coverage); --check fails if it is stale
    cargo xtask help                        this text

GUEST is a file (a multiboot v1 kernel) or the name of a corpus guest (guests/src/bin/NAME.rs,
built with `cargo build --release` in guests/).

DIFF OPTIONS:
    --cases N         how many cases (default 100)
    --seed S          generator seed (default 1); the same seed gives the same cases
    --modes LIST      comma-separated: real,prot32,paged32,pae32,long64,compat32 (default all)
    --kvm             run under QEMU/KVM with nested VMX instead of Bochs (real silicon)
    --usb OUT.img     write a bootable USB image with the cases for bare metal instead of
                      running them; the result comes on COM1 (115200 baud)
    --report LOG      decode the differences in a serial log captured from such a run
  The default --timeout is 120 s plus 0.2 s per case. Under Bochs the instructions its CPU
  model is known to get wrong are not generated (opsvisor_vmdiff::generate::BOCHS_QUIRKS).
  Exit status 0 when every case ends the same on both backends, 1 when any differs, 4 when
  the CPU cannot run the VMX backend.

BENCH OPTIONS:
    --workloads LIST  comma-separated, each NAME or NAME=N: int, mem, exit (default
                      int=1000,mem=25,exit=2000); N is the short run's iteration count
    --k K             the long run does K·N iterations (default 4); the difference of the
                      two runs' CPU time (user+sys of the child) cancels the boot
    --peers LIST      comma-separated: opsvisor,qemu,bochs (default: all three, Bochs only
                      if installed); opsvisor must be among them (it counts the instructions)
    --repeat R        run each point R times and keep the least CPU time (default 1)
    --opsvisor PATH   the opsvisor program to measure (default: build target/release/opsvisor)
    --timeout SECS    limit on one run (default 600)
    --linux DIR       also boot Linux (DIR/vmlinuz with DIR/initrd.gz, from
                      scripts/linux-guest.sh) to its init and power-off on opsvisor and on QEMU
                      (-M pc) and compare the boot's CPU time; by default it runs when
                      target/linux-guest holds the guest
    --no-linux        leave the Linux boot out
  The guest is the corpus guest `bench` (guests/src/bin/bench.rs). Instructions are counted
  by opsvisor's emulator for the same iterations (the guest is deterministic: every peer runs
  the same instructions). Exit status 0 when every peer passed and printed the same
  checksums, 1 when a peer failed or the checksums differ, 2 on bad input or a missing tool,
  3 when a run passed --timeout.

OPTIONS:
    --cpu MODEL       Bochs CPU model (default corei7_skylake_x; ryzen for SVM)
    --timeout SECS    give up after SECS seconds (default 120); the emulator is killed
    --megs MIB        RAM of the emulated machine (default 256)
    --ips N           Bochs instructions per emulated second (default 50000000); the emulated
                      clock runs slower against the work done with a larger N, which timer
                      guests need (at 5000000 one exit costs ~70 us of emulated time)
    --append ARGS     the image's command line: mem=<MiB> (guest RAM, default 64),
                      backend=auto|vmx|emu, interactive, fault (raise #UD first: checks the
                      exception report); --corpus adds backend=vmx itself
    --iso             qemu: boot the GRUB ISO as a CD instead of -kernel/-initrd

The guest's serial output is streamed to stdout as it arrives. Exit status: 0 when the image
reports the guest's PASS (`opsvisor-image: guest exit status 1`), 1 when the guest or the
image failed, 2 on bad input or a missing tool, 3 on timeout, 4 when the image was asked for
the VMX backend (backend=vmx, --corpus) and the CPU cannot run it (the Bochs model has no
VMX, or VMX without EPT and unrestricted guest, as core2_penryn_t9600). --corpus exits 0 when
every guest passes, 1 when any fails (a timeout counts as a failure), 4 as soon as the CPU is
refused.

To boot real hardware: `cargo xtask usb hello opsvisor.img`, then
`sudo dd if=opsvisor.img of=/dev/sdX bs=4M conv=fsync` (sdX: the whole USB stick, not a
partition; everything on it is lost). The stick boots in BIOS mode (and UEFI if GRUB's EFI
files are installed); the image reports on COM1 at 115200 baud.
";

/// Parse the arguments after `cargo xtask`.
pub fn parse(args: &[String]) -> Result<Command, String> {
    let Some((cmd, rest)) = args.split_first() else {
        return Ok(Command::Help);
    };
    match cmd.as_str() {
        "help" | "--help" | "-h" => Ok(Command::Help),
        "image" => {
            if let Some(extra) = rest.first() {
                return Err(format!("'image' takes no arguments (got '{extra}')"));
            }
            Ok(Command::Image)
        }
        "iso" => {
            let (run, out, positional) = parse_run(rest, true)?;
            no_more(cmd, &positional)?;
            Ok(Command::Iso { run, out })
        }
        "usb" => {
            let (run, out, positional) = parse_run(rest, false)?;
            if out.is_some() {
                return Err("'usb' takes the output file as its second argument".into());
            }
            match positional.as_slice() {
                [out] => Ok(Command::Usb {
                    run,
                    out: PathBuf::from(out),
                }),
                [] => Err("'usb' needs an output file: cargo xtask usb GUEST OUT.img".into()),
                [_, extra, ..] => Err(format!("'usb': unexpected argument '{extra}'")),
            }
        }
        "bochs-vmx" if rest.iter().any(|a| a == "--corpus") => {
            let rest: Vec<String> = rest.iter().filter(|a| *a != "--corpus").cloned().collect();
            corpus(cmd, &rest)
        }
        "corpus-vmx" => corpus(cmd, rest),
        "bochs" | "bochs-vmx" => {
            let (run, _, positional) = parse_run(rest, false)?;
            no_more(cmd, &positional)?;
            Ok(Command::Bochs(run))
        }
        "qemu" => {
            let (run, _, positional) = parse_run(rest, false)?;
            no_more(cmd, &positional)?;
            Ok(Command::Qemu(run))
        }
        "qemu-kvm" => {
            let (run, _, positional) = parse_run(rest, false)?;
            no_more(cmd, &positional)?;
            Ok(Command::QemuKvm(run))
        }
        "vmx-diff" => vmx_diff(rest),
        "bench-peers" => bench_peers(rest),
        "coverage" => match rest {
            [] => Ok(Command::Coverage { check: false }),
            [flag] if flag == "--check" => Ok(Command::Coverage { check: true }),
            [extra, ..] => Err(format!("'coverage': unexpected argument '{extra}'")),
        },
        other => Err(format!("unknown command '{other}'")),
    }
}

fn bench_peers(args: &[String]) -> Result<Command, String> {
    let mut o = BenchOptions {
        workloads: BENCH_WORKLOADS
            .iter()
            .map(|(w, n)| (w.to_string(), *n))
            .collect(),
        k: DEFAULT_BENCH_K,
        peers: None,
        repeat: 1,
        opsvisor: None,
        timeout: DEFAULT_BENCH_TIMEOUT,
        linux: None,
    };
    let mut no_linux = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let count = |name: &str, v: &str, max: u64| {
            v.parse::<u64>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| format!("{name}: '{v}' is not a count (1 to {max})"))
        };
        match arg.as_str() {
            "--workloads" => {
                let mut list = Vec::new();
                for item in value("--workloads")?.split(',').filter(|s| !s.is_empty()) {
                    let (name, n) = match item.split_once('=') {
                        Some((name, n)) => (name, Some(n)),
                        None => (item, None),
                    };
                    let Some(&(_, default)) = BENCH_WORKLOADS.iter().find(|(w, _)| *w == name)
                    else {
                        return Err(format!(
                            "--workloads: '{name}' is not a workload (int, mem, exit)"
                        ));
                    };
                    let n = match n {
                        Some(n) => count("--workloads", n, 1_000_000)?,
                        None => default,
                    };
                    list.push((name.to_string(), n));
                }
                if list.is_empty() {
                    return Err("--workloads needs at least one workload".into());
                }
                o.workloads = list;
            }
            "--k" => {
                o.k = count("--k", &value("--k")?, 1000)?;
                if o.k < 2 {
                    return Err("--k: must be at least 2 (the long run minus the short one)".into());
                }
            }
            "--peers" => {
                let mut list = Vec::new();
                for name in value("--peers")?.split(',').filter(|s| !s.is_empty()) {
                    let p = match name {
                        "opsvisor" => Peer::Opsvisor,
                        "qemu" => Peer::Qemu,
                        "bochs" => Peer::Bochs,
                        other => {
                            return Err(format!(
                                "--peers: '{other}' is not a peer (opsvisor, qemu, bochs)"
                            ))
                        }
                    };
                    if !list.contains(&p) {
                        list.push(p);
                    }
                }
                if !list.contains(&Peer::Opsvisor) {
                    return Err(
                        "--peers: opsvisor must be among the peers (it counts the instructions)"
                            .into(),
                    );
                }
                // opsvisor first: its count is read before the others run.
                list.sort_by_key(|p| *p != Peer::Opsvisor);
                o.peers = Some(list);
            }
            "--repeat" => o.repeat = count("--repeat", &value("--repeat")?, 100)? as u32,
            "--opsvisor" => o.opsvisor = Some(PathBuf::from(value("--opsvisor")?)),
            "--linux" => o.linux = Some((PathBuf::from(value("--linux")?), true)),
            "--no-linux" => no_linux = true,
            "--timeout" => {
                let v = value("--timeout")?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s > 0.0 && *s <= 86_400.0)
                    .ok_or_else(|| {
                        format!("--timeout: '{v}' is not a number of seconds (0 < s <= 86400)")
                    })?;
                o.timeout = Duration::from_secs_f64(secs);
            }
            other => return Err(format!("'bench-peers': unexpected argument '{other}'")),
        }
    }
    if no_linux {
        if o.linux.is_some() {
            return Err("'bench-peers': --linux and --no-linux contradict each other".into());
        }
    } else if o.linux.is_none() {
        o.linux = Some((PathBuf::from(DEFAULT_LINUX_GUEST), false));
    }
    Ok(Command::BenchPeers(o))
}

/// The image's command-line word that the corpus command adds.
pub const CORPUS_BACKEND: &str = "backend=vmx";

fn vmx_diff(args: &[String]) -> Result<Command, String> {
    let mut cases = DEFAULT_DIFF_CASES;
    let mut seed = DEFAULT_DIFF_SEED;
    let mut modes = Vec::new();
    let mut target = DiffTarget::Bochs;
    // The machine options go to parse_run, with the pack standing in for the guest.
    let mut machine = vec![String::from("./cases.pack")];
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--cases" => {
                let v = value("--cases")?;
                cases = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=100_000).contains(n))
                    .ok_or_else(|| format!("--cases: '{v}' is not a count (1 to 100000)"))?;
            }
            "--seed" => {
                let v = value("--seed")?;
                seed = v
                    .parse()
                    .map_err(|_| format!("--seed: '{v}' is not a number"))?;
            }
            "--modes" => {
                modes = value("--modes")?
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(String::from)
                    .collect();
                if modes.is_empty() {
                    return Err("--modes needs at least one mode".into());
                }
            }
            "--kvm" => target = DiffTarget::QemuKvm,
            "--usb" => target = DiffTarget::Usb(PathBuf::from(value("--usb")?)),
            "--report" => target = DiffTarget::Report(PathBuf::from(value("--report")?)),
            _ => machine.push(arg.clone()),
        }
    }
    let timeout_given = machine.iter().any(|a| a == "--timeout");
    let (mut run, _, positional) = parse_run(&machine, false)?;
    no_more("vmx-diff", &positional)?;
    if !timeout_given {
        // Bochs runs about 15 cases a second, and a differing case's minimization a few
        // hundred more runs: scale the limit with the count.
        run.timeout = DEFAULT_TIMEOUT + DIFF_TIME_PER_CASE * cases as u32;
    }
    if run
        .append
        .split_ascii_whitespace()
        .any(|w| w.starts_with("backend=") || w == "diff")
    {
        return Err(
            "'vmx-diff' sets the image's backend and diff mode itself: leave them out of --append"
                .into(),
        );
    }
    Ok(Command::VmxDiff(DiffOptions {
        run,
        cases,
        seed,
        modes,
        target,
    }))
}

/// `bochs-vmx --corpus` / `corpus-vmx`: the run options without a guest.
fn corpus(cmd: &str, args: &[String]) -> Result<Command, String> {
    // A placeholder guest lets `parse_run` read the options; a real one is refused.
    let mut with_guest = vec![String::from("corpus")];
    with_guest.extend_from_slice(args);
    let (mut run, _, positional) = parse_run(&with_guest, false)?;
    if let Some(extra) = positional.first() {
        return Err(format!(
            "'{cmd}' runs every corpus guest: unexpected argument '{extra}'"
        ));
    }
    if run
        .append
        .split_ascii_whitespace()
        .any(|w| w.starts_with("backend="))
    {
        return Err(format!(
            "'{cmd}' runs the vmx backend: leave backend= out of --append"
        ));
    }
    run.append = if run.append.trim().is_empty() {
        CORPUS_BACKEND.into()
    } else {
        format!("{} {CORPUS_BACKEND}", run.append.trim())
    };
    Ok(Command::BochsCorpus(run))
}

fn no_more(cmd: &str, positional: &[String]) -> Result<(), String> {
    match positional.first() {
        Some(extra) => Err(format!("'{cmd}': unexpected argument '{extra}'")),
        None => Ok(()),
    }
}

/// The guest, the run options, `--out` (if `allow_out`) and the positional arguments
/// after the guest.
fn parse_run(
    args: &[String],
    allow_out: bool,
) -> Result<(RunOptions, Option<PathBuf>, Vec<String>), String> {
    let mut guest = None;
    let mut positional = Vec::new();
    let mut run = RunOptions {
        guest: GuestSpec::Corpus(String::new()),
        cpu: DEFAULT_BOCHS_CPU.into(),
        timeout: DEFAULT_TIMEOUT,
        megs: DEFAULT_MEGS,
        ips: DEFAULT_IPS,
        append: String::new(),
        iso: false,
    };
    let mut out = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--cpu" => {
                let model = value("--cpu")?;
                if model.is_empty() || !model.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    return Err(format!("--cpu: '{model}' is not a Bochs CPU model name"));
                }
                run.cpu = model;
            }
            "--timeout" => {
                let v = value("--timeout")?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s > 0.0 && *s <= 86_400.0)
                    .ok_or_else(|| {
                        format!("--timeout: '{v}' is not a number of seconds (0 < s <= 86400)")
                    })?;
                run.timeout = Duration::from_secs_f64(secs);
            }
            "--megs" => {
                let v = value("--megs")?;
                run.megs = v
                    .parse()
                    .ok()
                    .filter(|m| (32..=65536).contains(m))
                    .ok_or_else(|| {
                        format!("--megs: '{v}' is not a RAM size in MiB (32 to 65536)")
                    })?;
            }
            "--ips" => {
                let v = value("--ips")?;
                run.ips = v
                    .parse()
                    .ok()
                    .filter(|n| (1_000_000..=1_000_000_000).contains(n))
                    .ok_or_else(|| {
                        format!("--ips: '{v}' is not an instruction rate (1000000 to 1000000000)")
                    })?;
            }
            "--append" => run.append = value("--append")?,
            "--iso" => run.iso = true,
            "--out" if allow_out => out = Some(PathBuf::from(value("--out")?)),
            flag if flag.starts_with("--") => return Err(format!("unknown option '{flag}'")),
            _ if guest.is_none() => guest = Some(guest_spec(arg)?),
            _ => positional.push(arg.clone()),
        }
    }
    run.guest = guest.ok_or("missing GUEST: a kernel file or a corpus guest name (e.g. hello)")?;
    Ok((run, out, positional))
}

/// A path if it looks like one (has a slash or a dot, or names an existing file),
/// otherwise a corpus guest name.
pub fn guest_spec(arg: &str) -> Result<GuestSpec, String> {
    if arg.is_empty() {
        return Err("GUEST is empty".into());
    }
    let path = PathBuf::from(arg);
    if arg.contains('/') || arg.contains('.') || path.is_file() {
        return Ok(GuestSpec::Path(path));
    }
    if arg
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        Ok(GuestSpec::Corpus(arg.into()))
    } else {
        Err(format!("'{arg}' is neither a file nor a corpus guest name"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn no_arguments_is_help() {
        assert_eq!(parse(&[]), Ok(Command::Help));
        assert_eq!(parse(&args("help")), Ok(Command::Help));
        assert_eq!(
            parse(&args("coverage")),
            Ok(Command::Coverage { check: false })
        );
        assert_eq!(
            parse(&args("coverage --check")),
            Ok(Command::Coverage { check: true })
        );
        assert!(parse(&args("coverage --fix")).is_err());
        assert_eq!(parse(&args("image")), Ok(Command::Image));
        assert!(parse(&args("image x")).is_err());
    }

    #[test]
    fn bochs_defaults_and_options() {
        let Ok(Command::Bochs(run)) = parse(&args("bochs hello")) else {
            panic!("not a bochs command");
        };
        assert_eq!(run.guest, GuestSpec::Corpus("hello".into()));
        assert_eq!(run.cpu, DEFAULT_BOCHS_CPU);
        assert_eq!(run.timeout, DEFAULT_TIMEOUT);
        assert_eq!(run.megs, DEFAULT_MEGS);

        let Ok(Command::Bochs(run)) = parse(&args(
            "bochs-vmx --cpu ryzen ./k.elf --timeout 7.5 --megs 512 --ips 20000000",
        )) else {
            panic!("not a bochs command");
        };
        assert_eq!(run.guest, GuestSpec::Path("./k.elf".into()));
        assert_eq!(run.cpu, "ryzen");
        assert_eq!(run.timeout, Duration::from_millis(7500));
        assert_eq!(run.megs, 512);
        assert_eq!(run.ips, 20_000_000);
    }

    #[test]
    fn vmx_diff_options() {
        let Ok(Command::VmxDiff(d)) = parse(&args("vmx-diff")) else {
            panic!("not a vmx-diff command");
        };
        assert_eq!(
            (d.cases, d.seed, d.target),
            (DEFAULT_DIFF_CASES, 1, DiffTarget::Bochs)
        );
        assert!(d.modes.is_empty());
        let Ok(Command::VmxDiff(d)) = parse(&args(
            "vmx-diff --cases 7 --seed 9 --modes real,long64 --cpu corei7_icelake_u --kvm",
        )) else {
            panic!("not a vmx-diff command");
        };
        assert_eq!((d.cases, d.seed), (7, 9));
        assert_eq!(d.modes, vec!["real", "long64"]);
        assert_eq!(d.run.cpu, "corei7_icelake_u");
        assert_eq!(d.target, DiffTarget::QemuKvm);
        let Ok(Command::VmxDiff(d)) = parse(&args("vmx-diff --cases 5000 --timeout 30")) else {
            panic!("not a vmx-diff command");
        };
        assert_eq!(d.run.timeout, Duration::from_secs(30));
        assert!(parse(&args("vmx-diff --cases 0")).is_err());
        assert!(parse(&args("vmx-diff --append backend=emu")).is_err());
        assert!(parse(&args("vmx-diff extra")).is_err());
    }

    #[test]
    fn qemu_options() {
        let Ok(Command::Qemu(run)) = parse(&args("qemu hello --iso --append mem=32")) else {
            panic!("not a qemu command");
        };
        assert!(run.iso);
        assert_eq!(run.append, "mem=32");
        assert!(matches!(
            parse(&args("qemu-kvm cpuid")),
            Ok(Command::QemuKvm(_))
        ));
    }

    #[test]
    fn iso_and_usb_outputs() {
        let Ok(Command::Iso { out, .. }) = parse(&args("iso hello --out /tmp/x.iso")) else {
            panic!("not an iso command");
        };
        assert_eq!(out, Some(PathBuf::from("/tmp/x.iso")));
        let Ok(Command::Usb { out, .. }) = parse(&args("usb hello stick.img")) else {
            panic!("not a usb command");
        };
        assert_eq!(out, PathBuf::from("stick.img"));
        assert!(parse(&args("usb hello"))
            .unwrap_err()
            .contains("output file"));
        assert!(parse(&args("bochs hello --out x")).is_err());
    }

    #[test]
    fn corpus_options() {
        for line in [
            "bochs-vmx --corpus",
            "corpus-vmx",
            "bochs-vmx --timeout 30 --corpus",
        ] {
            let Ok(Command::BochsCorpus(run)) = parse(&args(line)) else {
                panic!("{line}: not a corpus command");
            };
            assert_eq!(run.cpu, DEFAULT_BOCHS_CPU, "{line}");
            assert_eq!(run.append, "backend=vmx", "{line}");
        }
        let Ok(Command::BochsCorpus(run)) = parse(&args(
            "bochs-vmx --corpus --cpu core2_penryn_t9600 --append mem=32 --timeout 60",
        )) else {
            panic!("not a corpus command");
        };
        assert_eq!(run.cpu, "core2_penryn_t9600");
        assert_eq!(run.append, "mem=32 backend=vmx");
        assert_eq!(run.timeout, Duration::from_secs(60));
        // Only bochs-vmx takes --corpus.
        assert_eq!(
            parse(&args("bochs --corpus")),
            Err("unknown option '--corpus'".into())
        );
        assert!(matches!(
            parse(&args("bochs-vmx hello")),
            Ok(Command::Bochs(_))
        ));
    }

    #[test]
    fn corpus_refuses_a_guest_and_a_backend() {
        let mut with_backend = args("bochs-vmx --corpus --append");
        with_backend.push("mem=8 backend=vmx".into());
        let err = parse(&with_backend).expect_err("backend in --append");
        assert!(err.contains("leave backend= out"), "{err}");
        for (line, want) in [
            ("bochs-vmx --corpus hello", "unexpected argument 'hello'"),
            ("corpus-vmx hello", "unexpected argument 'hello'"),
            ("corpus-vmx --append backend=emu", "leave backend= out"),
            ("corpus-vmx --cpu", "needs a value"),
            ("corpus-vmx --bogus", "unknown option"),
        ] {
            let err = parse(&args(line)).expect_err(line);
            assert!(err.contains(want), "{line}: {err}");
        }
    }

    #[test]
    fn bench_peers_options() {
        let Ok(Command::BenchPeers(o)) = parse(&args("bench-peers")) else {
            panic!("not a bench-peers command");
        };
        assert_eq!(o.k, DEFAULT_BENCH_K);
        assert_eq!(o.workloads.len(), 3);
        assert_eq!(o.peers, None);
        assert_eq!(o.linux, Some((PathBuf::from(DEFAULT_LINUX_GUEST), false)));
        let Ok(Command::BenchPeers(o)) = parse(&args("bench-peers --linux /l")) else {
            panic!("not a bench-peers command");
        };
        assert_eq!(o.linux, Some((PathBuf::from("/l"), true)));
        let Ok(Command::BenchPeers(o)) = parse(&args("bench-peers --no-linux")) else {
            panic!("not a bench-peers command");
        };
        assert_eq!(o.linux, None);
        assert!(parse(&args("bench-peers --no-linux --linux /l")).is_err());
        let Ok(Command::BenchPeers(o)) = parse(&args(
            "bench-peers --workloads mem=2,int --k 3 --peers qemu,opsvisor --repeat 2 --timeout 9",
        )) else {
            panic!("not a bench-peers command");
        };
        assert_eq!(o.workloads, vec![("mem".into(), 2), ("int".into(), 1000)]);
        assert_eq!(o.k, 3);
        assert_eq!(o.peers, Some(vec![Peer::Opsvisor, Peer::Qemu]));
        assert_eq!(o.repeat, 2);
        assert_eq!(o.timeout, Duration::from_secs(9));
        for (line, want) in [
            ("bench-peers --workloads fp", "not a workload"),
            ("bench-peers --workloads mem=0", "not a count"),
            ("bench-peers --k 1", "at least 2"),
            ("bench-peers --peers qemu", "opsvisor must be"),
            ("bench-peers --peers vbox,opsvisor", "not a peer"),
            ("bench-peers --repeat", "needs a value"),
            ("bench-peers extra", "unexpected argument"),
        ] {
            let err = parse(&args(line)).expect_err(line);
            assert!(err.contains(want), "{line}: {err}");
        }
    }

    #[test]
    fn bad_input_is_one_clear_error() {
        for (line, want) in [
            ("bochs", "missing GUEST"),
            ("frobnicate", "unknown command"),
            ("bochs hello --timeout", "needs a value"),
            ("bochs hello --timeout -3", "--timeout"),
            ("bochs hello --timeout nan", "--timeout"),
            ("bochs hello --megs 1", "--megs"),
            ("bochs hello --ips 5", "--ips"),
            ("bochs hello --cpu a;b", "--cpu"),
            ("bochs hello --bogus", "unknown option"),
            ("bochs hello extra", "unexpected argument"),
            ("qemu he$llo", "neither a file"),
        ] {
            let err = parse(&args(line)).expect_err(line);
            assert!(err.contains(want), "{line}: {err}");
            assert!(!err.contains('\n'), "{line}: {err}");
        }
    }
}
