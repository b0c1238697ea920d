//! Snapshots: a whole machine saved to bytes and restored from them (the counterpart of
//! QEMU's `savevm`/`loadvm` and firecracker's snapshot files).
//!
//! A snapshot holds every vCPU's architectural state ([`crate::ops::VcpuState`]: general,
//! segment and control registers, the x87/SSE image, the backend-held MSRs, the interrupt
//! shadow, an injected event, and what only the backend has), each vCPU's local APIC
//! (its timer included), core-held MSRs and run state, every platform device, the CPUID
//! policy, the machine clock and the scheduler's turn, and guest RAM (pages that are all
//! zero left out). The layout is `docs/snapshot.md`, version [`VERSION`]:
//!
//! ```text
//! header   magic "OPSVSNAP", version u32, flags u32 (0), section count u32, reserved u32 (0)
//! section  tag [u8; 4], index u32, length u64, body (length bytes)   ... count times
//! trailer  crc32 u32 (IEEE, of every byte before it)
//! ```
//!
//! All numbers little-endian. The bodies are state structs encoded field by field
//! ([`codec`]); the RAM section has its own page list. Times in the devices and the
//! local APICs are on the machine clock ([`crate::vm::Vm::now_ns`]), which the snapshot
//! carries ([`MachineSection::clock_ns`]): a restored machine's clock goes on from there,
//! so every timer keeps the time it had left.
//!
//! Reading never panics and refuses bad input with one [`SnapshotError`] naming the
//! section and the field. Host memory is bounded by the machine the caller built: RAM is
//! written into the caller's [`GuestMemory`], whose layout must match the file's, and no
//! length read from the file reserves memory beyond the bytes the file actually has.

pub mod codec;
mod ram;

use crate::apic::LocalApic;
use crate::cpuid::CpuidPolicy;
use crate::devices::acpi_pm::AcpiPm;
use crate::devices::fw_cfg::FwCfg;
use crate::devices::i8042::I8042;
use crate::devices::nmi_status_control::NmiStatusControl;
use crate::devices::pc_testdev::PcTestdev;
use crate::devices::pci::PciHost;
use crate::devices::pit::Pit;
use crate::devices::post_code::PostCode;
use crate::devices::reset_control::ResetControl;
use crate::devices::rtc::Rtc;
use crate::devices::uart::Uart16550;
use crate::devices::SavedState;
use crate::irq::IrqChip;
use crate::msr::MsrState;
use crate::ops::{VcpuState, X86Ops};
use crate::platform::Platform;
use crate::vcpu::MpState;
use crate::vm::{Vm, MAX_VCPUS};
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// The first eight bytes of a snapshot file.
pub const MAGIC: [u8; 8] = *b"OPSVSNAP";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
/// Bytes of the header.
pub const HEADER_LEN: usize = 24;
/// Bytes of a section's header (tag, index, length).
pub const SECTION_HEADER_LEN: usize = 16;
/// Bytes of the trailer (the checksum).
pub const TRAILER_LEN: usize = 4;

/// A snapshot refused (or a machine that could not be saved): the section, the field and
/// what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotError {
    /// The section (`header`, `trailer`, or a section's name such as `pit` or `vcpu 1`).
    pub section: String,
    /// The field, as a path from the section's top (`channels[0].count`); empty for the
    /// section as a whole.
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

impl SnapshotError {
    /// An error in `section`, field `field`.
    pub fn new(section: &str, field: &str, problem: impl Into<String>) -> SnapshotError {
        SnapshotError {
            section: section.into(),
            field: field.into(),
            problem: problem.into(),
        }
    }
}

impl core::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.field.is_empty() {
            write!(f, "snapshot section '{}': {}", self.section, self.problem)
        } else {
            write!(
                f,
                "snapshot section '{}', field '{}': {}",
                self.section, self.field, self.problem
            )
        }
    }
}

/// The sections of version 1, in the order they are written: tag, name.
const SECTIONS: [(&[u8; 4], &str); 16] = [
    (b"MACH", "machine"),
    (b"CPID", "cpuid"),
    (b"VCPU", "vcpu"),
    (b"COM1", "com1"),
    (b"IRQC", "irqchip"),
    (b"PIT ", "pit"),
    (b"P61 ", "port61"),
    (b"RTC ", "rtc"),
    (b"KBD ", "i8042"),
    (b"PCI ", "pci"),
    (b"RSTC", "reset_control"),
    (b"ACPI", "acpi_pm"),
    (b"FWCF", "fw_cfg"),
    (b"P80 ", "post_code"),
    (b"TDEV", "pc_testdev"),
    (b"RAM ", "ram"),
];

/// The position in [`SECTIONS`] of QEMU's test device, present only in a machine that
/// has one ([`MachineSection::pc_testdev`]).
const PC_TESTDEV: usize = 14;
/// The position in [`SECTIONS`] of guest RAM.
const RAM: usize = 15;

/// The machine as a whole: its shape (what the caller must build before restoring into
/// it) and the run loop's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineSection {
    /// Guest RAM: (guest-physical address, size) of each region, in address order.
    pub ram: Vec<(u64, u64)>,
    /// vCPUs.
    pub vcpus: u32,
    /// [`crate::vm::VmConfig::icount`].
    pub icount: bool,
    /// [`crate::vm::VmConfig::time_slice`].
    pub time_slice: u64,
    /// [`crate::vm::VmConfig::exits_per_clock_read`].
    pub exits_per_clock_read: u32,
    /// [`crate::vm::VmConfig::smp_turn`].
    pub smp_turn: u64,
    /// [`crate::vm::VmConfig::smp_turn_ns`].
    pub smp_turn_ns: u64,
    /// The machine clock when the snapshot was taken.
    pub clock_ns: u64,
    /// The time the icount clock skipped while idle.
    pub idle_ns: u64,
    /// The vCPU whose turn it was.
    pub cur: u32,
    /// The machine has QEMU's ISA test device (`--device pc-testdev`).
    pub pc_testdev: bool,
    /// The run stopped in the middle of that turn (see [`crate::vm::Vm`]'s run loop).
    pub resume_turn: bool,
    /// Machine time at which that turn ends.
    pub turn_end_ns: u64,
    /// That vCPU's instruction count at which the turn ends.
    pub turn_end_retired: u64,
}

/// One vCPU as saved (the borrowed form of [`VcpuSectionIn`]; same encoding).
#[derive(Serialize)]
struct VcpuSectionOut<'a> {
    state: &'a VcpuState,
    apic: &'a LocalApic,
    msrs: &'a MsrState,
    mp_state: MpState,
    irq_window: bool,
    nmi_window: bool,
}

/// One vCPU as read.
#[derive(Deserialize)]
struct VcpuSectionIn {
    state: VcpuState,
    apic: LocalApic,
    msrs: MsrState,
    mp_state: MpState,
    irq_window: bool,
    nmi_window: bool,
}

/// A CPUID leaf: leaf, subleaf, EAX, EBX, ECX, EDX.
type CpuidLeaf = (u32, u32, [u32; 4]);

fn put_section(out: &mut Vec<u8>, tag: &[u8; 4], index: u32, body: &[u8]) {
    out.extend_from_slice(tag);
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
}

/// Save the whole machine. The vCPUs must be at an instruction boundary between runs
/// (after [`Vm::run`] returned); a backend that cannot save its state mid-way through
/// something refuses, and the error names the vCPU. Every timer is first brought up to
/// the machine clock (as the run loop's next clock read would), so that the file holds
/// each device as of the one time it records, whenever the run loop last looked.
pub fn save<B: X86Ops, P: Platform>(vm: &mut Vm<B, P>) -> Result<Vec<u8>, SnapshotError> {
    let now = vm.now_ns();
    for v in &mut vm.vcpus {
        let tsc = v.ns_to_tsc(now);
        v.apic.update(tsc);
    }
    // In full: the file records each timer as of `now`.
    vm.timers_quiet_until = 0;
    vm.update_platform_timers(now);
    let vm: &Vm<B, P> = vm;
    let mut sections: Vec<(&[u8; 4], u32, Vec<u8>)> = Vec::new();
    let machine = MachineSection {
        ram: vm
            .mem
            .regions()
            .iter()
            .map(|r| (r.gpa(), r.size()))
            .collect(),
        vcpus: vm.vcpus.len() as u32,
        icount: vm.config.icount,
        time_slice: vm.config.time_slice,
        exits_per_clock_read: vm.config.exits_per_clock_read,
        smp_turn: vm.config.smp_turn,
        smp_turn_ns: vm.config.smp_turn_ns,
        clock_ns: vm.now_ns(),
        idle_ns: vm.idle_ns,
        cur: vm.cur as u32,
        pc_testdev: vm.devices.pc_testdev.is_some(),
        resume_turn: vm.resume_turn,
        turn_end_ns: vm.turn_end_ns,
        turn_end_retired: vm.turn_end_retired,
    };
    sections.push((SECTIONS[0].0, 0, codec::encode(&machine)));
    let cpuid: Vec<CpuidLeaf> = vm
        .cpuid
        .entries()
        .iter()
        .map(|e| (e.leaf, e.subleaf, e.regs))
        .collect();
    sections.push((SECTIONS[1].0, 0, codec::encode(&cpuid)));
    for (i, v) in vm.vcpus.iter().enumerate() {
        let state = v.backend.save_state().map_err(|e| {
            SnapshotError::new(&alloc::format!("vcpu {i}"), "state", alloc::format!("{e}"))
        })?;
        let out = VcpuSectionOut {
            state: &state,
            apic: &v.apic,
            msrs: &v.msrs,
            mp_state: v.mp_state,
            irq_window: v.irq_window,
            nmi_window: v.nmi_window,
        };
        sections.push((SECTIONS[2].0, i as u32, codec::encode(&out)));
    }
    let d = &vm.devices;
    sections.push((SECTIONS[3].0, 0, codec::encode(&d.com1)));
    sections.push((SECTIONS[4].0, 0, codec::encode(&d.irqchip)));
    sections.push((SECTIONS[5].0, 0, codec::encode(&d.pit)));
    sections.push((SECTIONS[6].0, 0, codec::encode(&d.nmi_status_control)));
    sections.push((SECTIONS[7].0, 0, codec::encode(&d.rtc)));
    sections.push((SECTIONS[8].0, 0, codec::encode(&d.keyboard)));
    sections.push((SECTIONS[9].0, 0, codec::encode(&d.pci)));
    sections.push((SECTIONS[10].0, 0, codec::encode(&d.reset_control)));
    sections.push((SECTIONS[11].0, 0, codec::encode(&d.acpi_pm)));
    sections.push((SECTIONS[12].0, 0, codec::encode(&d.fw_cfg)));
    sections.push((SECTIONS[13].0, 0, codec::encode(&d.post_code)));
    if let Some(testdev) = &d.pc_testdev {
        sections.push((SECTIONS[PC_TESTDEV].0, 0, codec::encode(testdev)));
    }

    let ram_len = ram::encoded_len(&vm.mem);
    let fixed: usize = sections
        .iter()
        .map(|(_, _, b)| SECTION_HEADER_LEN + b.len())
        .sum();
    let mut out =
        Vec::with_capacity(HEADER_LEN + fixed + SECTION_HEADER_LEN + ram_len + TRAILER_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&((sections.len() + 1) as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    for (tag, index, body) in &sections {
        put_section(&mut out, tag, *index, body);
    }
    out.extend_from_slice(SECTIONS[RAM].0);
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(ram_len as u64).to_le_bytes());
    ram::encode(&vm.mem, &mut out);
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// One section of a parsed file.
struct Section<'a> {
    /// Its name (`vcpu 2` for the third vCPU's).
    name: String,
    /// Position in [`SECTIONS`].
    kind: usize,
    index: u32,
    body: &'a [u8],
}

/// A parsed file: its sections, checked for structure and checksum, bodies not decoded.
struct Parsed<'a> {
    sections: Vec<Section<'a>>,
    machine: MachineSection,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, section: &str, field: &str) -> Result<&'a [u8], SnapshotError> {
        let left = self.bytes.len() - self.pos;
        if n > left {
            return Err(SnapshotError::new(
                section,
                field,
                alloc::format!("truncated: {n} bytes needed, {left} left in the file"),
            ));
        }
        let b = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(b)
    }
    fn u32(&mut self, section: &str, field: &str) -> Result<u32, SnapshotError> {
        let b = self.take(4, section, field)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, section: &str, field: &str) -> Result<u64, SnapshotError> {
        let lo = u64::from(self.u32(section, field)?);
        let hi = u64::from(self.u32(section, field)?);
        Ok(lo | (hi << 32))
    }
}

fn tag_text(tag: &[u8]) -> String {
    tag.iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect()
}

/// The header's fields: magic, version, flags, the section count, reserved.
fn parse_header(c: &mut Cursor<'_>) -> Result<u32, SnapshotError> {
    let magic = c.take(8, "header", "magic")?;
    if magic != MAGIC {
        return Err(SnapshotError::new(
            "header",
            "magic",
            alloc::format!(
                "'{}' is not an opsvisor snapshot (expected 'OPSVSNAP')",
                tag_text(magic)
            ),
        ));
    }
    let version = c.u32("header", "version")?;
    if version != VERSION {
        return Err(SnapshotError::new(
            "header",
            "version",
            alloc::format!("version {version}; this opsvisor reads version {VERSION}"),
        ));
    }
    let flags = c.u32("header", "flags")?;
    if flags != 0 {
        return Err(SnapshotError::new(
            "header",
            "flags",
            alloc::format!("{flags:#x}; version {VERSION} defines none (expected 0)"),
        ));
    }
    let count = c.u32("header", "section_count")?;
    let reserved = c.u32("header", "reserved")?;
    if reserved != 0 {
        return Err(SnapshotError::new(
            "header",
            "reserved",
            alloc::format!("{reserved:#x} (expected 0)"),
        ));
    }
    Ok(count)
}

/// The machine section from the start of a file (`prefix` need hold only the header and
/// that section; nothing after it is checked): how much RAM the machine has, to bound
/// how much of the file is worth reading.
pub fn peek_machine(prefix: &[u8]) -> Result<MachineSection, SnapshotError> {
    let mut c = Cursor {
        bytes: prefix,
        pos: 0,
    };
    parse_header(&mut c)?;
    let tag = c.take(4, "section 0", "tag")?;
    if tag != b"MACH" {
        return Err(SnapshotError::new(
            "section 0",
            "tag",
            alloc::format!(
                "'{}' where the machine section must come first",
                tag_text(tag)
            ),
        ));
    }
    c.u32("machine", "index")?;
    let len = c.u64("machine", "length")?;
    let body = c.take(
        usize::try_from(len).unwrap_or(usize::MAX),
        "machine",
        "length",
    )?;
    let machine: MachineSection = codec::decode("machine", body)?;
    check_machine(&machine, machine.vcpus)?;
    Ok(machine)
}

/// The file's structure: header, section headers and lengths, the set of sections,
/// the trailer and its checksum, and the machine section.
fn parse(bytes: &[u8]) -> Result<Parsed<'_>, SnapshotError> {
    let mut c = Cursor { bytes, pos: 0 };
    let count = parse_header(&mut c)?;
    // Each section takes its header at least: a count the file cannot hold is refused
    // before anything is reserved for it.
    let room = (bytes.len().saturating_sub(HEADER_LEN + TRAILER_LEN)) / SECTION_HEADER_LEN;
    if count as usize > room {
        return Err(SnapshotError::new(
            "header",
            "section_count",
            alloc::format!(
                "{count} sections do not fit in the file's {} bytes",
                bytes.len()
            ),
        ));
    }
    let mut sections = Vec::with_capacity(count as usize);
    let mut seen = [false; SECTIONS.len()];
    let mut vcpus_seen = 0u32;
    for n in 0..count {
        let at = alloc::format!("section {n}");
        let tag = c.take(4, &at, "tag")?;
        let Some(kind) = SECTIONS.iter().position(|(t, _)| &t[..] == tag) else {
            return Err(SnapshotError::new(
                &at,
                "tag",
                alloc::format!("unknown section '{}'", tag_text(tag)),
            ));
        };
        let base = SECTIONS[kind].1;
        let index = c.u32(base, "index")?;
        let name = if kind == 2 {
            alloc::format!("vcpu {index}")
        } else {
            String::from(base)
        };
        let len = c.u64(&name, "length")?;
        let left = (bytes.len() - c.pos) as u64;
        if len > left.saturating_sub(TRAILER_LEN as u64) {
            return Err(SnapshotError::new(
                &name,
                "length",
                alloc::format!("{len} bytes, but the file has {left} left (truncated?)"),
            ));
        }
        let body = c.take(len as usize, &name, "body")?;
        if kind == 2 {
            if index != vcpus_seen {
                return Err(SnapshotError::new(
                    &name,
                    "index",
                    alloc::format!("vCPU {index} where vCPU {vcpus_seen} comes next"),
                ));
            }
            vcpus_seen += 1;
        } else {
            if index != 0 {
                return Err(SnapshotError::new(
                    &name,
                    "index",
                    alloc::format!("{index} (expected 0)"),
                ));
            }
            if seen[kind] {
                return Err(SnapshotError::new(
                    &name,
                    "tag",
                    "the section appears twice",
                ));
            }
        }
        if kind == 0 && n != 0 {
            return Err(SnapshotError::new(
                &name,
                "tag",
                "the machine section must come first",
            ));
        }
        seen[kind] = true;
        sections.push(Section {
            name,
            kind,
            index,
            body,
        });
    }
    let stored = c.u32("trailer", "crc32")?;
    if c.pos != bytes.len() {
        return Err(SnapshotError::new(
            "trailer",
            "crc32",
            alloc::format!("{} bytes after the trailer", bytes.len() - c.pos),
        ));
    }
    let computed = crc32(&bytes[..bytes.len() - TRAILER_LEN]);
    if stored != computed {
        return Err(SnapshotError::new(
            "trailer",
            "crc32",
            alloc::format!(
                "checksum {stored:#010x}, but the contents give {computed:#010x} (the file is damaged)"
            ),
        ));
    }
    let Some(first) = sections.first().filter(|s| s.kind == 0) else {
        return Err(SnapshotError::new(
            SECTIONS[0].1,
            "",
            "the section is missing",
        ));
    };
    let machine: MachineSection = codec::decode("machine", first.body)?;
    check_machine(&machine, vcpus_seen)?;
    // Every section is there, and the test device's exactly when the machine has one.
    for (kind, &present) in seen.iter().enumerate() {
        let expected = kind != PC_TESTDEV || machine.pc_testdev;
        if present && !expected {
            return Err(SnapshotError::new(
                SECTIONS[kind].1,
                "tag",
                "the section is there, but the machine section says the machine has no such device",
            ));
        }
        if !present && expected {
            return Err(SnapshotError::new(
                SECTIONS[kind].1,
                "",
                "the section is missing",
            ));
        }
    }
    Ok(Parsed { sections, machine })
}

fn check_machine(m: &MachineSection, vcpus_seen: u32) -> Result<(), SnapshotError> {
    let bad = |field: &str, problem: String| Err(SnapshotError::new("machine", field, problem));
    if m.vcpus == 0 || m.vcpus as usize > MAX_VCPUS {
        return bad(
            "vcpus",
            alloc::format!("{} (expected 1 to {MAX_VCPUS})", m.vcpus),
        );
    }
    if m.vcpus != vcpus_seen {
        return bad(
            "vcpus",
            alloc::format!("{} but the file has {vcpus_seen} vCPU sections", m.vcpus),
        );
    }
    if m.cur >= m.vcpus {
        return bad(
            "cur",
            alloc::format!("vCPU {} of a machine of {}", m.cur, m.vcpus),
        );
    }
    let mut end = 0u64;
    for (i, &(gpa, size)) in m.ram.iter().enumerate() {
        let field = alloc::format!("ram[{i}]");
        if gpa % 4096 != 0 || size % 4096 != 0 || size == 0 {
            return bad(
                &field,
                alloc::format!("{size:#x} bytes at {gpa:#x}: not whole pages"),
            );
        }
        if gpa < end || gpa.checked_add(size).is_none() {
            return bad(
                &field,
                alloc::format!("{size:#x} bytes at {gpa:#x} overlap or wrap"),
            );
        }
        end = gpa + size;
    }
    Ok(())
}

/// What a caller must build before restoring: the machine section of `bytes`, after the
/// whole file's structure and checksum were checked.
pub fn machine_info(bytes: &[u8]) -> Result<MachineSection, SnapshotError> {
    parse(bytes).map(|p| p.machine)
}

/// The decoded device sections, all of them checked before anything is applied.
struct DeviceStates {
    com1: Uart16550,
    irqchip: IrqChip,
    pit: Pit,
    port61: NmiStatusControl,
    rtc: Rtc,
    keyboard: I8042,
    pci: PciHost,
    reset_control: ResetControl,
    acpi_pm: AcpiPm,
    fw_cfg: FwCfg,
    post_code: PostCode,
    pc_testdev: Option<PcTestdev>,
}

fn body<'a>(parsed: &'a Parsed<'_>, kind: usize) -> &'a [u8] {
    // `parse` made sure every kind is present.
    parsed
        .sections
        .iter()
        .find(|s| s.kind == kind)
        .map_or(&[][..], |s| s.body)
}

fn decode_checked<'a, T: Deserialize<'a> + crate::devices::SavedState>(
    name: &'static str,
    bytes: &'a [u8],
) -> Result<T, SnapshotError> {
    let value: T = codec::decode(name, bytes)?;
    value
        .check_state()
        .map_err(|(field, problem)| SnapshotError::new(name, field, problem))?;
    Ok(value)
}

/// Restore `bytes` into `vm`, which the caller built with the shape
/// [`machine_info`] gives (the same RAM layout and number of vCPUs, any kernel: every
/// byte of RAM is overwritten). Every section is decoded and checked before the machine
/// changes; a vCPU state its backend refuses (an x87/SSE image it cannot load) is the one
/// error that can leave the machine partly restored, and it names the vCPU.
pub fn restore<B: X86Ops, P: Platform>(
    vm: &mut Vm<B, P>,
    bytes: &[u8],
) -> Result<(), SnapshotError> {
    let parsed = parse(bytes)?;
    let m = &parsed.machine;
    let layout: Vec<(u64, u64)> = vm
        .mem
        .regions()
        .iter()
        .map(|r| (r.gpa(), r.size()))
        .collect();
    if layout != m.ram {
        return Err(SnapshotError::new(
            "machine",
            "ram",
            alloc::format!("RAM regions {:x?}; the machine has {layout:x?}", m.ram),
        ));
    }
    if m.pc_testdev != vm.devices.pc_testdev.is_some() {
        return Err(SnapshotError::new(
            "machine",
            "pc_testdev",
            alloc::format!(
                "the snapshot's machine {} pc-testdev; this one {}",
                if m.pc_testdev { "has" } else { "has no" },
                if m.pc_testdev { "has none" } else { "has one" }
            ),
        ));
    }
    if m.vcpus as usize != vm.vcpus.len() {
        return Err(SnapshotError::new(
            "machine",
            "vcpus",
            alloc::format!("{} vCPUs; the machine has {}", m.vcpus, vm.vcpus.len()),
        ));
    }
    let cpuid: Vec<CpuidLeaf> = codec::decode("cpuid", body(&parsed, 1))?;
    let mut policy = CpuidPolicy::empty();
    for &(leaf, subleaf, regs) in &cpuid {
        policy.set_leaf(leaf, subleaf, regs);
    }
    // The CPU model the vCPUs get back: only what this machine's backend implements (a
    // file made elsewhere, or damaged, may report more), besides what the core provides
    // on every backend (the APIC, the topology, ...).
    if let Some(v) = vm.vcpus.first() {
        let supported = v.backend.supported_cpuid();
        if let Some(f) = crate::cpuid::Feature::ALL
            .iter()
            .find(|&&f| !f.core_emulated() && policy.has_feature(f) && !supported.has_feature(f))
        {
            return Err(SnapshotError::new(
                "cpuid",
                f.name(),
                alloc::format!(
                    "the CPU model has {}, which the {} backend does not implement",
                    f.name(),
                    v.backend.name()
                ),
            ));
        }
        let extra = policy.xcr0_supported() & !supported.xcr0_supported();
        if extra != 0 {
            return Err(SnapshotError::new(
                "cpuid",
                "leaf 0xd",
                alloc::format!(
                    "XCR0 components {extra:#x} that the {} backend does not implement",
                    v.backend.name()
                ),
            ));
        }
    }
    let mut vcpus = Vec::with_capacity(vm.vcpus.len());
    for s in parsed.sections.iter().filter(|s| s.kind == 2) {
        let name: &'static str = "vcpu";
        let v: VcpuSectionIn = codec::decode(name, s.body).map_err(|mut e| {
            e.section = s.name.clone();
            e
        })?;
        v.apic
            .check_state()
            .map_err(|(f, p)| SnapshotError::new(&s.name, &alloc::format!("apic.{f}"), p))?;
        if v.apic.id() != s.index {
            return Err(SnapshotError::new(
                &s.name,
                "apic.apic_id",
                alloc::format!("{} on vCPU {}", v.apic.id(), s.index),
            ));
        }
        vcpus.push(v);
    }
    let devices = DeviceStates {
        com1: decode_checked("com1", body(&parsed, 3))?,
        irqchip: decode_checked("irqchip", body(&parsed, 4))?,
        pit: decode_checked("pit", body(&parsed, 5))?,
        port61: decode_checked("port61", body(&parsed, 6))?,
        rtc: decode_checked("rtc", body(&parsed, 7))?,
        keyboard: decode_checked("i8042", body(&parsed, 8))?,
        pci: decode_checked("pci", body(&parsed, 9))?,
        reset_control: decode_checked("reset_control", body(&parsed, 10))?,
        acpi_pm: decode_checked("acpi_pm", body(&parsed, 11))?,
        fw_cfg: decode_checked("fw_cfg", body(&parsed, 12))?,
        post_code: decode_checked("post_code", body(&parsed, 13))?,
        pc_testdev: if m.pc_testdev {
            Some(decode_checked("pc_testdev", body(&parsed, PC_TESTDEV))?)
        } else {
            None
        },
    };
    let ram_body = body(&parsed, RAM);
    ram::check(ram_body, &m.ram)?;

    // Everything is checked: apply. The CPU model first: the vCPUs' control registers
    // are checked against it.
    for v in &mut vm.vcpus {
        v.backend.set_cpuid(&policy);
    }
    for (i, (v, s)) in vm.vcpus.iter_mut().zip(vcpus).enumerate() {
        v.backend.restore_state(&s.state).map_err(|e| {
            SnapshotError::new(&alloc::format!("vcpu {i}"), "state", alloc::format!("{e}"))
        })?;
        v.apic = s.apic;
        v.msrs = s.msrs;
        v.mp_state = s.mp_state;
        v.irq_window = s.irq_window;
        v.nmi_window = s.nmi_window;
    }
    vm.cpuid = policy;
    let d = &mut vm.devices;
    d.com1 = devices.com1;
    d.irqchip = devices.irqchip;
    d.pit = devices.pit;
    d.nmi_status_control = devices.port61;
    d.rtc = devices.rtc;
    d.keyboard = devices.keyboard;
    d.pci = devices.pci;
    d.reset_control = devices.reset_control;
    d.acpi_pm = devices.acpi_pm;
    d.fw_cfg = devices.fw_cfg;
    d.post_code = devices.post_code;
    d.pc_testdev = devices.pc_testdev;
    ram::apply(ram_body, &mut vm.mem);
    vm.config.icount = m.icount;
    vm.config.time_slice = m.time_slice;
    vm.config.exits_per_clock_read = m.exits_per_clock_read;
    vm.config.smp_turn = m.smp_turn;
    vm.config.smp_turn_ns = m.smp_turn_ns;
    vm.idle_ns = m.idle_ns;
    vm.cur = m.cur as usize;
    vm.resume_turn = m.resume_turn;
    vm.turn_end_ns = m.turn_end_ns;
    vm.turn_end_retired = m.turn_end_retired;
    // The machine clock goes on from where it was saved.
    vm.timers_quiet_until = 0;
    vm.clock_offset = 0;
    let source = vm.now_ns();
    vm.clock_offset = m.clock_ns.wrapping_sub(source);
    let pause_exits = vm.vcpus.len() > 1;
    for v in &mut vm.vcpus {
        v.backend.set_pause_exiting(pause_exits);
    }
    Ok(())
}

/// CRC-32 (IEEE 802.3, as zlib's `crc32`) of `bytes`.
pub fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in bytes {
        crc = TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests;
