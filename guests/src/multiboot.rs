//! The multiboot v1 information structure.

/// The fixed part of the multiboot info (the fields the guests use).
#[repr(C)]
#[allow(missing_docs)]
pub struct Info {
    pub flags: u32,
    pub mem_lower: u32,
    pub mem_upper: u32,
    pub boot_device: u32,
    pub cmdline: u32,
    pub mods_count: u32,
    pub mods_addr: u32,
    pub syms: [u32; 4],
    pub mmap_length: u32,
    pub mmap_addr: u32,
}

/// One memory-map entry.
#[derive(Clone, Copy, Debug)]
pub struct MmapEntry {
    /// Base address.
    pub base: u64,
    /// Length in bytes.
    pub len: u64,
    /// 1 = available RAM.
    pub kind: u32,
}

/// flags bit 0: mem_lower/mem_upper valid.
pub const FLAG_MEM: u32 = 1 << 0;
/// flags bit 2: cmdline valid.
pub const FLAG_CMDLINE: u32 = 1 << 2;
/// flags bit 3: mods valid.
pub const FLAG_MODS: u32 = 1 << 3;
/// flags bit 6: mmap valid.
pub const FLAG_MMAP: u32 = 1 << 6;

impl Info {
    /// The command line, if the loader passed one (bounded to 4 KiB, lossy on non-UTF-8).
    pub fn cmdline(&self) -> Option<&'static str> {
        if self.flags & FLAG_CMDLINE == 0 || self.cmdline == 0 {
            return None;
        }
        let p = self.cmdline as usize as *const u8;
        let mut len = 0;
        // SAFETY: the loader put a NUL-terminated string below 4 GiB (identity-mapped);
        // the scan stops at 4 KiB whatever it holds.
        unsafe {
            while len < 4096 && *p.add(len) != 0 {
                len += 1;
            }
            core::str::from_utf8(core::slice::from_raw_parts(p, len)).ok()
        }
    }

    /// The memory map entries (at most `max`), through `f`.
    pub fn for_each_mmap(&self, mut f: impl FnMut(MmapEntry)) -> usize {
        if self.flags & FLAG_MMAP == 0 {
            return 0;
        }
        let mut off = 0u32;
        let mut n = 0;
        while off + 24 <= self.mmap_length && n < 256 {
            let p = (self.mmap_addr as usize + off as usize) as *const u8;
            // SAFETY: the map is in identity-mapped low memory; reads are unaligned-safe.
            let (size, base, len, kind) = unsafe {
                (
                    core::ptr::read_unaligned(p as *const u32),
                    core::ptr::read_unaligned(p.add(4) as *const u64),
                    core::ptr::read_unaligned(p.add(12) as *const u64),
                    core::ptr::read_unaligned(p.add(20) as *const u32),
                )
            };
            f(MmapEntry { base, len, kind });
            n += 1;
            // `size` excludes itself; a zero size would loop forever.
            off += size.max(20) + 4;
        }
        n
    }
}
