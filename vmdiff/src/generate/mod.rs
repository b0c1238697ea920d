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
    Code, Decoder, DecoderOptions, EncodingKind, Formatter, Instruction, IntelFormatter, Mnemonic,
    OpCodeTableKind, OpKind, Register,
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
/// xtask diff --backend svm --qemu`, where the guest runs on TCG's own CPU); each found
/// by this differential run, with Bochs `ryzen` (SVM) agreeing with the emulator:
/// - every x87 instruction: TCG keeps no x87 tag word for its arithmetic, so an empty
///   register is read as a number where silicon raises the stack fault (FSW.SF and IE,
///   the QNaN indefinite): `fdivp st(0), st` with ST(0) empty (compat32, seed 1 case 5);
/// - every MMX instruction: TCG runs EMMS with CR0.EM set instead of raising #UD (real
///   mode, CR0.EM, seed 1 case 132), and MMX writes share the x87 registers above;
/// - ENTER with a nesting level: TCG reads the outer frame pointers through a 32-bit
///   EBP wrapped where silicon faults on the stack segment (`enter 10h, 3` with EBP 0 in
///   compat32 ended in #PF at 0xfffffffc, seed 1 case 29);
/// - SYSENTER and SYSEXIT: TCG raises #GP(0) for SYSENTER in 64-bit mode, where AMD
///   processors raise #UD (long64, seed 1 case 190).
///
/// - MOVBE: with an operand-size prefix in real mode TCG stores other bytes than it
///   loads (`movbe [bx-7Ch], esi`, seed 1 case 45);
/// - INT1 (ICEBP): TCG raises #UD in 64-bit and compatibility mode instead of #DB
///   (compat32, seed 1 case 334);
/// - the conversions between MMX and SSE (CVTPI2PS, CVTPI2PD and back): TCG runs them
///   with CR4.OSFXSR clear, where they raise #UD (`cvtpi2pd xmm7, [ebx-40h]`, seed 1
///   case 289);
/// - legacy SSE instructions with a 16-byte memory operand that must be aligned: TCG
///   does not raise the #GP of a misaligned one (`cvtdq2ps xmm6, [bx+0Bh]` in real mode,
///   seed 1 case 350);
/// - TEST through F6 /1 and F7 /1, an alias of /0 on every processor: TCG raises #UD
///   (`test ebx, 17h` as F7 CB, seed 1 case 507);
/// - CRC32 in 16-bit code (MOVBE's opcode, 0F 38 F1): TCG reads the wrong operand size
///   (`crc32 esi, word [bx+59h]`, seed 1 case 1425);
/// - INT n from CPL 3 through a gate of DPL 0: in long mode TCG scales the #GP error
///   code's gate index by 16 (`int 58h` in compat32, seed 1 case 804), as the corpus'
///   ring3 guest notes;
/// - LSS and LTR: TCG loads a null selector where silicon raises #GP (`lss esi` of
///   selector 3 at CPL 0 in 64-bit mode, seed 1 case 763; `ltr ax` with AX 0, case 1016);
/// - loads of DS, ES, FS and GS (MOV, POP, LDS, LES, LFS, LGS): TCG checks neither a
///   null data segment nor a segment limit on the accesses through it, so a case that
///   loads a null selector and then stores through it runs on where silicon raises #GP
///   (`pop ds; mov word [ebx-5Dh], 38h` in paged32, seed 1 case 1962);
/// - XSETBV: TCG raises #GP for CPL 3 before the #UD of CR4.OSXSAVE clear (long64 at CPL
///   3, seed 1 case 1028);
/// - SSE floating-point arithmetic, compares and conversions from floating point: TCG
///   never reports a denormal operand (MXCSR.DE, and its #XM when unmasked): `minsd
///   xmm5, [ebx-2Ch]` (seed 1 case 1496), `addpd xmm2, xmm6` (seed 2 case 56);
/// - ADCX and ADOX: TCG computes the wrong CF and OF, and ADOX leaves other bits of
///   RFLAGS set (`adox r14d, ebp`, seed 2 case 228; `adcx edi, esi`, case 893);
/// - MOV to CR0 and LMSW: they can set CR0.EM, under which TCG raises #NM before the #UD
///   of an SSE instruction (`lmsw ax; addps xmm2, xmm5`, seed 2 case 1811; see also
///   [`qemu_tcg_state`]);
/// - CMPXCHG8B and CMPXCHG16B: TCG clears the status flags other than ZF, which the
///   instruction leaves alone (`cmp al, al; cmpxchg8b [rbx+18h]` lost PF, seed 1 case
///   1028);
/// - MOVS, LODS, STOS, CMPS and SCAS with a REP prefix: TCG checks no data segment limit,
///   so a large count runs past the environment's 2 MiB segments into a #PF where
///   silicon raises #GP (`rep lodsd` with ECX 0xffffffff, seed 1 case 1962); INS and
///   OUTS, which the SVM backend completes itself, stay.
///
/// The deviations that are not instructions are handled where they show: TCG delivers
/// faults without RF in the pushed RFLAGS image (the comparison leaves that bit out
/// under TCG: `snapshot::Tolerances::frame_rf`), it implements neither alignment checks
/// nor the priority of CR0.EM over CR0.TS for SSE (the cases' start state leaves them
/// out: [`qemu_tcg_state`]), it sets bit 5 of the PAE PDPTEs it walks under nested
/// paging (a reserved bit there: `--qemu` leaves PAE mode out), and it reports INS/OUTS
/// intercepts without their address size (the SVM backend decodes it).
pub fn qemu_tcg_quirks(i: &Instruction) -> bool {
    // The escape opcodes D8-DF (iced spells a register form's second byte in too).
    let op = i.op_code().op_code();
    let first = if op > 0xff { op >> 8 } else { op };
    let x87 = i.op_code().table() == OpCodeTableKind::Normal && (0xd8..=0xdf).contains(&first);
    let mmx = i.mnemonic() == Mnemonic::Emms
        || (0..i.op_count()).any(|n| i.op_kind(n) == OpKind::Register && i.op_register(n).is_mm());
    let nested_enter = i.mnemonic() == Mnemonic::Enter && i.immediate8_2nd() != 0;
    let sysenter = matches!(
        i.mnemonic(),
        Mnemonic::Sysenter | Mnemonic::Sysexit | Mnemonic::Sysexitq
    );
    let mmx_conversion = matches!(
        i.mnemonic(),
        Mnemonic::Cvtpi2ps
            | Mnemonic::Cvtpi2pd
            | Mnemonic::Cvtps2pi
            | Mnemonic::Cvttps2pi
            | Mnemonic::Cvtpd2pi
            | Mnemonic::Cvttpd2pi
    );
    let aligned_sse = i.encoding() == EncodingKind::Legacy
        && (0..i.op_count()).any(|n| i.op_kind(n) == OpKind::Memory)
        && i.memory_size().size() == 16
        && (0..i.op_count()).any(|n| i.op_kind(n) == OpKind::Register && i.op_register(n).is_xmm())
        && !matches!(
            i.mnemonic(),
            Mnemonic::Movups | Mnemonic::Movupd | Mnemonic::Movdqu | Mnemonic::Lddqu
        );
    let test_alias = matches!(
        i.code(),
        Code::Test_rm8_imm8_F6r1
            | Code::Test_rm16_imm16_F7r1
            | Code::Test_rm32_imm32_F7r1
            | Code::Test_rm64_imm32_F7r1
    );
    let rep_string = (i.has_rep_prefix() || i.has_repne_prefix())
        && matches!(
            i.mnemonic(),
            Mnemonic::Movsb
                | Mnemonic::Movsw
                | Mnemonic::Movsd
                | Mnemonic::Movsq
                | Mnemonic::Lodsb
                | Mnemonic::Lodsw
                | Mnemonic::Lodsd
                | Mnemonic::Lodsq
                | Mnemonic::Stosb
                | Mnemonic::Stosw
                | Mnemonic::Stosd
                | Mnemonic::Stosq
                | Mnemonic::Cmpsb
                | Mnemonic::Cmpsw
                | Mnemonic::Cmpsd
                | Mnemonic::Cmpsq
                | Mnemonic::Scasb
                | Mnemonic::Scasw
                | Mnemonic::Scasd
                | Mnemonic::Scasq
        );
    let data_segment_load = matches!(
        i.mnemonic(),
        Mnemonic::Lds | Mnemonic::Les | Mnemonic::Lfs | Mnemonic::Lgs
    ) || (matches!(i.mnemonic(), Mnemonic::Mov | Mnemonic::Pop)
        && i.op_count() > 0
        && i.op0_kind() == OpKind::Register
        && i.op0_register().is_segment_register());
    let sse_fp = match i.mnemonic() {
        // CMPSD is also the string compare.
        Mnemonic::Cmpsd => {
            (0..i.op_count()).any(|n| i.op_kind(n) == OpKind::Register && i.op_register(n).is_xmm())
        }
        m => i.encoding() == EncodingKind::Legacy && SSE_FP.contains(&m),
    };
    let cr0_write = i.mnemonic() == Mnemonic::Lmsw
        || (i.mnemonic() == Mnemonic::Mov
            && i.op_count() > 0
            && i.op0_kind() == OpKind::Register
            && i.op0_register() == Register::CR0);
    let others = matches!(
        i.mnemonic(),
        Mnemonic::Movbe
            | Mnemonic::Crc32
            | Mnemonic::Int1
            | Mnemonic::Int
            | Mnemonic::Lss
            | Mnemonic::Ltr
            | Mnemonic::Xsetbv
            | Mnemonic::Adcx
            | Mnemonic::Adox
            | Mnemonic::Cmpxchg8b
            | Mnemonic::Cmpxchg16b
    );
    x87 || mmx
        || nested_enter
        || sysenter
        || mmx_conversion
        || aligned_sse
        || test_alias
        || rep_string
        || data_segment_load
        || sse_fp
        || cr0_write
        || others
}

/// The SSE floating-point instructions whose denormal operands QEMU's TCG does not
/// report (see [`qemu_tcg_quirks`]).
const SSE_FP: &[Mnemonic] = &[
    Mnemonic::Addps,
    Mnemonic::Addpd,
    Mnemonic::Addss,
    Mnemonic::Addsd,
    Mnemonic::Subps,
    Mnemonic::Subpd,
    Mnemonic::Subss,
    Mnemonic::Subsd,
    Mnemonic::Mulps,
    Mnemonic::Mulpd,
    Mnemonic::Mulss,
    Mnemonic::Mulsd,
    Mnemonic::Divps,
    Mnemonic::Divpd,
    Mnemonic::Divss,
    Mnemonic::Divsd,
    Mnemonic::Sqrtps,
    Mnemonic::Sqrtpd,
    Mnemonic::Sqrtss,
    Mnemonic::Sqrtsd,
    Mnemonic::Minps,
    Mnemonic::Minpd,
    Mnemonic::Minss,
    Mnemonic::Minsd,
    Mnemonic::Maxps,
    Mnemonic::Maxpd,
    Mnemonic::Maxss,
    Mnemonic::Maxsd,
    Mnemonic::Cmpps,
    Mnemonic::Cmppd,
    Mnemonic::Cmpss,
    Mnemonic::Comiss,
    Mnemonic::Comisd,
    Mnemonic::Ucomiss,
    Mnemonic::Ucomisd,
    Mnemonic::Haddps,
    Mnemonic::Haddpd,
    Mnemonic::Hsubps,
    Mnemonic::Hsubpd,
    Mnemonic::Addsubps,
    Mnemonic::Addsubpd,
    Mnemonic::Dpps,
    Mnemonic::Dppd,
    Mnemonic::Roundps,
    Mnemonic::Roundpd,
    Mnemonic::Roundss,
    Mnemonic::Roundsd,
    Mnemonic::Cvtps2pd,
    Mnemonic::Cvtpd2ps,
    Mnemonic::Cvtss2sd,
    Mnemonic::Cvtsd2ss,
    Mnemonic::Cvtps2dq,
    Mnemonic::Cvttps2dq,
    Mnemonic::Cvtpd2dq,
    Mnemonic::Cvttpd2dq,
    Mnemonic::Cvtss2si,
    Mnemonic::Cvttss2si,
    Mnemonic::Cvtsd2si,
    Mnemonic::Cvttsd2si,
];

/// CR0.AM.
const CR0_AM: u64 = 1 << 18;
/// CR0.EM.
const CR0_EM: u64 = 1 << 2;

/// The start state of `case` without what QEMU 7.2's TCG does not implement: CR0.AM
/// cleared (TCG raises no #AC: `sgdt [rbx+41h]` misaligned at CPL 3 with RFLAGS.AC stored
/// where silicon faults, seed 1 case 83), and CR0.EM cleared (an SSE instruction under
/// EM and TS raises #UD before #NM, TCG raises #NM: `psubq xmm6, xmm4`, seed 1 case 78;
/// the cases' CR0 writes, which could set EM again, are left out by
/// [`qemu_tcg_quirks`]).
pub fn qemu_tcg_state(case: &mut Case) {
    case.cr0 &= !(CR0_AM | CR0_EM);
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
