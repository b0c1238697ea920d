//! The guest page-table walker.
//!
//! [`walk`] translates a guest-virtual (linear) address the way the processor does on a
//! TLB miss (SDM 3A chapter 4), for every paging mode:
//!
//! - paging off (CR0.PG = 0): the linear address is the physical address, truncated to
//!   32 bits (a 32-bit linear address space; the caller has already applied real-mode or
//!   protected-mode segmentation, and A20 is always on). This never faults.
//! - 32-bit paging (CR4.PAE = 0): two levels of 4-byte entries, 4 KiB pages, and 4 MiB
//!   pages when CR4.PSE is set (PSE-36: bits 20:13 of the PDE give physical bits 39:32).
//! - PAE paging (CR4.PAE = 1, EFER.LMA = 0): the four PDPTEs, then two levels of 8-byte
//!   entries; 2 MiB and 4 KiB pages.
//! - 4-level paging (EFER.LMA = 1), or 5-level paging when CR4.LA57 is also set: 1 GiB,
//!   2 MiB and 4 KiB pages.
//!
//! Differences from the hardware, all deliberate:
//!
//! - The PAE PDPTEs are read from memory at every walk instead of being loaded by
//!   `MOV CR3`; a reserved bit in a present PDPTE (which the hardware reports as #GP at the
//!   CR3 load) is reported as a #PF with RSVD here.
//! - A page-table entry that is not in guest RAM (an MMIO hole, or beyond the end of RAM)
//!   is treated as not present: the walk fails with an error code without P.
//! - Accessed bits are set on every entry walked, and the dirty bit on the final entry of
//!   a write, only when the access succeeds (the hardware may set accessed bits on a walk
//!   that then faults on permissions). Each update rewrites the low byte of the entry.
//! - [`walk`] checks SMAP as if EFLAGS.AC were 0 (as for implicit supervisor accesses);
//!   [`walk_with_ac`] takes the AC flag for explicit accesses.
//! - Protection keys for user-mode pages (CR4.PKE, 4- and 5-level paging) take the key
//!   from bits 62:59 of the final entry and the rights from [`PagingRegs::pkru`];
//!   protection keys for supervisor pages (PKS) and HLAT are not modelled.
//! - Long mode: the caller must check that the address is canonical before walking (a
//!   non-canonical address raises #GP or #SS, not #PF); the walker uses bits 47:0 (56:0
//!   with LA57) and ignores the rest.
//!
//! The reserved-bit checks assume a physical-address width of [`MAXPHYADDR`] bits.

use super::memory::GuestMemory;

/// The guest's physical-address width (CPUID 0x8000_0008 EAX bits 7:0) the walker assumes:
/// entry bits from here up to bit 51 (62 under PAE) are reserved.
pub const MAXPHYADDR: u32 = 39;

/// #PF error code: the fault was a protection violation (0: a not-present page).
pub const PF_PRESENT: u32 = 1 << 0;
/// #PF error code: the access was a write.
pub const PF_WRITE: u32 = 1 << 1;
/// #PF error code: the access was a user-mode access.
pub const PF_USER: u32 = 1 << 2;
/// #PF error code: a reserved bit was set in a paging-structure entry.
pub const PF_RSVD: u32 = 1 << 3;
/// #PF error code: the access was an instruction fetch (reported only when NX is in use
/// under PAE or 4-level paging, or CR4.SMEP is set).
pub const PF_FETCH: u32 = 1 << 4;
/// #PF error code: the protection key of a user-mode page denied the data access.
pub const PF_PK: u32 = 1 << 5;

const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PSE: u64 = 1 << 4;
const CR4_PAE: u64 = 1 << 5;
const CR4_PGE: u64 = 1 << 7;
const CR4_LA57: u64 = 1 << 12;
const CR4_SMEP: u64 = 1 << 20;
const CR4_SMAP: u64 = 1 << 21;
const CR4_PKE: u64 = 1 << 22;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;

const P: u64 = 1 << 0;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
const ACCESSED: u64 = 1 << 5;
const DIRTY: u64 = 1 << 6;
const PS: u64 = 1 << 7;
const GLOBAL: u64 = 1 << 8;
const XD: u64 = 1 << 63;

const KIB4: u64 = 1 << 12;
const MIB2: u64 = 1 << 21;
const MIB4: u64 = 1 << 22;

/// The paging-related registers a walk depends on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PagingRegs {
    /// CR0 (PG, WP).
    pub cr0: u64,
    /// CR3 (the root).
    pub cr3: u64,
    /// CR4 (PAE, PSE, PGE, SMEP, SMAP, PKE, LA57).
    pub cr4: u64,
    /// IA32_EFER (LMA, NXE).
    pub efer: u64,
    /// PKRU: for protection key `i`, bit `2i` disables data access to user-mode pages
    /// with that key and bit `2i + 1` disables writes (with CR4.PKE under 4- or 5-level
    /// paging).
    pub pkru: u32,
}

/// The kind of access being translated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Access {
    /// A write.
    pub write: bool,
    /// A user-mode access (CPL 3, not an implicit supervisor access).
    pub user: bool,
    /// An instruction fetch.
    pub fetch: bool,
}

/// A successful translation.
///
/// For a read or a fetch, `writable` reports permission only: the walk did not set the
/// dirty bit, so a cache of translations must walk again on the first write through such
/// an entry (as a hardware TLB does) for the dirty bit to be set. `executable` reflects NX
/// alone; SMEP depends on the kind of access and is checked from `user`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The guest-physical address of the byte translated.
    pub gpa: u64,
    /// Size of the page that mapped it: 4 KiB, 2 MiB (4 MiB without PAE) or 1 GiB.
    pub page_size: u64,
    /// Writable by this kind of access at every level.
    pub writable: bool,
    /// Accessible to user mode at every level.
    pub user: bool,
    /// Executable (no NX at any level).
    pub executable: bool,
    /// The global bit of the final entry.
    pub global: bool,
}

/// A failed translation: the #PF error code to deliver (CR2 is the address walked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageFault {
    /// The error code: P, W/R, U/S, RSVD, I/D bits.
    pub error_code: u32,
}

/// Translate `gva` for `access`, setting accessed and dirty bits as the hardware does.
///
/// SMAP (CR4.SMAP) is applied as for EFLAGS.AC = 0; see [`walk_with_ac`].
pub fn walk(
    mem: &mut GuestMemory,
    regs: &PagingRegs,
    gva: u64,
    access: Access,
) -> Result<Translation, PageFault> {
    walk_with_ac(mem, regs, gva, access, false)
}

/// [`walk`] for an explicit supervisor data access made with EFLAGS.AC = `ac`: with
/// CR4.SMAP set, such an access to a user page faults only when `ac` is false. Implicit
/// supervisor accesses (descriptor tables, the TSS, ...) must pass `false`.
pub fn walk_with_ac(
    mem: &mut GuestMemory,
    regs: &PagingRegs,
    gva: u64,
    access: Access,
    ac: bool,
) -> Result<Translation, PageFault> {
    if regs.cr0 & CR0_PG == 0 {
        return Ok(Translation {
            gpa: gva & 0xffff_ffff,
            page_size: KIB4,
            writable: true,
            user: true,
            executable: true,
            global: false,
        });
    }
    let long = regs.efer & EFER_LMA != 0;
    let pae = long || regs.cr4 & CR4_PAE != 0;
    // NX only exists in the 8-byte entry formats.
    let nx = pae && regs.efer & EFER_NXE != 0;
    let smep = regs.cr4 & CR4_SMEP != 0;

    let mut code = 0;
    if access.write {
        code |= PF_WRITE;
    }
    if access.user {
        code |= PF_USER;
    }
    if access.fetch && (nx || smep) {
        code |= PF_FETCH;
    }
    let ctx = Ctx { code };

    let mut path = Path::default();
    let leaf = if long {
        walk_long(mem, regs, gva, nx, &ctx, &mut path)?
    } else if pae {
        walk_pae(mem, regs, gva, nx, &ctx, &mut path)?
    } else {
        walk_legacy(mem, regs, gva, &ctx, &mut path)?
    };

    check_permissions(regs, access, ac, &path, leaf.entry, &ctx)?;

    // The access succeeds: set the accessed bits on the way down, and the dirty bit on
    // the final entry of a write. Read-modify-write of the current byte keeps the update
    // correct when a recursive mapping visits the same entry twice.
    for (i, &addr) in path.entries[..path.len].iter().enumerate() {
        let mut set = ACCESSED as u8;
        if access.write && i + 1 == path.len {
            set |= DIRTY as u8;
        }
        if let Ok(old) = mem.read_u8(addr) {
            if old & set != set {
                // The entry was just read from RAM, so the write cannot fail; if it did
                // there would be nothing better to do than leave the bit clear.
                let _ = mem.write_u8(addr, old | set);
            }
        }
    }

    let wp = regs.cr0 & CR0_WP != 0;
    Ok(Translation {
        gpa: leaf.gpa,
        page_size: leaf.page_size,
        writable: path.rw || (!access.user && !wp),
        user: path.us,
        executable: !path.xd,
        global: regs.cr4 & CR4_PGE != 0 && leaf.entry & GLOBAL != 0,
    })
}

/// The error code bits that describe the access itself.
struct Ctx {
    code: u32,
}

impl Ctx {
    fn not_present(&self) -> PageFault {
        PageFault {
            error_code: self.code,
        }
    }
    fn reserved(&self) -> PageFault {
        PageFault {
            error_code: self.code | PF_PRESENT | PF_RSVD,
        }
    }
    fn protection(&self) -> PageFault {
        PageFault {
            error_code: self.code | PF_PRESENT,
        }
    }
}

/// The entries a walk went through (for the accessed and dirty bits) and the rights they
/// grant together.
struct Path {
    entries: [u64; 6],
    len: usize,
    rw: bool,
    us: bool,
    xd: bool,
}

impl Default for Path {
    fn default() -> Path {
        Path {
            entries: [0; 6],
            len: 0,
            rw: true,
            us: true,
            xd: false,
        }
    }
}

impl Path {
    /// Record a present entry at `addr` that takes part in the permission checks.
    fn push(&mut self, addr: u64, entry: u64, nx: bool) {
        if let Some(slot) = self.entries.get_mut(self.len) {
            *slot = addr;
            self.len += 1;
        }
        self.rw &= entry & RW != 0;
        self.us &= entry & US != 0;
        self.xd |= nx && entry & XD != 0;
    }
}

/// The final entry of a walk.
struct Leaf {
    gpa: u64,
    page_size: u64,
    entry: u64,
}

/// Bits `hi..=lo` set.
const fn bits(hi: u32, lo: u32) -> u64 {
    (u64::MAX >> (63 - hi)) & (u64::MAX << lo)
}

/// Address bits MAXPHYADDR-1:12 of an 8-byte entry.
const ADDR_MASK: u64 = bits(MAXPHYADDR - 1, 12);

fn read_entry64(mem: &GuestMemory, addr: u64, ctx: &Ctx) -> Result<u64, PageFault> {
    let entry = mem.read_u64(addr).map_err(|_| ctx.not_present())?;
    if entry & P == 0 {
        return Err(ctx.not_present());
    }
    Ok(entry)
}

fn read_entry32(mem: &GuestMemory, addr: u64, ctx: &Ctx) -> Result<u64, PageFault> {
    let entry = u64::from(mem.read_u32(addr).map_err(|_| ctx.not_present())?);
    if entry & P == 0 {
        return Err(ctx.not_present());
    }
    Ok(entry)
}

/// 4-level (or 5-level) paging.
fn walk_long(
    mem: &GuestMemory,
    regs: &PagingRegs,
    gva: u64,
    nx: bool,
    ctx: &Ctx,
    path: &mut Path,
) -> Result<Leaf, PageFault> {
    let top_shift = if regs.cr4 & CR4_LA57 != 0 { 48 } else { 39 };
    let mut reserved = bits(51, MAXPHYADDR);
    if !nx {
        reserved |= XD;
    }
    let mut table = regs.cr3 & ADDR_MASK;
    let mut shift = top_shift;
    loop {
        let addr = table | (((gva >> shift) & 0x1ff) << 3);
        let entry = read_entry64(mem, addr, ctx)?;
        let large = entry & PS != 0 && shift != 12;
        let extra = match shift {
            // PS is reserved in PML5Es and PML4Es.
            39 | 48 => PS,
            // 1 GiB page: bits 29:13 of the address field are reserved.
            30 if large => bits(29, 13),
            // 2 MiB page: bits 20:13.
            21 if large => bits(20, 13),
            _ => 0,
        };
        if entry & (reserved | extra) != 0 {
            return Err(ctx.reserved());
        }
        path.push(addr, entry, nx);
        if shift == 12 || large {
            let page_size = 1u64 << shift;
            let base = entry & ADDR_MASK & !(page_size - 1);
            return Ok(Leaf {
                gpa: base | (gva & (page_size - 1)),
                page_size,
                entry,
            });
        }
        table = entry & ADDR_MASK;
        shift -= 9;
    }
}

/// PAE paging: PDPTE, PDE, PTE.
fn walk_pae(
    mem: &GuestMemory,
    regs: &PagingRegs,
    gva: u64,
    nx: bool,
    ctx: &Ctx,
    path: &mut Path,
) -> Result<Leaf, PageFault> {
    let gva = gva & 0xffff_ffff;
    let pdpte_addr = (regs.cr3 & 0xffff_ffe0) | ((gva >> 30) << 3);
    let pdpte = read_entry64(mem, pdpte_addr, ctx)?;
    // PDPTEs have no R/W, U/S, XD or accessed bit: bits 2:1, 8:5 and 63:MAXPHYADDR are
    // reserved, and they take no part in the permission checks.
    if pdpte & (bits(2, 1) | bits(8, 5) | bits(63, MAXPHYADDR)) != 0 {
        return Err(ctx.reserved());
    }
    let mut reserved = bits(62, MAXPHYADDR);
    if !nx {
        reserved |= XD;
    }

    let pde_addr = (pdpte & ADDR_MASK) | (((gva >> 21) & 0x1ff) << 3);
    let pde = read_entry64(mem, pde_addr, ctx)?;
    let large = pde & PS != 0;
    let extra = if large { bits(20, 13) } else { 0 };
    if pde & (reserved | extra) != 0 {
        return Err(ctx.reserved());
    }
    path.push(pde_addr, pde, nx);
    if large {
        return Ok(Leaf {
            gpa: (pde & ADDR_MASK & !(MIB2 - 1)) | (gva & (MIB2 - 1)),
            page_size: MIB2,
            entry: pde,
        });
    }

    let pte_addr = (pde & ADDR_MASK) | (((gva >> 12) & 0x1ff) << 3);
    let pte = read_entry64(mem, pte_addr, ctx)?;
    if pte & reserved != 0 {
        return Err(ctx.reserved());
    }
    path.push(pte_addr, pte, nx);
    Ok(Leaf {
        gpa: (pte & ADDR_MASK) | (gva & (KIB4 - 1)),
        page_size: KIB4,
        entry: pte,
    })
}

/// 32-bit paging: PDE, PTE (or a 4 MiB PDE with CR4.PSE).
fn walk_legacy(
    mem: &GuestMemory,
    regs: &PagingRegs,
    gva: u64,
    ctx: &Ctx,
    path: &mut Path,
) -> Result<Leaf, PageFault> {
    let gva = gva & 0xffff_ffff;
    let pde_addr = (regs.cr3 & 0xffff_f000) | ((gva >> 22) << 2);
    let pde = read_entry32(mem, pde_addr, ctx)?;
    if regs.cr4 & CR4_PSE != 0 && pde & PS != 0 {
        // PSE-36: PDE bits 20:13 hold physical bits 39:32. Bit 21 is reserved, and so
        // are the bits that would hold physical bits at or above MAXPHYADDR.
        let mut reserved = 1 << 21;
        if MAXPHYADDR < 40 {
            reserved |= bits(20, MAXPHYADDR - 19);
        }
        if pde & reserved != 0 {
            return Err(ctx.reserved());
        }
        path.push(pde_addr, pde, false);
        let base = (pde & 0xffc0_0000) | (((pde >> 13) & 0xff) << 32);
        return Ok(Leaf {
            gpa: base | (gva & (MIB4 - 1)),
            page_size: MIB4,
            entry: pde,
        });
    }
    path.push(pde_addr, pde, false);
    let pte_addr = (pde & 0xffff_f000) | (((gva >> 12) & 0x3ff) << 2);
    let pte = read_entry32(mem, pte_addr, ctx)?;
    path.push(pte_addr, pte, false);
    Ok(Leaf {
        gpa: (pte & 0xffff_f000) | (gva & (KIB4 - 1)),
        page_size: KIB4,
        entry: pte,
    })
}

/// The access-rights checks of SDM 3A 4.6 on the combined rights of the walk, then the
/// protection key of a user-mode page (SDM 3A 4.6.2) for a data access: a key whose
/// access-disable bit is set denies it, and one whose write-disable bit is set denies a
/// write by user mode, or by supervisor mode with CR0.WP. The key's denial sets PK in
/// the error code whatever else denied the access (SDM 3A 4.7).
fn check_permissions(
    regs: &PagingRegs,
    access: Access,
    ac: bool,
    path: &Path,
    entry: u64,
    ctx: &Ctx,
) -> Result<(), PageFault> {
    let wp = regs.cr0 & CR0_WP != 0;
    let smep = regs.cr4 & CR4_SMEP != 0;
    let smap = regs.cr4 & CR4_SMAP != 0;
    let denied = if access.user {
        !path.us || (access.write && !path.rw) || (access.fetch && path.xd)
    } else if access.fetch {
        path.xd || (smep && path.us)
    } else {
        (access.write && wp && !path.rw) || (smap && path.us && !ac)
    };
    let key_denied =
        !access.fetch && path.us && regs.cr4 & CR4_PKE != 0 && regs.efer & EFER_LMA != 0 && {
            let key = (entry >> 59) & 0xf;
            let rights = regs.pkru >> (2 * key);
            rights & 1 != 0 || (access.write && rights & 2 != 0 && (access.user || wp))
        };
    if key_denied {
        Err(PageFault {
            error_code: ctx.protection().error_code | PF_PK,
        })
    } else if denied {
        Err(ctx.protection())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: Access = Access {
        write: false,
        user: false,
        fetch: false,
    };
    const W: Access = Access {
        write: true,
        user: false,
        fetch: false,
    };
    const X: Access = Access {
        write: false,
        user: false,
        fetch: true,
    };
    const UR: Access = Access {
        write: false,
        user: true,
        fetch: false,
    };
    const UW: Access = Access {
        write: true,
        user: true,
        fetch: false,
    };
    const UX: Access = Access {
        write: false,
        user: true,
        fetch: true,
    };

    const CR0_PE: u64 = 1;

    fn long_regs(cr3: u64) -> PagingRegs {
        PagingRegs {
            cr0: CR0_PG | CR0_WP | CR0_PE,
            cr3,
            cr4: CR4_PAE,
            efer: EFER_LMA | EFER_NXE | (1 << 8),
            pkru: 0,
        }
    }

    fn pae_regs(cr3: u64) -> PagingRegs {
        PagingRegs {
            cr0: CR0_PG | CR0_WP | CR0_PE,
            cr3,
            cr4: CR4_PAE,
            efer: EFER_NXE,
            pkru: 0,
        }
    }

    fn legacy_regs(cr3: u64) -> PagingRegs {
        PagingRegs {
            cr0: CR0_PG | CR0_WP | CR0_PE,
            cr3,
            cr4: CR4_PSE,
            efer: 0,
            pkru: 0,
        }
    }

    /// Long-mode tables: PML4 at 0x1000, PDPT at 0x2000, PD at 0x3000, PT at 0x4000.
    /// gva 0x0040_1000 (PML4[0] PDPT[0] PD[2] PT[1]) -> 0x0005_5000 (4 KiB).
    fn long_tables(leaf_flags: u64) -> GuestMemory {
        let mut mem = GuestMemory::with_ram(0x10_0000).unwrap();
        mem.write_u64(0x1000, 0x2000 | 7).unwrap();
        mem.write_u64(0x2000, 0x3000 | 7).unwrap();
        mem.write_u64(0x3000 + 2 * 8, 0x4000 | 7).unwrap();
        mem.write_u64(0x4000 + 8, 0x5_5000 | leaf_flags).unwrap();
        mem
    }

    #[test]
    fn paging_off_is_identity_truncated_to_32_bits() {
        let mut mem = GuestMemory::with_ram(0x1000).unwrap();
        let regs = PagingRegs::default();
        let t = walk(&mut mem, &regs, 0x1_2345_6789, W).unwrap();
        assert_eq!(t.gpa, 0x2345_6789);
        assert!(t.writable && t.user && t.executable && !t.global);
    }

    #[test]
    fn long_mode_4k_page_sets_accessed_and_dirty() {
        let mut mem = long_tables(7);
        let regs = long_regs(0x1000);
        let t = walk(&mut mem, &regs, 0x0040_1abc, R).unwrap();
        assert_eq!(t.gpa, 0x5_5abc);
        assert_eq!(t.page_size, 4096);
        assert!(t.writable && t.user && t.executable && !t.global);
        for addr in [0x1000, 0x2000, 0x3010, 0x4008] {
            assert_eq!(
                mem.read_u64(addr).unwrap() & (ACCESSED | DIRTY),
                ACCESSED,
                "{addr:#x}"
            );
        }
        walk(&mut mem, &regs, 0x0040_1abc, W).unwrap();
        assert_eq!(mem.read_u64(0x4008).unwrap() & DIRTY, DIRTY);
        // Dirty only on the final entry.
        assert_eq!(mem.read_u64(0x3010).unwrap() & DIRTY, 0);
        assert_eq!(mem.read_u64(0x4008).unwrap() & !0xfff, 0x5_5000);
    }

    #[test]
    fn failed_access_sets_no_bits() {
        let mut mem = long_tables(5); // read-only user page
        let regs = long_regs(0x1000);
        let err = walk(&mut mem, &regs, 0x0040_1000, UW).unwrap_err();
        assert_eq!(err.error_code, PF_PRESENT | PF_WRITE | PF_USER);
        for addr in [0x1000, 0x2000, 0x3010, 0x4008] {
            assert_eq!(
                mem.read_u64(addr).unwrap() & (ACCESSED | DIRTY),
                0,
                "{addr:#x}"
            );
        }
    }

    #[test]
    fn long_mode_2m_and_1g_pages() {
        let mut mem = long_tables(7);
        // PD[3] -> 2 MiB page at 0x4020_0000, global.
        mem.write_u64(0x3000 + 3 * 8, 0x4020_0000 | PS | GLOBAL | 3)
            .unwrap();
        // PDPT[1] -> 1 GiB page at 0x4000_0000.
        mem.write_u64(0x2008, 0x4000_0000 | PS | 7).unwrap();
        let mut regs = long_regs(0x1000);
        let t = walk(&mut mem, &regs, 0x0061_2345, R).unwrap();
        assert_eq!(t.gpa, 0x4021_2345);
        assert_eq!(t.page_size, 2 << 20);
        assert!(!t.global, "PGE off");
        assert!(!t.user);
        regs.cr4 |= CR4_PGE;
        assert!(walk(&mut mem, &regs, 0x0061_2345, R).unwrap().global);
        let t = walk(&mut mem, &regs, 0x7654_3210, UR).unwrap();
        assert_eq!(t.gpa, 0x4000_0000 | 0x3654_3210);
        assert_eq!(t.page_size, 1 << 30);
    }

    #[test]
    fn not_present_and_non_ram_entries() {
        let mut mem = long_tables(7);
        let regs = long_regs(0x1000);
        // PD[4] is empty.
        assert_eq!(
            walk(&mut mem, &regs, 0x0080_0000, R)
                .unwrap_err()
                .error_code,
            0
        );
        assert_eq!(
            walk(&mut mem, &regs, 0x0080_0000, UW)
                .unwrap_err()
                .error_code,
            PF_WRITE | PF_USER
        );
        assert_eq!(
            walk(&mut mem, &regs, 0x0080_0000, X)
                .unwrap_err()
                .error_code,
            PF_FETCH,
            "I/D reported with NXE"
        );
        // A PDPTE pointing outside RAM: not present.
        mem.write_u64(0x2010, 0x7000_0000 | 7).unwrap();
        assert_eq!(
            walk(&mut mem, &regs, 0x8000_0000, R)
                .unwrap_err()
                .error_code,
            0
        );
        // CR3 outside RAM.
        assert_eq!(
            walk(&mut mem, &long_regs(0x20_0000), 0, R)
                .unwrap_err()
                .error_code,
            0
        );
    }

    #[test]
    fn reserved_bits() {
        let regs = long_regs(0x1000);
        let rsvd = PF_PRESENT | PF_RSVD;
        // Address bit at MAXPHYADDR in the PTE.
        let mut mem = long_tables(7 | (1 << MAXPHYADDR));
        assert_eq!(
            walk(&mut mem, &regs, 0x0040_1000, R)
                .unwrap_err()
                .error_code,
            rsvd
        );
        // PS in a PML4E.
        let mut mem = long_tables(7);
        mem.write_u64(0x1000, 0x2000 | PS | 7).unwrap();
        assert_eq!(
            walk(&mut mem, &regs, 0x0040_1000, W)
                .unwrap_err()
                .error_code,
            rsvd | PF_WRITE
        );
        // Bits 20:13 of a 2 MiB page.
        let mut mem = long_tables(7);
        mem.write_u64(0x3018, 0x4020_0000 | (1 << 13) | PS | 7)
            .unwrap();
        assert_eq!(
            walk(&mut mem, &regs, 0x0060_0000, R)
                .unwrap_err()
                .error_code,
            rsvd
        );
        // Bits 29:13 of a 1 GiB page.
        mem.write_u64(0x2008, 0x4000_0000 | (1 << 21) | PS | 7)
            .unwrap();
        assert_eq!(
            walk(&mut mem, &regs, 0x4000_0000, R)
                .unwrap_err()
                .error_code,
            rsvd
        );
        // XD with NXE off is reserved; with NXE on it is not.
        let mut mem = long_tables(7 | XD);
        let mut no_nx = regs;
        no_nx.efer &= !EFER_NXE;
        assert_eq!(
            walk(&mut mem, &no_nx, 0x0040_1000, R)
                .unwrap_err()
                .error_code,
            rsvd
        );
        assert!(walk(&mut mem, &regs, 0x0040_1000, R).is_ok());
        // A reserved-bit fault sets no accessed bit either.
        let mut mem = long_tables(7 | (1 << 45));
        assert!(walk(&mut mem, &regs, 0x0040_1000, R).is_err());
        assert_eq!(mem.read_u64(0x1000).unwrap() & ACCESSED, 0);
    }

    #[test]
    fn nx() {
        let mut mem = long_tables(7);
        // XD in the PD entry covers the page below it.
        mem.write_u64(0x3010, 0x4000 | XD | 7).unwrap();
        let regs = long_regs(0x1000);
        let t = walk(&mut mem, &regs, 0x0040_1000, R).unwrap();
        assert!(!t.executable);
        assert_eq!(
            walk(&mut mem, &regs, 0x0040_1000, X)
                .unwrap_err()
                .error_code,
            PF_PRESENT | PF_FETCH
        );
        assert_eq!(
            walk(&mut mem, &regs, 0x0040_1000, UX)
                .unwrap_err()
                .error_code,
            PF_PRESENT | PF_FETCH | PF_USER
        );
    }

    #[test]
    fn user_and_write_protection() {
        let regs = long_regs(0x1000);
        // Supervisor-only at the PDPT level.
        let mut mem = long_tables(7);
        mem.write_u64(0x2000, 0x3000 | 3).unwrap();
        assert_eq!(
            walk(&mut mem, &regs, 0x0040_1000, UR)
                .unwrap_err()
                .error_code,
            PF_PRESENT | PF_USER
        );
        assert!(walk(&mut mem, &regs, 0x0040_1000, W).is_ok());
        // Read-only at the PD level: user writes fault, user reads do not.
        let mut mem = long_tables(7);
        mem.write_u64(0x3010, 0x4000 | 5).unwrap();
        assert!(walk(&mut mem, &regs, 0x0040_1000, UR).is_ok());
        let t = walk(&mut mem, &regs, 0x0040_1000, UR).unwrap();
        assert!(!t.writable);
        assert_eq!(
            walk(&mut mem, &regs, 0x0040_1000, UW)
                .unwrap_err()
                .error_code,
            PF_PRESENT | PF_WRITE | PF_USER
        );
        // Supervisor writes: fault with CR0.WP, allowed without.
        assert_eq!(
            walk(&mut mem, &regs, 0x0040_1000, W)
                .unwrap_err()
                .error_code,
            PF_PRESENT | PF_WRITE
        );
        let mut no_wp = regs;
        no_wp.cr0 &= !CR0_WP;
        let t = walk(&mut mem, &no_wp, 0x0040_1000, W).unwrap();
        assert!(t.writable);
        assert_eq!(mem.read_u64(0x4008).unwrap() & DIRTY, DIRTY);
    }

    #[test]
    fn smep_and_smap() {
        let mut mem = long_tables(7);
        let mut regs = long_regs(0x1000);
        regs.efer &= !EFER_NXE;
        assert!(walk(&mut mem, &regs, 0x0040_1000, X).is_ok());
        regs.cr4 |= CR4_SMEP;
        // I/D is reported because SMEP is on, even without NXE.
        assert_eq!(
            walk(&mut mem, &regs, 0x0040_1000, X)
                .unwrap_err()
                .error_code,
            PF_PRESENT | PF_FETCH
        );
        assert!(walk(&mut mem, &regs, 0x0040_1000, UX).is_ok());
        assert!(
            walk(&mut mem, &regs, 0x0040_1000, R).is_ok(),
            "SMEP does not affect data"
        );
        regs.cr4 |= CR4_SMAP;
        assert_eq!(
            walk(&mut mem, &regs, 0x0040_1000, R)
                .unwrap_err()
                .error_code,
            PF_PRESENT
        );
        assert_eq!(
            walk(&mut mem, &regs, 0x0040_1000, W)
                .unwrap_err()
                .error_code,
            PF_PRESENT | PF_WRITE
        );
        assert!(walk_with_ac(&mut mem, &regs, 0x0040_1000, R, true).is_ok());
        assert!(walk(&mut mem, &regs, 0x0040_1000, UR).is_ok());
        // A supervisor page is not affected by either.
        mem.write_u64(0x4008, 0x5_5000 | 3).unwrap();
        assert!(walk(&mut mem, &regs, 0x0040_1000, X).is_ok());
        assert!(walk(&mut mem, &regs, 0x0040_1000, R).is_ok());
    }

    #[test]
    fn protection_keys() {
        // The user page at 0x0040_1000 with key 5, a supervisor page with key 5 at
        // 0x0040_2000.
        let mut mem = long_tables(7 | (5 << 59));
        mem.write_u64(0x4010, 0x5_6000 | 3 | (5 << 59)).unwrap();
        let mut regs = long_regs(0x1000);
        // Without CR4.PKE the key bits are ignored.
        regs.pkru = 0xffff_ffff;
        assert!(walk(&mut mem, &regs, 0x0040_1000, UW).is_ok());
        regs.cr4 |= CR4_PKE;
        // AD5: every data access to the user page faults, with PK; fetches do not.
        regs.pkru = 1 << 10;
        for (access, code) in [
            (UR, PF_PRESENT | PF_USER | PF_PK),
            (UW, PF_PRESENT | PF_WRITE | PF_USER | PF_PK),
            (R, PF_PRESENT | PF_PK),
            (W, PF_PRESENT | PF_WRITE | PF_PK),
        ] {
            assert_eq!(
                walk(&mut mem, &regs, 0x0040_1000, access)
                    .unwrap_err()
                    .error_code,
                code,
                "{access:?}"
            );
        }
        assert!(walk(&mut mem, &regs, 0x0040_1000, UX).is_ok());
        // Keys do not apply to supervisor pages.
        assert!(walk(&mut mem, &regs, 0x0040_2000, W).is_ok());
        // WD5: reads pass, user writes fault, supervisor writes fault only with CR0.WP.
        regs.pkru = 2 << 10;
        assert!(walk(&mut mem, &regs, 0x0040_1000, UR).is_ok());
        assert_eq!(
            walk(&mut mem, &regs, 0x0040_1000, UW)
                .unwrap_err()
                .error_code,
            PF_PRESENT | PF_WRITE | PF_USER | PF_PK
        );
        assert_eq!(
            walk(&mut mem, &regs, 0x0040_1000, W)
                .unwrap_err()
                .error_code,
            PF_PRESENT | PF_WRITE | PF_PK
        );
        let mut no_wp = regs;
        no_wp.cr0 &= !CR0_WP;
        assert!(walk(&mut mem, &no_wp, 0x0040_1000, W).is_ok());
        // Other keys' bits do not matter.
        regs.pkru = !(3 << 10);
        assert!(walk(&mut mem, &regs, 0x0040_1000, UW).is_ok());
        // A read-only page denied by its key reports PK with the protection violation.
        mem.write_u64(0x4008, 0x5_5000 | 5 | (5 << 59)).unwrap();
        regs.pkru = 1 << 10;
        assert_eq!(
            walk(&mut mem, &regs, 0x0040_1000, UW)
                .unwrap_err()
                .error_code,
            PF_PRESENT | PF_WRITE | PF_USER | PF_PK
        );
        // Keys exist only under 4- and 5-level paging.
        let mut pae = pae_regs(0x1020);
        pae.cr4 |= CR4_PKE;
        pae.pkru = u32::MAX;
        let mut pmem = pae_tables(7);
        assert!(walk(&mut pmem, &pae, 0x4040_1234, UW).is_ok());
    }

    #[test]
    fn five_level_paging() {
        let mut mem = long_tables(7);
        // PML5 at 0x6000, entry 1 (bit 48 set in the address) -> the PML4 at 0x1000.
        mem.write_u64(0x6008, 0x1000 | 7).unwrap();
        let mut regs = long_regs(0x6000);
        regs.cr4 |= CR4_LA57;
        let t = walk(&mut mem, &regs, (1 << 48) | 0x0040_1abc, R).unwrap();
        assert_eq!(t.gpa, 0x5_5abc);
        assert_eq!(mem.read_u64(0x6008).unwrap() & ACCESSED, ACCESSED);
        assert_eq!(
            walk(&mut mem, &regs, 0x0040_1abc, R)
                .unwrap_err()
                .error_code,
            0
        );
    }

    /// PAE tables: PDPT at 0x1020 (32-byte aligned, not page aligned), PD at 0x3000, PT
    /// at 0x4000. gva 0x4040_1000 (PDPTE 1, PD[2], PT[1]) -> 0x5_5000.
    fn pae_tables(leaf_flags: u64) -> GuestMemory {
        let mut mem = GuestMemory::with_ram(0x10_0000).unwrap();
        mem.write_u64(0x1028, 0x3000 | 1).unwrap();
        mem.write_u64(0x3010, 0x4000 | 7).unwrap();
        mem.write_u64(0x4008, 0x5_5000 | leaf_flags).unwrap();
        mem
    }

    #[test]
    fn pae_pdpte_and_pages() {
        let mut mem = pae_tables(7);
        let regs = pae_regs(0x1020);
        let t = walk(&mut mem, &regs, 0x4040_1234, UW).unwrap();
        assert_eq!(t.gpa, 0x5_5234);
        assert_eq!(t.page_size, 4096);
        // The PDPTE has no accessed bit; the others get theirs, the PTE its dirty bit.
        assert_eq!(mem.read_u64(0x1028).unwrap(), 0x3001);
        assert_eq!(mem.read_u64(0x3010).unwrap() & (ACCESSED | DIRTY), ACCESSED);
        assert_eq!(
            mem.read_u64(0x4008).unwrap() & (ACCESSED | DIRTY),
            ACCESSED | DIRTY
        );
        // The upper 32 bits of the address are ignored.
        assert_eq!(
            walk(&mut mem, &regs, 0xffff_0000_4040_1234, R).unwrap().gpa,
            0x5_5234
        );
        // 2 MiB page.
        mem.write_u64(0x3018, 0x0060_0000 | PS | 3).unwrap();
        let t = walk(&mut mem, &regs, 0x4067_8000, R).unwrap();
        assert_eq!((t.gpa, t.page_size), (0x67_8000, 2 << 20));
        // Not-present PDPTE.
        assert_eq!(
            walk(&mut mem, &regs, 0x8000_0000, UR)
                .unwrap_err()
                .error_code,
            PF_USER
        );
        // Reserved bits in the PDPTE (R/W is reserved there) and in the PD.
        mem.write_u64(0x1028, 0x3000 | 3).unwrap();
        assert_eq!(
            walk(&mut mem, &regs, 0x4040_1000, R)
                .unwrap_err()
                .error_code,
            PF_PRESENT | PF_RSVD
        );
        mem.write_u64(0x1028, 0x3000 | 1).unwrap();
        mem.write_u64(0x3018, 0x0060_0000 | (1 << 14) | PS | 3)
            .unwrap();
        assert_eq!(
            walk(&mut mem, &regs, 0x4060_0000, R)
                .unwrap_err()
                .error_code,
            PF_PRESENT | PF_RSVD
        );
        // Bit 52 is reserved under PAE (it is ignored only in 4-level entries).
        let mut mem = pae_tables(7 | (1 << 52));
        assert_eq!(
            walk(&mut mem, &regs, 0x4040_1000, R)
                .unwrap_err()
                .error_code,
            PF_PRESENT | PF_RSVD
        );
        let mut mem = long_tables(7 | (1 << 52));
        assert!(walk(&mut mem, &long_regs(0x1000), 0x0040_1000, R).is_ok());
        // NX under PAE.
        let mut mem = pae_tables(7 | XD);
        assert_eq!(
            walk(&mut mem, &regs, 0x4040_1000, X)
                .unwrap_err()
                .error_code,
            PF_PRESENT | PF_FETCH
        );
    }

    #[test]
    fn legacy_4k_and_4m_pages() {
        let mut mem = GuestMemory::with_ram(0x10_0000).unwrap();
        // PD at 0x1000; PD[1] -> PT at 0x2000; PT[3] -> 0x7000.
        mem.write_u32(0x1004, 0x2000 | 7).unwrap();
        mem.write_u32(0x200c, 0x7000 | 7 | GLOBAL as u32).unwrap();
        // PD[2]: a 4 MiB page at 0x1_0080_0000 (PSE-36: bit 13 -> physical bit 32).
        mem.write_u32(0x1008, 0x0080_0000 | (1 << 13) | PS as u32 | 3)
            .unwrap();
        let mut regs = legacy_regs(0x1000);
        regs.cr4 |= CR4_PGE;
        let t = walk(&mut mem, &regs, 0x0040_3456, UW).unwrap();
        assert_eq!((t.gpa, t.page_size), (0x7456, 4096));
        assert!(t.global && t.user && t.writable && t.executable);
        assert_eq!(mem.read_u32(0x1004).unwrap() & 0x60, 0x20);
        assert_eq!(mem.read_u32(0x200c).unwrap() & 0x60, 0x60);
        let t = walk(&mut mem, &regs, 0x0092_3456, R).unwrap();
        assert_eq!((t.gpa, t.page_size), (0x1_0092_3456, 4 << 20));
        assert!(!t.global);
        assert_eq!(
            walk(&mut mem, &regs, 0x0092_3456, UR)
                .unwrap_err()
                .error_code,
            PF_PRESENT | PF_USER
        );
        // Bit 21 is reserved in a 4 MiB PDE, and so is bit 20 (physical bit 39).
        mem.write_u32(0x1008, 0x0080_0000 | (1 << 21) | PS as u32 | 3)
            .unwrap();
        assert_eq!(
            walk(&mut mem, &regs, 0x0092_3456, R)
                .unwrap_err()
                .error_code,
            PF_PRESENT | PF_RSVD
        );
        mem.write_u32(0x1008, 0x0080_0000 | (1 << 20) | PS as u32 | 3)
            .unwrap();
        assert_eq!(
            walk(&mut mem, &regs, 0x0092_3456, R)
                .unwrap_err()
                .error_code,
            PF_PRESENT | PF_RSVD
        );
        // Without CR4.PSE the PS bit is ignored: the PDE points to a page table.
        mem.write_u32(0x1004, 0x2000 | PS as u32 | 7).unwrap();
        regs.cr4 &= !CR4_PSE;
        assert_eq!(walk(&mut mem, &regs, 0x0040_3456, R).unwrap().gpa, 0x7456);
        // Fetches report no I/D bit without SMEP (no NX in 32-bit paging), even with NXE.
        regs.efer |= EFER_NXE;
        assert_eq!(
            walk(&mut mem, &regs, 0x00c0_0000, X)
                .unwrap_err()
                .error_code,
            0
        );
        regs.cr4 |= CR4_SMEP;
        assert_eq!(
            walk(&mut mem, &regs, 0x00c0_0000, X)
                .unwrap_err()
                .error_code,
            PF_FETCH
        );
        assert_eq!(
            walk(&mut mem, &regs, 0x0040_3000, X)
                .unwrap_err()
                .error_code,
            PF_PRESENT | PF_FETCH
        );
    }
}
