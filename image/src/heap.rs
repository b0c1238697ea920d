//! The heap: one RAM range from the memory map, handed out by a simple allocator.
//!
//! Small blocks (up to 4 KiB) come in power-of-two size classes, each class with a free
//! list; a block of class 2^k is 2^k-aligned, so any alignment up to its size holds.
//! Large blocks are whole 4 KiB pages with a first-fit free list (a freed block is split
//! when reused for a smaller request; neighbours are not merged). Everything else comes
//! from a bump pointer. The guest's RAM is the one big allocation and lives as long as
//! the image, so the waste this simple scheme can leave is bounded and small.

use crate::cpu::BootCell;
use core::alloc::{GlobalAlloc, Layout};
use core::ptr;

const PAGE: usize = 4096;
/// Smallest block: 16 bytes (room for a free-list link, and 16-byte alignment).
const MIN_SHIFT: u32 = 4;
/// Largest small block: one page.
const MAX_SHIFT: u32 = 12;
const CLASSES: usize = (MAX_SHIFT - MIN_SHIFT + 1) as usize;

/// A free large block; lives in the block's first bytes.
struct LargeFree {
    size: usize,
    next: *mut LargeFree,
}

struct State {
    next: usize,
    end: usize,
    small: [*mut u8; CLASSES],
    large: *mut LargeFree,
    in_use: usize,
}

/// The global allocator (initialised by [`Heap::init`]).
pub struct Heap {
    state: BootCell<State>,
}

impl Heap {
    /// An empty heap: every allocation fails until [`Heap::init`].
    pub const fn empty() -> Heap {
        Heap {
            state: BootCell::new(State {
                next: 0,
                end: 0,
                small: [ptr::null_mut(); CLASSES],
                large: ptr::null_mut(),
                in_use: 0,
            }),
        }
    }

    /// Hand the heap `start..end` (page-aligned, identity-mapped RAM nothing else uses).
    ///
    /// # Safety
    /// The range must be RAM that stays unused by anything else for the image's lifetime.
    pub unsafe fn init(&self, start: usize, end: usize) {
        // SAFETY: boot time, one CPU, no allocation in flight.
        let s = unsafe { &mut *self.state.get() };
        s.next = start;
        s.end = end;
    }

    /// Bytes currently allocated (for the log).
    pub fn in_use(&self) -> usize {
        // SAFETY: one CPU, interrupts off: a plain read.
        unsafe { (*self.state.get()).in_use }
    }

    /// Bytes never handed out yet.
    pub fn untouched(&self) -> usize {
        // SAFETY: as `in_use`.
        let s = unsafe { &*self.state.get() };
        s.end - s.next
    }
}

/// The size class of a small request, or `None` for a large one.
fn class_of(layout: &Layout) -> Option<usize> {
    let need = layout.size().max(layout.align()).max(1 << MIN_SHIFT);
    if need > PAGE {
        return None;
    }
    let shift = usize::BITS - (need - 1).leading_zeros();
    Some((shift - MIN_SHIFT) as usize)
}

impl State {
    fn bump(&mut self, size: usize, align: usize) -> *mut u8 {
        let Some(start) = self.next.checked_add(align - 1).map(|v| v & !(align - 1)) else {
            return ptr::null_mut();
        };
        match start.checked_add(size) {
            Some(end) if end <= self.end => {
                self.next = end;
                start as *mut u8
            }
            _ => ptr::null_mut(),
        }
    }

    fn alloc_large(&mut self, size: usize, align: usize) -> *mut u8 {
        if align <= PAGE {
            let mut link: *mut *mut LargeFree = &mut self.large;
            // SAFETY: the list holds only blocks this heap freed, each at least one page
            // and page-aligned, written by `dealloc`.
            unsafe {
                while !(*link).is_null() {
                    let block = *link;
                    let have = (*block).size;
                    if have >= size {
                        if have - size >= PAGE {
                            // Keep the tail on the list in place of the block.
                            let rest = (block as usize + size) as *mut LargeFree;
                            rest.write(LargeFree {
                                size: have - size,
                                next: (*block).next,
                            });
                            *link = rest;
                        } else {
                            *link = (*block).next;
                        }
                        return block as *mut u8;
                    }
                    link = &mut (*block).next;
                }
            }
        }
        self.bump(size, align.max(PAGE))
    }
}

/// Page-rounded size of a large block (what `dealloc` frees, too).
fn large_size(layout: &Layout) -> Option<usize> {
    layout.size().checked_add(PAGE - 1).map(|s| s & !(PAGE - 1))
}

// SAFETY: blocks never overlap: each comes from the bump pointer once or from a free list
// that `dealloc` alone fills with blocks it got back; one CPU with interrupts off, so no
// concurrent call.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: one CPU, interrupts off; the allocator never calls itself.
        let s = unsafe { &mut *self.state.get() };
        let p = match class_of(&layout) {
            Some(class) => {
                let head = s.small[class];
                if head.is_null() {
                    let size = 1usize << (class as u32 + MIN_SHIFT);
                    s.bump(size, size)
                } else {
                    // SAFETY: a free small block holds the next link in its first word.
                    s.small[class] = unsafe { *(head as *mut *mut u8) };
                    head
                }
            }
            None => match large_size(&layout) {
                Some(size) => s.alloc_large(size, layout.align()),
                None => ptr::null_mut(),
            },
        };
        if !p.is_null() {
            s.in_use += layout.size();
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        // SAFETY: as in `alloc`.
        let s = unsafe { &mut *self.state.get() };
        s.in_use -= layout.size();
        match class_of(&layout) {
            Some(class) => {
                // SAFETY: `p` is a block of this class (the caller's contract), at least
                // 16 bytes and aligned: it can hold the link.
                unsafe { *(p as *mut *mut u8) = s.small[class] };
                s.small[class] = p;
            }
            None => {
                let Some(size) = large_size(&layout) else {
                    return;
                };
                let block = p as *mut LargeFree;
                // SAFETY: `p` is a page-aligned block of `size` bytes this heap handed out.
                unsafe {
                    block.write(LargeFree {
                        size,
                        next: s.large,
                    })
                };
                s.large = block;
            }
        }
    }
}
