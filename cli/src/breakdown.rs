//! `--stats`' breakdowns of the exits, as `perf kvm stat report` gives them: by vCPU, by
//! I/O port and direction, by MSR and access, by MMIO address and direction, by CPUID
//! leaf, each with its count and the host time spent handling it.
//!
//! Counting takes no allocation: each category is a fixed-size open-addressing table
//! ([`Table`], [`SLOTS`] slots, at most [`KEYS`] distinct keys). Keys past that are
//! counted together as "others", so a guest that touches every port or MSR cannot grow
//! the tables; the report prints the most frequent [`TOP`] of each.

use opsvisor_core::exit::Direction;
use opsvisor_core::ops::Gpr;
use opsvisor_core::{Exit, X86Ops};
use std::fmt::Write as _;

/// Slots of each table (a power of two).
pub const SLOTS: usize = 512;
/// Distinct keys a table counts separately, at most (3/4 of the slots, so that a probe
/// ends quickly).
pub const KEYS: usize = SLOTS / 4 * 3;
/// vCPUs counted separately (indices past it count as others).
pub const VCPUS: usize = 256;
/// Rows printed per category.
pub const TOP: usize = 10;

/// Counts and host time by key, in a fixed number of slots.
pub struct Table {
    keys: [u64; SLOTS],
    counts: [u64; SLOTS],
    time_ns: [u64; SLOTS],
    used: usize,
    other_count: u64,
    other_time_ns: u64,
}

/// Where an exit was counted, for the time that follows it.
#[derive(Clone, Copy)]
enum Slot {
    Key(usize),
    Other,
}

impl Table {
    fn new() -> Box<Table> {
        Box::new(Table {
            keys: [0; SLOTS],
            counts: [0; SLOTS],
            time_ns: [0; SLOTS],
            used: 0,
            other_count: 0,
            other_time_ns: 0,
        })
    }

    /// Count one occurrence of `key`.
    #[inline]
    fn count(&mut self, key: u64) -> Slot {
        let mut i = (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize & (SLOTS - 1);
        loop {
            if self.counts[i] == 0 {
                if self.used == KEYS {
                    self.other_count += 1;
                    return Slot::Other;
                }
                self.used += 1;
                self.keys[i] = key;
                self.counts[i] = 1;
                return Slot::Key(i);
            }
            if self.keys[i] == key {
                self.counts[i] += 1;
                return Slot::Key(i);
            }
            i = (i + 1) & (SLOTS - 1);
        }
    }

    fn add_time(&mut self, slot: Slot, ns: u64) {
        match slot {
            Slot::Key(i) => self.time_ns[i] = self.time_ns[i].saturating_add(ns),
            Slot::Other => self.other_time_ns = self.other_time_ns.saturating_add(ns),
        }
    }

    /// (key, count, host ns), most frequent first (equal counts by key).
    pub fn rows(&self) -> Vec<(u64, u64, u64)> {
        let mut rows: Vec<_> = (0..SLOTS)
            .filter(|&i| self.counts[i] > 0)
            .map(|i| (self.keys[i], self.counts[i], self.time_ns[i]))
            .collect();
        rows.sort_by_key(|&(key, count, _)| (std::cmp::Reverse(count), key));
        rows
    }

    /// Exits whose key found no room, and their host time.
    pub fn others(&self) -> (u64, u64) {
        (self.other_count, self.other_time_ns)
    }

    fn total(&self) -> u64 {
        self.counts.iter().sum::<u64>() + self.other_count
    }
}

/// The breakdowns of one run (or of several, across reboots).
pub struct Breakdown {
    vcpu_counts: Box<[u64; VCPUS]>,
    vcpu_time_ns: Box<[u64; VCPUS]>,
    /// Key: port | 1 << 16 for a write.
    pub ports: Box<Table>,
    /// Key: index | 1 << 32 for WRMSR.
    pub msrs: Box<Table>,
    /// Key: gpa << 1 | 1 for a write.
    pub mmio: Box<Table>,
    /// Key: the leaf (EAX).
    pub cpuid: Box<Table>,
    /// The table and slot of the last exit, for its time; the vCPU's index.
    last: Option<(Category, Slot)>,
    last_vcpu: usize,
}

#[derive(Clone, Copy)]
enum Category {
    Ports,
    Msrs,
    Mmio,
    Cpuid,
}

impl Default for Breakdown {
    fn default() -> Self {
        Breakdown {
            vcpu_counts: Box::new([0; VCPUS]),
            vcpu_time_ns: Box::new([0; VCPUS]),
            ports: Table::new(),
            msrs: Table::new(),
            mmio: Table::new(),
            cpuid: Table::new(),
            last: None,
            last_vcpu: VCPUS,
        }
    }
}

impl Breakdown {
    /// Count one exit of vCPU `vcpu`.
    #[inline]
    pub fn exit<B: X86Ops>(&mut self, vcpu: u32, exit: &Exit, cpu: &B) {
        let v = (vcpu as usize).min(VCPUS - 1);
        self.vcpu_counts[v] += 1;
        self.last_vcpu = v;
        self.last = match *exit {
            Exit::Io {
                port, direction, ..
            } => {
                let key = u64::from(port) | u64::from(direction == Direction::Write) << 16;
                Some((Category::Ports, self.ports.count(key)))
            }
            Exit::Rdmsr { index } => Some((Category::Msrs, self.msrs.count(u64::from(index)))),
            Exit::Wrmsr { index, .. } => {
                Some((Category::Msrs, self.msrs.count(u64::from(index) | 1 << 32)))
            }
            Exit::Mmio { gpa, direction, .. } => {
                let key = gpa << 1 | u64::from(direction == Direction::Write);
                Some((Category::Mmio, self.mmio.count(key)))
            }
            Exit::Cpuid => {
                let leaf = cpu.gpr(Gpr::Rax) & 0xffff_ffff;
                Some((Category::Cpuid, self.cpuid.count(leaf)))
            }
            _ => None,
        };
    }

    /// The host time the last exit took to handle.
    #[inline]
    pub fn exit_time(&mut self, ns: u64) {
        if let Some(t) = self.vcpu_time_ns.get_mut(self.last_vcpu) {
            *t = t.saturating_add(ns);
        }
        if let Some((category, slot)) = self.last {
            let table = match category {
                Category::Ports => &mut self.ports,
                Category::Msrs => &mut self.msrs,
                Category::Mmio => &mut self.mmio,
                Category::Cpuid => &mut self.cpuid,
            };
            table.add_time(slot, ns);
        }
    }

    /// Exits counted per vCPU: (index, count, host ns) for every vCPU that exited (the
    /// last index also counts every vCPU past it).
    pub fn vcpus(&self) -> Vec<(usize, u64, u64)> {
        (0..VCPUS)
            .filter(|&i| self.vcpu_counts[i] > 0)
            .map(|i| (i, self.vcpu_counts[i], self.vcpu_time_ns[i]))
            .collect()
    }

    /// The report: one section per category that has exits, `perf kvm stat report`'s
    /// columns (count, share of the category, host time, time per exit).
    pub fn report(&self) -> String {
        let mut out = String::new();
        let vcpus = self.vcpus();
        let total: u64 = vcpus.iter().map(|v| v.1).sum();
        if total > 0 {
            header(&mut out, "vCPU", vcpus.len(), vcpus.len());
            for (i, count, ns) in &vcpus {
                row(&mut out, &i.to_string(), *count, total, *ns);
            }
        }
        let sections: [Section; 4] = [
            ("I/O port", &self.ports, |k| {
                let dir = if k >> 16 & 1 == 1 { "write" } else { "read" };
                format!("{:#x}:{dir}", k & 0xffff)
            }),
            ("MSR", &self.msrs, |k| {
                let op = if k >> 32 & 1 == 1 { "wrmsr" } else { "rdmsr" };
                format!("{:#x}:{op}", k & 0xffff_ffff)
            }),
            ("MMIO address", &self.mmio, |k| {
                let dir = if k & 1 == 1 { "write" } else { "read" };
                format!("{:#x}:{dir}", k >> 1)
            }),
            ("CPUID leaf", &self.cpuid, |k| format!("{k:#x}")),
        ];
        for (name, table, label) in sections {
            let total = table.total();
            if total == 0 {
                continue;
            }
            let rows = table.rows();
            let (others, others_ns) = table.others();
            header(&mut out, name, rows.len().min(TOP), rows.len());
            for &(key, count, ns) in rows.iter().take(TOP) {
                row(&mut out, &label(key), count, total, ns);
            }
            let rest: (u64, u64) = rows
                .iter()
                .skip(TOP)
                .fold((others, others_ns), |(c, t), r| (c + r.1, t + r.2));
            if rest.0 > 0 {
                row(&mut out, "others", rest.0, total, rest.1);
            }
        }
        out
    }
}

/// A category of the report: its title, its table, and how a key reads.
type Section<'a> = (&'a str, &'a Table, fn(u64) -> String);

fn header(out: &mut String, what: &str, shown: usize, of: usize) {
    let title = if shown < of {
        format!(
            "{what} (top {shown} of {of}{})",
            if of >= KEYS { "+" } else { "" }
        )
    } else {
        String::from(what)
    };
    let _ = writeln!(
        out,
        "{title:<24} {:>12} {:>8} {:>14} {:>10}",
        "count", "share", "host time", "per exit"
    );
}

fn row(out: &mut String, label: &str, count: u64, total: u64, ns: u64) {
    let _ = writeln!(
        out,
        "  {label:<22} {count:>12} {:>7.2}% {:>11.3} ms {:>7} ns",
        count as f64 * 100.0 / total.max(1) as f64,
        ns as f64 / 1e6,
        ns / count.max(1)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_count_by_key_and_keep_their_bound() {
        let mut t = Table::new();
        for _ in 0..3 {
            t.count(7);
        }
        let s = t.count(9);
        t.add_time(s, 40);
        assert_eq!(t.rows(), [(7, 3, 0), (9, 1, 40)]);
        // Many more keys than slots: the first KEYS get rows, the rest are "others".
        let mut t = Table::new();
        for key in 0..10_000u64 {
            t.count(key << 12);
            t.count(key << 12);
        }
        assert_eq!(t.rows().len(), KEYS);
        assert_eq!(t.others().0, 2 * (10_000 - KEYS as u64));
        assert_eq!(t.total(), 20_000);
    }
}
