//! The 8042 keyboard controller at ports 0x60 (data) and 0x64 (status and command), with a
//! PS/2 keyboard attached that answers commands and never has a key pressed.
//!
//! What operating systems need from it on a machine without a real keyboard: the status
//! register, the controller commands firmware and Linux's `drivers/input/serio/i8042.c`
//! send (read and write the command byte, self-test, interface tests, enable and disable
//! the ports, the output port), the keyboard's answers to the commands `atkbd` sends at
//! probe time (reset, identify, set LEDs, scan-code set, typematic rate, enable/disable),
//! and the reset line: pulsing output-port bit 0 (command 0xFE, or writing the output
//! port with bit 0 clear) resets the machine, which is how many kernels reboot.
//!
//! There is no auxiliary (mouse) port: the controller answers the AUX interface test with
//! "clock line stuck low" (0x01), and Linux, whose ACPI tables declare only the keyboard,
//! leaves the AUX port alone. The A20 bit of the output port is stored but not modelled:
//! guest memory never wraps at 1 MiB.
//!
//! The keyboard's interrupt is ISA IRQ 1, edge-triggered: [`I8042::irq1_level`] is high
//! while a byte waits in the output buffer and the command byte enables the interrupt, so
//! every byte placed there makes a rising edge. As on the 8042 (and QEMU's), the
//! controller's own answers (the command byte, test results, the ports) share the output
//! buffer with the keyboard's bytes and raise IRQ 1 the same way; only AUX bytes would
//! raise IRQ 12, and there is no AUX device.

/// The data port.
pub const DATA_PORT: u16 = 0x60;
/// The status (read) and command (write) port.
pub const COMMAND_PORT: u16 = 0x64;

/// Status: output buffer full (a byte waits at port 0x60).
const STATUS_OBF: u8 = 1 << 0;
/// Status: system flag (from the command byte; set after a successful self-test).
const STATUS_SYS: u8 = 1 << 2;
/// Status: the last write was to the command port.
const STATUS_CMD: u8 = 1 << 3;
/// Status: keyboard not inhibited (the keylock is open).
const STATUS_UNLOCKED: u8 = 1 << 4;

/// Command byte: keyboard interrupt enable.
const CTR_KBD_INT: u8 = 1 << 0;
/// Command byte: system flag.
const CTR_SYS: u8 = 1 << 2;
/// Command byte: keyboard clock disabled.
const CTR_KBD_DISABLE: u8 = 1 << 4;
/// Command byte: AUX clock disabled.
const CTR_AUX_DISABLE: u8 = 1 << 5;
/// Command byte: translate scan codes to set 1.
const CTR_XLATE: u8 = 1 << 6;

/// Output port: the CPU reset line (0 = reset asserted).
const OUTPUT_RESET: u8 = 1 << 0;
/// Output port: the A20 gate.
const OUTPUT_A20: u8 = 1 << 1;

/// Keyboard answers.
const KBD_ACK: u8 = 0xfa;
const KBD_RESEND: u8 = 0xfe;
const KBD_BAT_OK: u8 = 0xaa;

/// How many bytes can wait for the guest to read them: a keyboard command's longest
/// answer (ACK plus a two-byte ID) and the byte a controller command returns.
const QUEUE_LEN: usize = 4;

/// A keyboard command that takes a parameter byte, waiting for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum KeyboardArgument {
    /// 0xED: set LEDs.
    Leds,
    /// 0xF0: get or set the scan-code set.
    ScanCodeSet,
    /// 0xF3: set the typematic rate and delay.
    Typematic,
}

/// The 8042 controller and its keyboard.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct I8042 {
    /// The controller's command byte (RAM byte 0).
    command_byte: u8,
    /// The output port (reset line, A20).
    output_port: u8,
    /// A controller command waiting for its parameter at port 0x60.
    pending_command: Option<u8>,
    /// A keyboard command waiting for its parameter.
    keyboard_argument: Option<KeyboardArgument>,
    /// Whether the keyboard scans (0xF4 enables, 0xF5 disables).
    keyboard_scanning: bool,
    /// The keyboard's scan-code set (1, 2 or 3).
    scan_code_set: u8,
    /// The keyboard's LED state.
    leds: u8,
    /// The keyboard's typematic byte.
    typematic: u8,
    /// Bytes for the guest, oldest first.
    queue: [u8; QUEUE_LEN],
    queue_len: usize,
    /// Whether the last write was to the command port.
    last_was_command: bool,
    /// The guest pulsed the reset line and the machine has not yet been told.
    reset_requested: bool,
}

impl Default for I8042 {
    fn default() -> Self {
        Self::new()
    }
}

impl I8042 {
    /// The controller as firmware leaves it: translation on, keyboard interrupt enabled,
    /// system flag set, A20 enabled, the keyboard scanning in set 2.
    pub fn new() -> I8042 {
        I8042 {
            command_byte: CTR_XLATE | CTR_SYS | CTR_KBD_INT | CTR_AUX_DISABLE,
            output_port: OUTPUT_RESET | OUTPUT_A20,
            pending_command: None,
            keyboard_argument: None,
            keyboard_scanning: true,
            scan_code_set: 2,
            leds: 0,
            typematic: 0x2b,
            queue: [0; QUEUE_LEN],
            queue_len: 0,
            last_was_command: false,
            reset_requested: false,
        }
    }

    /// Read port 0x60 (`offset` 0) or 0x64 (`offset` 4).
    pub fn read(&mut self, offset: u8) -> u8 {
        match offset {
            0 => self.pop(),
            4 => self.status(),
            _ => 0xff,
        }
    }

    /// Write port 0x60 (`offset` 0) or 0x64 (`offset` 4).
    pub fn write(&mut self, offset: u8, value: u8) {
        match offset {
            0 => {
                self.last_was_command = false;
                match self.pending_command.take() {
                    Some(command) => self.command_parameter(command, value),
                    None => self.keyboard_byte(value),
                }
            }
            4 => {
                self.last_was_command = true;
                self.command(value);
            }
            _ => {}
        }
    }

    /// Whether the keyboard's interrupt line (ISA IRQ 1) is high.
    pub fn irq1_level(&self) -> bool {
        self.command_byte & CTR_KBD_INT != 0 && self.queue_len > 0
    }

    /// Whether the guest asked for a machine reset since the last call (and forget it).
    pub fn take_reset_request(&mut self) -> bool {
        core::mem::take(&mut self.reset_requested)
    }

    /// Whether the output port's A20 gate is open.
    pub fn a20_enabled(&self) -> bool {
        self.output_port & OUTPUT_A20 != 0
    }

    fn status(&self) -> u8 {
        let mut status = STATUS_UNLOCKED;
        if self.queue_len > 0 {
            status |= STATUS_OBF;
        }
        if self.command_byte & CTR_SYS != 0 {
            status |= STATUS_SYS;
        }
        if self.last_was_command {
            status |= STATUS_CMD;
        }
        status
    }

    /// Take the oldest waiting byte; an empty buffer reads the last byte again, as the
    /// latch of a real controller does.
    fn pop(&mut self) -> u8 {
        if self.queue_len == 0 {
            return self.queue[0];
        }
        let byte = self.queue[0];
        self.queue.copy_within(1..self.queue_len, 0);
        self.queue_len -= 1;
        if self.queue_len == 0 {
            // Keep the byte for repeated reads of an empty buffer.
            self.queue[0] = byte;
        }
        byte
    }

    /// Queue a byte for the guest. A full queue drops the newest byte (nothing here
    /// produces more than [`QUEUE_LEN`] bytes without the guest reading them in between,
    /// except a guest that sends commands without reading the answers).
    fn push(&mut self, byte: u8) {
        if self.queue_len < QUEUE_LEN {
            self.queue[self.queue_len] = byte;
            self.queue_len += 1;
        }
    }

    fn command(&mut self, command: u8) {
        match command {
            // Read byte 0 (the command byte) or bytes 1-31 of the controller's RAM (zeros
            // here).
            0x20 => self.push(self.command_byte),
            0x21..=0x3f => self.push(0),
            // Write RAM: the parameter follows at port 0x60.
            0x60..=0x7f | 0xd1..=0xd4 => self.pending_command = Some(command),
            // Disable and enable the AUX port (there is none: the bit is kept for
            // reading back).
            0xa7 => self.command_byte |= CTR_AUX_DISABLE,
            0xa8 => self.command_byte &= !CTR_AUX_DISABLE,
            // AUX interface test: no device, its clock line reads stuck low.
            0xa9 => self.push(0x01),
            // Controller self-test: passed; it sets the system flag.
            0xaa => {
                self.command_byte |= CTR_SYS;
                self.push(0x55);
            }
            // Keyboard interface test: passed.
            0xab => self.push(0x00),
            // Disable and enable the keyboard port.
            0xad => self.command_byte |= CTR_KBD_DISABLE,
            0xae => self.command_byte &= !CTR_KBD_DISABLE,
            // Read the input port: keylock open, colour display.
            0xc0 => self.push(0xa0),
            // Read the output port.
            0xd0 => self.push(self.output_port),
            // Pulse output lines: a 0 in bit 0 of the mask pulses the reset line.
            0xf0..=0xff if command & 1 == 0 => self.reset_requested = true,
            // Anything else (pulses of the other lines, diagnostic dumps, vendor commands)
            // is ignored.
            _ => {}
        }
    }

    fn command_parameter(&mut self, command: u8, value: u8) {
        match command {
            0x60 => self.command_byte = value & 0x77,
            0x61..=0x7f => {}
            0xd1 => {
                // Writing the output port with the reset line low resets the machine.
                if value & OUTPUT_RESET == 0 {
                    self.reset_requested = true;
                }
                self.output_port = value | OUTPUT_RESET;
            }
            // Write the keyboard's output buffer: the byte reads back as keyboard input.
            0xd2 => self.push(value),
            // Write the AUX output buffer, or a byte to the AUX device: there is no AUX
            // device, so nothing answers.
            0xd3 | 0xd4 => {}
            _ => {}
        }
    }

    /// A byte for the keyboard (port 0x60 without a pending controller command).
    fn keyboard_byte(&mut self, value: u8) {
        // Writing to the keyboard enables its clock, as the controller does.
        self.command_byte &= !CTR_KBD_DISABLE;
        if let Some(argument) = self.keyboard_argument.take() {
            match argument {
                KeyboardArgument::Leds => self.leds = value & 7,
                KeyboardArgument::Typematic => self.typematic = value & 0x7f,
                KeyboardArgument::ScanCodeSet => match value {
                    0 => {
                        self.push(KBD_ACK);
                        self.push(self.scan_code_set);
                        return;
                    }
                    1..=3 => self.scan_code_set = value,
                    _ => {
                        self.push(KBD_RESEND);
                        return;
                    }
                },
            }
            self.push(KBD_ACK);
            return;
        }
        match value {
            0xed => {
                self.keyboard_argument = Some(KeyboardArgument::Leds);
                self.push(KBD_ACK);
            }
            // Echo.
            0xee => self.push(0xee),
            0xf0 => {
                self.keyboard_argument = Some(KeyboardArgument::ScanCodeSet);
                self.push(KBD_ACK);
            }
            // Identify: an MF2 keyboard (0xAB 0x83; with translation the controller turns
            // 0x83 into 0x41, as Linux expects).
            0xf2 => {
                self.push(KBD_ACK);
                self.push(0xab);
                self.push(if self.command_byte & CTR_XLATE != 0 {
                    0x41
                } else {
                    0x83
                });
            }
            0xf3 => {
                self.keyboard_argument = Some(KeyboardArgument::Typematic);
                self.push(KBD_ACK);
            }
            0xf4 => {
                self.keyboard_scanning = true;
                self.push(KBD_ACK);
            }
            // Disable scanning, or restore the defaults and disable.
            0xf5 => {
                self.keyboard_scanning = false;
                self.push(KBD_ACK);
            }
            0xf6 => {
                self.restore_keyboard_defaults();
                self.push(KBD_ACK);
            }
            // Set all keys typematic/make/break (scan-code set 3 attributes): accepted.
            0xf7..=0xfd => self.push(KBD_ACK),
            // Resend the last byte.
            0xfe => {
                let last = self.queue[0];
                self.push(last);
            }
            // Reset: ACK, then the basic assurance test passed.
            0xff => {
                self.restore_keyboard_defaults();
                self.keyboard_scanning = true;
                self.push(KBD_ACK);
                self.push(KBD_BAT_OK);
            }
            _ => self.push(KBD_RESEND),
        }
    }

    fn restore_keyboard_defaults(&mut self) {
        self.keyboard_scanning = false;
        self.scan_code_set = 2;
        self.leds = 0;
        self.typematic = 0x2b;
        self.keyboard_argument = None;
    }
}

impl crate::devices::SavedState for I8042 {
    fn check_state(&self) -> Result<(), (&'static str, alloc::string::String)> {
        if self.queue_len > QUEUE_LEN {
            return Err((
                "queue_len",
                alloc::format!("{} (expected at most {QUEUE_LEN})", self.queue_len),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATA: u8 = 0;
    const CMD: u8 = 4;

    fn command(kbc: &mut I8042, command: u8) -> Option<u8> {
        kbc.write(CMD, command);
        (kbc.read(CMD) & STATUS_OBF != 0).then(|| kbc.read(DATA))
    }

    #[test]
    fn linux_controller_probe() {
        let mut kbc = I8042::new();
        // i8042_controller_check: flush, then the self-test and the command byte.
        assert_eq!(kbc.read(CMD) & STATUS_OBF, 0);
        assert_eq!(command(&mut kbc, 0xaa), Some(0x55));
        let ctr = command(&mut kbc, 0x20).unwrap();
        assert_eq!(ctr & CTR_KBD_INT, CTR_KBD_INT);
        // Write the command byte back without the interrupts, read it back.
        kbc.write(CMD, 0x60);
        kbc.write(DATA, ctr & !CTR_KBD_INT);
        assert_eq!(command(&mut kbc, 0x20), Some(ctr & !CTR_KBD_INT));
        assert_eq!(command(&mut kbc, 0xab), Some(0x00), "keyboard interface OK");
        assert_eq!(command(&mut kbc, 0xa9), Some(0x01), "no AUX device");
        assert_ne!(kbc.read(CMD) & STATUS_SYS, 0);
        assert_ne!(kbc.read(CMD) & STATUS_CMD, 0, "last write was a command");
    }

    #[test]
    fn keyboard_answers_atkbd_probe() {
        let mut kbc = I8042::new();
        kbc.write(DATA, 0xf2);
        assert_eq!(kbc.read(CMD) & STATUS_CMD, 0);
        assert!(kbc.irq1_level(), "the answer raises IRQ 1");
        assert_eq!(
            [kbc.read(DATA), kbc.read(DATA), kbc.read(DATA)],
            [KBD_ACK, 0xab, 0x41]
        );
        assert!(!kbc.irq1_level());
        assert_eq!(kbc.read(CMD) & STATUS_OBF, 0);
        // Reset: ACK and BAT.
        kbc.write(DATA, 0xff);
        assert_eq!([kbc.read(DATA), kbc.read(DATA)], [KBD_ACK, KBD_BAT_OK]);
        // LEDs with their parameter, then scan-code set queries.
        kbc.write(DATA, 0xed);
        assert_eq!(kbc.read(DATA), KBD_ACK);
        kbc.write(DATA, 0x07);
        assert_eq!(kbc.read(DATA), KBD_ACK);
        kbc.write(DATA, 0xf0);
        kbc.write(DATA, 0x00);
        assert_eq!(
            [kbc.read(DATA), kbc.read(DATA), kbc.read(DATA)],
            [KBD_ACK, KBD_ACK, 2]
        );
        kbc.write(DATA, 0xf0);
        kbc.write(DATA, 0x09);
        assert_eq!([kbc.read(DATA), kbc.read(DATA)], [KBD_ACK, KBD_RESEND]);
        kbc.write(DATA, 0x42);
        assert_eq!(kbc.read(DATA), KBD_RESEND, "unknown keyboard command");
        // Without translation the ID is the keyboard's own.
        kbc.write(CMD, 0x60);
        kbc.write(DATA, CTR_KBD_INT);
        kbc.write(DATA, 0xf2);
        assert_eq!(
            [kbc.read(DATA), kbc.read(DATA), kbc.read(DATA)],
            [KBD_ACK, 0xab, 0x83]
        );
    }

    #[test]
    fn interrupt_follows_the_command_byte() {
        let mut kbc = I8042::new();
        kbc.write(CMD, 0x60);
        kbc.write(DATA, 0);
        kbc.write(DATA, 0xee);
        assert!(!kbc.irq1_level(), "keyboard interrupt disabled");
        assert_eq!(kbc.read(DATA), 0xee);
        // Controller answers raise IRQ 1 as the keyboard's bytes do (the 8042 has one
        // output buffer; QEMU's raises IRQ 1 for them too).
        kbc.write(CMD, 0x60);
        kbc.write(DATA, CTR_KBD_INT);
        kbc.write(CMD, 0xaa);
        assert!(kbc.irq1_level(), "the self-test's answer");
        assert_eq!(kbc.read(DATA), 0x55);
        assert!(!kbc.irq1_level());
        kbc.write(CMD, 0x20);
        assert!(kbc.irq1_level(), "the command byte's value");
        assert_eq!(
            kbc.read(DATA),
            CTR_KBD_INT | CTR_SYS,
            "the self-test set SYS"
        );
        // ... but not while the command byte disables the interrupt.
        kbc.write(CMD, 0x60);
        kbc.write(DATA, 0);
        kbc.write(CMD, 0xab);
        assert!(!kbc.irq1_level());
        assert_eq!(kbc.read(DATA), 0x00);
        kbc.write(CMD, 0x60);
        kbc.write(DATA, CTR_KBD_INT);
        // So does writing the keyboard's output buffer.
        kbc.write(CMD, 0xd2);
        kbc.write(DATA, 0x1c);
        assert!(kbc.irq1_level());
        assert_eq!(kbc.read(DATA), 0x1c);
        assert_eq!(kbc.read(DATA), 0x1c, "an empty buffer reads its last byte");
        assert!(!kbc.irq1_level());
    }

    #[test]
    fn reset_line() {
        let mut kbc = I8042::new();
        assert!(!kbc.take_reset_request());
        kbc.write(CMD, 0xfe);
        assert!(kbc.take_reset_request());
        assert!(!kbc.take_reset_request(), "taken once");
        // Pulsing other lines (bit 0 set) does not reset.
        kbc.write(CMD, 0xff);
        assert!(!kbc.take_reset_request());
        // The output port: A20 off keeps running, reset line low resets.
        kbc.write(CMD, 0xd1);
        kbc.write(DATA, OUTPUT_RESET);
        assert!(!kbc.take_reset_request());
        assert!(!kbc.a20_enabled());
        assert_eq!(command(&mut kbc, 0xd0), Some(OUTPUT_RESET));
        kbc.write(CMD, 0xd1);
        kbc.write(DATA, OUTPUT_A20);
        assert!(kbc.take_reset_request());
    }

    #[test]
    fn hostile_sequences_stay_bounded() {
        let mut kbc = I8042::new();
        // Commands whose answers nobody reads: the queue stays bounded.
        for _ in 0..1000 {
            kbc.write(DATA, 0xf2);
            kbc.write(CMD, 0x20);
        }
        let mut read = 0;
        while kbc.read(CMD) & STATUS_OBF != 0 {
            kbc.read(DATA);
            read += 1;
        }
        assert!(read <= QUEUE_LEN);
        // Every port value, both ports, in any order: no panic.
        for value in 0..=255u8 {
            kbc.write(CMD, value);
            kbc.write(DATA, value);
            kbc.read(DATA);
            kbc.read(CMD);
            kbc.write(2, value);
            kbc.read(2);
        }
    }
}
