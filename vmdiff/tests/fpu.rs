//! The x87/MMX/SSE state in the differential: the initial images, their loading on the
//! emulator, the comparison of the final state, the pack format's FPU seed, and the
//! x87/SIMD families of the generator (feature `generate` for those).

use opsvisor_core::cpuid::CpuidPolicy;
use opsvisor_core::fpu::FxsaveArea;
use opsvisor_core::platform::CapturePlatform;
use opsvisor_core::X86Ops;
use opsvisor_emu::EmuVcpu;
use opsvisor_vmdiff::case::{encode_pack, Case, Item, Mode, Pack};
use opsvisor_vmdiff::flags::{undefined_fsw, FSW_C0_C2_C3};
use opsvisor_vmdiff::layout::{fpu_image, DATA_POINTER};
use opsvisor_vmdiff::run::Runner;
use opsvisor_vmdiff::snapshot::{compare, Ending};

fn runner() -> Runner<EmuVcpu, CapturePlatform> {
    Runner::new(
        EmuVcpu::new(),
        CapturePlatform::new(),
        CpuidPolicy::emulator(),
    )
    .unwrap()
}

/// CR4.OSFXSR: SSE instructions run.
const OSFXSR: u64 = 1 << 9;

fn case(mode: Mode, fpu_seed: u64, items: Vec<Vec<u8>>) -> Case {
    Case {
        mode,
        user: false,
        gprs: [0x2222; 16],
        rflags: 0,
        cr0: 0,
        cr4: OSFXSR,
        efer: 0,
        seed: 3,
        fpu_seed,
        items: items.into_iter().map(Item::Insn).collect(),
    }
}

/// The kind of an 80-bit x87 value.
#[derive(Debug, PartialEq, Eq, Hash, Clone, Copy)]
enum Kind {
    Zero,
    Denormal,
    Normal,
    Infinity,
    Nan,
    /// Unnormal, pseudo-NaN, pseudo-infinity or pseudo-denormal.
    Unsupported,
}

fn kind80(v: [u8; 10]) -> Kind {
    let mantissa = u64::from_le_bytes(v[..8].try_into().unwrap());
    let exp = u16::from_le_bytes([v[8], v[9]]) & 0x7fff;
    let integer = mantissa >> 63 == 1;
    match (exp, integer) {
        (0, false) if mantissa == 0 => Kind::Zero,
        (0, false) => Kind::Denormal,
        (0, true) => Kind::Unsupported,
        (0x7fff, true) if mantissa << 1 == 0 => Kind::Infinity,
        (0x7fff, true) => Kind::Nan,
        (_, true) => Kind::Normal,
        _ => Kind::Unsupported,
    }
}

/// The kind of a binary32 lane.
fn kind32(v: u32) -> Kind {
    let exp = (v >> 23) & 0xff;
    let frac = v & 0x7f_ffff;
    match (exp, frac) {
        (0, 0) => Kind::Zero,
        (0, _) => Kind::Denormal,
        (0xff, 0) => Kind::Infinity,
        (0xff, _) => Kind::Nan,
        _ => Kind::Normal,
    }
}

/// The compared fields of an image: FCW, FSW, FTW, MXCSR, ST0-7, XMM0-15.
fn compared(a: &FxsaveArea) -> (u16, u16, u8, u32, Vec<[u8; 10]>, Vec<u128>) {
    (
        a.fcw(),
        a.fsw(),
        a.ftw(),
        a.mxcsr(),
        (0..8).map(|n| a.st(n)).collect(),
        (0..16).map(|n| a.xmm(n)).collect(),
    )
}

#[test]
fn fpu_images_are_valid_masked_and_varied() {
    use std::collections::HashSet;
    let mut st_kinds = HashSet::new();
    let mut lane_kinds = HashSet::new();
    let (mut rcs, mut pcs, mut tops, mut mxcsr_rcs) = (
        HashSet::new(),
        HashSet::new(),
        HashSet::new(),
        HashSet::new(),
    );
    let (mut ftz, mut daz, mut ftws) = (0, 0, HashSet::new());
    let mut vcpu = EmuVcpu::new();
    for seed in 0..1000u64 {
        let a = fpu_image(seed);
        assert_eq!(a, fpu_image(seed), "not a function of the seed");
        let fcw = a.fcw();
        // Every exception masked, bit 6 set, PC not the reserved 01, bits 12-15 clear.
        assert_eq!(fcw & 0x7f, 0x7f, "fcw {fcw:#x}");
        assert_ne!((fcw >> 8) & 3, 1, "fcw {fcw:#x}");
        assert_eq!(fcw & 0xf080, 0, "fcw {fcw:#x}");
        pcs.insert((fcw >> 8) & 3);
        rcs.insert((fcw >> 10) & 3);
        // FSW: only TOP.
        assert_eq!(a.fsw() & !0x3800, 0);
        tops.insert(a.fsw() >> 11);
        ftws.insert(a.ftw());
        // MXCSR: masks set, no flags, only RC/FTZ/DAZ vary.
        let m = a.mxcsr();
        assert_eq!(m & !(0x6000 | 0x8000 | 0x40), 0x1f80, "mxcsr {m:#x}");
        mxcsr_rcs.insert((m >> 13) & 3);
        ftz += usize::from(m & 0x8000 != 0);
        daz += usize::from(m & 0x40 != 0);
        assert_eq!((a.fop(), a.fip(), a.fdp(), a.mxcsr_mask()), (0, 0, 0, 0));
        for n in 0..8 {
            let k = kind80(a.st(n));
            assert_ne!(k, Kind::Unsupported, "seed {seed} st{n} {:02x?}", a.st(n));
            st_kinds.insert(k);
        }
        for n in 0..16 {
            let x = a.xmm(n);
            for lane in 0..4 {
                lane_kinds.insert(kind32((x >> (32 * lane)) as u32));
            }
        }
        // The emulator loads it and gives the compared fields back unchanged.
        vcpu.set_fpu_state(&a).unwrap();
        assert_eq!(compared(&vcpu.fpu_state().unwrap()), compared(&a));
    }
    assert_ne!(fpu_image(1), fpu_image(2));
    assert_eq!(pcs.len(), 3);
    assert_eq!(rcs.len(), 4);
    assert_eq!(tops.len(), 8);
    assert_eq!(mxcsr_rcs.len(), 4);
    assert!(ftws.len() > 200, "{} tag words", ftws.len());
    assert!((300..700).contains(&ftz) && (300..700).contains(&daz));
    for k in [
        Kind::Zero,
        Kind::Denormal,
        Kind::Normal,
        Kind::Infinity,
        Kind::Nan,
    ] {
        assert!(st_kinds.contains(&k), "no ST value is {k:?}");
        assert!(lane_kinds.contains(&k), "no XMM lane is {k:?}");
    }
}

#[test]
fn prepare_loads_the_cases_fpu_state() {
    let mut r = runner();
    for (i, mode) in Mode::ALL.into_iter().enumerate() {
        let seed = 0x1000 + i as u64;
        let s = r.run(&case(mode, seed, vec![vec![0x90]])).unwrap();
        assert_eq!(s.ending, Ending::Halted);
        assert_eq!(
            compared(&s.fpu.unwrap()),
            compared(&fpu_image(seed)),
            "{mode:?}"
        );
    }
}

#[test]
fn x87_and_sse_instructions_run_on_the_loaded_state() {
    let mut r = runner();
    // fninit; fld1; fadd st0, st0; fstp qword [rbx+8]; movaps xmm3, xmm7;
    // pxor xmm8, xmm8; fld1
    let s = r
        .run(&case(
            Mode::Long64,
            77,
            vec![
                vec![0xdb, 0xe3],
                vec![0xd9, 0xe8],
                vec![0xd8, 0xc0],
                vec![0xdd, 0x5b, 0x08],
                vec![0x0f, 0x28, 0xdf],
                vec![0x66, 0x45, 0x0f, 0xef, 0xc0],
                vec![0xd9, 0xe8],
            ],
        ))
        .unwrap();
    assert_eq!(s.ending, Ending::Halted);
    assert_eq!(s.vector(), None);
    let mem = r.memory().unwrap();
    assert_eq!(mem.read_u64(DATA_POINTER + 8).unwrap(), 2.0f64.to_bits());
    let f = s.fpu.unwrap();
    let image = fpu_image(77);
    assert_eq!(f.xmm(3), image.xmm(7));
    assert_eq!(f.xmm(8), 0);
    // After FNINIT and one push: FCW 0x37f, TOP 7, one register tagged, ST0 = 1.0.
    assert_eq!(f.fcw(), 0x037f);
    assert_eq!((f.fsw() >> 11) & 7, 7);
    assert_eq!(f.ftw(), 0x80);
    assert_eq!(f.st(0), [0, 0, 0, 0, 0, 0, 0, 0x80, 0xff, 0x3f]);
    // MXCSR is untouched by x87 code.
    assert_eq!(f.mxcsr(), image.mxcsr());
}

#[test]
fn the_comparison_names_fpu_fields_and_leaves_out_undefined_condition_codes() {
    let (mut left, mut right) = (runner(), runner());
    // fld1; fcomp st1 — then an SSE add.
    let c = case(
        Mode::Protected32,
        5,
        vec![vec![0xd9, 0xe8], vec![0xd8, 0xd9], vec![0x0f, 0x58, 0xc1]],
    );
    let a = left.run(&c).unwrap();
    let b = right.run(&c).unwrap();
    let (lm, rm) = (left.memory().unwrap(), right.memory().unwrap());
    assert!(compare(&a, lm, &b, rm, 0, 0).is_empty());
    // FLD1 leaves C0/C2/C3 undefined (FCOMP alone would not).
    assert_eq!(undefined_fsw(&c), FSW_C0_C2_C3);
    let only_compare = case(Mode::Protected32, 5, vec![vec![0xd8, 0xd9]]);
    assert_eq!(undefined_fsw(&only_compare), 0);

    let names = |b: &opsvisor_vmdiff::Snapshot, fsw_mask| -> Vec<String> {
        compare(&a, lm, b, rm, 0, fsw_mask)
            .into_iter()
            .map(|d| d.what)
            .collect()
    };
    let mut changed = b.clone();
    let fpu = changed.fpu.as_mut().unwrap();
    fpu.set_xmm(5, fpu.xmm(5) ^ 1);
    assert_eq!(names(&changed, 0), ["xmm5"]);
    let d = compare(&a, lm, &changed, rm, 0, 0);
    assert_eq!(d[0].left, format!("{:#034x}", a.fpu.unwrap().xmm(5)));

    let mut changed = b.clone();
    let fpu = changed.fpu.as_mut().unwrap();
    fpu.set_fsw(fpu.fsw() ^ (1 << 14));
    assert_eq!(names(&changed, 0), ["fsw"]);
    assert!(names(&changed, FSW_C0_C2_C3).is_empty());
    // C1 stays compared.
    let fpu = changed.fpu.as_mut().unwrap();
    fpu.set_fsw(fpu.fsw() ^ (1 << 9));
    assert_eq!(names(&changed, FSW_C0_C2_C3), ["fsw"]);

    // FOP, FIP, FDP and MXCSR_MASK are not compared; the others are, by name.
    let mut changed = b.clone();
    let fpu = changed.fpu.as_mut().unwrap();
    fpu.set_fop(0x123);
    fpu.set_fip(0x4567);
    fpu.set_fdp(0x89ab);
    fpu.set_mxcsr_mask(0xffbf);
    assert!(names(&changed, 0).is_empty());
    let fpu = changed.fpu.as_mut().unwrap();
    fpu.set_fcw(fpu.fcw() ^ 0x400);
    fpu.set_ftw(fpu.ftw() ^ 1);
    fpu.set_mxcsr(fpu.mxcsr() ^ 0x8000);
    let mut st6 = fpu.st(6);
    st6[9] ^= 0x80;
    fpu.set_st(6, st6);
    fpu.set_xmm(15, fpu.xmm(15) ^ (1 << 127));
    assert_eq!(names(&changed, 0), ["fcw", "ftw", "mxcsr", "st6", "xmm15"]);

    // A backend that gives no state back is a difference.
    let mut none = b.clone();
    none.fpu = None;
    assert_eq!(names(&none, 0), ["fpu"]);
}

#[test]
fn packs_keep_the_fpu_seed() {
    let cases: Vec<Case> = (0..20u64)
        .map(|i| case(Mode::ALL[i as usize % 5], i * 0x9e37, vec![vec![0x90]]))
        .collect();
    let back: Vec<Case> = Pack::open(&encode_pack(&cases))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(back, cases);
    assert_eq!(back[3].fpu_seed, 3 * 0x9e37);
}

#[cfg(feature = "generate")]
mod generated {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind};
    use opsvisor_vmdiff::generate::{disassemble, generate};
    use opsvisor_vmdiff::run::{run_pair, Verdict};

    /// Whether `case` has an x87, MMX or SSE instruction.
    fn has_fpu(case: &Case) -> bool {
        case.items.iter().any(|item| {
            let Item::Insn(b) = item else { return false };
            let i = Decoder::with_ip(case.mode.bitness(), b, 0, DecoderOptions::NONE).decode();
            format!("{:?}", i.mnemonic()).starts_with('F')
                || (0..i.op_count()).any(|k| {
                    i.op_kind(k) == OpKind::Register
                        && (i.op_register(k).is_xmm() || i.op_register(k).is_mm())
                })
        })
    }

    #[test]
    fn generated_cases_have_random_fpu_seeds_and_fpu_items() {
        let cases = generate(1000, 21, &Mode::ALL);
        let seeds: std::collections::HashSet<u64> = cases.iter().map(|c| c.fpu_seed).collect();
        assert!(seeds.len() > 990);
        let with = cases.iter().filter(|c| has_fpu(c)).count();
        assert!((200..800).contains(&with), "{with} of 1000 cases");
        let back: Vec<Case> = Pack::open(&encode_pack(&cases))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(back, cases);
    }

    #[test]
    fn two_emulator_runs_of_generated_fpu_cases_agree_and_many_run_through() {
        let (mut left, mut right) = (runner(), runner());
        let mut through = 0;
        let mut total = 0;
        for case in generate(600, 22, &Mode::ALL).into_iter().filter(has_fpu) {
            total += 1;
            match run_pair(&mut left, &mut right, &case).unwrap() {
                Verdict::Same => {}
                other => panic!("{other:?}\n  {}", disassemble(&case).join("\n  ")),
            }
            let s = left.run(&case).unwrap();
            through += usize::from(s.ending == Ending::Halted && s.vector().is_none());
        }
        assert!(total > 100);
        // CR0.EM/TS and CR4.OSFXSR are random, CPL-3 cases end in #GP at the final HLT,
        // and other families fault too; still, a good share of the cases with x87/SIMD
        // items reach the final HLT (a third with seed 22), so their results are compared.
        assert!(through * 4 > total, "{through} of {total} ran through");
    }

    #[test]
    fn mmx_items_are_usually_followed_by_emms() {
        let mut mmx = 0;
        let mut emms_after = 0;
        for case in generate(3000, 23, &Mode::ALL) {
            let decoded: Vec<_> = case
                .items
                .iter()
                .map(|item| match item {
                    Item::Insn(b) => Some(
                        Decoder::with_ip(case.mode.bitness(), b, 0, DecoderOptions::NONE).decode(),
                    ),
                    Item::Branch { .. } => None,
                })
                .collect();
            for (i, ins) in decoded.iter().enumerate() {
                let Some(ins) = ins else { continue };
                if (0..ins.op_count())
                    .any(|k| ins.op_kind(k) == OpKind::Register && ins.op_register(k).is_mm())
                {
                    mmx += 1;
                    let next = decoded.get(i + 1).copied().flatten();
                    emms_after += usize::from(next.is_some_and(|n| n.mnemonic() == Mnemonic::Emms));
                }
            }
        }
        assert!(mmx > 50, "{mmx} MMX items");
        assert!(emms_after * 2 > mmx, "{emms_after} of {mmx}");
    }
}
