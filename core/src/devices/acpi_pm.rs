//! The ACPI fixed-hardware registers of a PIIX4-style chipset: the PM1a event and control
//! blocks, the PM timer and a GPE0 block, and the SCI they raise.
//!
//! The FADT points at each block on its own, so the device is accessed per block
//! ([`PmBlock`]) at an offset inside it; where the blocks sit in I/O space is the
//! machine's choice (`crate::acpi::AcpiConfig`: 0x600, 0x604, 0x608 and 0x620 on the PC
//! machine, as the FADT built from it says):
//!
//! | block | length | registers |
//! |---|---|---|
//! | PM1a_EVT_BLK | 4 | PM1_STS (offset 0, 16 bits), PM1_EN (offset 2, 16 bits) |
//! | PM1a_CNT_BLK | 2 | PM1_CNT (16 bits) |
//! | PM_TMR_BLK | 4 | PM_TMR (32 bits, read-only) |
//! | GPE0_BLK | 4 | GPE0_STS (offset 0, 16 bits), GPE0_EN (offset 2, 16 bits) |
//!
//! Every register may be accessed by bytes, words or dwords at any offset (the FADT's
//! Generic Address Structures say words for PM1, a dword for the timer, bytes for GPE0);
//! an access is split into the registers it touches, each updated once with the bytes
//! written to it (so a 16-bit PM1_CNT write sees SLP_TYP and SLP_EN together). Bytes past
//! the end of a block read 0xff and ignore writes.
//!
//! - **PM1_STS** (write 1 to clear): TMR_STS (bit 0) is set whenever the timer's top bit
//!   (23, or 31 with [`AcpiPm::new`]'s `timer_32bit`, the FADT's TMR_VAL_EXT) toggles;
//!   PWRBTN_STS (bit 8) by [`AcpiPm::press_power_button`]; WAK_STS (bit 15) by
//!   [`AcpiPm::wake`]. **PM1_EN** keeps the PIIX4's enables: TMR_EN (0), GBL_EN (5),
//!   PWRBTN_EN (8), RTC_EN (10).
//! - **PM1_CNT**: SCI_EN (bit 0) and BM_RLD (1) are stored, GBL_RLS (2) is write-only,
//!   SLP_TYP (12-10) is stored, SLP_EN (13) is write-only: writing it requests the sleep
//!   state SLP_TYP, which [`AcpiPm::take_sleep_request`] hands to the machine (the
//!   DSDT's `\_S5` value, `crate::acpi::S5_SLEEP_TYPE`, is soft off). SCI_EN reads 1 from
//!   power-on: there is no SMI command port (the FADT's SMI_CMD is 0), so the machine is
//!   always in ACPI mode, which is what ACPI tells the OS to assume then.
//! - **PM_TMR**: a free-running 3.579545 MHz count from [`AcpiPm::new`]'s `now`, 24 bits
//!   wide (bits 31-24 read 0) or 32 bits.
//! - **GPE0**: status (write 1 to clear) and enable, 16 bits each; nothing here raises a
//!   general-purpose event.
//!
//! **SCI** ([`AcpiPm::sci_level`], ISA IRQ 9 = GSI 9, level-triggered active high as the
//! MADT's override says): SCI_EN and (a PM1 status bit with its enable, or a GPE0 status
//! bit with its enable). It stays high until the guest clears the status bit.
//!
//! **Time.** Every access takes `now` (machine nanoseconds) and first brings the timer's
//! status up to date arithmetically; [`AcpiPm::next_deadline`] is when TMR_STS will next
//! raise the SCI (every 2.34 s, or 1200 s with 32 bits, while TMR_EN is set), so no bound
//! on the rate is needed.

/// The PM timer's frequency, Hz.
pub const PM_TIMER_HZ: u64 = 3_579_545;

/// One of the register blocks the FADT describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PmBlock {
    /// PM1a_EVT_BLK: PM1_STS at offset 0, PM1_EN at offset 2.
    Pm1aEvent,
    /// PM1a_CNT_BLK: PM1_CNT.
    Pm1aControl,
    /// PM_TMR_BLK: the PM timer.
    Timer,
    /// GPE0_BLK: GPE0_STS at offset 0, GPE0_EN at offset 2.
    Gpe0,
}

impl PmBlock {
    /// The block's length in bytes (the FADT's `*_LEN` field).
    pub const fn size(self) -> u16 {
        match self {
            PmBlock::Pm1aControl => 2,
            _ => 4,
        }
    }
}

/// PM1_STS / PM1_EN: the timer's top bit toggled / its enable.
pub const PM1_TMR: u16 = 1 << 0;
/// PM1_STS / PM1_EN: global lock release / its enable.
pub const PM1_GBL: u16 = 1 << 5;
/// PM1_STS / PM1_EN: power button pressed / its enable.
pub const PM1_PWRBTN: u16 = 1 << 8;
/// PM1_STS / PM1_EN: RTC alarm / its enable.
pub const PM1_RTC: u16 = 1 << 10;
/// PM1_STS: the machine woke from a sleep state.
pub const PM1_STS_WAK: u16 = 1 << 15;
/// PM1_CNT: SCI_EN.
pub const PM1_CNT_SCI_EN: u16 = 1 << 0;
/// PM1_CNT: SLP_EN (write-only).
pub const PM1_CNT_SLP_EN: u16 = 1 << 13;
/// PM1_CNT: the SLP_TYP field's shift (3 bits).
pub const PM1_CNT_SLP_TYP_SHIFT: u16 = 10;

/// PM1_STS bits with a source here.
const PM1_STS_BITS: u16 = PM1_TMR | PM1_GBL | PM1_PWRBTN | PM1_RTC | PM1_STS_WAK;
/// PM1_EN bits the PIIX4 implements.
const PM1_EN_BITS: u16 = PM1_TMR | PM1_GBL | PM1_PWRBTN | PM1_RTC;
/// PM1_STS bits that raise the SCI when enabled.
const PM1_SCI_BITS: u16 = PM1_TMR | PM1_GBL | PM1_PWRBTN | PM1_RTC;
/// PM1_CNT bits that read back: SCI_EN, BM_RLD, SLP_TYP.
const PM1_CNT_STORED: u16 = PM1_CNT_SCI_EN | 1 << 1 | 7 << PM1_CNT_SLP_TYP_SHIFT;

const NS_PER_SEC: u128 = 1_000_000_000;

/// One register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Register {
    Pm1Status,
    Pm1Enable,
    Pm1Control,
    Timer,
    Gpe0Status,
    Gpe0Enable,
}

/// (block, offset in the block, width in bytes, register).
const REGISTERS: [(PmBlock, u16, u16, Register); 6] = [
    (PmBlock::Pm1aEvent, 0, 2, Register::Pm1Status),
    (PmBlock::Pm1aEvent, 2, 2, Register::Pm1Enable),
    (PmBlock::Pm1aControl, 0, 2, Register::Pm1Control),
    (PmBlock::Timer, 0, 4, Register::Timer),
    (PmBlock::Gpe0, 0, 2, Register::Gpe0Status),
    (PmBlock::Gpe0, 2, 2, Register::Gpe0Enable),
];

/// The ACPI PM registers. See the module documentation.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AcpiPm {
    pm1_status: u16,
    pm1_enable: u16,
    pm1_control: u16,
    gpe0_status: u16,
    gpe0_enable: u16,
    /// The timer is 32 bits wide (TMR_VAL_EXT), else 24.
    timer_32bit: bool,
    /// Machine time at which the timer read 0.
    origin: u64,
    /// Timer ticks (not truncated) at the last update.
    ticks: u64,
    /// Machine time of the last update.
    synced: u64,
    /// A sleep request (SLP_TYP) the machine has not taken yet.
    sleep_request: Option<u8>,
}

impl AcpiPm {
    /// The block at power-on, its timer starting from 0 at machine time `now`, 32 bits
    /// wide if `timer_32bit` (the FADT's TMR_VAL_EXT flag must say the same), else 24.
    pub fn new(timer_32bit: bool, now: u64) -> AcpiPm {
        AcpiPm {
            pm1_status: 0,
            pm1_enable: 0,
            pm1_control: PM1_CNT_SCI_EN,
            gpe0_status: 0,
            gpe0_enable: 0,
            timer_32bit,
            origin: now,
            ticks: 0,
            synced: now,
            sleep_request: None,
        }
    }

    /// Read `size` bytes (1, 2 or 4; other sizes read 4) at `offset` in `block`; bytes no
    /// register holds read 0xff.
    pub fn read(&mut self, block: PmBlock, offset: u16, size: u8, now: u64) -> u32 {
        self.sync(now);
        let mut value = 0u32;
        for i in 0..access_len(size) {
            let at = offset.checked_add(i);
            let byte = match at.and_then(|at| register_at(block, at)) {
                Some((register, byte)) => (self.register(register) >> (8 * byte)) as u8,
                None => 0xff,
            };
            value |= u32::from(byte) << (8 * i);
        }
        value
    }

    /// Write `size` bytes (1, 2 or 4; other sizes write 4) of `value` at `offset` in
    /// `block`.
    pub fn write(&mut self, block: PmBlock, offset: u16, size: u8, value: u32, now: u64) {
        self.sync(now);
        let len = access_len(size);
        for &(in_block, start, width, register) in &REGISTERS {
            if in_block != block {
                continue;
            }
            // The bytes of this register the access covers, in the register's positions.
            let mut mask = 0u32;
            let mut bits = 0u32;
            for i in 0..len {
                let Some(at) = offset.checked_add(i) else {
                    break;
                };
                if (start..start + width).contains(&at) {
                    let shift = 8 * u32::from(at - start);
                    mask |= 0xff << shift;
                    bits |= ((value >> (8 * i)) & 0xff) << shift;
                }
            }
            if mask != 0 {
                self.write_register(register, mask, bits);
            }
        }
    }

    /// Bring the timer status up to `now`.
    pub fn update(&mut self, now: u64) {
        self.sync(now);
    }

    /// The SCI (IRQ 9) level as of the last access or update.
    pub fn sci_level(&self) -> bool {
        self.pm1_control & PM1_CNT_SCI_EN != 0
            && (self.pm1_status & self.pm1_enable & PM1_SCI_BITS != 0
                || self.gpe0_status & self.gpe0_enable != 0)
    }

    /// The machine time at which the SCI next rises by itself (the timer's top bit
    /// toggling with TMR_EN set), or `None`.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.sci_level()
            || self.pm1_control & PM1_CNT_SCI_EN == 0
            || self.pm1_enable & PM1_TMR == 0
        {
            return None;
        }
        let shift = self.top_bit();
        let tick = u128::from((self.ticks >> shift) + 1) << shift;
        let offset = (tick * NS_PER_SEC).div_ceil(u128::from(PM_TIMER_HZ));
        Some(u64::try_from(u128::from(self.origin) + offset).unwrap_or(u64::MAX))
    }

    /// The sleep state requested by a PM1_CNT write with SLP_EN set since the last call:
    /// its SLP_TYP (0-7; `crate::acpi::S5_SLEEP_TYPE` is soft off).
    pub fn take_sleep_request(&mut self) -> Option<u8> {
        self.sleep_request.take()
    }

    /// The power button was pressed: set PWRBTN_STS (an SCI if PWRBTN_EN), as QEMU's
    /// `system_powerdown` does.
    pub fn press_power_button(&mut self, now: u64) {
        self.sync(now);
        self.pm1_status |= PM1_PWRBTN;
    }

    /// The machine left a sleep state: set WAK_STS.
    pub fn wake(&mut self, now: u64) {
        self.sync(now);
        self.pm1_status |= PM1_STS_WAK;
    }

    /// The timer's most significant bit: 23 or 31.
    fn top_bit(&self) -> u32 {
        if self.timer_32bit {
            31
        } else {
            23
        }
    }

    fn sync(&mut self, now: u64) {
        let now = now.max(self.synced);
        let elapsed = u128::from(now - self.origin);
        let ticks = (elapsed * u128::from(PM_TIMER_HZ) / NS_PER_SEC) as u64;
        let shift = self.top_bit();
        if ticks >> shift != self.ticks >> shift {
            self.pm1_status |= PM1_TMR;
        }
        self.ticks = ticks;
        self.synced = now;
    }

    fn register(&self, register: Register) -> u32 {
        match register {
            Register::Pm1Status => u32::from(self.pm1_status),
            Register::Pm1Enable => u32::from(self.pm1_enable),
            Register::Pm1Control => u32::from(self.pm1_control),
            Register::Timer if self.timer_32bit => self.ticks as u32,
            Register::Timer => self.ticks as u32 & 0x00ff_ffff,
            Register::Gpe0Status => u32::from(self.gpe0_status),
            Register::Gpe0Enable => u32::from(self.gpe0_enable),
        }
    }

    /// Write the bytes `mask` selects of `register` with `bits`.
    fn write_register(&mut self, register: Register, mask: u32, bits: u32) {
        let written = (bits & mask) as u16;
        let merge = |old: u16| (old & !(mask as u16)) | written;
        match register {
            Register::Pm1Status => self.pm1_status &= !(written & PM1_STS_BITS),
            Register::Pm1Enable => self.pm1_enable = merge(self.pm1_enable) & PM1_EN_BITS,
            Register::Pm1Control => {
                let control = merge(self.pm1_control);
                if written & PM1_CNT_SLP_EN != 0 {
                    self.sleep_request = Some(((control >> PM1_CNT_SLP_TYP_SHIFT) & 7) as u8);
                }
                self.pm1_control = control & PM1_CNT_STORED;
            }
            Register::Timer => {}
            Register::Gpe0Status => self.gpe0_status &= !written,
            Register::Gpe0Enable => self.gpe0_enable = merge(self.gpe0_enable),
        }
    }
}

/// The number of bytes an access of `size` covers.
fn access_len(size: u8) -> u16 {
    match size {
        1 => 1,
        2 => 2,
        _ => 4,
    }
}

/// The register holding the byte at `offset` in `block`, and that byte's index in it.
fn register_at(block: PmBlock, offset: u16) -> Option<(Register, u16)> {
    REGISTERS
        .iter()
        .find(|&&(in_block, start, width, _)| {
            in_block == block && (start..start + width).contains(&offset)
        })
        .map(|&(_, start, _, register)| (register, offset - start))
}

impl crate::devices::SavedState for AcpiPm {
    fn check_state(&self) -> Result<(), (&'static str, alloc::string::String)> {
        use crate::devices::check_time;
        check_time("origin", self.origin)?;
        check_time("ticks", self.ticks)?;
        check_time("synced", self.synced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acpi;
    use crate::devices::pit::{edge_time, Pit};

    const T0: u64 = 7_000_000_000;
    const STS: u16 = acpi::PM1A_EVENT_PORT;
    const EN: u16 = STS + 2;
    const CNT: u16 = acpi::PM1A_CONTROL_PORT;
    const TMR: u16 = acpi::PM_TIMER_PORT;
    const GPE_STS: u16 = acpi::GPE0_PORT;
    const GPE_EN: u16 = GPE_STS + 2;

    /// The block and offset of `port` on the PC machine, as the port bus decodes it.
    fn decode(port: u16) -> Option<(PmBlock, u16)> {
        [
            (PmBlock::Pm1aEvent, acpi::PM1A_EVENT_PORT),
            (PmBlock::Pm1aControl, acpi::PM1A_CONTROL_PORT),
            (PmBlock::Timer, acpi::PM_TIMER_PORT),
            (PmBlock::Gpe0, acpi::GPE0_PORT),
        ]
        .into_iter()
        .find(|&(block, at)| (at..at + block.size()).contains(&port))
        .map(|(block, at)| (block, port - at))
    }

    /// An IN from `port`: the device's block or nothing (all ones).
    fn rd(pm: &mut AcpiPm, port: u16, size: u8, now: u64) -> u32 {
        match decode(port) {
            Some((block, offset)) => pm.read(block, offset, size, now),
            None => u32::MAX >> (32 - 8 * u32::from(access_len(size))),
        }
    }

    /// An OUT to `port`.
    fn wr(pm: &mut AcpiPm, port: u16, size: u8, value: u32, now: u64) {
        if let Some((block, offset)) = decode(port) {
            pm.write(block, offset, size, value, now);
        }
    }

    /// Machine time at which the timer has counted `ticks` since T0.
    fn at_ticks(ticks: u64) -> u64 {
        T0 + u64::try_from((u128::from(ticks) * NS_PER_SEC).div_ceil(u128::from(PM_TIMER_HZ)))
            .unwrap()
    }

    #[test]
    fn block_lengths_are_the_fadts() {
        assert_eq!(
            PmBlock::Pm1aEvent.size(),
            u16::from(acpi::fadt::PM1_EVT_LEN)
        );
        assert_eq!(
            PmBlock::Pm1aControl.size(),
            u16::from(acpi::fadt::PM1_CNT_LEN)
        );
        assert_eq!(PmBlock::Timer.size(), u16::from(acpi::fadt::PM_TMR_LEN));
        assert_eq!(PmBlock::Gpe0.size(), u16::from(acpi::fadt::GPE0_BLK_LEN));
    }

    #[test]
    fn power_on_state() {
        let mut pm = AcpiPm::new(false, T0);
        assert_eq!(rd(&mut pm, STS, 2, T0), 0);
        assert_eq!(rd(&mut pm, EN, 2, T0), 0);
        assert_eq!(rd(&mut pm, CNT, 2, T0), 1);
        assert_eq!(rd(&mut pm, TMR, 4, T0), 0);
        assert_eq!(rd(&mut pm, GPE_STS, 4, T0), 0);
        assert!(!pm.sci_level());
        assert_eq!(pm.next_deadline(), None);
        assert_eq!(pm.take_sleep_request(), None);
        // Bytes past the end of a block.
        assert_eq!(pm.read(PmBlock::Pm1aControl, 2, 2, T0), 0xffff);
        assert_eq!(pm.read(PmBlock::Pm1aControl, 1, 2, T0), 0xff00);
        assert_eq!(pm.read(PmBlock::Timer, 4, 4, T0), 0xffff_ffff);
        assert_eq!(pm.read(PmBlock::Pm1aEvent, 3, 2, T0), 0xff00);
        pm.write(PmBlock::Gpe0, 4, 4, 0xffff_ffff, T0);
        pm.write(PmBlock::Pm1aControl, 2, 2, 0xffff, T0);
        assert_eq!(pm.read(PmBlock::Gpe0, 0, 4, T0), 0);
        assert_eq!(pm.take_sleep_request(), None);
    }

    #[test]
    fn timer_runs_at_3_579545_mhz() {
        let mut pm = AcpiPm::new(false, T0);
        assert_eq!(rd(&mut pm, TMR, 4, T0 + 1_000), 3);
        assert_eq!(rd(&mut pm, TMR, 4, at_ticks(1234) - 1), 1233);
        assert_eq!(rd(&mut pm, TMR, 4, at_ticks(1234)), 1234);
        assert_eq!(rd(&mut pm, TMR, 4, T0 + 1_000_000_000), 3_579_545);
        // Byte and word reads of the same instant agree with the dword.
        let now = T0 + 2_345_678_901;
        let dword = rd(&mut pm, TMR, 4, now);
        let bytes: u32 = (0..4)
            .map(|i| rd(&mut pm, TMR + i, 1, now) << (8 * i))
            .sum();
        let words = rd(&mut pm, TMR, 2, now) | rd(&mut pm, TMR + 2, 2, now) << 16;
        assert_eq!(bytes, dword);
        assert_eq!(words, dword);
        // Writes are ignored.
        wr(&mut pm, TMR, 4, 0, now);
        assert_eq!(rd(&mut pm, TMR, 4, now), dword);
    }

    #[test]
    fn timer_wraps_at_24_bits_and_sets_tmr_sts() {
        let mut pm = AcpiPm::new(false, T0);
        assert_eq!(rd(&mut pm, TMR, 4, at_ticks(0x7f_ffff)), 0x7f_ffff);
        assert_eq!(rd(&mut pm, STS, 2, at_ticks(0x7f_ffff)), 0);
        // Bit 23 goes 0 -> 1: TMR_STS.
        assert_eq!(rd(&mut pm, TMR, 4, at_ticks(0x80_0000)), 0x80_0000);
        assert_eq!(rd(&mut pm, STS, 2, at_ticks(0x80_0000)), 1);
        wr(&mut pm, STS, 2, 1, at_ticks(0x80_0000));
        assert_eq!(rd(&mut pm, STS, 2, at_ticks(0xff_ffff)), 0);
        // Bit 23 goes 1 -> 0 at the wrap: TMR_STS again, the count restarts from 0.
        assert_eq!(rd(&mut pm, TMR, 4, at_ticks(0x100_0000)), 0);
        assert_eq!(rd(&mut pm, STS, 2, at_ticks(0x100_0000)), 1);
        assert_eq!(rd(&mut pm, TMR, 4, at_ticks(0x100_0005)), 5);
    }

    #[test]
    fn timer_32bit() {
        let mut pm = AcpiPm::new(true, T0);
        assert_eq!(rd(&mut pm, TMR, 4, at_ticks(0x100_0005)), 0x100_0005);
        assert_eq!(rd(&mut pm, STS, 2, at_ticks(0x100_0005)), 0);
        assert_eq!(rd(&mut pm, TMR, 4, at_ticks(0x8000_0000)), 0x8000_0000);
        assert_eq!(rd(&mut pm, STS, 2, at_ticks(0x8000_0000)), 1);
        assert_eq!(rd(&mut pm, TMR, 4, at_ticks(0x1_0000_0007)), 7);
        // 2^32 ticks of 3.579545 MHz: 1199.86 s per wrap.
        let wrap = at_ticks(1 << 32) - T0;
        assert_eq!(wrap / 1_000_000_000, 1199);
    }

    #[test]
    fn timer_overflow_raises_the_sci_when_enabled() {
        let mut pm = AcpiPm::new(false, T0);
        wr(&mut pm, EN, 2, u32::from(PM1_TMR), T0);
        assert_eq!(rd(&mut pm, EN, 2, T0), 1);
        assert_eq!(pm.next_deadline(), Some(at_ticks(0x80_0000)));
        pm.update(at_ticks(0x80_0000) - 1);
        assert!(!pm.sci_level());
        pm.update(at_ticks(0x80_0000));
        assert!(pm.sci_level());
        assert_eq!(pm.next_deadline(), None);
        // Write 1 to clear lowers it; the next toggle is 2^23 ticks (2.34 s) later.
        wr(&mut pm, STS, 2, u32::from(PM1_TMR), at_ticks(0x80_0000));
        assert!(!pm.sci_level());
        assert_eq!(pm.next_deadline(), Some(at_ticks(0x100_0000)));
        // Without SCI_EN: status but no SCI.
        wr(&mut pm, CNT, 2, 0, at_ticks(0x80_0000));
        pm.update(at_ticks(0x100_0000));
        assert_eq!(rd(&mut pm, STS, 2, at_ticks(0x100_0000)), 1);
        assert!(!pm.sci_level());
        assert_eq!(pm.next_deadline(), None);
    }

    #[test]
    fn huge_elapsed_time() {
        let mut pm = AcpiPm::new(true, 0);
        wr(&mut pm, EN, 2, u32::from(PM1_TMR), 0);
        let v = rd(&mut pm, TMR, 4, u64::MAX);
        let ticks = u128::from(u64::MAX) * u128::from(PM_TIMER_HZ) / NS_PER_SEC;
        assert_eq!(v, ticks as u32);
        assert!(pm.sci_level());
        wr(&mut pm, STS, 2, 0xffff, u64::MAX);
        assert_eq!(pm.next_deadline(), Some(u64::MAX));
    }

    #[test]
    fn status_is_write_one_to_clear_and_enables_mask() {
        let mut pm = AcpiPm::new(false, T0);
        pm.press_power_button(T0);
        pm.wake(T0);
        assert_eq!(rd(&mut pm, STS, 2, T0), 0x8100);
        assert!(!pm.sci_level());
        wr(&mut pm, EN, 2, 0xffff, T0);
        assert_eq!(rd(&mut pm, EN, 2, T0), 0x0521);
        assert!(pm.sci_level());
        // Writing 0 clears nothing; a byte write clears only its byte's bits.
        wr(&mut pm, STS, 2, 0, T0);
        assert_eq!(rd(&mut pm, STS, 2, T0), 0x8100);
        wr(&mut pm, STS + 1, 1, 0x80, T0);
        assert_eq!(rd(&mut pm, STS, 2, T0), 0x0100);
        assert!(pm.sci_level());
        // A dword write at PM1a_EVT_BLK: status (clear PWRBTN) and enable together.
        wr(&mut pm, STS, 4, 0x0000_0100, T0);
        assert_eq!(rd(&mut pm, STS, 4, T0), 0);
        assert!(!pm.sci_level());
    }

    #[test]
    fn gpe0_block() {
        let mut pm = AcpiPm::new(false, T0);
        wr(&mut pm, GPE_EN, 2, 0xffff, T0);
        assert_eq!(rd(&mut pm, GPE_STS, 4, T0), 0xffff_0000);
        wr(&mut pm, GPE_STS, 2, 0xffff, T0);
        assert_eq!(rd(&mut pm, GPE_STS, 2, T0), 0);
        wr(&mut pm, GPE_EN + 1, 1, 0, T0);
        assert_eq!(rd(&mut pm, GPE_EN, 2, T0), 0x00ff);
        assert!(!pm.sci_level());
    }

    /// Linux's `acpi_hw_legacy_sleep` for S5: SLP_TYP written, then SLP_TYP with SLP_EN,
    /// as 16-bit writes.
    #[test]
    fn slp_en_requests_sleep() {
        let mut pm = AcpiPm::new(false, T0);
        let control = rd(&mut pm, CNT, 2, T0);
        let typed = (control & !(7 << 10)) | u32::from(acpi::S5_SLEEP_TYPE) << 10;
        wr(&mut pm, CNT, 2, typed, T0);
        assert_eq!(pm.take_sleep_request(), None);
        wr(&mut pm, CNT, 2, typed | u32::from(PM1_CNT_SLP_EN), T0);
        assert_eq!(pm.take_sleep_request(), Some(acpi::S5_SLEEP_TYPE));
        assert_eq!(pm.take_sleep_request(), None);
        // SLP_EN reads 0; SLP_TYP and SCI_EN read back.
        wr(&mut pm, CNT, 2, 0x3c01 | 0x4000, T0);
        assert_eq!(pm.take_sleep_request(), Some(7));
        assert_eq!(rd(&mut pm, CNT, 2, T0), 0x1c01);
        // A byte write of the high byte alone carries SLP_TYP and SLP_EN together.
        wr(&mut pm, CNT + 1, 1, 0x24, T0);
        assert_eq!(pm.take_sleep_request(), Some(1));
        assert_eq!(rd(&mut pm, CNT, 2, T0), 0x0401);
        // A low-byte write does not request anything.
        wr(&mut pm, CNT, 1, 0xff, T0);
        assert_eq!(pm.take_sleep_request(), None);
        assert_eq!(rd(&mut pm, CNT, 2, T0), 0x0403);
    }

    /// Linux's `verify_pmtmr_rate`: the PM timer read around a PIT channel 2 countdown
    /// (mode 0, CALIBRATE_LATCH = 0xffff clocks, OUT polled through port 0x61) must count
    /// within 5% of PMTMR_EXPECTED_RATE.
    #[test]
    fn linux_verify_pmtmr_rate_against_the_pit() {
        let mut pm = AcpiPm::new(false, T0);
        let mut pit = Pit::new(T0);
        let mut now = T0 + 12_345;
        pit.set_gate(2, true, now);
        pit.write(3, 0xb0, now);
        pit.write(2, 0xff, now);
        pit.write(2, 0xff, now);
        let v1 = rd(&mut pm, TMR, 4, now);
        while !pit.out(2, now) {
            now += 1_000;
        }
        let v2 = rd(&mut pm, TMR, 4, now);
        let delta = (v2.wrapping_sub(v1)) & 0xff_ffff;
        // PMTMR_TICKS_PER_SEC * CALIBRATE_LATCH / CLOCK_TICK_RATE.
        let expected = (PM_TIMER_HZ * 0xffff / 1_193_182) as u32;
        assert!(delta.abs_diff(expected) <= 4, "{delta} vs {expected}");
        // The countdown took 65536 PIT clocks.
        let took = now - (T0 + 12_345);
        assert!(took.abs_diff(edge_time(65536)) < 1_001);
    }

    /// The SCI rises exactly at `next_deadline`, and never when it says `None`.
    #[test]
    fn next_deadline_agrees_with_the_sci() {
        for timer_32bit in [false, true] {
            let mut pm = AcpiPm::new(timer_32bit, T0);
            let mut x = 0x1357_9bdfu32;
            let mut now = T0;
            let mut checked = 0;
            for _ in 0..2_000 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                now += u64::from(x) * 400;
                match x % 4 {
                    0 => wr(&mut pm, EN, 2, x >> 8, now),
                    1 => wr(&mut pm, STS, 2, x >> 8, now),
                    2 => wr(&mut pm, CNT, 1, (x >> 8) & 1, now),
                    _ => pm.update(now),
                }
                match pm.next_deadline() {
                    Some(deadline) => {
                        assert!(!pm.sci_level() && deadline > now);
                        let mut before = pm.clone();
                        before.update(deadline - 1);
                        assert!(!before.sci_level());
                        let mut at = pm.clone();
                        at.update(deadline);
                        assert!(at.sci_level());
                        checked += 1;
                    }
                    None if !pm.sci_level() => {
                        let mut later = pm.clone();
                        later.update(now + 10_000_000_000_000);
                        assert!(!later.sci_level());
                    }
                    None => {}
                }
            }
            assert!(checked > 30, "{checked}");
        }
    }

    #[test]
    fn hostile_accesses_never_panic() {
        let mut pm = AcpiPm::new(false, T0);
        let mut x = 0x2545_f491u32;
        let mut now = T0;
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            now += u64::from(x % 1_000_000);
            let block = [
                PmBlock::Pm1aEvent,
                PmBlock::Pm1aControl,
                PmBlock::Timer,
                PmBlock::Gpe0,
            ][(x >> 4) as usize % 4];
            let offset = ((x >> 6) as u16 % 8) | if x & 1 != 0 { 0xfff8 } else { 0 };
            let size = [1, 2, 4, 3, 0][(x >> 12) as usize % 5];
            if x & 2 != 0 {
                pm.read(block, offset, size, now);
            } else {
                pm.write(block, offset, size, x, now);
                pm.take_sleep_request();
            }
            if let Some(deadline) = pm.next_deadline() {
                assert!(deadline > now);
            }
        }
    }
}
