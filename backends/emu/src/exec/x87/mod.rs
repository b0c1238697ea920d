//! The x87 floating-point unit: loads and stores of every format, arithmetic, compares,
//! FXAM, the control and status words, the environment (FLDENV/FSTENV/FSAVE/FRSTOR) and
//! FXSAVE/FXRSTOR. One family per file.

use crate::decode::{Handler, Op};

/// The handler for `op` if this family implements it.
pub fn select(op: &Op) -> Option<Handler> {
    let _ = op;
    None
}
