//! Privileged and system instructions run at CPL 0: CPUID, RDMSR/WRMSR, control
//! registers, descriptor-table registers, cache and TLB maintenance, and the instructions
//! that must fault in a guest (VMX, XSETBV, SYSENTER with SYSENTER_CS = 0).
//!
//! Every write keeps the environment usable: CR0/CR4 change one allowed bit by
//! read-modify-write, CR3 gets the current root or the mode's alternate one, GDTR/IDTR
//! are reloaded with what SGDT/SIDT just stored, SYSENTER_CS keeps bits 15:2 clear.

use super::emit::{self, Gen};
use crate::case::{Item, Mode};
use crate::layout::{MSRS, PAE_PDPT, PAE_PDPT_ALT, PD32, PD32_ALT, PML4, PML4_ALT};
use alloc::vec;
use alloc::vec::Vec;
use iced_x86::{Code, Instruction, Register};

/// A system group.
pub(crate) fn group(g: &mut Gen) -> Option<Vec<Item>> {
    match g.weighted(&[
        (4, 0u8),
        (6, 1),
        (3, 2),
        (3, 3),
        (2, 4),
        (2, 5),
        (3, 6),
        (2, 7),
        (2, 8),
        (2, 9),
        (2, 10),
        (2, 11),
    ]) {
        0 => cpuid(g),
        1 => msr(g),
        2 => read_cr(g),
        3 => write_cr0_cr4(g),
        4 => write_cr3(g),
        5 if g.long() => cr8(g),
        5 => read_cr(g),
        6 => msw(g),
        7 => tables(g),
        8 => cache(g),
        9 => vmx(g),
        10 => interrupt_flag(g),
        _ => misc(g),
    }
}

/// The push/pop of RBX around CPUID, which writes EBX.
fn rbx_codes(mode: Mode) -> (Code, Code, Register) {
    if mode == Mode::Long64 {
        (Code::Push_r64, Code::Pop_r64, Register::RBX)
    } else {
        (Code::Push_r32, Code::Pop_r32, Register::EBX)
    }
}

/// `push rbx; mov eax, leaf; [mov ecx, subleaf;] cpuid; pop rbx`.
fn cpuid(g: &mut Gen) -> Option<Vec<Item>> {
    let mode = g.mode;
    let (push, pop, rbx) = rbx_codes(mode);
    let leaf = if g.chance(1, 6) {
        g.value(32) as u32
    } else {
        g.pick(&[0, 1, 7, 0xd, 0x8000_0000, 0x8000_0001, 0x8000_0008])
    };
    let mut items = vec![
        emit::item(mode, Instruction::with1(push, rbx))?,
        emit::mov_imm32(mode, Register::EAX, leaf)?,
    ];
    if g.chance(3, 4) {
        items.push(emit::mov_imm32(mode, Register::ECX, g.below(4) as u32)?);
    }
    items.push(emit::bare(mode, Code::Cpuid)?);
    items.push(emit::item(mode, Instruction::with1(pop, rbx))?);
    Some(items)
}

/// A value for WRMSR: boundary values, random, and non-canonical addresses.
fn msr_value(g: &mut Gen) -> u64 {
    match g.below(6) {
        0 => 0x0000_8000_0000_0000,
        1 => 0xffff_7fff_ffff_f000,
        2 => 0xffff_8000_0000_0000 | (g.next() & 0xffff_ffff),
        3 => g.next() & 0x7fff_ffff_ffff,
        _ => g.value(64),
    }
}

/// RDMSR/WRMSR on the backend-held MSRs, a few others and invalid indices.
fn msr(g: &mut Gen) -> Option<Vec<Item>> {
    let mode = g.mode;
    const EFER: u32 = 0xc000_0080;
    const SYSENTER_CS: u32 = 0x174;
    let index = match g.below(10) {
        0..=4 => g.pick(&MSRS).0,
        5 => EFER,
        6 => 0x1b,
        7 => g.pick(&[0x1a0, 0xfe, 0x2ff]),
        _ => g.pick(&[0x1234_5678, 0xc000_1000, 0x4000_0000, 0xc001_0000]),
    };
    let mut items = vec![emit::mov_imm32(mode, Register::ECX, index)?];
    let rdmsr = emit::bare(mode, Code::Rdmsr)?;
    let wrmsr = emit::bare(mode, Code::Wrmsr)?;
    let write = g.chance(1, 2);
    if !write {
        items.push(rdmsr);
        return Some(items);
    }
    match index {
        // EFER: toggle SCE or NXE only.
        EFER => {
            let bit = g.pick(&[1u32, 1 << 11]);
            items.push(rdmsr);
            items.push(emit::item(
                mode,
                Instruction::with2(Code::Xor_rm32_imm32, Register::EAX, bit),
            )?);
            items.push(wrmsr);
        }
        // Read-only (APIC base is read here, not moved) or behaviour-changing
        // (MISC_ENABLE, MTRRcap): write back what was read.
        0x1b | 0x1a0 | 0xfe => {
            items.push(rdmsr);
            items.push(wrmsr);
        }
        _ => {
            let mut v = msr_value(g);
            if index == SYSENTER_CS {
                // Keep SYSENTER faulting: a non-null SYSENTER_CS would make it jump.
                v &= !0xfffc;
            }
            if index == 0x2ff && g.chance(1, 2) {
                v = g.pick(&[0, 6, 0x806, 0xc06, 0xc00]);
            }
            items.push(emit::mov_imm32(mode, Register::EAX, v as u32)?);
            items.push(emit::mov_imm32(mode, Register::EDX, (v >> 32) as u32)?);
            items.push(wrmsr);
        }
    }
    Some(items)
}

fn cr_codes(mode: Mode) -> (Code, Code, u32) {
    if mode == Mode::Long64 {
        (Code::Mov_r64_cr, Code::Mov_cr_r64, 8)
    } else {
        (Code::Mov_r32_cr, Code::Mov_cr_r32, 4)
    }
}

/// `mov r, cr0/cr2/cr3/cr4`.
fn read_cr(g: &mut Gen) -> Option<Vec<Item>> {
    let (read, _, size) = cr_codes(g.mode);
    let cr = g.pick(&[Register::CR0, Register::CR2, Register::CR3, Register::CR4]);
    let r = emit::scratch(g, size);
    Some(vec![emit::item(g.mode, Instruction::with2(read, r, cr))?])
}

/// `mov r, cr0/cr4; xor r, bit; mov cr0/cr4, r` for one allowed bit.
fn write_cr0_cr4(g: &mut Gen) -> Option<Vec<Item>> {
    let mode = g.mode;
    let (read, write, size) = cr_codes(mode);
    let paging = matches!(
        mode,
        Mode::Paged32 | Mode::Pae32 | Mode::Long64 | Mode::Compat32
    );
    let (cr, bit) = if g.chance(1, 2) {
        // TS, MP, EM, NE, AM, WP.
        (Register::CR0, g.pick(&[3u32, 1, 2, 5, 18, 16]))
    } else if g.chance(1, 2) {
        // The bits of the CPU model's features (UMIP, LA57, FSGSBASE, PCIDE, OSXSAVE,
        // PKE): set where the model offers the feature and the mode allows it, #GP(0)
        // elsewhere. SMEP and SMAP are left out: the environment's code, stacks and
        // descriptor tables sit on user pages, so an event after either is set runs into
        // a chain of faults to shutdown (SMAP: the IDT read is an implicit supervisor
        // access, SDM 3A 4.6) whose intermediate state the VMX guest under Bochs and the
        // emulator do not reach alike (seed 7: SMAP set, then #GP: the emulator faults on
        // the IDT read, the VMX guest under Bochs delivers the #GP; SMEP set: every
        // handler fetch faults again, the frames run down the stack over the page tables,
        // and what follows depends on what each TLB still holds). The corpus guest
        // cpu_features checks both features on both backends with supervisor tables.
        (Register::CR4, g.pick(&[11u32, 12, 16, 17, 18, 22]))
    } else if paging {
        // DE, PGE, OSFXSR, OSXMMEXCPT, TSD.
        (Register::CR4, g.pick(&[3u32, 7, 9, 10, 2]))
    } else {
        (Register::CR4, g.pick(&[3u32, 9, 10, 2]))
    };
    let r = emit::scratch(g, size);
    Some(vec![
        emit::item(mode, Instruction::with2(read, r, cr))?,
        emit::item(
            mode,
            Instruction::with2(Code::Xor_rm32_imm32, emit::reg32(r), 1u32 << bit),
        )?,
        emit::item(mode, Instruction::with2(write, cr, r))?,
    ])
}

/// `mov eax, root; mov cr3, rax` with the current root or the alternate one.
fn write_cr3(g: &mut Gen) -> Option<Vec<Item>> {
    let mode = g.mode;
    let (_, write, size) = cr_codes(mode);
    let roots: &[u64] = match mode {
        Mode::Long64 | Mode::Compat32 => &[PML4, PML4_ALT],
        Mode::Paged32 => &[PD32, PD32_ALT],
        Mode::Pae32 => &[PAE_PDPT, PAE_PDPT_ALT],
        // Paging off: CR3 is only held.
        Mode::Real | Mode::Protected32 => &[0, PD32_ALT, PML4_ALT],
    };
    let root = g.pick(roots);
    let r = emit::scratch(g, size);
    Some(vec![
        emit::mov_imm32(mode, emit::reg32(r), root as u32)?,
        emit::item(mode, Instruction::with2(write, Register::CR3, r))?,
    ])
}

/// CR8 (64-bit): read, or write 0..=15 (and sometimes 16: #GP).
fn cr8(g: &mut Gen) -> Option<Vec<Item>> {
    let mode = g.mode;
    let r = emit::scratch(g, 8);
    if g.chance(1, 2) {
        return Some(vec![emit::item(
            mode,
            Instruction::with2(Code::Mov_r64_cr, r, Register::CR8),
        )?]);
    }
    let v = if g.chance(1, 8) {
        16
    } else {
        g.below(16) as u32
    };
    Some(vec![
        emit::mov_imm32(mode, emit::reg32(r), v)?,
        emit::item(mode, Instruction::with2(Code::Mov_cr_r64, Register::CR8, r))?,
    ])
}

/// CLTS, LMSW (from a register; real mode keeps PE clear), SMSW to a register or memory.
fn msw(g: &mut Gen) -> Option<Vec<Item>> {
    let mode = g.mode;
    match g.below(4) {
        0 => Some(vec![emit::bare(mode, Code::Clts)?]),
        1 => {
            let r = emit::scratch(g, 4);
            let mut v = g.below(16) as u32 | (g.value(16) as u32 & !0xf);
            if mode == Mode::Real {
                // LMSW can set PE: that would leave real mode mid-case.
                v &= !1;
            }
            Some(vec![
                emit::mov_imm32(mode, r, v)?,
                emit::item(mode, Instruction::with1(Code::Lmsw_rm16, emit::reg16(r)))?,
            ])
        }
        2 => Some(vec![emit::item(
            mode,
            Instruction::with1(Code::Smsw_rm16, emit::mem(g)),
        )?]),
        _ => {
            let size = if g.long() {
                g.pick(&[2u32, 4, 8])
            } else {
                g.pick(&[2u32, 4])
            };
            let code = match size {
                2 => Code::Smsw_rm16,
                4 => Code::Smsw_r32m16,
                _ => Code::Smsw_r64m16,
            };
            Some(vec![emit::item(
                mode,
                Instruction::with1(code, emit::scratch(g, size)),
            )?])
        }
    }
}

/// SGDT/SIDT to `[rbx+d]`, optionally followed by LGDT/LIDT from the same place.
fn tables(g: &mut Gen) -> Option<Vec<Item>> {
    let mode = g.mode;
    let gdt = g.chance(1, 2);
    let (store, load) = match (mode.bitness(), gdt) {
        (16, true) => (Code::Sgdt_m1632_16, Code::Lgdt_m1632_16),
        (16, false) => (Code::Sidt_m1632_16, Code::Lidt_m1632_16),
        (32, true) => (Code::Sgdt_m1632, Code::Lgdt_m1632),
        (32, false) => (Code::Sidt_m1632, Code::Lidt_m1632),
        (_, true) => (Code::Sgdt_m1664, Code::Lgdt_m1664),
        (_, false) => (Code::Sidt_m1664, Code::Lidt_m1664),
    };
    let d = g.range(-128, 117);
    let mut items = vec![emit::item(
        mode,
        Instruction::with1(store, emit::mem_at(mode, d)),
    )?];
    if g.chance(1, 2) {
        items.push(emit::item(
            mode,
            Instruction::with1(load, emit::mem_at(mode, d)),
        )?);
    }
    Some(items)
}

/// INVLPG `[rbx+d]`, WBINVD, INVD.
fn cache(g: &mut Gen) -> Option<Vec<Item>> {
    let mode = g.mode;
    let item = match g.below(3) {
        0 => emit::item(mode, Instruction::with1(Code::Invlpg_m, emit::mem(g)))?,
        1 => emit::bare(mode, Code::Wbinvd)?,
        _ => emit::bare(mode, Code::Invd)?,
    };
    Some(vec![item])
}

/// VMX instructions (a guest gets #UD for each).
fn vmx(g: &mut Gen) -> Option<Vec<Item>> {
    let mode = g.mode;
    let long = g.long();
    let item = match g.below(11) {
        0 => emit::bare(mode, Code::Vmcall)?,
        1 => emit::bare(mode, Code::Vmlaunch)?,
        2 => emit::bare(mode, Code::Vmresume)?,
        3 => emit::bare(mode, Code::Vmxoff)?,
        4 => emit::item(mode, Instruction::with1(Code::Vmptrld_m64, emit::mem(g)))?,
        5 => emit::item(mode, Instruction::with1(Code::Vmclear_m64, emit::mem(g)))?,
        6 => emit::item(mode, Instruction::with1(Code::Vmptrst_m64, emit::mem(g)))?,
        7 => emit::item(mode, Instruction::with1(Code::Vmxon_m64, emit::mem(g)))?,
        8 => {
            let (code, size) = if long {
                (Code::Invept_r64_m128, 8)
            } else {
                (Code::Invept_r32_m128, 4)
            };
            let r = emit::scratch(g, size);
            emit::item(mode, Instruction::with2(code, r, emit::mem(g)))?
        }
        9 => {
            let (code, size) = if long {
                (Code::Vmread_rm64_r64, 8)
            } else {
                (Code::Vmread_rm32_r32, 4)
            };
            let dst = emit::scratch(g, size);
            let src = emit::scratch(g, size);
            emit::item(mode, Instruction::with2(code, dst, src))?
        }
        _ => {
            let (code, size) = if long {
                (Code::Vmwrite_r64_rm64, 8)
            } else {
                (Code::Vmwrite_r32_rm32, 4)
            };
            let dst = emit::scratch(g, size);
            emit::item(mode, Instruction::with2(code, dst, emit::mem(g)))?
        }
    };
    Some(vec![item])
}

/// CLI or STI.
fn interrupt_flag(g: &mut Gen) -> Option<Vec<Item>> {
    let code = if g.chance(1, 2) { Code::Cli } else { Code::Sti };
    Some(vec![emit::bare(g.mode, code)?])
}

/// XSETBV/XGETBV (#UD: CR4.OSXSAVE is clear), SWAPGS (64-bit), SYSENTER (#GP), STAC
/// and CLAC (SMAP), RDFSBASE/RDGSBASE (64-bit; #UD without CR4.FSGSBASE) and INVPCID of
/// a type from 0 to 4.
fn misc(g: &mut Gen) -> Option<Vec<Item>> {
    let mode = g.mode;
    let code = match g.below(8) {
        0 => Code::Xsetbv,
        1 => Code::Xgetbv,
        2 if g.long() => Code::Swapgs,
        3 => Code::Stac,
        4 => Code::Clac,
        5 if g.long() => {
            let code = if g.chance(1, 2) {
                Code::Rdfsbase_r64
            } else {
                Code::Rdgsbase_r64
            };
            let r = emit::scratch(g, 8);
            return Some(vec![emit::item(mode, Instruction::with1(code, r))?]);
        }
        6 => {
            let (code, size) = if g.long() {
                (Code::Invpcid_r64_m128, 8)
            } else {
                (Code::Invpcid_r32_m128, 4)
            };
            let r = emit::scratch(g, size);
            let ty = g.below(5) as u32;
            return Some(vec![
                emit::mov_imm32(mode, emit::reg32(r), ty)?,
                emit::item(mode, Instruction::with2(code, r, emit::mem(g)))?,
            ]);
        }
        _ => Code::Sysenter,
    };
    Some(vec![emit::bare(mode, code)?])
}
