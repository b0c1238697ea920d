//! The command line of `cargo xtask`.

use std::path::PathBuf;
use std::time::Duration;

/// The default Bochs CPU model: Skylake-X has VMX with EPT, VPID and unrestricted guest.
pub const DEFAULT_BOCHS_CPU: &str = "corei7_skylake_x";
/// The Bochs CPU model of the SVM commands: Ryzen has SVM with nested paging, NRIP save
/// and flush-by-ASID.
pub const DEFAULT_BOCHS_SVM_CPU: &str = "ryzen";
/// The QEMU CPU of the TCG commands: `max` has SVM with nested paging under TCG (AMD's
/// vendor string, every instruction set TCG implements, so that what core's CPUID
/// offers the guest runs natively under SVM).
pub const DEFAULT_QEMU_CPU: &str = "max";
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

/// The hardware backend a command runs (`backend=` on the image's command line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HwBackend {
    /// Intel VT-x.
    Vmx,
    /// AMD-V.
    Svm,
}

impl HwBackend {
    /// The backend's name ("vmx", "svm").
    pub fn name(self) -> &'static str {
        match self {
            HwBackend::Vmx => "vmx",
            HwBackend::Svm => "svm",
        }
    }

    /// The image's command-line word that forces it.
    pub fn append_word(self) -> &'static str {
        match self {
            HwBackend::Vmx => "backend=vmx",
            HwBackend::Svm => "backend=svm",
        }
    }

    /// The Bochs CPU model its commands default to.
    pub fn bochs_cpu(self) -> &'static str {
        match self {
            HwBackend::Vmx => DEFAULT_BOCHS_CPU,
            HwBackend::Svm => DEFAULT_BOCHS_SVM_CPU,
        }
    }
}

/// The emulator a command boots the image in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Machine {
    /// Headless Bochs.
    Bochs,
    /// QEMU with TCG.
    Qemu,
}

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
    /// The CPU model: a Bochs model name, or QEMU's `-cpu` argument.
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
    /// A Linux guest's initrd (the image's second module).
    pub initrd: Option<PathBuf>,
    /// The guest's command line (its module's string; default: the guest's name).
    pub guest_append: Option<String>,
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
    /// Boot the Linux guest on a hardware backend and check it reached its marker and
    /// powered off.
    Linux {
        /// Machine options, the guest and its initrd set.
        run: RunOptions,
        /// Bochs or QEMU TCG.
        machine: Machine,
    },
    /// Boot every corpus guest in turn on a hardware backend (its `backend=` is added
    /// to the image's command line); the guest in the options is unused.
    Corpus {
        /// Machine options.
        run: RunOptions,
        /// Bochs or QEMU TCG.
        machine: Machine,
        /// VMX or SVM.
        backend: HwBackend,
    },
    /// Run under QEMU TCG.
    Qemu(RunOptions),
    /// Run under QEMU with KVM (nested VMX).
    QemuKvm(RunOptions),
    /// Differential run: generated cases on a hardware backend against the emulator
    /// inside the image.
    Diff(DiffOptions),
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
    /// Headless Bochs with a CPU model of the backend's vendor.
    Bochs,
    /// QEMU with TCG (SVM only: TCG has no VMX).
    Qemu,
    /// QEMU with KVM and nested virtualization.
    QemuKvm,
    /// Write a bootable USB disk image with the cases, for bare metal.
    Usb(PathBuf),
    /// Decode the differences in a serial log captured elsewhere.
    Report(PathBuf),
}

/// Options of `diff` (and `vmx-diff`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiffOptions {
    /// The hardware backend the emulator is compared with.
    pub backend: HwBackend,
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

/// The help text.
pub const HELP: &str = "\
cargo xtask: build the opsvisor bare-metal image and run it under Bochs and QEMU

USAGE:
    cargo xtask image                       build the image, print its path
    cargo xtask iso GUEST [--out FILE]      GRUB ISO: the image (multiboot2) + GUEST as module
    cargo xtask usb GUEST OUT.img           bootable USB disk image (the hybrid GRUB ISO)
    cargo xtask bochs GUEST [OPTIONS]       boot under headless Bochs
    cargo xtask bochs-vmx GUEST [OPTIONS]   the same, named for its VMX CPU model
    cargo xtask bochs-svm GUEST [OPTIONS]   boot under Bochs with an SVM CPU model (ryzen) on the
                                            SVM backend (backend=svm unless --append names one)
    cargo xtask bochs-vmx --corpus [OPTIONS]
                                            every corpus guest in turn on the VMX backend
                                            (backend=vmx): one PASS/FAIL line per guest and
                                            a summary (alias: cargo xtask corpus-vmx)
    cargo xtask bochs-svm --corpus [OPTIONS]
                                            the same on the SVM backend under Bochs (ryzen)
    cargo xtask bochs-linux [--dir DIR] [--pvh] [OPTIONS]
                                            boot the Linux guest (DIR, default
                                            target/linux-guest from scripts/linux-guest.sh:
                                            vmlinuz, or vmlinux with --pvh, and initrd.gz) on
                                            the VMX backend under Bochs; exit 0 when it reaches
                                            its /init marker and powers off
    cargo xtask qemu-svm-linux [--dir DIR] [--pvh] [OPTIONS]
    cargo xtask bochs-svm-linux [--dir DIR] [--pvh] [OPTIONS]
                                            the same on the SVM backend under QEMU TCG, or under
                                            Bochs (ryzen)
    cargo xtask qemu GUEST [OPTIONS]        boot under QEMU TCG (-kernel, PVH; -cpu max, whose
                                            SVM the image picks on its own)
    cargo xtask qemu-svm GUEST [OPTIONS]    boot under QEMU TCG on the SVM backend (backend=svm
                                            unless --append names one)
    cargo xtask qemu-svm --corpus [OPTIONS] every corpus guest on the SVM backend under QEMU TCG
    cargo xtask qemu-kvm GUEST [OPTIONS]    boot under QEMU with KVM (-cpu host, nested VMX/SVM)
    cargo xtask diff [--backend vmx|svm] [DIFF OPTIONS] [OPTIONS]
                                            differential run: generate proptest cases (short
                                            random instruction sequences, system instructions
                                            included, from random states in real, 32-bit
                                            protected, paged (2-level and PAE), long and
                                            compatibility mode, at CPL 0 or 3), boot the image
                                            with them, run each on the hardware backend (VMX,
                                            the default, or SVM) and on the emulator in the
                                            image, and report every difference with the case
                                            minimized
    cargo xtask vmx-diff [DIFF OPTIONS] [OPTIONS]
                                            the same as diff --backend vmx
    cargo xtask bench-peers [BENCH OPTIONS] the peer benchmark: the same guest workloads on
                                            opsvisor's emulator, QEMU TCG and Bochs (if
                                            installed); guest instructions per CPU second and
                                            the ratio to QEMU, per workload
    cargo xtask coverage [--check]          regenerate docs/emu-coverage.md (the emulator's
                                            instruction coverage); --check fails if it is stale
    cargo xtask help                        this text

GUEST is a file (a kernel in any format the image loads: multiboot v1, a Linux bzImage, an
ELF kernel with a PVH note) or the name of a corpus guest (guests/src/bin/NAME.rs, built with
`cargo build --release` in guests/).

DIFF OPTIONS:
    --backend B       vmx (default) or svm
    --cases N         how many cases (default 100)
    --seed S          generator seed (default 1); the same seed gives the same cases
    --modes LIST      comma-separated: real,prot32,paged32,pae32,long64,compat32 (default all)
    --qemu            run under QEMU TCG instead of Bochs (svm only: TCG has no VMX)
    --kvm             run under QEMU/KVM with nested VMX or SVM instead of Bochs (real silicon)
    --usb OUT.img     write a bootable USB image with the cases for bare metal instead of
                      running them; the result comes on COM1 (115200 baud)
    --report LOG      decode the differences in a serial log captured from such a run
  Bochs runs vmx on corei7_skylake_x and svm on ryzen unless --cpu says otherwise. The
  default --timeout is 120 s plus 0.2 s per case. The instructions the reference is known
  to get wrong, or where its vendor and the emulator differ by design, are not generated
  (opsvisor_vmdiff::generate: bochs_quirks for Bochs' Intel models, bochs_bugs for its
  AMD ones, qemu_tcg_quirks for QEMU TCG, vendor_differences for Intel silicon).
  Exit status 0 when every case ends the same on both backends, 1 when any differs, 4 when
  the CPU cannot run the hardware backend.

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
    --cpu MODEL       the CPU: a Bochs model (default corei7_skylake_x; ryzen for the svm
                      commands), or QEMU's -cpu argument for the qemu commands (default max;
                      host under KVM)
    --timeout SECS    give up after SECS seconds (default 120); the emulator is killed
    --megs MIB        RAM of the emulated machine (default 256)
    --ips N           Bochs instructions per emulated second (default 50000000); the emulated
                      clock runs slower against the work done with a larger N, which timer
                      guests need (at 5000000 one exit costs ~70 us of emulated time)
    --append ARGS     the image's command line: mem=<MiB> (guest RAM, default 64),
                      backend=auto|vmx|svm|emu, interactive, fault (raise #UD first: checks the
                      exception report); --corpus adds the backend itself
    --iso             qemu: boot the GRUB ISO as a CD instead of -kernel/-initrd (implied
                      by --initrd)
    --initrd FILE     a Linux guest's initrd (the image's second module)
    --guest-append S  the guest's command line (its module's string; default: its name)

The guest's serial output is streamed to stdout as it arrives. Exit status: 0 when the image
reports the guest's PASS (`opsvisor-image: guest exit status 1`), 1 when the guest or the
image failed, 2 on bad input or a missing tool, 3 on timeout, 4 when the image was asked for
a hardware backend (backend=vmx or backend=svm, --corpus, the svm commands) and the CPU
cannot run it (the model has no VMX or SVM, or VMX without EPT and unrestricted guest, as
core2_penryn_t9600, or SVM without nested paging, as turion64_tyler). --corpus exits 0 when
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
    let corpus_flag = rest.iter().any(|a| a == "--corpus");
    let without_corpus =
        || -> Vec<String> { rest.iter().filter(|a| *a != "--corpus").cloned().collect() };
    match cmd.as_str() {
        "help" | "--help" | "-h" => Ok(Command::Help),
        "image" => {
            if let Some(extra) = rest.first() {
                return Err(format!("'image' takes no arguments (got '{extra}')"));
            }
            Ok(Command::Image)
        }
        "iso" => {
            let (run, out, positional) = parse_run(rest, true, Machine::Bochs, DEFAULT_BOCHS_CPU)?;
            no_more(cmd, &positional)?;
            Ok(Command::Iso { run, out })
        }
        "usb" => {
            let (run, out, positional) = parse_run(rest, false, Machine::Bochs, DEFAULT_BOCHS_CPU)?;
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
        "bochs-vmx" if corpus_flag => {
            corpus(cmd, &without_corpus(), Machine::Bochs, HwBackend::Vmx)
        }
        "bochs-svm" if corpus_flag => {
            corpus(cmd, &without_corpus(), Machine::Bochs, HwBackend::Svm)
        }
        "qemu-svm" if corpus_flag => corpus(cmd, &without_corpus(), Machine::Qemu, HwBackend::Svm),
        "corpus-vmx" => corpus(cmd, rest, Machine::Bochs, HwBackend::Vmx),
        "bochs" | "bochs-vmx" => {
            let (run, _, positional) = parse_run(rest, false, Machine::Bochs, DEFAULT_BOCHS_CPU)?;
            no_more(cmd, &positional)?;
            Ok(Command::Bochs(run))
        }
        "bochs-svm" => {
            let (run, _, positional) =
                parse_run(rest, false, Machine::Bochs, DEFAULT_BOCHS_SVM_CPU)?;
            no_more(cmd, &positional)?;
            Ok(Command::Bochs(with_backend(run, HwBackend::Svm)))
        }
        "qemu" | "qemu-svm" => {
            let (run, _, positional) = parse_run(rest, false, Machine::Qemu, DEFAULT_QEMU_CPU)?;
            no_more(cmd, &positional)?;
            Ok(Command::Qemu(if cmd == "qemu-svm" {
                with_backend(run, HwBackend::Svm)
            } else {
                run
            }))
        }
        "qemu-kvm" => {
            let (run, _, positional) = parse_run(rest, false, Machine::Qemu, "host")?;
            no_more(cmd, &positional)?;
            Ok(Command::QemuKvm(run))
        }
        "vmx-diff" => diff(cmd, rest, Some(HwBackend::Vmx)),
        "diff" => diff(cmd, rest, None),
        "bochs-linux" => linux(cmd, rest, Machine::Bochs, HwBackend::Vmx),
        "bochs-svm-linux" => linux(cmd, rest, Machine::Bochs, HwBackend::Svm),
        "qemu-svm-linux" => linux(cmd, rest, Machine::Qemu, HwBackend::Svm),
        "bench-peers" => bench_peers(rest),
        "coverage" => match rest {
            [] => Ok(Command::Coverage { check: false }),
            [flag] if flag == "--check" => Ok(Command::Coverage { check: true }),
            [extra, ..] => Err(format!("'coverage': unexpected argument '{extra}'")),
        },
        other => Err(format!("unknown command '{other}'")),
    }
}

/// `run` with `backend`'s word added to the image's command line, unless it names a
/// backend already.
fn with_backend(mut run: RunOptions, backend: HwBackend) -> RunOptions {
    if !run
        .append
        .split_ascii_whitespace()
        .any(|w| w.starts_with("backend="))
    {
        run.append = format!("{} {}", run.append.trim(), backend.append_word())
            .trim()
            .to_string();
    }
    run
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

/// `diff` (`backend` from `--backend`, default VMX) and `vmx-diff` (`backend` given).
fn diff(cmd: &str, args: &[String], fixed: Option<HwBackend>) -> Result<Command, String> {
    let mut cases = DEFAULT_DIFF_CASES;
    let mut seed = DEFAULT_DIFF_SEED;
    let mut modes = Vec::new();
    let mut target = DiffTarget::Bochs;
    let mut backend = fixed.unwrap_or(HwBackend::Vmx);
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
            "--backend" if fixed.is_none() => {
                backend = match value("--backend")?.as_str() {
                    "vmx" => HwBackend::Vmx,
                    "svm" => HwBackend::Svm,
                    other => {
                        return Err(format!("--backend: '{other}' is not vmx or svm"));
                    }
                };
            }
            "--qemu" => target = DiffTarget::Qemu,
            "--kvm" => target = DiffTarget::QemuKvm,
            "--usb" => target = DiffTarget::Usb(PathBuf::from(value("--usb")?)),
            "--report" => target = DiffTarget::Report(PathBuf::from(value("--report")?)),
            _ => machine.push(arg.clone()),
        }
    }
    if backend == HwBackend::Vmx && target == DiffTarget::Qemu {
        return Err(format!(
            "'{cmd}': QEMU's TCG has no VMX: run vmx under Bochs (the default) or --kvm, or pass --backend svm"
        ));
    }
    let timeout_given = machine.iter().any(|a| a == "--timeout");
    let (mach, default_cpu) = match target {
        DiffTarget::Qemu => (Machine::Qemu, DEFAULT_QEMU_CPU),
        DiffTarget::QemuKvm => (Machine::Qemu, "host"),
        _ => (Machine::Bochs, backend.bochs_cpu()),
    };
    let (mut run, _, positional) = parse_run(&machine, false, mach, default_cpu)?;
    no_more(cmd, &positional)?;
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
        return Err(format!(
            "'{cmd}' sets the image's backend and diff mode itself: leave them out of --append"
        ));
    }
    Ok(Command::Diff(DiffOptions {
        backend,
        run,
        cases,
        seed,
        modes,
        target,
    }))
}

/// Where `bochs-linux` finds the Linux guest (`scripts/linux-guest.sh`'s default).
pub const LINUX_GUEST_DIR: &str = "target/linux-guest";
/// The marker the Linux guest's /init prints.
pub const LINUX_MARKER: &str = "opsvisor-linux-guest: init reached";
/// `bochs-linux`'s default time limit: Bochs runs the boot in a few minutes.
const LINUX_TIMEOUT: Duration = Duration::from_secs(900);
/// `bochs-linux`'s default RAM of the emulated machine.
const LINUX_MEGS: u32 = 512;
/// `bochs-linux`'s default guest RAM.
const LINUX_GUEST_MIB: u32 = 256;

/// `bochs-linux`, `qemu-svm-linux`, `bochs-svm-linux`: the Linux guest (`--dir`, default
/// [`LINUX_GUEST_DIR`]: its `vmlinuz`, or `vmlinux` with `--pvh`, and `initrd.gz`) on
/// `backend` under `machine`.
fn linux(
    cmd: &str,
    args: &[String],
    machine: Machine,
    backend: HwBackend,
) -> Result<Command, String> {
    let mut dir = PathBuf::from(LINUX_GUEST_DIR);
    let mut pvh = false;
    let mut words = vec![String::from("./linux")];
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--dir" => dir = PathBuf::from(it.next().ok_or("--dir needs a value")?),
            "--pvh" => pvh = true,
            _ => words.push(arg.clone()),
        }
    }
    let given = |name: &str| words.iter().any(|a| a == name);
    let (timeout, megs) = (given("--timeout"), given("--megs"));
    let default_cpu = match machine {
        Machine::Bochs => backend.bochs_cpu(),
        Machine::Qemu => DEFAULT_QEMU_CPU,
    };
    let (mut run, _, positional) = parse_run(&words, false, machine, default_cpu)?;
    no_more(cmd, &positional)?;
    if run.initrd.is_some() {
        return Err(format!(
            "'{cmd}' takes the initrd from --dir: leave out --initrd"
        ));
    }
    run.guest = GuestSpec::Path(dir.join(if pvh { "vmlinux" } else { "vmlinuz" }));
    run.initrd = Some(dir.join("initrd.gz"));
    run.guest_append = Some(match run.guest_append {
        Some(more) => format!("console=ttyS0 {more}"),
        None => "console=ttyS0".into(),
    });
    if !timeout {
        run.timeout = LINUX_TIMEOUT;
    }
    if !megs {
        run.megs = LINUX_MEGS;
    }
    if !run
        .append
        .split_ascii_whitespace()
        .any(|w| w.starts_with("mem="))
    {
        run.append = format!("{} mem={LINUX_GUEST_MIB}", run.append.trim())
            .trim()
            .to_string();
    }
    Ok(Command::Linux {
        run: with_backend(run, backend),
        machine,
    })
}

/// The corpus commands: the run options without a guest, the backend's word added.
fn corpus(
    cmd: &str,
    args: &[String],
    machine: Machine,
    backend: HwBackend,
) -> Result<Command, String> {
    // A placeholder guest lets `parse_run` read the options; a real one is refused.
    let mut with_guest = vec![String::from("corpus")];
    with_guest.extend_from_slice(args);
    let default_cpu = match machine {
        Machine::Bochs => backend.bochs_cpu(),
        Machine::Qemu => DEFAULT_QEMU_CPU,
    };
    let (run, _, positional) = parse_run(&with_guest, false, machine, default_cpu)?;
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
            "'{cmd}' runs the {} backend: leave backend= out of --append",
            backend.name()
        ));
    }
    Ok(Command::Corpus {
        run: with_backend(run, backend),
        machine,
        backend,
    })
}

fn no_more(cmd: &str, positional: &[String]) -> Result<(), String> {
    match positional.first() {
        Some(extra) => Err(format!("'{cmd}': unexpected argument '{extra}'")),
        None => Ok(()),
    }
}

/// Whether `model` is a CPU model `machine` takes: a Bochs model name goes into the
/// configuration file and must be one word; QEMU's `-cpu` argument is one argument
/// with its `,+feature` list.
fn cpu_model_ok(model: &str, machine: Machine) -> bool {
    !model.is_empty()
        && model.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || c == '_'
                || (machine == Machine::Qemu && matches!(c, ',' | '+' | '-' | '=' | '.'))
        })
}

/// The guest, the run options, `--out` (if `allow_out`) and the positional arguments
/// after the guest, for a run on `machine` whose CPU defaults to `default_cpu`.
fn parse_run(
    args: &[String],
    allow_out: bool,
    machine: Machine,
    default_cpu: &str,
) -> Result<(RunOptions, Option<PathBuf>, Vec<String>), String> {
    let mut guest = None;
    let mut positional = Vec::new();
    let mut run = RunOptions {
        guest: GuestSpec::Corpus(String::new()),
        cpu: default_cpu.into(),
        timeout: DEFAULT_TIMEOUT,
        megs: DEFAULT_MEGS,
        ips: DEFAULT_IPS,
        append: String::new(),
        iso: false,
        initrd: None,
        guest_append: None,
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
                if !cpu_model_ok(&model, machine) {
                    return Err(match machine {
                        Machine::Bochs => format!("--cpu: '{model}' is not a Bochs CPU model name"),
                        Machine::Qemu => format!("--cpu: '{model}' is not a QEMU CPU model"),
                    });
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
            "--initrd" => run.initrd = Some(PathBuf::from(value("--initrd")?)),
            "--guest-append" => run.guest_append = Some(value("--guest-append")?),
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
    fn bochs_linux_takes_the_guest_from_its_directory() {
        let Ok(Command::Linux {
            run,
            machine: Machine::Bochs,
        }) = parse(&args("bochs-linux"))
        else {
            panic!("parsed")
        };
        assert_eq!(
            run.guest,
            GuestSpec::Path(PathBuf::from("target/linux-guest/vmlinuz"))
        );
        assert_eq!(
            run.initrd,
            Some(PathBuf::from("target/linux-guest/initrd.gz"))
        );
        assert_eq!(run.guest_append.as_deref(), Some("console=ttyS0"));
        assert_eq!(run.append, "mem=256 backend=vmx");
        assert_eq!((run.megs, run.timeout), (LINUX_MEGS, LINUX_TIMEOUT));
        let Ok(Command::Linux { run, .. }) = parse(&args(
            "bochs-linux --pvh --dir /tmp/lg --guest-append quiet --append mem=512 --megs 1024",
        )) else {
            panic!("parsed")
        };
        assert_eq!(run.guest, GuestSpec::Path(PathBuf::from("/tmp/lg/vmlinux")));
        assert_eq!(run.guest_append.as_deref(), Some("console=ttyS0 quiet"));
        assert_eq!(run.append, "mem=512 backend=vmx");
        assert_eq!(run.megs, 1024);
        assert!(parse(&args("bochs-linux --initrd x")).is_err());
        assert!(parse(&args("bochs-linux extra")).is_err());
        let Ok(Command::Linux {
            run,
            machine: Machine::Qemu,
        }) = parse(&args("qemu-svm-linux"))
        else {
            panic!("parsed")
        };
        assert_eq!(run.append, "mem=256 backend=svm");
        assert_eq!(run.cpu, DEFAULT_QEMU_CPU);
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
        let Ok(Command::Diff(d)) = parse(&args("vmx-diff")) else {
            panic!("not a vmx-diff command");
        };
        assert_eq!(
            (d.backend, d.cases, d.seed, d.target),
            (HwBackend::Vmx, DEFAULT_DIFF_CASES, 1, DiffTarget::Bochs)
        );
        assert_eq!(d.run.cpu, DEFAULT_BOCHS_CPU);
        assert!(d.modes.is_empty());
        let Ok(Command::Diff(d)) = parse(&args(
            "vmx-diff --cases 7 --seed 9 --modes real,long64 --cpu corei7_icelake_u --kvm",
        )) else {
            panic!("not a vmx-diff command");
        };
        assert_eq!((d.cases, d.seed), (7, 9));
        assert_eq!(d.modes, vec!["real", "long64"]);
        assert_eq!(d.run.cpu, "corei7_icelake_u");
        assert_eq!(d.target, DiffTarget::QemuKvm);
        let Ok(Command::Diff(d)) = parse(&args("vmx-diff --cases 5000 --timeout 30")) else {
            panic!("not a vmx-diff command");
        };
        assert_eq!(d.run.timeout, Duration::from_secs(30));
        assert!(parse(&args("vmx-diff --cases 0")).is_err());
        assert!(parse(&args("vmx-diff --append backend=emu")).is_err());
        assert!(parse(&args("vmx-diff extra")).is_err());
        // vmx-diff is VMX: --backend is diff's option.
        assert!(parse(&args("vmx-diff --backend svm")).is_err());
    }

    #[test]
    fn diff_backend_option() {
        let Ok(Command::Diff(d)) = parse(&args("diff")) else {
            panic!("not a diff command");
        };
        assert_eq!(d.backend, HwBackend::Vmx);
        let Ok(Command::Diff(d)) = parse(&args("diff --backend svm --cases 20")) else {
            panic!("not a diff command");
        };
        assert_eq!(
            (d.backend, d.cases, d.target),
            (HwBackend::Svm, 20, DiffTarget::Bochs)
        );
        assert_eq!(d.run.cpu, DEFAULT_BOCHS_SVM_CPU);
        let Ok(Command::Diff(d)) = parse(&args("diff --backend svm --qemu")) else {
            panic!("not a diff command");
        };
        assert_eq!(
            (d.target, d.run.cpu.as_str()),
            (DiffTarget::Qemu, DEFAULT_QEMU_CPU)
        );
        let Ok(Command::Diff(d)) =
            parse(&args("diff --backend svm --qemu --cpu EPYC,+svm,-x2apic"))
        else {
            panic!("not a diff command");
        };
        assert_eq!(d.run.cpu, "EPYC,+svm,-x2apic");
        for (line, want) in [
            ("diff --backend arm", "not vmx or svm"),
            ("diff --qemu", "TCG has no VMX"),
            ("diff --backend", "needs a value"),
            ("diff --backend svm --append backend=svm", "leave them out"),
            ("diff --backend svm --cpu ryzen,x", "not a Bochs CPU model"),
        ] {
            let err = parse(&args(line)).expect_err(line);
            assert!(err.contains(want), "{line}: {err}");
        }
    }

    #[test]
    fn qemu_options() {
        let Ok(Command::Qemu(run)) = parse(&args("qemu hello --iso --append mem=32")) else {
            panic!("not a qemu command");
        };
        assert!(run.iso);
        assert_eq!(run.append, "mem=32");
        assert_eq!(run.cpu, DEFAULT_QEMU_CPU);
        let Ok(Command::QemuKvm(run)) = parse(&args("qemu-kvm cpuid")) else {
            panic!("not a qemu-kvm command");
        };
        assert_eq!(run.cpu, "host");
    }

    #[test]
    fn svm_commands_force_the_svm_backend() {
        let Ok(Command::Qemu(run)) = parse(&args("qemu-svm hello --append mem=32")) else {
            panic!("not a qemu command");
        };
        assert_eq!(
            (run.append.as_str(), run.cpu.as_str()),
            ("mem=32 backend=svm", "max")
        );
        let Ok(Command::Bochs(run)) = parse(&args("bochs-svm hello")) else {
            panic!("not a bochs command");
        };
        assert_eq!(
            (run.append.as_str(), run.cpu.as_str()),
            ("backend=svm", "ryzen")
        );
        // An explicit backend stays.
        let Ok(Command::Bochs(run)) = parse(&args(
            "bochs-svm hello --cpu turion64_tyler --append backend=emu",
        )) else {
            panic!("not a bochs command");
        };
        assert_eq!(
            (run.append.as_str(), run.cpu.as_str()),
            ("backend=emu", "turion64_tyler")
        );
        for (line, machine, backend, cpu) in [
            (
                "bochs-svm --corpus",
                Machine::Bochs,
                HwBackend::Svm,
                "ryzen",
            ),
            (
                "qemu-svm --corpus --timeout 60",
                Machine::Qemu,
                HwBackend::Svm,
                "max",
            ),
        ] {
            let Ok(Command::Corpus {
                run,
                machine: m,
                backend: b,
            }) = parse(&args(line))
            else {
                panic!("{line}: not a corpus command");
            };
            assert_eq!((m, b, run.cpu.as_str()), (machine, backend, cpu), "{line}");
            assert_eq!(run.append, "backend=svm", "{line}");
        }
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
            let Ok(Command::Corpus { run, .. }) = parse(&args(line)) else {
                panic!("{line}: not a corpus command");
            };
            assert_eq!(run.cpu, DEFAULT_BOCHS_CPU, "{line}");
            assert_eq!(run.append, "backend=vmx", "{line}");
        }
        let Ok(Command::Corpus { run, .. }) = parse(&args(
            "bochs-vmx --corpus --cpu core2_penryn_t9600 --append mem=32 --timeout 60",
        )) else {
            panic!("not a corpus command");
        };
        assert_eq!(run.cpu, "core2_penryn_t9600");
        assert_eq!(run.append, "mem=32 backend=vmx");
        assert_eq!(run.timeout, Duration::from_secs(60));
        // Only bochs-vmx, bochs-svm and qemu-svm take --corpus.
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
