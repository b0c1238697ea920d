//! The opsvisor bare-metal image: a multiboot2 / PVH kernel that runs one guest on
//! opsvisor's core run loop.
//!
//! Boot: GRUB (`multiboot2` + `module2`) or QEMU (`-kernel` + `-initrd`, PVH) starts the
//! image in 32-bit mode ([`boot`]); it enters long mode on identity-mapped page tables,
//! loads a GDT with a TSS and an IDT whose exceptions print a diagnostic and power off,
//! and calls [`rust_main`]. That sets up COM1, reads the loader's memory map and modules
//! ([`bootinfo`]), puts the heap on the largest free RAM range, calibrates the TSC,
//! loads the first module (a multiboot v1 kernel) into guest memory with core's loader,
//! picks the backend from CPUID and runs the guest. On a hardware backend (VMX or SVM) a
//! built-in probe guest first measures the round trip of a CPUID and a VMCALL (VMMCALL)
//! exit in TSC cycles ([`probe`]) and prints it (`opsvisor-image: vmx round trip: ...`).
//! The guest's COM1 is forwarded to the host's.
//!
//! The last line on the serial console is one of
//!
//! ```text
//! opsvisor-image: guest exit status N      (the guest wrote to port 0xF4; N = (code << 1) | 1)
//! opsvisor-image: triple fault at rip 0x...
//! opsvisor-image: failed: <reason>
//! ```
//!
//! after which the image powers the machine off (QEMU: `isa-debug-exit` with the guest's
//! code, so QEMU's exit status is N; Bochs: port 0x8900). A guest PASSes with status 1.
//!
//! Command line (GRUB: after the image's path; QEMU: `-append`), words separated by
//! spaces: `mem=<MiB>` guest RAM in MiB (default 64), `backend=auto|vmx|svm|emu` (auto:
//! VMX on an Intel CPU that has it, SVM on an AMD CPU that has it, when the backend can
//! be enabled; else the emulator), `cpu=MODEL[,+F][,-F]` (the guest's CPU model, as
//! `opsvisor run --cpu` takes it; default `max`: what the backends in use implement),
//! `smp=N` (the guest's vCPUs, 1 to 255, default 1: all run on this one host CPU in
//! core's turns, each hardware vCPU with its own VMCS or VMCB), `interactive` (a guest
//! waiting for
//! console input with nothing else to wake it waits; without it the run stops, as a test
//! harness wants), `console-input=HEX` (bytes, in hex, that the guest reads on its console
//! before anything typed on COM1: what a harness types where COM1 is a file, at most 64),
//! `device=pc-testdev` (QEMU's ISA test device on the guest's machine), `gdb` (a GDB
//! stub on the host's COM2 for VMX and SVM guests, see [`debugger`]; `gdb-wait`: the
//! guest waits for gdb before its first instruction, as QEMU's `-S`), `fault` (raise #UD before loading the guest, to check that an exception
//! ends the run with a report), `diff` (module 0 is a pack of differential cases, not a
//! guest: each runs on the hardware backend, VMX or SVM as `backend=` picks, and on the
//! emulator and the final states are compared, see [`differential`]). The first module is
//! the guest kernel, in any format core's loader takes (multiboot, a Linux bzImage, an ELF
//! kernel with a PVH note), and its string is the guest's command line; further modules
//! become a multiboot guest's modules, or a Linux guest's initrd (one). The guest's
//! machine is core's PC: its devices, ACPI tables and fw_cfg, as in the `opsvisor` program.

#![no_std]
#![no_main]

extern crate alloc;

mod boot;
mod bootinfo;
mod console_input;
mod cpu;
mod debugger;
mod differential;
mod heap;
mod host_cpu;
mod platform;
mod power;
mod probe;
mod serial;
mod timer;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use bootinfo::{BootInfo, Phys, Range};
use core::sync::atomic::{AtomicBool, Ordering};
use opsvisor_core::cpu_model::CpuModel;
use opsvisor_core::cpuid::CpuidPolicy;
use opsvisor_core::loader::{load_kernel, KernelFormat, KernelOptions, Module, KERNEL_FORMATS};
use opsvisor_core::ops::{ResetKind, X86Ops};
use opsvisor_core::pc;
use opsvisor_core::vm::{RunOutcome, Vm, VmConfig, MAX_VCPUS};
use opsvisor_core::{EmuSlot, GuestMemory, SvmSlot, VmxSlot};
use opsvisor_emu::EmuVcpu;
use opsvisor_svm::{SvmConfig, SvmVcpu};
use opsvisor_vmx::{VmxConfig, VmxVcpu};

#[global_allocator]
static HEAP: heap::Heap = heap::Heap::empty();

/// The backend set of the image: VMX or SVM when the CPU has it, else the emulator.
type Backend = opsvisor_core::Backend<VmxVcpu, SvmVcpu, EmuVcpu>;

/// Debug-exit code (QEMU status 255) when the run ends other than by the guest's exit.
const CODE_IMAGE_FAILED: u8 = 0x7f;
/// Default guest RAM.
const DEFAULT_GUEST_MIB: u64 = 64;
/// Heap the image itself needs beside the guest's RAM (emulator caches, tables).
const HEAP_MARGIN: u64 = 16 << 20;
/// The page tables map 0..4 GiB: the heap and the modules must lie below.
const IDENTITY_MAPPED: u64 = 1 << 32;
/// Guest RAM is one region below the 32-bit MMIO hole.
const MAX_GUEST_MIB: u64 = 3 << 10;

extern "C" {
    static __image_start: u8;
    static __image_end: u8;
}

/// Physical memory as the identity map shows it.
struct Identity;

impl Phys for Identity {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        // QEMU puts PVH structures in page 0, but never at address 0 itself (and a null
        // pointer is never valid in Rust).
        let Some(end) = addr.checked_add(buf.len() as u64) else {
            return false;
        };
        if addr == 0 || end > IDENTITY_MAPPED {
            return false;
        }
        // SAFETY: the range is inside the identity map (every address below 4 GiB is
        // mapped) and not at null; reading memory the loader handed over has no effect.
        unsafe { core::ptr::copy_nonoverlapping(addr as *const u8, buf.as_mut_ptr(), buf.len()) };
        true
    }
}

/// Entered from `boot.rs` in long mode with the loader's EAX and EBX and the entry point
/// that ran (1 multiboot2, 2 PVH).
#[no_mangle]
extern "C" fn rust_main(eax: u32, ebx: u32, entry: u32) -> ! {
    serial::init();
    cpu::init_tables();
    log!("opsvisor-image {} starting", env!("CARGO_PKG_VERSION"));
    let code = match run(eax, ebx, entry) {
        Ok(code) => code,
        Err(why) => {
            log!("failed: {}", why);
            CODE_IMAGE_FAILED
        }
    };
    power::shutdown(code)
}

/// Which backend the command line asks for (`backend=`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum BackendWish {
    /// VMX or SVM when the CPU has it and enabling it succeeds, else the emulator.
    Auto,
    /// VMX or fail.
    Vmx,
    /// SVM or fail.
    Svm,
    /// The emulator.
    Emu,
}

/// What `backend=` accepts.
const BACKEND_USAGE: &str = "the backend is backend=auto, backend=vmx, backend=svm or backend=emu";

/// Options from the image's command line.
struct Options {
    backend: BackendWish,
    guest_mib: u64,
    interactive: bool,
    /// Raise #UD before loading the guest: checks that an exception ends the run with a
    /// report instead of a hang.
    fault: bool,
    /// Module 0 is a differential case pack.
    differential: bool,
    /// `console-input=HEX`: what the guest reads on its console before COM1's input.
    console_input: console_input::ConsoleInput,
    /// `device=pc-testdev`: QEMU's ISA test device on the guest's machine.
    pc_testdev: bool,
    /// The guest's CPU model.
    cpu: CpuModel,
    /// `smp=N`: the guest's vCPUs.
    vcpus: u32,
    /// `gdb` / `gdb-wait`: the GDB stub on COM2, and whether the guest waits for gdb
    /// before its first instruction ([`debugger`]).
    gdb: Option<bool>,
}

fn parse_options(cmdline: &str) -> Result<Options, String> {
    let mut opts = Options {
        backend: BackendWish::Auto,
        guest_mib: DEFAULT_GUEST_MIB,
        interactive: false,
        fault: false,
        differential: false,
        console_input: console_input::ConsoleInput::default(),
        pc_testdev: false,
        cpu: CpuModel::default(),
        vcpus: 1,
        gdb: None,
    };
    for word in cmdline.split_ascii_whitespace() {
        if let Some(v) = word.strip_prefix("mem=") {
            let mib = v
                .trim_end_matches(['M', 'm'])
                .parse::<u64>()
                .ok()
                .filter(|m| (2..=MAX_GUEST_MIB).contains(m))
                .ok_or_else(|| {
                    format!("bad option '{word}': guest RAM is mem=<MiB>, 2 to {MAX_GUEST_MIB}")
                })?;
            opts.guest_mib = mib;
        } else if let Some(v) = word.strip_prefix("backend=") {
            opts.backend = match v {
                "auto" => BackendWish::Auto,
                "vmx" => BackendWish::Vmx,
                "svm" => BackendWish::Svm,
                "emu" => BackendWish::Emu,
                _ => return Err(format!("bad option '{word}': {BACKEND_USAGE}")),
            };
        } else if let Some(v) = word.strip_prefix("cpu=") {
            opts.cpu = CpuModel::parse(v).map_err(|e| format!("bad option '{word}': {e}"))?;
        } else if let Some(v) = word.strip_prefix("smp=") {
            opts.vcpus = v
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_VCPUS as u32).contains(n))
                .ok_or_else(|| {
                    format!("bad option '{word}': the guest's vCPUs are smp=N, 1 to {MAX_VCPUS}")
                })?;
        } else if word == "interactive" {
            opts.interactive = true;
        } else if word == "fault" {
            opts.fault = true;
        } else if word == "diff" {
            opts.differential = true;
        } else if word == "gdb" {
            opts.gdb = Some(opts.gdb == Some(true));
        } else if word == "gdb-wait" {
            opts.gdb = Some(true);
        } else if let Some(device) = word.strip_prefix("device=") {
            if device != "pc-testdev" {
                return Err(format!(
                    "bad option '{word}': the one device the image adds is device=pc-testdev"
                ));
            }
            opts.pc_testdev = true;
        } else if let Some(hex) = word.strip_prefix("console-input=") {
            opts.console_input = console_input::ConsoleInput::from_hex(hex)
                .map_err(|why| format!("bad option '{word}': console input is {why}"))?;
        }
        // Anything else (a path GRUB passes first, for instance) is not for the image.
    }
    Ok(opts)
}

/// The bytes of a boot module, checked to lie inside the identity map.
fn module_bytes(range: Range, index: usize) -> Result<&'static [u8], String> {
    if range.start < 4096 || range.end > IDENTITY_MAPPED || range.is_empty() {
        return Err(format!(
            "boot module {index} at {:#x}..{:#x} is outside the memory the image maps (4 KiB..4 GiB)",
            range.start, range.end
        ));
    }
    // SAFETY: the range is non-empty, identity-mapped, not at null, and excluded from the
    // heap (`reserved` in `run`); nothing writes it while the image runs.
    Ok(unsafe { core::slice::from_raw_parts(range.start as *const u8, range.len() as usize) })
}

/// The CPUID the guest sees: `model` cut down to what the backends in use support
/// (`supported`, named `backends`); on a hardware backend with the host's brand string
/// and physical-address width, since the guest's page tables are walked by the
/// processor, whose reserved address bits are the host's.
fn cpuid_policy(
    model: &CpuModel,
    supported: &CpuidPolicy,
    backends: &str,
    hardware: bool,
) -> Result<CpuidPolicy, String> {
    let mut policy = model
        .policy(supported, backends)
        .map_err(|e| format!("cpu={}: {e}", model.spec()))?;
    // The guest runs on this processor: it sees its brand string, as under KVM's `-cpu
    // host` (a guest tells QEMU's TCG by it, whose known deviations from silicon the
    // corpus tolerates there and only there).
    if hardware && host_cpu::has_brand_string() {
        for leaf in 0x8000_0002..=0x8000_0004 {
            policy.set_leaf(leaf, 0, host_cpu::leaf(leaf, 0));
        }
    }
    if let Some(bits) = hardware.then(host_cpu::phys_addr_bits).flatten() {
        if let Some(mut leaf) = policy.leaf(0x8000_0008, 0) {
            leaf[0] = (leaf[0] & !0xff) | u32::from(bits);
            policy.set_leaf(0x8000_0008, 0, leaf);
        }
    }
    Ok(policy)
}

/// Pick the backend: VMX or SVM when asked for or available, else the emulator. Logs
/// the choice and why; `Err` when `backend=vmx` or `backend=svm` was asked for and that
/// backend cannot run.
fn choose_backend(wish: BackendWish, tsc_hz: u64) -> Result<Backend, String> {
    log!("host cpu: {}", host_cpu::describe());
    let vmx_cpu = host_cpu::has_vmx();
    let amd = host_cpu::is_amd();
    let svm_cpu = host_cpu::has_svm();
    let why = match wish {
        BackendWish::Emu => String::from("backend=emu on the command line"),
        BackendWish::Vmx => {
            return enable_vmx(tsc_hz).map_err(|why| format!("vmx backend unavailable: {why}"))
        }
        BackendWish::Svm => {
            return enable_svm(tsc_hz).map_err(|why| format!("svm backend unavailable: {why}"))
        }
        BackendWish::Auto if vmx_cpu => match enable_vmx(tsc_hz) {
            Ok(backend) => return Ok(backend),
            Err(why) => format!("the CPU has VMX, but the vmx backend cannot run: {why}"),
        },
        BackendWish::Auto if amd && svm_cpu => match enable_svm(tsc_hz) {
            Ok(backend) => return Ok(backend),
            Err(why) => format!("the CPU has SVM, but the svm backend cannot run: {why}"),
        },
        BackendWish::Auto if svm_cpu => {
            String::from("the CPU reports SVM but is not an AMD processor")
        }
        BackendWish::Auto => String::from("the CPU has neither VMX nor SVM"),
    };
    log!("backend emu ({})", why);
    Ok(Backend::from(EmuSlot(EmuVcpu::new())))
}

/// Try the VMX backend; `Err` says why it cannot run.
fn enable_vmx(tsc_hz: u64) -> Result<Backend, String> {
    if !host_cpu::has_vmx() {
        return Err("the CPU does not report VMX (CPUID.1:ECX bit 5)".into());
    }
    let config = VmxConfig {
        // The image maps all memory it uses 1:1.
        to_phys: opsvisor_vmx::page::identity,
        tsc_hz,
    };
    // SAFETY: CPL 0, one CPU, interrupts off, long mode with the TSS loaded by
    // `cpu::init_tables`; the heap is identity-mapped, so the identity is the true
    // physical translation. The image never leaves VMX operation: it powers off at the
    // end.
    match unsafe { VmxVcpu::enable(config) } {
        Ok(vcpu) => {
            let f = vcpu.controls().features;
            log!(
                "backend vmx (the CPU has VMX: EPT{}{}, unrestricted guest, VPID {}, preemption timer {})",
                match (f.ept_1g_pages, f.ept_2m_pages) {
                    (true, true) => " with 1 GiB and 2 MiB pages",
                    (true, false) => " with 1 GiB pages",
                    (false, true) => " with 2 MiB pages",
                    (false, false) => "",
                },
                if f.ept_accessed_dirty { ", A/D" } else { "" },
                if f.vpid { "on" } else { "off" },
                if f.preemption_timer { "on" } else { "off" },
            );
            Ok(Backend::from(VmxSlot(vcpu)))
        }
        Err(e) => Err(format!("{e}")),
    }
}

/// Try the SVM backend; `Err` says why it cannot run. The host timer that bounds its
/// runs is set up first (without one, a guest runs until its next exit).
fn enable_svm(tsc_hz: u64) -> Result<Backend, String> {
    if !host_cpu::has_svm() {
        return Err("the CPU does not report SVM (CPUID 0x80000001:ECX bit 2)".into());
    }
    // The leaves the svm backend reads, as this CPU reports them (the svm crate's test
    // fixtures are recorded from this line).
    let mut leaves = String::new();
    for leaf in [0, 1, 7, 0x8000_0000, 0x8000_0001, 0x8000_0008, 0x8000_000a] {
        let [a, b, c, d] = host_cpu::leaf(leaf, 0);
        leaves.push_str(&format!(" {leaf:#x}={a:#x},{b:#x},{c:#x},{d:#x}"));
    }
    log!("svm cpuid:{}", leaves);
    let vm_cr = cpu::rdmsr_probe(opsvisor_svm::enable::MSR_VM_CR);
    // The svm backend's own reading (what it enables with); the host_cpu line above is
    // raw-cpuid's.
    let caps = opsvisor_svm::caps::SvmCaps::read(&opsvisor_svm::caps::HardwareCpuid);
    // Without nested paging there is nothing to run: refuse before touching the APIC.
    if let Ok(c) = &caps {
        opsvisor_svm::enable::check_features(c).map_err(|e| format!("{e}"))?;
    }
    let timer = timer::host_timer(tsc_hz);
    let config = SvmConfig {
        to_phys: opsvisor_svm::page::identity,
        tsc_hz,
        timer: timer.ok(),
        probe_msr: cpu::rdmsr_probe,
    };
    // SAFETY: CPL 0, one CPU, interrupts off, long mode, CR0.EM/TS clear; the heap is
    // identity-mapped, so the identity is the true physical translation; the host
    // timer (when set up) has its IDT gate, an EOI-ing handler, and the PICs masked;
    // `rdmsr_probe` survives the #GP of a missing MSR. The image never clears
    // EFER.SVME: it powers off at the end.
    match unsafe { SvmVcpu::enable(config) } {
        Ok(vcpu) => {
            let c = vcpu.caps();
            let f = c.features;
            let on = |b: bool| if b { "on" } else { "off" };
            log!(
                "backend svm (the CPU has SVM revision {}: nested paging with 2 MiB{} pages, {} ASIDs, NRIP save {}, flush-by-ASID {}, decode assists {}, VMCB clean bits {}; VM_CR {}; host timer {})",
                c.revision,
                if c.pages_1g { " and 1 GiB" } else { "" },
                c.asids,
                on(f.nrip_save()),
                on(f.flush_by_asid()),
                on(f.decode_assists()),
                on(f.vmcb_clean()),
                match vm_cr {
                    Some(v) => format!("{v:#x}"),
                    None => String::from("absent (#GP)"),
                },
                match (vcpu.processor().timer(), timer) {
                    (Some(t), _) => format!("{} kHz on vector {:#x}", t.hz / 1000, t.vector),
                    (None, Err(why)) => format!("off: {why}"),
                    (None, Ok(_)) => String::from("off"),
                },
            );
            Ok(Backend::from(SvmSlot(vcpu)))
        }
        Err(e) => Err(format!("{e}")),
    }
}

/// `first` and `n - 1` more vCPUs of its backend on this host CPU: on VMX and SVM made
/// from the processor's one VMX root operation or SVM (each with its own VMCS or
/// VMCB), on the emulator new emulators.
fn with_more_vcpus(first: Backend, n: u32) -> Result<Vec<Backend>, String> {
    let mut vcpus = Vec::with_capacity(n as usize);
    for i in 1..n {
        let more = match &first {
            Backend::Vmx(VmxSlot(vmx)) => Backend::from(VmxSlot(
                vmx.root()
                    .new_vcpu()
                    .map_err(|e| format!("vmx vCPU {i}: {e}"))?,
            )),
            Backend::Svm(SvmSlot(svm)) => Backend::from(SvmSlot(
                svm.host()
                    .new_vcpu()
                    .map_err(|e| format!("svm vCPU {i}: {e}"))?,
            )),
            Backend::Emu(_) => Backend::from(EmuSlot(EmuVcpu::new())),
        };
        vcpus.push(more);
    }
    vcpus.insert(0, first);
    Ok(vcpus)
}

fn run(eax: u32, ebx: u32, entry: u32) -> Result<u8, String> {
    // Nothing may allocate before the heap exists: boot errors are printed as they are.
    let info: BootInfo = match bootinfo::parse(&Identity, eax, ebx, entry) {
        Ok(info) => info,
        Err(e) => {
            log!("failed: {}", e);
            return Ok(CODE_IMAGE_FAILED);
        }
    };
    let ram_total: u64 = info.ram().iter().map(Range::len).sum();
    log!(
        "loader {}, {} MiB RAM in {} ranges, {} module(s), command line '{}'",
        info.protocol.name(),
        ram_total >> 20,
        info.ram().len(),
        info.modules().len(),
        info.cmdline.as_str()
    );

    // The heap: the largest RAM range that is not the first MiB, the image or a module.
    let image = Range {
        start: core::ptr::addr_of!(__image_start) as u64,
        end: core::ptr::addr_of!(__image_end) as u64,
    };
    let mut reserved = [Range::default(); bootinfo::MAX_MODULES + 1];
    reserved[0] = image;
    for (slot, m) in reserved[1..].iter_mut().zip(info.modules()) {
        *slot = m.range;
    }
    let Some(heap) = bootinfo::largest_free(info.ram(), &reserved, 1 << 20, IDENTITY_MAPPED) else {
        log!("failed: no free RAM for the heap below 4 GiB");
        return Ok(CODE_IMAGE_FAILED);
    };
    // SAFETY: the range is RAM per the loader's map, below 4 GiB (identity-mapped), and
    // excludes the image, the modules and the first MiB; of the boot data only the
    // modules are read from here on, and `info` holds copies of the strings.
    unsafe { HEAP.init(heap.start as usize, heap.end as usize) };
    log!(
        "heap {} MiB at {:#x}..{:#x}",
        heap.len() >> 20,
        heap.start,
        heap.end
    );
    let opts = parse_options(info.cmdline.as_str())?;
    let guest_bytes = opts.guest_mib << 20;
    if heap.len() < guest_bytes + HEAP_MARGIN {
        return Err(format!(
            "the largest free RAM range ({} MiB) cannot hold {} MiB of guest RAM plus {} MiB for the image; give the machine more memory or pass mem=<MiB>",
            heap.len() >> 20,
            opts.guest_mib,
            HEAP_MARGIN >> 20
        ));
    }

    let (hz, source) = platform::tsc_hz();
    log!(
        "TSC {}.{:03} MHz ({})",
        hz / 1_000_000,
        hz / 1000 % 1000,
        source.name()
    );

    if opts.fault {
        log!("raising #UD as the command line asks (fault)");
        // SAFETY: UD2 raises #UD, whose handler reports it and powers off.
        unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
    }

    let Some(kernel_ref) = info.modules().first() else {
        return Err(
            "no boot module: pass the guest kernel as the first module (GRUB module2, QEMU -initrd)"
                .into(),
        );
    };
    let kernel = module_bytes(kernel_ref.range, 0)?;
    if opts.differential {
        if opts.backend == BackendWish::Emu {
            return Err(
                "diff compares a hardware backend (vmx or svm) with the emulator: leave out backend=emu"
                    .into(),
            );
        }
        // Both backends run every case: the model is what both implement. The emulator's
        // part is its model (what EmuVcpu::supported_cpuid reports), taken without
        // building a second emulator on the boot stack.
        let diff_policy = |supported: CpuidPolicy, backends: &str| {
            let mut supported = supported;
            supported.intersect_features(&CpuidPolicy::emulator());
            cpuid_policy(&opts.cpu, &supported, backends, true)
        };
        return match choose_backend(opts.backend, hz)? {
            Backend::Vmx(VmxSlot(vmx)) => {
                let policy = diff_policy(vmx.supported_cpuid(), "vmx and emu")?;
                differential::run(vmx, kernel, policy, hz)
            }
            Backend::Svm(SvmSlot(svm)) => {
                let policy = diff_policy(svm.supported_cpuid(), "svm and emu")?;
                differential::run(svm, kernel, policy, hz)
            }
            Backend::Emu(_) => Err(
                "vmx backend unavailable: the differential run needs VMX or SVM, and this CPU has neither usable"
                    .into(),
            ),
        };
    }
    let format = KernelFormat::of(kernel)
        .map_err(|e| format!("boot module 0: {e}"))?
        .ok_or_else(|| {
            format!(
                "boot module 0 ({} bytes) is not {KERNEL_FORMATS}",
                kernel.len()
            )
        })?;
    // A multiboot guest gets the further modules as its own; a Linux kernel (bzImage or
    // PVH) takes module 1 as its initrd.
    let mut extra = Vec::new();
    let mut initrd = None;
    for (i, m) in info.modules().iter().enumerate().skip(1) {
        let data = module_bytes(m.range, i)?;
        if format == KernelFormat::Multiboot {
            extra.push(Module {
                cmdline: m.cmdline.as_str().as_bytes(),
                data,
            });
        } else if initrd.replace(data).is_some() {
            return Err(format!(
                "boot module {i}: a Linux kernel takes one more module, its initrd"
            ));
        }
    }

    let mut vcpu = choose_backend(opts.backend, hz)?;
    if let Some(call) = probe::hypercall(&vcpu) {
        let name = vcpu.name();
        let (back, figures) = probe::round_trip(vcpu, hz, call);
        vcpu = back;
        match figures {
            Ok(t) => log!(
                "{} round trip: cpuid {} cycles, {} {} cycles (median of {} runs of {} exits; {} is the core's hypercall)",
                name,
                t.cpuid,
                call.name,
                t.hypercall,
                probe::RUNS,
                probe::LOOPS,
                call.name
            ),
            Err(e) => log!("{} round trip: the probe failed: {}", name, e),
        }
    }
    let mut mem = GuestMemory::with_ram(guest_bytes).map_err(|e| format!("guest RAM: {e}"))?;
    let acpi = pc::build_acpi(&mut mem, opts.vcpus).map_err(|e| format!("the ACPI tables: {e}"))?;
    let cmdline = kernel_ref.cmdline.as_str().as_bytes();
    let loaded = load_kernel(
        &mut mem,
        kernel,
        &KernelOptions {
            cmdline,
            modules: &extra,
            initrd,
            rsdp_addr: Some(acpi.rsdp),
        },
    )
    .map_err(|e| format!("boot module 0: {e}"))?;
    let state = loaded.state;
    vcpu.vcpu_reset(ResetKind::PowerOn);
    state.apply(&mut vcpu);
    let hardware = matches!(vcpu, Backend::Vmx(_) | Backend::Svm(_));
    let policy = cpuid_policy(&opts.cpu, &vcpu.supported_cpuid(), vcpu.name(), hardware)?;
    let vcpus = with_more_vcpus(vcpu, opts.vcpus)?;
    // The machine's topology (CPUID, CMOS, fw_cfg) follows the vCPU count, as the
    // MADT above does.
    let mut vm = Vm::with_vcpus(
        vcpus,
        mem,
        platform::BareMetal::new(hz, opts.interactive).with_input(opts.console_input),
        policy,
        VmConfig::default(),
    )
    .map_err(|e| format!("smp={}: {e}", opts.vcpus))?;
    if opts.pc_testdev {
        vm.attach_pc_testdev()
            .map_err(|e| format!("device=pc-testdev: its range at {:#x} is taken", e.start))?;
    }
    vm.finish_firmware(loaded.linux.as_ref().map(|layout| (layout, cmdline)))
        .map_err(|e| format!("fw_cfg: {e}"))?;
    log!(
        "guest: {}, {} bytes, {} MiB RAM, {} vCPU(s), command line '{}'",
        format.name(),
        kernel.len(),
        opts.guest_mib,
        opts.vcpus,
        kernel_ref.cmdline.as_str()
    );
    let outcome = match opts.gdb {
        Some(_) if !hardware => {
            return Err("gdb: the image's GDB stub runs on vmx or svm, not on the emulator (opsvisor run --gdb debugs on the emulator)".into())
        }
        // The stub stops and steps the bootstrap vCPU only: another vCPU would take the
        // debugger's INT3 breakpoints as its own #BP.
        Some(_) if opts.vcpus > 1 => {
            return Err(format!(
                "gdb: the image's GDB stub debugs one vCPU; it cannot run with smp={}",
                opts.vcpus
            ))
        }
        Some(wait) => debugger::run(&mut vm, wait).map_err(|why| format!("gdb: {why}"))?,
        None => vm.run(),
    };
    for (i, v) in vm.vcpus().iter().enumerate() {
        match &v.backend {
            Backend::Vmx(VmxSlot(vmx)) => {
                if let Some(failure) = vmx.last_failure() {
                    log!("vmx: vCPU {}: {:?}", i, failure);
                }
            }
            Backend::Svm(SvmSlot(svm)) => {
                if let Some(failure) = svm.last_failure() {
                    log!("svm: vCPU {}: {}", i, failure);
                }
            }
            Backend::Emu(_) => {}
        }
    }
    if opts.vcpus > 1 {
        match &vm.bsp().backend {
            Backend::Vmx(VmxSlot(vmx)) => {
                let root = vmx.root();
                log!(
                    "vmx: {} VMPTRLDs, {} handovers of the unswitched registers",
                    root.vmptrlds(),
                    root.handovers()
                );
            }
            Backend::Svm(SvmSlot(svm)) => {
                log!(
                    "svm: {} handovers of the unswitched registers",
                    svm.host().handovers()
                );
            }
            Backend::Emu(_) => {}
        }
    }
    let ms = vm.run_time_ns() / 1_000_000;
    match vm.instructions_retired() {
        Some(n) => log!(
            "guest ran {} ms, {} instructions, {} exits",
            ms,
            n,
            vm.stats.total()
        ),
        None => log!("guest ran {} ms, {} exits", ms, vm.stats.total()),
    }
    log!(
        "heap in use {} KiB, never touched {} MiB",
        HEAP.in_use() >> 10,
        HEAP.untouched() >> 20
    );
    Ok(match outcome {
        RunOutcome::DebugExit { status } => {
            log!("guest exit status {}", status);
            // QEMU reports `(code << 1) | 1`: hand it the guest's code.
            ((status >> 1) & 0x7f) as u8
        }
        RunOutcome::TripleFault { rip } => {
            log!("triple fault at rip {:#x}", rip);
            CODE_IMAGE_FAILED
        }
        RunOutcome::HaltedForever => {
            log!("failed: the guest halted with nothing that could wake it");
            CODE_IMAGE_FAILED
        }
        RunOutcome::PowerOff => {
            log!("guest powered off");
            0
        }
        RunOutcome::Reset => {
            log!("guest reset the machine");
            CODE_IMAGE_FAILED
        }
        RunOutcome::Debug { vector } => {
            log!(
                "failed: a debug stop (vector {}) with no debugger attached",
                vector
            );
            CODE_IMAGE_FAILED
        }
        RunOutcome::InstructionLimit | RunOutcome::Timeout | RunOutcome::Quit => {
            log!("failed: the run hit its limit");
            CODE_IMAGE_FAILED
        }
        RunOutcome::Failed(why) => {
            log!("failed: {}", why);
            CODE_IMAGE_FAILED
        }
    })
}

/// Exception names by vector.
const EXCEPTIONS: [&str; 32] = [
    "#DE",
    "#DB",
    "NMI",
    "#BP",
    "#OF",
    "#BR",
    "#UD",
    "#NM",
    "#DF",
    "#MF(9)",
    "#TS",
    "#NP",
    "#SS",
    "#GP",
    "#PF",
    "reserved(15)",
    "#MF",
    "#AC",
    "#MC",
    "#XM",
    "#VE",
    "#CP",
    "22",
    "23",
    "24",
    "25",
    "26",
    "27",
    "#HV",
    "#VC",
    "#SX",
    "31",
];

static DYING: AtomicBool = AtomicBool::new(false);

/// Called by the exception stubs with a pointer to [vector, error code, RIP, CS, RFLAGS,
/// RSP, SS]. Prints the exception and powers off.
#[no_mangle]
extern "C" fn exception_handler(frame: *const [u64; 7]) -> ! {
    if DYING.swap(true, Ordering::Relaxed) {
        // A fault while reporting a fault: say nothing more.
        power::shutdown(CODE_IMAGE_FAILED);
    }
    // SAFETY: the stub passes its stack pointer, under which the CPU and the stub pushed
    // exactly these seven words.
    let f = unsafe { &*frame };
    let name = EXCEPTIONS.get(f[0] as usize).copied().unwrap_or("?");
    log!(
        "failed: exception {} (vector {}) error {:#x} at rip {:#x} cs {:#x} rflags {:#x} rsp {:#x} cr2 {:#x}",
        name,
        f[0],
        f[1],
        f[2],
        f[3],
        f[4],
        f[5],
        cpu::cr2()
    );
    power::shutdown(CODE_IMAGE_FAILED)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    if !DYING.swap(true, Ordering::Relaxed) {
        log!("failed: panic: {}", info);
    }
    power::shutdown(CODE_IMAGE_FAILED)
}
