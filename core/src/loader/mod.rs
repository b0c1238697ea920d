//! Guest loaders: put a kernel image into guest memory and produce the vCPU state it
//! starts in.

pub mod bzimage;
pub mod e820;
pub mod elf;
pub mod flat;
pub mod linux;
pub mod multiboot;
pub mod pvh;

use crate::mmu::memory::{GuestMemory, MemError};
use crate::ops::{DescriptorTable, Regs, SegReg, Segment, X86Ops};
use alloc::format;
use alloc::string::String;
use core::fmt;

/// The complete vCPU state a loader hands over: apply it with [`BootState::apply`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootState {
    /// General registers, RIP and RFLAGS.
    pub regs: Regs,
    /// ES, CS, SS, DS, FS, GS, LDTR, TR (indexed by `SegReg as usize`).
    pub segments: [Segment; 8],
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// IA32_EFER.
    pub efer: u64,
    /// GDTR.
    pub gdt: DescriptorTable,
    /// IDTR.
    pub idt: DescriptorTable,
}

impl BootState {
    /// 32-bit protected mode at `entry`, paging off, interrupts off: CS a flat code
    /// segment with selector `code`, the data segments flat with selector `data`, no LDT,
    /// and a busy TSS in TR (VMX refuses a guest whose TR is unusable), CR0 = PE | ET.
    /// This is the multiboot machine state; the caller fills in registers and tables.
    pub fn protected_flat(entry: u32, code: u16, data: u16) -> BootState {
        let mut state = BootState::default();
        state.regs.rip = u64::from(entry);
        // Only the reserved bit 1: IF = 0, VM = 0.
        state.regs.rflags = 0x2;
        state.set_data_segments(Segment::flat(data, Segment::DATA));
        state.segments[SegReg::Cs as usize] = Segment::flat(code, Segment::CODE32);
        state.segments[SegReg::Ldtr as usize] = Segment {
            limit: 0xffff,
            attr: Segment::LDT_UNUSABLE,
            ..Segment::default()
        };
        state.segments[SegReg::Tr as usize] = Segment {
            limit: 0xffff,
            attr: Segment::TSS_BUSY,
            ..Segment::default()
        };
        state.cr0 = crate::arch::CR0_PE | crate::arch::CR0_ET;
        state
    }

    /// Load `seg` into ES, SS, DS, FS and GS.
    pub fn set_data_segments(&mut self, seg: Segment) {
        for reg in [SegReg::Es, SegReg::Ss, SegReg::Ds, SegReg::Fs, SegReg::Gs] {
            self.segments[reg as usize] = seg;
        }
    }

    /// Load this state into a vCPU.
    pub fn apply<B: X86Ops>(&self, vcpu: &mut B) {
        // Order matters for backends that derive the mode from the registers: EFER and
        // the control registers first, then the segments that depend on them.
        vcpu.set_efer(self.efer);
        vcpu.set_cr4(self.cr4);
        vcpu.set_cr3(self.cr3);
        vcpu.set_cr0(self.cr0);
        vcpu.set_gdt(self.gdt);
        vcpu.set_idt(self.idt);
        for seg in SegReg::ALL {
            vcpu.set_segment(seg, &self.segments[seg as usize]);
        }
        vcpu.set_regs(&self.regs);
    }
}

/// A boot module (multiboot `module` / the command line's `--module`).
#[derive(Clone, Copy, Debug)]
pub struct Module<'a> {
    /// The module's string (its name and arguments), as bytes: it reaches the guest
    /// unchanged (a C string; it should hold no NUL).
    pub cmdline: &'a [u8],
    /// The module's bytes.
    pub data: &'a [u8],
}

/// What a kernel is booted with besides its image.
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelOptions<'a> {
    /// The kernel command line (multiboot's `cmdline`, a Linux kernel's command line).
    pub cmdline: &'a [u8],
    /// Multiboot modules (a Linux kernel takes none).
    pub modules: &'a [Module<'a>],
    /// A Linux kernel's initial ramdisk (a multiboot kernel takes none).
    pub initrd: Option<&'a [u8]>,
    /// The ACPI RSDP a Linux kernel is told about.
    pub rsdp_addr: Option<u64>,
}

/// A kernel in guest memory: the state its entry expects, and for a Linux kernel where its
/// parts went.
#[derive(Clone, Debug)]
pub struct LoadedKernel {
    /// The vCPU state at the kernel's entry.
    pub state: BootState,
    /// Where a Linux kernel (bzImage or PVH) and its initrd and command line went.
    pub linux: Option<linux::LinuxLayout>,
}

/// The formats [`load_kernel`] knows, as its refusal of anything else names them.
pub const KERNEL_FORMATS: &str =
    "a multiboot kernel, a Linux bzImage or an ELF kernel with a PVH entry note";

/// The kernel formats [`load_kernel`] tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFormat {
    /// A multiboot v1 header in the first 8 KiB.
    Multiboot,
    /// A Linux bzImage (boot flag and "HdrS").
    BzImage,
    /// An ELF file without a multiboot header: booted through its PVH entry note.
    Elf,
}

impl KernelFormat {
    /// The format as messages name it ("this kernel is ...").
    pub fn name(self) -> &'static str {
        match self {
            KernelFormat::Multiboot => "a multiboot kernel",
            KernelFormat::BzImage => "a Linux bzImage",
            KernelFormat::Elf => "an ELF kernel",
        }
    }

    /// Which format `kernel` is in, if any: `Err` for a multiboot header that is there
    /// but broken (the error says what is wrong).
    pub fn of(kernel: &[u8]) -> Result<Option<KernelFormat>, LoadError> {
        match multiboot::find_header(kernel) {
            Ok(_) => return Ok(Some(KernelFormat::Multiboot)),
            Err(e @ LoadError::Malformed(_)) => return Err(e),
            Err(_) => {}
        }
        Ok(if bzimage::is_bzimage(kernel) {
            Some(KernelFormat::BzImage)
        } else if elf::is_elf(kernel) {
            Some(KernelFormat::Elf)
        } else {
            None
        })
    }
}

/// Load `kernel` into `mem` in the format it is in, tried in this order (as QEMU's
/// `-kernel` does): a multiboot v1 header in the first 8 KiB, a Linux bzImage (boot flag
/// and "HdrS"), an ELF kernel with a PVH entry note. Options the format does not take
/// (modules for Linux, an initrd for multiboot) are refused with [`LoadError::Option`].
pub fn load_kernel(
    mem: &mut GuestMemory,
    kernel: &[u8],
    opts: &KernelOptions<'_>,
) -> Result<LoadedKernel, LoadError> {
    let linux_boot = linux::LinuxBoot {
        cmdline: opts.cmdline,
        initrd: opts.initrd,
        rsdp_addr: opts.rsdp_addr,
    };
    let refuse_modules = |format: &str| {
        if opts.modules.is_empty() {
            Ok(())
        } else {
            Err(LoadError::Option(format!(
                "modules are for multiboot kernels; this kernel is {format}: pass its initial ramdisk as the initrd"
            )))
        }
    };
    match KernelFormat::of(kernel)? {
        Some(KernelFormat::Multiboot) => {
            if opts.initrd.is_some() {
                return Err(LoadError::Option(String::from(
                    "an initrd is for Linux kernels; this kernel is multiboot: pass the file as a module",
                )));
            }
            let state = multiboot::load_multiboot(mem, kernel, opts.cmdline, opts.modules)?;
            Ok(LoadedKernel { state, linux: None })
        }
        Some(KernelFormat::BzImage) => {
            refuse_modules("a Linux bzImage")?;
            let (state, layout) = bzimage::load_bzimage_with_layout(mem, kernel, &linux_boot)?;
            Ok(LoadedKernel {
                state,
                linux: Some(layout),
            })
        }
        Some(KernelFormat::Elf) => {
            // Without a multiboot header, an ELF kernel is booted through its PVH note; a
            // file whose headers do not let the note be read is refused saying both.
            let unreadable = |e: LoadError| {
                let what =
                    "an ELF kernel without a multiboot header, whose PVH entry note cannot be read";
                match e {
                    LoadError::UnknownFormat(s) => LoadError::UnknownFormat(format!("{what}: {s}")),
                    LoadError::Malformed(s) => LoadError::Malformed(format!("{what}: {s}")),
                    LoadError::Unsupported(s) => LoadError::Unsupported(format!("{what}: {s}")),
                    other => other,
                }
            };
            let parsed = elf::parse(kernel).map_err(unreadable)?;
            if pvh::pvh_entry(&parsed).map_err(unreadable)?.is_none() {
                return Err(LoadError::UnknownFormat(String::from(
                    "an ELF kernel without a multiboot header or a PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY): opsvisor boots ELF kernels through one of the two",
                )));
            }
            refuse_modules("an ELF kernel with a PVH entry")?;
            let (state, layout) = pvh::load_pvh_with_layout(mem, kernel, &linux_boot)?;
            Ok(LoadedKernel {
                state,
                linux: Some(layout),
            })
        }
        None => Err(LoadError::UnknownFormat(format!("not {KERNEL_FORMATS}"))),
    }
}

/// Why a kernel could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadError {
    /// The image is not in a format the loader knows.
    UnknownFormat(String),
    /// The image is in a known format but malformed or truncated.
    Malformed(String),
    /// The image is valid but not for this machine (not x86, wrong class, ...).
    Unsupported(String),
    /// A segment, module or boot structure does not fit in guest memory.
    DoesNotFit(String),
    /// A guest-memory access failed.
    Memory(MemError),
    /// The kernel is fine, but an option given with it does not fit its format.
    Option(String),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::UnknownFormat(s) => write!(f, "unknown kernel format: {s}"),
            LoadError::Malformed(s) => write!(f, "malformed kernel: {s}"),
            LoadError::Unsupported(s) => write!(f, "unsupported kernel: {s}"),
            LoadError::DoesNotFit(s) => write!(f, "does not fit in guest memory: {s}"),
            LoadError::Memory(e) => write!(f, "{e}"),
            LoadError::Option(s) => f.write_str(s),
        }
    }
}

impl From<MemError> for LoadError {
    fn from(e: MemError) -> Self {
        LoadError::Memory(e)
    }
}
