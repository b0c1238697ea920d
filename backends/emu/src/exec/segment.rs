//! Segment registers: descriptor reads, MOV Sreg, PUSH/POP Sreg, LDS LES LFS LGS LSS,
//! LAR LSL VERR VERW ARPL.

use super::{ea, rd, wr};
use crate::arith::flags::ZF;
use crate::cpu::{sr, Cpu};
use crate::decode::{seg_index, Op};
use crate::exception::{fault_ec, ud, Ex, GP, NP, SS};
use iced_x86::{Mnemonic, OpKind};
use opsvisor_core::mmu::memory::GuestMemory;
use opsvisor_core::ops::Segment;

/// Read the 8-byte descriptor for `sel` from the GDT or LDT; #GP(sel) beyond the limit.
pub fn read_desc(c: &mut Cpu, mem: &mut GuestMemory, sel: u16) -> Result<u64, Ex> {
    let (base, limit) = table(c, sel)?;
    let off = u64::from(sel & !7);
    if off + 7 > limit {
        return Err(GP(u32::from(sel & !3)));
    }
    c.rd_sys(mem, base.wrapping_add(off), 8)
}

/// Linear address of the descriptor for `sel`.
pub fn desc_addr(c: &Cpu, sel: u16) -> Result<u64, Ex> {
    let (base, _) = table(c, sel)?;
    Ok(base.wrapping_add(u64::from(sel & !7)))
}

fn table(c: &Cpu, sel: u16) -> Result<(u64, u64), Ex> {
    if sel & 4 != 0 {
        let l = &c.seg[sr::LDTR as usize];
        if l.attr & Segment::UNUSABLE != 0 || l.selector & !3 == 0 {
            return Err(GP(u32::from(sel & !3)));
        }
        Ok((l.base, u64::from(l.limit)))
    } else {
        Ok((c.gdtr.base, u64::from(c.gdtr.limit)))
    }
}

/// The hidden segment state a descriptor loads (VMX access-rights layout).
pub fn desc_to_seg(sel: u16, raw: u64) -> Segment {
    let base = ((raw >> 16) & 0xff_ffff) | (((raw >> 56) & 0xff) << 24);
    let mut limit = ((raw & 0xffff) | (((raw >> 48) & 0xf) << 16)) as u32;
    let attr = (((raw >> 40) & 0xff) | (((raw >> 52) & 0xf) << 12)) as u32;
    if attr & Segment::G != 0 {
        limit = (limit << 12) | 0xfff;
    }
    Segment {
        selector: sel,
        base,
        limit,
        attr,
    }
}

/// Set the accessed bit of a code/data descriptor in memory, as the processor does.
pub fn mark_accessed(c: &mut Cpu, mem: &mut GuestMemory, sel: u16, raw: u64) -> Result<(), Ex> {
    if raw & (1 << 40) == 0 {
        let a = desc_addr(c, sel)? + 5;
        let b = (raw >> 40) as u8 | 1;
        c.wr_sys(mem, a, 1, u64::from(b))?;
    }
    Ok(())
}

/// An unusable (null) data segment.
pub fn null_seg(sel: u16) -> Segment {
    Segment {
        selector: sel,
        base: 0,
        limit: 0,
        attr: Segment::UNUSABLE,
    }
}

/// Load data segment register `s` (not CS) with `sel`, with the checks of MOV/POP Sreg.
pub fn load_data_seg(c: &mut Cpu, mem: &mut GuestMemory, s: u8, sel: u16) -> Result<(), Ex> {
    if !c.protected() {
        // Real and virtual-8086 mode change only the selector and base (limits and rights
        // survive: "unreal mode").
        let seg = &mut c.seg[usize::from(s)];
        seg.selector = sel;
        seg.base = u64::from(sel) << 4;
        if c.rf & crate::arith::flags::VM != 0 {
            *seg = Segment::real_mode(sel, false);
            seg.attr |= 3 << 5;
        }
        return Ok(());
    }
    let rpl = sel & 3;
    if sel & !3 == 0 {
        if s == sr::SS && !(c.long64() && c.cpl != 3 && rpl == u16::from(c.cpl)) {
            return Err(GP(0));
        }
        let mut n = null_seg(sel);
        if s == sr::SS {
            n.attr |= u32::from(c.cpl) << 5;
        }
        c.seg[usize::from(s)] = n;
        return Ok(());
    }
    let raw = read_desc(c, mem, sel)?;
    let seg = desc_to_seg(sel, raw);
    let ty = seg.attr & 0xf;
    let dpl = seg.dpl() as u16;
    let err = GP(u32::from(sel & !3));
    if seg.attr & Segment::S == 0 {
        return Err(err);
    }
    if s == sr::SS {
        let writable_data = ty & 8 == 0 && ty & 2 != 0;
        if rpl != u16::from(c.cpl) || dpl != u16::from(c.cpl) || !writable_data {
            return Err(err);
        }
        if seg.attr & Segment::P == 0 {
            return Err(fault_ec(SS, u32::from(sel & !3)));
        }
    } else {
        let code = ty & 8 != 0;
        if code && ty & 2 == 0 {
            return Err(err);
        }
        let conforming = code && ty & 4 != 0;
        if !conforming && (rpl > dpl || u16::from(c.cpl) > dpl) {
            return Err(err);
        }
        if seg.attr & Segment::P == 0 {
            return Err(fault_ec(NP, u32::from(sel & !3)));
        }
    }
    mark_accessed(c, mem, sel, raw)?;
    let mut seg = seg;
    seg.attr |= 1;
    c.seg[usize::from(s)] = seg;
    if s == sr::SS {
        // The stack size may have changed.
        c.brk = true;
    }
    Ok(())
}

/// MOV Sreg, r/m16.
pub fn mov_to_sreg(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let s = seg_index(op.i.op_register(0));
    if s == sr::CS {
        return Err(ud());
    }
    let sel = rd(c, mem, op, 1, 2)? as u16;
    load_data_seg(c, mem, s, sel)?;
    if s == sr::SS {
        c.shadow = true;
        c.ss_shadow = true;
        c.brk = true;
    }
    Ok(())
}

/// MOV r/m, Sreg.
pub fn mov_from_sreg(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let s = seg_index(op.i.op_register(1));
    let v = u64::from(c.seg[usize::from(s)].selector);
    let size = if op.i.op_kind(0) == OpKind::Memory {
        2
    } else {
        u32::from(op.size)
    };
    wr(c, mem, op, 0, size, v)
}

/// PUSH Sreg.
pub fn push_sreg(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let s = seg_index(op.i.op_register(0));
    let size = op.i.stack_pointer_increment().unsigned_abs();
    let v = u64::from(c.seg[usize::from(s)].selector);
    c.push(mem, v, size)
}

/// POP Sreg.
pub fn pop_sreg(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let s = seg_index(op.i.op_register(0));
    let size = op.i.stack_pointer_increment().unsigned_abs();
    let save = c.gpr[4];
    let sel = c.pop(mem, size)? as u16;
    if let Err(e) = load_data_seg(c, mem, s, sel) {
        c.gpr[4] = save;
        return Err(e);
    }
    if s == sr::SS {
        c.shadow = true;
        c.ss_shadow = true;
        c.brk = true;
    }
    Ok(())
}

/// LDS LES LFS LGS LSS r, m16:16/32/64.
pub fn load_far_pointer(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    if op.i.op_kind(1) != OpKind::Memory {
        return Err(ud());
    }
    let size = u32::from(op.size);
    let a = ea(c, op);
    let off = c.rd(mem, op.seg, a, size)?;
    let sel = c.rd(mem, op.seg, a.wrapping_add(u64::from(size)) & op.amask, 2)? as u16;
    let s = match op.i.mnemonic() {
        Mnemonic::Lds => sr::DS,
        Mnemonic::Les => sr::ES,
        Mnemonic::Lfs => sr::FS,
        Mnemonic::Lgs => sr::GS,
        _ => sr::SS,
    };
    load_data_seg(c, mem, s, sel)?;
    c.set(op.r[0], size, off);
    Ok(())
}

/// Whether the descriptor for `sel` is visible at the current CPL for LAR/LSL/VERR/VERW.
fn visible(c: &mut Cpu, mem: &mut GuestMemory, sel: u16) -> Option<Segment> {
    if sel & !3 == 0 {
        return None;
    }
    let raw = read_desc(c, mem, sel).ok()?;
    let seg = desc_to_seg(sel, raw);
    let code = seg.attr & Segment::S != 0 && seg.attr & 8 != 0;
    let conforming = code && seg.attr & 4 != 0;
    let dpl = seg.dpl();
    if !conforming && (dpl < c.cpl || dpl < (sel & 3) as u8) {
        return None;
    }
    Some(seg)
}

/// LAR / LSL r, r/m16.
pub fn lar_lsl(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    if !c.protected() {
        return Err(ud());
    }
    let sel = rd(c, mem, op, 1, 2)? as u16;
    let lar = op.i.mnemonic() == Mnemonic::Lar;
    let ia32e = c.lma();
    let valid_type = |seg: &Segment| {
        if seg.attr & Segment::S != 0 {
            return true;
        }
        // System descriptors LAR and LSL accept (SDM LAR/LSL tables): LDT and TSSs, and
        // for LAR the call gates (IA-32e mode) or every gate but interrupt/trap gates.
        let ty = seg.attr & 0xf;
        match (ia32e, lar) {
            (true, true) => matches!(ty, 0x2 | 0x9 | 0xb | 0xc),
            (true, false) => matches!(ty, 0x2 | 0x9 | 0xb),
            (false, true) => matches!(ty, 0x1..=0x5 | 0x9 | 0xb | 0xc),
            (false, false) => matches!(ty, 0x1..=0x3 | 0x9 | 0xb),
        }
    };
    match visible(c, mem, sel).filter(valid_type) {
        Some(seg) => {
            let v = if lar {
                u64::from(seg.attr & 0xf0ff) << 8
            } else {
                u64::from(seg.limit)
            };
            c.set(op.r[0], u32::from(op.size), v);
            c.update_flags(|f| f | ZF);
        }
        None => c.update_flags(|f| f & !ZF),
    }
    Ok(())
}

/// VERR / VERW r/m16.
pub fn verr_verw(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    if !c.protected() {
        return Err(ud());
    }
    let sel = rd(c, mem, op, 0, 2)? as u16;
    let ok = visible(c, mem, sel).is_some_and(|s| {
        let ty = s.attr & 0xf;
        s.attr & Segment::S != 0
            && if op.i.mnemonic() == Mnemonic::Verw {
                ty & 8 == 0 && ty & 2 != 0
            } else {
                ty & 8 == 0 || ty & 2 != 0
            }
    });
    c.set_rflags(if ok {
        c.rflags() | ZF
    } else {
        c.rflags() & !ZF
    });
    Ok(())
}

/// ARPL r/m16, r16 (legacy protected mode).
pub fn arpl(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    if !c.protected() || c.long64() {
        return Err(ud());
    }
    let d = rd(c, mem, op, 0, 2)?;
    let s = c.get(op.r[1], 2);
    if d & 3 < s & 3 {
        wr(c, mem, op, 0, 2, (d & !3) | (s & 3))?;
        c.update_flags(|f| f | ZF);
    } else {
        c.update_flags(|f| f & !ZF);
    }
    Ok(())
}
