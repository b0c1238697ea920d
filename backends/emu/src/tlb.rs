//! The software TLB: cached translations of linear pages, per privilege class
//! ([`SUPERVISOR`], [`USER`], [`SUPERVISOR_AC`]), sized for working sets of megabytes.
//!
//! Each class has
//!
//! - a direct-mapped table of [`TLB_ENTRIES`] entries for 4 KiB linear pages, each with the
//!   tags the access paths compare in one step ([`TlbEntry`]: page address and epoch, one
//!   tag per kind of access, and the host address of the page when it is RAM), and beside
//!   it what the slow paths need ([`TlbMeta`]: the guest-physical page and the kinds of
//!   access a walk validated);
//! - a victim buffer of [`TLB_VICTIMS`] entries that catches what a conflict in the table
//!   evicts (two buffers 16 MiB apart share every slot);
//! - a cache of large pages ([`LARGE_SLOTS`] slots, one per 2 MiB of linear space): a miss
//!   in the table inside a 2 MiB, 4 MiB or 1 GiB page that a walk already went through
//!   fills the table from here, without walking again. As on a processor, one cached
//!   large-page translation covers its whole page: its accessed and dirty bits are not
//!   set again for another 4 KiB part of it.
//!
//! Flushes are exact in the sense the SDM allows: everything that must go goes; a flush
//! may drop more (a TLB may evict any entry at any time). A flush of the table bumps the
//! class's epoch, which every tag carries in its low 12 bits, so it costs the same for any
//! table size; the entries are cleared only when the epochs run out. Global pages
//! (CR4.PGE and G) survive a non-global flush in the large-page cache; in the table they
//! are dropped and refilled. INVLPG of an address inside a large page that may be cached
//! (the class keeps the union of all of them as one aligned region, as QEMU's softmmu
//! does) flushes the whole class; otherwise it drops that page's entries.

use alloc::boxed::Box;
use alloc::vec;

/// Entries per class in the direct-mapped table (a power of two).
pub const TLB_ENTRIES: usize = 4096;
const TLB_MASK: usize = TLB_ENTRIES - 1;
/// Victim entries per class.
pub const TLB_VICTIMS: usize = 8;
/// Large-page slots per class (a power of two), one per 2 MiB linear slice.
pub const LARGE_SLOTS: usize = 256;
/// Epochs run from 1 to this; a tag with epoch 0 never matches (a zeroed entry is empty).
const LAST_EPOCH: u64 = 0xfff;

/// A tag that never matches.
pub const INVALID: u64 = 0;

/// The TLB class of supervisor accesses: explicit ones at CPL 0-2 without the SMAP
/// override, and the implicit ones (descriptor tables, the TSS, the stacks an event
/// switches to), for which SMAP always applies.
pub const SUPERVISOR: usize = 0;
/// The TLB class of user-mode accesses (CPL 3).
pub const USER: usize = 1;
/// The TLB class of explicit supervisor accesses while CR4.SMAP and RFLAGS.AC are both
/// set: SMAP does not stop them, so their translations of user pages must not serve the
/// accesses of [`SUPERVISOR`].
pub const SUPERVISOR_AC: usize = 2;
/// The number of classes.
const CLASSES: usize = 3;

/// The class index of `sel`: `sel` itself for the three classes, clamped (not bounds
/// checked: the access paths compile to a compare and a conditional move).
#[inline(always)]
fn class_index(sel: usize) -> usize {
    sel.min(CLASSES - 1)
}

/// The access kinds a walk validated for a cached translation.
pub mod perm {
    /// Data reads.
    pub const READ: u8 = 1;
    /// Data writes: the walk set the dirty bit. Implies [`READ`].
    pub const WRITE: u8 = 2;
    /// Instruction fetches.
    pub const FETCH: u8 = 4;
}

/// What the access paths compare: for each kind of access, the linear page address with
/// the class's epoch in its low 12 bits when that kind may use the host address directly.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(32))]
pub struct TlbEntry {
    /// Reads may use the host page (RAM, read validated).
    pub read: u64,
    /// Writes may use the host page (RAM, write validated so the dirty bit is set, no
    /// decoded code on the page).
    pub write: u64,
    /// Instruction fetches are validated (the guest-physical page is in [`TlbMeta`]).
    pub fetch: u64,
    /// The host address of the page minus its linear address (wrapping): host address of
    /// a byte = `addend + la`.
    pub addend: usize,
}

/// What the slow paths need about an entry.
#[derive(Clone, Copy, Debug, Default)]
pub struct TlbMeta {
    /// Linear page address and epoch, whatever access kinds are validated.
    pub tag: u64,
    /// Guest-physical page address.
    pub gpa: u64,
    /// Host address of the page (0 when not RAM).
    pub host: usize,
    /// The access kinds validated ([`perm`]).
    pub perms: u8,
}

/// A cached large-page translation, for one 2 MiB slice of it.
#[derive(Clone, Copy, Debug, Default)]
struct LargeEntry {
    /// Linear address >> 21, plus one (0: empty).
    slice: u64,
    /// Guest-physical address of the slice's first byte.
    gpa: u64,
    /// The access kinds validated ([`perm`]).
    perms: u8,
    /// The page was global (CR4.PGE and G).
    global: bool,
    /// The class's flush count when it was filled.
    flushes: u64,
    /// The class's global-flush count when it was filled.
    gflushes: u64,
}

/// One privilege class.
struct Class {
    main: Box<[TlbEntry; TLB_ENTRIES]>,
    meta: Box<[TlbMeta; TLB_ENTRIES]>,
    victims: [(TlbEntry, TlbMeta); TLB_VICTIMS],
    vnext: usize,
    large: Box<[LargeEntry; LARGE_SLOTS]>,
    /// The epoch current tags carry (1..=LAST_EPOCH).
    epoch: u64,
    /// Flushes of any kind, and global ones, since creation: large entries are valid while
    /// theirs match.
    flushes: u64,
    gflushes: u64,
    /// The aligned region that holds every large page cached since the last global
    /// flush, as (address, mask); mask 0 with `lp_any` false: none.
    lp_addr: u64,
    lp_mask: u64,
    lp_any: bool,
}

fn boxed<T: Copy + Default, const N: usize>() -> Box<[T; N]> {
    match vec![T::default(); N].into_boxed_slice().try_into() {
        Ok(b) => b,
        // The vector has exactly N elements.
        Err(_) => unreachable!("a vector of N elements converts to [T; N]"),
    }
}

impl Class {
    fn new() -> Class {
        Class {
            main: boxed(),
            meta: boxed(),
            victims: [(TlbEntry::default(), TlbMeta::default()); TLB_VICTIMS],
            vnext: 0,
            large: boxed(),
            epoch: 1,
            flushes: 0,
            gflushes: 0,
            lp_addr: 0,
            lp_mask: 0,
            lp_any: false,
        }
    }

    /// Drop every 4 KiB entry (the table and the victims), and the large pages: all of
    /// them if `global`, else the non-global ones.
    fn flush(&mut self, global: bool) {
        self.flushes += 1;
        if global {
            self.gflushes += 1;
            self.lp_any = false;
            self.lp_addr = 0;
            self.lp_mask = 0;
        }
        if self.epoch == LAST_EPOCH {
            self.main.fill(TlbEntry::default());
            self.meta.fill(TlbMeta::default());
            self.epoch = 1;
        } else {
            self.epoch += 1;
        }
        for v in &mut self.victims {
            *v = (TlbEntry::default(), TlbMeta::default());
        }
    }

    fn flush_page(&mut self, la: u64) {
        if self.lp_any && la & self.lp_mask == self.lp_addr {
            // A large page may hold `la`, and 4 KiB entries filled from it are not
            // tracked one by one: drop everything.
            self.flush(true);
            return;
        }
        let page = la & !0xfff;
        let idx = (la >> 12) as usize & TLB_MASK;
        if self.meta[idx].tag & !0xfff == page {
            self.main[idx] = TlbEntry::default();
            self.meta[idx] = TlbMeta::default();
        }
        for v in &mut self.victims {
            if v.1.tag & !0xfff == page {
                *v = (TlbEntry::default(), TlbMeta::default());
            }
        }
    }

    /// Widen the large-page region to hold the page of `size` bytes at `la`.
    fn note_large(&mut self, la: u64, size: u64) {
        let mask = !(size - 1);
        if !self.lp_any {
            self.lp_any = true;
            self.lp_mask = mask;
            self.lp_addr = la & mask;
            return;
        }
        let mut m = self.lp_mask & mask;
        while (self.lp_addr ^ la) & m != 0 {
            m <<= 1;
        }
        self.lp_mask = m;
        self.lp_addr &= m;
    }

    /// The table slot for `page` (moving a victim there if one holds it), if cached.
    fn find(&mut self, page: u64) -> Option<usize> {
        let idx = (page >> 12) as usize & TLB_MASK;
        let tag = page | self.epoch;
        if self.meta[idx].tag == tag {
            return Some(idx);
        }
        let v = self.victims.iter().position(|v| v.1.tag == tag)?;
        // Swap: the victim goes back to the table, the table's entry becomes the victim.
        let old = (self.main[idx], self.meta[idx]);
        self.main[idx] = self.victims[v].0;
        self.meta[idx] = self.victims[v].1;
        self.victims[v] = old;
        Some(idx)
    }

    /// Recompute the fast tags of slot `idx` from its meta.
    fn retag(&mut self, idx: usize, has_code: bool) {
        let m = self.meta[idx];
        let page = m.tag & !0xfff;
        let e = &mut self.main[idx];
        let ram = m.host != 0;
        e.read = if ram && m.perms & perm::READ != 0 {
            m.tag
        } else {
            INVALID
        };
        e.write = if ram && m.perms & perm::WRITE != 0 && !has_code {
            m.tag
        } else {
            INVALID
        };
        e.fetch = if m.perms & perm::FETCH != 0 {
            m.tag
        } else {
            INVALID
        };
        e.addend = m.host.wrapping_sub(page as usize);
    }
}

/// The TLB of one vCPU.
pub struct Tlb {
    classes: [Class; CLASSES],
    /// The class of ordinary accesses at the current CPL, RFLAGS.AC and CR4.SMAP.
    pub sel: usize,
}

impl Default for Tlb {
    fn default() -> Self {
        Self::new()
    }
}

/// A translation the TLB holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cached {
    /// Guest-physical page address.
    pub gpa: u64,
}

impl Tlb {
    /// An empty TLB.
    pub fn new() -> Tlb {
        Tlb {
            classes: [Class::new(), Class::new(), Class::new()],
            sel: SUPERVISOR,
        }
    }

    /// The table entry for linear `la` in class `sel` and the tag a current entry for the
    /// page holding byte `last` carries (compare it with the entry's tag for the access
    /// kind: equal means the access may use `addend`).
    #[inline(always)]
    pub fn probe(&self, sel: usize, la: u64, last: u64) -> (&TlbEntry, u64) {
        let c = &self.classes[class_index(sel)];
        let e = &c.main[(la >> 12) as usize & TLB_MASK];
        (e, (last & !0xfff) | c.epoch)
    }

    /// The table of the class data accesses use now ([`Tlb::sel`]) and its epoch, for
    /// translated code that probes it as [`Tlb::probe`] does (see [`crate::jit`]): the
    /// entry for linear `la` is at `table + ((la >> 12) & (TLB_ENTRIES - 1))`, and its
    /// tags are `(la & !0xfff) | epoch`. Valid until the next flush or fill.
    pub fn data_table(&self) -> (u64, u64) {
        let c = &self.classes[class_index(self.sel)];
        (c.main.as_ptr() as u64, c.epoch)
    }

    /// The guest-physical page of an instruction fetch from linear `la` in class `sel`,
    /// if the TLB validated fetches from its page.
    #[inline(always)]
    pub fn fetch_page(&self, sel: usize, la: u64) -> Option<u64> {
        let c = &self.classes[class_index(sel)];
        let idx = (la >> 12) as usize & TLB_MASK;
        if c.main[idx].fetch == (la & !0xfff) | c.epoch {
            Some(c.meta[idx].gpa)
        } else {
            None
        }
    }

    /// The guest-physical page of linear `la` in class `sel` when the table's entry for it
    /// (not the victims, not the large pages) validated access kind `need`: the first thing
    /// a slow path tries (an MMIO access, a store to a page with code, a crossing access).
    #[inline(always)]
    pub fn cached(&self, sel: usize, la: u64, need: u8) -> Option<u64> {
        let c = &self.classes[class_index(sel)];
        let m = &c.meta[(la >> 12) as usize & TLB_MASK];
        (m.tag == (la & !0xfff) | c.epoch && m.perms & need != 0).then_some(m.gpa)
    }

    /// The guest-physical page of linear `la` in class `sel` when the table's entry for it
    /// validated access kind `need` and the page has no host address: it is outside RAM
    /// (a device's page), or holds a data breakpoint. What an MMIO access looks up, once.
    #[inline(always)]
    pub fn cached_unbacked(&self, sel: usize, la: u64, need: u8) -> Option<u64> {
        let c = &self.classes[class_index(sel)];
        let m = &c.meta[(la >> 12) as usize & TLB_MASK];
        (m.tag == (la & !0xfff) | c.epoch && m.perms & need != 0 && m.host == 0).then_some(m.gpa)
    }

    /// A cached translation of linear `la` in class `sel` for an access of kind `need`
    /// ([`perm`]), without walking: from the table, the victims, or a large page.
    /// Returns the guest-physical page, and whether it came from a large page (the caller
    /// then fills the table).
    pub fn lookup(&mut self, sel: usize, la: u64, need: u8) -> Option<(u64, bool)> {
        let c = &mut self.classes[class_index(sel)];
        let page = la & !0xfff;
        if let Some(idx) = c.find(page) {
            if c.meta[idx].perms & need != 0 {
                return Some((c.meta[idx].gpa, false));
            }
        }
        let slice = (la >> 21) + 1;
        let l = &c.large[(la >> 21) as usize & (LARGE_SLOTS - 1)];
        let current = l.flushes == c.flushes || (l.global && l.gflushes == c.gflushes);
        if l.slice == slice && current && l.perms & need != 0 {
            return Some((l.gpa + (la & 0x1f_f000), true));
        }
        None
    }

    /// Record that a walk (or the large-page cache, or unpaged addressing) validated access
    /// kinds `perms` for linear `la` in class `sel` to guest-physical page `gpa`, whose host
    /// address is `host` (0: not RAM) and which holds decoded code if `has_code`.
    pub fn fill(&mut self, sel: usize, la: u64, gpa: u64, perms: u8, host: usize, has_code: bool) {
        let c = &mut self.classes[class_index(sel)];
        let page = la & !0xfff;
        let tag = page | c.epoch;
        let perms = if perms & perm::WRITE != 0 {
            perms | perm::READ
        } else {
            perms
        };
        let idx = match c.find(page) {
            Some(idx) if c.meta[idx].gpa == gpa => {
                c.meta[idx].perms |= perms;
                c.meta[idx].host = host;
                idx
            }
            found => {
                let idx = found.unwrap_or((page >> 12) as usize & TLB_MASK);
                let old = c.meta[idx];
                if found.is_none() && old.tag & 0xfff == c.epoch {
                    // A current entry for another page: keep it as a victim.
                    c.victims[c.vnext] = (c.main[idx], old);
                    c.vnext = (c.vnext + 1) % TLB_VICTIMS;
                }
                c.meta[idx] = TlbMeta {
                    tag,
                    gpa,
                    host,
                    perms,
                };
                idx
            }
        };
        c.retag(idx, has_code);
    }

    /// Record a large page of `size` bytes that maps linear `la` to guest-physical `gpa`
    /// (of the byte at `la`) for the access kinds `perms`, global if `global`.
    pub fn fill_large(
        &mut self,
        sel: usize,
        la: u64,
        gpa: u64,
        size: u64,
        perms: u8,
        global: bool,
    ) {
        let c = &mut self.classes[class_index(sel)];
        c.note_large(la, size);
        let perms = if perms & perm::WRITE != 0 {
            perms | perm::READ
        } else {
            perms
        };
        let slice = (la >> 21) + 1;
        let base = gpa - (la & 0x1f_ffff);
        let (flushes, gflushes) = (c.flushes, c.gflushes);
        let l = &mut c.large[(la >> 21) as usize & (LARGE_SLOTS - 1)];
        let current = l.flushes == flushes || (l.global && l.gflushes == gflushes);
        if l.slice == slice && current && l.gpa == base {
            l.perms |= perms;
            l.global &= global;
        } else {
            *l = LargeEntry {
                slice,
                gpa: base,
                perms,
                global,
                flushes,
                gflushes,
            };
        }
        l.flushes = flushes;
        l.gflushes = gflushes;
    }

    /// Drop every translation (`global` ones too when asked: CR0/CR4/EFER changes and a
    /// CR3 write keep them, INVLPG and the API's full flush do not).
    pub fn flush(&mut self, global: bool) {
        for c in &mut self.classes {
            c.flush(global);
        }
    }

    /// Drop the translations of the page holding linear `la` (INVLPG), global or not, in
    /// every class.
    pub fn flush_page(&mut self, la: u64) {
        for c in &mut self.classes {
            c.flush_page(la);
        }
    }

    /// Stop fast writes to every cached page whose guest-physical page address satisfies
    /// `has_code` (pages that began to hold code elsewhere: another vCPU decoded from
    /// them), in one pass over the classes whatever the number of pages. The
    /// translations stay: such writes take the checked path through them.
    pub fn protect_pages_where(&mut self, mut has_code: impl FnMut(u64) -> bool) {
        for c in &mut self.classes {
            let epoch = c.epoch;
            for (e, m) in c.main.iter_mut().zip(c.meta.iter()) {
                if e.write != INVALID && m.tag & 0xfff == epoch && has_code(m.gpa) {
                    e.write = INVALID;
                }
            }
            for (e, m) in &mut c.victims {
                if e.write != INVALID && has_code(m.gpa) {
                    e.write = INVALID;
                }
            }
        }
    }

    /// Stop fast writes to guest-physical page `gpa_page` (it now holds code).
    pub fn protect_code_page(&mut self, gpa_page: u64) {
        for c in &mut self.classes {
            let epoch = c.epoch;
            for (e, m) in c.main.iter_mut().zip(c.meta.iter()) {
                if m.gpa == gpa_page && m.tag & 0xfff == epoch {
                    e.write = INVALID;
                }
            }
            for (e, m) in &mut c.victims {
                if m.gpa == gpa_page {
                    e.write = INVALID;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAM: usize = 0x10_0000;

    #[test]
    fn fill_then_hit_for_the_validated_kinds_only() {
        let mut t = Tlb::new();
        let la = 0x7000_1234;
        assert_eq!(t.lookup(0, la, perm::READ), None);
        t.fill(0, la, 0x5000, perm::READ, RAM, false);
        assert_eq!(t.lookup(0, la, perm::READ), Some((0x5000, false)));
        assert_eq!(
            t.lookup(0, la, perm::WRITE),
            None,
            "a read walk sets no dirty bit"
        );
        assert_eq!(
            t.lookup(1, la, perm::READ),
            None,
            "the user class is separate"
        );
        let (e, tag) = t.probe(0, la, la + 7);
        assert_eq!(e.read, tag);
        assert_ne!(e.write, tag);
        assert_eq!(e.addend.wrapping_add(la as usize), RAM + 0x234);
        // A write walk adds writes, and with them reads.
        t.fill(0, la, 0x5000, perm::WRITE, RAM, false);
        let (e, tag) = t.probe(0, la, la);
        assert_eq!((e.read, e.write), (tag, tag));
        // An access whose last byte is on the next page never matches.
        let (e, tag) = t.probe(0, la | 0xffc, (la | 0xffc) + 7);
        assert_ne!(e.read, tag);
    }

    #[test]
    fn the_smap_override_has_its_own_class() {
        let mut t = Tlb::new();
        let la = 0x7000_0000;
        // A supervisor read of a user page with CR4.SMAP and RFLAGS.AC set must not
        // serve the same read without AC, nor a user-mode read.
        t.fill(SUPERVISOR_AC, la, 0x5000, perm::READ, RAM, false);
        assert_eq!(
            t.lookup(SUPERVISOR_AC, la, perm::READ),
            Some((0x5000, false))
        );
        assert_eq!(t.lookup(SUPERVISOR, la, perm::READ), None);
        assert_eq!(t.lookup(USER, la, perm::READ), None);
        let (e, tag) = t.probe(SUPERVISOR, la, la);
        assert_ne!(e.read, tag);
        let (e, tag) = t.probe(SUPERVISOR_AC, la, la);
        assert_eq!(e.read, tag);
        // INVLPG and flushes reach the class.
        t.flush_page(la);
        assert_eq!(t.lookup(SUPERVISOR_AC, la, perm::READ), None);
        t.fill(SUPERVISOR_AC, la, 0x5000, perm::READ, RAM, false);
        t.flush(false);
        assert_eq!(t.lookup(SUPERVISOR_AC, la, perm::READ), None);
        // Classes past the last are the last one (clamped, never out of bounds).
        t.fill(SUPERVISOR_AC, la, 0x5000, perm::READ, RAM, false);
        assert_eq!(t.lookup(7, la, perm::READ), Some((0x5000, false)));
    }

    #[test]
    fn code_pages_and_mmio_take_no_fast_writes() {
        let mut t = Tlb::new();
        t.fill(0, 0x1000, 0x1000, perm::WRITE, RAM, true);
        let (e, tag) = t.probe(0, 0x1000, 0x1000);
        assert_eq!(e.read, tag);
        assert_ne!(e.write, tag, "code on the page");
        t.fill(0, 0x2000, 0x2000, perm::WRITE, RAM + 0x1000, false);
        t.protect_code_page(0x2000);
        let (e, tag) = t.probe(0, 0x2000, 0x2000);
        assert_ne!(e.write, tag, "protected when code appeared");
        t.fill(0, 0xfee0_0000, 0xfee0_0000, perm::WRITE, 0, false);
        let (e, tag) = t.probe(0, 0xfee0_0000, 0xfee0_0000);
        assert!(e.read != tag && e.write != tag, "MMIO");
        assert_eq!(
            t.lookup(0, 0xfee0_0030, perm::WRITE),
            Some((0xfee0_0000, false))
        );
    }

    #[test]
    fn protecting_pages_by_a_predicate_keeps_translations() {
        let mut t = Tlb::new();
        let stride = (TLB_ENTRIES as u64) << 12;
        // 0x1000 twice (the second in the victims after a conflict), 0x2000 once.
        t.fill(0, 0x1000, 0x7000, perm::WRITE, RAM, false);
        t.fill(0, 0x1000 + stride, 0x7000, perm::WRITE, RAM, false);
        t.fill(1, 0x2000, 0x8000, perm::WRITE, RAM + 0x1000, false);
        t.protect_pages_where(|gpa| gpa == 0x7000);
        for la in [0x1000, 0x1000 + stride] {
            assert_eq!(
                t.lookup(0, la, perm::WRITE),
                Some((0x7000, false)),
                "{la:#x}"
            );
            let (e, tag) = t.probe(0, la, la);
            assert_eq!(e.read, tag, "{la:#x}: reads stay fast");
            assert_ne!(e.write, tag, "{la:#x}: writes take the checked path");
        }
        let (e, tag) = t.probe(1, 0x2000, 0x2000);
        assert_eq!(e.write, tag, "another page keeps fast writes");
    }

    #[test]
    fn conflicts_go_to_the_victims() {
        let mut t = Tlb::new();
        let stride = (TLB_ENTRIES as u64) << 12;
        for k in 0..=TLB_VICTIMS as u64 + 1 {
            t.fill(0, k * stride, k << 12, perm::READ, RAM, false);
        }
        // The last fill holds the slot; the others are victims, the oldest evicted.
        for k in 1..=TLB_VICTIMS as u64 + 1 {
            assert_eq!(
                t.lookup(0, k * stride, perm::READ),
                Some((k << 12, false)),
                "{k}"
            );
        }
        assert_eq!(t.lookup(0, 0, perm::READ), None);
    }

    #[test]
    fn flushes_keep_global_large_pages_only() {
        let mut t = Tlb::new();
        t.fill_large(0, 0x4000_0000, 0x20_0000, 1 << 21, perm::READ, true);
        t.fill_large(0, 0x8020_0000, 0x40_0000, 1 << 21, perm::READ, false);
        t.fill(0, 0x4000_0000, 0x20_0000, perm::READ, RAM, false);
        assert_eq!(
            t.lookup(0, 0x4012_3456, perm::READ),
            Some((0x32_3000, true))
        );
        t.flush(false);
        assert_eq!(
            t.lookup(0, 0x4000_0000, perm::READ),
            Some((0x20_0000, true))
        );
        assert_eq!(t.lookup(0, 0x8020_0000, perm::READ), None);
        t.flush(true);
        assert_eq!(t.lookup(0, 0x4000_0000, perm::READ), None);
    }

    #[test]
    fn invlpg_inside_a_large_page_drops_it_and_what_came_from_it() {
        let mut t = Tlb::new();
        t.fill_large(0, 0x4000_0000, 0x20_0000, 1 << 21, perm::READ, true);
        t.fill(0, 0x4000_5000, 0x20_5000, perm::READ, RAM, false);
        t.fill(0, 0x1_0000_0000, 0x9000, perm::READ, RAM, false);
        // Another 4 KiB part of the large page.
        t.flush_page(0x4010_0000);
        assert_eq!(t.lookup(0, 0x4000_5000, perm::READ), None);
        assert_eq!(t.lookup(0, 0x4012_3456, perm::READ), None);
        // Outside any large page: only that page goes.
        t.fill(0, 0x1_0000_0000, 0x9000, perm::READ, RAM, false);
        t.fill(0, 0x1_0000_1000, 0xa000, perm::READ, RAM, false);
        t.flush_page(0x1_0000_0fff);
        assert_eq!(t.lookup(0, 0x1_0000_0000, perm::READ), None);
        assert_eq!(
            t.lookup(0, 0x1_0000_1000, perm::READ),
            Some((0xa000, false))
        );
    }

    #[test]
    fn epochs_wrap_without_resurrecting_entries() {
        let mut t = Tlb::new();
        t.fill(0, 0x3000, 0x3000, perm::READ, RAM, false);
        for _ in 0..2 * LAST_EPOCH {
            t.flush(false);
            assert_eq!(t.lookup(0, 0x3000, perm::READ), None);
        }
        t.fill(0, 0x3000, 0x3000, perm::READ, RAM, false);
        assert_eq!(t.lookup(0, 0x3000, perm::READ), Some((0x3000, false)));
    }
}
