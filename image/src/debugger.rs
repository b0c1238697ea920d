//! The GDB stub on COM2 (`gdb` and `gdb-wait` on the command line): gdb's remote
//! protocol over the host's second 16550 (port 0x2F8, polled, 115200 8N1), served by
//! [`opsvisor_gdb::stub::HwStub`] on the VMX or SVM backend. The emulator runners
//! (Bochs and QEMU) connect COM2 to a TCP socket that gdb's `target remote` reaches
//! (`cargo xtask bochs-vmx GUEST --gdb PORT`).
//!
//! With `gdb-wait` the guest stops before its first instruction until gdb continues it
//! (QEMU's `-S`); with `gdb` alone it runs from the start and the stub looks at COM2
//! between slices of its run: the first byte from gdb stops it and begins the session.
//! When gdb detaches (or its connection breaks) the guest runs on to its end; gdb's
//! `kill` ends the run.

use crate::log;
use gdbstub::conn::{Connection, ConnectionExt};
use opsvisor_bare::uart::{Uart16550, COM2_BASE};
use opsvisor_core::ops::X86Ops;
use opsvisor_core::platform::Platform;
use opsvisor_core::vm::{RunOutcome, Vm};
use opsvisor_gdb::stub::{HwStub, SessionEnd};

/// Host time the guest runs between two looks at COM2 (gdb's Ctrl-C, or its first
/// packet).
const SLICE_NS: u64 = 20_000_000;

/// COM2 as gdb's connection: a byte read ahead by `peek` is the next `read`'s.
struct Com2 {
    uart: Uart16550,
    peeked: Option<u8>,
}

/// The connection's error: none can happen on a polled UART that is present.
#[derive(Debug)]
enum Com2Error {}

impl Com2 {
    /// COM2, programmed; `Err` when no UART answers there.
    fn open() -> Result<Com2, &'static str> {
        // A byte waits at most 1,000,000 LSR polls for the transmitter.
        let uart = Uart16550::new(COM2_BASE, 1_000_000);
        if !uart.present() {
            return Err(
                "no UART answers at COM2 (port 0x2f8): give the machine a second serial port",
            );
        }
        uart.init();
        Ok(Com2 { uart, peeked: None })
    }

    /// Whether gdb has sent something.
    fn has_input(&mut self) -> bool {
        if self.peeked.is_none() {
            self.peeked = self.uart.read_byte();
        }
        self.peeked.is_some()
    }
}

impl Connection for Com2 {
    type Error = Com2Error;

    fn write(&mut self, byte: u8) -> Result<(), Com2Error> {
        self.uart.write_byte(byte);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Com2Error> {
        Ok(())
    }
}

impl ConnectionExt for Com2 {
    fn read(&mut self) -> Result<u8, Com2Error> {
        loop {
            if let Some(b) = self.peeked.take().or_else(|| self.uart.read_byte()) {
                return Ok(b);
            }
            core::hint::spin_loop();
        }
    }

    fn peek(&mut self) -> Result<Option<u8>, Com2Error> {
        self.has_input();
        Ok(self.peeked)
    }
}

/// Run `vm` to its end with the stub on COM2; `wait`: stopped for gdb before the first
/// instruction.
pub fn run<B: X86Ops, P: Platform>(
    vm: &mut Vm<B, P>,
    wait: bool,
) -> Result<RunOutcome, &'static str> {
    let mut com2 = Com2::open()?;
    log!(
        "gdb stub on COM2 (port 0x2f8){}",
        if wait {
            ": the guest waits for gdb to continue it"
        } else {
            ""
        }
    );
    if !wait {
        let limit = vm.config.timeout_ns;
        vm.config.timeout_ns = Some(SLICE_NS);
        loop {
            match vm.run() {
                RunOutcome::Timeout if !com2.has_input() => {}
                RunOutcome::Timeout => break,
                end => {
                    vm.config.timeout_ns = limit;
                    return Ok(end);
                }
            }
        }
        vm.config.timeout_ns = limit;
    }
    log!("gdb attached");
    Ok(match HwStub::new(vm, SLICE_NS).serve(com2) {
        SessionEnd::Ended(end) => end,
        SessionEnd::Killed => RunOutcome::Failed("gdb killed the run".into()),
        SessionEnd::Detached => {
            log!("gdb detached: the guest runs on");
            vm.run()
        }
        SessionEnd::ConnectionLost => {
            log!("gdb's connection broke: the guest runs on");
            vm.run()
        }
    })
}
