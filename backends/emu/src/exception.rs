//! How an instruction stops short of retiring: an exception for the guest, or an exit to
//! the core. Exception vectors and their classes (SDM 3A 7.3, table 7-4 and 7-5).

/// Why an instruction did not retire normally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ex {
    /// An exception to deliver to the guest at the instruction (CR2 already set for #PF),
    /// packed (see [`Fault`]) so that handler results fit in two registers.
    Fault(Fault),
    /// Leave `run` with the exit stored in [`crate::cpu::Cpu::exit`]; the instruction has
    /// not retired (intercepts, MMIO reads, fetches from outside RAM, emulation failures).
    /// The exit itself is kept out of this type so handler results fit in registers.
    Exit,
}

/// An exception: vector in bits 0-7, bit 8 set when an error code follows in bits 32-63.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault(u64);

impl Fault {
    /// Pack a vector and an optional error code.
    #[inline]
    pub const fn new(vector: u8, error_code: Option<u32>) -> Fault {
        match error_code {
            Some(ec) => Fault(vector as u64 | 1 << 8 | (ec as u64) << 32),
            None => Fault(vector as u64),
        }
    }
    /// The vector.
    #[inline]
    pub const fn vector(self) -> u8 {
        self.0 as u8
    }
    /// The error code, if any.
    #[inline]
    pub const fn error_code(self) -> Option<u32> {
        if self.0 & 1 << 8 != 0 {
            Some((self.0 >> 32) as u32)
        } else {
            None
        }
    }
}

/// #DE.
pub const DE: u8 = 0;
/// #DB.
pub const DB: u8 = 1;
/// NMI.
pub const NMI: u8 = 2;
/// #BP.
pub const BP: u8 = 3;
/// #OF.
pub const OF: u8 = 4;
/// #BR (BOUND range exceeded).
pub const BR: u8 = 5;
/// #UD.
pub const UD: u8 = 6;
/// #NM.
pub const NM: u8 = 7;
/// #DF.
pub const DF: u8 = 8;
/// #TS.
pub const TS: u8 = 10;
/// #NP.
pub const NP: u8 = 11;
/// #SS.
pub const SS: u8 = 12;
/// #GP vector.
pub const GP_VEC: u8 = 13;
/// #PF.
pub const PF: u8 = 14;
/// #MF (x87 floating-point error).
pub const MF: u8 = 16;
/// #AC.
pub const AC: u8 = 17;
/// #XM (SIMD floating-point exception).
pub const XM: u8 = 19;

/// #GP(error code).
#[allow(non_snake_case)]
#[inline]
pub fn GP(ec: u32) -> Ex {
    Ex::Fault(Fault::new(GP_VEC, Some(ec)))
}

/// An exception without an error code.
#[inline]
pub fn fault(vector: u8) -> Ex {
    Ex::Fault(Fault::new(vector, None))
}

/// An exception with an error code.
#[inline]
pub fn fault_ec(vector: u8, ec: u32) -> Ex {
    Ex::Fault(Fault::new(vector, Some(ec)))
}

/// #UD.
#[inline]
pub fn ud() -> Ex {
    fault(UD)
}

/// Whether `vector` pushes an error code when raised as an exception.
pub fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// Contributory exceptions (table 7-3).
fn contributory(vector: u8) -> bool {
    matches!(vector, 0 | 10..=13)
}

/// What a fault raised while delivering `first` turns into (table 7-5): `Some(#DF)`,
/// `None` for a triple fault, or the second fault itself to deliver serially.
pub fn combine(first: u8, second: u8) -> Option<u8> {
    if first == DF {
        return None;
    }
    let df = (contributory(first) && contributory(second))
        || (first == PF && (second == PF || contributory(second)));
    Some(if df { DF } else { second })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn double_fault_classes() {
        assert_eq!(combine(PF, PF), Some(DF));
        assert_eq!(combine(GP_VEC, NP), Some(DF));
        assert_eq!(combine(DB, PF), Some(PF));
        assert_eq!(combine(PF, UD), Some(UD));
        assert_eq!(combine(DF, GP_VEC), None);
        assert!(has_error_code(GP_VEC) && !has_error_code(UD));
    }
}
