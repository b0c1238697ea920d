//! What the core needs from the host it runs on: a clock, a way to wait, a console, and
//! a place to report exits to (tracing, statistics).
//!
//! The run loop is generic over [`Platform`] (no trait object on the exit path). The
//! `std` feature provides [`StdPlatform`] (monotonic clock, stdin/stdout console) and
//! [`CapturePlatform`] (output captured in memory, for tests and benchmarks); the
//! bare-metal image brings its own.

use crate::exit::Exit;
use crate::ops::X86Ops;

/// Frequency of the guest's time-stamp counter: one tick per nanosecond. The APIC timer
/// runs off the same clock, so every core deadline is a guest TSC value.
pub const GUEST_TSC_HZ: u64 = 1_000_000_000;

/// The host services the core uses.
pub trait Platform {
    /// Monotonic time in nanoseconds since an arbitrary start (the guest TSC's base).
    fn now_ns(&self) -> u64;
    /// Wall-clock time, nanoseconds since 1970-01-01 00:00:00 UTC: where the guest's CMOS
    /// clock starts. A host without a wall clock keeps the default, the Unix epoch itself.
    fn wall_clock_ns(&self) -> u64 {
        0
    }
    /// Block until `deadline_ns` (if any) passes or console input arrives, whichever is
    /// first. With no deadline it may block until input arrives; if input can never
    /// arrive (console closed) it returns `false` at once so the caller can stop a guest
    /// that would wait forever.
    fn wait(&mut self, deadline_ns: Option<u64>) -> bool;
    /// Write guest console output.
    fn console_write(&mut self, bytes: &[u8]);
    /// Flush buffered console output.
    fn console_flush(&mut self) {}
    /// The next byte of console input, if one is waiting.
    fn console_read(&mut self) -> Option<u8>;
    /// Whether console input is waiting.
    fn console_input_ready(&mut self) -> bool;
    /// Whether console input may still arrive (it is waiting, or the console is open): a
    /// guest halted until input arrives is stopped when none ever can.
    fn console_input_possible(&mut self) -> bool {
        true
    }
    /// Whether the user asked, on the console, to end the run (QEMU's Ctrl-A x). The run
    /// loop looks at every clock read and while the guest is halted; [`Platform::wait`]
    /// returns when it becomes true.
    fn stop_requested(&mut self) -> bool {
        false
    }

    /// The run loop reports every exit here before the core handles it: `vcpu` is the
    /// vCPU's index, `cpu` its state at the exit (RIP as the backend leaves it: at the
    /// exiting instruction, after it for the emulator's posted MMIO writes; CPUID's leaf
    /// and subleaf in EAX and ECX). For exit traces and statistics. The default does
    /// nothing, and inlined into the monomorphized run loop it costs nothing: a host that
    /// observes exits is a separate `Platform` type, never a run-time test on the exit
    /// path.
    #[inline(always)]
    fn observe_exit<B: X86Ops>(&mut self, vcpu: u32, exit: &Exit, cpu: &B) {
        let _ = (vcpu, exit, cpu);
    }

    /// What the guest's read in the exit last observed returned: the value of an IN
    /// element, of an MMIO load, of RDMSR (not called when the read raised an exception).
    #[inline(always)]
    fn observe_read(&mut self, value: u64) {
        let _ = value;
    }

    /// The host time the core took to handle the exit last observed, when the run loop
    /// measures it (`VmConfig::collect_timing`).
    #[inline(always)]
    fn observe_exit_time(&mut self, ns: u64) {
        let _ = ns;
    }
}

#[cfg(feature = "std")]
mod std_platform {
    use super::Platform;
    use std::collections::VecDeque;
    use std::io::{Read, Write};
    use std::sync::{Arc, Condvar, Mutex, MutexGuard};
    use std::time::{Duration, Instant};
    use std::vec::Vec;

    /// The host's time of day; a clock set before 1970 reads as the epoch.
    fn system_wall_clock_ns() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    /// Console input the reader thread holds for the guest, at most. When the guest does
    /// not read (its UART's receive buffer stays full), the thread stops reading, so the
    /// input stays in the host's pipe or terminal: input is taken at the rate the guest
    /// takes it, as on a serial line with flow control, and never piles up in the host.
    pub const INPUT_BUFFER: usize = 4096;
    /// Console output handed to the writer thread and not yet written, at most. When the
    /// host's stdout does not take output (a pipe nobody reads, a stopped terminal), the
    /// guest's writes wait for room: the run is slowed to the rate stdout takes output,
    /// never buffered without bound.
    pub const OUTPUT_BUFFER: usize = 64 * 1024;
    /// Guest output gathered before it is handed to the writer thread.
    const LOCAL_OUTPUT: usize = 4096;

    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Console input gathered by the reader thread.
    #[derive(Default)]
    struct Input {
        bytes: VecDeque<u8>,
        /// The input ended (or could not be read).
        closed: bool,
        /// The reader thread waits for room in `bytes`.
        reader_waiting: bool,
        /// The user typed the escape key and then `x`.
        stop_requested: bool,
    }

    /// Console output waiting for the writer thread.
    #[derive(Default)]
    struct Output {
        bytes: VecDeque<u8>,
        /// The writer thread is writing a chunk it took from `bytes`.
        writing: bool,
        /// The output stream failed (closed): everything from now on is discarded, as a
        /// UART with nothing attached discards it.
        broken: bool,
    }

    /// One side of the console: its state and the condition variable that signals
    /// changes to it (both directions: data arrived, room appeared).
    struct Channel<T> {
        state: Mutex<T>,
        changed: Condvar,
    }

    impl<T: Default> Channel<T> {
        fn new() -> Arc<Channel<T>> {
            Arc::new(Channel {
                state: Mutex::new(T::default()),
                changed: Condvar::new(),
            })
        }
    }

    /// The host process: `Instant` as the clock, and a console on stdin and stdout
    /// served by two threads, each through a bounded buffer (see [`INPUT_BUFFER`] and
    /// [`OUTPUT_BUFFER`]): waiting for input never spins, and a stdout that blocks never
    /// blocks the run loop past the output deadline ([`StdPlatform::set_output_deadline`]).
    pub struct StdPlatform {
        start: Instant,
        out: Vec<u8>,
        input: Arc<Channel<Input>>,
        output: Arc<Channel<Output>>,
        /// See [`StdPlatform::set_output_deadline`].
        output_deadline_ns: Option<u64>,
        /// Output bytes dropped because the deadline passed while stdout was full.
        dropped: u64,
    }

    impl StdPlatform {
        /// A platform whose console is this process's stdin and stdout.
        pub fn new() -> StdPlatform {
            StdPlatform::with_console(std::io::stdin(), std::io::stdout())
        }

        /// A platform whose console reads `input` and writes `output`, each on a thread
        /// of its own.
        pub fn with_console<R, W>(input: R, output: W) -> StdPlatform
        where
            R: Read + Send + 'static,
            W: Write + Send + 'static,
        {
            StdPlatform::with_console_escape(input, output, false)
        }

        /// [`StdPlatform::with_console`], and with `escape` the input is QEMU's character
        /// multiplexer for a terminal: Ctrl-A then `x` ends the run
        /// ([`Platform::stop_requested`]), Ctrl-A twice sends one Ctrl-A to the guest,
        /// Ctrl-A then `h` lists the keys on stderr, and Ctrl-A then anything else is
        /// dropped.
        pub fn with_console_escape<R, W>(input: R, output: W, escape: bool) -> StdPlatform
        where
            R: Read + Send + 'static,
            W: Write + Send + 'static,
        {
            let platform = StdPlatform {
                start: Instant::now(),
                out: Vec::with_capacity(LOCAL_OUTPUT),
                input: Channel::new(),
                output: Channel::new(),
                output_deadline_ns: None,
                dropped: 0,
            };
            let feed = Arc::clone(&platform.input);
            let spawned = std::thread::Builder::new()
                .name("console-input".into())
                .spawn(move || read_input(input, &feed, escape));
            if spawned.is_err() {
                lock(&platform.input.state).closed = true;
            }
            let drain = Arc::clone(&platform.output);
            let spawned = std::thread::Builder::new()
                .name("console-output".into())
                .spawn(move || write_output(output, &drain));
            if spawned.is_err() {
                lock(&platform.output.state).broken = true;
            }
            platform
        }

        /// From `deadline_ns` on (this platform's clock, [`Platform::now_ns`]) console
        /// output does not wait for a stdout that takes nothing more: what does not fit in
        /// the buffer is dropped and counted ([`StdPlatform::output_dropped`]). Without a
        /// deadline, output waits for stdout as long as it takes. The program sets it to
        /// the end of `--timeout`, so the timeout holds whatever the terminal does.
        pub fn set_output_deadline(&mut self, deadline_ns: Option<u64>) {
            self.output_deadline_ns = deadline_ns;
        }

        /// Console output bytes dropped so far because stdout took nothing more before
        /// the output deadline.
        pub fn output_dropped(&self) -> u64 {
            self.dropped
        }

        /// Hand all gathered output to the writer thread and wait until it is written,
        /// or until the output deadline. Returns [`StdPlatform::output_dropped`].
        pub fn drain_output(&mut self) -> u64 {
            self.console_flush();
            let deadline = self.output_deadline_ns;
            let out = &self.output;
            let mut state = lock(&out.state);
            while (!state.bytes.is_empty() || state.writing) && !state.broken {
                match self.time_left(deadline) {
                    None => state = out.changed.wait(state).unwrap_or_else(|e| e.into_inner()),
                    Some(left) if left.is_zero() => {
                        self.dropped += state.bytes.len() as u64;
                        state.bytes.clear();
                        break;
                    }
                    Some(left) => {
                        state = out
                            .changed
                            .wait_timeout(state, left)
                            .unwrap_or_else(|e| e.into_inner())
                            .0
                    }
                }
            }
            self.dropped
        }

        /// Time until `deadline` (`None`: no deadline; zero: passed).
        fn time_left(&self, deadline: Option<u64>) -> Option<Duration> {
            deadline.map(|d| {
                let now = self.start.elapsed().as_nanos() as u64;
                Duration::from_nanos(d.saturating_sub(now))
            })
        }
    }

    /// The console's escape key, Ctrl-A (QEMU's default `-echr`).
    pub const ESCAPE_KEY: u8 = 0x01;

    /// What the keys after [`ESCAPE_KEY`] do, as Ctrl-A h prints it.
    pub const ESCAPE_HELP: &str =
        "opsvisor console: C-a x  end the run;  C-a C-a  send C-a;  C-a h  this help\r\n";

    /// The reader thread: read while the buffer has room, wait while it is full; with
    /// `escape`, interpret the escape key (see [`StdPlatform::with_console_escape`]).
    fn read_input(mut input: impl Read, feed: &Channel<Input>, escape: bool) {
        let mut buf = [0u8; 256];
        // The previous byte was the escape key.
        let mut escaped = false;
        loop {
            let room = {
                let mut state = lock(&feed.state);
                while state.bytes.len() >= INPUT_BUFFER {
                    state.reader_waiting = true;
                    state = feed.changed.wait(state).unwrap_or_else(|e| e.into_inner());
                }
                state.reader_waiting = false;
                INPUT_BUFFER - state.bytes.len()
            };
            let n = input.read(&mut buf[..room.min(256)]).unwrap_or(0);
            let mut state = lock(&feed.state);
            if n == 0 {
                state.closed = true;
                feed.changed.notify_all();
                return;
            }
            if !escape {
                state.bytes.extend(&buf[..n]);
            } else {
                for &byte in &buf[..n] {
                    match (core::mem::take(&mut escaped), byte) {
                        (false, ESCAPE_KEY) => escaped = true,
                        (false, _) | (true, ESCAPE_KEY) => state.bytes.push_back(byte),
                        (true, b'x' | b'X') => state.stop_requested = true,
                        (true, b'h' | b'H' | b'?') => {
                            let _ = std::io::stderr().write_all(ESCAPE_HELP.as_bytes());
                        }
                        (true, _) => {}
                    }
                }
            }
            feed.changed.notify_all();
        }
    }

    /// The writer thread: write what the run loop hands over, chunk by chunk.
    fn write_output(mut output: impl Write, drain: &Channel<Output>) {
        let mut chunk = Vec::with_capacity(OUTPUT_BUFFER);
        loop {
            {
                let mut state = lock(&drain.state);
                state.writing = false;
                drain.changed.notify_all();
                while state.bytes.is_empty() {
                    state = drain.changed.wait(state).unwrap_or_else(|e| e.into_inner());
                }
                chunk.clear();
                chunk.extend(state.bytes.drain(..));
                state.writing = true;
                drain.changed.notify_all();
            }
            if output
                .write_all(&chunk)
                .and_then(|()| output.flush())
                .is_err()
            {
                let mut state = lock(&drain.state);
                state.broken = true;
                state.writing = false;
                state.bytes.clear();
                drain.changed.notify_all();
                return;
            }
        }
    }

    impl Default for StdPlatform {
        fn default() -> Self {
            Self::new()
        }
    }

    impl Platform for StdPlatform {
        fn now_ns(&self) -> u64 {
            self.start.elapsed().as_nanos() as u64
        }

        fn wall_clock_ns(&self) -> u64 {
            system_wall_clock_ns()
        }

        fn wait(&mut self, deadline_ns: Option<u64>) -> bool {
            self.console_flush();
            let (lock_, cv) = (&self.input.state, &self.input.changed);
            let mut input = lock(lock_);
            loop {
                if !input.bytes.is_empty() || input.stop_requested {
                    return true;
                }
                match deadline_ns {
                    Some(deadline) => {
                        let now = self.start.elapsed().as_nanos() as u64;
                        if now >= deadline {
                            return true;
                        }
                        let timeout = Duration::from_nanos(deadline - now);
                        input = cv
                            .wait_timeout(input, timeout)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                    None if input.closed => return false,
                    None => input = cv.wait(input).unwrap_or_else(|e| e.into_inner()),
                }
            }
        }

        fn console_write(&mut self, bytes: &[u8]) {
            self.out.extend_from_slice(bytes);
            if bytes.contains(&b'\n') || self.out.len() >= LOCAL_OUTPUT {
                self.console_flush();
            }
        }

        fn console_flush(&mut self) {
            if self.out.is_empty() {
                return;
            }
            let deadline = self.output_deadline_ns;
            let out = Arc::clone(&self.output);
            let mut state = lock(&out.state);
            let mut pending = &self.out[..];
            while !pending.is_empty() {
                if state.broken {
                    // A closed stdout must not stop the guest: output is dropped, as a
                    // UART with nothing attached drops it.
                    break;
                }
                let room = OUTPUT_BUFFER.saturating_sub(state.bytes.len());
                if room > 0 {
                    let n = room.min(pending.len());
                    state.bytes.extend(&pending[..n]);
                    pending = &pending[n..];
                    out.changed.notify_all();
                    continue;
                }
                // Full: wait for the writer thread to take some, up to the deadline.
                match self.time_left(deadline) {
                    None => state = out.changed.wait(state).unwrap_or_else(|e| e.into_inner()),
                    Some(left) if left.is_zero() => {
                        self.dropped += pending.len() as u64;
                        break;
                    }
                    Some(left) => {
                        state = out
                            .changed
                            .wait_timeout(state, left)
                            .unwrap_or_else(|e| e.into_inner())
                            .0
                    }
                }
            }
            drop(state);
            self.out.clear();
        }

        fn console_read(&mut self) -> Option<u8> {
            let mut input = lock(&self.input.state);
            let byte = input.bytes.pop_front();
            if input.reader_waiting {
                // Room again: the reader thread may read on.
                self.input.changed.notify_all();
            }
            byte
        }

        fn console_input_ready(&mut self) -> bool {
            !lock(&self.input.state).bytes.is_empty()
        }

        fn console_input_possible(&mut self) -> bool {
            let input = lock(&self.input.state);
            !input.closed || !input.bytes.is_empty()
        }

        fn stop_requested(&mut self) -> bool {
            lock(&self.input.state).stop_requested
        }
    }

    impl Drop for StdPlatform {
        fn drop(&mut self) {
            self.drain_output();
        }
    }

    /// A platform for tests and benchmarks: real monotonic time, console output kept in
    /// memory, console input from a fixed buffer.
    pub struct CapturePlatform {
        start: Instant,
        /// Everything the guest wrote to its console.
        pub output: Vec<u8>,
        /// Bytes the guest will read from its console.
        pub input: VecDeque<u8>,
        /// Also copy output to stderr (to watch a test guest).
        pub echo: bool,
        /// A wall clock that stands at this moment (ns since the Unix epoch), so that
        /// machines built at different times start their CMOS clocks alike and their
        /// runs compare; `None`: the host's clock.
        pub wall_clock_ns: Option<u64>,
    }

    impl CapturePlatform {
        /// An empty console.
        pub fn new() -> CapturePlatform {
            CapturePlatform {
                start: Instant::now(),
                output: Vec::new(),
                input: VecDeque::new(),
                echo: false,
                wall_clock_ns: None,
            }
        }
    }

    impl Default for CapturePlatform {
        fn default() -> Self {
            Self::new()
        }
    }

    impl Platform for CapturePlatform {
        fn now_ns(&self) -> u64 {
            self.start.elapsed().as_nanos() as u64
        }
        fn wall_clock_ns(&self) -> u64 {
            self.wall_clock_ns.unwrap_or_else(system_wall_clock_ns)
        }
        fn wait(&mut self, deadline_ns: Option<u64>) -> bool {
            if !self.input.is_empty() {
                return true;
            }
            match deadline_ns {
                Some(deadline) => {
                    let now = self.now_ns();
                    if deadline > now {
                        std::thread::sleep(Duration::from_nanos(deadline - now));
                    }
                    true
                }
                None => false,
            }
        }
        fn console_write(&mut self, bytes: &[u8]) {
            if self.echo {
                let _ = std::io::stderr().write_all(bytes);
            }
            self.output.extend_from_slice(bytes);
        }
        fn console_read(&mut self) -> Option<u8> {
            self.input.pop_front()
        }
        fn console_input_ready(&mut self) -> bool {
            !self.input.is_empty()
        }
        fn console_input_possible(&mut self) -> bool {
            // The buffer is all the input there will ever be.
            !self.input.is_empty()
        }
    }
}

#[cfg(feature = "std")]
pub use std_platform::{CapturePlatform, StdPlatform, ESCAPE_HELP, ESCAPE_KEY};

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::std_platform::{INPUT_BUFFER, OUTPUT_BUFFER};
    use super::{Platform, StdPlatform};
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};
    use std::vec::Vec;

    /// Endless input (like `yes`) that counts what was taken from it.
    struct Endless(Arc<AtomicUsize>);

    impl Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            buf.fill(b'y');
            self.0.fetch_add(buf.len(), Ordering::SeqCst);
            Ok(buf.len())
        }
    }

    /// An output nobody reads: every write blocks for good.
    struct Stuck;

    impl Write for Stuck {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            loop {
                std::thread::park();
            }
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// An output that takes everything, slowly.
    struct Slow(Arc<Mutex<Vec<u8>>>);

    impl Write for Slow {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            std::thread::sleep(Duration::from_micros(200));
            let n = buf.len().min(1000);
            self.0.lock().unwrap().extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn settle() {
        std::thread::sleep(Duration::from_millis(100));
    }

    #[test]
    fn console_input_is_taken_only_as_the_guest_reads_it() {
        let taken = Arc::new(AtomicUsize::new(0));
        let mut p = StdPlatform::with_console(Endless(Arc::clone(&taken)), Vec::new());
        settle();
        assert_eq!(
            taken.load(Ordering::SeqCst),
            INPUT_BUFFER,
            "the buffer filled, no more"
        );
        for _ in 0..1000 {
            assert_eq!(p.console_read(), Some(b'y'));
        }
        settle();
        assert_eq!(taken.load(Ordering::SeqCst), INPUT_BUFFER + 1000);
        assert!(p.console_input_ready());
    }

    #[test]
    fn the_escape_key_ends_the_run_on_a_terminal_console() {
        let input = b"ab\x01\x01c\x01qd\x01x".to_vec();
        let mut p = StdPlatform::with_console_escape(std::io::Cursor::new(input), Vec::new(), true);
        // The input ends after Ctrl-A x: wait for the reader to get there.
        assert!(p.wait(None));
        settle();
        let mut got = Vec::new();
        while let Some(b) = p.console_read() {
            got.push(b);
        }
        assert_eq!(
            got, b"ab\x01cd",
            "Ctrl-A Ctrl-A is one Ctrl-A; Ctrl-A q is dropped"
        );
        assert!(p.stop_requested());
        // Without the escape (a pipe), every byte is the guest's.
        let input = b"a\x01x".to_vec();
        let mut p = StdPlatform::with_console(std::io::Cursor::new(input), Vec::new());
        settle();
        let mut got = Vec::new();
        while let Some(b) = p.console_read() {
            got.push(b);
        }
        assert_eq!(got, b"a\x01x");
        assert!(!p.stop_requested());
    }

    #[test]
    fn a_blocked_output_holds_the_guest_only_until_the_deadline() {
        let mut p = StdPlatform::with_console(std::io::empty(), Stuck);
        p.set_output_deadline(Some(p.now_ns() + 300_000_000));
        let started = Instant::now();
        let line = [b'x'; 1023];
        let mut written = 0u64;
        for _ in 0..400 {
            p.console_write(&line);
            p.console_write(b"\n");
            written += 1024;
        }
        let dropped = p.drain_output();
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(250),
            "waited for room: {took:?}"
        );
        assert!(
            took < Duration::from_secs(3),
            "but not past the deadline: {took:?}"
        );
        // The writer thread holds one chunk, the buffer another; the rest is dropped.
        assert!(
            dropped >= written - 2 * OUTPUT_BUFFER as u64,
            "{dropped} of {written}"
        );
        assert_eq!(p.output_dropped(), dropped);
        // Later output is dropped at once.
        let again = Instant::now();
        p.console_write(&[b'y'; 4096]);
        assert!(again.elapsed() < Duration::from_millis(200));
        assert_eq!(p.drain_output(), dropped + 4096);
    }

    #[test]
    fn without_a_deadline_output_waits_for_a_slow_stdout_and_loses_nothing() {
        let sink = Arc::new(Mutex::new(Vec::new()));
        let mut p = StdPlatform::with_console(std::io::empty(), Slow(Arc::clone(&sink)));
        let text: Vec<u8> = (0..(3 * OUTPUT_BUFFER as u32))
            .map(|i| (i % 251) as u8)
            .collect();
        for chunk in text.chunks(777) {
            p.console_write(chunk);
        }
        assert_eq!(p.drain_output(), 0);
        assert_eq!(*sink.lock().unwrap(), text);
    }
}
