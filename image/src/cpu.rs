//! Port I/O, the TSS and the IDT.

use core::arch::asm;
use core::cell::UnsafeCell;

/// Read a byte from an I/O port.
pub fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: port input touches no memory; the image owns the machine's devices.
    unsafe {
        asm!("in al, dx", out("al") v, in("dx") port, options(nomem, nostack, preserves_flags))
    };
    v
}

/// Write a byte to an I/O port.
pub fn outb(port: u16, v: u8) {
    // SAFETY: port output touches no memory; the image owns the machine's devices.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack, preserves_flags))
    };
}

/// Write a word to an I/O port.
pub fn outw(port: u16, v: u16) {
    // SAFETY: as `outb`.
    unsafe {
        asm!("out dx, ax", in("dx") port, in("ax") v, options(nomem, nostack, preserves_flags))
    };
}

/// Write a doubleword to an I/O port.
pub fn outl(port: u16, v: u32) {
    // SAFETY: as `outb`.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") v, options(nomem, nostack, preserves_flags))
    };
}

/// The time-stamp counter.
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC reads a counter; CR4.TSD is clear (ring 0 anyway).
    unsafe {
        asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// CPUID leaf `leaf`, subleaf `sub`: [EAX, EBX, ECX, EDX].
pub fn cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    // CPUID is always available in long mode.
    let r = core::arch::x86_64::__cpuid_count(leaf, sub);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// CR2 (the faulting address of the last page fault).
pub fn cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 has no side effect.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Stop the CPU for good (interrupts off, HLT in a loop: NMIs resume into the loop).
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: CLI and HLT stop this CPU; nothing runs after.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// A cell the boot CPU alone uses (the image runs on one CPU with interrupts off).
pub struct BootCell<T>(UnsafeCell<T>);

// SAFETY: one CPU, interrupts disabled: no concurrent access ever happens.
unsafe impl<T> Sync for BootCell<T> {}

impl<T> BootCell<T> {
    /// A cell holding `v`.
    pub const fn new(v: T) -> Self {
        BootCell(UnsafeCell::new(v))
    }

    /// The pointer to the value.
    pub fn get(&self) -> *mut T {
        self.0.get()
    }
}

/// The 64-bit TSS: RSP0 and the interrupt stack table.
#[repr(C, packed)]
struct Tss {
    reserved0: u32,
    rsp: [u64; 3],
    reserved1: u64,
    ist: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    iomap_base: u16,
}

/// One IDT gate.
#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    attr: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

const EMPTY_GATE: Gate = Gate {
    offset_low: 0,
    selector: 0,
    ist: 0,
    attr: 0,
    offset_mid: 0,
    offset_high: 0,
    reserved: 0,
};

static TSS: BootCell<Tss> = BootCell::new(Tss {
    reserved0: 0,
    rsp: [0; 3],
    reserved1: 0,
    ist: [0; 7],
    reserved2: 0,
    reserved3: 0,
    // No I/O permission bitmap: the offset points past the limit.
    iomap_base: core::mem::size_of::<Tss>() as u16,
});

/// The stack exceptions run on (IST 1): a fault caused by an exhausted or corrupt boot
/// stack can still print its diagnostic.
#[repr(C, align(16))]
struct ExceptionStack([u8; 32 * 1024]);
static EXCEPTION_STACK: BootCell<ExceptionStack> = BootCell::new(ExceptionStack([0; 32 * 1024]));

static IDT: BootCell<[Gate; 32]> = BootCell::new([EMPTY_GATE; 32]);

extern "C" {
    static mut gdt: [u64; 5];
    static exception_stubs: u8;
}

/// Fill in the TSS descriptor and load TR (VM entry needs a non-zero host TR), then load
/// an IDT whose 32 exception vectors all go to [`crate::exception_handler`] on IST 1.
pub fn init_tables() {
    let tss = TSS.get() as u64;
    let stack_top = EXCEPTION_STACK.get() as u64 + core::mem::size_of::<ExceptionStack>() as u64;
    // SAFETY: boot time, one CPU: nothing else uses the TSS yet.
    unsafe { (*TSS.get()).ist[0] = stack_top };
    let limit = core::mem::size_of::<Tss>() as u64 - 1;
    // Available 64-bit TSS (type 9), present, DPL 0.
    let low = (limit & 0xffff)
        | ((tss & 0xff_ffff) << 16)
        | (0x89 << 40)
        | (((limit >> 16) & 0xf) << 48)
        | (((tss >> 24) & 0xff) << 56);
    let high = tss >> 32;
    // SAFETY: the GDT's descriptors 3 and 4 are the TSS slot, unused until the LTR below;
    // addr_of_mut avoids a reference to the mutable static.
    unsafe {
        let g = core::ptr::addr_of_mut!(gdt);
        (*g)[3] = low;
        (*g)[4] = high;
        asm!("ltr {0:x}", in(reg) TSS_SEL_VALUE, options(nostack, preserves_flags));
    }

    // The stubs are 16 bytes apart.
    let stubs = core::ptr::addr_of!(exception_stubs) as u64;
    // SAFETY: boot time, one CPU, the IDT is not loaded yet.
    let idt = unsafe { &mut *IDT.get() };
    for (vector, gate) in idt.iter_mut().enumerate() {
        let handler = stubs + 16 * vector as u64;
        *gate = Gate {
            offset_low: handler as u16,
            selector: crate::boot::KERNEL_CS,
            ist: 1,
            attr: 0x8e, // present, DPL 0, 64-bit interrupt gate
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        };
    }
    #[repr(C, packed)]
    struct Pointer {
        limit: u16,
        base: u64,
    }
    let ptr = Pointer {
        limit: (core::mem::size_of::<[Gate; 32]>() - 1) as u16,
        base: IDT.get() as u64,
    };
    // SAFETY: the IDT is a static with 32 valid gates; vectors above 31 are beyond the
    // limit and raise #GP, which is gate 13.
    unsafe { asm!("lidt [{}]", in(reg) &ptr, options(nostack, preserves_flags)) };
}

const TSS_SEL_VALUE: u16 = crate::boot::TSS_SEL;
