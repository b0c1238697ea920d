//! A TLB shootdown between two vCPUs (`--smp 2`): both use one set of page tables; the AP
//! reads a 4 KiB page mapped to frame A (its TLB now may hold the translation), the
//! bootstrap processor points the page-table entry at frame B, flushes its own TLB with
//! INVLPG and sends the AP a fixed IPI, whose handler INVLPGs the page and reads it
//! again: it must see frame B. Before its flush the AP may see either frame (the
//! architecture allows the stale translation), which is printed, not checked.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use rt::apic::SharedApic;
use rt::cell::Racy;
use rt::paging::Page;
use rt::{check_eq, println, smp};

rt::entry!(main);

const SHOOTDOWN: u8 = 0x62;
/// The page: above the boot identity map, so only this test maps it.
const VIRT: u64 = 0x1_0000_0000;
const MARK_A: u64 = 0xAAAA_0000_0000_000A;
const MARK_B: u64 = 0xBBBB_0000_0000_000B;

static APIC: SharedApic = SharedApic::new();
static FRAME_A: Racy<Page> = Racy::new(Page([0; 4096]));
static FRAME_B: Racy<Page> = Racy::new(Page([0; 4096]));
/// 1: the AP read the page; 2: the PTE points at B.
static STATE: AtomicU32 = AtomicU32::new(0);
static AP_FIRST: AtomicU64 = AtomicU64::new(0);
static AP_BEFORE_FLUSH: AtomicU64 = AtomicU64::new(0);
static AP_AFTER_FLUSH: AtomicU64 = AtomicU64::new(0);

fn read_page() -> u64 {
    // SAFETY: VIRT is mapped (to A or B) before any CPU reads it.
    unsafe { (VIRT as *const u64).read_volatile() }
}

fn shootdown_handler(_: &mut rt::Frame) {
    rt::cpu::invlpg(VIRT);
    AP_AFTER_FLUSH.store(read_page(), Ordering::SeqCst);
    APIC.get().eoi();
}

fn ap_main(_: u32) {
    APIC.get().enable();
    AP_FIRST.store(read_page(), Ordering::SeqCst);
    STATE.store(1, Ordering::SeqCst);
    while STATE.load(Ordering::SeqCst) != 2 {
        core::hint::spin_loop();
    }
    AP_BEFORE_FLUSH.store(read_page(), Ordering::SeqCst);
    STATE.store(3, Ordering::SeqCst);
    loop {
        rt::cpu::sti_hlt();
    }
}

fn main(_: &'static rt::multiboot::Info) {
    let apic = rt::apic::enable_for_irq(&APIC, "the shootdown IPI");
    rt::interrupts::set_handler(SHOOTDOWN, shootdown_handler);
    if (rt::cpu::cpuid(1, 0).1 >> 16) & 0xff < 2 {
        rt::skip!("one logical processor: the machine needs --smp 2");
    }
    let (a, b) = (FRAME_A.get() as u64, FRAME_B.get() as u64);
    // SAFETY: the frames are statics only this code writes, before the AP starts.
    unsafe {
        (a as *mut u64).write_volatile(MARK_A);
        (b as *mut u64).write_volatile(MARK_B);
    }
    rt::paging::map(VIRT, a, rt::paging::RW);
    check_eq!(smp::start_aps(apic, 1, ap_main), 1u32, "the AP started");
    rt::apic::spin_until(rt::apic::tsc_ticks_for_ms(1000), || {
        STATE.load(Ordering::SeqCst) >= 1
    });
    check_eq!(
        AP_FIRST.load(Ordering::SeqCst),
        MARK_A,
        "the AP first reads frame A"
    );
    // Point the entry at B and flush this CPU's TLB: this CPU sees B at once.
    rt::paging::map(VIRT, b, rt::paging::RW);
    check_eq!(
        read_page(),
        MARK_B,
        "after its own INVLPG the BSP sees frame B"
    );
    STATE.store(2, Ordering::SeqCst);
    rt::apic::spin_until(rt::apic::tsc_ticks_for_ms(1000), || {
        STATE.load(Ordering::SeqCst) >= 3
    });
    let before = AP_BEFORE_FLUSH.load(Ordering::SeqCst);
    println!(
        "before its flush the AP saw frame {} (either is allowed)",
        if before == MARK_A {
            "A"
        } else if before == MARK_B {
            "B"
        } else {
            "?"
        }
    );
    smp::send_ipi(apic, 1, u32::from(SHOOTDOWN));
    rt::apic::spin_until(rt::apic::tsc_ticks_for_ms(1000), || {
        AP_AFTER_FLUSH.load(Ordering::SeqCst) != 0
    });
    check_eq!(
        AP_AFTER_FLUSH.load(Ordering::SeqCst),
        MARK_B,
        "after its INVLPG the AP sees frame B"
    );
}
