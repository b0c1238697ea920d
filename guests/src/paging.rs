//! Changes to the boot identity map: 4 KiB mappings for tests that need to fault.
//!
//! Page tables are the `x86_64` crate's `PageTable`s, taken from a small static pool; the
//! pool and the boot tables sit below 4 GiB, where virtual = physical, so a table's
//! physical address is also its pointer. [`pte`] and [`pde`] hand out raw entries (`u64`),
//! not the crate's `PageTableEntry`: the tests write entries the crate refuses to build on
//! purpose (reserved bits, physical addresses beyond MAXPHYADDR) to check the faults.

use crate::cell::Racy;
use core::sync::atomic::{AtomicUsize, Ordering};
use x86_64::structures::paging::{PageTable, PageTableFlags as F};

/// Present.
pub const P: u64 = F::PRESENT.bits();
/// Writable.
pub const RW: u64 = F::WRITABLE.bits();
/// User-accessible.
pub const US: u64 = F::USER_ACCESSIBLE.bits();
/// Large page (in a PDE or PDPTE).
pub const PS: u64 = F::HUGE_PAGE.bits();
/// Global (with CR4.PGE).
pub const G: u64 = F::GLOBAL.bits();
/// No-execute (needs EFER.NXE).
pub const NX: u64 = F::NO_EXECUTE.bits();
/// The physical-address bits of an entry.
pub const ADDR: u64 = 0x000F_FFFF_FFFF_F000;
/// PAT in a 2 MiB PDE (bit 12; in a 4 KiB PTE the PAT bit is bit 7, where PS is).
const PAT_LARGE: u64 = 1 << 12;

const POOL_PAGES: usize = 16;

#[repr(C, align(4096))]
struct Pool([PageTable; POOL_PAGES]);

static POOL: Racy<Pool> = Racy::new(Pool([const { PageTable::new() }; POOL_PAGES]));
static NEXT: AtomicUsize = AtomicUsize::new(0);

fn alloc_table() -> *mut PageTable {
    let i = NEXT.fetch_add(1, Ordering::SeqCst);
    if i >= POOL_PAGES {
        crate::println!("FAIL: page-table pool exhausted");
        crate::exit(crate::EXIT_FAIL);
    }
    // SAFETY: each pool page is handed out once; the pool is zeroed .bss.
    unsafe { &mut (*POOL.get()).0[i] }
}

/// The table `entry` points at, creating it (not present) or splitting the 2 MiB page it
/// maps (large) first.
fn next_level(slot: *mut u64) -> *mut PageTable {
    // SAFETY: `entry` points into a live page table (walked from CR3 or allocated here),
    // and a new table is a pool page no one else holds.
    unsafe {
        if *slot & P == 0 {
            *slot = alloc_table() as u64 | P | RW | US;
        } else if *slot & PS != 0 {
            // Split a 2 MiB page into 512 4 KiB pages with the same attributes.
            let base = *slot & ADDR & !0x1F_FFFF;
            let flags = *slot & !(ADDR | PS) & !PAT_LARGE;
            let t = alloc_table();
            for i in 0..512u64 {
                *entry(t, i) = (base + (i << 12)) | flags;
            }
            *slot = t as u64 | P | RW | US;
        }
        (*slot & ADDR) as *mut PageTable
    }
}

/// The raw entry `index` of `table`.
fn entry(table: *mut PageTable, index: u64) -> *mut u64 {
    // SAFETY: `table` is live and the index < 512; the table is 512 entries (repr(C)), each
    // a `u64` (repr(transparent)).
    unsafe { table.cast::<u64>().add((index & 0x1FF) as usize) }
}

/// The 4 KiB page-table entry that maps `virt`, creating tables (and splitting 2 MiB
/// pages) as needed. The caller flushes the TLB after changing it.
pub fn pte(virt: u64) -> *mut u64 {
    entry(next_level(pde(virt)), virt >> 12)
}

/// The page-directory entry that maps (or points at the page table of) `virt`, creating
/// the upper tables as needed. Writing a 2 MiB page into it (PS) is the caller's to do,
/// with the flush.
pub fn pde(virt: u64) -> *mut u64 {
    let pml4 = (crate::cpu::cr3() & ADDR) as *mut PageTable;
    let pdpt = next_level(entry(pml4, virt >> 39));
    let pd = next_level(entry(pdpt, virt >> 30));
    entry(pd, virt >> 21)
}

/// Map the 4 KiB page at `virt` to `phys` with `flags` (P is added) and flush it.
pub fn map(virt: u64, phys: u64, flags: u64) {
    let e = pte(virt);
    // SAFETY: `pte` returned a live entry.
    unsafe { *e = (phys & ADDR) | flags | P };
    crate::cpu::invlpg(virt);
}

/// Unmap the 4 KiB page at `virt` and flush it.
pub fn unmap(virt: u64) {
    let e = pte(virt);
    // SAFETY: `pte` returned a live entry.
    unsafe { *e = 0 };
    crate::cpu::invlpg(virt);
}

/// A 4 KiB-aligned page of memory for tests to map and fill.
#[repr(C, align(4096))]
pub struct Page(pub [u8; 4096]);
