//! Guest memory as the instructions see it: segmentation, paging through the core's walker
//! and the software TLB ([`crate::tlb`]) with host pointers for RAM pages, MMIO replay, and
//! the self-modifying-code check on stores to pages that hold decoded instructions.

use crate::cpu::{cr0, cr4, sr, Cpu, MmioRead};
use crate::exception::{fault_ec, Ex, GP, PF, SS};
use alloc::vec::Vec;
use opsvisor_core::exit::{Direction, Exit};
use opsvisor_core::mmu::memory::GuestMemory;
use opsvisor_core::mmu::walk::{walk_with_ac, Access, PagingRegs};
use opsvisor_core::ops::Segment;

use crate::tlb::perm;
pub use crate::tlb::{Tlb, SUPERVISOR, SUPERVISOR_AC, USER};

/// One RAM region as a run sees it.
#[derive(Clone, Copy, Debug)]
struct RamRegion {
    /// First guest-physical address.
    gpa: u64,
    /// Size in bytes (a multiple of 4 KiB).
    len: u64,
    /// Host address of the first byte.
    host: usize,
    /// Index of the region's first page among all RAM pages (see [`RamMap::page_slot`]).
    first_slot: usize,
}

/// The host memory behind guest RAM during one run, region by region, and a dense
/// numbering of the RAM pages: per-page tables (the self-modifying-code chunks) are
/// indexed by it, so they cost host memory in proportion to the RAM that exists, never
/// to the highest guest-physical address (a map with RAM at 1 TiB has as few slots as
/// one with the same RAM at 0).
#[derive(Default, Debug)]
pub struct RamMap {
    /// The [`GuestMemory::map_id`] `regions` were taken from (0, which no map has, when
    /// never filled).
    map_id: u64,
    regions: Vec<RamRegion>,
    /// RAM pages in all regions.
    pages: usize,
}

impl RamMap {
    /// Whether `mem`'s layout differs from the one cached (every run starts here: one
    /// comparison of [`GuestMemory::map_id`], which changes whenever a region is added and
    /// differs between two maps).
    #[inline(always)]
    pub fn changed(&self, mem: &GuestMemory) -> bool {
        mem.map_id() != self.map_id
    }

    /// Refresh from `mem`; returns true if anything moved (cached host addresses are then
    /// stale and the TLB must be flushed).
    pub fn refresh(&mut self, mem: &mut GuestMemory) -> bool {
        if !self.changed(mem) {
            return false;
        }
        self.rebuild(mem);
        true
    }

    #[inline(never)]
    fn rebuild(&mut self, mem: &mut GuestMemory) {
        self.map_id = mem.map_id();
        self.regions.clear();
        self.pages = 0;
        let bounds: Vec<(u64, u64)> = mem.regions().iter().map(|r| (r.gpa(), r.size())).collect();
        for (gpa, len) in bounds {
            if let Some(s) = mem.slice_mut(gpa, len) {
                let first_slot = self.pages;
                // Regions are host allocations, so their page count fits in a usize.
                self.pages += (len / 4096) as usize;
                self.regions.push(RamRegion {
                    gpa,
                    len,
                    host: s.as_mut_ptr() as usize,
                    first_slot,
                });
            }
        }
    }

    /// The region holding the whole 4 KiB page at `gpa_page`, and the page's offset in it.
    #[inline]
    fn find(&self, gpa_page: u64) -> Option<(&RamRegion, u64)> {
        self.regions.iter().find_map(|r| {
            let off = gpa_page.wrapping_sub(r.gpa);
            (gpa_page >= r.gpa && off < r.len && r.len - off >= 4096).then_some((r, off))
        })
    }

    /// Host address of the guest-physical page `gpa_page`, if it is RAM.
    pub fn host_page(&self, gpa_page: u64) -> Option<usize> {
        self.find(gpa_page).map(|(r, off)| r.host + off as usize)
    }

    /// Host address and dense index ([`RamMap::page_slot`]) of the guest-physical page
    /// `gpa_page`, if it is RAM: one search for both.
    #[inline]
    pub fn host_page_and_slot(&self, gpa_page: u64) -> Option<(usize, usize)> {
        self.find(gpa_page)
            .map(|(r, off)| (r.host + off as usize, r.first_slot + (off / 4096) as usize))
    }

    /// The dense index (0..[`RamMap::pages`]) of the RAM page with page number `page`
    /// (guest-physical address / 4096), if it is RAM.
    #[inline]
    pub fn page_slot(&self, page: u64) -> Option<usize> {
        let gpa = page.checked_mul(4096)?;
        self.find(gpa)
            .map(|(r, off)| r.first_slot + (off / 4096) as usize)
    }

    /// The number of RAM pages.
    pub fn pages(&self) -> usize {
        self.pages
    }
}

/// The low `size` bytes (1 to 8) of a value.
#[inline]
fn byte_mask(size: u32) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * size)) - 1
    }
}

/// Read `size` bytes at host address `p`.
///
/// # Safety
/// `p..p+size` must lie inside a live guest RAM region (a TLB entry's page, with the offset
/// checked against the page end).
#[inline(always)]
pub(crate) unsafe fn host_read(p: usize, size: u32) -> u64 {
    let p = p as *const u8;
    // SAFETY: the caller guarantees p..p+size is readable guest RAM; unaligned reads are
    // allowed by read_unaligned.
    unsafe {
        match size {
            1 => u64::from(*p),
            2 => u64::from(core::ptr::read_unaligned(p as *const u16)),
            4 => u64::from(core::ptr::read_unaligned(p as *const u32)),
            _ => core::ptr::read_unaligned(p as *const u64),
        }
    }
}

/// Write `size` bytes at host address `p`.
///
/// # Safety
/// As for [`host_read`], and no reference to those bytes may be alive.
#[inline(always)]
pub(crate) unsafe fn host_write(p: usize, size: u32, v: u64) {
    let p = p as *mut u8;
    // SAFETY: the caller guarantees p..p+size is writable guest RAM with no live reference.
    unsafe {
        match size {
            1 => *p = v as u8,
            2 => core::ptr::write_unaligned(p as *mut u16, v as u16),
            4 => core::ptr::write_unaligned(p as *mut u32, v as u32),
            _ => core::ptr::write_unaligned(p as *mut u64, v),
        }
    }
}

/// The kind of access for translation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// Data read.
    Read,
    /// Data write.
    Write,
    /// Instruction fetch.
    Fetch,
}

impl Kind {
    /// The TLB's permission bit for this kind.
    #[inline(always)]
    fn perm(self) -> u8 {
        match self {
            Kind::Read => perm::READ,
            Kind::Write => perm::WRITE,
            Kind::Fetch => perm::FETCH,
        }
    }
}

/// Whether `la` is a canonical 48-bit address.
pub(crate) fn canonical(la: u64) -> bool {
    ((la as i64) << 16 >> 16) as u64 == la
}

/// A non-canonical address raises #GP(0), except through SS, where it raises #SS(0)
/// (SDM 3A 6.15, "Interrupt 12"). Translation does not know the segment, so the
/// segment-relative accessors remap its #GP on their (cold) error path.
#[cold]
fn stack_canonical(e: Ex, seg: u8, la: u64, c: &Cpu) -> Ex {
    if seg == sr::SS && !c.canonical(la) && e == GP(0) {
        fault_ec(SS, 0)
    } else {
        e
    }
}

impl Cpu {
    /// Segment-relative offset `ea` of an access of `size` bytes through segment `seg` to a
    /// linear address, with the checks protected mode makes.
    #[inline(always)]
    pub fn linear(&self, seg: u8, ea: u64, size: u32, write: bool) -> Result<u64, Ex> {
        if self.bits == 64 {
            return Ok(if seg >= sr::FS {
                ea.wrapping_add(self.seg[usize::from(seg & 7)].base)
            } else {
                ea
            });
        }
        self.linear_legacy(seg, ea, size, write)
    }

    fn linear_legacy(&self, seg: u8, ea: u64, size: u32, write: bool) -> Result<u64, Ex> {
        let s = &self.seg[usize::from(seg & 7)];
        let flt = || {
            if seg == sr::SS {
                fault_ec(SS, 0)
            } else {
                GP(0)
            }
        };
        if self.protected() {
            if s.attr & Segment::UNUSABLE != 0 {
                return Err(flt());
            }
            let ty = s.attr & 0xf;
            let code = ty & 8 != 0;
            if write && (code || ty & 2 == 0) {
                return Err(flt());
            }
            if !write && code && ty & 2 == 0 && seg != sr::CS {
                return Err(flt());
            }
            let last = ea.wrapping_add(u64::from(size) - 1);
            if !code && ty & 4 != 0 {
                // Expand-down: valid offsets are above the limit.
                let upper = if s.attr & Segment::DB != 0 {
                    0xffff_ffff
                } else {
                    0xffff
                };
                if ea <= u64::from(s.limit) || last > upper {
                    return Err(flt());
                }
            } else if s.limit != u32::MAX && (last > u64::from(s.limit) || last < ea) {
                return Err(flt());
            }
        }
        Ok(s.base.wrapping_add(ea) & 0xffff_ffff)
    }

    /// Translate linear `la` for `kind` in privilege class `sel`, from the TLB when it
    /// holds the page for that kind (or the large page around it), else by walking the
    /// guest's page tables; the TLB is filled either way. Returns the guest-physical
    /// address.
    pub fn translate(
        &mut self,
        mem: &mut GuestMemory,
        la: u64,
        kind: Kind,
        sel: usize,
    ) -> Result<u64, Ex> {
        let need = kind.perm();
        if let Some(gpa_page) = self.tlb.cached(sel, la, need) {
            return Ok(gpa_page | (la & 0xfff));
        }
        let gpa_page = if self.cr0 & cr0::PG == 0 {
            // Unpaged: every kind of access is allowed and there is no dirty bit to set.
            let gpa_page = la & 0xffff_f000;
            self.fill_tlb(
                mem,
                sel,
                la,
                gpa_page,
                perm::READ | perm::WRITE | perm::FETCH,
            );
            gpa_page
        } else {
            match self.tlb.lookup(sel, la, need) {
                Some((gpa_page, false)) => gpa_page,
                Some((gpa_page, true)) => {
                    self.fill_tlb(mem, sel, la, gpa_page, need);
                    gpa_page
                }
                None => self.walk_and_fill(mem, la, kind, sel)?,
            }
        };
        Ok(gpa_page | (la & 0xfff))
    }

    /// The TLB miss: walk the page tables for `kind` and fill the TLB (and its large-page
    /// cache when the page is large). Returns the guest-physical page.
    #[inline(never)]
    fn walk_and_fill(
        &mut self,
        mem: &mut GuestMemory,
        la: u64,
        kind: Kind,
        sel: usize,
    ) -> Result<u64, Ex> {
        if self.lma() && !self.canonical(la) {
            return Err(GP(0));
        }
        let regs = PagingRegs {
            cr0: self.cr0,
            cr3: self.cr3,
            cr4: self.cr4,
            efer: self.efer,
            pkru: self.pkru,
        };
        let access = Access {
            write: kind == Kind::Write,
            user: sel == USER,
            fetch: kind == Kind::Fetch,
        };
        let t = match walk_with_ac(mem, &regs, la, access, sel == SUPERVISOR_AC) {
            Ok(t) => t,
            Err(pf) => {
                self.cr2 = la;
                return Err(fault_ec(PF, pf.error_code));
            }
        };
        if t.page_size > 4096 {
            let global = t.global && self.cr4 & cr4::PGE != 0;
            self.tlb
                .fill_large(sel, la, t.gpa, t.page_size, kind.perm(), global);
        }
        let gpa_page = t.gpa & !0xfff;
        self.fill_tlb(mem, sel, la, gpa_page, kind.perm());
        Ok(gpa_page)
    }

    /// Fill the TLB's entry for linear `la` in class `sel`: guest-physical page `gpa_page`,
    /// validated for `perms`, with its host address when it is RAM.
    fn fill_tlb(&mut self, mem: &GuestMemory, sel: usize, la: u64, gpa_page: u64, perms: u8) {
        // One search of the RAM map for both the host address and the code-table slot.
        let found = self.ram.host_page_and_slot(gpa_page);
        // A page holding a data breakpoint is read and written through the slow paths,
        // which check the breakpoints (an entry without a host address has no fast tags).
        let host = if self.dbg_data && crate::debug::page_watched(self, la >> 12) {
            0
        } else {
            found.map_or(0, |(host, _)| host)
        };
        // Code this vCPU or another decoded: stores must be seen.
        let has_code = found.is_some_and(|(_, slot)| {
            self.code_chunks.get(slot).is_some_and(|&m| m != 0) || mem.code_pages().is_watched(slot)
        });
        self.tlb.fill(sel, la, gpa_page, perms, host, has_code);
    }

    /// Stop fast stores through the TLB to every page some vCPU holds decoded code from
    /// (the machine's record, [`opsvisor_core::mmu::code_pages`]), keeping the
    /// translations: such stores then take the checked path.
    pub fn protect_watched_pages(&mut self, mem: &GuestMemory) {
        let record = mem.code_pages();
        let ram = &self.ram;
        self.tlb.protect_pages_where(|gpa_page| {
            ram.page_slot(gpa_page >> 12)
                .is_some_and(|slot| record.is_watched(slot))
        });
    }

    /// Whether guest-physical page `gpa_page` holds decoded instructions.
    #[inline]
    pub fn page_has_code(&self, gpa_page: u64) -> bool {
        match self.code_chunks_of(gpa_page >> 12) {
            Some(m) => m != 0,
            // Pages that are not RAM never hold cached code.
            None => false,
        }
    }

    /// The code-chunk mask of the RAM page with page number `page` (`None` outside RAM).
    #[inline]
    pub fn code_chunks_of(&self, page: u64) -> Option<u32> {
        let slot = self.ram.page_slot(page)?;
        self.code_chunks.get(slot).copied()
    }

    /// The code-chunk mask of the RAM page with page number `page`, writable.
    #[inline]
    pub fn code_chunks_mut(&mut self, page: u64) -> Option<&mut u32> {
        let slot = self.ram.page_slot(page)?;
        self.code_chunks.get_mut(slot)
    }

    /// Read `size` (1, 2, 4, 8) bytes at linear `la` in privilege class `sel`.
    #[inline(always)]
    pub fn read_lin(
        &mut self,
        mem: &mut GuestMemory,
        la: u64,
        size: u32,
        sel: usize,
    ) -> Result<u64, Ex> {
        let (e, tag) = self
            .tlb
            .probe(sel, la, la.wrapping_add(u64::from(size) - 1));
        if e.read == tag {
            // SAFETY: a matching read tag means `addend + la` is inside a 4 KiB RAM page of
            // the current run's memory map, and so is the access's last byte (the tag is
            // that of the page holding it).
            return Ok(unsafe { host_read(e.addend.wrapping_add(la as usize), size) });
        }
        self.read_slow(mem, la, size, sel, Kind::Read)
    }

    /// Read `size` (1, 2, 4, 8) bytes at linear `la` in privilege class `sel` for a
    /// read-modify-write instruction: the pages are checked for writing, as the processor
    /// does for the read (a read-only or not-present page faults with W=1 in the error code
    /// before anything is written).
    #[inline(always)]
    pub fn read_lin_rmw(
        &mut self,
        mem: &mut GuestMemory,
        la: u64,
        size: u32,
        sel: usize,
    ) -> Result<u64, Ex> {
        let (e, tag) = self
            .tlb
            .probe(sel, la, la.wrapping_add(u64::from(size) - 1));
        if e.write == tag {
            // SAFETY: a matching write tag means `addend + la` is inside a writable 4 KiB
            // RAM page of the current run's memory map, with the access's last byte.
            return Ok(unsafe { host_read(e.addend.wrapping_add(la as usize), size) });
        }
        self.read_slow(mem, la, size, sel, Kind::Write)
    }

    /// Translate for `kind` (Read, or Write for the read half of a read-modify-write) and
    /// read.
    #[inline(never)]
    fn read_slow(
        &mut self,
        mem: &mut GuestMemory,
        la: u64,
        size: u32,
        sel: usize,
        kind: Kind,
    ) -> Result<u64, Ex> {
        let off = la & 0xfff;
        if self.dbg_data {
            crate::debug::data_access(self, la, size, false);
        } else if off + u64::from(size) <= 4096 {
            // A device's register (the common reason to be here): its page outside RAM
            // (without data breakpoints, no other page lacks a host address) goes to the
            // MMIO read with this one look-up of the TLB.
            if let Some(gpa_page) = self.tlb.cached_unbacked(sel, la, kind.perm()) {
                return self.mmio_read(gpa_page | off, size);
            }
        }
        if off + u64::from(size) > 4096 {
            // Split across two pages: translate both before reading either. Each part is
            // read on its own, from RAM or as an MMIO read: a part outside RAM reads what
            // the bus answers there (a device's register, or all ones where nothing is),
            // as the two bus transactions of a split access do on a PC.
            let first = 4096 - off;
            let g1 = self.translate(mem, la, kind, sel)?;
            let la2 = self.wrap_la(la.wrapping_add(first));
            let g2 = self.translate(mem, la2, kind, sel)?;
            let lo = self.read_phys(mem, g1, first as u32)?;
            let hi = self.read_phys(mem, g2, size - first as u32)?;
            return Ok(lo | hi << (8 * first));
        }
        let gpa = self.translate(mem, la, kind, sel)?;
        self.read_phys(mem, gpa, size)
    }

    /// Wrap a linear address to the width of the current mode.
    #[inline]
    pub fn wrap_la(&self, la: u64) -> u64 {
        if self.lma() {
            la
        } else {
            la & 0xffff_ffff
        }
    }

    /// Read guest-physical memory; outside RAM this is an MMIO read (replayed or exited).
    pub fn read_phys(&mut self, mem: &GuestMemory, gpa: u64, size: u32) -> Result<u64, Ex> {
        if let Some(s) = mem.slice(gpa, u64::from(size)) {
            let mut b = [0u8; 8];
            b[..s.len()].copy_from_slice(s);
            return Ok(u64::from_le_bytes(b));
        }
        self.mmio_read(gpa, size)
    }

    #[inline]
    fn mmio_read(&mut self, gpa: u64, size: u32) -> Result<u64, Ex> {
        let m = &mut self.mmio;
        let pos = usize::from(m.pos);
        if pos < usize::from(m.len) {
            let r = m.log[pos];
            if r.gpa == gpa && u32::from(r.size) == size {
                m.pos += 1;
                // The log is cleared when this instruction retires.
                self.brk = true;
                return Ok(r.value);
            }
        }
        if usize::from(m.len) >= m.log.len() {
            return Err(self.fail());
        }
        m.want = Some((gpa, size as u8));
        Err(self.exit_with(Exit::Mmio {
            gpa,
            size: size as u8,
            direction: Direction::Read,
            data: 0,
        }))
    }

    /// Record the value of the MMIO read the last exit asked for.
    pub fn mmio_complete_read(&mut self, value: u64) {
        if let Some((gpa, size)) = self.mmio.want.take() {
            let m = &mut self.mmio;
            if usize::from(m.len) < m.log.len() {
                m.log[usize::from(m.len)] = MmioRead { gpa, size, value };
                m.len += 1;
            }
        }
    }

    /// Write `size` bytes of `v` at linear `la` in privilege class `sel`.
    #[inline(always)]
    pub fn write_lin(
        &mut self,
        mem: &mut GuestMemory,
        la: u64,
        size: u32,
        v: u64,
        sel: usize,
    ) -> Result<(), Ex> {
        let (e, tag) = self
            .tlb
            .probe(sel, la, la.wrapping_add(u64::from(size) - 1));
        if e.write == tag {
            // SAFETY: a matching write tag means `addend + la` is inside a writable 4 KiB
            // RAM page of the current run's memory map holding no cached code, with the
            // access's last byte.
            unsafe { host_write(e.addend.wrapping_add(la as usize), size, v) };
            return Ok(());
        }
        self.write_slow(mem, la, size, v, sel)
    }

    #[inline(never)]
    fn write_slow(
        &mut self,
        mem: &mut GuestMemory,
        la: u64,
        size: u32,
        v: u64,
        sel: usize,
    ) -> Result<(), Ex> {
        if self.dbg_data {
            crate::debug::data_access(self, la, size, true);
        }
        let off = la & 0xfff;
        if off + u64::from(size) > 4096 {
            // Split across two pages: both translations are checked before either part
            // is stored; then each part goes to RAM or, outside RAM, to the bus as an MMIO
            // store of its own (dropped where no device is), as on a PC.
            let first = 4096 - off;
            let g1 = self.translate(mem, la, Kind::Write, sel)?;
            let la2 = self.wrap_la(la.wrapping_add(first));
            let g2 = self.translate(mem, la2, Kind::Write, sel)?;
            self.write_phys(mem, g1, first as u32, v)?;
            return self.write_phys(mem, g2, size - first as u32, v >> (8 * first));
        }
        let gpa = self.translate(mem, la, Kind::Write, sel)?;
        self.write_phys(mem, gpa, size, v)
    }

    /// Write guest-physical memory; outside RAM this records the instruction's MMIO store.
    pub fn write_phys(
        &mut self,
        mem: &mut GuestMemory,
        gpa: u64,
        size: u32,
        v: u64,
    ) -> Result<(), Ex> {
        let bytes = v.to_le_bytes();
        if let Some(s) = mem.slice_mut(gpa, u64::from(size)) {
            s.copy_from_slice(&bytes[..size as usize]);
            self.note_code_write(mem, gpa, size);
            return Ok(());
        }
        let store = Some((gpa, size as u8, v & byte_mask(size)));
        if self.mmio.write.is_none() {
            self.mmio.write = store;
        } else if self.mmio.write2.is_none() {
            // The second part of a store split across two pages outside RAM.
            self.mmio.write2 = store;
        } else {
            // More MMIO stores in one instruction than the exits can carry.
            return Err(self.fail());
        }
        self.brk = true;
        Ok(())
    }

    /// A store hit guest-physical `gpa..gpa+size` (within one page): if it overlaps code
    /// this vCPU decoded, schedule that page's blocks for invalidation and end the
    /// current block; if other vCPUs may have decoded code from the page, tell them
    /// through the machine's record ([`opsvisor_core::mmu::code_pages`]).
    #[inline]
    pub(crate) fn note_code_write(&mut self, mem: &mut GuestMemory, gpa: u64, size: u32) {
        let page = gpa >> 12;
        let Some(slot) = self.ram.page_slot(page) else {
            return;
        };
        let chunks = self.code_chunks.get(slot).copied().unwrap_or(0);
        let watched = mem.code_pages().is_watched(slot);
        if chunks == 0 && !watched {
            return;
        }
        let off = gpa & 0xfff;
        let last = (off + u64::from(size) - 1).min(0xfff);
        let first_chunk = off >> 7;
        let last_chunk = last >> 7;
        let span = ((1u64 << (last_chunk - first_chunk + 1)) - 1) << first_chunk;
        let own_code_hit = u64::from(chunks) & span != 0;
        if own_code_hit {
            self.smc_pages.push(page);
            self.brk = true;
        }
        if watched {
            // This vCPU still has code there unless the store hit it (then the whole
            // page's blocks go).
            let still_cached = chunks != 0 && !own_code_hit;
            let record = mem.code_pages_mut();
            let before = record.seq();
            record.written(slot, page, self.code_reader, still_cached);
            // A reader skips its own events: one that was up to date stays so (a lone
            // vCPU's stores never send it down the slow path).
            if self.code_seen == before {
                self.code_seen = record.seq();
            }
        }
    }

    // ---- segment-relative accesses at the current privilege ----

    /// Alignment check (SDM 3A 6.15, #AC): at CPL 3 with CR0.AM and RFLAGS.AC set, a
    /// 2-, 4- or 8-byte data or stack access to an address that is not a multiple of its
    /// size raises #AC(0). CPL is tested first: kernel code never pays for the rest.
    #[inline(always)]
    pub fn check_alignment(&self, la: u64, size: u32) -> Result<(), Ex> {
        if self.cpl == 3
            && size.is_power_of_two()
            && la & u64::from(size - 1) != 0
            && self.cr0 & cr0::AM != 0
            && self.rf & crate::arith::flags::AC != 0
        {
            return Err(fault_ec(crate::exception::AC, 0));
        }
        Ok(())
    }

    /// The host address of an explicit access of `size` bytes at `seg:ea` at the current
    /// privilege (a write if `write`), when the access needs nothing the checked path
    /// ([`Cpu::rd`], [`Cpu::wr`], [`Cpu::rd_rmw`]) does: 64-bit mode (no segment checks; FS
    /// and GS add their base), no alignment check to make (below CPL 3, or aligned), and
    /// a TLB entry that lets this kind of access use the host page. `None` otherwise: the
    /// caller then takes the checked path, which decides everything again.
    ///
    /// A write address is also what the read half of a read-modify-write may use (the
    /// write tag implies the read permission and the dirty bit).
    #[inline(always)]
    pub fn fast_host(&self, seg: u8, ea: u64, size: u32, write: bool) -> Option<usize> {
        if self.bits != 64 {
            return None;
        }
        let la = if seg >= sr::FS {
            ea.wrapping_add(self.seg[usize::from(seg & 7)].base)
        } else {
            ea
        };
        if self.cpl == 3 && la & u64::from(size - 1) != 0 {
            return None;
        }
        let (e, tag) = self
            .tlb
            .probe(self.tlb.sel, la, la.wrapping_add(u64::from(size) - 1));
        let t = if write { e.write } else { e.read };
        (t == tag).then(|| e.addend.wrapping_add(la as usize))
    }

    /// Read `size` bytes at `seg:ea`.
    #[inline(always)]
    pub fn rd(&mut self, mem: &mut GuestMemory, seg: u8, ea: u64, size: u32) -> Result<u64, Ex> {
        let la = self.linear(seg, ea, size, false)?;
        self.check_alignment(la, size)?;
        self.read_lin(mem, la, size, self.tlb.sel)
            .map_err(|e| stack_canonical(e, seg, la, self))
    }

    /// [`Cpu::rd`] for the loads that [`Cpu::fast_host`] did not serve (outside 64-bit
    /// mode, misaligned at CPL 3, or missed in the TLB), with the MMIO read of a device's
    /// register taken here: when the access misses the RAM tag, stays inside its page,
    /// and the TLB's entry for the page validated the read without a host address
    /// (outside RAM, no data breakpoint armed), the MMIO read follows that one look-up.
    /// Everything else goes the way of [`Cpu::rd`], with the same checks in the same
    /// order and the same faults.
    #[inline(always)]
    pub fn rd_load(
        &mut self,
        mem: &mut GuestMemory,
        seg: u8,
        ea: u64,
        size: u32,
    ) -> Result<u64, Ex> {
        let la = self.linear(seg, ea, size, false)?;
        self.check_alignment(la, size)?;
        let sel = self.tlb.sel;
        let (e, tag) = self
            .tlb
            .probe(sel, la, la.wrapping_add(u64::from(size) - 1));
        if e.read == tag {
            // SAFETY: a matching read tag means `addend + la` is inside a 4 KiB RAM page of
            // the current run's memory map, and so is the access's last byte (the tag is
            // that of the page holding it).
            return Ok(unsafe { host_read(e.addend.wrapping_add(la as usize), size) });
        }
        let off = la & 0xfff;
        if !self.dbg_data && off + u64::from(size) <= 4096 {
            if let Some(gpa_page) = self.tlb.cached_unbacked(sel, la, perm::READ) {
                return self.mmio_read(gpa_page | off, size);
            }
        }
        self.read_slow(mem, la, size, sel, Kind::Read)
            .map_err(|e| stack_canonical(e, seg, la, self))
    }

    /// Read `size` bytes at `seg:ea` as the first half of a read-modify-write: segment and
    /// paging checks are those of a write (see [`Cpu::read_lin_rmw`]).
    #[inline(always)]
    pub fn rd_rmw(
        &mut self,
        mem: &mut GuestMemory,
        seg: u8,
        ea: u64,
        size: u32,
    ) -> Result<u64, Ex> {
        let la = self.linear(seg, ea, size, true)?;
        self.check_alignment(la, size)?;
        self.read_lin_rmw(mem, la, size, self.tlb.sel)
            .map_err(|e| stack_canonical(e, seg, la, self))
    }

    /// Write `size` bytes at `seg:ea`.
    #[inline(always)]
    pub fn wr(
        &mut self,
        mem: &mut GuestMemory,
        seg: u8,
        ea: u64,
        size: u32,
        v: u64,
    ) -> Result<(), Ex> {
        let la = self.linear(seg, ea, size, true)?;
        self.check_alignment(la, size)?;
        self.write_lin(mem, la, size, v, self.tlb.sel)
            .map_err(|e| stack_canonical(e, seg, la, self))
    }

    /// [`Cpu::probe_write`] for an explicit data store that is alignment-checked as an
    /// access of `align` bytes: segment, then #AC (see [`Cpu::check_alignment`]), then
    /// paging, in the order the processor checks them.
    pub fn probe_write_aligned(
        &mut self,
        mem: &mut GuestMemory,
        seg: u8,
        ea: u64,
        size: u32,
        align: u32,
    ) -> Result<u64, Ex> {
        let la = self.linear(seg, ea, size, true)?;
        self.check_alignment(la, align)?;
        let sel = self.tlb.sel;
        self.translate(mem, la, Kind::Write, sel)
            .map_err(|e| stack_canonical(e, seg, la, self))
    }

    /// [`Cpu::probe_write_aligned`] for a store whose bytes may run into the next page
    /// (an INS element): both pages are checked, and both guest-physical addresses are
    /// returned, the second for the bytes from the page boundary on (when the store
    /// stays in one page, the address those bytes would have, unused).
    pub fn probe_write_split(
        &mut self,
        mem: &mut GuestMemory,
        seg: u8,
        ea: u64,
        size: u32,
        align: u32,
    ) -> Result<(u64, u64), Ex> {
        let la = self.linear(seg, ea, size, true)?;
        self.check_alignment(la, align)?;
        let sel = self.tlb.sel;
        let gpa = self
            .translate(mem, la, Kind::Write, sel)
            .map_err(|e| stack_canonical(e, seg, la, self))?;
        let first = 4096 - (la & 0xfff);
        let gpa2 = if first < u64::from(size) {
            let la2 = self.wrap_la(la.wrapping_add(first));
            self.translate(mem, la2, Kind::Write, sel)
                .map_err(|e| stack_canonical(e, seg, la2, self))?
        } else {
            gpa.wrapping_add(first)
        };
        Ok((gpa, gpa2))
    }

    /// Check that `seg:ea` can be written (for instructions that must fault before side
    /// effects) and return its guest-physical address.
    pub fn probe_write(
        &mut self,
        mem: &mut GuestMemory,
        seg: u8,
        ea: u64,
        size: u32,
    ) -> Result<u64, Ex> {
        let la = self.linear(seg, ea, size, true)?;
        let sel = self.tlb.sel;
        self.translate(mem, la, Kind::Write, sel)
            .map_err(|e| stack_canonical(e, seg, la, self))
    }

    /// Supervisor (implicit) read of linear memory: descriptor tables, the TSS.
    pub fn rd_sys(&mut self, mem: &mut GuestMemory, la: u64, size: u32) -> Result<u64, Ex> {
        let la = self.wrap_la(la);
        self.read_lin(mem, la, size, SUPERVISOR)
    }

    /// Supervisor (implicit) write of linear memory.
    pub fn wr_sys(&mut self, mem: &mut GuestMemory, la: u64, size: u32, v: u64) -> Result<(), Ex> {
        let la = self.wrap_la(la);
        self.write_lin(mem, la, size, v, SUPERVISOR)
    }

    /// Push `size` bytes.
    #[inline(always)]
    pub fn push(&mut self, mem: &mut GuestMemory, v: u64, size: u32) -> Result<(), Ex> {
        let m = self.stack_mask();
        let rsp = self.gpr[4].wrapping_sub(u64::from(size)) & m;
        self.wr(mem, sr::SS, rsp, size, v)?;
        self.gpr[4] = (self.gpr[4] & !m) | rsp;
        Ok(())
    }

    /// Pop `size` bytes.
    #[inline(always)]
    pub fn pop(&mut self, mem: &mut GuestMemory, size: u32) -> Result<u64, Ex> {
        let m = self.stack_mask();
        let rsp = self.gpr[4] & m;
        let v = self.rd(mem, sr::SS, rsp, size)?;
        self.gpr[4] = (self.gpr[4] & !m) | (rsp.wrapping_add(u64::from(size)) & m);
        Ok(v)
    }

    /// Read the value `n` stack slots of `size` above RSP without popping.
    pub fn peek(&mut self, mem: &mut GuestMemory, n: u64, size: u32) -> Result<u64, Ex> {
        let m = self.stack_mask();
        let rsp = self.gpr[4].wrapping_add(n * u64::from(size)) & m;
        self.rd(mem, sr::SS, rsp, size)
    }

    /// Guest-physical address of the instruction at linear `la` (for decoding).
    #[inline(always)]
    pub fn fetch_gpa(&mut self, mem: &mut GuestMemory, la: u64) -> Result<u64, Ex> {
        let sel = self.tlb.sel;
        if let Some(gpa_page) = self.tlb.fetch_page(sel, la) {
            return Ok(gpa_page | (la & 0xfff));
        }
        self.translate(mem, la, Kind::Fetch, sel)
    }
}
