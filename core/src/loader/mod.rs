//! Guest loaders: put a kernel image into guest memory and produce the vCPU state it
//! starts in.

pub mod bzimage;
pub mod e820;
pub mod elf;
pub mod flat;
pub mod linux;
pub mod multiboot;
pub mod pvh;

use crate::mmu::memory::MemError;
use crate::ops::{DescriptorTable, Regs, SegReg, Segment, X86Ops};
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
    /// The module's string (its name and arguments).
    pub cmdline: &'a str,
    /// The module's bytes.
    pub data: &'a [u8],
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
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::UnknownFormat(s) => write!(f, "unknown kernel format: {s}"),
            LoadError::Malformed(s) => write!(f, "malformed kernel: {s}"),
            LoadError::Unsupported(s) => write!(f, "unsupported kernel: {s}"),
            LoadError::DoesNotFit(s) => write!(f, "kernel does not fit in guest memory: {s}"),
            LoadError::Memory(e) => write!(f, "{e}"),
        }
    }
}

impl From<MemError> for LoadError {
    fn from(e: MemError) -> Self {
        LoadError::Memory(e)
    }
}
