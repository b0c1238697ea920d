//! The XSAVE feature set for the state components the emulator has, x87 (XCR0 bit 0) and
//! SSE (bit 1): XGETBV, XSETBV (an exit: the core checks the value against the CPU
//! model), XSAVE, XSAVEOPT, XSAVEC and XRSTOR in the standard and compacted formats, each
//! with its REX.W form (SDM 1 chapter 13).
//!
//! The rules the handlers follow:
//!
//! - #UD without CR4.OSXSAVE (and, for XSAVEOPT and XSAVEC, without their CPUID bit in the
//!   model); #NM with CR0.TS for the save and restore instructions; #GP(0) unless the area
//!   is 64-byte aligned. XGETBV reads XCR0 (ECX 0) at any privilege level; other ECX
//!   values are #GP(0) (the model does not report XGETBV with ECX 1).
//! - The requested-feature bitmap RFBM is EDX:EAX AND XCR0.
//! - XINUSE, which component is not in its initial configuration, is computed from the
//!   state (x87: FCW 037FH, FSW, FTW, FOP, FIP, FDP, FCS, FDS and every register zero; SSE:
//!   every XMM register zero and MXCSR 1F80H), which is what a processor that tracks
//!   the state exactly reports (SDM 1 13.6 lets it report 1 for an initial component).
//! - XSAVE writes every component of RFBM and XSTATE_BV[i] = XINUSE[i] for them; MXCSR
//!   and MXCSR_MASK are written whenever RFBM has SSE. XSAVEOPT applies the init
//!   optimisation (a component not in use is not written; its XSTATE_BV bit is cleared)
//!   but not the modified optimisation, which the architecture leaves optional. XSAVEC
//!   writes the components in use, XSTATE_BV = XINUSE AND RFBM and XCOMP_BV =
//!   bit 63 | RFBM; for x87 and SSE the compacted layout is the legacy region's.
//! - XRSTOR checks the header before it changes anything: in the standard format
//!   (XCOMP_BV bit 63 clear) XSTATE_BV within XCR0 and header bytes 8-23 zero; in the
//!   compacted format XCOMP_BV[62:0] within XCR0, XSTATE_BV within XCOMP_BV and header
//!   bytes 16-63 zero; a reserved MXCSR bit in a value to be loaded is #GP(0) too. A
//!   component of RFBM whose XSTATE_BV bit is set is loaded, one whose bit is clear takes
//!   its initial configuration; in the standard format MXCSR is loaded whenever RFBM has
//!   SSE, in the compacted format only with the SSE component.
//! - Outside 64-bit mode XMM0-7 only; without REX.W the x87 pointers are stored and
//!   loaded as 32-bit offsets with their selectors, as FXSAVE does.

use crate::cpu::{cr0, cr4, Cpu, InterceptKind};
use crate::decode::{Handler, Op};
use crate::exception::{fault, ud, Ex, GP, NM};
use crate::exec::ea;
use crate::exec::system::intercept;
use crate::fpu::{mxcsr, Fpu};
use iced_x86::Code;
use opsvisor_core::arch::{XCR0_SSE, XCR0_X87, XSAVE_LEGACY_AND_HEADER};
use opsvisor_core::exit::Exit;
use opsvisor_core::mmu::memory::GuestMemory;

/// The size of the area the emulator's components occupy, in either format.
const AREA: usize = XSAVE_LEGACY_AND_HEADER as usize;
/// XSTATE_BV's offset in the area (the header follows the 512-byte legacy region).
const XSTATE_BV: usize = 512;
/// XCOMP_BV's offset.
const XCOMP_BV: usize = 520;
/// XCOMP_BV bit 63: the area is in the compacted format.
const COMPACTED: u64 = 1 << 63;

/// The handler for `code` if it is one of the XSAVE family.
pub fn select(code: Code) -> Option<Handler> {
    Some(match code {
        Code::Xgetbv => xgetbv,
        Code::Xsetbv => xsetbv,
        Code::Xsave_mem => save::<false, { Kind::Standard as u8 }>,
        Code::Xsave64_mem => save::<true, { Kind::Standard as u8 }>,
        Code::Xsaveopt_mem => save::<false, { Kind::Optimised as u8 }>,
        Code::Xsaveopt64_mem => save::<true, { Kind::Optimised as u8 }>,
        Code::Xsavec_mem => save::<false, { Kind::Compacted as u8 }>,
        Code::Xsavec64_mem => save::<true, { Kind::Compacted as u8 }>,
        Code::Xrstor_mem => xrstor::<false>,
        Code::Xrstor64_mem => xrstor::<true>,
        _ => return None,
    })
}

/// Which save instruction.
#[repr(u8)]
enum Kind {
    /// XSAVE.
    Standard,
    /// XSAVEOPT.
    Optimised,
    /// XSAVEC.
    Compacted,
}

/// The components of `fpu` not in their initial configuration (XINUSE).
pub fn xinuse(fpu: &Fpu) -> u64 {
    let x = &fpu.x87;
    let x87_init = x.fcw == crate::fpu::fcw::DEFAULT
        && x.fsw == 0
        && x.ftw == 0
        && x.fop == 0
        && x.fip == 0
        && x.fdp == 0
        && x.fcs == 0
        && x.fds == 0
        && x.regs.iter().all(|&r| r == 0);
    let sse_init = fpu.mxcsr == mxcsr::DEFAULT && fpu.xmm.iter().all(|&r| r == 0);
    (if x87_init { 0 } else { XCR0_X87 }) | (if sse_init { 0 } else { XCR0_SSE })
}

/// XGETBV: EDX:EAX = XCR0 (#UD without CR4.OSXSAVE, #GP(0) for any other ECX).
pub fn xgetbv(c: &mut Cpu, _: &mut GuestMemory, _: &Op) -> Result<(), Ex> {
    if c.cr4 & cr4::OSXSAVE == 0 {
        return Err(ud());
    }
    if c.gpr[1] as u32 != 0 {
        return Err(GP(0));
    }
    c.set(0, 4, c.xcr0 & 0xffff_ffff);
    c.set(2, 4, c.xcr0 >> 32);
    Ok(())
}

/// XSETBV: #UD without CR4.OSXSAVE, #GP(0) at CPL > 0; otherwise an exit, and the core
/// checks the value against the CPU model and loads it ([`opsvisor_core::X86Ops::set_xcr0`]).
pub fn xsetbv(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    if c.cr4 & cr4::OSXSAVE == 0 {
        return Err(ud());
    }
    c.require_cpl0()?;
    let index = c.gpr[1] as u32;
    let value = (c.gpr[0] & 0xffff_ffff) | (c.gpr[2] << 32);
    intercept(c, op, InterceptKind::Plain, Exit::Xsetbv { index, value })
}

/// The checks every save and restore makes, and the area's effective address.
fn area(c: &Cpu, op: &Op, write: bool) -> Result<u64, Ex> {
    if c.cr4 & cr4::OSXSAVE == 0 {
        return Err(ud());
    }
    if c.cr0 & cr0::TS != 0 {
        return Err(fault(NM));
    }
    let a = ea(c, op);
    if c.linear(op.seg, a, AREA as u32, write)? & 63 != 0 {
        return Err(GP(0));
    }
    Ok(a)
}

/// XMM registers saved and restored: 16 in 64-bit mode, else 8.
fn xmm_count(c: &Cpu) -> usize {
    if c.long64() {
        16
    } else {
        8
    }
}

/// The requested-feature bitmap: EDX:EAX AND XCR0.
fn rfbm(c: &Cpu) -> u64 {
    ((c.gpr[0] & 0xffff_ffff) | (c.gpr[2] << 32)) & c.xcr0
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

/// The legacy-region byte ranges of each component: x87 (bytes 0-23 and the registers,
/// 32-159), MXCSR with MXCSR_MASK (24-31), the XMM registers (160-415).
const X87_RANGES: [(usize, usize); 2] = [(0, 24), (32, 160)];
const MXCSR_RANGE: (usize, usize) = (24, 32);

fn save<const W64: bool, const KIND: u8>(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    op: &Op,
) -> Result<(), Ex> {
    let kind = match KIND {
        0 => Kind::Standard,
        1 => Kind::Optimised,
        _ => Kind::Compacted,
    };
    match kind {
        Kind::Optimised if !c.feat.xsaveopt => return Err(ud()),
        Kind::Compacted if !c.feat.xsavec => return Err(ud()),
        _ => {}
    }
    let a = area(c, op, true)?;
    // Every byte the instruction may write is checked before any is (the last first,
    // as FXSAVE reports it).
    c.probe_write(mem, op.seg, a.wrapping_add(AREA as u64 - 1), 1)?;
    c.probe_write(mem, op.seg, a, 1)?;
    let mut img = [0u8; AREA];
    c.rd_bytes(mem, op.seg, a, &mut img)?;
    let rfbm = rfbm(c);
    let inuse = xinuse(&c.fpu);
    // The components whose registers are written.
    let saved = match kind {
        Kind::Standard => rfbm,
        Kind::Optimised | Kind::Compacted => rfbm & inuse,
    };
    let xmm = xmm_count(c);
    let mut legacy = [0u8; 512];
    c.fpu.fxsave_into(&mut legacy, xmm);
    if !W64 {
        let x = &c.fpu.x87;
        legacy[8..12].copy_from_slice(&(x.fip as u32).to_le_bytes());
        legacy[12..14].copy_from_slice(&x.fcs.to_le_bytes());
        legacy[14..16].fill(0);
        legacy[16..20].copy_from_slice(&(x.fdp as u32).to_le_bytes());
        legacy[20..22].copy_from_slice(&x.fds.to_le_bytes());
        legacy[22..24].fill(0);
    }
    let mut copy = |(from, to): (usize, usize)| img[from..to].copy_from_slice(&legacy[from..to]);
    if saved & XCR0_X87 != 0 {
        X87_RANGES.into_iter().for_each(&mut copy);
    }
    let mxcsr_saved = match kind {
        Kind::Standard | Kind::Optimised => rfbm & XCR0_SSE != 0,
        Kind::Compacted => saved & XCR0_SSE != 0,
    };
    if mxcsr_saved {
        copy(MXCSR_RANGE);
    }
    if saved & XCR0_SSE != 0 {
        copy((160, 160 + 16 * xmm));
    }
    match kind {
        Kind::Standard | Kind::Optimised => {
            let bv = (u64_at(&img, XSTATE_BV) & !rfbm) | (inuse & rfbm);
            img[XSTATE_BV..XSTATE_BV + 8].copy_from_slice(&bv.to_le_bytes());
        }
        Kind::Compacted => {
            img[XSTATE_BV..XSTATE_BV + 8].copy_from_slice(&(inuse & rfbm).to_le_bytes());
            img[XCOMP_BV..XCOMP_BV + 8].copy_from_slice(&(COMPACTED | rfbm).to_le_bytes());
        }
    }
    c.wr_bytes(mem, op.seg, a, &img)
}

fn xrstor<const W64: bool>(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let a = area(c, op, false)?;
    c.rd(mem, op.seg, a.wrapping_add(AREA as u64 - 1), 1)?;
    let mut img = [0u8; AREA];
    c.rd_bytes(mem, op.seg, a, &mut img)?;
    let rfbm = rfbm(c);
    let xstate_bv = u64_at(&img, XSTATE_BV);
    let xcomp_bv = u64_at(&img, XCOMP_BV);
    let compacted = xcomp_bv & COMPACTED != 0;
    let header_ok = if compacted {
        c.feat.xsavec
            && xcomp_bv & !COMPACTED & !c.xcr0 == 0
            && xstate_bv & !xcomp_bv == 0
            && img[XSTATE_BV + 16..AREA].iter().all(|&b| b == 0)
    } else {
        xstate_bv & !c.xcr0 == 0 && img[XCOMP_BV..XCOMP_BV + 16].iter().all(|&b| b == 0)
    };
    if !header_ok {
        return Err(GP(0));
    }
    let load_mxcsr = if compacted {
        rfbm & xstate_bv & XCR0_SSE != 0
    } else {
        rfbm & XCR0_SSE != 0
    };
    let new_mxcsr = u32::from_le_bytes([img[24], img[25], img[26], img[27]]);
    if load_mxcsr && new_mxcsr & !mxcsr::WRITABLE != 0 {
        return Err(GP(0));
    }
    // Compose the FXSAVE image of the new state: the current one, with the components
    // to load taken from memory and the ones to initialise at their initial values.
    let xmm = xmm_count(c);
    let mut next = c.fpu.fxsave();
    let init = Fpu::default().fxsave();
    let take = |next: &mut [u8; 512], src: &[u8], (from, to): (usize, usize)| {
        next[from..to].copy_from_slice(&src[from..to]);
    };
    let (mut fcs, mut fds) = (0, 0);
    if rfbm & XCR0_X87 != 0 {
        if xstate_bv & XCR0_X87 != 0 {
            for r in X87_RANGES {
                take(&mut next, &img, r);
            }
            if !W64 {
                let fip = u32::from_le_bytes([img[8], img[9], img[10], img[11]]);
                let fdp = u32::from_le_bytes([img[16], img[17], img[18], img[19]]);
                fcs = u16::from_le_bytes([img[12], img[13]]);
                fds = u16::from_le_bytes([img[20], img[21]]);
                next[8..16].copy_from_slice(&u64::from(fip).to_le_bytes());
                next[16..24].copy_from_slice(&u64::from(fdp).to_le_bytes());
            }
        } else {
            for r in X87_RANGES {
                take(&mut next, &init, r);
            }
        }
    }
    if load_mxcsr {
        next[24..28].copy_from_slice(&new_mxcsr.to_le_bytes());
    } else if compacted && rfbm & XCR0_SSE != 0 {
        next[24..28].copy_from_slice(&mxcsr::DEFAULT.to_le_bytes());
    }
    if rfbm & XCR0_SSE != 0 {
        let src: &[u8] = if xstate_bv & XCR0_SSE != 0 {
            &img
        } else {
            &init
        };
        take(&mut next, src, (160, 160 + 16 * xmm));
    }
    let x87_before = (c.fpu.x87.fcs, c.fpu.x87.fds);
    c.fpu.fxrstor(&next, 16).map_err(|_| GP(0))?;
    let x = &mut c.fpu.x87;
    if rfbm & XCR0_X87 != 0 {
        // The selectors: from the 32-bit image, or cleared (the 64-bit image and the
        // initial configuration have none).
        (x.fcs, x.fds) = if xstate_bv & XCR0_X87 != 0 && !W64 {
            (fcs, fds)
        } else {
            (0, 0)
        };
    } else {
        (x.fcs, x.fds) = x87_before;
    }
    Ok(())
}
