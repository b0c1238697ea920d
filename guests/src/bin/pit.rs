//! The 8254 PIT through its ports (0x40-0x43) and port 0x61, with interrupts off: channel
//! 2 counted down in mode 0 with its OUT polled through port 0x61 bit 5 the way Linux and
//! SeaBIOS calibrate the TSC, timed against channel 0 running as a free 65536-clock
//! counter; unlatched, latched and read-back reads; BCD counting; the gate through port
//! 0x61 (mode 1 retriggered, mode 0 stopped); mode 3's square wave; channel 0 in modes 2
//! and 4 as Linux's tick uses it.

#![no_std]
#![no_main]

use rt::apic::tsc_ticks_for_ms;
use rt::cpu::{inb, outb, rdtsc};
use rt::{check, check_eq, check_or_tcg, check_quiet, println};

rt::entry!(main);

const MODE: u16 = 0x43;
const PORT_B: u16 = 0x61;
const GATE2: u8 = 0x01;
const SPEAKER: u8 = 0x02;
const OUT2: u8 = 0x20;

fn data_port(channel: u8) -> u16 {
    0x40 + u16::from(channel)
}

/// A control word and a two-byte count.
fn program(channel: u8, control: u8, count: u16) {
    outb(MODE, control);
    outb(data_port(channel), count as u8);
    outb(data_port(channel), (count >> 8) as u8);
}

/// Read a 16-bit count (latched or not) LSB first.
fn read16(channel: u8) -> u16 {
    let lo = inb(data_port(channel));
    u16::from(lo) | u16::from(inb(data_port(channel))) << 8
}

/// Counter latch command, then the latched count.
fn latch(channel: u8) -> u16 {
    outb(MODE, channel << 6);
    read16(channel)
}

/// Read-back command for the status alone.
fn status(channel: u8) -> u8 {
    outb(MODE, 0xe0 | 2 << channel);
    inb(data_port(channel))
}

fn out2() -> bool {
    inb(PORT_B) & OUT2 != 0
}

fn set_gate2(level: bool) {
    let b = inb(PORT_B) & !(GATE2 | SPEAKER);
    outb(PORT_B, b | if level { GATE2 } else { 0 });
}

/// Wait until the count written to `channel` has been loaded (read-back null count 0).
fn wait_loaded(channel: u8) {
    let give_up = rdtsc() + tsc_ticks_for_ms(1000);
    while status(channel) & 0x40 != 0 {
        check_quiet!(rdtsc() < give_up, "channel {} loads its count", channel);
    }
}

/// PIT clocks elapsed, from channel 0 in mode 2 with count 0 (65536): `now` must be called
/// less than 55 ms apart.
struct Clock {
    last: u16,
    total: u64,
}

impl Clock {
    fn start() -> Clock {
        program(0, 0x34, 0);
        wait_loaded(0);
        Clock {
            last: latch(0),
            total: 0,
        }
    }

    fn now(&mut self) -> u64 {
        self.advance(latch(0))
    }

    /// The time at which channel 0 read `count` (latched by the caller).
    fn advance(&mut self, count: u16) -> u64 {
        self.total += u64::from(self.last.wrapping_sub(count));
        self.last = count;
        self.total
    }

    /// Spin for at least `clocks` PIT clocks.
    fn wait(&mut self, clocks: u64) {
        let end = self.now() + clocks;
        while self.now() < end {}
    }
}

/// Channel 0's clock and channel 2's status and count, latched at one instant by one
/// read-back command (so a host stalling the guest between snapshots cannot skew them).
fn snapshot(clock: &mut Clock) -> (u64, u8, u16) {
    outb(MODE, 0xca);
    let _ = inb(data_port(0));
    let t = clock.advance(read16(0));
    let status = inb(data_port(2));
    (t, status, read16(2))
}

/// How far a quantity that should stay constant (modulo `modulus`) strayed from its first
/// value over several snapshots.
struct Drift {
    modulus: u64,
    first: Option<u64>,
    snapshots: u32,
    /// Snapshots more than 2 clocks off.
    skewed: u32,
    /// Snapshots more than 50 clocks off.
    far: u32,
}

impl Drift {
    fn new(modulus: u64) -> Drift {
        Drift {
            modulus,
            first: None,
            snapshots: 0,
            skewed: 0,
            far: 0,
        }
    }

    fn add(&mut self, value: u64) {
        let value = value % self.modulus;
        let first = *self.first.get_or_insert(value);
        let off = value
            .abs_diff(first)
            .min(self.modulus - value.abs_diff(first));
        self.snapshots += 1;
        self.skewed += u32::from(off > 2);
        self.far += u32::from(off > 50);
    }

    /// Check it: strictly (QEMU latches each channel of a read-back at its own instant,
    /// and the host can stall it in between: there, 1% may be off by more than 50).
    fn check(&self, what: &str) {
        check!(
            self.snapshots > 0 && self.far <= self.snapshots / 100,
            "{} ({} snapshots, {} off)",
            what,
            self.snapshots,
            self.far
        );
        check_or_tcg!(
            self.skewed == 0,
            "QEMU's read-back latches each channel at its own instant",
            "{}: within 2 clocks in every snapshot ({} not)",
            what,
            self.skewed
        );
    }
}

fn is_bcd(v: u16) -> bool {
    (0..4).all(|i| (v >> (4 * i)) & 0xf <= 9)
}

fn bcd_value(v: u16) -> u32 {
    (0..4)
        .map(|i| u32::from((v >> (4 * i)) & 0xf) * 10u32.pow(i))
        .sum()
}

fn main(_: &'static rt::multiboot::Info) {
    // pit_calibrate_tsc's prologue: gate 2 on, speaker off.
    let b = inb(PORT_B);
    outb(PORT_B, (b & !SPEAKER) | GATE2);
    check_eq!(
        inb(PORT_B) & 0x03,
        GATE2,
        "port 0x61: channel 2 gate on, speaker off"
    );
    check_eq!(inb(PORT_B) & 0xc0, 0, "port 0x61: no NMI source reports");

    println!("TSC frequency from CPUID: {:?}", rt::apic::tsc_hz());
    let mut clock = Clock::start();
    check_eq!(
        status(0) & 0x3f,
        0x34,
        "channel 0 status: LSB/MSB, mode 2, binary"
    );

    // Mode 0 on channel 2, as Linux's pit_calibrate_tsc and SeaBIOS program it: OUT2
    // rises N + 1 clocks after the count is written (N on QEMU, which loads at once). The
    // rise is bracketed by channel 0's time at the last poll that saw OUT2 low and at the
    // first that saw it high: a host that stalls the guest widens the bracket, but cannot
    // move it.
    const N: u16 = 0xc000;
    let t0 = clock.now();
    program(2, 0xb0, N);
    let written = clock.now();
    check!(!out2(), "mode 0: OUT2 low once the count is written");
    wait_loaded(2);
    let mut last = N;
    let mut monotonic = true;
    let mut polls = 0u32;
    let mut low_seen = written;
    let give_up = rdtsc() + tsc_ticks_for_ms(3000);
    let high_seen = loop {
        let before = clock.now();
        if out2() {
            break clock.now();
        }
        low_seen = before;
        // Status and count latched together: while that status says OUT low, the count
        // has not reached zero (after it, mode 0 runs on from 0xffff).
        outb(MODE, 0xc8);
        let st = inb(data_port(2));
        let c = read16(2);
        if st & 0x80 == 0 {
            monotonic &= c <= last;
            last = c;
        }
        polls += 1;
        check_quiet!(
            rdtsc() < give_up,
            "OUT2 rises ({} polls, count {:#x})",
            polls,
            c
        );
    };
    println!(
        "mode 0: OUT2 rose between {} and {} PIT clocks after the write began ({} polls)",
        low_seen - t0,
        high_seen - t0,
        polls
    );
    check!(monotonic, "mode 0: the latched count only goes down");
    check!(
        high_seen - t0 >= u64::from(N) && low_seen <= written + u64::from(N) + 2,
        "mode 0: OUT2 rose N + 1 clocks after the write, as channel 0 counts them"
    );
    check_eq!(
        status(2) & 0xbf,
        0xb0,
        "channel 2 status: OUT high, LSB/MSB, mode 0"
    );

    // Read-back of status and count together: the status comes first.
    outb(MODE, 0xc8);
    let st = inb(data_port(2));
    let latched = read16(2);
    check_eq!(
        st & 0xbf,
        0xb0,
        "read-back of status and count: status first"
    );
    // Past terminal count mode 0 keeps counting down from 0xffff.
    let next = latch(2);
    check!(
        latched.wrapping_sub(next) < 0x8000,
        "read-back count {:#x}, then {:#x}: the count runs on down past zero",
        latched,
        next
    );

    // A latch holds its value until it is read; a second latch before then is ignored.
    program(2, 0xb0, 0xffff);
    wait_loaded(2);
    outb(MODE, 0x80);
    clock.wait(600);
    outb(MODE, 0x80);
    let held = read16(2);
    let fresh = latch(2);
    check!(
        (500..0x8000).contains(&held.wrapping_sub(fresh)),
        "a latch holds the count of its time ({:#x}, now {:#x})",
        held,
        fresh
    );

    // quick_pit_calibrate: unlatched LSB-then-MSB reads of a mode-0 count from 0xffff.
    // The two bytes are read at different times, so only the MSB is monotonic (which is
    // why Linux looks at it alone): it steps down once every 256 clocks.
    program(2, 0xb0, 0xffff);
    wait_loaded(2);
    let mut last_msb = 0xff;
    let mut steps = 0;
    let give_up = rdtsc() + tsc_ticks_for_ms(2000);
    while steps < 8 && rdtsc() < give_up {
        let msb = (read16(2) >> 8) as u8;
        if msb > last_msb {
            // Only past terminal count, i.e. after a host stall of 55 ms: start again.
            check_quiet!(
                status(2) & 0x80 != 0,
                "unlatched reads: the MSB went up ({:#x} after {:#x}) before terminal count",
                msb,
                last_msb
            );
            program(2, 0xb0, 0xffff);
            wait_loaded(2);
            last_msb = 0xff;
            continue;
        }
        if msb < last_msb {
            steps += 1;
        }
        last_msb = msb;
    }
    check!(
        steps >= 8,
        "unlatched reads follow the counter (the MSB stepped {} times)",
        steps
    );

    // BCD: mode 0, count 9999: every count reads as BCD, going down until terminal count
    // (read-back of status and count together says which side of it a count is on).
    let mut last = 9999;
    let mut all_bcd = true;
    let mut down = true;
    for _ in 0..10 {
        program(2, 0xb1, 0x9999);
        wait_loaded(2);
        for _ in 0..200 {
            outb(MODE, 0xc8);
            let st = inb(data_port(2));
            let c = read16(2);
            all_bcd &= is_bcd(c);
            if st & 0x80 != 0 {
                break;
            }
            down &= bcd_value(c) <= last;
            last = bcd_value(c);
        }
        if last < 9999 {
            break; // counts were seen before terminal count
        }
    }
    check_or_tcg!(
        all_bcd && down && last < 9999,
        "QEMU's i8254 counts in binary in BCD mode",
        "BCD counting (last count {})",
        last
    );

    // Mode 1: a rising gate triggers a one-shot of 3000 clocks: the count runs down from
    // 3000 (and on past 0), OUT low until it reaches 0. In snapshots, channel 2's count
    // plus channel 0's clock stays constant, and OUT is low exactly while the count is in
    // 1..=3000. A guest stalled through a whole one-shot triggers another.
    program(2, 0xb2, 3000);
    let mut drift = Drift::new(0x1_0000);
    let (mut lows, mut highs, mut wrong) = (0u32, 0u32, 0u32);
    let mut shots = 0;
    while lows == 0 && shots < 10 {
        shots += 1;
        set_gate2(false);
        set_gate2(true);
        let triggered = clock.now();
        drift = Drift::new(0x1_0000);
        (highs, wrong) = (0, 0);
        // Until some snapshots after the one-shot, and before the count, running on from
        // 0xffff, comes back below 3000.
        loop {
            let (t, status, count) = snapshot(&mut clock);
            if t <= triggered + 2 {
                continue; // the count loads on the clock after the trigger
            }
            drift.add(t + u64::from(count));
            let low = status & 0x80 == 0;
            wrong += u32::from(low != (1..=3000).contains(&count));
            if low {
                lows += 1;
            } else {
                highs += 1;
            }
            if (t > triggered + 6000 && highs > 0) || t > triggered + 60_000 {
                break;
            }
        }
    }
    drift.check("mode 1: the count runs down one per clock from the trigger");
    check_or_tcg!(
        lows > 0 && highs > 0 && wrong == 0,
        "QEMU's i8254 drives OUT high during a mode-1 one-shot and low after it",
        "mode 1: OUT2 low while the one-shot counts, high after ({} low, {} high, {} wrong)",
        lows,
        highs,
        wrong
    );

    // Mode 0 with the gate low: counting stops.
    program(2, 0xb0, 0xffff);
    wait_loaded(2);
    set_gate2(false);
    let stopped = latch(2);
    clock.wait(2000);
    let still = latch(2);
    check_or_tcg!(
        still == stopped,
        "QEMU's i8254 ignores GATE in mode 0",
        "mode 0: gate low holds the count ({:#x}, {:#x})",
        stopped,
        still
    );
    set_gate2(true);
    clock.wait(200);
    check!(latch(2) < still, "mode 0: gate high resumes counting");

    // Mode 3 square wave on channel 2, N = 20000: OUT2 high for 10000 clocks, low for
    // 10000, the count stepping 20000, 19998, ..., 2 in each half. One read-back command
    // latches channel 0's count and channel 2's status and count at the same instant, so
    // channel 2's phase in its period, (OUT ? 0 : 10000) + (20000 - count) / 2, must trail
    // channel 0's clock by the same amount modulo 20000 in every snapshot, however long
    // the host stalls the guest between snapshots.
    program(2, 0xb6, 20_000);
    wait_loaded(2);
    let mut drift = Drift::new(20_000);
    let mut levels = [false; 2];
    let mut invalid = 0u32;
    let end = clock.now() + 60_000;
    loop {
        let (t, status, count) = snapshot(&mut clock);
        let high = status & 0x80 != 0;
        levels[usize::from(high)] = true;
        if count % 2 != 0 || !(2..=20_000).contains(&count) {
            invalid += 1;
        }
        let half_start: u64 = if high { 0 } else { 10_000 };
        let phase = half_start + u64::from(20_000 - count.min(20_000)) / 2;
        drift.add(t + 20_000 - phase % 20_000);
        if t >= end {
            break;
        }
    }
    check!(levels[0] && levels[1], "mode 3: OUT2 seen high and low");
    check_eq!(invalid, 0, "mode 3: every count is even, 2..=20000");
    drift.check("mode 3: OUT2 rises every 20000 clocks and stays high for 10000");

    // Channel 0 in Linux's one-shot mode 4: OUT high at once.
    program(0, 0x38, 5000);
    let st = status(0);
    check_eq!(st & 0x3f, 0x38, "mode 4: LSB/MSB, mode 4");
    check_or_tcg!(
        st & 0x80 != 0,
        "QEMU's i8254 strobes OUT high in modes 4 and 5",
        "mode 4: OUT0 high until the strobe"
    );
    // And its periodic mode 2 with LATCH for HZ=1000: the count stays within 1..=N.
    program(0, 0x34, 1193);
    wait_loaded(0);
    let mut in_range = true;
    let mut lowest = u16::MAX;
    for _ in 0..500 {
        let c = latch(0);
        in_range &= (1..=1193).contains(&c);
        lowest = lowest.min(c);
    }
    check!(
        in_range,
        "mode 2: the count stays in 1..=1193 (lowest {})",
        lowest
    );
}
