//! Shrinking a case that differs to the smallest one that still differs.
//!
//! Greedy, as delta debugging's one-at-a-time phase: drop each item in turn (last
//! first, so setup items before a failing instruction are tried after it), keeping a
//! removal whenever the smaller case still differs, until a pass removes nothing; then
//! zero each register, the optional flags and control bits and the data seed. Every try
//! runs the case on both backends, so the number of tries is bounded.

use crate::case::Case;
use opsvisor_core::ops::Gpr;

/// At most this many candidate cases are run.
pub const MAX_TRIES: usize = 400;

/// The smallest case found that still satisfies `differs`, and how many candidates were
/// run. `differs` runs a candidate on both backends.
pub fn minimize(case: &Case, mut differs: impl FnMut(&Case) -> bool) -> (Case, usize) {
    let mut best = case.clone();
    let mut tries = 0;
    let mut attempt = |candidate: Case, best: &mut Case, tries: &mut usize| -> bool {
        if *tries >= MAX_TRIES {
            return false;
        }
        *tries += 1;
        if differs(&candidate) {
            *best = candidate;
            true
        } else {
            false
        }
    };
    loop {
        let mut removed = false;
        let mut i = best.items.len();
        while i > 0 {
            i -= 1;
            let mut candidate = best.clone();
            candidate.items.remove(i);
            if attempt(candidate, &mut best, &mut tries) {
                removed = true;
            }
        }
        if !removed || tries >= MAX_TRIES {
            break;
        }
    }
    for reg in Gpr::ALL {
        // RBX and RSP are the environment's, whatever the case says.
        if matches!(reg, Gpr::Rbx | Gpr::Rsp) || best.gprs[reg as usize] == 0 {
            continue;
        }
        let mut candidate = best.clone();
        candidate.gprs[reg as usize] = 0;
        attempt(candidate, &mut best, &mut tries);
    }
    let simplifications: [fn(&mut Case); 5] = [
        |c| c.rflags = 0,
        |c| c.cr0 = 0,
        |c| c.cr4 = 0,
        |c| c.efer = 0,
        |c| c.seed = 0,
    ];
    for simplify in simplifications {
        let mut candidate = best.clone();
        simplify(&mut candidate);
        if candidate != best {
            attempt(candidate, &mut best, &mut tries);
        }
    }
    (best, tries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::{Item, Mode};
    use alloc::vec;

    #[test]
    fn keeps_only_what_the_difference_needs() {
        // "Differs" when the case holds a CPUID and RCX is nonzero.
        let cpuid = Item::Insn(vec![0x0f, 0xa2]);
        let case = Case {
            mode: Mode::Long64,
            user: false,
            gprs: [5; 16],
            rflags: 0xcd5,
            cr0: 2,
            cr4: 8,
            efer: 1,
            seed: 9,
            fpu_seed: 0x5eed,
            items: vec![
                Item::Insn(vec![0x90]),
                cpuid.clone(),
                Item::Insn(vec![0x48, 0x01, 0xc8]),
                Item::Insn(vec![0xf8]),
            ],
        };
        let needle = cpuid.clone();
        let (small, tries) = minimize(&case, |c| {
            c.items.contains(&needle) && c.gprs[Gpr::Rcx as usize] != 0
        });
        assert_eq!(small.items, vec![cpuid]);
        assert_eq!(small.gprs[Gpr::Rcx as usize], 5);
        assert_eq!(small.gprs[Gpr::Rax as usize], 0);
        assert_eq!(
            (small.rflags, small.cr0, small.cr4, small.efer, small.seed),
            (0, 0, 0, 0, 0)
        );
        assert!(tries <= MAX_TRIES);
    }

    #[test]
    fn the_number_of_tries_is_bounded() {
        let case = Case {
            mode: Mode::Real,
            user: false,
            gprs: [1; 16],
            rflags: 0,
            cr0: 0,
            cr4: 0,
            efer: 0,
            seed: 0,
            fpu_seed: 0,
            items: vec![Item::Insn(vec![0x90]); 64],
        };
        let mut runs = 0;
        // Always differs: every removal is kept, yet the count stays bounded.
        let (small, tries) = minimize(&case, |_| {
            runs += 1;
            true
        });
        assert!(small.items.is_empty());
        assert_eq!(runs, tries);
        assert!(tries <= MAX_TRIES);
    }
}
