//! What the core needs from the host it runs on: a clock, a way to wait, and a console.
//!
//! The run loop is generic over [`Platform`] (no trait object on the exit path). The
//! `std` feature provides [`StdPlatform`] (monotonic clock, stdin/stdout console) and
//! [`CapturePlatform`] (output captured in memory, for tests and benchmarks); the
//! bare-metal image brings its own.

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
}

#[cfg(feature = "std")]
mod std_platform {
    use super::Platform;
    use std::collections::VecDeque;
    use std::io::{Read, Write};
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::{Duration, Instant};
    use std::vec::Vec;

    /// The host's time of day; a clock set before 1970 reads as the epoch.
    fn system_wall_clock_ns() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    /// Console input gathered by the reader thread.
    #[derive(Default)]
    struct Input {
        bytes: VecDeque<u8>,
        closed: bool,
    }

    /// The host process: `Instant` as the clock, stdout as the console, stdin read by a
    /// background thread (so waiting for input never spins).
    pub struct StdPlatform {
        start: Instant,
        out: Vec<u8>,
        input: Arc<(Mutex<Input>, Condvar)>,
    }

    impl StdPlatform {
        /// A platform whose console is this process's stdin and stdout.
        pub fn new() -> StdPlatform {
            let input = Arc::new((Mutex::new(Input::default()), Condvar::new()));
            let feed = Arc::clone(&input);
            let spawned = std::thread::Builder::new()
                .name("console-input".into())
                .spawn(move || {
                    let mut stdin = std::io::stdin();
                    let mut buf = [0u8; 256];
                    loop {
                        let n = stdin.read(&mut buf).unwrap_or(0);
                        let (lock, cv) = &*feed;
                        let mut input = lock.lock().unwrap_or_else(|e| e.into_inner());
                        if n == 0 {
                            input.closed = true;
                            cv.notify_all();
                            return;
                        }
                        input.bytes.extend(&buf[..n]);
                        cv.notify_all();
                    }
                });
            if spawned.is_err() {
                input.0.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
            }
            StdPlatform {
                start: Instant::now(),
                out: Vec::with_capacity(4096),
                input,
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
            let (lock, cv) = &*self.input;
            let mut input = lock.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if !input.bytes.is_empty() {
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
            if bytes.contains(&b'\n') || self.out.len() >= 4096 {
                self.console_flush();
            }
        }

        fn console_flush(&mut self) {
            if !self.out.is_empty() {
                let mut stdout = std::io::stdout().lock();
                // A closed stdout must not stop the guest: output is dropped, as a UART
                // with nothing attached drops it.
                let _ = stdout.write_all(&self.out);
                let _ = stdout.flush();
                self.out.clear();
            }
        }

        fn console_read(&mut self) -> Option<u8> {
            self.input
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .bytes
                .pop_front()
        }

        fn console_input_ready(&mut self) -> bool {
            !self
                .input
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .bytes
                .is_empty()
        }
    }

    impl Drop for StdPlatform {
        fn drop(&mut self) {
            self.console_flush();
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
    }

    impl CapturePlatform {
        /// An empty console.
        pub fn new() -> CapturePlatform {
            CapturePlatform {
                start: Instant::now(),
                output: Vec::new(),
                input: VecDeque::new(),
                echo: false,
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
            system_wall_clock_ns()
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
    }
}

#[cfg(feature = "std")]
pub use std_platform::{CapturePlatform, StdPlatform};
