//! What the two Linux entry formats ([`super::bzimage`] and [`super::pvh`]) share: the
//! options a Linux kernel is booted with, where the loaders put their boot structures in
//! low memory, the command-line checks and the initrd placement.
//!
//! The boot area, in conventional memory below [`EBDA_START`], clear of the real-mode
//! interrupt vectors and the BIOS data area in the first page:
//!
//! | address | what | memory map |
//! |---|---|---|
//! | [`BOOT_GDT_ADDR`] 0x1000 | the GDT: null, null, code at [`BOOT_CS`] 0x10, data at [`BOOT_DS`] 0x18 | reserved |
//! | [`PAGE_TABLES_ADDR`] 0x2000-0x7FFF | bzImage's identity map of the first 4 GiB: PML4, PDPT, four page directories of 2 MiB pages | reserved |
//! | [`BOOT_PARAMS_ADDR`] 0x8000 | the zero page (`struct boot_params`), or PVH's `hvm_start_info`, module list and memory map | usable |
//! | [`CMDLINE_ADDR`] 0x9000 up to 0x9FBFF | the command line, NUL-terminated | usable |
//!
//! The GDT and page tables are reserved in the memory map the kernel is given, so
//! nothing the kernel allocates lands on them before it has switched to its own; the
//! zero page, start_info and command line are copied by the kernel first thing and stay
//! usable. The initrd goes as high as it can in RAM below 4 GiB (and below the kernel's
//! limit), clear of the kernel.

use super::e820::{MemoryMap, EBDA_START, HIGH_MEMORY};
use super::LoadError;
use alloc::format;
use alloc::string::String;
use core::ops::Range;

/// What a Linux kernel is booted with besides its image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinuxBoot<'a> {
    /// The kernel command line (bytes, as given: Linux takes any but NUL).
    pub cmdline: &'a [u8],
    /// The initial ramdisk, if any.
    pub initrd: Option<&'a [u8]>,
    /// The guest-physical address of the ACPI RSDP, if the platform built ACPI tables
    /// (the zero page's `acpi_rsdp_addr`, PVH's `rsdp_paddr`).
    pub rsdp_addr: Option<u64>,
}

/// Where a Linux loader put what it loaded, for the platform to describe it elsewhere
/// (fw_cfg's kernel, initrd and command-line items, its `etc/e820` file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinuxLayout {
    /// The kernel's bytes in guest memory: a bzImage's protected-mode part at its load
    /// address, or the extent of an ELF kernel's segments (bss included).
    pub kernel: Range<u64>,
    /// The initrd, if one was given.
    pub initrd: Option<Range<u64>>,
    /// The command line (NUL-terminated): [`CMDLINE_ADDR`].
    pub cmdline: u64,
    /// The zero page or `hvm_start_info`: [`BOOT_PARAMS_ADDR`].
    pub boot_params: u64,
    /// The memory map the kernel was given.
    pub memory_map: MemoryMap,
}

/// Where the loaders put the GDT.
pub const BOOT_GDT_ADDR: u64 = 0x1000;
/// Where the bzImage loader puts its page tables (six pages: PML4, PDPT, four page
/// directories).
pub const PAGE_TABLES_ADDR: u64 = 0x2000;
/// Where the zero page (bzImage) or `hvm_start_info` (PVH) goes.
pub const BOOT_PARAMS_ADDR: u64 = 0x8000;
/// Where the command line goes.
pub const CMDLINE_ADDR: u64 = 0x9000;
/// The end of the room for the command line (its NUL included): the EBDA.
pub const CMDLINE_LIMIT: u64 = EBDA_START;
/// The code selector at entry (Linux's `__BOOT_CS`).
pub const BOOT_CS: u16 = 0x10;
/// The data selector at entry (Linux's `__BOOT_DS`).
pub const BOOT_DS: u16 = 0x18;

/// Initrds and kernels are placed on page boundaries.
pub(crate) const PAGE: u64 = 4096;

/// The GDT both Linux loaders install: null, null, the code descriptor `code` at
/// [`BOOT_CS`], a flat read/write data descriptor at [`BOOT_DS`] (accessed bits preset, so
/// the processor never writes the table).
pub(crate) fn gdt(code: u64) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[16..24].copy_from_slice(&code.to_le_bytes());
    out[24..32].copy_from_slice(&GDT_DATA.to_le_bytes());
    out
}

/// A flat 32-bit execute/read code descriptor.
pub(crate) const GDT_CODE32: u64 = 0x00cf_9b00_0000_ffff;
/// A 64-bit execute/read code descriptor (L = 1, D = 0).
pub(crate) const GDT_CODE64: u64 = 0x00af_9b00_0000_ffff;
/// A flat read/write data descriptor.
const GDT_DATA: u64 = 0x00cf_9300_0000_ffff;

/// Check the command line against the kernel's limit (`max_len` characters without the
/// NUL, when the kernel states one) and the room at [`CMDLINE_ADDR`]; `field` names the
/// limit in the error.
pub(crate) fn check_cmdline(cmdline: &[u8], max_len: Option<(u64, &str)>) -> Result<(), LoadError> {
    if let Some(at) = cmdline.iter().position(|&b| b == 0) {
        return Err(LoadError::Unsupported(format!(
            "the command line has a NUL byte at offset {at}: the kernel would see only what precedes it"
        )));
    }
    let len = cmdline.len() as u64;
    if let Some((max, field)) = max_len {
        if len > max {
            return Err(LoadError::Unsupported(format!(
                "the command line has {len} characters, more than the kernel's {field} of {max}"
            )));
        }
    }
    let room = CMDLINE_LIMIT - CMDLINE_ADDR - 1;
    if len > room {
        return Err(LoadError::DoesNotFit(format!(
            "the command line has {len} characters, more than the {room} that fit at {CMDLINE_ADDR:#x}"
        )));
    }
    Ok(())
}

/// Where an initrd of `size` bytes goes: page aligned, inside `HIGH_MEMORY..limit`, clear
/// of `kernel`, as high as possible (above the kernel if there is room there, otherwise
/// below it).
pub(crate) fn place_initrd(size: u64, limit: u64, kernel: &Range<u64>) -> Result<u64, LoadError> {
    if size == 0 {
        return Err(LoadError::Malformed(String::from("the initrd is empty")));
    }
    let kernel_end = align_up(kernel.end).unwrap_or(u64::MAX);
    // The two free windows, highest first.
    let windows = [
        (kernel_end.max(HIGH_MEMORY), limit),
        (HIGH_MEMORY, limit.min(kernel.start)),
    ];
    for &(low, high) in &windows {
        if let Some(start) = high.checked_sub(size).map(|s| s & !(PAGE - 1)) {
            if start >= low && low < high {
                return Ok(start);
            }
        }
    }
    let room = windows
        .iter()
        .map(|&(low, high)| (high & !(PAGE - 1)).saturating_sub(low))
        .max()
        .unwrap_or(0);
    Err(LoadError::DoesNotFit(format!(
        "initrd does not fit: it has {size} bytes, and the largest page-aligned space in guest RAM from {HIGH_MEMORY:#x} to {limit:#x} clear of the kernel at {:#x}..{:#x} has {room} bytes",
        kernel.start, kernel.end
    )))
}

/// `v` rounded up to a page boundary, `None` on overflow.
pub(crate) fn align_up(v: u64) -> Option<u64> {
    v.checked_add(PAGE - 1).map(|v| v & !(PAGE - 1))
}

/// Store `v` little-endian at `at` in `buf`, if it fits (callers write inside buffers
/// they sized for the structure).
pub(crate) fn put(buf: &mut [u8], at: usize, v: u64, width: usize) {
    if let Some(dst) = buf.get_mut(at..at + width) {
        dst.copy_from_slice(&v.to_le_bytes()[..width]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initrd_goes_high_and_clear_of_the_kernel() {
        let kernel = 0x100_0000..0x200_0000;
        // Top of RAM, page aligned down.
        assert_eq!(place_initrd(0x1800, 0x1000_0000, &kernel), Ok(0xfff_e000));
        // Room only below the kernel.
        assert_eq!(
            place_initrd(0x20_0000, 0x210_0000, &kernel),
            Ok(0x100_0000 - 0x20_0000)
        );
        // Exactly fills the space above the kernel.
        assert_eq!(
            place_initrd(0x100_0000, 0x300_0000, &kernel),
            Ok(0x200_0000)
        );
        match place_initrd(0x100_0001, 0x300_0000, &(0x10_0000..0x200_0000)) {
            Err(LoadError::DoesNotFit(s)) => {
                assert!(s.starts_with("initrd does not fit"), "{s}");
                assert!(s.contains("16777217 bytes"), "{s}");
                assert!(s.contains("has 16777216 bytes"), "{s}");
            }
            other => panic!("{other:?}"),
        }
        // A limit below 1 MiB, and sizes that would underflow.
        assert!(place_initrd(0x1000, 0x8_0000, &kernel).is_err());
        assert!(place_initrd(u64::MAX, 0x1000_0000, &kernel).is_err());
        assert!(matches!(
            place_initrd(0, 0x1000_0000, &kernel),
            Err(LoadError::Malformed(_))
        ));
    }

    #[test]
    fn command_lines_are_checked() {
        assert!(check_cmdline(b"console=ttyS0", Some((2047, "cmdline_size"))).is_ok());
        assert!(check_cmdline(b"", Some((0, "cmdline_size"))).is_ok());
        match check_cmdline(b"abcd", Some((3, "cmdline_size"))) {
            Err(LoadError::Unsupported(s)) => assert!(s.contains("cmdline_size of 3"), "{s}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            check_cmdline(b"a\0b", None),
            Err(LoadError::Unsupported(s)) if s.contains("offset 1")
        ));
        let long = "x".repeat((CMDLINE_LIMIT - CMDLINE_ADDR) as usize);
        assert!(matches!(
            check_cmdline(long.as_bytes(), None),
            Err(LoadError::DoesNotFit(_))
        ));
        assert!(check_cmdline(&long.as_bytes()[1..], None).is_ok());
    }
}
