//! Exit statistics: how many exits of each kind, and the host time spent handling them.
//!
//! Counting is a fixed array increment (no allocation on the exit path); timing reads the
//! clock twice per exit and is therefore off unless asked for (`VmConfig::collect_timing`).

use crate::exit::ExitKind;

/// Per-kind exit counts and handling time.
#[derive(Clone, Debug, Default)]
pub struct ExitStats {
    counts: [u64; ExitKind::COUNT],
    time_ns: [u64; ExitKind::COUNT],
}

impl ExitStats {
    /// Count one exit of `kind`.
    #[inline(always)]
    pub fn count(&mut self, kind: ExitKind) {
        self.counts[kind as usize] += 1;
    }

    /// Add host time spent handling an exit of `kind`.
    #[inline(always)]
    pub fn add_time(&mut self, kind: ExitKind, ns: u64) {
        self.time_ns[kind as usize] = self.time_ns[kind as usize].saturating_add(ns);
    }

    /// Exits of `kind` so far.
    pub fn exits(&self, kind: ExitKind) -> u64 {
        self.counts[kind as usize]
    }

    /// Host nanoseconds spent handling exits of `kind` (zero unless timing was on).
    pub fn time_ns(&self, kind: ExitKind) -> u64 {
        self.time_ns[kind as usize]
    }

    /// All exits.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// (kind, count, host ns) for every kind that occurred, most frequent first.
    pub fn rows(&self) -> impl Iterator<Item = (ExitKind, u64, u64)> + '_ {
        let mut order = ExitKind::ALL;
        order.sort_by_key(|k| core::cmp::Reverse(self.counts[*k as usize]));
        order
            .into_iter()
            .filter(|k| self.counts[*k as usize] > 0)
            .map(|k| (k, self.counts[k as usize], self.time_ns[k as usize]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_sorted_and_skip_empty_kinds() {
        let mut s = ExitStats::default();
        s.count(ExitKind::Io);
        s.count(ExitKind::Cpuid);
        s.count(ExitKind::Cpuid);
        s.add_time(ExitKind::Cpuid, 30);
        let rows: alloc::vec::Vec<_> = s.rows().collect();
        assert_eq!(rows, [(ExitKind::Cpuid, 2, 30), (ExitKind::Io, 1, 0)]);
        assert_eq!(s.total(), 3);
    }
}
