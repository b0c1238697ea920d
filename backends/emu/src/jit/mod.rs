//! Translation of runs of instructions into host code.
//!
//! When a block enters the cache ([`crate::cache::Cache::insert`]), each run of at least
//! [`MIN_RUN`] consecutive 64-bit instructions (at least [`MIN_STRAIGHT_RUN`] unless it
//! loops over its block) on general registers and memory (MOV, LEA, the ALU operations,
//! shifts and rotates by an immediate, IMUL/MUL, CMOVcc, SETcc, ...; see
//! [`translatable`]) and Jcc (forward ones inside the block, see
//! [`crate::cache::decode_block`], and the one that ends it) becomes one op whose handler
//! calls host code doing the same instructions (see [`emit`] for memory accesses, which
//! may stop the run, for Jccs that leave it, and for loops). The guest's instructions are
//! run as they are, with their registers renamed where needed: the guest registers live in the host's registers of the same
//! number for the run (loaded from [`Cpu::gpr`] before it, stored after it), except the
//! guest's RSP, which takes a host register the run does not use, and the pointer to
//! [`Cpu::gpr`], which takes another. The status flags go in through POPFQ when the run
//! reads or keeps any of the guest's, and come out through PUSHFQ.
//!
//! What makes the result the interpreter's, bit for bit:
//! - none of these instructions can exit or change anything but general registers,
//!   memory the TLB lets the host reach, and the six status flags; an access that could
//!   fault or needs more than the host page stops the run before it; the run's
//!   instructions are the guest's own, executed by a processor of the same architecture;
//! - a flag an instruction leaves undefined is one where the interpreter and the host
//!   may differ: such an instruction enters a run only if a later instruction of the
//!   same run overwrites that flag before anything reads it or a stop could show it, or
//!   if it is an AF whose interpreter's value the run writes in, or the OF of a shift or
//!   rotate of a register that only a stop could show, which computes the interpreter's
//!   from the result ([`split`]);
//! - the op counts the run's instructions as retired, and a single step (TF, RF, an
//!   interrupt shadow, a debugger) runs the first instruction alone as decoded
//!   ([`Op::dead_flags`]), so instruction boundaries inside a run are never visible.
//!
//! The interpreter stays the reference: `jit::tests` runs random programs both ways and
//! compares every register and flag. The code lives in an [`arena::Arena`] that is
//! emptied with the cache; where the host cannot map executable memory nothing is
//! translated.

pub mod arena;
mod emit;
#[cfg(test)]
mod tests;

use crate::cpu::Cpu;
use crate::decode::Op;
use crate::exception::Ex;
use alloc::vec::Vec;
use arena::Arena;
use iced_x86::{
    Instruction, InstructionInfoFactory, Mnemonic as M, OpAccess, OpKind, Register, RflagsBits,
};
use opsvisor_core::mmu::memory::GuestMemory;

/// Fewest instructions worth a translated run: below this the call and the register
/// loads and stores cost about what interpreting them does.
pub const MIN_RUN: usize = 3;

/// Fewest instructions worth a translated run that does not loop over its block: entering
/// host code for one pass costs more than a loop's entry spread over its iterations. A
/// pass of three (XOR, XOR, MOV; DEC, CMP, Jcc) took about 80 host instructions where the
/// interpreter takes about 50 (callgrind on the peer benchmark's exit loop).
pub const MIN_STRAIGHT_RUN: usize = 4;

/// `Op::aux` of a translated run: the guest's status flags go in (the run reads one
/// before writing it, or keeps some).
pub const FLAGS_IN: u8 = 1;
/// `Op::aux` of a translated run: the run writes status flags, which come out.
pub const FLAGS_OUT: u8 = 2;
/// `Op::aux` of a translated run: the last instruction to write AF leaves it undefined,
/// and the interpreter's value replaces the host's (see [`Use::af`]).
pub const AF_FIX: u8 = 4;
/// With [`AF_FIX`]: that value is 1.
pub const AF_SET: u8 = 8;
/// `Op::aux` of a translated run: it accesses memory, so it may stop before one of its
/// instructions (see [`JitCtx`]).
pub const MEMORY: u8 = 16;
/// `Op::aux` of a translated run: it ends with the block's Jcc, whose target is
/// `Op::target` (see [`JitCtx::taken`]).
pub const BRANCH: u8 = 32;
/// `Op::aux` of a translated run: the run is its whole block and its Jcc goes back to the
/// block's start, which its code does without returning, as long as the run's budget
/// allows (see [`JitCtx::iterations`]).
pub const LOOP: u8 = 64;
/// `Op::aux` of a translated run: it holds a Jcc forward out of the block before the
/// block's end (the block goes on past it, see [`crate::cache::decode_block`]); taken, it
/// leaves the run as a stop does, after the Jcc and at its target (see [`JitCtx`]).
pub const EXITS: u8 = 128;

/// What a run that accesses memory, branches or loops reads and reports besides the
/// registers, in [`Cpu::jit`], next to [`Cpu::gpr`] so that the run's code reaches both
/// from one register. A run that only branches or loops uses [`JitCtx::iterations`] and
/// [`JitCtx::taken`] alone.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct JitCtx {
    /// The software TLB's table for data accesses at the current privilege
    /// ([`crate::tlb::Tlb::data_table`]).
    pub tlb: u64,
    /// That table's epoch.
    pub epoch: u64,
    /// FS's base.
    pub fs_base: u64,
    /// GS's base.
    pub gs_base: u64,
    /// 1 at CPL 3, where unaligned accesses take the checked path.
    pub user: u64,
    /// Set by the run when it stops before an access: that instruction's RIP; when a Jcc
    /// leaves it, the Jcc's target.
    pub bail_rip: u64,
    /// Set by the run when it stops before an access or a Jcc leaves it: how many of its
    /// instructions retired (`u32::MAX`: it ran to its end).
    pub bail_at: u32,
    /// Set by the run when it stops before an access or a Jcc leaves it: 1 when the flags
    /// it returns are the guest's (0: the run had not touched them).
    pub bail_flags: u32,
    /// For a [`LOOP`]: how many times more it may go back to its start (at least 1); the
    /// run counts down, and what is left says how many times it did.
    pub iterations: u64,
    /// For a [`BRANCH`]: set to 1 by the run when its Jcc was taken.
    pub taken: u32,
}

impl JitCtx {
    const TLB: usize = core::mem::offset_of!(JitCtx, tlb);
    const EPOCH: usize = core::mem::offset_of!(JitCtx, epoch);
    const FS_BASE: usize = core::mem::offset_of!(JitCtx, fs_base);
    const GS_BASE: usize = core::mem::offset_of!(JitCtx, gs_base);
    const USER: usize = core::mem::offset_of!(JitCtx, user);
    const BAIL_RIP: usize = core::mem::offset_of!(JitCtx, bail_rip);
    const BAIL_AT: usize = core::mem::offset_of!(JitCtx, bail_at);
    const BAIL_FLAGS: usize = core::mem::offset_of!(JitCtx, bail_flags);
    const ITERATIONS: usize = core::mem::offset_of!(JitCtx, iterations);
    const TAKEN: usize = core::mem::offset_of!(JitCtx, taken);
}

/// The six status flags in iced-x86's numbering.
const STATUS: u32 = RflagsBits::OF
    | RflagsBits::SF
    | RflagsBits::ZF
    | RflagsBits::AF
    | RflagsBits::CF
    | RflagsBits::PF;
/// The six status flags in RFLAGS (CF PF AF ZF SF OF).
const STATUS_X86: u64 = 0x8d5;
/// AF in RFLAGS.
const AF: u64 = 0x10;

/// General register `n` (0-15, in encoding order) of `size` bytes (for 1: AL..BL, SPL..DIL,
/// R8B..R15B, never AH..BH).
pub(crate) fn gpr(size: u32, n: usize) -> Register {
    let (first, k) = match size {
        8 => (Register::RAX, n),
        4 => (Register::EAX, n),
        2 => (Register::AX, n),
        _ if n < 4 => (Register::AL, n),
        _ if n < 8 => (Register::SPL, n - 4),
        _ => (Register::R8L, n - 8),
    };
    // iced-x86 numbers each size's registers consecutively in encoding order.
    Register::try_from(first as usize + (k & 15)).unwrap_or(Register::None)
}

/// 64-bit general register `n`.
fn r64(n: usize) -> Register {
    gpr(8, n)
}

/// Host register numbers the System V ABI has a callee preserve (RBX RBP R12-R15).
const CALLEE_SAVED: u16 = (1 << 3) | (1 << 5) | (0xf << 12);
const RSP: usize = 4;
const RDI: usize = 7;
const RSI: usize = 6;

/// The number (0-15) of general register `r`'s 64-bit register, if it is one.
fn gpr_number(r: Register) -> Option<usize> {
    if !r.is_gpr() {
        return None;
    }
    (0..16).find(|&n| r64(n) == r.full_register())
}

/// Whether `i` can be part of a translated run: 64-bit code, no prefix that changes
/// what it does, a listed operation, and operands that are general registers,
/// immediates, or one memory operand addressed by general registers, RIP and a
/// displacement (LEA's reads no memory).
pub fn translatable(i: &Instruction, bits: u8) -> bool {
    if bits != 64 || i.has_lock_prefix() || i.has_rep_prefix() || i.has_repne_prefix() {
        return false;
    }
    let m = i.mnemonic();
    let listed = crate::decode::is_cmovcc(m)
        || crate::decode::is_setcc(m)
        || matches!(
            m,
            M::Mov
                | M::Movzx
                | M::Movsx
                | M::Movsxd
                | M::Lea
                | M::Add
                | M::Adc
                | M::Sub
                | M::Sbb
                | M::And
                | M::Or
                | M::Xor
                | M::Cmp
                | M::Test
                | M::Inc
                | M::Dec
                | M::Neg
                | M::Not
                | M::Shl
                | M::Shr
                | M::Sar
                | M::Rol
                | M::Ror
                | M::Imul
                | M::Mul
                | M::Bswap
                | M::Xchg
                | M::Cbw
                | M::Cwde
                | M::Cdqe
                | M::Cwd
                | M::Cdq
                | M::Cqo
                | M::Nop
        );
    if !listed {
        return false;
    }
    for n in 0..i.op_count() {
        match i.op_kind(n) {
            OpKind::Register => {
                if gpr_number(i.op_register(n)).is_none() {
                    return false;
                }
            }
            k if crate::exec::is_imm(k) => {}
            OpKind::Memory => {
                let ip_rel = i.is_ip_rel_memory_operand();
                let base_ok = ip_rel
                    || i.memory_base() == Register::None
                    || gpr_number(i.memory_base()).is_some();
                let index_ok =
                    i.memory_index() == Register::None || gpr_number(i.memory_index()).is_some();
                let form_ok = match m {
                    // LEA computes the address alone: RIP-relative, it would need the
                    // guest's RIP.
                    M::Lea => !ip_rel,
                    M::Xchg | M::Nop => false,
                    _ => matches!(i.memory_size().size(), 1 | 2 | 4 | 8),
                };
                if !base_ok || !index_ok || !form_ok {
                    return false;
                }
            }
            _ => return false,
        }
    }
    if matches!(m, M::Shl | M::Shr | M::Sar | M::Rol | M::Ror) {
        // By an immediate whose masked count is not 0: a count of 0 leaves the flags
        // alone, by CL they are left alone or not depending on its value.
        if i.op_count() != 2 || i.op_kind(1) != OpKind::Immediate8 {
            return false;
        }
        let size = if i.op_kind(0) == OpKind::Register {
            i.op0_register().size()
        } else {
            i.memory_size().size()
        };
        let mask = if size == 8 { 63 } else { 31 };
        if i.immediate8() & mask == 0 {
            return false;
        }
    }
    true
}

/// An instruction's register and flag use, as the run selection needs it.
#[derive(Clone, Copy)]
struct Use {
    /// Guest register numbers used, as a bit set (bit n for register n).
    regs: u16,
    /// Those whose value before the instruction does not matter: written whole (64 or
    /// 32 bits, which zero-extends), unconditionally, and not read.
    defines: u16,
    /// Those written, wholly or in part.
    writes: u16,
    /// Status flags read (iced-x86's numbering).
    read: u32,
    /// Status flags written, defined or not.
    modified: u32,
    /// Status flags left undefined.
    undefined: u32,
    /// For an instruction that leaves AF undefined, the value the interpreter gives it
    /// (see `arith::alu` and `arith::shift`): cleared by the logic operations, set by the
    /// shifts. A run may end with such an AF, which is then set to this value.
    af: Option<bool>,
    /// For a shift or rotate by more than 1 of a register, which leaves OF undefined: how
    /// the interpreter sets it (see `arith::shift`). A stop before a later access, or a
    /// later Jcc leaving the run, may then show that OF, which its exit computes (see
    /// [`split`]).
    of: Option<OfFix>,
    /// Its memory access, if any.
    mem: Option<Access>,
    /// For the Jcc that ends the block: its condition.
    branch: Option<iced_x86::ConditionCode>,
    /// For a Jcc before the block's end: its condition and target, where the run leaves
    /// when it is taken.
    exit: Option<(iced_x86::ConditionCode, u64)>,
}

/// The interpreter's OF after a shift or rotate by more than 1, from its result in a
/// register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct OfFix {
    rule: OfRule,
    /// The operand's width in bits.
    bits: u32,
    /// The guest register (0-15) holding the result, in its low `bits`.
    reg: usize,
}

/// How [`OfFix`] computes OF from the result `r` (and CF).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OfRule {
    /// The result's top bit differs from CF (SHL, ROL).
    TopXorCf,
    /// The result's two top bits differ (SHR, ROR).
    TopTwoDiffer,
    /// 0 (SAR).
    Clear,
}

/// A memory access of an instruction in a run.
#[derive(Clone, Copy)]
struct Access {
    /// It writes (a store or a read-modify-write): the page must take writes.
    write: bool,
    /// Bytes.
    size: u32,
}

/// The translator: its arena and its scratch state.
pub struct Translator {
    enabled: bool,
    arena: Option<Arena>,
    /// Whether making the arena was tried (it is made on the first translation).
    tried: bool,
    info: InstructionInfoFactory,
    /// Runs translated since the cache was made.
    runs: u64,
}

impl core::fmt::Debug for Translator {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Translator")
            .field("enabled", &self.enabled)
            .field("arena", &self.arena)
            .field("runs", &self.runs)
            .finish()
    }
}

impl Default for Translator {
    fn default() -> Self {
        Self::new()
    }
}

impl Translator {
    /// A translator, on.
    pub fn new() -> Translator {
        Translator {
            enabled: true,
            arena: None,
            tried: false,
            info: InstructionInfoFactory::new(),
            runs: 0,
        }
    }

    /// Turn translation on or off for blocks decoded from now on.
    pub fn set_enabled(&mut self, on: bool) {
        self.enabled = on;
    }

    /// Whether blocks decoded now may be translated: translation is on and the arena
    /// was made or not tried yet.
    pub fn translating(&self) -> bool {
        self.enabled && (!self.tried || self.arena.is_some())
    }

    /// Runs translated since the translator was made.
    pub fn runs(&self) -> u64 {
        self.runs
    }

    /// Whether the arena is nearly full: the cache should be flushed before the next
    /// block, or that block's runs stay interpreted.
    pub fn nearly_full(&self) -> bool {
        self.arena.as_ref().is_some_and(|a| a.free() < 64 << 10)
    }

    /// Forget all translated code (the cache dropped every block).
    pub fn reset(&mut self) {
        if let Some(a) = self.arena.as_mut() {
            a.reset();
        }
    }

    fn usage(&mut self, i: &Instruction) -> Option<Use> {
        let info = self.info.info(i);
        let (mut regs, mut reads, mut defines, mut writes) = (0u16, 0u16, 0u16, 0u16);
        for u in info.used_registers() {
            let r = u.register();
            let bit = match gpr_number(r) {
                Some(n) => 1u16 << n,
                None if r.is_segment_register() => continue,
                None => return None,
            };
            regs |= bit;
            match u.access() {
                OpAccess::Write if r.size() >= 4 => {
                    defines |= bit;
                    writes |= bit;
                }
                OpAccess::Write | OpAccess::CondWrite => writes |= bit,
                OpAccess::Read | OpAccess::CondRead => reads |= bit,
                _ => {
                    reads |= bit;
                    writes |= bit;
                }
            }
        }
        let defines = defines & !reads;
        let mem = match info.used_memory() {
            [] => None,
            [m] => Some(Access {
                write: !matches!(m.access(), OpAccess::Read | OpAccess::CondRead),
                size: m.memory_size().size() as u32,
            }),
            _ => return None,
        };
        let undefined = i.rflags_undefined() & STATUS;
        let af = if undefined & RflagsBits::AF == 0 {
            None
        } else {
            match i.mnemonic() {
                M::And | M::Or | M::Xor | M::Test => Some(false),
                M::Shl | M::Shr | M::Sar => Some(true),
                _ => None,
            }
        };
        let of = if undefined & RflagsBits::OF == 0 || i.op_kind(0) != OpKind::Register {
            None
        } else {
            let r = i.op0_register();
            let rule = match i.mnemonic() {
                M::Shl | M::Rol => Some(OfRule::TopXorCf),
                M::Shr | M::Ror => Some(OfRule::TopTwoDiffer),
                M::Sar => Some(OfRule::Clear),
                _ => None,
            };
            let high_byte = matches!(r, Register::AH | Register::CH | Register::DH | Register::BH);
            match (rule, gpr_number(r)) {
                (Some(rule), Some(reg)) if !high_byte => Some(OfFix {
                    rule,
                    bits: 8 * r.size() as u32,
                    reg,
                }),
                _ => None,
            }
        };
        Some(Use {
            regs,
            defines,
            writes,
            read: i.rflags_read() & STATUS,
            modified: i.rflags_modified() & STATUS,
            undefined,
            af,
            of,
            mem,
            branch: None,
            exit: None,
        })
    }

    /// Replace the runs of translatable instructions in `ops` (a block of `bits`-bit
    /// code, its ending flag setter and Jcc not fused yet) by translated ops. Returns
    /// whether a translated run accesses memory or holds a Jcc that leaves it: it may then
    /// end its block early (setting [`Cpu::brk`]), which the block must check for.
    pub fn translate(&mut self, ops: &mut Vec<Op>, bits: u8) -> bool {
        if !self.enabled || bits != 64 || ops.len() < MIN_RUN {
            return false;
        }
        if !self.tried {
            self.tried = true;
            self.arena = Arena::new();
        }
        if self.arena.is_none() {
            return false;
        }
        let mut uses: Vec<Option<Use>> = Vec::with_capacity(ops.len());
        let last = ops.len() - 1;
        for (k, op) in ops.iter().enumerate() {
            let i = &op.i;
            let u = if i.is_jcc_short_or_near() {
                let target = i.near_branch_target();
                let cc = i.condition_code();
                // A canonical target: RIP can hold it (a wider one faults, interpreted).
                (((target as i64) << 16 >> 16) as u64 == target).then_some(Use {
                    regs: 0,
                    defines: 0,
                    writes: 0,
                    read: i.rflags_read() & STATUS,
                    modified: 0,
                    undefined: 0,
                    af: None,
                    of: None,
                    mem: None,
                    branch: (k == last).then_some(cc),
                    exit: (k != last).then_some((cc, target)),
                })
            } else if !op.fused && translatable(i, bits) {
                self.usage(i)
            } else {
                None
            };
            uses.push(u);
        }
        // Runs, found from the end so that replacing one leaves the indices of those
        // before it valid.
        let mut runs: Vec<(usize, usize, u8)> = Vec::new();
        let mut end = ops.len();
        while end > 0 {
            if uses[end - 1].is_none() {
                end -= 1;
                continue;
            }
            let mut start = end;
            while start > 0 && uses[start - 1].is_some() {
                start -= 1;
            }
            let all: Vec<Use> = uses[start..end].iter().flatten().copied().collect();
            split(&all, start, &mut runs);
            end = start;
        }
        let mut translated = false;
        let mut accesses = false;
        for (mut start, end, mut flags) in runs {
            let Some(arena) = self.arena.as_mut() else {
                break;
            };
            let branch = uses[end - 1].is_some_and(|u| u.branch.is_some());
            let target = if branch {
                ops[end - 1].i.near_branch_target()
            } else {
                0
            };
            let mut run: Vec<Use> = uses[start..end].iter().flatten().copied().collect();
            if branch && start == 0 && end == ops.len() && target == ops[0].i.ip() && loops(&run) {
                // Every iteration after the first starts with the flags the last left:
                // they come in as the guest's the first time too.
                flags |= LOOP | FLAGS_IN;
            } else if run[0].mem.is_some() {
                // A run that stops before its first instruction leaves it to the
                // interpreter and ends its block there (see `stopped`): worth it for a
                // loop, which would otherwise not be translated, but not for a device
                // register read once per pass, whose block would end early every time.
                while start < end && uses[start].is_some_and(|u| u.mem.is_some()) {
                    start += 1;
                }
                run = uses[start..end].iter().flatten().copied().collect();
                flags = flag_mode(&run);
            }
            if flags & LOOP == 0 && end - start < MIN_STRAIGHT_RUN {
                continue;
            }
            if branch {
                flags |= BRANCH;
            }
            let Some(code) = emit::emit(&ops[start..end], &run, flags) else {
                continue;
            };
            let Some(entry) = arena.push(&code) else {
                break;
            };
            let mut op = ops[start].clone();
            op.h = if flags & (FLAGS_IN | MEMORY | LOOP) == 0 {
                run_straight
            } else {
                run_translated
            };
            op.next_ip = ops[end - 1].next_ip;
            op.imm = entry;
            op.disp = (end - start - 1) as u64;
            op.aux = flags;
            op.target = target;
            op.fused = false;
            op.dead_flags = true;
            ops.splice(start..end, core::iter::once(op));
            self.runs += 1;
            translated = true;
            // A run may stop before an access; one that starts with an access runs that
            // instruction in the interpreter and stops after it (see `stopped`). A Jcc
            // may leave it.
            accesses |= flags & (MEMORY | EXITS) != 0;
        }
        if translated {
            // `Op::pos` counts the ops before an op, which is what retired before it
            // once each translated run counts its own instructions after the first.
            for (k, op) in ops.iter_mut().enumerate() {
                op.pos = k as u8;
            }
        }
        accesses
    }
}

/// Whether a whole-block run that jumps back to its start can loop in its code: an
/// access or a Jcc leaving the run before the first instruction that writes AF must not
/// see an AF left undefined by the previous iteration, since the first time it sees the
/// guest's (the AF a stop hands over is set as the interpreter would only for
/// instructions before it).
fn loops(run: &[Use]) -> bool {
    let writes_af = |u: &&Use| u.modified & RflagsBits::AF != 0;
    let Some(last_af) = run.iter().rev().find(writes_af) else {
        return true;
    };
    let first_af = run.iter().position(|u| writes_af(&u)).unwrap_or(run.len());
    last_af.af.is_none()
        || run[..first_af]
            .iter()
            .all(|u| u.mem.is_none() && u.exit.is_none())
}

/// The guest registers a run uses, those it must load first (used before being
/// defined) and those it writes, as bit sets.
fn run_registers(uses: &[Use]) -> (u16, u16, u16) {
    let (mut regs, mut load, mut writes) = (0u16, 0u16, 0u16);
    for u in uses {
        load |= u.regs & !regs & !u.defines;
        regs |= u.regs;
        writes |= u.writes;
    }
    (regs, load, writes)
}

/// Split a stretch of translatable instructions (`all`, the first at block position
/// `first`) into runs that are exact and fit the host's registers; each is pushed to
/// `runs` as (start, end, flag mode), later runs first.
fn split(all: &[Use], first: usize, runs: &mut Vec<(usize, usize, u8)>) {
    let mut end = all.len();
    'outer: while end > 0 {
        // Backwards from the end, where every status flag is live: an instruction that
        // leaves a live flag undefined cannot be in a run ending here, unless the flag is
        // an AF that only the end and the stops see and whose interpreter's value is
        // known, or an OF that only the stops see (before an access, or at a Jcc leaving
        // the run: their exits compute the interpreter's, see `OfFix`). `live` counts the
        // stops, `read` only the instructions that read flags and the end.
        let mut live = STATUS;
        let mut read = STATUS;
        let mut af_read = false;
        let mut j = end;
        while j > 0 {
            let u = all[j - 1];
            let mut bad = u.undefined & live;
            if bad & RflagsBits::AF != 0 && u.af.is_some() && !af_read {
                bad &= !RflagsBits::AF;
            }
            if bad & RflagsBits::OF != 0
                && read & RflagsBits::OF == 0
                && u.of.is_some_and(|f| result_kept(&all[j..end], f.reg))
            {
                bad &= !RflagsBits::OF;
            }
            af_read |= u.read & RflagsBits::AF != 0;
            if bad != 0 {
                push_runs(&all[j..end], first + j, runs);
                end = j - 1;
                continue 'outer;
            }
            live = (live & !u.modified) | u.read;
            read = (read & !u.modified) | u.read;
            if u.mem.is_some() || u.exit.is_some() {
                // If the access cannot use the host page, the run stops before it, and
                // a Jcc taken leaves it: the interpreter sees every flag.
                live = STATUS;
            }
            j -= 1;
        }
        push_runs(&all[..end], first, runs);
        break;
    }
}

/// Whether guest register `reg`, holding the result of the instruction just before
/// `after`, still holds it wherever an access of `after` could see that instruction's OF:
/// no instruction writes it before the first that writes OF again.
fn result_kept(after: &[Use], reg: usize) -> bool {
    for u in after {
        if u.modified & RflagsBits::OF != 0 {
            // An exit before this instruction sees the register as it was.
            return true;
        }
        if u.writes & (1 << reg) != 0 {
            return false;
        }
    }
    true
}

/// Push exact stretch `all` (the first at block position `first`) as runs that each use
/// few enough registers: the host needs one register for the pointer to the guest's and
/// one more for the guest's RSP when the run uses it. Later runs first.
fn push_runs(all: &[Use], first: usize, runs: &mut Vec<(usize, usize, u8)>) {
    let mut pieces: Vec<(usize, usize)> = Vec::new();
    let mut start = 0;
    let mut regs = 0u16;
    for (k, u) in all.iter().enumerate() {
        let with = regs | u.regs;
        if host_registers_needed(with) > 15 {
            pieces.push((start, k));
            start = k;
            regs = u.regs;
        } else {
            regs = with;
        }
    }
    pieces.push((start, all.len()));
    for &(s, e) in pieces.iter().rev() {
        if e - s >= MIN_RUN {
            runs.push((first + s, first + e, flag_mode(&all[s..e])));
        }
    }
}

/// Host registers (RSP excluded) a run using guest registers `regs` needs.
fn host_registers_needed(regs: u16) -> u32 {
    let sp = regs & (1 << RSP) != 0;
    (regs & !(1 << RSP)).count_ones() + 1 + u32::from(sp)
}

/// Whether the run `all` needs the guest's flags in and gives flags out.
fn flag_mode(all: &[Use]) -> u8 {
    let mut written = 0u32;
    let mut needs_in = false;
    let mut mode = 0;
    for u in all {
        if u.read & !written != 0 {
            needs_in = true;
        }
        if u.mem.is_some() || u.exit.is_some() {
            mode |= if u.mem.is_some() { MEMORY } else { EXITS };
            // Stopping here hands the flags to the interpreter: those the run has not
            // written yet must be the guest's.
            if written != 0 && written != STATUS {
                needs_in = true;
            }
        }
        written |= u.modified;
    }
    let last_af = all.iter().rev().find(|u| u.modified & RflagsBits::AF != 0);
    if let Some(Use { af: Some(v), .. }) = last_af {
        mode |= AF_FIX | if *v { AF_SET } else { 0 };
    }
    if written != 0 {
        mode |= FLAGS_OUT;
        // Flags the run does not write keep the guest's values.
        if written != STATUS {
            needs_in = true;
        }
    }
    if needs_in {
        mode |= FLAGS_IN;
    }
    mode
}

/// Whether `op` is a translated run.
pub fn is_translated(op: &Op) -> bool {
    core::ptr::fn_addr_eq(op.h, run_translated as crate::decode::Handler)
        || core::ptr::fn_addr_eq(op.h, run_straight as crate::decode::Handler)
}

/// The status flags a translated run that writes them (`FLAGS_OUT`) returned in `out`, into
/// RFLAGS, with the interpreter's AF where the run's last AF writer left it undefined.
#[inline(always)]
fn flags_out(c: &mut Cpu, op: &Op, out: u64) {
    if op.aux & FLAGS_OUT != 0 {
        let mut out = out & STATUS_X86;
        if op.aux & AF_FIX != 0 {
            out = (out & !AF) | if op.aux & AF_SET != 0 { AF } else { 0 };
        }
        c.set_rflags((c.rf & !STATUS_X86) | out);
    }
}

/// The handler of a translated run that neither reads the guest's flags, loops nor
/// accesses memory: [`run_translated`] without what those need, so that a short run costs
/// little more than its code.
pub fn run_straight(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    if op.aux & BRANCH != 0 {
        c.jit.taken = 0;
    }
    if op.aux & EXITS != 0 {
        c.jit.bail_at = u32::MAX;
        c.jit.bail_flags = 0;
    }
    // SAFETY: as in `run_translated`; this run reads nothing of `c.jit` but what is set
    // above.
    let out = unsafe { arena::call(op.imm, c.gpr.as_mut_ptr(), 2) };
    if op.aux & EXITS != 0 && c.jit.bail_at != u32::MAX {
        return stopped(c, mem, op, out, 0);
    }
    flags_out(c, op, out);
    if op.aux & BRANCH != 0 && c.jit.taken != 0 {
        c.rip = op.target;
    }
    // The block loop counts one.
    c.retired += op.disp;
    Ok(())
}

/// The handler of a translated run (see the module's documentation): `imm` is the host
/// code's entry, `disp` the run's instructions after the first, `aux` its flag mode.
pub fn run_translated(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let flags_in = if op.aux & FLAGS_IN != 0 {
        (c.rflags() & STATUS_X86) | 2
    } else {
        2
    };
    let count = op.disp + 1;
    let iterations = if op.aux & LOOP != 0 {
        // The interpreter would run the block again while the run's count is below
        // `stop_at`: that many times in all, and at least once.
        c.stop_at.saturating_sub(c.retired).div_ceil(count).max(1)
    } else {
        0
    };
    if op.aux & MEMORY != 0 {
        let (tlb, epoch) = c.tlb.data_table();
        c.jit = JitCtx {
            tlb,
            epoch,
            fs_base: c.seg[crate::cpu::sr::FS as usize].base,
            gs_base: c.seg[crate::cpu::sr::GS as usize].base,
            user: u64::from(c.cpl == 3),
            bail_rip: 0,
            bail_at: u32::MAX,
            bail_flags: 0,
            iterations,
            taken: 0,
        };
    } else {
        // No access: the TLB and segment fields are not read.
        if op.aux & BRANCH != 0 {
            c.jit.iterations = iterations;
            c.jit.taken = 0;
        }
        if op.aux & EXITS != 0 {
            c.jit.bail_at = u32::MAX;
            c.jit.bail_flags = 0;
        }
    }
    // SAFETY: `op.imm` is the entry the translator got from its arena for this op, and
    // the arena is reset only together with the cache that holds the op; `c.gpr` has at
    // least 16 entries, and `c.jit` describes the current TLB table (which the run only
    // reads, through pointers that stay valid while `c` is borrowed here), so the host
    // addresses it uses are those `Cpu::fast_host` would give.
    let out = unsafe { arena::call(op.imm, c.gpr.as_mut_ptr(), flags_in) };
    // Iterations of a loop completed and gone back from.
    let again = iterations.saturating_sub(c.jit.iterations);
    if op.aux & (MEMORY | EXITS) != 0 && c.jit.bail_at != u32::MAX {
        return stopped(c, mem, op, out, again * count);
    }
    flags_out(c, op, out);
    let taken = op.aux & BRANCH != 0 && c.jit.taken != 0;
    if taken {
        c.rip = op.target;
    }
    // A loop that ran out of budget went back `again` times and stops at its start;
    // otherwise its last iteration also ran to the end. The block loop counts one.
    let retired = if op.aux & LOOP != 0 && taken {
        again * count
    } else {
        again * count + count
    };
    c.retired += retired - 1;
    Ok(())
}

/// A run stopped before an access its code could not make, or a Jcc before its block's
/// end left it (see [`JitCtx`]), after `before` instructions of earlier iterations: the
/// interpreter goes on from that instruction, or the Jcc's target. When a stop is before
/// the run's first instruction, the interpreter runs it here and the block ends after it,
/// so that stopping always gets at least one instruction done.
#[inline(never)]
fn stopped(c: &mut Cpu, mem: &mut GuestMemory, op: &Op, flags: u64, before: u64) -> Result<(), Ex> {
    if c.jit.bail_flags != 0 {
        c.set_rflags((c.rf & !STATUS_X86) | (flags & STATUS_X86));
    }
    let at = u64::from(c.jit.bail_at);
    c.retired += before;
    if at != 0 {
        c.brk = true;
        c.rip = c.jit.bail_rip;
        // The block loop counts this op as one instruction.
        c.retired += at - 1;
        return Ok(());
    }
    stopped_first(c, mem, op)
}

/// The op of no instruction: what [`Cpu::jit_first`] starts with when the first run that
/// may stop is translated.
#[inline(never)]
pub fn no_first() -> Op {
    crate::decode::build(&Instruction::default(), 64)
}

/// A run stopped before its first instruction (see [`stopped`]): the interpreter runs it
/// and the block ends after it. Out of line, so that the stops inside a run, the common
/// ones in a loop, need no frame.
#[inline(never)]
fn stopped_first(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    // The op `decode::build` makes of the instruction depends on nothing else, so the
    // last one made serves while the instruction is the same, RIP and all (`==` would
    // ignore RIP and length).
    let first = match &mut c.jit_first {
        Some(first) if first.i.eq_all_bits(&op.i) => (**first).clone(),
        Some(other) => {
            **other = crate::decode::build(&op.i, 64);
            (**other).clone()
        }
        // Not reached: the run was translated by `Cache::insert`, which made the box.
        None => crate::decode::build(&op.i, 64),
    };
    c.rip = first.next_ip;
    // On an error the block loop puts RIP back at this op's instruction, the first. An
    // exit or a fault ends the block anyway, and `brk` stays as the instruction left it,
    // so that after an exit that changed nothing the next run skips the slow checks (see
    // `EmuVcpu::settled`), as after the same instruction interpreted.
    let done = (first.h)(c, mem, &first);
    if done.is_ok() {
        c.brk = true;
    }
    done
}
