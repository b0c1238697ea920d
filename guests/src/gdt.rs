//! The TSS: RSP0 for traps from ring 3, IST1 for double faults.

use crate::boot::TSS_SEL;
use crate::cell::Racy;
use opsvisor_bare::desc::{self, Tss};

static TSS: Racy<Tss> = Racy::new(Tss::new());

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
    let [low, high] = Tss::descriptor(tss);
    // SAFETY: runs once at boot, before anything uses the TSS or the GDT's TSS slot
    // (descriptors 5 and 6), which then holds an available TSS descriptor for LTR.
    unsafe {
        (*TSS.get()).rsp[0] = rsp0;
        (*TSS.get()).ist[0] = df;
        let gdt = &mut *core::ptr::addr_of_mut!(gdt64);
        gdt[5] = low;
        gdt[6] = high;
        desc::ltr(TSS_SEL);
    }
}
