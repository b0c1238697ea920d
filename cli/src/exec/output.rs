//! The output document, written as it is made: the trace record by record while the
//! snippet runs, memory in chunks. Nothing in it is held whole, so a long trace or a
//! large region costs no more memory than a small one.
//!
//! Two layouts: pretty (one field per line, for people) and compact (the whole document
//! on one line, for `--batch`).

use super::machine::Machine;
use super::run::{fpu_fields, hex, le, snapshot, Run};
use super::state::{Mode, RegionSpec, Spec, SEGMENT_NAMES};
use opsvisor_core::ops::{Gpr, X86Ops};
use serde_json::{json, Map, Value};
use std::io::{self, Write};

/// Which memory the output shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryOutput {
    /// Each run of bytes that differs from the state's initial contents, in any region.
    Changed,
    /// Every writable region whole.
    All,
}

/// A JSON object written field by field.
pub struct Doc<'a, W: Write> {
    w: &'a mut W,
    pretty: bool,
    fields: usize,
    /// Items written in the list now open.
    items: usize,
}

/// `value` as JSON text: compact, or pretty with every line after the first indented
/// by `indent` spaces.
fn text(value: &Value, pretty: bool, indent: usize) -> String {
    if !pretty {
        return value.to_string();
    }
    let s = serde_json::to_string_pretty(value).unwrap_or_default();
    s.replace('\n', &format!("\n{}", " ".repeat(indent)))
}

impl<'a, W: Write> Doc<'a, W> {
    /// Open the document.
    pub fn begin(w: &'a mut W, pretty: bool) -> io::Result<Doc<'a, W>> {
        w.write_all(b"{")?;
        Ok(Doc {
            w,
            pretty,
            fields: 0,
            items: 0,
        })
    }

    fn key(&mut self, name: &str) -> io::Result<()> {
        let sep = if self.fields == 0 { "" } else { "," };
        self.fields += 1;
        if self.pretty {
            write!(self.w, "{sep}\n  \"{name}\": ")
        } else {
            write!(self.w, "{sep}\"{name}\":")
        }
    }

    /// A field.
    pub fn field(&mut self, name: &str, value: &Value) -> io::Result<()> {
        self.key(name)?;
        let t = text(value, self.pretty, 2);
        self.w.write_all(t.as_bytes())
    }

    /// Open a list field.
    pub fn begin_list(&mut self, name: &str) -> io::Result<()> {
        self.key(name)?;
        self.items = 0;
        self.w.write_all(b"[")
    }

    fn item_start(&mut self) -> io::Result<()> {
        let sep = if self.items == 0 { "" } else { "," };
        self.items += 1;
        if self.pretty {
            write!(self.w, "{sep}\n    ")
        } else {
            self.w.write_all(sep.as_bytes())
        }
    }

    /// An item of the open list.
    pub fn item(&mut self, value: &Value) -> io::Result<()> {
        self.item_start()?;
        let t = text(value, self.pretty, 4);
        self.w.write_all(t.as_bytes())
    }

    /// A memory item `{"address": .., "bytes": ..}` of the open list, its bytes written
    /// as hex in pieces.
    pub fn bytes_item(&mut self, address: u64, bytes: &[u8]) -> io::Result<()> {
        self.item_start()?;
        let sp = if self.pretty { " " } else { "" };
        write!(
            self.w,
            "{{\"address\":{sp}\"{address:#x}\",{sp}\"bytes\":{sp}\""
        )?;
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; 8192];
        for chunk in bytes.chunks(buf.len() / 2) {
            for (i, b) in chunk.iter().enumerate() {
                buf[2 * i] = DIGITS[usize::from(b >> 4)];
                buf[2 * i + 1] = DIGITS[usize::from(b & 15)];
            }
            self.w.write_all(&buf[..2 * chunk.len()])?;
        }
        self.w.write_all(b"\"}")
    }

    /// Close the open list.
    pub fn end_list(&mut self) -> io::Result<()> {
        if self.pretty && self.items > 0 {
            self.w.write_all(b"\n  ]")
        } else {
            self.w.write_all(b"]")
        }
    }

    /// Close the document (and end the line).
    pub fn end(self) -> io::Result<()> {
        if self.pretty {
            self.w.write_all(b"\n}\n")
        } else {
            self.w.write_all(b"}\n")
        }
    }
}

/// The runs of bytes in `now` that differ from the region's initial contents, as
/// (offset, length), in order.
fn changed_runs(
    region: &RegionSpec,
    now: &[u8],
    mut each: impl FnMut(usize, usize) -> io::Result<()>,
) -> io::Result<()> {
    const CHUNK: usize = 4096;
    let mut initial = [0u8; CHUNK];
    let mut run_start: Option<usize> = None;
    for (k, chunk) in now.chunks(CHUNK).enumerate() {
        let base = k * CHUNK;
        let init = &mut initial[..chunk.len()];
        region.initial(base as u64, init);
        if chunk == init {
            if let Some(s) = run_start.take() {
                each(s, base - s)?;
            }
            continue;
        }
        for (i, (a, b)) in chunk.iter().zip(init.iter()).enumerate() {
            match (a != b, run_start) {
                (true, None) => run_start = Some(base + i),
                (false, Some(s)) => {
                    each(s, base + i - s)?;
                    run_start = None;
                }
                _ => {}
            }
        }
    }
    if let Some(s) = run_start {
        each(s, now.len() - s)?;
    }
    Ok(())
}

/// The rest of the document after the trace: how the run ended, the registers, the
/// state given or changed, and memory.
pub fn finish<W: Write>(
    mut doc: Doc<'_, W>,
    m: &Machine,
    spec: &Spec,
    initial: &[u8; 512],
    run: Run,
    memory: MemoryOutput,
) -> io::Result<()> {
    let mode = m.mode;
    let v = &m.vcpu;
    doc.field("end", &Value::Object(run.end))?;
    doc.field("instructions", &json!(run.executed))?;
    let width_mask = if mode == Mode::Long {
        u64::MAX
    } else {
        0xffff_ffff
    };
    let mut regs = Map::new();
    for (i, name) in mode.gpr_names().iter().take(mode.reg_count()).enumerate() {
        let reg = Gpr::ALL[i];
        regs.insert((*name).into(), hex(v.gpr(reg) & width_mask));
    }
    regs.insert(mode.ip_name().into(), hex(v.rip() & width_mask));
    regs.insert(mode.flags_name().into(), hex(v.rflags() & width_mask));
    doc.field("regs", &Value::Object(regs))?;
    let flags = [
        (0, "CF"),
        (2, "PF"),
        (4, "AF"),
        (6, "ZF"),
        (7, "SF"),
        (8, "TF"),
        (9, "IF"),
        (10, "DF"),
        (11, "OF"),
        (18, "AC"),
    ];
    let set: Vec<Value> = flags
        .iter()
        .filter(|(bit, _)| v.rflags() >> bit & 1 != 0)
        .map(|(_, n)| json!(n))
        .collect();
    doc.field("flags", &Value::Array(set))?;
    if spec.cpl != 0 {
        doc.field("cpl", &json!(v.cpl()))?;
    }
    let segs = snapshot(v).segs;
    let mut seg_out = Map::new();
    for (i, name) in SEGMENT_NAMES.iter().enumerate() {
        if spec.segments[i].is_some() {
            let s = segs[i];
            seg_out.insert(
                (*name).into(),
                json!({"selector": hex(s.selector), "base": hex(s.base), "limit": hex(s.limit)}),
            );
        }
    }
    if !seg_out.is_empty() {
        doc.field("segments", &Value::Object(seg_out))?;
    }
    for (name, given) in [("cr0", spec.cr0), ("cr4", spec.cr4), ("efer", spec.efer)] {
        if given.is_some() {
            let value = match name {
                "cr0" => v.cr0(),
                "cr4" => v.cr4(),
                _ => v.efer(),
            };
            doc.field(name, &hex(value))?;
        }
    }
    // FPU/SSE: the fields given in the state or changed by the run.
    let fx = v.fpu().fxsave();
    let mut xmm = Map::new();
    let mut x87 = Map::new();
    let mut mxcsr = None;
    for (name, at, len) in fpu_fields(mode) {
        let (was, now) = (&initial[at..at + len], &fx[at..at + len]);
        let given = match name.as_str() {
            "mxcsr" => spec.mxcsr.is_some(),
            "fcw" => spec.x87.fcw.is_some(),
            "fsw" => spec.x87.fsw.is_some(),
            "ftw" => spec.x87.ftw.is_some() || spec.x87.st.iter().any(Option::is_some),
            n if n.starts_with("st") => spec.x87.st[n[2..].parse::<usize>().unwrap_or(0)].is_some(),
            n => spec.xmm[n[3..].parse::<usize>().unwrap_or(0)].is_some(),
        };
        if !given && was == now {
            continue;
        }
        let value = hex(le(now));
        match name.as_str() {
            "mxcsr" => mxcsr = Some(value),
            n if n.starts_with("xmm") => {
                xmm.insert(name, value);
            }
            _ => {
                x87.insert(name, value);
            }
        }
    }
    if let Some(value) = mxcsr {
        doc.field("mxcsr", &value)?;
    }
    if !xmm.is_empty() {
        doc.field("xmm", &Value::Object(xmm))?;
    }
    if !x87.is_empty() {
        doc.field("x87", &Value::Object(x87))?;
    }
    doc.begin_list("memory")?;
    for r in &spec.regions {
        // Every region lies inside one RAM region of the machine.
        let Some(now) = m.mem.slice(r.address, r.size()) else {
            continue;
        };
        match memory {
            MemoryOutput::All if r.writable => doc.bytes_item(r.address, now)?,
            MemoryOutput::All => {}
            MemoryOutput::Changed => changed_runs(r, now, |at, len| {
                doc.bytes_item(r.address + at as u64, &now[at..at + len])
            })?,
        }
    }
    doc.end_list()?;
    doc.end()
}

#[cfg(test)]
mod tests {
    use super::super::state::Contents;
    use super::*;

    fn runs(initial: Contents, now: &[u8]) -> Vec<(usize, usize)> {
        let r = RegionSpec {
            address: 0,
            contents: initial,
            writable: true,
            name: "r".into(),
        };
        let mut out = Vec::new();
        changed_runs(&r, now, |a, l| {
            out.push((a, l));
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn changed_runs_are_maximal_and_cross_chunks() {
        let mut now = vec![0u8; 10000];
        assert_eq!(runs(Contents::Zeros(10000), &now), []);
        now[5] = 1;
        now[4090..4100].fill(7);
        now[9999] = 2;
        assert_eq!(
            runs(Contents::Zeros(10000), &now),
            [(5, 1), (4090, 10), (9999, 1)]
        );
        let before: Vec<u8> = (0..10000u32).map(|i| i as u8).collect();
        let mut after = before.clone();
        after[100] ^= 0xff;
        after[101] ^= 0xff;
        assert_eq!(runs(Contents::Bytes(before), &after), [(100, 2)]);
    }

    #[test]
    fn documents_are_json_in_both_layouts() {
        for pretty in [false, true] {
            let mut out = Vec::new();
            let mut doc = Doc::begin(&mut out, pretty).unwrap();
            doc.field("mode", &json!(64)).unwrap();
            doc.begin_list("trace").unwrap();
            doc.item(&json!({"a": [1, 2]})).unwrap();
            doc.item(&json!({"b": {}})).unwrap();
            doc.end_list().unwrap();
            doc.begin_list("memory").unwrap();
            doc.bytes_item(0x1000, &[0, 0xab, 0xff]).unwrap();
            doc.end_list().unwrap();
            doc.begin_list("empty").unwrap();
            doc.end_list().unwrap();
            doc.end().unwrap();
            let text = String::from_utf8(out).unwrap();
            assert_eq!(text.lines().count() == 1, !pretty, "{text}");
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                v,
                json!({"mode": 64, "trace": [{"a": [1, 2]}, {"b": {}}],
                    "memory": [{"address": "0x1000", "bytes": "00abff"}], "empty": []})
            );
        }
    }
}
