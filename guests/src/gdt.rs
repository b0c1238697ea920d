//! The TSS: RSP0 for traps from ring 3, IST1 for double faults.

use crate::boot::TSS_SEL;
use crate::cell::Racy;

#[repr(C, packed)]
struct Tss {
    _reserved0: u32,
    rsp: [u64; 3],
    _reserved1: u64,
    ist: [u64; 7],
    _reserved2: u64,
    _reserved3: u16,
    iomap_base: u16,
}

static TSS: Racy<Tss> = Racy::new(Tss {
    _reserved0: 0,
    rsp: [0; 3],
    _reserved1: 0,
    ist: [0; 7],
    _reserved2: 0,
    _reserved3: 0,
    // Past the TSS limit: no I/O bitmap, so ring 3 with IOPL 0 can use no port.
    iomap_base: 104,
});

/// The stack the CPU switches to on a trap from ring 3 (TSS.RSP0).
#[repr(C, align(16))]
pub struct Stack(pub [u8; 32 * 1024]);

/// The ring-0 stack for traps from ring 3.
pub static RSP0_STACK: Racy<Stack> = Racy::new(Stack([0; 32 * 1024]));
static DF_STACK: Racy<Stack> = Racy::new(Stack([0; 32 * 1024]));

extern "C" {
    static mut gdt64: [u64; 7];
}

/// The range of the RSP0 stack: [start, end).
pub fn rsp0_range() -> (u64, u64) {
    let start = RSP0_STACK.get() as u64;
    (start, start + core::mem::size_of::<Stack>() as u64)
}

/// Fill in the TSS, its GDT descriptor, and load TR.
pub fn init() {
    let tss = TSS.get() as u64;
    let (_, rsp0) = rsp0_range();
    let df = DF_STACK.get() as u64 + core::mem::size_of::<Stack>() as u64;
    let limit = (core::mem::size_of::<Tss>() - 1) as u64;
    // SAFETY: runs once at boot, before anything uses the TSS or the GDT's TSS slot.
    unsafe {
        (*TSS.get()).rsp[0] = rsp0;
        (*TSS.get()).ist[0] = df;
        let gdt = &mut *core::ptr::addr_of_mut!(gdt64);
        gdt[5] = (limit & 0xFFFF)
            | ((tss & 0xFF_FFFF) << 16)
            | (0x89u64 << 40) // present, available 64-bit TSS
            | (((limit >> 16) & 0xF) << 48)
            | (((tss >> 24) & 0xFF) << 56);
        gdt[6] = tss >> 32;
        core::arch::asm!("ltr {0:x}", in(reg) TSS_SEL, options(nostack));
    }
}
