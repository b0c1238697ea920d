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
//! [`ExitKind`] name, `rip` the exiting instruction's address; the fields after them
//! identify the exit (see [`TraceWriter::exit`]). Addresses and values are 0x-prefixed
//! hex strings (a JSON reader holds numbers as doubles, which lose 64-bit values); times,
//! indices, sizes and vectors are numbers.
//!
//! Memory is bounded: records are formatted into a chunk of [`CHUNK`] bytes, full chunks
//! wait in a queue of at most [`QUEUED`] for the writer thread, and when the queue is full
//! the run waits for the file, as the console waits for stdout. Only past the run's
//! deadline (`--timeout`) are chunks the file did not take dropped, and counted, so that
//! the timeout holds whatever the file does.

use opsvisor_core::exit::Direction;
use opsvisor_core::ops::Gpr;
use opsvisor_core::{Exit, ExitKind, X86Ops};
use std::collections::VecDeque;
use std::fs::File;
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

/// Bytes of records gathered before they go to the writer thread.
pub const CHUNK: usize = 64 * 1024;
/// Full chunks waiting for the writer thread, at most.
pub const QUEUED: usize = 4;
/// A chunk is handed over when less than this is left in it: more than any record takes.
const RECORD_ROOM: usize = 512;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The chunks between the run loop and the writer thread.
#[derive(Default)]
struct Queue {
    /// Chunks to write, oldest first.
    full: VecDeque<Vec<u8>>,
    /// Written chunks, emptied, for the run loop to fill again.
    free: Vec<Vec<u8>>,
    /// No more chunks will come: the writer ends once `full` is written.
    closed: bool,
    /// Records in the chunk the writer is writing.
    writing: u64,
    /// Records handed over that were not written (the write failed).
    lost: u64,
    /// The first write error; from then on chunks are dropped.
    error: Option<io::Error>,
}

struct Pipe {
    queue: Mutex<Queue>,
    changed: Condvar,
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

/// The exit trace: formats records and hands them to the writer thread in chunks.
pub struct TraceWriter {
    filter: ExitFilter,
    /// The chunk being filled.
    buf: Vec<u8>,
    /// Records in `buf`.
    in_buf: u64,
    /// The last record in `buf` is a read's whose value has not come yet: it is not
    /// closed.
    open: bool,
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
        let file = File::create(&options.path).map_err(|e| {
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
            buf: Vec::with_capacity(CHUNK),
            in_buf: 0,
            open: false,
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
    /// takes its kind. The record of a read (IN, an MMIO load, RDMSR) stays open for the
    /// value, which [`TraceWriter::read`] adds.
    #[inline]
    pub fn exit<B: X86Ops>(
        &mut self,
        now_ns: impl FnOnce() -> u64,
        vcpu: u32,
        exit: &Exit,
        cpu: &B,
    ) {
        if self.open {
            self.close();
        }
        let kind = exit.kind();
        if !self.filter.contains(kind) {
            return;
        }
        let time_ns = now_ns();
        if self.buf.len() > CHUNK - RECORD_ROOM {
            self.hand_over();
        }
        let b = &mut self.buf;
        b.extend_from_slice(b"{\"time_ns\":");
        dec(b, time_ns);
        b.extend_from_slice(b",\"vcpu\":");
        dec(b, u64::from(vcpu));
        b.extend_from_slice(b",\"reason\":\"");
        b.extend_from_slice(kind.name().as_bytes());
        b.extend_from_slice(b"\",\"rip\":");
        hex(b, cpu.rip());
        let mut read = false;
        match *exit {
            Exit::Cpuid => {
                field_hex(b, "leaf", cpu.gpr(Gpr::Rax) & 0xffff_ffff);
                field_hex(b, "subleaf", cpu.gpr(Gpr::Rcx) & 0xffff_ffff);
            }
            Exit::Rdmsr { index } => {
                field_hex(b, "msr", u64::from(index));
                read = true;
            }
            Exit::Wrmsr { index, value } => {
                field_hex(b, "msr", u64::from(index));
                field_hex(b, "value", value);
            }
            Exit::Io {
                port,
                size,
                direction,
                data,
            } => {
                field_hex(b, "port", u64::from(port));
                field_dec(b, "size", u64::from(size));
                read = access(b, direction, u64::from(data));
            }
            Exit::Mmio {
                gpa,
                size,
                direction,
                data,
            } => {
                field_hex(b, "gpa", gpa);
                field_dec(b, "size", u64::from(size));
                read = access(b, direction, data);
            }
            Exit::SlatViolation { gpa } => field_hex(b, "gpa", gpa),
            Exit::Exception { vector, error_code } => {
                field_dec(b, "vector", u64::from(vector));
                if let Some(code) = error_code {
                    field_hex(b, "error_code", u64::from(code));
                }
            }
            Exit::Xsetbv { index, value } => {
                field_dec(b, "xcr", u64::from(index));
                field_hex(b, "value", value);
            }
            Exit::EntryFailed { reason, detail } => {
                field_hex(b, "code", u64::from(reason));
                field_hex(b, "detail", detail);
            }
            Exit::Hlt
            | Exit::InterruptWindow
            | Exit::NmiWindow
            | Exit::Preempted
            | Exit::ExternalInterrupt
            | Exit::TripleFault
            | Exit::CacheFlush
            | Exit::Hypercall
            | Exit::EmulationFailure { .. } => {}
        }
        self.in_buf += 1;
        if read {
            self.open = true;
        } else {
            self.buf.extend_from_slice(b"}\n");
        }
    }

    /// The value the read of the last recorded exit returned.
    #[inline]
    pub fn read(&mut self, value: u64) {
        if self.open {
            field_hex(&mut self.buf, "value", value);
            self.close();
        }
    }

    /// End the open record (a read whose value never came: it raised an exception).
    fn close(&mut self) {
        self.buf.extend_from_slice(b"}\n");
        self.open = false;
    }

    /// Records handed to the writer so far, and records dropped.
    pub fn counts(&self) -> (u64, u64) {
        (self.written, self.dropped)
    }

    /// Give the chunk to the writer thread, waiting while the queue is full (until the
    /// deadline; after it the chunk is dropped).
    #[cold]
    fn hand_over(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let pipe = Arc::clone(&self.pipe);
        let mut q = lock(&pipe.queue);
        while q.full.len() >= QUEUED && q.error.is_none() {
            match self.deadline {
                None => q = pipe.changed.wait(q).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    q = pipe
                        .changed
                        .wait_timeout(q, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
        if q.full.len() >= QUEUED || q.error.is_some() {
            self.dropped += self.in_buf;
            self.buf.clear();
        } else {
            self.written += self.in_buf;
            let next = q.free.pop().unwrap_or_else(|| Vec::with_capacity(CHUNK));
            let full = std::mem::replace(&mut self.buf, next);
            q.full.push_back(full);
            pipe.changed.notify_all();
        }
        self.in_buf = 0;
    }

    /// Write what is left, wait for the writer thread (until the deadline, if there is
    /// one), and say how the trace went.
    pub fn finish(&mut self) -> TraceSummary {
        if self.open {
            self.close();
        }
        self.hand_over();
        let Some(writer) = self.writer.take() else {
            return self.summary(0);
        };
        let pipe = Arc::clone(&self.pipe);
        let mut q = lock(&pipe.queue);
        q.closed = true;
        pipe.changed.notify_all();
        let idle = |q: &Queue| (q.full.is_empty() && q.writing == 0) || q.error.is_some();
        while !idle(&q) {
            match self.deadline {
                None => q = pipe.changed.wait(q).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    q = pipe
                        .changed
                        .wait_timeout(q, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
        // A file that takes nothing more past the deadline is not waited for: what it
        // has not taken is lost.
        let stuck: u64 = if idle(&q) {
            0
        } else {
            q.full.iter().map(|c| count_lines(c)).sum::<u64>() + q.writing
        };
        let lost = q.lost + stuck;
        let done = idle(&q);
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

/// Records in a chunk (one per line).
fn count_lines(chunk: &[u8]) -> u64 {
    chunk.iter().filter(|&&b| b == b'\n').count() as u64
}

/// The writer thread: write chunks as they come, until the queue is closed and empty.
fn write_chunks(mut output: impl Write, pipe: &Pipe) {
    loop {
        let mut chunk = {
            let mut q = lock(&pipe.queue);
            loop {
                if let Some(chunk) = q.full.pop_front() {
                    q.writing = count_lines(&chunk);
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
        let result = output.write_all(&chunk).and_then(|()| output.flush());
        chunk.clear();
        let mut q = lock(&pipe.queue);
        if let Err(e) = result {
            // This chunk and every one waiting are lost; later ones are dropped.
            let waiting: u64 = q.full.iter().map(|c| count_lines(c)).sum();
            q.lost += q.writing + waiting;
            q.full.clear();
            q.error = Some(e);
            q.writing = 0;
            pipe.changed.notify_all();
            return;
        }
        q.writing = 0;
        q.free.push(chunk);
        pipe.changed.notify_all();
    }
}

/// `,"direction":"read"` or `"write"` and, for a write, its value; whether it is a read.
#[inline]
fn access(b: &mut Vec<u8>, direction: Direction, data: u64) -> bool {
    match direction {
        Direction::Read => {
            b.extend_from_slice(b",\"direction\":\"read\"");
            true
        }
        Direction::Write => {
            b.extend_from_slice(b",\"direction\":\"write\"");
            field_hex(b, "value", data);
            false
        }
    }
}

#[inline]
fn field_hex(b: &mut Vec<u8>, name: &str, value: u64) {
    b.extend_from_slice(b",\"");
    b.extend_from_slice(name.as_bytes());
    b.extend_from_slice(b"\":");
    hex(b, value);
}

#[inline]
fn field_dec(b: &mut Vec<u8>, name: &str, value: u64) {
    b.extend_from_slice(b",\"");
    b.extend_from_slice(name.as_bytes());
    b.extend_from_slice(b"\":");
    dec(b, value);
}

/// `"0x..."`: `value` in lowercase hex without leading zeros, quoted.
#[inline]
fn hex(b: &mut Vec<u8>, value: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut tmp = [0u8; 16];
    let digits = ((64 - value.leading_zeros() as usize).div_ceil(4)).max(1);
    for (i, d) in tmp[..digits].iter_mut().rev().enumerate() {
        *d = DIGITS[((value >> (4 * i)) & 0xf) as usize];
    }
    b.extend_from_slice(b"\"0x");
    b.extend_from_slice(&tmp[..digits]);
    b.push(b'"');
}

/// `value` in decimal.
#[inline]
fn dec(b: &mut Vec<u8>, mut value: u64) {
    let mut tmp = [0u8; 20];
    let mut at = tmp.len();
    loop {
        at -= 1;
        tmp[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    b.extend_from_slice(&tmp[at..]);
}
