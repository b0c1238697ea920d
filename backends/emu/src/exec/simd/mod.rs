//! MMX and SSE-family instructions that are not floating-point arithmetic: data movement,
//! integer arithmetic, logic, shifts, shuffles, packs, compares, SSE4.2 string compares,
//! MMX state (EMMS). One family per file.

use crate::decode::{Handler, Op};

/// The handler for `op` if this family implements it.
pub fn select(op: &Op) -> Option<Handler> {
    let _ = op;
    None
}
