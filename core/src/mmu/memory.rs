//! Guest-physical memory: a sorted map of RAM regions, each backed by host memory the
//! core owns. Every access is bounds-checked; an address outside every region is not
//! RAM, and the caller treats it as MMIO.

use crate::mmu::code_pages::CodePages;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

/// The source of [`GuestMemory::map_id`] values: shared by every map in the process, so
/// no two maps (nor two states of one map) ever carry the same id.
static NEXT_MAP_ID: AtomicU64 = AtomicU64::new(1);

fn next_map_id() -> u64 {
    // Only uniqueness matters, not ordering with other memory operations.
    NEXT_MAP_ID.fetch_add(1, Ordering::Relaxed)
}

/// Why a guest-memory access or a change to the map failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemError {
    /// `gpa..gpa+len` is not entirely inside one RAM region.
    Unmapped {
        /// First guest-physical address of the access.
        gpa: u64,
        /// Length of the access.
        len: u64,
    },
    /// A new region would overlap an existing one.
    Overlap {
        /// Start of the new region.
        gpa: u64,
    },
    /// The host could not allocate the region.
    OutOfHostMemory {
        /// Size asked for.
        size: u64,
    },
    /// A region of size zero, not page aligned, or wrapping around the address space.
    BadRegion {
        /// Start of the region.
        gpa: u64,
        /// Size of the region.
        size: u64,
    },
}

impl fmt::Display for MemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MemError::Unmapped { gpa, len } => {
                write!(
                    f,
                    "guest-physical range {gpa:#x}..{:#x} is not RAM",
                    gpa.wrapping_add(len)
                )
            }
            MemError::Overlap { gpa } => write!(f, "memory region at {gpa:#x} overlaps another"),
            MemError::OutOfHostMemory { size } => {
                write!(
                    f,
                    "cannot allocate {size} bytes of host memory for the guest"
                )
            }
            MemError::BadRegion { gpa, size } => {
                write!(f, "bad memory region at {gpa:#x} of {size:#x} bytes (page-aligned, non-empty, below 2^52)")
            }
        }
    }
}

/// The memory type of a region, as EPT/NPT and the MTRRs express it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryType {
    /// Uncacheable (0).
    Uncacheable = 0,
    /// Write-combining (1).
    WriteCombining = 1,
    /// Write-back (6).
    WriteBack = 6,
}

/// One contiguous region of guest RAM.
pub struct Region {
    gpa: u64,
    data: Vec<u8>,
    mem_type: MemoryType,
}

impl Region {
    /// First guest-physical address.
    pub fn gpa(&self) -> u64 {
        self.gpa
    }
    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.data.len() as u64
    }
    /// One past the last guest-physical address.
    pub fn end(&self) -> u64 {
        self.gpa + self.size()
    }
    /// The memory type.
    pub fn mem_type(&self) -> MemoryType {
        self.mem_type
    }
    /// The region's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }
    /// The region's bytes, writable.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Region")
            .field("gpa", &format_args!("{:#x}", self.gpa))
            .field("size", &format_args!("{:#x}", self.size()))
            .field("mem_type", &self.mem_type)
            .finish()
    }
}

/// Guest-physical address width the map accepts (MAXPHYADDR).
pub const MAX_PHYS_BITS: u32 = 52;

/// The guest-physical memory map.
#[derive(Debug)]
pub struct GuestMemory {
    /// Sorted by address, non-overlapping.
    regions: Vec<Region>,
    /// See [`GuestMemory::map_id`].
    map_id: u64,
    /// The pages whose code vCPUs hold decoded, shared by the vCPUs.
    code_pages: CodePages,
}

impl Default for GuestMemory {
    fn default() -> Self {
        Self::new()
    }
}

impl GuestMemory {
    /// An empty map.
    pub fn new() -> GuestMemory {
        GuestMemory {
            regions: Vec::new(),
            map_id: next_map_id(),
            code_pages: CodePages::default(),
        }
    }

    /// An identifier of the map's current layout (which regions exist, where, and the
    /// host memory behind them). It is unique in the process: every map starts with an
    /// id of its own and takes a fresh one whenever a region is added, so a backend that
    /// caches host addresses of guest RAM revalidates its cache with one comparison
    /// instead of walking the regions. Moving the map keeps the id (the host memory does
    /// not move with it).
    #[inline]
    pub fn map_id(&self) -> u64 {
        self.map_id
    }

    /// A map with `size` bytes of write-back RAM at guest-physical 0. The whole range is
    /// RAM (no hole is cut at 640 KiB); the loaders mark 640 KiB..1 MiB reserved in the
    /// memory map they hand the guest, as PC firmware does.
    pub fn with_ram(size: u64) -> Result<GuestMemory, MemError> {
        let mut mem = GuestMemory::new();
        mem.add_ram(0, size)?;
        Ok(mem)
    }

    /// Add a region of zeroed RAM. The size must be a non-zero multiple of 4 KiB.
    pub fn add_ram(&mut self, gpa: u64, size: u64) -> Result<(), MemError> {
        let end = gpa.checked_add(size);
        if size == 0
            || gpa % 4096 != 0
            || size % 4096 != 0
            || end.is_none_or(|e| e > 1 << MAX_PHYS_BITS)
        {
            return Err(MemError::BadRegion { gpa, size });
        }
        let end = gpa + size;
        if self.regions.iter().any(|r| gpa < r.end() && r.gpa < end) {
            return Err(MemError::Overlap { gpa });
        }
        let len = usize::try_from(size).map_err(|_| MemError::OutOfHostMemory { size })?;
        // Ask first whether the host can provide the memory at all, so an impossible size
        // is an error rather than an abort; then allocate it zeroed, which for a large
        // buffer maps zero pages lazily: untouched guest RAM costs the host nothing.
        let mut probe: Vec<u8> = Vec::new();
        probe
            .try_reserve_exact(len)
            .map_err(|_| MemError::OutOfHostMemory { size })?;
        drop(probe);
        let data = alloc::vec![0u8; len];
        let at = self.regions.partition_point(|r| r.gpa < gpa);
        self.regions.insert(
            at,
            Region {
                gpa,
                data,
                mem_type: MemoryType::WriteBack,
            },
        );
        self.map_id = next_map_id();
        let pages = self.regions.iter().map(|r| r.data.len() / 4096).sum();
        // The positions of later regions' pages moved: nothing watched stays valid.
        self.code_pages.resize(pages);
        self.code_pages.forget_all();
        Ok(())
    }

    /// Which pages vCPUs hold decoded code from (see [`CodePages`]).
    #[inline(always)]
    pub fn code_pages(&self) -> &CodePages {
        &self.code_pages
    }

    /// Which pages vCPUs hold decoded code from, writable.
    #[inline(always)]
    pub fn code_pages_mut(&mut self) -> &mut CodePages {
        &mut self.code_pages
    }

    /// The regions, sorted by address.
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// Total bytes of RAM.
    pub fn ram_size(&self) -> u64 {
        self.regions.iter().map(Region::size).sum()
    }

    /// The index of the region holding `gpa`, if any.
    #[inline]
    pub fn region_index(&self, gpa: u64) -> Option<usize> {
        // Most maps hold one or two regions: a linear scan beats a binary search.
        self.regions
            .iter()
            .position(|r| gpa >= r.gpa && gpa - r.gpa < r.data.len() as u64)
    }

    /// Whether `gpa..gpa+len` lies inside one RAM region.
    #[inline]
    pub fn is_ram(&self, gpa: u64, len: u64) -> bool {
        self.slice(gpa, len).is_some()
    }

    /// Whether `gpa..gpa+len` is entirely RAM; unlike [`GuestMemory::is_ram`] it may span
    /// adjacent regions. An empty range is RAM if it does not wrap.
    pub fn is_ram_range(&self, gpa: u64, len: u64) -> bool {
        let Some(end) = gpa.checked_add(len) else {
            return false;
        };
        let mut at = gpa;
        while at < end {
            match self.region_index(at).and_then(|i| self.regions.get(i)) {
                Some(r) => at = r.end(),
                None => return false,
            }
        }
        true
    }

    /// Zero `gpa..gpa+len`, which may span adjacent regions. Nothing is written if any
    /// part of it is not RAM.
    pub fn zero_range(&mut self, gpa: u64, len: u64) -> Result<(), MemError> {
        if !self.is_ram_range(gpa, len) {
            return Err(MemError::Unmapped { gpa, len });
        }
        let end = gpa + len;
        let mut at = gpa;
        while at < end {
            let region_end = self
                .region_index(at)
                .and_then(|i| self.regions.get(i))
                .map_or(end, Region::end);
            let n = region_end.min(end) - at;
            self.zero(at, n)?;
            at += n;
        }
        Ok(())
    }

    /// The host bytes backing `gpa..gpa+len`, if they lie inside one region.
    #[inline]
    pub fn slice(&self, gpa: u64, len: u64) -> Option<&[u8]> {
        for r in &self.regions {
            let off = gpa.wrapping_sub(r.gpa);
            if gpa >= r.gpa && off < r.data.len() as u64 {
                let end = off.checked_add(len)?;
                return r.data.get(off as usize..usize::try_from(end).ok()?);
            }
        }
        None
    }

    /// The host bytes backing `gpa..gpa+len`, writable, if they lie inside one region.
    #[inline]
    pub fn slice_mut(&mut self, gpa: u64, len: u64) -> Option<&mut [u8]> {
        for r in &mut self.regions {
            let off = gpa.wrapping_sub(r.gpa);
            if gpa >= r.gpa && off < r.data.len() as u64 {
                let end = off.checked_add(len)?;
                return r.data.get_mut(off as usize..usize::try_from(end).ok()?);
            }
        }
        None
    }

    /// Read `buf.len()` bytes at `gpa`. The range may span adjacent regions.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let err = MemError::Unmapped {
            gpa,
            len: buf.len() as u64,
        };
        let mut done = 0usize;
        while done < buf.len() {
            let at = gpa.checked_add(done as u64).ok_or(err)?;
            let r = &self.regions[self.region_index(at).ok_or(err)?];
            let off = (at - r.gpa) as usize;
            let n = (buf.len() - done).min(r.data.len() - off);
            buf[done..done + n].copy_from_slice(&r.data[off..off + n]);
            done += n;
        }
        Ok(())
    }

    /// Write `buf` at `gpa`. The range may span adjacent regions; nothing is written if
    /// any part of it is not RAM.
    pub fn write(&mut self, gpa: u64, buf: &[u8]) -> Result<(), MemError> {
        let err = MemError::Unmapped {
            gpa,
            len: buf.len() as u64,
        };
        // Check the whole range first so a failed write changes nothing.
        let mut at = gpa;
        let mut left = buf.len() as u64;
        while left > 0 {
            let r = &self.regions[self.region_index(at).ok_or(err)?];
            let n = left.min(r.end() - at);
            left -= n;
            at = at.checked_add(n).ok_or(err)?;
        }
        let mut done = 0usize;
        while done < buf.len() {
            let at = gpa + done as u64;
            let idx = self.region_index(at).ok_or(err)?;
            let r = &mut self.regions[idx];
            let off = (at - r.gpa) as usize;
            let n = (buf.len() - done).min(r.data.len() - off);
            r.data[off..off + n].copy_from_slice(&buf[done..done + n]);
            done += n;
        }
        Ok(())
    }

    /// Fill `gpa..gpa+len` with zeroes.
    pub fn zero(&mut self, gpa: u64, len: u64) -> Result<(), MemError> {
        let s = self
            .slice_mut(gpa, len)
            .ok_or(MemError::Unmapped { gpa, len })?;
        s.fill(0);
        Ok(())
    }

    /// Read a little-endian u8.
    pub fn read_u8(&self, gpa: u64) -> Result<u8, MemError> {
        let mut b = [0u8; 1];
        self.read(gpa, &mut b)?;
        Ok(b[0])
    }
    /// Read a little-endian u16.
    pub fn read_u16(&self, gpa: u64) -> Result<u16, MemError> {
        let mut b = [0u8; 2];
        self.read(gpa, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }
    /// Read a little-endian u32.
    pub fn read_u32(&self, gpa: u64) -> Result<u32, MemError> {
        let mut b = [0u8; 4];
        self.read(gpa, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    /// Read a little-endian u64.
    #[inline]
    pub fn read_u64(&self, gpa: u64) -> Result<u64, MemError> {
        match self.slice(gpa, 8) {
            Some(s) => Ok(u64::from_le_bytes(s.try_into().unwrap_or([0; 8]))),
            None => {
                let mut b = [0u8; 8];
                self.read(gpa, &mut b)?;
                Ok(u64::from_le_bytes(b))
            }
        }
    }
    /// Write a u8.
    pub fn write_u8(&mut self, gpa: u64, v: u8) -> Result<(), MemError> {
        self.write(gpa, &[v])
    }
    /// Write a little-endian u16.
    pub fn write_u16(&mut self, gpa: u64, v: u16) -> Result<(), MemError> {
        self.write(gpa, &v.to_le_bytes())
    }
    /// Write a little-endian u32.
    pub fn write_u32(&mut self, gpa: u64, v: u32) -> Result<(), MemError> {
        self.write(gpa, &v.to_le_bytes())
    }
    /// Write a little-endian u64.
    pub fn write_u64(&mut self, gpa: u64, v: u64) -> Result<(), MemError> {
        self.write(gpa, &v.to_le_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accesses_are_bounds_checked() {
        let mut mem = GuestMemory::with_ram(0x2000).unwrap();
        mem.write_u32(0x1ffc, 0xdead_beef).unwrap();
        assert_eq!(mem.read_u32(0x1ffc).unwrap(), 0xdead_beef);
        assert_eq!(
            mem.read_u64(0x1ffc),
            Err(MemError::Unmapped {
                gpa: 0x1ffc,
                len: 8
            })
        );
        assert!(mem.write_u64(0x1ffc, 1).is_err());
        // The failed write changed nothing.
        assert_eq!(mem.read_u32(0x1ffc).unwrap(), 0xdead_beef);
        assert!(mem.read_u8(u64::MAX).is_err());
        assert!(mem.slice(u64::MAX - 1, 4).is_none());
    }

    #[test]
    fn accesses_span_adjacent_regions() {
        let mut mem = GuestMemory::with_ram(0x1000).unwrap();
        mem.add_ram(0x1000, 0x1000).unwrap();
        mem.write_u64(0xffc, 0x1122_3344_5566_7788).unwrap();
        assert_eq!(mem.read_u64(0xffc).unwrap(), 0x1122_3344_5566_7788);
        assert_eq!(mem.regions().len(), 2);
    }

    #[test]
    fn map_id_changes_with_the_layout_only() {
        let mut a = GuestMemory::with_ram(0x2000).unwrap();
        let b = GuestMemory::with_ram(0x2000).unwrap();
        assert_ne!(a.map_id(), b.map_id(), "two maps never share an id");
        assert_ne!(a.map_id(), GuestMemory::default().map_id());
        let before = a.map_id();
        a.write_u64(0x10, 5).unwrap();
        a.zero_range(0, 0x100).unwrap();
        assert_eq!(a.map_id(), before, "writes keep the layout");
        assert!(a.add_ram(0x1000, 0x1000).is_err());
        assert_eq!(a.map_id(), before, "a refused region keeps the layout");
        a.add_ram(0x4000, 0x1000).unwrap();
        assert_ne!(a.map_id(), before, "a new region changes the id");
        let after = a.map_id();
        let moved = a;
        assert_eq!(moved.map_id(), after, "moving the map keeps the id");
    }

    #[test]
    fn bad_regions_are_refused() {
        let mut mem = GuestMemory::with_ram(0x4000).unwrap();
        assert_eq!(
            mem.add_ram(0x2000, 0x1000),
            Err(MemError::Overlap { gpa: 0x2000 })
        );
        assert!(matches!(
            mem.add_ram(0x5001, 0x1000),
            Err(MemError::BadRegion { .. })
        ));
        assert!(matches!(
            mem.add_ram(0x8000, 0),
            Err(MemError::BadRegion { .. })
        ));
        assert!(matches!(
            mem.add_ram(0xffff_ffff_ffff_f000, 0x2000),
            Err(MemError::BadRegion { .. })
        ));
    }

    #[test]
    fn ranges_and_zeroing() {
        let mut mem = GuestMemory::with_ram(0x1000).unwrap();
        mem.add_ram(0x1000, 0x1000).unwrap();
        mem.add_ram(0x4000, 0x1000).unwrap();
        assert!(mem.is_ram_range(0x800, 0x1800));
        assert!(!mem.is_ram_range(0x800, 0x1801));
        assert!(!mem.is_ram_range(0x3000, 0x1000));
        assert!(mem.is_ram_range(0x2000, 0));
        assert!(!mem.is_ram_range(u64::MAX, 2));
        mem.write(0xff0, &[0xff; 0x20]).unwrap();
        mem.zero_range(0xff8, 0x10).unwrap();
        assert_eq!(mem.read_u64(0xff0).unwrap(), u64::MAX);
        assert_eq!(mem.read_u64(0xff8).unwrap(), 0);
        assert_eq!(mem.read_u64(0x1000).unwrap(), 0);
        assert_eq!(mem.read_u64(0x1008).unwrap(), u64::MAX);
        mem.write_u64(0x1ff8, u64::MAX).unwrap();
        assert!(mem.zero_range(0x1ff8, 0x10).is_err());
        assert_eq!(mem.read_u64(0x1ff8).unwrap(), u64::MAX, "nothing zeroed");
    }
}
