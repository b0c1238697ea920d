//! SSE-family floating-point instructions: arithmetic, compares, conversions, rounding,
//! dot products, horizontal operations, and MXCSR (LDMXCSR/STMXCSR), on the software
//! IEEE implementation of [`crate::arith::softfloat`]. One family per file.

use crate::decode::{Handler, Op};

/// The handler for `op` if this family implements it.
pub fn select(op: &Op) -> Option<Handler> {
    let _ = op;
    None
}
