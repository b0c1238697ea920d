//! The ACPI tables as an operating system finds and checks them, compared with what the
//! devices they describe answer: the RSDP found by scanning 0xE0000-0xFFFFF in 16-byte
//! steps (both checksums), the RSDT and the XSDT listing the same tables, every table's
//! checksum, the FADT (SCI 9, the PM1a event and control blocks, the PM timer block and
//! its width, the reset register 0xCF9 with value 6, the FACS and the DSDT, `\_S5` in the
//! DSDT), the MADT (the boot CPU's local APIC with the ID its APIC reports, as many
//! enabled processors as fw_cfg's NB_CPUS, the I/O APIC at 0xFEC00000 with GSI base 0 and
//! the ID and redirection entries its registers report, IRQ 0 on GSI 2, the SCI
//! level-triggered, NMIs on LINT1), and the PM timer read through the FADT's port.
//!
//! QEMU's `pc` machine, the reference this guest also runs on, builds ACPI 1.0 tables
//! (RSDP revision 0 and no XSDT, FADT revision 1 without a reset register or boot
//! architecture flags) and has SMM, so its FADT names an SMI command port through which
//! the OS enables ACPI; those differences are printed as notes there.

#![no_std]
#![no_main]

use rt::acpi::{fadt, Sdt, Tables};
use rt::apic::Apic;
use rt::cpu::{cpuid, inb, inl, inw, outw, qemu_devices};
use rt::irq::ioapic_read;
use rt::{check, check_eq, check_or_qemu, check_quiet, println};

rt::entry!(main);

const QEMU_ACPI_1: &str = "QEMU's pc machine builds ACPI 1.0 tables";

fn main(_: &'static rt::multiboot::Info) {
    let Some(tables) = Tables::find() else {
        println!("FAIL: no RSDP with valid checksums in 0xE0000-0xFFFFF");
        rt::exit(rt::EXIT_FAIL);
    };
    let rsdp = tables.rsdp;
    println!(
        "RSDP at {:#x}: revision {}, OEM {:?}, RSDT {:#x}, XSDT {:x?}",
        rsdp.addr,
        rsdp.revision,
        core::str::from_utf8(&rsdp.oem_id).unwrap_or("?"),
        rsdp.rsdt,
        rsdp.xsdt
    );
    check!(
        rsdp.addr % 16 == 0 && (0xE_0000..0x10_0000).contains(&rsdp.addr),
        "RSDP found by the BIOS-area scan, both checksums valid"
    );
    check_or_qemu!(
        rsdp.revision >= 2 && tables.xsdt.is_some(),
        QEMU_ACPI_1,
        "RSDP revision 2 with an XSDT"
    );

    root_tables(&tables);
    let fadt = fadt_checks(&tables);
    madt_checks(&tables);
    pm_timer(&fadt);
}

fn root_tables(tables: &Tables) {
    let rsdt = tables.rsdt;
    check_eq!(rsdt.name(), "RSDT", "the RSDT's signature");
    check!(rsdt.checksum_ok(), "RSDT checksum");
    let mut count = 0;
    for addr in tables.root().entries() {
        let Some(t) = Sdt::at(addr) else {
            println!("FAIL: root table entry {:#x} is not a table", addr);
            rt::exit(rt::EXIT_FAIL);
        };
        println!(
            "  {} at {:#x}, {} bytes, revision {}",
            t.name(),
            t.addr,
            t.len(),
            t.revision()
        );
        check!(t.checksum_ok(), "{} checksum", t.name());
        count += 1;
    }
    check!(count >= 2, "the root table lists {} tables", count);
    if let Some(xsdt) = tables.xsdt {
        check_eq!(xsdt.name(), "XSDT", "the XSDT's signature");
        check!(xsdt.checksum_ok(), "XSDT checksum");
        let same = rsdt.entries().count() == xsdt.entries().count()
            && rsdt.entries().zip(xsdt.entries()).all(|(a, b)| a == b);
        check!(same, "the RSDT and the XSDT list the same tables");
    }
}

fn fadt_checks(tables: &Tables) -> Sdt {
    let Some(f) = tables.find_table(b"FACP") else {
        println!("FAIL: no FADT (FACP) in the root table");
        rt::exit(rt::EXIT_FAIL);
    };
    let qemu = qemu_devices();
    println!("FADT revision {}, {} bytes", f.revision(), f.len());
    check_eq!(f.u16(fadt::SCI_INT), 9, "FADT: SCI on IRQ 9");
    check_eq!(f.u32(fadt::PM1A_EVT_BLK), 0x600, "FADT: PM1a event block");
    check_eq!(f.u8(fadt::PM1_EVT_LEN), 4, "FADT: PM1 event block length");
    check_eq!(f.u32(fadt::PM1A_CNT_BLK), 0x604, "FADT: PM1a control block");
    check_eq!(f.u8(fadt::PM1_CNT_LEN), 2, "FADT: PM1 control block length");
    check_eq!(f.u32(fadt::PM_TMR_BLK), 0x608, "FADT: PM timer block");
    check_eq!(f.u8(fadt::PM_TMR_LEN), 4, "FADT: PM timer block length");
    check_eq!(f.u32(fadt::PM1B_EVT_BLK), 0, "FADT: no PM1b event block");
    check_eq!(f.u32(fadt::PM1B_CNT_BLK), 0, "FADT: no PM1b control block");
    check_eq!(
        f.u8(fadt::CENTURY),
        0x32,
        "FADT: the RTC century byte at CMOS 0x32"
    );

    let revision_2 = f.revision() >= 3 && f.len() >= 244;
    check_or_qemu!(
        revision_2,
        QEMU_ACPI_1,
        "FADT revision {} has the ACPI 2.0 fields",
        f.revision()
    );
    if revision_2 {
        let flags = f.u32(fadt::FLAGS);
        check!(
            flags & fadt::RESET_REG_SUP != 0,
            "FADT: reset register supported"
        );
        let reset = f.gas(fadt::RESET_REG);
        check_eq!(
            reset.map(|g| (g.space, g.bit_width, g.address)),
            Some((1, 8, 0xCF9)),
            "FADT: reset register: the byte at I/O port 0xCF9"
        );
        check_eq!(f.u8(fadt::RESET_VALUE), 6, "FADT: reset value 6");
        check!(
            f.u16(fadt::IAPC_BOOT_ARCH) & 0x3 == 0x3,
            "FADT: boot architecture flags: legacy devices and an 8042"
        );
        for (what, port_field, gas_field) in [
            ("PM1a event", fadt::PM1A_EVT_BLK, fadt::X_PM1A_EVT_BLK),
            ("PM1a control", fadt::PM1A_CNT_BLK, fadt::X_PM1A_CNT_BLK),
            ("PM timer", fadt::PM_TMR_BLK, fadt::X_PM_TMR_BLK),
        ] {
            let gas = f.gas(gas_field);
            check_eq!(
                gas.map(|g| (g.space, g.address)),
                Some((1, u64::from(f.u32(port_field)))),
                "FADT: X_{} block is the same I/O port",
                what
            );
        }
        let x_dsdt = f.u64(fadt::X_DSDT);
        check!(
            x_dsdt == 0 || x_dsdt == u64::from(f.u32(fadt::DSDT)),
            "FADT: X_DSDT ({:#x}) agrees with DSDT",
            x_dsdt
        );
    }

    // No SMI command port: the machine is in ACPI mode from the start, SCI_EN set.
    let smi_cmd = f.u32(fadt::SMI_CMD);
    let pm1_cnt = inw(f.u32(fadt::PM1A_CNT_BLK) as u16);
    if smi_cmd == 0 {
        check!(
            pm1_cnt & fadt::SCI_EN != 0,
            "no SMI command port and PM1a_CNT.SCI_EN reads 1 (PM1a_CNT {:#x})",
            pm1_cnt
        );
    } else if qemu {
        println!(
            "note: QEMU's FADT names SMI command port {:#x} (ACPI enable {:#x}); PM1a_CNT {:#x}",
            smi_cmd,
            f.u8(fadt::ACPI_ENABLE),
            pm1_cnt
        );
    } else {
        println!(
            "FAIL: SMI command port {:#x} on a machine without SMM",
            smi_cmd
        );
        rt::exit(rt::EXIT_FAIL);
    }

    // The FACS and the DSDT.
    let x_facs = if revision_2 {
        f.u64(fadt::X_FIRMWARE_CTRL)
    } else {
        0
    };
    let facs_addr = if x_facs != 0 {
        x_facs
    } else {
        u64::from(f.u32(fadt::FIRMWARE_CTRL))
    };
    let facs = rt::acpi::phys(facs_addr, 64);
    check!(
        &facs[..4] == b"FACS" && u32::from_le_bytes([facs[4], facs[5], facs[6], facs[7]]) >= 64,
        "FACS at {:#x}: signature and length",
        facs_addr
    );
    check_eq!(facs_addr % 64, 0, "FACS 64-byte aligned");
    let Some(dsdt) = tables.dsdt() else {
        println!("FAIL: the FADT's DSDT pointer is not a table");
        rt::exit(rt::EXIT_FAIL);
    };
    check_eq!(dsdt.name(), "DSDT", "the DSDT's signature");
    check!(
        dsdt.checksum_ok(),
        "DSDT checksum ({} bytes at {:#x})",
        dsdt.len(),
        dsdt.addr
    );
    let s5 = rt::acpi::s5_sleep_types(&dsdt);
    check!(s5.is_some(), "the DSDT declares \\_S5: {:?}", s5);
    f
}

fn madt_checks(tables: &Tables) {
    let Some(madt) = tables.find_table(b"APIC") else {
        println!("FAIL: no MADT (APIC) in the root table");
        rt::exit(rt::EXIT_FAIL);
    };
    let apic_base = rt::cpu::rdmsr(rt::apic::IA32_APIC_BASE) & 0x000F_FFFF_FFFF_F000;
    check_eq!(
        u64::from(madt.u32(36)),
        apic_base,
        "MADT: the local APIC address is IA32_APIC_BASE's"
    );
    check!(
        madt.u32(40) & 1 != 0,
        "MADT: PCAT_COMPAT (dual 8259s present)"
    );

    let apic_id = match Apic::current() {
        Some(a @ Apic::X(_)) => a.read(rt::apic::reg::ID) >> 24,
        Some(Apic::X2) => Apic::X2.read(rt::apic::reg::ID),
        None => {
            println!("FAIL: the local APIC is globally disabled");
            rt::exit(rt::EXIT_FAIL);
        }
    };
    let initial_id = cpuid(1, 0).1 >> 24;
    let mut enabled = 0u32;
    let mut boot_cpu_listed = false;
    let mut ioapics = 0;
    let mut ioapic = None;
    let mut irq0 = None;
    let mut sci = None;
    let mut lint1_nmi = false;
    let body = &madt.bytes[44..];
    let mut at = 0;
    while at + 2 <= body.len() {
        let (kind, len) = (body[at], usize::from(body[at + 1]));
        if len < 2 || at + len > body.len() {
            println!("FAIL: MADT entry at {} has length {}", at + 44, len);
            rt::exit(rt::EXIT_FAIL);
        }
        let e = &body[at..at + len];
        let u32_at = |o: usize| u32::from_le_bytes([e[o], e[o + 1], e[o + 2], e[o + 3]]);
        match (kind, len) {
            (0, 8) => {
                println!(
                    "  local APIC: UID {} APIC ID {} flags {:#x}",
                    e[2],
                    e[3],
                    u32_at(4)
                );
                if u32_at(4) & 1 != 0 {
                    enabled += 1;
                    boot_cpu_listed |= u32::from(e[3]) == apic_id;
                }
            }
            (9, 16) => {
                println!(
                    "  local x2APIC: UID {} APIC ID {} flags {:#x}",
                    u32_at(12),
                    u32_at(4),
                    u32_at(8)
                );
                if u32_at(8) & 1 != 0 {
                    enabled += 1;
                    boot_cpu_listed |= u32_at(4) == apic_id;
                }
            }
            (1, 12) => {
                println!(
                    "  I/O APIC: ID {} at {:#x}, GSI base {}",
                    e[2],
                    u32_at(4),
                    u32_at(8)
                );
                ioapics += 1;
                ioapic = Some((e[2], u32_at(4), u32_at(8)));
            }
            (2, 10) => {
                let flags = u16::from_le_bytes([e[8], e[9]]);
                println!(
                    "  override: bus {} IRQ {} -> GSI {} flags {:#x}",
                    e[2],
                    e[3],
                    u32_at(4),
                    flags
                );
                if e[2] == 0 && e[3] == 0 {
                    irq0 = Some((u32_at(4), flags));
                }
                if e[2] == 0 && e[3] == 9 {
                    sci = Some((u32_at(4), flags));
                }
            }
            (4, 6) => {
                println!(
                    "  local APIC NMI: UID {:#x} flags {:#x} LINT{}",
                    e[2],
                    u16::from_le_bytes([e[3], e[4]]),
                    e[5]
                );
                lint1_nmi |= e[5] == 1 && (e[2] == 0xFF || e[2] == 0);
            }
            _ => println!("  entry type {} length {}", kind, len),
        }
        at += len;
    }
    check!(
        boot_cpu_listed,
        "MADT: an enabled local APIC with this CPU's APIC ID {} (CPUID initial ID {})",
        apic_id,
        initial_id
    );
    let nb_cpus = fw_cfg_nb_cpus();
    check_eq!(
        enabled,
        u32::from(nb_cpus),
        "MADT: as many enabled processors as fw_cfg's NB_CPUS"
    );
    check_eq!(ioapics, 1, "MADT: one I/O APIC");
    let (id, addr, gsi_base) = ioapic.unwrap_or_default();
    check_eq!(addr, 0xFEC0_0000u32, "MADT: the I/O APIC at 0xFEC00000");
    check_eq!(gsi_base, 0, "MADT: the I/O APIC's GSI base");
    let id_register = ioapic_read(0);
    let version = ioapic_read(1);
    check_eq!(
        u32::from(id),
        (id_register >> 24) & 0xF,
        "MADT: the I/O APIC's ID is what its ID register says"
    );
    check_eq!(
        (version >> 16) & 0xFF,
        23,
        "the I/O APIC's version register: 24 redirection entries, GSIs 0-23"
    );
    check_eq!(
        irq0.map(|(gsi, flags)| (gsi, flags & 0xF)),
        Some((2, 0)),
        "MADT: ISA IRQ 0 overridden to GSI 2, bus polarity and trigger"
    );
    check_eq!(
        sci.map(|(gsi, flags)| (gsi, flags & 0xF)),
        Some((9, 0xD)),
        "MADT: the SCI (IRQ 9) on GSI 9, level-triggered, active high"
    );
    check!(lint1_nmi, "MADT: NMIs on LINT1 of every processor");
}

/// fw_cfg's NB_CPUS: select 0x05, two bytes little-endian.
fn fw_cfg_nb_cpus() -> u16 {
    outw(0x510, 0x05);
    u16::from(inb(0x511)) | u16::from(inb(0x511)) << 8
}

fn pm_timer(f: &Sdt) {
    let port = f.u32(fadt::PM_TMR_BLK) as u16;
    let wide = f.u32(fadt::FLAGS) & fadt::TMR_VAL_EXT != 0;
    let mask: u32 = if wide { u32::MAX } else { 0x00FF_FFFF };
    let first = inl(port);
    if !wide {
        check_eq!(
            first & !mask,
            0,
            "PM timer: a 24-bit timer reads 0 in bits 31-24"
        );
    }
    let mut reads = 0;
    while inl(port) == first {
        reads += 1;
        check_quiet!(reads < 100_000, "the PM timer advances within 100000 reads");
    }
    let mut last = inl(port);
    for _ in 0..1000 {
        let now = inl(port);
        check_quiet!(
            (now.wrapping_sub(last) & mask) < mask / 2,
            "the PM timer never goes backwards ({:#x} after {:#x})",
            now,
            last
        );
        last = now;
    }
    check!(
        (last.wrapping_sub(first) & mask) > 0,
        "the PM timer at the FADT's port {:#x} ({} bits) advances",
        port,
        if wide { 32 } else { 24 }
    );
}
