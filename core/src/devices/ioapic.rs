//! The I/O APIC of a PC: 24 interrupt inputs turned into interrupt messages for the local
//! APICs (Intel 82093AA data sheet; the register set of the version-0x20 I/O APIC in
//! Intel's PCHs and in QEMU, which adds the EOI register).
//!
//! One 4 KiB MMIO page at [`IOAPIC_BASE`]: IOREGSEL at 0x00 selects a register, IOWIN at
//! 0x10 reads or writes it, and a write of a vector to the EOI register at 0x40 ends that
//! vector's level-triggered interrupts as a local APIC's EOI broadcast does. Only aligned
//! 32-bit accesses to those three mean something; every other access reads 0 and writes
//! nothing.
//!
//! The indirect registers: 0x00 ID (bits 27:24), 0x01 version ([`IOAPIC_VERSION`]: version
//! 0x20, 24 entries), 0x02 arbitration ID (bits 27:24, loaded from the ID when the ID is
//! written), and 0x10-0x3F the 24 redirection entries, two 32-bit halves each. An entry
//! holds the vector (7:0), the delivery mode (10:8: fixed, lowest priority, SMI, NMI, INIT,
//! ExtINT; 3 and 6 are reserved and deliver nothing), the destination mode (11: physical
//! or logical), the delivery status (12, read-only), the polarity (13: active low when
//! set), remote IRR (14, read-only), the trigger mode (15: level when set), the mask (16)
//! and the destination (63:56). Other bits are reserved, read 0 and ignore writes.
//!
//! Sensing works on the input after polarity: a pin is asserted when its line is high and
//! it is active high, or low and it is active low. An edge-triggered pin sends one message
//! when it becomes asserted while unmasked; an edge that arrives while the pin is masked
//! is lost (82093AA: "edge-sensitive interrupts signaled on a masked pin are ignored").
//! A level-triggered pin sends a message while it is asserted, unmasked and its remote IRR
//! is clear; when a local APIC accepts it, remote IRR is set, and it is cleared by the EOI
//! of that vector (the local APIC's broadcast, or the EOI register), after which a pin
//! still asserted sends again. Unmasking a level-triggered pin that is asserted sends at
//! once. Changing an entry's trigger mode to edge clears its remote IRR (Linux's EOI for
//! I/O APICs older than version 0x20 relies on that). Rewriting an entry is not an edge:
//! only a change of the line itself is.
//!
//! Messages are handed to a caller-supplied `deliver` function that returns whether some
//! local APIC accepted the message (see [`crate::irq`]). Delivery is immediate, so the
//! delivery-status bit always reads 0 (idle).

use crate::irq::{DeliveryMode, IrqMessage};

/// Guest-physical base of the I/O APIC's page.
pub const IOAPIC_BASE: u64 = 0xfec0_0000;
/// Size of the I/O APIC's page.
pub const IOAPIC_SIZE: u64 = 0x1000;
/// Interrupt inputs (redirection entries).
pub const IOAPIC_PINS: usize = 24;
/// The version register: version 0x20, maximum redirection entry 23.
pub const IOAPIC_VERSION: u32 = 0x0017_0020;

/// MMIO offset of IOREGSEL.
pub const IOREGSEL: u64 = 0x00;
/// MMIO offset of IOWIN.
pub const IOWIN: u64 = 0x10;
/// MMIO offset of the EOI register.
pub const IOAPIC_EOI: u64 = 0x40;

/// Indirect register: ID.
pub const REG_ID: u8 = 0x00;
/// Indirect register: version.
pub const REG_VERSION: u8 = 0x01;
/// Indirect register: arbitration ID.
pub const REG_ARBITRATION: u8 = 0x02;
/// Indirect register: low half of redirection entry 0 (entry n: `0x10 + 2n`, high half
/// `0x11 + 2n`).
pub const REG_REDIRECTION: u8 = 0x10;

/// Redirection entry: delivery status (read-only).
pub const ENTRY_DELIVERY_STATUS: u64 = 1 << 12;
/// Redirection entry: active-low polarity.
pub const ENTRY_ACTIVE_LOW: u64 = 1 << 13;
/// Redirection entry: remote IRR (read-only).
pub const ENTRY_REMOTE_IRR: u64 = 1 << 14;
/// Redirection entry: level-triggered.
pub const ENTRY_LEVEL: u64 = 1 << 15;
/// Redirection entry: masked.
pub const ENTRY_MASKED: u64 = 1 << 16;
/// Redirection entry: the bits software may write.
const ENTRY_WRITABLE: u64 = 0xff00_0000_0001_afff;

/// The I/O APIC.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct IoApic {
    /// The ID (bits 27:24 of the ID register).
    id: u8,
    /// The arbitration ID.
    arbitration: u8,
    ioregsel: u8,
    redirection: [u64; IOAPIC_PINS],
    /// The input lines' levels, one bit per pin.
    lines: u32,
}

impl Default for IoApic {
    fn default() -> Self {
        Self::new()
    }
}

impl IoApic {
    /// An I/O APIC after reset: ID 0, every entry masked.
    pub fn new() -> IoApic {
        IoApic {
            id: 0,
            arbitration: 0,
            ioregsel: 0,
            redirection: [ENTRY_MASKED; IOAPIC_PINS],
            lines: 0,
        }
    }

    /// Redirection entry `pin` as software reads it.
    pub fn entry(&self, pin: usize) -> u64 {
        self.redirection[pin]
    }

    fn asserted(&self, pin: usize) -> bool {
        let high = self.lines & (1 << pin) != 0;
        high != (self.redirection[pin] & ENTRY_ACTIVE_LOW != 0)
    }

    /// Drive input `pin` to `level` (the line's electrical level); out-of-range pins are
    /// ignored.
    pub fn set_input<F: FnMut(&IrqMessage) -> bool>(
        &mut self,
        pin: usize,
        level: bool,
        deliver: &mut F,
    ) {
        if pin >= IOAPIC_PINS {
            return;
        }
        let was = self.asserted(pin);
        if level {
            self.lines |= 1 << pin;
        } else {
            self.lines &= !(1 << pin);
        }
        let now = self.asserted(pin);
        let entry = self.redirection[pin];
        if entry & ENTRY_LEVEL != 0 {
            self.service_level(pin, deliver);
        } else if now && !was && entry & ENTRY_MASKED == 0 {
            deliver(&Self::message(entry));
        }
    }

    /// Send a level-triggered pin's message if it is asserted, unmasked and not waiting
    /// for its EOI.
    fn service_level<F: FnMut(&IrqMessage) -> bool>(&mut self, pin: usize, deliver: &mut F) {
        let entry = self.redirection[pin];
        if entry & ENTRY_LEVEL == 0
            || entry & (ENTRY_MASKED | ENTRY_REMOTE_IRR) != 0
            || !self.asserted(pin)
        {
            return;
        }
        if deliver(&Self::message(entry)) {
            self.redirection[pin] |= ENTRY_REMOTE_IRR;
        }
    }

    fn message(entry: u64) -> IrqMessage {
        IrqMessage {
            vector: entry as u8,
            delivery: DeliveryMode::from_bits((entry >> 8) as u8),
            logical: entry & (1 << 11) != 0,
            destination: (entry >> 56) as u8,
            level_triggered: entry & ENTRY_LEVEL != 0,
        }
    }

    /// The EOI of `vector` (a local APIC's broadcast, or the EOI register): clears the
    /// remote IRR of the level-triggered entries with that vector, and sends again for
    /// those still asserted.
    pub fn eoi<F: FnMut(&IrqMessage) -> bool>(&mut self, vector: u8, deliver: &mut F) {
        for pin in 0..IOAPIC_PINS {
            let entry = self.redirection[pin];
            if entry as u8 == vector && entry & ENTRY_REMOTE_IRR != 0 {
                self.redirection[pin] &= !ENTRY_REMOTE_IRR;
                self.service_level(pin, deliver);
            }
        }
    }

    /// An MMIO read of `size` bytes at `offset` in the page.
    pub fn mmio_read(&self, offset: u64, size: u8) -> u32 {
        if size != 4 {
            return 0;
        }
        match offset {
            IOREGSEL => u32::from(self.ioregsel),
            IOWIN => self.read_register(self.ioregsel),
            _ => 0,
        }
    }

    /// An MMIO write of `size` bytes at `offset` in the page.
    pub fn mmio_write<F: FnMut(&IrqMessage) -> bool>(
        &mut self,
        offset: u64,
        size: u8,
        value: u32,
        deliver: &mut F,
    ) {
        if size != 4 {
            return;
        }
        match offset {
            IOREGSEL => self.ioregsel = value as u8,
            IOWIN => self.write_register(self.ioregsel, value, deliver),
            IOAPIC_EOI => self.eoi(value as u8, deliver),
            _ => {}
        }
    }

    /// Read indirect register `index`; unknown registers read 0.
    pub fn read_register(&self, index: u8) -> u32 {
        match index {
            REG_ID => u32::from(self.id) << 24,
            REG_VERSION => IOAPIC_VERSION,
            REG_ARBITRATION => u32::from(self.arbitration) << 24,
            _ => match Self::entry_index(index) {
                Some((pin, false)) => self.redirection[pin] as u32,
                Some((pin, true)) => (self.redirection[pin] >> 32) as u32,
                None => 0,
            },
        }
    }

    /// Write indirect register `index`; read-only and unknown registers ignore it.
    pub fn write_register<F: FnMut(&IrqMessage) -> bool>(
        &mut self,
        index: u8,
        value: u32,
        deliver: &mut F,
    ) {
        if index == REG_ID {
            self.id = ((value >> 24) & 0xf) as u8;
            self.arbitration = self.id;
            return;
        }
        let Some((pin, high)) = Self::entry_index(index) else {
            return;
        };
        let old = self.redirection[pin];
        let written = if high {
            (old & 0xffff_ffff) | (u64::from(value) << 32)
        } else {
            (old & !0xffff_ffff) | u64::from(value)
        };
        let mut new = (written & ENTRY_WRITABLE) | (old & ENTRY_REMOTE_IRR);
        if new & ENTRY_LEVEL == 0 {
            new &= !ENTRY_REMOTE_IRR;
        }
        self.redirection[pin] = new;
        self.service_level(pin, deliver);
    }

    /// The entry and half an indirect register index names.
    fn entry_index(index: u8) -> Option<(usize, bool)> {
        let n = usize::from(index.checked_sub(REG_REDIRECTION)?);
        (n < 2 * IOAPIC_PINS).then_some((n / 2, n % 2 == 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// Records messages; accepts them while `accept` is true.
    struct Sink {
        sent: Vec<IrqMessage>,
        accept: bool,
    }

    impl Sink {
        fn new() -> Sink {
            Sink {
                sent: Vec::new(),
                accept: true,
            }
        }
        fn f(&mut self) -> impl FnMut(&IrqMessage) -> bool + '_ {
            |m| {
                self.sent.push(*m);
                self.accept
            }
        }
        fn take(&mut self) -> Vec<IrqMessage> {
            core::mem::take(&mut self.sent)
        }
    }

    fn write(io: &mut IoApic, sink: &mut Sink, index: u8, value: u32) {
        io.mmio_write(IOREGSEL, 4, u32::from(index), &mut sink.f());
        io.mmio_write(IOWIN, 4, value, &mut sink.f());
    }

    fn read(io: &mut IoApic, index: u8) -> u32 {
        io.mmio_write(IOREGSEL, 4, u32::from(index), &mut |_| false);
        io.mmio_read(IOWIN, 4)
    }

    /// Linux's `ioapic_write_entry`: the high half first, then the low half.
    fn program(io: &mut IoApic, sink: &mut Sink, pin: u8, entry: u64) {
        write(
            io,
            sink,
            REG_REDIRECTION + 2 * pin + 1,
            (entry >> 32) as u32,
        );
        write(io, sink, REG_REDIRECTION + 2 * pin, entry as u32);
    }

    fn fixed(vector: u8, dest: u8, level: bool) -> IrqMessage {
        IrqMessage {
            vector,
            delivery: DeliveryMode::Fixed,
            logical: false,
            destination: dest,
            level_triggered: level,
        }
    }

    #[test]
    fn identification_registers() {
        let mut io = IoApic::new();
        let mut sink = Sink::new();
        assert_eq!(read(&mut io, REG_VERSION), 0x0017_0020);
        assert_eq!(read(&mut io, REG_ID), 0);
        assert_eq!(read(&mut io, REG_ARBITRATION), 0);
        write(&mut io, &mut sink, REG_ID, 0xff12_3456);
        assert_eq!(read(&mut io, REG_ID), 0x0f00_0000);
        assert_eq!(read(&mut io, REG_ARBITRATION), 0x0f00_0000);
        // Read-only and absent registers.
        write(&mut io, &mut sink, REG_VERSION, 0);
        write(&mut io, &mut sink, REG_ARBITRATION, 0);
        assert_eq!(read(&mut io, REG_VERSION), IOAPIC_VERSION);
        assert_eq!(read(&mut io, REG_ARBITRATION), 0x0f00_0000);
        assert_eq!(read(&mut io, 0x03), 0);
        assert_eq!(read(&mut io, 0x40), 0, "past entry 23");
        // IOREGSEL reads back; it keeps 8 bits.
        io.mmio_write(IOREGSEL, 4, 0x1234, &mut sink.f());
        assert_eq!(io.mmio_read(IOREGSEL, 4), 0x34);
        assert!(sink.take().is_empty());
    }

    #[test]
    fn only_aligned_dword_accesses_count() {
        let mut io = IoApic::new();
        let mut sink = Sink::new();
        io.mmio_write(IOREGSEL, 4, 0x01, &mut sink.f());
        assert_eq!(io.mmio_read(IOWIN, 2), 0);
        assert_eq!(io.mmio_read(IOWIN, 8), 0);
        assert_eq!(io.mmio_read(IOWIN + 1, 4), 0);
        assert_eq!(io.mmio_read(0x20, 4), 0);
        io.mmio_write(IOREGSEL, 1, 0x10, &mut sink.f());
        assert_eq!(io.mmio_read(IOREGSEL, 4), 0x01, "byte write ignored");
        io.mmio_write(IOREGSEL, 4, 0x10, &mut sink.f());
        io.mmio_write(IOWIN, 2, 0x30, &mut sink.f());
        io.mmio_write(0x14, 4, 0x30, &mut sink.f());
        assert_eq!(io.entry(0), ENTRY_MASKED);
        assert_eq!(io.mmio_read(IOWIN, 4), ENTRY_MASKED as u32);
    }

    #[test]
    fn redirection_entries_keep_their_writable_bits() {
        let mut io = IoApic::new();
        let mut sink = Sink::new();
        for pin in 0..IOAPIC_PINS as u8 {
            assert_eq!(read(&mut io, REG_REDIRECTION + 2 * pin), 0x0001_0000);
            assert_eq!(read(&mut io, REG_REDIRECTION + 2 * pin + 1), 0);
        }
        program(&mut io, &mut sink, 23, u64::MAX);
        assert_eq!(io.entry(23), 0xff00_0000_0001_afff);
        assert_eq!(read(&mut io, 0x3f), 0xff00_0000);
        assert_eq!(read(&mut io, 0x3e), 0x0001_afff);
        assert!(sink.take().is_empty(), "nothing is asserted");
    }

    #[test]
    fn edge_triggered_pin() {
        let mut io = IoApic::new();
        let mut sink = Sink::new();
        program(&mut io, &mut sink, 4, 0x0300_0000_0000_0031);
        io.set_input(4, true, &mut sink.f());
        assert_eq!(sink.take(), [fixed(0x31, 3, false)]);
        io.set_input(4, true, &mut sink.f());
        assert!(sink.take().is_empty(), "no new edge");
        io.set_input(4, false, &mut sink.f());
        io.set_input(4, true, &mut sink.f());
        assert_eq!(sink.take().len(), 1);
        // An edge on a masked pin is lost, and unmasking does not bring it back.
        io.set_input(4, false, &mut sink.f());
        program(&mut io, &mut sink, 4, 0x0300_0000_0001_0031);
        io.set_input(4, true, &mut sink.f());
        program(&mut io, &mut sink, 4, 0x0300_0000_0000_0031);
        assert!(sink.take().is_empty());
        assert_eq!(io.entry(4) & ENTRY_REMOTE_IRR, 0, "no remote IRR for edges");
        io.set_input(99, true, &mut sink.f());
        assert!(sink.take().is_empty());
    }

    #[test]
    fn level_triggered_pin_remote_irr_and_eoi() {
        let mut io = IoApic::new();
        let mut sink = Sink::new();
        program(&mut io, &mut sink, 9, 0x0000_0000_0000_8041);
        io.set_input(9, true, &mut sink.f());
        assert_eq!(sink.take(), [fixed(0x41, 0, true)]);
        assert_ne!(io.entry(9) & ENTRY_REMOTE_IRR, 0);
        assert_eq!(read(&mut io, 0x22) & (1 << 14), 1 << 14);
        // While remote IRR is set the pin stays quiet.
        io.set_input(9, false, &mut sink.f());
        io.set_input(9, true, &mut sink.f());
        assert!(sink.take().is_empty());
        // Remote IRR is read-only.
        program(&mut io, &mut sink, 9, 0x0000_0000_0000_8041);
        assert_ne!(io.entry(9) & ENTRY_REMOTE_IRR, 0);
        assert!(sink.take().is_empty());
        // The EOI of another vector changes nothing; of ours, the still-asserted line
        // sends again.
        io.eoi(0x42, &mut sink.f());
        assert!(sink.take().is_empty());
        io.eoi(0x41, &mut sink.f());
        assert_eq!(sink.take(), [fixed(0x41, 0, true)]);
        // The EOI register does the same; with the line low nothing follows.
        io.set_input(9, false, &mut sink.f());
        io.mmio_write(IOAPIC_EOI, 4, 0x41, &mut sink.f());
        assert!(sink.take().is_empty());
        assert_eq!(io.entry(9) & ENTRY_REMOTE_IRR, 0);
        // Nobody accepts: remote IRR stays clear.
        sink.accept = false;
        io.set_input(9, true, &mut sink.f());
        assert_eq!(sink.take().len(), 1);
        assert_eq!(io.entry(9) & ENTRY_REMOTE_IRR, 0);
    }

    #[test]
    fn masked_level_pin_sends_when_unmasked() {
        let mut io = IoApic::new();
        let mut sink = Sink::new();
        program(&mut io, &mut sink, 10, 0x0000_0000_0001_8050);
        io.set_input(10, true, &mut sink.f());
        assert!(sink.take().is_empty());
        program(&mut io, &mut sink, 10, 0x0000_0000_0000_8050);
        assert_eq!(sink.take(), [fixed(0x50, 0, true)]);
        // Switching to edge clears remote IRR (the pre-0x20 EOI trick) and sends nothing.
        program(&mut io, &mut sink, 10, 0x0000_0000_0001_0050);
        assert_eq!(io.entry(10) & ENTRY_REMOTE_IRR, 0);
        assert!(sink.take().is_empty());
    }

    #[test]
    fn active_low_polarity() {
        let mut io = IoApic::new();
        let mut sink = Sink::new();
        // Level, active low: a low line is asserted.
        program(&mut io, &mut sink, 16, 0x0000_0000_0000_a060);
        assert_eq!(sink.take(), [fixed(0x60, 0, true)]);
        io.set_input(16, true, &mut sink.f());
        io.eoi(0x60, &mut sink.f());
        assert!(sink.take().is_empty(), "a high line is idle");
        io.set_input(16, false, &mut sink.f());
        assert_eq!(sink.take().len(), 1);
        // Edge, active low: the falling edge of the line sends.
        program(&mut io, &mut sink, 17, 0x0000_0000_0000_2061);
        io.set_input(17, true, &mut sink.f());
        assert!(sink.take().is_empty());
        io.set_input(17, false, &mut sink.f());
        assert_eq!(sink.take(), [fixed(0x61, 0, false)]);
    }

    #[test]
    fn delivery_modes_and_destinations_in_messages() {
        let mut io = IoApic::new();
        let mut sink = Sink::new();
        let modes = [
            (0, DeliveryMode::Fixed),
            (1, DeliveryMode::LowestPriority),
            (2, DeliveryMode::Smi),
            (3, DeliveryMode::Reserved),
            (4, DeliveryMode::Nmi),
            (5, DeliveryMode::Init),
            (6, DeliveryMode::Reserved),
            (7, DeliveryMode::ExtInt),
        ];
        for (bits, mode) in modes {
            program(
                &mut io,
                &mut sink,
                5,
                (0x85u64 << 56) | (bits << 8) | (1 << 11) | 0x70,
            );
            io.set_input(5, true, &mut sink.f());
            io.set_input(5, false, &mut sink.f());
            assert_eq!(
                sink.take(),
                [IrqMessage {
                    vector: 0x70,
                    delivery: mode,
                    logical: true,
                    destination: 0x85,
                    level_triggered: false,
                }]
            );
        }
    }
}
