//! The MC146818 CMOS RTC through ports 0x70/0x71, with interrupts off (flags polled in
//! register C): the state a BIOS leaves, the time read the way Linux's
//! `mc146818_get_time` reads it, UIP before each update, the periodic rate, binary and
//! 12-hour formats, setting the clock the way `mc146818_set_time` does, the alarm with
//! and without "don't care" values, CMOS memory behind an index with the NMI-mask bit, and
//! the memory-size bytes and checksum.

#![no_std]
#![no_main]

use rt::apic::tsc_ticks_for_ms;
use rt::cpu::{inb, outb, rdtsc};
use rt::{check, check_eq, check_or_tcg, println};

rt::entry!(main);

const INDEX: u16 = 0x70;
const DATA: u16 = 0x71;
const REG_A: u8 = 0x0a;
const REG_B: u8 = 0x0b;
const REG_C: u8 = 0x0c;
const REG_D: u8 = 0x0d;
const UIP: u8 = 0x80;
const PF: u8 = 0x40;
const AF: u8 = 0x20;
const UF: u8 = 0x10;

fn read(index: u8) -> u8 {
    outb(INDEX, index);
    inb(DATA)
}

fn write(index: u8, value: u8) {
    outb(INDEX, index);
    outb(DATA, value);
}

fn is_bcd(v: u8) -> bool {
    v >> 4 <= 9 && v & 0xf <= 9
}

fn from_bcd(v: u8) -> u8 {
    (v >> 4) * 10 + (v & 0xf)
}

fn to_bcd(v: u8) -> u8 {
    ((v / 10) << 4) | (v % 10)
}

/// Fail if `start` (a TSC value) is more than `ms` milliseconds ago (silent otherwise:
/// it runs in polling loops).
fn deadline(start: u64, ms: u64, what: &str) {
    if rdtsc().wrapping_sub(start) > tsc_ticks_for_ms(ms) {
        println!("FAIL: timed out: {}", what);
        rt::exit(rt::EXIT_FAIL);
    }
}

/// Seconds, minutes, hours, day of month, month, year, century, read as Linux does: the
/// seconds, UIP clear, the seconds again, the rest, UIP still clear, seconds unchanged.
fn read_time() -> [u8; 7] {
    let start = rdtsc();
    loop {
        deadline(start, 3000, "the clock gives a stable reading");
        let sec = read(0);
        if read(REG_A) & UIP != 0 || read(0) != sec {
            continue;
        }
        let time = [sec, read(2), read(4), read(7), read(8), read(9), read(0x32)];
        if read(REG_A) & UIP != 0 || read(0) != sec {
            continue;
        }
        return time;
    }
}

/// Clear register C, then poll it until an update ends; returns how many reads saw PF.
fn wait_update() -> u32 {
    read(REG_C);
    outb(INDEX, REG_C);
    let start = rdtsc();
    let mut periodic = 0;
    loop {
        deadline(start, 2500, "an update ends within a second");
        let c = inb(DATA);
        if c & PF != 0 {
            periodic += 1;
        }
        if c & UF != 0 {
            return periodic;
        }
    }
}

/// Poll register C until an update ends; returns its value then.
fn next_update_flags() -> u8 {
    outb(INDEX, REG_C);
    let start = rdtsc();
    loop {
        deadline(start, 2500, "an update ends within a second");
        let c = inb(DATA);
        if c & UF != 0 {
            return c;
        }
    }
}

fn main(info: &'static rt::multiboot::Info) {
    // As a BIOS leaves it.
    let a = read(REG_A);
    check_eq!(a & 0x70, 0x20, "register A: divider running on 32.768 kHz");
    let b = read(REG_B);
    check_eq!(b & 0x87, 0x02, "register B: clock running, BCD, 24-hour");
    check_eq!(read(REG_D) & 0x80, 0x80, "register D: VRT (battery good)");
    write(REG_B, b & !0x70);
    // With the periodic rate off PF stays clear; UF comes once a second, so a busy host
    // can let one arrive between the two reads: it is not part of the check.
    write(REG_A, a & 0xf0);
    read(REG_C);
    check_eq!(read(REG_C) & 0xe0, 0, "register C reads 0 after a read");
    write(REG_A, a);

    let time = read_time();
    println!(
        "time {:02x}{:02x}-{:02x}-{:02x} {:02x}:{:02x}:{:02x}",
        time[6], time[5], time[4], time[3], time[2], time[1], time[0]
    );
    check!(time.iter().all(|&v| is_bcd(v)), "every field is BCD");
    check!(
        time[0] < 0x60 && time[1] < 0x60 && time[2] < 0x24,
        "time of day in range"
    );
    check!(
        (0x01..=0x31).contains(&time[3]) && (0x01..=0x12).contains(&time[4]),
        "date in range"
    );

    // UIP rises before each update and the seconds step by one when it falls. The old
    // seconds count only if UIP was still set after reading them (a host stall can hide
    // the whole window); then try the next second.
    let mut stepped = None;
    for _ in 0..20 {
        outb(INDEX, REG_A);
        let start = rdtsc();
        let mut seen = true;
        while inb(DATA) & UIP == 0 {
            if rdtsc().wrapping_sub(start) > tsc_ticks_for_ms(1200) {
                seen = false;
                break;
            }
        }
        if !seen {
            println!("no UIP seen within a second (the host stalled the guest through it)");
            continue;
        }
        let old = read(0);
        if read(REG_A) & UIP == 0 {
            continue;
        }
        outb(INDEX, REG_A);
        while inb(DATA) & UIP != 0 {
            deadline(start, 3000, "UIP falls again");
        }
        stepped = Some((old, read(0)));
        break;
    }
    check!(stepped.is_some(), "UIP seen before an update");
    let (before, after) = stepped.unwrap_or_default();
    check_or_tcg!(
        after == to_bcd((from_bcd(before) + 1) % 60),
        "QEMU's RTC can show the old second just after UIP falls",
        "the seconds stepped by one when UIP fell ({:#x} to {:#x})",
        before,
        after
    );

    // The periodic rate: 16 Hz (RS = 12) counted between two updates. (PIE is set
    // because QEMU sets PF only then; interrupts stay off.)
    write(REG_A, 0x2c);
    write(REG_B, 0x42);
    wait_update();
    let periodic = wait_update();
    check!(
        (15..=17).contains(&periodic),
        "16 Hz periodic rate: {} periodic flags in one second",
        periodic
    );

    // Binary and 12-hour formats show the same time.
    write(REG_B, 0x02);
    let mut agreed = false;
    for _ in 0..3 {
        let bcd = read_time();
        write(REG_B, 0x06);
        let binary = read_time();
        write(REG_B, 0x04);
        let twelve = read_time();
        write(REG_B, 0x02);
        let hour = from_bcd(bcd[2]);
        let pm = if hour >= 12 { 0x80 } else { 0 };
        let h12 = match hour % 12 {
            0 => 12,
            h => h,
        } | pm;
        let same = binary[0] == from_bcd(bcd[0]) && binary[0] == twelve[0];
        if !same {
            continue; // an update came between the readings
        }
        check_eq!(
            [binary[1], binary[2], binary[3], binary[4], binary[5]],
            [
                from_bcd(bcd[1]),
                hour,
                from_bcd(bcd[3]),
                from_bcd(bcd[4]),
                from_bcd(bcd[5])
            ],
            "binary mode shows the same time"
        );
        check_eq!(twelve[2], h12, "12-hour mode: hour {} is {:#x}", hour, h12);
        agreed = true;
        break;
    }
    check!(agreed, "the formats were compared within one second");

    // Setting the clock as Linux does: SET, divider reset, the fields, B and A restored.
    // While SET alone stops the clock the registers keep what was written.
    let b = read(REG_B);
    write(REG_B, b | 0x80);
    for (index, value) in [
        (9, 0x31),
        (8, 0x07),
        (7, 0x04),
        (4, 0x12),
        (2, 0x34),
        (0, 0x56),
        (0x32, 0x20),
    ] {
        write(index, value);
    }
    write(REG_B, b | 0xc0);
    outb(INDEX, REG_C);
    let mut flags = 0;
    let start = rdtsc();
    while flags < 20 {
        deadline(start, 4000, "periodic flags while SET");
        if inb(DATA) & PF != 0 {
            flags += 1;
        }
    }
    check_eq!(read(0), 0x56, "SET: the clock stood still for 1.25 s");
    let a = read(REG_A);
    write(REG_A, a | 0x60);
    write(REG_B, b);
    write(REG_A, a);
    let set = read_time();
    check_eq!(
        [set[1], set[2], set[3], set[4], set[5], set[6]],
        [0x34, 0x12, 0x04, 0x07, 0x31, 0x20],
        "the clock reads 2031-07-04 12:34"
    );
    check_eq!(
        set[0],
        0x56,
        "no update within 500 ms of the divider restart"
    );
    wait_update();
    check_eq!(read(0), 0x57, "then the clock runs on");

    // The alarm: two seconds ahead, hours and minutes "don't care", set just after an
    // update so that the next one is a second away.
    write(3, 0xff);
    write(5, 0xc0);
    read(REG_C);
    next_update_flags();
    let now = read(0);
    write(1, to_bcd((from_bcd(now) + 2) % 60));
    write(REG_B, 0x22);
    read(REG_C);
    let first = next_update_flags();
    let second = next_update_flags();
    check!(
        first & AF == 0 && second & AF != 0,
        "the alarm matched at the second update ({:#x}, {:#x})",
        first,
        second
    );
    // All three "don't care": every update.
    write(1, 0xc5);
    check!(
        next_update_flags() & AF != 0,
        "don't-care alarm: every second"
    );
    check!(
        next_update_flags() & AF != 0,
        "don't-care alarm: and the next"
    );
    write(REG_B, 0x02);

    // CMOS memory behind the index port, with the NMI-mask bit set in the index.
    let saved: [u8; 8] = core::array::from_fn(|i| read(0x50 + i as u8));
    for i in 0..8u8 {
        write(0x80 | (0x50 + i), 0xa5 ^ i);
    }
    for i in 0..8u8 {
        check_eq!(
            read(0x50 + i),
            0xa5 ^ i,
            "CMOS byte {:#x} (NMI-masked index)",
            0x50 + i
        );
    }
    for (i, v) in saved.iter().enumerate() {
        write(0x50 + i as u8, *v);
    }
    read(REG_D);

    // Memory sizes and the checksum a BIOS leaves.
    let word = |at: u8| u32::from(read(at)) | (u32::from(read(at + 1)) << 8);
    check_eq!(word(0x15), 640, "base memory: 640 KiB");
    check_eq!(
        word(0x17),
        word(0x30),
        "extended memory at 0x17 and 0x30 agree"
    );
    let sum: u32 = (0x10..=0x2d).map(|i| u32::from(read(i))).sum();
    let stored = (u32::from(read(0x2e)) << 8) | u32::from(read(0x2f));
    check_or_tcg!(
        stored == sum & 0xffff,
        "QEMU's CMOS leaves the checksum bytes 0",
        "checksum of 0x10-0x2d at 0x2e/0x2f ({:#x}, computed {:#x})",
        stored,
        sum
    );
    if info.flags & rt::multiboot::FLAG_MEM != 0 {
        let upper = info.mem_upper;
        let extended = word(0x17);
        if upper >= 0xffff + 1024 {
            check_eq!(extended, 0xffff, "extended memory caps at 0xffff KiB");
        } else {
            check!(
                extended.abs_diff(upper) <= 1024,
                "extended memory {} KiB, the loader says {}",
                extended,
                upper
            );
        }
        let above_16m = word(0x34);
        let expected = (u64::from(upper) * 1024 + (1 << 20)).saturating_sub(16 << 20) >> 16;
        check!(
            u64::from(above_16m).abs_diff(expected) <= 16,
            "memory above 16 MiB: {} blocks of 64 KiB (about {} from the loader)",
            above_16m,
            expected
        );
    }
}
