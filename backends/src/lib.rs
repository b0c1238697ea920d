//! The concrete opsvisor backend set, and building a machine on it.
//!
//! The core defines the generic `Backend<V, S, E>` enum (see `opsvisor_core::backend`);
//! this crate, which knows the backend crates, names the concrete one. Backends that are
//! not built yet are `Unavailable`, an uninhabited type, so their arms cost nothing.

use opsvisor_core::arch::CR0_ET;
use opsvisor_core::cpu_model::CpuModel;
use opsvisor_core::cpuid::CpuidPolicy;
use opsvisor_core::loader::flat::load_flat;
use opsvisor_core::loader::multiboot::{self, CODE_SELECTOR, DATA_SELECTOR};
pub use opsvisor_core::loader::LoadedKernel;
use opsvisor_core::loader::{
    load_kernel as core_load_kernel, BootState, KernelFormat, KernelOptions, LoadError, Module,
    KERNEL_FORMATS,
};
use opsvisor_core::mmu::memory::{GuestMemory, MemError};
use opsvisor_core::ops::{DescriptorTable, ResetKind, SegReg, Segment, X86Ops};
use opsvisor_core::pc;
use opsvisor_core::platform::Platform;
use opsvisor_core::snapshot::{self, SnapshotError};
pub use opsvisor_core::vm::MAX_VCPUS;
use opsvisor_core::vm::{Vm, VmConfig};
use opsvisor_core::{EmuSlot, Unavailable};
use opsvisor_emu::EmuVcpu;
use std::fmt;
use std::time::Duration;

/// The backend set of this build: VMX and SVM arrive with their own crates.
pub type Backend = opsvisor_core::Backend<Unavailable, Unavailable, EmuVcpu>;

/// A machine on the concrete backend set.
pub type Machine<P> = Vm<Backend, P>;

/// Which backend runs the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// The iced-x86 software CPU.
    Emu,
}

impl BackendKind {
    /// Parse a backend name as the command line spells it.
    pub fn parse(name: &str) -> Result<BackendKind, String> {
        match name {
            "emu" => Ok(BackendKind::Emu),
            "vmx" => Err(String::from(
                "backend 'vmx' runs in opsvisor's bare-metal image (see 'cargo xtask help'), not in this program (available here: emu)",
            )),
            "svm" => Err(String::from(
                "backend 'svm' runs in opsvisor's bare-metal image (see 'cargo xtask help'), not in this program (available here: emu)",
            )),
            other => Err(format!("unknown backend '{other}' (available: emu)")),
        }
    }
}

/// Where and how a flat (headerless) binary starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlatMode {
    /// 16-bit real mode, CS:IP pointing at the entry point (CS on a 64 KiB boundary).
    Real,
    /// 32-bit protected mode, flat segments, paging off (like multiboot without info).
    Protected,
}

/// Everything needed to build a machine.
#[derive(Clone, Debug)]
pub struct MachineOptions {
    /// The backend.
    pub backend: BackendKind,
    /// The CPU model (`--cpu`), cut down to what the backend implements.
    pub cpu: CpuModel,
    /// Guest RAM in bytes (a multiple of 4 KiB, at least 2 MiB).
    pub memory: u64,
    /// vCPUs: 1 to [`MAX_VCPUS`] (`--smp`). vCPU 0 boots the kernel; the others wait for
    /// its INIT and start-up IPIs.
    pub vcpus: u32,
    /// The kernel command line (`--append`), as bytes (it reaches the guest unchanged):
    /// multiboot's `cmdline`, or the Linux command line of a bzImage or PVH kernel.
    pub cmdline: Vec<u8>,
    /// The kernel's file name as given (`--kernel`), as bytes: a multiboot kernel's
    /// command line starts with it, then a space and [`cmdline`](Self::cmdline) if that is
    /// not empty, as GRUB and QEMU pass it. Empty: the command line is `cmdline` alone.
    pub kernel_name: Vec<u8>,
    /// QEMU's ISA test device (`--device pc-testdev`, see
    /// [`opsvisor_core::devices::pc_testdev`]).
    pub pc_testdev: bool,
    /// Multiboot modules: (module command line, bytes).
    pub modules: Vec<(Vec<u8>, Vec<u8>)>,
    /// The initial ramdisk of a Linux kernel (bzImage or PVH).
    pub initrd: Option<Vec<u8>>,
    /// Stop after this many guest instructions.
    pub max_instructions: Option<u64>,
    /// Stop after this much wall-clock time.
    pub timeout: Option<Duration>,
    /// Measure host time per exit kind.
    pub collect_timing: bool,
    /// Boot the kernel as a flat binary. Without this, a kernel in none of the formats
    /// [`build_machine`] recognises is refused rather than run as raw bytes.
    pub flat: bool,
    /// Guest-physical load address of a flat binary (default: [`FLAT_LOAD_REAL`] in
    /// real mode, [`FLAT_LOAD_PROTECTED`] in protected mode).
    pub flat_load: Option<u64>,
    /// Entry point of a flat binary (guest-physical; defaults to the load address).
    pub flat_entry: Option<u64>,
    /// CPU mode a flat binary starts in.
    pub flat_mode: FlatMode,
    /// `--icount`: the machine clock counts guest instructions (see
    /// [`VmConfig::icount`]), which makes a run, and a restored snapshot's, exactly
    /// repeatable.
    pub icount: bool,
}

impl Default for MachineOptions {
    fn default() -> Self {
        MachineOptions {
            backend: BackendKind::Emu,
            cpu: CpuModel::default(),
            memory: 256 << 20,
            vcpus: 1,
            cmdline: Vec::new(),
            kernel_name: Vec::new(),
            pc_testdev: false,
            modules: Vec::new(),
            initrd: None,
            max_instructions: None,
            timeout: None,
            collect_timing: false,
            flat: false,
            flat_load: None,
            flat_entry: None,
            flat_mode: FlatMode::Protected,
            icount: false,
        }
    }
}

/// Why a machine could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// The memory size is unusable.
    Memory(String),
    /// The kernel could not be loaded.
    Load(LoadError),
    /// Some other option is unusable.
    Option(String),
    /// The snapshot was refused.
    Snapshot(SnapshotError),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Memory(s) | BuildError::Option(s) => f.write_str(s),
            BuildError::Load(e) => write!(f, "{e}"),
            BuildError::Snapshot(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for BuildError {}

impl From<LoadError> for BuildError {
    fn from(e: LoadError) -> Self {
        BuildError::Load(e)
    }
}

/// Smallest guest RAM accepted.
pub const MIN_MEMORY: u64 = 2 << 20;
/// Largest guest RAM accepted (the page-table walker's physical address width bounds it).
pub const MAX_MEMORY: u64 = 64 << 30;
/// Start of the 32-bit MMIO hole below 4 GiB: guest RAM below 4 GiB (where modules and
/// the multiboot information go) is at most this much.
pub const MMIO_HOLE_START: u64 = pc::MMIO_HOLE_START;
/// Where a flat binary goes in real mode by default: where a PC's firmware loads a boot
/// sector.
pub const FLAT_LOAD_REAL: u64 = 0x7c00;
/// Where a flat binary goes in protected mode by default: 1 MiB.
pub const FLAT_LOAD_PROTECTED: u64 = 0x10_0000;

/// Guest RAM of `size` bytes: from 0 up to the MMIO hole at 3 GiB, the rest above 4 GiB.
pub fn guest_memory(size: u64) -> Result<GuestMemory, BuildError> {
    if !(MIN_MEMORY..=MAX_MEMORY).contains(&size) || size % 4096 != 0 {
        return Err(BuildError::Memory(format!(
            "guest memory of {size} bytes is not usable: it must be a multiple of 4 KiB between {} MiB and {} GiB",
            MIN_MEMORY >> 20,
            MAX_MEMORY >> 30
        )));
    }
    let low = size.min(MMIO_HOLE_START);
    let mut mem = GuestMemory::with_ram(low).map_err(mem_error)?;
    if size > low {
        mem.add_ram(1 << 32, size - low).map_err(mem_error)?;
    }
    Ok(mem)
}

fn mem_error(e: MemError) -> BuildError {
    BuildError::Memory(e.to_string())
}

/// The vCPU count of `--smp`, as QEMU spells it: `N` or `cpus=N`, 1 to [`MAX_VCPUS`]
/// (one package of N cores with one thread each, as QEMU's `-smp N` gives).
pub fn parse_smp(text: &str) -> Result<u32, String> {
    let count = text.strip_prefix("cpus=").unwrap_or(text);
    let refuse = || {
        format!(
            "--smp: '{}' is not a vCPU count: expected N or cpus=N with N from 1 to {MAX_VCPUS} (topology options such as sockets= and cores= are not taken: the vCPUs are the cores of one package)",
            text.escape_debug()
        )
    };
    match count.parse::<u32>() {
        Ok(n)
            if (1..=MAX_VCPUS as u32).contains(&n) && count.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Ok(n)
        }
        _ => Err(refuse()),
    }
}

/// Where a flat binary is loaded.
fn flat_load(opts: &MachineOptions) -> u64 {
    opts.flat_load.unwrap_or(match opts.flat_mode {
        FlatMode::Real => FLAT_LOAD_REAL,
        FlatMode::Protected => FLAT_LOAD_PROTECTED,
    })
}

/// The state a flat binary starts in.
fn flat_state(opts: &MachineOptions) -> Result<BootState, BuildError> {
    let entry = opts.flat_entry.unwrap_or(flat_load(opts));
    match opts.flat_mode {
        FlatMode::Real => {
            if entry >= 1 << 20 {
                return Err(BuildError::Option(format!(
                    "a real-mode entry point must lie below 1 MiB (got {entry:#x})"
                )));
            }
            // Start from the protected-mode state for LDTR and TR, then make it real mode.
            let mut state = BootState::protected_flat(0, 0, 0);
            let cs = ((entry >> 4) & 0xf000) as u16;
            state.set_data_segments(Segment::real_mode(cs, false));
            state.segments[SegReg::Cs as usize] = Segment::real_mode(cs, true);
            state.regs.rip = entry - (u64::from(cs) << 4);
            state.cr0 = CR0_ET;
            // The descriptor-table registers of a processor after reset: the IVT at 0
            // with a limit of 0xffff, so INT n and exceptions go through it.
            state.idt = DescriptorTable {
                base: 0,
                limit: 0xffff,
            };
            state.gdt = DescriptorTable {
                base: 0,
                limit: 0xffff,
            };
            Ok(state)
        }
        FlatMode::Protected => {
            let entry = u32::try_from(entry).map_err(|_| {
                BuildError::Option(format!(
                    "a protected-mode entry point must lie below 4 GiB (got {entry:#x})"
                ))
            })?;
            Ok(BootState::protected_flat(
                entry,
                CODE_SELECTOR,
                DATA_SELECTOR,
            ))
        }
    }
}

/// Load `kernel` into `mem` in the format it is in ([`core_load_kernel`]: multiboot, a
/// Linux bzImage, an ELF kernel with a PVH entry note), or with `--flat` as a flat binary.
/// `rsdp_addr` is the ACPI RSDP a Linux kernel is told about.
pub fn load_kernel(
    mem: &mut GuestMemory,
    kernel: &[u8],
    opts: &MachineOptions,
    rsdp_addr: Option<u64>,
) -> Result<LoadedKernel, BuildError> {
    let format = match KernelFormat::of(kernel) {
        Ok(format) => format,
        // The multiboot magic is there but the header is broken: say so (unless the
        // kernel was named a flat binary, whose bytes may hold anything).
        Err(e) if !opts.flat => return Err(BuildError::Load(e)),
        Err(_) => None,
    };
    if let Some(format) = format {
        if opts.flat {
            return Err(BuildError::Option(format!(
                "--flat (or --load-addr, --entry, --mode) was given, but the kernel is {}: leave them out to boot it",
                format.name()
            )));
        }
        let modules: Vec<Module<'_>> = opts
            .modules
            .iter()
            .map(|(cmdline, data)| Module { cmdline, data })
            .collect();
        let multiboot_cmdline;
        let cmdline = if format == KernelFormat::Multiboot {
            multiboot_cmdline = multiboot::command_line(&opts.kernel_name, &opts.cmdline);
            &multiboot_cmdline
        } else {
            &opts.cmdline
        };
        let options = KernelOptions {
            cmdline,
            modules: &modules,
            initrd: opts.initrd.as_deref(),
            rsdp_addr,
        };
        return core_load_kernel(mem, kernel, &options).map_err(|e| match e {
            // The refusal in this program's spelling of the options.
            LoadError::Option(_) => BuildError::Option(match format {
                KernelFormat::Multiboot => "--initrd is for Linux kernels; this kernel is multiboot: pass the file with --module".into(),
                _ => format!(
                    "--module is for multiboot kernels; this kernel is {}: pass its initial ramdisk with --initrd",
                    format.name()
                ),
            }),
            e => BuildError::Load(e),
        });
    }
    let plain = |state| LoadedKernel { state, linux: None };
    if !opts.flat {
        return Err(BuildError::Load(LoadError::UnknownFormat(format!(
            "not {KERNEL_FORMATS}; pass --flat for a flat binary"
        ))));
    }
    if kernel.is_empty() {
        return Err(BuildError::Load(LoadError::Malformed(
            "the kernel file is empty".into(),
        )));
    }
    if !opts.modules.is_empty() || !opts.cmdline.is_empty() || opts.initrd.is_some() {
        return Err(BuildError::Option(
            "--module, --append and --initrd need a multiboot or Linux kernel; this one is a flat binary".into(),
        ));
    }
    Ok(plain(load_flat(
        mem,
        kernel,
        flat_load(opts),
        flat_state(opts)?,
    )?))
}

/// Build a machine: guest memory with the PC's ACPI tables ([`pc::build_acpi`], one
/// processor per vCPU), the kernel loaded into it ([`load_kernel`]), vCPU 0 in the
/// kernel's entry state and the others waiting for SIPI, and the boot described in
/// fw_cfg.
pub fn build_machine<P: Platform>(
    kernel: &[u8],
    opts: &MachineOptions,
    platform: P,
) -> Result<Machine<P>, BuildError> {
    if !(1..=MAX_VCPUS as u32).contains(&opts.vcpus) {
        return Err(BuildError::Option(format!(
            "a machine of {} vCPUs: the number of vCPUs must be 1 to {MAX_VCPUS}",
            opts.vcpus
        )));
    }
    let mut mem = guest_memory(opts.memory)?;
    let acpi = pc::build_acpi(&mut mem, opts.vcpus)
        .map_err(|e| BuildError::Memory(format!("the ACPI tables: {e}")))?;
    let LoadedKernel { state, linux } = load_kernel(&mut mem, kernel, opts, Some(acpi.rsdp))?;
    let new_vcpu = || match opts.backend {
        BackendKind::Emu => Backend::from(EmuSlot(EmuVcpu::new())),
    };
    let mut vcpus: Vec<Backend> = (0..opts.vcpus).map(|_| new_vcpu()).collect();
    let bsp = &mut vcpus[0];
    bsp.vcpu_reset(ResetKind::PowerOn);
    state.apply(bsp);
    let config = VmConfig {
        max_instructions: opts.max_instructions,
        timeout_ns: opts
            .timeout
            .map(|t| u64::try_from(t.as_nanos()).unwrap_or(u64::MAX)),
        collect_timing: opts.collect_timing,
        icount: opts.icount,
        ..VmConfig::default()
    };
    let cpuid = opts
        .cpu
        .policy(&vcpus[0].supported_cpuid(), vcpus[0].name())
        .map_err(|e| BuildError::Option(format!("--cpu '{}': {e}", opts.cpu.spec())))?;
    let mut vm = Vm::with_vcpus(vcpus, mem, platform, cpuid, config)
        .map_err(|e| BuildError::Option(e.to_string()))?;
    if opts.pc_testdev {
        vm.attach_pc_testdev().map_err(|e| {
            BuildError::Option(format!(
                "--device pc-testdev: its range at {:#x} is taken",
                e.start
            ))
        })?;
    }
    vm.finish_firmware(
        linux
            .as_ref()
            .map(|layout| (layout, opts.cmdline.as_slice())),
    )
    .map_err(|e| BuildError::Memory(format!("describing the boot in fw_cfg: {e}")))?;
    Ok(vm)
}

/// The machine a snapshot describes, restored from it (`opsvisor run --restore`): its
/// RAM size, vCPU count, clock mode and CPU model come from the file; of `opts` only the
/// backend and the run's own limits (`max_instructions`, counted from the restore,
/// `timeout`, `collect_timing`) apply. A snapshot whose RAM is not a layout
/// [`guest_memory`] makes is refused before any RAM is allocated.
pub fn restore_machine<P: Platform>(
    bytes: &[u8],
    opts: &MachineOptions,
    platform: P,
) -> Result<Machine<P>, BuildError> {
    let info = snapshot::machine_info(bytes).map_err(BuildError::Snapshot)?;
    let ram = info
        .ram
        .iter()
        .try_fold(0u64, |sum, r| sum.checked_add(r.1))
        .unwrap_or(u64::MAX);
    let mem = guest_memory(ram)
        .map_err(|e| BuildError::Snapshot(SnapshotError::new("machine", "ram", e.to_string())))?;
    let new_vcpu = || match opts.backend {
        BackendKind::Emu => Backend::from(EmuSlot(EmuVcpu::new())),
    };
    let vcpus: Vec<Backend> = (0..info.vcpus).map(|_| new_vcpu()).collect();
    let config = VmConfig {
        max_instructions: opts.max_instructions,
        timeout_ns: opts
            .timeout
            .map(|t| u64::try_from(t.as_nanos()).unwrap_or(u64::MAX)),
        collect_timing: opts.collect_timing,
        icount: info.icount,
        ..VmConfig::default()
    };
    let mut vm = Vm::with_vcpus(vcpus, mem, platform, CpuidPolicy::empty(), config)
        .map_err(|e| BuildError::Option(e.to_string()))?;
    if info.pc_testdev {
        vm.attach_pc_testdev().map_err(|e| {
            BuildError::Option(format!("pc-testdev: its range at {:#x} is taken", e.start))
        })?;
    }
    snapshot::restore(&mut vm, bytes).map_err(BuildError::Snapshot)?;
    Ok(vm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_are_checked() {
        assert!(guest_memory(1 << 20).is_err());
        assert!(guest_memory((256 << 20) + 1).is_err());
        assert!(guest_memory(MAX_MEMORY + 4096).is_err());
        let mem = guest_memory(4 << 30).unwrap();
        assert_eq!(mem.ram_size(), 4 << 30);
        assert_eq!(mem.regions()[1].gpa(), 1 << 32);
        // Nothing is RAM in the hole where the local APIC lives.
        assert!(!mem.is_ram(0xfee0_0000, 4));
    }

    #[test]
    fn smp_counts_are_checked() {
        assert_eq!(parse_smp("1"), Ok(1));
        assert_eq!(parse_smp("4"), Ok(4));
        assert_eq!(parse_smp("cpus=64"), Ok(64));
        assert_eq!(parse_smp("255"), Ok(255));
        for bad in [
            "0",
            "256",
            "",
            "-1",
            "+4",
            "4,cores=4",
            "sockets=2",
            "four",
            "cpus=",
        ] {
            let e = parse_smp(bad).unwrap_err();
            assert!(e.starts_with("--smp: "), "{bad}: {e}");
            assert!(e.contains("1 to 255"), "{bad}: {e}");
        }
    }

    #[test]
    fn backend_names_are_checked() {
        assert_eq!(BackendKind::parse("emu"), Ok(BackendKind::Emu));
        assert!(BackendKind::parse("vmx")
            .unwrap_err()
            .contains("bare-metal image"));
        assert!(BackendKind::parse("kvm")
            .unwrap_err()
            .contains("unknown backend"));
    }
}
