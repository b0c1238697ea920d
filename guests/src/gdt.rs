//! The GDT and the TSS: RSP0 for traps from ring 3, IST1 for double faults.

use crate::boot::TSS_SEL;
use crate::cell::Racy;
use opsvisor_bare::desc::{self, Tss};
use x86_64::registers::segmentation::SegmentSelector;
use x86_64::VirtAddr;

static TSS: Racy<Tss> = Racy::new(Tss::new());

/// The stack the CPU switches to on a trap from ring 3 (TSS.RSP0).
#[repr(C, align(16))]
pub struct Stack(pub [u8; 32 * 1024]);

/// The ring-0 stack for traps from ring 3.
pub static RSP0_STACK: Racy<Stack> = Racy::new(Stack([0; 32 * 1024]));
static DF_STACK: Racy<Stack> = Racy::new(Stack([0; 32 * 1024]));

/// The GDT the boot code loads (`gdt64_ptr` in [`crate::boot`]) before entering long
/// mode, hence a symbol with an initial value: null, kernel code and data, user data and
/// code (in the order SYSRET expects), then the TSS's two slots, filled in by [`init`].
#[no_mangle]
static mut gdt64: [u64; 7] = [
    0,
    desc::KERNEL_CODE64, // 0x08
    desc::KERNEL_DATA,   // 0x10
    desc::USER_DATA,     // 0x18
    desc::USER_CODE64,   // 0x20
    0,                   // 0x28: the TSS (16 bytes)
    0,
];

/// The range of the RSP0 stack: [start, end).
pub fn rsp0_range() -> (u64, u64) {
    let start = RSP0_STACK.get() as u64;
    (start, start + core::mem::size_of::<Stack>() as u64)
}

/// Fill in the TSS, its GDT descriptor, and load TR.
pub fn init() {
    let (_, rsp0) = rsp0_range();
    let df = DF_STACK.get() as u64 + core::mem::size_of::<Stack>() as u64;
    // SAFETY: runs once at boot, before anything uses the TSS or the GDT's TSS slot
    // (descriptors 5 and 6), which then holds an available TSS descriptor for LTR; the
    // TSS is not written after this.
    unsafe {
        (*TSS.get()).privilege_stack_table[0] = VirtAddr::new(rsp0);
        (*TSS.get()).interrupt_stack_table[0] = VirtAddr::new(df);
        let [low, high] = desc::tss_descriptor(&*TSS.get());
        let gdt = &mut *core::ptr::addr_of_mut!(gdt64);
        gdt[5] = low;
        gdt[6] = high;
        x86_64::instructions::tables::load_tss(SegmentSelector(TSS_SEL));
    }
}
