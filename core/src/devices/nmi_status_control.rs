//! Port 0x61, the NMI status and control register (PIIX4's NMISC; the PC/AT's "system
//! control port B").
//!
//! Its own device because on the PC it is one: the chipset holds it, and it only borrows
//! two of the 8254's pins. Bit 0 drives PIT channel 2's GATE and bit 5 reads channel 2's
//! OUT, so [`NmiStatusControl::read`] and [`NmiStatusControl::write`] take the
//! [`Pit`] and act on it; the gate's state lives in the PIT alone.
//!
//! | bit | read | write |
//! |---|---|---|
//! | 0 | PIT channel 2 gate | PIT channel 2 gate |
//! | 1 | speaker data enable | stored (no speaker is attached) |
//! | 2 | PCI SERR# NMI disable | stored |
//! | 3 | IOCHK# NMI disable | stored |
//! | 4 | refresh request toggle: flips every 18 PIT clocks (15.09 µs), the AT's DRAM refresh period that firmware delay loops count | ignored |
//! | 5 | PIT channel 2 OUT | ignored |
//! | 6-7 | IOCHK# and SERR# NMI status: 0, this machine has no NMI sources | ignored |

use super::pit::{clock_edges, Pit};

/// The port.
pub const NMI_STATUS_CONTROL_PORT: u16 = 0x61;
/// PIT input clocks per refresh-toggle flip (channel 1's refresh count on the AT).
pub const REFRESH_TOGGLE_CLOCKS: u64 = 18;

const GATE2: u8 = 1 << 0;
/// The bits kept here: speaker data enable, SERR# and IOCHK# NMI disables.
const STORED: u8 = 0b1110;
const REFRESH: u8 = 1 << 4;
const OUT2: u8 = 1 << 5;

/// The register. See the module documentation.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NmiStatusControl {
    /// Bits 1-3 as last written.
    stored: u8,
}

impl NmiStatusControl {
    /// The register after reset: all writable bits clear.
    pub fn new() -> NmiStatusControl {
        NmiStatusControl::default()
    }

    /// Read the port at `now`.
    pub fn read(&self, pit: &mut Pit, now: u64) -> u8 {
        let out2 = pit.out(2, now);
        let refresh = (clock_edges(now) / REFRESH_TOGGLE_CLOCKS) & 1 != 0;
        let mut value = self.stored;
        if pit.gate(2) {
            value |= GATE2;
        }
        if refresh {
            value |= REFRESH;
        }
        if out2 {
            value |= OUT2;
        }
        value
    }

    /// Write the port at `now`: bit 0 sets PIT channel 2's gate.
    pub fn write(&mut self, value: u8, pit: &mut Pit, now: u64) {
        self.stored = value & STORED;
        pit.set_gate(2, value & GATE2 != 0, now);
    }

    /// Whether the speaker would sound: gate and speaker data both enabled (channel 2's
    /// OUT is then the tone).
    pub fn speaker_enabled(&self, pit: &Pit) -> bool {
        pit.gate(2) && self.stored & 0b10 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::pit::edge_time;

    #[test]
    fn bits_read_back_and_drive_the_gate() {
        let mut pit = Pit::new(0);
        let mut port = NmiStatusControl::new();
        let now = edge_time(36); // refresh toggle 0
        assert_eq!(port.read(&mut pit, now) & 0xcf, 0);
        port.write(0xff, &mut pit, now);
        assert!(pit.gate(2));
        assert!(port.speaker_enabled(&pit));
        // Bits 4-7 are not written; 6-7 read 0.
        assert_eq!(port.read(&mut pit, now) & 0xcf, 0x0f);
        port.write(0x02, &mut pit, now);
        assert!(!pit.gate(2));
        assert!(!port.speaker_enabled(&pit));
        assert_eq!(port.read(&mut pit, now) & 0xcf, 0x02);
    }

    #[test]
    fn refresh_toggle_flips_every_15_microseconds() {
        let mut pit = Pit::new(0);
        let port = NmiStatusControl::new();
        let mut flips = 0;
        let mut last = port.read(&mut pit, 0) & REFRESH;
        // 1 ms in 1 µs steps: 1000 / 15.0857 = 66.3 flips.
        for us in 1..=1000 {
            let bit = port.read(&mut pit, us * 1000) & REFRESH;
            if bit != last {
                flips += 1;
            }
            last = bit;
        }
        assert_eq!(flips, 66);
        assert_eq!(port.read(&mut pit, edge_time(17)) & REFRESH, 0);
        assert_eq!(port.read(&mut pit, edge_time(18)) & REFRESH, REFRESH);
        assert_eq!(port.read(&mut pit, edge_time(36)) & REFRESH, 0);
    }

    /// Linux's `pit_calibrate_tsc` / `mach_prepare_counter` + `mach_countup`: set the
    /// gate and clear the speaker through port 0x61, program channel 2 in mode 0, poll bit
    /// 5 until it rises.
    #[test]
    fn linux_channel2_poll_through_port_61() {
        let mut pit = Pit::new(0);
        let mut port = NmiStatusControl::new();
        let mut now = 5_000_000;
        let v = port.read(&mut pit, now);
        port.write((v & !0x02) | 0x01, &mut pit, now);
        pit.write(3, 0xb0, now);
        let latch: u16 = 11932; // CAL_LATCH, 10 ms
        pit.write(2, latch as u8, now);
        pit.write(2, (latch >> 8) as u8, now);
        let start = now;
        let mut polls = 0u32;
        while port.read(&mut pit, now) & OUT2 == 0 {
            now += 700; // one port access on real hardware
            polls += 1;
            assert!(polls < 1_000_000);
        }
        let elapsed = now - start;
        let expected = edge_time(clock_edges(start) + 1 + u64::from(latch)) - start;
        assert!(elapsed >= expected && elapsed < expected + 700, "{elapsed}");
        // The gate follows bit 0: dropping it stops channel 2 (mode 0 holds its count).
        port.write(0, &mut pit, now);
        pit.write(3, 0x80, now);
        let held = u16::from(pit.read(2, now)) | u16::from(pit.read(2, now)) << 8;
        pit.write(3, 0x80, now + 1_000_000);
        let later =
            u16::from(pit.read(2, now + 1_000_000)) | u16::from(pit.read(2, now + 1_000_000)) << 8;
        assert_eq!(held, later);
    }

    /// Linux's `quick_pit_calibrate`, run against the model with the TSC at 1 GHz (one
    /// tick per machine nanosecond) and each port access taking 1 µs: it must see the
    /// MSB of channel 2 step down every 256 clocks and compute the TSC frequency to within
    /// its 500 ppm.
    #[test]
    fn linux_quick_pit_calibrate() {
        struct Machine {
            pit: Pit,
            port: NmiStatusControl,
            now: u64,
        }
        impl Machine {
            fn inb(&mut self, port: u16) -> u8 {
                self.now += 1_000;
                match port {
                    0x61 => self.port.read(&mut self.pit, self.now),
                    _ => self.pit.read(port - 0x40, self.now),
                }
            }
            fn outb(&mut self, value: u8, port: u16) {
                self.now += 1_000;
                match port {
                    0x61 => self.port.write(value, &mut self.pit, self.now),
                    _ => self.pit.write(port - 0x40, value, self.now),
                }
            }
            fn verify_msb(&mut self, value: u8) -> bool {
                self.inb(0x42);
                self.inb(0x42) == value
            }
            /// `pit_expect_msb`: (success, TSC at the last match, delta to the miss).
            fn expect_msb(&mut self, value: u8) -> (bool, u64, u64) {
                let mut count = 0;
                let mut tsc = 0;
                while count < 50_000 {
                    if !self.verify_msb(value) {
                        break;
                    }
                    tsc = self.now;
                    count += 1;
                }
                (count > 5, tsc, self.now - tsc)
            }
        }
        let mut m = Machine {
            pit: Pit::new(0),
            port: NmiStatusControl::new(),
            now: 3_000_000,
        };
        let v = m.inb(0x61);
        m.outb((v & !0x02) | 0x01, 0x61);
        m.outb(0xb0, 0x43);
        m.outb(0xff, 0x42);
        m.outb(0xff, 0x42);
        m.verify_msb(0);
        let (ok, tsc, d1) = m.expect_msb(0xff);
        assert!(ok);
        let max_iterations = 25 * PIT_HZ_FOR_LINUX / 1000 / 256;
        let mut result = None;
        for i in 1..=max_iterations {
            let (ok, at, d2) = m.expect_msb(0xff - i as u8);
            assert!(ok, "MSB {:#x} seen", 0xff - i);
            let delta = at - tsc;
            if d1 + d2 >= delta >> 11 {
                continue;
            }
            assert!(m.verify_msb(0xfe - i as u8));
            let delta = delta as i64 + (d2 as i64 - d1 as i64) / 2;
            result = Some(delta as u64 * PIT_HZ_FOR_LINUX / (i * 256 * 1000));
            break;
        }
        let khz = result.expect("fast calibration converged");
        assert!(khz.abs_diff(1_000_000) <= 500, "{khz} kHz");
    }

    /// Linux's PIT_TICK_RATE.
    const PIT_HZ_FOR_LINUX: u64 = 1_193_182;
}
