//! Kernel format detection in `load_kernel`, the options each format takes, the memory
//! map every format reports (RAM above 4 GiB included), and the real Linux guest from
//! `scripts/linux-guest.sh` when it has been built.

use opsvisor_backends::{guest_memory, load_kernel, BuildError, MachineOptions};
use opsvisor_core::loader::elf;
use opsvisor_core::loader::pvh::pvh_entry;
use opsvisor_core::loader::BootState;
use opsvisor_core::mmu::memory::GuestMemory;
use opsvisor_core::ops::Gpr;
use std::path::PathBuf;

fn put(f: &mut [u8], at: usize, v: u64, width: usize) {
    f[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
}

/// A bzImage: protocol 2.15, one setup sector, 0x1000 bytes of kernel, relocatable with
/// 2 MiB alignment, pref_address 16 MiB, init_size 1 MiB, the 64-bit entry.
fn bzimage() -> Vec<u8> {
    let mut f = vec![0u8; 0x400];
    f[0x1f1] = 1;
    put(&mut f, 0x1f4, 0x100, 4);
    put(&mut f, 0x1fe, 0xaa55, 2);
    f[0x200] = 0xeb;
    f[0x201] = 0x6a;
    f[0x202..0x206].copy_from_slice(b"HdrS");
    put(&mut f, 0x206, 0x020f, 2);
    f[0x211] = 1;
    put(&mut f, 0x22c, 0x7fff_ffff, 4);
    put(&mut f, 0x230, 0x20_0000, 4);
    f[0x234] = 1;
    put(&mut f, 0x236, 1, 2);
    put(&mut f, 0x238, 2047, 4);
    put(&mut f, 0x258, 0x100_0000, 8);
    put(&mut f, 0x260, 0x10_0000, 4);
    f.extend(std::iter::repeat_n(0x90, 0x1000));
    f
}

/// A multiboot kernel in the a.out-kludge form, loaded at 1 MiB.
fn multiboot() -> Vec<u8> {
    let mut f = vec![0x90u8; 0x200];
    let flags: u32 = 0x1_0003;
    let fields = [
        0x1BAD_B002u32,
        flags,
        0u32.wrapping_sub(0x1BAD_B002).wrapping_sub(flags),
        0x10_0000,
        0x10_0000,
        0,
        0,
        0x10_0040,
    ];
    for (i, v) in fields.iter().enumerate() {
        put(&mut f, 4 * i, u64::from(*v), 4);
    }
    f
}

/// An ELF64 kernel with one segment of 0x100 bytes at 16 MiB and, with `entry`, a PT_NOTE
/// segment holding the Xen PHYS32_ENTRY note.
fn pvh_elf(entry: Option<u32>) -> Vec<u8> {
    let mut f = vec![0u8; 0x200];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = 2;
    f[5] = 1;
    f[6] = 1;
    put(&mut f, 16, 2, 2);
    put(&mut f, 18, 62, 2);
    put(&mut f, 20, 1, 4);
    put(&mut f, 24, 0x100_0000, 8);
    put(&mut f, 32, 64, 8);
    put(&mut f, 54, 56, 2);
    put(&mut f, 56, if entry.is_some() { 2 } else { 1 }, 2);
    // PT_LOAD: file 0x100..0x200 at 16 MiB.
    put(&mut f, 64, 1, 4);
    put(&mut f, 64 + 8, 0x100, 8);
    put(&mut f, 64 + 16, 0x100_0000, 8);
    put(&mut f, 64 + 24, 0x100_0000, 8);
    put(&mut f, 64 + 32, 0x100, 8);
    put(&mut f, 64 + 40, 0x100, 8);
    if let Some(entry) = entry {
        // The note after the segment's bytes: namesz 4 ("Xen\0"), descsz 4, type 18.
        let mut note = Vec::new();
        for v in [4u32, 4, 18] {
            note.extend_from_slice(&v.to_le_bytes());
        }
        note.extend_from_slice(b"Xen\0");
        note.extend_from_slice(&entry.to_le_bytes());
        let at = f.len() as u64;
        let len = note.len() as u64;
        f.extend_from_slice(&note);
        put(&mut f, 120, 4, 4);
        put(&mut f, 120 + 8, at, 8);
        put(&mut f, 120 + 32, len, 8);
        put(&mut f, 120 + 40, len, 8);
        put(&mut f, 120 + 48, 4, 8);
    }
    f
}

/// The RSDP address the tests hand the loaders.
const RSDP: u64 = 0xf_0000;

fn load(kernel: &[u8], opts: &MachineOptions) -> Result<(GuestMemory, BootState), BuildError> {
    let mut mem = guest_memory(opts.memory)?;
    let state = load_kernel(&mut mem, kernel, opts, Some(RSDP))?.state;
    Ok((mem, state))
}

fn error(kernel: &[u8], opts: &MachineOptions) -> String {
    match load(kernel, opts) {
        Err(e) => e.to_string(),
        Ok((_, s)) => panic!("loaded: {s:?}"),
    }
}

fn gpr(state: &BootState, r: Gpr) -> u64 {
    state.regs.gpr[r as usize]
}

#[test]
fn formats_are_detected() {
    let opts = MachineOptions {
        memory: 64 << 20,
        ..MachineOptions::default()
    };
    let (_, st) = load(&multiboot(), &opts).unwrap();
    assert_eq!((st.regs.rip, gpr(&st, Gpr::Rax)), (0x10_0040, 0x2BAD_B002));
    let (_, st) = load(&bzimage(), &opts).unwrap();
    assert_eq!((st.regs.rip, gpr(&st, Gpr::Rsi)), (0x100_0200, 0x8000));
    let (_, st) = load(&pvh_elf(Some(0x100_0010)), &opts).unwrap();
    assert_eq!((st.regs.rip, gpr(&st, Gpr::Rbx)), (0x100_0010, 0x8000));
    // A multiboot header wins over the bzImage signature, as in QEMU.
    let mut both = bzimage();
    both[..0x20].copy_from_slice(&multiboot()[..0x20]);
    let (_, st) = load(&both, &opts).unwrap();
    assert_eq!(gpr(&st, Gpr::Rax), 0x2BAD_B002);
}

#[test]
fn unknown_formats_name_what_was_checked() {
    let opts = MachineOptions::default();
    assert_eq!(
        error(b"just some bytes", &opts),
        "unknown kernel format: not a multiboot kernel, a Linux bzImage or an ELF kernel with a PVH entry note; pass --flat for a flat binary"
    );
    let e = error(&pvh_elf(None), &opts);
    assert!(
        e.contains("ELF kernel without a multiboot header or a PVH entry note"),
        "{e}"
    );
    // A broken bzImage is refused by its parser, naming the field.
    let mut bad = bzimage();
    put(&mut bad, 0x206, 0x0204, 2);
    assert!(error(&bad, &opts).contains("version 2.04"));
    // With --flat, unknown bytes are a flat binary.
    let flat = MachineOptions {
        flat: true,
        ..MachineOptions::default()
    };
    assert!(load(b"\xf4", &flat).is_ok());
}

#[test]
fn linux_and_multiboot_options_are_not_mixed() {
    let with_module = MachineOptions {
        modules: vec![("m".into(), vec![1])],
        ..MachineOptions::default()
    };
    for kernel in [bzimage(), pvh_elf(Some(0x100_0000))] {
        let e = error(&kernel, &with_module);
        assert!(e.contains("--module is for multiboot kernels"), "{e}");
        assert!(e.contains("--initrd"), "{e}");
    }
    let with_initrd = MachineOptions {
        initrd: Some(vec![1, 2, 3]),
        ..MachineOptions::default()
    };
    let e = error(&multiboot(), &with_initrd);
    assert!(
        e.contains("--initrd is for Linux kernels") && e.contains("--module"),
        "{e}"
    );
    let flat = MachineOptions {
        flat: true,
        ..with_initrd.clone()
    };
    assert!(error(b"\xf4", &flat).contains("--initrd"));
    // --append is the Linux command line, and the initrd reaches the kernel.
    let linux = MachineOptions {
        cmdline: "console=ttyS0".into(),
        ..with_initrd
    };
    let (mem, st) = load(&bzimage(), &linux).unwrap();
    let zero_page = gpr(&st, Gpr::Rsi);
    let cmdline = u64::from(mem.read_u32(zero_page + 0x228).unwrap());
    let mut text = [0u8; 14];
    mem.read(cmdline, &mut text).unwrap();
    assert_eq!(&text, b"console=ttyS0\0");
    assert_eq!(mem.read_u32(zero_page + 0x21c).unwrap(), 3);
}

/// (start, end, type) of a multiboot memory map.
fn multiboot_map(mem: &GuestMemory, info: u64) -> Vec<(u64, u64, u32)> {
    let len = u64::from(mem.read_u32(info + 44).unwrap());
    let mut at = u64::from(mem.read_u32(info + 48).unwrap());
    let end = at + len;
    let mut out = Vec::new();
    while at < end {
        let (base, size) = (
            mem.read_u64(at + 4).unwrap(),
            mem.read_u64(at + 12).unwrap(),
        );
        out.push((base, base + size, mem.read_u32(at + 20).unwrap()));
        at += u64::from(mem.read_u32(at).unwrap()) + 4;
    }
    out
}

/// (start, end, type) of a zero page's e820 table.
fn zero_page_map(mem: &GuestMemory, zp: u64) -> Vec<(u64, u64, u32)> {
    let n = u64::from(mem.read_u8(zp + 0x1e8).unwrap());
    (0..n)
        .map(|i| {
            let at = zp + 0x2d0 + 20 * i;
            let (base, size) = (mem.read_u64(at).unwrap(), mem.read_u64(at + 8).unwrap());
            (base, base + size, mem.read_u32(at + 16).unwrap())
        })
        .collect()
}

/// (start, end, type) of a PVH start_info's memory map.
fn pvh_map(mem: &GuestMemory, start_info: u64) -> Vec<(u64, u64, u32)> {
    let table = mem.read_u64(start_info + 40).unwrap();
    let n = u64::from(mem.read_u32(start_info + 48).unwrap());
    (0..n)
        .map(|i| {
            let at = table + 24 * i;
            let (base, size) = (mem.read_u64(at).unwrap(), mem.read_u64(at + 8).unwrap());
            (base, base + size, mem.read_u32(at + 16).unwrap())
        })
        .collect()
}

#[test]
fn every_map_reports_ram_above_4g() {
    // 6 GiB: 3 GiB below the MMIO hole, 3 GiB from 4 GiB (host memory is lazily
    // allocated, so this costs little).
    let opts = MachineOptions {
        memory: 6 << 30,
        ..MachineOptions::default()
    };
    let (mem, st) = load(&multiboot(), &opts).unwrap();
    let mb = multiboot_map(&mem, gpr(&st, Gpr::Rbx));
    let (mem, st) = load(&bzimage(), &opts).unwrap();
    let e820 = zero_page_map(&mem, gpr(&st, Gpr::Rsi));
    let (mem, st) = load(&pvh_elf(Some(0x100_0000)), &opts).unwrap();
    let pvh = pvh_map(&mem, gpr(&st, Gpr::Rbx));
    let tail = [
        (0x9_fc00, 0x10_0000, 2),
        (0x10_0000, 0xc000_0000, 1),
        (0x1_0000_0000, 0x1_c000_0000, 1),
    ];
    for (name, map) in [("multiboot", &mb), ("e820", &e820), ("pvh", &pvh)] {
        // The same map from the EBDA up; below it, each loader's own reservations.
        assert!(map.ends_with(&tail), "{name}: {map:x?}");
        assert_eq!(map[0].0, 0, "{name}");
    }
    assert_eq!(mb[0], (0, 0x9_fc00, 1));
    // The loaders reserve their GDT and page tables and nothing else.
    assert_eq!(e820[1], (0x1000, 0x8000, 2));
    assert_eq!(pvh[1], (0x1000, 0x2000, 2));
}

/// The directory `scripts/linux-guest.sh` writes to (or `OPSVISOR_LINUX_GUEST`), if the
/// guest is there.
fn linux_guest() -> Option<PathBuf> {
    let dir = std::env::var_os("OPSVISOR_LINUX_GUEST")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/linux-guest"));
    let present = ["vmlinuz", "vmlinux", "initrd.gz"]
        .iter()
        .all(|f| dir.join(f).is_file());
    if !present {
        eprintln!(
            "skipping: no Linux guest in {} (build it with scripts/linux-guest.sh, or point OPSVISOR_LINUX_GUEST at one)",
            dir.display()
        );
        return None;
    }
    Some(dir)
}

#[test]
fn real_linux_kernel_loads() {
    let Some(dir) = linux_guest() else {
        return;
    };
    let vmlinuz = std::fs::read(dir.join("vmlinuz")).unwrap();
    let vmlinux = std::fs::read(dir.join("vmlinux")).unwrap();
    let initrd = std::fs::read(dir.join("initrd.gz")).unwrap();
    for memory in [256 << 20, 6 << 30] {
        let opts = MachineOptions {
            memory,
            cmdline: "console=ttyS0".into(),
            initrd: Some(initrd.clone()),
            ..MachineOptions::default()
        };

        // The bzImage: at its pref_address, entered at +0x200 in 64-bit mode.
        let (mem, st) = load(&vmlinuz, &opts).unwrap();
        let zp = gpr(&st, Gpr::Rsi);
        let pref = mem.read_u64(zp + 0x258).unwrap();
        assert_eq!(st.regs.rip, pref + 0x200);
        assert_eq!(u64::from(mem.read_u32(zp + 0x214).unwrap()), pref);
        let setup = (usize::from(vmlinuz[0x1f1]) + 1) * 512;
        let mut kernel = vec![0u8; vmlinuz.len() - setup];
        mem.read(pref, &mut kernel).unwrap();
        assert!(kernel == vmlinuz[setup..], "the protected-mode kernel");
        let init_size = u64::from(mem.read_u32(zp + 0x260).unwrap());
        let ramdisk = u64::from(mem.read_u32(zp + 0x218).unwrap());
        let ramdisk_size = u64::from(mem.read_u32(zp + 0x21c).unwrap());
        assert_eq!(ramdisk_size, initrd.len() as u64);
        assert_eq!(ramdisk % 4096, 0);
        assert!(
            ramdisk >= pref + init_size || ramdisk + ramdisk_size <= pref,
            "the initrd is clear of the kernel"
        );
        let initrd_addr_max = u64::from(mem.read_u32(zp + 0x22c).unwrap());
        assert!(ramdisk + ramdisk_size - 1 <= initrd_addr_max);
        let mut got = vec![0u8; initrd.len()];
        mem.read(ramdisk, &mut got).unwrap();
        assert!(got == initrd, "the initrd");
        assert_eq!(mem.read_u64(zp + 0x70).unwrap(), RSDP, "acpi_rsdp_addr");
        let e820 = zero_page_map(&mem, zp);
        if memory > 3 << 30 {
            assert_eq!(*e820.last().unwrap(), (1 << 32, 7 << 30, 1));
        }

        // The ELF vmlinux through its PVH note.
        let (mem, st) = load(&vmlinux, &opts).unwrap();
        let parsed = elf::parse(&vmlinux).unwrap();
        let entry = pvh_entry(&parsed).unwrap().unwrap();
        assert_eq!(st.regs.rip, u64::from(entry));
        let si = gpr(&st, Gpr::Rbx);
        assert_eq!(mem.read_u32(si).unwrap(), 0x336e_c578);
        assert_eq!(mem.read_u32(si + 12).unwrap(), 1, "one module: the initrd");
        let module = mem.read_u64(si + 16).unwrap();
        let (at, size) = (
            mem.read_u64(module).unwrap(),
            mem.read_u64(module + 8).unwrap(),
        );
        assert_eq!(size, initrd.len() as u64);
        let mut got = vec![0u8; initrd.len()];
        mem.read(at, &mut got).unwrap();
        assert!(got == initrd, "the PVH initrd");
        assert!(
            parsed
                .segments()
                .iter()
                .all(|s| at >= s.paddr + s.memsz || at + size <= s.paddr),
            "the PVH initrd is clear of the segments"
        );
        if memory > 3 << 30 {
            assert_eq!(*pvh_map(&mem, si).last().unwrap(), (1 << 32, 7 << 30, 1));
        }
    }
}
