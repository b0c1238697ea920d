//! A differential case and the pack of cases handed to the image as a boot module.
//!
//! A case is a CPU mode, an initial register state and a short list of instructions. The
//! instructions are kept as separate items (not one byte string) so that minimization can
//! drop them one at a time; forward branches are items of their own whose displacement is
//! computed when the code is laid out, so they stay valid when items around them go.
//!
//! Pack format (little-endian), version 2:
//!
//! ```text
//! pack  := "OPSVDIF2" count:u32 case*
//! case  := len:u32 body            (len = bytes of body)
//! body  := mode:u8 flags:u8 gprs:16*u64 rflags:u64 cr0:u64 cr4:u64 efer:u64 seed:u64
//!          fpu_seed:u64 items:u16 item*
//! item  := 0 len:u8 bytes          (one instruction, 1..=15 bytes)
//!        | 1 op:u8 cond:u8 skip:u8 (a forward branch over `skip` items)
//! flags := bit 0: the code starts at CPL 3 (not in real mode); other bits zero
//! ```
//!
//! `seed` gives the data area's contents, `fpu_seed` the initial x87/MMX/SSE state
//! (see [`crate::layout::fpu_image`]). Version 1 had no `fpu_seed`.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// The pack's magic and version.
pub const MAGIC: &[u8; 8] = b"OPSVDIF2";
/// At most this many items in a case.
pub const MAX_ITEMS: usize = 64;
/// A branch skips at most this many items (so its displacement fits in 8 bits).
pub const MAX_SKIP: u8 = 8;
/// The longest x86 instruction.
pub const MAX_INSN: usize = 15;

/// The CPU mode a case starts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Mode {
    /// Real mode, 16-bit code.
    Real = 0,
    /// 32-bit protected mode, paging off.
    Protected32 = 1,
    /// 32-bit protected mode with 2-level (non-PAE) paging.
    Paged32 = 2,
    /// 64-bit long mode.
    Long64 = 3,
    /// Compatibility mode: 32-bit code in long mode.
    Compat32 = 4,
    /// 32-bit protected mode with PAE paging (PDPTEs, 8-byte entries, NX).
    Pae32 = 5,
}

impl Mode {
    /// Every mode.
    pub const ALL: [Mode; 6] = [
        Mode::Real,
        Mode::Protected32,
        Mode::Paged32,
        Mode::Pae32,
        Mode::Long64,
        Mode::Compat32,
    ];

    /// The code size in bits.
    pub fn bitness(self) -> u32 {
        match self {
            Mode::Real => 16,
            Mode::Protected32 | Mode::Paged32 | Mode::Pae32 | Mode::Compat32 => 32,
            Mode::Long64 => 64,
        }
    }

    /// The short name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Real => "real",
            Mode::Protected32 => "prot32",
            Mode::Paged32 => "paged32",
            Mode::Long64 => "long64",
            Mode::Compat32 => "compat32",
            Mode::Pae32 => "pae32",
        }
    }

    /// The mode named `name` (see [`Mode::name`]).
    pub fn from_name(name: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.name() == name)
    }

    fn from_u8(v: u8) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| *m as u8 == v)
    }
}

/// A forward branch whose target is counted in items.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum BranchOp {
    /// `Jcc rel8` (condition 0..15).
    Jcc = 0,
    /// `JMP rel8`.
    Jmp = 1,
    /// `LOOP rel8`.
    Loop = 2,
    /// `LOOPE rel8`.
    Loope = 3,
    /// `LOOPNE rel8`.
    Loopne = 4,
    /// `JCXZ/JECXZ/JRCXZ rel8`.
    Jcxz = 5,
    /// `CALL rel16/rel32` (pushes the return address).
    Call = 6,
}

impl BranchOp {
    const ALL: [BranchOp; 7] = [
        BranchOp::Jcc,
        BranchOp::Jmp,
        BranchOp::Loop,
        BranchOp::Loope,
        BranchOp::Loopne,
        BranchOp::Jcxz,
        BranchOp::Call,
    ];

    fn from_u8(v: u8) -> Option<BranchOp> {
        BranchOp::ALL.into_iter().find(|o| *o as u8 == v)
    }

    /// The encoded length in a mode of `bitness` bits.
    pub fn len(self, bitness: u32) -> usize {
        match self {
            BranchOp::Call if bitness == 16 => 3,
            BranchOp::Call => 5,
            _ => 2,
        }
    }
}

/// One element of a case's code.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Item {
    /// One instruction's bytes.
    Insn(Vec<u8>),
    /// A forward branch over the next `skip` items (to the final HLT if fewer remain).
    Branch {
        /// Which branch.
        op: BranchOp,
        /// The condition of [`BranchOp::Jcc`] (0..15), else 0.
        cond: u8,
        /// Items skipped when taken (1..=[`MAX_SKIP`]).
        skip: u8,
    },
}

/// One differential case.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Case {
    /// The mode the code starts in.
    pub mode: Mode,
    /// The code starts at CPL 3 (user mode; protected and long modes only).
    pub user: bool,
    /// RAX..R15 at the start. RSP and RBX are replaced by the environment (stack and data
    /// pointer); R8..R15 matter only in 64-bit mode.
    pub gprs: [u64; 16],
    /// Arithmetic flags and DF to start with (other bits are ignored).
    pub rflags: u64,
    /// Optional CR0 bits (see [`crate::layout::CR0_OPTIONAL`]).
    pub cr0: u64,
    /// Optional CR4 bits (see [`crate::layout::CR4_OPTIONAL`]).
    pub cr4: u64,
    /// Optional EFER bits (see [`crate::layout::EFER_OPTIONAL`]).
    pub efer: u64,
    /// Seed of the data pages' initial contents.
    pub seed: u64,
    /// Seed of the initial x87/MMX/SSE state (see [`crate::layout::fpu_image`]).
    pub fpu_seed: u64,
    /// The code, followed by the environment's final HLT.
    pub items: Vec<Item>,
}

/// A pack or case that cannot be read; the message names the problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormatError(pub String);

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A byte reader that reports where input ran out.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], FormatError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(FormatError(format!(
                "truncated at byte {} reading {what} ({n} bytes needed, {} left)",
                self.at,
                self.bytes.len() - self.at
            )));
        };
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self, what: &str) -> Result<u8, FormatError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, FormatError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &str) -> Result<u32, FormatError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &str) -> Result<u64, FormatError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

impl Case {
    /// The case's body in the pack format.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(200);
        out.push(self.mode as u8);
        out.push(u8::from(self.user));
        for g in self.gprs {
            out.extend_from_slice(&g.to_le_bytes());
        }
        for v in [
            self.rflags,
            self.cr0,
            self.cr4,
            self.efer,
            self.seed,
            self.fpu_seed,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&(self.items.len() as u16).to_le_bytes());
        for item in &self.items {
            match item {
                Item::Insn(bytes) => {
                    out.push(0);
                    out.push(bytes.len() as u8);
                    out.extend_from_slice(bytes);
                }
                Item::Branch { op, cond, skip } => {
                    out.extend_from_slice(&[1, *op as u8, *cond, *skip]);
                }
            }
        }
        out
    }

    /// Read a case body (all of `bytes`).
    pub fn decode(bytes: &[u8]) -> Result<Case, FormatError> {
        let mut r = Reader { bytes, at: 0 };
        let mode_byte = r.u8("the mode")?;
        let mode = Mode::from_u8(mode_byte)
            .ok_or_else(|| FormatError(format!("unknown mode {mode_byte}")))?;
        let flags = r.u8("the flags")?;
        if flags & !1 != 0 {
            return Err(FormatError(format!("unknown case flags {flags:#x}")));
        }
        let user = flags & 1 != 0;
        if user && mode == Mode::Real {
            return Err(FormatError("a real-mode case cannot start at CPL 3".into()));
        }
        let mut gprs = [0u64; 16];
        for g in gprs.iter_mut() {
            *g = r.u64("the registers")?;
        }
        let rflags = r.u64("RFLAGS")?;
        let cr0 = r.u64("CR0")?;
        let cr4 = r.u64("CR4")?;
        let efer = r.u64("EFER")?;
        let seed = r.u64("the data seed")?;
        let fpu_seed = r.u64("the FPU seed")?;
        let n = usize::from(r.u16("the item count")?);
        if n > MAX_ITEMS {
            return Err(FormatError(format!(
                "{n} items, more than the {MAX_ITEMS} a case may have"
            )));
        }
        let mut items = Vec::with_capacity(n);
        for i in 0..n {
            let item = match r.u8("an item tag")? {
                0 => {
                    let len = usize::from(r.u8("an instruction length")?);
                    if len == 0 || len > MAX_INSN {
                        return Err(FormatError(format!(
                            "item {i}: instruction length {len} is not 1..=15"
                        )));
                    }
                    Item::Insn(r.take(len, "instruction bytes")?.to_vec())
                }
                1 => {
                    let op_byte = r.u8("a branch")?;
                    let op = BranchOp::from_u8(op_byte).ok_or_else(|| {
                        FormatError(format!("item {i}: unknown branch {op_byte}"))
                    })?;
                    let cond = r.u8("a branch condition")?;
                    let skip = r.u8("a branch distance")?;
                    if cond > 15 || skip == 0 || skip > MAX_SKIP {
                        return Err(FormatError(format!(
                            "item {i}: branch condition {cond} / distance {skip} out of range"
                        )));
                    }
                    Item::Branch { op, cond, skip }
                }
                tag => return Err(FormatError(format!("item {i}: unknown item tag {tag}"))),
            };
            items.push(item);
        }
        if r.at != bytes.len() {
            return Err(FormatError(format!(
                "{} bytes after the last item",
                bytes.len() - r.at
            )));
        }
        Ok(Case {
            mode,
            user,
            gprs,
            rflags,
            cr0,
            cr4,
            efer,
            seed,
            fpu_seed,
            items,
        })
    }

    /// The code bytes: the items laid out in order with branch displacements resolved,
    /// then HLT. Also returns each item's offset (and the HLT's, last).
    pub fn assemble(&self) -> (Vec<u8>, Vec<usize>) {
        let bits = self.mode.bitness();
        let lens: Vec<usize> = self
            .items
            .iter()
            .map(|item| match item {
                Item::Insn(b) => b.len(),
                Item::Branch { op, .. } => op.len(bits),
            })
            .collect();
        let mut offsets = Vec::with_capacity(lens.len() + 1);
        let mut at = 0;
        for len in &lens {
            offsets.push(at);
            at += len;
        }
        offsets.push(at);
        let mut code = Vec::with_capacity(at + 1);
        for (i, item) in self.items.iter().enumerate() {
            match item {
                Item::Insn(b) => code.extend_from_slice(b),
                Item::Branch { op, cond, skip } => {
                    let next = offsets[i + 1];
                    let target = offsets[(i + 1 + usize::from(*skip)).min(self.items.len())];
                    // Forward only, at most MAX_SKIP items of at most 15 bytes: fits.
                    let rel = (target - next) as i64;
                    match op {
                        BranchOp::Jcc => code.extend_from_slice(&[0x70 | (cond & 15), rel as u8]),
                        BranchOp::Jmp => code.extend_from_slice(&[0xeb, rel as u8]),
                        BranchOp::Loopne => code.extend_from_slice(&[0xe0, rel as u8]),
                        BranchOp::Loope => code.extend_from_slice(&[0xe1, rel as u8]),
                        BranchOp::Loop => code.extend_from_slice(&[0xe2, rel as u8]),
                        BranchOp::Jcxz => code.extend_from_slice(&[0xe3, rel as u8]),
                        BranchOp::Call if bits == 16 => {
                            code.push(0xe8);
                            code.extend_from_slice(&(rel as u16).to_le_bytes());
                        }
                        BranchOp::Call => {
                            code.push(0xe8);
                            code.extend_from_slice(&(rel as u32).to_le_bytes());
                        }
                    }
                }
            }
        }
        code.push(0xf4);
        (code, offsets)
    }
}

/// Encode a pack of cases (the boot module).
pub fn encode_pack(cases: &[Case]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(cases.len() as u32).to_le_bytes());
    for case in cases {
        let body = case.encode();
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
    }
    out
}

/// The cases of a pack, read one at a time (a bad case is an error naming its index).
pub struct Pack<'a> {
    reader: Reader<'a>,
    count: u32,
    next: u32,
}

impl<'a> Pack<'a> {
    /// Open a pack; checks the magic and the count.
    pub fn open(bytes: &'a [u8]) -> Result<Pack<'a>, FormatError> {
        let mut reader = Reader { bytes, at: 0 };
        let magic = reader.take(8, "the magic")?;
        if magic != MAGIC {
            return Err(FormatError(
                "not a differential case pack of this version (the magic is not OPSVDIF2)".into(),
            ));
        }
        let count = reader.u32("the case count")?;
        Ok(Pack {
            reader,
            count,
            next: 0,
        })
    }

    /// How many cases the pack says it holds.
    pub fn case_count(&self) -> u32 {
        self.count
    }

    /// Whether anything follows the last case (a pack written wrongly).
    pub fn trailing_bytes(&self) -> usize {
        self.reader.bytes.len() - self.reader.at
    }
}

impl Iterator for Pack<'_> {
    type Item = Result<Case, FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.count {
            return None;
        }
        let index = self.next;
        self.next += 1;
        let result = (|| {
            let len = self.reader.u32("a case length")? as usize;
            let body = self.reader.take(len, "a case")?;
            Case::decode(body)
        })();
        Some(result.map_err(|e| {
            // A broken case makes the rest unreadable: stop after reporting it.
            self.next = self.count;
            FormatError(format!("case {index}: {e}"))
        }))
    }
}

/// Lower-case hex of `bytes` (how the image reports a minimized case on the serial line).
pub fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    s
}

/// The bytes of a hex string (see [`to_hex`]).
pub fn from_hex(hex: &str) -> Result<Vec<u8>, FormatError> {
    let hex = hex.trim();
    if hex.len() % 2 != 0 {
        return Err(FormatError("odd number of hex digits".into()));
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(FormatError(format!(
            "'{}' is not a hex digit",
            char::from(c)
        ))),
    };
    hex.as_bytes()
        .chunks(2)
        .map(|p| Ok(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn sample() -> Case {
        Case {
            mode: Mode::Long64,
            user: true,
            gprs: [7; 16],
            rflags: 0x8d5,
            cr0: 1 << 16,
            cr4: 0,
            efer: 1 << 11,
            seed: 42,
            fpu_seed: 0x0123_4567_89ab_cdef,
            items: vec![
                Item::Insn(vec![0x48, 0x01, 0xc8]),
                Item::Branch {
                    op: BranchOp::Jcc,
                    cond: 4,
                    skip: 2,
                },
                Item::Insn(vec![0x90]),
                Item::Insn(vec![0x0f, 0xa2]),
                Item::Branch {
                    op: BranchOp::Call,
                    cond: 0,
                    skip: 8,
                },
            ],
        }
    }

    #[test]
    fn pack_round_trip() {
        let cases = vec![
            sample(),
            Case {
                mode: Mode::Real,
                user: false,
                ..sample()
            },
        ];
        let pack = encode_pack(&cases);
        let back: Result<Vec<Case>, _> = Pack::open(&pack).unwrap().collect();
        assert_eq!(back.unwrap(), cases);
    }

    #[test]
    fn branches_resolve_to_item_offsets_and_clamp_at_the_end() {
        let (code, offsets) = sample().assemble();
        assert_eq!(offsets, vec![0, 3, 5, 6, 8, 13]);
        // JZ over the NOP and CPUID: from 5 to 8.
        assert_eq!(&code[3..5], &[0x74, 3]);
        // CALL past the end lands on the final HLT (offset 13): rel32 0.
        assert_eq!(&code[8..13], &[0xe8, 0, 0, 0, 0]);
        assert_eq!(code.last(), Some(&0xf4));
    }

    #[test]
    fn bad_packs_name_the_problem() {
        assert!(Pack::open(b"NOTAPACK\0\0\0\0").is_err());
        let mut pack = encode_pack(&[sample()]);
        pack.truncate(pack.len() - 3);
        let err = Pack::open(&pack).unwrap().next().unwrap().unwrap_err();
        assert!(err.0.starts_with("case 0: truncated"), "{err}");
        let mut body = sample().encode();
        body[0] = 9;
        assert_eq!(Case::decode(&body).unwrap_err().0, "unknown mode 9");
        let mut body = Case {
            mode: Mode::Real,
            ..sample()
        }
        .encode();
        assert!(Case::decode(&body).unwrap_err().0.contains("CPL 3"));
        body[1] = 2;
        assert!(Case::decode(&body).is_err());
    }

    #[test]
    fn the_fpu_seed_is_packed_and_version_1_is_refused() {
        let a = sample();
        let b = Case {
            fpu_seed: 7,
            ..sample()
        };
        assert_ne!(a.encode(), b.encode());
        assert_eq!(Case::decode(&b.encode()).unwrap().fpu_seed, 7);
        // The eight bytes after the data seed (2 + 16 * 8 + 5 * 8 = 170).
        assert_eq!(&a.encode()[170..178], &a.fpu_seed.to_le_bytes());
        let mut old = encode_pack(&[a]);
        old[..8].copy_from_slice(b"OPSVDIF1");
        assert!(Pack::open(&old).is_err());
    }

    #[test]
    fn hex_round_trip() {
        let bytes = sample().encode();
        assert_eq!(from_hex(&to_hex(&bytes)).unwrap(), bytes);
        assert!(from_hex("0g").is_err());
    }
}
