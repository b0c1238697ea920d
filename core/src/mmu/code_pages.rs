//! Which RAM pages hold guest code that a vCPU's backend keeps in decoded form, shared by
//! all vCPUs of a machine, so that a store by one vCPU reaches what every other vCPU
//! decoded from the same page.
//!
//! A software backend (the emulator) caches decoded instructions by guest-physical
//! address and notices its own stores to them. With several vCPUs, a store by vCPU A to
//! code that vCPU B decoded must reach B's cache too, as a store reaches every
//! processor's instruction stream on hardware (SDM 3A 9.1.3: cross-modifying code takes
//! effect once the executing processor serialises; here it takes effect before B runs
//! again, which is earlier). This is the record they share, QEMU's `DIRTY_MEMORY_CODE`
//! in miniature:
//!
//! - a bit per RAM page, set while some vCPU may hold decoded code from the page
//!   ([`CodePages::watch`]); backends keep their fast store path off for such pages, so
//!   every store to them is seen ([`CodePages::is_watched`]);
//! - a log of events ([`CodeEvent`]): a page became watched (every other vCPU must stop
//!   fast stores to it), or a watched page was written (every other vCPU must drop what
//!   it decoded there). Each backend reads the events since its last look before it runs
//!   ([`CodePages::events_since`]). The log keeps the last [`LOG_LEN`] events; a reader
//!   that fell further behind is told so and drops everything it cached.
//!
//! Host memory is one bit per RAM page and a fixed log, whatever the guest does.

use alloc::vec::Vec;

/// Events the log keeps.
pub const LOG_LEN: usize = 1024;

/// What happened to a page, and which reader did it (readers skip their own events).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeEvent {
    /// Reader `by` decoded code from guest-physical page number `page`, which was not
    /// watched before: the others must no longer store to it without looking.
    Watched {
        /// Guest-physical page number (address / 4096).
        page: u64,
        /// The reader that watches it.
        by: u32,
    },
    /// Reader `by` stored to the watched page `page`: the others must drop what they
    /// decoded from it.
    Written {
        /// Guest-physical page number (address / 4096).
        page: u64,
        /// The reader that wrote.
        by: u32,
    },
}

/// The events a reader has not seen yet.
#[derive(Debug)]
pub enum CodeEvents<'a> {
    /// These, oldest first (two slices: the log wraps around).
    Some(&'a [CodeEvent], &'a [CodeEvent]),
    /// More happened than the log keeps: the reader must treat every page as written
    /// and watched (drop its decoded code and its fast store paths).
    Overflow,
}

/// The shared record (see the module documentation). It lives in
/// [`crate::mmu::memory::GuestMemory`], sized by its RAM.
#[derive(Clone, Debug)]
pub struct CodePages {
    /// One bit per RAM page, indexed by the page's position among all RAM pages in
    /// address order.
    watched: Vec<u64>,
    /// The last [`LOG_LEN`] events: event `n` (counting from 0) is at `n % LOG_LEN`.
    log: Vec<CodeEvent>,
    /// Events ever logged.
    seq: u64,
    /// Reader identities handed out.
    readers: u32,
}

impl Default for CodePages {
    fn default() -> Self {
        CodePages {
            watched: Vec::new(),
            log: alloc::vec![CodeEvent::Watched { page: 0, by: u32::MAX }; LOG_LEN],
            seq: 0,
            readers: 0,
        }
    }
}

impl CodePages {
    /// Make room for `pages` RAM pages (RAM was added); new pages are not watched.
    pub(crate) fn resize(&mut self, pages: usize) {
        self.watched.resize(pages.div_ceil(64), 0);
    }

    /// A new reader's identity (each vCPU backend that caches code takes one).
    pub fn register(&mut self) -> u32 {
        self.readers = self.readers.wrapping_add(1);
        self.readers
    }

    /// Events ever logged: a reader that saw this many has nothing new to look at.
    #[inline(always)]
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Whether the page at position `slot` may hold decoded code.
    #[inline]
    pub fn is_watched(&self, slot: usize) -> bool {
        self.watched
            .get(slot / 64)
            .is_some_and(|w| w & (1 << (slot % 64)) != 0)
    }

    /// Reader `by` decoded code from page number `page` (at position `slot`): watch it,
    /// and tell the others if it was not watched yet.
    pub fn watch(&mut self, slot: usize, page: u64, by: u32) {
        let Some(word) = self.watched.get_mut(slot / 64) else {
            return;
        };
        let bit = 1 << (slot % 64);
        if *word & bit == 0 {
            *word |= bit;
            self.push(CodeEvent::Watched { page, by });
        }
    }

    /// Reader `by` stored to the watched page `page` (at position `slot`): tell the
    /// others to drop what they decoded there. The page stays watched if `still_cached`
    /// (the writer keeps code of its own on it), else it is watched no more until some
    /// reader decodes from it again.
    pub fn written(&mut self, slot: usize, page: u64, by: u32, still_cached: bool) {
        let Some(word) = self.watched.get_mut(slot / 64) else {
            return;
        };
        let bit = 1 << (slot % 64);
        if still_cached {
            *word |= bit;
        } else {
            *word &= !bit;
        }
        self.push(CodeEvent::Written { page, by });
    }

    /// Everything every reader may have cached is void (the host rewrote guest memory):
    /// every page counts as written once.
    pub fn forget_all(&mut self) {
        self.watched.fill(0);
        // A jump of a whole log length: every reader overflows.
        self.seq = self.seq.wrapping_add(LOG_LEN as u64 + 1);
    }

    fn push(&mut self, event: CodeEvent) {
        let at = (self.seq % LOG_LEN as u64) as usize;
        if let Some(slot) = self.log.get_mut(at) {
            *slot = event;
        }
        self.seq = self.seq.wrapping_add(1);
    }

    /// The events after the first `seen` (a reader's count from [`CodePages::seq`] at its
    /// last look).
    pub fn events_since(&self, seen: u64) -> CodeEvents<'_> {
        let new = self.seq.wrapping_sub(seen);
        if new > LOG_LEN as u64 {
            return CodeEvents::Overflow;
        }
        if new == 0 {
            return CodeEvents::Some(&[], &[]);
        }
        let start = (seen % LOG_LEN as u64) as usize;
        let end = start + new as usize;
        if end <= LOG_LEN {
            CodeEvents::Some(&self.log[start..end], &[])
        } else {
            CodeEvents::Some(&self.log[start..], &self.log[..end - LOG_LEN])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(c: &CodePages, seen: u64) -> Vec<CodeEvent> {
        match c.events_since(seen) {
            CodeEvents::Some(a, b) => a.iter().chain(b).copied().collect(),
            CodeEvents::Overflow => panic!("overflow"),
        }
    }

    #[test]
    fn watch_write_and_read_back() {
        let mut c = CodePages::default();
        c.resize(100);
        let (a, b) = (c.register(), c.register());
        assert_ne!(a, b);
        assert!(!c.is_watched(70));
        c.watch(70, 0x1234, a);
        c.watch(70, 0x1234, b);
        assert!(c.is_watched(70));
        assert_eq!(c.seq(), 1, "watching a watched page tells nobody");
        c.written(70, 0x1234, b, false);
        assert!(!c.is_watched(70));
        c.watch(70, 0x1234, a);
        c.written(70, 0x1234, b, true);
        assert!(c.is_watched(70), "the writer keeps code there");
        assert_eq!(
            events(&c, 0),
            [
                CodeEvent::Watched {
                    page: 0x1234,
                    by: a
                },
                CodeEvent::Written {
                    page: 0x1234,
                    by: b
                },
                CodeEvent::Watched {
                    page: 0x1234,
                    by: a
                },
                CodeEvent::Written {
                    page: 0x1234,
                    by: b
                },
            ]
        );
        assert_eq!(events(&c, 3).len(), 1);
        assert!(events(&c, 4).is_empty());
        // Pages beyond RAM are ignored.
        c.watch(1000, 5, a);
        assert!(!c.is_watched(1000));
    }

    #[test]
    fn the_log_wraps_and_overflows() {
        let mut c = CodePages::default();
        c.resize(1);
        for i in 0..LOG_LEN as u64 + 10 {
            c.watch(0, i, 1);
            c.written(0, i, 1, false);
        }
        let seq = c.seq();
        let last = events(&c, seq - 20);
        assert_eq!(last.len(), 20);
        assert_eq!(
            last[19],
            CodeEvent::Written {
                page: LOG_LEN as u64 + 9,
                by: 1
            }
        );
        assert!(matches!(
            c.events_since(seq - LOG_LEN as u64 - 1),
            CodeEvents::Overflow
        ));
        assert_eq!(events(&c, seq - LOG_LEN as u64).len(), LOG_LEN);
        c.forget_all();
        assert!(matches!(c.events_since(seq), CodeEvents::Overflow));
    }
}
