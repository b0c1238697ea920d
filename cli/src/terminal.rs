//! The guest's console on a terminal: while the guest runs, the terminal is in raw mode
//! (every key goes to the guest at once, Ctrl-C included, and the guest does its own echo),
//! and QEMU's escape key ends the run (Ctrl-A x; see `StdPlatform::with_console_escape`).
//! The terminal's settings are restored when the guard is dropped.

use rustix::termios::{self, OptionalActions, Termios};
use std::io::IsTerminal;

/// The terminal's settings before raw mode, put back on drop.
pub struct RawTerminal {
    saved: Termios,
}

impl RawTerminal {
    /// Put stdin's terminal in raw mode; `None` when stdin is not a terminal (a pipe, a
    /// file), which is left as it is.
    pub fn enter() -> Option<RawTerminal> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return None;
        }
        let saved = termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        // Output keeps its newline translation, so the program's own messages on stderr
        // still start at the left margin.
        raw.output_modes = saved.output_modes;
        termios::tcsetattr(&stdin, OptionalActions::Now, &raw).ok()?;
        Some(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin(), OptionalActions::Now, &self.saved);
    }
}
