//! Platform devices, one per file, the port-I/O and MMIO buses they register on, and
//! [`Devices`], the set a PC machine has.
//!
//! The set is what Linux and QEMU-targeted kernels look for on a PC (QEMU's `-M pc`
//! without its graphics and disks): COM1, the 8259 pair and the I/O APIC ([`IrqChip`]),
//! the PIT with port 0x61, the CMOS RTC, the 8042 with a keyboard, PCI configuration
//! mechanism #1 with a host bridge and the reset control register, the ACPI PM block,
//! QEMU's fw_cfg, and QEMU's debug-exit port and the POST-code port; QEMU's ISA test
//! device when the machine is given one ([`attach_pc_testdev`]). Which port each
//! answers on is [`register_ports`]; the exit handlers dispatch by `match` on
//! [`bus::PioDevice`] and [`bus::MmioDevice`].

pub mod acpi_pm;
pub mod bus;
pub mod debug_exit;
pub mod fw_cfg;
pub mod i8042;
pub mod ioapic;
pub mod nmi_status_control;
pub mod pc_testdev;
pub mod pci;
pub mod pic;
pub mod pit;
pub mod post_code;
pub mod reset_control;
pub mod rtc;
pub mod uart;

use crate::irq::IrqChip;
use crate::mmu::memory::GuestMemory;
use acpi_pm::{AcpiPm, PmBlock};
use bus::{Bus, MmioDevice, PioDevice};
use fw_cfg::{FwCfg, FwCfgConfig};
use i8042::I8042;
use nmi_status_control::NmiStatusControl;
use pc_testdev::{PcTestdev, TestdevPorts};
use pci::PciHost;
use pit::Pit;
use post_code::PostCode;
use reset_control::ResetControl;
use rtc::{CmosConfig, Rtc};
use uart::Uart16550;

/// The ISA IRQ COM1's interrupt output drives.
pub const COM1_IRQ: u32 = 4;
/// The ISA IRQ the keyboard controller's keyboard port drives.
pub const KEYBOARD_IRQ: u32 = 1;

/// The platform devices of one machine (shared by its vCPUs; each vCPU's local APIC is
/// its own).
#[derive(Debug)]
pub struct Devices {
    /// COM1.
    pub com1: Uart16550,
    /// Port 0x80.
    pub post_code: PostCode,
    /// The interrupt controllers (8259 pair, I/O APIC) and the lines that feed them.
    pub irqchip: IrqChip,
    /// The 8254 PIT.
    pub pit: Pit,
    /// Port 0x61.
    pub nmi_status_control: NmiStatusControl,
    /// The CMOS RTC.
    pub rtc: Rtc,
    /// The 8042 keyboard controller.
    pub keyboard: I8042,
    /// The PCI host bridge's configuration space.
    pub pci: PciHost,
    /// The reset control register (0xCF9).
    pub reset_control: ResetControl,
    /// The ACPI PM registers.
    pub acpi_pm: AcpiPm,
    /// QEMU's fw_cfg.
    pub fw_cfg: FwCfg,
    /// QEMU's ISA test device, if the machine was given one ([`attach_pc_testdev`]).
    pub pc_testdev: Option<PcTestdev>,
}

impl Devices {
    /// The devices of a PC with `vcpus` vCPUs (APIC IDs 0 to `vcpus` - 1) and the RAM of
    /// `mem`, as firmware leaves them: the CMOS CPU count and fw_cfg's NB_CPUS and
    /// MAX_CPUS say `vcpus`, the CMOS clock is set from `wall_clock_ns` (the host's time
    /// of day), the timers count from `now` (machine nanoseconds).
    pub fn new(mem: &GuestMemory, vcpus: u16, wall_clock_ns: u64, now: u64) -> Devices {
        let (below_4g, above_4g) = mem.regions().iter().fold((0u64, 0u64), |(lo, hi), r| {
            let below = r.end().min(1 << 32).saturating_sub(r.gpa());
            (lo + below, hi + (r.size() - below))
        });
        let cmos = CmosConfig {
            ram_below_4g: below_4g,
            ram_above_4g: above_4g,
            cpus: u32::from(vcpus),
        };
        Devices {
            com1: Uart16550::new(),
            post_code: PostCode::default(),
            irqchip: IrqChip::new(),
            pit: Pit::new(now),
            nmi_status_control: NmiStatusControl::new(),
            rtc: Rtc::new(&cmos, wall_clock_ns, now),
            keyboard: I8042::new(),
            pci: PciHost::new(),
            reset_control: ResetControl::default(),
            acpi_pm: AcpiPm::new(false, now),
            fw_cfg: FwCfg::new(FwCfgConfig {
                nb_cpus: vcpus,
                max_cpus: vcpus,
                ram_size: mem.ram_size(),
                nographic: true,
                dma: true,
            }),
            pc_testdev: None,
        }
    }

    /// The earliest machine time at which a platform timer (the PIT's channel 0, the
    /// RTC, the ACPI PM timer) raises an interrupt that could reach a CPU: timers whose
    /// line is masked at both the PIC and the I/O APIC ([`IrqChip::line_unmasked`]) are
    /// left out, so a halted guest is not woken by them and the emulator's run slice does
    /// not end for them.
    pub fn next_deadline(&self) -> Option<u64> {
        // A masked line's deadline is not computed at all: the run loop asks at every
        // clock read.
        let unmasked = |line: u32| self.irqchip.line_unmasked(line);
        let pit = unmasked(pit::PIT_IRQ)
            .then(|| self.pit.next_deadline())
            .flatten();
        let rtc = unmasked(rtc::RTC_IRQ)
            .then(|| self.rtc.next_deadline())
            .flatten();
        let sci = unmasked(u32::from(crate::acpi::SCI_IRQ))
            .then(|| self.acpi_pm.next_deadline())
            .flatten();
        [pit, rtc, sci].into_iter().flatten().min()
    }

    /// The first machine time at which a platform timer moves one of its interrupt lines
    /// by itself, masked or not (the PIT's next IRQ 0 edge, the RTC's IRQ 8 and the ACPI
    /// PM timer's SCI rising), as of their last update; `None` if none ever does without
    /// an access to their ports.
    pub fn next_timer_line_change(&self) -> Option<u64> {
        [
            self.pit.next_irq_edge(),
            self.rtc.next_deadline(),
            self.acpi_pm.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// Put every platform device on the buses (the local APIC's page is registered by the VM,
/// since it moves with IA32_APIC_BASE).
pub fn register_ports(pio: &mut Bus<PioDevice>, mmio: &mut Bus<MmioDevice>) {
    use crate::acpi;
    let ports: [(u16, u16, PioDevice); 17] = [
        (pic::PIC_MASTER_BASE, 2, PioDevice::Pic),
        (pic::PIC_SLAVE_BASE, 2, PioDevice::Pic),
        (pic::ELCR_BASE, 2, PioDevice::Pic),
        (pit::PIT_BASE, pit::PIT_PORTS, PioDevice::Pit),
        (
            nmi_status_control::NMI_STATUS_CONTROL_PORT,
            1,
            PioDevice::NmiStatusControl,
        ),
        (i8042::DATA_PORT, 1, PioDevice::Keyboard),
        (i8042::COMMAND_PORT, 1, PioDevice::Keyboard),
        (rtc::RTC_BASE, rtc::RTC_PORTS, PioDevice::Rtc),
        (post_code::POST_CODE_PORT, 1, PioDevice::PostCode),
        (debug_exit::DEBUG_EXIT_PORT, 4, PioDevice::DebugExit),
        (uart::COM1_BASE, 8, PioDevice::Com1),
        (
            fw_cfg::FW_CFG_PORT_BASE,
            fw_cfg::FW_CFG_PORT_LEN,
            PioDevice::FwCfg,
        ),
        (pci::PCI_PORT_BASE, pci::PCI_PORT_LEN, PioDevice::PciConfig),
        (
            acpi::PM1A_EVENT_PORT,
            PmBlock::Pm1aEvent.size(),
            PioDevice::AcpiPm(PmBlock::Pm1aEvent),
        ),
        (
            acpi::PM1A_CONTROL_PORT,
            PmBlock::Pm1aControl.size(),
            PioDevice::AcpiPm(PmBlock::Pm1aControl),
        ),
        (
            acpi::PM_TIMER_PORT,
            PmBlock::Timer.size(),
            PioDevice::AcpiPm(PmBlock::Timer),
        ),
        (
            acpi::GPE0_PORT,
            PmBlock::Gpe0.size(),
            PioDevice::AcpiPm(PmBlock::Gpe0),
        ),
    ];
    for (base, len, device) in ports {
        // The ranges are disjoint constants (a test checks it): registration cannot
        // conflict.
        let _ = pio.register(u64::from(base), u64::from(len), device);
    }
    let _ = mmio.register(ioapic::IOAPIC_BASE, ioapic::IOAPIC_SIZE, MmioDevice::IoApic);
}

/// Give the machine QEMU's ISA test device (`-device pc-testdev`): its ports (0xE0-0xEB,
/// 0x2000-0x2017) and its MMIO window (0xFF000000, 64 KiB) on the buses and its state in
/// `devices`. Refused, with the first range that is taken, if anything already answers
/// there (a second attach included); nothing is changed then.
pub fn attach_pc_testdev(
    devices: &mut Devices,
    pio: &mut Bus<PioDevice>,
    mmio: &mut Bus<MmioDevice>,
) -> Result<(), bus::BusConflict> {
    use pc_testdev::{
        FLUSH_PORT, IOMEM_BASE, IOMEM_LEN, IRQ_LINE_BASE, IRQ_LINE_PORTS, PORT_BLOCK_LEN,
        SCRATCH_BYTES_PORT, SCRATCH_PORT,
    };
    let ports = [
        (SCRATCH_PORT, PORT_BLOCK_LEN, TestdevPorts::Scratch),
        (FLUSH_PORT, PORT_BLOCK_LEN, TestdevPorts::Flush),
        (
            SCRATCH_BYTES_PORT,
            PORT_BLOCK_LEN,
            TestdevPorts::ScratchBytes,
        ),
        (IRQ_LINE_BASE, IRQ_LINE_PORTS, TestdevPorts::IrqLines),
    ];
    let (mut new_pio, mut new_mmio) = (pio.clone(), mmio.clone());
    for (base, len, block) in ports {
        new_pio.register(u64::from(base), u64::from(len), PioDevice::PcTestdev(block))?;
    }
    new_mmio.register(IOMEM_BASE, IOMEM_LEN, MmioDevice::PcTestdevIomem)?;
    *pio = new_pio;
    *mmio = new_mmio;
    devices.pc_testdev = Some(PcTestdev::new());
    Ok(())
}

/// A device's saved state ([`crate::snapshot`]) read back from a file: the invariants
/// its code relies on, checked before the state is used, so that a damaged or hostile
/// snapshot is refused rather than indexing out of bounds or overflowing later.
pub trait SavedState {
    /// `Err((field, problem))` for the first field that breaks an invariant.
    fn check_state(&self) -> Result<(), (&'static str, alloc::string::String)>;
}

/// Times in saved states are machine nanoseconds: anything from 2^62 on (146 years) is
/// refused, so that the timers' arithmetic on them cannot overflow.
pub const MAX_SAVED_TIME_NS: u64 = 1 << 62;

/// `Err` naming `field` when the time `t` is [`MAX_SAVED_TIME_NS`] or later.
pub(crate) fn check_time(
    field: &'static str,
    t: u64,
) -> Result<(), (&'static str, alloc::string::String)> {
    if t >= MAX_SAVED_TIME_NS {
        return Err((
            field,
            alloc::format!("time {t} ns is beyond the 2^62 ns a saved clock may reach"),
        ));
    }
    Ok(())
}

/// Devices whose every field value is valid.
macro_rules! any_state_is_valid {
    ($($t:ty),*) => {$(
        impl SavedState for $t {
            fn check_state(&self) -> Result<(), (&'static str, alloc::string::String)> {
                Ok(())
            }
        }
    )*};
}

any_state_is_valid!(
    NmiStatusControl,
    PostCode,
    ResetControl,
    PciHost,
    crate::devices::ioapic::IoApic
);

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn every_port_range_is_registered() {
        let mut pio = Bus::new();
        let mut mmio = Bus::new();
        register_ports(&mut pio, &mut mmio);
        for (port, device) in [
            (0x20, PioDevice::Pic),
            (0xa1, PioDevice::Pic),
            (0x4d1, PioDevice::Pic),
            (0x43, PioDevice::Pit),
            (0x61, PioDevice::NmiStatusControl),
            (0x60, PioDevice::Keyboard),
            (0x64, PioDevice::Keyboard),
            (0x71, PioDevice::Rtc),
            (0x80, PioDevice::PostCode),
            (0xf4, PioDevice::DebugExit),
            (0x3ff, PioDevice::Com1),
            (0x511, PioDevice::FwCfg),
            (0x51b, PioDevice::FwCfg),
            (0xcf9, PioDevice::PciConfig),
            (0xcff, PioDevice::PciConfig),
            (0x601, PioDevice::AcpiPm(PmBlock::Pm1aEvent)),
            (0x605, PioDevice::AcpiPm(PmBlock::Pm1aControl)),
            (0x60b, PioDevice::AcpiPm(PmBlock::Timer)),
            (0x623, PioDevice::AcpiPm(PmBlock::Gpe0)),
        ] {
            assert_eq!(
                pio.find(port).map(|(d, _)| d),
                Some(device),
                "port {port:#x}"
            );
        }
        for port in [0x62, 0x65, 0x606, 0x60c, 0x624, 0x3f7] {
            assert_eq!(pio.find(port), None, "port {port:#x}");
        }
        assert_eq!(
            mmio.find(0xfec0_0010).map(|(d, _)| d),
            Some(MmioDevice::IoApic)
        );
    }

    #[test]
    fn pc_testdev_attaches_once() {
        let mut pio = Bus::new();
        let mut mmio = Bus::new();
        register_ports(&mut pio, &mut mmio);
        let mem = GuestMemory::with_ram(2 << 20).expect("memory");
        let mut devices = Devices::new(&mem, 1, 0, 0);
        assert_eq!(pio.find(0xe0), None);
        attach_pc_testdev(&mut devices, &mut pio, &mut mmio).expect("free ranges");
        assert!(devices.pc_testdev.is_some());
        for (port, device, offset) in [
            (0xe3, TestdevPorts::Scratch, 3),
            (0xe4, TestdevPorts::Flush, 0),
            (0xeb, TestdevPorts::ScratchBytes, 3),
            (0x2000, TestdevPorts::IrqLines, 0),
            (0x2017, TestdevPorts::IrqLines, 23),
        ] {
            assert_eq!(
                pio.find(port),
                Some((PioDevice::PcTestdev(device), offset)),
                "port {port:#x}"
            );
        }
        assert_eq!(pio.find(0xec), None);
        assert_eq!(pio.find(0x2018), None);
        assert_eq!(
            mmio.find(0xff00_ffff),
            Some((MmioDevice::PcTestdevIomem, 0xffff))
        );
        assert_eq!(mmio.find(0xff01_0000), None);
        // A second device would overlap the first: refused, the buses unchanged.
        let (pio_before, mmio_before) = (pio.clone(), mmio.clone());
        assert_eq!(
            attach_pc_testdev(&mut devices, &mut pio, &mut mmio),
            Err(bus::BusConflict { start: 0xe0 })
        );
        assert_eq!(format!("{pio:?}"), format!("{pio_before:?}"));
        assert_eq!(format!("{mmio:?}"), format!("{mmio_before:?}"));
    }
}
