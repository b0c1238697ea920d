//! x86-64 system descriptors: the 64-bit TSS, its GDT descriptor, interrupt gates, and
//! loading the IDT and the task register (the layouts of the Intel SDM, Vol. 3A, chapters
//! "Task Management" and "Interrupt and Exception Handling", 64-bit mode).

use core::arch::asm;

/// The 64-bit task-state segment: the stack pointers for privilege changes (RSP0-2) and
/// the interrupt stack table (IST1-7). No I/O permission bitmap: the I/O map base points
/// past the segment's limit, so ring 3 with IOPL 0 may use no port.
#[repr(C, packed)]
pub struct Tss {
    _reserved0: u32,
    /// RSP0, RSP1, RSP2: the stack loaded on an interrupt or call into rings 0, 1, 2.
    pub rsp: [u64; 3],
    _reserved1: u64,
    /// IST1..IST7 (index 0 is IST1): the stack a gate with that IST index switches to.
    pub ist: [u64; 7],
    _reserved2: u64,
    _reserved3: u16,
    iomap_base: u16,
}

impl Tss {
    /// The segment's size: 104 bytes.
    pub const SIZE: usize = core::mem::size_of::<Tss>();

    /// A TSS with every stack pointer zero and no I/O bitmap.
    pub const fn new() -> Self {
        Tss {
            _reserved0: 0,
            rsp: [0; 3],
            _reserved1: 0,
            ist: [0; 7],
            _reserved2: 0,
            _reserved3: 0,
            iomap_base: Self::SIZE as u16,
        }
    }

    /// The GDT descriptor (two slots) of a TSS at `base`.
    pub const fn descriptor(base: u64) -> [u64; 2] {
        tss_descriptor(base, (Self::SIZE - 1) as u32)
    }
}

impl Default for Tss {
    fn default() -> Self {
        Self::new()
    }
}

/// The 16-byte GDT descriptor of an available 64-bit TSS (type 9), present, DPL 0, byte
/// granular, at `base` with `limit` (its low 20 bits): the low and high GDT slots.
pub const fn tss_descriptor(base: u64, limit: u32) -> [u64; 2] {
    let limit = limit as u64;
    let low = (limit & 0xFFFF)
        | ((base & 0xFF_FFFF) << 16)
        | (0x89 << 40) // present, available 64-bit TSS
        | (((limit >> 16) & 0xF) << 48)
        | (((base >> 24) & 0xFF) << 56);
    [low, base >> 32]
}

/// The 16-byte IDT entry of a present 64-bit interrupt gate (type 0xE: IF cleared on
/// entry) to `handler` through code segment `selector`, on IST stack `ist` (0: none; low
/// 3 bits), callable by `INT n` from rings up to `dpl` (low 2 bits).
pub const fn interrupt_gate(handler: u64, selector: u16, ist: u8, dpl: u8) -> [u64; 2] {
    let low = (handler & 0xFFFF)
        | ((selector as u64) << 16)
        | (((ist & 7) as u64) << 32)
        | (0x8E << 40) // present, 64-bit interrupt gate
        | (((dpl & 3) as u64) << 45)
        | (((handler >> 16) & 0xFFFF) << 48);
    [low, handler >> 32]
}

/// The operand of LGDT and LIDT: the table's limit (its size minus one) and base.
#[repr(C, packed)]
pub struct TablePointer {
    /// The last valid byte offset of the table.
    pub limit: u16,
    /// The table's linear address.
    pub base: u64,
}

/// Load the IDT.
///
/// # Safety
///
/// `ptr` must describe a table of valid gates that stays in place (and valid) for as long
/// as it is loaded: an interrupt or exception through a bad gate faults, and likely
/// triple-faults the machine.
#[inline]
pub unsafe fn lidt(ptr: &TablePointer) {
    // SAFETY: the caller vouches for the table; LIDT reads the 10-byte operand only.
    unsafe { asm!("lidt [{}]", in(reg) ptr, options(readonly, nostack, preserves_flags)) };
}

/// Load the task register with `selector`.
///
/// # Safety
///
/// `selector` must select an available 64-bit TSS descriptor in the loaded GDT whose
/// TSS stays in place (LTR marks the descriptor busy in the GDT).
#[inline]
pub unsafe fn ltr(selector: u16) {
    // SAFETY: the caller vouches for the descriptor.
    unsafe { asm!("ltr {0:x}", in(reg) selector, options(nostack, preserves_flags)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tss_layout() {
        assert_eq!(Tss::SIZE, 104);
        let t = Tss::new();
        assert_eq!({ t.iomap_base }, 104);
        assert_eq!(core::mem::offset_of!(Tss, rsp), 4);
        assert_eq!(core::mem::offset_of!(Tss, ist), 36);
        assert_eq!(core::mem::offset_of!(Tss, iomap_base), 102);
    }

    #[test]
    fn tss_descriptor_fields() {
        let [low, high] = Tss::descriptor(0x1234_5678_9ABC_DEF0);
        // limit 103, base 15..0 = 0xDEF0, base 23..16 = 0xBC, type 9 + P, base 31..24 = 0x9A.
        assert_eq!(low, 0x9A00_89BC_DEF0_0067);
        assert_eq!(high, 0x1234_5678);
        // A limit above 16 bits lands in bits 51..48; above 20 bits it is cut.
        let [low, _] = tss_descriptor(0, 0x12_3456);
        assert_eq!(low, 0x0002_8900_0000_3456);
    }

    #[test]
    fn interrupt_gate_fields() {
        let [low, high] = interrupt_gate(0xFFFF_8000_1234_5678, 0x08, 1, 0);
        assert_eq!(low, 0x1234_8E01_0008_5678);
        assert_eq!(high, 0xFFFF_8000);
        // DPL 3, no IST; out-of-range IST and DPL bits are masked off.
        let [low, _] = interrupt_gate(0, 0x08, 0, 3);
        assert_eq!(low, 0x0000_EE00_0008_0000);
        let [low, _] = interrupt_gate(0, 0, 0xF9, 0xFC);
        assert_eq!(low, 0x0000_8E01_0000_0000);
    }
}
