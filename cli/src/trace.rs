//! The exit trace (`opsvisor run --trace-exits FILE`): one JSON object per line and exit,
//! streamed to the file through a bounded buffer by a writer thread.
//!
//! The format (documented in `opsvisor run --help` and the README):
//!
//! ```text
//! {"time_ns":5210,"vcpu":0,"reason":"io","rip":"0x100a3c","port":"0x3f8","size":1,"direction":"write","value":"0x68"}
//! ```
//!
//! `time_ns` is the machine clock (the platform's), `vcpu` the vCPU's index, `reason` an
//! [`ExitKind`] name, `rip` the vCPU's RIP at the exit (the exiting instruction's; the
//! emulator posts MMIO writes, so theirs is the next instruction's); the fields after them
//! identify the exit (see [`TraceWriter::exit`]). Addresses and values are 0x-prefixed
//! hex strings (a JSON reader holds numbers as doubles, which lose 64-bit values); times,
//! indices, sizes and vectors are numbers.
//!
//! On the exit path a record is only stored: the exit's fields, raw, in a fixed-size
//! [`Raw`] appended to a chunk of [`CHUNK`] records allocated once. The writer thread
//! formats the JSON and writes it, so the run loop pays for a clock read and a store per
//! exit, not for formatting or for the file.
//!
//! Memory is bounded: full chunks wait in a queue of at most [`QUEUED`] for the writer
//! thread, and when the queue is full the run waits for the file, as the console waits
//! for stdout. Only past the run's deadline (`--timeout`) are chunks the file did not
//! take dropped, and counted, so that the timeout holds whatever the file does.

use crate::output::OutputFile;
use opsvisor_core::exit::Direction;
use opsvisor_core::ops::Gpr;
use opsvisor_core::{Exit, ExitKind, X86Ops};
use std::collections::VecDeque;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

/// `--trace-exits FILE` and `--trace-filter LIST`.
#[derive(Clone, Debug)]
pub struct TraceOptions {
    /// Where the trace goes.
    pub path: PathBuf,
    /// Which exits it records.
    pub filter: ExitFilter,
}

/// A set of exit kinds: the exits a trace records (all by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitFilter(u32);

impl Default for ExitFilter {
    fn default() -> Self {
        ExitFilter((1 << ExitKind::COUNT) - 1)
    }
}

impl ExitFilter {
    /// A comma-separated list of exit reasons, as [`ExitKind::name`] spells them, `msr`
    /// for both MSR kinds, or `all`.
    pub fn parse(text: &str) -> Result<ExitFilter, String> {
        let mut bits = 0u32;
        for name in text.split(',').map(str::trim) {
            bits |= match name {
                "" => continue,
                "all" => ExitFilter::default().0,
                "msr" => 1 << ExitKind::Rdmsr as u32 | 1 << ExitKind::Wrmsr as u32,
                _ => match ExitKind::ALL.iter().find(|k| k.name() == name) {
                    Some(kind) => 1 << *kind as u32,
                    None => {
                        let known: Vec<&str> = ExitKind::ALL.iter().map(|k| k.name()).collect();
                        return Err(format!(
                            "invalid --trace-filter '{text}': unknown exit reason '{name}' (known: {}, msr, all)",
                            known.join(", ")
                        ));
                    }
                },
            };
        }
        if bits == 0 {
            return Err(format!(
                "invalid --trace-filter '{text}': name at least one exit reason"
            ));
        }
        Ok(ExitFilter(bits))
    }

    /// Whether exits of `kind` are in the set.
    #[inline]
    pub fn contains(self, kind: ExitKind) -> bool {
        self.0 & (1 << kind as u32) != 0
    }
}

/// Records gathered before they go to the writer thread.
pub const CHUNK: usize = 4096;
/// Full chunks waiting for the writer thread, at most (besides the one it formats and the
/// one being filled): with [`CHUNK`] records of 40 bytes, the trace holds at most about
/// 1 MiB.
pub const QUEUED: usize = 4;
/// Formatted output the writer thread gathers before it writes.
const OUTPUT: usize = 64 * 1024;
/// The longest formatted record: the fixed fields with 20-digit numbers and 16-digit
/// hex values, and the longest reason's fields (an MMIO access), with room to spare.
const MAX_LINE: usize = 320;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `Raw::flags`: the access was a write.
const WRITE: u8 = 1;
/// `Raw::flags`: `b` holds a value (a read's result, an exception's error code).
const HAS_B: u8 = 2;

/// One exit as the run loop stores it: what the writer thread needs to format it.
#[derive(Clone, Copy, Debug, Default)]
struct Raw {
    time_ns: u64,
    rip: u64,
    /// The exit's first field: leaf, MSR, port, GPA, vector, XCR, failure code.
    a: u64,
    /// Its second: subleaf, value, error code, detail.
    b: u64,
    vcpu: u32,
    /// `ExitKind as u8`.
    kind: u8,
    /// Access size in bytes (port I/O and MMIO).
    size: u8,
    /// [`WRITE`], [`HAS_B`].
    flags: u8,
}

/// The chunks between the run loop and the writer thread.
#[derive(Default)]
struct Queue {
    /// Chunks to write, oldest first.
    full: VecDeque<Vec<Raw>>,
    /// Written chunks, emptied, for the run loop to fill again.
    free: Vec<Vec<Raw>>,
    /// No more chunks will come: the writer ends once `full` is written.
    closed: bool,
    /// Records in the chunk the writer is writing.
    writing: u64,
    /// Records handed over that were not written (the write failed).
    lost: u64,
    /// The first write error; from then on chunks are dropped.
    error: Option<io::Error>,
}

impl Queue {
    /// Nothing waits to be written (or nothing more can be).
    fn idle(&self) -> bool {
        (self.full.is_empty() && self.writing == 0) || self.error.is_some()
    }

    /// Records handed over and not written yet.
    fn unwritten(&self) -> u64 {
        self.full.iter().map(|c| c.len() as u64).sum::<u64>() + self.writing
    }
}

struct Pipe {
    queue: Mutex<Queue>,
    changed: Condvar,
}

impl Pipe {
    /// Wait for the other side's changes while `busy` holds, until `deadline` if there is
    /// one; the queue as it is then.
    fn wait_while<'a>(
        &'a self,
        mut q: MutexGuard<'a, Queue>,
        deadline: Option<Instant>,
        busy: impl Fn(&Queue) -> bool,
    ) -> MutexGuard<'a, Queue> {
        while busy(&q) {
            match deadline {
                None => q = self.changed.wait(q).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    q = self
                        .changed
                        .wait_timeout(q, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
        q
    }
}

/// How a trace ended.
#[derive(Debug, PartialEq, Eq)]
pub struct TraceSummary {
    /// Records written to the file.
    pub written: u64,
    /// Records dropped: the file took nothing more before the deadline, or failed.
    pub dropped: u64,
    /// The write error, if the file failed.
    pub error: Option<String>,
}

/// The exit trace: stores records and hands them to the writer thread in chunks.
pub struct TraceWriter {
    filter: ExitFilter,
    /// The chunk being filled.
    chunk: Vec<Raw>,
    /// The chunk's last record is a read waiting for its value.
    read_pending: bool,
    written: u64,
    dropped: u64,
    /// Past this instant, a full queue drops chunks instead of waiting.
    deadline: Option<Instant>,
    pipe: Arc<Pipe>,
    writer: Option<JoinHandle<()>>,
}

impl TraceWriter {
    /// A trace into `path` (created, or truncated), of the exits `filter` selects.
    pub fn create(options: &TraceOptions) -> Result<TraceWriter, String> {
        let file = OutputFile::create(&options.path).map_err(|e| {
            format!(
                "cannot create the exit trace '{}': {e}",
                options.path.display()
            )
        })?;
        TraceWriter::with_output(file, options.filter)
            .map_err(|e| format!("cannot start the exit trace's writer: {e}"))
    }

    /// A trace written to `output` on a thread of its own.
    pub fn with_output<W: Write + Send + 'static>(
        output: W,
        filter: ExitFilter,
    ) -> io::Result<TraceWriter> {
        let pipe = Arc::new(Pipe {
            queue: Mutex::new(Queue::default()),
            changed: Condvar::new(),
        });
        let drain = Arc::clone(&pipe);
        let writer = std::thread::Builder::new()
            .name("exit-trace".into())
            .spawn(move || write_chunks(output, &drain))?;
        Ok(TraceWriter {
            filter,
            chunk: Vec::with_capacity(CHUNK),
            read_pending: false,
            written: 0,
            dropped: 0,
            deadline: None,
            pipe,
            writer: Some(writer),
        })
    }

    /// From `deadline` on, a full queue drops what the file has not taken instead of
    /// waiting for it (the end of `--timeout`).
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// Record one exit at `now_ns()` on vCPU `vcpu` (whose state `cpu` is), if the filter
    /// takes its kind. The record of a read (IN, an MMIO load, RDMSR) waits for the
    /// value, which [`TraceWriter::read`] adds.
    #[inline]
    pub fn exit<B: X86Ops>(
        &mut self,
        now_ns: impl FnOnce() -> u64,
        vcpu: u32,
        exit: &Exit,
        cpu: &B,
    ) {
        self.read_pending = false;
        let kind = exit.kind();
        if !self.filter.contains(kind) {
            return;
        }
        let (a, b, size, flags) = match *exit {
            Exit::Cpuid => (
                cpu.gpr(Gpr::Rax) & 0xffff_ffff,
                cpu.gpr(Gpr::Rcx) & 0xffff_ffff,
                0,
                HAS_B,
            ),
            Exit::Rdmsr { index } => (u64::from(index), 0, 0, 0),
            Exit::Wrmsr { index, value } => (u64::from(index), value, 0, HAS_B),
            Exit::Io {
                port,
                size,
                direction: Direction::Write,
                data,
            } => (u64::from(port), u64::from(data), size, WRITE | HAS_B),
            Exit::Io {
                port,
                size,
                direction: Direction::Read,
                ..
            } => (u64::from(port), 0, size, 0),
            Exit::Mmio {
                gpa,
                size,
                direction: Direction::Write,
                data,
            } => (gpa, data, size, WRITE | HAS_B),
            Exit::Mmio {
                gpa,
                size,
                direction: Direction::Read,
                ..
            } => (gpa, 0, size, 0),
            Exit::SlatViolation { gpa } => (gpa, 0, 0, 0),
            Exit::Exception { vector, error_code } => match error_code {
                Some(code) => (u64::from(vector), u64::from(code), 0, HAS_B),
                None => (u64::from(vector), 0, 0, 0),
            },
            Exit::Xsetbv { index, value } => (u64::from(index), value, 0, HAS_B),
            Exit::EntryFailed { reason, detail } => (u64::from(reason), detail, 0, HAS_B),
            Exit::Cr8 {
                direction: Direction::Write,
                gpr,
            } => (0, cpu.gpr(gpr), 0, WRITE | HAS_B),
            Exit::Cr8 {
                direction: Direction::Read,
                ..
            } => (0, 0, 0, 0),
            Exit::Hlt
            | Exit::Pause
            | Exit::InterruptWindow
            | Exit::NmiWindow
            | Exit::Preempted
            | Exit::ExternalInterrupt
            | Exit::TripleFault
            | Exit::CacheFlush
            | Exit::Hypercall
            | Exit::EmulationFailure { .. } => (0, 0, 0, 0),
        };
        if self.chunk.len() == CHUNK {
            self.hand_over();
        }
        self.chunk.push(Raw {
            time_ns: now_ns(),
            rip: cpu.rip(),
            a,
            b,
            vcpu,
            kind: kind as u8,
            size,
            flags,
        });
        self.read_pending = matches!(
            kind,
            ExitKind::Rdmsr | ExitKind::Io | ExitKind::Mmio | ExitKind::Cr8
        ) && flags & WRITE == 0;
    }

    /// The value the read of the last recorded exit returned.
    #[inline]
    pub fn read(&mut self, value: u64) {
        if self.read_pending {
            self.read_pending = false;
            if let Some(last) = self.chunk.last_mut() {
                last.b = value;
                last.flags |= HAS_B;
            }
        }
    }

    /// Records handed to the writer so far, and records dropped.
    pub fn counts(&self) -> (u64, u64) {
        (self.written, self.dropped)
    }

    /// Give the chunk to the writer thread, waiting while the queue is full (until the
    /// deadline; after it the chunk is dropped).
    #[cold]
    fn hand_over(&mut self) {
        if self.chunk.is_empty() {
            return;
        }
        let pipe = Arc::clone(&self.pipe);
        let mut q = pipe.wait_while(lock(&pipe.queue), self.deadline, |q| {
            q.full.len() >= QUEUED && q.error.is_none()
        });
        let records = self.chunk.len() as u64;
        if q.full.len() >= QUEUED || q.error.is_some() {
            self.dropped += records;
            self.chunk.clear();
        } else {
            self.written += records;
            let next = q.free.pop().unwrap_or_else(|| Vec::with_capacity(CHUNK));
            q.full.push_back(std::mem::replace(&mut self.chunk, next));
            pipe.changed.notify_all();
        }
    }

    /// Write what is left, wait for the writer thread (until the deadline, if there is
    /// one), and say how the trace went.
    pub fn finish(&mut self) -> TraceSummary {
        self.read_pending = false;
        self.hand_over();
        let Some(writer) = self.writer.take() else {
            return self.summary(0);
        };
        let pipe = Arc::clone(&self.pipe);
        let mut q = lock(&pipe.queue);
        q.closed = true;
        pipe.changed.notify_all();
        let q = pipe.wait_while(q, self.deadline, |q| !q.idle());
        // A file that takes nothing more past the deadline is not waited for: what it
        // has not taken is lost.
        let done = q.idle();
        let lost = q.lost + if done { 0 } else { q.unwritten() };
        drop(q);
        if done {
            let _ = writer.join();
        }
        self.summary(lost)
    }

    fn summary(&mut self, lost: u64) -> TraceSummary {
        let lost = lost.min(self.written);
        self.written -= lost;
        self.dropped += lost;
        TraceSummary {
            written: self.written,
            dropped: self.dropped,
            error: lock(&self.pipe.queue).error.as_ref().map(|e| e.to_string()),
        }
    }
}

impl Drop for TraceWriter {
    fn drop(&mut self) {
        if self.writer.is_some() {
            self.finish();
        }
    }
}

/// The writer thread: format and write chunks as they come, until the queue is closed
/// and empty.
fn write_chunks(mut output: impl Write, pipe: &Pipe) {
    let mut text = Vec::with_capacity(OUTPUT + MAX_LINE);
    loop {
        let mut chunk = {
            let mut q = lock(&pipe.queue);
            loop {
                if let Some(chunk) = q.full.pop_front() {
                    q.writing = chunk.len() as u64;
                    pipe.changed.notify_all();
                    break chunk;
                }
                if q.closed {
                    let _ = output.flush();
                    return;
                }
                q = pipe.changed.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        let mut result = Ok(());
        for raw in &chunk {
            format_record(&mut text, raw);
            if text.len() >= OUTPUT {
                result = output.write_all(&text);
                text.clear();
                if result.is_err() {
                    break;
                }
            }
        }
        if result.is_ok() {
            result = output.write_all(&text).and_then(|()| output.flush());
        }
        text.clear();
        chunk.clear();
        let mut q = lock(&pipe.queue);
        if let Err(e) = result {
            // This chunk and every one waiting are lost; later ones are dropped.
            q.lost += q.unwritten();
            q.full.clear();
            q.writing = 0;
            q.error = Some(e);
            pipe.changed.notify_all();
            return;
        }
        q.writing = 0;
        q.free.push(chunk);
        pipe.changed.notify_all();
    }
}

/// How a record's first field (`Raw::a`) is written, after its name.
enum First {
    /// Not at all (or by the access's own fields).
    None,
    /// As a hex string.
    Hex(&'static [u8]),
    /// As a number.
    Dec(&'static [u8]),
}

/// Append `raw` as one JSON line to `out`.
fn format_record(out: &mut Vec<u8>, raw: &Raw) {
    let kind = ExitKind::ALL
        .get(usize::from(raw.kind))
        .copied()
        .unwrap_or(ExitKind::EmulationFailure);
    out.extend_from_slice(b"{\"time_ns\":");
    dec(out, raw.time_ns);
    out.extend_from_slice(b",\"vcpu\":");
    dec(out, u64::from(raw.vcpu));
    out.extend_from_slice(b",\"reason\":\"");
    out.extend_from_slice(kind.name().as_bytes());
    out.extend_from_slice(b"\",\"rip\":");
    hex(out, raw.rip);
    let b = (raw.flags & HAS_B != 0).then_some(raw.b);
    let access = |out: &mut Vec<u8>, first: &[u8]| {
        field_hex(out, first, raw.a);
        field_dec(out, b",\"size\":", u64::from(raw.size));
        out.extend_from_slice(if raw.flags & WRITE != 0 {
            b",\"direction\":\"write\""
        } else {
            b",\"direction\":\"read\""
        });
    };
    let (first, second) = match kind {
        ExitKind::Cpuid => (First::Hex(b",\"leaf\":"), Some(&b",\"subleaf\":"[..])),
        ExitKind::Rdmsr | ExitKind::Wrmsr => (First::Hex(b",\"msr\":"), Some(&b",\"value\":"[..])),
        ExitKind::Io => {
            access(out, b",\"port\":");
            (First::None, Some(&b",\"value\":"[..]))
        }
        ExitKind::Mmio => {
            access(out, b",\"gpa\":");
            (First::None, Some(&b",\"value\":"[..]))
        }
        ExitKind::SlatViolation => (First::Hex(b",\"gpa\":"), None),
        ExitKind::Exception => (First::Dec(b",\"vector\":"), Some(&b",\"error_code\":"[..])),
        ExitKind::Xsetbv => (First::Dec(b",\"xcr\":"), Some(&b",\"value\":"[..])),
        ExitKind::EntryFailed => (First::Hex(b",\"code\":"), Some(&b",\"detail\":"[..])),
        ExitKind::Cr8 => {
            out.extend_from_slice(if raw.flags & WRITE != 0 {
                b",\"direction\":\"write\""
            } else {
                b",\"direction\":\"read\""
            });
            (First::None, Some(&b",\"value\":"[..]))
        }
        ExitKind::Hlt
        | ExitKind::Pause
        | ExitKind::InterruptWindow
        | ExitKind::NmiWindow
        | ExitKind::Preempted
        | ExitKind::ExternalInterrupt
        | ExitKind::TripleFault
        | ExitKind::CacheFlush
        | ExitKind::Hypercall
        | ExitKind::EmulationFailure => (First::None, None),
    };
    match first {
        First::Hex(name) => field_hex(out, name, raw.a),
        First::Dec(name) => field_dec(out, name, raw.a),
        First::None => {}
    }
    if let (Some(name), Some(value)) = (second, b) {
        field_hex(out, name, value);
    }
    out.extend_from_slice(b"}\n");
}

/// `,"name":` and `value` in hex.
fn field_hex(out: &mut Vec<u8>, name: &[u8], value: u64) {
    out.extend_from_slice(name);
    hex(out, value);
}

/// `,"name":` and `value` in decimal.
fn field_dec(out: &mut Vec<u8>, name: &[u8], value: u64) {
    out.extend_from_slice(name);
    dec(out, value);
}

/// `value` in decimal.
fn dec(out: &mut Vec<u8>, mut value: u64) {
    const PAIRS: &[u8; 200] = b"00010203040506070809101112131415161718192021222324252627282930313233343536373839404142434445464748495051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899";
    let mut tmp = [0u8; 20];
    let mut at = tmp.len();
    while value >= 100 {
        let pair = (value % 100) as usize * 2;
        value /= 100;
        at -= 2;
        tmp[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if value >= 10 {
        let pair = value as usize * 2;
        at -= 2;
        tmp[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else {
        at -= 1;
        tmp[at] = b'0' + value as u8;
    }
    out.extend_from_slice(&tmp[at..]);
}

/// `"0x..."`: `value` in lowercase hex without leading zeros, quoted.
fn hex(out: &mut Vec<u8>, value: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digits = (64 - value.leading_zeros() as usize).div_ceil(4).max(1);
    let mut tmp = *b"\"0x0000000000000000\"";
    for i in 0..digits {
        tmp[2 + digits - i] = DIGITS[(value >> (4 * i)) as usize & 0xf];
    }
    tmp[3 + digits] = b'"';
    out.extend_from_slice(&tmp[..4 + digits]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use opsvisor_core::ops::X86Ops;
    use opsvisor_emu::EmuVcpu;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// An output the test reads back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// An output that takes a write every millisecond.
    struct Slow(Shared, Arc<AtomicUsize>);

    impl Write for Slow {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            std::thread::sleep(Duration::from_millis(1));
            self.1.fetch_add(1, Ordering::SeqCst);
            self.0.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// An output nobody reads: every write blocks for good.
    struct Stuck;

    impl Write for Stuck {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            loop {
                std::thread::park();
            }
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// An output that fails after `0` bytes.
    struct Full(usize);

    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::other("no space left on device"));
            }
            let n = buf.len().min(self.0);
            self.0 -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn lines(out: &Shared) -> Vec<serde_json::Value> {
        let text = lock(&out.0).clone();
        let text = String::from_utf8(text).expect("UTF-8");
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect()
    }

    fn vcpu(rip: u64) -> EmuVcpu {
        let mut cpu = EmuVcpu::new();
        cpu.set_rip(rip);
        cpu
    }

    #[test]
    fn every_kind_of_record_reads_back_with_its_fields() {
        let out = Shared::default();
        let mut t = TraceWriter::with_output(out.clone(), ExitFilter::default()).unwrap();
        let mut cpu = vcpu(0xffff_8000_0010_2030);
        cpu.set_gpr(Gpr::Rax, 0xdead_0000_0000_0007);
        cpu.set_gpr(Gpr::Rcx, 1);
        t.exit(|| 5, 0, &Exit::Cpuid, &cpu);
        let cpu = vcpu(0x1000);
        t.exit(|| 6, 0, &Exit::Rdmsr { index: 0x1b }, &cpu);
        t.read(0xfee0_0900);
        t.exit(
            || 7,
            0,
            &Exit::Wrmsr {
                index: 0x6e0,
                value: u64::MAX,
            },
            &cpu,
        );
        let io = |direction, data| Exit::Io {
            port: 0x3f8,
            size: 1,
            direction,
            data,
        };
        t.exit(|| 8, 1, &io(Direction::Write, 0x68), &cpu);
        t.exit(|| 9, 1, &io(Direction::Read, 0), &cpu);
        t.read(0x60);
        let mmio = |direction, data| Exit::Mmio {
            gpa: 0xfee0_0030,
            size: 4,
            direction,
            data,
        };
        t.exit(|| 10, 0, &mmio(Direction::Read, 0), &cpu);
        t.read(0x5_0014);
        t.exit(|| 11, 0, &mmio(Direction::Write, 0x10), &cpu);
        // A read that raised #GP: the next exit closes it without a value.
        t.exit(|| 12, 0, &Exit::Rdmsr { index: 0x1234 }, &cpu);
        t.exit(
            || 13,
            0,
            &Exit::Exception {
                vector: 14,
                error_code: Some(2),
            },
            &cpu,
        );
        t.exit(
            || 14,
            0,
            &Exit::Exception {
                vector: 6,
                error_code: None,
            },
            &cpu,
        );
        // read() after an exit that is no read changes nothing.
        t.read(0x99);
        t.exit(|| 15, 0, &Exit::SlatViolation { gpa: 1 << 40 }, &cpu);
        t.exit(|| 16, 0, &Exit::Xsetbv { index: 0, value: 7 }, &cpu);
        t.exit(
            || 17,
            0,
            &Exit::EntryFailed {
                reason: 7,
                detail: 0x4016,
            },
            &cpu,
        );
        t.exit(|| u64::MAX, 0, &Exit::Hlt, &cpu);
        let summary = t.finish();
        assert_eq!(
            summary,
            TraceSummary {
                written: 14,
                dropped: 0,
                error: None
            }
        );
        let records = lines(&out);
        let expect = [
            r#"{"time_ns":5,"vcpu":0,"reason":"cpuid","rip":"0xffff800000102030","leaf":"0x7","subleaf":"0x1"}"#,
            r#"{"time_ns":6,"vcpu":0,"reason":"rdmsr","rip":"0x1000","msr":"0x1b","value":"0xfee00900"}"#,
            r#"{"time_ns":7,"vcpu":0,"reason":"wrmsr","rip":"0x1000","msr":"0x6e0","value":"0xffffffffffffffff"}"#,
            r#"{"time_ns":8,"vcpu":1,"reason":"io","rip":"0x1000","port":"0x3f8","size":1,"direction":"write","value":"0x68"}"#,
            r#"{"time_ns":9,"vcpu":1,"reason":"io","rip":"0x1000","port":"0x3f8","size":1,"direction":"read","value":"0x60"}"#,
            r#"{"time_ns":10,"vcpu":0,"reason":"mmio","rip":"0x1000","gpa":"0xfee00030","size":4,"direction":"read","value":"0x50014"}"#,
            r#"{"time_ns":11,"vcpu":0,"reason":"mmio","rip":"0x1000","gpa":"0xfee00030","size":4,"direction":"write","value":"0x10"}"#,
            r#"{"time_ns":12,"vcpu":0,"reason":"rdmsr","rip":"0x1000","msr":"0x1234"}"#,
            r#"{"time_ns":13,"vcpu":0,"reason":"exception","rip":"0x1000","vector":14,"error_code":"0x2"}"#,
            r#"{"time_ns":14,"vcpu":0,"reason":"exception","rip":"0x1000","vector":6}"#,
            r#"{"time_ns":15,"vcpu":0,"reason":"slat-violation","rip":"0x1000","gpa":"0x10000000000"}"#,
            r#"{"time_ns":16,"vcpu":0,"reason":"xsetbv","rip":"0x1000","xcr":0,"value":"0x7"}"#,
            r#"{"time_ns":17,"vcpu":0,"reason":"entry-failed","rip":"0x1000","code":"0x7","detail":"0x4016"}"#,
            r#"{"time_ns":18446744073709551615,"vcpu":0,"reason":"hlt","rip":"0x1000"}"#,
        ];
        let text = String::from_utf8(lock(&out.0).clone()).unwrap();
        assert_eq!(text.lines().collect::<Vec<_>>(), expect, "{text}");
        assert_eq!(records.len(), expect.len());
        // The numbers a JSON reader sees.
        assert_eq!(records[3]["size"], 1);
        assert_eq!(records[8]["vector"], 14);
    }

    #[test]
    fn the_filter_keeps_the_named_reasons() {
        let f = ExitFilter::parse("io, msr").unwrap();
        assert!(f.contains(ExitKind::Io));
        assert!(f.contains(ExitKind::Rdmsr) && f.contains(ExitKind::Wrmsr));
        assert!(!f.contains(ExitKind::Cpuid) && !f.contains(ExitKind::Mmio));
        assert_eq!(ExitFilter::parse("all").unwrap(), ExitFilter::default());
        for kind in ExitKind::ALL {
            assert!(ExitFilter::parse(kind.name()).unwrap().contains(kind));
        }
        assert!(ExitFilter::parse("io,pio")
            .unwrap_err()
            .contains("unknown exit reason 'pio'"));
        assert!(ExitFilter::parse(",").unwrap_err().contains("at least one"));

        let out = Shared::default();
        let mut t = TraceWriter::with_output(out.clone(), f).unwrap();
        let cpu = vcpu(0x1000);
        t.exit(|| 1, 0, &Exit::Cpuid, &cpu);
        t.exit(|| 2, 0, &Exit::Rdmsr { index: 0x10 }, &cpu);
        t.read(42);
        t.exit(|| 3, 0, &Exit::Hlt, &cpu);
        // A read of a kind the filter drops does not complete an earlier record.
        t.exit(
            || 4,
            0,
            &Exit::Mmio {
                gpa: 0,
                size: 1,
                direction: Direction::Read,
                data: 0,
            },
            &cpu,
        );
        t.read(7);
        assert_eq!(t.finish().written, 1);
        let records = lines(&out);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0]["reason"], "rdmsr");
        assert_eq!(records[0]["value"], "0x2a");
    }

    #[test]
    fn a_slow_file_holds_the_run_and_no_more_than_the_queue() {
        let out = Shared::default();
        let writes = Arc::new(AtomicUsize::new(0));
        let slow = Slow(out.clone(), Arc::clone(&writes));
        let mut t = TraceWriter::with_output(slow, ExitFilter::default()).unwrap();
        let cpu = vcpu(0x1000);
        let total = 20 * CHUNK as u64;
        for i in 0..total {
            t.exit(|| i, 0, &Exit::Hlt, &cpu);
            // Chunks waiting, the one being written and the one filling: nothing more.
            assert!(lock(&t.pipe.queue).full.len() <= QUEUED);
        }
        let summary = t.finish();
        assert_eq!(summary.written, total);
        assert_eq!(summary.dropped, 0);
        let records = lines(&out);
        assert_eq!(records.len() as u64, total);
        assert_eq!(records.last().unwrap()["time_ns"], total - 1);
        assert!(lock(&t.pipe.queue).free.len() <= QUEUED + 1);
    }

    #[test]
    fn a_stuck_file_is_given_up_at_the_deadline() {
        let mut t = TraceWriter::with_output(Stuck, ExitFilter::default()).unwrap();
        let started = Instant::now();
        t.set_deadline(Some(started + Duration::from_millis(300)));
        let cpu = vcpu(0x1000);
        let total = 10 * CHUNK as u64;
        for i in 0..total {
            t.exit(|| i, 0, &Exit::Hlt, &cpu);
        }
        let summary = t.finish();
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(250), "waited: {took:?}");
        assert!(took < Duration::from_secs(5), "but not past it: {took:?}");
        assert_eq!(summary.written, 0, "nothing reached the file");
        assert_eq!(summary.dropped, total);
        assert_eq!(summary.error, None);
    }

    #[test]
    fn a_failing_file_is_reported_and_counted() {
        let mut t = TraceWriter::with_output(Full(1000), ExitFilter::default()).unwrap();
        let cpu = vcpu(0x1000);
        let total = 3 * CHUNK as u64;
        for i in 0..total {
            t.exit(|| i, 0, &Exit::Hlt, &cpu);
        }
        let summary = t.finish();
        assert_eq!(summary.error.as_deref(), Some("no space left on device"));
        assert_eq!(summary.written + summary.dropped, total);
        assert_eq!(summary.written, 0);
    }
}
