//! The Linux x86 boot protocol (Linux's `Documentation/arch/x86/boot.rst`) for bzImage
//! kernels, entered through the 64-bit boot protocol without running the kernel's
//! real-mode setup code.
//!
//! [`parse_header`] checks the setup header at file offset 0x1F1 against the file:
//!
//! - the boot flag 0xAA55 at 0x1FE and the "HdrS" magic at 0x202;
//! - protocol version 2.06 or later (the first with `cmdline_size`), and a setup header
//!   whose length (`0x202` plus the short jump's offset at 0x201) covers every field of
//!   that version;
//! - `setup_sects` (0 means 4): the setup code, and after it the protected-mode kernel
//!   (`syssize` paragraphs of it at least), lie inside the file; `payload_offset` and
//!   `payload_length` lie inside the protected-mode kernel, and `kernel_info_offset`
//!   points at a "LToP" structure inside it;
//! - `loadflags` has LOADED_HIGH (a zImage is not loaded);
//! - a relocatable kernel's `kernel_alignment` is a power of two.
//!
//! [`load_bzimage`] then places, checking everything before it writes anything:
//!
//! - the protected-mode kernel at `pref_address` if `init_size` bytes from there fit in
//!   usable RAM below the end of low RAM, otherwise (relocatable kernels) at the lowest
//!   `kernel_alignment`-aligned address from 1 MiB where they fit; a kernel that is not
//!   relocatable goes at `pref_address` (1 MiB before protocol 2.10) or nowhere. A
//!   relocatable kernel runs from no lower than `pref_address` wherever it is loaded
//!   (see [`place_kernel`]), and the check counts that;
//! - the initrd as high as possible below `initrd_addr_max` and the end of low RAM,
//!   page aligned, clear of the kernel's `init_size` span (see [`super::linux`]);
//! - the command line (at most `cmdline_size` characters), the zero page, the GDT and
//!   page tables in the boot area described in [`super::linux`].
//!
//! The zero page is zeroed, then holds a copy of the setup header as the file has it
//! (only its own bytes), with what a loader writes: `vid_mode` 0xFFFF (normal),
//! `type_of_loader` 0xFF (no assigned id), `code32_start` the load address,
//! `ramdisk_image`/`ramdisk_size` and `cmd_line_ptr` with their `ext_` high halves,
//! `setup_data` 0, `hardware_subarch` 0 (PC), `acpi_rsdp_addr` when the caller gives an
//! RSDP and the protocol is 2.14 or later, and the memory map ([`super::e820`]) in
//! `e820_table`. `heap_end_ptr` and CAN_USE_HEAP concern the real-mode setup code,
//! which does not run; they stay as the file has them.
//!
//! Entry, for a kernel with XLF_KERNEL_64 in `xloadflags`: 64-bit mode at the load
//! address + 0x200, paging on with the first 4 GiB identity-mapped by 2 MiB pages (the
//! kernel, zero page, command line and initrd all lie there), CS = `__BOOT_CS` (0x10, a
//! 64-bit code segment), DS = ES = SS (and FS, GS) = `__BOOT_DS` (0x18, flat data),
//! interrupts off, RSI = the zero page. A kernel without XLF_KERNEL_64 (a 32-bit one) is
//! entered through the 32-bit boot protocol instead: protected mode with paging off at the
//! load address, flat 32-bit `__BOOT_CS` and `__BOOT_DS`, ESI = the zero page, EBP = EDI
//! = EBX = 0.

use super::e820::{MemoryMap, HIGH_MEMORY};
use super::linux::{
    self, check_cmdline, place_initrd, put, LinuxBoot, LinuxLayout, BOOT_CS, BOOT_DS,
    BOOT_GDT_ADDR, BOOT_PARAMS_ADDR, CMDLINE_ADDR, PAGE, PAGE_TABLES_ADDR,
};
use super::{BootState, LoadError};
use crate::arch::{CR0_ET, CR0_PE, CR0_PG, CR4_PAE, EFER_LMA, EFER_LME};
use crate::mmu::memory::GuestMemory;
use crate::ops::{DescriptorTable, Gpr, SegReg, Segment};
use alloc::format;
use alloc::string::String;
use alloc::vec;
use core::ops::Range;

/// The boot flag at 0x1FE.
pub const BOOT_FLAG: u16 = 0xAA55;
/// The setup header magic "HdrS" at 0x202.
pub const HEADER_MAGIC: u32 = 0x5372_6448;
/// The oldest boot protocol loaded: 2.06, the first to state `cmdline_size`.
pub const MIN_VERSION: u16 = 0x0206;
/// `loadflags`: the protected-mode kernel is loaded at 1 MiB (a bzImage).
pub const LOADED_HIGH: u8 = 1 << 0;
/// `loadflags`: `heap_end_ptr` is valid (for the real-mode setup code).
pub const CAN_USE_HEAP: u8 = 1 << 7;
/// `xloadflags`: the kernel has the 64-bit entry point at its start + 0x200.
pub const XLF_KERNEL_64: u16 = 1 << 0;
/// `xloadflags`: the kernel, zero page, command line and initrd may lie above 4 GiB.
pub const XLF_CAN_BE_LOADED_ABOVE_4G: u16 = 1 << 1;
/// `type_of_loader` of a loader without an assigned id.
pub const TYPE_OF_LOADER_UNDEFINED: u8 = 0xFF;
/// How many entries the zero page's `e820_table` holds.
pub const E820_MAX_ENTRIES_ZEROPAGE: usize = 128;
/// The 64-bit entry point's offset from the start of the protected-mode kernel.
pub const ENTRY_64_OFFSET: u64 = 0x200;
/// The size of the zero page (`struct boot_params`).
pub const BOOT_PARAMS_SIZE: usize = 4096;

/// Offsets of the setup header's fields, in the file and in `struct boot_params` alike.
mod hdr {
    pub const SETUP_SECTS: usize = 0x1f1;
    pub const SYSSIZE: usize = 0x1f4;
    pub const VID_MODE: usize = 0x1fa;
    pub const BOOT_FLAG: usize = 0x1fe;
    pub const JUMP: usize = 0x200;
    pub const HEADER: usize = 0x202;
    pub const VERSION: usize = 0x206;
    pub const TYPE_OF_LOADER: usize = 0x210;
    pub const LOADFLAGS: usize = 0x211;
    pub const CODE32_START: usize = 0x214;
    pub const RAMDISK_IMAGE: usize = 0x218;
    pub const RAMDISK_SIZE: usize = 0x21c;
    pub const CMD_LINE_PTR: usize = 0x228;
    pub const INITRD_ADDR_MAX: usize = 0x22c;
    pub const KERNEL_ALIGNMENT: usize = 0x230;
    pub const RELOCATABLE_KERNEL: usize = 0x234;
    pub const XLOADFLAGS: usize = 0x236;
    pub const CMDLINE_SIZE: usize = 0x238;
    pub const HARDWARE_SUBARCH: usize = 0x23c;
    pub const PAYLOAD_OFFSET: usize = 0x248;
    pub const PAYLOAD_LENGTH: usize = 0x24c;
    pub const SETUP_DATA: usize = 0x250;
    pub const PREF_ADDRESS: usize = 0x258;
    pub const INIT_SIZE: usize = 0x260;
    pub const KERNEL_INFO_OFFSET: usize = 0x268;
}

/// Offsets of the zero page's own fields (outside the setup header).
mod zp {
    pub const ACPI_RSDP_ADDR: usize = 0x070;
    pub const EXT_RAMDISK_IMAGE: usize = 0x0c0;
    pub const EXT_RAMDISK_SIZE: usize = 0x0c4;
    pub const EXT_CMD_LINE_PTR: usize = 0x0c8;
    pub const E820_ENTRIES: usize = 0x1e8;
    pub const E820_TABLE: usize = 0x2d0;
    pub const E820_ENTRY_SIZE: usize = 20;
}

/// The end of the setup header each protocol version defines fields up to.
fn header_end_for(version: u16) -> usize {
    match version {
        0x020f.. => 0x26c,
        0x020b.. => 0x268,
        0x020a => 0x264,
        0x0209 => 0x258,
        0x0208 => 0x250,
        0x0207 => 0x248,
        _ => 0x23c,
    }
}

/// A protocol version as the documentation spells it ("2.15").
fn version_text(version: u16) -> String {
    format!("{}.{:02}", version >> 8, version & 0xff)
}

/// The setup header of a bzImage, checked against its file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetupHeader {
    /// Boot protocol version, `(major << 8) | minor`.
    pub version: u16,
    /// One past the header's last byte in the file (`0x202` + the jump's offset).
    pub header_end: usize,
    /// `setup_sects` as the file has it (0 means 4).
    pub setup_sects: u8,
    /// `syssize`: the protected-mode kernel's size in 16-byte paragraphs.
    pub syssize: u32,
    /// `loadflags`.
    pub loadflags: u8,
    /// `initrd_addr_max`: the highest address the initrd may occupy.
    pub initrd_addr_max: u32,
    /// `kernel_alignment`.
    pub kernel_alignment: u32,
    /// `relocatable_kernel` is non-zero.
    pub relocatable: bool,
    /// `xloadflags` (0 before protocol 2.12).
    pub xloadflags: u16,
    /// `cmdline_size`: the longest command line, without its NUL.
    pub cmdline_size: u32,
    /// `payload_offset` (0 before protocol 2.08).
    pub payload_offset: u32,
    /// `payload_length` (0 before protocol 2.08).
    pub payload_length: u32,
    /// `pref_address` (0 before protocol 2.10).
    pub pref_address: u64,
    /// `init_size` (0 before protocol 2.10).
    pub init_size: u32,
    /// `kernel_info_offset` (0 before protocol 2.15).
    pub kernel_info_offset: u32,
}

impl SetupHeader {
    /// The file offset of the protected-mode kernel: the boot sector and setup code,
    /// `(setup_sects + 1) * 512` bytes (`setup_sects` 0 counting as 4).
    pub fn setup_size(&self) -> usize {
        let sects = if self.setup_sects == 0 {
            4
        } else {
            usize::from(self.setup_sects)
        };
        (sects + 1) * 512
    }

    /// Whether the kernel has the 64-bit entry point (XLF_KERNEL_64).
    pub fn has_64bit_entry(&self) -> bool {
        self.xloadflags & XLF_KERNEL_64 != 0
    }
}

/// Little-endian read of `width` bytes at `at` (zero where the slice ends).
fn le(image: &[u8], at: usize, width: usize) -> u64 {
    let mut v = [0u8; 8];
    if let Some(s) = image.get(at..at + width) {
        v[..width].copy_from_slice(s);
    }
    u64::from_le_bytes(v)
}

/// Whether `image` looks like a Linux kernel with a boot protocol header: the boot flag
/// at 0x1FE and "HdrS" at 0x202 (it may still fail [`parse_header`]).
pub fn is_bzimage(image: &[u8]) -> bool {
    image.len() >= hdr::VERSION
        && le(image, hdr::BOOT_FLAG, 2) == u64::from(BOOT_FLAG)
        && le(image, hdr::HEADER, 4) == u64::from(HEADER_MAGIC)
}

/// Parse and check the setup header (see the module documentation).
pub fn parse_header(image: &[u8]) -> Result<SetupHeader, LoadError> {
    let len = image.len();
    if len < hdr::VERSION + 2 {
        return Err(LoadError::Malformed(format!(
            "truncated setup header: the file has {len} bytes, the boot flag, \"HdrS\" magic and version end at {:#x}",
            hdr::VERSION + 2
        )));
    }
    let boot_flag = le(image, hdr::BOOT_FLAG, 2);
    if boot_flag != u64::from(BOOT_FLAG) {
        return Err(LoadError::UnknownFormat(format!(
            "boot_flag at {:#x} is {boot_flag:#06x}, not 0xaa55: not a Linux kernel",
            hdr::BOOT_FLAG
        )));
    }
    let magic = le(image, hdr::HEADER, 4);
    if magic != u64::from(HEADER_MAGIC) {
        return Err(LoadError::UnknownFormat(format!(
            "no \"HdrS\" magic at {:#x} (found {magic:#010x}): a kernel older than boot protocol 2.00",
            hdr::HEADER
        )));
    }
    let version = le(image, hdr::VERSION, 2) as u16;
    if version < MIN_VERSION {
        return Err(LoadError::Unsupported(format!(
            "boot protocol version {} ({version:#06x}) is older than 2.06, the oldest opsvisor loads",
            version_text(version)
        )));
    }
    let jump = image[hdr::JUMP];
    let jump_offset = image[hdr::JUMP + 1];
    if jump != 0xeb || jump_offset >= 0x80 {
        return Err(LoadError::Malformed(format!(
            "jump at {:#x} is {jump:#04x} {jump_offset:#04x}: not a forward short jump (0xeb), whose offset gives the setup header's length",
            hdr::JUMP
        )));
    }
    let header_end = hdr::HEADER + usize::from(jump_offset);
    let needed = header_end_for(version);
    if header_end < needed {
        return Err(LoadError::Malformed(format!(
            "the setup header ends at {header_end:#x} (jump offset {jump_offset:#04x}), before the end of the fields of protocol {} at {needed:#x}",
            version_text(version)
        )));
    }
    if len < header_end {
        return Err(LoadError::Malformed(format!(
            "truncated setup header: the file has {len} bytes, the setup header ends at {header_end:#x}"
        )));
    }
    let field = |at: usize, width: usize, since: u16| {
        if version >= since {
            le(image, at, width)
        } else {
            0
        }
    };
    let h = SetupHeader {
        version,
        header_end,
        setup_sects: image[hdr::SETUP_SECTS],
        syssize: field(hdr::SYSSIZE, 4, 0x0204) as u32,
        loadflags: image[hdr::LOADFLAGS],
        initrd_addr_max: field(hdr::INITRD_ADDR_MAX, 4, 0x0203) as u32,
        kernel_alignment: field(hdr::KERNEL_ALIGNMENT, 4, 0x0205) as u32,
        relocatable: field(hdr::RELOCATABLE_KERNEL, 1, 0x0205) != 0,
        xloadflags: field(hdr::XLOADFLAGS, 2, 0x020c) as u16,
        cmdline_size: field(hdr::CMDLINE_SIZE, 4, 0x0206) as u32,
        payload_offset: field(hdr::PAYLOAD_OFFSET, 4, 0x0208) as u32,
        payload_length: field(hdr::PAYLOAD_LENGTH, 4, 0x0208) as u32,
        pref_address: field(hdr::PREF_ADDRESS, 8, 0x020a),
        init_size: field(hdr::INIT_SIZE, 4, 0x020a) as u32,
        kernel_info_offset: field(hdr::KERNEL_INFO_OFFSET, 4, 0x020f) as u32,
    };

    let setup_size = h.setup_size();
    if setup_size >= len {
        return Err(LoadError::Malformed(format!(
            "setup_sects {}: the setup code ends at {setup_size:#x}, leaving no protected-mode kernel in the file ({len} bytes)",
            h.setup_sects
        )));
    }
    let pm_len = (len - setup_size) as u64;
    let sys_bytes = u64::from(h.syssize) * 16;
    if sys_bytes == 0 || sys_bytes > pm_len {
        return Err(LoadError::Malformed(format!(
            "syssize {:#x} ({sys_bytes} bytes of protected-mode kernel) does not match the file: it holds {pm_len} bytes after the setup code at {setup_size:#x}",
            h.syssize
        )));
    }
    if h.loadflags & LOADED_HIGH == 0 {
        return Err(LoadError::Unsupported(format!(
            "loadflags {:#04x} lacks LOADED_HIGH: a zImage, which loads at 0x10000 and needs its real-mode setup code run",
            h.loadflags
        )));
    }
    if h.relocatable && !h.kernel_alignment.is_power_of_two() {
        return Err(LoadError::Malformed(format!(
            "kernel_alignment {:#x} of a relocatable kernel is not a power of two",
            h.kernel_alignment
        )));
    }
    let payload_end = u64::from(h.payload_offset) + u64::from(h.payload_length);
    if payload_end > pm_len {
        return Err(LoadError::Malformed(format!(
            "payload_offset {:#x} + payload_length {:#x} runs past the protected-mode kernel ({pm_len:#x} bytes from file offset {setup_size:#x})",
            h.payload_offset, h.payload_length
        )));
    }
    if h.kernel_info_offset != 0 {
        let at = setup_size as u64 + u64::from(h.kernel_info_offset);
        let magic = usize::try_from(at)
            .ok()
            .and_then(|at| image.get(at..at.checked_add(4)?));
        if magic != Some(b"LToP") {
            return Err(LoadError::Malformed(format!(
                "kernel_info_offset {:#x} does not point at a kernel_info (\"LToP\") inside the protected-mode kernel ({pm_len:#x} bytes)",
                h.kernel_info_offset
            )));
        }
    }
    Ok(h)
}

/// Where the kernel goes: the range from its load address to the end of the memory it
/// needs, `init_size` bytes from its runtime start (and its own bytes from the load
/// address, if they reach further).
///
/// The runtime start of a relocatable kernel is its load address rounded up to
/// `kernel_alignment`, as boot.rst defines it, but never below `pref_address`: Linux's
/// decompressor (`startup_32`/`startup_64`) moves a kernel loaded lower up to
/// `LOAD_PHYSICAL_ADDR`, which is what `pref_address` holds. So a kernel whose
/// `pref_address` span does not fit cannot be made to fit lower, and is refused rather
/// than left to decompress past the end of RAM and over the initrd.
fn place_kernel(h: &SetupHeader, pm_len: u64, low_end: u64) -> Result<Range<u64>, LoadError> {
    let init_size = u64::from(h.init_size);
    let align = u64::from(h.kernel_alignment).max(PAGE);
    let pref = (h.pref_address != 0).then_some(h.pref_address);
    // The range a kernel loaded at `at` occupies, if it lies in RAM from 1 MiB to
    // `low_end`.
    let span = |at: u64| -> Option<Range<u64>> {
        let runtime = if h.relocatable {
            at.checked_add(align - 1)? & !(align - 1)
        } else {
            at
        };
        let runtime = runtime.max(pref.unwrap_or(0));
        let end = runtime.checked_add(init_size)?.max(at.checked_add(pm_len)?);
        (at >= HIGH_MEMORY && end <= low_end).then_some(at..end)
    };
    // The lowest address the kernel may go: 1 MiB, aligned for a relocatable kernel.
    let lowest = if h.relocatable {
        (HIGH_MEMORY + align - 1) & !(align - 1)
    } else {
        HIGH_MEMORY
    };
    let first = pref.unwrap_or(lowest);
    let placed = span(first).or_else(|| if h.relocatable { span(lowest) } else { None });
    placed.ok_or_else(|| {
        let what = if h.init_size != 0 {
            format!("init_size {:#x}", h.init_size)
        } else {
            String::from("the protected-mode kernel")
        };
        let need = init_size.max(pm_len);
        LoadError::DoesNotFit(format!(
            "{what}: the kernel needs {need:#x} bytes ({} MiB) of RAM from {first:#x}{}, but usable RAM from 1 MiB ends at {low_end:#x} ({} MiB)",
            need >> 20,
            if h.relocatable { "" } else { " (the kernel is not relocatable)" },
            low_end >> 20
        ))
    })
}

/// Load a bzImage with its command line and initrd, build the zero page, and return the
/// entry state (see the module documentation).
pub fn load_bzimage(
    mem: &mut GuestMemory,
    image: &[u8],
    boot: &LinuxBoot<'_>,
) -> Result<BootState, LoadError> {
    load_bzimage_with_layout(mem, image, boot).map(|(state, _)| state)
}

/// [`load_bzimage`], also telling where everything went.
pub fn load_bzimage_with_layout(
    mem: &mut GuestMemory,
    image: &[u8],
    boot: &LinuxBoot<'_>,
) -> Result<(BootState, LinuxLayout), LoadError> {
    let h = parse_header(image)?;
    let setup_size = h.setup_size();
    let kernel_bytes = &image[setup_size..];
    let long_mode = h.has_64bit_entry();

    let mut map = MemoryMap::new(mem);
    // The GDT, and the page tables for the 64-bit entry.
    let reserved_end = if long_mode {
        BOOT_PARAMS_ADDR
    } else {
        BOOT_GDT_ADDR + PAGE
    };
    map.reserve(BOOT_GDT_ADDR..reserved_end);
    let low_end = map.low_ram_end().ok_or_else(|| {
        LoadError::DoesNotFit(String::from(
            "there is no usable RAM at 1 MiB, where the kernel goes",
        ))
    })?;
    let kernel = place_kernel(&h, kernel_bytes.len() as u64, low_end)?;

    check_cmdline(
        boot.cmdline,
        Some((u64::from(h.cmdline_size), "cmdline_size")),
    )?;
    let cmdline_end = CMDLINE_ADDR + boot.cmdline.len() as u64 + 1;
    if !mem.is_ram_range(BOOT_GDT_ADDR, cmdline_end - BOOT_GDT_ADDR) {
        return Err(LoadError::DoesNotFit(format!(
            "the boot area {BOOT_GDT_ADDR:#x}..{cmdline_end:#x} (GDT, page tables, zero page, command line) is not guest RAM"
        )));
    }

    let initrd = match boot.initrd {
        Some(data) => {
            let limit = (u64::from(h.initrd_addr_max) + 1).min(low_end);
            Some((place_initrd(data.len() as u64, limit, &kernel)?, data))
        }
        None => None,
    };

    let entries = map.entries();
    if entries.len() > E820_MAX_ENTRIES_ZEROPAGE {
        return Err(LoadError::DoesNotFit(format!(
            "the memory map has {} entries, more than the {E820_MAX_ENTRIES_ZEROPAGE} of the zero page's e820_table",
            entries.len()
        )));
    }

    // The zero page.
    let mut zero_page = vec![0u8; BOOT_PARAMS_SIZE];
    zero_page[hdr::SETUP_SECTS..h.header_end]
        .copy_from_slice(&image[hdr::SETUP_SECTS..h.header_end]);
    put(&mut zero_page, hdr::VID_MODE, 0xffff, 2);
    zero_page[hdr::TYPE_OF_LOADER] = TYPE_OF_LOADER_UNDEFINED;
    put(&mut zero_page, hdr::CODE32_START, kernel.start, 4);
    let (ramdisk, ramdisk_size) = initrd.map_or((0, 0), |(at, d)| (at, d.len() as u64));
    put(&mut zero_page, hdr::RAMDISK_IMAGE, ramdisk & 0xffff_ffff, 4);
    put(
        &mut zero_page,
        hdr::RAMDISK_SIZE,
        ramdisk_size & 0xffff_ffff,
        4,
    );
    put(&mut zero_page, zp::EXT_RAMDISK_IMAGE, ramdisk >> 32, 4);
    put(&mut zero_page, zp::EXT_RAMDISK_SIZE, ramdisk_size >> 32, 4);
    put(&mut zero_page, hdr::CMD_LINE_PTR, CMDLINE_ADDR, 4);
    put(&mut zero_page, zp::EXT_CMD_LINE_PTR, 0, 4);
    if h.version >= 0x0207 {
        put(&mut zero_page, hdr::HARDWARE_SUBARCH, 0, 4);
    }
    if h.version >= 0x0209 {
        put(&mut zero_page, hdr::SETUP_DATA, 0, 8);
    }
    if let Some(rsdp) = boot.rsdp_addr {
        if h.version >= 0x020e {
            put(&mut zero_page, zp::ACPI_RSDP_ADDR, rsdp, 8);
        }
    }
    zero_page[zp::E820_ENTRIES] = entries.len() as u8;
    for (i, e) in entries.iter().enumerate() {
        let at = zp::E820_TABLE + i * zp::E820_ENTRY_SIZE;
        put(&mut zero_page, at, e.addr, 8);
        put(&mut zero_page, at + 8, e.size, 8);
        put(&mut zero_page, at + 16, u64::from(e.kind), 4);
    }

    // Everything is checked: write.
    mem.write(kernel.start, kernel_bytes)?;
    if let Some((at, data)) = initrd {
        mem.write(at, data)?;
    }
    let mut cmdline = vec![0u8; boot.cmdline.len() + 1];
    cmdline[..boot.cmdline.len()].copy_from_slice(boot.cmdline);
    mem.write(CMDLINE_ADDR, &cmdline)?;
    mem.write(BOOT_PARAMS_ADDR, &zero_page)?;
    let code = if long_mode {
        linux::GDT_CODE64
    } else {
        linux::GDT_CODE32
    };
    mem.write(BOOT_GDT_ADDR, &linux::gdt(code))?;
    let layout = LinuxLayout {
        kernel: kernel.start..kernel.start + kernel_bytes.len() as u64,
        initrd: initrd.map(|(at, d)| at..at + d.len() as u64),
        cmdline: CMDLINE_ADDR,
        boot_params: BOOT_PARAMS_ADDR,
        memory_map: map,
    };
    if !long_mode {
        return Ok((entry_state_32(kernel.start), layout));
    }
    mem.write(PAGE_TABLES_ADDR, &identity_map(low_end))?;
    Ok((entry_state_64(kernel.start + ENTRY_64_OFFSET), layout))
}

/// The page tables at [`PAGE_TABLES_ADDR`]: a PML4 whose first entry points at a PDPT
/// whose first four entries point at four page directories of 2 MiB pages mapping the
/// first 4 GiB onto themselves. Pages from `low_end` up (the MMIO hole) are uncached.
fn identity_map(low_end: u64) -> [u8; 6 * PAGE as usize] {
    const PRESENT_WRITABLE: u64 = 0x3;
    const LARGE: u64 = 0x80;
    const UNCACHED: u64 = 0x18; // PWT | PCD
    let mut t = [0u8; 6 * PAGE as usize];
    let pdpt = PAGE_TABLES_ADDR + PAGE;
    put(&mut t, 0, pdpt | PRESENT_WRITABLE, 8);
    for gib in 0..4u64 {
        let pd = pdpt + PAGE * (1 + gib);
        put(&mut t, (PAGE + gib * 8) as usize, pd | PRESENT_WRITABLE, 8);
        for i in 0..512u64 {
            let addr = (gib << 30) | (i << 21);
            let cache = if addr >= low_end { UNCACHED } else { 0 };
            put(
                &mut t,
                (PAGE * (2 + gib) + i * 8) as usize,
                addr | PRESENT_WRITABLE | LARGE | cache,
                8,
            );
        }
    }
    t
}

/// 64-bit mode at `entry`: the 64-bit boot protocol's state.
fn entry_state_64(entry: u64) -> BootState {
    let mut state = BootState::protected_flat(0, BOOT_CS, BOOT_DS);
    state.segments[SegReg::Cs as usize] = Segment::flat(BOOT_CS, Segment::CODE64);
    state.regs.rip = entry;
    state.regs.gpr[Gpr::Rsi as usize] = BOOT_PARAMS_ADDR;
    state.cr0 = CR0_PE | CR0_ET | CR0_PG;
    state.cr3 = PAGE_TABLES_ADDR;
    state.cr4 = CR4_PAE;
    state.efer = EFER_LME | EFER_LMA;
    state.gdt = DescriptorTable {
        base: BOOT_GDT_ADDR,
        limit: 31,
    };
    state
}

/// 32-bit protected mode at `entry`: the 32-bit boot protocol's state.
fn entry_state_32(entry: u64) -> BootState {
    // The load address was placed below the end of low RAM, under 4 GiB.
    let mut state = BootState::protected_flat(entry as u32, BOOT_CS, BOOT_DS);
    state.regs.gpr[Gpr::Rsi as usize] = BOOT_PARAMS_ADDR;
    state.gdt = DescriptorTable {
        base: BOOT_GDT_ADDR,
        limit: 31,
    };
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::e820::{E820_RAM, E820_RESERVED};
    use alloc::vec::Vec;

    /// A synthetic bzImage: protocol `version`, `setup_sects` 3 (0x800 bytes of setup),
    /// then `pm_len` bytes of protected-mode kernel filled with a pattern, relocatable,
    /// 2 MiB alignment, pref_address 16 MiB, init_size 4 MiB, XLF_KERNEL_64.
    fn image(version: u16, pm_len: usize) -> Vec<u8> {
        let mut f = vec![0u8; 0x800];
        f[hdr::SETUP_SECTS] = 3;
        f[hdr::BOOT_FLAG..hdr::BOOT_FLAG + 2].copy_from_slice(&BOOT_FLAG.to_le_bytes());
        f[hdr::JUMP] = 0xeb;
        f[hdr::JUMP + 1] = (header_end_for(version) - hdr::HEADER) as u8;
        f[hdr::HEADER..hdr::HEADER + 4].copy_from_slice(b"HdrS");
        set(&mut f, hdr::VERSION, u64::from(version), 2);
        f[hdr::LOADFLAGS] = LOADED_HIGH;
        set(&mut f, hdr::CODE32_START, 0x10_0000, 4);
        set(&mut f, hdr::SYSSIZE, (pm_len / 16) as u64, 4);
        set(&mut f, hdr::INITRD_ADDR_MAX, 0x7fff_ffff, 4);
        set(&mut f, hdr::KERNEL_ALIGNMENT, 0x20_0000, 4);
        f[hdr::RELOCATABLE_KERNEL] = 1;
        set(&mut f, hdr::XLOADFLAGS, u64::from(XLF_KERNEL_64), 2);
        set(&mut f, hdr::CMDLINE_SIZE, 2047, 4);
        set(&mut f, hdr::PREF_ADDRESS, 0x100_0000, 8);
        set(&mut f, hdr::INIT_SIZE, 0x40_0000, 4);
        // Fields a loader must overwrite, filled with junk.
        set(&mut f, hdr::SETUP_DATA, 0xdead_beef, 8);
        set(&mut f, hdr::RAMDISK_IMAGE, 0x1234, 4);
        // Bytes around the header that are not part of it, which must not be copied.
        f[0x1e0..hdr::SETUP_SECTS].fill(0xee);
        f[0x270..0x290].fill(0xee);
        f.extend((0..pm_len).map(|i| (i % 251) as u8 | 1));
        f
    }

    fn set(f: &mut [u8], at: usize, v: u64, width: usize) {
        f[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
    }

    fn zp32(mem: &GuestMemory, at: usize) -> u32 {
        mem.read_u32(BOOT_PARAMS_ADDR + at as u64).unwrap()
    }

    fn err(r: Result<BootState, LoadError>) -> LoadError {
        match r {
            Err(e) => e,
            Ok(s) => panic!("loaded: {s:?}"),
        }
    }

    fn boot<'a>(cmdline: &'a str, initrd: Option<&'a [u8]>) -> LinuxBoot<'a> {
        LinuxBoot {
            cmdline: cmdline.as_bytes(),
            initrd,
            rsdp_addr: Some(0xf_0000),
        }
    }

    fn all_zero(mem: &GuestMemory) -> bool {
        mem.regions()
            .iter()
            .all(|r| r.bytes().iter().all(|&b| b == 0))
    }

    #[test]
    fn loads_a_64bit_kernel() {
        let f = image(0x020f, 0x1000);
        assert!(is_bzimage(&f));
        let mut mem = GuestMemory::with_ram(64 << 20).unwrap();
        let initrd = vec![0x5au8; 0x2345];
        let (st, layout) =
            load_bzimage_with_layout(&mut mem, &f, &boot("console=ttyS0", Some(&initrd))).unwrap();
        let top = ((64 << 20) - 0x2345) & !0xfff;
        assert_eq!(layout.kernel, 0x100_0000..0x100_1000);
        assert_eq!(layout.initrd, Some(top..top + 0x2345));
        assert_eq!(
            (layout.cmdline, layout.boot_params),
            (CMDLINE_ADDR, BOOT_PARAMS_ADDR)
        );
        assert_eq!(layout.memory_map.entries().len(), 5);

        // The kernel at pref_address.
        let mut got = vec![0u8; 0x1000];
        mem.read(0x100_0000, &mut got).unwrap();
        assert_eq!(got, f[0x800..]);

        // Entry: 64-bit mode at load + 0x200, RSI = zero page.
        assert_eq!(st.regs.rip, 0x100_0200);
        assert_eq!(st.regs.gpr[Gpr::Rsi as usize], BOOT_PARAMS_ADDR);
        assert_eq!(st.regs.rflags, 2, "interrupts off");
        assert_eq!(st.cr0 & (CR0_PE | CR0_PG), CR0_PE | CR0_PG);
        assert_eq!(st.cr4 & CR4_PAE, CR4_PAE);
        assert_eq!(st.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        let cs = st.segments[SegReg::Cs as usize];
        assert_eq!((cs.selector, cs.attr & Segment::L), (0x10, Segment::L));
        for seg in [SegReg::Ds, SegReg::Es, SegReg::Ss] {
            let s = st.segments[seg as usize];
            assert_eq!((s.selector, s.base, s.attr), (0x18, 0, Segment::DATA));
        }
        // The GDT in memory agrees with the segment caches.
        assert_eq!(st.gdt.base, BOOT_GDT_ADDR);
        assert_eq!(
            mem.read_u64(BOOT_GDT_ADDR + 0x10).unwrap(),
            0x00af_9b00_0000_ffff
        );
        assert_eq!(
            mem.read_u64(BOOT_GDT_ADDR + 0x18).unwrap(),
            0x00cf_9300_0000_ffff
        );

        // The page tables map the kernel, zero page, command line and initrd onto
        // themselves: walk them for each.
        let initrd_at = u64::from(zp32(&mem, hdr::RAMDISK_IMAGE));
        for va in [
            0x100_0200u64,
            BOOT_PARAMS_ADDR,
            CMDLINE_ADDR,
            initrd_at,
            (64 << 20) - 1,
        ] {
            assert_eq!(walk(&mem, st.cr3, va), Some(va), "{va:#x}");
        }

        // The zero page.
        assert_eq!(mem.read_u8(BOOT_PARAMS_ADDR + 0x210).unwrap(), 0xff);
        assert_eq!(zp32(&mem, hdr::CODE32_START), 0x100_0000);
        assert_eq!(zp32(&mem, hdr::CMD_LINE_PTR), CMDLINE_ADDR as u32);
        assert_eq!(zp32(&mem, zp::EXT_CMD_LINE_PTR), 0);
        assert_eq!(
            mem.read_u64(BOOT_PARAMS_ADDR + hdr::SETUP_DATA as u64)
                .unwrap(),
            0
        );
        assert_eq!(mem.read_u16(BOOT_PARAMS_ADDR + 0x206).unwrap(), 0x020f);
        assert_eq!(mem.read_u16(BOOT_PARAMS_ADDR + 0x1fa).unwrap(), 0xffff);
        assert_eq!(mem.read_u64(BOOT_PARAMS_ADDR + 0x70).unwrap(), 0xf_0000);
        // Only the header's bytes were copied: nothing after 0x26c, nothing before 0x1f1.
        assert_eq!(mem.read_u64(BOOT_PARAMS_ADDR + 0x270).unwrap(), 0);
        assert_eq!(mem.read_u64(BOOT_PARAMS_ADDR + 0x1e0).unwrap(), 0);
        assert_eq!(
            mem.read_u8(BOOT_PARAMS_ADDR + 0x1ef).unwrap(),
            0,
            "sentinel"
        );
        assert_eq!(
            mem.read_u8(BOOT_PARAMS_ADDR + 0x1f1).unwrap(),
            3,
            "setup_sects"
        );
        // The command line.
        let mut cl = [0u8; 14];
        mem.read(CMDLINE_ADDR, &mut cl).unwrap();
        assert_eq!(&cl, b"console=ttyS0\0");
        // The initrd: top of RAM, page aligned.
        assert_eq!(initrd_at, ((64 << 20) - 0x2345) & !0xfff);
        assert_eq!(zp32(&mem, hdr::RAMDISK_SIZE), 0x2345);
        assert_eq!(zp32(&mem, zp::EXT_RAMDISK_IMAGE), 0);
        assert_eq!(mem.read_u8(initrd_at + 0x2344).unwrap(), 0x5a);

        // The memory map: the GDT and page tables reserved.
        let n = usize::from(mem.read_u8(BOOT_PARAMS_ADDR + 0x1e8).unwrap());
        let e820: Vec<(u64, u64, u32)> = (0..n)
            .map(|i| {
                let at = BOOT_PARAMS_ADDR + 0x2d0 + 20 * i as u64;
                (
                    mem.read_u64(at).unwrap(),
                    mem.read_u64(at + 8).unwrap(),
                    mem.read_u32(at + 16).unwrap(),
                )
            })
            .collect();
        assert_eq!(
            e820,
            [
                (0, 0x1000, E820_RAM),
                (0x1000, 0x7000, E820_RESERVED),
                (0x8000, 0x9_7c00, E820_RAM),
                (0x9_fc00, 0x6_0400, E820_RESERVED),
                (0x10_0000, (64 << 20) - 0x10_0000, E820_RAM),
            ]
        );
    }

    /// Translate `va` through 4-level page tables with 2 MiB pages.
    fn walk(mem: &GuestMemory, cr3: u64, va: u64) -> Option<u64> {
        let mut table = cr3;
        for shift in [39u32, 30, 21] {
            let e = mem.read_u64(table + ((va >> shift) & 511) * 8).ok()?;
            if e & 1 == 0 {
                return None;
            }
            if shift == 21 {
                assert_ne!(e & 0x80, 0, "a 2 MiB page");
                return Some((e & 0x000f_ffff_ffe0_0000) | (va & 0x1f_ffff));
            }
            table = e & 0x000f_ffff_ffff_f000;
        }
        None
    }

    #[test]
    fn kernel_placement() {
        let mut f = image(0x020f, 0x1000);
        // pref_address 16 MiB + init_size 4 MiB does not fit in 18 MiB of RAM, and
        // loading lower would not help: the kernel would still run from 16 MiB.
        let mut mem = GuestMemory::with_ram(18 << 20).unwrap();
        match err(load_bzimage(&mut mem, &f, &boot("", None))) {
            LoadError::DoesNotFit(s) => assert!(s.contains("init_size 0x400000"), "{s}"),
            e => panic!("{e:?}"),
        }
        // Without a pref_address the lowest 2 MiB-aligned address from 1 MiB.
        set(&mut f, hdr::PREF_ADDRESS, 0, 8);
        let st = load_bzimage(&mut mem, &f, &boot("", None)).unwrap();
        assert_eq!(st.regs.rip, 0x20_0200);
        assert_eq!(zp32(&mem, hdr::RAMDISK_IMAGE), 0, "no initrd");
        // A pref_address below 1 MiB is not used either.
        set(&mut f, hdr::PREF_ADDRESS, 0x1_0000, 8);
        let mut mem = GuestMemory::with_ram(18 << 20).unwrap();
        let st = load_bzimage(&mut mem, &f, &boot("", None)).unwrap();
        assert_eq!(st.regs.rip, 0x20_0200);
        // An unaligned pref_address: the runtime start is rounded up to 18 MiB, and the
        // span with it; loaded lower, the kernel would still run from pref_address.
        set(&mut f, hdr::PREF_ADDRESS, 0x101_0000, 8);
        let mut mem = GuestMemory::with_ram(20 << 20).unwrap();
        assert!(matches!(
            load_bzimage(&mut mem, &f, &boot("", None)),
            Err(LoadError::DoesNotFit(_))
        ));
        let mut mem = GuestMemory::with_ram(22 << 20).unwrap();
        assert!(
            load_bzimage(&mut mem, &f, &boot("", None)).is_ok_and(|st| st.regs.rip == 0x101_0200)
        );
        set(&mut f, hdr::PREF_ADDRESS, 0x100_0000, 8);
        // Not relocatable: at pref_address or nowhere.
        f[hdr::RELOCATABLE_KERNEL] = 0;
        let mut mem = GuestMemory::with_ram(16 << 20).unwrap();
        match err(load_bzimage(&mut mem, &f, &boot("", None))) {
            LoadError::DoesNotFit(s) => {
                assert!(s.contains("init_size 0x400000"), "{s}");
                assert!(s.contains("not relocatable"), "{s}");
            }
            e => panic!("{e:?}"),
        }
        assert!(all_zero(&mem));
        let mut mem = GuestMemory::with_ram(32 << 20).unwrap();
        let st = load_bzimage(&mut mem, &f, &boot("", None)).unwrap();
        assert_eq!(st.regs.rip, 0x100_0200);
        // Before protocol 2.10 there is neither pref_address nor init_size: 1 MiB for a
        // kernel that is not relocatable, the lowest aligned address from 1 MiB for one
        // that is, with room for the kernel's own bytes.
        let mut f = image(0x0209, 0x1000);
        f[hdr::RELOCATABLE_KERNEL] = 0;
        let mut mem = GuestMemory::with_ram(4 << 20).unwrap();
        let st = load_bzimage(&mut mem, &f, &boot("", None)).unwrap();
        assert_eq!(st.regs.rip, 0x10_0000);
        f[hdr::RELOCATABLE_KERNEL] = 1;
        let mut mem = GuestMemory::with_ram(4 << 20).unwrap();
        let st = load_bzimage(&mut mem, &f, &boot("", None)).unwrap();
        // No XLF_KERNEL_64 before 2.12: the 32-bit protocol.
        assert_eq!(st.regs.rip, 0x20_0000);
        assert_eq!(st.efer, 0);
        assert_eq!(st.cr0 & CR0_PG, 0);
        assert_eq!(st.regs.gpr[Gpr::Rsi as usize], BOOT_PARAMS_ADDR);
        assert_eq!(st.segments[SegReg::Cs as usize].attr, Segment::CODE32);
        assert_eq!(
            mem.read_u64(BOOT_GDT_ADDR + 0x10).unwrap(),
            0x00cf_9b00_0000_ffff
        );
        assert_eq!(mem.read_u64(PAGE_TABLES_ADDR).unwrap(), 0, "no page tables");
    }

    #[test]
    fn header_errors() {
        let good = image(0x020f, 0x1000);
        let mut mem = GuestMemory::with_ram(64 << 20).unwrap();
        let mut check = |f: &[u8], needle: &str| {
            let e = err(load_bzimage(&mut mem, f, &boot("", None)));
            let text = alloc::string::ToString::to_string(&e);
            assert!(text.contains(needle), "{text:?} lacks {needle:?}");
            assert!(all_zero(&mem), "written before refusing: {text}");
        };
        // Truncated before the header's end, and before the magic.
        check(&good[..0x250], "truncated setup header");
        check(&good[..0x204], "truncated setup header");
        check(&[], "truncated setup header");
        // No boot flag, no HdrS.
        let mut f = good.clone();
        f[hdr::BOOT_FLAG] = 0;
        check(&f, "boot_flag");
        assert!(!is_bzimage(&f));
        let mut f = good.clone();
        f[hdr::HEADER] = b'X';
        check(&f, "HdrS");
        // Protocol too old.
        let mut f = good.clone();
        set(&mut f, hdr::VERSION, 0x0205, 2);
        check(&f, "version 2.05");
        // A jump that is not one, or says the header is shorter than its version's.
        let mut f = good.clone();
        f[hdr::JUMP] = 0x90;
        check(&f, "short jump");
        let mut f = good.clone();
        f[hdr::JUMP + 1] = 0x40;
        check(&f, "protocol 2.15");
        // setup_sects pointing past the file, or leaving no kernel.
        let mut f = good.clone();
        f[hdr::SETUP_SECTS] = 0xff;
        check(&f, "setup_sects 255");
        check(&good[..0x800], "setup_sects 3");
        // syssize larger than the file.
        let mut f = good.clone();
        set(&mut f, hdr::SYSSIZE, 0x101, 4);
        check(&f, "syssize 0x101");
        // Payload outside the protected-mode kernel.
        let mut f = good.clone();
        set(&mut f, hdr::PAYLOAD_OFFSET, 0xff0, 4);
        set(&mut f, hdr::PAYLOAD_LENGTH, 0x11, 4);
        check(&f, "payload_offset 0xff0 + payload_length 0x11");
        let mut f = good.clone();
        set(&mut f, hdr::PAYLOAD_LENGTH, 0xffff_ffff, 4);
        check(&f, "payload_length 0xffffffff");
        // kernel_info_offset outside, or not at "LToP".
        let mut f = good.clone();
        set(&mut f, hdr::KERNEL_INFO_OFFSET, 0xfff_ffff, 4);
        check(&f, "kernel_info_offset 0xfffffff");
        let mut f = good.clone();
        set(&mut f, hdr::KERNEL_INFO_OFFSET, 0x100, 4);
        check(&f, "kernel_info_offset 0x100");
        f[0x900..0x904].copy_from_slice(b"LToP");
        assert!(load_bzimage(
            &mut GuestMemory::with_ram(64 << 20).unwrap(),
            &f,
            &boot("", None)
        )
        .is_ok());
        // A zImage.
        let mut f = good.clone();
        f[hdr::LOADFLAGS] = 0;
        check(&f, "LOADED_HIGH");
        // Alignment that is not a power of two.
        let mut f = good.clone();
        set(&mut f, hdr::KERNEL_ALIGNMENT, 0x30_0000, 4);
        check(&f, "kernel_alignment 0x300000");
        // init_size larger than RAM.
        let mut f = good.clone();
        set(&mut f, hdr::INIT_SIZE, 0xffff_0000, 4);
        check(&f, "init_size 0xffff0000");
    }

    #[test]
    fn boot_errors() {
        let f = image(0x020f, 0x1000);
        let mut mem = GuestMemory::with_ram(24 << 20).unwrap();
        // The command line too long for cmdline_size.
        let long = "x".repeat(2048);
        match err(load_bzimage(&mut mem, &f, &boot(&long, None))) {
            LoadError::Unsupported(s) => assert!(s.contains("cmdline_size of 2047"), "{s}"),
            e => panic!("{e:?}"),
        }
        assert!(load_bzimage(&mut mem, &f, &boot(&long[1..], None)).is_ok());
        // An initrd that fits neither above the kernel (its init_size span is 16..20 MiB
        // of 24 MiB) nor below it (1..16 MiB).
        let mut mem = GuestMemory::with_ram(24 << 20).unwrap();
        let big = vec![1u8; (15 << 20) + 1];
        match err(load_bzimage(&mut mem, &f, &boot("", Some(&big)))) {
            LoadError::DoesNotFit(s) => {
                assert!(s.starts_with("initrd does not fit"), "{s}");
                assert!(
                    s.contains(&alloc::format!("it has {} bytes", (15 << 20) + 1)),
                    "{s}"
                );
                assert!(s.contains(&alloc::format!("has {} bytes", 15 << 20)), "{s}");
            }
            e => panic!("{e:?}"),
        }
        assert!(all_zero(&mem));
        // ... but one that fits below the kernel goes there.
        let below = vec![1u8; 14 << 20];
        load_bzimage(&mut mem, &f, &boot("", Some(&below))).unwrap();
        assert_eq!(zp32(&mem, hdr::RAMDISK_IMAGE), 0x20_0000);
        // initrd_addr_max lowers the limit.
        let mut f2 = f.clone();
        set(&mut f2, hdr::INITRD_ADDR_MAX, 0xff_ffff, 4);
        let mut mem = GuestMemory::with_ram(64 << 20).unwrap();
        load_bzimage(&mut mem, &f2, &boot("", Some(&[7u8; 0x1000]))).unwrap();
        assert_eq!(zp32(&mem, hdr::RAMDISK_IMAGE), 0xff_f000);
        // No RAM at 1 MiB.
        let mut mem = GuestMemory::with_ram(0x8_0000).unwrap();
        assert!(matches!(
            err(load_bzimage(&mut mem, &f, &boot("", None))),
            LoadError::DoesNotFit(s) if s.contains("1 MiB")
        ));
        // An RSDP is not passed to a kernel older than protocol 2.14.
        let f = image(0x020d, 0x1000);
        let mut mem = GuestMemory::with_ram(64 << 20).unwrap();
        load_bzimage(&mut mem, &f, &boot("", None)).unwrap();
        assert_eq!(mem.read_u64(BOOT_PARAMS_ADDR + 0x70).unwrap(), 0);
    }

    #[test]
    fn ram_above_4g_reaches_the_zero_page() {
        // Low RAM up to 3 GiB, then RAM above 4 GiB, as backends::guest_memory builds
        // it for 6 GiB (host memory is allocated lazily).
        let mut mem = GuestMemory::with_ram(3 << 30).unwrap();
        mem.add_ram(1 << 32, 3 << 30).unwrap();
        let f = image(0x020f, 0x1000);
        let st = load_bzimage(&mut mem, &f, &boot("", Some(&[1u8; 100]))).unwrap();
        assert_eq!(st.regs.rip, 0x100_0200);
        let n = u64::from(mem.read_u8(BOOT_PARAMS_ADDR + 0x1e8).unwrap());
        let last = BOOT_PARAMS_ADDR + 0x2d0 + 20 * (n - 1);
        assert_eq!(mem.read_u64(last).unwrap(), 1 << 32);
        assert_eq!(mem.read_u64(last + 8).unwrap(), 3 << 30);
        assert_eq!(mem.read_u32(last + 16).unwrap(), E820_RAM);
        // The initrd stays below initrd_addr_max (0x7fffffff).
        assert_eq!(zp32(&mem, hdr::RAMDISK_IMAGE), 0x8000_0000 - 0x1000);
        // The MMIO hole is mapped uncached.
        let pd3 = PAGE_TABLES_ADDR + 5 * PAGE;
        assert_eq!(mem.read_u64(pd3).unwrap(), 0xc000_0000 | 0x9b);
    }
}
