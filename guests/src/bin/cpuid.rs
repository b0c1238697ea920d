//! CPUID: the vendor and maximum leaves, feature bits checked for consistency with what
//! the CPU then does (APIC base MSR, x2APIC/TSC-deadline, long mode, NX, SYSCALL), the
//! brand string and the address sizes. Printed in full; nothing emulator-specific is
//! hard-coded.

#![no_std]
#![no_main]

use rt::cpu::{cpuid, rdmsr, try_rdmsr, try_wrmsr};
use rt::{check, check_eq, println};

rt::entry!(main);

fn ascii(regs: &[u32]) -> ([u8; 48], usize) {
    let mut out = [0u8; 48];
    let mut n = 0;
    for r in regs {
        for b in r.to_le_bytes() {
            if n < out.len() {
                out[n] = b;
                n += 1;
            }
        }
    }
    (out, n)
}

fn main(_: &'static rt::multiboot::Info) {
    let (max, b, c, d) = cpuid(0, 0);
    let (vendor, _) = ascii(&[b, d, c]);
    let vendor = core::str::from_utf8(&vendor[..12]).unwrap_or("<not ASCII>");
    println!("leaf 0: max basic leaf {:#x}, vendor \"{}\"", max, vendor);
    check!(max >= 1, "leaf 1 exists");
    check!(
        vendor.bytes().all(|c| c.is_ascii_graphic() || c == b' '),
        "vendor string is printable ASCII"
    );

    let (a1, b1, c1, d1) = cpuid(1, 0);
    let family = ((a1 >> 8) & 0xF)
        + if (a1 >> 8) & 0xF == 0xF {
            (a1 >> 20) & 0xFF
        } else {
            0
        };
    let model = ((a1 >> 4) & 0xF)
        | if matches!((a1 >> 8) & 0xF, 6 | 0xF) {
            ((a1 >> 16) & 0xF) << 4
        } else {
            0
        };
    println!(
        "leaf 1: eax {:#x} ebx {:#x} ecx {:#x} edx {:#x}",
        a1, b1, c1, d1
    );
    println!(
        "  family {:#x} model {:#x} stepping {}",
        family,
        model,
        a1 & 0xF
    );
    let apic = d1 & (1 << 9) != 0;
    let x2apic = c1 & (1 << 21) != 0;
    let deadline = c1 & (1 << 24) != 0;
    let msr = d1 & (1 << 5) != 0;
    let tsc = d1 & (1 << 4) != 0;
    println!(
        "  APIC {} x2APIC {} TSC-deadline {} MSR {} TSC {} hypervisor {}",
        apic,
        x2apic,
        deadline,
        msr,
        tsc,
        c1 >> 31
    );
    check!(msr, "MSR (RDMSR/WRMSR) present: required by long mode");
    check!(tsc, "TSC present");
    check!(d1 & (1 << 6) != 0, "PAE present: required by long mode");
    if apic {
        let base = rdmsr(0x1B);
        check!(
            base & (1 << 11) != 0,
            "APIC bit set and IA32_APIC_BASE.EN agrees"
        );
        // The initial APIC ID in EBX[31:24] is the ID the xAPIC register shows at reset.
        let mmio_id = if base & (1 << 10) == 0 {
            // SAFETY: the xAPIC page is identity-mapped by the boot tables.
            unsafe { core::ptr::read_volatile(((base & 0xF_FFFF_F000) + 0x20) as *const u32) >> 24 }
        } else {
            rdmsr(0x802) as u32
        };
        check_eq!(
            b1 >> 24,
            mmio_id,
            "initial APIC ID (CPUID.1:EBX[31:24]) matches the APIC ID register"
        );
    } else {
        check!(!x2apic, "no x2APIC without an APIC");
        check!(!deadline, "no TSC-deadline timer without an APIC");
    }
    if deadline {
        check!(
            try_rdmsr(0x6E0).is_ok(),
            "TSC-deadline advertised: IA32_TSC_DEADLINE readable"
        );
    }
    println!(
        "  CLFLUSH line {} bytes, logical processors {}",
        ((b1 >> 8) & 0xFF) * 8,
        (b1 >> 16) & 0xFF
    );

    if max >= 7 {
        let (_, b7, c7, d7) = cpuid(7, 0);
        println!("leaf 7.0: ebx {:#x} ecx {:#x} edx {:#x}", b7, c7, d7);
    }

    let (emax, _, _, _) = cpuid(0x8000_0000, 0);
    println!("leaf 0x80000000: max extended leaf {:#x}", emax);
    check!(emax >= 0x8000_0001, "extended leaf 0x80000001 exists");
    let (_, _, ec, ed) = cpuid(0x8000_0001, 0);
    println!("leaf 0x80000001: ecx {:#x} edx {:#x}", ec, ed);
    let lm = ed & (1 << 29) != 0;
    let nx = ed & (1 << 20) != 0;
    let syscall = ed & (1 << 11) != 0;
    println!(
        "  LM {} NX {} SYSCALL {} LAHF64 {}",
        lm,
        nx,
        syscall,
        ec & 1
    );
    check!(lm, "LM set: this guest is running in long mode");
    check!(
        rdmsr(0xC000_0080) & (1 << 10) != 0,
        "EFER.LMA agrees with LM"
    );
    check!(
        syscall,
        "SYSCALL present (required for 64-bit code by every 64-bit CPU)"
    );
    let efer = rdmsr(0xC000_0080);
    check!(
        try_wrmsr(0xC000_0080, efer | 1).is_ok(),
        "EFER.SCE writable since SYSCALL is advertised"
    );
    if nx {
        check!(
            try_wrmsr(0xC000_0080, efer | (1 << 11)).is_ok(),
            "EFER.NXE writable since NX is advertised"
        );
    }
    let _ = try_wrmsr(0xC000_0080, efer);

    if emax >= 0x8000_0004 {
        let mut regs = [0u32; 12];
        for i in 0..3 {
            let (a, b, c, d) = cpuid(0x8000_0002 + i, 0);
            regs[i as usize * 4..i as usize * 4 + 4].copy_from_slice(&[a, b, c, d]);
        }
        let (brand, n) = ascii(&regs);
        let end = brand[..n].iter().position(|&c| c == 0).unwrap_or(n);
        match core::str::from_utf8(&brand[..end]) {
            Ok(s) => {
                println!("brand: \"{}\"", s.trim());
                check!(
                    s.bytes().all(|c| c.is_ascii() && !c.is_ascii_control()),
                    "brand string is printable ASCII"
                );
            }
            Err(_) => {
                println!("FAIL: brand string is not ASCII");
                rt::exit(rt::EXIT_FAIL);
            }
        }
    } else {
        println!("no brand string leaves");
    }

    if emax >= 0x8000_0008 {
        let (a8, _, _, _) = cpuid(0x8000_0008, 0);
        let (phys, virt) = (a8 & 0xFF, (a8 >> 8) & 0xFF);
        println!(
            "leaf 0x80000008: physical address bits {}, linear address bits {}",
            phys, virt
        );
        check!((36..=52).contains(&phys), "MAXPHYADDR within 36..=52");
        check!(virt == 48 || virt == 57, "linear address width is 48 or 57");
        // The APIC base must fit the physical address width.
        if apic {
            check!(rdmsr(0x1B) >> phys == 0, "APIC_BASE within MAXPHYADDR");
        }
    } else {
        println!("no leaf 0x80000008");
    }
}
