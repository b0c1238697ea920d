//! The x87, MMX and SSE register state as the backends exchange it with the core: the
//! 512-byte image FXSAVE stores (the counterpart of KVM's `struct kvm_fpu`, used by
//! [`X86Ops::fpu_state`](crate::ops::X86Ops::fpu_state) and
//! [`X86Ops::set_fpu_state`](crate::ops::X86Ops::set_fpu_state)).
//!
//! The layout is the 64-bit one FXSAVE64 uses (SDM 1 10.5.1, table 10-2): FIP and FDP
//! are full 64-bit offsets and no FCS/FDS selectors are stored.
//!
//! | bytes    | field                                                        |
//! |----------|--------------------------------------------------------------|
//! | 0-1      | FCW, the x87 control word                                    |
//! | 2-3      | FSW, the x87 status word                                     |
//! | 4        | abridged FTW: bit i set when physical register i is not empty |
//! | 6-7      | FOP, the last x87 opcode (11 bits)                           |
//! | 8-15     | FIP, the last x87 instruction's address                      |
//! | 16-23    | FDP, the last x87 memory operand's address                   |
//! | 24-27    | MXCSR                                                        |
//! | 28-31    | MXCSR_MASK: the MXCSR bits the processor supports            |
//! | 32-159   | ST0-ST7 (= MM0-MM7 in their low 64 bits), 16 bytes apart     |
//! | 160-415  | XMM0-XMM15                                                   |
//! | 416-511  | reserved (464-511 are left to software)                      |
//!
//! The reset state ([`FxsaveArea::reset`]) is the SDM's power-on state (3A table 10-1):
//! FCW 0x0040, FSW 0, every register tagged valid and zero, FOP/FIP/FDP 0, MXCSR 0x1F80
//! (all SIMD exceptions masked, round to nearest). The emulator resets to the same, so
//! a differential run sees one state. (KVM gives a new vCPU the FNINIT state instead,
//! FCW 0x037F with every register empty; INIT leaves the state alone.)

use core::fmt;

/// A 512-byte FXSAVE image in the 64-bit layout (see the [module documentation](self)).
///
/// 16-byte aligned, as FXSAVE and FXRSTOR require of their operand, so a backend can
/// hand it to the instructions directly.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(C, align(16))]
#[derive(serde::Serialize, serde::Deserialize)]
pub struct FxsaveArea(#[serde(with = "crate::snapshot::codec::byte_array")] pub [u8; 512]);

/// Byte offsets of the fields.
const FCW: usize = 0;
const FSW: usize = 2;
const FTW: usize = 4;
const FOP: usize = 6;
const FIP: usize = 8;
const FDP: usize = 16;
const MXCSR: usize = 24;
const MXCSR_MASK: usize = 28;
const ST0: usize = 32;
const XMM0: usize = 160;

impl FxsaveArea {
    /// The size of the image in bytes.
    pub const SIZE: usize = 512;
    /// FCW after power-on: every x87 exception unmasked, 24-bit precision, round to
    /// nearest (SDM 3A table 10-1).
    pub const RESET_FCW: u16 = 0x0040;
    /// The abridged tag word after power-on: every register valid.
    pub const RESET_FTW: u8 = 0xff;
    /// MXCSR after reset: every SIMD exception masked, round to nearest.
    pub const RESET_MXCSR: u32 = 0x1f80;
    /// The MXCSR_MASK to assume when an FXSAVE image stores 0 there: the processor
    /// predates the field, and supports every bit of the low 16 but DAZ (bit 6)
    /// (SDM 1 11.6.6).
    pub const DEFAULT_MXCSR_MASK: u32 = 0xffbf;

    /// An image of all zeros (not a valid reset state: FCW 0 unmasks every x87
    /// exception and MXCSR 0 every SIMD one).
    pub const fn zeroed() -> FxsaveArea {
        FxsaveArea([0; 512])
    }

    /// The reset state: FCW 0x037F, MXCSR 0x1F80, everything else zero (an abridged
    /// tag word of 0 marks every register empty). MXCSR_MASK is 0; loading ignores it.
    pub const fn reset() -> FxsaveArea {
        let mut b = [0u8; 512];
        let fcw = Self::RESET_FCW.to_le_bytes();
        b[FCW] = fcw[0];
        b[FCW + 1] = fcw[1];
        b[FTW] = Self::RESET_FTW;
        let mxcsr = Self::RESET_MXCSR.to_le_bytes();
        b[MXCSR] = mxcsr[0];
        b[MXCSR + 1] = mxcsr[1];
        b[MXCSR + 2] = mxcsr[2];
        b[MXCSR + 3] = mxcsr[3];
        FxsaveArea(b)
    }

    /// The raw image.
    pub fn as_bytes(&self) -> &[u8; 512] {
        &self.0
    }

    /// The raw image, writable.
    pub fn as_bytes_mut(&mut self) -> &mut [u8; 512] {
        &mut self.0
    }

    fn u16_at(&self, at: usize) -> u16 {
        u16::from_le_bytes([self.0[at], self.0[at + 1]])
    }

    fn u32_at(&self, at: usize) -> u32 {
        u32::from_le_bytes([self.0[at], self.0[at + 1], self.0[at + 2], self.0[at + 3]])
    }

    fn u64_at(&self, at: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[at..at + 8]);
        u64::from_le_bytes(b)
    }

    fn put(&mut self, at: usize, bytes: &[u8]) {
        self.0[at..at + bytes.len()].copy_from_slice(bytes);
    }

    /// FCW, the x87 control word.
    pub fn fcw(&self) -> u16 {
        self.u16_at(FCW)
    }
    /// Set FCW.
    pub fn set_fcw(&mut self, fcw: u16) {
        self.put(FCW, &fcw.to_le_bytes());
    }

    /// FSW, the x87 status word (TOP in bits 11-13).
    pub fn fsw(&self) -> u16 {
        self.u16_at(FSW)
    }
    /// Set FSW.
    pub fn set_fsw(&mut self, fsw: u16) {
        self.put(FSW, &fsw.to_le_bytes());
    }

    /// The abridged tag word: bit i set when physical register i (not ST(i)) holds a
    /// value, clear when it is empty.
    pub fn ftw(&self) -> u8 {
        self.0[FTW]
    }
    /// Set the abridged tag word.
    pub fn set_ftw(&mut self, ftw: u8) {
        self.0[FTW] = ftw;
    }

    /// FOP, the opcode of the last non-control x87 instruction (11 bits).
    pub fn fop(&self) -> u16 {
        self.u16_at(FOP)
    }
    /// Set FOP.
    pub fn set_fop(&mut self, fop: u16) {
        self.put(FOP, &fop.to_le_bytes());
    }

    /// FIP, the address of the last non-control x87 instruction (64-bit layout).
    pub fn fip(&self) -> u64 {
        self.u64_at(FIP)
    }
    /// Set FIP.
    pub fn set_fip(&mut self, fip: u64) {
        self.put(FIP, &fip.to_le_bytes());
    }

    /// FDP, the address of the last x87 memory operand (64-bit layout).
    pub fn fdp(&self) -> u64 {
        self.u64_at(FDP)
    }
    /// Set FDP.
    pub fn set_fdp(&mut self, fdp: u64) {
        self.put(FDP, &fdp.to_le_bytes());
    }

    /// MXCSR, the SSE control and status register.
    pub fn mxcsr(&self) -> u32 {
        self.u32_at(MXCSR)
    }
    /// Set MXCSR.
    pub fn set_mxcsr(&mut self, mxcsr: u32) {
        self.put(MXCSR, &mxcsr.to_le_bytes());
    }

    /// MXCSR_MASK as stored by FXSAVE: the MXCSR bits the processor supports, or 0 on
    /// processors that predate the field (see [`FxsaveArea::effective_mxcsr_mask`]).
    /// FXRSTOR ignores it.
    pub fn mxcsr_mask(&self) -> u32 {
        self.u32_at(MXCSR_MASK)
    }
    /// Set MXCSR_MASK.
    pub fn set_mxcsr_mask(&mut self, mask: u32) {
        self.put(MXCSR_MASK, &mask.to_le_bytes());
    }

    /// The MXCSR bits the processor that stored this image supports: MXCSR_MASK, or
    /// [`FxsaveArea::DEFAULT_MXCSR_MASK`] when that is 0.
    pub fn effective_mxcsr_mask(&self) -> u32 {
        match self.mxcsr_mask() {
            0 => Self::DEFAULT_MXCSR_MASK,
            mask => mask,
        }
    }

    /// ST(`n`) (stack order: ST0 is the register TOP points at), the 80-bit value;
    /// MM`n` is its low 64 bits.
    ///
    /// # Panics
    ///
    /// When `n` is 8 or more.
    pub fn st(&self, n: usize) -> [u8; 10] {
        assert!(n < 8, "there are eight x87 registers");
        let mut r = [0u8; 10];
        r.copy_from_slice(&self.0[ST0 + 16 * n..ST0 + 16 * n + 10]);
        r
    }
    /// Set ST(`n`) (the six bytes after it in the image stay as they are).
    ///
    /// # Panics
    ///
    /// When `n` is 8 or more.
    pub fn set_st(&mut self, n: usize, value: [u8; 10]) {
        assert!(n < 8, "there are eight x87 registers");
        self.put(ST0 + 16 * n, &value);
    }

    /// MMX register `n`: the low 64 bits of ST(`n`) in the image.
    ///
    /// # Panics
    ///
    /// When `n` is 8 or more.
    pub fn mm(&self, n: usize) -> u64 {
        assert!(n < 8, "there are eight MMX registers");
        self.u64_at(ST0 + 16 * n)
    }

    /// XMM register `n`.
    ///
    /// # Panics
    ///
    /// When `n` is 16 or more.
    pub fn xmm(&self, n: usize) -> u128 {
        assert!(n < 16, "there are sixteen XMM registers");
        let mut b = [0u8; 16];
        b.copy_from_slice(&self.0[XMM0 + 16 * n..XMM0 + 16 * n + 16]);
        u128::from_le_bytes(b)
    }
    /// Set XMM register `n`.
    ///
    /// # Panics
    ///
    /// When `n` is 16 or more.
    pub fn set_xmm(&mut self, n: usize, value: u128) {
        assert!(n < 16, "there are sixteen XMM registers");
        self.put(XMM0 + 16 * n, &value.to_le_bytes());
    }

    /// Whether a processor whose MXCSR_MASK is `mask` would load this image: FXRSTOR
    /// raises #GP(0) when MXCSR sets a bit outside the mask. `mask` of 0 means
    /// [`FxsaveArea::DEFAULT_MXCSR_MASK`], as in an FXSAVE image.
    pub fn check_mxcsr(&self, mask: u32) -> Result<(), FpuStateError> {
        let mask = if mask == 0 {
            Self::DEFAULT_MXCSR_MASK
        } else {
            mask
        };
        let mxcsr = self.mxcsr();
        if mxcsr & !mask != 0 {
            return Err(FpuStateError::ReservedMxcsrBits { mxcsr, mask });
        }
        Ok(())
    }
}

impl Default for FxsaveArea {
    /// The reset state ([`FxsaveArea::reset`]).
    fn default() -> Self {
        FxsaveArea::reset()
    }
}

impl fmt::Debug for FxsaveArea {
    // The control and status words; the 512 raw bytes would drown them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FxsaveArea")
            .field("fcw", &format_args!("{:#06x}", self.fcw()))
            .field("fsw", &format_args!("{:#06x}", self.fsw()))
            .field("ftw", &format_args!("{:#04x}", self.ftw()))
            .field("mxcsr", &format_args!("{:#010x}", self.mxcsr()))
            .finish_non_exhaustive()
    }
}

/// Why a backend did not load an FXSAVE image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FpuStateError {
    /// The backend does not hold the guest's x87/SSE state.
    Unsupported,
    /// MXCSR sets bits this processor reserves; FXRSTOR would raise #GP(0).
    ReservedMxcsrBits {
        /// The refused MXCSR.
        mxcsr: u32,
        /// The bits the processor supports (its MXCSR_MASK).
        mask: u32,
    },
}

impl fmt::Display for FpuStateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FpuStateError::Unsupported => {
                write!(f, "this backend does not hold the x87/SSE state")
            }
            FpuStateError::ReservedMxcsrBits { mxcsr, mask } => write!(
                f,
                "MXCSR {mxcsr:#x} sets reserved bits {:#x} (MXCSR_MASK {mask:#x})",
                mxcsr & !mask
            ),
        }
    }
}

impl core::error::Error for FpuStateError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_512_bytes_aligned_to_16() {
        assert_eq!(core::mem::size_of::<FxsaveArea>(), FxsaveArea::SIZE);
        assert_eq!(core::mem::align_of::<FxsaveArea>(), 16);
    }

    #[test]
    fn reset_state() {
        let r = FxsaveArea::reset();
        assert_eq!(r.fcw(), 0x0040);
        assert_eq!(r.fsw(), 0);
        assert_eq!(r.ftw(), 0xff);
        assert_eq!(r.mxcsr(), 0x1f80);
        assert_eq!((r.fop(), r.fip(), r.fdp(), r.mxcsr_mask()), (0, 0, 0, 0));
        for n in 0..8 {
            assert_eq!(r.st(n), [0; 10]);
        }
        for n in 0..16 {
            assert_eq!(r.xmm(n), 0);
        }
        // Only FCW and MXCSR are non-zero bytes.
        let nonzero: usize = r.0.iter().filter(|&&b| b != 0).count();
        assert_eq!(nonzero, 4); // 7f 03, 80 1f
        assert_eq!(FxsaveArea::default(), r);
        assert_ne!(FxsaveArea::zeroed(), r);
    }

    #[test]
    fn accessors_hit_the_sdm_offsets() {
        let mut a = FxsaveArea::zeroed();
        a.set_fcw(0x1234);
        a.set_fsw(0x5678);
        a.set_ftw(0x9a);
        a.set_fop(0x07bc);
        a.set_fip(0x1122_3344_5566_7788);
        a.set_fdp(0x99aa_bbcc_ddee_ff00);
        a.set_mxcsr(0x0000_ffc0);
        a.set_mxcsr_mask(0x0002_ffff);
        let b = a.as_bytes();
        assert_eq!(&b[0..4], &[0x34, 0x12, 0x78, 0x56]);
        assert_eq!((b[4], b[5]), (0x9a, 0));
        assert_eq!(&b[6..8], &[0xbc, 0x07]);
        assert_eq!(&b[8..16], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(&b[16..24], &0x99aa_bbcc_ddee_ff00u64.to_le_bytes());
        assert_eq!(&b[24..28], &[0xc0, 0xff, 0, 0]);
        assert_eq!(&b[28..32], &[0xff, 0xff, 0x02, 0]);
        assert_eq!(a.fcw(), 0x1234);
        assert_eq!(a.fsw(), 0x5678);
        assert_eq!(a.ftw(), 0x9a);
        assert_eq!(a.fop(), 0x07bc);
        assert_eq!(a.fip(), 0x1122_3344_5566_7788);
        assert_eq!(a.fdp(), 0x99aa_bbcc_ddee_ff00);
        assert_eq!(a.mxcsr(), 0xffc0);
        assert_eq!(a.mxcsr_mask(), 0x2_ffff);
    }

    #[test]
    fn registers_hit_the_sdm_offsets() {
        let mut a = FxsaveArea::zeroed();
        for n in 0..8 {
            let v: [u8; 10] = core::array::from_fn(|i| (n * 16 + i + 1) as u8);
            a.set_st(n, v);
            assert_eq!(&a.0[32 + 16 * n..42 + 16 * n], &v);
            assert_eq!(a.st(n), v);
            let mut low = [0u8; 8];
            low.copy_from_slice(&v[..8]);
            assert_eq!(a.mm(n), u64::from_le_bytes(low));
            // The six bytes after each register are untouched.
            assert_eq!(&a.0[42 + 16 * n..48 + 16 * n], &[0; 6]);
        }
        for n in 0..16 {
            let v = 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10u128.wrapping_mul(n as u128 + 1);
            a.set_xmm(n, v);
            assert_eq!(&a.0[160 + 16 * n..176 + 16 * n], &v.to_le_bytes());
            assert_eq!(a.xmm(n), v);
        }
        // Nothing past XMM15 was written.
        assert!(a.0[416..].iter().all(|&b| b == 0));
    }

    #[test]
    #[should_panic]
    fn xmm16_does_not_exist() {
        let _ = FxsaveArea::zeroed().xmm(16);
    }

    #[test]
    #[should_panic]
    fn st8_does_not_exist() {
        let _ = FxsaveArea::zeroed().st(8);
    }

    #[test]
    fn mxcsr_is_checked_against_the_mask() {
        let mut a = FxsaveArea::reset();
        assert_eq!(a.check_mxcsr(0xffff), Ok(()));
        a.set_mxcsr(0x1f80 | 0x40); // DAZ
        assert_eq!(a.check_mxcsr(0xffff), Ok(()));
        // A zero mask is the SDM's default, which lacks DAZ.
        assert_eq!(
            a.check_mxcsr(0),
            Err(FpuStateError::ReservedMxcsrBits {
                mxcsr: 0x1fc0,
                mask: 0xffbf
            })
        );
        a.set_mxcsr(0x1_1f80);
        assert!(matches!(
            a.check_mxcsr(0xffff),
            Err(FpuStateError::ReservedMxcsrBits {
                mxcsr: 0x1_1f80,
                ..
            })
        ));
        a.set_mxcsr_mask(0);
        assert_eq!(a.effective_mxcsr_mask(), 0xffbf);
        a.set_mxcsr_mask(0xffff);
        assert_eq!(a.effective_mxcsr_mask(), 0xffff);
    }
}
