use super::*;
use crate::apic::reg;
use crate::exit::{Direction, Exit};
use crate::mmu::memory::GuestMemory;
use crate::ops::{DescriptorTable, Event, Gpr, ResetKind, RunLimit, SegReg, Segment};
use crate::vm::VmConfig;

/// A vCPU that only holds registers: the default save_state/restore_state path.
#[derive(Default)]
struct Regs {
    gpr: [u64; 16],
    rip: u64,
    rflags: u64,
    seg: [Segment; 8],
    cr: [u64; 5],
    efer: u64,
    gdt: DescriptorTable,
    idt: DescriptorTable,
    star: u64,
    shadow: bool,
    pending: Option<Event>,
}

impl X86Ops for Regs {
    fn name(&self) -> &'static str {
        "regs"
    }
    fn vcpu_reset(&mut self, _kind: ResetKind) {}
    fn gpr(&self, reg: Gpr) -> u64 {
        self.gpr[reg as usize]
    }
    fn set_gpr(&mut self, reg: Gpr, value: u64) {
        self.gpr[reg as usize] = value;
    }
    fn rip(&self) -> u64 {
        self.rip
    }
    fn set_rip(&mut self, rip: u64) {
        self.rip = rip;
    }
    fn rflags(&self) -> u64 {
        self.rflags
    }
    fn set_rflags(&mut self, rflags: u64) {
        self.rflags = rflags;
    }
    fn segment(&self, seg: SegReg) -> Segment {
        self.seg[seg as usize]
    }
    fn set_segment(&mut self, seg: SegReg, value: &Segment) {
        self.seg[seg as usize] = *value;
    }
    fn cpl(&self) -> u8 {
        0
    }
    fn supported_cpuid(&self) -> CpuidPolicy {
        CpuidPolicy::emulator()
    }
    fn set_cpuid(&mut self, _policy: &CpuidPolicy) {}
    fn debug_regs(&self) -> crate::ops::DebugRegs {
        crate::ops::DebugRegs::default()
    }
    fn set_debug_regs(&mut self, _regs: &crate::ops::DebugRegs) {}
    fn cr0(&self) -> u64 {
        self.cr[0]
    }
    fn set_cr0(&mut self, value: u64) {
        self.cr[0] = value;
    }
    fn cr2(&self) -> u64 {
        self.cr[2]
    }
    fn set_cr2(&mut self, value: u64) {
        self.cr[2] = value;
    }
    fn cr3(&self) -> u64 {
        self.cr[3]
    }
    fn set_cr3(&mut self, value: u64) {
        self.cr[3] = value;
    }
    fn cr4(&self) -> u64 {
        self.cr[4]
    }
    fn set_cr4(&mut self, value: u64) {
        self.cr[4] = value;
    }
    fn efer(&self) -> u64 {
        self.efer
    }
    fn set_efer(&mut self, value: u64) {
        self.efer = value;
    }
    fn gdt(&self) -> DescriptorTable {
        self.gdt
    }
    fn set_gdt(&mut self, table: DescriptorTable) {
        self.gdt = table;
    }
    fn idt(&self) -> DescriptorTable {
        self.idt
    }
    fn set_idt(&mut self, table: DescriptorTable) {
        self.idt = table;
    }
    fn get_msr(&self, index: u32) -> Option<u64> {
        (index == crate::msr::index::STAR).then_some(self.star)
    }
    fn set_msr(&mut self, index: u32, value: u64) -> bool {
        if index == crate::msr::index::STAR {
            self.star = value;
        }
        index == crate::msr::index::STAR
    }
    fn run(&mut self, _mem: &mut GuestMemory, _limit: &RunLimit) -> Exit {
        Exit::Hlt
    }
    fn skip_emulated_instruction(&mut self) {}
    fn complete_pio_in(&mut self, _value: u32) {}
    fn complete_mmio(&mut self, _read: Option<u64>) {}
    fn interrupt_shadow(&self) -> bool {
        self.shadow
    }
    fn set_interrupt_shadow(&mut self, shadow: bool) {
        self.shadow = shadow;
    }
    fn interrupt_allowed(&self) -> bool {
        false
    }
    fn nmi_allowed(&self) -> bool {
        false
    }
    fn inject_event(&mut self, event: Event) {
        self.pending = Some(event);
    }
    fn event_pending(&self) -> bool {
        self.pending.is_some()
    }
    fn enable_irq_window(&mut self, _enable: bool) {}
    fn enable_nmi_window(&mut self, _enable: bool) {}
    fn flush_tlb_all(&mut self) {}
}

/// A clock that reads what the test sets.
struct Clock(u64);

impl Platform for Clock {
    fn now_ns(&self) -> u64 {
        self.0
    }
    fn wait(&mut self, _deadline_ns: Option<u64>) -> bool {
        false
    }
    fn console_write(&mut self, _bytes: &[u8]) {}
    fn console_read(&mut self) -> Option<u8> {
        None
    }
    fn console_input_ready(&mut self) -> bool {
        false
    }
}

const RAM: u64 = 2 << 20;

fn machine(vcpus: usize, now: u64) -> Vm<Regs, Clock> {
    let backends = (0..vcpus).map(|_| Regs::default()).collect();
    Vm::with_vcpus(
        backends,
        GuestMemory::with_ram(RAM).unwrap(),
        Clock(now),
        CpuidPolicy::emulator(),
        VmConfig::default(),
    )
    .unwrap()
}

fn outb(vm: &mut Vm<Regs, Clock>, port: u16, value: u8) {
    vm.handle_io(port, 1, Direction::Write, u32::from(value));
}

/// A machine the way a guest leaves it: registers, RAM, and devices programmed through
/// their ports (PIT channel 0 periodic, the PIC initialised, the UART with its FIFO and
/// interrupts on and a byte received, a CMOS index chosen), a local APIC timer armed.
fn busy_machine(now: u64) -> Vm<Regs, Clock> {
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
    b.star = 0x0023_0010_0000_0000;
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
    assert_eq!(copy.vcpus[0].backend.star, 0x0023_0010_0000_0000);
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
        (0..2).map(|_| Regs::default()).collect(),
        GuestMemory::with_ram(RAM / 2).unwrap(),
        Clock(0),
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
