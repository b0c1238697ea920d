//! MMIO: the vCPU's own local APIC page first, then dispatched on the machine's MMIO bus.
//! Guest-physical addresses with no device read as all ones and ignore writes.

use crate::apic::LocalApic;
use crate::devices::bus::MmioDevice;
use crate::exit::Direction;
use crate::ops::X86Ops;
use crate::platform::Platform;
use crate::vm::{Flow, Vm};

/// Whether the xAPIC register at `offset` belongs to the timer (LVT timer, initial and
/// current count, divide configuration): accessing it needs the current time.
pub(crate) fn apic_register_is_timer(offset: u32) -> bool {
    // One bit per register from 0x300 (0x320, 0x380, 0x390, 0x3e0): a shift and a test
    // where the comparisons were a chain of branches on every APIC access.
    const TIMER: u16 = 1 << 2 | 1 << 8 | 1 << 9 | 1 << 14;
    let index = (offset >> 4).wrapping_sub(0x30);
    offset & 0xf == 0 && index < 16 && TIMER & (1 << index) != 0
}

/// Where `gpa` falls in `apic`'s xAPIC page, if it does (in x2APIC mode, or with the
/// APIC disabled, there is none).
#[inline(always)]
pub(crate) fn xapic_page_offset(apic: &LocalApic, gpa: u64) -> Option<u64> {
    let offset = gpa.wrapping_sub(apic.mmio_base()?);
    (offset < 0x1000).then_some(offset)
}

/// The bytes an MMIO access of `size` bytes covers: `size` (1 to 8) and its mask.
#[inline(always)]
pub(crate) fn mmio_size_mask(size: u8) -> (u64, u64) {
    let size = u64::from(size.clamp(1, 8));
    let mask = if size == 8 {
        u64::MAX
    } else {
        (1u64 << (8 * size)) - 1
    };
    (size, mask)
}

/// Complete a read of `size` bytes (`mask` their bits) at `offset` in `apic`'s xAPIC
/// page, its registers read at TSC `now`: the run loop's handler, and the quick path's
/// for a register other than the timer's (see `exits::quick`).
#[inline(always)]
pub(crate) fn local_apic_read<B: X86Ops, P: Platform>(
    apic: &mut LocalApic,
    now: u64,
    offset: u64,
    size: u64,
    mask: u64,
    backend: &mut B,
    platform: &mut P,
) {
    // APIC registers are 32 bits wide at 16-byte strides; narrower reads take bytes of the
    // containing dword, an 8-byte read takes two dwords.
    let dword = (offset & !3) as u32;
    let lo = u64::from(apic.mmio_read(dword, now));
    let hi = if size == 8 {
        u64::from(apic.mmio_read(dword.wrapping_add(4) & 0xfff, now))
    } else {
        0
    };
    let value = ((hi << 32 | lo) >> (8 * (offset & 3))) & mask;
    backend.complete_mmio(Some(value));
    platform.observe_read(value);
}

impl<B: X86Ops, P: Platform> Vm<B, P> {
    pub(crate) fn handle_mmio(
        &mut self,
        gpa: u64,
        size: u8,
        direction: Direction,
        data: u64,
    ) -> Flow {
        let (size, mask) = mmio_size_mask(size);
        // The local APIC's page is the vCPU's own: an access there reaches its APIC
        // before the bus is looked at (KVM's `vcpu_mmio_read`).
        if let Some(offset) = xapic_page_offset(&self.vcpus[self.cur].apic, gpa) {
            return self.local_apic_mmio(offset, size, mask, direction, data);
        }
        match (self.mmio.find(gpa), direction) {
            (Some((MmioDevice::IoApic, offset)), Direction::Read) => {
                let value = self.devices.irqchip.ioapic_read(offset, size as u8);
                self.vcpu()
                    .backend
                    .complete_mmio(Some(u64::from(value) & mask));
                self.platform.observe_read(u64::from(value) & mask);
                Flow::Resume
            }
            (Some((MmioDevice::IoApic, offset)), Direction::Write) => {
                self.vcpu().backend.complete_mmio(None);
                self.devices.irqchip.ioapic_write(
                    offset,
                    size as u8,
                    data as u32,
                    &mut self.vcpus[..],
                );
                // Unmasking a pin can make a platform timer's deadline matter.
                Flow::Clock
            }
            (Some((MmioDevice::PcTestdevIomem, offset)), Direction::Read) => {
                let value = self
                    .devices
                    .pc_testdev
                    .as_ref()
                    .map_or(mask, |d| d.iomem_read(offset, size as u8) & mask);
                self.vcpu().backend.complete_mmio(Some(value));
                self.platform.observe_read(value);
                Flow::Resume
            }
            (Some((MmioDevice::PcTestdevIomem, offset)), Direction::Write) => {
                self.vcpu().backend.complete_mmio(None);
                if let Some(d) = self.devices.pc_testdev.as_mut() {
                    d.iomem_write(offset, size as u8, data);
                }
                Flow::Resume
            }
            (None, Direction::Read) => {
                self.vcpu().backend.complete_mmio(Some(mask));
                self.platform.observe_read(mask);
                Flow::Resume
            }
            (None, Direction::Write) => {
                self.vcpu().backend.complete_mmio(None);
                Flow::Resume
            }
        }
    }

    /// An access of `size` bytes at `offset` in the current vCPU's xAPIC page.
    fn local_apic_mmio(
        &mut self,
        offset: u64,
        size: u64,
        mask: u64,
        direction: Direction,
        data: u64,
    ) -> Flow {
        match direction {
            Direction::Read => {
                if apic_register_is_timer(offset as u32 & !3) {
                    self.catch_up_clock();
                }
                let v = &mut self.vcpus[self.cur];
                let now = v.limit.tsc;
                local_apic_read(
                    &mut v.apic,
                    now,
                    offset,
                    size,
                    mask,
                    &mut v.backend,
                    &mut self.platform,
                );
                Flow::Resume
            }
            Direction::Write => {
                self.vcpu().backend.complete_mmio(None);
                // The SDM leaves sub-dword APIC writes undefined; they are dropped here.
                let timer = apic_register_is_timer(offset as u32 & !3);
                if size >= 4 && offset & 3 == 0 {
                    if timer {
                        self.catch_up_clock();
                    }
                    let v = self.vcpu();
                    let now = v.limit.tsc;
                    v.apic.mmio_write(offset as u32, data as u32, now);
                    if size == 8 {
                        v.apic
                            .mmio_write((offset as u32 + 4) & 0xfff, (data >> 32) as u32, now);
                    }
                    // A write to the ICR sent an IPI.
                    self.route_ipi();
                }
                // EOI, TPR and IPIs change what is pending; the timer registers also
                // change the next deadline.
                if timer {
                    Flow::Clock
                } else {
                    Flow::Events
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_timer_registers_are_the_four_of_the_sdm() {
        let timer: alloc::vec::Vec<u32> = (0..0x1000)
            .filter(|&o| super::apic_register_is_timer(o))
            .collect();
        assert_eq!(timer, [0x320, 0x380, 0x390, 0x3e0]);
    }
}
