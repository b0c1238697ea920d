//! Random differential cases (feature `generate`, host only).
//!
//! A case is an initial state (general registers mixing small, boundary and random
//! values; random subsets of the environment's optional RFLAGS/CR0/CR4/EFER bits; a data
//! seed; an x87/MMX/SSE state seed, see [`crate::layout::fpu_image`]) and 1..=12 items
//! drawn by family:
//!
//! | family | weight | module |
//! |---|---|---|
//! | integer (ALU, shifts, bit ops, moves, BCD, BMI/ADX, ...) | 36 | [`integer`] |
//! | stack (PUSH/POP, PUSHF/POPF, PUSHA/POPA, ENTER/LEAVE) | 11 | [`stack`] |
//! | forward branches | 11 | [`control`] |
//! | string instructions | 5 | [`string`] |
//! | segmentation | 12 | [`segment`] |
//! | system (CPUID, MSRs, CRs, tables, VMX, ...) | 16 | [`system`] |
//! | port I/O | 5 | [`io`] |
//! | exceptions, interrupts, HLT | 4 | [`control`] |
//! | MMX and SSE..SSE4.2 | 10 | [`simd`] |
//! | x87 | 6 | [`x87`] |
//!
//! A family returns a *group*: the instruction and the setup items it needs (a selector
//! loaded before MOV SS, pointers before MOVS, ...), each a separate item so that
//! minimization can still drop them one by one. Every instruction is encoded by
//! iced-x86 for the case's mode and decoded back before it is kept. The rules that keep
//! a case deterministic and inside guest RAM are stated in each family's module; the
//! common ones are: RBX (the data pointer) and RSP are written only by stack
//! instructions, explicit memory operands are `[rbx+disp8]` (`[bx+disp8]`) or the stack,
//! branches only go forward, nothing reads time or entropy, and nothing makes an x87 or
//! SIMD exception unmasked.

mod control;
mod emit;
mod integer;
mod io;
mod segment;
mod simd;
mod stack;
mod string;
mod system;
mod x87;

use crate::case::{BranchOp, Case, Item, Mode, MAX_SKIP};
use crate::flags::{undefined_by, SETTLE};
use crate::layout::{CR0_OPTIONAL, CR4_OPTIONAL, EFER_OPTIONAL, RFLAGS_OPTIONAL};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use emit::Gen;
use iced_x86::{
    Code, Decoder, DecoderOptions, Formatter, Instruction, IntelFormatter, Mnemonic, OpKind,
};
use proptest::prelude::*;
use proptest::strategy::{BoxedStrategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// At most this many items in a generated case.
pub const MAX_GENERATED_ITEMS: usize = 12;

#[derive(Clone, Copy)]
enum Family {
    Integer,
    Stack,
    Branch,
    String,
    Segment,
    System,
    Io,
    Event,
    Simd,
    X87,
}

/// Weights per group drawn. System-side families (segment, system, I/O, events) are a
/// third of the groups; with their setup items about 40% of the items, of which about a
/// fifth of all items are the privileged or faulting instructions themselves. The x87
/// and SIMD families are 14% of the groups.
const FAMILIES: [(u32, Family); 10] = [
    (36, Family::Integer),
    (11, Family::Stack),
    (11, Family::Branch),
    (5, Family::String),
    (12, Family::Segment),
    (16, Family::System),
    (5, Family::Io),
    (4, Family::Event),
    (10, Family::Simd),
    (6, Family::X87),
];

/// What a family drew: a group of items that must run in order (setup items, then the
/// instruction), or a forward branch over whole groups.
enum Piece {
    Group(Vec<Item>),
    /// A branch item whose distance is counted in pieces, resolved to items once the
    /// pieces after it are known, so that it never lands between a group's setup items
    /// and its instruction (a REP with an unset count, a MOV CR3 from a random value).
    Branch(Item, usize),
}

impl Piece {
    fn len(&self) -> usize {
        match self {
            Piece::Group(items) => items.len(),
            Piece::Branch(..) => 1,
        }
    }
}

/// One piece from a family chosen by weight (`None` when the chosen form does not exist
/// in the mode: the caller draws again).
fn piece(g: &mut Gen, exclude: Exclude) -> Option<Piece> {
    let group = match g.weighted(&FAMILIES) {
        Family::Integer => integer::group(g)?,
        Family::Stack => stack::group(g)?,
        Family::Branch => {
            let pieces = g.range(1, 4) as usize;
            return Some(Piece::Branch(control::branch(g), pieces));
        }
        Family::String => string::group(g)?,
        Family::Segment => segment::group(g, &mut |g| {
            if g.chance(1, 4) {
                stack::group(g).and_then(|mut v| (v.len() == 1).then(|| v.remove(0)))
            } else {
                integer::one(g)
            }
        })?,
        Family::System => system::group(g)?,
        Family::Io => io::group(g)?,
        Family::Event => control::event(g)?,
        Family::Simd => simd::group(g)?,
        Family::X87 => x87::group(g)?,
    };
    if group.iter().any(|item| is_excluded(g.mode, item, exclude)) {
        return None;
    }
    Some(Piece::Group(settle_flags(g.mode, group)))
}

/// Which instructions to leave out of generated cases: given a decoded item, `true`
/// drops the group it belongs to.
pub type Exclude = fn(&Instruction) -> bool;

/// Leave nothing out.
pub fn nothing(_: &Instruction) -> bool {
    false
}

/// Whether `item` is an instruction `exclude` drops.
fn is_excluded(mode: Mode, item: &Item, exclude: Exclude) -> bool {
    let Item::Insn(bytes) = item else {
        return false;
    };
    let mut decoder = Decoder::with_ip(mode.bitness(), bytes, 0, DecoderOptions::NONE);
    exclude(&decoder.decode())
}

/// Where Intel and AMD processors differ and the emulator follows the AMD host it was
/// checked against (issue 3's oracle): left out whenever the reference is an Intel CPU
/// (Bochs' models, and VT-x silicon under `--kvm` or on bare metal):
/// - FLD ST(i) with ST(i) empty and the stack full: Bochs' Intel models report the
///   overflow (C1 = 1), the AMD host and so the emulator the underflow (C1 = 0); the
///   SDM does not order the two. Found by this run (seed 10, pae32 case 400).
/// - FCOMI, FCOMIP, FUCOMI, FUCOMIP: the SDM sets C1 to 0, the AMD host leaves it as it
///   was (the emulator follows the host). Found under Bochs `ryzen` (which implements
///   the SDM's rule, see [`bochs_bugs`]): `fisubr st, dword [ebx-9]; fcomi st, st(6)`,
///   C1 left set by the rounding of the FISUBR (diff --backend svm, seed 1, case 889).
pub fn vendor_differences(i: &Instruction) -> bool {
    i.code() == Code::Fld_sti || clears_c1_on_intel(i)
}

/// FCOMI and its popping and unordered forms, whose C1 differs by vendor (see
/// [`vendor_differences`]).
fn clears_c1_on_intel(i: &Instruction) -> bool {
    matches!(
        i.mnemonic(),
        Mnemonic::Fcomi | Mnemonic::Fcomip | Mnemonic::Fucomi | Mnemonic::Fucomip
    )
}

/// What Bochs 2.7 (Debian 12) gets wrong whatever its CPU model, left out of cases whose
/// reference is Bochs; each found by this differential run and checked against the host
/// CPU with the emulator's oracle:
/// - ADOX: Bochs leaves OF clear when the sum carries out (`adox rdx, rbp` with
///   RDX = 0xffffffff, RBP = -9; the destination itself is right).
/// - MMX shifts by an immediate 0 (`psrad mm3, 0`): Bochs leaves the register alone,
///   where every MMX write sets bits 79:64 of the x87 register to all ones (SDM 1 9.5.1).
/// - FCOMI and its forms clear C1 on every Bochs model, its AMD ones included, where
///   AMD silicon leaves C1 alone (Bochs' `FCOMI_ST0_STj`; see [`vendor_differences`]).
pub fn bochs_bugs(i: &Instruction) -> bool {
    let mmx_shift_by_zero = matches!(
        i.mnemonic(),
        Mnemonic::Psllw
            | Mnemonic::Pslld
            | Mnemonic::Psllq
            | Mnemonic::Psrlw
            | Mnemonic::Psrld
            | Mnemonic::Psrlq
            | Mnemonic::Psraw
            | Mnemonic::Psrad
    ) && i.op0_register().is_mm()
        && i.op1_kind() == OpKind::Immediate8
        && i.immediate8() == 0;
    i.mnemonic() == Mnemonic::Adox || mmx_shift_by_zero || clears_c1_on_intel(i)
}

/// What is left out under Bochs' Intel models (`cargo xtask vmx-diff` without `--kvm`):
/// [`bochs_bugs`] and [`vendor_differences`]. Its AMD models (`diff --backend svm`)
/// leave out [`bochs_bugs`] alone: there the vendor is the emulator's.
pub fn bochs_quirks(i: &Instruction) -> bool {
    bochs_bugs(i) || vendor_differences(i)
}

/// What QEMU 7.2's TCG gets wrong, left out of cases whose reference is QEMU TCG (`cargo
/// xtask diff --backend svm --qemu`).
pub fn qemu_tcg_quirks(i: &Instruction) -> bool {
    let _ = i;
    false
}

/// `group`, ended with [`SETTLE`] if one of its instructions leaves a status flag
/// undefined: inside the group, so that no branch lands before it, and after the whole
/// group, whose setup items read no flags (and whose PUSHF/POPF sequences must stay
/// together). What the backends leave in an undefined flag then never reaches a register
/// or memory through a later ADC, SETcc, PUSHF, ...; the final RFLAGS comparison leaves
/// those flags out (see `crate::flags`).
fn settle_flags(mode: Mode, mut group: Vec<Item>) -> Vec<Item> {
    let undefined = group.iter().any(|item| match item {
        Item::Insn(bytes) => undefined_by(bytes, mode.bitness()) != 0,
        Item::Branch { .. } => false,
    });
    if undefined {
        group.push(Item::Insn(SETTLE.to_vec()));
    }
    group
}

/// The items of a case of about `target` items (at most [`MAX_GENERATED_ITEMS`]) in
/// `mode`, a pure function of `seed`.
fn items(mode: Mode, target: usize, seed: u64, exclude: Exclude) -> Vec<Item> {
    let mut g = Gen::new(mode, seed);
    let target = target.clamp(1, MAX_GENERATED_ITEMS);
    let mut pieces: Vec<Piece> = Vec::new();
    let mut len = 0;
    for _ in 0..64 {
        if len >= target {
            break;
        }
        if let Some(p) = piece(&mut g, exclude) {
            if len + p.len() <= MAX_GENERATED_ITEMS {
                len += p.len();
                pieces.push(p);
            }
        }
    }
    let mut out = Vec::with_capacity(len);
    for (i, p) in pieces.iter().enumerate() {
        match p {
            Piece::Group(items) => out.extend(items.iter().cloned()),
            Piece::Branch(item, wanted) => {
                let after = &pieces[i + 1..];
                let remaining: usize = after.iter().map(Piece::len).sum();
                // The farthest piece boundary within reach, at most `wanted` pieces on;
                // past the last piece is the final HLT.
                let mut skip = 0;
                for q in after.iter().take(*wanted) {
                    if skip + q.len() > usize::from(MAX_SKIP) {
                        break;
                    }
                    skip += q.len();
                }
                if skip == 0 {
                    // Nothing after it: a distance of one reaches the final HLT. (Groups
                    // are shorter than MAX_SKIP, so a first piece always fits otherwise.)
                    skip = remaining.clamp(1, usize::from(MAX_SKIP));
                }
                let mut item = item.clone();
                if let Item::Branch { skip: s, .. } = &mut item {
                    *s = skip as u8;
                }
                out.push(item);
            }
        }
    }
    if out.is_empty() {
        // Only reachable if every draw failed to encode: a NOP keeps the case valid.
        out.push(Item::Insn(alloc::vec![0x90]));
    }
    out
}

/// A general-register value: small, boundary, 32-bit or fully random.
fn gpr() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => 0u64..=16,
        1 => (-16i64..0).prop_map(|v| v as u64),
        3 => prop::sample::select(&[
            0u64,
            u64::MAX,
            0x7fff_ffff_ffff_ffff,
            0x8000_0000_0000_0000,
            0x7fff_ffff,
            0x8000_0000,
            0xffff_ffff,
            0x1_0000_0000,
            0x7fff,
            0x8000,
            0xffff,
            0x7f,
            0x80,
            0xff,
            1,
        ][..]),
        2 => any::<u32>().prop_map(u64::from),
        3 => any::<u64>(),
    ]
}

/// CR0.EM (bit 2) and CR0.TS (bit 3) make every x87/MMX/SSE instruction fault (#NM or
/// #UD): each is kept one time in four (so set in one case in eight), using bits of the
/// random value above the optional ones, so that most x87 and SIMD items run.
fn fpu_usable_cr0(cr0: u64) -> u64 {
    let mut cr0 = cr0;
    if (cr0 >> 40) & 3 != 3 {
        cr0 &= !(1 << 2);
    }
    if (cr0 >> 42) & 3 != 3 {
        cr0 &= !(1 << 3);
    }
    cr0
}

/// CR4.OSFXSR (bit 9) clear makes SSE instructions #UD: it is set in seven cases in
/// eight (the bit, or either of two random bits above the optional ones).
fn fpu_usable_cr4(cr4: u64) -> u64 {
    if (cr4 >> 40) & 3 != 0 {
        cr4 | (1 << 9)
    } else {
        cr4
    }
}

/// Random cases in `mode`: initial state and 1..=12 items.
pub fn case_strategy(mode: Mode) -> BoxedStrategy<Case> {
    case_strategy_excluding(mode, nothing)
}

/// [`case_strategy`] without the instructions `exclude` drops (see [`bochs_quirks`]).
pub fn case_strategy_excluding(mode: Mode, exclude: Exclude) -> BoxedStrategy<Case> {
    (
        prop::array::uniform16(gpr()),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        1..=MAX_GENERATED_ITEMS,
        any::<u64>(),
        any::<u64>(),
        // One case in four outside real mode starts in user mode (CPL 3).
        prop::bool::weighted(if mode == Mode::Real { 0.0 } else { 0.25 }),
    )
        .prop_map(
            move |(gprs, rflags, cr0, cr4, efer, seed, target, code_seed, fpu_seed, user)| Case {
                mode,
                user,
                gprs,
                rflags: rflags & RFLAGS_OPTIONAL,
                cr0: fpu_usable_cr0(cr0) & CR0_OPTIONAL,
                cr4: fpu_usable_cr4(cr4) & CR4_OPTIONAL,
                efer: efer & EFER_OPTIONAL,
                seed,
                fpu_seed,
                items: items(mode, target, code_seed, exclude),
            },
        )
        .boxed()
}

/// `count` cases, spread round-robin over `modes`; the same `seed` gives the same cases.
pub fn generate(count: usize, seed: u64, modes: &[Mode]) -> Vec<Case> {
    generate_excluding(count, seed, modes, nothing)
}

/// [`generate`] without the instructions `exclude` drops (see [`bochs_quirks`]).
pub fn generate_excluding(count: usize, seed: u64, modes: &[Mode], exclude: Exclude) -> Vec<Case> {
    if modes.is_empty() {
        return Vec::new();
    }
    // ChaCha's 32-byte key from the 64-bit seed (splitmix64, as the data pages use).
    let mut key = [0u8; 32];
    let mut g = Gen::new(Mode::Real, seed);
    for chunk in key.chunks_mut(8) {
        chunk.copy_from_slice(&g.next().to_le_bytes());
    }
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &key);
    let mut runner = TestRunner::new_with_rng(
        Config {
            failure_persistence: None,
            ..Config::default()
        },
        rng,
    );
    let strategies: Vec<BoxedStrategy<Case>> = modes
        .iter()
        .map(|m| case_strategy_excluding(*m, exclude))
        .collect();
    let mut cases = Vec::with_capacity(count);
    for i in 0..count {
        // The strategies never reject, so a tree is always produced.
        if let Ok(tree) = strategies[i % strategies.len()].new_tree(&mut runner) {
            cases.push(tree.current());
        }
    }
    cases
}

fn branch_name(op: BranchOp, cond: u8, bits: u32) -> &'static str {
    const JCC: [&str; 16] = [
        "jo", "jno", "jb", "jae", "je", "jne", "jbe", "ja", "js", "jns", "jp", "jnp", "jl", "jge",
        "jle", "jg",
    ];
    match op {
        BranchOp::Jcc => JCC[usize::from(cond & 15)],
        BranchOp::Jmp => "jmp",
        BranchOp::Loop => "loop",
        BranchOp::Loope => "loope",
        BranchOp::Loopne => "loopne",
        BranchOp::Jcxz => match bits {
            16 => "jcxz",
            32 => "jecxz",
            _ => "jrcxz",
        },
        BranchOp::Call => "call",
    }
}

/// One line per item: offset in the code, bytes, Intel-syntax text; branches show the
/// item they go to.
pub fn disassemble(case: &Case) -> Vec<String> {
    let bits = case.mode.bitness();
    let (code, offsets) = case.assemble();
    let mut formatter = IntelFormatter::new();
    let n = case.items.len();
    let mut lines = Vec::with_capacity(n);
    for (i, item) in case.items.iter().enumerate() {
        let at = offsets[i];
        let bytes = &code[at..offsets[i + 1]];
        let hex = crate::case::to_hex(bytes);
        let text = match item {
            Item::Insn(b) => {
                let mut decoder = Decoder::with_ip(bits, b, at as u64, DecoderOptions::NONE);
                let ins = decoder.decode();
                if ins.is_invalid() || ins.len() != b.len() {
                    String::from("(bad encoding)")
                } else {
                    let mut text = String::new();
                    formatter.format(&ins, &mut text);
                    text
                }
            }
            Item::Branch { op, cond, skip } => {
                let target = (i + 1 + usize::from(*skip)).min(n);
                let name = branch_name(*op, *cond, bits);
                if target == n {
                    format!("{name} -> end (hlt)")
                } else {
                    format!("{name} -> item {target}")
                }
            }
        };
        lines.push(format!("{i:2} {at:04x}: {hex:<30} {text}"));
    }
    lines
}
