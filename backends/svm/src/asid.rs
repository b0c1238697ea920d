//! Address-space identifiers (APM 2 15.16): the TLB tags a guest's translations with
//! its ASID, so a guest whose translations must all go can take a fresh ASID instead
//! of flushing; ASID 0 is the host's.
//!
//! The allocator hands out 1, 2, ... up to the processor's count; when they run out it
//! starts again at 1 and asks for one flush of every ASID (TLB control 1), after which
//! no stale translation is tagged with a reused ASID (the generation scheme of KVM's
//! `new_asid`).

/// One processor's ASIDs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AsidAllocator {
    /// The next ASID to hand out.
    next: u32,
    /// How many ASIDs the processor has (CPUID 0x8000000A EBX); the largest is one less.
    count: u32,
}

/// An ASID and whether the TLB must be flushed whole before it is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Asid {
    /// The ASID (1 or more).
    pub asid: u32,
    /// The allocator wrapped around: every ASID's translations must be flushed.
    pub flush_all: bool,
}

impl AsidAllocator {
    /// The allocator of a processor with `count` ASIDs; `None` with fewer than two.
    pub fn new(count: u32) -> Option<AsidAllocator> {
        (count >= 2).then_some(AsidAllocator { next: 1, count })
    }

    /// A fresh ASID.
    pub fn allocate(&mut self) -> Asid {
        let flush_all = self.next >= self.count;
        if flush_all {
            self.next = 1;
        }
        let asid = self.next;
        self.next += 1;
        Asid { asid, flush_all }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asids_run_up_then_wrap_with_a_flush() {
        assert_eq!(AsidAllocator::new(1), None);
        assert_eq!(AsidAllocator::new(0), None);
        // QEMU's 16 ASIDs: 1..=15, then 1 again with a full flush.
        let mut a = AsidAllocator::new(16).unwrap();
        for want in 1..=15 {
            assert_eq!(
                a.allocate(),
                Asid {
                    asid: want,
                    flush_all: false
                }
            );
        }
        assert_eq!(
            a.allocate(),
            Asid {
                asid: 1,
                flush_all: true
            }
        );
        assert_eq!(
            a.allocate(),
            Asid {
                asid: 2,
                flush_all: false
            }
        );
        // Two ASIDs: the guest's is always 1, and every reuse flushes.
        let mut two = AsidAllocator::new(2).unwrap();
        assert_eq!(
            two.allocate(),
            Asid {
                asid: 1,
                flush_all: false
            }
        );
        assert_eq!(
            two.allocate(),
            Asid {
                asid: 1,
                flush_all: true
            }
        );
        assert_eq!(
            two.allocate(),
            Asid {
                asid: 1,
                flush_all: true
            }
        );
    }
}
