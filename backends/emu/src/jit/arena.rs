//! Executable memory for translated runs: one fixed-size mapping per block cache, filled
//! from the start and emptied whole when the cache is flushed, so the host memory it takes
//! is bounded by [`ARENA_BYTES`] per vCPU whatever the guest does.
//!
//! Only where the host can map memory executable (Linux, with the `jit` feature); elsewhere
//! (the bare-metal image) an arena never has room, and every run stays interpreted.

/// Size of one arena.
pub const ARENA_BYTES: usize = 8 << 20;

#[cfg(all(feature = "jit", target_os = "linux", target_arch = "x86_64"))]
mod imp {
    use super::ARENA_BYTES;

    /// A read-write-execute mapping of [`ARENA_BYTES`], written by the translator only.
    #[derive(Debug)]
    pub struct Arena {
        base: *mut u8,
        used: usize,
    }

    // SAFETY: the mapping is owned by the arena alone (no other pointer to it escapes
    // except the entry addresses stored in the cache's ops, which are only called while the
    // arena is alive, by the thread that owns the vCPU); moving the arena to another thread
    // moves that ownership with it.
    unsafe impl Send for Arena {}

    impl Arena {
        /// A new arena, or `None` if the host refuses an executable mapping.
        pub fn new() -> Option<Arena> {
            // SAFETY: an anonymous private mapping at an address the kernel chooses
            // touches no existing memory; the result is checked for failure.
            let p = unsafe {
                libc::mmap(
                    core::ptr::null_mut(),
                    ARENA_BYTES,
                    libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return None;
            }
            Some(Arena {
                base: p.cast(),
                used: 0,
            })
        }

        /// Copy `code` in; its address, or `None` when the arena is full.
        pub fn push(&mut self, code: &[u8]) -> Option<u64> {
            // Entries 16-byte aligned, as compilers align functions.
            let at = (self.used + 15) & !15;
            if at + code.len() > ARENA_BYTES {
                return None;
            }
            // SAFETY: `at + code.len()` is within the mapping (checked above), the mapping
            // is writable, and no translated code runs while the translator writes (both
            // happen on the vCPU's thread, between instructions).
            unsafe {
                core::ptr::copy_nonoverlapping(code.as_ptr(), self.base.add(at), code.len());
            }
            self.used = at + code.len();
            Some(self.base as u64 + at as u64)
        }

        /// Bytes still free.
        pub fn free(&self) -> usize {
            ARENA_BYTES - self.used
        }

        /// Forget everything written (the cache dropped every op that pointed here).
        pub fn reset(&mut self) {
            self.used = 0;
        }
    }

    impl Drop for Arena {
        fn drop(&mut self) {
            // SAFETY: `base` is the mapping `new` made, of this length, and no op that
            // points into it outlives the cache that owns the arena.
            unsafe {
                libc::munmap(self.base.cast(), ARENA_BYTES);
            }
        }
    }

    /// Run translated code at `entry` on the registers at `gpr` with the status flags
    /// `flags` (x86 positions, other bits 0 but bit 1); returns RFLAGS after it.
    ///
    /// # Safety
    /// `entry` is an address [`Arena::push`] returned for code from
    /// [`crate::jit::translate`], in an arena that has not been reset or dropped since,
    /// and `gpr` points to at least 16 writable `u64`s.
    #[inline(always)]
    pub unsafe fn call(entry: u64, gpr: *mut u64, flags: u64) -> u64 {
        // SAFETY: the caller's contract: `entry` is translated code, which follows the
        // System V calling convention, reads and writes only `gpr[0..16]` and its own
        // stack, and returns.
        unsafe {
            let f: extern "sysv64" fn(*mut u64, u64) -> u64 = core::mem::transmute(entry as usize);
            f(gpr, flags)
        }
    }
}

#[cfg(not(all(feature = "jit", target_os = "linux", target_arch = "x86_64")))]
mod imp {
    /// No executable memory on this host: nothing is ever translated.
    #[derive(Debug)]
    pub struct Arena;

    impl Arena {
        /// Never an arena here.
        pub fn new() -> Option<Arena> {
            None
        }

        /// Never room.
        pub fn push(&mut self, _code: &[u8]) -> Option<u64> {
            None
        }

        /// Never room.
        pub fn free(&self) -> usize {
            0
        }

        /// Nothing to forget.
        pub fn reset(&mut self) {}
    }

    /// Never called: no op is ever translated here.
    ///
    /// # Safety
    /// None needed; it does nothing.
    #[inline(always)]
    pub unsafe fn call(_entry: u64, _gpr: *mut u64, flags: u64) -> u64 {
        flags
    }
}

pub use imp::{call, Arena};
