//! FXSAVE/FXRSTOR and their REX.W forms FXSAVE64/FXRSTOR64 (FXSR): the 512-byte image of
//! the x87, MXCSR and XMM state.
//!
//! The operand must be 16-byte aligned (#GP(0) otherwise, whatever the alignment-check
//! setting). FXRSTOR refuses an MXCSR with reserved bits set (#GP(0), nothing loaded).
//! Without REX.W, FIP and FDP are stored as 32-bit offsets followed by the FCS and FDS
//! selectors; with it as 64-bit offsets. Outside 64-bit mode only XMM0-7 are saved and
//! restored. Bytes of the image the processor does not define are left as they were.
//! Neither raises a pending x87 exception; CR0.EM gives #UD and CR0.TS #NM.

use crate::cpu::{cr0, Cpu};
use crate::decode::{Handler, Op};
use crate::exception::{fault, ud, Ex, GP, NM};
use crate::exec::ea;
use iced_x86::Code;
use opsvisor_core::mmu::memory::GuestMemory;

/// The handler for `code` if it is FXSAVE/FXRSTOR.
pub fn select(code: Code) -> Option<Handler> {
    Some(match code {
        Code::Fxsave_m512byte => fxsave::<false>,
        Code::Fxsave64_m512byte => fxsave::<true>,
        Code::Fxrstor_m512byte => fxrstor::<false>,
        Code::Fxrstor64_m512byte => fxrstor::<true>,
        _ => return None,
    })
}

fn check(c: &Cpu) -> Result<(), Ex> {
    if c.cr0 & cr0::EM != 0 {
        return Err(ud());
    }
    if c.cr0 & cr0::TS != 0 {
        return Err(fault(NM));
    }
    Ok(())
}

/// The linear address of the image, checked for alignment.
fn aligned(c: &Cpu, op: &Op, write: bool) -> Result<u64, Ex> {
    let a = ea(c, op);
    if c.linear(op.seg, a, 512, write)? & 15 != 0 {
        return Err(GP(0));
    }
    Ok(a)
}

fn xmm_count(c: &Cpu) -> usize {
    if c.long64() {
        16
    } else {
        8
    }
}

fn fxsave<const W64: bool>(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    check(c)?;
    let a = aligned(c, op, true)?;
    // The host checks the last byte of the image first (it is the #PF address when
    // the image crosses into, or lies in, a missing page), then the first; 512 aligned
    // bytes touch at most two pages. Both before the read of the bytes kept.
    c.probe_write(mem, op.seg, a.wrapping_add(511), 1)?;
    c.probe_write(mem, op.seg, a, 1)?;
    let mut img = [0u8; 512];
    c.rd_bytes(mem, op.seg, a, &mut img)?;
    c.fpu.fxsave_into(&mut img, xmm_count(c));
    if !W64 {
        let x = &c.fpu.x87;
        img[8..12].copy_from_slice(&(x.fip as u32).to_le_bytes());
        img[12..14].copy_from_slice(&x.fcs.to_le_bytes());
        img[14..16].fill(0);
        img[16..20].copy_from_slice(&(x.fdp as u32).to_le_bytes());
        img[20..22].copy_from_slice(&x.fds.to_le_bytes());
        img[22..24].fill(0);
    }
    c.wr_bytes(mem, op.seg, a, &img)
}

fn fxrstor<const W64: bool>(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    check(c)?;
    let a = aligned(c, op, false)?;
    // The last byte first, as for FXSAVE.
    c.rd(mem, op.seg, a.wrapping_add(511), 1)?;
    let mut img = [0u8; 512];
    c.rd_bytes(mem, op.seg, a, &mut img)?;
    let (fcs, fds) = (
        u16::from_le_bytes([img[12], img[13]]),
        u16::from_le_bytes([img[20], img[21]]),
    );
    if !W64 {
        // The 32-bit layout: widen the offsets into the 64-bit layout fxrstor expects.
        let fip = u32::from_le_bytes([img[8], img[9], img[10], img[11]]);
        let fdp = u32::from_le_bytes([img[16], img[17], img[18], img[19]]);
        img[8..16].copy_from_slice(&u64::from(fip).to_le_bytes());
        img[16..24].copy_from_slice(&u64::from(fdp).to_le_bytes());
    }
    let n = xmm_count(c);
    c.fpu.fxrstor(&img, n).map_err(|_| GP(0))?;
    let x = &mut c.fpu.x87;
    if W64 {
        x.fcs = 0;
        x.fds = 0;
    } else {
        x.fcs = fcs;
        x.fds = fds;
    }
    Ok(())
}
