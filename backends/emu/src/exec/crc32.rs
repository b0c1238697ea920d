//! CRC32 (SSE4.2): accumulate a CRC-32C of the source into the low 32 bits of the
//! destination.
//!
//! The polynomial is 0x11EDC6F41 (Castagnoli) in its bit-reflected form, 0x82F63B78: bit 0
//! of each source byte is the highest-order coefficient. The instruction applies neither
//! the usual initial inversion nor the final one (software does), bytes are taken from the
//! least significant up, and the 32-bit result is zero-extended into the destination for
//! both the r32 and the r64 forms. No flags change.
//!
//! CPUID enumerates CRC32 with SSE4.2, which also promises the SSE4.2 vector instructions
//! the emulator lacks, so the CPU model does not report it; a guest that uses CRC32 anyway
//! gets the instruction executed rather than #UD.

use super::rd;
use crate::cpu::Cpu;
use crate::decode::Op;
use crate::exception::Ex;
use opsvisor_core::mmu::memory::GuestMemory;

/// The reflected Castagnoli polynomial.
const POLY: u32 = 0x82f6_3b78;

/// Byte-at-a-time lookup table: the CRC update of each byte value on a zero CRC.
const TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut n = 0;
    while n < 256 {
        let mut crc = n as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ POLY
            } else {
                crc >> 1
            };
            bit += 1;
        }
        t[n] = crc;
        n += 1;
    }
    t
};

/// Accumulate the low `size` bytes of `data` (least significant first) into `crc`.
pub fn crc32c(crc: u32, data: u64, size: u32) -> u32 {
    let mut crc = crc;
    for k in 0..size.min(8) {
        let byte = (data >> (8 * k)) as u8;
        crc = (crc >> 8) ^ TABLE[usize::from(crc as u8 ^ byte)];
    }
    crc
}

/// CRC32 r32/r64, r/m8|16|32|64.
pub fn crc32(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    let src_size = u32::from(op.size1);
    let src = rd(c, mem, op, 1, src_size)?;
    let crc = crc32c(c.get(op.r[0], 4) as u32, src, src_size);
    // A 64-bit write of the zero-extended result, for the r32 and r64 forms alike.
    c.set(op.r[0], 8, u64::from(crc));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::crc32c;

    /// Bit-at-a-time reference straight from the definition, for the table.
    fn bitwise(mut crc: u32, data: &[u8]) -> u32 {
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ super::POLY
                } else {
                    crc >> 1
                };
            }
        }
        crc
    }

    #[test]
    fn standard_check_value() {
        // The published CRC-32C check value: "123456789" with the initial and final
        // inversions software applies around the instruction.
        let mut crc = !0u32;
        for &b in b"123456789" {
            crc = crc32c(crc, u64::from(b), 1);
        }
        assert_eq!(!crc, 0xe306_9283);
    }

    #[test]
    fn wide_sources_are_bytes_from_the_least_significant_up() {
        let v = 0xdead_beef_0bad_f00du64;
        for size in [1u32, 2, 4, 8] {
            let bytes = &v.to_le_bytes()[..size as usize];
            assert_eq!(crc32c(0x1234_5678, v, size), bitwise(0x1234_5678, bytes));
        }
    }
}
