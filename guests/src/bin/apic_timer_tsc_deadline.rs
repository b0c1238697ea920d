//! The local APIC timer in TSC-deadline mode: the interrupt arrives when the TSC has
//! reached IA32_TSC_DEADLINE, the MSR reads 0 after it fired, and writing 0 disarms it.

#![no_std]
#![no_main]

use core::sync::atomic::Ordering;
use rt::apic::{self, reg, Apic, IA32_TSC_DEADLINE, TIMER_TSC_DEADLINE};
use rt::cpu::{rdmsr, rdtsc, wrmsr};
use rt::{check, check_eq, println, skip};

rt::entry!(main);

const VECTOR: u8 = 0x42;

fn main(_: &'static rt::multiboot::Info) {
    if !apic::cpuid_apic() {
        skip!("CPUID.1:EDX.APIC is clear: no local APIC");
    }
    if !apic::cpuid_tsc_deadline() {
        skip!("CPUID.1:ECX.TSC_DEADLINE is clear: no TSC-deadline timer");
    }
    let Some(apic) = Apic::current() else {
        println!("FAIL: APIC globally disabled at boot");
        rt::exit(rt::EXIT_FAIL);
    };
    match apic::tsc_hz() {
        Some(hz) => println!("TSC frequency from CPUID: {} Hz", hz),
        None => println!("TSC frequency not in CPUID: assuming at most 4 GHz for timeouts"),
    }
    apic.enable();
    rt::interrupts::set_handler(VECTOR, apic::timer_handler);
    apic.write(reg::LVT_TIMER, u32::from(VECTOR) | TIMER_TSC_DEADLINE);
    check_eq!(
        apic.read(reg::LVT_TIMER),
        u32::from(VECTOR) | TIMER_TSC_DEADLINE,
        "LVT timer: TSC-deadline mode"
    );

    for round in 1..=3u64 {
        let deadline = rdtsc().wrapping_add(apic::tsc_ticks_for_ms(2));
        wrmsr(IA32_TSC_DEADLINE, deadline);
        check!(
            apic::wait_ticks_halting(round, 100, 2000),
            "round {}: the deadline interrupt arrived",
            round
        );
        let fired = apic::LAST_TICK_TSC.load(Ordering::SeqCst);
        check!(
            fired >= deadline,
            "round {}: it fired at TSC {} >= deadline {}",
            round,
            fired,
            deadline
        );
        check_eq!(
            rdmsr(IA32_TSC_DEADLINE),
            0u64,
            "round {}: IA32_TSC_DEADLINE reads 0 after firing",
            round
        );
    }

    // A deadline already in the past fires at once.
    wrmsr(IA32_TSC_DEADLINE, rdtsc().wrapping_sub(1000).max(1));
    check!(
        apic::wait_ticks_spinning(4, 2000),
        "a past deadline fires at once"
    );

    // Writing 0 disarms.
    let before = apic::ticks();
    wrmsr(
        IA32_TSC_DEADLINE,
        rdtsc().wrapping_add(apic::tsc_ticks_for_ms(2)),
    );
    wrmsr(IA32_TSC_DEADLINE, 0);
    rt::cpu::sti();
    apic::spin_until(apic::tsc_ticks_for_ms(10), || false);
    rt::cpu::cli();
    check_eq!(apic::ticks(), before, "no interrupt after disarming with 0");
}
