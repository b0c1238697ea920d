//! The ACPI PM registers through their ports (PM1a event block 0x600, PM1a control 0x604,
//! PM timer 0x608, GPE0 block), with interrupts off: the 24-bit PM timer's width,
//! monotonicity and rate (against PIT channel 2, as Linux's `verify_pmtmr_rate` checks
//! it), TMR_STS on the toggle of bit 23 and write-1-to-clear, PM1_EN, SLP_TYP without
//! SLP_EN, and the GPE0 status and enable registers.
//!
//! QEMU's PIIX4, the reference this guest also runs on, has its GPE0 block at 0xAFE0 and
//! accepts only dword accesses to the PM timer and word accesses to PM1; the byte-access
//! checks run only elsewhere.

#![no_std]
#![no_main]

use rt::apic::tsc_ticks_for_ms;
use rt::cpu::{inb, inl, inw, is_opsvisor, is_qemu_tcg, outb, outw, rdtsc};
use rt::{check, check_eq, check_quiet, println};

rt::entry!(main);

const PM1_STS: u16 = 0x600;
const PM1_EN: u16 = 0x602;
const PM1_CNT: u16 = 0x604;
const PM_TMR: u16 = 0x608;
const TMR_STS: u16 = 1 << 0;
const TMR_EN: u16 = 1 << 0;
const PWRBTN_EN: u16 = 1 << 8;
const SLP_TYP: u16 = 7 << 10;
const SLP_EN: u16 = 1 << 13;
const TIMER_MASK: u32 = 0x00ff_ffff;
const TOP_BIT: u32 = 1 << 23;
const PM_TIMER_HZ: u64 = 3_579_545;
const PIT_HZ: u64 = 1_193_182;

fn timer() -> u32 {
    inl(PM_TMR)
}

fn timed_out(start: u64, ms: u64) -> bool {
    rdtsc().wrapping_sub(start) > tsc_ticks_for_ms(ms)
}

fn main(_: &'static rt::multiboot::Info) {
    // QEMU's own machine, not opsvisor's PC on QEMU's CPU.
    let qemu = is_qemu_tcg() && !is_opsvisor();
    let gpe0: u16 = if qemu { 0xafe0 } else { 0x620 };

    // The timer: 24 bits, moving, never backwards.
    let first = timer();
    check_eq!(
        first & !TIMER_MASK,
        0,
        "PM timer: bits 31-24 read 0 (24-bit timer)"
    );
    let mut reads = 0;
    while timer() == first {
        reads += 1;
        check_quiet!(reads < 10_000, "PM timer changes within 10000 reads");
    }
    let mut last = timer();
    for _ in 0..2000 {
        let now = timer();
        let delta = now.wrapping_sub(last) & TIMER_MASK;
        check_quiet!(
            delta < TOP_BIT,
            "PM timer never goes backwards ({:#x} after {:#x})",
            now,
            last
        );
        last = now;
    }
    println!("ok: PM timer monotonic over 2000 reads");
    if !qemu {
        // A dword read at once equals its bytes read at once only if no tick comes
        // between; the top byte is always 0.
        check_eq!(inb(PM_TMR + 3), 0, "PM timer: a byte read of bits 31-24");
        check_eq!(
            inw(PM_TMR + 2) >> 8,
            0,
            "PM timer: a word read of bits 31-16"
        );
    }

    // verify_pmtmr_rate: PIT channel 2 in mode 0 counting 0xffff clocks, OUT through port
    // 0x61 bit 5; the PM timer must count 3.579545 MHz within 5% meanwhile. The end is
    // bracketed by the PM timer at the last poll that saw OUT low and at the first that
    // saw it high, so that a host stalling the guest cannot fail it.
    outb(0x61, (inb(0x61) & !0x02) | 0x01);
    outb(0x43, 0xb0);
    outb(0x42, 0xff);
    let before_write = timer();
    outb(0x42, 0xff);
    let written = timer();
    let start = rdtsc();
    let mut low_seen = written;
    let high_seen = loop {
        let before = timer();
        if inb(0x61) & 0x20 != 0 {
            break timer();
        }
        low_seen = before;
        check_quiet!(!timed_out(start, 2000), "PIT channel 2 counts down");
    };
    let ticks = |from: u32, to: u32| u64::from(to.wrapping_sub(from) & TIMER_MASK);
    let expected = PM_TIMER_HZ * 0x1_0000 / PIT_HZ;
    check!(
        ticks(before_write, high_seen) * 20 >= expected * 19
            && ticks(written, low_seen) * 20 <= expected * 21,
        "PM timer rate: the PIT's 0xffff clocks ended between {} and {} PM timer ticks (expected {})",
        ticks(written, low_seen),
        ticks(before_write, high_seen),
        expected
    );

    // TMR_STS: clear it, then it stays clear until bit 23 toggles, and is set after.
    let mut base = 0;
    let mut cleared = false;
    for _ in 0..3 {
        outw(PM1_STS, TMR_STS);
        base = timer();
        if inw(PM1_STS) & TMR_STS == 0 {
            cleared = true;
            break;
        }
    }
    check!(cleared, "TMR_STS clears when 1 is written to it");
    let start = rdtsc();
    let mut early = false;
    loop {
        check_quiet!(
            !timed_out(start, 5000),
            "bit 23 of the PM timer toggles within 2.35 s"
        );
        let status = inw(PM1_STS);
        let now = timer();
        let toggled = (now ^ base) & TOP_BIT != 0;
        early |= status & TMR_STS != 0 && !toggled;
        if toggled {
            break;
        }
    }
    check!(!early, "TMR_STS stayed clear until bit 23 toggled");
    check_eq!(
        inw(PM1_STS) & TMR_STS,
        TMR_STS,
        "TMR_STS set by the toggle of bit 23"
    );
    outw(PM1_STS, 0);
    check_eq!(
        inw(PM1_STS) & TMR_STS,
        TMR_STS,
        "writing 0 leaves TMR_STS set"
    );
    outw(PM1_STS, TMR_STS);
    check_eq!(inw(PM1_STS) & TMR_STS, 0, "writing 1 clears TMR_STS");

    // PM1_EN holds its enables.
    outw(PM1_EN, TMR_EN | PWRBTN_EN);
    check_eq!(
        inw(PM1_EN) & (TMR_EN | PWRBTN_EN),
        TMR_EN | PWRBTN_EN,
        "PM1_EN: TMR_EN and PWRBTN_EN"
    );
    if !qemu {
        outb(PM1_EN + 1, 0);
        check_eq!(
            inw(PM1_EN),
            TMR_EN,
            "PM1_EN: a byte write changes only its byte"
        );
    }
    outw(PM1_EN, 0);
    check_eq!(inw(PM1_EN), 0, "PM1_EN cleared");

    // PM1_CNT: SLP_TYP is stored, SLP_EN reads 0, SCI_EN is whatever the firmware left.
    let control = inw(PM1_CNT);
    println!("PM1_CNT = {:#x} (SCI_EN {})", control, control & 1);
    outw(PM1_CNT, (control & !SLP_TYP) | 5 << 10);
    check_eq!(
        inw(PM1_CNT) & (SLP_TYP | SLP_EN),
        5 << 10,
        "PM1_CNT: SLP_TYP 5 stored, no sleep"
    );
    outw(PM1_CNT, control);
    check_eq!(inw(PM1_CNT), control, "PM1_CNT restored");

    // GPE0: no events pending; the enables hold what is written, byte by byte.
    check_eq!(inw(gpe0), 0, "GPE0_STS: no events");
    outw(gpe0 + 2, 0x00ff);
    check_eq!(inw(gpe0 + 2), 0x00ff, "GPE0_EN holds its enables");
    outb(gpe0 + 2, 0x0f);
    check_eq!(inw(gpe0 + 2), 0x000f, "GPE0_EN: a byte write");
    outw(gpe0 + 2, 0);
    outw(gpe0, 0xffff);
    check_eq!(
        inw(gpe0),
        0,
        "GPE0_STS: write 1 to clear leaves nothing set"
    );
}
