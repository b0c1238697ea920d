//! Resource templates (ACPI 6.5, section 6.4): the byte strings `_CRS` buffers hold. Each
//! method appends one descriptor; [`ResourceTemplate::finish`] adds the end tag and gives
//! the buffer.

use super::aml::Data;
use alloc::vec::Vec;

/// Address-space descriptor resource types (byte 3 of the large descriptors).
const RESOURCE_MEMORY: u8 = 0;
const RESOURCE_IO: u8 = 1;
const RESOURCE_BUS: u8 = 2;

/// General flags of an address-space descriptor for a bridge window: the bridge produces
/// the range (bit 0 clear), decodes it positively (bit 1 clear), and both ends are fixed
/// (bits 2 `_MIF` and 3 `_MAF`).
const WINDOW_FLAGS: u8 = 0x0c;

/// Whether a memory window is cacheable (`_MEM` in the type-specific flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cacheability {
    /// Non-cacheable (MMIO registers).
    NonCacheable = 0,
    /// Cacheable (legacy VGA memory, as PC firmware describes it).
    Cacheable = 1,
}

/// A resource template under construction.
#[derive(Clone, Debug, Default)]
pub struct ResourceTemplate {
    bytes: Vec<u8>,
}

impl ResourceTemplate {
    /// An empty template.
    pub fn new() -> ResourceTemplate {
        ResourceTemplate::default()
    }

    /// `IO (Decode16, min, max, align, len)`: the 7-byte I/O port descriptor.
    pub fn io(mut self, min: u16, max: u16, align: u8, len: u8) -> Self {
        self.bytes.extend_from_slice(&[0x47, 0x01]);
        self.bytes.extend_from_slice(&min.to_le_bytes());
        self.bytes.extend_from_slice(&max.to_le_bytes());
        self.bytes.extend_from_slice(&[align, len]);
        self
    }

    /// `IO (Decode16, port, port, 1, len)`: a fixed range of ports.
    pub fn io_fixed(self, port: u16, len: u8) -> Self {
        self.io(port, port, 1, len)
    }

    /// `IRQNoFlags () { irq }`: an ISA interrupt, edge-triggered, active high, exclusive.
    /// IRQs above 15 do not exist on the ISA bus and are not added.
    pub fn irq_no_flags(mut self, irq: u8) -> Self {
        if irq < 16 {
            self.bytes.push(0x22);
            self.bytes.extend_from_slice(&(1u16 << irq).to_le_bytes());
        }
        self
    }

    /// `WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode, 0, min, max, 0,
    /// max - min + 1)`.
    pub fn word_bus_number(self, min: u16, max: u16) -> Self {
        self.word_address(RESOURCE_BUS, 0, min, max)
    }

    /// `WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, 0, min, max,
    /// 0, max - min + 1)`: an I/O window a bridge forwards.
    pub fn word_io(self, min: u16, max: u16) -> Self {
        // _RNG = 3: ISA and non-ISA ranges.
        self.word_address(RESOURCE_IO, 0x03, min, max)
    }

    fn word_address(mut self, kind: u8, type_flags: u8, min: u16, max: u16) -> Self {
        let len = max.wrapping_sub(min).wrapping_add(1);
        self.bytes.push(0x88);
        self.bytes.extend_from_slice(&13u16.to_le_bytes());
        self.bytes
            .extend_from_slice(&[kind, WINDOW_FLAGS, type_flags]);
        for v in [0, min, max, 0, len] {
            self.bytes.extend_from_slice(&v.to_le_bytes());
        }
        self
    }

    /// `DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, cache, ReadWrite, 0,
    /// min, max, 0, max - min + 1)`: a 32-bit memory window a bridge forwards.
    pub fn dword_memory(mut self, cache: Cacheability, min: u32, max: u32) -> Self {
        let len = max.wrapping_sub(min).wrapping_add(1);
        self.bytes.push(0x87);
        self.bytes.extend_from_slice(&23u16.to_le_bytes());
        // Type-specific flags: bit 0 read-write, bits 2-1 _MEM.
        let type_flags = 0x01 | ((cache as u8) << 1);
        self.bytes
            .extend_from_slice(&[RESOURCE_MEMORY, WINDOW_FLAGS, type_flags]);
        for v in [0, min, max, 0, len] {
            self.bytes.extend_from_slice(&v.to_le_bytes());
        }
        self
    }

    /// `QWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable,
    /// ReadWrite, 0, min, max, 0, max - min + 1)`: a 64-bit memory window.
    pub fn qword_memory(mut self, min: u64, max: u64) -> Self {
        let len = max.wrapping_sub(min).wrapping_add(1);
        self.bytes.push(0x8a);
        self.bytes.extend_from_slice(&43u16.to_le_bytes());
        self.bytes
            .extend_from_slice(&[RESOURCE_MEMORY, WINDOW_FLAGS, 0x01]);
        for v in [0, min, max, 0, len] {
            self.bytes.extend_from_slice(&v.to_le_bytes());
        }
        self
    }

    /// The template with its end tag, as a buffer object. The end tag's checksum byte is
    /// set so that the whole template sums to zero (a zero checksum, which the
    /// specification also allows, would mean "not checked").
    pub fn finish(mut self) -> Data {
        self.bytes.push(0x79);
        let sum = self.bytes.iter().fold(0u8, |s, &b| s.wrapping_add(b));
        self.bytes.push(0u8.wrapping_sub(sum));
        Data::Buffer(self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(t: ResourceTemplate) -> Vec<u8> {
        match t.finish() {
            Data::Buffer(b) => b,
            other => panic!("not a buffer: {other:?}"),
        }
    }

    #[test]
    fn descriptors_have_the_layout_of_acpi_6_4() {
        let b = bytes(ResourceTemplate::new().io_fixed(0x3f8, 8).irq_no_flags(4));
        assert_eq!(
            b[..10],
            [0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08, 0x22, 0x10]
        );
        assert_eq!(b[10], 0x00);
        assert_eq!(b[11], 0x79);
        assert_eq!(b.iter().fold(0u8, |s, &x| s.wrapping_add(x)), 0);

        let b = bytes(ResourceTemplate::new().word_io(0x0d00, 0xffff));
        assert_eq!(b[0], 0x88);
        assert_eq!(u16::from_le_bytes([b[1], b[2]]), 13);
        assert_eq!(&b[3..6], &[1, 0x0c, 0x03]);
        // _GRA 0, _MIN 0xD00, _MAX 0xFFFF, _TRA 0, _LEN 0xF300.
        assert_eq!(&b[6..16], &[0, 0, 0x00, 0x0d, 0xff, 0xff, 0, 0, 0x00, 0xf3]);

        let b = bytes(ResourceTemplate::new().dword_memory(
            Cacheability::NonCacheable,
            0x1000_0000,
            0xfebf_ffff,
        ));
        assert_eq!(b[0], 0x87);
        assert_eq!(u16::from_le_bytes([b[1], b[2]]), 23);
        assert_eq!(&b[3..6], &[0, 0x0c, 0x01]);
        assert_eq!(
            u32::from_le_bytes(b[22..26].try_into().unwrap()),
            0xeec0_0000
        );

        let b = bytes(ResourceTemplate::new().qword_memory(1 << 36, (1 << 37) - 1));
        assert_eq!(b[0], 0x8a);
        assert_eq!(b.len(), 3 + 43 + 2);
        assert_eq!(u64::from_le_bytes(b[38..46].try_into().unwrap()), 1 << 36);
        // No IRQ above 15 on ISA.
        assert_eq!(bytes(ResourceTemplate::new().irq_no_flags(16)).len(), 2);
    }
}
