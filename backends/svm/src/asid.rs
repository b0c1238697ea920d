//! Address-space identifiers (APM 2 15.16): the TLB tags a guest's translations with
//! its ASID, so a guest whose translations must all go can take a fresh ASID instead
//! of flushing; ASID 0 is the host's.
//!
//! The allocator hands out 1, 2, ... up to the processor's count; when they run out it
//! starts again at 1 and asks for one flush of every ASID (TLB control 1), after which
//! no stale translation is tagged with a reused ASID (the generation scheme of KVM's
//! `new_asid`).
//!
//! The allocator is the processor's: every vCPU on it takes its ASIDs from the same one
//! (shared by the vCPUs a [`crate::SvmHost`] makes), so no two hold the same ASID. A
//! wrap starts a new generation: a vCPU whose ASID is of an older generation takes a
//! fresh one before its next VMRUN, and the first VMRUN after the wrap, whichever vCPU
//! makes it, flushes every ASID ([`AsidAllocator::take_flush`]).

/// One processor's ASIDs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AsidAllocator {
    /// The next ASID to hand out.
    next: u32,
    /// How many ASIDs the processor has (CPUID 0x8000000A EBX); the largest is one less.
    count: u32,
    /// Wraps so far: ASIDs handed out before the last wrap are stale.
    generation: u64,
    /// The allocator wrapped and no VMRUN has flushed every ASID since.
    flush_pending: bool,
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
        (count >= 2).then_some(AsidAllocator {
            next: 1,
            count,
            generation: 0,
            flush_pending: false,
        })
    }

    /// A fresh ASID.
    pub fn allocate(&mut self) -> Asid {
        let flush_all = self.next >= self.count;
        if flush_all {
            self.next = 1;
            self.generation = self.generation.wrapping_add(1);
            self.flush_pending = true;
        }
        let asid = self.next;
        self.next += 1;
        Asid { asid, flush_all }
    }

    /// The current generation: an ASID allocated in another one must not be used.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether the next VMRUN must flush every ASID (the allocator wrapped since the
    /// last such flush); asking clears it, so the caller makes that flush.
    pub fn take_flush(&mut self) -> bool {
        core::mem::take(&mut self.flush_pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrap_starts_a_generation_and_one_flush() {
        let mut a = AsidAllocator::new(3).unwrap();
        assert_eq!((a.allocate().asid, a.allocate().asid), (1, 2));
        assert_eq!(a.generation(), 0);
        assert!(!a.take_flush());
        // Two vCPUs held 1 and 2; the third ASID wraps: a new generation, whose first
        // VMRUN (by whichever vCPU) flushes every ASID, once.
        assert_eq!(a.allocate().asid, 1);
        assert_eq!(a.generation(), 1);
        assert!(a.take_flush());
        assert!(!a.take_flush());
    }

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
