//! Changes to the boot identity map: 4 KiB mappings for tests that need to fault.
//!
//! Page tables come from a small static pool; the pool and the boot tables sit below
//! 4 GiB, where virtual = physical, so a table's physical address is also its pointer.

use crate::cell::Racy;
use core::sync::atomic::{AtomicUsize, Ordering};

/// Present.
pub const P: u64 = 1;
/// Writable.
pub const RW: u64 = 1 << 1;
/// User-accessible.
pub const US: u64 = 1 << 2;
/// Large page (in a PDE or PDPTE).
pub const PS: u64 = 1 << 7;
/// Global (with CR4.PGE).
pub const G: u64 = 1 << 8;
/// No-execute (needs EFER.NXE).
pub const NX: u64 = 1 << 63;
/// The physical-address bits of an entry.
pub const ADDR: u64 = 0x000F_FFFF_FFFF_F000;

const POOL_PAGES: usize = 16;

#[repr(C, align(4096))]
struct Pool([[u64; 512]; POOL_PAGES]);

static POOL: Racy<Pool> = Racy::new(Pool([[0; 512]; POOL_PAGES]));
static NEXT: AtomicUsize = AtomicUsize::new(0);

fn alloc_table() -> *mut u64 {
    let i = NEXT.fetch_add(1, Ordering::SeqCst);
    if i >= POOL_PAGES {
        crate::println!("FAIL: page-table pool exhausted");
        crate::exit(crate::EXIT_FAIL);
    }
    // SAFETY: each pool page is handed out once; the pool is zeroed .bss.
    unsafe { (*POOL.get()).0[i].as_mut_ptr() }
}

fn next_level(entry: *mut u64) -> *mut u64 {
    // SAFETY: `entry` points into a live page table (walked from CR3 or allocated here).
    unsafe {
        if *entry & P == 0 {
            let t = alloc_table();
            *entry = t as u64 | P | RW | US;
        } else if *entry & PS != 0 {
            // Split a 2 MiB page into 512 4 KiB pages with the same attributes.
            let base = *entry & ADDR & !0x1F_FFFF;
            let flags = *entry & !(ADDR | PS) & !(1 << 12); // bit 12 is PAT in a PDE
            let t = alloc_table();
            for i in 0..512u64 {
                *t.add(i as usize) = (base + (i << 12)) | flags;
            }
            *entry = t as u64 | P | RW | US;
        }
        (*entry & ADDR) as *mut u64
    }
}

/// The 4 KiB page-table entry that maps `virt`, creating tables (and splitting 2 MiB
/// pages) as needed. The caller flushes the TLB after changing it.
pub fn pte(virt: u64) -> *mut u64 {
    let pml4 = (crate::cpu::cr3() & ADDR) as *mut u64;
    let idx = |shift: u32| ((virt >> shift) & 0x1FF) as usize;
    // SAFETY: each level is a live table; indices are < 512.
    unsafe {
        let pdpt = next_level(pml4.add(idx(39)));
        let pd = next_level(pdpt.add(idx(30)));
        let pt = next_level(pd.add(idx(21)));
        pt.add(idx(12))
    }
}

/// The page-directory entry that maps (or points at the page table of) `virt`, creating
/// the upper tables as needed. Writing a 2 MiB page into it (PS) is the caller's to do,
/// with the flush.
pub fn pde(virt: u64) -> *mut u64 {
    let pml4 = (crate::cpu::cr3() & ADDR) as *mut u64;
    let idx = |shift: u32| ((virt >> shift) & 0x1FF) as usize;
    // SAFETY: each level is a live table; indices are < 512.
    unsafe {
        let pdpt = next_level(pml4.add(idx(39)));
        let pd = next_level(pdpt.add(idx(30)));
        pd.add(idx(21))
    }
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
