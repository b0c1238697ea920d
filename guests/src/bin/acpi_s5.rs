//! Power off through ACPI S5 as an operating system does it: the FADT found through the
//! RSDP, `\_S5`'s sleep types read out of the DSDT's AML, ACPI mode entered through the
//! SMI command port when the FADT names one (opsvisor's names none: SCI_EN is set from
//! the start), then SLP_TYPa written to PM1a_CNT and SLP_TYPa | SLP_EN written after it,
//! as ACPICA's `acpi_hw_legacy_sleep` does. The run ends with the machine powered off
//! (opsvisor: `RunOutcome::PowerOff`, QEMU: exit status 0); the guest still running
//! afterwards is a FAIL.
//!
//! opsvisor's `\_S5` is sleep type 5 (`acpi::S5_SLEEP_TYPE` in core); QEMU's PIIX4 powers
//! off with sleep type 0, which its DSDT says and this guest notes.

#![no_std]
#![no_main]

use rt::acpi::{fadt, Tables};
use rt::apic::{spin_until, tsc_ticks_for_ms};
use rt::cpu::{inw, outb, outw};
use rt::{check, check_or_qemu, println};

rt::entry!(main);

fn main(_: &'static rt::multiboot::Info) {
    let Some(tables) = Tables::find() else {
        println!("FAIL: no RSDP with valid checksums in 0xE0000-0xFFFFF");
        rt::exit(rt::EXIT_FAIL);
    };
    let Some(f) = tables.find_table(b"FACP") else {
        println!("FAIL: no FADT");
        rt::exit(rt::EXIT_FAIL);
    };
    let Some(dsdt) = tables.dsdt() else {
        println!("FAIL: the FADT names no DSDT");
        rt::exit(rt::EXIT_FAIL);
    };
    check!(
        dsdt.checksum_ok(),
        "DSDT at {:#x}, checksum valid",
        dsdt.addr
    );
    let Some((slp_typa, slp_typb)) = rt::acpi::s5_sleep_types(&dsdt) else {
        println!("FAIL: no \\_S5 package in the DSDT");
        rt::exit(rt::EXIT_FAIL);
    };
    println!("\\_S5: SLP_TYPa {}, SLP_TYPb {}", slp_typa, slp_typb);
    check!(slp_typa < 8, "SLP_TYPa fits the 3-bit field");
    check_or_qemu!(
        slp_typa == 5,
        "QEMU's PIIX4 powers off with sleep type 0",
        "\\_S5 is sleep type 5"
    );

    // PM1a_CNT: the X_ block when the FADT has one, else the 32-bit port field.
    let x_cnt = f
        .gas(fadt::X_PM1A_CNT_BLK)
        .filter(|g| f.revision() >= 3 && g.address != 0);
    let port = match x_cnt {
        Some(g) => {
            check!(g.space == 1, "X_PM1a_CNT_BLK is in I/O space");
            g.address as u16
        }
        None => f.u32(fadt::PM1A_CNT_BLK) as u16,
    };
    check!(port != 0, "PM1a_CNT at port {:#x}", port);

    // ACPI mode.
    let smi_cmd = f.u32(fadt::SMI_CMD) as u16;
    if inw(port) & fadt::SCI_EN == 0 {
        check!(
            smi_cmd != 0,
            "SCI_EN is clear, so the FADT must name an SMI command port"
        );
        outb(smi_cmd, f.u8(fadt::ACPI_ENABLE));
        let enabled = spin_until(tsc_ticks_for_ms(1000), || inw(port) & fadt::SCI_EN != 0);
        check!(enabled, "ACPI enabled through SMI_CMD {:#x}", smi_cmd);
    } else {
        println!("ok: SCI_EN already set (SMI_CMD {:#x})", smi_cmd);
    }

    let control = inw(port) & !(7 << fadt::SLP_TYP_SHIFT | fadt::SLP_EN);
    let typ = u16::from(slp_typa) << fadt::SLP_TYP_SHIFT;
    outw(port, control | typ);
    println!(
        "entering S5: PM1a_CNT {:#x} = {:#06x}",
        port,
        control | typ | fadt::SLP_EN
    );
    outw(port, control | typ | fadt::SLP_EN);
    rt::expect_gone("the power-off through PM1a_CNT", 2000);
}
