//! IPI ping-pong between two vCPUs (`--smp 2`): the bootstrap processor sends fixed IPIs
//! (vector 0x60, physical destination) to the AP, whose handler answers each with a fixed
//! IPI (vector 0x61) to APIC ID 0; 100 round trips, each waited for, and the counts on
//! both sides must be exactly 100.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};
use rt::apic::SharedApic;
use rt::{check_eq, smp};

rt::entry!(main);

const PING: u8 = 0x60;
const PONG: u8 = 0x61;
const ROUNDS: u32 = 100;

static APIC: SharedApic = SharedApic::new();
static AP_ID: AtomicU32 = AtomicU32::new(u32::MAX);
static PINGS: AtomicU32 = AtomicU32::new(0);
static PONGS: AtomicU32 = AtomicU32::new(0);

fn ping_handler(_: &mut rt::Frame) {
    PINGS.fetch_add(1, Ordering::SeqCst);
    let apic = APIC.get();
    smp::send_ipi(apic, 0, u32::from(PONG));
    apic.eoi();
}

fn pong_handler(_: &mut rt::Frame) {
    PONGS.fetch_add(1, Ordering::SeqCst);
    APIC.get().eoi();
}

fn ap_main(apic_id: u32) {
    APIC.get().enable();
    AP_ID.store(apic_id, Ordering::SeqCst);
    loop {
        rt::cpu::sti_hlt();
    }
}

fn main(_: &'static rt::multiboot::Info) {
    let apic = rt::apic::enable_for_irq(&APIC, "IPIs");
    rt::interrupts::set_handler(PING, ping_handler);
    rt::interrupts::set_handler(PONG, pong_handler);
    if (rt::cpu::cpuid(1, 0).1 >> 16) & 0xff < 2 {
        rt::skip!("one logical processor: the machine needs --smp 2");
    }
    check_eq!(smp::start_aps(apic, 1, ap_main), 1u32, "the AP started");
    rt::apic::spin_until(rt::apic::tsc_ticks_for_ms(1000), || {
        AP_ID.load(Ordering::SeqCst) != u32::MAX
    });
    let ap = AP_ID.load(Ordering::SeqCst);
    check_eq!(ap, 1u32, "the AP reported APIC ID 1");
    let mut answered = 0;
    for round in 1..=ROUNDS {
        smp::send_ipi(apic, ap, u32::from(PING));
        rt::cpu::sti();
        rt::apic::spin_until(rt::apic::tsc_ticks_for_ms(500), || {
            PONGS.load(Ordering::SeqCst) >= round
        });
        rt::cpu::cli();
        if PONGS.load(Ordering::SeqCst) == round {
            answered = round;
        } else {
            break;
        }
    }
    check_eq!(
        answered,
        ROUNDS,
        "every ping answered before the next was sent"
    );
    rt::irq::window(u32::MAX, 20, 0);
    check_eq!(
        (PINGS.load(Ordering::SeqCst), PONGS.load(Ordering::SeqCst)),
        (ROUNDS, ROUNDS),
        "100 pings and 100 pongs"
    );
}
