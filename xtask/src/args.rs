//! The command line of `cargo xtask`, on clap (derive): one subcommand per runner, each
//! with its own `--help`; [`parse`] turns clap's errors into one line naming the option
//! and the problem, and applies what depends on the command (the CPU a runner defaults
//! to, the backend word it adds, the Linux guest's files, the differential run's time
//! limit).

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand};
use opsvisor_clap_errors::Problem;
use std::ffi::OsString;
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
    /// `--gdb PORT`: the image's GDB stub on the machine's COM2, a TCP server on
    /// 127.0.0.1:PORT (the image's command line has `gdb` or `gdb-wait`).
    pub gdb: Option<u16>,
}

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Print this help text (the program's, or a command's).
    Help(String),
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
    /// The image's GDB stub driven by Debian's gdb in batch mode against the corpus guest
    /// `hello` (`run.gdb` is 0: a free port is picked).
    GdbCheck {
        /// Machine options, the guest and the image's command line (`gdb-wait`, the
        /// backend).
        run: RunOptions,
        /// Bochs or QEMU TCG.
        machine: Machine,
    },
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
pub const BENCH_WORKLOADS: [(&str, u64); 4] =
    [("int", 1000), ("mem", 25), ("exit", 2000), ("cpuid", 4000)];
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

/// The first lines of `cargo xtask --help`.
const ABOUT: &str =
    "cargo xtask: build the opsvisor bare-metal image and run it under Bochs and QEMU";

/// The end of `cargo xtask --help`.
const NOTES: &str = "\
Each command has its own help: cargo xtask bochs --help, cargo xtask diff --help, ...

GUEST is a file (a kernel in any format the image loads: multiboot v1, a Linux bzImage, an
ELF kernel with a PVH note) or the name of a corpus guest (guests/src/bin/NAME.rs, built with
`cargo build --release` in guests/).

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
files are installed); the image reports on COM1 at 115200 baud.";

/// The end of `cargo xtask diff --help` and `vmx-diff --help`.
const DIFF_NOTES: &str = "\
Generates proptest cases (short random instruction sequences, system instructions included,
from random states in real, 32-bit protected, paged (2-level and PAE), long and compatibility
mode, at CPL 0 or 3), boots the image with them, runs each on the hardware backend and on the
emulator in the image, and reports every difference with the case minimized.

Bochs runs vmx on corei7_skylake_x and svm on ryzen unless --cpu says otherwise. The default
--timeout is 120 s plus 0.2 s per case. The instructions the reference is known to get wrong,
or where its vendor and the emulator differ by design, are not generated
(opsvisor_vmdiff::generate: bochs_quirks for Bochs' Intel models, bochs_bugs for its AMD
ones, qemu_tcg_quirks for QEMU TCG, vendor_differences for Intel silicon). Exit status 0 when
every case ends the same on both backends, 1 when any differs, 4 when the CPU cannot run the
hardware backend.";

/// The command line as clap sees it.
#[derive(Parser, Debug)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = ABOUT,
    after_help = NOTES,
    subcommand_value_name = "COMMAND",
    max_term_width = 100
)]
struct Cli {
    #[command(subcommand)]
    command: Sub,
}

#[derive(Subcommand, Debug)]
enum Sub {
    /// Build the image, print its path
    Image,
    /// GRUB ISO: the image (multiboot2) + GUEST as module
    Iso {
        #[command(flatten)]
        guest: GuestArg,
        /// Where to write it [default: next to the image]
        #[arg(long, value_name = "FILE", allow_hyphen_values = true)]
        out: Option<PathBuf>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Bootable USB disk image (the hybrid GRUB ISO)
    Usb {
        #[command(flatten)]
        guest: GuestArg,
        /// The disk image to write
        #[arg(value_name = "OUT.img")]
        out: Option<PathBuf>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Boot under headless Bochs
    Bochs {
        #[command(flatten)]
        guest: GuestArg,
        #[command(flatten)]
        run: RunArgs,
    },
    /// The same, named for its VMX CPU model; with --corpus every corpus guest in turn on
    /// the VMX backend (backend=vmx): one PASS/FAIL line per guest and a summary
    BochsVmx(CorpusOrGuest),
    /// Boot under Bochs with an SVM CPU model (ryzen) on the SVM backend (backend=svm
    /// unless --append names one); with --corpus every corpus guest on SVM
    BochsSvm(CorpusOrGuest),
    /// Every corpus guest in turn on the VMX backend under Bochs (bochs-vmx --corpus)
    CorpusVmx {
        #[command(flatten)]
        run: RunArgs,
    },
    /// Boot the Linux guest on the VMX backend under Bochs; exit 0 when it reaches its
    /// /init marker and powers off
    BochsLinux(LinuxArgs),
    /// The same on the SVM backend under Bochs (ryzen)
    BochsSvmLinux(LinuxArgs),
    /// The same on the SVM backend under QEMU TCG
    QemuSvmLinux(LinuxArgs),
    /// Boot under QEMU TCG (-kernel, PVH; -cpu max, whose SVM the image picks on its own)
    Qemu {
        #[command(flatten)]
        guest: GuestArg,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Boot under QEMU TCG on the SVM backend (backend=svm unless --append names one);
    /// with --corpus every corpus guest on SVM
    QemuSvm(CorpusOrGuest),
    /// Boot under QEMU with KVM (-cpu host, nested VMX/SVM)
    QemuKvm {
        #[command(flatten)]
        guest: GuestArg,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Differential run: generated cases on the hardware backend (VMX, the default, or
    /// SVM) against the emulator in the image
    #[command(after_long_help = DIFF_NOTES)]
    Diff {
        /// The hardware backend: vmx or svm [default: vmx]
        #[arg(long, value_name = "B", allow_hyphen_values = true, value_parser = hw_backend)]
        backend: Option<HwBackend>,
        #[command(flatten)]
        diff: DiffArgs,
        #[command(flatten)]
        run: RunArgs,
    },
    /// The same as diff --backend vmx
    #[command(after_long_help = DIFF_NOTES)]
    VmxDiff {
        #[command(flatten)]
        diff: DiffArgs,
        #[command(flatten)]
        run: RunArgs,
    },
    /// The peer benchmark: the same guest workloads on opsvisor's emulator, QEMU TCG and
    /// Bochs (if installed); guest instructions per CPU second and the ratio to QEMU, per
    /// workload
    #[command(after_long_help = BENCH_NOTES)]
    BenchPeers(BenchArgs),
    /// Drive the image's GDB stub (COM2) with Debian's gdb in batch mode against the
    /// corpus guest hello on RUNNER: bochs-vmx (default), bochs-svm or qemu-svm. A
    /// breakpoint, a hardware breakpoint, continue, registers, memory, single steps and
    /// the run's end; exit 0 when gdb saw each and the guest passed
    GdbCheck {
        /// bochs-vmx, bochs-svm or qemu-svm
        #[arg(value_name = "RUNNER", value_parser = ["bochs-vmx", "bochs-svm", "qemu-svm"])]
        runner: Option<String>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Regenerate docs/emu-coverage.md (the emulator's instruction coverage)
    Coverage {
        /// Fail if it is stale instead
        #[arg(long)]
        check: bool,
    },
}

/// A runner's guest.
#[derive(Args, Debug)]
struct GuestArg {
    /// A kernel file or a corpus guest name (e.g. hello)
    #[arg(
        value_name = "GUEST",
        value_parser = clap::builder::OsStringValueParser::new().try_map(guest_spec)
    )]
    guest: Option<GuestSpec>,
}

/// A runner that boots one guest, or with `--corpus` every corpus guest.
#[derive(Args, Debug)]
struct CorpusOrGuest {
    #[command(flatten)]
    guest: GuestArg,
    /// Every corpus guest in turn on the hardware backend (no GUEST)
    #[arg(long)]
    corpus: bool,
    #[command(flatten)]
    run: RunArgs,
}

/// The Linux runners.
#[derive(Args, Debug)]
struct LinuxArgs {
    /// Where the Linux guest is (scripts/linux-guest.sh's vmlinuz, vmlinux, initrd.gz)
    /// [default: target/linux-guest]
    #[arg(long, value_name = "DIR", allow_hyphen_values = true)]
    dir: Option<PathBuf>,
    /// Boot vmlinux through its PVH entry instead of the bzImage vmlinuz
    #[arg(long)]
    pvh: bool,
    #[command(flatten)]
    run: RunArgs,
}

/// Options shared by the commands that run the image.
#[derive(Args, Debug)]
struct RunArgs {
    /// The CPU: a Bochs model (default corei7_skylake_x; ryzen for the svm commands), or
    /// QEMU's -cpu argument for the qemu commands (default max; host under KVM)
    #[arg(long, value_name = "MODEL", allow_hyphen_values = true)]
    cpu: Option<String>,
    /// Give up after SECS seconds (default 120); the emulator is killed
    #[arg(long, value_name = "SECS", allow_hyphen_values = true, value_parser = timeout)]
    timeout: Option<Duration>,
    /// RAM of the emulated machine, MiB (default 256)
    #[arg(long, value_name = "MIB", allow_hyphen_values = true, value_parser = megs)]
    megs: Option<u32>,
    /// Bochs instructions per emulated second (default 50000000); the emulated clock runs
    /// slower against the work done with a larger N, which timer guests need (at 5000000
    /// one exit costs ~70 us of emulated time)
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = ips)]
    ips: Option<u64>,
    /// The image's command line: mem=<MiB> (guest RAM, default 64), backend=auto|vmx|svm|emu,
    /// interactive, fault (raise #UD first: checks the exception report); --corpus adds the
    /// backend itself
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    append: Option<String>,
    /// qemu: boot the GRUB ISO as a CD instead of -kernel/-initrd (implied by --initrd)
    #[arg(long)]
    iso: bool,
    /// A Linux guest's initrd (the image's second module)
    #[arg(long, value_name = "FILE", allow_hyphen_values = true)]
    initrd: Option<PathBuf>,
    /// The guest's command line (its module's string; default: its name)
    #[arg(long, value_name = "S", allow_hyphen_values = true)]
    guest_append: Option<String>,
    /// The image's GDB stub for a VMX or SVM guest on the machine's COM2, a TCP server
    /// on 127.0.0.1:PORT (gdb: target remote :PORT); Bochs waits for gdb to connect
    /// before it starts the machine
    #[arg(long, value_name = "PORT", allow_hyphen_values = true, value_parser = gdb_port)]
    gdb: Option<u16>,
    /// With --gdb: the guest waits for gdb before its first instruction (QEMU's -S)
    #[arg(long)]
    gdb_wait: bool,
}

/// The differential run's own options.
#[derive(Args, Debug)]
struct DiffArgs {
    /// How many cases (default 100)
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = cases)]
    cases: Option<usize>,
    /// Generator seed (default 1); the same seed gives the same cases
    #[arg(long, value_name = "S", allow_hyphen_values = true, value_parser = seed)]
    seed: Option<u64>,
    /// Comma-separated: real,prot32,paged32,pae32,long64,compat32 (default all)
    #[arg(long, value_name = "LIST", allow_hyphen_values = true, value_parser = modes)]
    modes: Option<ModeList>,
    /// Run under QEMU TCG instead of Bochs (svm only: TCG has no VMX)
    #[arg(long, conflicts_with_all = ["kvm", "usb", "report"])]
    qemu: bool,
    /// Run under QEMU/KVM with nested VMX or SVM instead of Bochs (real silicon)
    #[arg(long, conflicts_with_all = ["usb", "report"])]
    kvm: bool,
    /// Write a bootable USB image with the cases for bare metal instead of running them;
    /// the result comes on COM1 (115200 baud)
    #[arg(
        long,
        value_name = "OUT.img",
        allow_hyphen_values = true,
        conflicts_with = "report"
    )]
    usb: Option<PathBuf>,
    /// Decode the differences in a serial log captured from such a run
    #[arg(long, value_name = "LOG", allow_hyphen_values = true)]
    report: Option<PathBuf>,
}

/// The end of `cargo xtask bench-peers --help`.
const BENCH_NOTES: &str = "\
The guest is the corpus guest `bench` (guests/src/bin/bench.rs). Each workload runs N and K·N
times on every peer; the difference of the two runs' CPU time (user+sys of the child) cancels
the boot. Instructions are counted by opsvisor's emulator for the same iterations (the guest is
deterministic: every peer runs the same instructions). Exit status 0 when every peer passed
and printed the same checksums, 1 when a peer failed or the checksums differ, 2 on bad input or
a missing tool, 3 when a run passed --timeout.";

/// `bench-peers`' options.
#[derive(Args, Debug)]
struct BenchArgs {
    /// Comma-separated, each NAME or NAME=N: int, mem, exit, cpuid [default:
    /// int=1000,mem=25,exit=2000,cpuid=4000];
    /// N is the short run's iteration count
    #[arg(long, value_name = "LIST", allow_hyphen_values = true)]
    workloads: Option<String>,
    /// The long run does K·N iterations [default: 4]
    #[arg(long, value_name = "K", allow_hyphen_values = true)]
    k: Option<String>,
    /// Comma-separated: opsvisor,qemu,bochs [default: all three, Bochs only if installed];
    /// opsvisor must be among them (it counts the instructions)
    #[arg(long, value_name = "LIST", allow_hyphen_values = true)]
    peers: Option<String>,
    /// Run each point R times, every peer in turn each time, and keep the least CPU time
    /// [default: 1]
    #[arg(long, value_name = "R", allow_hyphen_values = true)]
    repeat: Option<String>,
    /// The opsvisor program to measure [default: build target/release/opsvisor]
    #[arg(long, value_name = "PATH", allow_hyphen_values = true)]
    opsvisor: Option<PathBuf>,
    /// Limit on one run, seconds [default: 600]
    #[arg(long, value_name = "SECS", allow_hyphen_values = true, value_parser = timeout)]
    timeout: Option<Duration>,
    /// Also boot Linux (DIR/vmlinuz with DIR/initrd.gz, from scripts/linux-guest.sh) to its
    /// init and power-off on opsvisor and on QEMU (-M pc) and compare the boot's CPU time; by
    /// default it runs when target/linux-guest holds the guest
    #[arg(
        long,
        value_name = "DIR",
        allow_hyphen_values = true,
        conflicts_with = "no_linux"
    )]
    linux: Option<PathBuf>,
    /// Leave the Linux boot out
    #[arg(long)]
    no_linux: bool,
}

/// A count option's value in 1..=max.
fn count(name: &str, v: &str, max: u64) -> Result<u64, String> {
    v.parse::<u64>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| format!("{name}: '{v}' is not a count (1 to {max})"))
}

/// `bench-peers`' options checked.
fn bench_options(a: BenchArgs) -> Result<BenchOptions, String> {
    let mut workloads = BENCH_WORKLOADS
        .iter()
        .map(|(w, n)| (w.to_string(), *n))
        .collect::<Vec<_>>();
    if let Some(text) = a.workloads {
        let mut list = Vec::new();
        for item in text.split(',').filter(|s| !s.is_empty()) {
            let (name, n) = match item.split_once('=') {
                Some((name, n)) => (name, Some(n)),
                None => (item, None),
            };
            let Some(&(_, default)) = BENCH_WORKLOADS.iter().find(|(w, _)| *w == name) else {
                return Err(format!(
                    "--workloads: '{name}' is not a workload (int, mem, exit, cpuid)"
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
        workloads = list;
    }
    let k = match a.k {
        Some(v) => {
            let k = count("--k", &v, 1000)?;
            if k < 2 {
                return Err("--k: must be at least 2 (the long run minus the short one)".into());
            }
            k
        }
        None => DEFAULT_BENCH_K,
    };
    let peers = match a.peers {
        Some(text) => {
            let mut list = Vec::new();
            for name in text.split(',').filter(|s| !s.is_empty()) {
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
                    "--peers: opsvisor must be among the peers (it counts the instructions)".into(),
                );
            }
            // opsvisor first: its count is read before the others run.
            list.sort_by_key(|p| *p != Peer::Opsvisor);
            Some(list)
        }
        None => None,
    };
    let repeat = match a.repeat {
        Some(v) => count("--repeat", &v, 100)? as u32,
        None => 1,
    };
    let linux = match (a.linux, a.no_linux) {
        (Some(dir), _) => Some((dir, true)),
        (None, true) => None,
        (None, false) => Some((PathBuf::from(DEFAULT_LINUX_GUEST), false)),
    };
    Ok(BenchOptions {
        workloads,
        k,
        peers,
        repeat,
        opsvisor: a.opsvisor,
        timeout: a.timeout.unwrap_or(DEFAULT_BENCH_TIMEOUT),
        linux,
    })
}

fn timeout(v: &str) -> Result<Duration, String> {
    v.parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s > 0.0 && *s <= 86_400.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("--timeout: '{v}' is not a number of seconds (0 < s <= 86400)"))
}

fn megs(v: &str) -> Result<u32, String> {
    v.parse()
        .ok()
        .filter(|m| (32..=65536).contains(m))
        .ok_or_else(|| format!("--megs: '{v}' is not a RAM size in MiB (32 to 65536)"))
}

fn ips(v: &str) -> Result<u64, String> {
    v.parse()
        .ok()
        .filter(|n| (1_000_000..=1_000_000_000).contains(n))
        .ok_or_else(|| format!("--ips: '{v}' is not an instruction rate (1000000 to 1000000000)"))
}

fn gdb_port(v: &str) -> Result<u16, String> {
    v.parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("--gdb: '{v}' is not a TCP port (1 to 65535)"))
}

fn cases(v: &str) -> Result<usize, String> {
    v.parse()
        .ok()
        .filter(|n| (1..=100_000).contains(n))
        .ok_or_else(|| format!("--cases: '{v}' is not a count (1 to 100000)"))
}

fn seed(v: &str) -> Result<u64, String> {
    v.parse()
        .map_err(|_| format!("--seed: '{v}' is not a number"))
}

/// `--modes`' list: one value (clap would take a `Vec` for an option given many times).
#[derive(Clone, Debug)]
struct ModeList(Vec<String>);

fn modes(v: &str) -> Result<ModeList, String> {
    let modes: Vec<String> = v
        .split(',')
        .filter(|m| !m.is_empty())
        .map(String::from)
        .collect();
    if modes.is_empty() {
        return Err("--modes needs at least one mode".into());
    }
    Ok(ModeList(modes))
}

fn hw_backend(v: &str) -> Result<HwBackend, String> {
    match v {
        "vmx" => Ok(HwBackend::Vmx),
        "svm" => Ok(HwBackend::Svm),
        other => Err(format!("--backend: '{other}' is not vmx or svm")),
    }
}

/// Parse the arguments after `cargo xtask`. An error is one line naming the problem.
/// Paths (the guest, `--out`, `--initrd`, `--dir`, `--usb`, `--report`, `usb`'s output)
/// may be any bytes; the other values are text.
pub fn parse(args: &[OsString]) -> Result<Command, String> {
    // `cargo xtask` and `cargo xtask help` print what `cargo xtask --help` does (clap's
    // help command lays the long help out differently).
    let bare = args.is_empty() || (args.len() == 1 && args[0] == "help");
    let help = [OsString::from("--help")];
    let args = if bare { &help[..] } else { args };
    let all = std::iter::once(OsString::from("xtask")).chain(args.iter().cloned());
    let cli = match Cli::try_parse_from(all) {
        Ok(cli) => cli,
        Err(e) => {
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    Ok(Command::Help(e.render().to_string()))
                }
                _ => Err(error_line(&e, args)),
            }
        }
    };
    let sub = cli.command;
    let bochs = |run: RunArgs, guest: GuestArg| {
        run_options(run, need_guest(guest)?, Machine::Bochs, DEFAULT_BOCHS_CPU)
    };
    Ok(match sub {
        Sub::Image => Command::Image,
        Sub::Iso { guest, out, run } => Command::Iso {
            run: bochs(run, guest)?,
            out,
        },
        Sub::Usb { guest, out, run } => {
            let run = bochs(run, guest)?;
            let out = out.ok_or("'usb' needs an output file: cargo xtask usb GUEST OUT.img")?;
            Command::Usb { run, out }
        }
        Sub::Bochs { guest, run } => Command::Bochs(bochs(run, guest)?),
        Sub::BochsVmx(c) => guest_or_corpus("bochs-vmx", c, Machine::Bochs, HwBackend::Vmx)?,
        Sub::BochsSvm(c) => guest_or_corpus("bochs-svm", c, Machine::Bochs, HwBackend::Svm)?,
        Sub::QemuSvm(c) => guest_or_corpus("qemu-svm", c, Machine::Qemu, HwBackend::Svm)?,
        Sub::CorpusVmx { run } => corpus("corpus-vmx", run, Machine::Bochs, HwBackend::Vmx)?,
        Sub::BochsLinux(l) => linux("bochs-linux", l, Machine::Bochs, HwBackend::Vmx)?,
        Sub::BochsSvmLinux(l) => linux("bochs-svm-linux", l, Machine::Bochs, HwBackend::Svm)?,
        Sub::QemuSvmLinux(l) => linux("qemu-svm-linux", l, Machine::Qemu, HwBackend::Svm)?,
        Sub::Qemu { guest, run } => Command::Qemu(run_options(
            run,
            need_guest(guest)?,
            Machine::Qemu,
            DEFAULT_QEMU_CPU,
        )?),
        Sub::QemuKvm { guest, run } => {
            Command::QemuKvm(run_options(run, need_guest(guest)?, Machine::Qemu, "host")?)
        }
        Sub::Diff {
            backend,
            diff: d,
            run,
        } => diff("diff", backend.unwrap_or(HwBackend::Vmx), d, run)?,
        Sub::VmxDiff { diff: d, run } => diff("vmx-diff", HwBackend::Vmx, d, run)?,
        Sub::BenchPeers(b) => Command::BenchPeers(bench_options(b)?),
        Sub::Coverage { check } => Command::Coverage { check },
        Sub::GdbCheck { runner, mut run } => {
            let (machine, backend, cpu) = match runner.as_deref() {
                Some("bochs-svm") => (Machine::Bochs, HwBackend::Svm, DEFAULT_BOCHS_SVM_CPU),
                Some("qemu-svm") => (Machine::Qemu, HwBackend::Svm, DEFAULT_QEMU_CPU),
                _ => (Machine::Bochs, HwBackend::Vmx, DEFAULT_BOCHS_CPU),
            };
            if run.gdb.is_some() {
                return Err("'gdb-check' picks a free port itself: leave out --gdb".into());
            }
            // gdb-check always waits for gdb (the word is added below).
            run.gdb_wait = false;
            let mut opts = run_options(run, GuestSpec::Corpus("hello".into()), machine, cpu)?;
            opts.gdb = Some(0);
            if !opts
                .append
                .split_ascii_whitespace()
                .any(|w| w == "gdb-wait")
            {
                opts.append = format!("{} gdb-wait", opts.append).trim().to_string();
            }
            Command::GdbCheck {
                run: with_backend(opts, backend),
                machine,
            }
        }
    })
}

/// The guest a runner needs.
fn need_guest(guest: GuestArg) -> Result<GuestSpec, String> {
    guest
        .guest
        .ok_or_else(|| "missing GUEST: a kernel file or a corpus guest name (e.g. hello)".into())
}

/// The run options of a runner on `machine` whose CPU defaults to `default_cpu`.
fn run_options(
    run: RunArgs,
    guest: GuestSpec,
    machine: Machine,
    default_cpu: &str,
) -> Result<RunOptions, String> {
    let cpu = run.cpu.unwrap_or_else(|| default_cpu.into());
    if !cpu_model_ok(&cpu, machine) {
        return Err(match machine {
            Machine::Bochs => format!("--cpu: '{cpu}' is not a Bochs CPU model name"),
            Machine::Qemu => format!("--cpu: '{cpu}' is not a QEMU CPU model"),
        });
    }
    if run.gdb_wait && run.gdb.is_none() {
        return Err("--gdb-wait waits for the stub of --gdb PORT: give --gdb too".into());
    }
    let mut append = run.append.unwrap_or_default();
    if run.gdb.is_some() {
        let word = if run.gdb_wait { "gdb-wait" } else { "gdb" };
        append = format!("{append} {word}").trim().to_string();
    }
    Ok(RunOptions {
        guest,
        cpu,
        timeout: run.timeout.unwrap_or(DEFAULT_TIMEOUT),
        megs: run.megs.unwrap_or(DEFAULT_MEGS),
        ips: run.ips.unwrap_or(DEFAULT_IPS),
        append,
        iso: run.iso,
        initrd: run.initrd,
        guest_append: run.guest_append,
        gdb: run.gdb,
    })
}

/// `bochs-vmx`, `bochs-svm`, `qemu-svm`: one guest, or with `--corpus` every corpus
/// guest.
fn guest_or_corpus(
    cmd: &str,
    c: CorpusOrGuest,
    machine: Machine,
    backend: HwBackend,
) -> Result<Command, String> {
    if c.corpus {
        if let Some(extra) = c.guest.guest {
            let name = match extra {
                GuestSpec::Path(p) => p.display().to_string(),
                GuestSpec::Corpus(n) => n,
            };
            return Err(format!(
                "'{cmd}' runs every corpus guest: unexpected argument '{name}'"
            ));
        }
        return corpus(cmd, c.run, machine, backend);
    }
    let guest = need_guest(c.guest)?;
    Ok(match (machine, backend) {
        (Machine::Bochs, HwBackend::Vmx) => {
            Command::Bochs(run_options(c.run, guest, machine, DEFAULT_BOCHS_CPU)?)
        }
        (Machine::Bochs, HwBackend::Svm) => Command::Bochs(with_backend(
            run_options(c.run, guest, machine, DEFAULT_BOCHS_SVM_CPU)?,
            HwBackend::Svm,
        )),
        (Machine::Qemu, _) => Command::Qemu(with_backend(
            run_options(c.run, guest, machine, DEFAULT_QEMU_CPU)?,
            backend,
        )),
    })
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

/// `diff` (`backend` from `--backend`, default VMX) and `vmx-diff` (VMX).
fn diff(cmd: &str, backend: HwBackend, d: DiffArgs, run: RunArgs) -> Result<Command, String> {
    let target = if d.qemu {
        DiffTarget::Qemu
    } else if d.kvm {
        DiffTarget::QemuKvm
    } else if let Some(out) = d.usb {
        DiffTarget::Usb(out)
    } else if let Some(log) = d.report {
        DiffTarget::Report(log)
    } else {
        DiffTarget::Bochs
    };
    if backend == HwBackend::Vmx && target == DiffTarget::Qemu {
        return Err(format!(
            "'{cmd}': QEMU's TCG has no VMX: run vmx under Bochs (the default) or --kvm, or pass --backend svm"
        ));
    }
    let (machine, default_cpu) = match target {
        DiffTarget::Qemu => (Machine::Qemu, DEFAULT_QEMU_CPU),
        DiffTarget::QemuKvm => (Machine::Qemu, "host"),
        _ => (Machine::Bochs, backend.bochs_cpu()),
    };
    let cases = d.cases.unwrap_or(DEFAULT_DIFF_CASES);
    let timeout_given = run.timeout.is_some();
    // The pack of generated cases stands in for the guest.
    let mut run = run_options(
        run,
        GuestSpec::Path(PathBuf::from("./cases.pack")),
        machine,
        default_cpu,
    )?;
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
        seed: d.seed.unwrap_or(DEFAULT_DIFF_SEED),
        modes: d.modes.map(|m| m.0).unwrap_or_default(),
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
fn linux(cmd: &str, l: LinuxArgs, machine: Machine, backend: HwBackend) -> Result<Command, String> {
    let dir = l.dir.unwrap_or_else(|| PathBuf::from(LINUX_GUEST_DIR));
    let (timeout, megs) = (l.run.timeout.is_some(), l.run.megs.is_some());
    let default_cpu = match machine {
        Machine::Bochs => backend.bochs_cpu(),
        Machine::Qemu => DEFAULT_QEMU_CPU,
    };
    let guest = GuestSpec::Path(dir.join(if l.pvh { "vmlinux" } else { "vmlinuz" }));
    let mut run = run_options(l.run, guest, machine, default_cpu)?;
    if run.initrd.is_some() {
        return Err(format!(
            "'{cmd}' takes the initrd from --dir: leave out --initrd"
        ));
    }
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
    run: RunArgs,
    machine: Machine,
    backend: HwBackend,
) -> Result<Command, String> {
    let default_cpu = match machine {
        Machine::Bochs => backend.bochs_cpu(),
        Machine::Qemu => DEFAULT_QEMU_CPU,
    };
    // Every corpus guest runs in turn: the guest in the options is unused.
    let run = run_options(run, GuestSpec::Corpus(String::new()), machine, default_cpu)?;
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

/// A path if it looks like one (has a slash or a dot, or names an existing file),
/// otherwise a corpus guest name.
pub fn guest_spec(arg: OsString) -> Result<GuestSpec, String> {
    if arg.is_empty() {
        return Err("GUEST is empty".into());
    }
    let bytes = arg.as_encoded_bytes();
    if bytes.contains(&b'/') || bytes.contains(&b'.') || std::path::Path::new(&arg).is_file() {
        return Ok(GuestSpec::Path(PathBuf::from(arg)));
    }
    match arg.into_string() {
        Ok(name)
            if name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
        {
            Ok(GuestSpec::Corpus(name))
        }
        Ok(name) => Err(format!(
            "'{name}' is neither a file nor a corpus guest name"
        )),
        Err(arg) => Err(format!(
            "'{}' is neither a file nor a corpus guest name",
            arg.to_string_lossy()
        )),
    }
}

/// The error for a value that is not UTF-8 where text is expected: the option it was
/// given to (a path may be any bytes, but the image's command lines, the CPU model and
/// the numbers are text).
fn not_utf8(args: &[OsString]) -> String {
    let Some(at) = args.iter().position(|a| a.to_str().is_none()) else {
        return "an argument is not UTF-8".into();
    };
    let value = args[at].to_string_lossy();
    match at.checked_sub(1).map(|i| args[i].to_string_lossy()) {
        Some(option) if option.starts_with("--") => {
            format!("{option}: '{value}' is not UTF-8")
        }
        _ => format!("'{value}' is not UTF-8"),
    }
}

/// One line for a clap error: the option and what was wrong with it.
fn error_line(e: &clap::Error, args: &[OsString]) -> String {
    let cmd = args
        .iter()
        .map(|a| a.to_string_lossy())
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    let line = match Problem::of(e) {
        Problem::UnexpectedWord { word } if cmd.is_empty() || cmd == word => {
            format!("unknown command '{word}'")
        }
        Problem::UnexpectedWord { word } => format!("'{cmd}': unexpected argument '{word}'"),
        Problem::NotUtf8 { .. } => not_utf8(args),
        // A value parser's message without clap's "invalid value 'V' for 'OPTION'"
        // before it: the xtask's parsers name the option themselves.
        Problem::Other { text } => match text.split_once("': ") {
            Some((_, reason)) if text.starts_with("invalid value '") => reason.to_string(),
            _ => text,
        },
        problem => problem.line(),
    };
    line.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<OsString> {
        s.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn no_arguments_is_help() {
        assert!(matches!(parse(&[]), Ok(Command::Help(_))));
        assert!(matches!(parse(&args("help")), Ok(Command::Help(_))));
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
    fn gdb_options() {
        let Ok(Command::Bochs(run)) = parse(&args("bochs-vmx hello --gdb 1234 --gdb-wait")) else {
            panic!("not a bochs command");
        };
        assert_eq!(run.gdb, Some(1234));
        assert_eq!(run.append, "gdb-wait");
        let Ok(Command::Qemu(run)) = parse(&args("qemu-svm hello --gdb 99")) else {
            panic!("not a qemu command");
        };
        assert_eq!(
            (run.gdb, run.append.as_str()),
            (Some(99), "gdb backend=svm")
        );
        let Ok(Command::GdbCheck { run, machine }) = parse(&args("gdb-check qemu-svm")) else {
            panic!("not gdb-check");
        };
        assert_eq!(machine, Machine::Qemu);
        assert_eq!(run.guest, GuestSpec::Corpus("hello".into()));
        assert_eq!(run.append, "gdb-wait backend=svm");
        let Ok(Command::GdbCheck { run, machine }) = parse(&args("gdb-check")) else {
            panic!("not gdb-check");
        };
        assert_eq!(
            (machine, run.cpu.as_str()),
            (Machine::Bochs, DEFAULT_BOCHS_CPU)
        );
        assert_eq!(run.append, "gdb-wait backend=vmx");
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
            ("bochs-vmx hello --gdb 0", "not a TCP port"),
            ("bochs-vmx hello --gdb 70000", "not a TCP port"),
            ("bochs-vmx hello --gdb-wait", "give --gdb too"),
            ("gdb-check --gdb 1234", "picks a free port"),
            ("gdb-check bochs", "invalid value"),
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
            panic!("bench-peers");
        };
        assert_eq!(o.k, DEFAULT_BENCH_K);
        assert_eq!(o.workloads.len(), BENCH_WORKLOADS.len());
        assert_eq!(o.linux, Some((PathBuf::from(DEFAULT_LINUX_GUEST), false)));
        let Ok(Command::BenchPeers(o)) = parse(&args(
            "bench-peers --workloads mem=5,int --peers qemu,opsvisor --repeat 3 --k 2 --no-linux",
        )) else {
            panic!("bench-peers with options");
        };
        assert_eq!(o.workloads, vec![("mem".into(), 5), ("int".into(), 1000)]);
        assert_eq!(o.peers, Some(vec![Peer::Opsvisor, Peer::Qemu]));
        assert_eq!((o.repeat, o.k, o.linux), (3, 2, None));
        let Ok(Command::BenchPeers(o)) = parse(&args("bench-peers --linux /l --timeout 9")) else {
            panic!("bench-peers --linux");
        };
        assert_eq!(o.linux, Some((PathBuf::from("/l"), true)));
        assert_eq!(o.timeout, Duration::from_secs(9));
        for (line, want) in [
            ("bench-peers --workloads cpu", "not a workload"),
            ("bench-peers --workloads int=0", "not a count"),
            ("bench-peers --k 1", "at least 2"),
            ("bench-peers --peers qemu", "must be among"),
            ("bench-peers --peers vbox,opsvisor", "not a peer"),
            ("bench-peers --repeat x", "--repeat"),
            ("bench-peers --linux /l --no-linux", "--no-linux"),
        ] {
            let err = parse(&args(line)).expect_err(line);
            assert!(err.contains(want), "{line}: {err}");
            assert!(!err.contains('\n'), "{line}: {err}");
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

    #[test]
    fn options_given_twice_or_without_a_value_are_refused() {
        for (line, want) in [
            (
                "bochs hello --timeout 5 --timeout 6",
                "option --timeout is given more than once",
            ),
            ("bochs hello --iso=yes", "option --iso takes no value"),
            (
                "diff --backend svm --qemu --kvm",
                "--qemu cannot be used with --kvm",
            ),
            (
                "coverage --check --check",
                "--check is given more than once",
            ),
            ("bochs hello --timeout=", "--timeout: '' is not a number"),
        ] {
            let err = parse(&args(line)).expect_err(line);
            assert!(err.contains(want), "{line}: {err}");
            assert!(!err.contains('\n'), "{line}: {err}");
        }
        // The `--option=value` spelling is the same as two words.
        let Ok(Command::Bochs(run)) = parse(&args("bochs hello --timeout=5")) else {
            panic!("not a bochs command");
        };
        assert_eq!(run.timeout, Duration::from_secs(5));
    }

    #[test]
    fn help_comes_from_clap_for_the_program_and_each_command() {
        let Ok(Command::Help(top)) = parse(&args("--help")) else {
            panic!("no help");
        };
        for cmd in [
            "image",
            "bochs-vmx",
            "bochs-svm-linux",
            "qemu-svm",
            "vmx-diff",
            "coverage",
        ] {
            assert!(top.contains(cmd), "{cmd} missing from --help");
        }
        assert_eq!(parse(&args("help")), Ok(Command::Help(top.clone())));
        assert_eq!(parse(&[]), Ok(Command::Help(top)));
        for (line, options) in [
            (
                "bochs --help",
                &["--cpu", "--timeout", "--append", "GUEST"][..],
            ),
            (
                "help bochs",
                &["--cpu", "--timeout", "--append", "GUEST"][..],
            ),
            ("bochs-vmx -h", &["--corpus", "--megs"][..]),
            (
                "bochs-linux --help",
                &["--dir", "--pvh", "--guest-append"][..],
            ),
            (
                "diff --help",
                &["--backend", "--cases", "--seed", "--modes", "Exit status"][..],
            ),
            ("usb --help", &["OUT.img"][..]),
        ] {
            let Ok(Command::Help(text)) = parse(&args(line)) else {
                panic!("{line}: no help");
            };
            for option in options {
                assert!(
                    text.contains(option),
                    "{line}: {option} missing from\n{text}"
                );
            }
        }
    }

    #[test]
    fn paths_may_be_any_bytes_other_values_are_text() {
        use std::os::unix::ffi::OsStringExt;
        let odd = |s: &str| {
            let mut bytes = s.as_bytes().to_vec();
            bytes.push(0xff);
            OsString::from_vec(bytes)
        };
        let mut line = args("qemu");
        line.push(odd("/tmp/kernel"));
        line.extend(args("--initrd"));
        line.push(odd("/tmp/initrd"));
        let Ok(Command::Qemu(run)) = parse(&line) else {
            panic!("not a qemu command");
        };
        assert_eq!(
            run.guest,
            GuestSpec::Path(PathBuf::from(odd("/tmp/kernel")))
        );
        assert_eq!(run.initrd, Some(PathBuf::from(odd("/tmp/initrd"))));

        let mut line = args("usb hello");
        line.push(odd("stick"));
        let Ok(Command::Usb { out, .. }) = parse(&line) else {
            panic!("not a usb command");
        };
        assert_eq!(out, PathBuf::from(odd("stick")));

        let mut line = args("bochs-linux --dir");
        line.push(odd("/tmp/lg"));
        let Ok(Command::Linux { run, .. }) = parse(&line) else {
            panic!("not a linux command");
        };
        assert_eq!(
            run.guest,
            GuestSpec::Path(PathBuf::from(odd("/tmp/lg")).join("vmlinuz"))
        );

        // A corpus name is text: bytes that are not UTF-8 and name no file are refused.
        let err = parse(&[OsString::from("bochs"), odd("hello")]).expect_err("odd name");
        assert!(
            err.contains("neither a file nor a corpus guest name"),
            "{err}"
        );

        let mut line = args("bochs hello --append");
        line.push(odd("mem=32"));
        assert_eq!(
            parse(&line),
            Err("--append: 'mem=32\u{fffd}' is not UTF-8".into())
        );
    }
}
