//! ELF32/ELF64 parsing for the loaders (program headers of x86 and x86-64 executables).
//!
//! A small, strict parser: little-endian executables (`ET_EXEC` or `ET_DYN`) for
//! `EM_386` in ELFCLASS32 or `EM_X86_64` in ELFCLASS64. Every offset and size read from
//! the file is bounds-checked before use, so any byte string parses to either an [`Elf`]
//! whose segments and notes lie inside the file, or a [`LoadError`] that names the problem:
//! [`LoadError::UnknownFormat`] without the ELF magic, [`LoadError::Unsupported`] for
//! another byte order, class, type or machine, [`LoadError::Malformed`] for anything out
//! of bounds or inconsistent.
//!
//! Loaders place `PT_LOAD` segments at their physical address (`p_paddr`), copy
//! `p_filesz` bytes and zero the rest up to `p_memsz` ([`Elf::load`]). `PT_NOTE` segments
//! are parsed into [`ElfNote`]s (the PVH entry point is the Xen note
//! [`XEN_ELFNOTE_PHYS32_ENTRY`]). Section headers are read only when a caller asks for
//! the notes of `SHT_NOTE` sections ([`Elf::section_notes`]), so a kernel whose program
//! headers are sound is not refused over its section table.

use super::LoadError;
use crate::mmu::memory::GuestMemory;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;

/// Machine `EM_386` (Intel 80386).
pub const EM_386: u16 = 3;
/// Machine `EM_X86_64` (AMD x86-64).
pub const EM_X86_64: u16 = 62;
/// Program header type of a loadable segment.
pub const PT_LOAD: u32 = 1;
/// Program header type of a note segment.
pub const PT_NOTE: u32 = 4;
/// The Xen ELF note (name "Xen") giving the 32-bit PVH entry point.
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// Section header type of a note section.
pub const SHT_NOTE: u32 = 7;

const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;

/// The ELF class: the width of the file's addresses and offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfClass {
    /// ELFCLASS32.
    Elf32,
    /// ELFCLASS64.
    Elf64,
}

/// A `PT_LOAD` program header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadSegment {
    /// Offset of the segment's bytes in the file.
    pub offset: u64,
    /// Virtual address.
    pub vaddr: u64,
    /// Physical address: where the loaders put it.
    pub paddr: u64,
    /// Bytes present in the file (`offset..offset + filesz` lies inside the file).
    pub filesz: u64,
    /// Bytes in memory (at least `filesz`; the rest is zeroed).
    pub memsz: u64,
    /// `p_flags` (PF_X = 1, PF_W = 2, PF_R = 4).
    pub flags: u32,
}

impl LoadSegment {
    /// The guest-physical range the segment occupies.
    pub fn phys_range(&self) -> Range<u64> {
        // `parse` checked that this does not overflow.
        self.paddr..self.paddr.saturating_add(self.memsz)
    }
}

/// One note from a `PT_NOTE` segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ElfNote<'a> {
    /// The owner's name, without its terminating NUL bytes (for example `b"Xen"`).
    pub name: &'a [u8],
    /// The note type, meaningful within its owner's namespace.
    pub note_type: u32,
    /// The descriptor bytes.
    pub desc: &'a [u8],
}

/// A parsed ELF executable, borrowing the file's bytes.
#[derive(Clone, Debug)]
pub struct Elf<'a> {
    image: &'a [u8],
    class: ElfClass,
    machine: u16,
    entry: u64,
    segments: Vec<LoadSegment>,
    notes: Vec<ElfNote<'a>>,
    /// `e_shoff`, `e_shentsize`, `e_shnum`, checked only by [`Elf::section_notes`].
    sections: (u64, u16, u16),
}

/// Whether `image` starts with the ELF magic (it may still fail to parse).
pub fn is_elf(image: &[u8]) -> bool {
    image.starts_with(b"\x7fELF")
}

/// Little-endian field readers over a slice whose length the caller has checked.
fn le16(b: &[u8], at: usize) -> u16 {
    let mut v = [0u8; 2];
    if let Some(s) = b.get(at..at + 2) {
        v.copy_from_slice(s);
    }
    u16::from_le_bytes(v)
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        v.copy_from_slice(s);
    }
    u32::from_le_bytes(v)
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        v.copy_from_slice(s);
    }
    u64::from_le_bytes(v)
}

/// The name of a machine number, for error messages.
fn machine_name(machine: u16) -> String {
    let name = match machine {
        2 => "SPARC",
        3 => "i386",
        8 => "MIPS",
        20 => "PowerPC",
        21 => "PowerPC64",
        22 => "S/390",
        40 => "ARM",
        50 => "IA-64",
        62 => "x86-64",
        183 => "AArch64",
        243 => "RISC-V",
        258 => "LoongArch",
        _ => return format!("machine {machine}"),
    };
    format!("{name} (machine {machine})")
}

/// The bytes `offset..offset + size` of `image`, or `None` if they are not all inside.
fn range(image: &[u8], offset: u64, size: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = usize::try_from(offset.checked_add(size)?).ok()?;
    image.get(start..end)
}

/// Parse an ELF executable.
pub fn parse(image: &[u8]) -> Result<Elf<'_>, LoadError> {
    if !is_elf(image) {
        return Err(LoadError::UnknownFormat(String::from("no ELF magic")));
    }
    if image.len() < 16 {
        return Err(LoadError::Malformed(format!(
            "truncated ELF identification: the file has {} bytes, e_ident needs 16",
            image.len()
        )));
    }
    let class = match image[4] {
        1 => ElfClass::Elf32,
        2 => ElfClass::Elf64,
        c => {
            return Err(LoadError::Unsupported(format!(
                "ELF class {c} (neither ELFCLASS32 nor ELFCLASS64)"
            )))
        }
    };
    match image[5] {
        1 => {}
        2 => {
            return Err(LoadError::Unsupported(String::from(
                "big-endian ELF (x86 is little-endian)",
            )))
        }
        d => return Err(LoadError::Unsupported(format!("ELF data encoding {d}"))),
    }
    if image[6] != 1 {
        return Err(LoadError::Malformed(format!(
            "ELF identification version {} (expected 1)",
            image[6]
        )));
    }
    let is64 = class == ElfClass::Elf64;
    let ehsize = if is64 { 64 } else { 52 };
    if image.len() < ehsize {
        return Err(LoadError::Malformed(format!(
            "truncated ELF header: the file has {} bytes, the {} header needs {ehsize}",
            image.len(),
            if is64 { "ELF64" } else { "ELF32" }
        )));
    }
    let e_type = le16(image, 16);
    let machine = le16(image, 18);
    match (machine, class) {
        (EM_386, ElfClass::Elf32) | (EM_X86_64, ElfClass::Elf64) => {}
        (EM_386 | EM_X86_64, _) => {
            return Err(LoadError::Unsupported(format!(
                "{} in an {} file ({} needs {})",
                machine_name(machine),
                if is64 { "ELFCLASS64" } else { "ELFCLASS32" },
                machine_name(machine),
                if machine == EM_386 {
                    "ELFCLASS32"
                } else {
                    "ELFCLASS64"
                }
            )))
        }
        _ => {
            return Err(LoadError::Unsupported(format!(
                "{} is not x86",
                machine_name(machine)
            )))
        }
    }
    if e_type != ET_EXEC && e_type != ET_DYN {
        return Err(LoadError::Unsupported(format!(
            "ELF type {e_type} is not an executable (ET_EXEC or ET_DYN)"
        )));
    }
    let version = le32(image, 20);
    if version != 1 {
        return Err(LoadError::Malformed(format!(
            "ELF version {version} (expected 1)"
        )));
    }
    let (entry, phoff, phentsize, phnum) = if is64 {
        (
            le64(image, 24),
            le64(image, 32),
            le16(image, 54),
            le16(image, 56),
        )
    } else {
        (
            u64::from(le32(image, 24)),
            u64::from(le32(image, 28)),
            le16(image, 42),
            le16(image, 44),
        )
    };
    let sections = if is64 {
        (le64(image, 40), le16(image, 58), le16(image, 60))
    } else {
        (u64::from(le32(image, 32)), le16(image, 46), le16(image, 48))
    };
    if phnum == 0xffff {
        return Err(LoadError::Unsupported(String::from(
            "more than 65534 program headers (PN_XNUM)",
        )));
    }
    if phnum == 0 {
        return Err(LoadError::Malformed(String::from("no program headers")));
    }
    let min_phent = if is64 { 56 } else { 32 };
    if phentsize < min_phent {
        return Err(LoadError::Malformed(format!(
            "program header entry size {phentsize} is smaller than {min_phent}"
        )));
    }
    let table_size = u64::from(phnum) * u64::from(phentsize);
    let table = range(image, phoff, table_size).ok_or_else(|| {
        LoadError::Malformed(format!(
            "program header table at offset {phoff:#x} ({phnum} entries of {phentsize} bytes) extends past the end of the file ({} bytes)",
            image.len()
        ))
    })?;

    let mut segments = Vec::new();
    let mut notes = Vec::new();
    for (i, ph) in table.chunks_exact(usize::from(phentsize)).enumerate() {
        let p_type = le32(ph, 0);
        let (flags, offset, vaddr, paddr, filesz, memsz, align) = if is64 {
            (
                le32(ph, 4),
                le64(ph, 8),
                le64(ph, 16),
                le64(ph, 24),
                le64(ph, 32),
                le64(ph, 40),
                le64(ph, 48),
            )
        } else {
            (
                le32(ph, 24),
                u64::from(le32(ph, 4)),
                u64::from(le32(ph, 8)),
                u64::from(le32(ph, 12)),
                u64::from(le32(ph, 16)),
                u64::from(le32(ph, 20)),
                u64::from(le32(ph, 28)),
            )
        };
        match p_type {
            PT_LOAD => {
                if filesz > memsz {
                    return Err(LoadError::Malformed(format!(
                        "segment {i}: p_filesz {filesz:#x} is larger than p_memsz {memsz:#x}"
                    )));
                }
                if range(image, offset, filesz).is_none() {
                    return Err(LoadError::Malformed(format!(
                        "segment {i}: file bytes {offset:#x}+{filesz:#x} extend past the end of the file ({} bytes)",
                        image.len()
                    )));
                }
                // A 32-bit file's physical addresses are 32 bits wide; a 64-bit one's
                // must not wrap.
                let limit = if is64 { u64::MAX } else { 1 << 32 };
                if paddr.checked_add(memsz).is_none_or(|end| end > limit) {
                    return Err(LoadError::Malformed(format!(
                        "segment {i}: physical range {paddr:#x}+{memsz:#x} wraps around the address space"
                    )));
                }
                segments.push(LoadSegment {
                    offset,
                    vaddr,
                    paddr,
                    filesz,
                    memsz,
                    flags,
                });
            }
            PT_NOTE => {
                let bytes = range(image, offset, filesz).ok_or_else(|| {
                    LoadError::Malformed(format!(
                        "note segment {i}: file bytes {offset:#x}+{filesz:#x} extend past the end of the file ({} bytes)",
                        image.len()
                    ))
                })?;
                let label = format!("note segment {i}");
                parse_notes(bytes, if align == 8 { 8 } else { 4 }, &label, &mut notes)?;
            }
            _ => {}
        }
    }
    if segments.is_empty() {
        return Err(LoadError::Malformed(String::from(
            "no loadable (PT_LOAD) segment",
        )));
    }
    Ok(Elf {
        image,
        class,
        machine,
        entry,
        segments,
        notes,
        sections,
    })
}

/// Split a note segment or section (`label` names it in errors) into notes: 4-byte
/// `namesz`, `descsz` and `type`, then the name and the descriptor, each padded to `align`.
fn parse_notes<'a>(
    mut bytes: &'a [u8],
    align: usize,
    label: &str,
    out: &mut Vec<ElfNote<'a>>,
) -> Result<(), LoadError> {
    let bad = |what: &str| LoadError::Malformed(format!("{label}: {what} extends past its end"));
    let pad = |n: usize| n.checked_add(align - 1).map(|v| v & !(align - 1));
    // Fewer than 12 bytes cannot hold a note header: trailing padding.
    while bytes.len() >= 12 {
        let namesz = le32(bytes, 0) as usize;
        let descsz = le32(bytes, 4) as usize;
        let note_type = le32(bytes, 8);
        let rest = &bytes[12..];
        let name_end = pad(namesz).ok_or_else(|| bad("a note name"))?;
        let name = rest.get(..namesz).ok_or_else(|| bad("a note name"))?;
        let rest = rest.get(name_end.min(rest.len())..).unwrap_or(&[]);
        let desc = rest.get(..descsz).ok_or_else(|| bad("a note descriptor"))?;
        let desc_end = pad(descsz).ok_or_else(|| bad("a note descriptor"))?;
        bytes = rest.get(desc_end.min(rest.len())..).unwrap_or(&[]);
        let name_len = name.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
        out.push(ElfNote {
            name: &name[..name_len],
            note_type,
            desc,
        });
    }
    Ok(())
}

impl<'a> Elf<'a> {
    /// The file's class.
    pub fn class(&self) -> ElfClass {
        self.class
    }

    /// `e_machine`: [`EM_386`] or [`EM_X86_64`].
    pub fn machine(&self) -> u16 {
        self.machine
    }

    /// `e_entry`, the entry point as a virtual address.
    pub fn entry(&self) -> u64 {
        self.entry
    }

    /// The entry point as a physical address: `e_entry` moved by `p_paddr - p_vaddr` of
    /// the loadable segment whose virtual range holds it (as GRUB does for multiboot
    /// kernels linked at a high virtual address), or `e_entry` itself if none does.
    pub fn phys_entry(&self) -> u64 {
        self.segments
            .iter()
            .find(|s| self.entry >= s.vaddr && self.entry - s.vaddr < s.memsz)
            .map_or(self.entry, |s| s.paddr.wrapping_add(self.entry - s.vaddr))
    }

    /// The `PT_LOAD` segments, in file order.
    pub fn segments(&self) -> &[LoadSegment] {
        &self.segments
    }

    /// The notes of every `PT_NOTE` segment, in file order.
    pub fn notes(&self) -> &[ElfNote<'a>] {
        &self.notes
    }

    /// The first note with this owner name and type.
    pub fn find_note(&self, name: &[u8], note_type: u32) -> Option<&ElfNote<'a>> {
        self.notes
            .iter()
            .find(|n| n.name == name && n.note_type == note_type)
    }

    /// The notes of every `SHT_NOTE` section, in section order, for kernels whose note
    /// is in a section no `PT_NOTE` segment covers. Checks the section header table
    /// against the file (extended numbering through section 0's `sh_size` included); a
    /// file without a section table has no section notes.
    pub fn section_notes(&self) -> Result<Vec<ElfNote<'a>>, LoadError> {
        let (shoff, shentsize, shnum) = self.sections;
        let mut notes = Vec::new();
        if shoff == 0 {
            return Ok(notes);
        }
        let is64 = self.class == ElfClass::Elf64;
        let min = if is64 { 64 } else { 40 };
        if shentsize < min {
            return Err(LoadError::Malformed(format!(
                "section header entry size {shentsize} is smaller than {min}"
            )));
        }
        let entry = |i: u64| {
            let at = shoff.checked_add(i.checked_mul(u64::from(shentsize))?)?;
            range(self.image, at, u64::from(shentsize))
        };
        let bad_table = |n: u64| {
            LoadError::Malformed(format!(
                "section header table at offset {shoff:#x} ({n} entries of {shentsize} bytes) extends past the end of the file ({} bytes)",
                self.image.len()
            ))
        };
        // With more than 0xff00 sections, e_shnum is 0 and section 0's sh_size counts them.
        let count = if shnum == 0 {
            let first = entry(0).ok_or_else(|| bad_table(1))?;
            if is64 {
                le64(first, 32)
            } else {
                u64::from(le32(first, 20))
            }
        } else {
            u64::from(shnum)
        };
        let table_len = count.checked_mul(u64::from(shentsize));
        if table_len
            .and_then(|n| range(self.image, shoff, n))
            .is_none()
        {
            return Err(bad_table(count));
        }
        for i in 0..count {
            let sh = entry(i).ok_or_else(|| bad_table(count))?;
            if le32(sh, 4) != SHT_NOTE {
                continue;
            }
            let (offset, size, align) = if is64 {
                (le64(sh, 24), le64(sh, 32), le64(sh, 48))
            } else {
                (
                    u64::from(le32(sh, 16)),
                    u64::from(le32(sh, 20)),
                    u64::from(le32(sh, 32)),
                )
            };
            let bytes = range(self.image, offset, size).ok_or_else(|| {
                LoadError::Malformed(format!(
                    "note section {i}: file bytes {offset:#x}+{size:#x} extend past the end of the file ({} bytes)",
                    self.image.len()
                ))
            })?;
            let label = format!("note section {i}");
            parse_notes(bytes, if align == 8 { 8 } else { 4 }, &label, &mut notes)?;
        }
        Ok(notes)
    }

    /// A segment's bytes in the file (`filesz` of them).
    pub fn segment_data(&self, seg: &LoadSegment) -> &'a [u8] {
        range(self.image, seg.offset, seg.filesz).unwrap_or(&[])
    }

    /// The physical range from the lowest segment start to the highest segment end
    /// (segments of size zero included).
    pub fn phys_extent(&self) -> Range<u64> {
        let start = self.segments.iter().map(|s| s.paddr).min().unwrap_or(0);
        let end = self
            .segments
            .iter()
            .map(|s| s.phys_range().end)
            .max()
            .unwrap_or(0);
        start..end
    }

    /// Check that every loadable segment lies inside guest RAM.
    pub fn check_fits(&self, mem: &GuestMemory) -> Result<(), LoadError> {
        for (i, seg) in self.segments.iter().enumerate() {
            if !mem.is_ram_range(seg.paddr, seg.memsz) {
                return Err(LoadError::DoesNotFit(format!(
                    "ELF segment {i} at physical {:#x}..{:#x} ({} bytes) is not inside guest RAM",
                    seg.paddr,
                    seg.phys_range().end,
                    seg.memsz
                )));
            }
        }
        Ok(())
    }

    /// Copy every loadable segment to its physical address and zero its bss. Nothing is
    /// written unless every segment fits in guest RAM ([`Elf::check_fits`]). Returns
    /// [`Elf::phys_extent`].
    pub fn load(&self, mem: &mut GuestMemory) -> Result<Range<u64>, LoadError> {
        self.check_fits(mem)?;
        for seg in &self.segments {
            mem.write(seg.paddr, self.segment_data(seg))?;
            mem.zero_range(seg.paddr + seg.filesz, seg.memsz - seg.filesz)?;
        }
        Ok(self.phys_extent())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloc::vec;

    /// One program header for [`build`].
    pub(crate) struct Ph {
        pub p_type: u32,
        pub offset: u64,
        pub vaddr: u64,
        pub paddr: u64,
        pub filesz: u64,
        pub memsz: u64,
        pub align: u64,
    }

    impl Ph {
        /// A PT_LOAD with vaddr = paddr.
        pub fn load(offset: u64, paddr: u64, filesz: u64, memsz: u64) -> Ph {
            Ph {
                p_type: PT_LOAD,
                offset,
                vaddr: paddr,
                paddr,
                filesz,
                memsz,
                align: 0x1000,
            }
        }
    }

    /// Build an ELF file: the header, the program header table right after it, then
    /// `body` placed at file offset 0x100 (so program headers can point into it).
    pub(crate) fn build(is64: bool, machine: u16, entry: u64, phs: &[Ph], body: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 0x100];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = if is64 { 2 } else { 1 };
        f[5] = 1;
        f[6] = 1;
        f[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
        f[18..20].copy_from_slice(&machine.to_le_bytes());
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        let n = phs.len() as u16;
        if is64 {
            f[24..32].copy_from_slice(&entry.to_le_bytes());
            f[32..40].copy_from_slice(&64u64.to_le_bytes());
            f[52..54].copy_from_slice(&64u16.to_le_bytes());
            f[54..56].copy_from_slice(&56u16.to_le_bytes());
            f[56..58].copy_from_slice(&n.to_le_bytes());
            f.resize(64 + 56 * phs.len().max(1), 0);
            for (i, ph) in phs.iter().enumerate() {
                let b = &mut f[64 + 56 * i..64 + 56 * (i + 1)];
                b[0..4].copy_from_slice(&ph.p_type.to_le_bytes());
                b[4..8].copy_from_slice(&7u32.to_le_bytes());
                b[8..16].copy_from_slice(&ph.offset.to_le_bytes());
                b[16..24].copy_from_slice(&ph.vaddr.to_le_bytes());
                b[24..32].copy_from_slice(&ph.paddr.to_le_bytes());
                b[32..40].copy_from_slice(&ph.filesz.to_le_bytes());
                b[40..48].copy_from_slice(&ph.memsz.to_le_bytes());
                b[48..56].copy_from_slice(&ph.align.to_le_bytes());
            }
        } else {
            f[24..28].copy_from_slice(&(entry as u32).to_le_bytes());
            f[28..32].copy_from_slice(&52u32.to_le_bytes());
            f[40..42].copy_from_slice(&52u16.to_le_bytes());
            f[42..44].copy_from_slice(&32u16.to_le_bytes());
            f[44..46].copy_from_slice(&n.to_le_bytes());
            f.resize(52 + 32 * phs.len().max(1), 0);
            for (i, ph) in phs.iter().enumerate() {
                let b = &mut f[52 + 32 * i..52 + 32 * (i + 1)];
                b[0..4].copy_from_slice(&ph.p_type.to_le_bytes());
                b[4..8].copy_from_slice(&(ph.offset as u32).to_le_bytes());
                b[8..12].copy_from_slice(&(ph.vaddr as u32).to_le_bytes());
                b[12..16].copy_from_slice(&(ph.paddr as u32).to_le_bytes());
                b[16..20].copy_from_slice(&(ph.filesz as u32).to_le_bytes());
                b[20..24].copy_from_slice(&(ph.memsz as u32).to_le_bytes());
                b[24..28].copy_from_slice(&7u32.to_le_bytes());
                b[28..32].copy_from_slice(&(ph.align as u32).to_le_bytes());
            }
        }
        assert!(f.len() <= 0x100, "program headers overflow into the body");
        f.resize(0x100, 0);
        f.extend_from_slice(body);
        f
    }

    fn malformed(r: Result<Elf<'_>, LoadError>, needle: &str) {
        match r {
            Err(LoadError::Malformed(s)) => assert!(s.contains(needle), "{s:?} lacks {needle:?}"),
            other => panic!("expected Malformed({needle:?}), got {other:?}"),
        }
    }

    #[test]
    fn loads_elf32_and_elf64_with_bss() {
        let body: Vec<u8> = (1..=0x30u8).collect();
        for is64 in [false, true] {
            let machine = if is64 { EM_X86_64 } else { EM_386 };
            let phs = [
                Ph::load(0x100, 0x10_0000, 0x20, 0x40),
                Ph::load(0x120, 0x20_0000, 0x10, 0x10),
            ];
            let f = build(is64, machine, 0x10_0008, &phs, &body);
            let elf = parse(&f).unwrap();
            assert_eq!(
                elf.class(),
                if is64 {
                    ElfClass::Elf64
                } else {
                    ElfClass::Elf32
                }
            );
            assert_eq!(elf.machine(), machine);
            assert_eq!(elf.entry(), 0x10_0008);
            assert_eq!(elf.segments().len(), 2);
            let mut mem = GuestMemory::with_ram(0x30_0000).unwrap();
            // Garbage where the bss goes: it must be zeroed.
            mem.write(0x10_0020, &[0xff; 0x40]).unwrap();
            assert_eq!(elf.load(&mut mem).unwrap(), 0x10_0000..0x20_0010);
            let mut got = [0u8; 0x60];
            mem.read(0x10_0000, &mut got).unwrap();
            assert_eq!(&got[..0x20], &body[..0x20]);
            assert!(got[0x20..0x40].iter().all(|&b| b == 0), "bss zeroed");
            assert!(got[0x40..].iter().all(|&b| b == 0xff), "nothing past memsz");
            let mut got = [0u8; 0x10];
            mem.read(0x20_0000, &mut got).unwrap();
            assert_eq!(&got[..], &body[0x20..0x30]);
        }
    }

    #[test]
    fn physical_entry_follows_the_segment() {
        let mut phs = [Ph::load(0x100, 0x10_0000, 0x10, 0x10)];
        phs[0].vaddr = 0xffff_ffff_8010_0000;
        let f = build(true, EM_X86_64, 0xffff_ffff_8010_0004, &phs, &[0; 0x10]);
        let elf = parse(&f).unwrap();
        assert_eq!(elf.phys_entry(), 0x10_0004);
        let f = build(true, EM_X86_64, 0x1234, &phs, &[0; 0x10]);
        assert_eq!(parse(&f).unwrap().phys_entry(), 0x1234);
    }

    #[test]
    fn notes_are_parsed() {
        // Two notes: "Xen" type 18 with a 4-byte descriptor, "GNU" type 3 with 5 bytes.
        let mut notes = Vec::new();
        for (name, ty, desc) in [
            (&b"Xen\0"[..], 18u32, &[0x00, 0x00, 0x10, 0x00][..]),
            (b"GNU\0", 3, &[1, 2, 3, 4, 5]),
        ] {
            notes.extend_from_slice(&(name.len() as u32).to_le_bytes());
            notes.extend_from_slice(&(desc.len() as u32).to_le_bytes());
            notes.extend_from_slice(&ty.to_le_bytes());
            notes.extend_from_slice(name);
            notes.extend_from_slice(desc);
            while notes.len() % 4 != 0 {
                notes.push(0);
            }
        }
        let n = notes.len() as u64;
        let mut body = vec![0x90u8; 0x10];
        body.extend_from_slice(&notes);
        let phs = [
            Ph::load(0x100, 0x10_0000, 0x10, 0x10),
            Ph {
                p_type: PT_NOTE,
                offset: 0x110,
                vaddr: 0,
                paddr: 0,
                filesz: n,
                memsz: n,
                align: 4,
            },
        ];
        let f = build(false, EM_386, 0x10_0000, &phs, &body);
        let elf = parse(&f).unwrap();
        assert_eq!(elf.notes().len(), 2);
        let xen = elf.find_note(b"Xen", XEN_ELFNOTE_PHYS32_ENTRY).unwrap();
        assert_eq!(xen.desc, &[0x00, 0x00, 0x10, 0x00]);
        assert_eq!(elf.notes()[1].desc, &[1, 2, 3, 4, 5]);
        assert!(elf.find_note(b"Xen", 3).is_none());
        // A note whose descriptor runs past the segment.
        let mut bad = f.clone();
        bad[0x110 + 4] = 0x40;
        malformed(parse(&bad), "note descriptor");
    }

    #[test]
    fn bad_inputs() {
        assert!(matches!(parse(&[]), Err(LoadError::UnknownFormat(_))));
        assert!(matches!(
            parse(b"MZ\x90\0"),
            Err(LoadError::UnknownFormat(_))
        ));
        malformed(parse(b"\x7fELF\x02\x01"), "e_ident");
        let good = build(
            true,
            EM_X86_64,
            0x10_0000,
            &[Ph::load(0x100, 0x10_0000, 0x10, 0x10)],
            &[0; 0x10],
        );
        assert!(parse(&good).is_ok());
        malformed(parse(&good[..40]), "ELF64 header needs 64");
        let good32 = build(
            false,
            EM_386,
            0x10_0000,
            &[Ph::load(0x100, 0x10_0000, 0x10, 0x10)],
            &[0; 0x10],
        );
        malformed(parse(&good32[..51]), "ELF32 header needs 52");
        // Truncated program header table.
        malformed(parse(&good[..64 + 30]), "program header table");
        // Segment beyond the end of the file.
        let f = build(
            true,
            EM_X86_64,
            0,
            &[Ph::load(0x100, 0x10_0000, 0x11, 0x11)],
            &[0; 0x10],
        );
        malformed(parse(&f), "segment 0: file bytes 0x100+0x11");
        // Offset + size overflowing.
        let f = build(
            true,
            EM_X86_64,
            0,
            &[Ph::load(u64::MAX, 0x10_0000, 2, 2)],
            &[0; 0x10],
        );
        malformed(parse(&f), "past the end");
        // filesz > memsz.
        let f = build(
            true,
            EM_X86_64,
            0,
            &[Ph::load(0x100, 0x10_0000, 0x10, 0x8)],
            &[0; 0x10],
        );
        malformed(parse(&f), "larger than p_memsz");
        // A physical range that wraps.
        let f = build(
            true,
            EM_X86_64,
            0,
            &[Ph::load(0x100, u64::MAX - 4, 0x10, 0x10)],
            &[0; 0x10],
        );
        malformed(parse(&f), "wraps");
        let f = build(
            false,
            EM_386,
            0,
            &[Ph::load(0x100, 0xffff_fff8, 0x10, 0x10)],
            &[0; 0x10],
        );
        malformed(parse(&f), "wraps");
        // No PT_LOAD.
        let f = build(true, EM_X86_64, 0, &[], &[]);
        malformed(parse(&f), "no program headers");
        // Other machines, byte order, class mismatch.
        let arm = build(false, 40, 0, &[Ph::load(0x100, 0, 0, 0)], &[]);
        match parse(&arm) {
            Err(LoadError::Unsupported(s)) => assert!(s.contains("ARM"), "{s}"),
            other => panic!("{other:?}"),
        }
        let mismatch = build(false, EM_X86_64, 0, &[Ph::load(0x100, 0, 0, 0)], &[]);
        assert!(matches!(parse(&mismatch), Err(LoadError::Unsupported(_))));
        let mut be = good.clone();
        be[5] = 2;
        assert!(matches!(parse(&be), Err(LoadError::Unsupported(s)) if s.contains("big-endian")));
        let mut rel = good.clone();
        rel[16] = 1;
        assert!(matches!(parse(&rel), Err(LoadError::Unsupported(s)) if s.contains("type 1")));
        let mut small_ph = good.clone();
        small_ph[54] = 20;
        malformed(parse(&small_ph), "entry size");
    }

    #[test]
    fn segment_beyond_ram_writes_nothing() {
        let phs = [
            Ph::load(0x100, 0x1000, 0x10, 0x10),
            Ph::load(0x100, 0x1_0000, 0x10, 0x2000),
        ];
        let f = build(true, EM_X86_64, 0x1000, &phs, &[0xaa; 0x10]);
        let elf = parse(&f).unwrap();
        let mut mem = GuestMemory::with_ram(0x1_1000).unwrap();
        match elf.load(&mut mem) {
            Err(LoadError::DoesNotFit(s)) => assert!(s.contains("segment 1"), "{s}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            mem.read_u8(0x1000).unwrap(),
            0,
            "the first segment was not written"
        );
    }
}
