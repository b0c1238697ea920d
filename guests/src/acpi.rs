//! ACPI tables as an operating system finds them without help from a boot loader: the
//! RSDP found by scanning the BIOS area, the root tables (RSDT, XSDT) and the tables they
//! point at, each read straight from (identity-mapped) physical memory, and `\_S5` read
//! out of the DSDT's AML.

/// Where BIOS-era operating systems scan for the RSDP: the BIOS read-only area.
pub const RSDP_SCAN: core::ops::Range<u64> = 0xE_0000..0x10_0000;
/// The length of a system description table's header.
pub const HEADER_LEN: usize = 36;
/// The longest table this module reads (a bound against a corrupt length field).
const MAX_TABLE_LEN: u32 = 1 << 20;

/// The bytes at physical `addr`, `len` of them.
pub fn phys(addr: u64, len: usize) -> &'static [u8] {
    // SAFETY: the boot tables identity-map the first 4 GiB, and callers pass addresses
    // below 4 GiB that firmware said hold tables (RAM or ROM, never device registers);
    // nothing in the guest writes them while the slice lives.
    unsafe { core::slice::from_raw_parts(addr as usize as *const u8, len) }
}

/// The 8-bit sum of `bytes` (zero for a valid checksum).
pub fn sum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |s, &b| s.wrapping_add(b))
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from(le32(b, at)) | u64::from(le32(b, at + 4)) << 32
}

/// The Root System Description Pointer.
#[derive(Clone, Copy, Debug)]
pub struct Rsdp {
    /// Where it was found.
    pub addr: u64,
    /// 0 for ACPI 1.0 (20 bytes, RSDT only), 2 and up for ACPI 2.0+ (XSDT).
    pub revision: u8,
    /// The RSDT's address.
    pub rsdt: u32,
    /// The XSDT's address (revision 2 and up).
    pub xsdt: Option<u64>,
    /// The OEM ID.
    pub oem_id: [u8; 6],
}

/// Scan `range` in 16-byte steps for "RSD PTR " whose ACPI 1.0 checksum (the first 20
/// bytes) and, from revision 2, extended checksum (the whole structure) are both zero,
/// as Linux's `acpi_scan_for_rsdp` does. Returns the first match.
pub fn scan_rsdp(range: core::ops::Range<u64>) -> Option<Rsdp> {
    let mut at = range.start & !15;
    while at + 20 <= range.end {
        let b = phys(at, 20);
        if &b[..8] == b"RSD PTR " && sum(b) == 0 {
            let revision = b[15];
            let mut xsdt = None;
            let mut valid = true;
            if revision >= 2 {
                let full = phys(at, 36);
                let len = le32(full, 20);
                valid = (36..=4096).contains(&len)
                    && at + u64::from(len) <= range.end
                    && sum(phys(at, len as usize)) == 0;
                xsdt = Some(le64(full, 24));
            }
            if valid {
                let mut oem_id = [0u8; 6];
                oem_id.copy_from_slice(&b[9..15]);
                return Some(Rsdp {
                    addr: at,
                    revision,
                    rsdt: le32(b, 16),
                    xsdt,
                    oem_id,
                });
            }
        }
        at += 16;
    }
    None
}

/// A system description table in memory.
#[derive(Clone, Copy, Debug)]
pub struct Sdt {
    /// Its physical address.
    pub addr: u64,
    /// The whole table, header included (its length field's worth of bytes).
    pub bytes: &'static [u8],
}

impl Sdt {
    /// The table at `addr`, if its length field is at least a header and at most 1 MiB.
    pub fn at(addr: u64) -> Option<Sdt> {
        if addr == 0 || addr >= 1 << 32 {
            return None;
        }
        let len = le32(phys(addr, HEADER_LEN), 4);
        if !(HEADER_LEN as u32..=MAX_TABLE_LEN).contains(&len) || addr + u64::from(len) > 1 << 32 {
            return None;
        }
        Some(Sdt {
            addr,
            bytes: phys(addr, len as usize),
        })
    }
    /// The signature.
    pub fn signature(&self) -> [u8; 4] {
        [self.bytes[0], self.bytes[1], self.bytes[2], self.bytes[3]]
    }
    /// The signature as text, for messages.
    pub fn name(&self) -> &'static str {
        core::str::from_utf8(&self.bytes[..4]).unwrap_or("????")
    }
    /// The length field.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
    /// Never: a table has at least its header.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
    /// The revision byte.
    pub fn revision(&self) -> u8 {
        self.bytes[8]
    }
    /// Whether the bytes sum to zero.
    pub fn checksum_ok(&self) -> bool {
        sum(self.bytes) == 0
    }
    /// The body after the header.
    pub fn body(&self) -> &'static [u8] {
        &self.bytes[HEADER_LEN..]
    }
    /// A little-endian u8/u16/u32/u64 at `at` from the table's start, 0 past its end.
    pub fn u8(&self, at: usize) -> u8 {
        self.bytes.get(at).copied().unwrap_or(0)
    }
    /// See [`Sdt::u8`].
    pub fn u16(&self, at: usize) -> u16 {
        if at + 2 <= self.len() {
            le16(self.bytes, at)
        } else {
            0
        }
    }
    /// See [`Sdt::u8`].
    pub fn u32(&self, at: usize) -> u32 {
        if at + 4 <= self.len() {
            le32(self.bytes, at)
        } else {
            0
        }
    }
    /// See [`Sdt::u8`].
    pub fn u64(&self, at: usize) -> u64 {
        if at + 8 <= self.len() {
            le64(self.bytes, at)
        } else {
            0
        }
    }
    /// A Generic Address Structure at `at`, if the table is long enough to hold it.
    pub fn gas(&self, at: usize) -> Option<Gas> {
        (at + 12 <= self.len()).then(|| Gas {
            space: self.bytes[at],
            bit_width: self.bytes[at + 1],
            bit_offset: self.bytes[at + 2],
            access_size: self.bytes[at + 3],
            address: le64(self.bytes, at + 4),
        })
    }

    /// The table's pointers, if it is a root table: 32-bit entries for "RSDT", 64-bit for
    /// "XSDT" (the entries follow the header).
    pub fn entries(&self) -> impl Iterator<Item = u64> + '_ {
        let width = if &self.signature() == b"XSDT" { 8 } else { 4 };
        self.body().chunks_exact(width).map(move |c| {
            if width == 8 {
                le64(c, 0)
            } else {
                u64::from(le32(c, 0))
            }
        })
    }
}

/// A Generic Address Structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gas {
    /// 0 memory, 1 I/O.
    pub space: u8,
    /// Register width in bits.
    pub bit_width: u8,
    /// Bit offset.
    pub bit_offset: u8,
    /// Access size (1 byte .. 4 qword, 0 undefined).
    pub access_size: u8,
    /// The address.
    pub address: u64,
}

/// FADT field offsets (ACPI 6.5, table 5.9).
#[allow(missing_docs)]
pub mod fadt {
    pub const FIRMWARE_CTRL: usize = 36;
    pub const DSDT: usize = 40;
    pub const SCI_INT: usize = 46;
    pub const SMI_CMD: usize = 48;
    pub const ACPI_ENABLE: usize = 52;
    pub const PM1A_EVT_BLK: usize = 56;
    pub const PM1B_EVT_BLK: usize = 60;
    pub const PM1A_CNT_BLK: usize = 64;
    pub const PM1B_CNT_BLK: usize = 68;
    pub const PM_TMR_BLK: usize = 76;
    pub const GPE0_BLK: usize = 80;
    pub const PM1_EVT_LEN: usize = 88;
    pub const PM1_CNT_LEN: usize = 89;
    pub const PM_TMR_LEN: usize = 91;
    pub const GPE0_BLK_LEN: usize = 92;
    pub const CENTURY: usize = 108;
    pub const IAPC_BOOT_ARCH: usize = 109;
    pub const FLAGS: usize = 112;
    pub const RESET_REG: usize = 116;
    pub const RESET_VALUE: usize = 128;
    pub const X_FIRMWARE_CTRL: usize = 132;
    pub const X_DSDT: usize = 140;
    pub const X_PM1A_EVT_BLK: usize = 148;
    pub const X_PM1A_CNT_BLK: usize = 172;
    pub const X_PM_TMR_BLK: usize = 208;
    /// Flags: the PM timer counts 32 bits.
    pub const TMR_VAL_EXT: u32 = 1 << 8;
    /// Flags: the reset register is supported.
    pub const RESET_REG_SUP: u32 = 1 << 10;
    /// PM1 control: SCI_EN.
    pub const SCI_EN: u16 = 1 << 0;
    /// PM1 control: SLP_EN.
    pub const SLP_EN: u16 = 1 << 13;
    /// PM1 control: the SLP_TYP field's shift.
    pub const SLP_TYP_SHIFT: u32 = 10;
}

/// The ACPI tables as found: the RSDP, the root table used (the XSDT when there is one),
/// and lookup by signature.
#[derive(Clone, Copy, Debug)]
pub struct Tables {
    /// The RSDP.
    pub rsdp: Rsdp,
    /// The RSDT.
    pub rsdt: Sdt,
    /// The XSDT, when the RSDP has one.
    pub xsdt: Option<Sdt>,
}

impl Tables {
    /// Scan for the RSDP and read the root tables it names.
    pub fn find() -> Option<Tables> {
        let rsdp = scan_rsdp(RSDP_SCAN)?;
        let rsdt = Sdt::at(u64::from(rsdp.rsdt))?;
        let xsdt = rsdp.xsdt.and_then(Sdt::at);
        Some(Tables { rsdp, rsdt, xsdt })
    }

    /// The root table an ACPI 2.0 OS uses: the XSDT if present, else the RSDT.
    pub fn root(&self) -> Sdt {
        self.xsdt.unwrap_or(self.rsdt)
    }

    /// The first table with `signature` that the root table lists.
    pub fn find_table(&self, signature: &[u8; 4]) -> Option<Sdt> {
        self.root()
            .entries()
            .filter_map(Sdt::at)
            .find(|t| &t.signature() == signature)
    }

    /// The DSDT the FADT points at (X_DSDT when set, else DSDT).
    pub fn dsdt(&self) -> Option<Sdt> {
        let fadt = self.find_table(b"FACP")?;
        let x = fadt.u64(fadt::X_DSDT);
        let addr = if x != 0 {
            x
        } else {
            u64::from(fadt.u32(fadt::DSDT))
        };
        Sdt::at(addr)
    }
}

/// Skip an AML PkgLength at `at`; returns the offset after it.
fn skip_pkg_length(aml: &[u8], at: usize) -> Option<usize> {
    let lead = *aml.get(at)?;
    let extra = usize::from(lead >> 6);
    Some(at + 1 + extra)
}

/// An AML integer data object at `at` (ZeroOp, OneOp, BytePrefix, WordPrefix,
/// DWordPrefix): its value and the offset after it.
fn aml_integer(aml: &[u8], at: usize) -> Option<(u64, usize)> {
    match *aml.get(at)? {
        0x00 => Some((0, at + 1)),
        0x01 => Some((1, at + 1)),
        0xFF => Some((u64::MAX, at + 1)),
        0x0A => Some((u64::from(*aml.get(at + 1)?), at + 2)),
        0x0B => Some((u64::from(le16(aml.get(at + 1..at + 3)?, 0)), at + 3)),
        0x0C => Some((u64::from(le32(aml.get(at + 1..at + 5)?, 0)), at + 5)),
        _ => None,
    }
}

/// SLP_TYPa and SLP_TYPb of `\_S5` in the DSDT's AML, found the way small kernels find
/// it without an AML interpreter: the name `_S5_` after a NameOp (with or without the
/// root prefix), then a PackageOp whose first two elements are integers.
pub fn s5_sleep_types(dsdt: &Sdt) -> Option<(u8, u8)> {
    let aml = dsdt.body();
    let mut i = 0;
    while i + 4 <= aml.len() {
        if &aml[i..i + 4] == b"_S5_" {
            let named = (i >= 1 && aml[i - 1] == 0x08)
                || (i >= 2 && aml[i - 1] == b'\\' && aml[i - 2] == 0x08);
            if named && aml.get(i + 4) == Some(&0x12) {
                let after_len = skip_pkg_length(aml, i + 5)?;
                // NumElements, then the elements.
                let (a, next) = aml_integer(aml, after_len + 1)?;
                let (b, _) = aml_integer(aml, next)?;
                return Some((a as u8, b as u8));
            }
        }
        i += 1;
    }
    None
}
