//! The ACPI fixed-hardware registers of a PIIX4-style chipset: the PM1a event and control
//! blocks, the PM timer and a GPE0 block, and the SCI they raise (ISA IRQ 9, level, active
//! high).
//!
//! The port layout ([`PM_BASE`] and the `*_BLK` constants) is what the FADT describes:
//!
//! | block | ports | registers |
//! |---|---|---|
//! | PM1a_EVT_BLK | 0x600-0x603 | PM1_STS (16 bits), PM1_EN (16 bits) |
//! | PM1a_CNT_BLK | 0x604-0x605 | PM1_CNT (16 bits) |
//! | PM_TMR_BLK | 0x608-0x60B | PM_TMR (32 bits, read-only) |
//! | GPE0_BLK | 0x620-0x623 | GPE0_STS (16 bits), GPE0_EN (16 bits) |
//!
//! The device decodes `PM_BASE..PM_BASE + PM_IO_LEN` (0x600-0x623); the ports between the
//! blocks read 0xff and ignore writes. Every register may be accessed by bytes, words or
//! dwords at any offset; an access is split into the registers it touches, each updated
//! once with the bytes written to it (so a 16-bit PM1_CNT write sees SLP_TYP and SLP_EN
//! together).
//!
//! - **PM1_STS** (write 1 to clear): TMR_STS (bit 0) is set whenever the timer's top bit
//!   (23, or 31 with [`AcpiPm::new`]'s `timer_32bit`, the FADT's TMR_VAL_EXT) toggles;
//!   PWRBTN_STS (bit 8) by [`AcpiPm::press_power_button`]; WAK_STS (bit 15) by
//!   [`AcpiPm::wake`]. **PM1_EN** keeps the PIIX4's enables: TMR_EN (0), GBL_EN (5),
//!   PWRBTN_EN (8), RTC_EN (10).
//! - **PM1_CNT**: SCI_EN (bit 0) and BM_RLD (1) are stored, GBL_RLS (2) is write-only,
//!   SLP_TYP (12-10) is stored, SLP_EN (13) is write-only: writing it requests the sleep
//!   state SLP_TYP, which [`AcpiPm::take_sleep_request`] hands to the machine. This
//!   machine's `\_S5` is [`SLP_TYP_S5`] (0, QEMU's PIIX4 value). SCI_EN reads 1 from
//!   power-on: there is no SMI command port (the FADT's SMI_CMD is 0), so the machine is
//!   always in ACPI mode, which is what ACPI tells the OS to assume then.
//! - **PM_TMR**: a free-running 3.579545 MHz count from [`AcpiPm::new`]'s `now`, 24 bits
//!   wide (bits 31-24 read 0) or 32 bits.
//! - **GPE0**: status (write 1 to clear) and enable, 16 bits each; nothing here raises a
//!   general-purpose event.
//!
//! **SCI** ([`AcpiPm::sci_level`], IRQ 9, level-triggered active high as the MADT's
//! override says): SCI_EN and (a PM1 status bit with its enable, or a GPE0 status bit with
//! its enable). It stays high until the guest clears the status bit.
//!
//! **Time.** Every access takes `now` (machine nanoseconds) and first brings the timer's
//! status up to date arithmetically; [`AcpiPm::next_deadline`] is when TMR_STS will next
//! raise the SCI (every 2.34 s, or 600 s with 32 bits, while TMR_EN is set), so no bound
//! on the rate is needed.

/// Base of the PM I/O space.
pub const PM_BASE: u16 = 0x600;
/// Ports the device decodes from [`PM_BASE`] (through the end of GPE0_BLK).
pub const PM_IO_LEN: u16 = 0x24;
/// PM1a_EVT_BLK: PM1_STS, PM1_EN.
pub const PM1A_EVT_BLK: u16 = 0x600;
/// PM1_EVT_LEN in the FADT.
pub const PM1_EVT_LEN: u8 = 4;
/// PM1a_CNT_BLK: PM1_CNT.
pub const PM1A_CNT_BLK: u16 = 0x604;
/// PM1_CNT_LEN in the FADT.
pub const PM1_CNT_LEN: u8 = 2;
/// PM_TMR_BLK: the PM timer.
pub const PM_TMR_BLK: u16 = 0x608;
/// PM_TMR_LEN in the FADT.
pub const PM_TMR_LEN: u8 = 4;
/// GPE0_BLK: GPE0_STS, GPE0_EN.
pub const GPE0_BLK: u16 = 0x620;
/// GPE0_BLK_LEN in the FADT.
pub const GPE0_BLK_LEN: u8 = 4;
/// SCI_INT in the FADT: the ISA IRQ (and GSI) of the SCI, level-triggered active high.
pub const SCI_IRQ: u8 = 9;
/// The PM timer's frequency, Hz.
pub const PM_TIMER_HZ: u64 = 3_579_545;
/// The SLP_TYP value of S5 (soft off) on this machine, for the DSDT's `\_S5` package.
pub const SLP_TYP_S5: u8 = 0;

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

/// A register of the block, by its offset from [`PM_BASE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Register {
    Pm1Status,
    Pm1Enable,
    Pm1Control,
    Timer,
    Gpe0Status,
    Gpe0Enable,
}

/// (offset from PM_BASE, width in bytes, register).
const REGISTERS: [(u16, u16, Register); 6] = [
    (0x00, 2, Register::Pm1Status),
    (0x02, 2, Register::Pm1Enable),
    (0x04, 2, Register::Pm1Control),
    (0x08, 4, Register::Timer),
    (0x20, 2, Register::Gpe0Status),
    (0x22, 2, Register::Gpe0Enable),
];

/// The ACPI PM registers. See the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
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

    /// Read `size` bytes (1, 2 or 4; other sizes read 4) at `PM_BASE + offset`; bytes no
    /// register holds read 0xff.
    pub fn read(&mut self, offset: u16, size: u8, now: u64) -> u32 {
        self.sync(now);
        let mut value = 0u32;
        for i in 0..access_len(size) {
            let byte = match register_at(offset.wrapping_add(i)) {
                Some((register, byte)) => (self.register(register) >> (8 * byte)) as u8,
                None => 0xff,
            };
            value |= u32::from(byte) << (8 * i);
        }
        value
    }

    /// Write `size` bytes (1, 2 or 4; other sizes write 4) of `value` at `PM_BASE +
    /// offset`.
    pub fn write(&mut self, offset: u16, size: u8, value: u32, now: u64) {
        self.sync(now);
        let len = access_len(size);
        for &(start, width, register) in &REGISTERS {
            // The bytes of this register the access covers, in the register's positions.
            let mut mask = 0u32;
            let mut bits = 0u32;
            for i in 0..len {
                let at = offset.wrapping_add(i);
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
    /// its SLP_TYP (0-7; [`SLP_TYP_S5`] is soft off).
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

/// The register holding the byte at `offset`, and that byte's index in it.
fn register_at(offset: u16) -> Option<(Register, u16)> {
    REGISTERS
        .iter()
        .find(|&&(start, width, _)| (start..start + width).contains(&offset))
        .map(|&(start, _, register)| (register, offset - start))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::pit::{edge_time, Pit};

    const T0: u64 = 7_000_000_000;
    const STS: u16 = PM1A_EVT_BLK - PM_BASE;
    const EN: u16 = STS + 2;
    const CNT: u16 = PM1A_CNT_BLK - PM_BASE;
    const TMR: u16 = PM_TMR_BLK - PM_BASE;
    const GPE_STS: u16 = GPE0_BLK - PM_BASE;
    const GPE_EN: u16 = GPE_STS + 2;

    /// Machine time at which the timer has counted `ticks` since T0.
    fn at_ticks(ticks: u64) -> u64 {
        T0 + u64::try_from((u128::from(ticks) * NS_PER_SEC).div_ceil(u128::from(PM_TIMER_HZ)))
            .unwrap()
    }

    #[test]
    fn layout_matches_the_fadt_constants() {
        assert_eq!(PM_TMR_BLK, 0x608);
        assert_eq!(PM1A_EVT_BLK + u16::from(PM1_EVT_LEN), PM1A_CNT_BLK);
        assert!(PM1A_CNT_BLK + u16::from(PM1_CNT_LEN) <= PM_TMR_BLK);
        assert_eq!(GPE0_BLK + u16::from(GPE0_BLK_LEN), PM_BASE + PM_IO_LEN);
    }

    #[test]
    fn power_on_state() {
        let mut pm = AcpiPm::new(false, T0);
        assert_eq!(pm.read(STS, 2, T0), 0);
        assert_eq!(pm.read(EN, 2, T0), 0);
        assert_eq!(pm.read(CNT, 2, T0), 1);
        assert_eq!(pm.read(TMR, 4, T0), 0);
        assert_eq!(pm.read(GPE_STS, 4, T0), 0);
        assert!(!pm.sci_level());
        assert_eq!(pm.next_deadline(), None);
        assert_eq!(pm.take_sleep_request(), None);
        // Gaps between the blocks.
        assert_eq!(pm.read(0x06, 2, T0), 0xffff);
        assert_eq!(pm.read(0x0c, 4, T0), 0xffff_ffff);
        assert_eq!(pm.read(0x1f, 1, T0), 0xff);
    }

    #[test]
    fn timer_runs_at_3_579545_mhz() {
        let mut pm = AcpiPm::new(false, T0);
        assert_eq!(pm.read(TMR, 4, T0 + 1_000), 3);
        assert_eq!(pm.read(TMR, 4, at_ticks(1234) - 1), 1233);
        assert_eq!(pm.read(TMR, 4, at_ticks(1234)), 1234);
        assert_eq!(pm.read(TMR, 4, T0 + 1_000_000_000), 3_579_545);
        // Byte and word reads of the same instant agree with the dword.
        let now = T0 + 2_345_678_901;
        let dword = pm.read(TMR, 4, now);
        let bytes: u32 = (0..4).map(|i| pm.read(TMR + i, 1, now) << (8 * i)).sum();
        let words = pm.read(TMR, 2, now) | pm.read(TMR + 2, 2, now) << 16;
        assert_eq!(bytes, dword);
        assert_eq!(words, dword);
        // Writes are ignored.
        pm.write(TMR, 4, 0, now);
        assert_eq!(pm.read(TMR, 4, now), dword);
    }

    #[test]
    fn timer_wraps_at_24_bits_and_sets_tmr_sts() {
        let mut pm = AcpiPm::new(false, T0);
        assert_eq!(pm.read(TMR, 4, at_ticks(0x7f_ffff)), 0x7f_ffff);
        assert_eq!(pm.read(STS, 2, at_ticks(0x7f_ffff)), 0);
        // Bit 23 goes 0 -> 1: TMR_STS.
        assert_eq!(pm.read(TMR, 4, at_ticks(0x80_0000)), 0x80_0000);
        assert_eq!(pm.read(STS, 2, at_ticks(0x80_0000)), 1);
        pm.write(STS, 2, 1, at_ticks(0x80_0000));
        assert_eq!(pm.read(STS, 2, at_ticks(0xff_ffff)), 0);
        // Bit 23 goes 1 -> 0 at the wrap: TMR_STS again, the count restarts from 0.
        assert_eq!(pm.read(TMR, 4, at_ticks(0x100_0000)), 0);
        assert_eq!(pm.read(STS, 2, at_ticks(0x100_0000)), 1);
        assert_eq!(pm.read(TMR, 4, at_ticks(0x100_0005)), 5);
    }

    #[test]
    fn timer_32bit() {
        let mut pm = AcpiPm::new(true, T0);
        assert_eq!(pm.read(TMR, 4, at_ticks(0x100_0005)), 0x100_0005);
        assert_eq!(pm.read(STS, 2, at_ticks(0x100_0005)), 0);
        assert_eq!(pm.read(TMR, 4, at_ticks(0x8000_0000)), 0x8000_0000);
        assert_eq!(pm.read(STS, 2, at_ticks(0x8000_0000)), 1);
        assert_eq!(pm.read(TMR, 4, at_ticks(0x1_0000_0007)), 7);
        // 2^32 ticks of 3.579545 MHz: 1199.86 s per wrap.
        let wrap = at_ticks(1 << 32) - T0;
        assert_eq!(wrap / 1_000_000_000, 1199);
    }

    #[test]
    fn timer_overflow_raises_the_sci_when_enabled() {
        let mut pm = AcpiPm::new(false, T0);
        pm.write(EN, 2, u32::from(PM1_TMR), T0);
        assert_eq!(pm.read(EN, 2, T0), 1);
        assert_eq!(pm.next_deadline(), Some(at_ticks(0x80_0000)));
        pm.update(at_ticks(0x80_0000) - 1);
        assert!(!pm.sci_level());
        pm.update(at_ticks(0x80_0000));
        assert!(pm.sci_level());
        assert_eq!(pm.next_deadline(), None);
        // Write 1 to clear lowers it; the next toggle is 2^23 ticks (2.34 s) later.
        pm.write(STS, 2, u32::from(PM1_TMR), at_ticks(0x80_0000));
        assert!(!pm.sci_level());
        assert_eq!(pm.next_deadline(), Some(at_ticks(0x100_0000)));
        // Without SCI_EN: status but no SCI.
        pm.write(CNT, 2, 0, at_ticks(0x80_0000));
        pm.update(at_ticks(0x100_0000));
        assert_eq!(pm.read(STS, 2, at_ticks(0x100_0000)), 1);
        assert!(!pm.sci_level());
        assert_eq!(pm.next_deadline(), None);
    }

    #[test]
    fn huge_elapsed_time() {
        let mut pm = AcpiPm::new(true, 0);
        pm.write(EN, 2, u32::from(PM1_TMR), 0);
        let v = pm.read(TMR, 4, u64::MAX);
        let ticks = u128::from(u64::MAX) * u128::from(PM_TIMER_HZ) / NS_PER_SEC;
        assert_eq!(v, ticks as u32);
        assert!(pm.sci_level());
        pm.write(STS, 2, 0xffff, u64::MAX);
        assert_eq!(pm.next_deadline(), Some(u64::MAX));
    }

    #[test]
    fn status_is_write_one_to_clear_and_enables_mask() {
        let mut pm = AcpiPm::new(false, T0);
        pm.press_power_button(T0);
        pm.wake(T0);
        assert_eq!(pm.read(STS, 2, T0), 0x8100);
        assert!(!pm.sci_level());
        pm.write(EN, 2, 0xffff, T0);
        assert_eq!(pm.read(EN, 2, T0), 0x0521);
        assert!(pm.sci_level());
        // Writing 0 clears nothing; a byte write clears only its byte's bits.
        pm.write(STS, 2, 0, T0);
        assert_eq!(pm.read(STS, 2, T0), 0x8100);
        pm.write(STS + 1, 1, 0x80, T0);
        assert_eq!(pm.read(STS, 2, T0), 0x0100);
        assert!(pm.sci_level());
        // A dword write at PM1a_EVT_BLK: status (clear PWRBTN) and enable together.
        pm.write(STS, 4, 0x0000_0100, T0);
        assert_eq!(pm.read(STS, 4, T0), 0);
        assert!(!pm.sci_level());
    }

    #[test]
    fn gpe0_block() {
        let mut pm = AcpiPm::new(false, T0);
        pm.write(GPE_EN, 2, 0xffff, T0);
        assert_eq!(pm.read(GPE_STS, 4, T0), 0xffff_0000);
        pm.write(GPE_STS, 2, 0xffff, T0);
        assert_eq!(pm.read(GPE_STS, 2, T0), 0);
        pm.write(GPE_EN + 1, 1, 0, T0);
        assert_eq!(pm.read(GPE_EN, 2, T0), 0x00ff);
        assert!(!pm.sci_level());
    }

    /// Linux's `acpi_hw_legacy_sleep` for S5: SLP_TYP written, then SLP_TYP with SLP_EN,
    /// as 16-bit writes.
    #[test]
    fn slp_en_requests_sleep() {
        let mut pm = AcpiPm::new(false, T0);
        let control = pm.read(CNT, 2, T0);
        let typed = (control & !(7 << 10)) | u32::from(SLP_TYP_S5) << 10;
        pm.write(CNT, 2, typed, T0);
        assert_eq!(pm.take_sleep_request(), None);
        pm.write(CNT, 2, typed | u32::from(PM1_CNT_SLP_EN), T0);
        assert_eq!(pm.take_sleep_request(), Some(SLP_TYP_S5));
        assert_eq!(pm.take_sleep_request(), None);
        // SLP_EN reads 0; SLP_TYP and SCI_EN read back.
        pm.write(CNT, 2, 0x3c01 | 0x4000, T0);
        assert_eq!(pm.take_sleep_request(), Some(7));
        assert_eq!(pm.read(CNT, 2, T0), 0x1c01);
        // A byte write of the high byte alone carries SLP_TYP and SLP_EN together.
        pm.write(CNT + 1, 1, 0x24, T0);
        assert_eq!(pm.take_sleep_request(), Some(1));
        assert_eq!(pm.read(CNT, 2, T0), 0x0401);
        // A low-byte write does not request anything.
        pm.write(CNT, 1, 0xff, T0);
        assert_eq!(pm.take_sleep_request(), None);
        assert_eq!(pm.read(CNT, 2, T0), 0x0403);
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
        let v1 = pm.read(TMR, 4, now);
        while !pit.out(2, now) {
            now += 1_000;
        }
        let v2 = pm.read(TMR, 4, now);
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
                    0 => pm.write(EN, 2, x >> 8, now),
                    1 => pm.write(STS, 2, x >> 8, now),
                    2 => pm.write(CNT, 1, (x >> 8) & 1, now),
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
            let offset = ((x >> 4) as u16 % 0x30) | if x & 1 != 0 { 0xfff0 } else { 0 };
            let size = [1, 2, 4, 3, 0][(x >> 12) as usize % 5];
            if x & 2 != 0 {
                pm.read(offset, size, now);
            } else {
                pm.write(offset, size, x, now);
                pm.take_sleep_request();
            }
            if let Some(deadline) = pm.next_deadline() {
                assert!(deadline > now);
            }
        }
    }
}
