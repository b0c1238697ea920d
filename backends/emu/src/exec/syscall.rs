//! SYSCALL SYSRET SYSENTER SYSEXIT: flat segments from STAR / SYSENTER_CS.

use crate::arith::flags::{IF, RF, VM};
use crate::cpu::{efer, sr, Cpu};
use crate::decode::Op;
use crate::exception::{ud, Ex, GP};
use iced_x86::Code;
use opsvisor_core::mmu::memory::GuestMemory;
use opsvisor_core::ops::Segment;

/// A flat code segment: 64-bit (`long`) or 32-bit, at `dpl`.
fn flat_code(sel: u16, dpl: u8, long: bool) -> Segment {
    Segment {
        selector: sel,
        base: 0,
        limit: u32::MAX,
        attr: 0x9b
            | (u32::from(dpl) << 5)
            | Segment::G
            | if long { Segment::L } else { Segment::DB },
    }
}

/// A flat writable data segment at `dpl`.
fn flat_data(sel: u16, dpl: u8) -> Segment {
    Segment {
        selector: sel,
        base: 0,
        limit: u32::MAX,
        attr: 0x93 | (u32::from(dpl) << 5) | Segment::G | Segment::DB,
    }
}

/// SYSCALL.
pub fn syscall(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    if c.efer & efer::SCE == 0 || !c.protected() {
        return Err(ud());
    }
    let sel = ((c.star >> 32) & 0xfffc) as u16;
    if c.lma() {
        c.gpr[1] = op.next_ip;
        c.gpr[11] = c.rflags() & !RF;
        c.rip = if c.long64() { c.lstar } else { c.cstar };
        let m = c.sfmask | RF;
        c.update_flags(|f| f & !m);
        c.seg[sr::CS as usize] = flat_code(sel, 0, true);
    } else {
        c.gpr[1] = op.next_ip & 0xffff_ffff;
        c.rip = c.star & 0xffff_ffff;
        c.rf &= !(VM | IF | RF);
        c.seg[sr::CS as usize] = flat_code(sel, 0, false);
    }
    c.seg[sr::SS as usize] = flat_data(sel.wrapping_add(8), 0);
    c.update_mode();
    Ok(())
}

/// SYSRET (to 64-bit code with REX.W, else to compatibility/32-bit code).
pub fn sysret(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    if c.efer & efer::SCE == 0 || !c.protected() {
        return Err(ud());
    }
    c.require_cpl0()?;
    let base = ((c.star >> 48) & 0xffff) as u16;
    let to64 = op.i.code() == Code::Sysretq && c.long64();
    if to64 {
        if !c.canonical(c.gpr[1]) {
            return Err(GP(0));
        }
        c.seg[sr::CS as usize] = flat_code(base.wrapping_add(16) | 3, 3, true);
        c.rip = c.gpr[1];
    } else {
        c.seg[sr::CS as usize] = flat_code(base | 3, 3, false);
        c.rip = c.gpr[1] & 0xffff_ffff;
    }
    if c.lma() {
        c.set_rflags((c.gpr[11] & 0x3c_7fd7) | 2);
    } else {
        c.rf |= IF;
    }
    c.seg[sr::SS as usize] = flat_data(base.wrapping_add(8) | 3, 3);
    c.update_mode();
    Ok(())
}

/// SYSENTER.
pub fn sysenter(c: &mut Cpu, _: &mut GuestMemory, _: &Op) -> Result<(), Ex> {
    if !c.protected() {
        return Err(GP(0));
    }
    let sel = (c.sysenter_cs & 0xfffc) as u16;
    if sel == 0 {
        return Err(GP(0));
    }
    let long = c.lma();
    c.rf &= !(VM | IF | RF);
    c.seg[sr::CS as usize] = flat_code(sel, 0, long);
    c.seg[sr::SS as usize] = flat_data(sel.wrapping_add(8), 0);
    c.gpr[4] = if long {
        c.sysenter_esp
    } else {
        c.sysenter_esp & 0xffff_ffff
    };
    c.rip = if long {
        c.sysenter_eip
    } else {
        c.sysenter_eip & 0xffff_ffff
    };
    c.update_mode();
    Ok(())
}

/// SYSEXIT (to 64-bit code with REX.W).
pub fn sysexit(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    if !c.protected() {
        return Err(GP(0));
    }
    c.require_cpl0()?;
    let base = (c.sysenter_cs & 0xfffc) as u16;
    if base == 0 {
        return Err(GP(0));
    }
    let to64 = op.i.code() == Code::Sysexitq;
    if to64 {
        if !crate::mem::canonical(c.gpr[2]) || !c.canonical(c.gpr[1]) {
            return Err(GP(0));
        }
        c.seg[sr::CS as usize] = flat_code(base.wrapping_add(32) | 3, 3, true);
        c.seg[sr::SS as usize] = flat_data(base.wrapping_add(40) | 3, 3);
        c.rip = c.gpr[2];
        c.gpr[4] = c.gpr[1];
    } else {
        c.seg[sr::CS as usize] = flat_code(base.wrapping_add(16) | 3, 3, false);
        c.seg[sr::SS as usize] = flat_data(base.wrapping_add(24) | 3, 3);
        c.rip = c.gpr[2] & 0xffff_ffff;
        c.gpr[4] = c.gpr[1] & 0xffff_ffff;
    }
    c.update_mode();
    Ok(())
}
