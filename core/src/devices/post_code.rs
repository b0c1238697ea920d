//! Port 0x80, the POST-code port: firmware and kernels write progress codes (and Linux
//! uses it as an I/O delay). Writes are kept for the report; reads return the last value.

/// The POST-code port.
pub const POST_CODE_PORT: u16 = 0x80;

/// The last POST code written.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct PostCode {
    /// The last byte written, if any.
    pub last: Option<u8>,
}

impl PostCode {
    /// Record a write.
    pub fn write(&mut self, value: u8) {
        self.last = Some(value);
    }
    /// A read returns the last value written (0xff if none, like an open bus).
    pub fn read(&self) -> u8 {
        self.last.unwrap_or(0xff)
    }
}
