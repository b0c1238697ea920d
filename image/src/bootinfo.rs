//! The boot information from a multiboot2 or PVH loader: RAM, modules, command line.
//!
//! Everything here reads the loader's structures through [`Phys`], checks every length
//! and address, and copies what it keeps (strings included) into a fixed-size
//! [`BootInfo`], so malformed boot data is an error message, never a fault or a wild
//! read. The module has no dependency on the image, so the host can test it: xtask's
//! tests include this file.

use core::fmt;

/// The entry point code the boot code passes for the multiboot2 (ELF) entry.
pub const ENTRY_MULTIBOOT2: u32 = 1;
/// The entry point code the boot code passes for the PVH entry.
pub const ENTRY_PVH: u32 = 2;
/// What multiboot2 loaders leave in EAX.
pub const MULTIBOOT2_MAGIC: u32 = 0x36D7_6289;
/// The first field of PVH's `hvm_start_info`.
pub const PVH_MAGIC: u32 = 0x336E_C578;
/// Memory-map type of usable RAM (multiboot2, PVH and E820 agree).
pub const RAM_TYPE: u32 = 1;
/// At most this many RAM ranges are kept (the rest are ignored).
pub const MAX_RANGES: usize = 32;
/// At most this many modules.
pub const MAX_MODULES: usize = 8;
/// Command lines are kept up to this many bytes (the rest is cut off).
pub const MAX_TEXT: usize = 240;
/// A multiboot2 information structure larger than this is taken as corrupt.
const MAX_MB2_SIZE: u32 = 1 << 20;
/// A PVH memory map or module list longer than this is taken as corrupt.
const MAX_PVH_ENTRIES: u32 = 1024;

/// Reads physical memory.
pub trait Phys {
    /// Fill `buf` from physical address `addr`; `false` if that memory cannot be read.
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool;
}

/// A half-open physical address range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Range {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl Range {
    /// The range's length.
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether the range holds no byte.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

/// A command line or module string, copied out of the loader's memory.
#[derive(Clone, Copy)]
pub struct Text {
    buf: [u8; MAX_TEXT],
    len: usize,
}

impl Default for Text {
    fn default() -> Self {
        Text {
            buf: [0; MAX_TEXT],
            len: 0,
        }
    }
}

impl Text {
    /// The text up to its first invalid UTF-8 byte.
    pub fn as_str(&self) -> &str {
        let bytes = &self.buf[..self.len];
        match core::str::from_utf8(bytes) {
            Ok(s) => s,
            // The prefix before the error is valid by definition.
            Err(e) => core::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or(""),
        }
    }

    fn push(&mut self, b: u8) -> bool {
        if self.len < MAX_TEXT {
            self.buf[self.len] = b;
            self.len += 1;
            true
        } else {
            false
        }
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// One boot module.
#[derive(Clone, Copy, Debug, Default)]
pub struct ModuleRef {
    /// Where its bytes are.
    pub range: Range,
    /// Its string (GRUB: what follows the path on the `module2` line).
    pub cmdline: Text,
}

/// Which loader started the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Multiboot2 (GRUB).
    Multiboot2,
    /// PVH (QEMU's `-kernel`).
    Pvh,
}

impl Protocol {
    /// The protocol's name.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Multiboot2 => "multiboot2",
            Protocol::Pvh => "PVH",
        }
    }
}

/// What the image learnt from its loader.
#[derive(Clone, Debug)]
pub struct BootInfo {
    /// The loader.
    pub protocol: Protocol,
    ram: [Range; MAX_RANGES],
    ram_count: usize,
    modules: [ModuleRef; MAX_MODULES],
    module_count: usize,
    /// The image's own command line.
    pub cmdline: Text,
}

impl BootInfo {
    fn new(protocol: Protocol) -> BootInfo {
        BootInfo {
            protocol,
            ram: [Range::default(); MAX_RANGES],
            ram_count: 0,
            modules: [ModuleRef::default(); MAX_MODULES],
            module_count: 0,
            cmdline: Text::default(),
        }
    }

    /// The usable RAM ranges, as the loader reported them.
    pub fn ram(&self) -> &[Range] {
        &self.ram[..self.ram_count]
    }

    /// The boot modules, in order.
    pub fn modules(&self) -> &[ModuleRef] {
        &self.modules[..self.module_count]
    }

    fn add_ram(&mut self, start: u64, len: u64) {
        let Some(end) = start.checked_add(len) else {
            return;
        };
        if len > 0 && self.ram_count < MAX_RANGES {
            self.ram[self.ram_count] = Range { start, end };
            self.ram_count += 1;
        }
    }

    fn add_module(&mut self, start: u64, end: u64, cmdline: Text) -> Result<(), BootError> {
        if end <= start {
            return Err(BootError::BadModule {
                index: self.module_count,
                start,
                end,
            });
        }
        if self.module_count == MAX_MODULES {
            return Err(BootError::TooManyModules);
        }
        self.modules[self.module_count] = ModuleRef {
            range: Range { start, end },
            cmdline,
        };
        self.module_count += 1;
        Ok(())
    }
}

/// Why the boot information is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootError {
    /// Neither a multiboot2 nor a PVH start.
    UnknownLoader {
        /// EAX at entry.
        eax: u32,
        /// Which entry point ran (1 multiboot2, 2 PVH).
        entry: u32,
    },
    /// A structure lies where memory cannot be read.
    Unreadable {
        /// Which structure.
        what: &'static str,
        /// Its address.
        addr: u64,
    },
    /// A structure is inconsistent.
    Malformed(&'static str),
    /// A module's range is empty or inverted.
    BadModule {
        /// The module's position.
        index: usize,
        /// Its start.
        start: u64,
        /// Its end.
        end: u64,
    },
    /// More modules than the image keeps.
    TooManyModules,
    /// No RAM range at all.
    NoMemoryMap,
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootError::UnknownLoader { eax, entry } => write!(
                f,
                "not started by a multiboot2 or PVH loader (EAX {eax:#x}, entry {entry})"
            ),
            BootError::Unreadable { what, addr } => {
                write!(f, "boot data unreadable: {what} at {addr:#x}")
            }
            BootError::Malformed(what) => write!(f, "malformed boot data: {what}"),
            BootError::BadModule { index, start, end } => {
                write!(
                    f,
                    "boot module {index} has a bad range {start:#x}..{end:#x}"
                )
            }
            BootError::TooManyModules => write!(f, "more than {MAX_MODULES} boot modules"),
            BootError::NoMemoryMap => write!(f, "the loader gave no usable RAM range"),
        }
    }
}

fn read_u32(phys: &impl Phys, addr: u64, what: &'static str) -> Result<u32, BootError> {
    let mut b = [0u8; 4];
    if phys.read(addr, &mut b) {
        Ok(u32::from_le_bytes(b))
    } else {
        Err(BootError::Unreadable { what, addr })
    }
}

fn read_u64(phys: &impl Phys, addr: u64, what: &'static str) -> Result<u64, BootError> {
    let mut b = [0u8; 8];
    if phys.read(addr, &mut b) {
        Ok(u64::from_le_bytes(b))
    } else {
        Err(BootError::Unreadable { what, addr })
    }
}

/// Copy the NUL-terminated string at `addr`, reading at most `limit` bytes (a string with
/// no NUL within them ends there) and keeping the first [`MAX_TEXT`].
fn read_text(
    phys: &impl Phys,
    addr: u64,
    limit: u64,
    what: &'static str,
) -> Result<Text, BootError> {
    let mut text = Text::default();
    for i in 0..limit.min(4096) {
        let at = addr.checked_add(i).ok_or(BootError::Malformed(what))?;
        let mut b = [0u8; 1];
        if !phys.read(at, &mut b) {
            return Err(BootError::Unreadable { what, addr: at });
        }
        if b[0] == 0 || !text.push(b[0]) {
            break;
        }
    }
    Ok(text)
}

/// Parse what the loader handed over: `eax` and `ebx` at entry, `entry` the entry point
/// that ran (1: the multiboot2/ELF entry, 2: the PVH entry).
pub fn parse(phys: &impl Phys, eax: u32, ebx: u32, entry: u32) -> Result<BootInfo, BootError> {
    let info = match (entry, eax) {
        (ENTRY_MULTIBOOT2, MULTIBOOT2_MAGIC) => parse_multiboot2(phys, u64::from(ebx))?,
        (ENTRY_PVH, _) => parse_pvh(phys, u64::from(ebx))?,
        _ => return Err(BootError::UnknownLoader { eax, entry }),
    };
    if info.ram_count == 0 {
        return Err(BootError::NoMemoryMap);
    }
    Ok(info)
}

/// Parse a multiboot2 information structure at `addr`.
pub fn parse_multiboot2(phys: &impl Phys, addr: u64) -> Result<BootInfo, BootError> {
    if addr == 0 || addr & 7 != 0 {
        return Err(BootError::Malformed(
            "multiboot2 information not 8-byte aligned",
        ));
    }
    let total = read_u32(phys, addr, "multiboot2 information")?;
    if !(16..=MAX_MB2_SIZE).contains(&total) {
        return Err(BootError::Malformed(
            "multiboot2 information size out of range",
        ));
    }
    let end = addr + u64::from(total);
    let mut info = BootInfo::new(Protocol::Multiboot2);
    let mut basic: Option<(u32, u32)> = None;
    let mut saw_mmap = false;
    let mut tag = addr + 8;
    loop {
        if tag + 8 > end {
            return Err(BootError::Malformed("multiboot2 tags run past the end"));
        }
        let kind = read_u32(phys, tag, "multiboot2 tag")?;
        let size = read_u32(phys, tag + 4, "multiboot2 tag")?;
        if size < 8 || tag + u64::from(size) > end {
            return Err(BootError::Malformed("multiboot2 tag size out of range"));
        }
        let body = tag + 8;
        let body_len = u64::from(size) - 8;
        match kind {
            0 => break,
            1 => info.cmdline = read_text(phys, body, body_len, "multiboot2 command line")?,
            3 => {
                if body_len < 8 {
                    return Err(BootError::Malformed("multiboot2 module tag too short"));
                }
                let start = read_u32(phys, body, "multiboot2 module tag")?;
                let stop = read_u32(phys, body + 4, "multiboot2 module tag")?;
                let name = read_text(phys, body + 8, body_len - 8, "multiboot2 module string")?;
                info.add_module(u64::from(start), u64::from(stop), name)?;
            }
            4 if body_len >= 8 => {
                let lower = read_u32(phys, body, "multiboot2 basic memory tag")?;
                let upper = read_u32(phys, body + 4, "multiboot2 basic memory tag")?;
                basic = Some((lower, upper));
            }
            6 => {
                if body_len < 8 {
                    return Err(BootError::Malformed("multiboot2 memory map tag too short"));
                }
                let entry_size = read_u32(phys, body, "multiboot2 memory map")?;
                if entry_size < 24 || entry_size & 7 != 0 {
                    return Err(BootError::Malformed(
                        "multiboot2 memory map entry size out of range",
                    ));
                }
                saw_mmap = true;
                let mut at = body + 8;
                while at + u64::from(entry_size) <= body + body_len {
                    let base = read_u64(phys, at, "multiboot2 memory map")?;
                    let len = read_u64(phys, at + 8, "multiboot2 memory map")?;
                    let kind = read_u32(phys, at + 16, "multiboot2 memory map")?;
                    if kind == RAM_TYPE {
                        info.add_ram(base, len);
                    }
                    at += u64::from(entry_size);
                }
            }
            _ => {}
        }
        // Tags start on 8-byte boundaries.
        tag = (tag + u64::from(size) + 7) & !7;
    }
    if !saw_mmap {
        if let Some((_, upper_kib)) = basic {
            // mem_upper: KiB of RAM from 1 MiB on.
            info.add_ram(1 << 20, u64::from(upper_kib) * 1024);
        }
    }
    Ok(info)
}

/// Parse a PVH `hvm_start_info` at `addr`.
pub fn parse_pvh(phys: &impl Phys, addr: u64) -> Result<BootInfo, BootError> {
    if addr == 0 {
        return Err(BootError::Malformed("PVH start info at address 0"));
    }
    let magic = read_u32(phys, addr, "PVH start info")?;
    if magic != PVH_MAGIC {
        return Err(BootError::Malformed("PVH start info magic is wrong"));
    }
    let version = read_u32(phys, addr + 4, "PVH start info")?;
    let nr_modules = read_u32(phys, addr + 12, "PVH start info")?;
    let modlist = read_u64(phys, addr + 16, "PVH start info")?;
    let cmdline = read_u64(phys, addr + 24, "PVH start info")?;
    let mut info = BootInfo::new(Protocol::Pvh);
    if cmdline != 0 {
        info.cmdline = read_text(phys, cmdline, 4096, "PVH command line")?;
    }
    if nr_modules > MAX_PVH_ENTRIES {
        return Err(BootError::Malformed("PVH module count out of range"));
    }
    for i in 0..u64::from(nr_modules) {
        let entry = modlist
            .checked_add(i * 32)
            .ok_or(BootError::Malformed("PVH module list address overflows"))?;
        let paddr = read_u64(phys, entry, "PVH module list")?;
        let size = read_u64(phys, entry + 8, "PVH module list")?;
        let string = read_u64(phys, entry + 16, "PVH module list")?;
        let name = if string != 0 {
            read_text(phys, string, 4096, "PVH module string")?
        } else {
            Text::default()
        };
        let end = paddr.checked_add(size).ok_or(BootError::BadModule {
            index: info.module_count,
            start: paddr,
            end: u64::MAX,
        })?;
        info.add_module(paddr, end, name)?;
    }
    if version >= 1 {
        let memmap = read_u64(phys, addr + 40, "PVH start info")?;
        let entries = read_u32(phys, addr + 48, "PVH start info")?;
        if entries > MAX_PVH_ENTRIES {
            return Err(BootError::Malformed("PVH memory map length out of range"));
        }
        for i in 0..u64::from(entries) {
            let entry = memmap
                .checked_add(i * 24)
                .ok_or(BootError::Malformed("PVH memory map address overflows"))?;
            let base = read_u64(phys, entry, "PVH memory map")?;
            let len = read_u64(phys, entry + 8, "PVH memory map")?;
            let kind = read_u32(phys, entry + 16, "PVH memory map")?;
            if kind == RAM_TYPE {
                info.add_ram(base, len);
            }
        }
    }
    Ok(info)
}

/// The largest page-aligned piece of `ram` inside `floor..ceiling` that overlaps none of
/// `reserved`.
pub fn largest_free(ram: &[Range], reserved: &[Range], floor: u64, ceiling: u64) -> Option<Range> {
    let mut best: Option<Range> = None;
    for r in ram {
        let start = r.start.max(floor);
        let end = r.end.min(ceiling);
        // Cut the range at each reserved range, keeping the pieces in between.
        let mut cursor = start;
        loop {
            // The reserved range that starts first among those still ahead of the cursor.
            let next = reserved
                .iter()
                .filter(|x| !x.is_empty() && x.end > cursor && x.start < end)
                .min_by_key(|x| x.start);
            let piece_end = next.map_or(end, |x| x.start.max(cursor));
            let piece = Range {
                start: (cursor + 0xfff) & !0xfff,
                end: piece_end & !0xfff,
            };
            if !piece.is_empty() && best.is_none_or(|b| piece.len() > b.len()) {
                best = Some(piece);
            }
            match next {
                Some(x) if x.end < end => cursor = x.end,
                _ => break,
            }
        }
    }
    best
}
