//! The Intel 8254 programmable interval timer (PIT) at ports 0x40-0x43.
//!
//! Three 16-bit down-counters share a 1.193182 MHz input clock ([`PIT_HZ`]). On the PC,
//! channel 0's OUT drives ISA IRQ 0 (edge-triggered), channel 1 once timed DRAM refresh
//! (its OUT goes nowhere here), and channel 2's GATE and OUT are bits 0 and 5 of port
//! 0x61 ([`super::nmi_status_control`]), which is how Linux's `pit_calibrate_tsc` and
//! `quick_pit_calibrate` and SeaBIOS's TSC calibration time their loops. Channels 0 and 1
//! have their gates tied high.
//!
//! The behaviour follows the 8254 datasheet (Intel 231164):
//!
//! - **Control word** (port 0x43): channel select, access mode (LSB, MSB, LSB then MSB),
//!   mode 0-5 (6 and 7 are modes 2 and 3), BCD. Writing it resets the channel's control
//!   logic: OUT goes low in mode 0 and high in every other mode, the counting element
//!   holds its value until a count is written, any latched count or status and a
//!   half-written or half-read count are dropped, and null count is set.
//! - **Counter latch** (access bits 00) and **read-back** (channel bits 11; status byte
//!   OUT, null count, access, mode, BCD) commands. A latch is held until it is read in full
//!   or the channel is reprogrammed; a second latch before that is ignored; a latched
//!   status is read before a latched count.
//! - **Loading the count.** Modes 0 and 4 load a new count on the clock after it is
//!   written (the datasheet's "N + 1 clocks"); in mode 0 the first byte of a two-byte count
//!   stops the count and drives OUT low. Modes 2 and 3 load a count written while counting
//!   at the end of the current period (mode 2) or half-cycle (mode 3). Modes 1 and 5 load
//!   it on the next rising edge of GATE. Count 0 means 65536 (10000 in BCD); a BCD nibble
//!   above 9 counts with its binary weight, the sum taken modulo 10000.
//! - **Gate.** Low stops counting in modes 0, 2, 3 and 4 (and forces OUT high in 2 and
//!   3); a rising edge reloads the count in modes 1, 2, 3 and 5.
//! - **OUT.** Mode 0 low until terminal count, then high; mode 1 low from the trigger for N
//!   clocks; mode 2 low for the last clock of each N-clock period; mode 3 high for
//!   ceil(N/2) and low for floor(N/2) clocks, the count stepping by two; modes 4 and 5 low
//!   for the one clock after terminal count. The counts the datasheet calls illegal (1 in
//!   modes 2 and 3) keep OUT constant: low in mode 2, high in mode 3.
//!
//! **Time.** Every entry point takes `now`, nanoseconds on the machine clock, and first
//! brings the counters up to date. Input clock edge `k` happens at the first nanosecond
//! `t` with `t * PIT_HZ / 10^9 >= k` ([`clock_edges`]). Nothing is done per clock: counts,
//! OUT levels and OUT's rising edges are computed arithmetically from the clocks counted
//! since the count was loaded, so a huge step of `now` costs what a small one does.
//!
//! **Interrupt output.** OUT0 is IRQ 0, edge-triggered. [`Pit::take_irq_edges`] returns
//! how many rising edges OUT0 made since the last call (the run loop pulses IRQ 0 once if
//! it is non-zero: an edge-triggered input latches one request however many edges it
//! saw), and [`Pit::next_deadline`] is when the next one happens. A guest can program a
//! period of two clocks (1.7 µs); so that it cannot make the host wake for every tick,
//! [`Pit::next_deadline`] is never less than [`PIT_MIN_IRQ_INTERVAL_NS`] after the last
//! call that took edges. The counts and OUT levels the guest reads stay exact; only the
//! rate at which the host looks for interrupts is bounded (as KVM's PIT stretches short
//! periodic timers to its minimum period).
//!
//! **Power-on state.** [`Pit::new`] leaves the counters as a PC BIOS (SeaBIOS) hands them
//! to an operating system: channel 0 in mode 2 with count 0 (18.2 Hz), channels 1 and 2
//! in mode 3 with count 0, all LSB-then-MSB binary, channel 2's gate low.

/// First port of the PIT.
pub const PIT_BASE: u16 = 0x40;
/// Number of ports (0x40-0x43: channels 0, 1, 2, control word).
pub const PIT_PORTS: u16 = 4;
/// The input clock, Hz (the PC's 14.31818 MHz crystal divided by 12).
pub const PIT_HZ: u64 = 1_193_182;
/// The ISA IRQ that channel 0's OUT drives (edge-triggered, active high), a line of
/// `crate::vm::Vm::set_irq` (the I/O APIC sees it on pin 2).
pub const PIT_IRQ: u32 = 0;
/// The shortest time between two interrupt deadlines [`Pit::next_deadline`] reports after
/// edges were taken: 10 µs, the local APIC's `MIN_PERIODIC_TICKS`. The PIT's shortest
/// legal period is 2 clocks (1.68 µs); edges closer than this are taken together.
pub const PIT_MIN_IRQ_INTERVAL_NS: u64 = 10_000;

const NS_PER_SEC: u128 = 1_000_000_000;

/// Input clock edges from machine time 0 to `now` (nanoseconds).
pub fn clock_edges(now: u64) -> u64 {
    (u128::from(now) * u128::from(PIT_HZ) / NS_PER_SEC) as u64
}

/// The machine time (nanoseconds) of input clock edge `edge`: the first `t` with
/// `clock_edges(t) >= edge`, saturated to `u64::MAX`.
pub fn edge_time(edge: u64) -> u64 {
    let t = (u128::from(edge) * NS_PER_SEC).div_ceil(u128::from(PIT_HZ));
    u64::try_from(t).unwrap_or(u64::MAX)
}

/// How the data port reads and writes the 16-bit count (control word bits 5-4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Access {
    /// Least significant byte only (the MSB is 0).
    Lsb,
    /// Most significant byte only (the LSB is 0).
    Msb,
    /// LSB then MSB.
    Word,
}

impl Access {
    fn bits(self) -> u8 {
        match self {
            Access::Lsb => 1,
            Access::Msb => 2,
            Access::Word => 3,
        }
    }
}

/// One counter.
///
/// The counting element is described by the count `n` it was loaded with and the number
/// of clocks `d` it has counted since: `d` is `base_d` at edge `base_edge` and grows by one
/// per edge after it unless `paused` (gate low in modes 0, 2, 3, 4).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Channel {
    /// Control word bits 3-1 as written (0-7; 6 and 7 behave as 2 and 3).
    mode_bits: u8,
    bcd: bool,
    access: Access,
    gate: bool,
    /// The count register: the last complete count written.
    cr: u16,
    /// A count has been written since the last control word.
    cr_valid: bool,
    /// LSB-then-MSB access: the LSB written, waiting for its MSB.
    lsb_written: Option<u8>,
    /// LSB-then-MSB access: the next read returns the MSB.
    read_msb: bool,
    latched_count: Option<u16>,
    latched_status: Option<u8>,
    /// The count register holds a count not yet loaded into the counting element.
    null_count: bool,
    /// The counting element follows a loaded count (false from a control word, or the
    /// first byte of a mode-0 count, until the next load).
    counting: bool,
    /// The count loaded, in clocks: 1-65536 (binary) or 1-10000 (BCD).
    n: u32,
    base_edge: u64,
    base_d: u64,
    paused: bool,
    /// What the counting element reads while not counting (as the guest reads it).
    held_value: u16,
    /// The edge at which the count register is next loaded into the counting element.
    load_at: Option<u64>,
    /// The clocks counted that load starts at (non-zero when a mode-3 count takes effect
    /// at the start of a low half-cycle).
    load_phase: u64,
    /// The edge up to which the channel has been brought.
    synced: u64,
    /// OUT at edge `synced`.
    out: bool,
    /// Rising edges of OUT not yet taken.
    rising: u64,
}

impl Channel {
    /// A channel programmed with `mode`, LSB-then-MSB binary, count 0, loaded at `edge`.
    fn programmed(mode: u8, gate: bool, edge: u64) -> Channel {
        let mut ch = Channel {
            mode_bits: mode,
            bcd: false,
            access: Access::Word,
            gate,
            cr: 0,
            cr_valid: true,
            lsb_written: None,
            read_msb: false,
            latched_count: None,
            latched_status: None,
            null_count: true,
            counting: false,
            n: 0x1_0000,
            base_edge: edge,
            base_d: 0,
            paused: false,
            held_value: 0,
            load_at: None,
            load_phase: 0,
            synced: edge,
            out: mode != 0,
            rising: 0,
        };
        ch.load(edge);
        ch.rising = 0;
        ch
    }

    fn mode(&self) -> u8 {
        match self.mode_bits {
            6 => 2,
            7 => 3,
            m => m,
        }
    }

    fn modulus(&self) -> u64 {
        if self.bcd {
            10_000
        } else {
            0x1_0000
        }
    }

    /// The count register as a number of clocks.
    fn effective_count(&self) -> u32 {
        let v = if self.bcd {
            let c = u32::from(self.cr);
            ((c >> 12) * 1000 + ((c >> 8) & 0xf) * 100 + ((c >> 4) & 0xf) * 10 + (c & 0xf)) % 10_000
        } else {
            u32::from(self.cr)
        };
        if v == 0 {
            self.modulus() as u32
        } else {
            v
        }
    }

    /// Clocks counted at edge `e` (`e >= base_edge`).
    fn d_at(&self, e: u64) -> u64 {
        if self.paused {
            self.base_d
        } else {
            self.base_d.saturating_add(e.saturating_sub(self.base_edge))
        }
    }

    /// OUT after `d` clocks counted.
    fn level(&self, d: u64) -> bool {
        let n = u64::from(self.n);
        match self.mode() {
            0 | 1 => d >= n,
            2 => self.paused || d % n != n - 1,
            3 => self.paused || d % n < n.div_ceil(2),
            _ => d != n,
        }
    }

    /// The counting element after `d` clocks counted, as a number below the modulus.
    fn count_after(&self, d: u64) -> u64 {
        let n = u64::from(self.n);
        let m = self.modulus();
        let v = match self.mode() {
            2 => n - d % n,
            3 => {
                // Steps of two from n (even) or n - 1 (odd), restarting at each half-cycle.
                let half = n.div_ceil(2);
                let p = d % n;
                let q = if p < half { p } else { p - half };
                (n & !1) - 2 * q
            }
            _ => (n % m + m - d % m) % m,
        };
        v % m
    }

    /// Rising edges of OUT while the counted clocks go from `a` to `b`.
    fn rising_between(&self, a: u64, b: u64) -> u64 {
        if b <= a {
            return 0;
        }
        let n = u64::from(self.n);
        match self.mode() {
            0 | 1 => u64::from(a < n && n <= b),
            4 | 5 => u64::from(a <= n && n < b),
            // Modes 2 and 3 rise at the start of every period.
            _ if n >= 2 => b / n - a / n,
            _ => 0,
        }
    }

    /// The edge after `synced` at which OUT next rises, if the loaded count goes on
    /// unchanged.
    fn counting_next_rising(&self) -> Option<u64> {
        if !self.counting || self.paused {
            return None;
        }
        let n = u64::from(self.n);
        let d = self.d_at(self.synced);
        let next = match self.mode() {
            0 | 1 => (d < n).then_some(n),
            4 | 5 => (d <= n).then_some(n + 1),
            _ if n >= 2 => Some((d / n + 1) * n),
            _ => None,
        }?;
        Some(self.base_edge.saturating_add(next - self.base_d))
    }

    /// The edge after `synced` at which OUT next rises.
    fn next_rising_edge(&self) -> Option<u64> {
        let next = self.counting_next_rising();
        let Some(load) = self.load_at else {
            return next;
        };
        if let Some(edge) = next.filter(|&edge| edge < load) {
            return Some(edge);
        }
        let mut after = self.clone();
        after.rising = 0;
        after.sync(load);
        if after.rising > 0 {
            Some(load)
        } else {
            after.counting_next_rising()
        }
    }

    fn set_out(&mut self, level: bool) {
        if level && !self.out {
            self.rising = self.rising.saturating_add(1);
        }
        self.out = level;
    }

    /// Count up to edge `e`, with the current count and gate.
    fn advance(&mut self, e: u64) {
        if e <= self.synced {
            return;
        }
        if self.counting {
            let a = self.d_at(self.synced);
            let b = self.d_at(e);
            self.rising = self.rising.saturating_add(self.rising_between(a, b));
            self.out = self.level(b);
        }
        self.synced = e;
    }

    /// Load the count register into the counting element at edge `edge`.
    fn load(&mut self, edge: u64) {
        self.counting = true;
        self.n = self.effective_count();
        self.base_edge = edge;
        self.base_d = self.load_phase;
        self.load_at = None;
        self.load_phase = 0;
        self.paused = !self.gate && matches!(self.mode(), 0 | 2 | 3 | 4);
        self.null_count = false;
        self.synced = edge;
        let level = self.level(self.base_d);
        self.set_out(level);
    }

    /// Bring the channel to edge `e` (`e >= synced`), loading a count due by then.
    fn sync(&mut self, e: u64) {
        if let Some(load) = self.load_at {
            if load <= e {
                self.advance(load - 1);
                self.load(load);
            }
        }
        self.advance(e);
    }

    /// The counting element as the guest reads it (BCD-coded in BCD mode).
    fn value(&self) -> u16 {
        if !self.counting {
            return self.held_value;
        }
        let v = self.count_after(self.d_at(self.synced)) as u16;
        if self.bcd {
            (v / 1000) << 12 | (v / 100 % 10) << 8 | (v / 10 % 10) << 4 | (v % 10)
        } else {
            v
        }
    }

    fn status(&self) -> u8 {
        u8::from(self.out) << 7
            | u8::from(self.null_count) << 6
            | self.access.bits() << 4
            | self.mode_bits << 1
            | u8::from(self.bcd)
    }

    /// Stop following the loaded count; the counting element keeps its value.
    fn hold(&mut self) {
        if self.counting {
            self.held_value = self.value();
            self.counting = false;
        }
        self.load_at = None;
    }

    fn control_word(&mut self, value: u8) {
        self.hold();
        self.mode_bits = (value >> 1) & 7;
        self.bcd = value & 1 != 0;
        self.access = match (value >> 4) & 3 {
            1 => Access::Lsb,
            2 => Access::Msb,
            _ => Access::Word,
        };
        self.lsb_written = None;
        self.read_msb = false;
        self.latched_count = None;
        self.latched_status = None;
        self.cr_valid = false;
        self.null_count = true;
        self.set_out(self.mode() != 0);
    }

    fn latch_count(&mut self) {
        if self.latched_count.is_none() {
            self.latched_count = Some(self.value());
        }
    }

    fn latch_status(&mut self) {
        if self.latched_status.is_none() {
            self.latched_status = Some(self.status());
        }
    }

    fn schedule_load(&mut self, edge: u64, phase: u64) {
        self.load_at = Some(edge);
        self.load_phase = phase;
    }

    fn write_count(&mut self, value: u8, e: u64) {
        let cr = match self.access {
            Access::Lsb => u16::from(value),
            Access::Msb => u16::from(value) << 8,
            Access::Word => match self.lsb_written.take() {
                None => {
                    self.lsb_written = Some(value);
                    if self.mode() == 0 {
                        self.hold();
                        self.set_out(false);
                    }
                    return;
                }
                Some(lsb) => u16::from(lsb) | u16::from(value) << 8,
            },
        };
        self.cr = cr;
        self.cr_valid = true;
        self.null_count = true;
        match self.mode() {
            0 | 4 => self.schedule_load(e + 1, 0),
            2 | 3 if self.counting => {
                if self.paused {
                    // Gate low: the next rising edge of GATE loads it.
                    self.load_at = None;
                } else {
                    let n = u64::from(self.n);
                    let d = self.d_at(e);
                    let p = d % n;
                    let half = n.div_ceil(2);
                    if self.mode() == 2 || p >= half {
                        self.schedule_load(e + (n - p), 0);
                    } else {
                        // The new count starts with the low half-cycle.
                        let new_half = u64::from(self.effective_count()).div_ceil(2);
                        self.schedule_load(e + (half - p), new_half);
                    }
                }
            }
            2 | 3 => self.schedule_load(e + 1, 0),
            // Modes 1 and 5: the next trigger loads it.
            _ => {}
        }
    }

    fn read(&mut self) -> u8 {
        if let Some(status) = self.latched_status.take() {
            return status;
        }
        let latched = self.latched_count.is_some();
        let v = self.latched_count.unwrap_or_else(|| self.value());
        let (byte, done) = match self.access {
            Access::Lsb => (v as u8, true),
            Access::Msb => ((v >> 8) as u8, true),
            Access::Word => {
                self.read_msb = !self.read_msb;
                if self.read_msb {
                    (v as u8, false)
                } else {
                    ((v >> 8) as u8, true)
                }
            }
        };
        if latched && done {
            self.latched_count = None;
        }
        byte
    }

    fn set_gate(&mut self, level: bool, e: u64) {
        if level == self.gate {
            return;
        }
        self.gate = level;
        match self.mode() {
            0 | 4 if self.counting => {
                self.base_d = self.d_at(e);
                self.base_edge = e;
                self.paused = !level;
            }
            0 | 4 => {}
            2 | 3 if !level && self.counting => {
                self.base_d = self.d_at(e);
                self.base_edge = e;
                self.paused = true;
                self.load_at = None;
                self.set_out(true);
            }
            2 | 3 if !level => {}
            // A rising edge of GATE in modes 1, 2, 3, 5 (re)loads the count.
            _ if level && self.cr_valid => self.schedule_load(e + 1, 0),
            _ => {}
        }
    }
}

/// The 8254 PIT. See the module documentation.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pit {
    channels: [Channel; 3],
    /// The latest machine time seen.
    now: u64,
    /// [`Pit::next_deadline`] reports nothing earlier than this.
    irq_quiet_until: u64,
}

impl Pit {
    /// The PIT as a BIOS leaves it (see the module documentation), counting from `now`.
    pub fn new(now: u64) -> Pit {
        let edge = clock_edges(now);
        Pit {
            channels: [
                Channel::programmed(2, true, edge),
                Channel::programmed(3, true, edge),
                Channel::programmed(3, false, edge),
            ],
            now,
            irq_quiet_until: 0,
        }
    }

    /// Bring every channel to `now` (never backwards); returns the current clock edge.
    fn sync(&mut self, now: u64) -> u64 {
        self.now = self.now.max(now);
        let edge = clock_edges(self.now);
        for ch in &mut self.channels {
            ch.sync(edge);
        }
        edge
    }

    /// Read port `PIT_BASE + offset`: a channel's latched status, latched count or current
    /// count (offsets 0-2). The control port (offset 3) is write-only and reads 0xff, as
    /// does any other offset.
    pub fn read(&mut self, offset: u16, now: u64) -> u8 {
        self.sync(now);
        match self.channels.get_mut(usize::from(offset)) {
            Some(ch) => ch.read(),
            None => 0xff,
        }
    }

    /// Write port `PIT_BASE + offset`: a count byte (offsets 0-2) or a control word, counter
    /// latch or read-back command (offset 3). Other offsets are ignored.
    pub fn write(&mut self, offset: u16, value: u8, now: u64) {
        let edge = self.sync(now);
        match offset {
            0..=2 => self.channels[usize::from(offset)].write_count(value, edge),
            3 => match value >> 6 {
                3 => {
                    for (i, ch) in self.channels.iter_mut().enumerate() {
                        if value & (2 << i) == 0 {
                            continue;
                        }
                        // Bit 5 low latches the count, bit 4 low the status.
                        if value & 0x20 == 0 {
                            ch.latch_count();
                        }
                        if value & 0x10 == 0 {
                            ch.latch_status();
                        }
                    }
                }
                channel => {
                    let ch = &mut self.channels[usize::from(channel)];
                    if value & 0x30 == 0 {
                        ch.latch_count();
                    } else {
                        ch.control_word(value);
                    }
                }
            },
            _ => {}
        }
    }

    /// Set channel `channel`'s GATE input (channel 2's is port 0x61 bit 0; 0 and 1 are tied
    /// high on the PC). An index above 2 is ignored.
    pub fn set_gate(&mut self, channel: usize, level: bool, now: u64) {
        let edge = self.sync(now);
        if let Some(ch) = self.channels.get_mut(channel) {
            ch.set_gate(level, edge);
        }
    }

    /// Channel `channel`'s GATE input (false for an index above 2).
    pub fn gate(&self, channel: usize) -> bool {
        self.channels.get(channel).is_some_and(|ch| ch.gate)
    }

    /// Channel `channel`'s OUT at `now` (false for an index above 2).
    pub fn out(&mut self, channel: usize, now: u64) -> bool {
        self.sync(now);
        self.channels.get(channel).is_some_and(|ch| ch.out)
    }

    /// Bring the counters up to `now`.
    pub fn update(&mut self, now: u64) {
        self.sync(now);
    }

    /// The level of OUT0 (IRQ 0) as of the last access or [`Pit::update`].
    pub fn irq_level(&self) -> bool {
        self.channels[0].out
    }

    /// The number of rising edges OUT0 (IRQ 0) made, up to the last access or
    /// [`Pit::update`], since the previous call. Taking edges starts the
    /// [`PIT_MIN_IRQ_INTERVAL_NS`] window of [`Pit::next_deadline`].
    pub fn take_irq_edges(&mut self) -> u64 {
        let edges = core::mem::take(&mut self.channels[0].rising);
        if edges > 0 {
            self.irq_quiet_until = self.now.saturating_add(PIT_MIN_IRQ_INTERVAL_NS);
        }
        edges
    }

    /// The machine time at which OUT0 next rises (an IRQ 0 edge), or `None` if it never
    /// does without further guest action; the time of the last access or
    /// [`Pit::update`] while edges are not yet taken. Unlike [`Pit::next_deadline`], not
    /// held back after the last edges taken.
    pub fn next_irq_edge(&self) -> Option<u64> {
        let ch = &self.channels[0];
        if ch.rising > 0 {
            Some(self.now)
        } else {
            edge_time(ch.next_rising_edge()?).into()
        }
    }

    /// The machine time at which OUT0 next rises (an IRQ 0 edge), or `None` if it never
    /// does without further guest action; never earlier than [`PIT_MIN_IRQ_INTERVAL_NS`]
    /// after the last [`Pit::take_irq_edges`] that returned edges. Edges not yet taken
    /// make it the present.
    pub fn next_deadline(&self) -> Option<u64> {
        let ch = &self.channels[0];
        let at = if ch.rising > 0 {
            self.now
        } else {
            edge_time(ch.next_rising_edge()?)
        };
        Some(at.max(self.irq_quiet_until))
    }
}

impl crate::devices::SavedState for Pit {
    fn check_state(&self) -> Result<(), (&'static str, alloc::string::String)> {
        use crate::devices::check_time;
        check_time("now", self.now)?;
        check_time("irq_quiet_until", self.irq_quiet_until)?;
        for c in &self.channels {
            if c.mode_bits > 7 {
                return Err((
                    "channels.mode_bits",
                    alloc::format!("{} (expected 0 to 7)", c.mode_bits),
                ));
            }
            if !(1..=0x10000).contains(&c.n) {
                return Err((
                    "channels.n",
                    alloc::format!("{} (expected 1 to 65536)", c.n),
                ));
            }
            if c.base_d > c.base_edge {
                return Err((
                    "channels.base_d",
                    alloc::format!("{} is after base_edge {}", c.base_d, c.base_edge),
                ));
            }
            check_time("channels.base_edge", c.base_edge)?;
            check_time("channels.load_at", c.load_at.unwrap_or(0))?;
            check_time("channels.load_phase", c.load_phase)?;
            check_time("channels.synced", c.synced)?;
            check_time("channels.rising", c.rising)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A machine time well past 0, so that "before" exists in every test.
    const T0: u64 = 1_000_000_000;

    const CH0: u16 = 0;
    const CH2: u16 = 2;
    const CTRL: u16 = 3;

    /// A PIT whose channel 2 gate is high (as Linux and SeaBIOS set it before calibrating).
    fn gated() -> Pit {
        let mut pit = Pit::new(0);
        pit.set_gate(2, true, 0);
        pit
    }

    /// Program a channel with a control word and a two-byte count at time `now`.
    fn program(pit: &mut Pit, ch: u16, control: u8, count: u16, now: u64) {
        pit.write(CTRL, control, now);
        pit.write(ch, count as u8, now);
        pit.write(ch, (count >> 8) as u8, now);
    }

    /// Latch channel `ch` and read the 16-bit latched count.
    fn latched(pit: &mut Pit, ch: u16, now: u64) -> u16 {
        pit.write(CTRL, (ch as u8) << 6, now);
        u16::from(pit.read(ch, now)) | u16::from(pit.read(ch, now)) << 8
    }

    fn status(pit: &mut Pit, ch: u16, now: u64) -> u8 {
        pit.write(CTRL, 0xe0 | 2 << ch, now);
        pit.read(ch, now)
    }

    #[test]
    fn clock_arithmetic() {
        assert_eq!(clock_edges(0), 0);
        assert_eq!(clock_edges(1_000_000_000), PIT_HZ);
        for k in [1, 2, 1000, PIT_HZ, 123_456_789_012] {
            let t = edge_time(k);
            assert_eq!(clock_edges(t), k);
            assert_eq!(clock_edges(t - 1), k - 1);
        }
        assert_eq!(edge_time(u64::MAX), u64::MAX);
        assert_eq!(clock_edges(u64::MAX), 22_010_322_987_356_910);
    }

    #[test]
    fn power_on_state_is_what_a_bios_leaves() {
        let mut pit = Pit::new(0);
        // Channel 0: mode 2, LSB/MSB, binary, count 65536: a rising edge every 65536 clocks.
        assert_eq!(status(&mut pit, 0, 0), 0xb4);
        assert_eq!(status(&mut pit, 1, 0), 0xb6);
        assert_eq!(status(&mut pit, 2, 0), 0xb6);
        assert!(!pit.gate(2) && pit.gate(0) && pit.gate(1));
        assert_eq!(pit.next_deadline(), Some(edge_time(65536)));
        pit.update(edge_time(65536 * 3));
        assert_eq!(pit.take_irq_edges(), 3);
        // Channel 2 does not count while its gate is low.
        assert_eq!(latched(&mut pit, 2, edge_time(1000)), 0);
    }

    /// Linux's `pit_calibrate_tsc` and SeaBIOS's TSC calibration: channel 2 in mode 0,
    /// OUT polled through port 0x61 bit 5 until it goes high N + 1 clocks later.
    #[test]
    fn mode0_channel2_calibration_loop() {
        let mut pit = gated();
        let latch = (PIT_HZ / 100) as u16; // CAL_LATCH: 10 ms
        let start = T0 + 123; // between two clock edges
        program(&mut pit, CH2, 0xb0, latch, start);
        assert!(!pit.out(2, start));
        let e0 = clock_edges(start);
        // The count loads on the next edge and OUT rises N clocks after that.
        let high_at = edge_time(e0 + 1 + u64::from(latch));
        assert!(!pit.out(2, high_at - 1));
        assert!(pit.out(2, high_at));
        assert!(pit.out(2, high_at + 5_000_000_000));
        // 10 ms within a clock.
        let took = high_at - start;
        assert!(took.abs_diff(10_000_000) < 1_000, "{took}");
        // The status byte: OUT high, count loaded, LSB/MSB, mode 0, binary.
        assert_eq!(status(&mut pit, 2, high_at), 0xb0);
    }

    /// `quick_pit_calibrate`: mode 0 from 0xffff, LSB then MSB read without a latch; the
    /// MSB steps down once every 256 clocks.
    #[test]
    fn mode0_unlatched_reads_follow_the_count() {
        let mut pit = gated();
        program(&mut pit, CH2, 0xb0, 0xffff, T0);
        let e0 = clock_edges(T0);
        // Before the load edge the counting element holds its old value.
        assert!(!pit.out(2, T0));
        // The MSB changes at exactly 256 clocks after the load.
        assert_eq!(pit.read(CH2, edge_time(e0 + 1 + 255)), 0x00);
        assert_eq!(pit.read(CH2, edge_time(e0 + 1 + 255)), 0xff);
        assert_eq!(pit.read(CH2, edge_time(e0 + 1 + 256)), 0xff);
        assert_eq!(pit.read(CH2, edge_time(e0 + 1 + 256)), 0xfe);
        let mut last_msb = 0xff;
        for k in (300..=0x3000u64).step_by(97) {
            let now = edge_time(e0 + k);
            let lsb = pit.read(CH2, now);
            let msb = pit.read(CH2, now);
            let expect = 0xffff - (k - 1) as u16;
            assert_eq!(u16::from(lsb) | u16::from(msb) << 8, expect, "clock {k}");
            assert!(msb <= last_msb);
            last_msb = msb;
        }
    }

    #[test]
    fn mode0_counts_past_zero_and_keeps_out_high() {
        let mut pit = gated();
        program(&mut pit, CH2, 0xb0, 3, T0);
        let e0 = clock_edges(T0);
        assert_eq!(latched(&mut pit, 2, edge_time(e0 + 1)), 3);
        assert!(!pit.out(2, edge_time(e0 + 3)));
        assert_eq!(latched(&mut pit, 2, edge_time(e0 + 4)), 0);
        assert!(pit.out(2, edge_time(e0 + 4)));
        assert_eq!(latched(&mut pit, 2, edge_time(e0 + 5)), 0xffff);
        assert_eq!(latched(&mut pit, 2, edge_time(e0 + 6)), 0xfffe);
        assert!(pit.out(2, edge_time(e0 + 70_000)));
    }

    /// The i8253 clockevent shutdown writes mode 0 with count 0: 65536 clocks, one edge.
    #[test]
    fn mode0_count_zero_means_65536() {
        let mut pit = Pit::new(0);
        pit.update(T0);
        pit.take_irq_edges();
        program(&mut pit, CH0, 0x30, 0, T0);
        let e0 = clock_edges(T0);
        assert!(!pit.irq_level());
        assert_eq!(pit.next_deadline(), Some(edge_time(e0 + 1 + 65536)));
        pit.update(edge_time(e0 + 65536));
        assert_eq!(pit.take_irq_edges(), 0);
        pit.update(edge_time(e0 + 65537));
        assert_eq!(pit.take_irq_edges(), 1);
        assert!(pit.irq_level());
        pit.update(edge_time(e0 + 10_000_000));
        assert_eq!(pit.take_irq_edges(), 0);
        assert_eq!(pit.next_deadline(), None);
    }

    /// Linux's periodic tick: `0x34` (channel 0, LSB/MSB, mode 2) and LATCH = 4773
    /// (HZ=250).
    #[test]
    fn mode2_periodic_tick() {
        let mut pit = Pit::new(0);
        let latch = 4773u16;
        program(&mut pit, CH0, 0x34, latch, T0);
        pit.take_irq_edges();
        let e0 = clock_edges(T0);
        let load = e0 + 1;
        let n = u64::from(latch);
        // OUT low for the last clock of each period, rising at load + k*N.
        for k in 1..=3 {
            let rise = load + k * n;
            assert!(pit.out(0, edge_time(rise - 2)), "period {k}");
            assert_eq!(pit.next_deadline(), Some(edge_time(rise)));
            assert!(!pit.out(0, edge_time(rise - 1)));
            assert_eq!(latched(&mut pit, 0, edge_time(rise - 1)), 1);
            assert!(pit.out(0, edge_time(rise)));
            assert_eq!(latched(&mut pit, 0, edge_time(rise)), latch);
            assert_eq!(pit.take_irq_edges(), 1);
        }
        // The count reads N - (d mod N).
        assert_eq!(
            latched(&mut pit, 0, edge_time(load + 4 * n + 10)),
            latch - 10
        );
        // A period every 4 ms: 1000 periods in 4 s of machine time, taken at once.
        pit.update(edge_time(load + 1003 * n));
        assert_eq!(pit.take_irq_edges(), 1000);
    }

    /// A huge step of time costs no work and counts exactly.
    #[test]
    fn huge_elapsed_time_is_arithmetic() {
        let mut pit = Pit::new(0);
        program(&mut pit, CH0, 0x34, 2, 0);
        pit.take_irq_edges();
        let end = u64::MAX - 1;
        pit.update(end);
        assert_eq!(pit.take_irq_edges(), (clock_edges(end) - 1) / 2);
        // The deadline saturates instead of overflowing.
        assert_eq!(pit.next_deadline(), Some(u64::MAX));
    }

    #[test]
    fn short_periods_are_bounded_for_the_host() {
        let mut pit = Pit::new(0);
        program(&mut pit, CH0, 0x34, 2, T0);
        pit.take_irq_edges();
        let e0 = clock_edges(T0);
        // Exact count and edges for the guest...
        pit.update(edge_time(e0 + 1 + 2));
        assert_eq!(pit.take_irq_edges(), 1);
        // ...but the host is not asked to wake sooner than the minimum interval.
        let now = edge_time(e0 + 3);
        assert_eq!(pit.next_deadline(), Some(now + PIT_MIN_IRQ_INTERVAL_NS));
        pit.update(now + PIT_MIN_IRQ_INTERVAL_NS);
        // The edges in between are coalesced into one call's count.
        let edges = pit.take_irq_edges();
        assert!((5..=6).contains(&edges), "{edges}");
    }

    #[test]
    fn mode3_square_wave_even_and_odd() {
        let mut pit = Pit::new(0);
        // Even: N = 10, high 5 clocks, low 5, the count stepping 10, 8, ..., 2.
        program(&mut pit, CH0, 0x36, 10, T0);
        let load = clock_edges(T0) + 1;
        let mut levels = [false; 20];
        let mut counts = [0u16; 20];
        for d in 0..20 {
            levels[d] = pit.out(0, edge_time(load + d as u64));
            counts[d] = latched(&mut pit, 0, edge_time(load + d as u64));
        }
        let high = [
            true, true, true, true, true, false, false, false, false, false,
        ];
        assert_eq!(levels[..10], high);
        assert_eq!(levels[10..], high);
        assert_eq!(counts[..10], [10, 8, 6, 4, 2, 10, 8, 6, 4, 2]);
        // Odd: N = 7, high 4 clocks, low 3; the count steps from 6.
        program(&mut pit, CH0, 0x36, 7, T0 + 1_000_000);
        let load = clock_edges(T0 + 1_000_000) + 1;
        let mut levels = [false; 14];
        let mut counts = [0u16; 14];
        for d in 0..14 {
            levels[d] = pit.out(0, edge_time(load + d as u64));
            counts[d] = latched(&mut pit, 0, edge_time(load + d as u64));
        }
        let high = [true, true, true, true, false, false, false];
        assert_eq!(levels[..7], high);
        assert_eq!(levels[7..], high);
        assert_eq!(counts[..7], [6, 4, 2, 0, 6, 4, 2]);
        // One rising edge per period.
        pit.take_irq_edges();
        pit.update(edge_time(load + 7 * 100));
        assert_eq!(pit.take_irq_edges(), 100 - 1);
    }

    /// Linux's one-shot clockevent: `0x38` (mode 4) then the delta, rewritten for each
    /// event.
    #[test]
    fn mode4_software_strobe() {
        let mut pit = Pit::new(0);
        pit.write(CTRL, 0x38, T0);
        assert!(pit.irq_level());
        pit.write(CH0, 100, T0);
        pit.write(CH0, 0, T0);
        pit.take_irq_edges();
        let load = clock_edges(T0) + 1;
        assert_eq!(pit.next_deadline(), Some(edge_time(load + 101)));
        assert!(pit.out(0, edge_time(load + 99)));
        assert!(!pit.out(0, edge_time(load + 100)));
        assert_eq!(pit.take_irq_edges(), 0);
        assert!(pit.out(0, edge_time(load + 101)));
        assert_eq!(pit.take_irq_edges(), 1);
        assert_eq!(pit.next_deadline(), None);
        // The count keeps counting past zero without strobing again.
        assert_eq!(latched(&mut pit, 0, edge_time(load + 103)), 0xfffd);
        pit.update(edge_time(load + 200_000));
        assert_eq!(pit.take_irq_edges(), 0);
        // The next event: a new count, no control word; loaded on the next clock.
        let now = edge_time(load + 200_000) + 10;
        pit.write(CH0, 50, now);
        pit.write(CH0, 0, now);
        let load2 = clock_edges(now) + 1;
        assert_eq!(pit.next_deadline(), Some(edge_time(load2 + 51)));
        pit.update(edge_time(load2 + 51));
        assert_eq!(pit.take_irq_edges(), 1);
    }

    #[test]
    fn mode1_and_mode5_are_triggered_by_the_gate() {
        let mut pit = Pit::new(0);
        // Channel 2, mode 1, LSB only, count 5.
        pit.write(CTRL, 0x92, T0);
        pit.write(CH2, 5, T0);
        assert!(pit.out(2, T0));
        // Gate low: no trigger, nothing happens.
        assert!(pit.out(2, T0 + 100_000));
        assert_eq!(status(&mut pit, 2, T0 + 100_000) & 0x40, 0x40, "null count");
        let trigger = T0 + 200_000;
        pit.set_gate(2, true, trigger);
        let load = clock_edges(trigger) + 1;
        assert!(pit.out(2, edge_time(load) - 1));
        assert!(!pit.out(2, edge_time(load)));
        assert_eq!(status(&mut pit, 2, edge_time(load)) & 0x40, 0);
        assert!(!pit.out(2, edge_time(load + 4)));
        assert!(pit.out(2, edge_time(load + 5)));
        // Retrigger: another one-shot from the start.
        pit.set_gate(2, false, edge_time(load + 10));
        pit.set_gate(2, true, edge_time(load + 10));
        assert!(!pit.out(2, edge_time(load + 11)));
        assert!(pit.out(2, edge_time(load + 16)));
        // Gate falling does not affect mode 1.
        pit.set_gate(2, false, edge_time(load + 30));

        // Mode 5: high until N clocks after the trigger, low for one clock.
        pit.write(CTRL, 0x9a, edge_time(load + 40));
        pit.write(CH2, 3, edge_time(load + 40));
        assert!(pit.out(2, edge_time(load + 60)));
        pit.set_gate(2, true, edge_time(load + 60));
        let l5 = load + 61;
        assert!(pit.out(2, edge_time(l5 + 2)));
        assert!(!pit.out(2, edge_time(l5 + 3)));
        assert!(pit.out(2, edge_time(l5 + 4)));
    }

    #[test]
    fn gate_low_stops_counting() {
        let mut pit = gated();
        // Mode 0: counting stops while the gate is low and resumes where it stopped.
        program(&mut pit, CH2, 0xb0, 100, T0);
        let load = clock_edges(T0) + 1;
        pit.set_gate(2, false, edge_time(load + 10));
        assert_eq!(latched(&mut pit, 2, edge_time(load + 500)), 90);
        pit.set_gate(2, true, edge_time(load + 500));
        assert_eq!(latched(&mut pit, 2, edge_time(load + 510)), 80);
        assert!(!pit.out(2, edge_time(load + 589)));
        assert!(pit.out(2, edge_time(load + 590)));

        // Mode 2: gate low forces OUT high and stops; a rising gate reloads.
        let t = edge_time(load + 1000);
        program(&mut pit, CH2, 0xb4, 10, t);
        let l2 = clock_edges(t) + 1;
        assert!(!pit.out(2, edge_time(l2 + 9)));
        pit.set_gate(2, false, edge_time(l2 + 9));
        assert!(pit.out(2, edge_time(l2 + 9)));
        assert!(pit.out(2, edge_time(l2 + 100)));
        assert_eq!(latched(&mut pit, 2, edge_time(l2 + 100)), 1);
        pit.set_gate(2, true, edge_time(l2 + 100));
        assert_eq!(latched(&mut pit, 2, edge_time(l2 + 101)), 10);
        assert_eq!(latched(&mut pit, 2, edge_time(l2 + 104)), 7);
    }

    #[test]
    fn mode2_count_written_while_counting_takes_effect_next_period() {
        let mut pit = Pit::new(0);
        program(&mut pit, CH0, 0x34, 100, T0);
        let load = clock_edges(T0) + 1;
        pit.write(CH0, 10, edge_time(load + 30));
        pit.write(CH0, 0, edge_time(load + 30));
        assert_eq!(status(&mut pit, 0, edge_time(load + 30)) & 0x40, 0x40);
        assert_eq!(latched(&mut pit, 0, edge_time(load + 99)), 1);
        assert_eq!(latched(&mut pit, 0, edge_time(load + 100)), 10);
        assert_eq!(status(&mut pit, 0, edge_time(load + 100)) & 0x40, 0);
        pit.take_irq_edges();
        pit.update(edge_time(load + 100 + 10 * 7));
        assert_eq!(pit.take_irq_edges(), 7);
    }

    #[test]
    fn mode3_count_written_while_counting_takes_effect_next_half_cycle() {
        let mut pit = Pit::new(0);
        program(&mut pit, CH0, 0x36, 100, T0);
        let load = clock_edges(T0) + 1;
        // During the high half: the new count starts at the low half, 50 clocks in.
        pit.write(CH0, 20, edge_time(load + 10));
        pit.write(CH0, 0, edge_time(load + 10));
        assert!(pit.out(0, edge_time(load + 49)));
        assert!(!pit.out(0, edge_time(load + 50)));
        assert_eq!(latched(&mut pit, 0, edge_time(load + 50)), 20);
        // The low half of the new count is 10 clocks, then a normal period of 20.
        assert!(!pit.out(0, edge_time(load + 59)));
        assert!(pit.out(0, edge_time(load + 60)));
        assert!(!pit.out(0, edge_time(load + 70)));
        assert!(pit.out(0, edge_time(load + 80)));
    }

    #[test]
    fn latch_holds_until_read_and_ignores_a_second_latch() {
        let mut pit = gated();
        program(&mut pit, CH2, 0xb0, 1000, T0);
        let load = clock_edges(T0) + 1;
        pit.write(CTRL, 0x80, edge_time(load + 10));
        pit.write(CTRL, 0x80, edge_time(load + 20));
        assert_eq!(pit.read(CH2, edge_time(load + 30)), (990 & 0xff) as u8);
        // Half read: a new latch is still ignored.
        pit.write(CTRL, 0x80, edge_time(load + 40));
        assert_eq!(pit.read(CH2, edge_time(load + 50)), (990 >> 8) as u8);
        // Fully read: the next reads follow the counter again.
        assert_eq!(latched(&mut pit, 2, edge_time(load + 60)), 940);
    }

    #[test]
    fn read_back_status_and_count() {
        let mut pit = gated();
        program(&mut pit, CH2, 0xb0, 500, T0);
        let e0 = clock_edges(T0);
        // Before the load: null count set, OUT low.
        pit.write(CTRL, 0xe8, T0);
        assert_eq!(pit.read(CH2, T0), 0x70);
        let now = edge_time(e0 + 1 + 100);
        // Latch status and count together: status first, then LSB, MSB.
        pit.write(CTRL, 0xc8, now);
        let later = now + 1_000_000;
        assert_eq!(pit.read(CH2, later), 0x30);
        assert_eq!(pit.read(CH2, later), (400 & 0xff) as u8);
        assert_eq!(pit.read(CH2, later), (400 >> 8) as u8);
        // Status only, count only, and several channels at once.
        pit.write(CTRL, 0xea, later);
        assert_eq!(pit.read(CH2, later), 0xb0);
        let out0 = pit.out(0, later);
        assert_eq!(pit.read(CH0, later), 0x34 | u8::from(out0) << 7);
        let c = u16::from(pit.read(CH2, later)) | u16::from(pit.read(CH2, later)) << 8;
        assert_eq!(
            c,
            400u16.wrapping_sub((clock_edges(later) - e0 - 101) as u16)
        );
        pit.write(CTRL, 0xd8, later);
        assert_eq!(pit.read(CH2, later), (c & 0xff) as u8);
        // A second status latch before the first is read is ignored.
        pit.write(CTRL, 0xe8, later);
        pit.write(CTRL, 0xe8, later + 100_000_000);
        assert_eq!(pit.read(CH2, later), 0xb0);
    }

    #[test]
    fn bcd_counting() {
        let mut pit = gated();
        // Mode 0, BCD, count 0x1000 = 1000 decimal.
        program(&mut pit, CH2, 0xb1, 0x1000, T0);
        let load = clock_edges(T0) + 1;
        assert_eq!(latched(&mut pit, 2, edge_time(load + 1)), 0x0999);
        assert_eq!(latched(&mut pit, 2, edge_time(load + 11)), 0x0989);
        assert!(pit.out(2, edge_time(load + 1000)));
        assert_eq!(latched(&mut pit, 2, edge_time(load + 1001)), 0x9999);
        // Count 0 in BCD is 10000 clocks: mode 2 rises every 10000 clocks.
        let t = edge_time(load + 2000);
        program(&mut pit, CH0, 0x35, 0, t);
        pit.take_irq_edges();
        let l0 = clock_edges(t) + 1;
        pit.update(edge_time(l0 + 10_000 * 3));
        assert_eq!(pit.take_irq_edges(), 3);
        // Nibbles above 9 are not trusted: the count stays valid BCD, nothing panics.
        let t = edge_time(l0 + 40_000);
        program(&mut pit, CH2, 0xb1, 0xffff, t);
        let l2 = clock_edges(t) + 1;
        // 0xffff weighs 15*1000 + 15*100 + 15*10 + 15 = 16665, i.e. 6665 clocks.
        for k in [0, 1, 6664, 6665, 6666, 20_000] {
            let v = latched(&mut pit, 2, edge_time(l2 + k));
            assert!(
                v >> 12 <= 9 && (v >> 8) & 0xf <= 9 && (v >> 4) & 0xf <= 9 && v & 0xf <= 9,
                "{v:#x}"
            );
            assert_eq!(pit.out(2, edge_time(l2 + k)), k >= 6665);
        }
    }

    #[test]
    fn access_modes_lsb_and_msb_only() {
        let mut pit = gated();
        // LSB only: count 0x0040.
        pit.write(CTRL, 0x90, T0);
        pit.write(CH2, 0x40, T0);
        let load = clock_edges(T0) + 1;
        assert_eq!(pit.read(CH2, edge_time(load)), 0x40);
        assert_eq!(pit.read(CH2, edge_time(load + 1)), 0x3f);
        // MSB only: count 0x0200.
        pit.write(CTRL, 0xa0, edge_time(load + 10));
        pit.write(CH2, 0x02, edge_time(load + 10));
        let l2 = load + 11;
        assert_eq!(pit.read(CH2, edge_time(l2)), 0x02);
        assert_eq!(pit.read(CH2, edge_time(l2 + 256)), 0x01);
        assert_eq!(status(&mut pit, 2, edge_time(l2)), 0x20);
    }

    #[test]
    fn mode0_first_byte_stops_the_count_and_drives_out_low() {
        let mut pit = gated();
        program(&mut pit, CH2, 0xb0, 10, T0);
        let load = clock_edges(T0) + 1;
        assert!(pit.out(2, edge_time(load + 20)));
        // Half a new count: OUT low at once, the count holds.
        pit.write(CH2, 0x00, edge_time(load + 20));
        assert!(!pit.out(2, edge_time(load + 20)));
        let held = latched(&mut pit, 2, edge_time(load + 20));
        assert_eq!(latched(&mut pit, 2, edge_time(load + 500)), held);
        pit.write(CH2, 0x01, edge_time(load + 500));
        assert_eq!(latched(&mut pit, 2, edge_time(load + 501)), 0x100);
        assert!(pit.out(2, edge_time(load + 501 + 0x100)));
    }

    #[test]
    fn control_word_after_half_a_latch_resets_the_read_sequence() {
        let mut pit = gated();
        program(&mut pit, CH2, 0xb0, 0x1234, T0);
        let load = clock_edges(T0) + 1;
        pit.write(CTRL, 0x80, edge_time(load));
        assert_eq!(pit.read(CH2, edge_time(load)), 0x34);
        // Reprogramming drops the rest of the latch and the half-read state.
        program(&mut pit, CH2, 0xb0, 0x5678, edge_time(load + 5));
        let l2 = load + 6;
        assert_eq!(pit.read(CH2, edge_time(l2)), 0x78);
        assert_eq!(pit.read(CH2, edge_time(l2)), 0x56);
        // Half a count written, then a control word: the next byte is an LSB again.
        pit.write(CH2, 0xaa, edge_time(l2 + 1));
        program(&mut pit, CH2, 0xb0, 0x0102, edge_time(l2 + 2));
        assert_eq!(latched(&mut pit, 2, edge_time(l2 + 3)), 0x0102);
    }

    #[test]
    fn control_word_sets_out_and_reprogramming_mid_count() {
        let mut pit = Pit::new(0);
        program(&mut pit, CH0, 0x30, 1000, T0);
        pit.take_irq_edges();
        let load = clock_edges(T0) + 1;
        assert!(!pit.out(0, edge_time(load + 500)));
        // Mode 2 control word mid-count: OUT high at once, an IRQ 0 edge.
        pit.write(CTRL, 0x34, edge_time(load + 500));
        assert!(pit.irq_level());
        assert_eq!(pit.take_irq_edges(), 1);
        // Until a count is written the channel neither counts nor interrupts.
        let held = latched(&mut pit, 0, edge_time(load + 600));
        assert_eq!(held, 500);
        assert_eq!(pit.next_deadline(), None);
        pit.write(CH0, 20, edge_time(load + 700));
        pit.write(CH0, 0, edge_time(load + 700));
        assert_eq!(pit.next_deadline(), Some(edge_time(load + 701 + 20)));
        // Mode 0 control word: OUT low.
        pit.write(CTRL, 0x30, edge_time(load + 800));
        assert!(!pit.irq_level());
    }

    #[test]
    fn modes_6_and_7_are_2_and_3_and_the_control_port_reads_open_bus() {
        let mut pit = Pit::new(0);
        // 0x3c: channel 0, LSB/MSB, mode bits 110.
        program(&mut pit, CH0, 0x3c, 10, T0);
        let load = clock_edges(T0) + 1;
        // The status byte reports the bits as written.
        assert_eq!(status(&mut pit, 0, edge_time(load)), 0xbc);
        assert!(!pit.out(0, edge_time(load + 9)));
        assert!(pit.out(0, edge_time(load + 10)));
        // 0x3e: mode bits 111, a square wave.
        program(&mut pit, CH0, 0x3e, 10, edge_time(load + 20));
        let l2 = load + 21;
        assert!(pit.out(0, edge_time(l2 + 4)));
        assert!(!pit.out(0, edge_time(l2 + 5)));
        assert_eq!(latched(&mut pit, 0, edge_time(l2 + 6)), 8);
        assert_eq!(pit.read(CTRL, T0), 0xff);
        assert_eq!(pit.read(4, T0), 0xff);
        pit.write(4, 0x30, T0);
        pit.set_gate(3, true, T0);
        assert!(!pit.gate(3));
        assert!(!pit.out(3, T0));
    }

    #[test]
    fn mode1_count_runs_from_the_trigger() {
        let mut pit = Pit::new(0);
        // Channel 2, LSB/MSB, mode 1, count 300.
        program(&mut pit, CH2, 0xb2, 300, T0);
        // Not triggered: the counting element holds what it had.
        let before = latched(&mut pit, 2, T0 + 1_000_000);
        assert_eq!(latched(&mut pit, 2, T0 + 2_000_000), before);
        let trigger = T0 + 2_000_000;
        pit.set_gate(2, true, trigger);
        let load = clock_edges(trigger) + 1;
        assert_eq!(latched(&mut pit, 2, edge_time(load)), 300);
        assert_eq!(latched(&mut pit, 2, edge_time(load + 100)), 200);
        // A new count written mid-shot waits for the next trigger.
        pit.write(CH2, 50, edge_time(load + 100));
        pit.write(CH2, 0, edge_time(load + 100));
        assert_eq!(latched(&mut pit, 2, edge_time(load + 150)), 150);
        assert!(pit.out(2, edge_time(load + 300)));
        pit.set_gate(2, false, edge_time(load + 400));
        pit.set_gate(2, true, edge_time(load + 400));
        assert_eq!(latched(&mut pit, 2, edge_time(load + 401)), 50);
        assert!(!pit.out(2, edge_time(load + 450)));
        assert!(pit.out(2, edge_time(load + 451)));
    }

    /// Whatever the programming, the edge `next_deadline` is computed from is the edge the
    /// counting produces: none a nanosecond before it, one at it.
    #[test]
    fn next_rising_edge_agrees_with_the_count() {
        let mut pit = gated();
        let mut x = 0x0bad_5eedu32;
        let mut now = T0;
        let mut checked = 0;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            now += u64::from(x % 20_000);
            let value = (x >> 16) as u8;
            match x % 6 {
                // Channel 0 programmed in a random mode with a small count.
                0 => program(
                    &mut pit,
                    CH0,
                    0x30 | (value & 0x0f),
                    u16::from(value) + 1,
                    now,
                ),
                1 => pit.write(CH0, value, now),
                2 => pit.write(CTRL, value & 0x3f, now),
                _ => pit.update(now),
            }
            pit.take_irq_edges();
            let Some(edge) = pit.channels[0].next_rising_edge() else {
                continue;
            };
            let mut before = pit.clone();
            before.update(edge_time(edge) - 1);
            assert_eq!(before.take_irq_edges(), 0, "{:?}", pit.channels[0]);
            let mut at = pit.clone();
            at.update(edge_time(edge));
            assert!(at.take_irq_edges() >= 1, "{:?}", pit.channels[0]);
            checked += 1;
        }
        assert!(checked > 5_000, "{checked}");
    }

    #[test]
    fn hostile_programming_never_panics() {
        let mut pit = gated();
        let mut x = 0x1234_5678u32;
        let mut now = T0;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            now += u64::from(x % 3000);
            let port = (x >> 8) as u16 % 5;
            let value = (x >> 16) as u8;
            match x % 7 {
                0 => pit.set_gate(2, value & 1 != 0, now),
                1 | 2 => {
                    pit.read(port, now);
                }
                3 => {
                    pit.update(now);
                    pit.take_irq_edges();
                    if let Some(deadline) = pit.next_deadline() {
                        assert!(deadline >= pit.now);
                    }
                }
                _ => pit.write(port, value, now),
            }
        }
        // Time going backwards is treated as no time passing.
        let before = pit.clone();
        pit.update(0);
        assert_eq!(pit, before);
    }
}
