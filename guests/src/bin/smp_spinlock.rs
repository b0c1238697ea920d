//! A spinlock taken with LOCK CMPXCHG by four vCPUs at once (`--smp 4`), around a plain
//! (non-atomic) read-modify-write of a shared counter: with the lock working and the
//! memory model kept, no increment is lost.

#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicU32, Ordering};
use rt::apic::Apic;
use rt::cell::Racy;
use rt::{check_eq, smp};

rt::entry!(main);

const PER_CPU: u64 = 20_000;
const CPUS: u64 = 4;

static LOCK: AtomicU32 = AtomicU32::new(0);
static COUNTER: Racy<u64> = Racy::new(0);
static DONE: AtomicU32 = AtomicU32::new(0);
static GO: AtomicU32 = AtomicU32::new(0);

fn lock() {
    loop {
        let old: u32;
        // SAFETY: LOCK CMPXCHG on the lock word, a static.
        unsafe {
            asm!("lock cmpxchg dword ptr [{lock}], {new:e}",
                 lock = in(reg) LOCK.as_ptr(), new = in(reg) 1u32,
                 inout("eax") 0u32 => old, options(nostack));
        }
        if old == 0 {
            return;
        }
        while LOCK.load(Ordering::Relaxed) != 0 {
            core::hint::spin_loop();
        }
    }
}

fn unlock() {
    LOCK.store(0, Ordering::Release);
}

fn work() {
    while GO.load(Ordering::SeqCst) == 0 {
        core::hint::spin_loop();
    }
    for _ in 0..PER_CPU {
        lock();
        // SAFETY: the lock is held: no other CPU touches the counter.
        unsafe {
            let v = COUNTER.get().read_volatile();
            COUNTER.get().write_volatile(v + 1);
        }
        unlock();
    }
    DONE.fetch_add(1, Ordering::SeqCst);
}

fn ap_main(_: u32) {
    work();
}

fn main(_: &'static rt::multiboot::Info) {
    let Some(apic) = rt::apic::cpuid_apic().then(Apic::current).flatten() else {
        rt::skip!("no enabled local APIC to send the start-up IPIs with");
    };
    apic.enable();
    if (rt::cpu::cpuid(1, 0).1 >> 16) & 0xff < 4 {
        rt::skip!("fewer than 4 logical processors: the machine needs --smp 4");
    }
    check_eq!(smp::start_aps(apic, 3, ap_main), 3u32, "3 APs started");
    GO.store(1, Ordering::SeqCst);
    work();
    rt::apic::spin_until(rt::apic::tsc_ticks_for_ms(20_000), || {
        DONE.load(Ordering::SeqCst) >= 4
    });
    check_eq!(DONE.load(Ordering::SeqCst), 4u32, "all 4 CPUs finished");
    // SAFETY: every CPU is done with the counter.
    let total = unsafe { COUNTER.get().read_volatile() };
    check_eq!(
        total,
        PER_CPU * CPUS,
        "no increment lost: 4 x 20000 under the lock"
    );
}
