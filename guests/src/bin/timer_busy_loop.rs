//! A timer interrupt reaches a guest that spins without causing an exit: the loop reads
//! memory only, so no intercepted instruction gives the host control. The backend must
//! bound its runs itself (VMX's preemption timer, SVM's host timer, the emulator's time
//! slice) for the core to see the APIC timer expire and deliver it.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};
use rt::apic::{self, reg, Apic, TIMER_ONESHOT};
use rt::{check, check_eq, println, skip};

rt::entry!(main);

const VECTOR: u8 = 0x42;
/// One-shot count at divide-by-1: about a millisecond on any of the backends' clocks.
const INITIAL: u32 = 1_000_000;
/// Iterations of the memory-only loop before giving up: far more than the timer needs
/// on any backend; a backend that never regains control never gets here either.
const SPINS: u64 = 1 << 34;

/// Bumped by the loop, so that it is not optimised into nothing.
static SPUN: AtomicU64 = AtomicU64::new(0);

fn main(_: &'static rt::multiboot::Info) {
    if !apic::cpuid_apic() {
        skip!("CPUID.1:EDX.APIC is clear: no local APIC");
    }
    let Some(apic) = Apic::current() else {
        skip!("the local APIC is disabled");
    };
    apic.enable();
    rt::interrupts::set_handler(VECTOR, apic::timer_handler);
    apic.write(reg::TIMER_DIVIDE, 0xB);
    apic.write(reg::LVT_TIMER, u32::from(VECTOR) | TIMER_ONESHOT);
    check_eq!(apic::ticks(), 0u64, "no tick before the timer is armed");
    apic.write(reg::TIMER_INITIAL, INITIAL);
    rt::cpu::sti();
    // No CPUID, RDTSC, I/O, MSR or MMIO access in here: only loads and stores of RAM.
    let mut spins = 0u64;
    while apic::TICKS.load(Ordering::SeqCst) == 0 && spins < SPINS {
        spins += 1;
        SPUN.store(spins, Ordering::Relaxed);
    }
    rt::cpu::cli();
    println!("spun {} times", SPUN.load(Ordering::Relaxed));
    check!(
        apic::ticks() == 1,
        "the timer interrupted a loop that never exits"
    );
}
