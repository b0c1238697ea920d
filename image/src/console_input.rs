//! Console input given on the image's command line (`console-input=HEX`): what a test
//! harness types for the guest where there is no live serial line to type on (Bochs'
//! COM1 is a file). The guest reads it, through core's UART, before anything that arrives
//! on the host's COM1. No dependencies, so the xtask's tests include this file too.

/// The most console input the command line can give.
pub const CONSOLE_INPUT_MAX: usize = 64;

/// Console input given in advance: what a test harness types, without a live serial line
/// to type on (Bochs' COM1 is a file).
#[derive(Clone, Copy, Debug)]
pub struct ConsoleInput {
    bytes: [u8; CONSOLE_INPUT_MAX],
    len: usize,
    next: usize,
}

impl Default for ConsoleInput {
    fn default() -> Self {
        ConsoleInput::NONE
    }
}

impl ConsoleInput {
    /// No input.
    pub const NONE: ConsoleInput = ConsoleInput {
        bytes: [0; CONSOLE_INPUT_MAX],
        len: 0,
        next: 0,
    };

    /// The bytes written in hex (`6869` is "hi"): an even number of hex digits, at most
    /// [`CONSOLE_INPUT_MAX`] bytes.
    pub fn from_hex(hex: &str) -> Result<ConsoleInput, &'static str> {
        let digits = hex.as_bytes();
        if !digits.len().is_multiple_of(2) || digits.len() / 2 > CONSOLE_INPUT_MAX {
            return Err("an even number of hex digits, at most 64 bytes");
        }
        let digit = |c: u8| char::from(c).to_digit(16).ok_or("hex digits only");
        let mut input = ConsoleInput::NONE;
        for (i, pair) in digits.chunks_exact(2).enumerate() {
            input.bytes[i] = (digit(pair[0])? << 4 | digit(pair[1])?) as u8;
        }
        input.len = digits.len() / 2;
        Ok(input)
    }

    /// Whether a byte is left.
    pub fn pending(&self) -> bool {
        self.next < self.len
    }

    /// The next byte.
    pub fn take(&mut self) -> Option<u8> {
        self.pending().then(|| {
            self.next += 1;
            self.bytes[self.next - 1]
        })
    }
}
