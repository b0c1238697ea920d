//! The x87, MMX and SSE register state, the checks every floating-point and SIMD
//! instruction makes before it runs (CR0.EM/TS, CR4.OSFXSR, pending x87 exceptions), and
//! wide memory accesses (16 bytes and up: XMM operands, FXSAVE, FSAVE) that either
//! complete or fault before writing anything.
//!
//! The state is kept as the FXSAVE image stores it (SDM 1 10.5.1): the x87 registers by
//! physical number, the abridged tag word (one bit per physical register, 1 = not
//! empty). The full two-bit tags FSTENV/FSAVE store are derived from the register
//! contents when needed, as the hardware does.

use crate::cpu::{cr0, cr4, Cpu};
use crate::exception::{fault, Ex, GP, MF, NM};
use opsvisor_core::mmu::memory::GuestMemory;

/// MXCSR bits.
pub mod mxcsr {
    /// Exception flags (IE DE ZE OE UE PE), bits 0-5.
    pub const FLAGS: u32 = 0x3f;
    /// Denormals are zeros.
    pub const DAZ: u32 = 1 << 6;
    /// Exception masks (IM DM ZM OM UM PM), bits 7-12.
    pub const MASKS: u32 = 0x3f << 7;
    /// Rounding control, bits 13-14.
    pub const RC_SHIFT: u32 = 13;
    /// Flush to zero.
    pub const FTZ: u32 = 1 << 15;
    /// The bits software may set (MXCSR_MASK in the FXSAVE image); others are reserved
    /// and LDMXCSR/FXRSTOR with them set raise #GP(0).
    pub const WRITABLE: u32 = 0xffff;
    /// The reset value: all exceptions masked, round to nearest.
    pub const DEFAULT: u32 = 0x1f80;
}

/// x87 status word bits.
pub mod fsw {
    /// Exception flags (IE DE ZE OE UE PE), bits 0-5.
    pub const FLAGS: u16 = 0x3f;
    /// Stack fault (with IE: stack overflow or underflow).
    pub const SF: u16 = 1 << 6;
    /// Exception summary: an unmasked exception is pending.
    pub const ES: u16 = 1 << 7;
    /// Condition code C0.
    pub const C0: u16 = 1 << 8;
    /// Condition code C1.
    pub const C1: u16 = 1 << 9;
    /// Condition code C2.
    pub const C2: u16 = 1 << 10;
    /// TOP, bits 11-13.
    pub const TOP_SHIFT: u16 = 11;
    /// TOP field mask.
    pub const TOP: u16 = 7 << 11;
    /// Condition code C3.
    pub const C3: u16 = 1 << 14;
    /// Busy (mirrors ES).
    pub const B: u16 = 1 << 15;
}

/// x87 control word bits.
pub mod fcw {
    /// Exception masks (IM DM ZM OM UM PM), bits 0-5.
    pub const MASKS: u16 = 0x3f;
    /// Precision control, bits 8-9 (0 = 24-bit, 2 = 53-bit, 3 = 64-bit significand).
    pub const PC_SHIFT: u16 = 8;
    /// Rounding control, bits 10-11.
    pub const RC_SHIFT: u16 = 10;
    /// The FNINIT value.
    pub const DEFAULT: u16 = 0x037f;
}

/// The x87 register stack and its environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct X87 {
    /// Control word.
    pub fcw: u16,
    /// Status word (TOP in bits 11-13).
    pub fsw: u16,
    /// Abridged tag word: bit i set when physical register i is not empty.
    pub ftw: u8,
    /// Last non-control instruction's opcode (11 bits).
    pub fop: u16,
    /// Last non-control instruction's address (offset; in 64-bit mode the full RIP).
    pub fip: u64,
    /// Its code segment selector.
    pub fcs: u16,
    /// Last memory operand's address.
    pub fdp: u64,
    /// Its data segment selector.
    pub fds: u16,
    /// The eight 80-bit registers by physical number (R0..R7), in the low 80 bits.
    pub regs: [u128; 8],
}

impl Default for X87 {
    fn default() -> Self {
        X87 {
            fcw: fcw::DEFAULT,
            fsw: 0,
            ftw: 0,
            fop: 0,
            fip: 0,
            fcs: 0,
            fdp: 0,
            fds: 0,
            regs: [0; 8],
        }
    }
}

impl X87 {
    /// TOP: the physical register that is ST(0).
    #[inline]
    pub fn top(&self) -> usize {
        usize::from((self.fsw & fsw::TOP) >> fsw::TOP_SHIFT)
    }

    /// Set TOP.
    #[inline]
    pub fn set_top(&mut self, top: usize) {
        self.fsw = (self.fsw & !fsw::TOP) | (((top & 7) as u16) << fsw::TOP_SHIFT);
    }

    /// The physical register number of ST(i).
    #[inline]
    pub fn phys(&self, i: usize) -> usize {
        (self.top() + i) & 7
    }
}

/// The FPU/SIMD state of the vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fpu {
    /// x87 (and, aliased onto its registers, MMX).
    pub x87: X87,
    /// XMM0..XMM15.
    pub xmm: [u128; 16],
    /// MXCSR.
    pub mxcsr: u32,
}

impl Default for Fpu {
    fn default() -> Self {
        Fpu {
            x87: X87::default(),
            xmm: [0; 16],
            mxcsr: mxcsr::DEFAULT,
        }
    }
}

/// Why an FXSAVE image cannot be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReservedMxcsrBits(pub u32);

impl Fpu {
    /// MMX register `n` (the significand of physical x87 register `n`).
    #[inline]
    pub fn mm(&self, n: usize) -> u64 {
        self.x87.regs[n & 7] as u64
    }

    /// Write MMX register `n`: the significand takes the value, the exponent and sign
    /// become all ones, and the x87 stack enters MMX state (TOP = 0, every tag valid).
    #[inline]
    pub fn set_mm(&mut self, n: usize, v: u64) {
        self.x87.regs[n & 7] = u128::from(v) | (0xffffu128 << 64);
        self.enter_mmx();
    }

    /// The x87 side effects of any MMX instruction other than EMMS: TOP = 0 and all
    /// registers tagged valid.
    #[inline]
    pub fn enter_mmx(&mut self) {
        self.x87.set_top(0);
        self.x87.ftw = 0xff;
    }

    /// The 512-byte FXSAVE image in its 64-bit layout (FIP and FDP as 64-bit offsets,
    /// the form FXSAVE64 stores). `xmm_count` registers are stored (8 outside 64-bit
    /// mode); the rest of the image is left as given.
    pub fn fxsave_into(&self, f: &mut [u8; 512], xmm_count: usize) {
        let x = &self.x87;
        f[0..2].copy_from_slice(&x.fcw.to_le_bytes());
        f[2..4].copy_from_slice(&x.fsw.to_le_bytes());
        f[4] = x.ftw;
        f[5] = 0;
        f[6..8].copy_from_slice(&(x.fop & 0x7ff).to_le_bytes());
        f[8..16].copy_from_slice(&x.fip.to_le_bytes());
        f[16..24].copy_from_slice(&x.fdp.to_le_bytes());
        f[24..28].copy_from_slice(&self.mxcsr.to_le_bytes());
        f[28..32].copy_from_slice(&mxcsr::WRITABLE.to_le_bytes());
        // The register area is in stack order, ST(0) first; the tag bits are physical.
        for i in 0..8 {
            let at = 32 + 16 * i;
            let r = x.regs[x.phys(i)];
            f[at..at + 10].copy_from_slice(&r.to_le_bytes()[..10]);
            f[at + 10..at + 16].fill(0);
        }
        for (i, v) in self.xmm.iter().enumerate().take(xmm_count.min(16)) {
            let at = 160 + 16 * i;
            f[at..at + 16].copy_from_slice(&v.to_le_bytes());
        }
    }

    /// The 512-byte FXSAVE image of the whole state (64-bit layout, all 16 XMM
    /// registers, reserved areas zero).
    pub fn fxsave(&self) -> [u8; 512] {
        let mut f = [0u8; 512];
        self.fxsave_into(&mut f, 16);
        f
    }

    /// Load the state from an FXSAVE image (64-bit layout); `xmm_count` registers are
    /// loaded. MXCSR with reserved bits set is refused and nothing changes.
    pub fn fxrstor(&mut self, f: &[u8; 512], xmm_count: usize) -> Result<(), ReservedMxcsrBits> {
        let u16_at = |at: usize| u16::from_le_bytes([f[at], f[at + 1]]);
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&f[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let m = u32::from_le_bytes([f[24], f[25], f[26], f[27]]);
        if m & !mxcsr::WRITABLE != 0 {
            return Err(ReservedMxcsrBits(m));
        }
        self.mxcsr = m;
        let x = &mut self.x87;
        x.fcw = u16_at(0);
        x.fsw = u16_at(2);
        x.ftw = f[4];
        x.fop = u16_at(6) & 0x7ff;
        x.fip = u64_at(8);
        x.fdp = u64_at(16);
        for i in 0..8 {
            let mut b = [0u8; 16];
            b[..10].copy_from_slice(&f[32 + 16 * i..42 + 16 * i]);
            let p = x.phys(i);
            x.regs[p] = u128::from_le_bytes(b);
        }
        for (i, v) in self.xmm.iter_mut().enumerate().take(xmm_count.min(16)) {
            let mut b = [0u8; 16];
            b.copy_from_slice(&f[160 + 16 * i..176 + 16 * i]);
            *v = u128::from_le_bytes(b);
        }
        Ok(())
    }
}

impl Cpu {
    /// The checks of an SSE instruction (and of FXSAVE/FXRSTOR, LDMXCSR/STMXCSR): #UD
    /// when CR0.EM is set or CR4.OSFXSR is clear, #NM when CR0.TS is set.
    #[inline]
    pub fn sse_check(&self) -> Result<(), Ex> {
        if self.cr0 & cr0::EM != 0 || self.cr4 & cr4::OSFXSR == 0 {
            return Err(crate::exception::ud());
        }
        if self.cr0 & cr0::TS != 0 {
            return Err(fault(NM));
        }
        Ok(())
    }

    /// The checks of an x87 instruction: #NM when CR0.EM or CR0.TS is set. (A pending
    /// unmasked x87 exception is checked by the waiting instructions themselves, see
    /// [`Cpu::x87_pending_check`].)
    #[inline]
    pub fn x87_check(&self) -> Result<(), Ex> {
        if self.cr0 & (cr0::EM | cr0::TS) != 0 {
            return Err(fault(NM));
        }
        Ok(())
    }

    /// #MF when an unmasked x87 exception is pending (FSW.ES), for the waiting x87
    /// instructions, WAIT/FWAIT and MMX instructions. With CR0.NE clear the PC reports
    /// the error through the FERR# pin and an external interrupt instead; the emulated
    /// machine has no such wiring, so #MF is raised either way.
    #[inline]
    pub fn x87_pending_check(&self) -> Result<(), Ex> {
        if self.fpu.x87.fsw & fsw::ES != 0 {
            return Err(fault(MF));
        }
        Ok(())
    }

    /// The checks of an MMX instruction: #UD when CR0.EM is set, #NM when CR0.TS is set,
    /// #MF when an unmasked x87 exception is pending.
    #[inline]
    pub fn mmx_check(&self) -> Result<(), Ex> {
        if self.cr0 & cr0::EM != 0 {
            return Err(crate::exception::ud());
        }
        if self.cr0 & cr0::TS != 0 {
            return Err(fault(NM));
        }
        self.x87_pending_check()
    }

    /// Read `out.len()` bytes at `seg:ea`. Every byte is checked (segment limit, paging)
    /// before the result is used; reads have no side effects, so a fault part-way
    /// leaves nothing behind.
    pub fn rd_bytes(
        &mut self,
        mem: &mut GuestMemory,
        seg: u8,
        ea: u64,
        out: &mut [u8],
    ) -> Result<(), Ex> {
        let mut off = 0usize;
        while off < out.len() {
            let n = chunk(out.len() - off);
            let v = self.rd(mem, seg, ea.wrapping_add(off as u64), n as u32)?;
            out[off..off + n].copy_from_slice(&v.to_le_bytes()[..n]);
            off += n;
        }
        Ok(())
    }

    /// Write `data` at `seg:ea`, all or nothing: the first and last bytes (and so every
    /// page in between, for the at most 512-byte accesses this serves) are checked for
    /// writing before the first byte is stored.
    pub fn wr_bytes(
        &mut self,
        mem: &mut GuestMemory,
        seg: u8,
        ea: u64,
        data: &[u8],
    ) -> Result<(), Ex> {
        let len = data.len() as u64;
        if len == 0 {
            return Ok(());
        }
        // Segment check over the whole range, then paging for each page touched.
        let last = ea.wrapping_add(len - 1);
        self.linear(seg, ea, data.len().min(u32::MAX as usize) as u32, true)?;
        let mut page_ea = ea;
        loop {
            self.probe_write(mem, seg, page_ea, 1)?;
            let next = (page_ea | 0xfff).wrapping_add(1);
            if next.wrapping_sub(ea) >= len || next == 0 {
                break;
            }
            page_ea = next;
        }
        self.probe_write(mem, seg, last, 1)?;
        let mut off = 0usize;
        while off < data.len() {
            let n = chunk(data.len() - off);
            let mut b = [0u8; 8];
            b[..n].copy_from_slice(&data[off..off + n]);
            self.wr(
                mem,
                seg,
                ea.wrapping_add(off as u64),
                n as u32,
                u64::from_le_bytes(b),
            )?;
            off += n;
        }
        Ok(())
    }

    /// Read a 16-byte memory operand; `aligned` forms raise #GP(0) when the address is
    /// not 16-byte aligned (the legacy SSE rule for most 128-bit memory operands; the
    /// alignment is that of the linear address).
    pub fn rd_m128(
        &mut self,
        mem: &mut GuestMemory,
        seg: u8,
        ea: u64,
        aligned: bool,
    ) -> Result<u128, Ex> {
        if aligned && self.linear(seg, ea, 16, false)? & 15 != 0 {
            return Err(GP(0));
        }
        let mut b = [0u8; 16];
        self.rd_bytes(mem, seg, ea, &mut b)?;
        Ok(u128::from_le_bytes(b))
    }

    /// Write a 16-byte memory operand (see [`Cpu::rd_m128`] for `aligned`).
    pub fn wr_m128(
        &mut self,
        mem: &mut GuestMemory,
        seg: u8,
        ea: u64,
        v: u128,
        aligned: bool,
    ) -> Result<(), Ex> {
        if aligned && self.linear(seg, ea, 16, true)? & 15 != 0 {
            return Err(GP(0));
        }
        self.wr_bytes(mem, seg, ea, &v.to_le_bytes())
    }
}

/// The largest access size (8, 4, 2 or 1) not above `left`.
fn chunk(left: usize) -> usize {
    if left >= 8 {
        8
    } else if left >= 4 {
        4
    } else if left >= 2 {
        2
    } else {
        1
    }
}
