//! The parts every table shares: the 36-byte system description table header, checksums,
//! the Generic Address Structure, and the root tables (RSDP, RSDT, XSDT).

use super::AcpiConfig;
use alloc::vec::Vec;

/// Length of the system description table header.
pub const HEADER_LEN: usize = 36;
/// Offset of the checksum byte in a table header.
const CHECKSUM_OFFSET: usize = 9;
/// Creator ID of every table: the program that wrote them.
pub const CREATOR_ID: [u8; 4] = *b"OPSV";
/// Creator revision.
pub const CREATOR_REVISION: u32 = 1;

/// The two's-complement byte that makes `bytes` sum to zero once it is added.
pub fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |s, &b| s.wrapping_add(b)))
}

/// A table: its header, then the body appended by the caller; [`Table::finish`] sets the
/// length and checksum.
pub struct Table {
    bytes: Vec<u8>,
}

impl Table {
    /// A table with `signature` and `revision` and the configuration's OEM fields.
    pub fn new(signature: &[u8; 4], revision: u8, config: &AcpiConfig) -> Table {
        let mut bytes = Vec::with_capacity(256);
        bytes.extend_from_slice(signature);
        bytes.extend_from_slice(&[0; 4]); // length, set by finish
        bytes.push(revision);
        bytes.push(0); // checksum, set by finish
        bytes.extend_from_slice(&config.oem_id);
        bytes.extend_from_slice(&config.oem_table_id);
        bytes.extend_from_slice(&config.oem_revision.to_le_bytes());
        bytes.extend_from_slice(&CREATOR_ID);
        bytes.extend_from_slice(&CREATOR_REVISION.to_le_bytes());
        Table { bytes }
    }

    /// Append bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }
    /// Append a byte.
    pub fn u8(&mut self, v: u8) {
        self.bytes.push(v);
    }
    /// Append a little-endian u16.
    pub fn u16(&mut self, v: u16) {
        self.extend(&v.to_le_bytes());
    }
    /// Append a little-endian u32.
    pub fn u32(&mut self, v: u32) {
        self.extend(&v.to_le_bytes());
    }
    /// Append a little-endian u64.
    pub fn u64(&mut self, v: u64) {
        self.extend(&v.to_le_bytes());
    }
    /// Append a Generic Address Structure.
    pub fn gas(&mut self, gas: Gas) {
        self.extend(&gas.to_bytes());
    }
    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
    /// Whether only the header is there (never: the header is always written).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The finished table: length and checksum filled in.
    pub fn finish(mut self) -> Vec<u8> {
        let len = self.bytes.len() as u32;
        self.bytes[4..8].copy_from_slice(&len.to_le_bytes());
        self.bytes[CHECKSUM_OFFSET] = checksum(&self.bytes);
        self.bytes
    }
}

/// A Generic Address Structure (ACPI 6.5, section 5.2.3.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gas {
    /// Address space: 0 system memory, 1 system I/O.
    pub space: u8,
    /// Register width in bits.
    pub bit_width: u8,
    /// Bit offset of the register.
    pub bit_offset: u8,
    /// Access size: 0 undefined, 1 byte, 2 word, 3 dword, 4 qword.
    pub access_size: u8,
    /// The address.
    pub address: u64,
}

impl Gas {
    /// A register block of `len` bytes at I/O port `port`, accessed `access_size` at a
    /// time (1 byte, 2 word, 3 dword).
    pub fn io(port: u16, len: u8, access_size: u8) -> Gas {
        Gas {
            space: 1,
            bit_width: len.wrapping_mul(8),
            bit_offset: 0,
            access_size,
            address: u64::from(port),
        }
    }

    /// The 12 bytes of the structure.
    pub fn to_bytes(self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[0] = self.space;
        b[1] = self.bit_width;
        b[2] = self.bit_offset;
        b[3] = self.access_size;
        b[4..].copy_from_slice(&self.address.to_le_bytes());
        b
    }
}

/// The RSDT: 32-bit pointers to every other table but the FACS and DSDT.
pub fn rsdt(config: &AcpiConfig, tables: &[u64]) -> Vec<u8> {
    let mut t = Table::new(b"RSDT", 1, config);
    for &addr in tables {
        // The builder places every table below 4 GiB (it refuses an area above).
        t.u32(addr as u32);
    }
    t.finish()
}

/// The XSDT: 64-bit pointers to the same tables.
pub fn xsdt(config: &AcpiConfig, tables: &[u64]) -> Vec<u8> {
    let mut t = Table::new(b"XSDT", 1, config);
    for &addr in tables {
        t.u64(addr);
    }
    t.finish()
}

/// Length of an ACPI 2.0+ RSDP.
pub const RSDP_LEN: usize = 36;

/// The RSDP (revision 2): the 20-byte ACPI 1.0 part with its checksum, then the length,
/// the XSDT address and the extended checksum over all 36 bytes.
pub fn rsdp(config: &AcpiConfig, rsdt: u64, xsdt: u64) -> [u8; RSDP_LEN] {
    let mut b = [0u8; RSDP_LEN];
    b[0..8].copy_from_slice(b"RSD PTR ");
    b[9..15].copy_from_slice(&config.oem_id);
    b[15] = 2;
    b[16..20].copy_from_slice(&(rsdt as u32).to_le_bytes());
    b[20..24].copy_from_slice(&(RSDP_LEN as u32).to_le_bytes());
    b[24..32].copy_from_slice(&xsdt.to_le_bytes());
    b[8] = checksum(&b[..20]);
    b[32] = checksum(&b);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |s, &x| s.wrapping_add(x))
    }

    #[test]
    fn tables_and_rsdp_checksum_to_zero() {
        let config = AcpiConfig::new(1);
        let t = xsdt(&config, &[0x1234_5678_9abc, 0xe0100]);
        assert_eq!(t.len(), HEADER_LEN + 16);
        assert_eq!(u32::from_le_bytes(t[4..8].try_into().unwrap()), 52);
        assert_eq!(sum(&t), 0);
        assert_eq!(&t[10..16], b"OPSVSR");
        let r = rsdp(&config, 0xe0040, 0xe0080);
        assert_eq!(sum(&r[..20]), 0);
        assert_eq!(sum(&r), 0);
        assert_eq!(r[15], 2);
    }

    #[test]
    fn gas_layout() {
        assert_eq!(
            Gas::io(0x608, 4, 3).to_bytes(),
            [1, 32, 0, 3, 0x08, 0x06, 0, 0, 0, 0, 0, 0]
        );
    }
}
