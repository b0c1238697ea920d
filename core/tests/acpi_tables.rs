//! opsvisor's ACPI tables read back by an independent parser, the `acpi` crate, the way
//! an OS kernel reads them: find the RSDP by the BIOS scan, walk the XSDT, validate each
//! table's signature and checksum, then read the MADT entries and FADT registers.
//!
//! The crate's interface maps physical memory through raw pointers, so this test (and
//! only this test: core itself has no unsafe code) implements its handler over the bytes
//! of a `GuestMemory`.

use acpi::address::AddressSpace;
use acpi::fadt::Fadt;
use acpi::madt::{Madt, MadtEntry};
use acpi::rsdp::Rsdp;
use acpi::{AcpiHandler, AcpiTable, AcpiTables, PhysicalMapping};
use opsvisor_core::acpi::{build_tables, AcpiConfig, AcpiError, AcpiLayout};
use opsvisor_core::GuestMemory;
use std::ptr::NonNull;

/// The area the PC gives the tables.
const AREA: u64 = 0xe0000;
const AREA_LEN: u64 = 0x20000;
const RAM: u64 = 2 << 20;

/// Maps guest-physical ranges to the host bytes behind them.
#[derive(Clone, Copy)]
struct GuestHandler<'a>(&'a GuestMemory);

impl AcpiHandler for GuestHandler<'_> {
    unsafe fn map_physical_region<T>(&self, addr: usize, size: usize) -> PhysicalMapping<Self, T> {
        let bytes = self
            .0
            .slice(addr as u64, size as u64)
            .unwrap_or_else(|| panic!("the parser read {addr:#x}+{size:#x}, outside guest RAM"));
        let ptr = NonNull::new(bytes.as_ptr().cast_mut().cast::<T>()).expect("non-null");
        // SAFETY: `ptr` points at `size` bytes of guest memory that the `&GuestMemory` in
        // the handler keeps alive and unchanged while the mapping exists; the parser only
        // reads through it, and its table types are packed (alignment 1).
        unsafe { PhysicalMapping::new(addr, ptr, size, size, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

fn build(config: &AcpiConfig) -> (GuestMemory, AcpiLayout) {
    let mut mem = GuestMemory::with_ram(RAM).unwrap();
    let layout = build_tables(&mut mem, AREA, AREA_LEN, config).unwrap();
    (mem, layout)
}

fn sum(mem: &GuestMemory, at: u64, len: u64) -> u8 {
    mem.slice(at, len)
        .unwrap()
        .iter()
        .fold(0u8, |s, &b| s.wrapping_add(b))
}

fn table_len(mem: &GuestMemory, at: u64) -> u64 {
    u64::from(mem.read_u32(at + 4).unwrap())
}

/// Everything an OS checks, for one configuration.
fn check(config: &AcpiConfig) {
    let (mem, layout) = build(config);
    let handler = GuestHandler(&mem);

    // Every table lies inside the area, RSDP first.
    assert!(
        layout.rsdp >= AREA && layout.end <= AREA + AREA_LEN,
        "{layout:?}"
    );
    assert_eq!(layout.rsdp % 16, 0);
    assert_eq!(layout.facs % 64, 0);

    // The BIOS scan finds the RSDP (signature, both checksums, revision 2).
    // SAFETY: the handler maps only guest RAM (it panics on anything else).
    let rsdp = unsafe { Rsdp::search_for_on_bios(handler) }.expect("RSDP found by the BIOS scan");
    assert_eq!(rsdp.physical_start() as u64, layout.rsdp);
    rsdp.validate().expect("RSDP checksums");
    assert_eq!(rsdp.revision(), 2);
    assert_eq!(rsdp.length(), 36);
    assert_eq!(u64::from(rsdp.rsdt_address()), layout.rsdt);
    assert_eq!(rsdp.xsdt_address(), layout.xsdt);
    assert_eq!(rsdp.oem_id(), "OPSVSR");

    // SAFETY: as above.
    let tables = unsafe { AcpiTables::from_rsdp(handler, layout.rsdp as usize) }.expect("tables");
    let signatures: Vec<String> = tables
        .headers()
        .map(|h| h.signature.as_str().to_string())
        .collect();
    assert_eq!(signatures, ["FACP", "APIC"]);

    // Every checksummed table sums to zero over its length, the RSDT too (the parser
    // walked the XSDT).
    for at in [
        layout.rsdt,
        layout.xsdt,
        layout.fadt,
        layout.madt,
        layout.dsdt,
    ] {
        assert_eq!(sum(&mem, at, table_len(&mem, at)), 0, "table at {at:#x}");
    }
    assert_eq!(mem.slice(layout.facs, 4).unwrap(), b"FACS");
    assert_eq!(table_len(&mem, layout.facs), 64);
    // The RSDT holds the same pointers as the XSDT, 32 bits each.
    assert_eq!(table_len(&mem, layout.rsdt), 36 + 8);
    assert_eq!(
        u64::from(mem.read_u32(layout.rsdt + 36).unwrap()),
        layout.fadt
    );
    assert_eq!(
        u64::from(mem.read_u32(layout.rsdt + 40).unwrap()),
        layout.madt
    );

    // MADT: the local APIC address, PCAT_COMPAT, every vCPU's APIC ID with its UID.
    let madt = tables.find_table::<Madt>().expect("a valid MADT");
    let madt = madt.get();
    assert_eq!({ madt.local_apic_address }, 0xfee0_0000);
    assert_eq!({ madt.flags } & 1, 1, "PCAT_COMPAT");
    assert!(madt.supports_8259());
    let mut cpus = Vec::new();
    let mut ioapics = Vec::new();
    let mut overrides = Vec::new();
    let mut lapic_nmi = Vec::new();
    let mut x2apic_nmi = 0;
    for entry in madt.entries() {
        match entry {
            MadtEntry::LocalApic(e) => {
                assert_eq!({ e.flags }, 1, "enabled");
                cpus.push((u32::from(e.processor_id), u32::from(e.apic_id)));
            }
            MadtEntry::LocalX2Apic(e) => {
                assert_eq!({ e.flags }, 1, "enabled");
                cpus.push(({ e.processor_uid }, { e.x2apic_id }));
            }
            MadtEntry::IoApic(e) => ioapics.push((e.io_apic_id, { e.io_apic_address }, {
                e.global_system_interrupt_base
            })),
            MadtEntry::InterruptSourceOverride(e) => {
                overrides.push((e.bus, e.irq, { e.global_system_interrupt }, { e.flags }))
            }
            MadtEntry::LocalApicNmi(e) => lapic_nmi.push((e.processor_id, { e.flags }, e.nmi_line)),
            MadtEntry::X2ApicNmi(e) => {
                assert_eq!(({ e.processor_uid }, e.nmi_line), (u32::MAX, 1));
                x2apic_nmi += 1;
            }
            other => panic!("unexpected MADT entry {other:?}"),
        }
    }
    let expected: Vec<(u32, u32)> = config
        .apic_ids
        .iter()
        .enumerate()
        .map(|(i, &id)| (i as u32, id))
        .collect();
    assert_eq!(cpus, expected);
    assert_eq!(ioapics, [(0, 0xfec0_0000, 0)]);
    assert_eq!(overrides, [(0, 0, 2, 0x0000), (0, 9, 9, 0x000d)]);
    assert_eq!(lapic_nmi, [(0xff, 0, 1)]);
    let wants_x2apic = config.apic_ids.iter().any(|&id| id >= 255) || config.apic_ids.len() > 255;
    assert_eq!(x2apic_nmi, usize::from(wants_x2apic));

    // FADT: the register blocks, SCI, reset register, flags and pointers.
    let fadt = tables.find_table::<Fadt>().expect("a valid FADT");
    assert_eq!(fadt.header().revision, 6);
    assert_eq!({ fadt.header().length }, 276);
    assert_eq!({ fadt.sci_interrupt }, 9);
    assert_eq!({ fadt.smi_cmd_port }, 0);
    assert_eq!(fadt.facs_address().unwrap() as u64, layout.facs);
    assert_eq!(fadt.dsdt_address().unwrap() as u64, layout.dsdt);
    let io = |g: acpi::address::GenericAddress, port: u64, bits: u8| {
        assert!(matches!(g.address_space, AddressSpace::SystemIo));
        assert_eq!((g.address, g.bit_width), (port, bits));
    };
    io(fadt.pm1a_event_block().unwrap(), 0x600, 32);
    io(fadt.pm1a_control_block().unwrap(), 0x604, 16);
    io(fadt.pm_timer_block().unwrap().expect("PM timer"), 0x608, 32);
    io(fadt.gpe0_block().unwrap().expect("GPE0"), 0x620, 32);
    io(fadt.reset_register().unwrap(), 0xcf9, 8);
    assert!(fadt.pm1b_event_block().unwrap().is_none());
    assert!(fadt.pm1b_control_block().unwrap().is_none());
    assert!(fadt.pm2_control_block().unwrap().is_none());
    assert!(fadt.gpe1_block().unwrap().is_none());
    assert_eq!(fadt.reset_value, 0x06);
    let flags = fadt.flags;
    assert_eq!(flags.pm_timer_is_32_bit(), config.pm_timer_32bit);
    assert!(flags.supports_system_reset_via_fadt());
    assert!(flags.supports_equivalent_to_wbinvd());
    assert!(flags.all_procs_support_c1_power_state());
    assert!(flags.power_button_is_control_method());
    assert!(flags.sleep_button_is_control_method());
    assert!(!flags.system_is_hw_reduced_acpi());
    let arch = fadt.iapc_boot_arch;
    assert!(arch.legacy_devices_are_accessible());
    assert!(arch.motherboard_implements_8042());
    assert!(arch.dont_probe_vga());
    assert!(!arch.dont_enable_msi());
    // The 32-bit fields agree with the 64-bit ones.
    let raw = mem.slice(layout.fadt, 276).unwrap();
    let le32 = |o: usize| u64::from(u32::from_le_bytes(raw[o..o + 4].try_into().unwrap()));
    assert_eq!(le32(36), layout.facs, "FIRMWARE_CTRL");
    assert_eq!(le32(40), layout.dsdt, "DSDT");
    assert_eq!(
        [le32(56), le32(64), le32(76), le32(80)],
        [0x600, 0x604, 0x608, 0x620]
    );
    assert_eq!(&raw[88..94], &[4, 2, 0, 4, 4, 0], "block lengths");
    assert_eq!(raw[108], 0x32, "CENTURY");

    // The DSDT the FADT points at.
    let dsdt = tables.dsdt().expect("DSDT");
    assert_eq!(dsdt.address as u64, layout.dsdt + 36);
    assert_eq!(u64::from(dsdt.length) + 36, table_len(&mem, layout.dsdt));
    assert_eq!(mem.slice(layout.dsdt, 4).unwrap(), b"DSDT");
    assert_eq!(mem.read_u8(layout.dsdt + 8).unwrap(), 2, "64-bit integers");
}

#[test]
fn one_vcpu_parses() {
    check(&AcpiConfig::new(1));
}

#[test]
fn four_vcpus_parse_with_a_32_bit_pm_timer() {
    let mut config = AcpiConfig::new(4);
    config.pm_timer_32bit = true;
    check(&config);
}

#[test]
fn sixty_four_vcpus_parse() {
    check(&AcpiConfig::new(64));
}

#[test]
fn apic_ids_past_a_byte_get_x2apic_entries() {
    let mut config = AcpiConfig::new(4);
    config.apic_ids = vec![0, 254, 255, 0x1_0000];
    check(&config);
}

#[test]
fn more_than_255_vcpus_get_x2apic_entries_for_uids_past_a_byte() {
    let mut config = AcpiConfig::new(300);
    config.apic_ids = (0..300).map(|i| i * 2).collect();
    check(&config);
}

#[test]
fn tables_that_do_not_fit_are_refused_and_nothing_is_written() {
    let mut mem = GuestMemory::with_ram(RAM).unwrap();
    let config = AcpiConfig::new(64);
    let err = build_tables(&mut mem, AREA, 0x400, &config).unwrap_err();
    match err {
        AcpiError::AreaTooSmall { needed, available } => {
            assert_eq!(available, 0x400);
            assert!(needed > 0x400);
            // The same tables fit exactly in what the error asked for.
            let layout = build_tables(&mut mem, AREA, needed, &config).unwrap();
            assert_eq!(layout.end, AREA + needed);
        }
        other => panic!("expected AreaTooSmall, got {other}"),
    }
    let mut fresh = GuestMemory::with_ram(RAM).unwrap();
    assert!(build_tables(&mut fresh, AREA, 0x400, &config).is_err());
    assert!(fresh.slice(AREA, AREA_LEN).unwrap().iter().all(|&b| b == 0));
    // 4096 vCPUs do not fit in the PC's 128 KiB.
    let err = build_tables(&mut fresh, AREA, AREA_LEN, &AcpiConfig::new(4096)).unwrap_err();
    assert!(matches!(err, AcpiError::AreaTooSmall { .. }), "{err}");
}

/// The tables of `config` as files named by signature in a fresh directory.
fn dump_tables(config: &AcpiConfig, name: &str) -> std::path::PathBuf {
    let (mem, layout) = build(config);
    let dir = std::env::temp_dir().join(format!("opsvisor-acpi-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (sig, at) in [
        ("dsdt", layout.dsdt),
        ("facp", layout.fadt),
        ("apic", layout.madt),
        ("rsdt", layout.rsdt),
        ("xsdt", layout.xsdt),
        ("facs", layout.facs),
    ] {
        let bytes = mem.slice(at, table_len(&mem, at)).unwrap();
        std::fs::write(dir.join(format!("{sig}.dat")), bytes).unwrap();
    }
    std::fs::write(dir.join("rsdp.dat"), mem.slice(layout.rsdp, 36).unwrap()).unwrap();
    dir
}

fn run(dir: &std::path::Path, program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("{program}: {e} (bash scripts/setup.sh --test-machines installs it)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{program} {args:?} failed:\n{text}");
    text
}

/// ACPICA's disassembler (iasl, the reference ASL compiler) reads every table without
/// a complaint, and its AML interpreter (acpiexec) loads the DSDT and evaluates `\_S5`.
#[test]
#[ignore = "needs ACPICA's iasl and acpiexec (bash scripts/setup.sh --test-machines)"]
fn acpica_disassembles_every_table_and_evaluates_s5() {
    let mut config = AcpiConfig::new(4);
    config.s5_sleep_type = 3;
    config.pci_mmio64 = Some((1 << 36, (1 << 37) - 1));
    let dir = dump_tables(&config, "acpica");
    for sig in ["dsdt", "facp", "apic", "rsdt", "xsdt", "facs"] {
        let log = run(&dir, "iasl", &["-d", &format!("{sig}.dat")]);
        let dsl = std::fs::read_to_string(dir.join(format!("{sig}.dsl"))).unwrap();
        for bad in ["Error", "Warning", "incorrect", "Invalid", "Unknown"] {
            assert!(!log.contains(bad), "iasl on {sig}: {log}");
            assert!(
                !dsl.contains(bad),
                "iasl's {sig}.dsl mentions {bad:?}:\n{dsl}"
            );
        }
        println!("{dsl}");
    }
    let dsl = std::fs::read_to_string(dir.join("dsdt.dsl")).unwrap();
    for needle in [
        "Name (_S5, Package (0x04)",
        "Device (PCI0)",
        "Name (_HID, EisaId (\"PNP0A03\")",
        "Name (_HID, EisaId (\"PNP0501\")",
        "Name (_HID, EisaId (\"PNP0B00\")",
        "Name (_HID, EisaId (\"PNP0303\")",
        "Name (_HID, \"QEMU0002\")",
        "Name (_HID, \"ACPI0007\"",
        "WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode,",
        "0xFEBFFFFF",
        "QWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,",
        "IRQNoFlags ()",
    ] {
        assert!(dsl.contains(needle), "DSDT lacks {needle:?}:\n{dsl}");
    }
    // acpiexec (ACPICA's interpreter, the code Linux runs) loads our FADT, DSDT and
    // MADT, sets up the GPE0 block from the FADT, evaluates \_S5 and COM1._STA, and
    // derives the S5 sleep types it would write to PM1a_CNT: both the configured 3.
    let log = run(
        &dir,
        "acpiexec",
        &[
            "-b",
            "evaluate \\_S5; evaluate \\_SB.PCI0.COM1._STA; sleep 5",
            "facp.dat",
            "dsdt.dat",
            "apic.dat",
        ],
    );
    println!("{log}");
    for needle in [
        "(v06 OPSVSR OPSVISOR",
        "1 ACPI AML tables successfully acquired and loaded",
        "Initialized GPE 00 to 0F [_GPE] 2 regs on interrupt 0x9 (SCI)",
        "[Package] Contains 4 Elements:\n    [Integer] = 0000000000000003\n    \
         [Integer] = 0000000000000003\n    [Integer] = 0000000000000000\n",
        "[Integer] = 000000000000000F",
        "Register values for sleep state S5: Sleep-A: 03, Sleep-B: 03",
    ] {
        assert!(
            log.contains(needle),
            "acpiexec output lacks {needle:?}:\n{log}"
        );
    }
}

/// Linux itself reads opsvisor's tables: Debian's cloud kernel (scripts/linux-guest.sh)
/// boots on QEMU's `pc` machine told to use them instead of SeaBIOS's (`acpi_rsdp=`;
/// QEMU's generic loader puts them in RAM that `memmap=` keeps from Linux). QEMU's PIIX4
/// has its PM registers at the same ports, its GPE0 at 0xAFE0 and powers off on
/// SLP_TYP 0, so the tables are configured that way. The log must show the tables, the
/// MADT's CPUs and overrides, the PM timer, the PCI windows from `_CRS`, the serial
/// port, keyboard controller and RTC bound through their ACPI nodes, and a power-off
/// through `\_S5`. About 5 s under TCG.
#[test]
#[ignore = "needs QEMU and the Linux guest (bash scripts/setup.sh --test-machines --linux-guest)"]
fn linux_on_qemu_boots_with_these_tables_and_powers_off_through_s5() {
    // Where scripts/linux-guest.sh puts the guest, or OPSVISOR_LINUX_GUEST.
    let guest = std::env::var_os("OPSVISOR_LINUX_GUEST").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/linux-guest"),
        std::path::PathBuf::from,
    );
    let base = 0x700_0000u64;
    let mut mem = GuestMemory::with_ram(base + AREA_LEN).unwrap();
    let mut config = AcpiConfig::pc(4, 256 << 20);
    config.s5_sleep_type = 0;
    config.gpe0_port = 0xafe0;
    let layout = build_tables(&mut mem, base, AREA_LEN, &config).unwrap();
    let dir = std::env::temp_dir().join(format!("opsvisor-acpi-linux-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let blob = dir.join("tables.bin");
    std::fs::write(&blob, mem.slice(base, layout.end - base).unwrap()).unwrap();
    let append = format!(
        "console=ttyS0 panic=-1 acpi_rsdp={:#x} memmap=64K${base:#x}",
        layout.rsdp
    );
    let loader = format!("loader,file={},addr={base:#x},force-raw=on", blob.display());
    let kernel = guest.join("vmlinuz");
    let initrd = guest.join("initrd.gz");
    let log = run(
        &dir,
        "timeout",
        &[
            "300",
            "qemu-system-x86_64",
            "-M",
            "pc",
            "-m",
            "256",
            "-smp",
            "4",
            "-nographic",
            "-no-reboot",
            "-kernel",
            kernel.to_str().unwrap(),
            "-initrd",
            initrd.to_str().unwrap(),
            "-append",
            &append,
            "-device",
            &loader,
        ],
    );
    for needle in [
        "ACPI: RSDP 0x0000000007000000 000024 (v02 OPSVSR)",
        "ACPI: FACP 0x",
        "ACPI: APIC 0x",
        "ACPI: PM-Timer IO Port: 0x608",
        "ACPI: LAPIC_NMI (acpi_id[0xff] dfl dfl lint[0x1])",
        "IOAPIC[0]: apic_id 0, version 32, address 0xfec00000, GSI 0-23",
        "ACPI: INT_SRC_OVR (bus 0 bus_irq 0 global_irq 2 dfl dfl)",
        "ACPI: INT_SRC_OVR (bus 0 bus_irq 9 global_irq 9 high level)",
        "smp: Brought up 1 node, 4 CPUs",
        "ACPI: 1 ACPI AML tables successfully acquired and loaded",
        "ACPI: PM: (supports S0 S5)",
        "ACPI: PCI Root Bridge [PCI0] (domain 0000 [bus 00-ff])",
        "pci_bus 0000:00: root bus resource [io  0x0000-0x0cf7 window]",
        "pci_bus 0000:00: root bus resource [mem 0x10000000-0xfebfffff window]",
        "ttyS0 at I/O 0x3f8 (irq = 4, base_baud = 115200) is a 16550A",
        "i8042: PNP: PS/2 Controller [PNP0303:KBD] at 0x60,0x64 irq 1",
        "rtc_cmos 00:01: registered as rtc0",
        "ACPI: PM: Preparing to enter system sleep state S5",
        "reboot: Power down",
    ] {
        assert!(
            log.contains(needle),
            "the boot log lacks {needle:?}:\n{log}"
        );
    }
    for bad in ["ACPI Error", "ACPI BIOS Error", "ACPI Warning", "FW_BUG"] {
        assert!(!log.contains(bad), "the boot log has {bad:?}:\n{log}");
    }
}
