//! The PVH entry of ELF kernels (Xen's `docs/misc/pvh.pandoc`, used by QEMU's `-kernel`
//! for ELF images and by cloud-hypervisor and firecracker for Linux `vmlinux`).
//!
//! The kernel is an ELF executable ([`super::elf`] parses and loads its `PT_LOAD`
//! segments at their physical addresses) carrying the Xen note
//! `XEN_ELFNOTE_PHYS32_ENTRY` (owner "Xen", type 18): the 32-bit physical entry point,
//! as a 4- or 8-byte descriptor. The note is looked for in the `PT_NOTE` segments, then,
//! if none carries it, in the `SHT_NOTE` sections. The entry must lie in the file bytes
//! of a loaded segment, and every segment in usable RAM of the memory map, clear of the
//! boot area.
//!
//! The kernel receives `struct hvm_start_info` (Xen's
//! `xen/include/public/arch-x86/hvm/start_info.h`), version 1, at [`BOOT_PARAMS_ADDR`]:
//! magic 0x336EC578, the command line at [`CMDLINE_ADDR`], the initrd as module 0 of a
//! `hvm_modlist_entry` array (placed as high as possible in low RAM, clear of the
//! kernel, as the bzImage loader does), the caller's RSDP address, and the memory map
//! ([`super::e820`], the GDT page reserved) as `hvm_memmap_table_entry` records:
//!
//! | offset from [`BOOT_PARAMS_ADDR`] | what |
//! |---|---|
//! | 0x00 | `hvm_start_info` (56 bytes) |
//! | 0x40 | `hvm_modlist_entry` for the initrd (32 bytes) |
//! | 0x80 | the memory map, 24 bytes an entry, up to the command line |
//!
//! Entry, as the PVH ABI prescribes: 32-bit protected mode with paging off at the note's
//! entry point, CS a flat 32-bit execute/read segment ([`BOOT_CS`] in a GDT at
//! [`BOOT_GDT_ADDR`]), DS, ES, SS, FS, GS flat read/write data ([`BOOT_DS`]), TR a busy
//! 32-bit TSS with base 0 and limit 0x67, CR4 = 0, EFER = 0, interrupts off, EBX = the
//! `hvm_start_info` address.

use super::e820::MemoryMap;
use super::elf::{self, Elf, ElfNote, XEN_ELFNOTE_PHYS32_ENTRY};
use super::linux::{
    self, check_cmdline, place_initrd, put, LinuxBoot, LinuxLayout, BOOT_CS, BOOT_DS,
    BOOT_GDT_ADDR, BOOT_PARAMS_ADDR, CMDLINE_ADDR, PAGE,
};
use super::{BootState, LoadError};
use crate::mmu::memory::GuestMemory;
use crate::ops::{DescriptorTable, Gpr, SegReg};
use alloc::format;
use alloc::string::String;
use alloc::vec;
use core::ops::Range;

/// `hvm_start_info.magic`.
pub const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
/// The `hvm_start_info` version written: 1, the first with the memory map.
pub const START_INFO_VERSION: u32 = 1;
/// The owner name of Xen's ELF notes.
pub const XEN_NOTE_NAME: &[u8] = b"Xen";

const START_INFO_SIZE: usize = 56;
const MODLIST_OFFSET: usize = 0x40;
const MODLIST_ENTRY_SIZE: usize = 32;
const MEMMAP_OFFSET: usize = 0x80;
const MEMMAP_ENTRY_SIZE: usize = 24;
/// The block from [`BOOT_PARAMS_ADDR`] to the command line.
const BLOCK_SIZE: usize = (CMDLINE_ADDR - BOOT_PARAMS_ADDR) as usize;
// The three structures do not overlap.
const _: () = assert!(START_INFO_SIZE <= MODLIST_OFFSET);
const _: () = assert!(MODLIST_OFFSET + MODLIST_ENTRY_SIZE <= MEMMAP_OFFSET);
/// How many memory-map entries fit between the start of the memory map and the command
/// line.
pub const MAX_MEMMAP_ENTRIES: usize = (BLOCK_SIZE - MEMMAP_OFFSET) / MEMMAP_ENTRY_SIZE;

/// The value of a `XEN_ELFNOTE_PHYS32_ENTRY` note: a 4- or 8-byte little-endian address
/// below 4 GiB.
fn entry_from_note(note: &ElfNote<'_>) -> Result<u32, LoadError> {
    let value = match note.desc.len() {
        4 => u64::from(u32::from_le_bytes([
            note.desc[0],
            note.desc[1],
            note.desc[2],
            note.desc[3],
        ])),
        8 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(note.desc);
            u64::from_le_bytes(b)
        }
        n => {
            return Err(LoadError::Malformed(format!(
                "the PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY) has a {n}-byte descriptor; expected 4 or 8"
            )))
        }
    };
    u32::try_from(value).map_err(|_| {
        LoadError::Malformed(format!(
            "the PVH entry note gives {value:#x}, above 4 GiB, for a 32-bit entry point"
        ))
    })
}

/// The PVH entry point of a parsed ELF: from its `PT_NOTE` segments, else its `SHT_NOTE`
/// sections; `None` without the note.
pub fn pvh_entry(elf: &Elf<'_>) -> Result<Option<u32>, LoadError> {
    if let Some(note) = elf.find_note(XEN_NOTE_NAME, XEN_ELFNOTE_PHYS32_ENTRY) {
        return entry_from_note(note).map(Some);
    }
    elf.section_notes()?
        .iter()
        .find(|n| n.name == XEN_NOTE_NAME && n.note_type == XEN_ELFNOTE_PHYS32_ENTRY)
        .map(entry_from_note)
        .transpose()
}

/// Whether `image` is an ELF executable with a PVH entry note (it may still fail to
/// load).
pub fn is_pvh(image: &[u8]) -> bool {
    elf::parse(image).is_ok_and(|e| matches!(pvh_entry(&e), Ok(Some(_))))
}

/// Load an ELF kernel through its PVH entry with its command line and initrd, build
/// `hvm_start_info`, and return the entry state (see the module documentation).
pub fn load_pvh(
    mem: &mut GuestMemory,
    image: &[u8],
    boot: &LinuxBoot<'_>,
) -> Result<BootState, LoadError> {
    load_pvh_with_layout(mem, image, boot).map(|(state, _)| state)
}

/// [`load_pvh`], also telling where everything went.
pub fn load_pvh_with_layout(
    mem: &mut GuestMemory,
    image: &[u8],
    boot: &LinuxBoot<'_>,
) -> Result<(BootState, LinuxLayout), LoadError> {
    let elf = elf::parse(image)?;
    let entry = pvh_entry(&elf)?.ok_or_else(|| {
        LoadError::UnknownFormat(String::from(
            "no PVH entry note (owner \"Xen\", type 18, XEN_ELFNOTE_PHYS32_ENTRY) in the ELF's note segments or sections",
        ))
    })?;
    let in_code = elf
        .segments()
        .iter()
        .any(|s| u64::from(entry) >= s.paddr && u64::from(entry) - s.paddr < s.filesz);
    if !in_code {
        return Err(LoadError::Malformed(format!(
            "the PVH entry point {entry:#x} lies outside the file bytes of every loaded segment (physical {})",
            segment_list(&elf)
        )));
    }

    let mut map = MemoryMap::new(mem);
    map.reserve(BOOT_GDT_ADDR..BOOT_GDT_ADDR + PAGE);
    check_cmdline(boot.cmdline, None)?;
    let cmdline_end = CMDLINE_ADDR + boot.cmdline.len() as u64 + 1;
    let boot_area = BOOT_GDT_ADDR..cmdline_end;
    if !mem.is_ram_range(boot_area.start, boot_area.end - boot_area.start) {
        return Err(LoadError::DoesNotFit(format!(
            "the boot area {:#x}..{:#x} (GDT, start_info, command line) is not guest RAM",
            boot_area.start, boot_area.end
        )));
    }
    for (i, s) in elf.segments().iter().enumerate() {
        let r = s.phys_range();
        if r.is_empty() {
            continue;
        }
        if r.start < boot_area.end && boot_area.start < r.end {
            return Err(LoadError::DoesNotFit(format!(
                "ELF segment {i} at physical {:#x}..{:#x} overlaps the boot area {:#x}..{:#x} (GDT, start_info, command line)",
                r.start, r.end, boot_area.start, boot_area.end
            )));
        }
        if !map.is_usable(r.clone()) {
            return Err(LoadError::DoesNotFit(format!(
                "ELF segment {i} at physical {:#x}..{:#x} is not inside usable guest RAM (the memory map's usable ranges: {})",
                r.start,
                r.end,
                usable_list(&map)
            )));
        }
    }
    let kernel = elf.phys_extent();
    let initrd = match boot.initrd {
        Some(data) => {
            let low_end = map.low_ram_end().ok_or_else(|| {
                LoadError::DoesNotFit(String::from(
                    "there is no usable RAM at 1 MiB for the initrd",
                ))
            })?;
            Some((place_initrd(data.len() as u64, low_end, &kernel)?, data))
        }
        None => None,
    };
    let entries = map.entries();
    if entries.len() > MAX_MEMMAP_ENTRIES {
        return Err(LoadError::DoesNotFit(format!(
            "the memory map has {} entries, more than the {MAX_MEMMAP_ENTRIES} that fit before the command line",
            entries.len()
        )));
    }

    let mut block = vec![0u8; BLOCK_SIZE];
    put(&mut block, 0, u64::from(XEN_HVM_START_MAGIC), 4);
    put(&mut block, 4, u64::from(START_INFO_VERSION), 4);
    if let Some((at, data)) = initrd {
        put(&mut block, 12, 1, 4);
        put(&mut block, 16, BOOT_PARAMS_ADDR + MODLIST_OFFSET as u64, 8);
        put(&mut block, MODLIST_OFFSET, at, 8);
        put(&mut block, MODLIST_OFFSET + 8, data.len() as u64, 8);
    }
    put(&mut block, 24, CMDLINE_ADDR, 8);
    put(&mut block, 32, boot.rsdp_addr.unwrap_or(0), 8);
    put(&mut block, 40, BOOT_PARAMS_ADDR + MEMMAP_OFFSET as u64, 8);
    put(&mut block, 48, entries.len() as u64, 4);
    for (i, e) in entries.iter().enumerate() {
        let at = MEMMAP_OFFSET + i * MEMMAP_ENTRY_SIZE;
        put(&mut block, at, e.addr, 8);
        put(&mut block, at + 8, e.size, 8);
        put(&mut block, at + 16, u64::from(e.kind), 4);
    }

    // Everything is checked: write.
    elf.load(mem)?;
    if let Some((at, data)) = initrd {
        mem.write(at, data)?;
    }
    mem.write(BOOT_PARAMS_ADDR, &block)?;
    let mut cmdline = vec![0u8; boot.cmdline.len() + 1];
    cmdline[..boot.cmdline.len()].copy_from_slice(boot.cmdline);
    mem.write(CMDLINE_ADDR, &cmdline)?;
    mem.write(BOOT_GDT_ADDR, &linux::gdt(linux::GDT_CODE32))?;

    let mut state = BootState::protected_flat(entry, BOOT_CS, BOOT_DS);
    state.regs.gpr[Gpr::Rbx as usize] = BOOT_PARAMS_ADDR;
    state.gdt = DescriptorTable {
        base: BOOT_GDT_ADDR,
        limit: 31,
    };
    state.segments[SegReg::Tr as usize].limit = 0x67;
    let layout = LinuxLayout {
        kernel,
        initrd: initrd.map(|(at, d)| at..at + d.len() as u64),
        cmdline: CMDLINE_ADDR,
        boot_params: BOOT_PARAMS_ADDR,
        memory_map: map,
    };
    Ok((state, layout))
}

/// The segments' physical ranges, for error messages.
fn segment_list(elf: &Elf<'_>) -> String {
    let parts: alloc::vec::Vec<String> = elf
        .segments()
        .iter()
        .map(|s| {
            let r: Range<u64> = s.paddr..s.paddr.saturating_add(s.filesz);
            format!("{:#x}..{:#x}", r.start, r.end)
        })
        .collect();
    parts.join(", ")
}

/// The map's usable ranges, for error messages.
fn usable_list(map: &MemoryMap) -> String {
    let parts: alloc::vec::Vec<String> = map
        .entries()
        .iter()
        .filter(|e| e.kind == super::e820::E820_RAM)
        .map(|e| format!("{:#x}..{:#x}", e.addr, e.end()))
        .collect();
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::e820::{E820_RAM, E820_RESERVED};
    use crate::loader::elf::tests::{build, Ph};
    use crate::loader::elf::{EM_X86_64, PT_NOTE};
    use crate::ops::Segment;
    use alloc::vec::Vec;

    fn note(name: &[u8], ty: u32, desc: &[u8]) -> Vec<u8> {
        let mut n = Vec::new();
        n.extend_from_slice(&(name.len() as u32 + 1).to_le_bytes());
        n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        n.extend_from_slice(&ty.to_le_bytes());
        n.extend_from_slice(name);
        n.push(0);
        while n.len() % 4 != 0 {
            n.push(0);
        }
        n.extend_from_slice(desc);
        while n.len() % 4 != 0 {
            n.push(0);
        }
        n
    }

    /// A 64-bit ELF kernel: 0x100 bytes of code at 16 MiB (file offset 0x100) with 0x1000
    /// of bss, then notes (file offset 0x200) in a PT_NOTE segment.
    fn kernel(notes: &[u8]) -> Vec<u8> {
        let mut body: Vec<u8> = (0..0x100u32).map(|i| (i as u8) | 0x80).collect();
        body.extend_from_slice(notes);
        let phs = [
            Ph::load(0x100, 0x100_0000, 0x100, 0x1100),
            Ph {
                p_type: PT_NOTE,
                offset: 0x200,
                vaddr: 0,
                paddr: 0,
                filesz: notes.len() as u64,
                memsz: notes.len() as u64,
                align: 4,
            },
        ];
        build(true, EM_X86_64, 0xffff_ffff_8100_0000, &phs, &body)
    }

    fn entry_note(entry: u64) -> Vec<u8> {
        let mut n = note(b"GNU", 3, &[1, 2, 3, 4]);
        n.extend(note(b"Xen", 18, &entry.to_le_bytes()));
        n
    }

    fn boot<'a>(cmdline: &'a str, initrd: Option<&'a [u8]>) -> LinuxBoot<'a> {
        LinuxBoot {
            cmdline: cmdline.as_bytes(),
            initrd,
            rsdp_addr: Some(0xf_0000),
        }
    }

    fn si(mem: &GuestMemory, at: u64, width: usize) -> u64 {
        match width {
            4 => u64::from(mem.read_u32(BOOT_PARAMS_ADDR + at).unwrap()),
            _ => mem.read_u64(BOOT_PARAMS_ADDR + at).unwrap(),
        }
    }

    fn err(r: Result<BootState, LoadError>) -> String {
        match r {
            Err(e) => alloc::string::ToString::to_string(&e),
            Ok(s) => panic!("loaded: {s:?}"),
        }
    }

    fn all_zero(mem: &GuestMemory) -> bool {
        mem.regions()
            .iter()
            .all(|r| r.bytes().iter().all(|&b| b == 0))
    }

    #[test]
    fn loads_with_start_info() {
        let f = kernel(&entry_note(0x100_0010));
        assert!(is_pvh(&f));
        let mut mem = GuestMemory::with_ram(64 << 20).unwrap();
        let initrd = vec![0x33u8; 5000];
        let (st, layout) =
            load_pvh_with_layout(&mut mem, &f, &boot("console=ttyS0", Some(&initrd))).unwrap();
        let top = ((64 << 20) - 5000) & !0xfff;
        assert_eq!(layout.kernel, 0x100_0000..0x100_1100, "segments and bss");
        assert_eq!(layout.initrd, Some(top..top + 5000));
        assert_eq!(
            (layout.cmdline, layout.boot_params),
            (CMDLINE_ADDR, BOOT_PARAMS_ADDR)
        );

        // The segment, and its bss.
        assert_eq!(mem.read_u8(0x100_0000).unwrap(), 0x80);
        assert_eq!(mem.read_u8(0x100_00ff).unwrap(), 0xff);

        // The PVH machine state.
        assert_eq!(st.regs.rip, 0x100_0010);
        assert_eq!(st.regs.gpr[Gpr::Rbx as usize], BOOT_PARAMS_ADDR);
        assert_eq!(st.regs.rflags, 2);
        assert_eq!((st.cr0 & 0x8000_0001, st.cr4, st.efer), (1, 0, 0));
        let cs = st.segments[SegReg::Cs as usize];
        assert_eq!(
            (cs.base, cs.limit, cs.attr),
            (0, 0xffff_ffff, Segment::CODE32)
        );
        for seg in [SegReg::Ds, SegReg::Es, SegReg::Ss, SegReg::Fs, SegReg::Gs] {
            let s = st.segments[seg as usize];
            assert_eq!((s.base, s.limit, s.attr), (0, 0xffff_ffff, Segment::DATA));
        }
        let tr = st.segments[SegReg::Tr as usize];
        assert_eq!((tr.base, tr.limit, tr.attr), (0, 0x67, Segment::TSS_BUSY));
        assert_eq!(
            mem.read_u64(st.gdt.base + u64::from(cs.selector)).unwrap(),
            0x00cf_9b00_0000_ffff
        );

        // hvm_start_info.
        assert_eq!(si(&mem, 0, 4), 0x336e_c578);
        assert_eq!(si(&mem, 4, 4), 1);
        assert_eq!(si(&mem, 8, 4), 0);
        assert_eq!(si(&mem, 12, 4), 1, "nr_modules");
        assert_eq!(si(&mem, 32, 8), 0xf_0000, "rsdp_paddr");
        let cmdline = si(&mem, 24, 8);
        let mut cl = [0u8; 14];
        mem.read(cmdline, &mut cl).unwrap();
        assert_eq!(&cl, b"console=ttyS0\0");
        // Module 0 is the initrd, at the top of RAM.
        let modlist = si(&mem, 16, 8) - BOOT_PARAMS_ADDR;
        let initrd_at = si(&mem, modlist, 8);
        assert_eq!(initrd_at, ((64 << 20) - 5000) & !0xfff);
        assert_eq!(si(&mem, modlist + 8, 8), 5000);
        assert_eq!(si(&mem, modlist + 16, 8), 0, "no module command line");
        assert_eq!(mem.read_u8(initrd_at + 4999).unwrap(), 0x33);
        // The memory map.
        let memmap = si(&mem, 40, 8) - BOOT_PARAMS_ADDR;
        let n = si(&mem, 48, 4);
        let got: Vec<(u64, u64, u64)> = (0..n)
            .map(|i| {
                let at = memmap + 24 * i;
                (si(&mem, at, 8), si(&mem, at + 8, 8), si(&mem, at + 16, 8))
            })
            .collect();
        let (ram, res) = (u64::from(E820_RAM), u64::from(E820_RESERVED));
        assert_eq!(
            got,
            [
                (0, 0x1000, ram),
                (0x1000, 0x1000, res),
                (0x2000, 0x9_dc00, ram),
                (0x9_fc00, 0x6_0400, res),
                (0x10_0000, (64 << 20) - 0x10_0000, ram),
            ]
        );
    }

    #[test]
    fn four_byte_notes_and_no_initrd() {
        let mut n = note(b"Xen", 18, &0x100_0004u32.to_le_bytes());
        n.extend(note(b"Linux", 1, b"x"));
        let f = kernel(&n);
        let mut mem = GuestMemory::with_ram(32 << 20).unwrap();
        let st = load_pvh(&mut mem, &f, &boot("", None)).unwrap();
        assert_eq!(st.regs.rip, 0x100_0004);
        assert_eq!(si(&mem, 12, 4), 0);
        assert_eq!(si(&mem, 16, 8), 0);
        assert_eq!(
            mem.read_u8(si(&mem, 24, 8)).unwrap(),
            0,
            "empty command line"
        );
    }

    /// Append a section header table to `f` with a null section and one SHT_NOTE section
    /// over `notes` (file offset `at`).
    fn with_note_section(mut f: Vec<u8>, at: u64, len: u64) -> Vec<u8> {
        while f.len() % 8 != 0 {
            f.push(0);
        }
        let shoff = f.len() as u64;
        f.extend_from_slice(&[0u8; 64]);
        let mut sh = [0u8; 64];
        sh[4..8].copy_from_slice(&7u32.to_le_bytes());
        sh[24..32].copy_from_slice(&at.to_le_bytes());
        sh[32..40].copy_from_slice(&len.to_le_bytes());
        sh[48..56].copy_from_slice(&4u64.to_le_bytes());
        f.extend_from_slice(&sh);
        f[40..48].copy_from_slice(&shoff.to_le_bytes());
        f[58..60].copy_from_slice(&64u16.to_le_bytes());
        f[60..62].copy_from_slice(&2u16.to_le_bytes());
        f
    }

    #[test]
    fn note_in_a_section() {
        // The PT_NOTE segment has only a GNU note; the Xen note is in a section that no
        // segment covers (appended at the end of the file).
        let f = kernel(&note(b"GNU", 3, &[0; 4]));
        assert!(!is_pvh(&f));
        let xen = note(b"Xen", 18, &0x100_0020u64.to_le_bytes());
        let mut g = f.clone();
        let at = g.len() as u64;
        g.extend_from_slice(&xen);
        let g = with_note_section(g, at, xen.len() as u64);
        assert!(is_pvh(&g));
        let mut mem = GuestMemory::with_ram(32 << 20).unwrap();
        assert_eq!(
            load_pvh(&mut mem, &g, &boot("", None)).unwrap().regs.rip,
            0x100_0020
        );
        // A section table past the end of the file, and a note section past it.
        let mut bad = g.clone();
        bad[60..62].copy_from_slice(&200u16.to_le_bytes());
        let mut mem = GuestMemory::with_ram(32 << 20).unwrap();
        assert!(err(load_pvh(&mut mem, &bad, &boot("", None))).contains("section header table"));
        let bad = with_note_section(f.clone(), 0xffff_0000, 0x100);
        assert!(err(load_pvh(&mut mem, &bad, &boot("", None))).contains("note section 1"));
        assert!(all_zero(&mem));
    }

    #[test]
    fn bad_kernels() {
        let mut mem = GuestMemory::with_ram(32 << 20).unwrap();
        let mut check = |f: &[u8], b: LinuxBoot<'_>, needle: &str| {
            let text = err(load_pvh(&mut mem, f, &b));
            assert!(text.contains(needle), "{text:?} lacks {needle:?}");
            assert!(all_zero(&mem), "written before refusing: {text}");
        };
        // No note at all.
        check(
            &kernel(&note(b"GNU", 3, &[0; 4])),
            boot("", None),
            "no PVH entry note",
        );
        // The note of the wrong size, or above 4 GiB.
        check(
            &kernel(&note(b"Xen", 18, &[0; 6])),
            boot("", None),
            "6-byte descriptor",
        );
        check(&kernel(&entry_note(1 << 32)), boot("", None), "above 4 GiB");
        // The entry outside the segments, or in the bss.
        check(
            &kernel(&entry_note(0x200_0000)),
            boot("", None),
            "outside the file bytes",
        );
        check(
            &kernel(&entry_note(0x100_0100)),
            boot("", None),
            "outside the file bytes",
        );
        // A segment beyond RAM, in the legacy area, or over the boot area.
        for (paddr, needle) in [
            (0x200_0000u64 - 0x100, "not inside usable guest RAM"),
            (0xf_0000, "not inside usable guest RAM"),
            (0x9000, "overlaps the boot area"),
        ] {
            let body = [0x90u8; 0x100];
            let mut notes = note(b"Xen", 18, &(paddr as u32).to_le_bytes());
            let n = notes.len() as u64;
            let mut b = body.to_vec();
            b.append(&mut notes);
            let phs = [
                Ph::load(0x100, paddr, 0x100, 0x1100),
                Ph {
                    p_type: PT_NOTE,
                    offset: 0x200,
                    vaddr: 0,
                    paddr: 0,
                    filesz: n,
                    memsz: n,
                    align: 4,
                },
            ];
            let f = build(true, EM_X86_64, 0, &phs, &b);
            check(&f, boot("", None), needle);
        }
        // Not ELF at all, or ELF for another machine.
        check(b"MZ", boot("", None), "no ELF magic");
        // An initrd that does not fit below 32 MiB beside the kernel at 16 MiB.
        let f = kernel(&entry_note(0x100_0000));
        let big = vec![1u8; 16 << 20];
        check(&f, boot("", Some(&big)), "initrd does not fit");
        // A command line longer than the boot area.
        let long = "x".repeat(0x10_0000);
        check(&f, boot(&long, None), "command line");
    }

    #[test]
    fn ram_above_4g_in_the_memory_map() {
        let mut mem = GuestMemory::with_ram(3 << 30).unwrap();
        mem.add_ram(1 << 32, 3 << 30).unwrap();
        let f = kernel(&entry_note(0x100_0000));
        load_pvh(&mut mem, &f, &boot("", Some(&[9; 10]))).unwrap();
        let n = si(&mem, 48, 4);
        let last = si(&mem, 40, 8) - BOOT_PARAMS_ADDR + 24 * (n - 1);
        assert_eq!(si(&mem, last, 8), 1 << 32);
        assert_eq!(si(&mem, last + 8, 8), 3 << 30);
        assert_eq!(si(&mem, last + 16, 4), u64::from(E820_RAM));
        // The initrd below the hole.
        let modlist = si(&mem, 16, 8) - BOOT_PARAMS_ADDR;
        assert_eq!(si(&mem, modlist, 8), (3 << 30) - 0x1000);
    }
}
