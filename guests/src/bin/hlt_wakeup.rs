//! HLT with the APIC timer armed: each `sti; hlt` returns only after the timer
//! interrupt has been handled, and an interrupt already pending when HLT runs wakes it
//! at once.

#![no_std]
#![no_main]

use rt::apic::{self, reg, Apic, TIMER_ONESHOT};
use rt::cpu::{cli, rdtsc, sti_hlt};
use rt::{check, check_eq, println, skip};

rt::entry!(main);

const VECTOR: u8 = 0x43;

fn main(_: &'static rt::multiboot::Info) {
    if !apic::cpuid_apic() {
        skip!("CPUID.1:EDX.APIC is clear: no local APIC");
    }
    let Some(apic) = Apic::current() else {
        println!("FAIL: APIC globally disabled at boot");
        rt::exit(rt::EXIT_FAIL);
    };
    apic.enable();
    rt::interrupts::set_handler(VECTOR, apic::timer_handler);
    apic.write(reg::TIMER_DIVIDE, 0xB);
    apic.write(reg::LVT_TIMER, u32::from(VECTOR) | TIMER_ONESHOT);

    // Interrupts stay disabled except across `sti; hlt`, so the handler can only run
    // while halted: a HLT that returned with no new tick returned early.
    for round in 1..=3u64 {
        let initial = 2_000_000 * round as u32;
        cli();
        let t0 = rdtsc();
        apic.write(reg::TIMER_INITIAL, initial);
        check_eq!(
            apic::ticks(),
            round - 1,
            "round {}: armed, no tick yet",
            round
        );
        sti_hlt();
        cli();
        let t1 = rdtsc();
        check_eq!(
            apic::ticks(),
            round,
            "round {}: HLT returned after exactly one timer interrupt",
            round
        );
        check_eq!(
            apic.read(reg::TIMER_CURRENT),
            0u32,
            "round {}: the timer had expired",
            round
        );
        check!(
            t1 > t0,
            "round {}: TSC advanced across the HLT ({} ticks)",
            round,
            t1.wrapping_sub(t0)
        );
    }

    // Pending before HLT: let the timer expire with IF = 0, then `sti; hlt`. The
    // interrupt is delivered once STI's shadow ends, and the HLT wakes at once.
    apic.write(reg::TIMER_INITIAL, 100_000);
    let expired = apic::spin_until(apic::tsc_ticks_for_ms(2000), || {
        apic.read(reg::TIMER_CURRENT) == 0
    });
    check!(expired, "timer expired with interrupts disabled");
    check_eq!(apic::ticks(), 3u64, "no delivery while IF = 0");
    sti_hlt();
    cli();
    check_eq!(apic::ticks(), 4u64, "the pending interrupt woke the HLT");
}
