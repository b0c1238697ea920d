//! core's `Platform` on bare metal: the TSC as the clock, host COM1 as the console.

use crate::console_input::ConsoleInput;
use crate::cpu::rdtsc;
use crate::host_cpu;
use crate::serial;
use opsvisor_bare::port::{inb, outb};
use opsvisor_core::platform::Platform;

/// PIT input clock, Hz.
const PIT_HZ: u64 = 1_193_182;
/// Calibration interval: 10 ms of PIT ticks.
const PIT_TICKS: u16 = 11_932;
/// Give up on the PIT after this many TSC ticks (a PIT that never counts; 10 ms at
/// 100 GHz is far more than any real or emulated CPU needs).
const PIT_GIVE_UP_TSC: u64 = 1_000_000_000;
/// Assumed TSC rate when neither the PIT nor CPUID gives one.
const FALLBACK_HZ: u64 = 1_000_000_000;

/// How the TSC frequency was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockSource {
    /// Measured against PIT channel 2.
    Pit,
    /// CPUID leaf 0x15 (crystal clock ratio).
    Cpuid15,
    /// CPUID leaf 0x16 (base frequency).
    Cpuid16,
    /// Nothing worked: assumed.
    Assumed,
}

impl ClockSource {
    /// The source's name for the log.
    pub fn name(self) -> &'static str {
        match self {
            ClockSource::Pit => "PIT",
            ClockSource::Cpuid15 => "CPUID 0x15",
            ClockSource::Cpuid16 => "CPUID 0x16",
            ClockSource::Assumed => "assumed",
        }
    }
}

/// Count 10 ms on PIT channel 2 (one-shot, gate from port 0x61, no speaker) and return
/// the TSC ticks they took, or `None` when the PIT's output never rises.
fn measure_pit() -> Option<u64> {
    let gate = inb(0x61);
    // Gate on (bit 0), speaker data off (bit 1).
    outb(0x61, (gate & !0x02) | 0x01);
    // Channel 2, lobyte/hibyte, mode 0 (interrupt on terminal count), binary.
    outb(0x43, 0xB0);
    outb(0x42, PIT_TICKS as u8);
    outb(0x42, (PIT_TICKS >> 8) as u8);
    // Restart the count: gate low then high.
    let g = inb(0x61) & !0x01;
    outb(0x61, g);
    outb(0x61, g | 0x01);
    let start = rdtsc();
    let result = loop {
        let now = rdtsc();
        // OUT2 (bit 5) goes high at terminal count.
        if inb(0x61) & 0x20 != 0 {
            break Some(now.wrapping_sub(start));
        }
        if now.wrapping_sub(start) > PIT_GIVE_UP_TSC {
            break None;
        }
    };
    outb(0x61, gate);
    result.filter(|&t| t > 0)
}

/// The TSC frequency in Hz and where it came from.
pub fn tsc_hz() -> (u64, ClockSource) {
    if let Some(ticks) = measure_pit() {
        return (ticks * PIT_HZ / u64::from(PIT_TICKS), ClockSource::Pit);
    }
    if let Some(hz) = host_cpu::tsc_hz_from_tsc_leaf() {
        return (hz, ClockSource::Cpuid15);
    }
    if let Some(hz) = host_cpu::tsc_hz_from_frequency_leaf() {
        return (hz, ClockSource::Cpuid16);
    }
    (FALLBACK_HZ, ClockSource::Assumed)
}

/// The bare-metal platform.
pub struct BareMetal {
    tsc_base: u64,
    /// ns per TSC tick as a 32.32 fixed-point number.
    ns_per_tick: u64,
    /// Whether a guest with nothing to wake it but console input waits for that input
    /// (`interactive` on the image's command line); otherwise it stops at once, as the
    /// test harness wants.
    interactive: bool,
    /// Console input given on the command line (`console-input=`), read before COM1's.
    preset: ConsoleInput,
}

impl BareMetal {
    /// Console input that the guest reads before anything that arrives on COM1.
    pub fn with_input(mut self, input: ConsoleInput) -> BareMetal {
        self.preset = input;
        self
    }

    /// A platform whose clock runs at `hz` TSC ticks per second from now.
    pub fn new(hz: u64, interactive: bool) -> BareMetal {
        let hz = hz.max(1);
        let ns_per_tick = ((1_000_000_000u128 << 32) / u128::from(hz)) as u64;
        BareMetal {
            tsc_base: rdtsc(),
            ns_per_tick,
            interactive,
            preset: ConsoleInput::default(),
        }
    }
}

impl Platform for BareMetal {
    fn now_ns(&self) -> u64 {
        let ticks = rdtsc().wrapping_sub(self.tsc_base);
        ((u128::from(ticks) * u128::from(self.ns_per_tick)) >> 32) as u64
    }

    fn wait(&mut self, deadline_ns: Option<u64>) -> bool {
        if self.preset.pending() {
            return true;
        }
        match deadline_ns {
            // Interrupts stay off on the host: poll the UART and the clock.
            Some(deadline) => loop {
                if serial::input_ready() || self.now_ns() >= deadline {
                    return true;
                }
                core::hint::spin_loop();
            },
            None if self.interactive => loop {
                if serial::input_ready() {
                    return true;
                }
                core::hint::spin_loop();
            },
            None => serial::input_ready(),
        }
    }

    fn console_write(&mut self, bytes: &[u8]) {
        serial::write_raw(bytes);
    }

    fn console_read(&mut self) -> Option<u8> {
        self.preset.take().or_else(serial::read_byte)
    }

    fn console_input_possible(&mut self) -> bool {
        // Without `interactive` nobody is expected to type: a guest waiting for input
        // stops, as a test harness wants.
        self.interactive || self.preset.pending() || serial::input_ready()
    }

    fn console_input_ready(&mut self) -> bool {
        self.preset.pending() || serial::input_ready()
    }
}
