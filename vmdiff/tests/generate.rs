//! The case generator (feature `generate`): determinism, encodings that decode back, the
//! rules that keep a case deterministic and inside guest RAM (checked independently of
//! the generator, by decoding what it produced), and generated cases running to an end on
//! the emulator.

#![cfg(feature = "generate")]

use iced_x86::{
    Code, CpuidFeature, Decoder, DecoderOptions, EncodingKind, FlowControl, Instruction,
    InstructionInfoFactory, Mnemonic, OpAccess, OpKind, Register,
};
use opsvisor_core::cpuid::CpuidPolicy;
use opsvisor_core::platform::CapturePlatform;
use opsvisor_emu::EmuVcpu;
use opsvisor_vmdiff::case::{Case, Item, Mode, MAX_SKIP};
use opsvisor_vmdiff::generate::{case_strategy, disassemble, generate, MAX_GENERATED_ITEMS};
use opsvisor_vmdiff::layout::{
    selector, MSRS, PAE_PDPT, PAE_PDPT_ALT, PD32, PD32_ALT, PML4, PML4_ALT,
};
use opsvisor_vmdiff::run::Runner;
use opsvisor_vmdiff::snapshot::Ending;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use std::collections::HashMap;

fn decode_one(mode: Mode, bytes: &[u8]) -> Instruction {
    let mut d = Decoder::with_ip(mode.bitness(), bytes, 0, DecoderOptions::NONE);
    let ins = d.decode();
    assert!(
        !ins.is_invalid() && ins.len() == bytes.len(),
        "{mode:?}: {bytes:02x?} is not one instruction ({:?}, {} bytes)",
        ins.code(),
        ins.len()
    );
    ins
}

#[test]
fn the_same_seed_gives_the_same_cases() {
    let a = generate(300, 42, &Mode::ALL);
    let b = generate(300, 42, &Mode::ALL);
    assert_eq!(a, b);
    let c = generate(300, 43, &Mode::ALL);
    assert_ne!(a, c);
    assert_eq!(a.len(), 300);
    for (i, case) in a.iter().enumerate() {
        assert_eq!(case.mode, Mode::ALL[i % Mode::ALL.len()]);
    }
    assert!(generate(5, 1, &[]).is_empty());
    let only = generate(10, 7, &[Mode::Compat32]);
    assert!(only.iter().all(|c| c.mode == Mode::Compat32));
}

#[test]
fn the_strategy_gives_cases_in_its_mode() {
    let mut runner = TestRunner::deterministic();
    for mode in Mode::ALL {
        let s = case_strategy(mode);
        for _ in 0..50 {
            let case = s.new_tree(&mut runner).unwrap().current();
            assert_eq!(case.mode, mode);
            assert!((1..=MAX_GENERATED_ITEMS).contains(&case.items.len()));
        }
    }
}

#[test]
fn every_item_decodes_to_one_instruction_and_cases_round_trip() {
    for case in generate(3000, 1, &Mode::ALL) {
        assert!((1..=MAX_GENERATED_ITEMS).contains(&case.items.len()));
        for item in &case.items {
            match item {
                Item::Insn(bytes) => {
                    decode_one(case.mode, bytes);
                }
                Item::Branch { cond, skip, .. } => {
                    assert!(*cond < 16 && (1..=MAX_SKIP).contains(skip));
                }
            }
        }
        assert_eq!(Case::decode(&case.encode()).unwrap(), case);
        let lines = disassemble(&case);
        assert_eq!(lines.len(), case.items.len());
        assert!(
            lines.iter().all(|l| !l.contains("bad encoding")),
            "{lines:#?}"
        );
    }
}

#[test]
fn disassembly_shows_offsets_text_and_branch_targets() {
    let case = Case {
        mode: Mode::Long64,
        user: false,
        gprs: [0; 16],
        rflags: 0,
        cr0: 0,
        cr4: 0,
        efer: 0,
        seed: 0,
        fpu_seed: 0,
        items: vec![
            Item::Insn(vec![0x48, 0x01, 0xc8]),
            Item::Branch {
                op: opsvisor_vmdiff::case::BranchOp::Jcc,
                cond: 4,
                skip: 1,
            },
            Item::Insn(vec![0x90]),
            Item::Branch {
                op: opsvisor_vmdiff::case::BranchOp::Jmp,
                cond: 0,
                skip: 8,
            },
        ],
    };
    let lines = disassemble(&case);
    assert!(
        lines[0].contains("0000:") && lines[0].ends_with("add rax,rcx"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains("0003:") && lines[1].ends_with("je -> item 3"),
        "{}",
        lines[1]
    );
    assert!(lines[2].ends_with("nop"), "{}", lines[2]);
    assert!(lines[3].ends_with("jmp -> end (hlt)"), "{}", lines[3]);
}

/// What the checker knows about the registers from `mov r32/r16, imm` items.
#[derive(Clone, Default)]
struct Known {
    values: HashMap<Register, u64>,
}

impl Known {
    fn get(&self, r: Register) -> Option<u64> {
        self.values.get(&r.full_register()).copied()
    }
    /// What both `self` and `other` know (control may arrive from either).
    fn meet(&mut self, other: &Known) {
        self.values.retain(|r, v| other.values.get(r) == Some(v));
    }
    fn update(&mut self, ins: &Instruction, written: &[Register]) {
        for r in written {
            self.values.remove(&r.full_register());
            if r.full_register() == Register::RCX {
                self.values.remove(&Register::CL);
            }
        }
        match ins.code() {
            Code::Mov_r32_imm32 | Code::Mov_r16_imm16 => {
                self.values
                    .insert(ins.op0_register().full_register(), ins.immediate(1));
            }
            // CL alone (a shift count); RCX's upper bits stay unknown.
            Code::Mov_r8_imm8 if ins.op0_register() == Register::CL => {
                self.values.insert(Register::CL, ins.immediate(1));
            }
            _ => {}
        }
    }
}

/// The mnemonic with operand-size variants folded (PUSHFD → PUSHF, POPAD → POPA, ...).
fn mn(ins: &Instruction) -> Mnemonic {
    match ins.mnemonic() {
        Mnemonic::Pushfd | Mnemonic::Pushfq => Mnemonic::Pushf,
        Mnemonic::Popfd | Mnemonic::Popfq => Mnemonic::Popf,
        Mnemonic::Pushad => Mnemonic::Pusha,
        Mnemonic::Popad => Mnemonic::Popa,
        m => m,
    }
}

const FORBIDDEN: &[Mnemonic] = &[
    Mnemonic::Rdtsc,
    Mnemonic::Rdtscp,
    Mnemonic::Rdpmc,
    Mnemonic::Rdrand,
    Mnemonic::Rdseed,
    Mnemonic::Rdpid,
    Mnemonic::Monitor,
    Mnemonic::Mwait,
    Mnemonic::Syscall,
    Mnemonic::Sysret,
    Mnemonic::Iret,
    Mnemonic::Iretd,
    Mnemonic::Iretq,
    Mnemonic::Retf,
    Mnemonic::Ret,
    Mnemonic::Jmp,
    Mnemonic::Call,
    Mnemonic::Getsec,
    // x87 transcendentals: the emulator computes them approximately.
    Mnemonic::Fsin,
    Mnemonic::Fcos,
    Mnemonic::Fsincos,
    Mnemonic::Fptan,
    Mnemonic::Fpatan,
    Mnemonic::F2xm1,
    Mnemonic::Fyl2x,
    Mnemonic::Fyl2xp1,
    // Vendor-specific approximations.
    Mnemonic::Rcpps,
    Mnemonic::Rcpss,
    Mnemonic::Rsqrtps,
    Mnemonic::Rsqrtss,
    // Copy the undefined condition codes (and FIP/FDP/FOP) out.
    Mnemonic::Fstsw,
    Mnemonic::Fnstsw,
    Mnemonic::Fstenv,
    Mnemonic::Fnstenv,
    Mnemonic::Fsave,
    Mnemonic::Fnsave,
    Mnemonic::Fxsave,
    Mnemonic::Fxsave64,
    // Load random memory as x87/SSE state.
    Mnemonic::Fxrstor,
    Mnemonic::Fxrstor64,
    Mnemonic::Frstor,
    Mnemonic::Fldenv,
    // Store to DS:rDI.
    Mnemonic::Maskmovq,
    Mnemonic::Maskmovdqu,
];

/// The x87 instructions the generator may emit.
const X87: &[Mnemonic] = &[
    Mnemonic::Fld,
    Mnemonic::Fst,
    Mnemonic::Fstp,
    Mnemonic::Fild,
    Mnemonic::Fist,
    Mnemonic::Fistp,
    Mnemonic::Fisttp,
    Mnemonic::Fbld,
    Mnemonic::Fbstp,
    Mnemonic::Fld1,
    Mnemonic::Fldz,
    Mnemonic::Fldpi,
    Mnemonic::Fldl2e,
    Mnemonic::Fldl2t,
    Mnemonic::Fldlg2,
    Mnemonic::Fldln2,
    Mnemonic::Fadd,
    Mnemonic::Faddp,
    Mnemonic::Fiadd,
    Mnemonic::Fsub,
    Mnemonic::Fsubp,
    Mnemonic::Fisub,
    Mnemonic::Fsubr,
    Mnemonic::Fsubrp,
    Mnemonic::Fisubr,
    Mnemonic::Fmul,
    Mnemonic::Fmulp,
    Mnemonic::Fimul,
    Mnemonic::Fdiv,
    Mnemonic::Fdivp,
    Mnemonic::Fidiv,
    Mnemonic::Fdivr,
    Mnemonic::Fdivrp,
    Mnemonic::Fidivr,
    Mnemonic::Fchs,
    Mnemonic::Fabs,
    Mnemonic::Fsqrt,
    Mnemonic::Frndint,
    Mnemonic::Fscale,
    Mnemonic::Fxtract,
    Mnemonic::Fprem,
    Mnemonic::Fprem1,
    Mnemonic::Fcom,
    Mnemonic::Fcomp,
    Mnemonic::Fcompp,
    Mnemonic::Fucom,
    Mnemonic::Fucomp,
    Mnemonic::Fucompp,
    Mnemonic::Ficom,
    Mnemonic::Ficomp,
    Mnemonic::Fcomi,
    Mnemonic::Fcomip,
    Mnemonic::Fucomi,
    Mnemonic::Fucomip,
    Mnemonic::Ftst,
    Mnemonic::Fxam,
    Mnemonic::Fxch,
    Mnemonic::Fincstp,
    Mnemonic::Fdecstp,
    Mnemonic::Ffree,
    Mnemonic::Fninit,
    Mnemonic::Finit,
    Mnemonic::Fnclex,
    Mnemonic::Fclex,
    Mnemonic::Fldcw,
    Mnemonic::Fnstcw,
    Mnemonic::Fstcw,
    Mnemonic::Fcmovb,
    Mnemonic::Fcmove,
    Mnemonic::Fcmovbe,
    Mnemonic::Fcmovu,
    Mnemonic::Fcmovnb,
    Mnemonic::Fcmovne,
    Mnemonic::Fcmovnbe,
    Mnemonic::Fcmovnu,
    Mnemonic::Fnop,
    Mnemonic::Wait,
];

/// The extensions whose (legacy-encoded) instructions the SIMD family may emit: those
/// the emulator's CPUID reports.
const SIMD: &[CpuidFeature] = &[
    CpuidFeature::MMX,
    CpuidFeature::SSE,
    CpuidFeature::SSE2,
    CpuidFeature::SSE3,
    CpuidFeature::SSSE3,
    CpuidFeature::SSE4_1,
    CpuidFeature::SSE4_2,
];

/// Instructions that fault, interrupt or halt: allowed in items despite their flow
/// control.
const EVENTS: &[Mnemonic] = &[
    Mnemonic::Int,
    Mnemonic::Int3,
    Mnemonic::Into,
    Mnemonic::Int1,
    Mnemonic::Ud2,
    Mnemonic::Hlt,
    Mnemonic::Sysenter,
    Mnemonic::Vmcall,
    Mnemonic::Vmlaunch,
    Mnemonic::Vmresume,
    Mnemonic::Vmxoff,
];

const FPU_OR_VECTOR: &[CpuidFeature] = &[
    CpuidFeature::FPU,
    CpuidFeature::MMX,
    CpuidFeature::SSE,
    CpuidFeature::SSE2,
    CpuidFeature::SSE3,
    CpuidFeature::SSSE3,
    CpuidFeature::SSE4_1,
    CpuidFeature::SSE4_2,
    CpuidFeature::AVX,
    CpuidFeature::AVX2,
    CpuidFeature::AVX512F,
    CpuidFeature::FMA,
];

/// The ports the generator may touch: none whose answer depends on when it is read (the
/// PIT, port 0x61, the CMOS clock, the ACPI PM timer).
const PORTS: &[u64] = &[
    0x80, 0x3f8, 0x3f9, 0x3fa, 0x3fb, 0x3fc, 0x3fd, 0x3fe, 0x3ff, 0x21, 0x1234, 0xcf8, 0xcfc,
    0x510, 0x511, 0xf4,
];

/// Check one case against the rules; `Err` names the item and the rule.
fn check_case(case: &Case) -> Result<(), String> {
    let mode = case.mode;
    let mut factory = InstructionInfoFactory::new();
    let mut known = Known::default();
    let mut previous: Vec<Option<Instruction>> = Vec::new();
    // RSI/RDI hold a pointer into the data area (set by `lea r, [rbx+d]`).
    let mut string_pointer = HashMap::new();
    let mut regs = Vec::new();
    let n = case.items.len();
    // Items a branch can land on, and what is known on each branch's way there.
    let mut target = vec![false; n + 1];
    let mut arriving: Vec<Vec<(Known, HashMap<Register, bool>)>> = vec![Vec::new(); n + 1];
    for (i, item) in case.items.iter().enumerate() {
        if let Item::Branch { skip, .. } = item {
            target[(i + 1 + usize::from(*skip)).min(n)] = true;
        }
    }
    let decoded: Vec<Option<Instruction>> = case
        .items
        .iter()
        .map(|item| match item {
            Item::Insn(bytes) => Some(decode_one(mode, bytes)),
            Item::Branch { .. } => None,
        })
        .collect();
    for (i, item) in case.items.iter().enumerate() {
        for (k, s) in std::mem::take(&mut arriving[i]) {
            known.meet(&k);
            string_pointer.retain(|r, v| s.get(r) == Some(v));
        }
        if let Item::Branch { skip, .. } = item {
            // LOOP* decrement RCX, whether or not they branch.
            known.values.remove(&Register::RCX);
            arriving[(i + 1 + usize::from(*skip)).min(n)]
                .push((known.clone(), string_pointer.clone()));
            previous.push(None);
            continue;
        }
        let Some(ins) = decoded[i] else { continue };
        let m = mn(&ins);
        let fail = |why: &str| {
            Err(format!(
                "item {i} ({m:?}, {:?}) in {mode:?}: {why}",
                ins.code()
            ))
        };
        // The instruction k items back, if control certainly came through it.
        let prev = |k: usize| -> Option<Instruction> {
            let j = i.checked_sub(k)?;
            if target[j + 1..=i].iter().any(|t| *t) {
                return None;
            }
            previous.get(j).copied().flatten()
        };
        if FORBIDDEN.contains(&m) {
            return fail("forbidden mnemonic");
        }
        let info = factory.info(&ins);
        regs.clear();
        regs.extend(info.used_registers().iter().copied());
        let memory: Vec<_> = info.used_memory().to_vec();
        // x87, MMX and SSE..SSE4.2 only as listed; nothing AVX or later, nothing of an
        // extension the emulator's CPUID does not report.
        let vector_state = regs.iter().any(|u| {
            let r = u.register();
            r.is_st() || r.is_mm() || r.is_xmm() || r.is_ymm() || r.is_zmm() || r.is_k()
        }) || (m != Mnemonic::Crc32 // SSE4.2 by CPUID, but general registers only
            && ins.cpuid_features().iter().any(|f| FPU_OR_VECTOR.contains(f)));
        let allowed_fpu = ins.encoding() == EncodingKind::Legacy
            && (X87.contains(&m) || ins.cpuid_features().iter().all(|f| SIMD.contains(f)))
            && !regs.iter().any(|u| {
                let r = u.register();
                r.is_ymm() || r.is_zmm() || r.is_k()
            });
        if vector_state && !allowed_fpu {
            return fail("FPU/vector instruction not allowed");
        }
        if let Err(why) = check_fpu_setup(&ins, prev(1), prev(2), prev(3)) {
            return fail(why);
        }
        if !matches!(ins.flow_control(), FlowControl::Next) && !EVENTS.contains(&m) {
            return fail("control transfer outside a branch item");
        }
        // RBX/RSP only written by stack instructions.
        let writes: Vec<Register> = regs
            .iter()
            .filter(|u| {
                matches!(
                    u.access(),
                    OpAccess::Write
                        | OpAccess::CondWrite
                        | OpAccess::ReadWrite
                        | OpAccess::ReadCondWrite
                )
            })
            .map(|u| u.register())
            .collect();
        let cpuid_saved_rbx = m == Mnemonic::Cpuid
            && (1..=3).any(|k| {
                prev(k).is_some_and(|p| {
                    mn(&p) == Mnemonic::Push
                        && p.op0_kind() == OpKind::Register
                        && p.op0_register().full_register() == Register::RBX
                })
            })
            && decoded.get(i + 1).copied().flatten().is_some_and(|p| {
                mn(&p) == Mnemonic::Pop && p.op0_register().full_register() == Register::RBX
            })
            && !target[i + 1];
        let stack = ins.is_stack_instruction() || m == Mnemonic::Sysenter;
        if writes.iter().any(|r| r.full_register() == Register::RSP) && !stack {
            return fail("writes RSP");
        }
        if writes.iter().any(|r| r.full_register() == Register::RBX)
            && !matches!(m, Mnemonic::Pop | Mnemonic::Popa)
            && !cpuid_saved_rbx
        {
            return fail("writes RBX");
        }
        // Popping into RBX only right after CPUID (which clobbered it; pushed before).
        if m == Mnemonic::Pop
            && ins.op0_kind() == OpKind::Register
            && ins.op0_register().full_register() == Register::RBX
            && prev(1).map(|p| mn(&p)) != Some(Mnemonic::Cpuid)
        {
            return fail("pops RBX");
        }
        if m == Mnemonic::Pop
            && ins.op0_kind() == OpKind::Register
            && ins.op0_register().full_register() == Register::RSP
        {
            return fail("pops RSP");
        }
        if m == Mnemonic::Popa && prev(1).map(|p| mn(&p)) != Some(Mnemonic::Pusha) {
            return fail("POPA without PUSHA");
        }
        if m == Mnemonic::Leave && prev(1).map(|p| mn(&p)) != Some(Mnemonic::Enter) {
            return fail("LEAVE without ENTER");
        }
        if m == Mnemonic::Popf
            && !matches!(
                prev(1).map(|p| mn(&p)),
                Some(Mnemonic::Pushf | Mnemonic::Push)
            )
        {
            return fail("POPF of something not from PUSHF");
        }
        if m == Mnemonic::Popf && prev(1).map(|p| mn(&p)) == Some(Mnemonic::Push) {
            // pushf; pop r; op r, IF/AC/DF; push r; popf — never TF.
            let Some(op) = prev(2) else {
                return fail("POPF of a pushed register not from PUSHF");
            };
            let mask = op.immediate(1);
            let bits = if mn(&op) == Mnemonic::And {
                !mask & 0xffff_ffff
            } else {
                mask
            };
            if bits & !((1 << 9) | (1 << 10) | (1 << 18)) != 0
                || prev(4).map(|p| mn(&p)) != Some(Mnemonic::Pushf)
            {
                return fail("POPF may change more than IF/AC/DF");
            }
        }
        // Memory operands: [rbx+disp8], the stack, or the string pointers.
        for mem in &memory {
            let base = mem.base().full_register();
            let ok = match base {
                _ if m == Mnemonic::Lea || mem.access() == OpAccess::NoMemAccess => true,
                Register::RBX => {
                    let disp = mem.displacement() as i64;
                    let disp = match mode.bitness() {
                        16 => i64::from(disp as u16 as i16),
                        32 => i64::from(disp as u32 as i32),
                        _ => disp,
                    };
                    (mem.index() == Register::None || m == Mnemonic::Xlatb)
                        && (-128..=127 + 8).contains(&disp)
                }
                Register::RSP => true,
                Register::RBP => m == Mnemonic::Enter || m == Mnemonic::Leave,
                Register::RSI | Register::RDI => string_pointer.get(&base) == Some(&true),
                _ => false,
            };
            if !ok {
                return fail(&format!("memory operand {mem:?}"));
            }
        }
        // REP counts come from `mov ecx/cx, 0..=8`.
        if (ins.has_rep_prefix() || ins.has_repne_prefix())
            && !matches!(known.get(Register::RCX), Some(0..=8))
        {
            return fail("REP without a small count");
        }
        // SHLD/SHRD of 16-bit operands with a count of 17..=31 leave an undefined result.
        if matches!(m, Mnemonic::Shld | Mnemonic::Shrd) {
            let count = match ins.op2_kind() {
                OpKind::Register => known.values.get(&Register::CL).copied(),
                _ => Some(ins.immediate(2)),
            };
            let sixteen = ins.op1_register().size() == 2;
            if sixteen && count.is_none_or(|c| c & 31 > 16) {
                return fail("16-bit SHLD/SHRD with a count over 16");
            }
        }
        // Bit-string offsets from a register only on registers.
        if matches!(
            m,
            Mnemonic::Bt | Mnemonic::Bts | Mnemonic::Btr | Mnemonic::Btc
        ) && ins.op0_kind() == OpKind::Memory
            && ins.op1_kind() == OpKind::Register
        {
            return fail("BT* memory with a register offset");
        }
        // Control registers.
        if ins.code() == Code::Mov_cr_r32 || ins.code() == Code::Mov_cr_r64 {
            let src = ins.op1_register();
            match ins.op0_register() {
                Register::CR3 => {
                    let roots = [0, PD32, PD32_ALT, PML4, PML4_ALT];
                    let ok = known.get(src).is_some_and(|v| match mode {
                        Mode::Long64 | Mode::Compat32 => v == PML4 || v == PML4_ALT,
                        Mode::Paged32 => v == PD32 || v == PD32_ALT,
                        Mode::Pae32 => v == PAE_PDPT || v == PAE_PDPT_ALT,
                        _ => roots.contains(&v),
                    });
                    if !ok {
                        return fail("CR3 from an unknown value");
                    }
                }
                Register::CR8 => {
                    if !matches!(known.get(src), Some(0..=16)) {
                        return fail("CR8 from an unknown value");
                    }
                }
                cr @ (Register::CR0 | Register::CR4) => {
                    let (Some(read), Some(op)) = (prev(2), prev(1)) else {
                        return fail("CR0/CR4 write without read-modify-write");
                    };
                    // The CR4 bits of the CPU model's features (UMIP, LA57, FSGSBASE,
                    // PCIDE, OSXSAVE, PKE) in every mode; never SMEP or SMAP.
                    let features: u64 =
                        (1 << 11) | (1 << 12) | (1 << 16) | (1 << 17) | (1 << 18) | (1 << 22);
                    let allowed: u64 = if cr == Register::CR0 {
                        (1 << 1) | (1 << 2) | (1 << 3) | (1 << 5) | (1 << 16) | (1 << 18)
                    } else if matches!(
                        mode,
                        Mode::Paged32 | Mode::Pae32 | Mode::Long64 | Mode::Compat32
                    ) {
                        (1 << 2) | (1 << 3) | (1 << 7) | (1 << 9) | (1 << 10) | features
                    } else {
                        (1 << 2) | (1 << 3) | (1 << 9) | (1 << 10) | features
                    };
                    let bit = op.immediate(1);
                    if read.op1_register() != cr
                        || mn(&op) != Mnemonic::Xor
                        || bit.count_ones() != 1
                        || bit & allowed == 0
                        || read.op0_register().full_register() != src.full_register()
                    {
                        return fail("CR0/CR4 write of a bit not allowed");
                    }
                }
                _ => return fail("MOV to another control register"),
            }
        }
        if m == Mnemonic::Mov && (ins.op0_register().is_dr() || ins.op0_register().is_tr()) {
            return fail("MOV to DR/TR");
        }
        // Descriptor tables reload what SGDT/SIDT just stored.
        if matches!(m, Mnemonic::Lgdt | Mnemonic::Lidt) {
            let want = if m == Mnemonic::Lgdt {
                Mnemonic::Sgdt
            } else {
                Mnemonic::Sidt
            };
            let ok = prev(1).is_some_and(|p| {
                mn(&p) == want && p.memory_displacement64() == ins.memory_displacement64()
            });
            if !ok {
                return fail("LGDT/LIDT not of what SGDT/SIDT stored");
            }
        }
        if m == Mnemonic::Lmsw && mode == Mode::Real {
            let v = known.get(ins.op0_register());
            if ins.op0_kind() != OpKind::Register || v.is_none_or(|v| v & 1 != 0) {
                return fail("LMSW may set PE in real mode");
            }
        }
        if m == Mnemonic::Wrmsr {
            match known.get(Register::RCX) {
                Some(0x174) => {
                    if known.get(Register::RAX).is_none_or(|v| v & 0xfffc != 0) {
                        return fail("SYSENTER_CS may become usable");
                    }
                }
                Some(0xc000_0080) => {
                    let flip = prev(1).map(|p| (mn(&p), p.immediate(1)));
                    if !matches!(flip, Some((Mnemonic::Xor, 1 | 0x800)))
                        || prev(2).map(|p| mn(&p)) != Some(Mnemonic::Rdmsr)
                    {
                        return fail("EFER write other than toggling SCE/NXE");
                    }
                }
                Some(0x1b | 0x1a0 | 0xfe) => {
                    if prev(1).map(|p| mn(&p)) != Some(Mnemonic::Rdmsr) {
                        return fail("write of a read-only/behaviour MSR other than write-back");
                    }
                }
                Some(_) => {}
                None => return fail("WRMSR to an unknown MSR"),
            }
        }
        if matches!(m, Mnemonic::Rdmsr | Mnemonic::Wrmsr) {
            let index = known.get(Register::RCX);
            let listed = MSRS.iter().any(|(i, _, _)| Some(u64::from(*i)) == index);
            let others = [
                0xc000_0080,
                0x1b,
                0x1a0,
                0xfe,
                0x2ff,
                0x1234_5678,
                0xc000_1000,
                0x4000_0000,
                0xc001_0000,
            ];
            if !listed && !index.is_some_and(|v| others.contains(&v)) {
                return fail("MSR index not from the list (TSC and the like read time)");
            }
        }
        // Port I/O on the listed ports.
        if matches!(
            m,
            Mnemonic::In
                | Mnemonic::Out
                | Mnemonic::Insb
                | Mnemonic::Insw
                | Mnemonic::Insd
                | Mnemonic::Outsb
                | Mnemonic::Outsw
                | Mnemonic::Outsd
        ) {
            let port = if ins.op0_kind() == OpKind::Immediate8 {
                Some(ins.immediate(0))
            } else if ins.op1_kind() == OpKind::Immediate8 {
                Some(ins.immediate(1))
            } else {
                known.get(Register::RDX)
            };
            if !port.is_some_and(|p| PORTS.contains(&p)) {
                return fail("I/O port not from the list");
            }
        }
        // Segment-register loads: SS only with selectors that keep the stack usable.
        let loads_ss = regs
            .iter()
            .any(|u| u.register() == Register::SS && u.access() == OpAccess::Write);
        if loads_ss && mode != Mode::Long64 && mode != Mode::Real {
            let ok_ss = [
                0u64,
                3,
                u64::from(selector::DATA),
                u64::from(selector::DATA | 3),
                u64::from(selector::CODE32),
                u64::from(selector::DATA_DPL3),
                u64::from(selector::DATA_READ_ONLY),
                u64::from(selector::DATA_NOT_PRESENT),
                u64::from(selector::CODE_EXECUTE_ONLY),
                u64::from(selector::TSS),
                u64::from(selector::LDT_DATA),
                0x78,
            ];
            let sel = match ins.code() {
                Code::Mov_Sreg_rm16 | Code::Mov_Sreg_r32m16
                    if ins.op1_kind() == OpKind::Register =>
                {
                    known.get(ins.op1_register())
                }
                Code::Mov_Sreg_rm16
                | Code::Mov_Sreg_r32m16
                | Code::Lss_r16_m1616
                | Code::Lss_r32_m1632 => stored_selector(prev(1), mode, &ins),
                Code::Popw_SS | Code::Popd_SS => prev(1).map(|p| p.immediate(0) & 0xffff),
                _ => None,
            };
            if !sel.is_some_and(|s| ok_ss.contains(&s)) {
                return fail(&format!("SS loaded with {sel:x?}"));
            }
        }
        // Mode restrictions beyond what decoding enforces.
        if mode == Mode::Real && (m == Mnemonic::Arpl || ins.encoding() == EncodingKind::VEX) {
            return fail("ARPL/VEX in real mode");
        }
        if ins.code() == Code::Bswap_r16 {
            return fail("BSWAP r16 (undefined result)");
        }
        for r in [Register::RSI, Register::RDI] {
            if writes.iter().any(|w| w.full_register() == r) {
                string_pointer.insert(
                    r,
                    m == Mnemonic::Lea
                        && ins.memory_base().full_register() == Register::RBX
                        && ins.memory_index() == Register::None,
                );
            }
        }
        known.update(&ins, &writes);
        previous.push(Some(ins));
    }
    Ok(())
}

/// The value `store` wrote at `ins`'s memory operand plus `offset`, if `store` is a
/// `mov [rbx+d], imm` of that place.
fn stored_at(store: Option<Instruction>, ins: &Instruction, offset: u64) -> Option<u64> {
    let p = store?;
    let want = ins.memory_displacement64().wrapping_add(offset);
    let mask = match ins.memory_base() {
        Register::BX => 0xffff,
        Register::EBX => 0xffff_ffff,
        _ => u64::MAX,
    };
    (matches!(p.code(), Code::Mov_rm16_imm16 | Code::Mov_rm32_imm32)
        && p.op0_kind() == OpKind::Memory
        && p.memory_displacement64() & mask == want & mask)
        .then(|| p.immediate(1))
}

/// Whether `p` stores with `code` to the same place `ins` reads.
fn same_place(p: Option<Instruction>, code: Code, ins: &Instruction) -> bool {
    p.is_some_and(|p| p.code() == code && p.memory_displacement64() == ins.memory_displacement64())
}

/// LDMXCSR, FLDCW, FLD m80 and FBLD load only what was stored just before: a valid
/// MXCSR or control word with every exception masked, an 80-bit value of a supported
/// format, valid BCD digits.
fn check_fpu_setup(
    ins: &Instruction,
    p1: Option<Instruction>,
    p2: Option<Instruction>,
    p3: Option<Instruction>,
) -> Result<(), &'static str> {
    match ins.code() {
        Code::Ldmxcsr_m32 => {
            let ok = same_place(p1, Code::Stmxcsr_m32, ins)
                || stored_at(p1, ins, 0).is_some_and(|v| v & 0x1f80 == 0x1f80 && v >> 16 == 0);
            ok.then_some(())
                .ok_or("LDMXCSR not of a stored valid, masked MXCSR")
        }
        Code::Fldcw_m2byte => {
            let ok = same_place(p1, Code::Fnstcw_m2byte, ins)
                || stored_at(p1, ins, 0).is_some_and(|v| v & 0x3f == 0x3f);
            ok.then_some(())
                .ok_or("FLDCW not of a stored masked control word")
        }
        Code::Fld_m80fp | Code::Fbld_m80bcd => {
            if ins.code() == Code::Fld_m80fp && same_place(p1, Code::Fstp_m80fp, ins) {
                return Ok(());
            }
            let (Some(lo), Some(hi), Some(top)) = (
                stored_at(p3, ins, 0),
                stored_at(p2, ins, 4),
                stored_at(p1, ins, 8),
            ) else {
                return Err("80-bit load of memory not stored just before");
            };
            let mantissa = lo | hi << 32;
            let ok = if ins.code() == Code::Fbld_m80bcd {
                // Eighteen digits (sixteen in the low eight bytes, two in the ninth) and a
                // sign byte of 0x00 or 0x80.
                (0..16).all(|i| (mantissa >> (4 * i)) & 0xf < 10)
                    && (0..2).all(|i| (top >> (4 * i)) & 0xf < 10)
                    && top & 0x7f00 == 0
            } else {
                let exp = top & 0x7fff;
                let integer = mantissa >> 63 == 1;
                // Not an unnormal, pseudo-NaN/infinity or pseudo-denormal.
                if exp == 0 {
                    !integer
                } else {
                    integer
                }
            };
            ok.then_some(())
                .ok_or("80-bit load of an unsupported value")
        }
        _ => Ok(()),
    }
}

/// The selector that `store` (the item before `ins`: `mov word [rbx+d], sel`) left
/// where `ins` reads it.
fn stored_selector(store: Option<Instruction>, mode: Mode, ins: &Instruction) -> Option<u64> {
    let offset = match ins.code() {
        Code::Lss_r16_m1616 => 2,
        Code::Lss_r32_m1632 => 4,
        _ => 0,
    };
    let mask = match mode.bitness() {
        16 => 0xffff,
        32 => 0xffff_ffff,
        _ => u64::MAX,
    };
    let want = ins.memory_displacement64().wrapping_add(offset) & mask;
    let p = store?;
    (p.code() == Code::Mov_rm16_imm16 && p.memory_displacement64() & mask == want)
        .then(|| p.immediate(1))
}

#[test]
fn generated_cases_follow_the_rules() {
    let mut failures = Vec::new();
    for case in generate(5000, 2, &Mode::ALL) {
        if let Err(why) = check_case(&case) {
            failures.push(format!("{why}\n  {}", disassemble(&case).join("\n  ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases break the rules:\n{}",
        failures.len(),
        failures[..failures.len().min(5)].join("\n")
    );
}

#[test]
fn the_checker_catches_broken_cases() {
    let case = |mode, items: Vec<Vec<u8>>| Case {
        mode,
        user: false,
        gprs: [0; 16],
        rflags: 0,
        cr0: 0,
        cr4: 0,
        efer: 0,
        seed: 0,
        fpu_seed: 0,
        items: items.into_iter().map(Item::Insn).collect(),
    };
    // mov rbx, rax; rdtsc; mov eax, [rcx]; mov cr3, rax; lgdt [rbx]; wrmsr; popf; in al, 0x60;
    // lmsw ax (real mode); fsin; ret; shld ax, cx, 17; shld ax, cx, cl; rcpps xmm0, xmm1;
    // fnstsw ax; fxsave [rbx]; ldmxcsr [rbx]; fldcw [rbx]; fld tword [rbx]; fbld [rbx];
    // vaddps xmm0, xmm1, xmm2; aesenc xmm0, xmm1; movaps xmm0, [rcx]
    for (mode, bad) in [
        (Mode::Long64, vec![vec![0x48, 0x89, 0xc3]]),
        (Mode::Long64, vec![vec![0x0f, 0x31]]),
        (Mode::Long64, vec![vec![0x8b, 0x01]]),
        (Mode::Long64, vec![vec![0x0f, 0x22, 0xd8]]),
        (Mode::Long64, vec![vec![0x0f, 0x01, 0x13]]),
        (Mode::Protected32, vec![vec![0x0f, 0x30]]),
        (Mode::Protected32, vec![vec![0x9d]]),
        (Mode::Protected32, vec![vec![0xe4, 0x60]]),
        (Mode::Real, vec![vec![0x0f, 0x01, 0xf0]]),
        (Mode::Long64, vec![vec![0xd9, 0xfe]]),
        (Mode::Long64, vec![vec![0xc3]]),
        (Mode::Protected32, vec![vec![0x66, 0x0f, 0xa4, 0xc8, 0x11]]),
        (Mode::Protected32, vec![vec![0x66, 0x0f, 0xa5, 0xc8]]),
        (Mode::Long64, vec![vec![0x0f, 0x53, 0xc1]]),
        (Mode::Long64, vec![vec![0xdf, 0xe0]]),
        (Mode::Long64, vec![vec![0x0f, 0xae, 0x03]]),
        (Mode::Long64, vec![vec![0x0f, 0xae, 0x13]]),
        (Mode::Protected32, vec![vec![0xd9, 0x2b]]),
        (Mode::Protected32, vec![vec![0xdb, 0x2b]]),
        (Mode::Protected32, vec![vec![0xdf, 0x23]]),
        (Mode::Long64, vec![vec![0xc5, 0xf0, 0x58, 0xc2]]),
        (Mode::Long64, vec![vec![0x66, 0x0f, 0x38, 0xdc, 0xc1]]),
        (Mode::Long64, vec![vec![0x0f, 0x28, 0x01]]),
        // ldmxcsr of a stored value with an exception unmasked (bit 7 clear).
        (
            Mode::Long64,
            vec![
                vec![0xc7, 0x43, 0x10, 0x00, 0x1f, 0x00, 0x00],
                vec![0x0f, 0xae, 0x53, 0x10],
            ],
        ),
        // fld tword of a stored pseudo-denormal (exponent 0, integer bit set).
        (
            Mode::Protected32,
            vec![
                vec![0xc7, 0x43, 0x10, 0, 0, 0, 0],
                vec![0xc7, 0x43, 0x14, 0, 0, 0, 0x80],
                vec![0x66, 0xc7, 0x43, 0x18, 0, 0],
                vec![0xdb, 0x6b, 0x10],
            ],
        ),
    ] {
        assert!(
            check_case(&case(mode, bad.clone())).is_err(),
            "{mode:?} {bad:02x?}"
        );
    }
    // A branch landing between the setup and the instruction it prepares.
    let into_group = Case {
        items: vec![
            Item::Branch {
                op: opsvisor_vmdiff::case::BranchOp::Jcc,
                cond: 4,
                skip: 1,
            },
            Item::Insn(vec![0xb8, 0x00, 0x00, 0x01, 0x00]),
            Item::Insn(vec![0x0f, 0x22, 0xd8]),
        ],
        ..case(Mode::Long64, vec![])
    };
    assert!(check_case(&into_group).is_err());
    // The same without the branch is fine: mov eax, PML4; mov cr3, rax.
    let straight = Case {
        items: into_group.items[1..].to_vec(),
        ..into_group.clone()
    };
    check_case(&straight).unwrap();
    // rep movsb without its setup items.
    assert!(check_case(&case(Mode::Long64, vec![vec![0xf3, 0xa4]])).is_err());
    // A good one: push rbx; mov eax, 1; cpuid; pop rbx.
    let good = case(
        Mode::Long64,
        vec![
            vec![0x53],
            vec![0xb8, 1, 0, 0, 0],
            vec![0x0f, 0xa2],
            vec![0x5b],
        ],
    );
    check_case(&good).unwrap();
    // Good FPU setups: stmxcsr [rbx+0x10]; ldmxcsr [rbx+0x10]. mov word [rbx+0x10], 0x37f;
    // fldcw [rbx+0x10]. Three stores of 1.0, fld tword [rbx+0x10]. movaps xmm9, [rbx+0x20].
    for (mode, items) in [
        (
            Mode::Long64,
            vec![vec![0x0f, 0xae, 0x5b, 0x10], vec![0x0f, 0xae, 0x53, 0x10]],
        ),
        (
            Mode::Protected32,
            vec![
                vec![0x66, 0xc7, 0x43, 0x10, 0x7f, 0x03],
                vec![0xd9, 0x6b, 0x10],
            ],
        ),
        (
            Mode::Protected32,
            vec![
                vec![0xc7, 0x43, 0x10, 0, 0, 0, 0],
                vec![0xc7, 0x43, 0x14, 0, 0, 0, 0x80],
                vec![0x66, 0xc7, 0x43, 0x18, 0xff, 0x3f],
                vec![0xdb, 0x6b, 0x10],
            ],
        ),
        (Mode::Long64, vec![vec![0x44, 0x0f, 0x28, 0x4b, 0x20]]),
    ] {
        check_case(&case(mode, items.clone())).unwrap_or_else(|e| panic!("{items:02x?}: {e}"));
    }
}

#[test]
fn families_are_all_drawn_and_system_items_are_frequent() {
    let mut system = 0usize;
    let mut total = 0usize;
    let mut seen = std::collections::HashSet::new();
    for case in generate(2000, 3, &Mode::ALL) {
        for item in &case.items {
            total += 1;
            let Item::Insn(bytes) = item else {
                seen.insert(Mnemonic::Jmp);
                continue;
            };
            let ins = decode_one(case.mode, bytes);
            let m = mn(&ins);
            seen.insert(m);
            let info = InstructionInfoFactory::new()
                .info(&ins)
                .used_registers()
                .to_vec();
            let privileged = ins.is_privileged()
                || info
                    .iter()
                    .any(|u| u.register().is_segment_register() && u.access() == OpAccess::Write)
                || matches!(
                    m,
                    Mnemonic::Cpuid
                        | Mnemonic::Int
                        | Mnemonic::Int3
                        | Mnemonic::Into
                        | Mnemonic::Int1
                        | Mnemonic::Ud2
                        | Mnemonic::Sysenter
                        | Mnemonic::Swapgs
                        | Mnemonic::Sgdt
                        | Mnemonic::Sidt
                        | Mnemonic::Sldt
                        | Mnemonic::Str
                        | Mnemonic::Smsw
                        | Mnemonic::Lar
                        | Mnemonic::Lsl
                        | Mnemonic::Verr
                        | Mnemonic::Verw
                        | Mnemonic::Xsetbv
                        | Mnemonic::Xgetbv
                        | Mnemonic::Stac
                        | Mnemonic::Clac
                        | Mnemonic::Rdfsbase
                        | Mnemonic::Rdgsbase
                        | Mnemonic::Invpcid
                )
                || format!("{m:?}").starts_with("Vm");
            system += usize::from(privileged);
        }
    }
    let share = system as f64 / total as f64;
    assert!((0.15..0.5).contains(&share), "system share {share:.2}");
    for m in [
        Mnemonic::Add,
        Mnemonic::Imul,
        Mnemonic::Idiv,
        Mnemonic::Shld,
        Mnemonic::Cmpxchg8b,
        Mnemonic::Movsx,
        Mnemonic::Cmovne,
        Mnemonic::Setl,
        Mnemonic::Daa,
        Mnemonic::Aam,
        Mnemonic::Bound,
        Mnemonic::Arpl,
        Mnemonic::Popcnt,
        Mnemonic::Pdep,
        Mnemonic::Mulx,
        Mnemonic::Adox,
        Mnemonic::Movbe,
        Mnemonic::Crc32,
        Mnemonic::Xlatb,
        Mnemonic::Push,
        Mnemonic::Popf,
        Mnemonic::Pusha,
        Mnemonic::Enter,
        Mnemonic::Leave,
        Mnemonic::Movsb,
        Mnemonic::Cmpsd,
        Mnemonic::Stosq,
        Mnemonic::Insb,
        Mnemonic::Outsd,
        Mnemonic::Cpuid,
        Mnemonic::Rdmsr,
        Mnemonic::Wrmsr,
        Mnemonic::Lgdt,
        Mnemonic::Lidt,
        Mnemonic::Lldt,
        Mnemonic::Ltr,
        Mnemonic::Lar,
        Mnemonic::Verw,
        Mnemonic::Lds,
        Mnemonic::Lss,
        Mnemonic::Clts,
        Mnemonic::Lmsw,
        Mnemonic::Invlpg,
        Mnemonic::Vmptrld,
        Mnemonic::Swapgs,
        Mnemonic::Sysenter,
        Mnemonic::In,
        Mnemonic::Out,
        Mnemonic::Int,
        Mnemonic::Into,
        Mnemonic::Hlt,
        Mnemonic::Sti,
        Mnemonic::Movaps,
        Mnemonic::Movdqu,
        Mnemonic::Paddb,
        Mnemonic::Addsd,
        Mnemonic::Comiss,
        Mnemonic::Pshufb,
        Mnemonic::Cvtsi2sd,
        Mnemonic::Pmovmskb,
        Mnemonic::Pextrw,
        Mnemonic::Roundsd,
        Mnemonic::Pcmpistri,
        Mnemonic::Ldmxcsr,
        Mnemonic::Stmxcsr,
        Mnemonic::Emms,
        Mnemonic::Fld,
        Mnemonic::Fistp,
        Mnemonic::Fbld,
        Mnemonic::Fldpi,
        Mnemonic::Fdivrp,
        Mnemonic::Fprem1,
        Mnemonic::Fcomi,
        Mnemonic::Fxam,
        Mnemonic::Fldcw,
        Mnemonic::Fcmovnbe,
        Mnemonic::Wait,
    ] {
        assert!(seen.contains(&m), "{m:?} never generated");
    }
}

#[test]
fn generated_cases_run_to_an_end_on_the_emulator() {
    let mut bad = Vec::new();
    for mode in Mode::ALL {
        // A runner per mode: core's run loop compares the emulator's lifetime count of
        // retired instructions with the per-case limit, so a runner that has run about
        // 100,000 instructions (some 17,000 cases) ends every later case at once.
        let mut runner = Runner::new(
            EmuVcpu::new(),
            CapturePlatform::new(),
            CpuidPolicy::emulator(),
        )
        .unwrap();
        for case in generate(500, 4 + mode as u64, &[mode]) {
            let snapshot = runner.run(&case).unwrap();
            match snapshot.ending {
                Ending::Halted | Ending::DebugExit(_) => {}
                ref other => bad.push(format!(
                    "{mode:?}: {other:?} at rip {:#x}\n  {}",
                    snapshot.regs.rip,
                    disassemble(&case).join("\n  ")
                )),
            }
        }
    }
    assert!(
        bad.is_empty(),
        "{} cases did not end halted:\n{}",
        bad.len(),
        bad[..bad.len().min(6)].join("\n")
    );
}

#[test]
fn excluded_instructions_never_appear_and_undefined_flags_are_settled() {
    use opsvisor_vmdiff::flags::{undefined_by, SETTLE};
    use opsvisor_vmdiff::generate::{bochs_quirks, generate_excluding};
    let with = generate(3000, 11, &Mode::ALL);
    let quirky = |cases: &[Case]| {
        cases
            .iter()
            .flat_map(|c| {
                c.items.iter().filter_map(move |i| match i {
                    Item::Insn(b) => Some(decode_one(c.mode, b)),
                    Item::Branch { .. } => None,
                })
            })
            .filter(bochs_quirks)
            .map(|i| i.mnemonic())
            .collect::<std::collections::HashSet<_>>()
    };
    // Unfiltered cases draw each kind of quirk; filtered ones never do.
    let drawn = quirky(&with);
    for m in [Mnemonic::Adox, Mnemonic::Fld, Mnemonic::Fcomi] {
        assert!(
            drawn.contains(&m),
            "3000 cases should draw {m:?}: {drawn:?}"
        );
    }
    assert!(quirky(&generate_excluding(3000, 11, &Mode::ALL, bochs_quirks)).is_empty());
    // Bochs' AMD models: its bugs go, FLD ST(i) (where AMD is the emulator's vendor)
    // stays.
    use opsvisor_vmdiff::generate::{bochs_bugs, vendor_differences};
    let amd = generate_excluding(3000, 11, &Mode::ALL, bochs_bugs);
    let left = quirky(&amd);
    assert!(left.contains(&Mnemonic::Fld), "{left:?}");
    assert!(!left.contains(&Mnemonic::Adox) && !left.contains(&Mnemonic::Fcomi));
    assert!(amd
        .iter()
        .flat_map(|c| c.items.iter().map(move |i| (c.mode, i)))
        .filter_map(|(mode, i)| match i {
            Item::Insn(b) => Some(decode_one(mode, b)),
            Item::Branch { .. } => None,
        })
        .all(|i| !bochs_bugs(&i)));
    assert!(
        vendor_differences(&decode_one(Mode::Long64, &[0xdb, 0xf6])),
        "fcomi"
    );
    // Every instruction that leaves a flag undefined is followed by the settling CMP
    // before any branch (a branch could skip it) and before the end.
    let settle = Item::Insn(SETTLE.to_vec());
    for case in &with {
        for (i, item) in case.items.iter().enumerate() {
            let Item::Insn(b) = item else { continue };
            if b.as_slice() == SETTLE || undefined_by(b, case.mode.bitness()) == 0 {
                continue;
            }
            let settled = case.items[i + 1..]
                .iter()
                .take_while(|later| !matches!(later, Item::Branch { .. }))
                .any(|later| *later == settle);
            assert!(settled, "item {i} of {case:?}");
        }
    }
}

#[test]
fn qemu_tcg_quirks_name_what_tcg_gets_wrong() {
    use opsvisor_vmdiff::generate::qemu_tcg_quirks;
    for (bytes, left_out) in [
        (&[0xde, 0xf8][..], true),              // fdivp st(0), st
        (&[0xd9, 0xee][..], true),              // fldz
        (&[0x0f, 0x77][..], true),              // emms
        (&[0x0f, 0x6f, 0x03][..], true),        // movq mm0, [rbx]
        (&[0xc8, 0x10, 0x00, 0x03][..], true),  // enter 10h, 3
        (&[0xc8, 0x10, 0x00, 0x00][..], false), // enter 10h, 0
        (&[0x0f, 0x34][..], true),              // sysenter
        (&[0x01, 0xd8][..], false),             // add eax, ebx
        (&[0x66, 0x0f, 0x6f, 0x03][..], true),  // movdqa xmm0, [rbx]: aligned
        (&[0x0f, 0xae, 0x03][..], false),       // fxsave [rbx]
    ] {
        let i = decode_one(Mode::Long64, bytes);
        assert_eq!(qemu_tcg_quirks(&i), left_out, "{bytes:02x?}");
    }
}

#[test]
fn qemu_tcg_state_drops_alignment_checks_and_em() {
    use opsvisor_vmdiff::generate::qemu_tcg_state;
    let mut cases = generate(500, 3, &Mode::ALL);
    assert!(cases.iter().any(|c| c.cr0 & (1 << 18) != 0));
    assert!(cases.iter().any(|c| c.cr0 & 0x4 != 0));
    let before: Vec<u64> = cases.iter().map(|c| c.cr0).collect();
    cases.iter_mut().for_each(qemu_tcg_state);
    for (c, old) in cases.iter().zip(before) {
        assert_eq!(c.cr0 & ((1 << 18) | 4), 0);
        // Nothing else changes.
        assert_eq!(c.cr0 | (1 << 18) | 4, old | (1 << 18) | 4);
    }
}
