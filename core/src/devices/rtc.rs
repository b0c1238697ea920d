//! The MC146818 CMOS real-time clock and its 128 bytes of CMOS memory, at ports 0x70
//! (index) and 0x71 (data), interrupting on ISA IRQ 8.
//!
//! Port 0x70 selects a register with bits 6-0; bit 7 is the PC's NMI mask, which the
//! chipset latches from the same write ([`Rtc::nmi_masked`]). Port 0x70 is write-only and
//! reads 0xff.
//!
//! **The clock** (registers 0x00-0x09 and the century at 0x32,
//! `crate::acpi::RTC_CENTURY_INDEX`, which the FADT's `CENTURY` field names) starts at the
//! host's wall-clock time (UTC, as QEMU's default `-rtc base=utc`), given to
//! [`Rtc::new`], and runs on the machine clock: updates happen at whole seconds of the
//! divider chain, which keeps the sub-second phase of the wall clock. The time is kept as a count of seconds and the registers are generated from it
//! in the format register B selects (BCD or binary, 24-hour or 12-hour with bit 7 = PM),
//! so changing the format changes what the registers read at once (as in QEMU). While the
//! clock is stopped — register B's SET bit, or the divider stopped (register A bits 6-4
//! other than 000-010; 11x is the reset Linux uses) — the registers hold exactly what the guest writes, and restarting the
//! clock reads them back as the new time (each field decoded in the current format;
//! out-of-range values carry into the next field arithmetically); a divider taken out of
//! reset makes its first update 500 ms later, as the MC146818 does. A time register
//! written while the clock runs takes effect at once, keeping the sub-second phase. The
//! day of the week is computed from the date, as Linux assumes (it ignores it anyway);
//! years wrap at 9999.
//!
//! **Registers A-D.** A: UIP (read-only) is set for the [`UIP_WINDOW_NS`] before each
//! update while the clock runs; DV (bits 6-4) runs the divider at 000-010 (all on the
//! 32.768 kHz time base a PC has, as in QEMU) and stops it otherwise; RS (bits 3-0)
//! selects the periodic rate. B: SET, PIE, AIE, UIE, SQWE (stored: the square-wave pin is
//! unconnected on a PC), DM, 24/12, DSE (stored; the clock keeps UTC). Setting SET clears UIE, as on the MC146818. C: IRQF, PF,
//! AF, UF; reading it returns and clears them, lowering IRQ 8. D: VRT (battery good)
//! always set. C and D ignore writes.
//!
//! **Interrupts.** PF is set at every periodic-rate edge (RS 1 and 2 are the 256 Hz and
//! 128 Hz rates, RS 3-15 are 8192 Hz down to 2 Hz), AF at an update whose time matches the
//! alarm registers (a value 0xC0-0xFF matches anything), UF at every update; each flag is
//! set whether or not its interrupt is enabled. IRQF, the IRQ 8 output
//! ([`Rtc::irq_level`]), is PF·PIE + AF·AIE + UF·UIE. Flags stay set until register C is
//! read, so the output is a level the interrupt controller sees rise. Any span of time
//! is accounted in a fixed number of steps: flags are set once for however many edges
//! passed, and whether an alarm matched in between is computed, not searched for. The
//! fastest periodic rate, 8192 Hz (122 µs), needs no bound for the host's sake.
//!
//! **CMOS memory.** Bytes 0x0E-0x7F are memory, filled as a PC BIOS (SeaBIOS under QEMU)
//! leaves them for the operating system: the equipment byte 0x14 (math coprocessor, PS/2
//! mouse port), base memory 0x15/0x16 (640 KiB), extended memory above 1 MiB in KiB at
//! 0x17/0x18 and 0x30/0x31 (at most 0xFFFF), memory above 16 MiB in 64 KiB blocks at
//! 0x34/0x35 (at most 0xFFFF), memory above 4 GiB in 64 KiB blocks at 0x5B-0x5D, the
//! number of CPUs less one at 0x5F, and the checksum of 0x10-0x2D at 0x2E (high byte) and
//! 0x2F. Registers A-D start as SeaBIOS leaves them: A = 0x26 (32.768 kHz, 1024 Hz
//! periodic rate), B = 0x02 (24-hour, BCD, no interrupts).

/// The index port.
pub const RTC_BASE: u16 = 0x70;
/// Number of ports (index, data).
pub const RTC_PORTS: u16 = 2;
/// The ISA IRQ the RTC interrupts on (edge-triggered, active high), a line of
/// `crate::vm::Vm::set_irq`.
pub const RTC_IRQ: u32 = 8;
/// How long before each update UIP reads 1: 8 cycles of the 32.768 kHz time base
/// (244.140625 µs, rounded up).
pub const UIP_WINDOW_NS: u64 = 244_141;

const SECONDS: usize = 0x00;
const SECONDS_ALARM: usize = 0x01;
const MINUTES: usize = 0x02;
const MINUTES_ALARM: usize = 0x03;
const HOURS: usize = 0x04;
const HOURS_ALARM: usize = 0x05;
const DAY_OF_WEEK: usize = 0x06;
const DAY_OF_MONTH: usize = 0x07;
const MONTH: usize = 0x08;
const YEAR: usize = 0x09;
const REG_A: usize = 0x0a;
const REG_B: usize = 0x0b;
const REG_C: usize = 0x0c;
const REG_D: usize = 0x0d;
/// The century register (BCD or binary as register B says), where the FADT says it is.
const CENTURY: usize = crate::acpi::RTC_CENTURY_INDEX as usize;

const A_UIP: u8 = 0x80;
const B_SET: u8 = 0x80;
const B_PIE: u8 = 0x40;
const B_AIE: u8 = 0x20;
const B_UIE: u8 = 0x10;
const B_DM_BINARY: u8 = 0x04;
const B_24H: u8 = 0x02;
const C_IRQF: u8 = 0x80;
const C_PF: u8 = 0x40;
const C_AF: u8 = 0x20;
const C_UF: u8 = 0x10;
const D_VRT: u8 = 0x80;

/// Equipment byte: math coprocessor present (bit 1), PS/2 mouse port (bit 2), no floppy.
const EQUIPMENT: u8 = 0x06;
const CHECKSUM_FIRST: usize = 0x10;
const CHECKSUM_LAST: usize = 0x2d;

const NS: i128 = 1_000_000_000;
const DIVIDER_HZ: i128 = 32_768;
const RESTART_PHASE_NS: i128 = 500_000_000;
const DAY: i64 = 86_400;

/// What the machine records in CMOS memory for firmware and operating systems.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CmosConfig {
    /// Guest RAM below 4 GiB, in bytes.
    pub ram_below_4g: u64,
    /// Guest RAM from 4 GiB up, in bytes.
    pub ram_above_4g: u64,
    /// Number of vCPUs.
    pub cpus: u32,
}

/// One alarm register, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AlarmField {
    /// 0xC0-0xFF: matches every value.
    Any,
    /// Matches this value.
    At(i64),
    /// A value the clock never shows: never matches.
    Never,
}

impl AlarmField {
    fn matches(self, v: i64) -> bool {
        match self {
            AlarmField::Any => true,
            AlarmField::At(a) => a == v,
            AlarmField::Never => false,
        }
    }

    /// The smallest matching value `>= from` and `< limit`.
    fn first_from(self, from: i64, limit: i64) -> Option<i64> {
        match self {
            AlarmField::Any => (from < limit).then_some(from),
            AlarmField::At(a) => (a >= from).then_some(a),
            AlarmField::Never => None,
        }
    }
}

/// Days since 1970-01-01 of the proleptic Gregorian date `y`-`m`-`d` (`m` 1-12).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    // Years counted from March, so that the leap day ends the year.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = (m + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + d - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian date (year, month 1-12, day 1-31) of day `z` since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let d = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let m = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let y = year_of_era + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The sum of CMOS bytes 0x10-0x2D that BIOSes keep at 0x2E/0x2F.
fn checksum(cmos: &[u8; 128]) -> u16 {
    cmos[CHECKSUM_FIRST..=CHECKSUM_LAST]
        .iter()
        .map(|&b| u16::from(b))
        .sum()
}

/// `(d.div_euclid(10^9), d.rem_euclid(10^9))`: whole seconds and the nanoseconds left of a
/// distance `d` in time. Any distance within ±292 years fits in 64 bits, where dividing by
/// the constant is a multiplication; only others take the 128-bit division. The clock runs
/// this at every clock read of the machine.
#[inline]
fn split_seconds(d: i128) -> (i128, u64) {
    match i64::try_from(d) {
        Ok(d) => (
            i128::from(d.div_euclid(NS as i64)),
            d.rem_euclid(NS as i64) as u64,
        ),
        Err(_) => (d.div_euclid(NS), d.rem_euclid(NS) as u64),
    }
}

/// The MC146818 RTC and CMOS memory. See the module documentation.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rtc {
    /// Every register and memory byte. The clock registers are authoritative only while
    /// the clock is stopped; while it runs they are generated from `secs`.
    #[serde(with = "crate::snapshot::codec::byte_array")]
    cmos: [u8; 128],
    /// The register port 0x71 accesses.
    index: u8,
    /// Bit 7 of the last index write.
    nmi_masked: bool,
    /// The clock's time at its last update, seconds since 1970-01-01 00:00:00.
    secs: i64,
    /// Machine time (ns) of a second boundary of the divider chain: updates happen at
    /// `origin + k * 10^9`, periodic edges at multiples of the period counted from it.
    origin: i128,
    /// Machine time the device was last brought up to date.
    synced: u64,
}

impl Rtc {
    /// The RTC at machine time `now`, its clock set to `wall_clock_ns` (nanoseconds since
    /// 1970-01-01 00:00:00 UTC, e.g. from `Platform::wall_clock_ns`) and its memory filled
    /// from `config`.
    pub fn new(config: &CmosConfig, wall_clock_ns: u64, now: u64) -> Rtc {
        let mut cmos = [0u8; 128];
        cmos[REG_A] = 0x26;
        cmos[REG_B] = B_24H;
        cmos[REG_D] = D_VRT;
        cmos[0x14] = EQUIPMENT;
        let mut put16 = |at: usize, v: u64| {
            cmos[at] = v as u8;
            cmos[at + 1] = (v >> 8) as u8;
        };
        let below = config.ram_below_4g;
        put16(0x15, (below / 1024).min(640));
        let extended = (below.saturating_sub(1 << 20) / 1024).min(0xffff);
        put16(0x17, extended);
        put16(0x30, extended);
        put16(
            0x34,
            (below.saturating_sub(16 << 20) / 0x1_0000).min(0xffff),
        );
        let high = (config.ram_above_4g / 0x1_0000).min(0xff_ffff);
        cmos[0x5b] = high as u8;
        cmos[0x5c] = (high >> 8) as u8;
        cmos[0x5d] = (high >> 16) as u8;
        cmos[0x5f] = config.cpus.saturating_sub(1).min(0xff) as u8;
        let sum = checksum(&cmos);
        cmos[0x2e] = (sum >> 8) as u8;
        cmos[0x2f] = sum as u8;
        let wall = i128::from(wall_clock_ns);
        Rtc {
            cmos,
            index: 0,
            nmi_masked: false,
            secs: (wall / NS) as i64,
            origin: i128::from(now) - wall % NS,
            synced: now,
        }
    }

    /// Whether the last write to port 0x70 set bit 7, masking NMIs.
    pub fn nmi_masked(&self) -> bool {
        self.nmi_masked
    }

    /// The IRQ 8 output (register C's IRQF) as of the last access or [`Rtc::update`].
    pub fn irq_level(&self) -> bool {
        self.cmos[REG_C] & C_IRQF != 0
    }

    /// Bring the clock and its interrupt flags up to `now`.
    pub fn update(&mut self, now: u64) {
        self.sync(now);
    }

    /// The machine time at which the IRQ 8 output next rises, or `None` if it is already
    /// high (only a read of register C lowers it) or no enabled interrupt is due.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.irq_level() || !self.running() {
            return None;
        }
        let b = self.cmos[REG_B];
        let mut next: Option<i128> = None;
        let mut consider = |t: i128| next = Some(next.map_or(t, |n| n.min(t)));
        if b & B_PIE != 0 {
            if let Some(shift) = self.periodic_shift() {
                // An arithmetic shift is the floor division by the period.
                let tick = ((self.divider_ticks(self.synced) >> shift) + 1) << shift;
                consider(self.origin + (tick * NS + DIVIDER_HZ - 1).div_euclid(DIVIDER_HZ));
            }
        }
        if !self.set() {
            let second = self.second_index(self.synced);
            if b & B_UIE != 0 {
                consider(self.origin + (second + 1) * NS);
            }
            if b & B_AIE != 0 {
                if let Some(t) = self.next_alarm_after(self.secs) {
                    let updates = i128::from(t) - i128::from(self.secs);
                    consider(self.origin + (second + updates) * NS);
                }
            }
        }
        next.map(|t| u64::try_from(t).unwrap_or(u64::MAX))
    }

    /// Read port `RTC_BASE + offset`: the selected register at offset 1; the index port
    /// (offset 0) and anything else read 0xff.
    pub fn read(&mut self, offset: u16, now: u64) -> u8 {
        if offset != 1 {
            return 0xff;
        }
        self.sync(now);
        let index = usize::from(self.index);
        match index {
            SECONDS | MINUTES | HOURS | DAY_OF_WEEK | DAY_OF_MONTH | MONTH | YEAR | CENTURY
                if !self.frozen() =>
            {
                self.clock_register(index)
            }
            REG_A => self.cmos[REG_A] | if self.uip() { A_UIP } else { 0 },
            REG_C => core::mem::take(&mut self.cmos[REG_C]),
            REG_D => D_VRT,
            _ => self.cmos[index],
        }
    }

    /// Write port `RTC_BASE + offset`: the index and NMI mask at offset 0, the selected
    /// register at offset 1. Other offsets are ignored.
    pub fn write(&mut self, offset: u16, value: u8, now: u64) {
        match offset {
            0 => {
                self.index = value & 0x7f;
                self.nmi_masked = value & 0x80 != 0;
            }
            1 => {
                self.sync(now);
                let index = usize::from(self.index);
                match index {
                    SECONDS | MINUTES | HOURS | DAY_OF_WEEK | DAY_OF_MONTH | MONTH | YEAR
                    | CENTURY => {
                        if self.frozen() {
                            self.cmos[index] = value;
                        } else {
                            self.store_clock();
                            self.cmos[index] = value;
                            self.secs = self.parse_clock();
                        }
                    }
                    REG_A => self.write_control(REG_A, value & !A_UIP),
                    REG_B if value & B_SET != 0 => self.write_control(REG_B, value & !B_UIE),
                    REG_B => self.write_control(REG_B, value),
                    REG_C | REG_D => {}
                    _ => self.cmos[index] = value,
                }
            }
            _ => {}
        }
    }

    fn running(&self) -> bool {
        (self.cmos[REG_A] >> 4) & 7 <= 2
    }

    fn set(&self) -> bool {
        self.cmos[REG_B] & B_SET != 0
    }

    /// The clock registers hold the time (SET, or the divider in reset).
    fn frozen(&self) -> bool {
        self.set() || !self.running()
    }

    /// The number of the last second boundary at or before machine time `t`.
    fn second_index(&self, t: u64) -> i128 {
        split_seconds(i128::from(t) - self.origin).0
    }

    /// 32.768 kHz cycles of the divider chain from `origin` to machine time `t`:
    /// `⌊(t − origin) · 32768 / 10^9⌋`. With `t − origin = s · 10^9 + r`, `0 <= r < 10^9`,
    /// that is `s · 32768 + ⌊r · 32768 / 10^9⌋` exactly (`s · 32768` is an integer), and
    /// `r · 32768 < 2^45` divides in 64 bits.
    fn divider_ticks(&self, t: u64) -> i128 {
        let (s, r) = split_seconds(i128::from(t) - self.origin);
        s * DIVIDER_HZ + i128::from(r * DIVIDER_HZ as u64 / NS as u64)
    }

    /// The periodic interrupt's period in 32.768 kHz cycles, if RS selects one, as the
    /// power of two it is: the period is `1 << shift`.
    fn periodic_shift(&self) -> Option<u32> {
        match self.cmos[REG_A] & 0x0f {
            0 => None,
            rs @ (1 | 2) => Some(u32::from(rs) + 6),
            rs => Some(u32::from(rs) - 1),
        }
    }

    fn uip(&self) -> bool {
        if self.frozen() {
            return false;
        }
        let next = self.origin + (self.second_index(self.synced) + 1) * NS;
        next - i128::from(self.synced) < i128::from(UIP_WINDOW_NS)
    }

    fn sync(&mut self, now: u64) {
        let now = now.max(self.synced);
        if self.running() {
            let updates = self.second_index(now) - self.second_index(self.synced);
            if updates > 0 && !self.set() {
                let before = self.secs;
                let updates = i64::try_from(updates).unwrap_or(i64::MAX);
                self.secs = before.saturating_add(updates);
                self.cmos[REG_C] |= C_UF;
                if self
                    .next_alarm_after(before)
                    .is_some_and(|alarm| alarm <= self.secs)
                {
                    self.cmos[REG_C] |= C_AF;
                }
            }
            if let Some(shift) = self.periodic_shift() {
                let edges =
                    (self.divider_ticks(now) >> shift) - (self.divider_ticks(self.synced) >> shift);
                if edges > 0 {
                    self.cmos[REG_C] |= C_PF;
                }
            }
        }
        self.synced = now;
        self.update_irqf();
    }

    fn update_irqf(&mut self) {
        let flags = self.cmos[REG_C] & (C_PF | C_AF | C_UF);
        let irqf = if flags & self.cmos[REG_B] & (B_PIE | B_AIE | B_UIE) != 0 {
            C_IRQF
        } else {
            0
        };
        self.cmos[REG_C] = flags | irqf;
    }

    /// Write register A or B, starting or stopping the clock as they say.
    fn write_control(&mut self, index: usize, value: u8) {
        let was_frozen = self.frozen();
        let was_running = self.running();
        if !was_frozen {
            self.store_clock();
        }
        self.cmos[index] = value;
        if self.running() && !was_running {
            self.origin = i128::from(self.synced) - RESTART_PHASE_NS;
        }
        if was_frozen && !self.frozen() {
            self.secs = self.parse_clock();
        }
        self.update_irqf();
    }

    fn binary(&self) -> bool {
        self.cmos[REG_B] & B_DM_BINARY != 0
    }

    fn hours_24(&self) -> bool {
        self.cmos[REG_B] & B_24H != 0
    }

    /// A value 0-99 in the register format.
    fn encode(&self, v: i64) -> u8 {
        if self.binary() {
            v as u8
        } else {
            (((v / 10) << 4) | (v % 10)) as u8
        }
    }

    /// A register value as a number; BCD nibbles above 9 keep their binary weight.
    fn decode(&self, v: u8) -> i64 {
        if self.binary() {
            i64::from(v)
        } else {
            i64::from(v >> 4) * 10 + i64::from(v & 0xf)
        }
    }

    fn encode_hour(&self, hour: i64) -> u8 {
        if self.hours_24() {
            return self.encode(hour);
        }
        let h12 = if hour % 12 == 0 { 12 } else { hour % 12 };
        self.encode(h12) | if hour >= 12 { 0x80 } else { 0 }
    }

    /// An hours register as 0-23 (`None` if the clock never shows it).
    fn decode_hour(&self, v: u8) -> Option<i64> {
        if self.hours_24() {
            let h = self.decode(v);
            return (h < 24).then_some(h);
        }
        let h12 = self.decode(v & 0x7f);
        let pm = if v & 0x80 != 0 { 12 } else { 0 };
        (1..=12).contains(&h12).then_some(h12 % 12 + pm)
    }

    /// A clock register generated from `secs`.
    fn clock_register(&self, index: usize) -> u8 {
        let days = self.secs.div_euclid(DAY);
        let time = self.secs.rem_euclid(DAY);
        let (year, month, day) = civil_from_days(days);
        let year = year.rem_euclid(10_000);
        match index {
            SECONDS => self.encode(time % 60),
            MINUTES => self.encode(time / 60 % 60),
            HOURS => self.encode_hour(time / 3600),
            // 1 = Sunday; 1970-01-01 was a Thursday.
            DAY_OF_WEEK => self.encode((days + 4).rem_euclid(7) + 1),
            DAY_OF_MONTH => self.encode(day),
            MONTH => self.encode(month),
            YEAR => self.encode(year % 100),
            CENTURY => self.encode(year / 100),
            _ => self.cmos[index],
        }
    }

    /// Copy the running clock into its registers.
    fn store_clock(&mut self) {
        for index in [
            SECONDS,
            MINUTES,
            HOURS,
            DAY_OF_WEEK,
            DAY_OF_MONTH,
            MONTH,
            YEAR,
            CENTURY,
        ] {
            self.cmos[index] = self.clock_register(index);
        }
    }

    /// The time the clock registers hold, each field decoded in the current format and
    /// carried arithmetically when out of range.
    fn parse_clock(&self) -> i64 {
        let field = |index: usize| self.decode(self.cmos[index]);
        let hours_byte = self.cmos[HOURS];
        let hour = if self.hours_24() {
            field(HOURS)
        } else {
            self.decode(hours_byte & 0x7f) % 12 + if hours_byte & 0x80 != 0 { 12 } else { 0 }
        };
        let months = (field(CENTURY) * 100 + field(YEAR)) * 12 + field(MONTH) - 1;
        let days = days_from_civil(months.div_euclid(12), months.rem_euclid(12) + 1, 1)
            + field(DAY_OF_MONTH)
            - 1;
        days * DAY + hour * 3600 + field(MINUTES) * 60 + field(SECONDS)
    }

    fn alarm_field(&self, index: usize, limit: i64) -> AlarmField {
        let v = self.cmos[index];
        if v & 0xc0 == 0xc0 {
            return AlarmField::Any;
        }
        let decoded = if index == HOURS_ALARM {
            self.decode_hour(v)
        } else {
            Some(self.decode(v)).filter(|&x| x < limit)
        };
        decoded.map_or(AlarmField::Never, AlarmField::At)
    }

    /// The first time after `t` (seconds since 1970) that the alarm registers match.
    fn next_alarm_after(&self, t: i64) -> Option<i64> {
        let hour = self.alarm_field(HOURS_ALARM, 24);
        let minute = self.alarm_field(MINUTES_ALARM, 60);
        let second = self.alarm_field(SECONDS_ALARM, 60);
        if [hour, minute, second].contains(&AlarmField::Never) {
            return None;
        }
        let day = t.div_euclid(DAY) * DAY;
        let time = t.rem_euclid(DAY);
        let (h0, m0, s0) = (time / 3600, time / 60 % 60, time % 60);
        let at = |h: i64, m: i64, s: i64| h * 3600 + m * 60 + s;
        // The earliest match later today: same hour and minute, then same hour, then a
        // later hour; else the first match of tomorrow.
        let same_minute = (hour.matches(h0) && minute.matches(m0))
            .then(|| second.first_from(s0 + 1, 60).map(|s| at(h0, m0, s)))
            .flatten();
        let same_hour = || {
            if !hour.matches(h0) {
                return None;
            }
            let m = minute.first_from(m0 + 1, 60)?;
            Some(at(h0, m, second.first_from(0, 60)?))
        };
        let later_hour = |from: i64| {
            let h = hour.first_from(from, 24)?;
            Some(at(h, minute.first_from(0, 60)?, second.first_from(0, 60)?))
        };
        match same_minute
            .or_else(same_hour)
            .or_else(|| later_hour(h0 + 1))
        {
            Some(x) => Some(day + x),
            None => Some(day + DAY + later_hour(0)?),
        }
    }
}

impl crate::devices::SavedState for Rtc {
    fn check_state(&self) -> Result<(), (&'static str, alloc::string::String)> {
        if usize::from(self.index) >= self.cmos.len() {
            return Err((
                "index",
                alloc::format!("{} (expected below 128)", self.index),
            ));
        }
        // Seconds since 1970 within ±2^40 (some 35,000 years) and an origin within the
        // saved-clock range keep the clock arithmetic far from overflowing.
        if self.secs.unsigned_abs() >= 1 << 40 {
            return Err(("secs", alloc::format!("{} is out of range", self.secs)));
        }
        if self.origin.unsigned_abs() >= 1 << 63 {
            return Err(("origin", alloc::format!("{} is out of range", self.origin)));
        }
        crate::devices::check_time("synced", self.synced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX: u16 = 0;
    const DATA: u16 = 1;
    /// 2024-02-29 23:59:58 UTC, a Thursday.
    const LEAP_EVE: u64 = 1_709_251_198;
    const T0: u64 = 5_000_000_000;
    const MS: u64 = 1_000_000;

    /// The divider arithmetic in 64 bits gives what the 128-bit divisions give, on both
    /// sides of the origin, at second and divider-cycle boundaries and beyond 64 bits.
    #[test]
    fn divider_arithmetic_matches_128_bit_division() {
        let mut rtc = Rtc::new(&config(), 0, 0);
        let ds: [i128; 14] = [
            0,
            1,
            -1,
            30_517,
            30_518,
            -30_518,
            999_999_999,
            1_000_000_000,
            -1_000_000_000,
            -1_000_000_001,
            123_456_789_012_345,
            i128::from(i64::MAX),
            i128::from(i64::MIN),
            i128::from(u64::MAX) + 5,
        ];
        for origin in [0i128, 7, -(1 << 70), i128::from(u64::MAX) / 3] {
            rtc.origin = origin;
            for d in ds {
                let t = origin + d;
                let Ok(t) = u64::try_from(t) else {
                    continue;
                };
                let d = i128::from(t) - origin;
                assert_eq!(rtc.second_index(t), d.div_euclid(NS), "{origin} {d}");
                assert_eq!(
                    rtc.divider_ticks(t),
                    (d * DIVIDER_HZ).div_euclid(NS),
                    "{origin} {d}"
                );
            }
            for t in [0u64, 1, 999_999_999, 1 << 40, u64::MAX] {
                let d = i128::from(t) - origin;
                assert_eq!(
                    split_seconds(d),
                    (d.div_euclid(NS), d.rem_euclid(NS) as u64)
                );
                assert_eq!(rtc.divider_ticks(t), (d * DIVIDER_HZ).div_euclid(NS));
            }
        }
    }

    fn config() -> CmosConfig {
        CmosConfig {
            ram_below_4g: 256 << 20,
            ram_above_4g: 0,
            cpus: 1,
        }
    }

    /// An RTC whose clock reads `secs` + `frac_ns` at machine time T0.
    fn rtc_at(secs: u64, frac_ns: u64) -> Rtc {
        Rtc::new(&config(), secs * 1_000_000_000 + frac_ns, T0)
    }

    fn get(rtc: &mut Rtc, index: u8, now: u64) -> u8 {
        rtc.write(INDEX, index, now);
        rtc.read(DATA, now)
    }

    fn put(rtc: &mut Rtc, index: u8, value: u8, now: u64) {
        rtc.write(INDEX, index, now);
        rtc.write(DATA, value, now);
    }

    /// Seconds, minutes, hours, day of week, day of month, month, year, century.
    fn clock(rtc: &mut Rtc, now: u64) -> [u8; 8] {
        [0, 2, 4, 6, 7, 8, 9, 0x32].map(|i| get(rtc, i, now))
    }

    #[test]
    fn calendar_arithmetic() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        for z in (-800_000..3_000_000).step_by(997) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }

    #[test]
    fn power_on_state() {
        let mut rtc = rtc_at(LEAP_EVE, 0);
        assert_eq!(get(&mut rtc, 0x0a, T0), 0x26);
        assert_eq!(get(&mut rtc, 0x0b, T0), 0x02);
        assert_eq!(get(&mut rtc, 0x0c, T0), 0x00);
        assert_eq!(get(&mut rtc, 0x0d, T0), 0x80);
        assert_eq!(
            clock(&mut rtc, T0),
            [0x58, 0x59, 0x23, 0x05, 0x29, 0x02, 0x24, 0x20]
        );
        assert!(!rtc.irq_level());
        assert_eq!(rtc.next_deadline(), None);
    }

    #[test]
    fn updates_once_a_second_across_a_leap_day_and_a_century() {
        let mut rtc = rtc_at(LEAP_EVE, 250 * MS);
        // The next update is 750 ms away: the sub-second phase of the wall clock.
        assert_eq!(get(&mut rtc, 0, T0 + 749 * MS), 0x58);
        assert_eq!(get(&mut rtc, 0, T0 + 750 * MS), 0x59);
        assert_eq!(
            clock(&mut rtc, T0 + 1750 * MS),
            [0x00, 0x00, 0x00, 0x06, 0x01, 0x03, 0x24, 0x20]
        );
        // 1999-12-31 23:59:59 to 2000-01-01, a Saturday.
        let mut rtc = rtc_at(946_684_799, 0);
        assert_eq!(
            clock(&mut rtc, T0 + 1000 * MS),
            [0x00, 0x00, 0x00, 0x07, 0x01, 0x01, 0x00, 0x20]
        );
        // The flags are set with their interrupts disabled, and raise none: UF by the
        // update, PF by the 1024 Hz rate register A selects, AF because the alarm
        // registers (all 0) match midnight.
        assert_eq!(get(&mut rtc, 0x0c, T0 + 1000 * MS), C_PF | C_AF | C_UF);
        assert!(!rtc.irq_level());
    }

    #[test]
    fn binary_and_12_hour_formats() {
        // 23:59:58 on 2024-02-29.
        let mut rtc = rtc_at(LEAP_EVE, 0);
        put(&mut rtc, 0x0b, 0x00, T0); // BCD, 12-hour
        assert_eq!(get(&mut rtc, 4, T0), 0x91);
        put(&mut rtc, 0x0b, 0x04, T0); // binary, 12-hour
        assert_eq!(get(&mut rtc, 4, T0), 0x80 | 11);
        put(&mut rtc, 0x0b, 0x06, T0); // binary, 24-hour
        assert_eq!(clock(&mut rtc, T0), [58, 59, 23, 5, 29, 2, 24, 20]);
        // Midnight and noon in 12-hour mode: 12 AM and 12 PM.
        put(&mut rtc, 0x0b, 0x00, T0);
        assert_eq!(get(&mut rtc, 4, T0 + 2000 * MS), 0x12);
        let mut noon = rtc_at(LEAP_EVE + 12 * 3600 + 2, 0);
        put(&mut noon, 0x0b, 0x00, T0);
        assert_eq!(get(&mut noon, 4, T0), 0x92);
        let mut one_am = rtc_at(LEAP_EVE + 3600 + 2, 0);
        put(&mut one_am, 0x0b, 0x04, T0);
        assert_eq!(get(&mut one_am, 4, T0), 1);
    }

    #[test]
    fn uip_is_set_for_244_us_before_each_update() {
        let mut rtc = rtc_at(LEAP_EVE, 0);
        let update = T0 + 1000 * MS;
        assert_eq!(get(&mut rtc, 0x0a, update - UIP_WINDOW_NS), 0x26);
        assert_eq!(get(&mut rtc, 0x0a, update - UIP_WINDOW_NS + 1), 0xa6);
        assert_eq!(get(&mut rtc, 0, update - 1), 0x58);
        assert_eq!(get(&mut rtc, 0x0a, update - 1), 0xa6);
        assert_eq!(get(&mut rtc, 0x0a, update), 0x26);
        assert_eq!(get(&mut rtc, 0, update), 0x59);
        // UIP is read-only; SET keeps it clear.
        put(&mut rtc, 0x0a, 0xa6, update);
        assert_eq!(get(&mut rtc, 0x0a, update), 0x26);
        put(&mut rtc, 0x0b, 0x82, update);
        assert_eq!(get(&mut rtc, 0x0a, update + 1000 * MS - 1), 0x26);
    }

    /// Linux's `mc146818_get_time`: seconds, UIP, seconds again, the rest, UIP again.
    #[test]
    fn linux_get_time_sees_a_consistent_time() {
        let mut rtc = rtc_at(LEAP_EVE, 999_900_000);
        let mut now = T0;
        let time = loop {
            let sec = get(&mut rtc, 0, now);
            now += 2_000;
            if get(&mut rtc, 0x0a, now) & 0x80 != 0 {
                now += MS; // mdelay(1)
                continue;
            }
            let rest = clock(&mut rtc, now);
            if sec != rest[0] || get(&mut rtc, 0x0a, now) & 0x80 != 0 {
                continue;
            }
            break rest;
        };
        assert_eq!(time, [0x59, 0x59, 0x23, 0x05, 0x29, 0x02, 0x24, 0x20]);
        assert!(now > T0 + 100_000, "waited out the update");
    }

    /// Linux's `mc146818_set_time`: SET, divider reset, the fields, then B and A restored.
    #[test]
    fn linux_set_time_and_the_divider_restart() {
        let mut rtc = rtc_at(LEAP_EVE, 0);
        let now = T0 + 300 * MS;
        let b = get(&mut rtc, 0x0b, now);
        put(&mut rtc, 0x0b, b | 0x80, now);
        let a = get(&mut rtc, 0x0a, now);
        put(&mut rtc, 0x0a, a | 0x60, now);
        // 2031-07-04 12:34:56, a Friday.
        for (index, value) in [
            (9, 0x31),
            (8, 0x07),
            (7, 0x04),
            (4, 0x12),
            (2, 0x34),
            (0, 0x56),
        ] {
            put(&mut rtc, index, value, now);
        }
        put(&mut rtc, 0x32, 0x20, now);
        // Stopped: the registers read what was written, and time stands still.
        assert_eq!(get(&mut rtc, 0, now + 5000 * MS), 0x56);
        put(&mut rtc, 0x0b, b, now + 5000 * MS);
        assert_eq!(get(&mut rtc, 0, now + 6000 * MS), 0x56);
        let start = now + 6000 * MS;
        put(&mut rtc, 0x0a, a, start);
        // The first update comes 500 ms after the divider restarts.
        assert_eq!(get(&mut rtc, 0, start + 499 * MS), 0x56);
        assert_eq!(
            clock(&mut rtc, start + 500 * MS),
            [0x57, 0x34, 0x12, 0x06, 0x04, 0x07, 0x31, 0x20]
        );
        assert_eq!(get(&mut rtc, 0, start + 1500 * MS), 0x58);
    }

    #[test]
    fn time_written_while_running_takes_effect_at_once() {
        let mut rtc = rtc_at(LEAP_EVE, 400 * MS);
        put(&mut rtc, 0, 0x30, T0 + 100 * MS);
        assert_eq!(get(&mut rtc, 0, T0 + 100 * MS), 0x30);
        // The phase is kept: the next update is still 600 ms after T0.
        assert_eq!(get(&mut rtc, 0, T0 + 599 * MS), 0x30);
        assert_eq!(get(&mut rtc, 0, T0 + 600 * MS), 0x31);
        // An out-of-range field carries: day 0x31 of February is March 2nd.
        put(&mut rtc, 7, 0x31, T0 + 600 * MS);
        assert_eq!(get(&mut rtc, 7, T0 + 600 * MS), 0x02);
        assert_eq!(get(&mut rtc, 8, T0 + 600 * MS), 0x03);
    }

    #[test]
    fn periodic_interrupt_rates() {
        // RS -> period in ns: 1024 Hz, 8192 Hz, 256 Hz, 128 Hz, 2 Hz.
        for (rs, period) in [
            (6u8, 976_562.5f64),
            (3, 122_070.312_5),
            (1, 3_906_250.0),
            (2, 7_812_500.0),
            (15, 500_000_000.0),
        ] {
            let mut rtc = rtc_at(LEAP_EVE, 0);
            put(&mut rtc, 0x0a, 0x20 | rs, T0);
            put(&mut rtc, 0x0b, 0x42, T0);
            let mut edges = 0;
            let mut now = T0;
            // Follow next_deadline for ten periods, clearing C each time as Linux does.
            for _ in 0..10 {
                let deadline = rtc.next_deadline().expect("periodic deadline");
                assert!(!rtc.irq_level());
                rtc.update(deadline - 1);
                assert!(!rtc.irq_level(), "rs {rs}: early");
                rtc.update(deadline);
                assert!(rtc.irq_level(), "rs {rs}");
                assert_eq!(rtc.next_deadline(), None);
                assert_eq!(get(&mut rtc, 0x0c, deadline) & 0xc0, 0xc0);
                assert!(!rtc.irq_level());
                edges += 1;
                now = deadline;
            }
            let measured = (now - T0) as f64 / f64::from(edges);
            assert!((measured - period).abs() < 1.0, "rs {rs}: {measured}");
        }
    }

    #[test]
    fn periodic_flag_without_pie_raises_no_interrupt() {
        let mut rtc = rtc_at(LEAP_EVE, 0);
        rtc.update(T0 + MS);
        assert!(!rtc.irq_level());
        assert_eq!(rtc.next_deadline(), None);
        assert_eq!(get(&mut rtc, 0x0c, T0 + MS), C_PF);
        // Enabling PIE with PF already set raises IRQF at once.
        rtc.update(T0 + 2 * MS);
        put(&mut rtc, 0x0b, 0x42, T0 + 2 * MS);
        assert!(rtc.irq_level());
        // Disabling it lowers IRQF again (PF stays).
        put(&mut rtc, 0x0b, 0x02, T0 + 2 * MS);
        assert!(!rtc.irq_level());
        assert_eq!(get(&mut rtc, 0x0c, T0 + 2 * MS), C_PF);
        // RS = 0: no periodic flag at all; divider in reset: neither.
        put(&mut rtc, 0x0a, 0x20, T0 + 2 * MS);
        rtc.update(T0 + 10 * MS);
        assert_eq!(get(&mut rtc, 0x0c, T0 + 10 * MS), 0);
        put(&mut rtc, 0x0a, 0x66, T0 + 10 * MS);
        assert_eq!(get(&mut rtc, 0x0c, T0 + 3000 * MS), 0);
    }

    #[test]
    fn update_ended_interrupt_and_set_clears_uie() {
        let mut rtc = rtc_at(LEAP_EVE, 100 * MS);
        put(&mut rtc, 0x0a, 0x20, T0);
        put(&mut rtc, 0x0b, 0x12, T0);
        assert_eq!(rtc.next_deadline(), Some(T0 + 900 * MS));
        rtc.update(T0 + 900 * MS);
        assert!(rtc.irq_level());
        assert_eq!(get(&mut rtc, 0x0c, T0 + 900 * MS), 0x90);
        assert_eq!(rtc.next_deadline(), Some(T0 + 1900 * MS));
        // SET stops the updates and clears UIE.
        put(&mut rtc, 0x0b, 0x92, T0 + 1000 * MS);
        assert_eq!(get(&mut rtc, 0x0b, T0 + 1000 * MS), 0x82);
        rtc.update(T0 + 5000 * MS);
        assert_eq!(get(&mut rtc, 0x0c, T0 + 5000 * MS), 0);
    }

    #[test]
    fn alarm_interrupt() {
        let mut rtc = rtc_at(LEAP_EVE, 0);
        put(&mut rtc, 0x0a, 0x20, T0);
        // 00:00:05 on the next day: 7 updates away.
        put(&mut rtc, 1, 0x05, T0);
        put(&mut rtc, 3, 0x00, T0);
        put(&mut rtc, 5, 0x00, T0);
        put(&mut rtc, 0x0b, 0x22, T0);
        assert_eq!(rtc.next_deadline(), Some(T0 + 7000 * MS));
        rtc.update(T0 + 6999 * MS);
        assert!(!rtc.irq_level());
        rtc.update(T0 + 7000 * MS);
        assert!(rtc.irq_level());
        assert_eq!(get(&mut rtc, 0x0c, T0 + 7000 * MS), 0xb0);
        // Next match: a day later.
        assert_eq!(rtc.next_deadline(), Some(T0 + 7000 * MS + 86_400_000 * MS));
        // Skipping past it in one step still sets AF.
        rtc.update(T0 + 3 * 86_400_000 * MS);
        assert_eq!(get(&mut rtc, 0x0c, T0 + 3 * 86_400_000 * MS), 0xb0);
    }

    #[test]
    fn alarm_dont_care_values() {
        let mut rtc = rtc_at(LEAP_EVE, 0);
        put(&mut rtc, 0x0a, 0x20, T0);
        put(&mut rtc, 0x0b, 0x22, T0);
        // Every second: all three don't care.
        for index in [1, 3, 5] {
            put(&mut rtc, index, 0xff, T0);
        }
        assert_eq!(rtc.next_deadline(), Some(T0 + 1000 * MS));
        // At second 30 of every minute, in 12-hour binary mode.
        put(&mut rtc, 1, 30, T0);
        put(&mut rtc, 0x0b, 0x20, T0);
        put(&mut rtc, 0x0b, 0x24, T0);
        assert_eq!(rtc.next_deadline(), Some(T0 + 32_000 * MS));
        // At 01:xx:00 PM only (12-hour binary 0x81): 13:00:00 next day.
        put(&mut rtc, 1, 0, T0);
        put(&mut rtc, 3, 0xc0, T0);
        put(&mut rtc, 5, 0x81, T0);
        assert_eq!(rtc.next_deadline(), Some(T0 + (2 + 13 * 3600) * 1000 * MS));
        // An alarm the clock never shows (hour 13 in 12-hour mode) never fires.
        put(&mut rtc, 5, 13, T0);
        assert_eq!(rtc.next_deadline(), None);
        rtc.update(T0 + 10 * 86_400_000 * MS);
        assert_eq!(get(&mut rtc, 0x0c, T0 + 10 * 86_400_000 * MS), C_UF);
    }

    #[test]
    fn register_c_read_clears_and_c_d_are_read_only() {
        let mut rtc = rtc_at(LEAP_EVE, 0);
        put(&mut rtc, 0x0b, 0x52, T0);
        rtc.update(T0 + 1000 * MS);
        assert!(rtc.irq_level());
        put(&mut rtc, 0x0c, 0x00, T0 + 1000 * MS);
        assert!(rtc.irq_level());
        put(&mut rtc, 0x0d, 0x00, T0 + 1000 * MS);
        assert_eq!(get(&mut rtc, 0x0d, T0 + 1000 * MS), 0x80);
        assert_eq!(get(&mut rtc, 0x0c, T0 + 1000 * MS), 0xd0);
        assert!(!rtc.irq_level());
        assert_eq!(get(&mut rtc, 0x0c, T0 + 1000 * MS), 0);
    }

    #[test]
    fn index_port_nmi_mask_and_memory() {
        let mut rtc = rtc_at(LEAP_EVE, 0);
        assert!(!rtc.nmi_masked());
        // Index 0x8f selects 0x0f with NMIs masked.
        rtc.write(INDEX, 0x8f, T0);
        assert!(rtc.nmi_masked());
        rtc.write(DATA, 0xa5, T0);
        assert_eq!(get(&mut rtc, 0x0f, T0), 0xa5);
        assert!(!rtc.nmi_masked());
        assert_eq!(rtc.read(INDEX, T0), 0xff);
        assert_eq!(rtc.read(7, T0), 0xff);
        rtc.write(7, 0, T0);
        // Every memory byte holds what is written.
        for index in (0x0e..0x80u8).filter(|&i| i != 0x32) {
            put(&mut rtc, index, index ^ 0x5a, T0);
        }
        for index in (0x0e..0x80u8).filter(|&i| i != 0x32) {
            assert_eq!(get(&mut rtc, index, T0), index ^ 0x5a);
        }
    }

    #[test]
    fn memory_size_bytes_and_checksum() {
        let mut rtc = Rtc::new(
            &CmosConfig {
                ram_below_4g: 0xc000_0000,
                ram_above_4g: 3 << 30,
                cpus: 4,
            },
            0,
            0,
        );
        let word = |rtc: &mut Rtc, at: u8| {
            u16::from(get(rtc, at, 0)) | u16::from(get(rtc, at + 1, 0)) << 8
        };
        assert_eq!(word(&mut rtc, 0x15), 640);
        assert_eq!(word(&mut rtc, 0x17), 0xffff);
        assert_eq!(word(&mut rtc, 0x30), 0xffff);
        // (3 GiB - 16 MiB) / 64 KiB = 48896.
        assert_eq!(word(&mut rtc, 0x34), 48_896);
        // 3 GiB / 64 KiB = 0x00c000 blocks.
        assert_eq!(
            [
                get(&mut rtc, 0x5b, 0),
                get(&mut rtc, 0x5c, 0),
                get(&mut rtc, 0x5d, 0)
            ],
            [0x00, 0xc0, 0x00]
        );
        assert_eq!(get(&mut rtc, 0x5f, 0), 3);
        assert_eq!(get(&mut rtc, 0x14, 0), 0x06);
        let sum: u16 = (0x10..=0x2d).map(|i| u16::from(get(&mut rtc, i, 0))).sum();
        assert_eq!(word(&mut rtc, 0x2e).swap_bytes(), sum);
        assert_eq!(sum, 0x06 + 0x80 + 0x02 + 0xff + 0xff);
        // A small machine: 20 MiB.
        let mut small = Rtc::new(
            &CmosConfig {
                ram_below_4g: 20 << 20,
                ram_above_4g: 0,
                cpus: 1,
            },
            0,
            0,
        );
        assert_eq!(word(&mut small, 0x17), 19 * 1024);
        assert_eq!(word(&mut small, 0x30), 19 * 1024);
        assert_eq!(word(&mut small, 0x34), 64);
        assert_eq!(get(&mut small, 0x5f, 0), 0);
    }

    #[test]
    fn huge_elapsed_time() {
        let mut rtc = rtc_at(LEAP_EVE, 0);
        put(&mut rtc, 0x0b, 0x72, T0);
        rtc.update(u64::MAX);
        assert_eq!(get(&mut rtc, 0x0c, u64::MAX), 0xf0);
        // 2^64 ns is 584.5 years: the clock reads a date in 2608.
        assert_eq!(get(&mut rtc, 0x32, u64::MAX), 0x26);
        assert_eq!(rtc.next_deadline(), Some(u64::MAX));
        let _ = clock(&mut rtc, u64::MAX);
    }

    /// Whatever the registers say, IRQ 8 rises exactly at `next_deadline`, and never when
    /// it says `None`.
    #[test]
    fn next_deadline_agrees_with_the_flags() {
        let mut rtc = rtc_at(LEAP_EVE, 123_456_789);
        let mut x = 0x5eed_1234u32;
        let mut now = T0;
        let mut checked = 0;
        for _ in 0..5_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            now += u64::from(x % 300_000_000);
            let value = (x >> 8) as u8;
            match x % 8 {
                // Rate select and divider.
                0 => put(&mut rtc, 0x0a, value & 0x7f, now),
                // Interrupt enables and formats (SET only rarely).
                1 => put(
                    &mut rtc,
                    0x0b,
                    value & if x & 0x100 != 0 { 0xff } else { 0x7f },
                    now,
                ),
                // Alarm registers, often "don't care".
                2 => put(
                    &mut rtc,
                    [1, 3, 5][(x >> 20) as usize % 3],
                    value | if x & 1 != 0 { 0xc0 } else { 0 },
                    now,
                ),
                3 => {
                    get(&mut rtc, 0x0c, now);
                }
                _ => rtc.update(now),
            }
            let horizon = now + 3 * 86_400_000 * MS;
            match rtc.next_deadline() {
                Some(deadline) => {
                    assert!(!rtc.irq_level());
                    assert!(deadline > now);
                    let mut before = rtc.clone();
                    before.update(deadline - 1);
                    assert!(!before.irq_level(), "{before:?}");
                    let mut at = rtc.clone();
                    at.update(deadline);
                    assert!(at.irq_level(), "{at:?}");
                    checked += 1;
                }
                None if !rtc.irq_level() => {
                    let mut later = rtc.clone();
                    later.update(horizon);
                    assert!(!later.irq_level(), "{later:?}");
                }
                None => {}
            }
        }
        assert!(checked > 200, "{checked}");
    }

    #[test]
    fn hostile_register_values_never_panic() {
        let mut rtc = rtc_at(LEAP_EVE, 0);
        let mut x = 0x9e37_79b9u32;
        let mut now = T0;
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            now += u64::from(x % 5_000_000);
            let value = (x >> 8) as u8;
            match x % 5 {
                0 => rtc.write(INDEX, value, now),
                1 | 2 => rtc.write(DATA, value, now),
                3 => {
                    rtc.read(DATA, now);
                }
                _ => {
                    rtc.update(now);
                    if let Some(deadline) = rtc.next_deadline() {
                        assert!(deadline > now);
                    }
                }
            }
        }
        // Invalid BCD everywhere, then the clock restarts from it.
        put(&mut rtc, 0x0b, 0x82, now);
        for index in [0, 2, 4, 7, 8, 9, 0x32] {
            put(&mut rtc, index, 0xff, now);
        }
        put(&mut rtc, 0x0a, 0x26, now);
        put(&mut rtc, 0x0b, 0x02, now);
        let time = clock(&mut rtc, now + 3000 * MS);
        for byte in time {
            assert!(byte >> 4 <= 9 && byte & 0xf <= 9, "{time:x?}");
        }
    }
}
