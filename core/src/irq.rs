//! Interrupt routing: the one path from a device's interrupt line to the local APICs
//! (Linux KVM's `irqchip` and `kvm_set_irq` are the model).
//!
//! A device raises or lowers a line with [`IrqChip::set_irq`] (the VM's entry point is
//! [`crate::vm::Vm::set_irq`]). Lines 0-15 are the ISA IRQs and lines 16-23 the further
//! inputs of the I/O APIC (GSIs 16-23), wired as on a PC and as QEMU's `pc` machine and
//! its MADT describe them:
//!
//! | line | 8259 PIC input | I/O APIC pin |
//! |---|---|---|
//! | 0 (PIT) | IR0 | 2 (the interrupt source override IRQ 0 → GSI 2) |
//! | 1, 3-15 | IRQ n | n |
//! | 2 | none: IR2 is the slave's cascade | none: pin 2 belongs to IRQ 0 |
//! | 16-23 | none | n |
//!
//! I/O APIC pin 0 has no source (as in QEMU). Every line is active high when asserted;
//! what the PIC and the I/O APIC make of it (edge or level, polarity) is their
//! programming. A line keeps the level its device set last; setting the same level again
//! changes nothing, so an edge source pulses ([`IrqChip::pulse_irq`]).
//!
//! The PIC's INTR output drives LINT0 of every local APIC. The I/O APIC's messages go to
//! the local APICs their destination names ([`deliver_message`]): physical (an APIC ID,
//! 0xFF for all), logical flat or cluster; lowest-priority delivery picks one of the
//! addressed APICs, the one with the lowest processor priority. A message no APIC accepts
//! is dropped. The local APICs' EOI broadcasts come back through [`IrqChip::eoi`].
//!
//! Interprocessor interrupts take the same bus: a local APIC's ICR write produces an
//! [`Ipi`] (taken with [`LocalApic::take_ipi`]), which [`deliver_ipi`] hands to the APICs
//! its shorthand or destination names, each matching the destination against its own
//! ID, LDR and DFR as hardware does.
//!
//! The local APICs are reached through [`LocalApics`]: a slice of them, or the machine's
//! vCPUs, each of which holds its own.

use crate::apic::LocalApic;
use crate::devices::ioapic::IoApic;
use crate::devices::pic::Pic;

/// Lines a device can drive: ISA IRQs 0-15 and GSIs 16-23.
pub const IRQ_LINES: u32 = 24;

/// How an interrupt message is delivered (the I/O APIC's delivery-mode field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DeliveryMode {
    /// The vector, to every addressed APIC.
    Fixed,
    /// The vector, to the addressed APIC with the lowest priority.
    LowestPriority,
    /// A system-management interrupt.
    Smi,
    /// A non-maskable interrupt (the vector is ignored).
    Nmi,
    /// INIT.
    Init,
    /// An external interrupt: the vector comes from the 8259 PIC's INTA cycle.
    ExtInt,
    /// Start-up (SIPI, ICR only): a processor waiting for SIPI starts in real mode at
    /// `vector << 12`.
    StartUp,
    /// Encoding 3, and 6 from the I/O APIC: no delivery.
    Reserved,
}

impl DeliveryMode {
    /// The mode the I/O APIC's redirection entry encodes in the low three bits of `bits`
    /// (6 is reserved there).
    pub fn from_bits(bits: u8) -> DeliveryMode {
        match bits & 7 {
            0 => DeliveryMode::Fixed,
            1 => DeliveryMode::LowestPriority,
            2 => DeliveryMode::Smi,
            4 => DeliveryMode::Nmi,
            5 => DeliveryMode::Init,
            7 => DeliveryMode::ExtInt,
            _ => DeliveryMode::Reserved,
        }
    }

    /// The mode the ICR encodes in the low three bits of `bits` (6 is start-up there).
    pub fn from_icr_bits(bits: u8) -> DeliveryMode {
        match bits & 7 {
            6 => DeliveryMode::StartUp,
            other => DeliveryMode::from_bits(other),
        }
    }
}

/// An interrupt message on the APIC bus (from the I/O APIC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrqMessage {
    /// The vector (fixed and lowest-priority delivery).
    pub vector: u8,
    /// How it is delivered.
    pub delivery: DeliveryMode,
    /// Logical (true) or physical destination mode.
    pub logical: bool,
    /// The 8-bit destination.
    pub destination: u8,
    /// Level-triggered: the accepting APIC sets the vector's TMR bit and broadcasts its
    /// EOI.
    pub level_triggered: bool,
}

/// The local APICs of a machine, by position (a position is not an APIC ID: software
/// may change the xAPIC ID register). Implemented for a slice of [`LocalApic`] and for
/// the machine's vCPUs, so routing reaches each vCPU's own APIC without copying it out.
pub trait LocalApics {
    /// How many there are.
    fn count(&self) -> usize;
    /// The APIC at position `i` (`i < count()`).
    fn apic(&self, i: usize) -> &LocalApic;
    /// The APIC at position `i`, writable.
    fn apic_mut(&mut self, i: usize) -> &mut LocalApic;
}

impl LocalApics for [LocalApic] {
    #[inline]
    fn count(&self) -> usize {
        self.len()
    }
    #[inline]
    fn apic(&self, i: usize) -> &LocalApic {
        &self[i]
    }
    #[inline]
    fn apic_mut(&mut self, i: usize) -> &mut LocalApic {
        &mut self[i]
    }
}

/// Of the APICs at the positions `addressed` accepts, the one with the lowest processor
/// priority class (the first such on a tie): lowest-priority delivery's choice.
fn lowest_priority<A: LocalApics + ?Sized>(
    apics: &A,
    mut addressed: impl FnMut(usize, &LocalApic) -> bool,
) -> Option<usize> {
    (0..apics.count())
        .filter(|&i| addressed(i, apics.apic(i)))
        .min_by_key(|&i| apics.apic(i).ppr() & 0xf0)
}

/// Hand `msg` to the local APICs it is addressed to; returns whether one accepted it.
pub fn deliver_message<A: LocalApics + ?Sized>(msg: &IrqMessage, apics: &mut A) -> bool {
    let logical = msg.logical;
    let dest = msg.destination;
    if msg.delivery == DeliveryMode::LowestPriority {
        let target = lowest_priority(apics, |_, apic| apic.accepts_destination(dest, logical));
        return target.is_some_and(|i| apics.apic_mut(i).deliver_message(msg));
    }
    let mut accepted = false;
    for i in 0..apics.count() {
        let apic = apics.apic_mut(i);
        if apic.accepts_destination(dest, logical) {
            accepted |= apic.deliver_message(msg);
        }
    }
    accepted
}

/// The destination shorthand of an IPI (ICR bits 19:18).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Shorthand {
    /// The destination field names the targets.
    None,
    /// The sender itself.
    SelfOnly,
    /// Every APIC, the sender included.
    AllIncludingSelf,
    /// Every APIC but the sender.
    AllExcludingSelf,
}

impl Shorthand {
    /// The shorthand ICR bits 19:18 (the low two bits of `bits`) encode.
    pub fn from_bits(bits: u32) -> Shorthand {
        match bits & 3 {
            0 => Shorthand::None,
            1 => Shorthand::SelfOnly,
            2 => Shorthand::AllIncludingSelf,
            _ => Shorthand::AllExcludingSelf,
        }
    }
}

/// An interprocessor interrupt: the command a local APIC's ICR write sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ipi {
    /// The vector (fixed and lowest-priority delivery; start-up: the page number of the
    /// real-mode start address).
    pub vector: u8,
    /// How it is delivered.
    pub delivery: DeliveryMode,
    /// Logical (true) or physical destination mode.
    pub logical: bool,
    /// The level bit (14): clear only in an INIT level de-assert.
    pub assert: bool,
    /// The trigger-mode bit (15): level-triggered.
    pub level_triggered: bool,
    /// The destination shorthand.
    pub shorthand: Shorthand,
    /// The destination: the 8-bit ICR[63:56] of an xAPIC, the 32-bit ICR[63:32] of an
    /// x2APIC.
    pub destination: u32,
    /// The sender was in x2APIC mode: the destination is 32 bits wide and 0xFFFFFFFF is
    /// the broadcast.
    pub x2apic: bool,
}

impl Ipi {
    /// Whether this is an INIT level de-assert (INIT, level-triggered, level 0): the MP
    /// specification's arbitration-ID resynchronisation, which processors since the
    /// Pentium 4 ignore (SDM 3A 11.6.1), as does this APIC bus.
    pub fn is_init_deassert(&self) -> bool {
        self.delivery == DeliveryMode::Init && self.level_triggered && !self.assert
    }
}

/// Send `ipi` from the APIC at position `sender` to the APICs it addresses; returns how
/// many accepted it. The shorthands pick the sender, everyone, or everyone else; without
/// one, each APIC matches the destination against its own mode, ID, LDR and DFR
/// ([`LocalApic::accepts_ipi_destination`]). Lowest-priority delivery goes to the one
/// addressed APIC with the lowest processor priority. An INIT level de-assert goes
/// nowhere.
pub fn deliver_ipi<A: LocalApics + ?Sized>(ipi: &Ipi, sender: usize, apics: &mut A) -> usize {
    if ipi.is_init_deassert() {
        return 0;
    }
    let addressed = |i: usize, apic: &LocalApic| match ipi.shorthand {
        Shorthand::None => apic.accepts_ipi_destination(ipi.destination, ipi.logical, ipi.x2apic),
        Shorthand::SelfOnly => i == sender,
        Shorthand::AllIncludingSelf => apic.is_enabled(),
        Shorthand::AllExcludingSelf => i != sender && apic.is_enabled(),
    };
    if ipi.delivery == DeliveryMode::LowestPriority && ipi.shorthand != Shorthand::SelfOnly {
        let target = lowest_priority(apics, addressed);
        return target.map_or(0, |i| usize::from(apics.apic_mut(i).accept_ipi(ipi)));
    }
    let mut accepted = 0;
    for i in 0..apics.count() {
        if addressed(i, apics.apic(i)) && apics.apic_mut(i).accept_ipi(ipi) {
            accepted += 1;
        }
    }
    accepted
}

/// The I/O APIC pin ISA IRQ or GSI `line` is wired to.
pub fn ioapic_pin(line: u32) -> Option<usize> {
    match line {
        0 => Some(2),
        2 => None,
        1..IRQ_LINES => Some(line as usize),
        _ => None,
    }
}

/// The machine's interrupt controllers (the PIC pair and the I/O APIC) and the lines
/// that feed them.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct IrqChip {
    /// The 8259 pair (ports 0x20/0x21, 0xA0/0xA1, ELCR 0x4D0/0x4D1).
    pub pic: Pic,
    /// The I/O APIC at 0xFEC00000.
    pub ioapic: IoApic,
    /// Each line's level as its device set it.
    lines: u32,
}

impl IrqChip {
    /// The controllers in their reset state, every line low.
    pub fn new() -> IrqChip {
        IrqChip::default()
    }

    /// The level `line` was last set to.
    pub fn line(&self, line: u32) -> bool {
        line < IRQ_LINES && self.lines & (1 << line) != 0
    }

    /// Whether an interrupt on `line` could reach a CPU now: its PIC input is unmasked
    /// (and for the slave's inputs the cascade input on the master too), or the I/O APIC
    /// pin it is wired to is unmasked. Whether the local APICs take the PIC's output
    /// through LINT0 is not looked at, so the answer errs towards "could". A timer whose
    /// line is masked everywhere need not wake anything: its edges still reach the PIC's
    /// IRR, which a later unmask delivers.
    pub fn line_unmasked(&self, line: u32) -> bool {
        let pic = line < 16 && {
            let imr = self.pic.imr();
            // The slave's output is the master's input 2.
            imr & (1 << line) == 0 && (line < 8 || imr & (1 << 2) == 0)
        };
        pic || ioapic_pin(line)
            .is_some_and(|pin| self.ioapic.entry(pin) & crate::devices::ioapic::ENTRY_MASKED == 0)
    }

    /// Drive `line` (ISA IRQ 0-15 or GSI 16-23) to `level`. Returns whether the line
    /// changed (then what the CPU may take can have changed too); other numbers are
    /// ignored.
    #[inline]
    pub fn set_irq<A: LocalApics + ?Sized>(
        &mut self,
        line: u32,
        level: bool,
        apics: &mut A,
    ) -> bool {
        if line >= IRQ_LINES || self.line(line) == level {
            return false;
        }
        self.lines ^= 1 << line;
        self.route(line, level, apics);
        true
    }

    #[cold]
    fn route<A: LocalApics + ?Sized>(&mut self, line: u32, level: bool, apics: &mut A) {
        if line < 16 {
            self.pic.set_irq(line as u8, level);
            self.sync_pic(apics);
        }
        if let Some(pin) = ioapic_pin(line) {
            self.ioapic
                .set_input(pin, level, &mut |m| deliver_message(m, apics));
        }
    }

    /// Raise and lower `line`: one edge, for sources that signal events rather than
    /// states.
    pub fn pulse_irq<A: LocalApics + ?Sized>(&mut self, line: u32, apics: &mut A) {
        self.set_irq(line, true, apics);
        self.set_irq(line, false, apics);
    }

    /// Carry the PIC's INTR output to every local APIC's LINT0.
    fn sync_pic<A: LocalApics + ?Sized>(&mut self, apics: &mut A) {
        let output = self.pic.output();
        for i in 0..apics.count() {
            apics.apic_mut(i).set_lint0(output);
        }
    }

    /// A read of a PIC or ELCR port.
    pub fn pic_read<A: LocalApics + ?Sized>(&mut self, port: u16, apics: &mut A) -> u8 {
        let value = self.pic.read_port(port);
        // A poll acknowledges an interrupt.
        self.sync_pic(apics);
        value
    }

    /// A write to a PIC or ELCR port.
    pub fn pic_write<A: LocalApics + ?Sized>(&mut self, port: u16, value: u8, apics: &mut A) {
        self.pic.write_port(port, value);
        self.sync_pic(apics);
    }

    /// The INTA cycle for an external interrupt the CPU is taking: the PIC's vector.
    pub fn acknowledge_extint<A: LocalApics + ?Sized>(&mut self, apics: &mut A) -> u8 {
        let vector = self.pic.acknowledge();
        self.sync_pic(apics);
        vector
    }

    /// An MMIO read in the I/O APIC's page.
    pub fn ioapic_read(&self, offset: u64, size: u8) -> u32 {
        self.ioapic.mmio_read(offset, size)
    }

    /// An MMIO write in the I/O APIC's page.
    pub fn ioapic_write<A: LocalApics + ?Sized>(
        &mut self,
        offset: u64,
        size: u8,
        value: u32,
        apics: &mut A,
    ) {
        self.ioapic
            .mmio_write(offset, size, value, &mut |m| deliver_message(m, apics));
    }

    /// A local APIC's EOI broadcast for the level-triggered `vector`.
    pub fn eoi<A: LocalApics + ?Sized>(&mut self, vector: u8, apics: &mut A) {
        self.ioapic.eoi(vector, &mut |m| deliver_message(m, apics));
    }
}

impl crate::devices::SavedState for IrqChip {
    fn check_state(&self) -> Result<(), (&'static str, alloc::string::String)> {
        self.pic.check_state()?;
        if self.lines >> crate::devices::ioapic::IOAPIC_PINS != 0 {
            return Err(("lines", alloc::format!("{:#x}: lines above 23", self.lines)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apic::{reg, APIC_BASE_EN, APIC_BASE_EXTD, APIC_DEFAULT_BASE};
    use crate::devices::ioapic::{IOREGSEL, IOWIN};

    impl<const N: usize> LocalApics for [LocalApic; N] {
        fn count(&self) -> usize {
            N
        }
        fn apic(&self, i: usize) -> &LocalApic {
            &self[i]
        }
        fn apic_mut(&mut self, i: usize) -> &mut LocalApic {
            &mut self[i]
        }
    }

    fn apic(id: u32) -> LocalApic {
        let mut apic = LocalApic::new(id);
        apic.mmio_write(reg::SVR, 0x1ff, 0);
        apic
    }

    fn program(chip: &mut IrqChip, apics: &mut [LocalApic], pin: u32, entry: u64) {
        chip.ioapic_write(IOREGSEL, 4, 0x11 + 2 * pin, apics);
        chip.ioapic_write(IOWIN, 4, (entry >> 32) as u32, apics);
        chip.ioapic_write(IOREGSEL, 4, 0x10 + 2 * pin, apics);
        chip.ioapic_write(IOWIN, 4, entry as u32, apics);
    }

    /// Vectors requested in `apic`'s IRR (bits 32-255 as a list).
    fn irr(apic: &mut LocalApic) -> alloc::vec::Vec<u8> {
        let mut v = alloc::vec::Vec::new();
        for word in 1..8u32 {
            let bits = apic.mmio_read(reg::IRR0 + 0x10 * word, 0);
            for bit in 0..32 {
                if bits & (1 << bit) != 0 {
                    v.push((word * 32 + bit) as u8);
                }
            }
        }
        v
    }

    fn linux_pic(chip: &mut IrqChip, apics: &mut [LocalApic]) {
        for (port, value) in [
            (0x20, 0x11),
            (0x21, 0x30),
            (0x21, 0x04),
            (0x21, 0x01),
            (0xa0, 0x11),
            (0xa1, 0x38),
            (0xa1, 0x02),
            (0xa1, 0x01),
        ] {
            chip.pic_write(port, value, apics);
        }
    }

    #[test]
    fn wiring_of_the_lines() {
        assert_eq!(ioapic_pin(0), Some(2));
        assert_eq!(ioapic_pin(1), Some(1));
        assert_eq!(ioapic_pin(2), None);
        assert_eq!(ioapic_pin(4), Some(4));
        assert_eq!(ioapic_pin(23), Some(23));
        assert_eq!(ioapic_pin(24), None);
        let mut chip = IrqChip::new();
        let mut apics = [apic(0)];
        assert!(chip.set_irq(4, true, &mut apics));
        assert!(!chip.set_irq(4, true, &mut apics), "no change");
        assert!(chip.line(4));
        assert!(!chip.set_irq(24, true, &mut apics));
        assert!(!chip.line(24));
    }

    #[test]
    fn isa_irq0_reaches_ioapic_pin2_and_pic_ir0() {
        let mut chip = IrqChip::new();
        let mut apics = [apic(0)];
        linux_pic(&mut chip, &mut apics);
        program(&mut chip, &mut apics, 2, 0x30);
        program(&mut chip, &mut apics, 0, 0x3f);
        chip.pulse_irq(0, &mut apics);
        assert_eq!(irr(&mut apics[0]), [0x30], "pin 2, not pin 0");
        assert_eq!(chip.pic.irr() & 1, 1, "and the PIC's IR0");
        // GSI 16-23 reach only the I/O APIC.
        program(&mut chip, &mut apics, 20, 0x0000_0000_0000_a061);
        assert_eq!(
            irr(&mut apics[0]),
            [0x30, 0x61],
            "active low: the idle line asserts"
        );
        chip.set_irq(20, true, &mut apics);
        assert_eq!(chip.pic.irr() & !1, 0);
    }

    #[test]
    fn pic_through_lint0_in_virtual_wire_mode() {
        let mut chip = IrqChip::new();
        let mut apics = [apic(0)];
        linux_pic(&mut chip, &mut apics);
        chip.set_irq(4, true, &mut apics);
        assert!(chip.pic.output());
        assert!(!apics[0].extint_pending(), "LINT0 masked at reset");
        apics[0].mmio_write(reg::LVT_LINT0, 0x700, 0);
        assert!(apics[0].extint_pending());
        assert_eq!(apics[0].pending_interrupt(), None, "not an IRR vector");
        assert_eq!(chip.acknowledge_extint(&mut apics), 0x34);
        assert!(!apics[0].extint_pending(), "INTR fell with the INTA cycle");
        chip.pic_write(0x20, 0x20, &mut apics);
        chip.set_irq(4, false, &mut apics);
        // With the APIC globally disabled, INTR reaches the CPU directly.
        apics[0].mmio_write(reg::LVT_LINT0, 0x1_0700, 0);
        chip.set_irq(4, true, &mut apics);
        assert!(!apics[0].extint_pending());
        apics[0].set_base_msr(APIC_DEFAULT_BASE).unwrap();
        assert!(apics[0].extint_pending());
        assert_eq!(chip.acknowledge_extint(&mut apics), 0x34);
    }

    #[test]
    fn level_triggered_ioapic_interrupt_and_eoi_broadcast() {
        let mut chip = IrqChip::new();
        let mut apics = [apic(0)];
        program(&mut chip, &mut apics, 4, 0x0000_0000_0000_8044);
        chip.set_irq(4, true, &mut apics);
        let v = apics[0].pending_interrupt().unwrap();
        assert_eq!(v, 0x44);
        apics[0].acknowledge(v);
        assert_eq!(apics[0].mmio_read(reg::TMR0 + 0x20, 0), 1 << 4, "TMR set");
        assert_ne!(chip.ioapic.entry(4) & (1 << 14), 0, "remote IRR set");
        // The guest's EOI is broadcast; the line is still high, so it comes again.
        apics[0].mmio_write(reg::EOI, 0, 0);
        assert_eq!(apics[0].take_eoi_broadcast(), Some(0x44));
        assert_eq!(apics[0].take_eoi_broadcast(), None);
        chip.eoi(0x44, &mut apics);
        assert_eq!(apics[0].pending_interrupt(), Some(0x44));
        apics[0].acknowledge(0x44);
        chip.set_irq(4, false, &mut apics);
        apics[0].mmio_write(reg::EOI, 0, 0);
        let vector = apics[0].take_eoi_broadcast().unwrap();
        chip.eoi(vector, &mut apics);
        assert_eq!(chip.ioapic.entry(4) & (1 << 14), 0);
        assert_eq!(apics[0].pending_interrupt(), None);
        // An edge-triggered vector's EOI is not broadcast.
        apics[0].deliver_fixed(0x50, false);
        apics[0].acknowledge(0x50);
        apics[0].mmio_write(reg::EOI, 0, 0);
        assert_eq!(apics[0].take_eoi_broadcast(), None);
    }

    #[test]
    fn destinations_physical_logical_and_lowest_priority() {
        let mut apics = [apic(0), apic(1), apic(2)];
        let msg = |dest: u8, logical: bool, delivery: DeliveryMode| IrqMessage {
            vector: 0x40,
            delivery,
            logical,
            destination: dest,
            level_triggered: false,
        };
        let take = |apics: &mut [LocalApic]| -> [bool; 3] {
            let mut got = [false; 3];
            for (i, apic) in apics.iter_mut().enumerate() {
                got[i] = apic.pending_interrupt() == Some(0x40);
                if got[i] {
                    apic.acknowledge(0x40);
                    apic.mmio_write(reg::EOI, 0, 0);
                }
            }
            got
        };
        assert!(deliver_message(
            &msg(1, false, DeliveryMode::Fixed),
            &mut apics
        ));
        assert_eq!(take(&mut apics), [false, true, false]);
        assert!(deliver_message(
            &msg(0xff, false, DeliveryMode::Fixed),
            &mut apics
        ));
        assert_eq!(take(&mut apics), [true, true, true]);
        assert!(
            !deliver_message(&msg(7, false, DeliveryMode::Fixed), &mut apics),
            "dropped"
        );
        // Logical flat: LDR bits 0, 1, 2.
        for (i, apic) in apics.iter_mut().enumerate() {
            apic.mmio_write(reg::LDR, 1 << (24 + i), 0);
        }
        assert!(deliver_message(
            &msg(0b101, true, DeliveryMode::Fixed),
            &mut apics
        ));
        assert_eq!(take(&mut apics), [true, false, true]);
        // Logical cluster: cluster 1, members 1 and 2.
        for (i, apic) in apics.iter_mut().enumerate() {
            apic.mmio_write(reg::DFR, 0x0fff_ffff, 0);
            apic.mmio_write(reg::LDR, (0x10 | (1 << i)) << 24, 0);
        }
        assert!(deliver_message(
            &msg(0x16, true, DeliveryMode::Fixed),
            &mut apics
        ));
        assert_eq!(take(&mut apics), [false, true, true]);
        assert!(!deliver_message(
            &msg(0x26, true, DeliveryMode::Fixed),
            &mut apics
        ));
        // Lowest priority: one APIC, the one with the lowest priority.
        apics[0].mmio_write(reg::TPR, 0x30, 0);
        apics[1].mmio_write(reg::TPR, 0x20, 0);
        apics[2].mmio_write(reg::TPR, 0x10, 0);
        assert!(deliver_message(
            &msg(0x13, true, DeliveryMode::LowestPriority),
            &mut apics
        ));
        assert_eq!(take(&mut apics), [false, true, false]);
        // x2APIC: physical ID, and 0xFF is still a broadcast.
        apics[2]
            .set_base_msr(APIC_DEFAULT_BASE | APIC_BASE_EN | APIC_BASE_EXTD)
            .unwrap();
        assert!(apics[2].accepts_destination(2, false));
        assert!(apics[2].accepts_destination(0xff, false));
        assert!(!apics[2].accepts_destination(1, false));
        // A globally disabled APIC accepts nothing.
        apics[1].set_base_msr(APIC_DEFAULT_BASE).unwrap();
        assert!(!apics[1].accepts_destination(0xff, false));
    }

    #[test]
    fn nmi_and_extint_messages() {
        let mut chip = IrqChip::new();
        let mut apics = [apic(0)];
        linux_pic(&mut chip, &mut apics);
        program(&mut chip, &mut apics, 5, 0x400);
        chip.pulse_irq(5, &mut apics);
        assert!(apics[0].nmi_pending());
        assert_eq!(apics[0].pending_interrupt(), None);
        apics[0].nmi_injected();
        // ExtINT: the CPU asks the PIC for the vector (IRQ 5 is also on the PIC).
        program(&mut chip, &mut apics, 5, 0x700);
        chip.pulse_irq(5, &mut apics);
        assert!(apics[0].extint_pending());
        assert_eq!(chip.acknowledge_extint(&mut apics), 0x35);
        apics[0].extint_acknowledged();
        assert!(!apics[0].extint_pending());
        // SMI and INIT are not modelled: not accepted.
        program(&mut chip, &mut apics, 6, 0x200);
        chip.pulse_irq(6, &mut apics);
        assert!(!apics[0].nmi_pending() && apics[0].pending_interrupt().is_none());
    }

    /// Write `apics[from]`'s ICR (high half first, as a guest does) and route the IPI;
    /// returns how many APICs accepted it.
    fn send_ipi(apics: &mut [LocalApic], from: usize, high: u32, low: u32) -> usize {
        apics[from].mmio_write(reg::ICR_HIGH, high, 0);
        apics[from].mmio_write(reg::ICR_LOW, low, 0);
        let ipi = apics[from].take_ipi().expect("an ICR write sends an IPI");
        deliver_ipi(&ipi, from, apics)
    }

    /// Which of the APICs have `vector` requested.
    fn requested(apics: &mut [LocalApic], vector: u8) -> alloc::vec::Vec<usize> {
        (0..apics.len())
            .filter(|&i| irr(&mut apics[i]).contains(&vector))
            .collect()
    }

    #[test]
    fn ipis_by_shorthand_destination_and_delivery_mode() {
        const LOGICAL: u32 = 1 << 11;
        const ASSERT: u32 = 1 << 14;
        const LEVEL: u32 = 1 << 15;
        const SELF: u32 = 1 << 18;
        const ALL: u32 = 2 << 18;
        const OTHERS: u32 = 3 << 18;
        let mut apics = [apic(0), apic(1), apic(2), apic(3)];
        // Fixed, physical destination (ICR[63:56]).
        assert_eq!(send_ipi(&mut apics, 0, 2 << 24, ASSERT | 0x50), 1);
        assert_eq!(requested(&mut apics, 0x50), [2]);
        assert_eq!(send_ipi(&mut apics, 0, 0xff << 24, ASSERT | 0x51), 4);
        assert_eq!(
            requested(&mut apics, 0x51),
            [0, 1, 2, 3],
            "physical broadcast"
        );
        assert_eq!(send_ipi(&mut apics, 0, 7 << 24, ASSERT | 0x52), 0);
        // The shorthands ignore the destination field.
        assert_eq!(send_ipi(&mut apics, 1, 3 << 24, SELF | ASSERT | 0x53), 1);
        assert_eq!(requested(&mut apics, 0x53), [1]);
        assert_eq!(send_ipi(&mut apics, 0, 0, ALL | ASSERT | 0x54), 4);
        assert_eq!(requested(&mut apics, 0x54), [0, 1, 2, 3]);
        assert_eq!(send_ipi(&mut apics, 3, 0, OTHERS | ASSERT | 0x55), 3);
        assert_eq!(requested(&mut apics, 0x55), [0, 1, 2]);
        // Logical, flat model (DFR all ones at reset): a bit per APIC in the LDR.
        for (i, a) in apics.iter_mut().enumerate() {
            a.mmio_write(reg::LDR, 1 << (24 + i), 0);
        }
        assert_eq!(
            send_ipi(&mut apics, 0, 0b1010 << 24, LOGICAL | ASSERT | 0x56),
            2
        );
        assert_eq!(requested(&mut apics, 0x56), [1, 3]);
        // Lowest priority among APICs 1 to 3: the one with the lowest TPR.
        for (i, tpr) in [(1, 0x40), (2, 0x20), (3, 0x30)] {
            apics[i].mmio_write(reg::TPR, tpr, 0);
        }
        let lowest = LOGICAL | ASSERT | (1 << 8) | 0x57;
        assert_eq!(send_ipi(&mut apics, 0, 0b1110 << 24, lowest), 1);
        assert_eq!(requested(&mut apics, 0x57), [2]);
        // Logical, cluster model: cluster in LDR[31:28], members in LDR[27:24].
        for (i, ldr) in [0x11u32, 0x12, 0x21, 0x22].into_iter().enumerate() {
            apics[i].mmio_write(reg::DFR, 0x0fff_ffff, 0);
            apics[i].mmio_write(reg::LDR, ldr << 24, 0);
        }
        assert_eq!(
            send_ipi(&mut apics, 0, 0x13 << 24, LOGICAL | ASSERT | 0x58),
            2
        );
        assert_eq!(requested(&mut apics, 0x58), [0, 1]);
        assert_eq!(
            send_ipi(&mut apics, 0, 0x22 << 24, LOGICAL | ASSERT | 0x59),
            1
        );
        assert_eq!(requested(&mut apics, 0x59), [3]);
        // NMI, INIT and SIPI are latched for the receiver, not requested in its IRR.
        assert_eq!(send_ipi(&mut apics, 0, 3 << 24, ASSERT | (4 << 8)), 1);
        assert!(apics[3].nmi_pending() && !apics[2].nmi_pending());
        // Self-NMI through the shorthand (what Linux's apic_send_IPI_self(NMI) writes),
        // accepted as KVM and QEMU accept it.
        assert_eq!(send_ipi(&mut apics, 2, 0, SELF | ASSERT | (4 << 8)), 1);
        assert!(apics[2].nmi_pending() && !apics[1].nmi_pending());
        assert_eq!(send_ipi(&mut apics, 0, 1 << 24, ASSERT | (5 << 8)), 1);
        assert!(apics[1].init_pending() && !apics[2].init_pending());
        // INIT level de-assert goes nowhere.
        assert_eq!(send_ipi(&mut apics, 0, 2 << 24, LEVEL | (5 << 8)), 0);
        assert!(!apics[2].init_pending());
        assert_eq!(
            send_ipi(&mut apics, 0, 0, OTHERS | ASSERT | (6 << 8) | 0x9a),
            3
        );
        for (i, a) in apics.iter_mut().enumerate().skip(1) {
            assert!(a.sipi_pending(), "APIC {i}");
            assert_eq!(a.take_sipi(), Some(0x9a));
        }
        assert!(!apics[0].sipi_pending(), "all excluding self");
    }

    /// IPIs between APICs in x2APIC mode, written to the ICR MSR (one 64-bit write, the
    /// destination in bits 63:32): physical IDs, logical cluster destinations (the LDR is
    /// the ID's cluster, ID[19:4], and one bit of sixteen, ID[3:0]), the broadcast ID,
    /// lowest priority, NMI and INIT.
    #[test]
    fn x2apic_ipis_between_apics() {
        const LOGICAL: u64 = 1 << 11;
        const ASSERT: u64 = 1 << 14;
        let mut apics: alloc::vec::Vec<LocalApic> = (0..20)
            .map(|id| {
                let mut a = apic(id);
                a.set_base_msr(APIC_DEFAULT_BASE | APIC_BASE_EN | APIC_BASE_EXTD)
                    .unwrap();
                a
            })
            .collect();
        // The IRR through the x2APIC MSRs (the MMIO page is off in x2APIC mode).
        let requested_x2 = |apics: &mut [LocalApic], vector: u32| -> alloc::vec::Vec<usize> {
            (0..apics.len())
                .filter(|&i| {
                    let word = apics[i].x2apic_read(0x820 + vector / 32, 0).unwrap();
                    word & (1 << (vector % 32)) != 0
                })
                .collect()
        };
        let send = |apics: &mut [LocalApic], from: usize, dest: u32, low: u64| {
            apics[from]
                .x2apic_write(0x830, (u64::from(dest) << 32) | low, 0)
                .unwrap();
            let ipi = apics[from].take_ipi().expect("an ICR write sends an IPI");
            deliver_ipi(&ipi, from, apics)
        };
        assert_eq!(send(&mut apics, 0, 17, ASSERT | 0x60), 1);
        assert_eq!(requested_x2(&mut apics, 0x60), [17]);
        // Cluster 1 (IDs 16 to 31), members 1 and 3: IDs 17 and 19.
        assert_eq!(
            send(&mut apics, 0, (1 << 16) | 0b1010, LOGICAL | ASSERT | 0x61),
            2
        );
        assert_eq!(requested_x2(&mut apics, 0x61), [17, 19]);
        // Cluster 0, members 0 and 5.
        assert_eq!(send(&mut apics, 3, 0b10_0001, LOGICAL | ASSERT | 0x62), 2);
        assert_eq!(requested_x2(&mut apics, 0x62), [0, 5]);
        // The x2APIC broadcast ID, from APIC 4: everyone, itself included.
        assert_eq!(send(&mut apics, 4, u32::MAX, ASSERT | 0x63), 20);
        assert_eq!(requested_x2(&mut apics, 0x63).len(), 20);
        // Lowest priority in cluster 0 among IDs 1, 2 and 3: the lowest TPR wins.
        for (id, tpr) in [(1, 0x50u64), (2, 0x30), (3, 0x40)] {
            apics[id].x2apic_write(0x808, tpr, 0).unwrap();
        }
        let lowest = LOGICAL | ASSERT | (1 << 8) | 0x64;
        assert_eq!(send(&mut apics, 0, 0b1110, lowest), 1);
        assert_eq!(requested_x2(&mut apics, 0x64), [2]);
        assert_eq!(send(&mut apics, 0, 12, ASSERT | (4 << 8)), 1);
        assert!(apics[12].nmi_pending());
        assert_eq!(send(&mut apics, 0, 13, ASSERT | (5 << 8)), 1);
        assert!(apics[13].init_pending() && !apics[12].init_pending());
    }
}
