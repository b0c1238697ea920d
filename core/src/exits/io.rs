//! Port I/O: dispatched on the port bus by `match` on the device. A port no device claims
//! reads as all ones and ignores writes, as on a PC whose bus has nothing there.
//!
//! The byte-wide devices (the UART, the PIC, the PIT, port 0x61, the 8042, the RTC, port
//! 0x80) take a wider access as byte accesses to consecutive ports; fw_cfg, PCI
//! configuration and the ACPI PM blocks have registers of their own widths. After an
//! access the device's interrupt line is brought up to date, a timer whose next deadline
//! moved makes the run loop read the clock again, and the guest's requests to power off
//! or reset end the run.

use crate::acpi::{S5_SLEEP_TYPE, SCI_IRQ};
use crate::devices::acpi_pm::PmBlock;
use crate::devices::bus::PioDevice;
use crate::devices::rtc::RTC_IRQ;
use crate::devices::KEYBOARD_IRQ;
use crate::devices::{debug_exit, i8042};
use crate::exit::Direction;
use crate::ops::X86Ops;
use crate::platform::Platform;
use crate::vm::{Flow, RunOutcome, Vm};

/// A `size`-byte read of a byte-wide device: byte `i` from `read(i)`.
#[inline]
fn read_bytes(size: u8, mut read: impl FnMut(u16) -> u8) -> u32 {
    (0..u16::from(size)).fold(0u32, |v, i| v | u32::from(read(i)) << (8 * i))
}

/// The offset of the reset control register (byte port 0xCF9) in the PCI port range.
const RESET_CONTROL_OFFSET: u16 = 1;

/// The bits of a port access of `size` bytes.
#[inline(always)]
fn port_mask(size: u8) -> u32 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        _ => 0xffff_ffff,
    }
}

/// Complete a port access of `size` bytes that no device claims: a read gets all ones, a
/// write is dropped. The run loop's handler, and the quick path's (see `exits::quick`).
#[inline(always)]
pub(crate) fn unclaimed_port_access<B: X86Ops, P: Platform>(
    direction: Direction,
    size: u8,
    backend: &mut B,
    platform: &mut P,
) {
    match direction {
        Direction::Read => {
            let value = port_mask(size);
            backend.complete_pio_in(value);
            platform.observe_read(u64::from(value));
        }
        Direction::Write => backend.skip_emulated_instruction(),
    }
}

impl<B: X86Ops, P: Platform> Vm<B, P> {
    pub(crate) fn handle_io(
        &mut self,
        port: u16,
        size: u8,
        direction: Direction,
        data: u32,
    ) -> Flow {
        let Some((device, offset)) = self.pio.find(u64::from(port)) else {
            unclaimed_port_access(
                direction,
                size,
                &mut self.vcpus[self.cur].backend,
                &mut self.platform,
            );
            return Flow::Resume;
        };
        let mask = port_mask(size);
        match direction {
            Direction::Read => {
                let (value, flow) = self.port_read(device, port, offset as u16, size);
                self.vcpu().backend.complete_pio_in(value & mask);
                self.platform.observe_read(u64::from(value & mask));
                flow
            }
            Direction::Write => {
                self.vcpu().backend.skip_emulated_instruction();
                self.port_write(device, port, offset as u16, size, data & mask)
            }
        }
    }

    /// Read `size` bytes from `device` at `port` (`offset` from the start of its range).
    fn port_read(&mut self, device: PioDevice, port: u16, offset: u16, size: u8) -> (u32, Flow) {
        match device {
            PioDevice::Com1 => {
                let v = read_bytes(size, |i| {
                    let reg = (offset.wrapping_add(i) & 7) as u8;
                    self.devices.com1.read(reg, &mut self.platform)
                });
                (v, self.com1_flow())
            }
            PioDevice::Pic => {
                let apics = &mut self.vcpus[..];
                let irqchip = &mut self.devices.irqchip;
                let v = read_bytes(size, |i| irqchip.pic_read(port.wrapping_add(i), apics));
                (v, Flow::Events)
            }
            PioDevice::Pit => {
                let now = self.now_ns();
                self.timers_quiet_until = 0;
                let pit = &mut self.devices.pit;
                (
                    read_bytes(size, |i| pit.read(offset.wrapping_add(i), now)),
                    Flow::Resume,
                )
            }
            PioDevice::NmiStatusControl => {
                let now = self.now_ns();
                self.timers_quiet_until = 0;
                let d = &mut self.devices;
                let v = d.nmi_status_control.read(&mut d.pit, now);
                (u32::from(v) | !0xff, Flow::Resume)
            }
            PioDevice::Keyboard => {
                let keyboard = &mut self.devices.keyboard;
                let v = read_bytes(size, |i| keyboard.read((port.wrapping_add(i) & 0xf) as u8));
                // Reading the data port empties the output buffer, which drops IRQ 1; a
                // byte waiting behind it is loaded next and raises it again: one edge per
                // byte, as Linux's handler (one byte per interrupt) needs.
                if port == i8042::DATA_PORT {
                    self.set_irq(KEYBOARD_IRQ, false);
                }
                (v, self.keyboard_flow())
            }
            PioDevice::Rtc => {
                let now = self.now_ns();
                self.timers_quiet_until = 0;
                let before = self.devices.rtc.next_deadline();
                let rtc = &mut self.devices.rtc;
                let v = read_bytes(size, |i| rtc.read(offset.wrapping_add(i), now));
                (v, self.rtc_flow(before))
            }
            PioDevice::PostCode => (
                u32::from(self.devices.post_code.read()) | !0xff,
                Flow::Resume,
            ),
            PioDevice::DebugExit => (!0, Flow::Resume),
            PioDevice::FwCfg => (
                self.devices.fw_cfg.io_read(offset, size, &self.mem),
                Flow::Resume,
            ),
            PioDevice::PciConfig => {
                if offset == RESET_CONTROL_OFFSET && size == 1 {
                    (u32::from(self.devices.reset_control.read()), Flow::Resume)
                } else {
                    (self.devices.pci.io_read(offset, size), Flow::Resume)
                }
            }
            PioDevice::AcpiPm(block) => {
                let now = self.now_ns();
                self.timers_quiet_until = 0;
                let before = self.devices.acpi_pm.next_deadline();
                let v = self.devices.acpi_pm.read(block, offset, size, now);
                (v, self.acpi_pm_flow(before))
            }
            PioDevice::PcTestdev(ports) => {
                let v = self
                    .devices
                    .pc_testdev
                    .as_ref()
                    .map_or(!0, |d| d.port_read(ports, offset, size));
                (v, Flow::Resume)
            }
        }
    }

    /// Write the low `size` bytes of `value` to `device` at `port` (`offset` from the
    /// start of its range).
    fn port_write(
        &mut self,
        device: PioDevice,
        port: u16,
        offset: u16,
        size: u8,
        value: u32,
    ) -> Flow {
        let byte = |i: u16| (value >> (8 * i)) as u8;
        match device {
            PioDevice::Com1 => {
                for i in 0..u16::from(size) {
                    let reg = (offset.wrapping_add(i) & 7) as u8;
                    self.devices.com1.write(reg, byte(i), &mut self.platform);
                }
                self.com1_flow()
            }
            PioDevice::Pic => {
                let apics = &mut self.vcpus[..];
                for i in 0..u16::from(size) {
                    self.devices
                        .irqchip
                        .pic_write(port.wrapping_add(i), byte(i), apics);
                }
                // Unmasking a line can make a platform timer's deadline matter.
                Flow::Clock
            }
            PioDevice::Pit => {
                let now = self.now_ns();
                self.timers_quiet_until = 0;
                for i in 0..u16::from(size) {
                    self.devices.pit.write(offset.wrapping_add(i), byte(i), now);
                }
                // A new count or mode moves channel 0's next interrupt.
                Flow::Clock
            }
            PioDevice::NmiStatusControl => {
                let now = self.now_ns();
                self.timers_quiet_until = 0;
                let d = &mut self.devices;
                d.nmi_status_control.write(byte(0), &mut d.pit, now);
                Flow::Resume
            }
            PioDevice::Keyboard => {
                for i in 0..u16::from(size) {
                    let port = (port.wrapping_add(i) & 0xf) as u8;
                    self.devices.keyboard.write(port, byte(i));
                }
                if self.devices.keyboard.take_reset_request() {
                    return self.stop(RunOutcome::Reset);
                }
                self.keyboard_flow()
            }
            PioDevice::Rtc => {
                let now = self.now_ns();
                self.timers_quiet_until = 0;
                let before = self.devices.rtc.next_deadline();
                for i in 0..u16::from(size) {
                    self.devices.rtc.write(offset.wrapping_add(i), byte(i), now);
                }
                self.rtc_flow(before)
            }
            PioDevice::PostCode => {
                self.devices.post_code.write(byte(0));
                Flow::Resume
            }
            PioDevice::DebugExit => self.stop(RunOutcome::DebugExit {
                status: debug_exit::exit_status(value),
            }),
            PioDevice::FwCfg => {
                self.devices
                    .fw_cfg
                    .io_write(offset, size, value, &mut self.mem);
                Flow::Resume
            }
            PioDevice::PciConfig => {
                if offset == RESET_CONTROL_OFFSET && size == 1 {
                    self.devices.reset_control.write(byte(0));
                    if self.devices.reset_control.take_reset_request() {
                        return self.stop(RunOutcome::Reset);
                    }
                } else {
                    self.devices.pci.io_write(offset, size, value);
                }
                Flow::Resume
            }
            PioDevice::AcpiPm(block) => {
                let now = self.now_ns();
                self.timers_quiet_until = 0;
                let before = self.devices.acpi_pm.next_deadline();
                self.devices.acpi_pm.write(block, offset, size, value, now);
                if block == PmBlock::Pm1aControl {
                    // Only the sleep state the DSDT declares (`\_S5`) exists; a request
                    // for any other leaves the machine running, as a chipset without that
                    // state does.
                    if self.devices.acpi_pm.take_sleep_request() == Some(S5_SLEEP_TYPE) {
                        return self.stop(RunOutcome::PowerOff);
                    }
                }
                self.acpi_pm_flow(before)
            }
            PioDevice::PcTestdev(ports) => {
                let line = self
                    .devices
                    .pc_testdev
                    .as_mut()
                    .and_then(|d| d.port_write(ports, offset, size, value));
                match line {
                    Some((line, level)) if self.set_irq(line, level) => Flow::Events,
                    _ => Flow::Resume,
                }
            }
        }
    }

    /// After a COM1 access: its interrupt line follows the UART.
    fn com1_flow(&mut self) -> Flow {
        if self.update_com1_irq() {
            Flow::Events
        } else {
            Flow::Resume
        }
    }

    /// After an 8042 access: IRQ 1 follows the keyboard's output buffer.
    fn keyboard_flow(&mut self) -> Flow {
        let level = self.devices.keyboard.irq1_level();
        if self.set_irq(KEYBOARD_IRQ, level) {
            Flow::Events
        } else {
            Flow::Resume
        }
    }

    /// After an RTC access: IRQ 8 follows register C, and a moved deadline (periodic rate,
    /// alarm, update interrupts) needs the clock read again.
    fn rtc_flow(&mut self, deadline_before: Option<u64>) -> Flow {
        let level = self.devices.rtc.irq_level();
        let line_changed = self.set_irq(RTC_IRQ, level);
        if self.devices.rtc.next_deadline() != deadline_before {
            Flow::Clock
        } else if line_changed {
            Flow::Events
        } else {
            Flow::Resume
        }
    }

    /// After an ACPI PM access: the SCI follows the status and enable bits.
    fn acpi_pm_flow(&mut self, deadline_before: Option<u64>) -> Flow {
        let level = self.devices.acpi_pm.sci_level();
        let line_changed = self.set_irq(u32::from(SCI_IRQ), level);
        if self.devices.acpi_pm.next_deadline() != deadline_before {
            Flow::Clock
        } else if line_changed {
            Flow::Events
        } else {
            Flow::Resume
        }
    }
}
