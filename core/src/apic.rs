//! The local APIC (xAPIC MMIO and x2APIC MSRs, timer on the guest's TSC clock).
//!
//! Modelled on Linux KVM's `arch/x86/kvm/lapic.c`; the architecture is Intel SDM 3A
//! chapter 11. One APIC per vCPU, its initial ID the vCPU's index:
//!
//! - **Modes.** IA32_APIC_BASE selects disabled, xAPIC (registers in a 4 KiB MMIO page at
//!   the base address) or x2APIC (registers in MSRs 0x800-0x8ff, the MMIO page no longer
//!   decoded). Transitions follow SDM 11.12.5; disabling resets the APIC to its power-up
//!   state except IA32_APIC_BASE and the APIC ID.
//! - **Version.** [`APIC_VERSION`] = 0x0005_0014: version 0x14 (an integrated xAPIC),
//!   max LVT entry 5, i.e. six LVT registers (timer, thermal, performance, LINT0, LINT1,
//!   error). There is no CMCI LVT because the CPU model reports no machine-check
//!   architecture (MCG_CAP = 0): its MMIO offset reads 0 and its x2APIC MSR (0x82f)
//!   faults, as on a part without CMCI. Directed EOI is not offered (version bit 24 = 0),
//!   so SVR bit 12 is reserved.
//! - **Interrupt sources.** The timer, the error LVT, interrupt messages from the I/O
//!   APIC ([`LocalApic::deliver_message`], routed by [`crate::irq`]), IPIs from any APIC
//!   including itself ([`LocalApic::accept_ipi`]), and the LINT0 and LINT1 pins
//!   ([`LocalApic::set_lint0`], [`LocalApic::set_lint1`]). Thermal and performance have
//!   no source here: their LVTs are plain storage.
//! - **IPIs.** A write to the ICR (or the x2APIC SELF IPI register) sends at once: the
//!   command waits in [`LocalApic::take_ipi`] for the machine to route it
//!   ([`crate::irq::deliver_ipi`]), so the delivery-status bit always reads 0 (idle).
//!   Fixed, lowest-priority, NMI, INIT and start-up are delivered; SMI is not modelled.
//!   INIT and SIPI wait in latches ([`LocalApic::take_init`], [`LocalApic::take_sipi`])
//!   until the receiving vCPU acts on them (KVM's `pending_events`).
//! - **LINT0 and LINT1.** On a PC, LINT0 carries the 8259 PIC's INTR output and LINT1
//!   the NMI line. Their LVTs select what an asserted pin does (SDM 3A 11.5.1): fixed (the
//!   LVT's vector; edge-triggered on the rising edge, or level-triggered with the LVT's
//!   remote IRR set on acceptance and cleared by that vector's EOI, after which a pin
//!   still asserted delivers again), NMI (on the rising edge), or ExtINT (level-sensitive:
//!   while the pin is asserted an external interrupt is pending whose vector comes from
//!   the PIC's INTA cycle, not from IRR: the virtual-wire mode of the MP specification).
//!   Polarity (bit 13) inverts the pin; SMI and INIT are not modelled. While the APIC is
//!   globally disabled (IA32_APIC_BASE.EN clear) the pins bypass it as on a processor
//!   without one: LINT0 is the INTR input and LINT1 the NMI input.
//! - **NMIs** (from LINT0/LINT1, I/O APIC messages and self IPIs) wait in one latch,
//!   [`LocalApic::nmi_pending`], until the run loop injects one; a second NMI that arrives
//!   before the first is injected is merged with it, as in the processor's latch.
//! - **EOI broadcast.** The EOI of a vector whose TMR bit is set (a level-triggered
//!   interrupt) is recorded for the I/O APIC ([`LocalApic::take_eoi_broadcast`]), whose
//!   remote IRR it clears; it also ends a level-triggered LINT0/LINT1 interrupt.
//! - **Timer.** Its input clock is the guest TSC ([`crate::platform::GUEST_TSC_HZ`], one
//!   tick per nanosecond) divided by the divide configuration, so every deadline is a
//!   guest TSC value. One-shot, periodic and TSC-deadline modes; see [`LocalApic::update`].
//!   A periodic period shorter than [`MIN_PERIODIC_TICKS`] is stretched to it (as KVM
//!   does) so a guest cannot make the host spend all its time delivering timer ticks.
//!
//! Only aligned 32-bit accesses to the MMIO page are meaningful: [`LocalApic::mmio_read`]
//! and [`LocalApic::mmio_write`] take the offset of one 32-bit register; an offset that is
//! not 16-byte aligned or names no register reads 0 and ignores writes. The core splits
//! wider accesses into 32-bit ones and merges narrower ones before calling them.
//!
//! Every entry point takes `now` (guest TSC) where time matters and first brings the
//! timer up to date, so a register read sees a timer that has already fired.

use crate::cpuid::PHYS_ADDR_BITS;
use crate::irq::{DeliveryMode, Ipi, IrqMessage, Shorthand};

/// Default xAPIC MMIO base.
pub const APIC_DEFAULT_BASE: u64 = 0xfee0_0000;
/// First x2APIC MSR (0x800); the range is 0x800..=0x8ff.
pub const X2APIC_MSR_FIRST: u32 = 0x800;
/// Last x2APIC MSR.
pub const X2APIC_MSR_LAST: u32 = 0x8ff;

/// The version register: version 0x14, max LVT entry 5 (six LVTs, no CMCI), no directed
/// EOI.
pub const APIC_VERSION: u32 = 0x0005_0014;

/// The shortest period the periodic timer runs with, in guest TSC ticks (10 µs). Shorter
/// programmed periods are stretched to this: a guest could otherwise ask for an interrupt
/// every nanosecond and keep the host busy delivering them (KVM clamps likewise).
pub const MIN_PERIODIC_TICKS: u64 = 10_000;

/// IA32_APIC_BASE bit 8: this is the bootstrap processor.
pub const APIC_BASE_BSP: u64 = 1 << 8;
/// IA32_APIC_BASE bit 10: x2APIC mode enabled.
pub const APIC_BASE_EXTD: u64 = 1 << 10;
/// IA32_APIC_BASE bit 11: APIC globally enabled.
pub const APIC_BASE_EN: u64 = 1 << 11;
/// IA32_APIC_BASE bits 12..MAXPHYADDR: the MMIO page frame.
pub const APIC_BASE_ADDR_MASK: u64 = ((1u64 << PHYS_ADDR_BITS) - 1) & !0xfff;

/// Offsets of the registers in the xAPIC page (the x2APIC MSR is `0x800 + offset / 16`).
pub mod reg {
    /// Local APIC ID.
    pub const ID: u32 = 0x020;
    /// Version.
    pub const VERSION: u32 = 0x030;
    /// Task priority.
    pub const TPR: u32 = 0x080;
    /// Arbitration priority (xAPIC only; reads 0 here).
    pub const APR: u32 = 0x090;
    /// Processor priority (read-only, computed).
    pub const PPR: u32 = 0x0a0;
    /// End of interrupt (write-only).
    pub const EOI: u32 = 0x0b0;
    /// Remote read (not implemented: not a register here).
    pub const RRD: u32 = 0x0c0;
    /// Logical destination.
    pub const LDR: u32 = 0x0d0;
    /// Destination format (xAPIC only).
    pub const DFR: u32 = 0x0e0;
    /// Spurious interrupt vector.
    pub const SVR: u32 = 0x0f0;
    /// In-service register, bits 0-31 (then 0x110 ... 0x170).
    pub const ISR0: u32 = 0x100;
    /// Trigger mode register, bits 0-31 (then 0x190 ... 0x1f0).
    pub const TMR0: u32 = 0x180;
    /// Interrupt request register, bits 0-31 (then 0x210 ... 0x270).
    pub const IRR0: u32 = 0x200;
    /// Error status.
    pub const ESR: u32 = 0x280;
    /// LVT CMCI (absent in this model).
    pub const LVT_CMCI: u32 = 0x2f0;
    /// Interrupt command, low half (the x2APIC MSR 0x830 holds all 64 bits).
    pub const ICR_LOW: u32 = 0x300;
    /// Interrupt command, high half (xAPIC only).
    pub const ICR_HIGH: u32 = 0x310;
    /// LVT timer.
    pub const LVT_TIMER: u32 = 0x320;
    /// LVT thermal sensor.
    pub const LVT_THERMAL: u32 = 0x330;
    /// LVT performance monitoring counters.
    pub const LVT_PERF: u32 = 0x340;
    /// LVT LINT0.
    pub const LVT_LINT0: u32 = 0x350;
    /// LVT LINT1.
    pub const LVT_LINT1: u32 = 0x360;
    /// LVT error.
    pub const LVT_ERROR: u32 = 0x370;
    /// Timer initial count.
    pub const TIMER_INITIAL: u32 = 0x380;
    /// Timer current count (read-only).
    pub const TIMER_CURRENT: u32 = 0x390;
    /// Timer divide configuration.
    pub const TIMER_DIVIDE: u32 = 0x3e0;
    /// SELF IPI (x2APIC only, write-only).
    pub const SELF_IPI: u32 = 0x3f0;
}

/// LVT bit 16: masked.
pub const LVT_MASKED: u32 = 1 << 16;
/// LVT timer mode field (bits 17-18).
pub const LVT_TIMER_MODE_MASK: u32 = 3 << 17;
/// LVT timer mode: periodic.
pub const LVT_TIMER_PERIODIC: u32 = 1 << 17;
/// LVT timer mode: TSC-deadline.
pub const LVT_TIMER_TSC_DEADLINE: u32 = 2 << 17;
/// SVR bit 8: APIC software enabled.
pub const SVR_ENABLE: u32 = 1 << 8;
/// ESR bit 5: an IPI with an illegal vector (0-15) was sent.
pub const ESR_SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
/// ESR bit 6: an interrupt with an illegal vector (0-15) was received (IPI or LVT).
pub const ESR_RECEIVE_ILLEGAL_VECTOR: u32 = 1 << 6;

/// Why an APIC access must raise #GP in the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApicFault;

/// The LVT registers, in register order (index = (offset - 0x320) / 16).
const LVT_COUNT: usize = 6;
const LVT_TIMER: usize = 0;
const LVT_LINT0: usize = 3;
const LVT_ERROR: usize = 5;

/// LVT bits 10:8: delivery mode.
pub const LVT_DELIVERY_MODE_MASK: u32 = 7 << 8;
/// LVT delivery mode: fixed.
pub const LVT_DELIVERY_FIXED: u32 = 0;
/// LVT delivery mode: NMI.
pub const LVT_DELIVERY_NMI: u32 = 4 << 8;
/// LVT delivery mode: ExtINT.
pub const LVT_DELIVERY_EXTINT: u32 = 7 << 8;
/// LVT LINT0/LINT1 bit 13: the pin is active low.
pub const LVT_ACTIVE_LOW: u32 = 1 << 13;
/// LVT LINT0/LINT1 bit 14: remote IRR (read-only).
pub const LVT_REMOTE_IRR: u32 = 1 << 14;
/// LVT LINT0/LINT1 bit 15: level-triggered (fixed delivery only).
pub const LVT_LEVEL: u32 = 1 << 15;

/// Bits of each LVT that software may write (SDM 3A figure 11-8); delivery status (12)
/// and remote IRR (14) are read-only and read 0 here.
const LVT_WRITABLE: [u32; LVT_COUNT] = [
    0xff | LVT_MASKED | LVT_TIMER_MODE_MASK, // timer: vector, mask, mode
    0x7ff | LVT_MASKED,                      // thermal: vector, delivery mode, mask
    0x7ff | LVT_MASKED,                      // performance: same
    0x7ff | (1 << 13) | (1 << 15) | LVT_MASKED, // LINT0: + polarity, trigger mode
    0x7ff | (1 << 13) | (1 << 15) | LVT_MASKED, // LINT1: same
    0xff | LVT_MASKED,                       // error: vector, mask
];

/// Bits of each LVT that are defined (writable or read-only); in x2APIC mode a write that
/// sets any other bit faults (SDM 11.12.1.3, RsvdZ).
const LVT_DEFINED: [u32; LVT_COUNT] = [
    LVT_WRITABLE[0] | (1 << 12),
    LVT_WRITABLE[1] | (1 << 12),
    LVT_WRITABLE[2] | (1 << 12),
    LVT_WRITABLE[3] | (1 << 12) | (1 << 14),
    LVT_WRITABLE[4] | (1 << 12) | (1 << 14),
    LVT_WRITABLE[5] | (1 << 12),
];

/// The writable bits of the spurious-interrupt vector register: vector, APIC software
/// enable, focus-processor checking.
const SVR_WRITABLE: u32 = 0x3ff;
/// The writable bits of the divide configuration register.
const DIVIDE_WRITABLE: u32 = 0xb;
/// The bits of the x2APIC ICR that are defined: vector, delivery mode, destination mode,
/// level, trigger mode, shorthand, destination (bit 12, delivery status, does not exist
/// in x2APIC mode).
const X2APIC_ICR_DEFINED: u64 = 0xffff_ffff_000c_cfff;

/// The timer mode selected by LVT timer bits 17-18.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TimerMode {
    OneShot,
    Periodic,
    TscDeadline,
    /// Encoding 11b is reserved: the timer never fires in it.
    Reserved,
}

impl TimerMode {
    fn of(lvt: u32) -> TimerMode {
        match (lvt & LVT_TIMER_MODE_MASK) >> 17 {
            0 => TimerMode::OneShot,
            1 => TimerMode::Periodic,
            2 => TimerMode::TscDeadline,
            _ => TimerMode::Reserved,
        }
    }
}

/// IA32_APIC_BASE's EN and EXTD bits (SDM 3A table 11-5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Disabled,
    Invalid,
    XApic,
    X2Apic,
}

impl Mode {
    fn of(base: u64) -> Mode {
        match (base & APIC_BASE_EN != 0, base & APIC_BASE_EXTD != 0) {
            (false, false) => Mode::Disabled,
            (false, true) => Mode::Invalid,
            (true, false) => Mode::XApic,
            (true, true) => Mode::X2Apic,
        }
    }
}

/// A 256-bit vector register (IRR, ISR, TMR) as eight 32-bit words, as the APIC pages
/// lay them out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct VectorSet([u32; 8]);

impl VectorSet {
    fn get(&self, vector: u8) -> bool {
        self.0[usize::from(vector >> 5)] & (1 << (vector & 31)) != 0
    }
    fn set(&mut self, vector: u8, value: bool) {
        let word = &mut self.0[usize::from(vector >> 5)];
        if value {
            *word |= 1 << (vector & 31);
        } else {
            *word &= !(1 << (vector & 31));
        }
    }
    /// The highest vector set.
    fn highest(&self) -> Option<u8> {
        for (i, word) in self.0.iter().enumerate().rev() {
            if *word != 0 {
                // i < 8 and the bit index < 32, so the vector fits in a byte.
                return Some((i as u8) * 32 + (31 - word.leading_zeros() as u8));
            }
        }
        None
    }
}

/// One vCPU's local APIC.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct LocalApic {
    /// The initial APIC ID (the x2APIC ID; CPUID reports it).
    apic_id: u32,
    /// IA32_APIC_BASE.
    base: u64,
    /// The xAPIC ID register (ID in bits 31:24; software may change it in xAPIC mode).
    xapic_id: u32,
    tpr: u32,
    /// The xAPIC logical destination register (x2APIC mode derives it from the ID).
    ldr: u32,
    dfr: u32,
    svr: u32,
    isr: VectorSet,
    tmr: VectorSet,
    irr: VectorSet,
    /// The ESR value software reads.
    esr: u32,
    /// Errors detected since the last ESR write (they become visible on the next write).
    esr_pending: u32,
    icr_low: u32,
    /// xAPIC: destination in bits 31:24; x2APIC: the 32-bit destination.
    icr_high: u32,
    lvt: [u32; LVT_COUNT],
    initial_count: u32,
    divide_config: u32,
    /// Next expiry (guest TSC) of the one-shot or periodic timer; `None` when disarmed.
    timer_deadline: Option<u64>,
    /// Ticks between periodic expiries (the programmed period, at least
    /// [`MIN_PERIODIC_TICKS`]).
    timer_period: u64,
    /// IA32_TSC_DEADLINE while armed in TSC-deadline mode, else 0.
    tsc_deadline: u64,
    /// The levels driven onto LINT0 and LINT1 (outside inputs: a reset keeps them).
    lint_level: [bool; 2],
    /// Remote IRR of the LINT0 and LINT1 LVTs (level-triggered fixed delivery).
    lint_remote_irr: [bool; 2],
    /// The NMI latch.
    nmi_pending: bool,
    /// An ExtINT message was accepted and awaits its INTA cycle.
    extint_request: bool,
    /// Vectors whose EOI the I/O APIC has yet to see.
    eoi_broadcast: VectorSet,
    /// Whether `eoi_broadcast` has any bit set.
    eoi_broadcast_pending: bool,
    /// The IPI the last ICR write sent, until the machine routes it.
    ipi: Option<Ipi>,
    /// An INIT was received and the vCPU has not reset yet.
    init_pending: bool,
    /// A start-up IPI's vector, received and not yet acted on.
    sipi_vector: Option<u8>,
}

impl LocalApic {
    /// A power-on APIC with this ID: enabled in xAPIC mode at the default base, software
    /// disabled (SVR bit 8 clear), every LVT masked. IA32_APIC_BASE.BSP is set when the ID
    /// is 0 (the bootstrap processor of a one-vCPU machine).
    pub fn new(apic_id: u32) -> LocalApic {
        let bsp = if apic_id == 0 { APIC_BASE_BSP } else { 0 };
        let mut apic = LocalApic {
            apic_id,
            base: APIC_DEFAULT_BASE | APIC_BASE_EN | bsp,
            xapic_id: (apic_id & 0xff) << 24,
            tpr: 0,
            ldr: 0,
            dfr: 0,
            svr: 0,
            isr: VectorSet::default(),
            tmr: VectorSet::default(),
            irr: VectorSet::default(),
            esr: 0,
            esr_pending: 0,
            icr_low: 0,
            icr_high: 0,
            lvt: [LVT_MASKED; LVT_COUNT],
            initial_count: 0,
            divide_config: 0,
            timer_deadline: None,
            timer_period: 0,
            tsc_deadline: 0,
            lint_level: [false; 2],
            lint_remote_irr: [false; 2],
            nmi_pending: false,
            extint_request: false,
            eoi_broadcast: VectorSet::default(),
            eoi_broadcast_pending: false,
            ipi: None,
            init_pending: false,
            sipi_vector: None,
        };
        apic.reset_registers();
        apic
    }

    /// Power-on reset: back to the state [`LocalApic::new`] gives, ID kept (and the
    /// levels on LINT0 and LINT1, which outside devices drive).
    pub fn reset(&mut self) {
        let lint_level = self.lint_level;
        *self = LocalApic::new(self.apic_id);
        self.lint_level = lint_level;
    }

    /// INIT reset (SDM 3A 11.4.7.3): every register back to its power-up value except
    /// IA32_APIC_BASE (base, enable, x2APIC mode and BSP flag all stay, as in KVM) and the
    /// ID registers; pending interrupts, NMIs and the INIT latch itself are dropped. A
    /// start-up IPI that arrived after the INIT stays, for the wait-for-SIPI state to take.
    pub fn init_reset(&mut self) {
        let (base, xapic_id, lint_level, sipi) =
            (self.base, self.xapic_id, self.lint_level, self.sipi_vector);
        *self = LocalApic::new(self.apic_id);
        self.base = base;
        self.xapic_id = xapic_id;
        self.lint_level = lint_level;
        self.sipi_vector = sipi;
    }

    /// The power-up register state (SDM 3A 11.4.7.1), which a hardware disable also
    /// returns to; IA32_APIC_BASE and the ID registers are not touched.
    fn reset_registers(&mut self) {
        self.tpr = 0;
        self.ldr = 0;
        self.dfr = 0xffff_ffff;
        self.svr = 0xff;
        self.isr = VectorSet::default();
        self.tmr = VectorSet::default();
        self.irr = VectorSet::default();
        self.esr = 0;
        self.esr_pending = 0;
        self.icr_low = 0;
        self.icr_high = 0;
        self.lvt = [LVT_MASKED; LVT_COUNT];
        self.initial_count = 0;
        self.divide_config = 0;
        self.timer_deadline = None;
        self.timer_period = 0;
        self.tsc_deadline = 0;
        self.lint_remote_irr = [false; 2];
        self.extint_request = false;
        self.eoi_broadcast = VectorSet::default();
        self.eoi_broadcast_pending = false;
    }

    /// The initial APIC ID (the x2APIC ID).
    pub fn id(&self) -> u32 {
        self.apic_id
    }

    /// IA32_APIC_BASE.EN: the APIC is globally enabled (CPUID leaf 1 EDX.APIC mirrors it).
    pub fn is_enabled(&self) -> bool {
        self.base & APIC_BASE_EN != 0
    }

    /// The APIC is in x2APIC mode.
    pub fn is_x2apic(&self) -> bool {
        Mode::of(self.base) == Mode::X2Apic
    }

    /// SVR bit 8: the APIC is software enabled.
    pub fn is_software_enabled(&self) -> bool {
        self.svr & SVR_ENABLE != 0
    }

    /// IA32_APIC_BASE.
    pub fn base_msr(&self) -> u64 {
        self.base
    }

    /// Write IA32_APIC_BASE; illegal transitions (SDM 3A 11.12.5) and reserved bits fault.
    ///
    /// Legal: disabled → xAPIC, xAPIC → x2APIC, xAPIC or x2APIC → disabled, and any write
    /// that keeps the mode (moving the base, changing BSP). Illegal: EXTD without EN,
    /// x2APIC → xAPIC, disabled → x2APIC, bits 0-7, 9 or MAXPHYADDR and up. Disabling
    /// returns every register to its power-up state except IA32_APIC_BASE and the ID.
    pub fn set_base_msr(&mut self, value: u64) -> Result<(), ApicFault> {
        let reserved = !(APIC_BASE_BSP | APIC_BASE_EXTD | APIC_BASE_EN | APIC_BASE_ADDR_MASK);
        if value & reserved != 0 {
            return Err(ApicFault);
        }
        let old = Mode::of(self.base);
        let new = Mode::of(value);
        match (old, new) {
            (_, Mode::Invalid) | (Mode::X2Apic, Mode::XApic) | (Mode::Disabled, Mode::X2Apic) => {
                return Err(ApicFault)
            }
            _ => {}
        }
        self.base = value;
        if new == Mode::Disabled && old != Mode::Disabled {
            self.reset_registers();
        }
        Ok(())
    }

    /// Guest-physical base of the xAPIC MMIO page while the APIC is in xAPIC mode.
    pub fn mmio_base(&self) -> Option<u64> {
        match Mode::of(self.base) {
            Mode::XApic => Some(self.base & APIC_BASE_ADDR_MASK),
            _ => None,
        }
    }

    /// A 32-bit read of the register at `offset` in the xAPIC page. Offsets that are not
    /// 16-byte aligned or name no register read 0, as does the page while the APIC is not
    /// in xAPIC mode (it is not decoded then).
    pub fn mmio_read(&mut self, offset: u32, now: u64) -> u32 {
        if Mode::of(self.base) != Mode::XApic || offset & 0xf != 0 || offset > 0xff0 {
            return 0;
        }
        self.update(now);
        match self.read_register(offset, false, now) {
            // xAPIC registers are 32 bits wide; only the x2APIC ICR uses the upper half.
            Some(value) => value as u32,
            None => 0,
        }
    }

    /// A 32-bit write to the register at `offset` in the xAPIC page. Writes to read-only
    /// registers and to offsets that name no register are ignored, as is the page while the
    /// APIC is not in xAPIC mode.
    pub fn mmio_write(&mut self, offset: u32, value: u32, now: u64) {
        if Mode::of(self.base) != Mode::XApic || offset & 0xf != 0 || offset > 0xff0 {
            return;
        }
        self.update(now);
        // In xAPIC mode nothing faults: the result only matters for x2APIC.
        let _ = self.write_register(offset, u64::from(value), false, now);
    }

    /// RDMSR of an x2APIC MSR (0x800..=0x8ff). Faults outside x2APIC mode, for
    /// write-only registers (EOI, SELF IPI) and for MSRs that name no register.
    pub fn x2apic_read(&mut self, msr: u32, now: u64) -> Result<u64, ApicFault> {
        let offset = Self::x2apic_offset(msr)?;
        if !self.is_x2apic() {
            return Err(ApicFault);
        }
        self.update(now);
        self.read_register(offset, true, now).ok_or(ApicFault)
    }

    /// WRMSR of an x2APIC MSR. Faults outside x2APIC mode, for read-only and absent
    /// registers, and for values with reserved bits set (SDM 3A 11.12.1.3).
    pub fn x2apic_write(&mut self, msr: u32, value: u64, now: u64) -> Result<(), ApicFault> {
        let offset = Self::x2apic_offset(msr)?;
        if !self.is_x2apic() {
            return Err(ApicFault);
        }
        // Bits 63:32 are reserved in every x2APIC register but the ICR.
        if offset != reg::ICR_LOW && value >> 32 != 0 {
            return Err(ApicFault);
        }
        self.update(now);
        self.write_register(offset, value, true, now)
    }

    fn x2apic_offset(msr: u32) -> Result<u32, ApicFault> {
        if (X2APIC_MSR_FIRST..=X2APIC_MSR_LAST).contains(&msr) {
            Ok((msr - X2APIC_MSR_FIRST) << 4)
        } else {
            Err(ApicFault)
        }
    }

    /// IA32_TSC_DEADLINE: the armed deadline in TSC-deadline mode, 0 otherwise (also once
    /// it has fired).
    pub fn tsc_deadline(&self) -> u64 {
        if TimerMode::of(self.lvt[LVT_TIMER]) == TimerMode::TscDeadline {
            self.tsc_deadline
        } else {
            0
        }
    }

    /// Write IA32_TSC_DEADLINE (ignored unless the timer is in TSC-deadline mode). Zero
    /// disarms; a deadline at or before `now` fires at once.
    pub fn set_tsc_deadline(&mut self, value: u64, now: u64) {
        if !self.is_enabled() || TimerMode::of(self.lvt[LVT_TIMER]) != TimerMode::TscDeadline {
            return;
        }
        self.tsc_deadline = value;
        self.update(now);
    }

    /// The guest TSC was moved by `delta` (a write to IA32_TSC or IA32_TSC_ADJUST). The
    /// one-shot and periodic timers count the bus clock, not the TSC, so their deadlines
    /// (kept as guest TSC values) move by the same amount and still fall at the same
    /// moment; a TSC deadline is a TSC value by definition and stays.
    pub fn tsc_moved(&mut self, delta: i64) {
        if let Some(deadline) = self.timer_deadline {
            self.timer_deadline = Some(deadline.saturating_add_signed(delta));
        }
    }

    /// Advance the timer to `now`, raising its interrupt if it expired.
    ///
    /// A one-shot timer disarms (its current count reads 0); a TSC-deadline timer clears
    /// IA32_TSC_DEADLINE; a periodic timer re-arms one period after the deadline that
    /// expired, not after `now`, so it does not drift. If several periods passed since the
    /// last update, the missed ones are skipped arithmetically and the interrupt is
    /// requested once (an IRR bit holds one request). A masked timer keeps counting but
    /// requests nothing.
    #[inline]
    pub fn update(&mut self, now: u64) {
        // Nothing armed, in any mode: nothing can expire (every APIC access and clock
        // read comes here).
        if self.timer_deadline.is_none() && self.tsc_deadline == 0 {
            return;
        }
        self.update_armed(now);
    }

    /// [`LocalApic::update`] with a deadline armed.
    #[inline(never)]
    fn update_armed(&mut self, now: u64) {
        let fired = match TimerMode::of(self.lvt[LVT_TIMER]) {
            TimerMode::TscDeadline => {
                if self.tsc_deadline != 0 && now >= self.tsc_deadline {
                    self.tsc_deadline = 0;
                    true
                } else {
                    false
                }
            }
            TimerMode::OneShot => match self.timer_deadline {
                Some(deadline) if now >= deadline => {
                    self.timer_deadline = None;
                    true
                }
                _ => false,
            },
            TimerMode::Periodic => match self.timer_deadline {
                Some(deadline) if now >= deadline => {
                    // `timer_period` >= MIN_PERIODIC_TICKS > 0 while armed periodic.
                    let period = self.timer_period.max(1);
                    let periods = (now - deadline) / period + 1;
                    // Past the end of the 64-bit clock the timer can never fire again.
                    self.timer_deadline = periods
                        .checked_mul(period)
                        .and_then(|advance| deadline.checked_add(advance));
                    true
                }
                _ => false,
            },
            TimerMode::Reserved => false,
        };
        if fired {
            let lvt = self.lvt[LVT_TIMER];
            if lvt & LVT_MASKED == 0 {
                self.lvt_interrupt(lvt);
            }
        }
    }

    /// The guest TSC at which the timer next fires, if it is armed and unmasked. (A masked
    /// timer keeps counting, but since firing it changes nothing but its own state, which
    /// every access brings up to date, the run loop need not wake for it.)
    pub fn next_deadline(&self) -> Option<u64> {
        let lvt = self.lvt[LVT_TIMER];
        if lvt & LVT_MASKED != 0 {
            return None;
        }
        match TimerMode::of(lvt) {
            TimerMode::TscDeadline => (self.tsc_deadline != 0).then_some(self.tsc_deadline),
            TimerMode::OneShot | TimerMode::Periodic => self.timer_deadline,
            TimerMode::Reserved => None,
        }
    }

    /// [`LocalApic::next_deadline`] for a vCPU that sleeps until an interrupt could become
    /// deliverable: also `None` while the timer's vector is already requested (its IRR bit
    /// set), since firing again changes nothing delivery depends on (an IRR bit holds one
    /// request; the timer's own state is brought up to date by every access). A halted
    /// guest whose timer interrupt is held back by the TPR or an interrupt in service
    /// then sleeps instead of waking at every period.
    pub fn next_wakeup(&self) -> Option<u64> {
        if self.irr.get((self.lvt[LVT_TIMER] & 0xff) as u8) {
            return None;
        }
        self.next_deadline()
    }

    /// The highest-priority requested interrupt that may be delivered now (IRR above PPR).
    ///
    /// The highest IRR vector whose priority class (vector bits 7:4) is above the PPR's,
    /// while the APIC is hardware and software enabled.
    pub fn pending_interrupt(&self) -> Option<u8> {
        if !self.is_enabled() || !self.is_software_enabled() {
            return None;
        }
        let vector = self.irr.highest()?;
        (u32::from(vector) & 0xf0 > self.ppr() & 0xf0).then_some(vector)
    }

    /// The interrupt `vector` is being delivered: move it from IRR to ISR. A vector that
    /// is not requested is ignored.
    pub fn acknowledge(&mut self, vector: u8) {
        if self.irr.get(vector) {
            self.irr.set(vector, false);
            self.isr.set(vector, true);
        }
    }

    /// Whether any interrupt is requested at all (to end HLT: any IRR bit, whatever the
    /// priority, does not wake HLT; only a deliverable one does).
    pub fn has_deliverable(&self) -> bool {
        self.pending_interrupt().is_some()
    }

    /// Request a fixed-delivery interrupt from a platform device (or a test): sets the IRR
    /// bit (and TMR for `level`). Returns `false` if the APIC refused it: not enabled
    /// (hardware or software), or an illegal vector 0-15 (which logs a receive-illegal-vector
    /// error).
    pub fn deliver_fixed(&mut self, vector: u8, level: bool) -> bool {
        let errors = self.accept(vector, level);
        if errors != 0 {
            self.log_error(errors);
        }
        errors == 0 && self.irr.get(vector)
    }

    /// CR8: the task-priority class, TPR bits 7:4 (SDM 3A 10.8.6.1).
    pub fn cr8(&self) -> u8 {
        (self.tpr >> 4) as u8 & 0xf
    }

    /// MOV to CR8: TPR bits 7:4 take `value` (0..=15) and bits 3:0 are cleared (SDM 3A
    /// 10.8.6.1). CR8 is the TPR whether or not the APIC is enabled, as on the processor.
    pub fn set_cr8(&mut self, value: u8) {
        self.tpr = u32::from(value & 0xf) << 4;
    }

    /// The processor priority: TPR, or the class of the highest in-service vector if that
    /// is higher (SDM 3A 11.8.3.1).
    pub fn ppr(&self) -> u32 {
        let isrv = self.isr.highest().map_or(0, u32::from);
        if self.tpr & 0xf0 >= isrv & 0xf0 {
            self.tpr & 0xff
        } else {
            isrv & 0xf0
        }
    }

    /// The timer's divide value (1..=128) from the divide configuration register.
    fn divisor(&self) -> u64 {
        let code = (self.divide_config & 3) | ((self.divide_config & 8) >> 1);
        if code == 7 {
            1
        } else {
            2 << code
        }
    }

    /// The current-count register: counts down once per `divisor` ticks and reads 0 once a
    /// one-shot count expired and in TSC-deadline mode.
    fn current_count(&self, now: u64) -> u32 {
        match TimerMode::of(self.lvt[LVT_TIMER]) {
            TimerMode::OneShot | TimerMode::Periodic => {
                let Some(deadline) = self.timer_deadline else {
                    return 0;
                };
                let remaining = deadline.saturating_sub(now);
                let count = remaining.div_ceil(self.divisor());
                // A period stretched to MIN_PERIODIC_TICKS must not read above the initial
                // count the guest programmed.
                count.min(u64::from(self.initial_count)) as u32
            }
            TimerMode::TscDeadline | TimerMode::Reserved => 0,
        }
    }

    /// Start the one-shot or periodic count from `now` with the current initial count.
    fn start_timer(&mut self, now: u64) {
        self.timer_deadline = None;
        self.timer_period = 0;
        if self.initial_count == 0 {
            return;
        }
        let ticks = u64::from(self.initial_count) * self.divisor();
        match TimerMode::of(self.lvt[LVT_TIMER]) {
            TimerMode::OneShot => self.timer_deadline = Some(now.saturating_add(ticks)),
            TimerMode::Periodic => {
                self.timer_period = ticks.max(MIN_PERIODIC_TICKS);
                self.timer_deadline = Some(now.saturating_add(self.timer_period));
            }
            TimerMode::TscDeadline | TimerMode::Reserved => {}
        }
    }

    /// Set an interrupt request; returns the ESR bits the attempt raised.
    fn accept(&mut self, vector: u8, level: bool) -> u32 {
        if !self.is_enabled() || !self.is_software_enabled() {
            // A disabled APIC accepts no fixed interrupts (SDM 3A 11.4.7.2).
            return 0;
        }
        if vector < 16 {
            return ESR_RECEIVE_ILLEGAL_VECTOR;
        }
        self.irr.set(vector, true);
        self.tmr.set(vector, level);
        0
    }

    /// An unmasked LVT with fixed delivery fires (timer, error).
    fn lvt_interrupt(&mut self, lvt: u32) {
        let errors = self.accept((lvt & 0xff) as u8, false);
        if errors != 0 {
            self.log_error(errors);
        }
    }

    /// Record errors for the next ESR write and raise the error LVT interrupt.
    fn log_error(&mut self, errors: u32) {
        self.esr_pending |= errors;
        let lvt = self.lvt[LVT_ERROR];
        if lvt & LVT_MASKED == 0 {
            // An illegal error vector only logs another error; it cannot recurse.
            let more = self.accept((lvt & 0xff) as u8, false);
            self.esr_pending |= more;
        }
    }

    /// Does a fixed IPI with this destination reach this APIC? (No shorthand.)
    fn matches_destination(&self, dest: u32, logical: bool, x2apic: bool) -> bool {
        if x2apic {
            if dest == 0xffff_ffff {
                return true;
            }
            if !logical {
                return dest == self.apic_id;
            }
            let ldr = self.x2apic_ldr();
            return dest >> 16 == ldr >> 16 && dest & ldr & 0xffff != 0;
        }
        let dest = dest & 0xff;
        if dest == 0xff {
            return true;
        }
        if !logical {
            return dest == self.xapic_id >> 24;
        }
        let ldr = self.ldr >> 24;
        if self.dfr >> 28 == 0xf {
            // Flat model: one bit per APIC.
            dest & ldr != 0
        } else {
            // Cluster model: cluster in bits 7:4, members in bits 3:0.
            dest >> 4 == ldr >> 4 && dest & ldr & 0xf != 0
        }
    }

    /// The x2APIC logical ID: cluster (ID bits 31:4) in bits 31:16, one bit for ID bits
    /// 3:0 (SDM 3A 11.12.10.2).
    fn x2apic_ldr(&self) -> u32 {
        ((self.apic_id >> 4) << 16) | (1 << (self.apic_id & 0xf))
    }

    /// Send the ICR command `low` with destination `dest`: it waits in
    /// [`LocalApic::take_ipi`] for the machine to route. A fixed or lowest-priority IPI
    /// with a vector below 16 logs a send error here (its receivers log a receive error).
    fn send_ipi(&mut self, low: u32, dest: u32, x2apic: bool) {
        let ipi = Ipi {
            vector: (low & 0xff) as u8,
            delivery: DeliveryMode::from_icr_bits(((low >> 8) & 7) as u8),
            logical: low & (1 << 11) != 0,
            assert: low & (1 << 14) != 0,
            level_triggered: low & (1 << 15) != 0,
            shorthand: Shorthand::from_bits(low >> 18),
            destination: dest,
            x2apic,
        };
        if matches!(
            ipi.delivery,
            DeliveryMode::Fixed | DeliveryMode::LowestPriority
        ) && ipi.vector < 16
        {
            self.log_error(ESR_SEND_ILLEGAL_VECTOR);
        }
        self.ipi = Some(ipi);
    }

    /// The IPI the last ICR (or SELF IPI) write sent, once: the machine routes it with
    /// [`crate::irq::deliver_ipi`].
    #[inline]
    pub fn take_ipi(&mut self) -> Option<Ipi> {
        self.ipi.take()
    }

    /// Whether an IPI addressed by destination `dest` in the sender's mode (`logical`;
    /// `sender_x2apic`: a 32-bit destination) reaches this APIC, matched against its own
    /// mode, ID, LDR and DFR. An 8-bit broadcast (0xFF) from an xAPIC reaches x2APIC-mode
    /// APICs too. A globally disabled APIC accepts nothing.
    pub fn accepts_ipi_destination(&self, dest: u32, logical: bool, sender_x2apic: bool) -> bool {
        if !self.is_enabled() {
            return false;
        }
        let x2apic = self.is_x2apic();
        let dest = if x2apic && !sender_x2apic && dest == 0xff {
            0xffff_ffff
        } else {
            dest
        };
        self.matches_destination(dest, logical, x2apic)
    }

    /// Accept an IPI already addressed to this APIC ([`crate::irq::deliver_ipi`] decides
    /// that). Fixed and lowest-priority IPIs set IRR (and TMR when level-triggered) on a
    /// software-enabled APIC, a vector below 16 logging a receive error; NMI sets the NMI
    /// latch; INIT and start-up set their latches for the vCPU to act on (INIT reset,
    /// leaving the wait-for-SIPI state); SMI, ExtINT and reserved modes are refused.
    /// Returns whether the IPI was taken.
    pub fn accept_ipi(&mut self, ipi: &Ipi) -> bool {
        if !self.is_enabled() {
            return false;
        }
        match ipi.delivery {
            DeliveryMode::Fixed | DeliveryMode::LowestPriority => {
                self.deliver_fixed(ipi.vector, ipi.level_triggered)
            }
            DeliveryMode::Nmi => {
                self.nmi_pending = true;
                true
            }
            DeliveryMode::Init => {
                self.init_pending = true;
                true
            }
            DeliveryMode::StartUp => {
                self.sipi_vector = Some(ipi.vector);
                true
            }
            DeliveryMode::Smi | DeliveryMode::ExtInt | DeliveryMode::Reserved => false,
        }
    }

    /// Whether an INIT was received that the vCPU has not acted on.
    #[inline]
    pub fn init_pending(&self) -> bool {
        self.init_pending
    }

    /// Take a received INIT: the vCPU resets (and the APIC with [`LocalApic::init_reset`]).
    pub fn take_init(&mut self) -> bool {
        core::mem::take(&mut self.init_pending)
    }

    /// Whether a start-up IPI was received that the vCPU has not acted on.
    #[inline]
    pub fn sipi_pending(&self) -> bool {
        self.sipi_vector.is_some()
    }

    /// Take a received start-up IPI's vector.
    pub fn take_sipi(&mut self) -> Option<u8> {
        self.sipi_vector.take()
    }

    /// Read a register; `None` if `offset` names no register in this mode (x2APIC: the
    /// access faults; xAPIC: reads 0).
    fn read_register(&self, offset: u32, x2apic: bool, now: u64) -> Option<u64> {
        let value = match offset {
            reg::ID if x2apic => self.apic_id,
            reg::ID => self.xapic_id,
            reg::VERSION => APIC_VERSION,
            reg::TPR => self.tpr,
            reg::APR if !x2apic => 0,
            reg::PPR => self.ppr(),
            reg::EOI if !x2apic => 0,
            reg::LDR if x2apic => self.x2apic_ldr(),
            reg::LDR => self.ldr,
            reg::DFR if !x2apic => self.dfr,
            reg::SVR => self.svr,
            0x100..=0x170 => self.isr.0[((offset - reg::ISR0) >> 4) as usize],
            0x180..=0x1f0 => self.tmr.0[((offset - reg::TMR0) >> 4) as usize],
            0x200..=0x270 => self.irr.0[((offset - reg::IRR0) >> 4) as usize],
            reg::ESR => self.esr,
            reg::ICR_LOW if x2apic => {
                return Some((u64::from(self.icr_high) << 32) | u64::from(self.icr_low))
            }
            reg::ICR_LOW => self.icr_low,
            reg::ICR_HIGH if !x2apic => self.icr_high,
            reg::LVT_LINT0 | reg::LVT_LINT1 => {
                let pin = ((offset - reg::LVT_LINT0) >> 4) as usize;
                let remote_irr = if self.lint_remote_irr[pin] {
                    LVT_REMOTE_IRR
                } else {
                    0
                };
                self.lvt[LVT_LINT0 + pin] | remote_irr
            }
            reg::LVT_TIMER..=reg::LVT_ERROR => self.lvt[((offset - reg::LVT_TIMER) >> 4) as usize],
            reg::TIMER_INITIAL => self.initial_count,
            reg::TIMER_CURRENT => self.current_count(now),
            reg::TIMER_DIVIDE => self.divide_config,
            _ => return None,
        };
        Some(u64::from(value))
    }

    /// Write a register. `Err` means #GP in x2APIC mode (read-only or absent register,
    /// reserved bits); in xAPIC mode the caller ignores it.
    fn write_register(
        &mut self,
        offset: u32,
        value: u64,
        x2apic: bool,
        now: u64,
    ) -> Result<(), ApicFault> {
        // Every register but the x2APIC ICR is 32 bits wide; x2apic_write checked the rest.
        let v = value as u32;
        // x2APIC reserved bits are RsvdZ: a write that sets one faults.
        let check = |defined: u32| {
            if x2apic && v & !defined != 0 {
                Err(ApicFault)
            } else {
                Ok(())
            }
        };
        match offset {
            reg::ID if !x2apic => self.xapic_id = v & 0xff00_0000,
            reg::TPR => {
                check(0xff)?;
                self.tpr = v & 0xff;
            }
            reg::EOI => {
                if x2apic && v != 0 {
                    return Err(ApicFault);
                }
                self.eoi();
            }
            reg::LDR if !x2apic => self.ldr = v & 0xff00_0000,
            reg::DFR if !x2apic => self.dfr = (v & 0xf000_0000) | 0x0fff_ffff,
            reg::SVR => {
                check(SVR_WRITABLE)?;
                self.svr = v & SVR_WRITABLE;
                if v & SVR_ENABLE == 0 {
                    // Software disable masks every LVT (SDM 3A 11.4.7.2).
                    for lvt in &mut self.lvt {
                        *lvt |= LVT_MASKED;
                    }
                }
            }
            reg::ESR => {
                if x2apic && v != 0 {
                    return Err(ApicFault);
                }
                // The write makes the errors logged since the previous write visible.
                self.esr = self.esr_pending;
                self.esr_pending = 0;
            }
            reg::ICR_LOW if x2apic => {
                if value & !X2APIC_ICR_DEFINED != 0 {
                    return Err(ApicFault);
                }
                self.icr_low = v & !(1 << 12);
                self.icr_high = (value >> 32) as u32;
                self.send_ipi(self.icr_low, self.icr_high, true);
            }
            reg::ICR_LOW => {
                // Delivery status (bit 12) is read-only and reads 0: the send is immediate.
                self.icr_low = v & 0x000c_cfff;
                self.send_ipi(self.icr_low, self.icr_high >> 24, false);
            }
            reg::ICR_HIGH if !x2apic => self.icr_high = v & 0xff00_0000,
            reg::LVT_TIMER => {
                check(LVT_DEFINED[LVT_TIMER])?;
                let mut new = v & LVT_WRITABLE[LVT_TIMER];
                if x2apic && TimerMode::of(new) == TimerMode::Reserved {
                    return Err(ApicFault);
                }
                if !self.is_software_enabled() {
                    new |= LVT_MASKED;
                }
                let old = self.lvt[LVT_TIMER];
                self.lvt[LVT_TIMER] = new;
                if TimerMode::of(old) != TimerMode::of(new) {
                    // Changing the mode disarms the timer (SDM 3A 11.5.4.1).
                    self.initial_count = 0;
                    self.timer_deadline = None;
                    self.timer_period = 0;
                    self.tsc_deadline = 0;
                }
            }
            reg::LVT_THERMAL..=reg::LVT_ERROR => {
                let index = ((offset - reg::LVT_TIMER) >> 4) as usize;
                check(LVT_DEFINED[index])?;
                let mut new = v & LVT_WRITABLE[index];
                if !self.is_software_enabled() {
                    new |= LVT_MASKED;
                }
                self.lvt[index] = new;
                if let Some(pin) = index.checked_sub(LVT_LINT0).filter(|&p| p < 2) {
                    if !Self::lint_is_level_fixed(new) {
                        self.lint_remote_irr[pin] = false;
                    }
                    // A level-triggered pin that is asserted when it is unmasked requests.
                    self.lint_level_request(pin);
                }
            }
            reg::TIMER_INITIAL => {
                // Ignored in TSC-deadline mode (SDM 3A 11.5.4.1).
                if TimerMode::of(self.lvt[LVT_TIMER]) != TimerMode::TscDeadline {
                    self.initial_count = v;
                    self.start_timer(now);
                }
            }
            reg::TIMER_DIVIDE => {
                check(DIVIDE_WRITABLE)?;
                self.set_divide(v & DIVIDE_WRITABLE, now);
            }
            reg::SELF_IPI if x2apic => {
                check(0xff)?;
                // A self IPI is a fixed, edge-triggered IPI to this APIC.
                self.send_ipi((v & 0xff) | (1 << 18), 0, true);
            }
            _ => return Err(ApicFault),
        }
        Ok(())
    }

    /// A new divide configuration: a running count keeps its current value and goes on
    /// at the new rate (as KVM rescales the remaining time).
    fn set_divide(&mut self, value: u32, now: u64) {
        let count = self.current_count(now);
        self.divide_config = value;
        let Some(_) = self.timer_deadline else {
            return;
        };
        let div = self.divisor();
        self.timer_deadline = Some(now.saturating_add(u64::from(count) * div));
        if self.timer_period != 0 {
            self.timer_period = (u64::from(self.initial_count) * div).max(MIN_PERIODIC_TICKS);
        }
    }

    /// End of interrupt: the highest in-service vector is done. For a level-triggered
    /// vector (TMR set) the EOI is also broadcast: to the I/O APIC through
    /// [`LocalApic::take_eoi_broadcast`], and to the LINT pins' remote IRR.
    fn eoi(&mut self) {
        if let Some(vector) = self.isr.highest() {
            self.isr.set(vector, false);
            if self.tmr.get(vector) {
                self.eoi_broadcast.set(vector, true);
                self.eoi_broadcast_pending = true;
                for pin in 0..2 {
                    if self.lint_remote_irr[pin] && self.lvt[LVT_LINT0 + pin] as u8 == vector {
                        self.lint_remote_irr[pin] = false;
                        self.lint_level_request(pin);
                    }
                }
            }
        }
    }

    /// The next level-triggered vector whose EOI the I/O APIC must see (the run loop
    /// drains these after every APIC write).
    #[inline]
    pub fn take_eoi_broadcast(&mut self) -> Option<u8> {
        if !self.eoi_broadcast_pending {
            return None;
        }
        let vector = self.eoi_broadcast.highest();
        match vector {
            Some(v) => self.eoi_broadcast.set(v, false),
            None => self.eoi_broadcast_pending = false,
        }
        vector
    }

    /// Drive the LINT0 pin (the PIC's INTR output on a PC).
    pub fn set_lint0(&mut self, level: bool) {
        self.set_lint(0, level);
    }

    /// Drive the LINT1 pin (the NMI line on a PC).
    pub fn set_lint1(&mut self, level: bool) {
        self.set_lint(1, level);
    }

    fn lint_is_level_fixed(lvt: u32) -> bool {
        lvt & (LVT_DELIVERY_MODE_MASK | LVT_LEVEL) == LVT_DELIVERY_FIXED | LVT_LEVEL
    }

    /// Whether LINT `pin` is asserted as its LVT reads it (polarity applied).
    fn lint_asserted(&self, pin: usize) -> bool {
        self.lint_level[pin] != (self.lvt[LVT_LINT0 + pin] & LVT_ACTIVE_LOW != 0)
    }

    fn set_lint(&mut self, pin: usize, level: bool) {
        let was = self.lint_asserted(pin);
        let was_high = self.lint_level[pin];
        self.lint_level[pin] = level;
        if !self.is_enabled() {
            // Globally disabled: LINT0 is INTR (read by `extint_pending`), LINT1 is NMI.
            if pin == 1 && level && !was_high {
                self.nmi_pending = true;
            }
            return;
        }
        let lvt = self.lvt[LVT_LINT0 + pin];
        let rising = self.lint_asserted(pin) && !was;
        if lvt & LVT_MASKED != 0 {
            return;
        }
        match lvt & LVT_DELIVERY_MODE_MASK {
            LVT_DELIVERY_FIXED if lvt & LVT_LEVEL != 0 => self.lint_level_request(pin),
            LVT_DELIVERY_FIXED if rising => self.lvt_interrupt(lvt),
            LVT_DELIVERY_NMI if rising => self.nmi_pending = true,
            // ExtINT is level-sensitive (`extint_pending` reads the pin); SMI and INIT are
            // not modelled.
            _ => {}
        }
    }

    /// A level-triggered fixed LINT pin requests while it is asserted, unmasked and its
    /// remote IRR is clear.
    fn lint_level_request(&mut self, pin: usize) {
        let lvt = self.lvt[LVT_LINT0 + pin];
        if !self.is_enabled()
            || lvt & LVT_MASKED != 0
            || !Self::lint_is_level_fixed(lvt)
            || self.lint_remote_irr[pin]
            || !self.lint_asserted(pin)
        {
            return;
        }
        let vector = lvt as u8;
        let errors = self.accept(vector, true);
        if errors != 0 {
            self.log_error(errors);
        } else if self.irr.get(vector) {
            self.lint_remote_irr[pin] = true;
        }
    }

    /// Whether an NMI is waiting to be injected.
    #[inline]
    pub fn nmi_pending(&self) -> bool {
        self.nmi_pending
    }

    /// The run loop injected the pending NMI.
    pub fn nmi_injected(&mut self) {
        self.nmi_pending = false;
    }

    /// Whether an external interrupt is pending whose vector the PIC supplies (INTA): an
    /// accepted ExtINT message, LINT0 asserted in ExtINT mode and unmasked, or, with the
    /// APIC globally disabled, LINT0 (INTR) high. The TPR and PPR do not apply to it.
    #[inline]
    pub fn extint_pending(&self) -> bool {
        if !self.is_enabled() {
            return self.lint_level[0];
        }
        self.extint_request
            || (self.lvt[LVT_LINT0] & (LVT_MASKED | LVT_DELIVERY_MODE_MASK) == LVT_DELIVERY_EXTINT
                && self.lint_asserted(0))
    }

    /// The run loop performed the INTA cycle for a pending external interrupt.
    pub fn extint_acknowledged(&mut self) {
        self.extint_request = false;
    }

    /// Whether an interrupt message with this 8-bit destination (physical: an APIC ID,
    /// 0xFF for all; logical: matched against the LDR, flat or cluster) is addressed to
    /// this APIC. An APIC that is globally disabled accepts nothing.
    pub fn accepts_destination(&self, destination: u8, logical: bool) -> bool {
        self.accepts_ipi_destination(u32::from(destination), logical, false)
    }

    /// Accept an interrupt message already addressed to this APIC (see
    /// [`LocalApic::accepts_destination`]). Returns whether it was accepted: fixed and
    /// lowest-priority messages need a software-enabled APIC and a vector of 16 or more
    /// (they set IRR, and TMR for level-triggered ones); NMI is always accepted; INIT
    /// sets the INIT latch as an INIT IPI does; ExtINT needs a software-enabled APIC and
    /// waits for its INTA cycle; SMI is not modelled and is refused.
    pub fn deliver_message(&mut self, msg: &IrqMessage) -> bool {
        if !self.is_enabled() {
            return false;
        }
        match msg.delivery {
            DeliveryMode::Fixed | DeliveryMode::LowestPriority => {
                self.deliver_fixed(msg.vector, msg.level_triggered)
            }
            DeliveryMode::Nmi => {
                self.nmi_pending = true;
                true
            }
            DeliveryMode::ExtInt if self.is_software_enabled() => {
                self.extint_request = true;
                true
            }
            DeliveryMode::Init => {
                self.init_pending = true;
                true
            }
            DeliveryMode::ExtInt
            | DeliveryMode::Smi
            | DeliveryMode::StartUp
            | DeliveryMode::Reserved => false,
        }
    }
}

impl crate::devices::SavedState for LocalApic {
    fn check_state(&self) -> Result<(), (&'static str, alloc::string::String)> {
        // The timer's deadlines are guest TSC values, any of which the guest can make
        // (WRMSR to the TSC and to IA32_TSC_DEADLINE): the timer handles every value.
        if self.apic_id as usize >= crate::vm::MAX_VCPUS {
            return Err((
                "apic_id",
                alloc::format!("{} (expected 0 to 254)", self.apic_id),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_000_000;

    /// An APIC software-enabled with spurious vector 0xff.
    fn enabled() -> LocalApic {
        let mut apic = LocalApic::new(0);
        apic.mmio_write(reg::SVR, 0x1ff, 0);
        apic
    }

    /// Send the IPI the APIC's last ICR write produced to the only APIC there is.
    fn route(apic: &mut LocalApic) {
        if let Some(ipi) = apic.take_ipi() {
            crate::irq::deliver_ipi(&ipi, 0, core::slice::from_mut(apic));
        }
    }

    fn x2apic() -> LocalApic {
        let mut apic = enabled();
        apic.set_base_msr(APIC_DEFAULT_BASE | APIC_BASE_EN | APIC_BASE_EXTD | APIC_BASE_BSP)
            .unwrap();
        apic
    }

    fn msr(offset: u32) -> u32 {
        X2APIC_MSR_FIRST + (offset >> 4)
    }

    #[test]
    fn power_on_state() {
        let mut apic = LocalApic::new(0);
        assert_eq!(apic.base_msr(), 0xfee0_0900);
        assert_eq!(apic.mmio_base(), Some(APIC_DEFAULT_BASE));
        assert_eq!(apic.mmio_read(reg::ID, 0), 0);
        assert_eq!(apic.mmio_read(reg::VERSION, 0), 0x0005_0014);
        assert_eq!(apic.mmio_read(reg::SVR, 0), 0xff);
        assert_eq!(apic.mmio_read(reg::DFR, 0), 0xffff_ffff);
        for offset in (reg::LVT_TIMER..=reg::LVT_ERROR).step_by(16) {
            assert_eq!(apic.mmio_read(offset, 0), LVT_MASKED, "{offset:#x}");
        }
        assert!(!apic.is_software_enabled());
        assert_eq!(apic.next_deadline(), None);
        let other = LocalApic::new(3);
        assert_eq!(other.base_msr() & APIC_BASE_BSP, 0);
        let mut other = other;
        assert_eq!(other.mmio_read(reg::ID, 0), 3 << 24);
    }

    #[test]
    fn xapic_registers_read_write() {
        let mut apic = enabled();
        apic.mmio_write(reg::ID, 0x0700_00ff, 0);
        assert_eq!(apic.mmio_read(reg::ID, 0), 0x0700_0000);
        apic.mmio_write(reg::VERSION, 0, 0);
        assert_eq!(apic.mmio_read(reg::VERSION, 0), APIC_VERSION);
        apic.mmio_write(reg::TPR, 0x1234, 0);
        assert_eq!(apic.mmio_read(reg::TPR, 0), 0x34);
        assert_eq!(apic.mmio_read(reg::APR, 0), 0);
        assert_eq!(apic.mmio_read(reg::PPR, 0), 0x34);
        apic.mmio_write(reg::LDR, 0x0100_00ff, 0);
        assert_eq!(apic.mmio_read(reg::LDR, 0), 0x0100_0000);
        apic.mmio_write(reg::DFR, 0x0000_1234, 0);
        assert_eq!(apic.mmio_read(reg::DFR, 0), 0x0fff_ffff);
        apic.mmio_write(reg::SVR, 0xffff_f3ff, 0);
        assert_eq!(apic.mmio_read(reg::SVR, 0), 0x3ff);
        apic.mmio_write(reg::ICR_HIGH, 0x1234_5678, 0);
        assert_eq!(apic.mmio_read(reg::ICR_HIGH, 0), 0x1200_0000);
        // A fixed IPI to another APIC: accepted, dropped, delivery status 0.
        apic.mmio_write(reg::ICR_LOW, 0x0000_1040, 0);
        route(&mut apic);
        assert_eq!(apic.mmio_read(reg::ICR_LOW, 0), 0x40);
        assert_eq!(apic.irr.highest(), None);
        let masks = [0x7_00ff, 0x1_07ff, 0x1_07ff, 0x1_a7ff, 0x1_a7ff, 0x1_00ff];
        for (i, mask) in masks.iter().enumerate() {
            let offset = reg::LVT_TIMER + 16 * i as u32;
            apic.mmio_write(offset, 0xffff_ffff, 0);
            assert_eq!(apic.mmio_read(offset, 0), *mask, "{offset:#x}");
        }
        apic.mmio_write(reg::TIMER_DIVIDE, 0xff, 0);
        assert_eq!(apic.mmio_read(reg::TIMER_DIVIDE, 0), 0xb);
        // Read-only registers ignore writes.
        apic.mmio_write(reg::PPR, 0xff, 0);
        apic.mmio_write(reg::IRR0 + 0x10, 0xffff_ffff, 0);
        apic.mmio_write(reg::TIMER_CURRENT, 5, 0);
        assert_eq!(apic.mmio_read(reg::IRR0 + 0x10, 0), 0);
        assert_eq!(apic.mmio_read(reg::TIMER_CURRENT, 0), 0);
        // Not a register, not aligned, CMCI absent, SELF IPI x2APIC-only: read 0.
        for offset in [
            0x000, 0x010, 0x0c0, 0x2f0, 0x3f0, 0x400, 0xff0, 0x084, 0x1000,
        ] {
            apic.mmio_write(offset, 0xffff_ffff, 0);
            assert_eq!(apic.mmio_read(offset, 0), 0, "{offset:#x}");
        }
    }

    #[test]
    fn isr_tmr_irr_layout() {
        let mut apic = enabled();
        assert!(apic.deliver_fixed(0x21, false));
        assert!(apic.deliver_fixed(0x95, true));
        assert_eq!(apic.mmio_read(reg::IRR0 + 0x10, 0), 1 << 1);
        assert_eq!(apic.mmio_read(reg::IRR0 + 0x40, 0), 1 << 0x15);
        assert_eq!(apic.mmio_read(reg::TMR0 + 0x40, 0), 1 << 0x15);
        assert_eq!(apic.mmio_read(reg::TMR0 + 0x10, 0), 0);
        apic.acknowledge(0x95);
        assert_eq!(apic.mmio_read(reg::IRR0 + 0x40, 0), 0);
        assert_eq!(apic.mmio_read(reg::ISR0 + 0x40, 0), 1 << 0x15);
        // Acknowledging a vector that is not requested changes nothing.
        apic.acknowledge(0x50);
        assert_eq!(apic.mmio_read(reg::ISR0 + 0x20, 0), 0);
    }

    #[test]
    fn tpr_ppr_priority_masking() {
        let mut apic = enabled();
        apic.deliver_fixed(0x45, false);
        assert_eq!(apic.pending_interrupt(), Some(0x45));
        // TPR class 4 blocks class 4 (strictly greater is needed).
        apic.mmio_write(reg::TPR, 0x40, 0);
        assert_eq!(apic.pending_interrupt(), None);
        assert!(!apic.has_deliverable());
        apic.mmio_write(reg::TPR, 0x3f, 0);
        assert_eq!(apic.pending_interrupt(), Some(0x45));
        apic.mmio_write(reg::TPR, 0, 0);
        apic.acknowledge(0x45);
        assert_eq!(apic.mmio_read(reg::PPR, 0), 0x40);
        // A same-class vector waits for EOI; a higher class preempts.
        apic.deliver_fixed(0x4f, false);
        assert_eq!(apic.pending_interrupt(), None);
        apic.deliver_fixed(0x50, false);
        assert_eq!(apic.pending_interrupt(), Some(0x50));
        // PPR = TPR when the TPR class is at least the ISR class.
        apic.mmio_write(reg::TPR, 0x47, 0);
        assert_eq!(apic.mmio_read(reg::PPR, 0), 0x47);
        apic.mmio_write(reg::TPR, 0x27, 0);
        assert_eq!(apic.mmio_read(reg::PPR, 0), 0x40);
        apic.mmio_write(reg::EOI, 0, 0);
        assert_eq!(apic.mmio_read(reg::PPR, 0), 0x27);
        assert_eq!(apic.pending_interrupt(), Some(0x50));
    }

    #[test]
    fn cr8_is_the_tpr() {
        let mut apic = enabled();
        apic.deliver_fixed(0x45, false);
        // MOV CR8, 4: TPR 0x40 holds class 4 back, and the register shows it.
        apic.set_cr8(4);
        assert_eq!(apic.mmio_read(reg::TPR, 0), 0x40);
        assert_eq!(apic.pending_interrupt(), None);
        apic.set_cr8(3);
        assert_eq!(apic.pending_interrupt(), Some(0x45));
        // A TPR write through the xAPIC page is what MOV from CR8 reads (bits 7:4).
        apic.mmio_write(reg::TPR, 0x9c, 0);
        assert_eq!(apic.cr8(), 9);
        // MOV to CR8 clears TPR bits 3:0.
        apic.set_cr8(9);
        assert_eq!(apic.mmio_read(reg::TPR, 0), 0x90);
        apic.set_cr8(0);
        assert_eq!(apic.mmio_read(reg::PPR, 0), 0);
    }

    #[test]
    fn eoi_clears_highest_in_service_first() {
        let mut apic = enabled();
        for v in [0x30, 0x80, 0x60] {
            apic.deliver_fixed(v, false);
        }
        // Delivery order is by priority; nested in-service vectors.
        let mut order = alloc::vec::Vec::new();
        while let Some(v) = apic.pending_interrupt() {
            apic.acknowledge(v);
            order.push(v);
        }
        assert_eq!(order, [0x80]);
        apic.mmio_write(reg::EOI, 0, 0);
        let v = apic.pending_interrupt().unwrap();
        assert_eq!(v, 0x60);
        apic.acknowledge(v);
        apic.deliver_fixed(0x90, false);
        apic.acknowledge(0x90);
        assert_eq!(apic.isr.highest(), Some(0x90));
        apic.mmio_write(reg::EOI, 0, 0);
        assert_eq!(apic.isr.highest(), Some(0x60));
        apic.mmio_write(reg::EOI, 0, 0);
        assert_eq!(apic.isr.highest(), None);
        assert_eq!(apic.pending_interrupt(), Some(0x30));
        // EOI with nothing in service is harmless.
        apic.mmio_write(reg::EOI, 0, 0);
        assert_eq!(apic.mmio_read(reg::PPR, 0), 0);
    }

    #[test]
    fn software_disable_masks_and_blocks() {
        let mut apic = enabled();
        apic.mmio_write(reg::LVT_LINT0, 0x700, 0);
        assert_eq!(apic.mmio_read(reg::LVT_LINT0, 0), 0x700);
        apic.deliver_fixed(0x40, false);
        apic.mmio_write(reg::SVR, 0xff, 0);
        assert_eq!(apic.mmio_read(reg::LVT_LINT0, 0), 0x1_0700);
        assert_eq!(apic.pending_interrupt(), None);
        // LVTs cannot be unmasked while software disabled, and nothing is accepted.
        apic.mmio_write(reg::LVT_LINT0, 0x700, 0);
        assert_eq!(apic.mmio_read(reg::LVT_LINT0, 0), 0x1_0700);
        assert!(!apic.deliver_fixed(0x41, false));
        apic.mmio_write(reg::SVR, 0x1ff, 0);
        assert_eq!(apic.mmio_read(reg::LVT_LINT0, 0), 0x1_0700);
        assert_eq!(apic.pending_interrupt(), Some(0x40));
    }

    #[test]
    fn self_ipi_through_icr() {
        let mut apic = enabled();
        // Shorthand self.
        apic.mmio_write(reg::ICR_LOW, (1 << 18) | 0x31, 0);
        route(&mut apic);
        // Shorthand all including self.
        apic.mmio_write(reg::ICR_LOW, (2 << 18) | 0x32, 0);
        route(&mut apic);
        // All excluding self: dropped.
        apic.mmio_write(reg::ICR_LOW, (3 << 18) | 0x33, 0);
        route(&mut apic);
        // Physical destination = own ID (0).
        apic.mmio_write(reg::ICR_HIGH, 0, 0);
        apic.mmio_write(reg::ICR_LOW, 0x34, 0);
        route(&mut apic);
        // Physical broadcast.
        apic.mmio_write(reg::ICR_HIGH, 0xff00_0000, 0);
        apic.mmio_write(reg::ICR_LOW, 0x35, 0);
        route(&mut apic);
        // Physical destination 1: someone else.
        apic.mmio_write(reg::ICR_HIGH, 0x0100_0000, 0);
        apic.mmio_write(reg::ICR_LOW, 0x36, 0);
        route(&mut apic);
        // Logical flat: LDR bit 2, destination bit 2.
        apic.mmio_write(reg::LDR, 0x0400_0000, 0);
        apic.mmio_write(reg::ICR_HIGH, 0x0400_0000, 0);
        apic.mmio_write(reg::ICR_LOW, (1 << 11) | 0x37, 0);
        route(&mut apic);
        apic.mmio_write(reg::ICR_HIGH, 0x0800_0000, 0);
        apic.mmio_write(reg::ICR_LOW, (1 << 11) | 0x38, 0);
        route(&mut apic);
        // Logical cluster: cluster 2 member bit 1.
        apic.mmio_write(reg::DFR, 0x0fff_ffff, 0);
        apic.mmio_write(reg::LDR, 0x2200_0000, 0);
        apic.mmio_write(reg::ICR_HIGH, 0x2300_0000, 0);
        apic.mmio_write(reg::ICR_LOW, (1 << 11) | 0x39, 0);
        route(&mut apic);
        apic.mmio_write(reg::ICR_HIGH, 0x3200_0000, 0);
        apic.mmio_write(reg::ICR_LOW, (1 << 11) | 0x3a, 0);
        route(&mut apic);
        // NMI to self: the NMI latch, not IRR; INIT to self: the INIT latch.
        apic.mmio_write(reg::ICR_LOW, (1 << 18) | (4 << 8) | 0x3b, 0);
        route(&mut apic);
        assert!(apic.nmi_pending());
        apic.mmio_write(reg::ICR_LOW, (1 << 18) | (5 << 8) | 0x3c, 0);
        route(&mut apic);
        assert!(apic.take_init());
        // Lowest priority to self: delivered.
        apic.mmio_write(reg::ICR_LOW, (1 << 18) | (1 << 8) | 0x3d, 0);
        route(&mut apic);
        // Level-triggered fixed: TMR set.
        apic.mmio_write(reg::ICR_LOW, (1 << 18) | (1 << 15) | (1 << 14) | 0x3e, 0);
        route(&mut apic);
        let expected: u32 = [0x31, 0x32, 0x34, 0x35, 0x37, 0x39, 0x3d, 0x3e]
            .iter()
            .map(|v| 1u32 << (v - 0x20))
            .sum();
        assert_eq!(apic.mmio_read(reg::IRR0 + 0x10, 0), expected);
        assert_eq!(apic.mmio_read(reg::TMR0 + 0x10, 0), 1 << 0x1e);
        assert_eq!(apic.mmio_read(reg::ESR, 0), 0);
    }

    #[test]
    fn esr_write_then_read_and_error_lvt() {
        let mut apic = enabled();
        apic.mmio_write(reg::LVT_ERROR, 0xfe, 0);
        // An IPI with an illegal vector to self: send and receive errors.
        apic.mmio_write(reg::ICR_LOW, (1 << 18) | 0x05, 0);
        route(&mut apic);
        assert_eq!(apic.mmio_read(reg::ESR, 0), 0, "visible only after a write");
        assert_eq!(apic.pending_interrupt(), Some(0xfe));
        apic.mmio_write(reg::ESR, 0xdead, 0);
        assert_eq!(
            apic.mmio_read(reg::ESR, 0),
            ESR_SEND_ILLEGAL_VECTOR | ESR_RECEIVE_ILLEGAL_VECTOR
        );
        apic.mmio_write(reg::ESR, 0, 0);
        assert_eq!(apic.mmio_read(reg::ESR, 0), 0);
        // An illegal LVT vector on the timer: receive error only.
        apic.mmio_write(reg::LVT_TIMER, 0x02, 0);
        apic.mmio_write(reg::TIMER_DIVIDE, 0xb, 0);
        apic.mmio_write(reg::TIMER_INITIAL, 10, T0);
        apic.update(T0 + 10);
        apic.mmio_write(reg::ESR, 0, T0 + 10);
        assert_eq!(apic.mmio_read(reg::ESR, 0), ESR_RECEIVE_ILLEGAL_VECTOR);
        assert!(!apic.deliver_fixed(3, false));
    }

    #[test]
    fn one_shot_timer_exact() {
        let mut apic = enabled();
        apic.mmio_write(reg::LVT_TIMER, 0xec, T0);
        apic.mmio_write(reg::TIMER_DIVIDE, 0x3, T0); // divide by 16
        apic.mmio_write(reg::TIMER_INITIAL, 1000, T0);
        assert_eq!(apic.next_deadline(), Some(T0 + 16_000));
        assert_eq!(apic.mmio_read(reg::TIMER_CURRENT, T0), 1000);
        assert_eq!(apic.mmio_read(reg::TIMER_CURRENT, T0 + 15), 1000);
        assert_eq!(apic.mmio_read(reg::TIMER_CURRENT, T0 + 16), 999);
        assert_eq!(apic.mmio_read(reg::TIMER_CURRENT, T0 + 8_000), 500);
        assert_eq!(apic.mmio_read(reg::TIMER_CURRENT, T0 + 15_999), 1);
        apic.update(T0 + 15_999);
        assert_eq!(apic.pending_interrupt(), None);
        apic.update(T0 + 16_000);
        assert_eq!(apic.pending_interrupt(), Some(0xec));
        assert_eq!(apic.next_deadline(), None);
        assert_eq!(apic.mmio_read(reg::TIMER_CURRENT, T0 + 16_000), 0);
        assert_eq!(apic.mmio_read(reg::TIMER_INITIAL, T0 + 16_000), 1000);
        // Later updates do not fire again.
        apic.acknowledge(0xec);
        apic.update(T0 + 1_000_000);
        assert_eq!(apic.pending_interrupt(), None);
        // Initial count 0 stops a running timer.
        apic.mmio_write(reg::TIMER_INITIAL, 5, T0);
        apic.mmio_write(reg::TIMER_INITIAL, 0, T0 + 1);
        assert_eq!(apic.next_deadline(), None);
    }

    #[test]
    fn every_divide_value() {
        let table = [
            (0x0, 2),
            (0x1, 4),
            (0x2, 8),
            (0x3, 16),
            (0x8, 32),
            (0x9, 64),
            (0xa, 128),
            (0xb, 1),
        ];
        for (config, div) in table {
            let mut apic = enabled();
            apic.mmio_write(reg::LVT_TIMER, 0x40, 0);
            apic.mmio_write(reg::TIMER_DIVIDE, config, 0);
            apic.mmio_write(reg::TIMER_INITIAL, 7, 100);
            assert_eq!(
                apic.next_deadline(),
                Some(100 + 7 * div),
                "config {config:#x}"
            );
        }
    }

    #[test]
    fn periodic_timer_rearms_without_drift() {
        let mut apic = enabled();
        apic.mmio_write(reg::LVT_TIMER, LVT_TIMER_PERIODIC | 0x40, T0);
        apic.mmio_write(reg::TIMER_DIVIDE, 0xb, T0); // divide by 1
        apic.mmio_write(reg::TIMER_INITIAL, 100_000, T0);
        assert_eq!(apic.next_deadline(), Some(T0 + 100_000));
        // Serviced late: the next deadline stays on the original grid.
        apic.update(T0 + 100_037);
        assert_eq!(apic.pending_interrupt(), Some(0x40));
        assert_eq!(apic.next_deadline(), Some(T0 + 200_000));
        assert_eq!(apic.mmio_read(reg::TIMER_CURRENT, T0 + 150_000), 50_000);
        apic.acknowledge(0x40);
        apic.mmio_write(reg::EOI, 0, T0 + 150_000);
        // Far behind: one request, deadline = first grid point after now.
        apic.update(T0 + 100_000 * 1_000_000 + 5);
        assert_eq!(apic.pending_interrupt(), Some(0x40));
        assert_eq!(apic.next_deadline(), Some(T0 + 100_000 * 1_000_001));
        // Exactly on a grid point: fires, next is one period later.
        apic.update(T0 + 100_000 * 1_000_001);
        assert_eq!(apic.next_deadline(), Some(T0 + 100_000 * 1_000_002));
    }

    #[test]
    fn periodic_minimum_period() {
        let mut apic = enabled();
        apic.mmio_write(reg::LVT_TIMER, LVT_TIMER_PERIODIC | 0x40, 0);
        apic.mmio_write(reg::TIMER_DIVIDE, 0xb, 0);
        apic.mmio_write(reg::TIMER_INITIAL, 1, 0);
        assert_eq!(apic.next_deadline(), Some(MIN_PERIODIC_TICKS));
        assert_eq!(apic.mmio_read(reg::TIMER_CURRENT, 0), 1);
        // Periodic near the end of the clock: no overflow, the timer just stops.
        apic.update(u64::MAX);
        assert_eq!(apic.pending_interrupt(), Some(0x40));
        assert_eq!(apic.next_deadline(), None);
    }

    #[test]
    fn masked_timer_counts_without_interrupt() {
        let mut apic = enabled();
        apic.mmio_write(reg::LVT_TIMER, LVT_MASKED | 0x40, T0);
        apic.mmio_write(reg::TIMER_DIVIDE, 0xb, T0);
        apic.mmio_write(reg::TIMER_INITIAL, 500, T0);
        assert_eq!(apic.next_deadline(), None, "no wake-up needed");
        assert_eq!(apic.mmio_read(reg::TIMER_CURRENT, T0 + 200), 300);
        apic.update(T0 + 600);
        assert_eq!(apic.pending_interrupt(), None);
        assert_eq!(apic.mmio_read(reg::TIMER_CURRENT, T0 + 600), 0);
        // Unmasking afterwards does not replay the expiry.
        apic.mmio_write(reg::LVT_TIMER, 0x40, T0 + 700);
        apic.update(T0 + 800);
        assert_eq!(apic.pending_interrupt(), None);
    }

    #[test]
    fn tsc_deadline_mode() {
        let mut apic = enabled();
        // Outside TSC-deadline mode IA32_TSC_DEADLINE reads 0 and ignores writes.
        apic.set_tsc_deadline(T0 + 5, T0);
        assert_eq!(apic.tsc_deadline(), 0);
        apic.mmio_write(reg::LVT_TIMER, LVT_TIMER_TSC_DEADLINE | 0x50, T0);
        apic.set_tsc_deadline(T0 + 5000, T0);
        assert_eq!(apic.tsc_deadline(), T0 + 5000);
        assert_eq!(apic.next_deadline(), Some(T0 + 5000));
        // Initial-count writes are ignored; current count reads 0.
        apic.mmio_write(reg::TIMER_INITIAL, 77, T0);
        assert_eq!(apic.mmio_read(reg::TIMER_INITIAL, T0), 0);
        assert_eq!(apic.mmio_read(reg::TIMER_CURRENT, T0), 0);
        apic.update(T0 + 4999);
        assert_eq!(apic.pending_interrupt(), None);
        apic.update(T0 + 5000);
        assert_eq!(apic.pending_interrupt(), Some(0x50));
        assert_eq!(apic.tsc_deadline(), 0);
        assert_eq!(apic.next_deadline(), None);
        // A deadline in the past fires at once; zero disarms.
        apic.acknowledge(0x50);
        apic.mmio_write(reg::EOI, 0, T0);
        apic.set_tsc_deadline(1, T0 + 6000);
        assert_eq!(apic.pending_interrupt(), Some(0x50));
        apic.set_tsc_deadline(T0 + 9000, T0 + 6000);
        apic.set_tsc_deadline(0, T0 + 6000);
        assert_eq!(apic.next_deadline(), None);
    }

    #[test]
    fn mode_switch_disarms() {
        let mut apic = enabled();
        apic.mmio_write(reg::LVT_TIMER, 0x40, 0);
        apic.mmio_write(reg::TIMER_INITIAL, 1000, 0);
        apic.mmio_write(reg::LVT_TIMER, LVT_TIMER_PERIODIC | 0x40, 10);
        assert_eq!(apic.next_deadline(), None);
        assert_eq!(apic.mmio_read(reg::TIMER_INITIAL, 10), 0);
        apic.mmio_write(reg::LVT_TIMER, LVT_TIMER_TSC_DEADLINE | 0x40, 10);
        apic.set_tsc_deadline(500, 10);
        apic.mmio_write(reg::LVT_TIMER, 0x40, 20);
        assert_eq!(apic.tsc_deadline(), 0);
        assert_eq!(apic.next_deadline(), None);
        // Rewriting the same mode (changing only the vector) keeps the timer running.
        apic.mmio_write(reg::TIMER_INITIAL, 1000, 100);
        apic.mmio_write(reg::LVT_TIMER, 0x41, 200);
        assert_eq!(apic.next_deadline(), Some(100 + 2000));
        // The reserved mode never fires.
        apic.mmio_write(reg::LVT_TIMER, LVT_TIMER_MODE_MASK | 0x41, 300);
        apic.mmio_write(reg::TIMER_INITIAL, 1, 300);
        apic.update(u64::MAX);
        assert_eq!(apic.next_deadline(), None);
        assert_eq!(apic.pending_interrupt(), None);
    }

    #[test]
    fn divide_change_keeps_count() {
        let mut apic = enabled();
        apic.mmio_write(reg::LVT_TIMER, 0x40, 0);
        apic.mmio_write(reg::TIMER_DIVIDE, 0xb, 0);
        apic.mmio_write(reg::TIMER_INITIAL, 1000, 0);
        apic.mmio_write(reg::TIMER_DIVIDE, 0x0, 400); // 600 left, now at /2
        assert_eq!(apic.mmio_read(reg::TIMER_CURRENT, 400), 600);
        assert_eq!(apic.next_deadline(), Some(400 + 1200));
    }

    #[test]
    fn base_msr_transitions() {
        let xapic = APIC_DEFAULT_BASE | APIC_BASE_EN | APIC_BASE_BSP;
        let x2 = xapic | APIC_BASE_EXTD;
        let disabled = APIC_DEFAULT_BASE | APIC_BASE_BSP;
        let mut apic = enabled();
        // Reserved bits: 0-7, 9, MAXPHYADDR and up.
        for bit in [0u32, 7, 9, PHYS_ADDR_BITS, 63] {
            assert_eq!(
                apic.set_base_msr(xapic | (1 << bit)),
                Err(ApicFault),
                "bit {bit}"
            );
        }
        // EXTD without EN is invalid from anywhere.
        assert_eq!(apic.set_base_msr(disabled | APIC_BASE_EXTD), Err(ApicFault));
        // xAPIC → x2APIC → xAPIC faults; → disabled → x2APIC faults; → xAPIC works.
        apic.set_base_msr(x2).unwrap();
        assert!(apic.is_x2apic());
        assert_eq!(apic.mmio_base(), None);
        assert_eq!(apic.set_base_msr(xapic), Err(ApicFault));
        assert_eq!(apic.set_base_msr(disabled | APIC_BASE_EXTD), Err(ApicFault));
        apic.set_base_msr(disabled).unwrap();
        assert!(!apic.is_enabled());
        assert_eq!(apic.set_base_msr(x2), Err(ApicFault));
        apic.set_base_msr(xapic).unwrap();
        assert_eq!(apic.mmio_base(), Some(APIC_DEFAULT_BASE));
        // Moving the page.
        apic.set_base_msr(0x1_2345_6000 | APIC_BASE_EN).unwrap();
        assert_eq!(apic.mmio_base(), Some(0x1_2345_6000));
        assert_eq!(apic.base_msr(), 0x1_2345_6800);
        assert_eq!(APIC_BASE_ADDR_MASK, 0x7f_ffff_f000);
    }

    #[test]
    fn disable_resets_and_reenable_works() {
        let mut apic = LocalApic::new(2);
        apic.mmio_write(reg::SVR, 0x1ff, 0);
        apic.mmio_write(reg::TPR, 0x20, 0);
        apic.mmio_write(reg::LVT_TIMER, 0x40, 0);
        apic.mmio_write(reg::TIMER_INITIAL, 100, 0);
        apic.deliver_fixed(0x80, false);
        apic.set_base_msr(APIC_DEFAULT_BASE).unwrap();
        assert_eq!(apic.pending_interrupt(), None);
        assert_eq!(apic.mmio_base(), None);
        assert_eq!(
            apic.mmio_read(reg::SVR, 0),
            0,
            "page not decoded while disabled"
        );
        assert_eq!(apic.x2apic_read(msr(reg::SVR), 0), Err(ApicFault));
        assert!(!apic.deliver_fixed(0x81, false));
        apic.set_tsc_deadline(5, 0);
        apic.set_base_msr(APIC_DEFAULT_BASE | APIC_BASE_EN).unwrap();
        assert_eq!(apic.mmio_read(reg::SVR, 0), 0xff);
        assert_eq!(apic.mmio_read(reg::TPR, 0), 0);
        assert_eq!(apic.mmio_read(reg::LVT_TIMER, 0), LVT_MASKED);
        assert_eq!(apic.mmio_read(reg::TIMER_INITIAL, 0), 0);
        assert_eq!(apic.mmio_read(reg::IRR0 + 0x40, 0), 0);
        assert_eq!(apic.mmio_read(reg::ID, 0), 2 << 24);
        assert_eq!(apic.next_deadline(), None);
        // Works again after re-enabling.
        apic.mmio_write(reg::SVR, 0x1ff, 0);
        apic.mmio_write(reg::LVT_TIMER, 0x40, 0);
        apic.mmio_write(reg::TIMER_INITIAL, 100, 0);
        apic.update(200);
        assert_eq!(apic.pending_interrupt(), Some(0x40));
        // Through x2APIC and back.
        apic.set_base_msr(APIC_DEFAULT_BASE | APIC_BASE_EN | APIC_BASE_EXTD)
            .unwrap();
        assert_eq!(apic.x2apic_read(msr(reg::IRR0 + 0x20), 0), Ok(1));
        apic.set_base_msr(0).unwrap();
        apic.set_base_msr(APIC_DEFAULT_BASE | APIC_BASE_EN).unwrap();
        assert_eq!(apic.mmio_read(reg::IRR0 + 0x20, 0), 0);
        // Full reset.
        apic.reset();
        assert_eq!(apic.id(), 2);
        assert_eq!(apic.base_msr(), APIC_DEFAULT_BASE | APIC_BASE_EN);
    }

    #[test]
    fn x2apic_faults_in_xapic_mode_and_out_of_range() {
        let mut apic = enabled();
        assert_eq!(apic.x2apic_read(msr(reg::ID), 0), Err(ApicFault));
        assert_eq!(apic.x2apic_write(msr(reg::TPR), 0, 0), Err(ApicFault));
        let mut apic = x2apic();
        assert_eq!(apic.x2apic_read(0x7ff, 0), Err(ApicFault));
        assert_eq!(apic.x2apic_read(0x900, 0), Err(ApicFault));
        // The MMIO page is not decoded in x2APIC mode.
        apic.mmio_write(reg::TPR, 0x50, 0);
        assert_eq!(apic.mmio_read(reg::TPR, 0), 0);
        assert_eq!(apic.x2apic_read(msr(reg::TPR), 0), Ok(0));
    }

    #[test]
    fn x2apic_registers() {
        let mut apic = LocalApic::new(0x25);
        apic.mmio_write(reg::SVR, 0x1ff, 0);
        apic.set_base_msr(APIC_DEFAULT_BASE | APIC_BASE_EN | APIC_BASE_EXTD)
            .unwrap();
        assert_eq!(apic.x2apic_read(0x802, 0), Ok(0x25));
        assert_eq!(apic.x2apic_read(0x803, 0), Ok(u64::from(APIC_VERSION)));
        assert_eq!(apic.x2apic_read(0x80d, 0), Ok((2 << 16) | (1 << 5)));
        assert_eq!(apic.x2apic_read(0x80f, 0), Ok(0x1ff));
        apic.x2apic_write(0x808, 0x30, 0).unwrap();
        assert_eq!(apic.x2apic_read(0x808, 0), Ok(0x30));
        assert_eq!(apic.x2apic_read(0x80a, 0), Ok(0x30));
        // Read-only registers fault on write.
        for m in [
            0x802, 0x803, 0x80a, 0x80d, 0x810, 0x817, 0x818, 0x820, 0x827, 0x839,
        ] {
            assert_eq!(apic.x2apic_write(m, 0, 0), Err(ApicFault), "{m:#x}");
        }
        // Write-only and absent registers fault on read.
        for m in [
            0x800, 0x801, 0x804, 0x809, 0x80b, 0x80c, 0x80e, 0x82f, 0x831, 0x83a, 0x83f, 0x840,
            0x8ff,
        ] {
            assert_eq!(apic.x2apic_read(m, 0), Err(ApicFault), "{m:#x}");
        }
        // Absent registers fault on write too.
        for m in [0x809, 0x80c, 0x80e, 0x82f, 0x831, 0x83a, 0x840] {
            assert_eq!(apic.x2apic_write(m, 0, 0), Err(ApicFault), "{m:#x}");
        }
        // Reserved bits fault: upper halves, TPR, SVR bit 12, LVT, divide, ESR, EOI.
        assert_eq!(apic.x2apic_write(0x808, 1 << 32, 0), Err(ApicFault));
        assert_eq!(apic.x2apic_write(0x808, 0x100, 0), Err(ApicFault));
        assert_eq!(apic.x2apic_write(0x80f, 0x11ff, 0), Err(ApicFault));
        assert_eq!(apic.x2apic_write(0x832, 1 << 19, 0), Err(ApicFault));
        assert_eq!(apic.x2apic_write(0x832, 3 << 17, 0), Err(ApicFault));
        assert_eq!(apic.x2apic_write(0x835, 1 << 17, 0), Err(ApicFault));
        assert_eq!(apic.x2apic_write(0x837, 0x700, 0), Err(ApicFault));
        assert_eq!(apic.x2apic_write(0x83e, 0x4, 0), Err(ApicFault));
        assert_eq!(apic.x2apic_write(0x828, 1, 0), Err(ApicFault));
        assert_eq!(apic.x2apic_write(0x80b, 1, 0), Err(ApicFault));
        assert_eq!(apic.x2apic_write(0x83f, 0x100, 0), Err(ApicFault));
        assert_eq!(apic.x2apic_write(0x830, 1 << 12, 0), Err(ApicFault));
        // The LVTs and the timer.
        apic.x2apic_write(0x835, 0x1_a7ff, 0).unwrap();
        assert_eq!(apic.x2apic_read(0x835, 0), Ok(0x1_a7ff));
        apic.x2apic_write(0x83e, 0xb, 0).unwrap();
        apic.x2apic_write(0x832, 0x60, 0).unwrap();
        apic.x2apic_write(0x838, 300, 1000).unwrap();
        assert_eq!(apic.x2apic_read(0x838, 1100), Ok(300));
        assert_eq!(apic.x2apic_read(0x839, 1100), Ok(200));
        assert_eq!(apic.x2apic_read(0x839, 1300), Ok(0));
        assert_eq!(apic.pending_interrupt(), Some(0x60));
        apic.acknowledge(0x60);
        assert_eq!(apic.x2apic_read(0x813, 0), Ok(1));
        apic.x2apic_write(0x80b, 0, 0).unwrap();
        assert_eq!(apic.x2apic_read(0x813, 0), Ok(0));
        apic.x2apic_write(0x828, 0, 0).unwrap();
        assert_eq!(apic.x2apic_read(0x828, 0), Ok(0));
    }

    #[test]
    fn x2apic_ipis() {
        let mut apic = LocalApic::new(0x25);
        apic.mmio_write(reg::SVR, 0x1ff, 0);
        apic.set_base_msr(APIC_DEFAULT_BASE | APIC_BASE_EN | APIC_BASE_EXTD)
            .unwrap();
        // SELF IPI register.
        apic.x2apic_write(0x83f, 0x41, 0).unwrap();
        route(&mut apic);
        // Physical destination = own x2APIC ID, in the upper half.
        apic.x2apic_write(0x830, (0x25 << 32) | 0x42, 0).unwrap();
        route(&mut apic);
        assert_eq!(apic.x2apic_read(0x830, 0), Ok((0x25 << 32) | 0x42));
        // Another APIC: dropped.
        apic.x2apic_write(0x830, (0x26 << 32) | 0x43, 0).unwrap();
        route(&mut apic);
        // Logical: cluster 2, bit 5.
        apic.x2apic_write(0x830, (((2 << 16) | (1 << 5)) << 32) | (1 << 11) | 0x44, 0)
            .unwrap();
        route(&mut apic);
        apic.x2apic_write(0x830, (((3 << 16) | (1 << 5)) << 32) | (1 << 11) | 0x45, 0)
            .unwrap();
        route(&mut apic);
        // Broadcast.
        apic.x2apic_write(0x830, (0xffff_ffff << 32) | 0x46, 0)
            .unwrap();
        route(&mut apic);
        assert_eq!(
            apic.x2apic_read(0x822, 0),
            Ok((1 << 1) | (1 << 2) | (1 << 4) | (1 << 6))
        );
        // An illegal self IPI vector logs errors.
        apic.x2apic_write(0x83f, 0x0f, 0).unwrap();
        route(&mut apic);
        apic.x2apic_write(0x828, 0, 0).unwrap();
        assert_eq!(
            apic.x2apic_read(0x828, 0),
            Ok(u64::from(
                ESR_SEND_ILLEGAL_VECTOR | ESR_RECEIVE_ILLEGAL_VECTOR
            ))
        );
        // x2APIC TSC-deadline through the LVT MSR.
        apic.x2apic_write(0x832, u64::from(LVT_TIMER_TSC_DEADLINE) | 0x70, 0)
            .unwrap();
        apic.set_tsc_deadline(100, 0);
        assert_eq!(apic.next_deadline(), Some(100));
    }

    #[test]
    fn lint0_extint_is_the_virtual_wire() {
        let mut apic = enabled();
        apic.set_lint0(true);
        assert!(!apic.extint_pending(), "LINT0 is masked at reset");
        apic.mmio_write(reg::LVT_LINT0, LVT_DELIVERY_EXTINT, 0);
        assert!(apic.extint_pending());
        assert_eq!(
            apic.pending_interrupt(),
            None,
            "the vector comes from the PIC"
        );
        // The TPR does not hold ExtINT back.
        apic.mmio_write(reg::TPR, 0xf0, 0);
        assert!(apic.extint_pending());
        apic.set_lint0(false);
        assert!(!apic.extint_pending());
        // Active low.
        apic.mmio_write(reg::LVT_LINT0, LVT_DELIVERY_EXTINT | LVT_ACTIVE_LOW, 0);
        assert!(apic.extint_pending());
        apic.set_lint0(true);
        assert!(!apic.extint_pending());
        // Software disable masks the LVT.
        apic.mmio_write(reg::LVT_LINT0, LVT_DELIVERY_EXTINT, 0);
        apic.mmio_write(reg::SVR, 0xff, 0);
        assert!(!apic.extint_pending());
        assert_eq!(
            apic.mmio_read(reg::LVT_LINT0, 0),
            LVT_MASKED | LVT_DELIVERY_EXTINT
        );
        // Globally disabled: LINT0 is INTR, whatever the LVT said.
        apic.set_base_msr(APIC_DEFAULT_BASE).unwrap();
        assert!(apic.extint_pending());
        apic.set_lint0(false);
        assert!(!apic.extint_pending());
        // The pin's level survives a reset.
        apic.set_lint0(true);
        apic.reset();
        apic.set_base_msr(APIC_DEFAULT_BASE).unwrap();
        assert!(apic.extint_pending());
    }

    #[test]
    fn lint_nmi_mode_on_rising_edges() {
        let mut apic = enabled();
        apic.mmio_write(reg::LVT_LINT1, LVT_DELIVERY_NMI, 0);
        apic.set_lint1(true);
        assert!(apic.nmi_pending());
        apic.nmi_injected();
        apic.set_lint1(true);
        assert!(!apic.nmi_pending(), "no new edge");
        apic.set_lint1(false);
        apic.set_lint1(true);
        assert!(apic.nmi_pending());
        apic.nmi_injected();
        // LINT0 in NMI mode: the PIC's INTR rising raises an NMI.
        apic.mmio_write(reg::LVT_LINT0, LVT_DELIVERY_NMI, 0);
        apic.set_lint0(true);
        assert!(apic.nmi_pending());
        assert!(!apic.extint_pending());
        apic.nmi_injected();
        // Masked: nothing.
        apic.mmio_write(reg::LVT_LINT1, LVT_MASKED | LVT_DELIVERY_NMI, 0);
        apic.set_lint1(false);
        apic.set_lint1(true);
        assert!(!apic.nmi_pending());
        // Globally disabled: LINT1 is the NMI input.
        apic.set_base_msr(APIC_DEFAULT_BASE).unwrap();
        apic.set_lint1(false);
        apic.set_lint1(true);
        assert!(apic.nmi_pending());
    }

    #[test]
    fn lint0_fixed_edge_and_level() {
        let mut apic = enabled();
        apic.mmio_write(reg::LVT_LINT0, 0x41, 0);
        apic.set_lint0(true);
        assert_eq!(apic.pending_interrupt(), Some(0x41));
        apic.acknowledge(0x41);
        apic.mmio_write(reg::EOI, 0, 0);
        assert_eq!(apic.take_eoi_broadcast(), None, "edge: no broadcast");
        apic.set_lint0(true);
        assert_eq!(apic.pending_interrupt(), None, "no new edge");
        // Level-triggered: requests at once since the pin is high, remote IRR set.
        apic.mmio_write(reg::LVT_LINT0, LVT_LEVEL | 0x42, 0);
        assert_eq!(apic.pending_interrupt(), Some(0x42));
        assert_eq!(
            apic.mmio_read(reg::LVT_LINT0, 0),
            LVT_LEVEL | LVT_REMOTE_IRR | 0x42
        );
        apic.acknowledge(0x42);
        // The EOI clears remote IRR; the pin is still high: again.
        apic.mmio_write(reg::EOI, 0, 0);
        assert_eq!(apic.take_eoi_broadcast(), Some(0x42));
        assert_eq!(apic.pending_interrupt(), Some(0x42));
        apic.acknowledge(0x42);
        apic.set_lint0(false);
        apic.mmio_write(reg::EOI, 0, 0);
        assert_eq!(apic.mmio_read(reg::LVT_LINT0, 0), LVT_LEVEL | 0x42);
        assert_eq!(apic.pending_interrupt(), None);
        // Rewriting the LVT keeps remote IRR read-only; switching to edge clears it.
        apic.set_lint0(true);
        apic.mmio_write(reg::LVT_LINT0, LVT_LEVEL | LVT_REMOTE_IRR | 0x42, 0);
        assert_ne!(apic.mmio_read(reg::LVT_LINT0, 0) & LVT_REMOTE_IRR, 0);
        apic.mmio_write(reg::LVT_LINT0, 0x42, 0);
        assert_eq!(apic.mmio_read(reg::LVT_LINT0, 0), 0x42);
    }

    #[test]
    fn messages_from_the_io_apic() {
        let msg = |delivery, vector, level_triggered| IrqMessage {
            vector,
            delivery,
            logical: false,
            destination: 0,
            level_triggered,
        };
        let mut apic = LocalApic::new(0);
        // Software disabled: NMI is accepted, fixed and ExtINT are not.
        assert!(!apic.deliver_message(&msg(DeliveryMode::Fixed, 0x40, false)));
        assert!(!apic.deliver_message(&msg(DeliveryMode::ExtInt, 0, false)));
        assert!(apic.deliver_message(&msg(DeliveryMode::Nmi, 0, false)));
        assert!(apic.nmi_pending());
        apic.mmio_write(reg::SVR, 0x1ff, 0);
        assert!(apic.deliver_message(&msg(DeliveryMode::Fixed, 0x40, true)));
        assert_eq!(apic.mmio_read(reg::TMR0 + 0x20, 0), 1);
        assert!(apic.deliver_message(&msg(DeliveryMode::LowestPriority, 0x41, false)));
        assert_eq!(apic.mmio_read(reg::IRR0 + 0x20, 0), 3);
        assert!(!apic.deliver_message(&msg(DeliveryMode::Fixed, 0x0f, false)));
        assert!(apic.deliver_message(&msg(DeliveryMode::Init, 0, false)));
        assert!(apic.take_init(), "INIT latched for the vCPU");
        assert!(!apic.deliver_message(&msg(DeliveryMode::Smi, 0, false)));
        assert!(apic.deliver_message(&msg(DeliveryMode::ExtInt, 0, false)));
        assert!(apic.extint_pending());
        apic.extint_acknowledged();
        assert!(!apic.extint_pending());
        // Globally disabled: nothing.
        apic.set_base_msr(APIC_DEFAULT_BASE).unwrap();
        apic.nmi_injected();
        assert!(!apic.deliver_message(&msg(DeliveryMode::Nmi, 0, false)));
        assert!(!apic.nmi_pending());
    }
}
