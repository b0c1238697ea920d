//! The host code of a translated run (see [`super`]).
//!
//! Layout: save the callee-saved host registers the run uses; load the guest's status
//! flags (POPFQ) if the run needs them; load the guest registers it reads; the
//! instructions; store the guest registers it writes; return the flags (PUSHFQ). Each
//! memory access checks the software TLB first, as [`Cpu::fast_host`] does, and uses the
//! host page directly when the entry allows it; otherwise it leaves through its own exit
//! (`bail`), which stores what the run has done so far and reports the instruction, so
//! that the interpreter runs it and everything after it.
//!
//! [`Cpu::fast_host`]: crate::cpu::Cpu::fast_host

use super::{
    gpr, r64, JitCtx, OfFix, OfRule, Use, BRANCH, CALLEE_SAVED, FLAGS_IN, LOOP, RDI, RSP, STATUS,
};
use crate::decode::Op;
use crate::tlb::TlbEntry;
use alloc::vec::Vec;
use iced_x86::code_asm::{CodeAssembler, CodeLabel};
use iced_x86::{Code, ConditionCode, Instruction, MemoryOperand, OpKind, Register, RflagsBits};

/// System V scratch registers a memory access may use without saving them when the run
/// does not: RDI and RSI hold the arguments only until the run's start, RCX a loop's
/// count only while it saves it, RAX the flags only after the run.
const FREE_SCRATCH: [usize; 9] = [0, 1, 2, 6, 7, 8, 9, 10, 11];

/// Append `i`, if it could be made (`None` when not: the run stays interpreted).
fn add(a: &mut CodeAssembler, i: Result<Instruction, iced_x86::IcedError>) -> Option<()> {
    i.ok().and_then(|i| a.add_instruction(i).ok())
}

/// A jump to `l` on condition `cc`.
fn jump_if(a: &mut CodeAssembler, cc: ConditionCode, l: CodeLabel) -> Option<()> {
    use ConditionCode as C;
    match cc {
        C::o => a.jo(l),
        C::no => a.jno(l),
        C::b => a.jb(l),
        C::ae => a.jae(l),
        C::e => a.je(l),
        C::ne => a.jne(l),
        C::be => a.jbe(l),
        C::a => a.ja(l),
        C::s => a.js(l),
        C::ns => a.jns(l),
        C::p => a.jp(l),
        C::np => a.jnp(l),
        C::l => a.jl(l),
        C::ge => a.jge(l),
        C::le => a.jle(l),
        C::g => a.jg(l),
        C::None => return None,
    }
    .ok()
}

/// `r` with the guest's RSP renamed to host register `sp`.
fn rename(r: Register, sp: usize) -> Register {
    if r == Register::None || !r.is_gpr() || r.full_register() != Register::RSP {
        return r;
    }
    gpr(r.size() as u32, sp)
}

/// Displacement of [`JitCtx`] field at `field` (an offset in it) from `Cpu::gpr`.
fn ctx_disp(field: usize) -> i64 {
    let ctx = core::mem::offset_of!(crate::cpu::Cpu, jit) as i64;
    let gpr = core::mem::offset_of!(crate::cpu::Cpu, gpr) as i64;
    ctx - gpr + field as i64
}

/// What one memory access needs to know about the run around it.
struct Site {
    /// Guest registers written by the instructions before it.
    written: u16,
    /// The host's flags hold the guest's at this point.
    flags_valid: bool,
    /// The interpreter's AF here, when the last instruction to write AF left it
    /// undefined.
    af: Option<bool>,
    /// How to compute the interpreter's OF here, when the last instruction to write OF
    /// left it undefined.
    of: Option<OfFix>,
    /// Some status flag is read after the access before being written, or reaches the
    /// run's end or a later access: the flags must survive the TLB check.
    flags_live: bool,
}

/// The host code of run `ops`, whose instructions use registers and flags as `uses`
/// says, with flag mode `flags`. `None` if an instruction cannot be encoded once renamed
/// (a high-byte register next to one that needs a REX prefix).
pub(super) fn emit(ops: &[Op], uses: &[Use], flags: u8) -> Option<Vec<u8>> {
    let (regs, load, writes) = super::run_registers(uses);
    let looping = flags & LOOP != 0;
    // A loop goes round with every register in the host's: all are loaded first, and an
    // access that stops it stores all it writes.
    let load = if looping { regs } else { load };
    // Host registers free for the pointer to the guest's and for the guest's RSP, the
    // System V scratch registers first; not RCX, which a loop's count goes through
    // (JRCXZ leaves the flags alone).
    let order = [
        11usize,
        10,
        9,
        8,
        super::RSI,
        RDI,
        2,
        0,
        3,
        5,
        12,
        13,
        14,
        15,
    ];
    let mut free = order.iter().copied().filter(|&h| regs & (1 << h) == 0);
    let base = free.next()?;
    let sp = if regs & (1 << RSP) != 0 {
        free.next()?
    } else {
        RSP
    };
    let host_of = |g: usize| if g == RSP { sp } else { g };
    let mut host_used = 1u16 << base;
    for g in 0..16 {
        if regs & (1 << g) != 0 {
            host_used |= 1 << host_of(g);
        }
    }
    let saved: Vec<usize> = (0..16)
        .filter(|&h| CALLEE_SAVED & host_used & (1 << h) != 0)
        .collect();
    let slot = |g: usize| MemoryOperand::with_base_displ(r64(base), 8 * g as i64);
    let ctx = |field: usize| MemoryOperand::with_base_displ(r64(base), ctx_disp(field));

    let mut a = CodeAssembler::new(64).ok()?;
    for &h in &saved {
        add(&mut a, Instruction::with1(Code::Push_r64, r64(h)))?;
    }
    if flags & FLAGS_IN != 0 {
        add(&mut a, Instruction::with1(Code::Push_r64, Register::RSI))?;
        add(&mut a, Ok(Instruction::with(Code::Popfq)))?;
    }
    if base != RDI {
        add(
            &mut a,
            Instruction::with2(Code::Mov_r64_rm64, r64(base), Register::RDI),
        )?;
    }
    for g in 0..16 {
        if load & (1 << g) != 0 {
            add(
                &mut a,
                Instruction::with2(Code::Mov_r64_rm64, r64(host_of(g)), slot(g)),
            )?;
        }
    }
    let sites = sites(uses, flags);
    let mut epilogue = a.create_label();
    let mut top = a.create_label();
    if looping {
        a.set_label(&mut top).ok()?;
    }
    let branch = uses.last().and_then(|u| u.branch);
    // Each access's exit, emitted after the main path: (label, instruction index, the
    // scratch registers pushed, whether the flags were pushed).
    let mut bails = Vec::new();
    // Each Jcc's that leaves the run: (label, instruction index, target, its site).
    let mut exits = Vec::new();
    for (k, (op, u)) in ops.iter().zip(uses).enumerate() {
        if u.branch.is_some() {
            // The block's Jcc: decided after the run (below).
            continue;
        }
        if let (Some((cc, target)), Some(site)) = (u.exit, sites[k].as_ref()) {
            let l = a.create_label();
            jump_if(&mut a, cc, l)?;
            exits.push((l, k, target, site));
            continue;
        }
        let mut i = op.i;
        if sp != RSP {
            for n in 0..i.op_count() {
                if i.op_kind(n) == OpKind::Register {
                    i.set_op_register(n, rename(i.op_register(n), sp));
                }
            }
            if i.op_kinds().any(|k| k == OpKind::Memory) {
                i.set_memory_base(rename(i.memory_base(), sp));
                i.set_memory_index(rename(i.memory_index(), sp));
            }
        }
        let (Some(acc), Some(site)) = (u.mem, sites[k].as_ref()) else {
            a.add_instruction(i).ok()?;
            continue;
        };
        // Three scratch registers the instruction does not use: first the System V
        // scratch registers the run leaves alone, which need no saving, then others,
        // saved around it.
        let mut instr_host = 1u16 << base | 1 << RSP;
        for g in 0..16 {
            if u.regs & (1 << g) != 0 {
                instr_host |= 1 << host_of(g);
            }
        }
        let free = |h: usize| FREE_SCRATCH.contains(&h) && host_used & (1 << h) == 0;
        let free_scratch = FREE_SCRATCH.into_iter().filter(|&h| free(h));
        let saved_scratch = [0usize, 3, 6, 7, 1, 2, 5, 8, 9, 10, 11, 12, 13, 14, 15]
            .into_iter()
            .filter(|&h| !free(h));
        let mut scratch = free_scratch
            .map(|h| (h, false))
            .chain(saved_scratch.map(|h| (h, true)))
            .filter(|&(h, _)| instr_host & (1 << h) == 0);
        let (t1, t2, t3) = (scratch.next()?, scratch.next()?, scratch.next()?);
        let pushed: Vec<usize> = [t1, t2, t3]
            .into_iter()
            .filter(|&(_, p)| p)
            .map(|(h, _)| h)
            .collect();
        let (t1, t2, t3) = (t1.0, t2.0, t3.0);
        for &t in &pushed {
            add(&mut a, Instruction::with1(Code::Push_r64, r64(t)))?;
        }
        if site.flags_valid {
            add(&mut a, Ok(Instruction::with(Code::Pushfq)))?;
        }
        let bail = a.create_label();
        bails.push((bail, k, pushed.clone(), site));
        // T1: the linear address.
        if op.i.is_ip_rel_memory_operand() {
            let target = op.i.memory_displacement64();
            add(
                &mut a,
                Instruction::with2(Code::Mov_r64_imm64, r64(t1), target),
            )?;
        } else {
            // Displacement size 1: the encoder's choice (8 bits if it fits); an address
            // without registers needs its 32 bits.
            let no_registers =
                i.memory_base() == Register::None && i.memory_index() == Register::None;
            let mut m = MemoryOperand::with_base_index_scale_displ_size(
                i.memory_base(),
                i.memory_index(),
                i.memory_index_scale(),
                i.memory_displacement64() as i64,
                if no_registers { 4 } else { 1 },
            );
            // 32-bit addressing truncates; LEA of a 64-bit register zero-extends it.
            if matches!(i.memory_base().size(), 4) || matches!(i.memory_index().size(), 4) {
                m.displacement = i64::from(i.memory_displacement32() as i32);
            }
            add(&mut a, Instruction::with2(Code::Lea_r64_m, r64(t1), m))?;
        }
        match op.i.memory_segment() {
            Register::FS => add(
                &mut a,
                Instruction::with2(Code::Add_r64_rm64, r64(t1), ctx(JitCtx::FS_BASE)),
            )?,
            Register::GS => add(
                &mut a,
                Instruction::with2(Code::Add_r64_rm64, r64(t1), ctx(JitCtx::GS_BASE)),
            )?,
            _ => {}
        }
        if acc.size > 1 {
            // At CPL 3 an unaligned access takes the checked path (alignment checks).
            let mut aligned = a.create_label();
            add(
                &mut a,
                Instruction::with2(Code::Test_rm8_imm8, ctx(JitCtx::USER), 1),
            )?;
            a.jz(aligned).ok()?;
            add(
                &mut a,
                Instruction::with2(Code::Test_rm64_imm32, r64(t1), acc.size as i32 - 1),
            )?;
            a.jnz(bail).ok()?;
            a.set_label(&mut aligned).ok()?;
        }
        // T2: the TLB entry of the page.
        add(
            &mut a,
            Instruction::with2(Code::Mov_r64_rm64, r64(t2), r64(t1)),
        )?;
        add(&mut a, Instruction::with2(Code::Shr_rm64_imm8, r64(t2), 12))?;
        add(
            &mut a,
            Instruction::with2(
                Code::And_rm64_imm32,
                r64(t2),
                (crate::tlb::TLB_ENTRIES - 1) as i32,
            ),
        )?;
        const _: () = assert!(core::mem::size_of::<TlbEntry>() == 32);
        add(&mut a, Instruction::with2(Code::Shl_rm64_imm8, r64(t2), 5))?;
        add(
            &mut a,
            Instruction::with2(Code::Add_r64_rm64, r64(t2), ctx(JitCtx::TLB)),
        )?;
        // T3: the tag a current entry for the page of the last byte carries.
        add(
            &mut a,
            Instruction::with2(
                Code::Lea_r64_m,
                r64(t3),
                MemoryOperand::with_base_displ(r64(t1), i64::from(acc.size) - 1),
            ),
        )?;
        add(
            &mut a,
            Instruction::with2(Code::And_rm64_imm32, r64(t3), -4096),
        )?;
        add(
            &mut a,
            Instruction::with2(Code::Or_r64_rm64, r64(t3), ctx(JitCtx::EPOCH)),
        )?;
        let tag = if acc.write {
            core::mem::offset_of!(TlbEntry, write)
        } else {
            core::mem::offset_of!(TlbEntry, read)
        };
        add(
            &mut a,
            Instruction::with2(
                Code::Cmp_r64_rm64,
                r64(t3),
                MemoryOperand::with_base_displ(r64(t2), tag as i64),
            ),
        )?;
        a.jne(bail).ok()?;
        // T3: the host address.
        let addend = core::mem::offset_of!(TlbEntry, addend) as i64;
        add(
            &mut a,
            Instruction::with2(
                Code::Mov_r64_rm64,
                r64(t3),
                MemoryOperand::with_base_displ(r64(t2), addend),
            ),
        )?;
        add(
            &mut a,
            Instruction::with2(Code::Add_r64_rm64, r64(t3), r64(t1)),
        )?;
        if site.flags_valid {
            if site.flags_live {
                add(&mut a, Ok(Instruction::with(Code::Popfq)))?;
            } else {
                add(
                    &mut a,
                    Instruction::with2(
                        Code::Lea_r64_m,
                        Register::RSP,
                        MemoryOperand::with_base_displ(Register::RSP, 8),
                    ),
                )?;
            }
        }
        i.set_memory_base(r64(t3));
        i.set_memory_index(Register::None);
        i.set_memory_index_scale(1);
        i.set_memory_displacement64(0);
        i.set_memory_displ_size(0);
        i.set_segment_prefix(Register::None);
        a.add_instruction(i).ok()?;
        for &t in pushed.iter().rev() {
            add(&mut a, Instruction::with1(Code::Pop_r64, r64(t)))?;
        }
    }
    let taken_field = |v: u32| {
        Instruction::with2(
            Code::Mov_rm32_imm32,
            MemoryOperand::with_base_displ(r64(base), ctx_disp(JitCtx::TAKEN)),
            v,
        )
    };
    let mut out = a.create_label();
    let mut set_taken = a.create_label();
    if let (true, Some(cc)) = (looping, branch) {
        // Back to the start while the count allows, with the flags untouched: the
        // count is decremented through RCX (saved) with LEA and tested with JRCXZ.
        let mut again = a.create_label();
        let mut stop = a.create_label();
        jump_if(&mut a, cc, again)?;
        a.jmp(out).ok()?;
        a.set_label(&mut again).ok()?;
        let rcx = Register::RCX;
        add(&mut a, Instruction::with1(Code::Push_r64, rcx))?;
        add(
            &mut a,
            Instruction::with2(Code::Mov_r64_rm64, rcx, ctx(JitCtx::ITERATIONS)),
        )?;
        add(
            &mut a,
            Instruction::with2(
                Code::Lea_r64_m,
                rcx,
                MemoryOperand::with_base_displ(rcx, -1),
            ),
        )?;
        add(
            &mut a,
            Instruction::with2(Code::Mov_rm64_r64, ctx(JitCtx::ITERATIONS), rcx),
        )?;
        a.jrcxz(stop).ok()?;
        add(&mut a, Instruction::with1(Code::Pop_r64, rcx))?;
        a.jmp(top).ok()?;
        a.set_label(&mut stop).ok()?;
        add(&mut a, Instruction::with1(Code::Pop_r64, rcx))?;
        add(&mut a, taken_field(1))?;
        a.set_label(&mut out).ok()?;
        // Something after the label, whatever follows.
        add(&mut a, Ok(Instruction::with(Code::Nopd)))?;
    }
    for g in 0..16 {
        if writes & (1 << g) != 0 {
            add(
                &mut a,
                Instruction::with2(Code::Mov_rm64_r64, slot(g), r64(host_of(g))),
            )?;
        }
    }
    // The Jcc's outcome is stored while the pointer to the registers (perhaps RAX) is
    // still there.
    let mut flags_out = a.create_label();
    if let (false, Some(cc)) = (looping, branch) {
        jump_if(&mut a, cc, set_taken)?;
    }
    a.set_label(&mut flags_out).ok()?;
    // Something after the label, whatever follows.
    add(&mut a, Ok(Instruction::with(Code::Nopd)))?;
    if flags & super::FLAGS_OUT != 0 {
        add(&mut a, Ok(Instruction::with(Code::Pushfq)))?;
        add(&mut a, Instruction::with1(Code::Pop_r64, Register::RAX))?;
    }
    a.set_label(&mut epilogue).ok()?;
    for &h in saved.iter().rev() {
        add(&mut a, Instruction::with1(Code::Pop_r64, r64(h)))?;
    }
    add(&mut a, Ok(Instruction::with(Code::Retnq)))?;
    if flags & BRANCH != 0 && !looping {
        a.set_label(&mut set_taken).ok()?;
        add(&mut a, taken_field(1))?;
        a.jmp(flags_out).ok()?;
    }
    // A stop: the registers written so far stored, where the interpreter goes on, and
    // the flags with the interpreter's AF and OF where the host's may differ.
    let stop = |a: &mut CodeAssembler, at: u32, rip: u64, site: &Site| -> Option<()> {
        let written = if looping { writes } else { site.written };
        for g in 0..16 {
            if written & (1 << g) != 0 {
                add(
                    a,
                    Instruction::with2(Code::Mov_rm64_r64, slot(g), r64(host_of(g))),
                )?;
            }
        }
        let dword = |field: usize, v: u32| {
            Instruction::with2(
                Code::Mov_rm32_imm32,
                MemoryOperand::with_base_displ(r64(base), ctx_disp(field)),
                v,
            )
        };
        add(a, dword(JitCtx::BAIL_AT, at))?;
        add(a, dword(JitCtx::BAIL_RIP, rip as u32))?;
        add(a, dword(JitCtx::BAIL_RIP + 4, (rip >> 32) as u32))?;
        // Two registers for the OF computation, neither RAX (the flags) nor the pointer
        // to the guest's registers: every guest register is stored by now.
        let mut spare = [1usize, 2, 6, 7].into_iter().filter(|&h| h != base);
        let (s1, s2) = (r64(spare.next()?), r64(spare.next()?));
        if let Some(f) = site.of {
            // The result, before the pointer (perhaps RAX) gives way to the flags.
            add(a, Instruction::with2(Code::Mov_r64_rm64, s1, slot(f.reg)))?;
        }
        if site.flags_valid {
            add(a, dword(JitCtx::BAIL_FLAGS, 1))?;
            add(a, Ok(Instruction::with(Code::Pushfq)))?;
            add(a, Instruction::with1(Code::Pop_r64, Register::RAX))?;
            if let Some(f) = site.of {
                of_fix(a, f, s1, s2)?;
            }
            match site.af {
                Some(true) => add(
                    a,
                    Instruction::with2(Code::Or_rm64_imm8, Register::RAX, 0x10),
                )?,
                Some(false) => add(
                    a,
                    Instruction::with2(Code::And_rm64_imm8, Register::RAX, !0x10),
                )?,
                None => {}
            }
        }
        a.jmp(epilogue).ok()
    };
    for (mut bail, k, pushed, site) in bails {
        a.set_label(&mut bail).ok()?;
        if site.flags_valid {
            add(&mut a, Ok(Instruction::with(Code::Popfq)))?;
        }
        for &t in pushed.iter().rev() {
            add(&mut a, Instruction::with1(Code::Pop_r64, r64(t)))?;
        }
        stop(&mut a, k as u32, ops[k].i.ip(), site)?;
    }
    for (mut l, k, target, site) in exits {
        a.set_label(&mut l).ok()?;
        // The Jcc retired too.
        stop(&mut a, k as u32 + 1, target, site)?;
    }
    a.assemble(0).ok()
}

/// Replace OF in RAX (flags, as PUSHFQ gives them) by the interpreter's after the shift
/// or rotate `f`, whose result is in `r` (clobbered, with `t`).
fn of_fix(a: &mut CodeAssembler, f: OfFix, r: Register, t: Register) -> Option<()> {
    const OF: i32 = 0x800;
    add(
        a,
        Instruction::with2(Code::And_rm64_imm32, Register::RAX, !OF),
    )?;
    let top = f.bits as i32 - 1;
    match f.rule {
        OfRule::Clear => return Some(()),
        OfRule::TopXorCf => {
            // Bit 0: the top bit, then CF (bit 0 of the flags) xored in.
            add(a, Instruction::with2(Code::Shr_rm64_imm8, r, top))?;
            add(a, Instruction::with2(Code::Xor_r64_rm64, r, Register::RAX))?;
        }
        OfRule::TopTwoDiffer => {
            // Bit k of r ^ (r >> 1) is bit k xor bit k + 1.
            add(a, Instruction::with2(Code::Mov_r64_rm64, t, r))?;
            add(a, Instruction::with2(Code::Shr_rm64_imm8, t, 1))?;
            add(a, Instruction::with2(Code::Xor_r64_rm64, r, t))?;
            add(a, Instruction::with2(Code::Shr_rm64_imm8, r, top - 1))?;
        }
    }
    add(a, Instruction::with2(Code::And_rm64_imm32, r, 1))?;
    add(a, Instruction::with2(Code::Shl_rm64_imm8, r, 11))?;
    add(a, Instruction::with2(Code::Or_r64_rm64, Register::RAX, r))
}

/// For each instruction of the run that accesses memory or is a Jcc that leaves the run,
/// what its code needs to know.
fn sites(uses: &[Use], flags: u8) -> Vec<Option<Site>> {
    // Flags needed after each instruction: the run's end, every later access and every
    // Jcc leaving the run (whose exits hand them to the interpreter) need all of them.
    let mut live_after = alloc::vec![0u32; uses.len()];
    let mut live = STATUS;
    for (k, u) in uses.iter().enumerate().rev() {
        live_after[k] = live;
        live = (live & !u.modified) | u.read;
        if u.mem.is_some() || u.exit.is_some() {
            live = STATUS;
        }
    }
    let mut out = Vec::with_capacity(uses.len());
    let (mut written, mut flags_written) = (0u16, 0u32);
    let mut af: Option<bool> = None;
    let mut of: Option<OfFix> = None;
    for (k, u) in uses.iter().enumerate() {
        out.push((u.mem.is_some() || u.exit.is_some()).then_some(Site {
            written,
            flags_valid: flags & FLAGS_IN != 0 || flags_written != 0,
            af,
            of,
            flags_live: ((live_after[k] & !u.modified) | u.read) != 0,
        }));
        written |= u.writes;
        flags_written |= u.modified;
        if u.modified & RflagsBits::AF != 0 {
            af = u.af;
        }
        if u.modified & RflagsBits::OF != 0 {
            of = if u.undefined & RflagsBits::OF != 0 {
                u.of
            } else {
                None
            };
        }
    }
    out
}
