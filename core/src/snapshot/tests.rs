use super::*;
use crate::apic::reg;
use crate::exit::Direction;
use crate::mmu::memory::GuestMemory;
use crate::ops::{DescriptorTable, Event, Segment};
use crate::test_support::{HeldMsrs, StillClock, TestVcpu};
use crate::vm::VmConfig;

/// A vCPU that only holds registers and STAR: the default save_state/restore_state path.
fn regs() -> TestVcpu {
    TestVcpu {
        held_msrs: HeldMsrs::Only(&[crate::msr::index::STAR]),
        ..TestVcpu::default()
    }
}

const RAM: u64 = 2 << 20;

fn machine(vcpus: usize, now: u64) -> Vm<TestVcpu, StillClock> {
    let backends = (0..vcpus).map(|_| regs()).collect();
    Vm::with_vcpus(
        backends,
        GuestMemory::with_ram(RAM).unwrap(),
        StillClock(now),
        CpuidPolicy::emulator(),
        VmConfig::default(),
    )
    .unwrap()
}

fn outb(vm: &mut Vm<TestVcpu, StillClock>, port: u16, value: u8) {
    vm.handle_io(port, 1, Direction::Write, u32::from(value));
}

/// A machine the way a guest leaves it: registers, RAM, and devices programmed through
/// their ports (PIT channel 0 periodic, the PIC initialised, the UART with its FIFO and
/// interrupts on and a byte received, a CMOS index chosen), a local APIC timer armed.
fn busy_machine(now: u64) -> Vm<TestVcpu, StillClock> {
    let mut vm = machine(2, now);
    let b = &mut vm.vcpus[0].backend;
    b.gpr = core::array::from_fn(|i| 0x1111 * i as u64);
    b.rip = 0x7c00;
    b.rflags = 0x202;
    b.cr = [0x11, 0, 0x1234_5000, 0x1000, 0x20];
    b.seg[1] = Segment::flat(8, Segment::CODE32);
    b.gdt = DescriptorTable {
        base: 0x5000,
        limit: 0x27,
    };
    b.msrs
        .insert(crate::msr::index::STAR, 0x0023_0010_0000_0000);
    b.shadow = true;
    vm.mem.write(0x1000, b"snapshot test page").unwrap();
    vm.mem.write(RAM - 8, &[0xab; 8]).unwrap();
    for (port, value) in [
        (0x43, 0x34),
        (0x40, 0x9b),
        (0x40, 0x2e),
        (0x20, 0x11),
        (0x21, 0x20),
        (0x21, 0x04),
        (0x21, 0x01),
        (0x21, 0xfe),
        (0x3fa, 0x07),
        (0x3f9, 0x03),
        (0x3fc, 0x1b), // loopback: what the UART sends it receives
        (0x3f8, b'x'),
        (0x70, 0x0a),
    ] {
        outb(&mut vm, port, value);
    }
    let apic = &mut vm.vcpus[1].apic;
    apic.mmio_write(reg::SVR, 0x1ff, now);
    apic.mmio_write(reg::LVT_TIMER, 0x30, now);
    apic.mmio_write(reg::TIMER_INITIAL, 1_000_000, now);
    vm
}

#[test]
fn a_restored_machine_saves_to_the_same_bytes() {
    let mut vm = busy_machine(5_000_000);
    let bytes = save(&mut vm).unwrap();
    assert_eq!(&bytes[..8], b"OPSVSNAP");
    // Restored into a machine of the same shape whose clock reads something else.
    let mut copy = machine(2, 77);
    restore(&mut copy, &bytes).unwrap();
    assert_eq!(
        copy.now_ns(),
        5_000_000,
        "the clock goes on from the snapshot"
    );
    assert_eq!(copy.vcpus[0].backend.regs(), vm.vcpus[0].backend.regs());
    assert_eq!(
        copy.vcpus[0].backend.msrs.get(&crate::msr::index::STAR),
        Some(&0x0023_0010_0000_0000)
    );
    assert!(copy.vcpus[0].backend.shadow);
    assert_eq!(copy.mem.slice(0x1000, 18).unwrap(), b"snapshot test page");
    assert_eq!(
        copy.vcpus[1].apic.next_deadline(),
        vm.vcpus[1].apic.next_deadline()
    );
    assert_eq!(copy.devices.next_deadline(), vm.devices.next_deadline());
    assert_eq!(save(&mut copy).unwrap(), bytes);
    // Zero pages are left out: 2 MiB of RAM with two pages written.
    assert!(bytes.len() < 3 * 4096 + 8192, "{} bytes", bytes.len());
}

#[test]
fn restoring_overwrites_every_page() {
    let mut vm = busy_machine(0);
    let bytes = save(&mut vm).unwrap();
    let mut other = machine(2, 0);
    other.mem.write(0x8000, &[0x55; 64]).unwrap();
    restore(&mut other, &bytes).unwrap();
    assert_eq!(other.mem.slice(0x8000, 64).unwrap(), &[0u8; 64][..]);
}

#[test]
fn a_machine_of_another_shape_is_refused() {
    let bytes = save(&mut busy_machine(0)).unwrap();
    let e = restore(&mut machine(1, 0), &bytes).unwrap_err();
    assert_eq!((e.section.as_str(), e.field.as_str()), ("machine", "vcpus"));
    let mut small = Vm::with_vcpus(
        (0..2).map(|_| regs()).collect(),
        GuestMemory::with_ram(RAM / 2).unwrap(),
        StillClock(0),
        CpuidPolicy::emulator(),
        VmConfig::default(),
    )
    .unwrap();
    let e = restore(&mut small, &bytes).unwrap_err();
    assert_eq!((e.section.as_str(), e.field.as_str()), ("machine", "ram"));
}

#[test]
fn every_truncation_is_refused_with_the_field_named() {
    let bytes = save(&mut busy_machine(0)).unwrap();
    for len in 0..bytes.len() {
        let e = machine_info(&bytes[..len]).unwrap_err();
        assert!(!e.field.is_empty(), "{len}: {e}");
    }
    assert!(machine_info(&bytes).is_ok());
}

/// The byte range of the first section tagged `tag`.
fn section(bytes: &[u8], tag: &[u8; 4]) -> core::ops::Range<usize> {
    let mut pos = HEADER_LEN;
    loop {
        let len = u64::from_le_bytes(bytes[pos + 8..pos + 16].try_into().unwrap()) as usize;
        let body = pos + SECTION_HEADER_LEN;
        if &bytes[pos..pos + 4] == tag {
            return body..body + len;
        }
        pos = body + len;
    }
}

fn fix_crc(bytes: &mut [u8]) {
    let n = bytes.len() - TRAILER_LEN;
    let crc = crc32(&bytes[..n]);
    bytes[n..].copy_from_slice(&crc.to_le_bytes());
}

fn refused(bytes: &[u8]) -> (String, String, String) {
    let e = restore(&mut machine(2, 0), bytes).unwrap_err();
    (e.section, e.field, e.problem)
}

#[test]
fn bad_headers_are_refused() {
    let good = save(&mut busy_machine(0)).unwrap();
    let mut b = good.clone();
    b[0] = b'X';
    assert_eq!(refused(&b).1, "magic");
    let mut b = good.clone();
    b[8] = 2;
    let (s, f, p) = refused(&b);
    assert_eq!((s.as_str(), f.as_str()), ("header", "version"));
    assert!(p.contains("version 2"), "{p}");
    let mut b = good.clone();
    b[12] = 1;
    assert_eq!(refused(&b).1, "flags");
    let mut b = good.clone();
    b[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(refused(&b).1, "section_count");
    let mut b = good.clone();
    b[20] = 1;
    assert_eq!(refused(&b).1, "reserved");
    // One bit flipped anywhere in a body: the checksum.
    let mut b = good.clone();
    let at = section(&b, b"PIT ").start + 3;
    b[at] ^= 0x10;
    assert_eq!(refused(&b).0, "trailer");
    let mut b = good.clone();
    b.push(0);
    assert_eq!(refused(&b).1, "crc32");
}

#[test]
fn oversize_lengths_are_refused_before_anything_is_reserved() {
    let good = save(&mut busy_machine(0)).unwrap();
    // A section length beyond the file.
    let mut b = good.clone();
    let pit = section(&b, b"PIT ");
    b[pit.start - 8..pit.start].copy_from_slice(&u64::MAX.to_le_bytes());
    let (s, f, _) = refused(&b);
    assert_eq!((s.as_str(), f.as_str()), ("pit", "length"));
    // A vector length inside a body (the machine's RAM list), checksum fixed.
    let mut b = good.clone();
    let m = section(&b, b"MACH");
    b[m.start..m.start + 8].copy_from_slice(&(1u64 << 60).to_le_bytes());
    fix_crc(&mut b);
    let (s, f, p) = refused(&b);
    assert_eq!((s.as_str(), f.as_str()), ("machine", "ram"));
    assert!(p.contains("length"), "{p}");
    // The RAM section's page count.
    let mut b = good.clone();
    let r = section(&b, b"RAM ");
    b[r.start..r.start + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    fix_crc(&mut b);
    let (s, f, _) = refused(&b);
    assert_eq!((s.as_str(), f.as_str()), ("ram", "region[0].page_count"));
}

#[test]
fn bad_values_inside_sections_name_their_field() {
    let good = save(&mut busy_machine(0)).unwrap();
    let vm = busy_machine(0);
    // The UART: rx_head is the second-to-last field (two usizes at the end).
    let mut b = good.clone();
    let com1 = section(&b, b"COM1");
    b[com1.end - 16..com1.end - 8].copy_from_slice(&99u64.to_le_bytes());
    fix_crc(&mut b);
    let (s, f, p) = refused(&b);
    assert_eq!((s.as_str(), f.as_str()), ("com1", "rx_head"));
    assert!(p.contains("99"), "{p}");
    // The machine section's `icount` (after the RAM list and the vCPU count): a boolean
    // that is neither 0 nor 1.
    let mut b = good.clone();
    let m = section(&b, b"MACH");
    let at = m.start + 8 + 16 * vm.mem.regions().len() + 4;
    b[at] = 2;
    fix_crc(&mut b);
    let (s, f, p) = refused(&b);
    assert_eq!((s.as_str(), f.as_str()), ("machine", "icount"));
    assert!(p.contains("boolean 2"), "{p}");
    // The PIT's first field of channel 0 (mode_bits) out of range.
    let mut b = good.clone();
    let pit = section(&b, b"PIT ");
    b[pit.start] = 9;
    fix_crc(&mut b);
    let (s, f, _) = refused(&b);
    assert_eq!((s.as_str(), f.as_str()), ("pit", "channels.mode_bits"));
    // A section of the wrong length: a byte after its last field.
    let mut b = good.clone();
    let p61 = section(&b, b"P61 ");
    b.insert(p61.end, 0);
    b[p61.start - 8..p61.start].copy_from_slice(&((p61.len() + 1) as u64).to_le_bytes());
    fix_crc(&mut b);
    let (s, _, p) = refused(&b);
    assert_eq!(s, "port61");
    assert!(p.contains("after the section's last field"), "{p}");
    // An unknown section tag.
    let mut b = good.clone();
    let p61 = section(&b, b"P61 ");
    b[p61.start - 16..p61.start - 12].copy_from_slice(b"ZZZZ");
    fix_crc(&mut b);
    let (_, f, p) = refused(&b);
    assert_eq!(f, "tag");
    assert!(p.contains("ZZZZ"), "{p}");
}

#[test]
fn an_injected_event_the_backend_cannot_report_refuses_the_save() {
    let mut vm = busy_machine(0);
    vm.vcpus[1].backend.pending = Some(Event::Nmi);
    let e = save(&mut vm).unwrap_err();
    assert_eq!((e.section.as_str(), e.field.as_str()), ("vcpu 1", "state"));
}

#[test]
fn crc32_matches_the_ieee_check_value() {
    assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
}
