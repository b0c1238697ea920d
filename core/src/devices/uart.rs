//! A 16550A UART (COM1 at 0x3F8), wired to the platform console.
//!
//! Transmission is instantaneous: a byte written to THR goes straight to
//! [`Platform::console_write`], so LSR always reports THRE and TEMT. Received bytes come
//! from [`Platform::console_read`] when the guest reads RBR; LSR.DR asks
//! [`Platform::console_input_ready`]. The divisor latch, line control and scratch
//! registers hold what the guest writes and change nothing else (there is no baud rate).
//!
//! Loopback mode (MCR bit 4) follows the 16550: transmitted bytes go to a 16-byte
//! receive FIFO instead of the console (a byte into a full FIFO sets LSR.OE), and the
//! modem outputs DTR, RTS, OUT1, OUT2 appear on the inputs DSR, CTS, RI, DCD. Outside
//! loopback the modem inputs read as carrier, data set ready and clear to send.
//!
//! IIR reports the highest-priority pending interrupt among those enabled in IER (line
//! status, received data, THR empty, modem status) for guests that poll it, with the
//! 16550's THR-empty rules: pending when enabled or after a THR write, cleared by reading
//! IIR while it is the reported source. [`Uart16550::irq_pending`] computes the interrupt
//! line (gated by MCR.OUT2 as on the PC); the VM drives COM1's IRQ 4 with it after every
//! access and whenever console input may have arrived.

use crate::platform::Platform;

/// COM1's base port.
pub const COM1_BASE: u16 = 0x3f8;

const IER_RX: u8 = 1 << 0;
const IER_THRE: u8 = 1 << 1;
const IER_LSR: u8 = 1 << 2;
const IER_MSR: u8 = 1 << 3;

const IIR_NONE: u8 = 0x01;
const IIR_MSR: u8 = 0x00;
const IIR_THRE: u8 = 0x02;
const IIR_RX: u8 = 0x04;
const IIR_LSR: u8 = 0x06;
const IIR_FIFO: u8 = 0xc0;

const FCR_ENABLE: u8 = 1 << 0;
const FCR_CLEAR_RX: u8 = 1 << 1;

const LCR_DLAB: u8 = 1 << 7;

const MCR_OUT2: u8 = 1 << 3;
const MCR_LOOP: u8 = 1 << 4;

const LSR_DR: u8 = 1 << 0;
const LSR_OE: u8 = 1 << 1;
const LSR_THRE: u8 = 1 << 5;
const LSR_TEMT: u8 = 1 << 6;

/// Modem inputs outside loopback: DCD, DSR, CTS.
const MSR_LINES_IDLE: u8 = 0xb0;

const LOOP_FIFO: usize = 16;

/// A 16550A UART.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Uart16550 {
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    dll: u8,
    dlm: u8,
    fifo_enabled: bool,
    /// A THR-empty interrupt is pending (it is reset by reading IIR or writing THR).
    thre_pending: bool,
    /// LSR.OE: a loopback byte was lost.
    overrun: bool,
    /// The modem-status input bits (7:4) and delta bits (3:0).
    msr: u8,
    /// The loopback receive FIFO.
    rx: [u8; LOOP_FIFO],
    rx_head: usize,
    rx_len: usize,
}

impl Uart16550 {
    /// A UART in its reset state.
    pub fn new() -> Uart16550 {
        Uart16550 {
            ier: 0,
            lcr: 0,
            mcr: 0,
            scr: 0,
            // 9600 baud from the 1.8432 MHz clock, as firmware commonly leaves it.
            dll: 12,
            dlm: 0,
            fifo_enabled: false,
            thre_pending: false,
            overrun: false,
            msr: MSR_LINES_IDLE,
            rx: [0; LOOP_FIFO],
            rx_head: 0,
            rx_len: 0,
        }
    }

    fn loopback(&self) -> bool {
        self.mcr & MCR_LOOP != 0
    }

    fn dlab(&self) -> bool {
        self.lcr & LCR_DLAB != 0
    }

    fn data_ready<P: Platform>(&self, console: &mut P) -> bool {
        if self.loopback() {
            self.rx_len > 0
        } else {
            console.console_input_ready()
        }
    }

    /// The modem inputs the current MCR implies.
    fn modem_inputs(mcr: u8) -> u8 {
        if mcr & MCR_LOOP != 0 {
            // DTR -> DSR, RTS -> CTS, OUT1 -> RI, OUT2 -> DCD.
            ((mcr & 1) << 5) | ((mcr & 2) << 3) | ((mcr & 4) << 4) | ((mcr & 8) << 4)
        } else {
            MSR_LINES_IDLE
        }
    }

    /// Set MCR and update the modem inputs and their delta bits.
    fn set_mcr(&mut self, value: u8) {
        self.mcr = value & 0x1f;
        let old = self.msr & 0xf0;
        let new = Self::modem_inputs(self.mcr);
        let changed = old ^ new;
        let mut delta = 0;
        // DCTS, DDSR, DDCD on any change; TERI when RI goes from on to off.
        if changed & 0x10 != 0 {
            delta |= 0x01;
        }
        if changed & 0x20 != 0 {
            delta |= 0x02;
        }
        if changed & 0x40 != 0 && old & 0x40 != 0 {
            delta |= 0x04;
        }
        if changed & 0x80 != 0 {
            delta |= 0x08;
        }
        self.msr = new | (self.msr & 0x0f) | delta;
    }

    /// The interrupt identification IIR would report now (without the FIFO bits).
    fn pending<P: Platform>(&mut self, console: &mut P) -> u8 {
        if self.ier & IER_LSR != 0 && self.overrun {
            IIR_LSR
        } else if self.ier & IER_RX != 0 && self.data_ready(console) {
            IIR_RX
        } else if self.ier & IER_THRE != 0 && self.thre_pending {
            IIR_THRE
        } else if self.ier & IER_MSR != 0 && self.msr & 0x0f != 0 {
            IIR_MSR
        } else {
            IIR_NONE
        }
    }

    /// Whether the UART's interrupt line would be asserted: an enabled interrupt is
    /// pending and MCR.OUT2 connects the line to the interrupt controller.
    pub fn irq_pending<P: Platform>(&mut self, console: &mut P) -> bool {
        self.mcr & MCR_OUT2 != 0 && self.pending(console) != IIR_NONE
    }

    /// Whether console input would raise the interrupt line: the received-data interrupt
    /// is enabled, MCR.OUT2 connects the line, and the UART is not in loopback (where its
    /// input is its own output).
    pub fn console_input_interrupts(&self) -> bool {
        self.ier & IER_RX != 0 && self.mcr & MCR_OUT2 != 0 && !self.loopback()
    }

    /// Read the register at `offset` (0..8) from the base port.
    pub fn read<P: Platform>(&mut self, offset: u8, console: &mut P) -> u8 {
        match offset {
            0 if self.dlab() => self.dll,
            0 => {
                if self.loopback() {
                    if self.rx_len == 0 {
                        return 0;
                    }
                    let b = self.rx[self.rx_head];
                    self.rx_head = (self.rx_head + 1) % LOOP_FIFO;
                    self.rx_len -= 1;
                    b
                } else {
                    console.console_read().unwrap_or(0)
                }
            }
            1 if self.dlab() => self.dlm,
            1 => self.ier,
            2 => {
                let id = self.pending(console);
                // Reading IIR while it reports THR empty acknowledges that interrupt.
                if id == IIR_THRE {
                    self.thre_pending = false;
                }
                id | if self.fifo_enabled { IIR_FIFO } else { 0 }
            }
            3 => self.lcr,
            4 => self.mcr,
            5 => {
                let mut lsr = LSR_THRE | LSR_TEMT;
                if self.data_ready(console) {
                    lsr |= LSR_DR;
                }
                if self.overrun {
                    lsr |= LSR_OE;
                    // Reading LSR clears the error bits.
                    self.overrun = false;
                }
                lsr
            }
            6 => {
                let msr = self.msr;
                // Reading MSR clears the delta bits.
                self.msr &= 0xf0;
                msr
            }
            7 => self.scr,
            _ => 0xff,
        }
    }

    /// Write the register at `offset` (0..8).
    pub fn write<P: Platform>(&mut self, offset: u8, value: u8, console: &mut P) {
        match offset {
            0 if self.dlab() => self.dll = value,
            0 => {
                if self.loopback() {
                    if self.rx_len == LOOP_FIFO || (!self.fifo_enabled && self.rx_len == 1) {
                        self.overrun = true;
                    } else {
                        self.rx[(self.rx_head + self.rx_len) % LOOP_FIFO] = value;
                        self.rx_len += 1;
                    }
                } else {
                    console.console_write(&[value]);
                }
                // The byte leaves at once: THR is empty again.
                self.thre_pending = true;
            }
            1 if self.dlab() => self.dlm = value,
            1 => {
                let value = value & 0x0f;
                // Enabling the THR-empty interrupt while THR is empty (always) raises it.
                if value & IER_THRE != 0 && self.ier & IER_THRE == 0 {
                    self.thre_pending = true;
                }
                self.ier = value;
            }
            2 => {
                let enable = value & FCR_ENABLE != 0;
                // Changing the FIFO mode, or the reset bit, empties the receive FIFO.
                if enable != self.fifo_enabled || value & FCR_CLEAR_RX != 0 {
                    self.rx_len = 0;
                    self.rx_head = 0;
                }
                self.fifo_enabled = enable;
            }
            3 => self.lcr = value,
            4 => self.set_mcr(value),
            7 => self.scr = value,
            // LSR and MSR are read-only (writes are a factory test on real parts).
            _ => {}
        }
    }
}

impl Default for Uart16550 {
    fn default() -> Self {
        Self::new()
    }
}

impl crate::devices::SavedState for Uart16550 {
    fn check_state(&self) -> Result<(), (&'static str, alloc::string::String)> {
        if self.rx_head >= LOOP_FIFO {
            return Err((
                "rx_head",
                alloc::format!("{} (expected below {LOOP_FIFO})", self.rx_head),
            ));
        }
        if self.rx_len > LOOP_FIFO {
            return Err((
                "rx_len",
                alloc::format!("{} (expected at most {LOOP_FIFO})", self.rx_len),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::VecDeque;
    use alloc::vec::Vec;

    #[derive(Default)]
    struct Console {
        out: Vec<u8>,
        input: VecDeque<u8>,
    }

    impl Platform for Console {
        fn now_ns(&self) -> u64 {
            0
        }
        fn wait(&mut self, _deadline_ns: Option<u64>) -> bool {
            false
        }
        fn console_write(&mut self, bytes: &[u8]) {
            self.out.extend_from_slice(bytes);
        }
        fn console_read(&mut self) -> Option<u8> {
            self.input.pop_front()
        }
        fn console_input_ready(&mut self) -> bool {
            !self.input.is_empty()
        }
    }

    #[test]
    fn transmit_and_receive() {
        let mut c = Console::default();
        let mut u = Uart16550::new();
        for &b in b"hi\n" {
            assert_ne!(u.read(5, &mut c) & LSR_THRE, 0);
            u.write(0, b, &mut c);
        }
        assert_eq!(c.out, b"hi\n");
        assert_eq!(u.read(5, &mut c), LSR_THRE | LSR_TEMT);
        assert_eq!(u.read(0, &mut c), 0, "no input: 0");
        c.input.extend(b"ab");
        assert_eq!(u.read(5, &mut c), LSR_THRE | LSR_TEMT | LSR_DR);
        assert_eq!(u.read(0, &mut c), b'a');
        assert_eq!(u.read(0, &mut c), b'b');
        assert_eq!(u.read(5, &mut c) & LSR_DR, 0);
    }

    #[test]
    fn divisor_latch_and_plain_registers() {
        let mut c = Console::default();
        let mut u = Uart16550::new();
        u.write(3, 0x83, &mut c);
        u.write(0, 0x01, &mut c);
        u.write(1, 0x02, &mut c);
        assert!(c.out.is_empty(), "DLL writes are not output");
        assert_eq!((u.read(0, &mut c), u.read(1, &mut c)), (1, 2));
        u.write(3, 0x03, &mut c);
        assert_eq!(u.read(3, &mut c), 0x03);
        assert_eq!(u.read(1, &mut c), 0, "IER is separate from DLM");
        u.write(1, 0xff, &mut c);
        assert_eq!(u.read(1, &mut c), 0x0f);
        u.write(7, 0x5a, &mut c);
        assert_eq!(u.read(7, &mut c), 0x5a);
        u.write(4, 0xff, &mut c);
        assert_eq!(u.read(4, &mut c), 0x1f);
        assert_eq!(u.read(8, &mut c), 0xff);
    }

    #[test]
    fn iir_identification() {
        let mut c = Console::default();
        let mut u = Uart16550::new();
        assert_eq!(u.read(2, &mut c), IIR_NONE);
        u.write(2, 0x07, &mut c);
        assert_eq!(u.read(2, &mut c), IIR_NONE | IIR_FIFO);
        // THR empty: raised when enabled, acknowledged by reading IIR.
        u.write(1, IER_THRE, &mut c);
        assert_eq!(u.read(2, &mut c), IIR_THRE | IIR_FIFO);
        assert_eq!(u.read(2, &mut c), IIR_NONE | IIR_FIFO);
        u.write(0, b'x', &mut c);
        assert_eq!(u.read(2, &mut c), IIR_THRE | IIR_FIFO);
        // Received data outranks THR empty.
        u.write(1, IER_THRE | IER_RX, &mut c);
        u.write(0, b'y', &mut c);
        c.input.push_back(b'z');
        assert_eq!(u.read(2, &mut c), IIR_RX | IIR_FIFO);
        assert_eq!(u.read(0, &mut c), b'z');
        assert_eq!(u.read(2, &mut c), IIR_THRE | IIR_FIFO);
        // The line is gated by OUT2.
        u.write(0, b'w', &mut c);
        assert!(!u.irq_pending(&mut c));
        u.write(4, MCR_OUT2, &mut c);
        assert!(u.irq_pending(&mut c));
        u.write(2, 0, &mut c);
        assert_eq!(u.read(2, &mut c), IIR_THRE);
        assert!(!u.irq_pending(&mut c));
    }

    #[test]
    fn loopback() {
        let mut c = Console::default();
        let mut u = Uart16550::new();
        assert_eq!(u.read(6, &mut c), MSR_LINES_IDLE);
        // Linux's probe: loopback with OUT2 and RTS must read DCD and CTS.
        u.write(4, 0x1a, &mut c);
        assert_eq!(u.read(6, &mut c) & 0xf0, 0x90);
        u.write(4, 0x1f, &mut c);
        assert_eq!(u.read(6, &mut c), 0xf0 | 0x02, "DSR changed");
        u.write(4, 0x10, &mut c);
        // Everything dropped; RI falling sets TERI.
        assert_eq!(u.read(6, &mut c), 0x0f);
        assert_eq!(u.read(6, &mut c), 0x00, "deltas cleared by the read");

        // Bytes loop back instead of going out; without FIFOs one byte fits.
        c.input.push_back(b'c');
        u.write(0, b'1', &mut c);
        u.write(0, b'2', &mut c);
        assert!(c.out.is_empty());
        assert_eq!(u.read(5, &mut c), LSR_THRE | LSR_TEMT | LSR_DR | LSR_OE);
        assert_eq!(
            u.read(5, &mut c),
            LSR_THRE | LSR_TEMT | LSR_DR,
            "OE cleared by reading"
        );
        assert_eq!(u.read(0, &mut c), b'1');
        assert_eq!(
            u.read(5, &mut c) & LSR_DR,
            0,
            "console input is not seen in loopback"
        );
        // With FIFOs sixteen fit.
        u.write(2, FCR_ENABLE, &mut c);
        for b in 0..17u8 {
            u.write(0, b, &mut c);
        }
        assert_ne!(u.read(5, &mut c) & LSR_OE, 0);
        for b in 0..16u8 {
            assert_eq!(u.read(0, &mut c), b);
        }
        assert_eq!(u.read(5, &mut c) & LSR_DR, 0);
        // Line-status interrupt for the overrun, modem-status interrupt for the deltas.
        u.write(1, IER_LSR | IER_MSR, &mut c);
        for b in 0..17u8 {
            u.write(0, b, &mut c);
        }
        assert_eq!(u.read(2, &mut c), IIR_LSR | IIR_FIFO);
        u.write(2, FCR_ENABLE | FCR_CLEAR_RX, &mut c);
        u.read(5, &mut c);
        assert_eq!(u.read(5, &mut c) & LSR_DR, 0, "FIFO cleared");
        u.write(4, 0x11, &mut c);
        assert_eq!(u.read(2, &mut c), IIR_MSR | IIR_FIFO);
        u.read(6, &mut c);
        assert_eq!(u.read(2, &mut c), IIR_NONE | IIR_FIFO);
        // Leaving loopback: output reaches the console again, and input is seen.
        u.write(4, 0, &mut c);
        u.write(0, b'!', &mut c);
        assert_eq!(c.out, b"!");
        assert_eq!(u.read(0, &mut c), b'c');
    }
}
