//! Port I/O: dispatched on the port bus. A port no device claims reads as all ones and
//! ignores writes, as on a PC whose bus has nothing there. The byte-wide devices (the
//! UART, the PIC) take a wider access as byte accesses to consecutive ports. After a COM1
//! access its interrupt line is brought up to date; after a PIC access what the CPU may
//! take is looked at again.

use crate::devices::bus::PioDevice;
use crate::devices::debug_exit;
use crate::exit::Direction;
use crate::ops::X86Ops;
use crate::platform::Platform;
use crate::vm::{Flow, RunOutcome, Vm};

impl<B: X86Ops, P: Platform> Vm<B, P> {
    pub(crate) fn handle_io(
        &mut self,
        port: u16,
        size: u8,
        direction: Direction,
        data: u32,
    ) -> Flow {
        let mask = match size {
            1 => 0xff,
            2 => 0xffff,
            _ => 0xffff_ffff,
        };
        let device = self.pio.find(u64::from(port));
        match direction {
            Direction::Read => {
                let value = match device {
                    // Multi-byte reads of the byte-wide UART read consecutive registers.
                    Some((PioDevice::Com1, offset)) => {
                        let mut v = 0u32;
                        for i in 0..u32::from(size) {
                            let byte = self
                                .devices
                                .com1
                                .read((offset as u8).wrapping_add(i as u8) & 7, &mut self.platform);
                            v |= u32::from(byte) << (8 * i);
                        }
                        v
                    }
                    Some((PioDevice::Pic, _)) => {
                        let apics = core::slice::from_mut(&mut self.apic);
                        let mut v = 0u32;
                        for i in 0..u16::from(size) {
                            let byte = self.devices.irqchip.pic_read(port.wrapping_add(i), apics);
                            v |= u32::from(byte) << (8 * i);
                        }
                        self.vcpu.complete_pio_in(v & mask);
                        return Flow::Events;
                    }
                    Some((PioDevice::PostCode, _)) => {
                        u32::from(self.devices.post_code.read()) | !0xff
                    }
                    Some((PioDevice::DebugExit, _)) | None => !0,
                };
                self.vcpu.complete_pio_in(value & mask);
                if matches!(device, Some((PioDevice::Com1, _))) && self.update_com1_irq() {
                    Flow::Events
                } else {
                    Flow::Resume
                }
            }
            Direction::Write => {
                self.vcpu.skip_emulated_instruction();
                match device {
                    Some((PioDevice::Com1, offset)) => {
                        for i in 0..u32::from(size) {
                            let byte = (data >> (8 * i)) as u8;
                            self.devices.com1.write(
                                (offset as u8).wrapping_add(i as u8) & 7,
                                byte,
                                &mut self.platform,
                            );
                        }
                        if self.update_com1_irq() {
                            Flow::Events
                        } else {
                            Flow::Resume
                        }
                    }
                    Some((PioDevice::Pic, _)) => {
                        let apics = core::slice::from_mut(&mut self.apic);
                        for i in 0..u16::from(size) {
                            self.devices.irqchip.pic_write(
                                port.wrapping_add(i),
                                (data >> (8 * i)) as u8,
                                apics,
                            );
                        }
                        Flow::Events
                    }
                    Some((PioDevice::DebugExit, _)) => self.stop(RunOutcome::DebugExit {
                        status: debug_exit::exit_status(data & mask),
                    }),
                    Some((PioDevice::PostCode, _)) => {
                        self.devices.post_code.write(data as u8);
                        Flow::Resume
                    }
                    None => Flow::Resume,
                }
            }
        }
    }
}
