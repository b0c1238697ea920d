//! A small AML encoder: the part of ACPI's machine language (ACPI 6.5, chapter 20) that a
//! static DSDT needs. Terms are built as values ([`Term`], [`Data`]) and encoded at once
//! by [`encode`], so a package length is computed from the body it covers, whatever its
//! size, instead of being counted by hand.
//!
//! What is encoded: names and name paths (`\`, `^`, dual and multi-segment paths),
//! integers in their shortest form (`Zero`, `One`, `Ones`, byte, word, dword, qword),
//! strings, buffers (with a resource template, see [`super::resources`]), packages
//! (`VarPackageOp` past 255 elements), `Name`, `Scope`, `Device`, and methods whose body
//! returns a constant.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

const ZERO_OP: u8 = 0x00;
const ONE_OP: u8 = 0x01;
const NAME_OP: u8 = 0x08;
const BYTE_PREFIX: u8 = 0x0a;
const WORD_PREFIX: u8 = 0x0b;
const DWORD_PREFIX: u8 = 0x0c;
const STRING_PREFIX: u8 = 0x0d;
const QWORD_PREFIX: u8 = 0x0e;
const SCOPE_OP: u8 = 0x10;
const BUFFER_OP: u8 = 0x11;
const PACKAGE_OP: u8 = 0x12;
const VAR_PACKAGE_OP: u8 = 0x13;
const METHOD_OP: u8 = 0x14;
const DUAL_NAME_PREFIX: u8 = 0x2e;
const MULTI_NAME_PREFIX: u8 = 0x2f;
const EXT_OP_PREFIX: u8 = 0x5b;
const DEVICE_OP: u8 = 0x82;
const ROOT_CHAR: u8 = b'\\';
const PARENT_PREFIX_CHAR: u8 = b'^';
const RETURN_OP: u8 = 0xa4;
const ONES_OP: u8 = 0xff;

/// The largest value a PkgLength encodes (28 bits).
pub const MAX_PKG_LENGTH: usize = (1 << 28) - 1;

/// Why a term cannot be encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AmlError {
    /// A name path that is not `\`/`^` prefixes followed by dot-separated segments of one
    /// to four characters, the first `A`-`Z` or `_`, the others `A`-`Z`, `0`-`9` or `_`.
    BadName(String),
    /// A string with a character outside ASCII 0x01..=0x7f.
    BadString(String),
    /// An EISA ID that is not three letters `A`-`Z` then four hexadecimal digits.
    BadEisaId(String),
    /// A method argument count above 7.
    BadArgCount(u8),
    /// A body longer than a PkgLength can express ([`MAX_PKG_LENGTH`]).
    TooLong(usize),
}

impl fmt::Display for AmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AmlError::BadName(n) => write!(
                f,
                "AML name {n:?}: expected segments of 1-4 characters [A-Z_][A-Z0-9_]*"
            ),
            AmlError::BadString(s) => {
                write!(f, "AML string {s:?}: expected ASCII without NUL")
            }
            AmlError::BadEisaId(s) => {
                write!(
                    f,
                    "EISA ID {s:?}: expected three letters A-Z and four hex digits"
                )
            }
            AmlError::BadArgCount(n) => write!(f, "AML method with {n} arguments: at most 7"),
            AmlError::TooLong(n) => write!(
                f,
                "AML object of {n} bytes: a package length holds at most {MAX_PKG_LENGTH}"
            ),
        }
    }
}

/// A data object: what a `Name` holds, a package element, a method's return value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Data {
    /// An integer, encoded in its shortest form (`Zero`, `One`, byte, word, dword, qword).
    Integer(u64),
    /// `Ones`: all bits set at the table's integer width.
    Ones,
    /// A NUL-terminated ASCII string.
    String(String),
    /// A buffer of bytes (a resource template is one).
    Buffer(Vec<u8>),
    /// A package of data objects.
    Package(Vec<Data>),
}

impl Data {
    /// A string object.
    pub fn string(s: &str) -> Data {
        Data::String(String::from(s))
    }

    /// The integer a compressed EISA ID such as `PNP0A03` stands for (what ASL's
    /// `EisaId()` produces): three 5-bit letters and four hex digits, stored big-endian in
    /// a 32-bit integer.
    pub fn eisa_id(id: &str) -> Result<Data, AmlError> {
        let bad = || AmlError::BadEisaId(String::from(id));
        let b = id.as_bytes();
        if b.len() != 7 || !b[..3].iter().all(u8::is_ascii_uppercase) {
            return Err(bad());
        }
        let mut v: u32 = 0;
        for &c in &b[..3] {
            v = (v << 5) | u32::from(c - b'A' + 1);
        }
        for &c in &b[3..] {
            let digit = char::from(c).to_digit(16).ok_or_else(bad)?;
            v = (v << 4) | digit;
        }
        // The 32-bit value is stored in the byte order of its big-endian form.
        Ok(Data::Integer(u64::from(v.swap_bytes())))
    }
}

/// A term of a term list: the body of the table, of a scope, a device or a method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Term {
    /// `Name (path, data)`.
    Name(String, Data),
    /// `Scope (path) { terms }`.
    Scope(String, Vec<Term>),
    /// `Device (path) { terms }`.
    Device(String, Vec<Term>),
    /// `Method (name, args, Serialized|NotSerialized) { terms }`.
    Method {
        /// The method's name path.
        name: String,
        /// Number of arguments, 0 to 7.
        args: u8,
        /// Whether the method is serialized (sync level 0).
        serialized: bool,
        /// The body.
        body: Vec<Term>,
    },
    /// `Return (data)`.
    Return(Data),
}

impl Term {
    /// `Name (path, data)`.
    pub fn name(path: &str, data: Data) -> Term {
        Term::Name(String::from(path), data)
    }
    /// `Scope (path) { terms }`.
    pub fn scope(path: &str, terms: Vec<Term>) -> Term {
        Term::Scope(String::from(path), terms)
    }
    /// `Device (path) { terms }`.
    pub fn device(path: &str, terms: Vec<Term>) -> Term {
        Term::Device(String::from(path), terms)
    }
    /// A method without arguments, not serialized, that returns `value`.
    pub fn method_returning(name: &str, value: Data) -> Term {
        Term::Method {
            name: String::from(name),
            args: 0,
            serialized: false,
            body: alloc::vec![Term::Return(value)],
        }
    }
}

/// Encode a term list.
pub fn encode(terms: &[Term]) -> Result<Vec<u8>, AmlError> {
    let mut out = Vec::new();
    for t in terms {
        encode_term(t, &mut out)?;
    }
    Ok(out)
}

fn encode_term(term: &Term, out: &mut Vec<u8>) -> Result<(), AmlError> {
    match term {
        Term::Name(path, data) => {
            out.push(NAME_OP);
            encode_name(path, out)?;
            encode_data(data, out)
        }
        Term::Scope(path, terms) => {
            let mut body = Vec::new();
            encode_name(path, &mut body)?;
            for t in terms {
                encode_term(t, &mut body)?;
            }
            out.push(SCOPE_OP);
            encode_pkg(&body, out)
        }
        Term::Device(path, terms) => {
            let mut body = Vec::new();
            encode_name(path, &mut body)?;
            for t in terms {
                encode_term(t, &mut body)?;
            }
            out.extend_from_slice(&[EXT_OP_PREFIX, DEVICE_OP]);
            encode_pkg(&body, out)
        }
        Term::Method {
            name,
            args,
            serialized,
            body: terms,
        } => {
            if *args > 7 {
                return Err(AmlError::BadArgCount(*args));
            }
            let mut body = Vec::new();
            encode_name(name, &mut body)?;
            // MethodFlags: bits 0-2 the argument count, bit 3 SerializeFlag, bits 4-7
            // SyncLevel (0).
            body.push(args | (u8::from(*serialized) << 3));
            for t in terms {
                encode_term(t, &mut body)?;
            }
            out.push(METHOD_OP);
            encode_pkg(&body, out)
        }
        Term::Return(data) => {
            out.push(RETURN_OP);
            encode_data(data, out)
        }
    }
}

/// Encode a data object.
pub fn encode_data(data: &Data, out: &mut Vec<u8>) -> Result<(), AmlError> {
    match data {
        Data::Integer(v) => encode_integer(*v, out),
        Data::Ones => out.push(ONES_OP),
        Data::String(s) => {
            if !s.bytes().all(|c| (0x01..=0x7f).contains(&c)) {
                return Err(AmlError::BadString(s.clone()));
            }
            out.push(STRING_PREFIX);
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        }
        Data::Buffer(bytes) => {
            let mut body = Vec::with_capacity(bytes.len() + 9);
            encode_integer(bytes.len() as u64, &mut body);
            body.extend_from_slice(bytes);
            out.push(BUFFER_OP);
            encode_pkg(&body, out)?;
        }
        Data::Package(elements) => {
            let mut body = Vec::new();
            let op = match u8::try_from(elements.len()) {
                Ok(n) => {
                    body.push(n);
                    PACKAGE_OP
                }
                // More than 255 elements: VarPackageOp, whose count is a TermArg.
                Err(_) => {
                    encode_integer(elements.len() as u64, &mut body);
                    VAR_PACKAGE_OP
                }
            };
            for e in elements {
                encode_data(e, &mut body)?;
            }
            out.push(op);
            encode_pkg(&body, out)?;
        }
    }
    Ok(())
}

/// An integer in its shortest encoding.
pub fn encode_integer(v: u64, out: &mut Vec<u8>) {
    match v {
        0 => out.push(ZERO_OP),
        1 => out.push(ONE_OP),
        2..=0xff => out.extend_from_slice(&[BYTE_PREFIX, v as u8]),
        0x100..=0xffff => {
            out.push(WORD_PREFIX);
            out.extend_from_slice(&(v as u16).to_le_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(DWORD_PREFIX);
            out.extend_from_slice(&(v as u32).to_le_bytes());
        }
        _ => {
            out.push(QWORD_PREFIX);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// A PkgLength followed by `body`. The length counts its own bytes and the body.
pub fn encode_pkg(body: &[u8], out: &mut Vec<u8>) -> Result<(), AmlError> {
    let (bytes, n) = pkg_length(body.len())?;
    out.extend_from_slice(&bytes[..n]);
    out.extend_from_slice(body);
    Ok(())
}

/// The PkgLength encoding for a body of `body_len` bytes: its bytes and how many of them
/// are used (the shortest encoding that holds the body and itself).
pub fn pkg_length(body_len: usize) -> Result<([u8; 4], usize), AmlError> {
    // One byte holds totals below 64; with n following bytes, 4 + 8n bits.
    let (total, extra) = if body_len < (1 << 6) - 1 {
        (body_len + 1, 0)
    } else if body_len < (1 << 12) - 2 {
        (body_len + 2, 1)
    } else if body_len < (1 << 20) - 3 {
        (body_len + 3, 2)
    } else if body_len <= MAX_PKG_LENGTH - 4 {
        (body_len + 4, 3)
    } else {
        return Err(AmlError::TooLong(body_len));
    };
    let mut bytes = [0u8; 4];
    if extra == 0 {
        bytes[0] = total as u8;
    } else {
        // The lead byte: bits 7-6 the count of following bytes, bits 3-0 the low nibble.
        bytes[0] = ((extra as u8) << 6) | (total & 0xf) as u8;
        for i in 0..extra {
            bytes[1 + i] = (total >> (4 + 8 * i)) as u8;
        }
    }
    Ok((bytes, 1 + extra))
}

/// Encode a name path: `\` or `^`* prefixes, then dot-separated segments (each padded
/// with `_` to four characters). An empty path after a prefix is the NullName.
pub fn encode_name(path: &str, out: &mut Vec<u8>) -> Result<(), AmlError> {
    let bad = || AmlError::BadName(String::from(path));
    let bytes = path.as_bytes();
    let mut rest = bytes;
    if let Some((&ROOT_CHAR, tail)) = rest.split_first() {
        out.push(ROOT_CHAR);
        rest = tail;
    } else {
        while let Some((&PARENT_PREFIX_CHAR, tail)) = rest.split_first() {
            out.push(PARENT_PREFIX_CHAR);
            rest = tail;
        }
    }
    if rest.is_empty() {
        // NullName: only meaningful after a prefix (`\` is the root).
        if rest.len() == bytes.len() {
            return Err(bad());
        }
        out.push(0);
        return Ok(());
    }
    let count = rest.split(|&c| c == b'.').count();
    match count {
        1 => {}
        2 => out.push(DUAL_NAME_PREFIX),
        3..=255 => out.extend_from_slice(&[MULTI_NAME_PREFIX, count as u8]),
        _ => return Err(bad()),
    }
    for seg in rest.split(|&c| c == b'.') {
        let valid = !seg.is_empty()
            && seg.len() <= 4
            && (seg[0].is_ascii_uppercase() || seg[0] == b'_')
            && seg
                .iter()
                .all(|&c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_');
        if !valid {
            return Err(bad());
        }
        out.extend_from_slice(seg);
        out.extend(core::iter::repeat_n(b'_', 4 - seg.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    /// Decode a PkgLength: (value, bytes it took).
    fn decode_pkg(b: &[u8]) -> (usize, usize) {
        let extra = usize::from(b[0] >> 6);
        if extra == 0 {
            return (usize::from(b[0] & 0x3f), 1);
        }
        let mut v = usize::from(b[0] & 0xf);
        for i in 0..extra {
            v |= usize::from(b[1 + i]) << (4 + 8 * i);
        }
        (v, 1 + extra)
    }

    #[test]
    fn package_lengths_cover_themselves_at_every_size_boundary() {
        for len in [
            0usize,
            1,
            61,
            62,
            63,
            64,
            4093,
            4094,
            4095,
            4096,
            (1 << 20) - 4,
            (1 << 20) - 3,
            (1 << 20) - 2,
            (1 << 20),
        ] {
            let body = vec![0xaau8; len];
            let mut out = Vec::new();
            encode_pkg(&body, &mut out).unwrap();
            let (value, used) = decode_pkg(&out);
            assert_eq!(
                value,
                out.len(),
                "length {len}: PkgLength covers itself and the body"
            );
            assert_eq!(out.len(), used + len);
            // The shortest encoding is used.
            let expected_used = if len + 1 < 64 {
                1
            } else if len + 2 < 4096 {
                2
            } else if len + 3 < 1 << 20 {
                3
            } else {
                4
            };
            assert_eq!(used, expected_used, "length {len}");
            // Bits 5-4 of a multi-byte lead byte are reserved zero.
            if used > 1 {
                assert_eq!(out[0] & 0x30, 0);
            }
        }
    }

    #[test]
    fn the_largest_lengths_encode_and_a_longer_body_is_refused() {
        // Computed from the length alone, without a 256 MiB body.
        let (bytes, n) = pkg_length(MAX_PKG_LENGTH - 4).unwrap();
        assert_eq!(n, 4);
        assert_eq!(decode_pkg(&bytes), (MAX_PKG_LENGTH, 4));
        assert_eq!(
            pkg_length(MAX_PKG_LENGTH - 3),
            Err(AmlError::TooLong(MAX_PKG_LENGTH - 3))
        );
        assert!(pkg_length(usize::MAX).is_err());
    }

    #[test]
    fn names_encode_as_the_spec_spells_them() {
        let enc = |p: &str| {
            let mut v = Vec::new();
            encode_name(p, &mut v).map(|()| v)
        };
        assert_eq!(enc("_S5").unwrap(), b"_S5_");
        assert_eq!(enc("\\_SB").unwrap(), b"\\_SB_");
        assert_eq!(enc("\\").unwrap(), b"\\\0");
        assert_eq!(enc("^^PCI0").unwrap(), b"^^PCI0");
        assert_eq!(enc("_SB.PCI0").unwrap(), b"\x2e_SB_PCI0");
        assert_eq!(enc("\\_SB.PCI0.COM1").unwrap(), b"\\\x2f\x03_SB_PCI0COM1");
        for bad in ["", "pci0", "1ABC", "ABCDE", "A..B", "A.", "\\^A", "A-B"] {
            assert!(matches!(enc(bad), Err(AmlError::BadName(_))), "{bad:?}");
        }
    }

    #[test]
    fn integers_use_the_shortest_form() {
        let enc = |v: u64| {
            let mut out = Vec::new();
            encode_integer(v, &mut out);
            out
        };
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(1), [0x01]);
        assert_eq!(enc(5), [0x0a, 5]);
        assert_eq!(enc(0xff), [0x0a, 0xff]);
        assert_eq!(enc(0x100), [0x0b, 0, 1]);
        assert_eq!(enc(0xfebf_ffff), [0x0c, 0xff, 0xff, 0xbf, 0xfe]);
        assert_eq!(enc(1 << 32), [0x0e, 0, 0, 0, 0, 1, 0, 0, 0]);
    }

    #[test]
    fn eisa_ids_compress_as_asl_does() {
        // iasl compiles EisaId("PNP0A03") to 0x030AD041 and EisaId("PNP0501") to 0x0105D041.
        assert_eq!(Data::eisa_id("PNP0A03"), Ok(Data::Integer(0x030a_d041)));
        assert_eq!(Data::eisa_id("PNP0501"), Ok(Data::Integer(0x0105_d041)));
        assert_eq!(Data::eisa_id("PNP0B00"), Ok(Data::Integer(0x000b_d041)));
        for bad in ["PNP0A0", "pnp0A03", "PNP0A0G", "PN10A03"] {
            assert!(Data::eisa_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn terms_encode_to_known_aml() {
        // Name (_S5, Package (0x04) { 0x05, 0x05, Zero, Zero }), as iasl emits it.
        let s5 = Term::name(
            "_S5",
            Data::Package(vec![
                Data::Integer(5),
                Data::Integer(5),
                Data::Integer(0),
                Data::Integer(0),
            ]),
        );
        assert_eq!(
            encode(&[s5]).unwrap(),
            [0x08, b'_', b'S', b'5', b'_', 0x12, 0x08, 0x04, 0x0a, 5, 0x0a, 5, 0, 0]
        );
        // Device (COM1) { Method (_STA) { Return (0x0F) } }
        let dev = Term::device(
            "COM1",
            vec![Term::method_returning("_STA", Data::Integer(0xf))],
        );
        assert_eq!(
            encode(&[dev]).unwrap(),
            [
                0x5b, 0x82, 0x0f, b'C', b'O', b'M', b'1', 0x14, 0x09, b'_', b'S', b'T', b'A', 0x00,
                0xa4, 0x0a, 0x0f
            ]
        );
        // Name (_HID, "QEMU0002"), Buffer (0x02) { 0x79, 0x00 }
        let mut out = Vec::new();
        encode_data(&Data::string("QEMU0002"), &mut out).unwrap();
        encode_data(&Data::Buffer(vec![0x79, 0]), &mut out).unwrap();
        assert_eq!(out, b"\x0dQEMU0002\0\x11\x05\x0a\x02\x79\x00");
        assert!(encode_data(&Data::string("a\0b"), &mut out).is_err());
        assert!(encode(&[Term::Method {
            name: "M".into(),
            args: 8,
            serialized: false,
            body: vec![]
        }])
        .is_err());
    }

    #[test]
    fn large_packages_use_var_package_and_long_lengths() {
        let big = Data::Package(vec![Data::Integer(0x1234); 300]);
        let mut out = Vec::new();
        encode_data(&big, &mut out).unwrap();
        assert_eq!(out[0], VAR_PACKAGE_OP);
        let (len, used) = decode_pkg(&out[1..]);
        assert_eq!(len, out.len() - 1);
        // The element count is a word integer after the PkgLength.
        assert_eq!(&out[1 + used..1 + used + 3], &[WORD_PREFIX, 44, 1]);
    }
}
