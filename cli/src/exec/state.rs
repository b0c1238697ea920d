//! The input of `opsvisor exec`: a JSON document parsed into a [`Spec`], with every error
//! naming the field it is about ("regs.rax: expected a number or hex string").

use serde_json::{Map, Value};

/// Largest total of the regions' sizes: guest RAM is a host allocation.
pub const MAX_MEMORY: u64 = 1 << 30;
/// Most regions a state may give (each costs a page or two of RAM and page tables
/// beyond its size, so with [`MAX_MEMORY`] this bounds the machine).
pub const MAX_REGIONS: usize = 4096;
/// Largest state document, in bytes: bytes given inline are hex, so this bounds them to
/// half of it (larger regions are given with "size").
pub const MAX_TEXT: u64 = 64 << 20;
/// Most JSON values (numbers, strings, objects, ...) in a state: a parsed value costs
/// tens of times its text, so this, not [`MAX_TEXT`], bounds the parser's memory.
pub const MAX_VALUES: usize = 1 << 18;

/// The CPU mode the snippet runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Real mode (`"mode": 16`).
    Real,
    /// Flat 32-bit protected mode with paging (`"mode": 32`).
    Protected,
    /// 64-bit long mode (`"mode": 64`).
    Long,
}

impl Mode {
    /// The mode's number in the JSON.
    pub fn bits(self) -> u32 {
        match self {
            Mode::Real => 16,
            Mode::Protected => 32,
            Mode::Long => 64,
        }
    }

    /// Names of the general registers, RIP and RFLAGS as the output spells them.
    pub fn gpr_names(self) -> &'static [&'static str; 16] {
        match self {
            Mode::Long => &GPR64,
            // Real-mode code can use the 32-bit registers with an operand-size prefix.
            Mode::Real | Mode::Protected => &GPR32,
        }
    }

    /// The name of RIP in this mode.
    pub fn ip_name(self) -> &'static str {
        match self {
            Mode::Long => "rip",
            _ => "eip",
        }
    }

    /// The name of RFLAGS in this mode.
    pub fn flags_name(self) -> &'static str {
        match self {
            Mode::Long => "rflags",
            _ => "eflags",
        }
    }

    /// How many general and XMM registers the mode has.
    pub fn reg_count(self) -> usize {
        match self {
            Mode::Long => 16,
            _ => 8,
        }
    }
}

const GPR64: [&str; 16] = [
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15",
];
const GPR32: [&str; 16] = [
    "eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", "", "", "", "", "", "", "", "",
];
const GPR16: [&str; 8] = ["ax", "cx", "dx", "bx", "sp", "bp", "si", "di"];

/// The segment registers the state may set, in `SegReg` order (ES, CS, SS, DS, FS, GS).
pub const SEGMENT_NAMES: [&str; 6] = ["es", "cs", "ss", "ds", "fs", "gs"];

/// A segment register given in the state: each part that is absent keeps the mode's
/// default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentSpec {
    /// The selector.
    pub selector: Option<u16>,
    /// The base address.
    pub base: Option<u64>,
    /// The limit in bytes.
    pub limit: Option<u32>,
}

/// A region's initial contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Contents {
    /// The bytes given.
    Bytes(Vec<u8>),
    /// This many zero bytes (`"size"`): nothing is allocated for them beyond guest RAM,
    /// which starts zeroed.
    Zeros(u64),
}

/// One memory region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionSpec {
    /// First address (guest-physical, identity-mapped).
    pub address: u64,
    /// Initial contents.
    pub contents: Contents,
    /// Whether the snippet may write it.
    pub writable: bool,
    /// Where it came from, for messages ("memory[2]", "code").
    pub name: String,
}

impl RegionSpec {
    /// Size in bytes.
    pub fn size(&self) -> u64 {
        match &self.contents {
            Contents::Bytes(b) => b.len() as u64,
            Contents::Zeros(n) => *n,
        }
    }

    /// One past the last address.
    pub fn end(&self) -> u64 {
        self.address.saturating_add(self.size())
    }

    /// The initial bytes at `offset..offset + out.len()` of the region.
    pub fn initial(&self, offset: u64, out: &mut [u8]) {
        match &self.contents {
            Contents::Bytes(b) => {
                let at = offset as usize;
                out.copy_from_slice(&b[at..at + out.len()]);
            }
            Contents::Zeros(_) => out.fill(0),
        }
    }
}

/// The x87 part of the state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct X87Spec {
    /// Control word.
    pub fcw: Option<u16>,
    /// Status word.
    pub fsw: Option<u16>,
    /// Abridged tag byte (bit i: physical register i holds a value).
    pub ftw: Option<u8>,
    /// ST(0)..ST(7), 80 bits each.
    pub st: [Option<u128>; 8],
}

/// A parsed state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    /// The CPU mode.
    pub mode: Mode,
    /// The privilege level the snippet runs at: 0, or 3 (user-mode segments and pages).
    pub cpl: u8,
    /// RAX..R15 (absent ones are zero).
    pub gpr: [u64; 16],
    /// RIP.
    pub rip: u64,
    /// RFLAGS (as given; see [`Spec::rflags_given`]).
    pub rflags: u64,
    /// Whether RFLAGS was given (at CPL 3 the default has IF set, as in a user process).
    pub rflags_given: bool,
    /// ES, CS, SS, DS, FS, GS.
    pub segments: [Option<SegmentSpec>; 6],
    /// CR0, CR4, EFER as given (the mode's own bits are applied on top).
    pub cr0: Option<u64>,
    /// See `cr0`.
    pub cr4: Option<u64>,
    /// See `cr0`.
    pub efer: Option<u64>,
    /// XMM registers given.
    pub xmm: [Option<u128>; 16],
    /// MXCSR.
    pub mxcsr: Option<u32>,
    /// x87 state.
    pub x87: X87Spec,
    /// Memory regions, the code region (if given by `code`) included.
    pub regions: Vec<RegionSpec>,
    /// Index in `regions` of the region `code` created, if any.
    pub code_region: Option<usize>,
}

type R<T> = Result<T, String>;

fn err<T>(field: &str, what: impl std::fmt::Display) -> R<T> {
    Err(format!("{field}: {what}"))
}

/// A number: a non-negative JSON integer, or a string in hex ("0x1f") or decimal.
pub fn number(v: &Value, field: &str) -> R<u128> {
    const WHAT: &str = "expected a number or hex string";
    match v {
        Value::Number(n) => match n.as_u64() {
            Some(x) => Ok(u128::from(x)),
            None => err(
                field,
                format!("{WHAT} (got {n}; numbers must be whole and non-negative)"),
            ),
        },
        Value::String(s) => {
            let t = s.trim().replace('_', "");
            let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                Some(hex) => u128::from_str_radix(hex, 16),
                None => t.parse::<u128>(),
            };
            parsed.or_else(|_| err(field, format!("{WHAT} (got \"{s}\")")))
        }
        _ => err(field, WHAT),
    }
}

/// A number that must fit in `bits` bits.
fn sized(v: &Value, field: &str, bits: u32) -> R<u128> {
    let n = number(v, field)?;
    if bits < 128 && n >> bits != 0 {
        return err(field, format!("{n:#x} does not fit in {bits} bits"));
    }
    Ok(n)
}

fn u64_of(v: &Value, field: &str, bits: u32) -> R<u64> {
    // `sized` bounded it to at most 64 bits.
    sized(v, field, bits.min(64)).map(|n| n as u64)
}

/// A hex string of bytes ("90 90 c3", "9090c3", "0x9090c3").
fn hex_bytes(v: &Value, field: &str) -> R<Vec<u8>> {
    let Value::String(s) = v else {
        return err(field, "expected a hex string of bytes (\"4801d8c3\")");
    };
    let t = s.trim();
    let t = t.strip_prefix("0x").unwrap_or(t);
    let digits: Vec<u8> = t.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if digits.len() % 2 != 0 {
        return err(field, "odd number of hex digits");
    }
    digits
        .chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).unwrap_or("??");
            u8::from_str_radix(text, 16)
                .or_else(|_| err(field, format!("'{text}' is not a hex byte")))
        })
        .collect()
}

fn object<'a>(v: &'a Value, field: &str) -> R<&'a Map<String, Value>> {
    v.as_object()
        .map_or_else(|| err(field, "expected an object"), Ok)
}

fn check_keys(obj: &Map<String, Value>, field: &str, allowed: &[&str]) -> R<()> {
    for key in obj.keys() {
        if !allowed.contains(&key.as_str()) {
            let path = if field.is_empty() {
                key.clone()
            } else {
                format!("{field}.{key}")
            };
            return err(
                &path,
                format!("unknown field (expected one of: {})", allowed.join(", ")),
            );
        }
    }
    Ok(())
}

/// Count the JSON values in `text` (roughly: the separators and openings outside
/// strings) and refuse it when there are more than [`MAX_VALUES`], before parsing.
fn check_size(text: &str) -> R<()> {
    if text.len() as u64 > MAX_TEXT {
        return err(
            "state",
            format!(
                "{} bytes is more than the {MAX_TEXT}-byte limit",
                text.len()
            ),
        );
    }
    let (mut values, mut in_string, mut escaped) = (1usize, false, false);
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' | b',' => values += 1,
            _ => {}
        }
        if values > MAX_VALUES {
            return err(
                "state",
                format!("more than {MAX_VALUES} JSON values (the limit)"),
            );
        }
    }
    Ok(())
}

/// Parse a state document.
pub fn parse(text: &str) -> R<Spec> {
    check_size(text)?;
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let top = object(&doc, "state")?;
    check_keys(
        top,
        "",
        &[
            "mode", "cpl", "regs", "segments", "cr0", "cr4", "efer", "xmm", "mxcsr", "x87",
            "memory", "code",
        ],
    )?;
    let mode = match top.get("mode") {
        None => return err("mode", "missing (16, 32 or 64)"),
        Some(v) => match number(v, "mode") {
            Ok(16) => Mode::Real,
            Ok(32) => Mode::Protected,
            Ok(64) => Mode::Long,
            Ok(n) => return err("mode", format!("{n} is not a mode (expected 16, 32 or 64)")),
            Err(_) => return err("mode", "expected 16, 32 or 64"),
        },
    };
    let cpl = match top.get("cpl") {
        None => 0,
        Some(v) => match number(v, "cpl") {
            Ok(0) => 0,
            Ok(3) if mode == Mode::Real => {
                return err("cpl", "3 needs mode 32 or 64 (real mode runs at CPL 0)")
            }
            Ok(3) => 3,
            _ => return err("cpl", "expected 0 or 3"),
        },
    };
    let mut spec = Spec {
        mode,
        cpl,
        gpr: [0; 16],
        rip: 0,
        rflags: 0x2,
        rflags_given: false,
        segments: [None; 6],
        cr0: None,
        cr4: None,
        efer: None,
        xmm: [None; 16],
        mxcsr: None,
        x87: X87Spec::default(),
        regions: Vec::new(),
        code_region: None,
    };
    if let Some(regs) = top.get("regs") {
        parse_regs(&mut spec, object(regs, "regs")?)?;
    }
    if let Some(segs) = top.get("segments") {
        parse_segments(&mut spec, object(segs, "segments")?)?;
    }
    spec.cr0 = top.get("cr0").map(|v| u64_of(v, "cr0", 32)).transpose()?;
    spec.cr4 = top.get("cr4").map(|v| u64_of(v, "cr4", 32)).transpose()?;
    if let Some(v) = top.get("efer") {
        if mode == Mode::Real {
            return err("efer", "not available in mode 16");
        }
        spec.efer = Some(u64_of(v, "efer", 64)?);
    }
    if let Some(xmm) = top.get("xmm") {
        let obj = object(xmm, "xmm")?;
        for (key, v) in obj {
            let field = format!("xmm.{key}");
            let n = key
                .strip_prefix("xmm")
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|&n| n < mode.reg_count() && key == &format!("xmm{n}"));
            let Some(n) = n else {
                return err(
                    &field,
                    format!(
                        "not a register in mode {} (xmm0..xmm{})",
                        mode.bits(),
                        mode.reg_count() - 1
                    ),
                );
            };
            spec.xmm[n] = Some(sized(v, &field, 128)?);
        }
    }
    if let Some(v) = top.get("mxcsr") {
        let m = u64_of(v, "mxcsr", 32)? as u32;
        if m & 0xffff_0000 != 0 {
            return err("mxcsr", format!("{m:#x} sets reserved bits 16..31"));
        }
        spec.mxcsr = Some(m);
    }
    if let Some(v) = top.get("x87") {
        spec.x87 = parse_x87(object(v, "x87")?)?;
    }
    if let Some(v) = top.get("code") {
        let bytes = hex_bytes(v, "code")?;
        if bytes.is_empty() {
            return err("code", "empty");
        }
        let address = code_address(&spec);
        spec.code_region = Some(spec.regions.len());
        spec.regions.push(RegionSpec {
            address,
            contents: Contents::Bytes(bytes),
            writable: false,
            name: "code".into(),
        });
    }
    if let Some(v) = top.get("memory") {
        let Value::Array(list) = v else {
            return err("memory", "expected a list of regions");
        };
        if list.len() + spec.regions.len() > MAX_REGIONS {
            return err(
                "memory",
                format!(
                    "{} regions is more than the limit of {MAX_REGIONS}",
                    list.len() + spec.regions.len()
                ),
            );
        }
        let mut total: u64 = spec.regions.iter().map(RegionSpec::size).sum();
        for (i, r) in list.iter().enumerate() {
            let name = format!("memory[{i}]");
            let region = parse_region(r, &name, MAX_MEMORY - total.min(MAX_MEMORY))?;
            // Checked as the regions are read, so a long list of large regions is
            // refused before all of it is allocated.
            total += region.size();
            spec.regions.push(region);
        }
    }
    check_regions(&spec)?;
    Ok(spec)
}

/// The linear address the `code` field goes to: CS base + RIP.
pub fn code_address(spec: &Spec) -> u64 {
    let cs = spec.segments[1].unwrap_or_default();
    let base = match spec.mode {
        Mode::Long => 0,
        Mode::Real => cs
            .base
            .unwrap_or_else(|| u64::from(cs.selector.unwrap_or(0)) << 4),
        Mode::Protected => cs.base.unwrap_or(0),
    };
    let linear = base.wrapping_add(spec.rip);
    match spec.mode {
        Mode::Long => linear,
        _ => linear & 0xffff_ffff,
    }
}

fn parse_regs(spec: &mut Spec, regs: &Map<String, Value>) -> R<()> {
    let mode = spec.mode;
    let mut seen = [false; 18];
    for (key, v) in regs {
        let field = format!("regs.{key}");
        let name = key.as_str();
        // (slot: 0..16 GPR, 16 RIP, 17 RFLAGS; width in bits)
        let slot = match mode {
            Mode::Long => GPR64
                .iter()
                .position(|r| *r == name)
                .map(|i| (i, 64))
                .or(match name {
                    "rip" => Some((16, 64)),
                    "rflags" => Some((17, 64)),
                    _ => None,
                }),
            Mode::Protected | Mode::Real => GPR32[..8]
                .iter()
                .position(|r| *r == name)
                .map(|i| (i, 32))
                .or_else(|| {
                    if mode == Mode::Real {
                        GPR16.iter().position(|r| *r == name).map(|i| (i, 16))
                    } else {
                        None
                    }
                })
                .or(match (name, mode) {
                    ("eip", _) => Some((16, 32)),
                    ("eflags", _) => Some((17, 32)),
                    ("ip", Mode::Real) => Some((16, 16)),
                    ("flags", Mode::Real) => Some((17, 16)),
                    _ => None,
                }),
        };
        let Some((slot, bits)) = slot else {
            let names = match mode {
                Mode::Long => "rax..r15, rip, rflags",
                Mode::Protected => "eax..edi, eip, eflags",
                Mode::Real => "eax..edi or ax..di, eip or ip, eflags or flags",
            };
            return err(
                &field,
                format!(
                    "unknown register in mode {} (expected {names})",
                    mode.bits()
                ),
            );
        };
        if std::mem::replace(&mut seen[slot], true) {
            return err(&field, "the same register is given twice");
        }
        let value = u64_of(v, &field, bits)?;
        match slot {
            16 => spec.rip = value,
            17 => {
                spec.rflags = value;
                spec.rflags_given = true;
            }
            n => spec.gpr[n] = value,
        }
    }
    Ok(())
}

fn parse_segments(spec: &mut Spec, segs: &Map<String, Value>) -> R<()> {
    for (key, v) in segs {
        let field = format!("segments.{key}");
        let Some(i) = SEGMENT_NAMES.iter().position(|s| s == key) else {
            return err(
                &field,
                "unknown segment register (expected cs, ds, es, fs, gs or ss)",
            );
        };
        let obj = object(v, &field)?;
        check_keys(obj, &field, &["selector", "base", "limit"])?;
        let base_bits = if spec.mode == Mode::Long { 64 } else { 32 };
        let s = SegmentSpec {
            selector: obj
                .get("selector")
                .map(|v| u64_of(v, &format!("{field}.selector"), 16).map(|n| n as u16))
                .transpose()?,
            base: obj
                .get("base")
                .map(|v| u64_of(v, &format!("{field}.base"), base_bits))
                .transpose()?,
            limit: obj
                .get("limit")
                .map(|v| u64_of(v, &format!("{field}.limit"), 32).map(|n| n as u32))
                .transpose()?,
        };
        spec.segments[i] = Some(s);
    }
    Ok(())
}

fn parse_x87(obj: &Map<String, Value>) -> R<X87Spec> {
    let mut x = X87Spec::default();
    for (key, v) in obj {
        let field = format!("x87.{key}");
        match key.as_str() {
            "fcw" => x.fcw = Some(u64_of(v, &field, 16)? as u16),
            "fsw" => x.fsw = Some(u64_of(v, &field, 16)? as u16),
            "ftw" => x.ftw = Some(u64_of(v, &field, 8)? as u8),
            st => {
                let n = st
                    .strip_prefix("st")
                    .and_then(|n| n.parse::<usize>().ok())
                    .filter(|&n| n < 8 && st == format!("st{n}"));
                let Some(n) = n else {
                    return err(&field, "unknown field (expected fcw, fsw, ftw, st0..st7)");
                };
                x.st[n] = Some(sized(v, &field, 80)?);
            }
        }
    }
    Ok(x)
}

/// One region; `room` is how many bytes the regions before it leave under the limit.
fn parse_region(v: &Value, field: &str, room: u64) -> R<RegionSpec> {
    let obj = object(v, field)?;
    check_keys(obj, field, &["address", "bytes", "size", "writable"])?;
    let address = match obj.get("address") {
        Some(a) => u64_of(a, &format!("{field}.address"), 64)?,
        None => return err(&format!("{field}.address"), "missing"),
    };
    let contents = match (obj.get("bytes"), obj.get("size")) {
        (Some(_), Some(_)) => return err(field, "give either bytes or size, not both"),
        (None, None) => return err(field, "needs bytes or size"),
        (Some(b), None) => Contents::Bytes(hex_bytes(b, &format!("{field}.bytes"))?),
        (None, Some(s)) => {
            let size = u64_of(s, &format!("{field}.size"), 64)?;
            if size > room {
                return err(
                    &format!("{field}.size"),
                    format!(
                        "{size:#x} bytes would take the regions past the {MAX_MEMORY:#x}-byte limit"
                    ),
                );
            }
            Contents::Zeros(size)
        }
    };
    if matches!(&contents, Contents::Bytes(b) if b.is_empty()) || contents == Contents::Zeros(0) {
        return err(field, "empty region");
    }
    let writable = match obj.get("writable") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return err(&format!("{field}.writable"), "expected true or false"),
    };
    Ok(RegionSpec {
        address,
        contents,
        writable,
        name: field.to_string(),
    })
}

/// Reject regions that overlap, are too large in total, or lie where the mode cannot
/// reach them.
fn check_regions(spec: &Spec) -> R<()> {
    let limit: u64 = match spec.mode {
        // Identity-mapped through the lower canonical half.
        Mode::Long => 1 << 47,
        Mode::Protected | Mode::Real => 1 << 32,
    };
    let mut total = 0u64;
    for r in &spec.regions {
        let size = r.size();
        if r.address.checked_add(size).is_none_or(|end| end > limit) {
            return err(
                &r.name,
                format!(
                    "{:#x}..{:#x} is out of range for mode {} (regions must end by {limit:#x})",
                    r.address,
                    r.address as u128 + u128::from(size),
                    spec.mode.bits()
                ),
            );
        }
        total = total.saturating_add(size);
        if total > MAX_MEMORY {
            return err(
                &r.name,
                format!("the regions add up to more than the {MAX_MEMORY:#x}-byte limit"),
            );
        }
    }
    // Sorted by address, each region can only overlap the one before it that reaches
    // furthest.
    let mut order: Vec<&RegionSpec> = spec.regions.iter().collect();
    order.sort_by_key(|r| (r.address, r.end()));
    let mut furthest: Option<&RegionSpec> = None;
    for b in order {
        if let Some(a) = furthest {
            if b.address < a.end() {
                // Name the later of the two in the document, as it reads.
                let index = |r: &RegionSpec| spec.regions.iter().position(|x| std::ptr::eq(x, r));
                let (first, second) = if index(a) < index(b) { (a, b) } else { (b, a) };
                return err(
                    &second.name,
                    format!(
                        "{:#x}..{:#x} overlaps {} at {:#x}..{:#x}",
                        second.address,
                        second.end(),
                        first.name,
                        first.address,
                        first.end()
                    ),
                );
            }
        }
        if furthest.is_none_or(|a| b.end() > a.end()) {
            furthest = Some(b);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_accept_ints_and_hex() {
        assert_eq!(number(&serde_json::json!(5), "x"), Ok(5));
        assert_eq!(number(&serde_json::json!("0x1F"), "x"), Ok(31));
        assert_eq!(number(&serde_json::json!("12"), "x"), Ok(12));
        assert!(number(&serde_json::json!(-1), "x").is_err());
        assert!(number(&serde_json::json!("zz"), "x")
            .unwrap_err()
            .starts_with("x: expected"));
    }

    #[test]
    fn registers_by_mode() {
        let s = parse(r#"{"mode":16,"regs":{"ax":"0x12","ebx":3,"ip":"0x100"}}"#).unwrap();
        assert_eq!((s.gpr[0], s.gpr[3], s.rip), (0x12, 3, 0x100));
        let e = parse(r#"{"mode":32,"regs":{"rax":1}}"#).unwrap_err();
        assert!(
            e.starts_with("regs.rax: unknown register in mode 32"),
            "{e}"
        );
        let e = parse(r#"{"mode":16,"regs":{"ax":"0x10000"}}"#).unwrap_err();
        assert!(e.contains("does not fit in 16 bits"), "{e}");
        let e = parse(r#"{"mode":16,"regs":{"ax":1,"eax":2}}"#).unwrap_err();
        assert!(e.contains("twice"), "{e}");
    }

    #[test]
    fn regions_checked() {
        let e = parse(r#"{"mode":64,"memory":[{"address":0,"size":16},{"address":8,"size":4}]}"#)
            .unwrap_err();
        assert!(
            e.starts_with("memory[1]: 0x8..0xc overlaps memory[0]"),
            "{e}"
        );
        let e = parse(r#"{"mode":32,"memory":[{"address":"0xfffff000","size":"0x2000"}]}"#)
            .unwrap_err();
        assert!(e.contains("out of range"), "{e}");
        let e = parse(r#"{"mode":64,"memory":[{"address":0,"size":"0x100000000"}]}"#).unwrap_err();
        assert!(e.starts_with("memory[0].size:"), "{e}");
        let e = parse(r#"{"mode":64,"memory":[{"address":0,"bytes":"123"}]}"#).unwrap_err();
        assert!(e.starts_with("memory[0].bytes: odd"), "{e}");
    }

    #[test]
    fn code_goes_to_cs_base_plus_ip() {
        let s = parse(r#"{"mode":16,"regs":{"ip":"0x10"},"segments":{"cs":{"selector":"0x100"}},"code":"f4"}"#)
            .unwrap();
        assert_eq!(s.regions[0].address, 0x1010);
        // Without rip the code goes to CS base + 0, as the help says absent registers are 0.
        let s = parse(r#"{"mode":64,"code":"90"}"#).unwrap();
        assert_eq!((s.rip, s.regions[0].address), (0, 0));
    }

    #[test]
    fn cpl_is_0_or_3_outside_real_mode() {
        assert_eq!(parse(r#"{"mode":64,"cpl":3}"#).unwrap().cpl, 3);
        assert_eq!(parse(r#"{"mode":32}"#).unwrap().cpl, 0);
        let e = parse(r#"{"mode":16,"cpl":3}"#).unwrap_err();
        assert!(e.starts_with("cpl: 3 needs mode 32 or 64"), "{e}");
        let e = parse(r#"{"mode":64,"cpl":1}"#).unwrap_err();
        assert_eq!(e, "cpl: expected 0 or 3");
    }

    #[test]
    fn overlaps_are_found_whatever_the_order() {
        let e = parse(
            r#"{"mode":64,"memory":[{"address":"0x5000","size":"0x2000"},{"address":"0x1000","size":16},{"address":"0x6000","size":1}]}"#,
        )
        .unwrap_err();
        assert!(
            e.starts_with("memory[2]: 0x6000..0x6001 overlaps memory[0] at 0x5000..0x7000"),
            "{e}"
        );
        // A long region covering a later short one, with one in between.
        let e = parse(
            r#"{"mode":64,"memory":[{"address":"0x3000","size":1},{"address":"0x1000","size":"0x10000"},{"address":"0x2000","size":1}]}"#,
        )
        .unwrap_err();
        assert!(
            e.starts_with("memory[2]: 0x2000..0x2001 overlaps memory[1] at 0x1000..0x11000"),
            "{e}"
        );
    }

    #[test]
    fn sizes_are_bounded_before_anything_is_built() {
        let many: Vec<String> = (0..=MAX_REGIONS)
            .map(|i| format!(r#"{{"address":{},"size":1}}"#, i * 4096))
            .collect();
        let e = parse(&format!(r#"{{"mode":64,"memory":[{}]}}"#, many.join(","))).unwrap_err();
        assert_eq!(e, "memory: 4097 regions is more than the limit of 4096");
        let values = format!(r#"{{"mode":64,"x":[{}]}}"#, "0,".repeat(MAX_VALUES));
        let e = parse(&values).unwrap_err();
        assert_eq!(e, "state: more than 262144 JSON values (the limit)");
        // Separators inside strings are not values.
        let text = format!(r#"{{"mode":64,"code":"{}"}}"#, "90,".repeat(MAX_VALUES));
        assert!(!parse(&text).unwrap_err().contains("JSON values"));
        // A region given by size holds no bytes.
        let s = parse(r#"{"mode":64,"memory":[{"address":0,"size":"0x40000000"}]}"#).unwrap();
        assert_eq!(s.regions[0].contents, Contents::Zeros(1 << 30));
    }
}
