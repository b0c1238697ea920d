//! System instructions: descriptor-table registers, control and debug registers, TLB and
//! cache maintenance (INVLPG, INVPCID), time-stamp counter, SWAPGS, the SMAP flag
//! instructions STAC and CLAC, and the intercepted CPUID, RDMSR, WRMSR and HLT.

use super::segment::{desc_to_seg, read_desc};
use super::{ea, rd, wr};
use crate::cpu::{cr0, cr4, efer, sr, Cpu, Intercept, InterceptKind};
use crate::decode::Op;
use crate::exception::{fault, fault_ec, ud, Ex, GP, NP};
use iced_x86::{Mnemonic, OpKind, Register};
use opsvisor_core::exit::Exit;
use opsvisor_core::mmu::memory::GuestMemory;
use opsvisor_core::ops::Segment;

/// Leave with an intercept exit: RIP stays at the instruction until the core completes it.
pub fn intercept(c: &mut Cpu, op: &Op, kind: InterceptKind, exit: Exit) -> Result<(), Ex> {
    if c.dbg || c.rf & (crate::arith::flags::TF | crate::arith::flags::RF) != 0 {
        intercept_debug(c, op);
    }
    c.intercept = Some(Intercept {
        next_ip: op.next_ip,
        kind,
    });
    Err(c.exit_with(exit))
}

/// The debug work due when the intercepted instruction completes (see
/// `EmuVcpu::intercept_trap`): its I/O breakpoints and, with TF, the single-step (which
/// BTF keeps for branches), and RF to clear. HLT takes no trap: the halt ends with the
/// interrupt the core delivers, as on the VMX backend.
#[cold]
fn intercept_debug(c: &mut Cpu, op: &Op) {
    let mut bits = crate::debug::take_hits(c);
    if c.rf & crate::arith::flags::TF != 0
        && c.debugctl & opsvisor_core::msr::DEBUGCTL_BTF == 0
        && op.i.mnemonic() != Mnemonic::Hlt
    {
        bits |= crate::debug::DR6_BS;
    }
    c.db_after = bits | crate::debug::AFTER_SKIP;
}

/// LGDT / LIDT m.
pub fn lgdt_lidt(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    c.require_cpl0()?;
    if op.i.op_kind(0) != OpKind::Memory {
        return Err(ud());
    }
    let a = ea(c, op);
    let limit = c.rd(mem, op.seg, a, 2)? as u16;
    let base_size = if c.long64() { 8 } else { 4 };
    let mut base = c.rd(mem, op.seg, a.wrapping_add(2) & op.amask, base_size)?;
    if !c.long64()
        && matches!(
            op.i.code(),
            iced_x86::Code::Lgdt_m1632_16 | iced_x86::Code::Lidt_m1632_16
        )
    {
        base &= 0x00ff_ffff;
    }
    // A base loaded in 64-bit mode must be canonical (SDM 2, LGDT/LIDT).
    if c.long64() && !c.canonical_max(base) {
        return Err(GP(0));
    }
    let t = opsvisor_core::ops::DescriptorTable { base, limit };
    if op.i.mnemonic() == Mnemonic::Lgdt {
        c.gdtr = t;
    } else {
        c.idtr = t;
    }
    Ok(())
}

/// SGDT / SIDT m.
pub fn sgdt_sidt(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    if op.i.op_kind(0) != OpKind::Memory {
        return Err(ud());
    }
    if c.cr4 & cr4::UMIP != 0 && c.cpl > 0 {
        return Err(GP(0));
    }
    let t = if op.i.mnemonic() == Mnemonic::Sgdt {
        c.gdtr
    } else {
        c.idtr
    };
    let a = ea(c, op);
    let base_size = if c.long64() { 8 } else { 4 };
    c.wr(mem, op.seg, a, 2, u64::from(t.limit))?;
    c.wr(mem, op.seg, a.wrapping_add(2) & op.amask, base_size, t.base)
}

/// LLDT / LTR r/m16.
pub fn lldt_ltr(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    if !c.protected() {
        return Err(ud());
    }
    c.require_cpl0()?;
    let sel = rd(c, mem, op, 0, 2)? as u16;
    let ltr = op.i.mnemonic() == Mnemonic::Ltr;
    if sel & !3 == 0 {
        if ltr {
            return Err(GP(0));
        }
        c.seg[sr::LDTR as usize] = super::segment::null_seg(sel);
        return Ok(());
    }
    if sel & 4 != 0 {
        return Err(GP(u32::from(sel & !3)));
    }
    let raw = read_desc(c, mem, sel)?;
    let mut seg = desc_to_seg(sel, raw);
    let ty = seg.attr & 0x1f;
    let ok = if ltr {
        // IA-32e mode has no 16-bit TSS.
        ty == 0x09 || (ty == 0x01 && !c.lma())
    } else {
        ty == 0x02
    };
    if !ok {
        return Err(GP(u32::from(sel & !3)));
    }
    if seg.attr & Segment::P == 0 {
        return Err(fault_ec(NP, u32::from(sel & !3)));
    }
    if c.lma() {
        // IA-32e mode: a 16-byte descriptor, whose upper half must lie inside the GDT,
        // have a zero type field (bits 12:8 of its second dword) and give a canonical
        // base (SDM 3A 8.2.3 and the LLDT/LTR pages).
        let hi_at = u64::from(sel & !7) + 8;
        if hi_at + 7 > u64::from(c.gdtr.limit) {
            return Err(GP(u32::from(sel & !3)));
        }
        let hi = c.rd_sys(mem, c.gdtr.base.wrapping_add(hi_at), 8)?;
        if (hi >> 40) & 0x1f != 0 {
            return Err(GP(u32::from(sel & !3)));
        }
        seg.base |= (hi & 0xffff_ffff) << 32;
        if !c.canonical_max(seg.base) {
            return Err(GP(u32::from(sel & !3)));
        }
    }
    if ltr {
        // Mark the TSS busy in the GDT, as the processor does.
        let a = c.gdtr.base.wrapping_add(u64::from(sel & !7) + 5);
        c.wr_sys(mem, a, 1, (raw >> 40) | 2)?;
        seg.attr |= 2;
        c.seg[sr::TR as usize] = seg;
    } else {
        c.seg[sr::LDTR as usize] = seg;
    }
    Ok(())
}

/// SLDT / STR r/m.
pub fn sldt_str(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    if !c.protected() {
        return Err(ud());
    }
    if c.cr4 & cr4::UMIP != 0 && c.cpl > 0 {
        return Err(GP(0));
    }
    let s = if op.i.mnemonic() == Mnemonic::Sldt {
        sr::LDTR
    } else {
        sr::TR
    };
    let v = u64::from(c.seg[usize::from(s)].selector);
    let size = if op.i.op_kind(0) == OpKind::Memory {
        2
    } else {
        u32::from(op.size)
    };
    wr(c, mem, op, 0, size, v)
}

/// SMSW r/m.
pub fn smsw(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    if c.cr4 & cr4::UMIP != 0 && c.cpl > 0 {
        return Err(GP(0));
    }
    let size = if op.i.op_kind(0) == OpKind::Memory {
        2
    } else {
        u32::from(op.size)
    };
    wr(c, mem, op, 0, size, c.cr0)
}

/// LMSW r/m16: loads PE MP EM TS; cannot clear PE.
pub fn lmsw(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    c.require_cpl0()?;
    let v = rd(c, mem, op, 0, 2)?;
    let m = cr0::MP | cr0::EM | cr0::TS;
    let new = (c.cr0 & !m) | (v & m) | (v & cr0::PE) | (c.cr0 & cr0::PE);
    write_cr0(c, new)
}

/// CLTS.
pub fn clts(c: &mut Cpu, _: &mut GuestMemory, _: &Op) -> Result<(), Ex> {
    c.require_cpl0()?;
    c.cr0 &= !cr0::TS;
    Ok(())
}

/// Write CR0 with the architectural checks and the mode changes it implies.
pub fn write_cr0(c: &mut Cpu, v: u64) -> Result<(), Ex> {
    if v >> 32 != 0
        || (v & cr0::PG != 0 && v & cr0::PE == 0)
        || (v & cr0::NW != 0 && v & cr0::CD == 0)
    {
        return Err(GP(0));
    }
    let turning_on = v & cr0::PG != 0 && c.cr0 & cr0::PG == 0;
    let turning_off = v & cr0::PG == 0 && c.cr0 & cr0::PG != 0;
    if turning_on && c.efer & efer::LME != 0 && c.cr4 & cr4::PAE == 0 {
        return Err(GP(0));
    }
    if turning_off && c.long64() {
        return Err(GP(0));
    }
    let changed = c.cr0 ^ v;
    c.cr0 = v | cr0::ET;
    if turning_on && c.efer & efer::LME != 0 {
        c.efer |= efer::LMA;
    }
    if turning_off {
        c.efer &= !efer::LMA;
    }
    if changed & (cr0::PG | cr0::WP | cr0::PE) != 0 {
        c.tlb.flush(true);
    }
    c.update_mode();
    Ok(())
}

/// Write CR4 with the checks of SDM 2, MOV CR: bits of features the CPU model does not
/// offer are reserved, PAE cannot be cleared and LA57 cannot change in IA-32e mode, and
/// PCIDE can be set only in IA-32e mode with CR3[11:0] zero.
pub fn write_cr4(c: &mut Cpu, v: u64) -> Result<(), Ex> {
    let changed = c.cr4 ^ v;
    if v & !c.feat.cr4_allowed != 0
        || (c.lma() && v & cr4::PAE == 0)
        || (c.lma() && changed & cr4::LA57 != 0)
        || (v & changed & cr4::PCIDE != 0 && (!c.lma() || c.cr3 & 0xfff != 0))
    {
        return Err(GP(0));
    }
    c.cr4 = v;
    if changed & cr4::PAGING != 0 {
        c.tlb.flush(true);
        c.new_fetch_epoch();
    }
    c.update_sel();
    c.brk = true;
    Ok(())
}

/// CR3 bits 63 (with PCIDE: do not invalidate) and MAXPHYADDR..=62 in IA-32e mode.
const CR3_RESERVED_LONG: u64 = !((1u64 << opsvisor_core::mmu::walk::MAXPHYADDR) - 1);

/// Write CR3. In IA-32e mode bits above MAXPHYADDR are reserved (#GP), except bit 63
/// with CR4.PCIDE, which asks the processor to keep the translations of the new PCID
/// and is not stored. The emulator's TLB does not tag entries by PCID: every write drops
/// the non-global translations, which the architecture allows (a TLB may always hold
/// less).
pub fn write_cr3(c: &mut Cpu, v: u64) -> Result<(), Ex> {
    let v = if c.lma() {
        let v = if c.cr4 & cr4::PCIDE != 0 {
            v & !(1 << 63)
        } else {
            v
        };
        if v & CR3_RESERVED_LONG != 0 {
            return Err(GP(0));
        }
        v
    } else {
        v & 0xffff_ffff
    };
    c.cr3 = v;
    c.tlb.flush(false);
    c.new_fetch_epoch();
    c.brk = true;
    Ok(())
}

/// MOV to/from CR8 (64-bit mode only): CR8 is the local APIC's TPR, which the core
/// holds, so the access is an intercept exit whatever the value (the core checks it).
fn mov_cr8(c: &mut Cpu, op: &Op, write: bool) -> Result<(), Ex> {
    if !c.long64() {
        return Err(ud());
    }
    let code = if write { op.r[1] } else { op.r[0] };
    let gpr = opsvisor_core::ops::Gpr::from_index(usize::from(code & 0xf)).ok_or_else(ud)?;
    let direction = if write {
        opsvisor_core::exit::Direction::Write
    } else {
        opsvisor_core::exit::Direction::Read
    };
    intercept(c, op, InterceptKind::Plain, Exit::Cr8 { direction, gpr })
}

/// MOV to/from CR0/2/3/4/8 and DR0-7.
pub fn mov_cr_dr(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    c.require_cpl0()?;
    let r0 = op.i.op_register(0);
    let r1 = op.i.op_register(1);
    if r0 == Register::CR8 || r1 == Register::CR8 {
        return mov_cr8(c, op, r0 == Register::CR8);
    }
    let size = if c.long64() { 8 } else { 4 };
    if r0.is_cr() || r0.is_dr() {
        let v = c.get(op.r[1], size);
        match r0 {
            Register::CR0 => write_cr0(c, v)?,
            Register::CR2 => c.cr2 = v,
            Register::CR3 => write_cr3(c, v)?,
            Register::CR4 => write_cr4(c, v)?,
            r if r.is_dr() => {
                let n = dr_index(c, r)?;
                if n >= 6 && v >> 32 != 0 {
                    return Err(GP(0));
                }
                match n {
                    6 => c.dr[6] = dr6_value(v),
                    7 => c.dr[7] = dr7_value(v),
                    // Outside 64-bit mode the register takes the 32-bit value.
                    _ => c.dr[n] = v,
                }
                if n != 6 {
                    crate::debug::update(c);
                }
            }
            _ => return Err(ud()),
        }
    } else {
        let v = match r1 {
            Register::CR0 => c.cr0,
            Register::CR2 => c.cr2,
            Register::CR3 => c.cr3,
            Register::CR4 => c.cr4,
            r if r.is_dr() => {
                let n = dr_index(c, r)?;
                c.dr[n]
            }
            _ => return Err(ud()),
        };
        c.set(op.r[0], size, v);
    }
    Ok(())
}

/// DR6 after a write of `v`: B0-B3, BD, BS and BT (bits 0-3, 13-15) take the value,
/// bits 4-11 and 16-31 read 1, bit 12 and bits 63:32 read 0 (as Bochs models a
/// Pentium or later).
pub fn dr6_value(v: u64) -> u64 {
    (v & 0xe00f) | 0xffff_0ff0
}

/// DR7 after a write of `v`: bit 10 reads 1, bits 12, 14 and 15 and bits 63:32 read 0.
pub fn dr7_value(v: u64) -> u64 {
    (v & 0xffff_2fff) | 0x400
}

/// The debug register a MOV DR names: DR4 and DR5 are DR6 and DR7 without CR4.DE and
/// raise #UD with it. With DR7.GD set any MOV DR raises a #DB fault instead, with BD in
/// DR6 and GD cleared so that the handler may use the registers (SDM 3B 18.2.4).
fn dr_index(c: &mut Cpu, r: Register) -> Result<usize, Ex> {
    let n = (r as u32 - Register::DR0 as u32) as usize;
    let n = match n {
        0..=3 | 6 | 7 => n,
        4 | 5 if c.cr4 & cr4::DE == 0 => n + 2,
        _ => return Err(ud()),
    };
    if c.dr[7] & crate::debug::DR7_GD != 0 {
        c.dr[7] &= !crate::debug::DR7_GD;
        crate::debug::report(c, crate::debug::DR6_BD);
        // A fault, but like an instruction breakpoint without RF in the pushed RFLAGS.
        return Err(fault(crate::exception::DB));
    }
    Ok(n)
}

/// INVPCID r, m128 (SDM 2, INVPCID; the checks in Bochs' order: CPL, the descriptor
/// read, its reserved bits, then the type). The TLB does not tag by PCID, so each type
/// drops at least what it names: type 0 the address's page, types 1 and 3 every
/// non-global translation, type 2 everything.
pub fn invpcid(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    if !c.feat.invpcid {
        return Err(ud());
    }
    if c.rf & crate::arith::flags::VM != 0 {
        return Err(GP(0));
    }
    c.require_cpl0()?;
    let ty = if c.long64() {
        c.get(op.r[0], 8)
    } else {
        c.get(op.r[0], 4)
    };
    let a = ea(c, op);
    let lo = c.rd(mem, op.seg, a, 8)?;
    let hi = c.rd(mem, op.seg, a.wrapping_add(8) & op.amask, 8)?;
    if lo > 0xfff {
        return Err(GP(0));
    }
    let pcid = lo;
    let pcide = c.cr4 & cr4::PCIDE != 0;
    match ty {
        0 => {
            // Checked against the widest linear address, as for INVLPG and the bases.
            if !c.canonical_max(hi) || (!pcide && pcid != 0) {
                return Err(GP(0));
            }
            c.tlb.flush_page(hi);
        }
        1 => {
            if !pcide && pcid != 0 {
                return Err(GP(0));
            }
            c.tlb.flush(false);
        }
        2 => c.tlb.flush(true),
        3 => c.tlb.flush(false),
        _ => return Err(GP(0)),
    }
    c.new_fetch_epoch();
    c.brk = true;
    Ok(())
}

/// STAC / CLAC: set or clear RFLAGS.AC, the override of SMAP for explicit supervisor
/// accesses (#UD without SMAP in the CPU model, at CPL > 0, and in virtual-8086 mode).
pub fn stac_clac(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    if !c.feat.smap || c.cpl > 0 || c.rf & crate::arith::flags::VM != 0 {
        return Err(ud());
    }
    let ac = crate::arith::flags::AC;
    if op.i.mnemonic() == Mnemonic::Stac {
        c.rf |= ac;
    } else {
        c.rf &= !ac;
    }
    c.update_sel();
    Ok(())
}

/// VMCALL and VMMCALL: the hypercall, an exit to the core at any privilege level and in
/// every mode, as either instruction is under a hypervisor (the core answers with KVM's
/// ABI, [`opsvisor_core::exits::hypercall`]).
pub fn hypercall(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    intercept(c, op, InterceptKind::Plain, Exit::Hypercall)
}

/// INVLPG m.
pub fn invlpg(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    c.require_cpl0()?;
    let a = ea(c, op);
    let la = c.linear(op.seg, a, 1, false).unwrap_or(a);
    c.tlb.flush_page(la);
    c.new_fetch_epoch();
    c.brk = true;
    Ok(())
}

/// WBINVD / INVD / WBNOINVD: privileged no-ops (no cache to flush).
pub fn cache_flush(c: &mut Cpu, _: &mut GuestMemory, _: &Op) -> Result<(), Ex> {
    c.require_cpl0()
}

/// CLFLUSH / CLFLUSHOPT / CLWB: no cache to write back, but the address is checked as a
/// one-byte read (segment limits, canonical form, paging: a non-present page raises #PF,
/// SDM 2 "CLFLUSH"), without reading it (an MMIO address has no side effect).
pub fn cache_line_flush(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let a = ea(c, op);
    let la = c.linear(op.seg, a, 1, false)?;
    let sel = c.tlb.sel;
    c.translate(mem, la, crate::mem::Kind::Read, sel)?;
    Ok(())
}

/// RDTSC: the guest TSC, one tick per retired instruction since the core's last sync.
pub fn rdtsc(c: &mut Cpu, _: &mut GuestMemory, _: &Op) -> Result<(), Ex> {
    if c.cr4 & cr4::TSD != 0 && c.cpl > 0 && c.protected() {
        return Err(GP(0));
    }
    let t = c.tsc();
    c.set(0, 4, t);
    c.set(2, 4, t >> 32);
    Ok(())
}

/// RDTSCP: RDTSC plus TSC_AUX in ECX (#UD without RDTSCP in the CPU model).
pub fn rdtscp(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    if !c.feat.rdtscp {
        return Err(ud());
    }
    rdtsc(c, mem, op)?;
    c.set(1, 4, c.tsc_aux);
    Ok(())
}

/// RDPID r: TSC_AUX, zero-extended (#UD without RDPID in the CPU model). The register
/// is 64 bits wide in 64-bit mode and 32 bits elsewhere.
pub fn rdpid(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    if !c.feat.rdpid {
        return Err(ud());
    }
    let size = if c.long64() { 8 } else { 4 };
    c.set(op.r[0], size, c.tsc_aux & 0xffff_ffff);
    Ok(())
}

/// SWAPGS (64-bit mode, CPL 0).
pub fn swapgs(c: &mut Cpu, _: &mut GuestMemory, _: &Op) -> Result<(), Ex> {
    if !c.long64() {
        return Err(ud());
    }
    c.require_cpl0()?;
    core::mem::swap(&mut c.seg[sr::GS as usize].base, &mut c.kernel_gs_base);
    Ok(())
}

/// RDFSBASE RDGSBASE WRFSBASE WRGSBASE (need CR4.FSGSBASE and 64-bit mode).
pub fn fsgsbase(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    if !c.long64() || c.cr4 & cr4::FSGSBASE == 0 {
        return Err(ud());
    }
    let size = u32::from(op.size);
    let (s, write) = match op.i.mnemonic() {
        Mnemonic::Rdfsbase => (sr::FS, false),
        Mnemonic::Rdgsbase => (sr::GS, false),
        Mnemonic::Wrfsbase => (sr::FS, true),
        _ => (sr::GS, true),
    };
    if write {
        let v = c.get(op.r[0], size);
        if !c.canonical_max(v) {
            return Err(GP(0));
        }
        c.seg[usize::from(s)].base = v;
    } else {
        let v = c.seg[usize::from(s)].base;
        c.set(op.r[0], size, v);
    }
    Ok(())
}

/// CPUID: an exit; the core fills EAX..EDX and skips.
pub fn cpuid(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    intercept(c, op, InterceptKind::Plain, Exit::Cpuid)
}

/// RDMSR: #GP at CPL > 0, else an exit.
pub fn rdmsr(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    c.require_cpl0()?;
    let index = c.gpr[1] as u32;
    intercept(c, op, InterceptKind::Plain, Exit::Rdmsr { index })
}

/// WRMSR: #GP at CPL > 0, else an exit.
pub fn wrmsr(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    c.require_cpl0()?;
    let index = c.gpr[1] as u32;
    let value = (c.gpr[0] & 0xffff_ffff) | (c.gpr[2] << 32);
    intercept(c, op, InterceptKind::Plain, Exit::Wrmsr { index, value })
}

/// HLT: #GP at CPL > 0, else an exit.
pub fn hlt(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    c.require_cpl0()?;
    intercept(c, op, InterceptKind::Plain, Exit::Hlt)
}

/// PAUSE: the spin-wait hint, an exit when the core asked for PAUSE exits (at any CPL,
/// as VMX's PAUSE exiting).
pub fn pause(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    if c.pause_exits {
        intercept(c, op, InterceptKind::Plain, Exit::Pause)
    } else {
        Ok(())
    }
}
