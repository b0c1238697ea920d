//! Far JMP, CALL and RET through code-segment descriptors, including switches between
//! 64-bit, compatibility and legacy code. Call gates and task switches are not supported
//! (#GP).

use super::ea;
use super::segment::{desc_to_seg, load_data_seg, mark_accessed, null_seg, read_desc};
use crate::cpu::{sr, Cpu};
use crate::decode::Op;
use crate::exception::{fault_ec, Ex, GP, NP};
use iced_x86::{Code, OpKind};
use opsvisor_core::mmu::memory::GuestMemory;
use opsvisor_core::ops::Segment;

/// Load CS for a far transfer to `sel:off` at privilege `new_cpl`, after the descriptor
/// checks of that transfer (`ret` selects the RET rules: RPL may be outer).
pub fn load_cs(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    sel: u16,
    off: u64,
    ret: bool,
) -> Result<(), Ex> {
    if !c.protected() {
        let mut cs = c.seg[sr::CS as usize];
        cs.selector = sel;
        cs.base = u64::from(sel) << 4;
        if c.rf & crate::arith::flags::VM != 0 {
            cs = Segment::real_mode(sel, true);
            cs.attr |= 3 << 5;
        }
        c.seg[sr::CS as usize] = cs;
        c.rip = off & 0xffff_ffff;
        c.update_mode();
        return Ok(());
    }
    let err = GP(u32::from(sel & !3));
    if sel & !3 == 0 {
        return Err(GP(0));
    }
    let raw = read_desc(c, mem, sel)?;
    let mut seg = desc_to_seg(sel, raw);
    if seg.attr & Segment::S == 0 || seg.attr & 8 == 0 {
        return Err(err);
    }
    let rpl = (sel & 3) as u8;
    let dpl = seg.dpl();
    let conforming = seg.attr & 4 != 0;
    let new_cpl = if ret {
        if rpl < c.cpl || (conforming && dpl > rpl) || (!conforming && dpl != rpl) {
            return Err(err);
        }
        rpl
    } else {
        if conforming {
            if dpl > c.cpl {
                return Err(err);
            }
        } else if rpl > c.cpl || dpl != c.cpl {
            return Err(err);
        }
        c.cpl
    };
    if seg.attr & Segment::P == 0 {
        return Err(fault_ec(NP, u32::from(sel & !3)));
    }
    let long = c.lma() && seg.attr & Segment::L != 0;
    if long {
        if !c.canonical(off) {
            return Err(GP(0));
        }
    } else if off > u64::from(seg.limit) {
        return Err(GP(0));
    }
    mark_accessed(c, mem, sel, raw)?;
    seg.attr |= 1;
    seg.selector = (sel & !3) | u16::from(new_cpl);
    // The CPL follows the RPL of the new CS (conforming segments keep DPL <= CPL).
    seg.attr = (seg.attr & !(3 << 5)) | (u32::from(new_cpl) << 5);
    c.seg[sr::CS as usize] = seg;
    c.rip = if long { off } else { off & 0xffff_ffff };
    c.update_mode();
    Ok(())
}

/// The far pointer operand: (selector, offset, operand size).
fn far_target(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(u16, u64, u32), Ex> {
    match op.i.op_kind(0) {
        OpKind::FarBranch16 => Ok((
            op.i.far_branch_selector(),
            u64::from(op.i.far_branch16()),
            2,
        )),
        OpKind::FarBranch32 => Ok((
            op.i.far_branch_selector(),
            u64::from(op.i.far_branch32()),
            4,
        )),
        _ => {
            let size = u32::from(op.size).saturating_sub(2).max(2);
            let a = ea(c, op);
            let off = c.rd(mem, op.seg, a, size)?;
            let sel = c.rd(mem, op.seg, a.wrapping_add(u64::from(size)) & op.amask, 2)? as u16;
            Ok((sel, off, size))
        }
    }
}

/// JMP far.
pub fn jmp_far(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let (sel, off, _) = far_target(c, mem, op)?;
    load_cs(c, mem, sel, off, false)
}

/// CALL far.
pub fn call_far(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let (sel, off, size) = far_target(c, mem, op)?;
    let old_cs = c.seg[sr::CS as usize];
    let old_sp = c.gpr[4];
    let old_cpl = c.cpl;
    c.push(mem, u64::from(old_cs.selector), size)?;
    if let Err(e) = c.push(mem, op.next_ip, size) {
        c.gpr[4] = old_sp;
        return Err(e);
    }
    if let Err(e) = load_cs(c, mem, sel, off, false) {
        c.gpr[4] = old_sp;
        c.seg[sr::CS as usize] = old_cs;
        c.cpl = old_cpl;
        c.update_mode();
        return Err(e);
    }
    Ok(())
}

/// RETF / RETF imm16, including the return to an outer privilege level.
pub fn retf(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let size = match op.i.code() {
        Code::Retfw | Code::Retfw_imm16 => 2,
        Code::Retfq | Code::Retfq_imm16 => 8,
        _ => 4,
    };
    let imm = if op.i.op_count() > 0 {
        op.imm & 0xffff
    } else {
        0
    };
    let off = c.peek(mem, 0, size)?;
    let sel = c.peek(mem, 1, size)? as u16;
    let m = c.stack_mask();
    let outer = c.protected() && (sel & 3) as u8 > c.cpl;
    let (new_sp, new_ss) = if outer {
        (
            c.peek(mem, 2 + imm / u64::from(size), size)?,
            c.peek(mem, 3 + imm / u64::from(size), size)? as u16,
        )
    } else {
        (0, 0)
    };
    let old_cs = c.seg[sr::CS as usize];
    let old_cpl = c.cpl;
    load_cs(c, mem, sel, off, true)?;
    if outer {
        if let Err(e) = load_data_seg(c, mem, sr::SS, new_ss) {
            c.seg[sr::CS as usize] = old_cs;
            c.cpl = old_cpl;
            c.update_mode();
            return Err(e);
        }
        c.gpr[4] = new_sp.wrapping_add(imm);
        if c.bits != 64 && c.seg[sr::SS as usize].attr & Segment::DB == 0 {
            c.gpr[4] &= 0xffff;
        }
        null_outer_segments(c);
    } else {
        c.gpr[4] = (c.gpr[4] & !m) | (c.gpr[4].wrapping_add(2 * u64::from(size) + imm) & m);
    }
    Ok(())
}

/// After a return to an outer level: data segments the new CPL may not use become null.
pub fn null_outer_segments(c: &mut Cpu) {
    for s in [sr::ES, sr::DS, sr::FS, sr::GS] {
        let seg = c.seg[usize::from(s)];
        let ty = seg.attr & 0xf;
        let conforming_code = ty & 0xc == 0xc;
        if seg.attr & Segment::UNUSABLE == 0 && !conforming_code && seg.dpl() < c.cpl {
            c.seg[usize::from(s)] = null_seg(0);
            if c.long64() {
                // FS/GS keep their base in 64-bit mode semantics only through the MSRs.
                c.seg[usize::from(s)].base = seg.base * u64::from(s >= sr::FS);
            }
        }
    }
}
