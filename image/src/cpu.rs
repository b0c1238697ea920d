//! CPU helpers, the TSS and the IDT (port I/O is `opsvisor_bare::port`).

use core::arch::asm;
use core::cell::UnsafeCell;
use opsvisor_bare::desc::{self, TablePointer, Tss};

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

static TSS: BootCell<Tss> = BootCell::new(Tss::new());

/// The stack exceptions run on (IST 1): a fault caused by an exhausted or corrupt boot
/// stack can still print its diagnostic.
#[repr(C, align(16))]
struct ExceptionStack([u8; 32 * 1024]);
static EXCEPTION_STACK: BootCell<ExceptionStack> = BootCell::new(ExceptionStack([0; 32 * 1024]));

/// 32 gates of two quadwords (the exception vectors only).
static IDT: BootCell<[[u64; 2]; 32]> = BootCell::new([[0; 2]; 32]);

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
    let [low, high] = Tss::descriptor(tss);
    // SAFETY: the GDT's descriptors 3 and 4 are the TSS slot, unused until the LTR below,
    // which then finds an available TSS descriptor there; addr_of_mut avoids a reference
    // to the mutable static.
    unsafe {
        let g = core::ptr::addr_of_mut!(gdt);
        (*g)[3] = low;
        (*g)[4] = high;
        desc::ltr(crate::boot::TSS_SEL);
    }

    // The stubs are 16 bytes apart.
    let stubs = core::ptr::addr_of!(exception_stubs) as u64;
    // SAFETY: boot time, one CPU, the IDT is not loaded yet.
    let idt = unsafe { &mut *IDT.get() };
    for (vector, gate) in idt.iter_mut().enumerate() {
        let handler = stubs + 16 * vector as u64;
        // Present, DPL 0, 64-bit interrupt gate.
        *gate = desc::interrupt_gate(handler, crate::boot::KERNEL_CS, 1, 0);
    }
    let ptr = TablePointer {
        limit: (core::mem::size_of::<[[u64; 2]; 32]>() - 1) as u16,
        base: IDT.get() as u64,
    };
    // SAFETY: the IDT is a static with 32 valid gates; vectors above 31 are beyond the
    // limit and raise #GP, which is gate 13.
    unsafe { desc::lidt(&ptr) };
}
