//! The local APIC timer in periodic mode: five interrupts waited for with `sti; hlt`
//! through the xAPIC MMIO page, stopped by a zero initial count; then the same through
//! the x2APIC MSRs after setting IA32_APIC_BASE.EXTD (when CPUID offers x2APIC).

#![no_std]
#![no_main]

use core::sync::atomic::Ordering;
use rt::apic::{self, reg, Apic, BASE_EN, BASE_EXTD, IA32_APIC_BASE, TIMER_PERIODIC};
use rt::cpu::{rdmsr, rdtsc, try_rdmsr, wrmsr};
use rt::{check, check_eq, println, skip};

rt::entry!(main);

const VECTOR: u8 = 0x41;
const INITIAL: u32 = 500_000;
const PERIODS: u64 = 5;

fn run_periodic(apic: Apic, what: &str) {
    println!("periodic timer via {}", what);
    apic.enable();
    apic.write(reg::TIMER_DIVIDE, 0xB);
    apic.write(reg::LVT_TIMER, u32::from(VECTOR) | TIMER_PERIODIC);
    check_eq!(
        apic.read(reg::LVT_TIMER),
        u32::from(VECTOR) | TIMER_PERIODIC,
        "LVT timer: periodic, vector 0x41"
    );
    let start = apic::ticks();
    let t0 = rdtsc();
    apic.write(reg::TIMER_INITIAL, INITIAL);
    // The ticks are stamped first and reported after: on an emulated machine a printed
    // line takes longer than a period, and ticks arriving while it prints (IF = 0)
    // would fold into one.
    let mut arrived = [false; PERIODS as usize];
    let mut stamps = [0u64; PERIODS as usize];
    for (i, (ok, stamp)) in arrived.iter_mut().zip(stamps.iter_mut()).enumerate() {
        *ok = apic::wait_ticks_halting(start + i as u64 + 1, 100, 2000);
        *stamp = apic::LAST_TICK_TSC.load(Ordering::SeqCst);
    }
    let mut last = t0;
    for (i, (ok, stamp)) in arrived.iter().zip(stamps).enumerate() {
        check!(*ok, "{}: tick {} arrived", what, i + 1);
        check!(
            stamp > last,
            "{}: tick {} after the previous one ({} TSC ticks)",
            what,
            i + 1,
            stamp.wrapping_sub(last)
        );
        last = stamp;
    }
    let cur = apic.read(reg::TIMER_CURRENT);
    check!(
        cur > 0 && cur <= INITIAL,
        "{}: the count reloaded and keeps running ({})",
        what,
        cur
    );
    // A zero initial count stops the timer. One expiry may already be pending (the
    // count ran on while this printed with IF = 0): let it in, then no more may come.
    let before_stop = apic::ticks();
    apic.write(reg::TIMER_INITIAL, 0);
    rt::cpu::sti();
    apic::spin_until(apic::tsc_ticks_for_ms(1), || false);
    rt::cpu::cli();
    let stopped_at = apic::ticks();
    check!(
        stopped_at <= before_stop + 1,
        "{}: at most the one pending interrupt after stopping",
        what
    );
    let period = last.wrapping_sub(t0) / PERIODS;
    rt::cpu::sti();
    apic::spin_until(
        period.saturating_mul(4).max(apic::tsc_ticks_for_ms(1)),
        || false,
    );
    rt::cpu::cli();
    check_eq!(
        apic.read(reg::TIMER_CURRENT),
        0u32,
        "{}: current count 0 once stopped",
        what
    );
    check_eq!(
        apic::ticks(),
        stopped_at,
        "{}: no interrupt after stopping",
        what
    );
}

fn main(_: &'static rt::multiboot::Info) {
    if !apic::cpuid_apic() {
        skip!("CPUID.1:EDX.APIC is clear: no local APIC");
    }
    rt::interrupts::set_handler(VECTOR, apic::timer_handler);
    let Some(xapic) = Apic::current() else {
        println!("FAIL: APIC globally disabled at boot");
        rt::exit(rt::EXIT_FAIL);
    };
    let xid = xapic.read(reg::ID) >> 24;
    run_periodic(xapic, "xAPIC MMIO");

    if !apic::cpuid_x2apic() {
        println!("x2APIC absent in CPUID.1:ECX: x2APIC part skipped");
        return;
    }
    let base = rdmsr(IA32_APIC_BASE);
    wrmsr(IA32_APIC_BASE, base | BASE_EN | BASE_EXTD);
    check!(
        rdmsr(IA32_APIC_BASE) & BASE_EXTD != 0,
        "IA32_APIC_BASE.EXTD set: x2APIC mode"
    );
    check_eq!(
        Apic::current(),
        Some(Apic::X2),
        "APIC now reached through MSRs"
    );
    let x2id = rdmsr(0x802);
    check_eq!(x2id, u64::from(xid), "x2APIC ID matches the xAPIC ID");
    // x2APIC has no DFR (0x80E): reading it raises #GP.
    check!(try_rdmsr(0x80E).is_err(), "x2APIC DFR MSR raises #GP");
    run_periodic(Apic::X2, "x2APIC MSRs");
}
