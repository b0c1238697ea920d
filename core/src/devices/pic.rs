//! The two cascaded 8259A programmable interrupt controllers of a PC, and the PIIX's
//! edge/level control registers (ELCR).
//!
//! The master answers at ports 0x20/0x21 and takes ISA IRQs 0-7; the slave answers at
//! 0xA0/0xA1, takes IRQs 8-15, and its INT output is wired to the master's IR2, as on
//! every PC/AT. The ELCR at 0x4D0 (IRQs 0-7) and 0x4D1 (IRQs 8-15) chooses edge (0) or
//! level (1) sensing per IRQ; IRQs 0, 1, 2, 8 and 13 are always edge (their bits read 0),
//! as on the PIIX and in QEMU.
//!
//! What each chip implements (Intel 8259A data sheet):
//!
//! - **Initialisation**: ICW1 (bit 4 set on the command port) starts the sequence; ICW2
//!   gives the vector base (bits 7:3), ICW3 follows unless ICW1 asked for single mode
//!   (SNGL), ICW4 follows when ICW1 asked for it (IC4), else every ICW4 function is off.
//!   ICW1 clears the IMR and ISR, the special mask mode and the rotation, selects IRR for
//!   reads, and resets edge sensing: a line already high must go low and high again to
//!   request. The board's wiring does not change with the ICWs: the sequence follows SNGL
//!   (so the guest's next writes land in the ICWs it meant), but the slave stays cascaded
//!   on IR2 whatever ICW1 and ICW3 say, and ICW1's LTIM bit is ignored because the ELCR
//!   decides edge or level, as on the PIIX. ICW4's microprocessor-mode and buffered-mode
//!   bits change nothing on an x86 (the INTA cycle always returns the 8086 vector).
//! - **OCW1**: the interrupt mask register.
//! - **OCW2**: non-specific and specific EOI, rotate on non-specific or specific EOI,
//!   set priority, and set or clear rotate-in-automatic-EOI.
//! - **OCW3**: read IRR or ISR on the command port, poll mode (the next read of either
//!   port acknowledges the highest request and returns `0x80 | level`, or 0 when there is
//!   none), special mask mode (an in-service level that is masked no longer blocks the
//!   others).
//! - **ICW4**: automatic EOI (the INTA cycle does not set ISR; with rotate-in-AEOI it
//!   also makes the level the lowest priority) and special fully nested mode on the
//!   master (a request from the slave is accepted while the cascade level is in service,
//!   so a higher-priority slave interrupt can nest).
//! - **Sensing**: an edge-triggered input requests on its rising edge and the request is
//!   latched in IRR until the INTA cycle takes it, even if the line falls first (a device
//!   that pulses its line must not lose the interrupt; KVM and QEMU latch the same way);
//!   a level-triggered input requests while it is high, so IRR follows the line. The
//!   master's IR2 latches a request whenever the slave's INT output is high.
//! - **INTA** ([`Pic::acknowledge`]): resolves the master's highest request that is not
//!   masked and has priority over every level in service, moves it from IRR to ISR and,
//!   for the cascade level, does the same on the slave and returns the slave's vector.
//!   When nothing qualifies any more (the request went away, or was masked, between INTR
//!   and the acknowledge) the chip answers with IR7's vector and sets no ISR bit: the
//!   spurious IRQ 7, or IRQ 15 when the master took IR2 and the slave had nothing.
//!
//! No BIOS runs before opsvisor's guests, so the reset state is the programming a PC
//! BIOS gives the pair at POST (vector bases 0x08 and 0x70, ICW4 8086 mode), with every
//! line masked except the cascade since no firmware here owns a device; an operating
//! system initialises both chips anyway.

/// The master's command port (its data port is the next one).
pub const PIC_MASTER_BASE: u16 = 0x20;
/// The slave's command port (its data port is the next one).
pub const PIC_SLAVE_BASE: u16 = 0xa0;
/// The ELCR for IRQs 0-7 (the one for IRQs 8-15 is the next port).
pub const ELCR_BASE: u16 = 0x4d0;
/// The master input that the slave's INT output drives.
pub const CASCADE_IRQ: u8 = 2;
/// The vector bases a PC BIOS programs (and [`Pic::new`] starts with).
pub const BIOS_VECTOR_BASES: [u8; 2] = [0x08, 0x70];
/// The ELCR bits that can be set: IRQs 0, 1, 2, 8 and 13 are always edge-triggered.
pub const ELCR_WRITABLE: [u8; 2] = [0xf8, 0xde];

/// Where a chip is in its initialisation sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Init {
    /// Initialised: data-port writes are OCW1.
    Ready,
    /// ICW1 seen; the next data-port write is ICW2.
    Icw2,
    /// The next data-port write is ICW3.
    Icw3,
    /// The next data-port write is ICW4.
    Icw4,
}

/// One 8259A.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Chip {
    /// Interrupt request register.
    irr: u8,
    /// In-service register.
    isr: u8,
    /// Interrupt mask register (OCW1).
    imr: u8,
    /// The input lines' levels as last seen, for edge detection.
    lines: u8,
    /// ELCR: 1 = level-triggered.
    elcr: u8,
    /// Vector of IR0 (ICW2 bits 7:3).
    vector_base: u8,
    /// The IR level that has the highest priority (0 until a rotation moves it).
    top_priority: u8,
    init: Init,
    /// ICW1.IC4: an ICW4 follows.
    icw4_expected: bool,
    /// ICW1.SNGL: no ICW3 follows.
    single: bool,
    /// ICW3 as written (the cascade wiring is fixed by the board).
    icw3: u8,
    /// ICW4.AEOI.
    auto_eoi: bool,
    /// OCW2 rotate-in-automatic-EOI.
    rotate_on_auto_eoi: bool,
    /// ICW4.SFNM.
    special_fully_nested: bool,
    /// OCW3 special mask mode.
    special_mask: bool,
    /// OCW3 RIS: reads of the command port return ISR (else IRR).
    read_isr: bool,
    /// OCW3 P: the next read is a poll.
    poll: bool,
}

impl Chip {
    fn new(vector_base: u8, imr: u8) -> Chip {
        Chip {
            irr: 0,
            isr: 0,
            imr,
            lines: 0,
            elcr: 0,
            vector_base,
            top_priority: 0,
            init: Init::Ready,
            icw4_expected: true,
            single: false,
            icw3: 0,
            auto_eoi: false,
            rotate_on_auto_eoi: false,
            special_fully_nested: false,
            special_mask: false,
            read_isr: false,
            poll: false,
        }
    }

    /// Priority rank of `irq`: 0 is the highest.
    fn rank(&self, irq: u8) -> u8 {
        irq.wrapping_sub(self.top_priority) & 7
    }

    /// The highest-priority level set in `bits`.
    fn highest(&self, bits: u8) -> Option<u8> {
        (0..8)
            .map(|rank| (self.top_priority + rank) & 7)
            .find(|irq| bits & (1 << irq) != 0)
    }

    /// The level this chip would present at an INTA cycle now: the highest unmasked
    /// request whose priority is above every in-service level that blocks it.
    fn request(&self, is_master: bool) -> Option<u8> {
        let irq = self.highest(self.irr & !self.imr)?;
        let mut blocking = self.isr;
        if self.special_mask {
            blocking &= !self.imr;
        }
        match self.highest(blocking) {
            None => Some(irq),
            Some(current) if self.rank(irq) < self.rank(current) => Some(irq),
            Some(current)
                if is_master
                    && self.special_fully_nested
                    && irq == CASCADE_IRQ
                    && current == CASCADE_IRQ =>
            {
                Some(irq)
            }
            Some(_) => None,
        }
    }

    /// An input line changed (or was set again to the same level).
    fn set_input(&mut self, irq: u8, level: bool) {
        let bit = 1u8 << irq;
        if self.elcr & bit != 0 {
            self.irr = (self.irr & !bit) | if level { bit } else { 0 };
        } else if level && self.lines & bit == 0 {
            self.irr |= bit;
        }
        self.lines = (self.lines & !bit) | if level { bit } else { 0 };
    }

    /// The INTA cycle (or a poll) took `irq`.
    fn take(&mut self, irq: u8) {
        let bit = 1u8 << irq;
        // An edge request is consumed; a level request stays while the line is high.
        self.irr = (self.irr & !bit) | (self.lines & self.elcr & bit);
        if self.auto_eoi {
            if self.rotate_on_auto_eoi {
                self.top_priority = (irq + 1) & 7;
            }
        } else {
            self.isr |= bit;
        }
    }

    fn vector(&self, irq: u8) -> u8 {
        self.vector_base | irq
    }

    fn set_elcr(&mut self, value: u8) {
        self.elcr = value;
        // Level-triggered inputs request exactly while they are high.
        self.irr = (self.irr & !self.elcr) | (self.lines & self.elcr);
    }

    fn write_command(&mut self, value: u8) {
        if value & 0x10 != 0 {
            // ICW1.
            self.init = Init::Icw2;
            self.icw4_expected = value & 0x01 != 0;
            self.single = value & 0x02 != 0;
            self.imr = 0;
            self.isr = 0;
            // Edge sensing restarts: a line already high must fall and rise again.
            self.irr &= self.elcr;
            self.top_priority = 0;
            self.special_mask = false;
            self.read_isr = false;
            self.poll = false;
            self.rotate_on_auto_eoi = false;
            self.auto_eoi = false;
            self.special_fully_nested = false;
        } else if value & 0x08 != 0 {
            // OCW3.
            if value & 0x04 != 0 {
                self.poll = true;
            }
            if value & 0x02 != 0 {
                self.read_isr = value & 0x01 != 0;
            }
            if value & 0x40 != 0 {
                self.special_mask = value & 0x20 != 0;
            }
        } else {
            // OCW2: R, SL, EOI in bits 7:5, the level in bits 2:0.
            let level = value & 7;
            match value >> 5 {
                0b000 => self.rotate_on_auto_eoi = false,
                0b100 => self.rotate_on_auto_eoi = true,
                command @ (0b001 | 0b101) => {
                    if let Some(irq) = self.highest(self.isr) {
                        self.isr &= !(1 << irq);
                        if command == 0b101 {
                            self.top_priority = (irq + 1) & 7;
                        }
                    }
                }
                command @ (0b011 | 0b111) => {
                    self.isr &= !(1 << level);
                    if command == 0b111 {
                        self.top_priority = (level + 1) & 7;
                    }
                }
                0b110 => self.top_priority = (level + 1) & 7,
                // 0b010: no operation.
                _ => {}
            }
        }
    }

    fn write_data(&mut self, value: u8) {
        match self.init {
            Init::Ready => self.imr = value,
            Init::Icw2 => {
                self.vector_base = value & 0xf8;
                self.init = match (self.single, self.icw4_expected) {
                    (false, _) => Init::Icw3,
                    (true, true) => Init::Icw4,
                    (true, false) => Init::Ready,
                };
            }
            Init::Icw3 => {
                self.icw3 = value;
                self.init = if self.icw4_expected {
                    Init::Icw4
                } else {
                    Init::Ready
                };
            }
            Init::Icw4 => {
                self.auto_eoi = value & 0x02 != 0;
                self.special_fully_nested = value & 0x10 != 0;
                self.init = Init::Ready;
            }
        }
    }

    /// A read of the command port (`data == false`) or the data port, outside poll mode.
    fn read(&self, data: bool) -> u8 {
        if data {
            self.imr
        } else if self.read_isr {
            self.isr
        } else {
            self.irr
        }
    }
}

/// The master/slave 8259A pair with the ELCR.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Pic {
    /// `[master, slave]`.
    chips: [Chip; 2],
}

impl Default for Pic {
    fn default() -> Self {
        Self::new()
    }
}

impl Pic {
    /// The pair as a PC BIOS leaves it (see the module documentation).
    pub fn new() -> Pic {
        Pic {
            chips: [
                Chip::new(BIOS_VECTOR_BASES[0], !(1 << CASCADE_IRQ)),
                Chip::new(BIOS_VECTOR_BASES[1], 0xff),
            ],
        }
    }

    /// Drive ISA IRQ `irq` (0-15) to `level`. IRQ 2 is the cascade input, which only the
    /// slave drives: setting it does nothing, as on a PC where no ISA device is wired
    /// there. Out-of-range numbers are ignored.
    pub fn set_irq(&mut self, irq: u8, level: bool) {
        match irq {
            CASCADE_IRQ => return,
            0..=7 => self.chips[0].set_input(irq, level),
            8..=15 => self.chips[1].set_input(irq - 8, level),
            _ => return,
        }
        self.cascade();
    }

    /// The master's INT output: the INTR line to the CPU (the local APIC's LINT0).
    pub fn output(&self) -> bool {
        self.chips[0].request(true).is_some()
    }

    /// The INTA cycle: the vector of the highest-priority request, which moves from IRR to
    /// ISR (on both chips for a slave interrupt). With no request left the answer is the
    /// spurious IRQ 7 (or IRQ 15) vector and no ISR bit of that chip is set.
    pub fn acknowledge(&mut self) -> u8 {
        let vector = match self.chips[0].request(true) {
            Some(CASCADE_IRQ) => {
                self.chips[0].take(CASCADE_IRQ);
                match self.chips[1].request(false) {
                    Some(irq) => {
                        self.chips[1].take(irq);
                        self.chips[1].vector(irq)
                    }
                    None => self.chips[1].vector(7),
                }
            }
            Some(irq) => {
                self.chips[0].take(irq);
                self.chips[0].vector(irq)
            }
            None => self.chips[0].vector(7),
        };
        self.cascade();
        vector
    }

    /// A read of `port` (0x20, 0x21, 0xA0, 0xA1, 0x4D0 or 0x4D1; any other reads 0xFF).
    pub fn read_port(&mut self, port: u16) -> u8 {
        let (chip, data) = match port {
            0x20 | 0x21 => (0, port == 0x21),
            0xa0 | 0xa1 => (1, port == 0xa1),
            0x4d0 => return self.chips[0].elcr,
            0x4d1 => return self.chips[1].elcr,
            _ => return 0xff,
        };
        if self.chips[chip].poll {
            return self.poll(chip);
        }
        self.chips[chip].read(data)
    }

    /// A write of `value` to `port` (as [`Pic::read_port`]; other ports are ignored).
    pub fn write_port(&mut self, port: u16, value: u8) {
        match port {
            0x20 => self.chips[0].write_command(value),
            0x21 => self.chips[0].write_data(value),
            0xa0 => self.chips[1].write_command(value),
            0xa1 => self.chips[1].write_data(value),
            0x4d0 => self.chips[0].set_elcr(value & ELCR_WRITABLE[0]),
            0x4d1 => self.chips[1].set_elcr(value & ELCR_WRITABLE[1]),
            _ => return,
        }
        self.cascade();
    }

    /// OCW3 poll: acknowledge the chip's highest request as an INTA cycle would, without
    /// the cascade (software polls each chip itself).
    fn poll(&mut self, chip: usize) -> u8 {
        self.chips[chip].poll = false;
        let value = match self.chips[chip].request(chip == 0) {
            Some(irq) => {
                self.chips[chip].take(irq);
                if chip == 1 {
                    // The slave's request was taken outside the cascade: the master's IR2
                    // no longer stands for it.
                    self.chips[0].irr &= !(1 << CASCADE_IRQ);
                }
                0x80 | irq
            }
            None => 0,
        };
        self.cascade();
        value
    }

    /// The slave's INT output latches a request in the master's IR2.
    fn cascade(&mut self) {
        if self.chips[1].request(false).is_some() {
            self.chips[0].irr |= 1 << CASCADE_IRQ;
        }
    }

    /// IRR of both chips (slave in bits 15:8), for tests and state dumps.
    pub fn irr(&self) -> u16 {
        u16::from(self.chips[0].irr) | u16::from(self.chips[1].irr) << 8
    }

    /// ISR of both chips (slave in bits 15:8).
    pub fn isr(&self) -> u16 {
        u16::from(self.chips[0].isr) | u16::from(self.chips[1].isr) << 8
    }

    /// IMR of both chips (slave in bits 15:8).
    pub fn imr(&self) -> u16 {
        u16::from(self.chips[0].imr) | u16::from(self.chips[1].imr) << 8
    }

    /// ICW3 of the master and the slave as last written (the wiring does not follow it).
    pub fn icw3(&self) -> [u8; 2] {
        [self.chips[0].icw3, self.chips[1].icw3]
    }
}

impl crate::devices::SavedState for Pic {
    fn check_state(&self) -> Result<(), (&'static str, alloc::string::String)> {
        for chip in &self.chips {
            if chip.vector_base & 7 != 0 {
                return Err((
                    "chips.vector_base",
                    alloc::format!("{:#x} (a multiple of 8 expected)", chip.vector_base),
                ));
            }
            if chip.top_priority > 7 {
                return Err((
                    "chips.top_priority",
                    alloc::format!("{} (expected 0 to 7)", chip.top_priority),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linux's `init_8259A(auto_eoi)`: mask, ICW1-4 on both chips (vectors 0x30 and
    /// 0x38), then restore the masks.
    fn linux_init(pic: &mut Pic, auto_eoi: bool, masks: [u8; 2]) {
        pic.write_port(0x21, 0xff);
        pic.write_port(0x20, 0x11);
        pic.write_port(0x21, 0x30);
        pic.write_port(0x21, 1 << CASCADE_IRQ);
        pic.write_port(0x21, if auto_eoi { 0x03 } else { 0x01 });
        pic.write_port(0xa0, 0x11);
        pic.write_port(0xa1, 0x38);
        pic.write_port(0xa1, CASCADE_IRQ);
        pic.write_port(0xa1, 0x01);
        pic.write_port(0x21, masks[0]);
        pic.write_port(0xa1, masks[1]);
    }

    fn linux_pic() -> Pic {
        let mut pic = Pic::new();
        linux_init(&mut pic, false, [0, 0]);
        pic
    }

    fn pulse(pic: &mut Pic, irq: u8) {
        pic.set_irq(irq, true);
        pic.set_irq(irq, false);
    }

    #[test]
    fn reset_state_is_what_a_bios_leaves() {
        let mut pic = Pic::new();
        assert_eq!(pic.read_port(0x21), 0xfb);
        assert_eq!(pic.read_port(0xa1), 0xff);
        assert_eq!(pic.read_port(0x4d0), 0);
        assert_eq!(pic.read_port(0x4d1), 0);
        pic.write_port(0x21, 0);
        pic.write_port(0xa1, 0);
        pulse(&mut pic, 1);
        assert_eq!(pic.acknowledge(), 0x09);
        pulse(&mut pic, 14);
        pic.write_port(0x20, 0x20);
        assert_eq!(pic.acknowledge(), 0x76);
        assert_eq!(pic.read_port(0x300), 0xff, "not a PIC port");
    }

    #[test]
    fn linux_init_and_specific_eoi() {
        let mut pic = Pic::new();
        // probe_8259A: the IMR reads back what was written.
        pic.write_port(0xa1, 0xff);
        pic.write_port(0x21, 0xfb);
        assert_eq!(pic.read_port(0x21), 0xfb);
        linux_init(&mut pic, false, [0xfa, 0xff]);
        assert_eq!(pic.imr(), 0xfffa);
        assert_eq!(pic.icw3(), [0x04, 0x02]);
        assert!(!pic.output());
        // The PIT's IRQ 0: vector 0x30, in service until the specific EOI.
        pulse(&mut pic, 0);
        assert!(pic.output());
        assert_eq!(pic.acknowledge(), 0x30);
        assert_eq!(pic.isr(), 0x0001);
        assert_eq!(pic.irr(), 0);
        assert!(!pic.output());
        // A second tick while in service waits in IRR.
        pulse(&mut pic, 0);
        assert!(!pic.output());
        // mask_and_ack_8259A: mask, then specific EOI (0x60 + irq).
        pic.write_port(0x21, 0xfb);
        pic.write_port(0x20, 0x60);
        assert_eq!(pic.isr(), 0);
        assert!(!pic.output(), "masked");
        pic.write_port(0x21, 0xfa);
        assert!(pic.output(), "the latched tick is delivered once unmasked");
        assert_eq!(pic.acknowledge(), 0x30);
    }

    #[test]
    fn slave_interrupts_cascade_through_ir2() {
        let mut pic = linux_pic();
        pulse(&mut pic, 12);
        assert!(pic.output());
        assert_eq!(pic.acknowledge(), 0x3c);
        assert_eq!(pic.isr(), 0x1004, "slave IR4 and master IR2 in service");
        // Linux: specific EOI to the slave, then to the master's IR2.
        pic.write_port(0xa0, 0x64);
        pic.write_port(0x20, 0x62);
        assert_eq!(pic.isr(), 0);
        // Masking IR2 on the master masks the whole slave.
        pic.write_port(0x21, 0x04);
        pulse(&mut pic, 9);
        assert!(!pic.output());
        pic.write_port(0x21, 0x00);
        assert_eq!(pic.acknowledge(), 0x39);
        // ISA IRQ 2 is the cascade: no device drives it.
        pic.write_port(0xa0, 0x20);
        pic.write_port(0x20, 0x20);
        pulse(&mut pic, 2);
        assert!(!pic.output());
    }

    #[test]
    fn fully_nested_priorities_and_non_specific_eoi() {
        let mut pic = linux_pic();
        pulse(&mut pic, 5);
        pulse(&mut pic, 3);
        assert_eq!(pic.acknowledge(), 0x33, "IR3 outranks IR5");
        pulse(&mut pic, 1);
        assert_eq!(pic.acknowledge(), 0x31, "a higher level nests");
        assert!(!pic.output(), "IR5 waits for the lower levels to finish");
        // Non-specific EOI ends the highest level in service (IR1).
        pic.write_port(0x20, 0x20);
        assert_eq!(pic.isr(), 0x0008);
        assert!(!pic.output());
        pic.write_port(0x20, 0x20);
        assert!(pic.output());
        assert_eq!(pic.acknowledge(), 0x35);
        // Slave levels rank at the master's IR2: above IR3, below IR1.
        pic.write_port(0x20, 0x20);
        pulse(&mut pic, 3);
        pulse(&mut pic, 10);
        assert_eq!(pic.acknowledge(), 0x3a);
        pic.write_port(0xa0, 0x20);
        pic.write_port(0x20, 0x20);
        assert_eq!(pic.acknowledge(), 0x33);
    }

    #[test]
    fn rotation_commands() {
        let mut pic = linux_pic();
        // Rotate on non-specific EOI: the level served becomes the lowest.
        for irq in [3, 4] {
            pulse(&mut pic, irq);
        }
        assert_eq!(pic.acknowledge(), 0x33);
        pic.write_port(0x20, 0xa0);
        pulse(&mut pic, 3);
        assert_eq!(
            pic.acknowledge(),
            0x34,
            "IR4 now outranks IR3 (priority starts at IR4)"
        );
        pic.write_port(0x20, 0x20);
        assert_eq!(pic.acknowledge(), 0x33);
        // Rotate on specific EOI: 0xE0 + level.
        pic.write_port(0x20, 0xe3);
        assert_eq!(pic.isr(), 0);
        pulse(&mut pic, 3);
        pulse(&mut pic, 5);
        assert_eq!(pic.acknowledge(), 0x35, "IR3 is lowest, IR4 highest");
        pic.write_port(0x20, 0x65);
        assert_eq!(pic.acknowledge(), 0x33);
        pic.write_port(0x20, 0x63);
        // Set priority: 0xC0 + level makes that level the lowest.
        pic.write_port(0x20, 0xc7);
        pulse(&mut pic, 7);
        pulse(&mut pic, 0);
        assert_eq!(pic.acknowledge(), 0x30, "back to IR0 first");
        pic.write_port(0x20, 0xc0);
        pulse(&mut pic, 0);
        assert_eq!(pic.acknowledge(), 0x37, "IR0 is now the lowest");
        // No-operation OCW2 changes nothing.
        let isr = pic.isr();
        pic.write_port(0x20, 0x40);
        assert_eq!(pic.isr(), isr);
    }

    #[test]
    fn auto_eoi_and_rotate_in_auto_eoi() {
        let mut pic = Pic::new();
        linux_init(&mut pic, true, [0, 0]);
        pulse(&mut pic, 6);
        assert_eq!(pic.acknowledge(), 0x36);
        assert_eq!(pic.isr(), 0, "automatic EOI leaves nothing in service");
        pulse(&mut pic, 7);
        assert_eq!(pic.acknowledge(), 0x37);
        // Rotate in AEOI mode (OCW2 0x80): each served level becomes the lowest.
        pic.write_port(0x20, 0x80);
        pulse(&mut pic, 1);
        assert_eq!(pic.acknowledge(), 0x31);
        pulse(&mut pic, 1);
        pulse(&mut pic, 6);
        assert_eq!(pic.acknowledge(), 0x36);
        // Clear (OCW2 0x00): the rotation stays where it is but no longer moves.
        pic.write_port(0x20, 0x00);
        assert_eq!(pic.acknowledge(), 0x31, "IR7 is now the top, IR1 next");
        pulse(&mut pic, 0);
        pulse(&mut pic, 7);
        assert_eq!(pic.acknowledge(), 0x37);
        assert_eq!(pic.acknowledge(), 0x30);
    }

    #[test]
    fn spurious_irq7_and_irq15() {
        let mut pic = linux_pic();
        pic.write_port(0x4d0, 0x08); // IRQ 3 level-triggered
        pic.set_irq(3, true);
        assert!(pic.output());
        // The request goes away before the INTA cycle.
        pic.set_irq(3, false);
        assert!(!pic.output());
        assert_eq!(pic.acknowledge(), 0x37, "spurious IRQ 7");
        assert_eq!(pic.isr(), 0, "no level in service");
        // Masked after INTR rose: the same, and even with IR7 masked.
        pic.write_port(0x21, 0x80);
        pulse(&mut pic, 5);
        pic.write_port(0x21, 0xa0);
        assert_eq!(pic.acknowledge(), 0x37);
        assert_eq!(pic.isr(), 0);
        // Linux's i8259A_irq_real: OCW3 read ISR, then back to IRR.
        pic.write_port(0x20, 0x0b);
        assert_eq!(pic.read_port(0x20), 0);
        pic.write_port(0x20, 0x0a);
        assert_eq!(pic.read_port(0x20), 0x20, "IRR still holds IR5");
        // The slave's request is masked after it reached the master's IR2: the master
        // takes IR2, the slave answers IRQ 15.
        pic.write_port(0x21, 0x00);
        pic.write_port(0xa1, 0x00);
        pic.write_port(0x21, !(1 << CASCADE_IRQ));
        pulse(&mut pic, 11);
        pic.write_port(0xa1, 0x08);
        assert!(pic.output(), "the master latched IR2");
        assert_eq!(pic.acknowledge(), 0x3f, "spurious IRQ 15");
        assert_eq!(
            pic.isr(),
            0x0004,
            "the master's IR2 is in service, the slave's nothing"
        );
        pic.write_port(0x20, 0x62);
        assert_eq!(pic.isr(), 0);
    }

    #[test]
    fn edge_and_level_sensing_through_the_elcr() {
        let mut pic = linux_pic();
        // Edge: a held line requests once; the request survives the line falling.
        pic.set_irq(4, true);
        assert_eq!(pic.acknowledge(), 0x34);
        pic.write_port(0x20, 0x20);
        assert!(!pic.output(), "no new edge");
        pic.set_irq(4, false);
        pic.set_irq(4, true);
        pic.set_irq(4, false);
        assert!(pic.output(), "latched");
        assert_eq!(pic.acknowledge(), 0x34);
        pic.write_port(0x20, 0x20);
        // Level: requests while high, again after EOI while still high.
        pic.write_port(0x4d0, 0x10);
        assert_eq!(pic.read_port(0x4d0), 0x10);
        pic.set_irq(4, true);
        assert_eq!(pic.acknowledge(), 0x34);
        assert_eq!(pic.irr(), 0x0010, "IRR follows the line");
        pic.write_port(0x20, 0x20);
        assert!(pic.output(), "still high after EOI: requests again");
        pic.set_irq(4, false);
        assert!(!pic.output());
        // IRQs 0, 1, 2, 8 and 13 cannot be level-triggered.
        pic.write_port(0x4d0, 0xff);
        pic.write_port(0x4d1, 0xff);
        assert_eq!(pic.read_port(0x4d0), 0xf8);
        assert_eq!(pic.read_port(0x4d1), 0xde);
        // A line that is high when its ELCR bit turns level requests at once.
        pic.write_port(0x4d0, 0);
        pic.set_irq(6, true);
        pic.acknowledge();
        pic.write_port(0x20, 0x20);
        assert!(!pic.output());
        pic.write_port(0x4d0, 0x40);
        assert!(pic.output());
    }

    #[test]
    fn icw1_resets_and_requires_a_new_edge() {
        let mut pic = linux_pic();
        pic.set_irq(5, true);
        pulse(&mut pic, 6);
        pic.acknowledge();
        linux_init(&mut pic, false, [0, 0]);
        assert_eq!(pic.isr(), 0);
        assert_eq!(pic.irr(), 0, "edge requests are dropped");
        assert!(!pic.output(), "IRQ 5 is still high but made no new edge");
        pic.set_irq(5, false);
        pic.set_irq(5, true);
        assert_eq!(pic.acknowledge(), 0x35);
    }

    #[test]
    fn init_sequences_with_and_without_icw4_and_single_mode() {
        let mut pic = Pic::new();
        pic.write_port(0x21, 0);
        // ICW1 without IC4: ICW2, ICW3, and the next data write is OCW1 again; ICW4's
        // functions (AEOI) are off.
        pic.write_port(0x20, 0x10);
        pic.write_port(0x21, 0x48);
        pic.write_port(0x21, 0x04);
        pic.write_port(0x21, 0xf7);
        assert_eq!(pic.read_port(0x21), 0xf7);
        pulse(&mut pic, 3);
        assert_eq!(pic.acknowledge(), 0x4b);
        assert_eq!(pic.isr(), 0x0008);
        // Single mode with IC4: ICW2 then ICW4 (no ICW3); the next write is OCW1.
        pic.write_port(0x20, 0x13);
        pic.write_port(0x21, 0x50);
        pic.write_port(0x21, 0x03); // ICW4: 8086, AEOI
        pic.write_port(0x21, 0x00);
        assert_eq!(pic.read_port(0x21), 0x00);
        pulse(&mut pic, 3);
        assert_eq!(pic.acknowledge(), 0x53);
        assert_eq!(
            pic.isr(),
            0,
            "AEOI came from the ICW4 of the single-mode sequence"
        );
        // Single mode leaves the board's cascade in place.
        pic.write_port(0xa1, 0);
        pulse(&mut pic, 8);
        assert!(pic.output());
        assert_eq!(pic.acknowledge(), 0x70);
        // Single mode without IC4: only ICW2.
        pic.write_port(0x20, 0x12);
        pic.write_port(0x21, 0x60);
        pic.write_port(0x21, 0xf0);
        assert_eq!(pic.read_port(0x21), 0xf0);
        // ICW2 keeps only bits 7:3.
        pic.write_port(0x20, 0x11);
        pic.write_port(0x21, 0x2f);
        pic.write_port(0x21, 0x04);
        pic.write_port(0x21, 0x01);
        pulse(&mut pic, 1);
        assert_eq!(pic.acknowledge(), 0x29);
    }

    #[test]
    fn poll_mode() {
        let mut pic = linux_pic();
        pic.write_port(0x20, 0x0c);
        assert_eq!(pic.read_port(0x20), 0x00, "nothing requested");
        pulse(&mut pic, 6);
        pic.write_port(0x20, 0x0c);
        assert_eq!(pic.read_port(0x21), 0x86, "a poll answers on either port");
        assert_eq!(pic.isr(), 0x0040, "the poll acknowledged IR6");
        assert!(!pic.output());
        assert_eq!(
            pic.read_port(0x21),
            0x00,
            "one read per poll command: IMR again"
        );
        pic.write_port(0x20, 0x20);
        // Polling the slave takes its request and the master's IR2 with it.
        pulse(&mut pic, 13);
        pic.write_port(0xa0, 0x0c);
        assert_eq!(pic.read_port(0xa0), 0x85);
        assert_eq!(pic.isr(), 0x2000);
        assert!(!pic.output());
        assert_eq!(pic.irr(), 0);
    }

    #[test]
    fn special_mask_mode() {
        let mut pic = linux_pic();
        pulse(&mut pic, 3);
        assert_eq!(pic.acknowledge(), 0x33);
        pulse(&mut pic, 6);
        assert!(!pic.output(), "IR3 in service blocks IR6");
        // The handler masks its own level and enters special mask mode (OCW3 0x68).
        pic.write_port(0x21, 0x08);
        pic.write_port(0x20, 0x68);
        assert!(pic.output(), "a lower level is now accepted");
        assert_eq!(pic.acknowledge(), 0x36);
        pic.write_port(0x20, 0x66);
        // Leaving special mask mode (OCW3 0x48): IR3 blocks again.
        pic.write_port(0x20, 0x48);
        pulse(&mut pic, 7);
        pic.write_port(0x21, 0x00);
        assert!(!pic.output());
        pic.write_port(0x20, 0x63);
        assert_eq!(pic.acknowledge(), 0x37);
    }

    #[test]
    fn special_fully_nested_mode_lets_a_higher_slave_level_nest() {
        for sfnm in [false, true] {
            let mut pic = Pic::new();
            linux_init(&mut pic, false, [0, 0]);
            if sfnm {
                // The master again, with ICW4 = 0x11 (8086, SFNM).
                pic.write_port(0x20, 0x11);
                pic.write_port(0x21, 0x30);
                pic.write_port(0x21, 0x04);
                pic.write_port(0x21, 0x11);
                pic.write_port(0x21, 0x00);
            }
            pulse(&mut pic, 12);
            assert_eq!(pic.acknowledge(), 0x3c);
            pulse(&mut pic, 9);
            if !sfnm {
                assert!(
                    !pic.output(),
                    "fully nested: IR2 in service blocks the slave"
                );
                continue;
            }
            assert!(pic.output(), "IRQ 9 outranks IRQ 12 on the slave and nests");
            assert_eq!(pic.acknowledge(), 0x39);
            assert_eq!(pic.isr(), 0x1204);
            // The master's lower levels are still blocked by IR2.
            pulse(&mut pic, 5);
            pic.write_port(0xa0, 0x20);
            pic.write_port(0xa0, 0x20);
            assert!(!pic.output());
            pic.write_port(0x20, 0x20);
            assert_eq!(pic.acknowledge(), 0x35);
        }
    }
}
