//! The local APIC timer in one-shot mode through the xAPIC MMIO page: SVR enable, LVT
//! vector, divide configuration, a counting-down current count, one interrupt (EOI'd),
//! no second one, and a masked LVT that counts down without interrupting.

#![no_std]
#![no_main]

use rt::apic::{
    self, reg, Apic, BASE_BSP, BASE_EN, BASE_EXTD, IA32_APIC_BASE, LVT_MASKED, TIMER_ONESHOT,
};
use rt::cpu::{rdmsr, rdtsc};
use rt::{check, check_eq, println, skip};

rt::entry!(main);

const VECTOR: u8 = 0x40;
const INITIAL: u32 = 1_000_000;

fn main(_: &'static rt::multiboot::Info) {
    if !apic::cpuid_apic() {
        skip!("CPUID.1:EDX.APIC is clear: no local APIC");
    }
    let base = rdmsr(IA32_APIC_BASE);
    println!("IA32_APIC_BASE {:#x}", base);
    check!(base & BASE_EN != 0, "APIC globally enabled at boot");
    check!(base & BASE_BSP != 0, "this CPU is the BSP");
    check!(base & BASE_EXTD == 0, "xAPIC mode at boot");
    let Some(apic) = Apic::current() else {
        unreachable!()
    };
    check_eq!(
        apic,
        Apic::X(0xFEE0_0000),
        "APIC at the architectural default base"
    );

    let version = apic.read(reg::VERSION);
    println!(
        "APIC ID {:#x}, version {:#x}",
        apic.read(reg::ID) >> 24,
        version
    );
    check!(version & 0xF0 == 0x10, "integrated APIC (version 0x1x)");
    check!(
        (version >> 16) & 0xFF >= 3,
        "at least 4 LVT entries (max LVT {})",
        (version >> 16) & 0xFF
    );

    apic.enable();
    check_eq!(
        apic.read(reg::SVR) & 0x1FF,
        0x1FFu32,
        "SVR: software-enabled, spurious vector 0xFF"
    );
    rt::interrupts::set_handler(VECTOR, apic::timer_handler);
    apic.write(reg::TIMER_DIVIDE, 0xB); // divide by 1
    check_eq!(
        apic.read(reg::TIMER_DIVIDE) & 0xB,
        0xBu32,
        "divide configuration reads back"
    );
    apic.write(reg::LVT_TIMER, u32::from(VECTOR) | TIMER_ONESHOT);
    check_eq!(
        apic.read(reg::LVT_TIMER),
        u32::from(VECTOR),
        "LVT timer: one-shot, unmasked, vector 0x40"
    );

    let t0 = rdtsc();
    apic.write(reg::TIMER_INITIAL, INITIAL);
    let c1 = apic.read(reg::TIMER_CURRENT);
    let c2 = apic.read(reg::TIMER_CURRENT);
    println!("current count {} then {}", c1, c2);
    check!(
        c1 <= INITIAL && c2 <= c1,
        "current count counts down from the initial count"
    );
    check_eq!(
        apic.read(reg::TIMER_INITIAL),
        INITIAL,
        "initial count reads back"
    );
    check_eq!(apic::ticks(), 0u64, "no interrupt while IF = 0");

    check!(
        apic::wait_ticks_spinning(1, 2000),
        "the one-shot interrupt arrived (spinning with IF = 1)"
    );
    let t1 = apic::LAST_TICK_TSC.load(core::sync::atomic::Ordering::SeqCst);
    check!(
        t1 > t0,
        "TSC advanced from arming to the interrupt ({} ticks)",
        t1.wrapping_sub(t0)
    );
    check_eq!(
        apic.read(reg::TIMER_CURRENT),
        0u32,
        "current count is 0 after expiry"
    );
    check_eq!(
        apic.read(reg::ISR0 + 0x20) & (1 << (VECTOR % 32)),
        0u32,
        "vector 0x40 not in service after EOI"
    );

    // One-shot: no second interrupt, even after several times the first interval.
    let interval = t1.wrapping_sub(t0).max(apic::tsc_ticks_for_ms(1));
    rt::cpu::sti();
    apic::spin_until(interval.saturating_mul(5), || false);
    rt::cpu::cli();
    check_eq!(apic::ticks(), 1u64, "one-shot fired exactly once");

    // Masked: the count still runs down, no interrupt is delivered.
    apic.write(
        reg::LVT_TIMER,
        u32::from(VECTOR) | TIMER_ONESHOT | LVT_MASKED,
    );
    apic.write(reg::TIMER_INITIAL, INITIAL);
    rt::cpu::sti();
    let expired = apic::spin_until(interval.saturating_mul(20), || {
        apic.read(reg::TIMER_CURRENT) == 0
    });
    apic::spin_until(interval, || false);
    rt::cpu::cli();
    check!(expired, "masked timer counted down to 0");
    check_eq!(apic::ticks(), 1u64, "masked timer delivered no interrupt");
}
