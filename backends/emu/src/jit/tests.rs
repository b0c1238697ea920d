//! The translator against the interpreter: random programs of translatable instructions
//! (every operation, operand size and register, RSP and the high-byte registers
//! included, with random register values and flags; loads, stores and read-modify-writes
//! through a base register, an absolute address, RIP and GS, some across a page end, into
//! the code itself or its page, or to unmapped addresses) run once translated and once
//! interpreted, twice over (the second time with the TLB warm), and must end with the
//! same registers, flags, memory, retired count and exit. Some programs end with a loop
//! back over their last instructions (R14 counting down, sometimes past the run's
//! instruction budget) or hold a conditional jump forward to their end.

extern crate std;

use crate::tests::{Harness, CODE};
use iced_x86::{Code, Encoder, Instruction, MemoryOperand, Register};
use opsvisor_core::exit::Exit;
use opsvisor_core::ops::{Gpr, SegReg, X86Ops};
use std::vec::Vec;

/// The data the programs' memory operands address: R15 holds `DATA + 0x800` throughout
/// (no instruction writes it), and GS's base is `DATA`.
const DATA: u64 = 0x20000;

/// xorshift64*: a repeatable sequence.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A value with the edge cases (0, all ones, sign bits) often.
    fn value(&mut self) -> u64 {
        match self.below(6) {
            0 => 0,
            1 => u64::MAX,
            2 => 1 << self.below(64),
            3 => self.next() & 0xff,
            _ => self.next(),
        }
    }
}

/// A register of `size` bytes other than R14 and R15 (R14 counts loops, R15 holds the
/// data address); of one byte, AH..BH too.
fn reg(rng: &mut Rng, size: u32) -> Register {
    let high = [Register::AH, Register::CH, Register::DH, Register::BH];
    match rng.below(if size == 1 { 18 } else { 14 }) {
        n @ 14.. => high[n - 14],
        n => super::gpr(size, n),
    }
}

/// Two-operand register forms (destination, source) with their operand size.
const RR: &[(Code, u32)] = &[
    (Code::Add_rm64_r64, 8),
    (Code::Add_rm32_r32, 4),
    (Code::Add_rm16_r16, 2),
    (Code::Add_rm8_r8, 1),
    (Code::Adc_rm64_r64, 8),
    (Code::Adc_rm8_r8, 1),
    (Code::Sub_rm32_r32, 4),
    (Code::Sub_rm64_r64, 8),
    (Code::Sbb_rm64_r64, 8),
    (Code::Sbb_rm16_r16, 2),
    (Code::And_rm64_r64, 8),
    (Code::Or_rm32_r32, 4),
    (Code::Xor_rm64_r64, 8),
    (Code::Xor_rm8_r8, 1),
    (Code::Cmp_rm64_r64, 8),
    (Code::Cmp_rm16_r16, 2),
    (Code::Test_rm32_r32, 4),
    (Code::Test_rm8_r8, 1),
    (Code::Mov_rm64_r64, 8),
    (Code::Mov_rm32_r32, 4),
    (Code::Mov_rm8_r8, 1),
    (Code::Xchg_rm64_r64, 8),
    (Code::Xchg_rm16_r16, 2),
    (Code::Imul_r64_rm64, 8),
    (Code::Imul_r32_rm32, 4),
    (Code::Imul_r16_rm16, 2),
    (Code::Cmovae_r64_rm64, 8),
    (Code::Cmovl_r32_rm32, 4),
    (Code::Cmove_r16_rm16, 2),
    (Code::Cmovo_r64_rm64, 8),
    (Code::Cmovp_r32_rm32, 4),
    (Code::Cmovbe_r64_rm64, 8),
];

/// Register-and-immediate forms: operand size and immediate size.
const RI: &[(Code, u32, u32)] = &[
    (Code::Add_rm64_imm8, 8, 1),
    (Code::Add_rm32_imm32, 4, 4),
    (Code::Sub_rm64_imm32, 8, 4),
    (Code::And_rm16_imm16, 2, 2),
    (Code::Cmp_rm8_imm8, 1, 1),
    (Code::Or_rm32_imm8, 4, 1),
    (Code::Xor_rm64_imm8, 8, 1),
    (Code::Adc_rm32_imm8, 4, 1),
    (Code::Sbb_rm64_imm8, 8, 1),
    (Code::Test_rm32_imm32, 4, 4),
    (Code::Mov_r32_imm32, 4, 4),
    (Code::Mov_r64_imm64, 8, 8),
    (Code::Mov_rm8_imm8, 1, 1),
    (Code::Shl_rm64_imm8, 8, 0),
    (Code::Shr_rm32_imm8, 4, 0),
    (Code::Sar_rm16_imm8, 2, 0),
    (Code::Rol_rm8_imm8, 1, 0),
    (Code::Ror_rm64_imm8, 8, 0),
    (Code::Shl_rm8_imm8, 1, 0),
    (Code::Sar_rm64_imm8, 8, 0),
    (Code::Rol_rm32_imm8, 4, 0),
    (Code::Ror_rm16_imm8, 2, 0),
    (Code::Shr_rm64_imm8, 8, 0),
];

/// One-operand register forms.
const R: &[(Code, u32)] = &[
    (Code::Inc_rm64, 8),
    (Code::Inc_rm8, 1),
    (Code::Dec_rm32, 4),
    (Code::Dec_rm16, 2),
    (Code::Neg_rm64, 8),
    (Code::Neg_rm8, 1),
    (Code::Not_rm32, 4),
    (Code::Bswap_r64, 8),
    (Code::Bswap_r32, 4),
    (Code::Mul_rm64, 8),
    (Code::Mul_rm32, 4),
    (Code::Mul_rm8, 1),
    (Code::Imul_rm64, 8),
    (Code::Imul_rm16, 2),
    (Code::Setb_rm8, 1),
    (Code::Sete_rm8, 1),
    (Code::Setl_rm8, 1),
    (Code::Seto_rm8, 1),
    (Code::Setp_rm8, 1),
    (Code::Seta_rm8, 1),
    (Code::Setle_rm8, 1),
];

/// Forms of the source's own size into a wider destination: (code, dst, src).
const WIDEN: &[(Code, u32, u32)] = &[
    (Code::Movzx_r32_rm8, 4, 1),
    (Code::Movzx_r64_rm16, 8, 2),
    (Code::Movsx_r64_rm8, 8, 1),
    (Code::Movsx_r32_rm16, 4, 2),
    (Code::Movsxd_r64_rm32, 8, 4),
];

const NONE: &[Code] = &[
    Code::Cqo,
    Code::Cdq,
    Code::Cwd,
    Code::Cdqe,
    Code::Cwde,
    Code::Cbw,
    Code::Nopd,
];

/// Register-and-memory forms (the register's size, the memory's size); the first
/// `STORES` have the memory operand first.
const RM: &[(Code, u32, u32)] = &[
    (Code::Mov_rm64_r64, 8, 8),
    (Code::Mov_rm32_r32, 4, 4),
    (Code::Mov_rm16_r16, 2, 2),
    (Code::Mov_rm8_r8, 1, 1),
    (Code::Add_rm64_r64, 8, 8),
    (Code::Xor_rm32_r32, 4, 4),
    (Code::Test_rm64_r64, 8, 8),
    (Code::Mov_r64_rm64, 8, 8),
    (Code::Mov_r32_rm32, 4, 4),
    (Code::Mov_r16_rm16, 2, 2),
    (Code::Mov_r8_rm8, 1, 1),
    (Code::Movzx_r32_rm8, 4, 1),
    (Code::Movsx_r64_rm16, 8, 2),
    (Code::Movsxd_r64_rm32, 8, 4),
    (Code::Add_r64_rm64, 8, 8),
    (Code::Adc_r32_rm32, 4, 4),
    (Code::Cmp_r32_rm32, 4, 4),
    (Code::Sub_r8_rm8, 1, 1),
    (Code::Imul_r64_rm64, 8, 8),
    (Code::Cmovb_r64_rm64, 8, 8),
];
const STORES: usize = 7;

/// Memory-only forms, with the memory's size.
const M: &[(Code, u32)] = &[
    (Code::Mov_rm32_imm32, 4),
    (Code::Mov_rm64_imm32, 8),
    (Code::Sub_rm32_imm8, 4),
    (Code::Xor_rm8_imm8, 1),
    (Code::Cmp_rm16_imm16, 2),
    (Code::Inc_rm32, 4),
    (Code::Neg_rm16, 2),
    (Code::Not_rm64, 8),
    (Code::Shl_rm64_imm8, 8),
    (Code::Sar_rm8_imm8, 1),
    (Code::Setb_rm8, 1),
    (Code::Mul_rm64, 8),
];

/// A memory operand for an access of `size` bytes.
fn memory(rng: &mut Rng, size: u32) -> MemoryOperand {
    let off = rng.below(0x1000 - 8) as u64 & !(u64::from(size) - 1);
    match rng.below(16) {
        0..=5 => MemoryOperand::with_base_displ(Register::R15, (off as i64 - 0x800) >> 4),
        6..=7 => MemoryOperand::with_displ(DATA + off, 4),
        8..=9 => MemoryOperand::with_base_displ(Register::RIP, (DATA + off) as i64),
        10..=11 => MemoryOperand::new(
            Register::None,
            Register::None,
            1,
            off as i64,
            4,
            false,
            Register::GS,
        ),
        // Across the end of a page.
        12 => MemoryOperand::with_base_displ(Register::R15, 0x7fd),
        // The code's own page, past the program.
        13 => MemoryOperand::with_displ(CODE + 0x800 + off / 2, 4),
        // The program itself: what runs next, or the second time, changes.
        14 => MemoryOperand::with_displ(CODE + rng.below(96) as u64, 4),
        // Wherever a register points: mostly unmapped or non-canonical.
        _ => MemoryOperand::with_base(super::gpr(8, rng.below(15))),
    }
}

fn random_access(rng: &mut Rng) -> Option<Instruction> {
    if rng.below(2) == 0 {
        let k = rng.below(RM.len());
        let (code, rsize, msize) = RM[k];
        let r = reg(rng, rsize);
        let m = memory(rng, msize);
        if k < STORES {
            Instruction::with2(code, m, r).ok()
        } else {
            Instruction::with2(code, r, m).ok()
        }
    } else {
        let (code, size) = M[rng.below(M.len())];
        let m = memory(rng, size);
        match code {
            Code::Inc_rm32 | Code::Neg_rm16 | Code::Not_rm64 | Code::Setb_rm8 | Code::Mul_rm64 => {
                Instruction::with1(code, m).ok()
            }
            Code::Shl_rm64_imm8 | Code::Sar_rm8_imm8 => {
                Instruction::with2(code, m, 1 + rng.below(7) as u32).ok()
            }
            Code::Cmp_rm16_imm16 => Instruction::with2(code, m, rng.next() as u16 as u32).ok(),
            Code::Sub_rm32_imm8 | Code::Xor_rm8_imm8 => {
                Instruction::with2(code, m, rng.next() as i8 as i32).ok()
            }
            _ => Instruction::with2(code, m, rng.next() as i32).ok(),
        }
    }
}

fn random_instruction(rng: &mut Rng) -> Option<Instruction> {
    if rng.below(4) == 0 {
        return random_access(rng);
    }
    match rng.below(20) {
        0..=6 => {
            let (code, size) = RR[rng.below(RR.len())];
            Instruction::with2(code, reg(rng, size), reg(rng, size)).ok()
        }
        7..=11 => {
            let (code, size, imm) = RI[rng.below(RI.len())];
            let r = reg(rng, size);
            match imm {
                // A shift or rotate count, 0 and past the width included.
                0 => Instruction::with2(code, r, (rng.next() & 0x7f) as u32).ok(),
                1 => Instruction::with2(code, r, rng.next() as i8 as i32).ok(),
                2 => Instruction::with2(code, r, rng.next() as u16 as u32).ok(),
                4 => Instruction::with2(code, r, rng.next() as i32).ok(),
                _ => Instruction::with2(code, r, rng.value()).ok(),
            }
        }
        12..=14 => {
            let (code, size) = R[rng.below(R.len())];
            Instruction::with1(code, reg(rng, size)).ok()
        }
        15 => {
            let (code, d, s) = WIDEN[rng.below(WIDEN.len())];
            Instruction::with2(code, reg(rng, d), reg(rng, s)).ok()
        }
        16 => Some(Instruction::with(NONE[rng.below(NONE.len())])),
        17 => {
            let (code, size) = [
                (Code::Imul_r64_rm64_imm8, 8),
                (Code::Imul_r32_rm32_imm32, 4),
                (Code::Imul_r16_rm16_imm16, 2),
            ][rng.below(3)];
            let imm = if code == Code::Imul_r64_rm64_imm8 {
                rng.next() as i8 as i32
            } else if size == 2 {
                rng.next() as i16 as i32
            } else {
                rng.next() as i32
            };
            Instruction::with3(code, reg(rng, size), reg(rng, size), imm).ok()
        }
        _ => {
            let size = if rng.below(2) == 0 { 8 } else { 4 };
            let code = if size == 8 {
                Code::Lea_r64_m
            } else {
                Code::Lea_r32_m
            };
            let base = super::gpr(8, rng.below(15));
            // RSP cannot be an index.
            let index = [Register::None, Register::RAX, Register::RSP, Register::R13][rng.below(4)];
            let index = if index == Register::RSP {
                Register::RBX
            } else {
                index
            };
            let scale = 1 << rng.below(4);
            let displ = rng.next() as i32 as i64;
            let m = MemoryOperand::with_base_index_scale_displ_size(base, index, scale, displ, 4);
            Instruction::with2(code, reg(rng, size), m).ok()
        }
    }
}

/// What a program left: registers, RFLAGS, instructions retired, how it ended (`None`:
/// at its HLT both times), the data and code pages, and the runs translated.
type Outcome = ([u64; 16], u64, u64, Option<Exit>, Vec<u8>, u64);

/// Run `code` from `regs` and `flags`, translated or not, twice over, each run of the
/// vCPU retiring at most `budget` instructions.
fn run(code: &[u8], regs: &[u64; 16], flags: u64, budget: u64, translate: bool) -> Outcome {
    let mut h = Harness::new();
    h.budget = budget;
    // Enough runs for the longest loop twice over; a program that rewrote its loop may
    // never stop.
    h.runs = 60_000 / budget as usize + 100;
    h.long_mode();
    h.vcpu.set_translation(translate);
    h.mem.write(CODE, code).unwrap();
    let fill: Vec<u8> = (0..0x2000u32).map(|k| (k * 37 + 0x5a) as u8).collect();
    h.mem.write(DATA, &fill).unwrap();
    let mut gs = h.vcpu.segment(SegReg::Gs);
    gs.base = DATA;
    h.vcpu.set_segment(SegReg::Gs, &gs);
    for (g, v) in Gpr::ALL.iter().zip(regs) {
        h.vcpu.set_gpr(*g, *v);
    }
    h.vcpu.set_gpr(Gpr::R15, DATA + 0x800);
    h.vcpu.set_rflags(flags);
    let before = h.vcpu.instructions_retired().unwrap();
    let mut end = None;
    for _ in 0..2 {
        if let Err(e) = h.run() {
            end = Some(e);
            break;
        }
        h.vcpu.set_rip(CODE);
    }
    let mut out = [0u64; 16];
    for (o, g) in out.iter_mut().zip(Gpr::ALL) {
        *o = h.vcpu.gpr(g);
    }
    let retired = h.vcpu.instructions_retired().unwrap() - before;
    let mut pages = std::vec![0u8; 0x3000];
    h.mem.read(DATA, &mut pages[..0x2000]).unwrap();
    h.mem.read(CODE, &mut pages[0x2000..]).unwrap();
    (
        out,
        h.vcpu.rflags(),
        retired,
        end,
        pages,
        h.vcpu.translated_runs(),
    )
}

#[test]
fn translated_runs_end_as_the_interpreter_does() {
    // By hand, more: JIT_TEST_SEED=<u64> JIT_TEST_CASES=<n>.
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let mut rng = Rng(env("JIT_TEST_SEED", 0x6a09_e667_f3bc_c908));
    let mut translated = 0;
    for case in 0..env("JIT_TEST_CASES", 600) {
        let mut listing = Vec::new();
        let mut code = Vec::new();
        // Where each instruction starts, from CODE.
        let mut starts = Vec::new();
        let n = 3 + rng.below(40);
        while listing.len() < n {
            let Some(i) = random_instruction(&mut rng) else {
                continue;
            };
            // A high-byte register next to one that needs REX has no encoding (and a
            // failed encoding leaves bytes in the encoder: one encoder each).
            let ip = CODE + code.len() as u64;
            let mut enc = Encoder::new(64);
            if enc.encode(&i, ip).is_ok() {
                starts.push(code.len() as u64);
                code.extend_from_slice(&enc.take_buffer());
                listing.push(i);
            }
        }
        let mut regs = [0u64; 16];
        for r in regs.iter_mut() {
            *r = rng.value();
        }
        match rng.below(4) {
            // A loop over the last instructions: SUB R14, 1; JNZ back.
            0 | 1 => {
                let top = CODE + starts[rng.below(starts.len())];
                let ip = CODE + code.len() as u64;
                let sub = Instruction::with2(Code::Sub_rm64_imm8, Register::R14, 1).unwrap();
                let jnz = Instruction::with_branch(Code::Jne_rel32_64, top).unwrap();
                let mut enc = Encoder::new(64);
                let len = enc.encode(&sub, ip).unwrap() as u64;
                enc.encode(&jnz, ip + len).unwrap();
                code.extend_from_slice(&enc.take_buffer());
                listing.push(sub);
                listing.push(jnz);
                regs[14] = if rng.below(4) == 0 {
                    300
                } else {
                    1 + rng.below(30) as u64
                };
            }
            // Conditional jumps forward, to a later instruction or the HLT: with
            // translation the block goes on past them, and a run leaves where one is
            // taken.
            2 => {
                let mut at: Vec<usize> = (0..1 + rng.below(3))
                    .map(|_| starts[rng.below(starts.len())] as usize)
                    .collect();
                at.sort_unstable();
                at.dedup();
                // From the last, so that the offsets of those before stay as chosen.
                for &at in at.iter().rev() {
                    let later: Vec<usize> = starts
                        .iter()
                        .map(|&s| s as usize)
                        .filter(|&s| s > at)
                        .chain(core::iter::once(code.len()))
                        .collect();
                    let to = later[rng.below(later.len())];
                    let cc = rng.below(16) as u8;
                    // From the end of the Jcc inserted at `at`, to `to` moved 6 bytes on.
                    let skip = (to - at) as u32;
                    let mut jcc = std::vec![0x0f, 0x80 | cc];
                    jcc.extend_from_slice(&skip.to_le_bytes());
                    // What follows moves 6 bytes on: its RIP-relative operands now point
                    // 6 bytes further, the same both ways.
                    code.splice(at..at, jcc);
                    for s in starts.iter_mut() {
                        if *s as usize >= at {
                            *s += 6;
                        }
                    }
                }
            }
            _ => {}
        }
        code.push(0xf4); // HLT
        let flags = 2 | (rng.next() & 0x8d5);
        let budget = [10_000, 17, 100, 1000][rng.below(4)];
        let jit = run(&code, &regs, flags, budget, true);
        let interp = run(&code, &regs, flags, budget, false);
        assert_eq!(interp.5, 0, "nothing translated with translation off");
        if interp.3 == Some(Exit::Preempted) {
            // Still running when the runs ran out: the two stopped wherever their last
            // runs ended, which a block left early (by a run stopping before an access)
            // moves; the state in between is not comparable, only that neither ended.
            assert_eq!(jit.3, Some(Exit::Preempted), "case {case}");
            continue;
        }
        translated += jit.5;
        let show = || {
            listing
                .iter()
                .map(|i| std::format!("{i}"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        for g in 0..16 {
            assert_eq!(
                jit.0[g],
                interp.0[g],
                "case {case}: register {:?} differs after: {}",
                Gpr::ALL[g],
                show()
            );
        }
        assert_eq!(
            jit.1,
            interp.1,
            "case {case}: RFLAGS {:#x} translated, {:#x} interpreted, after: {}",
            jit.1,
            interp.1,
            show()
        );
        assert_eq!(
            jit.2,
            interp.2,
            "case {case}: instructions retired after: {}",
            show()
        );
        assert_eq!(jit.3, interp.3, "case {case}: the end after: {}", show());
        assert!(
            jit.4 == interp.4,
            "case {case}: memory differs after: {}",
            show()
        );
    }
    // Most programs have runs: the comparison above is of translated code.
    assert!(translated > 500, "only {translated} runs translated");
}

/// A shift or rotate by more than 1 leaves OF undefined, and a run may hold one that an
/// access follows: when the access faults, the run's exit must show the interpreter's
/// OF, computed from the result's register, whether that register still holds the
/// result (the shift enters the run) or not (it stays interpreted). On an AMD host the
/// host's OF is already the interpreter's, and this checks the computation itself (a wrong
/// formula fails here); on an Intel host it also checks that the computation happens.
#[test]
fn a_fault_after_a_shift_shows_the_interpreters_of() {
    let shifts = [
        (Code::Shl_rm64_imm8, 8),
        (Code::Shl_rm8_imm8, 1),
        (Code::Shr_rm32_imm8, 4),
        (Code::Shr_rm16_imm8, 2),
        (Code::Sar_rm64_imm8, 8),
        (Code::Rol_rm32_imm8, 4),
        (Code::Rol_rm8_imm8, 1),
        (Code::Ror_rm64_imm8, 8),
        (Code::Ror_rm16_imm8, 2),
    ];
    let mut translated = 0;
    for (code, size) in shifts {
        for count in [2u32, 7, 13, 31] {
            for between in 0..3 {
                let dst = super::gpr(size, 0);
                let mut listing = std::vec![Instruction::with2(code, dst, count).unwrap()];
                match between {
                    // The result moves on, OF stays.
                    1 => listing.push(
                        Instruction::with2(Code::Mov_r64_rm64, Register::RAX, Register::RBX)
                            .unwrap(),
                    ),
                    2 => listing.push(
                        Instruction::with2(Code::Mov_r64_rm64, Register::RDX, Register::RAX)
                            .unwrap(),
                    ),
                    _ => {}
                }
                // RSI is not canonical: #GP, with the flags as they are.
                listing.push(
                    Instruction::with2(
                        Code::Mov_r64_rm64,
                        Register::RCX,
                        MemoryOperand::with_base(Register::RSI),
                    )
                    .unwrap(),
                );
                listing.push(
                    Instruction::with2(Code::Add_rm64_r64, Register::RDX, Register::RCX).unwrap(),
                );
                // Four instructions or more in every shape: a straight run that short is
                // translated (MIN_STRAIGHT_RUN).
                listing.push(
                    Instruction::with2(Code::Mov_r64_rm64, Register::R8, Register::RDX).unwrap(),
                );
                let mut enc = Encoder::new(64);
                let mut ip = CODE;
                for i in &listing {
                    ip += enc.encode(i, ip).unwrap() as u64;
                }
                let mut bytes = enc.take_buffer();
                bytes.push(0xf4);
                for value in [0x8000_0000_4000_0001u64, 0x6000_0000_0000_c0a5, 0x81] {
                    let mut regs = [0u64; 16];
                    regs[0] = value;
                    regs[3] = value.rotate_left(17);
                    regs[6] = 0x8000_0000_0000_0000;
                    let jit = run(&bytes, &regs, 2 | 0x800, 10_000, true);
                    let interp = run(&bytes, &regs, 2 | 0x800, 10_000, false);
                    translated += jit.5;
                    assert_eq!(jit.3, interp.3, "{code:?} {count} {between}: the end");
                    assert_eq!(jit.0, interp.0, "{code:?} {count} {between}: registers");
                    assert_eq!(
                        jit.1, interp.1,
                        "{code:?} {count} {between} of {value:#x}: RFLAGS"
                    );
                }
            }
        }
    }
    // The runs with the shift: each shape whose register keeps the result.
    assert!(
        translated >= 9 * 4 * 3 * 2,
        "only {translated} runs translated"
    );
}

/// Two loops that each poll a device register, with the same instruction at different
/// addresses: every pass reads the device (an exit, whose value the loop sums), and each
/// loop's translated run, which stops before that first access every time, runs its own
/// instruction in the interpreter (`stopped_first` keeps the last one decoded, RIP and
/// all).
#[test]
fn loops_that_start_with_a_device_read_read_it_every_pass() {
    use crate::tests::{asm64, APIC};
    use iced_x86::code_asm::*;
    use opsvisor_core::exit::Direction;
    use opsvisor_core::ops::RunLimit;
    let mut h = Harness::new();
    h.long_mode();
    let mut a = asm64();
    let mut first = a.create_label();
    let mut second = a.create_label();
    a.mov(rbx, APIC + 0x30).unwrap();
    a.mov(ecx, 50u32).unwrap();
    a.set_label(&mut first).unwrap();
    a.mov(eax, dword_ptr(rbx)).unwrap();
    a.add(esi, eax).unwrap();
    a.dec(ecx).unwrap();
    a.jnz(first).unwrap();
    a.mov(ecx, 30u32).unwrap();
    a.set_label(&mut second).unwrap();
    a.mov(eax, dword_ptr(rbx)).unwrap();
    a.add(edi, eax).unwrap();
    a.dec(ecx).unwrap();
    a.jnz(second).unwrap();
    a.hlt().unwrap();
    h.load(&mut a, CODE, &[]);
    let limit = RunLimit {
        tsc: 0,
        deadline: None,
        max_instructions: 10_000,
    };
    // The k-th read returns k.
    let mut reads = 0u32;
    loop {
        match h.vcpu.run(&mut h.mem, &limit) {
            Exit::Mmio {
                gpa,
                direction: Direction::Read,
                ..
            } => {
                assert_eq!(gpa, APIC + 0x30);
                reads += 1;
                h.vcpu.complete_mmio(Some(u64::from(reads)));
            }
            Exit::Preempted => {}
            Exit::Hlt => break,
            other => panic!("unexpected exit {other:?}"),
        }
        assert!(reads <= 80, "the guest loops");
    }
    assert_eq!(reads, 80);
    assert_eq!(h.vcpu.gpr(Gpr::Rsi), (1..=50).sum::<u64>());
    assert_eq!(h.vcpu.gpr(Gpr::Rdi), (51..=80).sum::<u64>());
    assert!(h.vcpu.translated_runs() >= 2, "both loops translated");
}
