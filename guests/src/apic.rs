//! The local APIC, in xAPIC (MMIO) or x2APIC (MSR) mode, and its timer.

use crate::cpu::{cpuid, has_feature, rdmsr, rdtsc, wrmsr};
use core::sync::atomic::{AtomicU64, Ordering};

/// IA32_APIC_BASE.
pub const IA32_APIC_BASE: u32 = 0x1B;
/// IA32_TSC_DEADLINE.
pub const IA32_TSC_DEADLINE: u32 = 0x6E0;
/// APIC_BASE: this CPU is the bootstrap processor.
pub const BASE_BSP: u64 = 1 << 8;
/// APIC_BASE: x2APIC mode.
pub const BASE_EXTD: u64 = 1 << 10;
/// APIC_BASE: APIC globally enabled.
pub const BASE_EN: u64 = 1 << 11;

/// Register offsets (xAPIC MMIO; the x2APIC MSR is 0x800 + offset / 16).
pub mod reg {
    /// Local APIC ID.
    pub const ID: u32 = 0x20;
    /// Version.
    pub const VERSION: u32 = 0x30;
    /// Task priority.
    pub const TPR: u32 = 0x80;
    /// End of interrupt.
    pub const EOI: u32 = 0xB0;
    /// Logical destination.
    pub const LDR: u32 = 0xD0;
    /// Destination format.
    pub const DFR: u32 = 0xE0;
    /// Spurious-interrupt vector (bit 8: APIC software enable).
    pub const SVR: u32 = 0xF0;
    /// In-service register, first of 8.
    pub const ISR0: u32 = 0x100;
    /// LVT timer.
    pub const LVT_TIMER: u32 = 0x320;
    /// LVT LINT0.
    pub const LVT_LINT0: u32 = 0x350;
    /// LVT LINT1.
    pub const LVT_LINT1: u32 = 0x360;
    /// LVT error.
    pub const LVT_ERROR: u32 = 0x370;
    /// Timer initial count.
    pub const TIMER_INITIAL: u32 = 0x380;
    /// Timer current count.
    pub const TIMER_CURRENT: u32 = 0x390;
    /// Timer divide configuration.
    pub const TIMER_DIVIDE: u32 = 0x3E0;
}

/// LVT timer mode: one-shot.
pub const TIMER_ONESHOT: u32 = 0 << 17;
/// LVT timer mode: periodic.
pub const TIMER_PERIODIC: u32 = 1 << 17;
/// LVT timer mode: TSC deadline.
pub const TIMER_TSC_DEADLINE: u32 = 2 << 17;
/// LVT mask bit.
pub const LVT_MASKED: u32 = 1 << 16;

/// How the APIC's registers are reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Apic {
    /// Memory-mapped at this (identity-mapped) physical base.
    X(u64),
    /// Through MSRs 0x800..0x8FF.
    X2,
}

impl Apic {
    /// The APIC in the mode IA32_APIC_BASE says it is in (None: globally disabled).
    pub fn current() -> Option<Apic> {
        let base = rdmsr(IA32_APIC_BASE);
        if base & BASE_EN == 0 {
            None
        } else if base & BASE_EXTD != 0 {
            Some(Apic::X2)
        } else {
            Some(Apic::X(base & 0x000F_FFFF_FFFF_F000))
        }
    }

    /// Read a register.
    pub fn read(self, offset: u32) -> u32 {
        match self {
            // One MOV, as Linux's readl: a volatile read may be folded into another
            // instruction (`test [mem], imm`), which the hardware backends, decoding
            // the instruction behind an MMIO exit, do not take (MOV forms only).
            Apic::X(base) => {
                let value: u32;
                // SAFETY: the xAPIC page is identity-mapped (uncached) by the boot
                // tables; registers are 32-bit aligned. The load reads the register and
                // writes only `value`.
                unsafe {
                    core::arch::asm!(
                        "mov {v:e}, dword ptr [{a}]",
                        a = in(reg) base + u64::from(offset),
                        v = out(reg) value,
                        options(nostack, preserves_flags),
                    )
                };
                value
            }
            Apic::X2 => rdmsr(0x800 + (offset >> 4)) as u32,
        }
    }

    /// Write a register.
    pub fn write(self, offset: u32, v: u32) {
        match self {
            // SAFETY: as for read.
            Apic::X(base) => unsafe {
                core::ptr::write_volatile((base + u64::from(offset)) as *mut u32, v)
            },
            Apic::X2 => wrmsr(0x800 + (offset >> 4), u64::from(v)),
        }
    }

    /// Signal end of interrupt.
    pub fn eoi(self) {
        self.write(reg::EOI, 0);
    }

    /// Software-enable the APIC (SVR bit 8, spurious vector 0xFF) and accept every
    /// priority (TPR 0).
    pub fn enable(self) {
        self.write(reg::SVR, 0x1FF);
        self.write(reg::TPR, 0);
    }
}

/// The local APIC found at boot, kept where interrupt handlers (which are not handed it)
/// read it: the xAPIC base, or 0 for x2APIC mode.
pub struct SharedApic(AtomicU64);

impl SharedApic {
    /// Nothing stored yet (reads as x2APIC until [`SharedApic::set`]).
    pub const fn new() -> Self {
        SharedApic(AtomicU64::new(0))
    }

    /// Keep `apic` for the handlers.
    pub fn set(&self, apic: Apic) {
        let word = match apic {
            Apic::X(base) => base,
            Apic::X2 => 0,
        };
        self.0.store(word, Ordering::SeqCst);
    }

    /// The APIC kept by [`SharedApic::set`].
    pub fn get(&self) -> Apic {
        match self.0.load(Ordering::SeqCst) {
            0 => Apic::X2,
            base => Apic::X(base),
        }
    }
}

impl Default for SharedApic {
    fn default() -> Self {
        Self::new()
    }
}

/// The local APIC, software-enabled, for a guest that takes `what` (an I/O APIC pin's
/// interrupt) through it, kept in `shared` for the handlers, with interrupts left
/// disabled: the guest is skipped without a local APIC and fails when it is globally
/// disabled.
pub fn enable_for_irq(shared: &SharedApic, what: &str) -> Apic {
    if !cpuid_apic() {
        crate::skip!("no local APIC for {what} through the I/O APIC");
    }
    let Some(apic) = Apic::current() else {
        crate::println!("FAIL: the local APIC is globally disabled");
        crate::exit(crate::EXIT_FAIL);
    };
    shared.set(apic);
    apic.enable();
    crate::cpu::cli();
    apic
}

impl Apic {
    /// This CPU's APIC ID as a redirection entry's physical destination takes it (the
    /// xAPIC ID register's top byte, the whole x2APIC ID).
    pub fn id(self) -> u32 {
        match self {
            Apic::X(_) => self.read(reg::ID) >> 24,
            Apic::X2 => self.read(reg::ID),
        }
    }
}

/// Whether CPUID says there is a local APIC (CPUID.1:EDX bit 9).
pub fn cpuid_apic() -> bool {
    cpuid(1, 0).3 & (1 << 9) != 0
}
/// CPUID.1:ECX bit 21.
pub fn cpuid_x2apic() -> bool {
    has_feature(1, 0, 2, 21)
}
/// CPUID.1:ECX bit 24.
pub fn cpuid_tsc_deadline() -> bool {
    has_feature(1, 0, 2, 24)
}

/// The TSC frequency from CPUID 0x15 (or 0x16's base MHz), if the CPU reports one.
pub fn tsc_hz() -> Option<u64> {
    let max = cpuid(0, 0).0;
    if max >= 0x15 {
        let (den, num, crystal, _) = cpuid(0x15, 0);
        if den != 0 && num != 0 && crystal != 0 {
            return Some(u64::from(crystal) * u64::from(num) / u64::from(den));
        }
    }
    if max >= 0x16 {
        let mhz = cpuid(0x16, 0).0 & 0xFFFF;
        if mhz != 0 {
            return Some(u64::from(mhz) * 1_000_000);
        }
    }
    None
}

/// TSC ticks in `ms` milliseconds: from CPUID when it says, else assuming 4 GHz (an upper
/// bound on real clocks, so a timeout computed this way is never shorter than meant).
pub fn tsc_ticks_for_ms(ms: u64) -> u64 {
    tsc_hz().unwrap_or(4_000_000_000) / 1000 * ms
}

/// Spin (interrupts as the caller left them) until `done()` or `ticks` TSC ticks pass.
/// Returns whether `done()` became true.
pub fn spin_until(ticks: u64, mut done: impl FnMut() -> bool) -> bool {
    let start = rdtsc();
    loop {
        if done() {
            return true;
        }
        if rdtsc().wrapping_sub(start) > ticks {
            return done();
        }
        core::hint::spin_loop();
    }
}

/// Timer interrupts counted by [`timer_handler`].
pub static TICKS: AtomicU64 = AtomicU64::new(0);
/// The TSC read in the handler for the latest tick.
pub static LAST_TICK_TSC: AtomicU64 = AtomicU64::new(0);
/// The TSC at the previous tick (for periodic-interval checks).
pub static PREV_TICK_TSC: AtomicU64 = AtomicU64::new(0);

/// An interrupt handler for timer vectors: stamp the TSC, count, EOI.
pub fn timer_handler(_: &mut crate::Frame) {
    let now = rdtsc();
    PREV_TICK_TSC.store(LAST_TICK_TSC.load(Ordering::SeqCst), Ordering::SeqCst);
    LAST_TICK_TSC.store(now, Ordering::SeqCst);
    TICKS.fetch_add(1, Ordering::SeqCst);
    match Apic::current() {
        Some(a) => a.eoi(),
        None => {
            crate::println!("FAIL: timer interrupt with the APIC globally disabled");
            crate::exit(crate::EXIT_FAIL);
        }
    }
}

/// The number of timer ticks so far.
pub fn ticks() -> u64 {
    TICKS.load(Ordering::SeqCst)
}

/// With interrupts enabled, spin until `ticks() >= n` or `ms` milliseconds of TSC pass;
/// interrupts are disabled again on return. Returns whether the ticks arrived.
pub fn wait_ticks_spinning(n: u64, ms: u64) -> bool {
    crate::cpu::sti();
    let ok = spin_until(tsc_ticks_for_ms(ms), || ticks() >= n);
    crate::cpu::cli();
    ok
}

/// Wait with `sti; hlt` until `ticks() >= n`, at most `max_hlts` HLTs and `ms`
/// milliseconds of TSC (checked between HLTs). An armed timer wakes every HLT; if the
/// timer never fires at all, the HLT does not return and the host's run timeout ends
/// the guest, which is a FAIL too. Returns whether the ticks arrived.
pub fn wait_ticks_halting(n: u64, max_hlts: u32, ms: u64) -> bool {
    let start = rdtsc();
    let budget = tsc_ticks_for_ms(ms);
    for _ in 0..max_hlts {
        crate::cpu::cli();
        if ticks() >= n {
            return true;
        }
        if rdtsc().wrapping_sub(start) > budget {
            return false;
        }
        crate::cpu::sti_hlt();
    }
    crate::cpu::cli();
    ticks() >= n
}
