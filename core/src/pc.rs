//! The PC machine's firmware side: what a BIOS leaves for an operating system before its
//! kernel runs. opsvisor enters kernels directly (no firmware code runs in the guest), so
//! the core writes the ACPI tables itself and fills QEMU's fw_cfg with what QEMU's
//! `-kernel` boot puts there; the devices themselves are [`crate::devices::Devices`].
//!
//! Memory: the ACPI tables live in the BIOS area 0xE0000-0xFFFFF ([`ACPI_AREA`]), which
//! every memory map the loaders give (e820, multiboot, PVH) marks reserved, and where
//! BIOS-era kernels scan for the RSDP.

use crate::acpi::{build_tables, AcpiConfig, AcpiError, AcpiLayout};
use crate::devices::fw_cfg::{FwCfgData, FwCfgError};
use crate::loader::e820::MemoryMap;
use crate::loader::linux::LinuxLayout;
use crate::mmu::memory::GuestMemory;
use crate::ops::X86Ops;
use crate::platform::Platform;
use crate::vm::Vm;
use core::ops::Range;

/// The start of the 32-bit MMIO hole: RAM below 4 GiB ends here at the latest and
/// continues at 4 GiB; the I/O APIC, the local APICs and other devices live above it.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;

/// Where the ACPI tables go: the upper 128 KiB of the first megabyte.
pub const ACPI_AREA: Range<u64> = 0xe_0000..0x10_0000;

/// Write the ACPI tables of a PC with `vcpus` vCPUs and the RAM of `mem` into
/// [`ACPI_AREA`]; the layout says where the RSDP is, for loaders that pass it to the
/// kernel.
pub fn build_acpi(mem: &mut GuestMemory, vcpus: u32) -> Result<AcpiLayout, AcpiError> {
    // Without low RAM there is no hole to describe; a machine that small cannot hold the
    // tables either, and the builder says so.
    let low_ram_end = MemoryMap::new(mem).low_ram_end().unwrap_or(ACPI_AREA.end);
    let config = AcpiConfig::pc(vcpus, low_ram_end);
    build_tables(
        mem,
        ACPI_AREA.start,
        ACPI_AREA.end - ACPI_AREA.start,
        &config,
    )
}

impl<B: X86Ops, P: Platform> Vm<B, P> {
    /// Leave the machine as firmware leaves it for the kernel it loaded: every vCPU's
    /// MTRRs programmed (write-back memory, the MMIO hole below 4 GiB uncacheable), and the
    /// boot described in fw_cfg as QEMU does: the memory map as the `etc/e820` file, and
    /// for a Linux kernel the kernel, initrd and command-line items, each pointing at what
    /// the loader put in guest memory (`linux`; its second part is the command line).
    pub fn finish_firmware(
        &mut self,
        linux: Option<(&LinuxLayout, &[u8])>,
    ) -> Result<(), FwCfgError> {
        // Firmware programs the MTRRs of every processor alike (INIT keeps them).
        for v in &mut self.vcpus {
            v.msrs.program_firmware_mtrrs(MMIO_HOLE_START);
        }
        let map = match linux {
            Some((layout, _)) => layout.memory_map.clone(),
            None => MemoryMap::new(&self.mem),
        };
        let fw_cfg = &mut self.devices.fw_cfg;
        fw_cfg.add_e820(map.entries().iter().map(|e| (e.addr, e.size, e.kind)))?;
        let Some((layout, cmdline)) = linux else {
            return Ok(());
        };
        let item = |range: &Range<u64>, mem: &GuestMemory| {
            let addr = u32::try_from(range.start)
                .map_err(|_| FwCfgError::AddressAbove4G { addr: range.start })?;
            Ok::<_, FwCfgError>((
                addr,
                FwCfgData::guest_memory(mem, range.start, range.end - range.start)?,
            ))
        };
        let (addr, data) = item(&layout.kernel, &self.mem)?;
        fw_cfg.set_kernel(addr, data)?;
        if let Some(initrd) = &layout.initrd {
            let (addr, data) = item(initrd, &self.mem)?;
            fw_cfg.set_initrd(addr, data)?;
        }
        let cmdline_addr =
            u32::try_from(layout.cmdline).map_err(|_| FwCfgError::AddressAbove4G {
                addr: layout.cmdline,
            })?;
        fw_cfg.set_cmdline(cmdline_addr, cmdline)
    }
}
