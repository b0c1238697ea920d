//! Multiboot v1 loader.
//!
//! Follows the Multiboot Specification version 0.6.96:
//!
//! - The header is the first 4-aligned `0x1BADB002` in the first 8 KiB of the image whose
//!   checksum is right (magic + flags + checksum = 0 mod 2^32).
//! - Header flags 0 (page-align modules: always done), 1 (memory information: always
//!   provided) and 2 (video mode: ignored, text mode stays) are supported; any other bit
//!   of 0-15 is a requirement opsvisor does not meet, and loading fails. Bit 16 (the
//!   "a.out kludge") makes the loader use the header's address fields; without it the
//!   image must be ELF. Unlike GRUB and QEMU, both ELF32 and ELF64 are accepted, as long
//!   as the entry point lies below 4 GiB (the kernel is entered in 32-bit mode).
//! - The memory map is the PC map every boot format reports ([`super::e820`]): usable RAM
//!   to 0x9FC00 and from 1 MiB, the legacy area reserved, RAM above 4 GiB usable;
//!   `mem_lower` and `mem_upper` agree with it.
//! - The information structure, the memory map, the GDT and every string go in one block,
//!   at [`BOOT_INFO_BASE`] below 640 KiB if it fits there without touching the kernel or
//!   the modules, and otherwise on the first page after the modules.
//! - Modules are copied in order, each on a page boundary, from the first page after the
//!   kernel's highest address.
//! - The machine state is the specification's, plus what hardware backends need: a GDT
//!   in guest memory whose selectors [`CODE_SELECTOR`] and [`DATA_SELECTOR`] match the
//!   loaded segments, IDTR limit 0, an unusable LDTR and a busy 32-bit TSS in TR.

use super::e820::{MemoryMap, EBDA_START, HIGH_MEMORY};
use super::elf;
use super::{BootState, LoadError, Module};
use crate::mmu::memory::GuestMemory;
use crate::ops::{DescriptorTable, Gpr};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;

/// The multiboot header magic.
pub const HEADER_MAGIC: u32 = 0x1BAD_B002;
/// The value a multiboot loader leaves in EAX.
pub const BOOT_MAGIC: u32 = 0x2BAD_B002;
/// Header flag: align modules on page boundaries.
pub const HEADER_PAGE_ALIGN: u32 = 1 << 0;
/// Header flag: the kernel needs `mem_*` (and the memory map).
pub const HEADER_MEMORY_INFO: u32 = 1 << 1;
/// Header flag: the kernel asks for a video mode.
pub const HEADER_VIDEO_MODE: u32 = 1 << 2;
/// Header flag: the header's address fields are valid (the "a.out kludge").
pub const HEADER_AOUT_KLUDGE: u32 = 1 << 16;
/// How far into the image the header may start (it must end within it too).
pub const HEADER_SEARCH_LIMIT: usize = 8192;

/// Information flag: `mem_lower` and `mem_upper` are valid.
pub const INFO_MEMORY: u32 = 1 << 0;
/// Information flag: `cmdline` is valid.
pub const INFO_CMDLINE: u32 = 1 << 2;
/// Information flag: `mods_count` and `mods_addr` are valid.
pub const INFO_MODS: u32 = 1 << 3;
/// Information flag: `mmap_length` and `mmap_addr` are valid.
pub const INFO_MEM_MAP: u32 = 1 << 6;
/// Information flag: `boot_loader_name` is valid.
pub const INFO_BOOT_LOADER_NAME: u32 = 1 << 9;

/// Memory-map type of usable RAM.
pub const MMAP_AVAILABLE: u32 = 1;
/// Memory-map type of reserved memory.
pub const MMAP_RESERVED: u32 = 2;

/// Where the information block goes when it fits (in conventional memory, above the
/// real-mode interrupt vectors and the BIOS data area).
pub const BOOT_INFO_BASE: u64 = 0x9000;
/// The end of the area at [`BOOT_INFO_BASE`]: the start of the extended BIOS data area,
/// which the memory map reports reserved.
pub const BOOT_INFO_LIMIT: u64 = EBDA_START;
/// The boot loader name the kernel is told.
pub const BOOT_LOADER_NAME: &str = "opsvisor";
/// The flat 32-bit code selector CS holds at entry.
pub const CODE_SELECTOR: u16 = 0x10;
/// The flat 32-bit data selector DS, ES, FS, GS and SS hold at entry.
pub const DATA_SELECTOR: u16 = 0x18;

const FOUR_GIB: u64 = 1 << 32;
const PAGE: u64 = 4096;

/// Layout of the information block: the structure, the GDT, then the memory map.
const INFO_SIZE: usize = 0x80;
const GDT_OFFSET: usize = INFO_SIZE;
/// Null, null, flat 32-bit code (0x10), flat 32-bit data (0x18); accessed bits preset so
/// that the processor never writes to the table.
const GDT: [u64; 4] = [0, 0, 0x00cf_9b00_0000_ffff, 0x00cf_9300_0000_ffff];
const MMAP_OFFSET: usize = GDT_OFFSET + GDT.len() * 8;
const MMAP_ENTRY_SIZE: usize = 24;
const MODULE_ENTRY_SIZE: usize = 16;

/// The a.out-kludge address fields of a header (flag 16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AoutKludge {
    /// Physical address of the header itself.
    pub header_addr: u32,
    /// Physical address of the start of the text segment.
    pub load_addr: u32,
    /// End of the data loaded from the file (0: the rest of the file).
    pub load_end_addr: u32,
    /// End of the bss (0: no bss).
    pub bss_end_addr: u32,
    /// The entry point.
    pub entry_addr: u32,
}

/// A multiboot header found in an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Offset of the header in the image.
    pub offset: usize,
    /// The header's flags.
    pub flags: u32,
    /// The address fields, when flag 16 is set.
    pub kludge: Option<AoutKludge>,
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Find and check the multiboot header: [`LoadError::UnknownFormat`] if there is none,
/// [`LoadError::Malformed`] if the magic is only found with a wrong checksum or the
/// address fields are cut off by the end of the file.
pub fn find_header(image: &[u8]) -> Result<Header, LoadError> {
    let mut bad_checksum = None;
    let mut offset = 0;
    while offset + 12 <= image.len().min(HEADER_SEARCH_LIMIT) {
        if le32(image, offset) == Some(HEADER_MAGIC) {
            let flags = le32(image, offset + 4).unwrap_or(0);
            let checksum = le32(image, offset + 8).unwrap_or(0);
            if HEADER_MAGIC.wrapping_add(flags).wrapping_add(checksum) == 0 {
                let kludge = if flags & HEADER_AOUT_KLUDGE != 0 {
                    let field = |i: usize| le32(image, offset + 12 + 4 * i);
                    match (field(0), field(1), field(2), field(3), field(4)) {
                        (Some(header_addr), Some(load_addr), Some(load_end_addr), Some(bss_end_addr), Some(entry_addr)) => {
                            Some(AoutKludge {
                                header_addr,
                                load_addr,
                                load_end_addr,
                                bss_end_addr,
                                entry_addr,
                            })
                        }
                        _ => {
                            return Err(LoadError::Malformed(format!(
                                "multiboot header at offset {offset:#x}: the address fields (flag 16) are cut off by the end of the file"
                            )))
                        }
                    }
                } else {
                    None
                };
                return Ok(Header {
                    offset,
                    flags,
                    kludge,
                });
            }
            bad_checksum.get_or_insert(offset);
        }
        offset += 4;
    }
    match bad_checksum {
        Some(at) => Err(LoadError::Malformed(format!(
            "the multiboot header at offset {at:#x} has a bad checksum"
        ))),
        None => Err(LoadError::UnknownFormat(String::from(
            "no multiboot header in the first 8 KiB",
        ))),
    }
}

/// Whether `image` carries a multiboot v1 header in its first 8 KiB.
pub fn is_multiboot(image: &[u8]) -> bool {
    find_header(image).is_ok()
}

/// Where the kernel went.
struct Kernel {
    entry: u32,
    /// The physical ranges it occupies (bss included).
    ranges: Vec<Range<u64>>,
    /// One past its highest byte.
    end: u64,
}

/// Load the a.out-kludge form: the file from the header's offset back to `load_addr`.
fn load_kludge(
    mem: &mut GuestMemory,
    image: &[u8],
    offset: usize,
    k: &AoutKludge,
) -> Result<Kernel, LoadError> {
    let bad = |s: String| {
        Err(LoadError::Malformed(format!(
            "multiboot address fields: {s}"
        )))
    };
    let (header_addr, load_addr) = (u64::from(k.header_addr), u64::from(k.load_addr));
    if header_addr < load_addr {
        return bad(format!(
            "header_addr {header_addr:#x} is below load_addr {load_addr:#x}"
        ));
    }
    let Some(file_start) = (offset as u64).checked_sub(header_addr - load_addr) else {
        return bad(format!(
            "load_addr {load_addr:#x} lies {:#x} bytes before header_addr {header_addr:#x}, but the header is at file offset {offset:#x}",
            header_addr - load_addr
        ));
    };
    let file_len = image.len() as u64;
    let load_len = if k.load_end_addr == 0 {
        file_len - file_start
    } else {
        let load_end = u64::from(k.load_end_addr);
        if load_end < load_addr {
            return bad(format!(
                "load_end_addr {load_end:#x} is below load_addr {load_addr:#x}"
            ));
        }
        load_end - load_addr
    };
    if file_start + load_len > file_len {
        return bad(format!(
            "load_addr..load_end_addr is {load_len:#x} bytes, but the file holds only {:#x} from offset {file_start:#x}",
            file_len - file_start
        ));
    }
    let load_end = load_addr + load_len;
    if load_end > FOUR_GIB {
        return bad(format!("the image ends at {load_end:#x}, above 4 GiB"));
    }
    let end = if k.bss_end_addr == 0 {
        load_end
    } else {
        let bss_end = u64::from(k.bss_end_addr);
        if bss_end < load_end {
            return bad(format!(
                "bss_end_addr {bss_end:#x} is below the end of the loaded image {load_end:#x}"
            ));
        }
        bss_end
    };
    if !mem.is_ram_range(load_addr, end - load_addr) {
        return Err(LoadError::DoesNotFit(format!(
            "the kernel at {load_addr:#x}..{end:#x} ({} bytes) is not inside guest RAM",
            end - load_addr
        )));
    }
    // Both bounds were checked against the file above.
    let bytes = image
        .get(file_start as usize..(file_start + load_len) as usize)
        .unwrap_or(&[]);
    mem.write(load_addr, bytes)?;
    mem.zero_range(load_end, end - load_end)?;
    Ok(Kernel {
        entry: k.entry_addr,
        ranges: alloc::vec![load_addr..end],
        end,
    })
}

/// Load the ELF form.
fn load_elf(mem: &mut GuestMemory, image: &[u8]) -> Result<Kernel, LoadError> {
    let elf = elf::parse(image).map_err(|e| match e {
        LoadError::UnknownFormat(_) => LoadError::UnknownFormat(String::from(
            "the multiboot header has no address fields (flag 16) and the image is not ELF",
        )),
        other => other,
    })?;
    let entry = elf.phys_entry();
    let entry = u32::try_from(entry).map_err(|_| {
        LoadError::Unsupported(format!(
            "the entry point {entry:#x} is above 4 GiB, but multiboot enters the kernel in 32-bit mode"
        ))
    })?;
    let extent = elf.load(mem)?;
    Ok(Kernel {
        entry,
        ranges: elf
            .segments()
            .iter()
            .map(elf::LoadSegment::phys_range)
            .collect(),
        end: extent.end,
    })
}

fn align_up(v: u64) -> Option<u64> {
    v.checked_add(PAGE - 1).map(|v| v & !(PAGE - 1))
}

fn overlaps(a: &Range<u64>, b: &Range<u64>) -> bool {
    a.start < b.end && b.start < a.end
}

/// One past the end of the RAM that runs without a gap from `start` (`start` if none).
fn contiguous_ram_end(mem: &GuestMemory, start: u64) -> u64 {
    let mut at = start;
    while let Some(r) = mem.region_index(at).and_then(|i| mem.regions().get(i)) {
        at = r.end();
    }
    at
}

/// The memory map as (start, end, type) triples: the PC map every boot format reports
/// (see [`MemoryMap`]); its types are multiboot's (1 available, 2 reserved).
fn memory_map(mem: &GuestMemory) -> Vec<(u64, u64, u32)> {
    MemoryMap::new(mem)
        .entries()
        .iter()
        .map(|e| (e.addr, e.end(), e.kind))
        .collect()
}

fn put32(buf: &mut [u8], at: usize, v: u32) {
    if let Some(s) = buf.get_mut(at..at + 4) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

fn put64(buf: &mut [u8], at: usize, v: u64) {
    if let Some(s) = buf.get_mut(at..at + 8) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

/// Load a multiboot v1 kernel (ELF32, ELF64, or the a.out-kludge flat form) with its
/// command line and modules, build the info structure and memory map, and return the
/// 32-bit protected-mode entry state (EAX=0x2BADB002, EBX=info).
pub fn load_multiboot(
    mem: &mut GuestMemory,
    image: &[u8],
    cmdline: &[u8],
    modules: &[Module<'_>],
) -> Result<BootState, LoadError> {
    let header = find_header(image)?;
    let unsupported =
        header.flags & 0xffff & !(HEADER_PAGE_ALIGN | HEADER_MEMORY_INFO | HEADER_VIDEO_MODE);
    if unsupported != 0 {
        return Err(LoadError::Unsupported(format!(
            "the multiboot header requires flag bits {unsupported:#x}, which opsvisor does not support"
        )));
    }
    let kernel = match &header.kludge {
        Some(k) => load_kludge(mem, image, header.offset, k)?,
        None => load_elf(mem, image)?,
    };

    // Modules, page-aligned from the first page after the kernel.
    let mut mod_ranges: Vec<Range<u64>> = Vec::with_capacity(modules.len());
    let mut cursor = align_up(kernel.end).unwrap_or(u64::MAX);
    for (i, m) in modules.iter().enumerate() {
        let len = m.data.len() as u64;
        let start = cursor;
        let fits = start
            .checked_add(len)
            .is_some_and(|end| end <= FOUR_GIB && mem.is_ram_range(start, len));
        if !fits {
            return Err(LoadError::DoesNotFit(format!(
                "module {i} ({:?}, {len} bytes) at {start:#x}: not inside guest RAM below 4 GiB",
                String::from_utf8_lossy(m.cmdline)
            )));
        }
        mem.write(start, m.data)?;
        mod_ranges.push(start..start + len);
        cursor = align_up(start + len).unwrap_or(u64::MAX);
    }

    // The information block's size: the fixed part, then strings.
    let mmap = memory_map(mem);
    let mods_offset = MMAP_OFFSET + mmap.len() * MMAP_ENTRY_SIZE;
    let strings_offset = mods_offset + modules.len() * MODULE_ENTRY_SIZE;
    let strings_len: usize = cmdline.len()
        + 1
        + BOOT_LOADER_NAME.len()
        + 1
        + modules.iter().map(|m| m.cmdline.len() + 1).sum::<usize>();
    let size = (strings_offset + strings_len) as u64;

    let mut occupied = kernel.ranges.clone();
    occupied.extend(mod_ranges.iter().cloned());
    let free = |mem: &GuestMemory, base: u64| {
        let block = base..base.saturating_add(size);
        mem.is_ram_range(base, size) && !occupied.iter().any(|r| overlaps(r, &block))
    };
    let base = if BOOT_INFO_BASE.saturating_add(size) <= BOOT_INFO_LIMIT
        && free(mem, BOOT_INFO_BASE)
    {
        BOOT_INFO_BASE
    } else {
        match cursor.checked_add(size) {
            Some(end) if end <= FOUR_GIB && free(mem, cursor) => cursor,
            _ => {
                return Err(LoadError::DoesNotFit(format!(
                    "the multiboot information ({size} bytes) fits neither at {BOOT_INFO_BASE:#x} nor after the kernel and modules at {cursor:#x}"
                )))
            }
        }
    };
    // Everything below is inside `base..base + size`, which ends below 4 GiB.
    let addr = |offset: usize| (base + offset as u64) as u32;

    let mut block = alloc::vec![0u8; size as usize];
    let mut strings = strings_offset;
    let mut put_str = |block: &mut [u8], s: &[u8]| -> u32 {
        let at = strings;
        if let Some(dst) = block.get_mut(at..at + s.len()) {
            dst.copy_from_slice(s);
        }
        // The NUL is already there: the block starts zeroed.
        strings += s.len() + 1;
        addr(at)
    };

    let mem_lower = contiguous_ram_end(mem, 0).min(EBDA_START) / 1024;
    let mem_upper = contiguous_ram_end(mem, HIGH_MEMORY).saturating_sub(HIGH_MEMORY) / 1024;
    put32(
        &mut block,
        0,
        INFO_MEMORY | INFO_CMDLINE | INFO_MODS | INFO_MEM_MAP | INFO_BOOT_LOADER_NAME,
    );
    put32(&mut block, 4, mem_lower as u32);
    put32(&mut block, 8, u32::try_from(mem_upper).unwrap_or(u32::MAX));
    let cmdline_addr = put_str(&mut block, cmdline);
    put32(&mut block, 16, cmdline_addr);
    put32(&mut block, 20, modules.len() as u32);
    put32(&mut block, 24, addr(mods_offset));
    put32(&mut block, 44, (mmap.len() * MMAP_ENTRY_SIZE) as u32);
    put32(&mut block, 48, addr(MMAP_OFFSET));
    let name_addr = put_str(&mut block, BOOT_LOADER_NAME.as_bytes());
    put32(&mut block, 64, name_addr);

    for (i, d) in GDT.iter().enumerate() {
        put64(&mut block, GDT_OFFSET + 8 * i, *d);
    }
    for (i, &(start, end, ty)) in mmap.iter().enumerate() {
        let at = MMAP_OFFSET + i * MMAP_ENTRY_SIZE;
        // `size` counts the entry without the size field itself.
        put32(&mut block, at, (MMAP_ENTRY_SIZE - 4) as u32);
        put64(&mut block, at + 4, start);
        put64(&mut block, at + 12, end - start);
        put32(&mut block, at + 20, ty);
    }
    for (i, (m, r)) in modules.iter().zip(&mod_ranges).enumerate() {
        let at = mods_offset + i * MODULE_ENTRY_SIZE;
        let string = put_str(&mut block, m.cmdline);
        // Module ranges were checked to end below 4 GiB.
        put32(&mut block, at, r.start as u32);
        put32(&mut block, at + 4, r.end as u32);
        put32(&mut block, at + 8, string);
    }
    mem.write(base, &block)?;

    Ok(entry_state(kernel.entry, addr(0), addr(GDT_OFFSET)))
}

/// The multiboot machine state: 32-bit protected mode, paging off, flat segments.
fn entry_state(entry: u32, info: u32, gdt: u32) -> BootState {
    let mut state = BootState::protected_flat(entry, CODE_SELECTOR, DATA_SELECTOR);
    state.regs.gpr[Gpr::Rax as usize] = u64::from(BOOT_MAGIC);
    state.regs.gpr[Gpr::Rbx as usize] = u64::from(info);
    state.gdt = DescriptorTable {
        base: u64::from(gdt),
        limit: (GDT.len() * 8 - 1) as u16,
    };
    state.idt = DescriptorTable { base: 0, limit: 0 };
    state
}

/// The command line a multiboot kernel is given, as GRUB and QEMU build it: the kernel's
/// file name as the user gave it, then a space and `append` (`--append`'s text) if there
/// is any. Kernels written for them take the first word as their name (`argv[0]`). With
/// no name (a machine built from bytes alone) the line is `append` as given.
pub fn command_line(kernel_name: &[u8], append: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(kernel_name.len() + 1 + append.len());
    line.extend_from_slice(kernel_name);
    if !kernel_name.is_empty() && !append.is_empty() {
        line.push(b' ');
    }
    line.extend_from_slice(append);
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::elf::tests::{build, Ph};
    use crate::loader::elf::{EM_386, EM_X86_64};
    use crate::ops::{SegReg, Segment};
    use alloc::vec;

    fn header(flags: u32, kludge: Option<[u32; 5]>) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&HEADER_MAGIC.to_le_bytes());
        h.extend_from_slice(&flags.to_le_bytes());
        h.extend_from_slice(&(0u32.wrapping_sub(HEADER_MAGIC).wrapping_sub(flags)).to_le_bytes());
        if let Some(fields) = kludge {
            for f in fields {
                h.extend_from_slice(&f.to_le_bytes());
            }
        }
        h
    }

    /// A kludge image: 0x40 bytes of code, the header at offset 0x40, a pattern to 0x200.
    /// Loaded at 1 MiB with 0x1000 bytes of bss after it; entry at 1 MiB + 0x10.
    fn kludge_image() -> Vec<u8> {
        let mut f: Vec<u8> = (0..0x200u32).map(|i| (i as u8) | 1).collect();
        let h = header(
            HEADER_PAGE_ALIGN | HEADER_MEMORY_INFO | HEADER_AOUT_KLUDGE,
            Some([0x10_0040, 0x10_0000, 0x10_0200, 0x10_1200, 0x10_0010]),
        );
        f[0x40..0x40 + h.len()].copy_from_slice(&h);
        f
    }

    fn info_u32(mem: &GuestMemory, info: u64, at: u64) -> u32 {
        mem.read_u32(info + at).unwrap()
    }

    fn c_string(mem: &GuestMemory, mut at: u64) -> String {
        let mut s = String::new();
        loop {
            let b = mem.read_u8(at).unwrap();
            if b == 0 {
                return s;
            }
            s.push(b as char);
            at += 1;
        }
    }

    fn err_text(r: Result<BootState, LoadError>) -> LoadError {
        match r {
            Err(e) => e,
            Ok(s) => panic!("loaded: {s:?}"),
        }
    }

    #[test]
    fn kludge_image_with_modules() {
        let image = kludge_image();
        assert!(is_multiboot(&image));
        let mut mem = GuestMemory::with_ram(16 << 20).unwrap();
        mem.write(0x10_0200, &[0xee; 0x1000]).unwrap();
        let modules = [
            Module {
                cmdline: b"initrd one",
                data: &[0xaa; 0x1001],
            },
            Module {
                cmdline: b"two",
                data: b"hello",
            },
        ];
        let st = load_multiboot(&mut mem, &image, b"console=ttyS0", &modules).unwrap();

        // Where the bytes landed, and the bss.
        let mut got = vec![0u8; 0x200];
        mem.read(0x10_0000, &mut got).unwrap();
        assert_eq!(got, image);
        let mut bss = vec![0xffu8; 0x1000];
        mem.read(0x10_0200, &mut bss).unwrap();
        assert!(bss.iter().all(|&b| b == 0));

        // The entry state.
        assert_eq!(st.regs.rip, 0x10_0010);
        assert_eq!(st.regs.gpr[Gpr::Rax as usize], 0x2BAD_B002);
        let info = st.regs.gpr[Gpr::Rbx as usize];
        assert_eq!(info, BOOT_INFO_BASE);
        assert_eq!(st.regs.rflags, 2);
        assert_eq!((st.cr0, st.cr3, st.cr4, st.efer), (0x11, 0, 0, 0));
        let cs = st.segments[SegReg::Cs as usize];
        assert_eq!(
            (cs.selector, cs.base, cs.limit, cs.attr),
            (0x10, 0, 0xffff_ffff, 0xc09b)
        );
        for seg in [SegReg::Es, SegReg::Ss, SegReg::Ds, SegReg::Fs, SegReg::Gs] {
            let s = st.segments[seg as usize];
            assert_eq!(
                (s.selector, s.base, s.limit, s.attr),
                (0x18, 0, 0xffff_ffff, 0xc093)
            );
        }
        assert_eq!(st.segments[SegReg::Tr as usize].attr, 0x8b);
        assert_ne!(
            st.segments[SegReg::Ldtr as usize].attr & Segment::UNUSABLE,
            0
        );
        assert_eq!(st.idt.limit, 0);
        // The GDT in memory agrees with the segment registers.
        assert_eq!(st.gdt.limit, 31);
        assert_eq!(
            mem.read_u64(st.gdt.base + 0x10).unwrap(),
            0x00cf_9b00_0000_ffff
        );
        assert_eq!(
            mem.read_u64(st.gdt.base + 0x18).unwrap(),
            0x00cf_9300_0000_ffff
        );

        // The information structure.
        assert_eq!(info_u32(&mem, info, 0), 0x24d);
        assert_eq!(info_u32(&mem, info, 4), 639);
        assert_eq!(info_u32(&mem, info, 8), 15 * 1024);
        assert_eq!(
            c_string(&mem, u64::from(info_u32(&mem, info, 16))),
            "console=ttyS0"
        );
        assert_eq!(
            c_string(&mem, u64::from(info_u32(&mem, info, 64))),
            "opsvisor"
        );

        // Modules: page aligned above the kernel's bss.
        assert_eq!(info_u32(&mem, info, 20), 2);
        let mods = u64::from(info_u32(&mem, info, 24));
        let m0 = (info_u32(&mem, mods, 0), info_u32(&mem, mods, 4));
        let m1 = (info_u32(&mem, mods, 16), info_u32(&mem, mods, 20));
        assert_eq!(m0, (0x10_2000, 0x10_3001));
        assert_eq!(m1, (0x10_4000, 0x10_4005));
        assert_eq!(
            c_string(&mem, u64::from(info_u32(&mem, mods, 8))),
            "initrd one"
        );
        assert_eq!(c_string(&mem, u64::from(info_u32(&mem, mods, 24))), "two");
        assert_eq!(mem.read_u8(0x10_3000).unwrap(), 0xaa);
        let mut hello = [0u8; 5];
        mem.read(0x10_4000, &mut hello).unwrap();
        assert_eq!(&hello, b"hello");

        // The memory map.
        let len = info_u32(&mem, info, 44);
        let mmap = u64::from(info_u32(&mem, info, 48));
        assert_eq!(len, 3 * 24);
        let mut entries = Vec::new();
        let mut at = mmap;
        while at < mmap + u64::from(len) {
            let size = mem.read_u32(at).unwrap();
            entries.push((
                mem.read_u64(at + 4).unwrap(),
                mem.read_u64(at + 12).unwrap(),
                mem.read_u32(at + 20).unwrap(),
            ));
            at += u64::from(size) + 4;
        }
        assert_eq!(
            entries,
            [
                (0, 0x9_fc00, 1),
                (0x9_fc00, 0x6_0400, 2),
                (0x10_0000, 15 << 20, 1)
            ]
        );
    }

    #[test]
    fn memory_map_reflects_every_region() {
        let mut mem = GuestMemory::with_ram(0x8_0000).unwrap();
        mem.add_ram(0x10_0000, 0x10_0000).unwrap();
        mem.add_ram(0x20_0000, 0x1000).unwrap();
        mem.add_ram(1 << 32, 0x1000).unwrap();
        assert_eq!(
            memory_map(&mem),
            [
                (0, 0x8_0000, 1),
                (0x9_fc00, 0x10_0000, 2),
                (0x10_0000, 0x20_1000, 1),
                (1 << 32, (1 << 32) + 0x1000, 1)
            ]
        );
        let image = kludge_image();
        let st = load_multiboot(&mut mem, &image, b"", &[]).unwrap();
        let info = st.regs.gpr[Gpr::Rbx as usize];
        assert_eq!(info_u32(&mem, info, 4), 512);
        assert_eq!(info_u32(&mem, info, 8), 0x10_1000 / 1024);
        assert_eq!(info_u32(&mem, info, 20), 0);
        assert_eq!(info_u32(&mem, info, 44), 4 * 24);
        assert_eq!(c_string(&mem, u64::from(info_u32(&mem, info, 16))), "");
    }

    #[test]
    fn elf32_and_elf64_kernels() {
        for is64 in [false, true] {
            // The header sits in the segment's bytes, at file offset 0x110.
            let mut body = vec![0x90u8; 0x40];
            let h = header(HEADER_MEMORY_INFO | HEADER_VIDEO_MODE, None);
            body[0x10..0x10 + h.len()].copy_from_slice(&h);
            let machine = if is64 { EM_X86_64 } else { EM_386 };
            let phs = [Ph::load(0x100, 0x20_0000, 0x40, 0x2000)];
            let image = build(is64, machine, 0x20_0020, &phs, &body);
            let mut mem = GuestMemory::with_ram(4 << 20).unwrap();
            let modules = [Module {
                cmdline: b"m",
                data: &[1, 2, 3],
            }];
            let st = load_multiboot(&mut mem, &image, b"x", &modules).unwrap();
            assert_eq!(st.regs.rip, 0x20_0020);
            assert_eq!(mem.read_u8(0x20_0000).unwrap(), 0x90);
            assert_eq!(mem.read_u8(0x20_0040).unwrap(), 0);
            let info = st.regs.gpr[Gpr::Rbx as usize];
            let mods = u64::from(info_u32(&mem, info, 24));
            // The bss ends at 0x20_2000: the module starts there.
            assert_eq!(info_u32(&mem, mods, 0), 0x20_2000);
        }
    }

    #[test]
    fn elf64_entry_above_4g_is_unsupported() {
        let mut body = vec![0x90u8; 0x40];
        let h = header(0, None);
        body[..h.len()].copy_from_slice(&h);
        let image = build(
            true,
            EM_X86_64,
            0x1_0000_0000,
            &[Ph::load(0x100, 0x20_0000, 0x40, 0x40)],
            &body,
        );
        let mut mem = GuestMemory::with_ram(4 << 20).unwrap();
        assert!(matches!(
            err_text(load_multiboot(&mut mem, &image, b"", &[])),
            LoadError::Unsupported(s) if s.contains("above 4 GiB")
        ));
    }

    #[test]
    fn info_moves_when_the_kernel_is_low() {
        // The kernel occupies 0x8000..0x20000, over the usual information area.
        let mut f = vec![0u8; 0x100];
        let h = header(
            HEADER_AOUT_KLUDGE,
            Some([0x8000, 0x8000, 0x8100, 0x2_0000, 0x8000]),
        );
        f[..h.len()].copy_from_slice(&h);
        let mut mem = GuestMemory::with_ram(1 << 20).unwrap();
        let st = load_multiboot(&mut mem, &f, b"abc", &[]).unwrap();
        let info = st.regs.gpr[Gpr::Rbx as usize];
        assert_eq!(info, 0x2_0000);
        assert_eq!(c_string(&mem, u64::from(info_u32(&mem, info, 16))), "abc");
    }

    #[test]
    fn header_errors() {
        let mut mem = GuestMemory::with_ram(4 << 20).unwrap();
        // Empty file, no header.
        assert!(matches!(
            err_text(load_multiboot(&mut mem, &[], b"", &[])),
            LoadError::UnknownFormat(_)
        ));
        assert!(!is_multiboot(&[]));
        assert!(matches!(
            err_text(load_multiboot(&mut mem, &[0x90; 0x4000], b"", &[])),
            LoadError::UnknownFormat(_)
        ));
        // A header past the first 8 KiB is not found.
        let mut far = vec![0u8; 0x3000];
        far[0x2000..0x2020].copy_from_slice(&kludge_image()[0x40..0x60]);
        assert!(!is_multiboot(&far));
        // Unaligned headers are not found either.
        let mut unaligned = vec![0u8; 0x100];
        unaligned[2..14].copy_from_slice(&header(0, None));
        assert!(!is_multiboot(&unaligned));
        // Bad checksum.
        let mut bad = kludge_image();
        bad[0x48] ^= 1;
        assert!(!is_multiboot(&bad));
        assert!(matches!(
            err_text(load_multiboot(&mut mem, &bad, b"", &[])),
            LoadError::Malformed(s) if s.contains("checksum")
        ));
        // Unsupported required flag.
        let mut f = vec![0u8; 0x100];
        f[..12].copy_from_slice(&header(1 << 5, None));
        assert!(is_multiboot(&f));
        assert!(matches!(
            err_text(load_multiboot(&mut mem, &f, b"", &[])),
            LoadError::Unsupported(s) if s.contains("0x20")
        ));
        // No kludge and not ELF.
        f[..12].copy_from_slice(&header(HEADER_MEMORY_INFO | (1 << 20), None));
        assert!(matches!(
            err_text(load_multiboot(&mut mem, &f, b"", &[])),
            LoadError::UnknownFormat(_)
        ));
        // Kludge fields cut off by the end of the file.
        let h = header(HEADER_AOUT_KLUDGE, Some([0x10_0000, 0x10_0000, 0, 0, 0]));
        assert!(matches!(
            find_header(&h[..24]),
            Err(LoadError::Malformed(_))
        ));
    }

    fn kludge(fields: [u32; 5], len: usize) -> Vec<u8> {
        let mut f = vec![0x11u8; len];
        let h = header(HEADER_AOUT_KLUDGE, Some(fields));
        f[0x20..0x20 + h.len()].copy_from_slice(&h);
        f
    }

    #[test]
    fn kludge_errors() {
        let mut mem = GuestMemory::with_ram(4 << 20).unwrap();
        let malformed = |mem: &mut GuestMemory, f: &[u32; 5], needle: &str| match err_text(
            load_multiboot(mem, &kludge(*f, 0x100), b"", &[]),
        ) {
            LoadError::Malformed(s) => assert!(s.contains(needle), "{s:?} lacks {needle:?}"),
            e => panic!("{e:?}"),
        };
        let ok = [0x10_0020, 0x10_0000, 0x10_0100, 0x10_1000, 0x10_0000];
        assert!(load_multiboot(&mut mem, &kludge(ok, 0x100), b"", &[]).is_ok());
        // header_addr below load_addr.
        malformed(
            &mut mem,
            &[0x10_0000, 0x10_0020, 0, 0, 0],
            "below load_addr",
        );
        // load_addr before the start of the file.
        malformed(&mut mem, &[0x10_0040, 0x10_0000, 0, 0, 0], "file offset");
        // load_end_addr below load_addr.
        malformed(
            &mut mem,
            &[0x10_0020, 0x10_0000, 0xf_0000, 0, 0],
            "load_end_addr",
        );
        // bss_end_addr below load_end_addr.
        malformed(
            &mut mem,
            &[0x10_0020, 0x10_0000, 0x10_0100, 0x10_0080, 0],
            "bss_end_addr",
        );
        // More to load than the file holds.
        malformed(
            &mut mem,
            &[0x10_0020, 0x10_0000, 0x10_0101, 0, 0],
            "holds only",
        );
        // Beyond RAM.
        match err_text(load_multiboot(
            &mut mem,
            &kludge([0x3f_ff20, 0x3f_ff00, 0, 0x40_1000, 0], 0x100),
            b"",
            &[],
        )) {
            LoadError::DoesNotFit(s) => assert!(s.contains("kernel"), "{s}"),
            e => panic!("{e:?}"),
        }
        // A module that does not fit.
        let big = vec![0u8; 4 << 20];
        let modules = [Module {
            cmdline: b"big",
            data: &big,
        }];
        match err_text(load_multiboot(&mut mem, &kludge(ok, 0x100), b"", &modules)) {
            LoadError::DoesNotFit(s) => assert!(s.contains("module 0"), "{s}"),
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn elf_errors_come_through() {
        let mut mem = GuestMemory::with_ram(4 << 20).unwrap();
        // Segment beyond RAM.
        let mut body = vec![0u8; 0x40];
        body[..12].copy_from_slice(&header(0, None));
        let image = build(
            false,
            EM_386,
            0x50_0000,
            &[Ph::load(0x100, 0x50_0000, 0x40, 0x40)],
            &body,
        );
        assert!(matches!(
            err_text(load_multiboot(&mut mem, &image, b"", &[])),
            LoadError::DoesNotFit(_)
        ));
        // Non-x86 machine.
        let image = build(
            false,
            40,
            0,
            &[Ph::load(0x100, 0x10_0000, 0x40, 0x40)],
            &body,
        );
        assert!(matches!(
            err_text(load_multiboot(&mut mem, &image, b"", &[])),
            LoadError::Unsupported(_)
        ));
        // Truncated program header table (the header still lies in the first bytes).
        let mut image = build(
            false,
            EM_386,
            0,
            &[Ph::load(0x100, 0x10_0000, 0x40, 0x40)],
            &[],
        );
        image.truncate(60);
        image.extend_from_slice(&header(0, None));
        image[44] = 3; // three program headers: the table runs past the end
        assert!(matches!(
            err_text(load_multiboot(&mut mem, &image, b"", &[])),
            LoadError::Malformed(_)
        ));
    }

    #[test]
    fn command_line_starts_with_the_kernel_name() {
        assert_eq!(
            command_line(b"x86/emulator.flat", b"-smp 1 foo"),
            b"x86/emulator.flat -smp 1 foo"
        );
        assert_eq!(command_line(b"/boot/kernel", b""), b"/boot/kernel");
        assert_eq!(command_line(b"k", b" lead"), b"k  lead");
        assert_eq!(command_line(b"", b"only"), b"only");
    }
}
