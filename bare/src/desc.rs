//! x86-64 system descriptors, through the `x86_64` crate: the 64-bit TSS
//! ([`Tss`], the crate's `TaskStateSegment`), its GDT descriptor, the GDT's code and data
//! segments, and an IDT of the crate's gate entries pointing at assembly stubs.
//!
//! The IDT is an array of the crate's `Entry` rather than its `InterruptDescriptorTable`:
//! that table hands out the gates of exceptions with an error code only as typed
//! `extern "x86-interrupt"` handlers (a nightly-only ABI) and panics when indexed by their
//! vector, where both kernels point every vector at a hand-written stub by address.

use x86_64::instructions::tables::lidt;
use x86_64::structures::gdt::{Descriptor, DescriptorFlags};
use x86_64::structures::idt::{Entry, HandlerFunc};
use x86_64::structures::DescriptorTablePointer;
use x86_64::{PrivilegeLevel, VirtAddr};

pub use x86_64::structures::tss::TaskStateSegment as Tss;

/// A 64-bit kernel code segment (present, DPL 0, L), as a GDT slot.
pub const KERNEL_CODE64: u64 = DescriptorFlags::KERNEL_CODE64.bits();
/// A flat kernel data segment (present, DPL 0, writable, 4 GiB), as a GDT slot.
pub const KERNEL_DATA: u64 = DescriptorFlags::KERNEL_DATA.bits();
/// A 64-bit user code segment (DPL 3), as a GDT slot.
pub const USER_CODE64: u64 = DescriptorFlags::USER_CODE64.bits();
/// A flat user data segment (DPL 3), as a GDT slot.
pub const USER_DATA: u64 = DescriptorFlags::USER_DATA.bits();

/// The two GDT slots of the descriptor of an available 64-bit TSS at `tss` (limit: the
/// segment's 104 bytes, no I/O bitmap).
pub fn tss_descriptor(tss: &'static Tss) -> [u64; 2] {
    match Descriptor::tss_segment(tss) {
        Descriptor::SystemSegment(low, high) => [low, high],
        // `tss_segment` builds a system segment, always.
        Descriptor::UserSegment(low) => [low, 0],
    }
}

/// One IDT gate.
pub type Gate = Entry<HandlerFunc>;

/// An IDT of 256 gates, none present until set.
#[repr(C, align(16))]
pub struct Idt(pub [Gate; 256]);

impl Idt {
    /// A table of 256 not-present gates.
    pub const fn new() -> Self {
        Idt([const { Gate::missing() }; 256])
    }

    /// Make `vector` a present 64-bit interrupt gate (IF cleared on entry) to `handler`
    /// through code segment `selector`, on IST stack `ist` (0: none; 1..=7), callable by
    /// `INT n` from rings up to `dpl` (0..=3; the low 2 bits count).
    ///
    /// # Safety
    ///
    /// `handler` must be the address of an interrupt entry that handles the frame the CPU
    /// pushes for `vector` (with or without an error code) and returns with IRETQ, through
    /// a 64-bit code segment `selector`, and IST `ist` (if not 0) must be set up in the
    /// loaded TSS before the gate is used.
    pub unsafe fn set_interrupt_gate(
        &mut self,
        vector: u8,
        handler: u64,
        selector: u16,
        ist: u8,
        dpl: u8,
    ) {
        let gate = &mut self.0[usize::from(vector)];
        // SAFETY: the caller vouches for the handler, the selector and the IST stack.
        unsafe {
            let options = gate.set_handler_addr(VirtAddr::new_truncate(handler));
            options.set_code_selector(x86_64::structures::gdt::SegmentSelector(selector));
            options.set_privilege_level(PrivilegeLevel::from_u16(u16::from(dpl & 3)));
            if ist & 7 != 0 {
                // The crate counts IST stacks from 0 (its 0 is IST1).
                options.set_stack_index(u16::from(ist & 7) - 1);
            }
        }
    }

    /// Load this table into IDTR.
    ///
    /// # Safety
    ///
    /// Every present gate must be valid and the table must stay in place for as long as it
    /// is loaded: an interrupt or exception through a bad gate faults, and likely
    /// triple-faults the machine.
    pub unsafe fn load(&self) {
        let ptr = DescriptorTablePointer {
            limit: (core::mem::size_of::<Self>() - 1) as u16,
            base: VirtAddr::from_ptr(self),
        };
        // SAFETY: the caller vouches for the table.
        unsafe { lidt(&ptr) };
    }
}

impl Default for Idt {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The crate's encodings against the layouts of the Intel SDM, Vol. 3A ("Task
    // Management" and "Interrupt and Exception Handling", 64-bit mode).

    #[test]
    fn tss_layout() {
        assert_eq!(core::mem::size_of::<Tss>(), 104);
        let t = Tss::new();
        assert_eq!({ t.iomap_base }, 104);
        assert_eq!(core::mem::offset_of!(Tss, privilege_stack_table), 4);
        assert_eq!(core::mem::offset_of!(Tss, interrupt_stack_table), 36);
        assert_eq!(core::mem::offset_of!(Tss, iomap_base), 102);
    }

    #[test]
    fn tss_descriptor_fields() {
        static TSS: Tss = Tss::new();
        let base = &TSS as *const Tss as u64;
        let [low, high] = tss_descriptor(&TSS);
        // Limit 103, type 9 (available 64-bit TSS) + P, the base split over both slots.
        assert_eq!(low & 0xFFFF, 103);
        assert_eq!((low >> 40) & 0xFF, 0x89);
        assert_eq!((low >> 48) & 0xF, 0);
        let got = ((low >> 16) & 0xFF_FFFF) | (((low >> 56) & 0xFF) << 24) | (high << 32);
        assert_eq!(got, base);
    }

    #[test]
    fn segments_are_the_flat_long_mode_ones() {
        // The accessed bit (type bit 0) is set: the CPU would set it on the first load.
        assert_eq!(KERNEL_CODE64, 0x00AF_9B00_0000_FFFF);
        assert_eq!(KERNEL_DATA, 0x00CF_9300_0000_FFFF);
        assert_eq!(USER_DATA, 0x00CF_F300_0000_FFFF);
        assert_eq!(USER_CODE64, 0x00AF_FB00_0000_FFFF);
    }

    fn raw(idt: &Idt, vector: usize) -> [u64; 2] {
        // SAFETY: a gate is 16 bytes of plain data.
        unsafe { core::mem::transmute::<Gate, [u64; 2]>(idt.0[vector]) }
    }

    #[test]
    fn interrupt_gate_fields() {
        let mut idt = Idt::new();
        assert_eq!(core::mem::size_of::<Idt>(), 4096);
        // SAFETY: the table is never loaded.
        unsafe {
            idt.set_interrupt_gate(8, 0xFFFF_8000_1234_5678, 0x08, 1, 0);
            idt.set_interrupt_gate(3, 0, 0x08, 0, 3);
            idt.set_interrupt_gate(4, 0, 0, 0xF9, 0xFC);
        }
        assert_eq!(raw(&idt, 8), [0x1234_8E01_0008_5678, 0xFFFF_8000]);
        // DPL 3, no IST; out-of-range IST and DPL bits are masked off.
        assert_eq!(raw(&idt, 3), [0x0000_EE00_0008_0000, 0]);
        assert_eq!(raw(&idt, 4), [0x0000_8E01_0000_0000, 0]);
        // Not present: only the must-be-one type bits.
        assert_eq!(raw(&idt, 5)[0] & (1 << 47), 0);
    }
}
