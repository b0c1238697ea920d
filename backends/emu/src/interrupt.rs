//! Event delivery through the IVT (real mode) or the IDT (protected and long mode), the
//! double- and triple-fault rules, IRET, and INT n / INT3 / INTO / INT1.

use crate::arith::flags::{AC, IF, NT, OF, RF, TF, VM};
use crate::cpu::{sr, Cpu};
use crate::decode::Op;
use crate::exception::{combine, fault_ec, Ex, BP, DB, GP, NP, OF as OF_VEC, SS, TS};
use crate::exec::far::null_outer_segments;
use crate::exec::segment::{desc_to_seg, load_data_seg, read_desc};
use crate::exec::stack::writable_flags;
use opsvisor_core::arch::exception_is_fault;
use opsvisor_core::exit::Exit;
use opsvisor_core::mmu::memory::GuestMemory;
use opsvisor_core::ops::Segment;

/// How an event arises, which decides the return address and the checks made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// An exception (fault or trap), with its error code.
    Exception(Option<u32>),
    /// An external interrupt or NMI.
    External,
    /// INT n / INT3 / INTO: the gate DPL is checked against CPL.
    Software,
}

/// The RFLAGS image an event pushes: a fault sets RF in it (SDM 3A 17.3.1.1), so that
/// the IRET back to the faulting instruction does not trigger its instruction breakpoint
/// again.
fn pushed_flags(c: &Cpu, vector: u8, src: Source) -> u64 {
    let flags = c.rflags();
    match src {
        Source::Exception(_) if exception_is_fault(vector) => flags | RF,
        _ => flags,
    }
}

/// Deliver an exception with the #DF/triple-fault rules. `Err` carries only exits
/// (triple fault, emulation failure).
pub fn raise(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    vector: u8,
    error_code: Option<u32>,
) -> Result<(), Exit> {
    let (mut v, mut ec) = (vector, error_code);
    let mut src = Source::Exception(ec);
    // Bounded: every step either succeeds, escalates towards #DF, or ends in a triple fault.
    for _ in 0..4 {
        match deliver(c, mem, v, src) {
            Ok(()) => return Ok(()),
            Err(Ex::Exit) => return Err(c.exit),
            Err(Ex::Fault(f)) => match combine(v, f.vector()) {
                None => return Err(Exit::TripleFault),
                Some(8) => {
                    v = 8;
                    ec = Some(0);
                }
                Some(n) => {
                    v = n;
                    ec = f.error_code();
                }
            },
        }
        src = Source::Exception(ec);
    }
    Err(Exit::TripleFault)
}

/// Deliver an external interrupt or NMI (a fault while delivering it is then delivered
/// as an exception).
pub fn raise_external(c: &mut Cpu, mem: &mut GuestMemory, vector: u8) -> Result<(), Exit> {
    match deliver(c, mem, vector, Source::External) {
        Ok(()) => Ok(()),
        Err(Ex::Exit) => Err(c.exit),
        Err(Ex::Fault(f)) => raise(c, mem, f.vector(), f.error_code()),
    }
}

/// Deliver one event; RIP already holds the return address.
pub fn deliver(c: &mut Cpu, mem: &mut GuestMemory, vector: u8, src: Source) -> Result<(), Ex> {
    c.brk = true;
    c.mmio.len = 0;
    c.mmio.pos = 0;
    if c.event_exits && src != Source::External {
        return event_exit(c, mem, vector, src);
    }
    if !c.protected() {
        return deliver_real(c, mem, vector);
    }
    if c.lma() {
        deliver_long(c, mem, vector, src)
    } else {
        deliver_protected(c, mem, vector, src)
    }
}

/// An exception or software interrupt ends the run as [`Exit::Exception`] instead of
/// being delivered (the emulator's counterpart of VMX's exception bitmap, for every
/// vector). A software interrupt first makes the checks that decide whether it is
/// delivered at all (the IDT limit, the gate's DPL against CPL, the gate's presence), so
/// at CPL 3 `INT n` through a DPL-0 gate ends with the #GP it raises, as it does in a
/// user-mode process.
#[cold]
fn event_exit(c: &mut Cpu, mem: &mut GuestMemory, vector: u8, src: Source) -> Result<(), Ex> {
    if src == Source::Software && c.protected() {
        let size = if c.lma() { 16 } else { 8 };
        read_gate(c, mem, vector, src, size)?;
    }
    let error_code = match src {
        Source::Exception(ec) => ec,
        Source::Software | Source::External => None,
    };
    Err(c.exit_with(Exit::Exception { vector, error_code }))
}

fn ext_bit(src: Source) -> u32 {
    u32::from(src != Source::Software)
}

fn deliver_real(c: &mut Cpu, mem: &mut GuestMemory, vector: u8) -> Result<(), Ex> {
    let off = u64::from(vector) * 4;
    if off + 3 > u64::from(c.idtr.limit) {
        return Err(GP(0));
    }
    let entry = c.rd_sys(mem, c.idtr.base.wrapping_add(off), 4)?;
    let save_sp = c.gpr[4];
    let frame = [
        c.rflags() & 0xffff,
        u64::from(c.seg[sr::CS as usize].selector),
        c.rip & 0xffff,
    ];
    for v in frame {
        if let Err(e) = c.push(mem, v, 2) {
            c.gpr[4] = save_sp;
            return Err(e);
        }
    }
    c.rf &= !(IF | TF | AC | RF);
    let sel = (entry >> 16) as u16;
    let cs = &mut c.seg[sr::CS as usize];
    cs.selector = sel;
    cs.base = u64::from(sel) << 4;
    c.rip = entry & 0xffff;
    c.update_mode();
    Ok(())
}

/// The code segment an IDT gate names, checked; returns (segment, new CPL).
fn gate_cs(c: &mut Cpu, mem: &mut GuestMemory, sel: u16, ext: u32) -> Result<(Segment, u8), Ex> {
    if sel & !3 == 0 {
        return Err(GP(ext));
    }
    let raw = read_desc(c, mem, sel).map_err(|_| GP(u32::from(sel & !3) | ext))?;
    let seg = desc_to_seg(sel, raw);
    if seg.attr & Segment::S == 0 || seg.attr & 8 == 0 || seg.dpl() > c.cpl {
        return Err(GP(u32::from(sel & !3) | ext));
    }
    if seg.attr & Segment::P == 0 {
        return Err(fault_ec(NP, u32::from(sel & !3) | ext));
    }
    let conforming = seg.attr & 4 != 0;
    let new_cpl = if conforming { c.cpl } else { seg.dpl() };
    Ok((seg, new_cpl))
}

fn read_gate(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    vector: u8,
    src: Source,
    size: u64,
) -> Result<(u64, u64), Ex> {
    let ext = ext_bit(src);
    let idt_err = GP(u32::from(vector) * 8 + 2 + ext);
    let off = u64::from(vector) * size;
    if off + size - 1 > u64::from(c.idtr.limit) {
        return Err(idt_err);
    }
    let lo = c.rd_sys(mem, c.idtr.base.wrapping_add(off), 8)?;
    let hi = if size == 16 {
        c.rd_sys(mem, c.idtr.base.wrapping_add(off + 8), 8)?
    } else {
        0
    };
    let dpl = ((lo >> 45) & 3) as u8;
    if src == Source::Software && dpl < c.cpl {
        return Err(idt_err);
    }
    if lo & (1 << 47) == 0 {
        return Err(fault_ec(NP, u32::from(vector) * 8 + 2 + ext));
    }
    Ok((lo, hi))
}

fn deliver_protected(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    vector: u8,
    src: Source,
) -> Result<(), Ex> {
    let ext = ext_bit(src);
    let (g, _) = read_gate(c, mem, vector, src, 8)?;
    let ty = (g >> 40) & 0x1f;
    let (gate32, trap) = match ty {
        0x06 => (false, false),
        0x07 => (false, true),
        0x0e => (true, false),
        0x0f => (true, true),
        _ => return Err(GP(u32::from(vector) * 8 + 2 + ext)),
    };
    let sel = (g >> 16) as u16;
    let off = (g & 0xffff) | ((g >> 32) & 0xffff_0000);
    let (mut cs, new_cpl) = gate_cs(c, mem, sel, ext)?;
    let size = if gate32 { 4 } else { 2 };
    let old_cs = c.seg[sr::CS as usize];
    let old_ss = c.seg[sr::SS as usize];
    let old_sp = c.gpr[4];
    let old_flags = pushed_flags(c, vector, src);
    let old_cpl = c.cpl;
    let result = (|| {
        if new_cpl < c.cpl {
            let tr = c.seg[sr::TR as usize];
            let tss32 = tr.attr & 8 != 0;
            let (esp, ss) = if tss32 {
                let o = 4 + 8 * u64::from(new_cpl);
                if o + 5 > u64::from(tr.limit) {
                    return Err(fault_ec(TS, u32::from(tr.selector & !3) | ext));
                }
                (
                    c.rd_sys(mem, tr.base.wrapping_add(o), 4)?,
                    c.rd_sys(mem, tr.base.wrapping_add(o + 4), 2)? as u16,
                )
            } else {
                let o = 2 + 4 * u64::from(new_cpl);
                (
                    c.rd_sys(mem, tr.base.wrapping_add(o), 2)?,
                    c.rd_sys(mem, tr.base.wrapping_add(o + 2), 2)? as u16,
                )
            };
            // Load the new stack as the new CPL sees it.
            c.cpl = new_cpl;
            c.tlb.sel = crate::mem::SUPERVISOR;
            if let Err(e) = load_data_seg(c, mem, sr::SS, ss) {
                return Err(match e {
                    Ex::Fault(_) => fault_ec(TS, u32::from(ss & !3) | ext),
                    other => other,
                });
            }
            c.gpr[4] = esp;
            c.push(mem, u64::from(old_ss.selector), size)?;
            c.push(mem, old_sp, size)?;
        }
        c.push(mem, old_flags, size)?;
        c.push(mem, u64::from(old_cs.selector), size)?;
        c.push(mem, c.rip, size)?;
        if let Source::Exception(Some(ec)) = src {
            c.push(mem, u64::from(ec), size)?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        c.seg[sr::SS as usize] = old_ss;
        c.gpr[4] = old_sp;
        c.cpl = old_cpl;
        c.update_sel();
        return Err(e);
    }
    cs.selector = (sel & !3) | u16::from(new_cpl);
    cs.attr = (cs.attr & !(3 << 5)) | (u32::from(new_cpl) << 5) | 1;
    c.seg[sr::CS as usize] = cs;
    c.rip = off & if gate32 { 0xffff_ffff } else { 0xffff };
    c.rf &= !(TF | NT | RF | VM);
    if !trap {
        c.rf &= !IF;
    }
    c.update_mode();
    Ok(())
}

fn deliver_long(c: &mut Cpu, mem: &mut GuestMemory, vector: u8, src: Source) -> Result<(), Ex> {
    let ext = ext_bit(src);
    let (lo, hi) = read_gate(c, mem, vector, src, 16)?;
    let ty = (lo >> 40) & 0x1f;
    let trap = match ty {
        0x0e => false,
        0x0f => true,
        _ => return Err(GP(u32::from(vector) * 8 + 2 + ext)),
    };
    let sel = (lo >> 16) as u16;
    let off = (lo & 0xffff) | ((lo >> 32) & 0xffff_0000) | (hi << 32);
    let ist = (lo >> 32) & 7;
    let (mut cs, new_cpl) = gate_cs(c, mem, sel, ext)?;
    if cs.attr & Segment::L == 0 || cs.attr & Segment::DB != 0 {
        return Err(GP(u32::from(sel & !3) | ext));
    }
    let old_cs = c.seg[sr::CS as usize];
    let old_ss = c.seg[sr::SS as usize];
    let old_sp = c.gpr[4];
    let old_flags = pushed_flags(c, vector, src);
    let old_cpl = c.cpl;
    let tr = c.seg[sr::TR as usize];
    let mut rsp = old_sp;
    if ist != 0 {
        rsp = c.rd_sys(mem, tr.base.wrapping_add(0x24 + 8 * (ist - 1)), 8)?;
    } else if new_cpl < c.cpl {
        rsp = c.rd_sys(mem, tr.base.wrapping_add(4 + 8 * u64::from(new_cpl)), 8)?;
    }
    if !c.canonical(rsp) {
        return Err(fault_ec(SS, ext));
    }
    rsp &= !0xf;
    let mut frame = [0u64; 6];
    let mut n = 0;
    if let Source::Exception(Some(ec)) = src {
        frame[n] = u64::from(ec);
        n += 1;
    }
    for v in [
        c.rip,
        u64::from(old_cs.selector),
        old_flags,
        old_sp,
        u64::from(old_ss.selector),
    ] {
        frame[n] = v;
        n += 1;
    }
    // Write the frame from the lowest address up, as supervisor accesses of the new level.
    let top = rsp;
    let bottom = top.wrapping_sub(8 * n as u64);
    let sel_tlb = usize::from(new_cpl == 3);
    for (k, v) in frame[..n].iter().enumerate() {
        let la = bottom.wrapping_add(8 * k as u64);
        c.write_lin(mem, la, 8, *v, sel_tlb)?;
    }
    c.gpr[4] = bottom;
    if new_cpl < old_cpl {
        c.seg[sr::SS as usize] = Segment {
            selector: u16::from(new_cpl),
            base: 0,
            limit: 0,
            attr: Segment::UNUSABLE | (u32::from(new_cpl) << 5),
        };
    }
    cs.selector = (sel & !3) | u16::from(new_cpl);
    cs.attr = (cs.attr & !(3 << 5)) | (u32::from(new_cpl) << 5) | 1;
    c.seg[sr::CS as usize] = cs;
    c.rip = off;
    c.rf &= !(TF | NT | RF | VM);
    if !trap {
        c.rf &= !IF;
    }
    c.update_mode();
    Ok(())
}

/// INT imm8.
pub fn int_n(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    if c.rf & VM != 0 && c.iopl() < 3 {
        return Err(GP(0));
    }
    deliver(c, mem, op.imm as u8, Source::Software)
}

/// INT3.
pub fn int3(c: &mut Cpu, mem: &mut GuestMemory, _: &Op) -> Result<(), Ex> {
    deliver(c, mem, BP, Source::Software)
}

/// INTO (#UD in 64-bit mode).
pub fn into(c: &mut Cpu, mem: &mut GuestMemory, _: &Op) -> Result<(), Ex> {
    if c.long64() {
        return Err(crate::exception::ud());
    }
    if c.rflags() & OF != 0 {
        deliver(c, mem, OF_VEC, Source::Software)?;
    }
    Ok(())
}

/// INT1 (ICEBP): a #DB trap without the gate DPL check.
pub fn int1(c: &mut Cpu, mem: &mut GuestMemory, _: &Op) -> Result<(), Ex> {
    deliver(c, mem, DB, Source::Exception(None))
}

/// IRET / IRETD / IRETQ.
pub fn iret(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    // IRET may load TF and RF, which the block loop must see before the next instruction.
    c.brk = true;
    let size = match op.i.code() {
        iced_x86::Code::Iretw => 2,
        iced_x86::Code::Iretq => 8,
        _ => 4,
    };
    if !c.protected() {
        if c.rf & VM != 0 && c.iopl() < 3 {
            return Err(GP(0));
        }
        let ip = c.peek(mem, 0, size)?;
        let cs = c.peek(mem, 1, size)? as u16;
        let fl = c.peek(mem, 2, size)?;
        if ip > 0xffff {
            return Err(GP(0));
        }
        let m = writable_flags(c, size) | RF;
        c.set_rflags((c.rflags() & !m) | (fl & m) | 2);
        let m = c.stack_mask();
        c.gpr[4] = (c.gpr[4] & !m) | (c.gpr[4].wrapping_add(3 * u64::from(size)) & m);
        let seg = &mut c.seg[sr::CS as usize];
        seg.selector = cs;
        seg.base = u64::from(cs) << 4;
        c.rip = ip;
        c.nmi_blocked = false;
        c.update_mode();
        return Ok(());
    }
    if c.rf & NT != 0 {
        // Task return is not supported.
        return Err(GP(0));
    }
    let ip = c.peek(mem, 0, size)?;
    let cs = c.peek(mem, 1, size)? as u16;
    let fl = c.peek(mem, 2, size)?;
    if !c.lma() && fl & VM != 0 && c.cpl == 0 {
        // Return to virtual-8086 mode is not supported.
        return Err(GP(0));
    }
    let rpl = (cs & 3) as u8;
    let outer = rpl > c.cpl;
    let pops_stack = c.long64() || outer;
    let (sp, ss) = if pops_stack {
        (c.peek(mem, 3, size)?, c.peek(mem, 4, size)? as u16)
    } else {
        (0, 0)
    };
    let old_cs = c.seg[sr::CS as usize];
    let old_ss = c.seg[sr::SS as usize];
    let old_cpl = c.cpl;
    let old_sp = c.gpr[4];
    let mask = writable_flags(c, size)
        | RF
        | if c.cpl == 0 {
            VM | crate::arith::flags::VIF | crate::arith::flags::VIP
        } else {
            0
        };
    let was_long = c.long64();
    crate::exec::far::load_cs(c, mem, cs, ip, true)?;
    let restore = |c: &mut Cpu| {
        c.seg[sr::CS as usize] = old_cs;
        c.seg[sr::SS as usize] = old_ss;
        c.cpl = old_cpl;
        c.gpr[4] = old_sp;
        c.update_mode();
    };
    if pops_stack {
        let ok = if ss & !3 == 0 && c.lma() && (cs & 3) != 3 && c.long64() {
            c.seg[sr::SS as usize] = Segment {
                selector: ss,
                base: 0,
                limit: 0,
                attr: Segment::UNUSABLE | (u32::from(c.cpl) << 5),
            };
            Ok(())
        } else {
            load_data_seg(c, mem, sr::SS, ss)
        };
        if let Err(e) = ok {
            restore(c);
            return Err(e);
        }
        c.gpr[4] = if c.long64() || size == 8 {
            sp
        } else if was_long || c.seg[sr::SS as usize].attr & Segment::DB != 0 {
            sp & 0xffff_ffff
        } else {
            (old_sp & !0xffff) | (sp & 0xffff)
        };
        if outer {
            null_outer_segments(c);
        }
    } else {
        let m = c.stack_mask();
        c.gpr[4] = (old_sp & !m) | (old_sp.wrapping_add(3 * u64::from(size)) & m);
    }
    // Flags as the old privilege level may change them.
    let saved_cpl = c.cpl;
    c.cpl = old_cpl;
    let m = mask & writable_flags(c, size)
        | (mask & (VM | crate::arith::flags::VIF | crate::arith::flags::VIP));
    c.cpl = saved_cpl;
    c.set_rflags((c.rflags() & !m) | (fl & m) | 2);
    c.nmi_blocked = false;
    c.update_mode();
    Ok(())
}
