//! AP start-up with four vCPUs (`--smp 4`): the bootstrap processor (APIC ID 0) sends
//! INIT and two start-up IPIs to all excluding self through its local APIC's ICR; each
//! AP comes up in real mode at the trampoline, reaches long mode and reports its APIC ID;
//! the bootstrap processor checks that the three APs arrived, each once, with IDs 1-3.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};
use rt::apic::Apic;
use rt::{check, check_eq, println, smp};

rt::entry!(main);

/// Bit N: APIC ID N reported.
static ARRIVED: AtomicU32 = AtomicU32::new(0);
/// Reports, duplicates included.
static REPORTS: AtomicU32 = AtomicU32::new(0);

fn ap_main(apic_id: u32) {
    ARRIVED.fetch_or(1 << (apic_id & 31), Ordering::SeqCst);
    REPORTS.fetch_add(1, Ordering::SeqCst);
}

fn main(_: &'static rt::multiboot::Info) {
    let Some(apic) = rt::apic::cpuid_apic().then(Apic::current).flatten() else {
        rt::skip!("no enabled local APIC to send the start-up IPIs with");
    };
    apic.enable();
    let logical = (rt::cpu::cpuid(1, 0).1 >> 16) & 0xff;
    if logical < 4 {
        rt::skip!("CPUID reports {logical} logical processors: the machine needs --smp 4");
    }
    check_eq!(
        smp::apic_id(),
        0u32,
        "the bootstrap processor has APIC ID 0"
    );
    let started = smp::start_aps(apic, 3, ap_main);
    check_eq!(started, 3u32, "3 APs started after INIT, SIPI, SIPI");
    rt::apic::spin_until(rt::apic::tsc_ticks_for_ms(1000), || {
        REPORTS.load(Ordering::SeqCst) >= 3
    });
    // A second start-up IPI reaching a running AP is ignored: nothing more arrives.
    rt::apic::spin_until(rt::apic::tsc_ticks_for_ms(20), || false);
    check_eq!(
        REPORTS.load(Ordering::SeqCst),
        3u32,
        "each AP reported once"
    );
    let arrived = ARRIVED.load(Ordering::SeqCst);
    check_eq!(arrived, 0b1110u32, "APIC IDs 1, 2 and 3 reported");
    check!(
        smp::aps_started() == 3,
        "no AP entered the trampoline twice"
    );
    println!("all 4 CPUs up");
}
