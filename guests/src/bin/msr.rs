//! MSRs: read/write round trips of the architectural MSRs a kernel uses, their effects
//! (FS/GS bases as seen through FS:/GS:, SWAPGS, TSC writes), read-only and reserved
//! values that must raise #GP, and RDMSR/WRMSR of an MSR no CPU has.

#![no_std]
#![no_main]

use core::arch::asm;
use rt::cpu::{cpuid, has_feature, rdmsr, rdtsc, try_rdmsr, try_wrmsr, wrmsr, Fault};
use rt::{check, check_eq, println};

rt::entry!(main);

const IA32_TSC: u32 = 0x10;
const IA32_APIC_BASE: u32 = 0x1B;
const IA32_TSC_ADJUST: u32 = 0x3B;
const IA32_MTRRCAP: u32 = 0xFE;
const IA32_SYSENTER_CS: u32 = 0x174;
const IA32_SYSENTER_ESP: u32 = 0x175;
const IA32_SYSENTER_EIP: u32 = 0x176;
const IA32_MISC_ENABLE: u32 = 0x1A0;
const IA32_PAT: u32 = 0x277;
const IA32_MTRR_DEF_TYPE: u32 = 0x2FF;
const EFER: u32 = 0xC000_0080;
const STAR: u32 = 0xC000_0081;
const LSTAR: u32 = 0xC000_0082;
const CSTAR: u32 = 0xC000_0083;
const SFMASK: u32 = 0xC000_0084;
const FS_BASE: u32 = 0xC000_0100;
const GS_BASE: u32 = 0xC000_0101;
const KERNEL_GS_BASE: u32 = 0xC000_0102;

/// An MSR index no x86 CPU implements: Intel's architectural and model-specific MSRs sit
/// below 0x2000 and at 0xC000_0000..0xC000_1FFF, AMD's at 0xC000_xxxx and 0xC001_xxxx,
/// hypervisor-synthetic ones at 0x4000_0000..0x4001_FFFF. 0x1234_5678 is in none of
/// these, so RDMSR/WRMSR of it raise #GP on silicon, under any hypervisor, and on
/// opsvisor alike.
const ABSENT_MSR: u32 = 0x1234_5678;

fn roundtrip(name: &str, msr: u32, value: u64) {
    let old = rdmsr(msr);
    wrmsr(msr, value);
    let got = rdmsr(msr);
    check_eq!(
        got,
        value,
        "{} ({:#x}) holds what was written (was {:#x})",
        name,
        msr,
        old
    );
}

/// A write silicon refuses with #GP, leaving the MSR as it was. QEMU TCG accepts some of
/// these (storing, masking or dropping the value) without a fault; that is tolerated
/// only under TCG, and the old value is put back.
fn refused(what: &str, msr: u32, value: u64) {
    let old = rdmsr(msr);
    let r = try_wrmsr(msr, value);
    let now = rdmsr(msr);
    if r.is_ok() {
        wrmsr(msr, old);
    }
    rt::check_or_tcg!(
        r.is_err() && (now != value || old == value),
        "accepted without #GP",
        "{} raises #GP and leaves the MSR unchanged",
        what
    );
}

fn read_fs0() -> u64 {
    let v: u64;
    // SAFETY: FS_BASE points at a live u64 when this is called.
    unsafe { asm!("mov {}, qword ptr fs:[0]", out(reg) v, options(nostack, readonly)) };
    v
}

fn read_gs0() -> u64 {
    let v: u64;
    // SAFETY: GS_BASE points at a live u64 when this is called.
    unsafe { asm!("mov {}, qword ptr gs:[0]", out(reg) v, options(nostack, readonly)) };
    v
}

static CELLS: [u64; 3] = [0x1111_AAAA, 0x2222_BBBB, 0x3333_CCCC];

fn main(_: &'static rt::multiboot::Info) {
    // EFER: long mode active; SCE toggles; NXE when NX exists; LMA is read-only.
    let efer = rdmsr(EFER);
    println!("EFER {:#x}", efer);
    check!(
        efer & (1 << 8) != 0 && efer & (1 << 10) != 0,
        "EFER.LME and EFER.LMA set in long mode"
    );
    roundtrip("EFER (SCE on)", EFER, efer | 1);
    roundtrip("EFER (SCE off)", EFER, efer & !1);
    if has_feature(0x8000_0001, 0, 3, 20) {
        roundtrip("EFER (NXE on)", EFER, efer | (1 << 11));
    } else {
        refused("EFER.NXE without NX", EFER, efer | (1 << 11));
    }
    refused("EFER reserved bit 1", EFER, efer | (1 << 1));
    wrmsr(EFER, efer);

    // SYSCALL MSRs.
    roundtrip("STAR", STAR, 0x0023_0010_0000_0000);
    roundtrip("LSTAR", LSTAR, 0xFFFF_8000_0010_0000);
    roundtrip("CSTAR", CSTAR, 0x0000_0000_0020_0000);
    roundtrip("SFMASK", SFMASK, 0x4_7700);
    // An MSR is checked against the processor's widest linear address: 57 bits with
    // LA57 (CPUID.7.0:ECX bit 16), else 48.
    let la57 = rt::cpu::cpuid(7, 0).2 & (1 << 16) != 0;
    let non_canonical = if la57 {
        0x0100_0000_0000_0000
    } else {
        0x0000_8000_0000_0000
    };
    refused("non-canonical LSTAR", LSTAR, non_canonical);

    // Segment bases, as MSRs and as seen by FS:/GS: accesses, and SWAPGS.
    let cells = CELLS.as_ptr() as u64;
    wrmsr(FS_BASE, cells);
    check_eq!(rdmsr(FS_BASE), cells, "FS_BASE reads back");
    check_eq!(read_fs0(), CELLS[0], "FS:[0] reads through FS_BASE");
    wrmsr(GS_BASE, cells + 8);
    wrmsr(KERNEL_GS_BASE, cells + 16);
    check_eq!(read_gs0(), CELLS[1], "GS:[0] reads through GS_BASE");
    // SAFETY: SWAPGS exchanges GS_BASE and KERNEL_GS_BASE; both hold valid addresses.
    unsafe { asm!("swapgs", options(nostack, nomem)) };
    check_eq!(
        rdmsr(GS_BASE),
        cells + 16,
        "SWAPGS: GS_BASE = old KERNEL_GS_BASE"
    );
    check_eq!(
        rdmsr(KERNEL_GS_BASE),
        cells + 8,
        "SWAPGS: KERNEL_GS_BASE = old GS_BASE"
    );
    check_eq!(read_gs0(), CELLS[2], "GS:[0] follows the swapped base");
    // SAFETY: as above; swaps back.
    unsafe { asm!("swapgs", options(nostack, nomem)) };
    check_eq!(read_gs0(), CELLS[1], "a second SWAPGS swaps back");
    refused("non-canonical FS_BASE", FS_BASE, non_canonical | (1 << 50));
    wrmsr(FS_BASE, 0);
    wrmsr(GS_BASE, 0);
    wrmsr(KERNEL_GS_BASE, 0);

    // SYSENTER MSRs (legal to program in long mode even though SYSENTER is 32-bit only on AMD).
    roundtrip("SYSENTER_CS", IA32_SYSENTER_CS, 0x10);
    roundtrip("SYSENTER_ESP", IA32_SYSENTER_ESP, 0xFFFF_8000_1234_5000);
    roundtrip("SYSENTER_EIP", IA32_SYSENTER_EIP, 0xFFFF_8000_1234_6000);

    // PAT: the power-up value, a legal rewrite, and an illegal memory type (2) → #GP.
    if has_feature(1, 0, 3, 16) {
        let pat = rdmsr(IA32_PAT);
        check_eq!(
            pat,
            0x0007_0406_0007_0406u64,
            "PAT holds its power-up value"
        );
        roundtrip("PAT", IA32_PAT, 0x0007_0106_0007_0406);
        refused(
            "PAT with reserved memory type 2",
            IA32_PAT,
            0x0007_0406_0007_0402,
        );
        wrmsr(IA32_PAT, pat);
    } else {
        println!("no PAT in CPUID: PAT checks skipped");
    }

    // TSC: a write sets the counter, which keeps counting from there.
    let target = 0x0000_1000_0000_0000u64;
    let adjust_supported = has_feature(7, 0, 1, 1);
    let adj0 = if adjust_supported {
        rdmsr(IA32_TSC_ADJUST)
    } else {
        0
    };
    let before = rdtsc();
    wrmsr(IA32_TSC, target);
    let a = rdtsc();
    let b = rdmsr(IA32_TSC);
    println!(
        "TSC {:#x} before, {:#x} and {:#x} after writing {:#x}",
        before, a, b, target
    );
    // Ten seconds' worth at 4 GHz is far more than a few instructions take anywhere.
    rt::check_or_tcg!(
        a >= target && a - target < 40_000_000_000,
        "TSC write ignored by RDTSC",
        "RDTSC continues from the written value"
    );
    rt::check_or_tcg!(
        b >= a,
        "RDMSR(TSC) disagrees with RDTSC",
        "RDMSR(TSC) is monotonic with RDTSC"
    );
    if adjust_supported {
        let adj1 = rdmsr(IA32_TSC_ADJUST);
        println!("TSC_ADJUST {:#x} -> {:#x} after the TSC write", adj0, adj1);
        roundtrip("TSC_ADJUST", IA32_TSC_ADJUST, adj1.wrapping_add(0x1000));
        wrmsr(IA32_TSC_ADJUST, adj1);
    } else {
        println!("no TSC_ADJUST in CPUID.7.0:EBX: skipped");
    }

    // APIC base: BSP, enabled, default base, page-aligned.
    if has_feature(1, 0, 3, 9) {
        let base = rdmsr(IA32_APIC_BASE);
        println!("APIC_BASE {:#x}", base);
        check!(base & (1 << 8) != 0, "APIC_BASE.BSP set on the boot CPU");
        check!(base & (1 << 11) != 0, "APIC_BASE.EN set");
        check_eq!(
            base & 0xF_FFFF_FFFF_F000,
            0xFEE0_0000u64,
            "APIC at the default base"
        );
        roundtrip("APIC_BASE (unchanged)", IA32_APIC_BASE, base);
    }

    // MTRRs: MTRRcap is read-only; MTRRdefType takes E and a legal default type.
    if has_feature(1, 0, 3, 12) {
        let cap = rdmsr(IA32_MTRRCAP);
        println!(
            "MTRRcap {:#x}: {} variable ranges, fixed {}, WC {}",
            cap,
            cap & 0xFF,
            cap >> 8 & 1,
            cap >> 10 & 1
        );
        rt::check_or_tcg!(
            try_wrmsr(IA32_MTRRCAP, cap).is_err(),
            "no #GP",
            "MTRRcap is read-only: WRMSR raises #GP"
        );
        check_eq!(rdmsr(IA32_MTRRCAP), cap, "MTRRcap unchanged");
        let def = rdmsr(IA32_MTRR_DEF_TYPE);
        println!("MTRRdefType {:#x}", def);
        roundtrip("MTRRdefType", IA32_MTRR_DEF_TYPE, (1 << 11) | 6);
        refused(
            "MTRRdefType with reserved type 2",
            IA32_MTRR_DEF_TYPE,
            (1 << 11) | 2,
        );
        wrmsr(IA32_MTRR_DEF_TYPE, def);
    } else {
        println!("no MTRR in CPUID: MTRR checks skipped");
    }

    // MISC_ENABLE is Intel's; other vendors may not have it at all.
    let (_, b, c, d) = cpuid(0, 0);
    let intel = (b, d, c) == (0x756E_6547, 0x4965_6E69, 0x6C65_746E);
    match try_rdmsr(IA32_MISC_ENABLE) {
        Ok(v) => {
            println!("MISC_ENABLE {:#x}", v);
            check!(v & 1 != 0 || !intel, "MISC_ENABLE.fast-strings set (Intel)");
        }
        Err(f) => {
            println!(
                "MISC_ENABLE absent: #{} ({})",
                f.vector,
                rt::interrupts::vector_name(u64::from(f.vector))
            );
            check!(!intel, "MISC_ENABLE exists on Intel CPUs");
        }
    }

    // An MSR nobody implements. The probe's #GP handler checks RIP is the RDMSR/WRMSR
    // itself, records the fault and resumes after the 2-byte instruction. QEMU TCG
    // reads unknown MSRs as 0 and drops writes, tolerated only under TCG.
    let r = try_rdmsr(ABSENT_MSR);
    println!("RDMSR {:#x}: {:?}", ABSENT_MSR, r);
    rt::check_or_tcg!(
        r == Err(Fault {
            vector: 13,
            error_code: 0
        }),
        "unknown MSR reads as 0",
        "RDMSR of absent MSR {:#x} raises #GP(0)",
        ABSENT_MSR
    );
    let w = try_wrmsr(ABSENT_MSR, 0x55);
    println!("WRMSR {:#x}: {:?}", ABSENT_MSR, w);
    rt::check_or_tcg!(
        w == Err(Fault {
            vector: 13,
            error_code: 0
        }),
        "unknown MSR write dropped",
        "WRMSR of absent MSR {:#x} raises #GP(0)",
        ABSENT_MSR
    );
}
