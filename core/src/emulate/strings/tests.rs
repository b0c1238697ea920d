//! String instructions on MMIO driven the way a guest drives them: a vCPU with the
//! registers, a 64-bit (or 32-bit) address space with page tables in guest RAM, and a
//! device window on a fake bus; each instruction is run exit after exit (re-entering the
//! "guest" at the same RIP after a batch, as a backend does) and the registers, flags,
//! memory, device and faults are checked against the SDM.

use super::*;
use crate::ops::{Event, Segment};

/// The device window: 64 KiB of registers that read back what was written.
const WINDOW: u64 = 0xff00_0000;
const WINDOW_LEN: usize = 0x10000;
/// Guest RAM: 4 MiB. Page tables from 0x100000, code and data below.
const RAM: u64 = 0x40_0000;
const TABLES: u64 = 0x10_0000;
/// A linear page mapped to nothing (not present).
const HOLE: u64 = 0x20_0000;
const RIP: u64 = 0x1000;

const CR0_PE: u64 = 1;
const CR0_AM: u64 = 1 << 18;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const RFLAGS_AC: u64 = 1 << 18;
const PF: u8 = 14;

type Cpu = crate::test_support::TestVcpu;

/// One MMIO access the bus saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Access {
    gpa: u64,
    size: u8,
    direction: Direction,
    data: u64,
}

struct Machine {
    cpu: Cpu,
    mem: GuestMemory,
    window: [u8; WINDOW_LEN],
    /// Every MMIO access, in order (the first 64).
    log: [Option<Access>; 64],
    accesses: usize,
    /// Guest entries the instruction took (batches).
    entries: u32,
    /// Entries after the single-step trap of one iteration ([`Step::Iterated`]).
    iterations_trapped: u32,
    /// After this many MMIO accesses, the "core" queues an interrupt.
    interrupt_after: Option<usize>,
    next_table: u64,
}

impl Machine {
    /// 64-bit mode, 4-level paging: RAM identity-mapped below 2 MiB (its page tables
    /// included) and the device window identity-mapped; the page at HOLE not present.
    fn long_mode() -> Machine {
        let mut m = Machine::bare();
        m.cpu.cr[0] = CR0_PE | CR0_PG;
        m.cpu.cr[4] = CR4_PAE;
        m.cpu.efer = EFER_LME | EFER_LMA;
        m.cpu.cr[3] = m.table();
        for page in (0..0x20_0000).step_by(4096) {
            m.map(page, page);
        }
        for page in (WINDOW..WINDOW + WINDOW_LEN as u64).step_by(4096) {
            m.map(page, page);
        }
        m.cpu.seg[SegReg::Cs as usize] = Segment::flat(8, Segment::CODE64);
        for seg in [SegReg::Ds, SegReg::Es, SegReg::Ss, SegReg::Fs, SegReg::Gs] {
            m.cpu.seg[seg as usize] = Segment::flat(0x10, Segment::DATA);
        }
        m
    }

    /// 32-bit protected mode without paging, flat segments.
    fn protected_mode() -> Machine {
        let mut m = Machine::bare();
        m.cpu.cr[0] = CR0_PE;
        m.cpu.seg[SegReg::Cs as usize] = Segment::flat(8, Segment::CODE32);
        for seg in [SegReg::Ds, SegReg::Es, SegReg::Ss, SegReg::Fs, SegReg::Gs] {
            m.cpu.seg[seg as usize] = Segment::flat(0x10, Segment::DATA);
        }
        m
    }

    fn bare() -> Machine {
        let mut cpu = Cpu {
            rip: RIP,
            rflags: 2,
            ..Cpu::default()
        };
        cpu.gpr[Gpr::Rax as usize] = 0x1111_2222_3333_4444;
        Machine {
            cpu,
            mem: GuestMemory::with_ram(RAM).expect("4 MiB of RAM"),
            window: [0; WINDOW_LEN],
            log: [None; 64],
            accesses: 0,
            entries: 0,
            iterations_trapped: 0,
            interrupt_after: None,
            next_table: TABLES,
        }
    }

    fn table(&mut self) -> u64 {
        let t = self.next_table;
        self.next_table += 4096;
        self.mem.write(t, &[0; 4096]).expect("table in RAM");
        t
    }

    /// Map linear page `la` to `gpa`, present, writable, user.
    fn map(&mut self, la: u64, gpa: u64) {
        let mut table = self.cpu.cr[3];
        for shift in [39, 30, 21] {
            let at = table + ((la >> shift) & 0x1ff) * 8;
            let entry = self.mem.read_u64(at).expect("entry in RAM");
            table = if entry & 1 == 0 {
                let next = self.table();
                self.mem.write(at, &(next | 7).to_le_bytes()).expect("RAM");
                next
            } else {
                entry & 0x000f_ffff_ffff_f000
            };
        }
        let at = table + ((la >> 12) & 0x1ff) * 8;
        self.mem.write(at, &(gpa | 7).to_le_bytes()).expect("RAM");
    }

    fn set(&mut self, reg: Gpr, value: u64) {
        self.cpu.gpr[reg as usize] = value;
    }

    fn reg(&self, reg: Gpr) -> u64 {
        self.cpu.gpr[reg as usize]
    }

    fn window_at(&mut self, offset: u64) -> &mut [u8] {
        &mut self.window[offset as usize..]
    }

    fn ram(&self, gpa: u64, len: usize) -> [u8; 64] {
        let mut buf = [0u8; 64];
        self.mem.read(gpa, &mut buf[..len]).expect("RAM");
        buf
    }

    fn bus(&mut self, exit: Exit) -> Option<u64> {
        let Exit::Mmio {
            gpa,
            size,
            direction,
            data,
        } = exit
        else {
            panic!("not an MMIO exit: {exit:?}");
        };
        assert!((1..=8).contains(&size), "size {size}");
        if let Some(slot) = self.log.get_mut(self.accesses) {
            *slot = Some(Access {
                gpa,
                size,
                direction,
                data,
            });
        }
        self.accesses += 1;
        if self.interrupt_after == Some(self.accesses) {
            self.cpu.inject_event(Event::ExternalInterrupt(0x20));
        }
        let off = gpa.wrapping_sub(WINDOW) as usize;
        let len = usize::from(size);
        let inside = off + len <= WINDOW_LEN;
        match direction {
            Direction::Read => {
                let mut bytes = [0xffu8; 8];
                if inside {
                    bytes[..len].copy_from_slice(&self.window[off..off + len]);
                }
                Some(u64::from_le_bytes(bytes) & width_mask(size))
            }
            Direction::Write => {
                if inside {
                    self.window[off..off + len].copy_from_slice(&data.to_le_bytes()[..len]);
                }
                None
            }
        }
    }

    /// Run the string instruction `bytes` at RIP as the backend does after its MMIO
    /// exit: step it, completing each MMIO access on the bus, and enter the "guest"
    /// after each batch; the guest runs the instruction again (it exits again) until it
    /// retires or an event is queued.
    fn exec(&mut self, bytes: &[u8]) {
        let bitness = super::super::code_bitness(&self.cpu);
        let op = decode(bytes, bitness).expect("a string instruction");
        let paging = PagingRegs {
            cr0: self.cpu.cr[0],
            cr3: self.cpu.cr[3],
            cr4: self.cpu.cr[4],
            efer: self.cpu.efer,
            pkru: 0,
        };
        let start = self.cpu.rip;
        loop {
            let mut s = StringMmio::new(op);
            let mut step = s.step(&mut self.cpu, &mut self.mem, &paging);
            while let Step::Mmio(exit) = step {
                assert!(s.waiting());
                let read = self.bus(exit);
                s.complete(read);
                step = s.step(&mut self.cpu, &mut self.mem, &paging);
            }
            self.entries += 1;
            // The backend raises the instruction's debug traps exactly when it retires,
            // or under TF after each iteration with RIP still at it.
            assert_eq!(step == Step::Retired, self.cpu.rip != start);
            if step == Step::Iterated {
                self.iterations_trapped += 1;
            }
            if self.cpu.rip != start || self.cpu.pending.is_some() {
                return;
            }
            assert!(self.entries < 1000, "the instruction makes no progress");
        }
    }

    fn logged(&self, i: usize) -> Access {
        self.log[i].expect("an access")
    }

    fn fault(&self) -> Option<Event> {
        self.cpu.pending
    }
}

fn pf(error_code: u32) -> Option<Event> {
    Some(Event::Exception {
        vector: PF,
        error_code: Some(error_code),
    })
}

fn exception(vector: u8) -> Option<Event> {
    Some(Event::Exception {
        vector,
        error_code: Some(0),
    })
}

const REPE_CMPSB: &[u8] = &[0xf3, 0xa6];
const REP_MOVSB: &[u8] = &[0xf3, 0xa4];

#[test]
fn repe_cmpsb_from_mmio_to_mmio_stops_at_the_difference() {
    let mut m = Machine::long_mode();
    for i in 0..30u8 {
        m.window[0x100 + usize::from(i)] = i;
        m.window[0x800 + usize::from(i)] = if i == 20 { 0xee } else { i };
    }
    m.set(Gpr::Rsi, WINDOW + 0x100);
    m.set(Gpr::Rdi, WINDOW + 0x800);
    m.set(Gpr::Rcx, 30);
    m.exec(REPE_CMPSB);
    // 21 elements compared, each reading [RSI] then [RDI].
    assert_eq!(m.reg(Gpr::Rcx), 9);
    assert_eq!(m.reg(Gpr::Rsi), WINDOW + 0x115);
    assert_eq!(m.reg(Gpr::Rdi), WINDOW + 0x815);
    assert_eq!(m.accesses, 42);
    assert_eq!(m.logged(0).gpa, WINDOW + 0x100);
    assert_eq!(m.logged(1).gpa, WINDOW + 0x800);
    assert_eq!(m.logged(41).gpa, WINDOW + 0x814);
    // 20 - 0xee: CF (borrow), no ZF; 0x26: SF clear, no overflow, PF odd (3 bits).
    let f = m.cpu.rflags;
    assert_eq!(
        (f & RFLAGS_CF, f & RFLAGS_ZF, f & RFLAGS_SF, f & RFLAGS_OF),
        (RFLAGS_CF, 0, 0, 0)
    );
    assert_eq!(f & RFLAGS_PF, 0);
    assert_eq!(m.cpu.rip, RIP + 2);
    assert_eq!((m.entries, m.fault()), (1, None));
}

#[test]
fn repne_scas_stops_at_the_match_and_repe_runs_out_the_count() {
    let mut m = Machine::long_mode();
    m.window_at(0x200)[..8].copy_from_slice(&[9, 8, 7, 0x44, 6, 5, 4, 3]);
    m.set(Gpr::Rdi, WINDOW + 0x200);
    m.set(Gpr::Rcx, 8);
    // REPNE SCASB: AL is 0x44.
    m.exec(&[0xf2, 0xae]);
    assert_eq!(m.reg(Gpr::Rcx), 4);
    assert_eq!(m.reg(Gpr::Rdi), WINDOW + 0x204);
    assert_ne!(m.cpu.rflags & RFLAGS_ZF, 0);
    // REPE SCASW over equal words runs until RCX is 0 with ZF set.
    let mut m = Machine::long_mode();
    for i in 0..4 {
        m.window_at(0x300 + 2 * i)[..2].copy_from_slice(&0x4444u16.to_le_bytes());
    }
    m.set(Gpr::Rdi, WINDOW + 0x300);
    m.set(Gpr::Rcx, 4);
    m.exec(&[0x66, 0xf3, 0xaf]);
    assert_eq!((m.reg(Gpr::Rcx), m.reg(Gpr::Rdi)), (0, WINDOW + 0x308));
    assert_ne!(m.cpu.rflags & RFLAGS_ZF, 0);
    assert_eq!((m.accesses, m.cpu.rip), (4, RIP + 3));
}

#[test]
fn cmps_and_scas_flags_follow_the_subtraction() {
    // (a, b, size) -> CF PF AF ZF SF OF of a - b.
    let all = |cf, pf, af, zf, sf, of| {
        [
            (cf, RFLAGS_CF),
            (pf, RFLAGS_PF),
            (af, RFLAGS_AF),
            (zf, RFLAGS_ZF),
            (sf, RFLAGS_SF),
            (of, RFLAGS_OF),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .fold(0, |f, (_, bit)| f | bit)
    };
    // 0 - 1 = 0xff: borrow, 8 ones (even), half borrow, negative.
    assert_eq!(
        sub_flags(0, 1, 1),
        all(true, true, true, false, true, false)
    );
    // 0x80 - 1 = 0x7f: signed overflow, half borrow, 7 ones (odd).
    assert_eq!(
        sub_flags(0x80, 1, 1),
        all(false, false, true, false, false, true)
    );
    // Equal words; upper bits outside the size do not count.
    assert_eq!(
        sub_flags(0xffff_1234, 0x1234, 2),
        all(false, true, false, true, false, false)
    );
    // 0x7fffffff - 0xffffffff (-1) = 0x80000000: overflow and borrow, low byte 0 (even).
    assert_eq!(
        sub_flags(0x7fff_ffff, 0xffff_ffff, 4),
        all(true, true, false, false, true, true)
    );
    assert_eq!(
        sub_flags(1, 2, 8),
        all(true, true, true, false, true, false)
    );
    // CMPSQ (no REP) in MMIO: RAX-sized values, flags of [RSI] - [RDI].
    let mut m = Machine::long_mode();
    m.window_at(0)[..8].copy_from_slice(&0x8000_0000_0000_0000u64.to_le_bytes());
    m.window_at(8)[..8].copy_from_slice(&1u64.to_le_bytes());
    m.set(Gpr::Rsi, WINDOW);
    m.set(Gpr::Rdi, WINDOW + 8);
    m.set(Gpr::Rcx, 77);
    m.exec(&[0x48, 0xa7]);
    assert_eq!(
        m.cpu.rflags & RFLAGS_STATUS,
        RFLAGS_OF | RFLAGS_AF | RFLAGS_PF
    );
    assert_eq!(m.reg(Gpr::Rcx), 77, "no REP: RCX untouched");
    assert_eq!(
        (m.reg(Gpr::Rsi), m.reg(Gpr::Rdi)),
        (WINDOW + 8, WINDOW + 16)
    );
    assert_eq!((m.logged(0).size, m.logged(1).size), (8, 8));
}

#[test]
fn rep_movs_between_mmio_and_ram_both_ways_and_mmio_to_mmio() {
    let mut m = Machine::long_mode();
    for i in 0..16u8 {
        m.window[0x40 + usize::from(i)] = 0xa0 + i;
    }
    // MMIO to RAM, bytes.
    m.set(Gpr::Rsi, WINDOW + 0x40);
    m.set(Gpr::Rdi, 0x8000);
    m.set(Gpr::Rcx, 16);
    m.exec(REP_MOVSB);
    assert_eq!(&m.ram(0x8000, 16)[..16], &m.window[0x40..0x50]);
    assert_eq!(
        (m.reg(Gpr::Rcx), m.reg(Gpr::Rsi), m.reg(Gpr::Rdi)),
        (0, WINDOW + 0x50, 0x8010)
    );
    assert_eq!(m.accesses, 16);
    // RAM to MMIO, dwords (REP MOVSD).
    m.mem.write(0x9000, &[1, 2, 3, 4, 5, 6, 7, 8]).expect("RAM");
    m.cpu.rip = RIP;
    m.set(Gpr::Rsi, 0x9000);
    m.set(Gpr::Rdi, WINDOW + 0x1000);
    m.set(Gpr::Rcx, 2);
    m.exec(&[0xf3, 0xa5]);
    assert_eq!(&m.window[0x1000..0x1008], &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(
        m.logged(17),
        Access {
            gpa: WINDOW + 0x1004,
            size: 4,
            direction: Direction::Write,
            data: 0x0807_0605,
        }
    );
    // MMIO to MMIO, qwords (REP MOVSQ): a read then a write per element.
    m.cpu.rip = RIP;
    m.set(Gpr::Rsi, WINDOW + 0x40);
    m.set(Gpr::Rdi, WINDOW + 0x2000);
    m.set(Gpr::Rcx, 2);
    m.exec(&[0xf3, 0x48, 0xa5]);
    assert_eq!(m.window[0x2000..0x2010], m.window[0x40..0x50]);
    assert_eq!(m.accesses, 18 + 4);
    assert_eq!(m.logged(18).direction, Direction::Read);
    assert_eq!(m.logged(19).direction, Direction::Write);
    assert_eq!(
        (m.reg(Gpr::Rcx), m.reg(Gpr::Rsi), m.reg(Gpr::Rdi), m.cpu.rip),
        (0, WINDOW + 0x50, WINDOW + 0x2010, RIP + 3)
    );
}

#[test]
fn df_runs_backwards_and_repne_on_movs_repeats() {
    let mut m = Machine::long_mode();
    for i in 0..8u8 {
        m.window[0x100 + usize::from(i)] = i;
    }
    m.cpu.rflags |= RFLAGS_DF;
    // REPNE MOVSW, backwards from the last word: the F2 prefix repeats as REP.
    m.set(Gpr::Rsi, WINDOW + 0x106);
    m.set(Gpr::Rdi, 0x8006);
    m.set(Gpr::Rcx, 4);
    m.exec(&[0x66, 0xf2, 0xa5]);
    assert_eq!(&m.ram(0x8000, 8)[..8], &[0, 1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(
        (m.reg(Gpr::Rcx), m.reg(Gpr::Rsi), m.reg(Gpr::Rdi)),
        (0, WINDOW + 0xfe, 0x7ffe)
    );
    assert_eq!(m.logged(0).gpa, WINDOW + 0x106);
    assert_eq!(m.logged(3).gpa, WINDOW + 0x100);
}

#[test]
fn stos_and_lods_use_the_accumulator_at_every_size() {
    let mut m = Machine::long_mode();
    // REP STOSQ, STOSD, STOSW, STOSB of RAX = 0x1111222233334444.
    m.set(Gpr::Rdi, WINDOW + 0x400);
    m.set(Gpr::Rcx, 2);
    m.exec(&[0xf3, 0x48, 0xab]);
    assert_eq!(
        &m.window[0x400..0x410],
        &0x1111_2222_3333_4444u128
            .wrapping_mul(0x1_0000_0000_0000_0001)
            .to_le_bytes()
    );
    for (bytes, size, data) in [
        (&[0xab][..], 4, 0x3333_4444),
        (&[0x66, 0xab][..], 2, 0x4444),
        (&[0xaa][..], 1, 0x44),
    ] {
        m.cpu.rip = RIP;
        let before = m.accesses;
        m.exec(bytes);
        let a = m.logged(before);
        assert_eq!(
            (a.size, a.data, a.direction),
            (size, data, Direction::Write)
        );
        assert_eq!(m.cpu.rip, RIP + bytes.len() as u64);
    }
    assert_eq!(m.reg(Gpr::Rdi), WINDOW + 0x410 + 4 + 2 + 1);
    // LODS: AL and AX keep the rest of RAX, EAX zero-extends, RAX takes all.
    m.window_at(0x500)[..8].copy_from_slice(&0x8877_6655_4433_2211u64.to_le_bytes());
    for (bytes, rax) in [
        (&[0xac][..], 0x1111_2222_3333_4411),
        (&[0x66, 0xad][..], 0x1111_2222_3333_2211),
        (&[0xad][..], 0x4433_2211),
        (&[0x48, 0xad][..], 0x8877_6655_4433_2211),
    ] {
        m.cpu.rip = RIP;
        m.set(Gpr::Rax, 0x1111_2222_3333_4444);
        m.set(Gpr::Rsi, WINDOW + 0x500);
        m.exec(bytes);
        assert_eq!(m.reg(Gpr::Rax), rax, "{bytes:x?}");
        assert_eq!(m.reg(Gpr::Rdi), WINDOW + 0x417, "LODS leaves RDI");
    }
    assert_eq!(m.reg(Gpr::Rsi), WINDOW + 0x508);
}

#[test]
fn address_size_masks_the_index_and_count_registers() {
    // 64-bit code, 32-bit addresses (67): ESI/EDI/ECX, the upper halves zeroed.
    let mut m = Machine::long_mode();
    m.set(Gpr::Rsi, 0xdead_0000_0000_0000 | (WINDOW + 0x10));
    m.set(Gpr::Rdi, 0xbeef_0000_0000_8000);
    m.set(Gpr::Rcx, 0xffff_ffff_0000_0003);
    m.exec(&[0x67, 0xf3, 0xa4]);
    assert_eq!(
        (m.reg(Gpr::Rcx), m.reg(Gpr::Rsi), m.reg(Gpr::Rdi)),
        (0, WINDOW + 0x13, 0x8003)
    );
    assert_eq!(m.logged(0).gpa, WINDOW + 0x10);
    // 32-bit code, 16-bit addresses (67): SI wraps inside the segment, CX counts, the
    // upper halves stay.
    let mut m = Machine::protected_mode();
    m.cpu.seg[SegReg::Ds as usize].base = WINDOW;
    m.window[0xffff] = 0x5a;
    m.window[0] = 0xa5;
    m.set(Gpr::Rsi, 0x1234_ffff);
    m.set(Gpr::Rcx, 0x5678_0002);
    m.exec(&[0x67, 0xf3, 0xac]);
    assert_eq!(m.reg(Gpr::Rsi), 0x1234_0001);
    assert_eq!(m.reg(Gpr::Rcx), 0x5678_0000);
    assert_eq!(m.reg(Gpr::Rax) & 0xff, 0xa5);
    assert_eq!(
        (m.logged(0).gpa, m.logged(1).gpa),
        (WINDOW + 0xffff, WINDOW)
    );
}

#[test]
fn segment_overrides_and_segment_faults() {
    // 64-bit: an FS override adds FS's base to RSI.
    let mut m = Machine::long_mode();
    m.cpu.seg[SegReg::Fs as usize].base = WINDOW;
    m.window[0x20] = 0x77;
    m.set(Gpr::Rsi, 0x20);
    m.set(Gpr::Rdi, 0x8000);
    m.exec(&[0x64, 0xa4]);
    assert_eq!(m.ram(0x8000, 1)[0], 0x77);
    // 32-bit: past DS's limit is #GP(0), past SS's #SS(0); nothing is accessed.
    let mut m = Machine::protected_mode();
    m.cpu.seg[SegReg::Ds as usize].limit = 0xfff;
    m.cpu.seg[SegReg::Ss as usize].limit = 0xfff;
    m.set(Gpr::Rsi, 0x1000);
    m.set(Gpr::Rdi, WINDOW);
    m.set(Gpr::Rcx, 4);
    m.exec(REP_MOVSB);
    assert_eq!(m.fault(), exception(13));
    assert_eq!((m.accesses, m.cpu.rip, m.reg(Gpr::Rcx)), (0, RIP, 4));
    let mut m = Machine::protected_mode();
    m.cpu.seg[SegReg::Ss as usize].limit = 0xfff;
    m.set(Gpr::Rsi, 0x1000);
    m.set(Gpr::Rdi, WINDOW);
    m.exec(&[0x36, 0xa4]);
    assert_eq!(m.fault(), exception(12));
    // A read-only ES cannot be MOVS's destination; CMPS may read through it.
    let mut m = Machine::protected_mode();
    m.cpu.seg[SegReg::Es as usize].attr = 0xc091;
    m.set(Gpr::Rsi, WINDOW);
    m.set(Gpr::Rdi, WINDOW + 0x10);
    m.exec(&[0xa4]);
    assert_eq!((m.fault(), m.accesses), (exception(13), 0));
    let mut m = Machine::protected_mode();
    m.cpu.seg[SegReg::Es as usize].attr = 0xc091;
    m.set(Gpr::Rsi, WINDOW);
    m.set(Gpr::Rdi, WINDOW + 0x10);
    m.exec(&[0xa6]);
    assert_eq!((m.fault(), m.accesses, m.cpu.rip), (None, 2, RIP + 1));
    // 64-bit: a non-canonical RDI is #GP(0).
    let mut m = Machine::long_mode();
    m.set(Gpr::Rsi, WINDOW);
    m.set(Gpr::Rdi, 0x8000_0000_0000_0000);
    m.exec(&[0xa4]);
    assert_eq!((m.fault(), m.accesses), (exception(13), 0));
}

#[test]
fn a_page_fault_comes_at_its_element_with_the_registers_of_the_ones_before() {
    // REP MOVSB from MMIO into RAM that runs into the unmapped page at HOLE: 5 bytes
    // fit before it.
    let mut m = Machine::long_mode();
    m.set(Gpr::Rsi, WINDOW);
    m.set(Gpr::Rdi, HOLE - 5);
    m.set(Gpr::Rcx, 10);
    m.exec(REP_MOVSB);
    // Not present, a write, supervisor: error code 2; CR2 the first byte of the page.
    assert_eq!(m.fault(), pf(2));
    assert_eq!(m.cpu.cr[2], HOLE);
    assert_eq!(
        (m.reg(Gpr::Rcx), m.reg(Gpr::Rsi), m.reg(Gpr::Rdi), m.cpu.rip),
        (5, WINDOW + 5, HOLE, RIP)
    );
    // The faulting element read nothing from the device.
    assert_eq!(m.accesses, 5);
    // An element that straddles into the hole: MOVSD with RDI 2 bytes below it faults
    // on its second part, CR2 at the hole, before the source is read.
    let mut m = Machine::long_mode();
    m.set(Gpr::Rsi, WINDOW);
    m.set(Gpr::Rdi, HOLE - 2);
    m.exec(&[0xa5]);
    assert_eq!((m.fault(), m.cpu.cr[2], m.accesses), (pf(2), HOLE, 0));
    assert_eq!(m.reg(Gpr::Rdi), HOLE - 2);
    // A user-mode LODS of a supervisor-only... page is user here: a read from the hole
    // at CPL 3 has error code 4 (user, read, not present).
    let mut m = Machine::long_mode();
    m.cpu.cpl = 3;
    m.set(Gpr::Rsi, HOLE + 0x10);
    m.exec(&[0xac]);
    assert_eq!((m.fault(), m.cpu.cr[2]), (pf(4), HOLE + 0x10));
}

#[test]
fn an_element_across_a_page_boundary_is_two_accesses() {
    let mut m = Machine::long_mode();
    m.window_at(0xffe)[..4].copy_from_slice(&[1, 2, 3, 4]);
    // LODSD at the last two bytes of a window page: two 2-byte reads.
    m.set(Gpr::Rsi, WINDOW + 0xffe);
    m.exec(&[0xad]);
    assert_eq!(m.reg(Gpr::Rax), 0x0403_0201);
    assert_eq!(
        (
            m.logged(0).gpa,
            m.logged(0).size,
            m.logged(1).gpa,
            m.logged(1).size
        ),
        (WINDOW + 0xffe, 2, WINDOW + 0x1000, 2)
    );
    // STOSQ across it: two 4-byte writes with each part's bytes.
    m.cpu.rip = RIP;
    m.set(Gpr::Rax, 0x8877_6655_4433_2211);
    m.set(Gpr::Rdi, WINDOW + 0x1ffc);
    m.exec(&[0x48, 0xab]);
    assert_eq!(
        (m.logged(2).data, m.logged(3).data),
        (0x4433_2211, 0x8877_6655)
    );
    assert_eq!(
        &m.window[0x1ffc..0x2004],
        &0x8877_6655_4433_2211u64.to_le_bytes()
    );
}

#[test]
fn a_long_rep_re_enters_the_guest_between_batches() {
    let mut m = Machine::long_mode();
    m.set(Gpr::Rdi, WINDOW);
    m.set(Gpr::Rcx, 2 * u64::from(BATCH) + 10);
    m.exec(&[0xf3, 0xaa]);
    assert_eq!(m.entries, 3);
    assert_eq!(m.accesses, 2 * BATCH as usize + 10);
    assert_eq!((m.reg(Gpr::Rcx), m.cpu.rip), (0, RIP + 2));
    assert_eq!(m.cpu.rflags & RFLAGS_RF, 0, "RF clear once it retires");
    // One batch alone: RIP stays, RF set, the registers of the batch.
    let mut m = Machine::long_mode();
    m.set(Gpr::Rdi, WINDOW);
    m.set(Gpr::Rcx, 5000);
    m.cpu.shadow = true;
    let op = decode(&[0xf3, 0xaa], 64).expect("REP STOSB");
    let paging = PagingRegs {
        cr0: m.cpu.cr[0],
        cr3: m.cpu.cr[3],
        cr4: m.cpu.cr[4],
        efer: m.cpu.efer,
        pkru: 0,
    };
    let mut s = StringMmio::new(op);
    while let Step::Mmio(exit) = s.step(&mut m.cpu, &mut m.mem, &paging) {
        let read = m.bus(exit);
        s.complete(read);
    }
    assert_eq!(m.cpu.rip, RIP);
    assert_eq!(m.reg(Gpr::Rcx), 5000 - u64::from(BATCH));
    assert_eq!(m.reg(Gpr::Rdi), WINDOW + u64::from(BATCH));
    assert_ne!(m.cpu.rflags & RFLAGS_RF, 0);
    assert!(!m.cpu.shadow);
}

#[test]
fn under_tf_a_repeated_string_instruction_traps_after_each_iteration() {
    // REP STOSB of 3 bytes to MMIO with TF set: one element per entry, RIP at the
    // instruction after the first two (a debugger steps it element by element), past
    // it after the last.
    let mut m = Machine::long_mode();
    m.set(Gpr::Rdi, WINDOW);
    m.set(Gpr::Rcx, 3);
    m.set(Gpr::Rax, 0x5a);
    m.cpu.rflags |= 1 << 8;
    m.exec(&[0xf3, 0xaa]);
    assert_eq!((m.entries, m.iterations_trapped), (3, 2));
    assert_eq!(m.accesses, 3);
    assert_eq!((m.reg(Gpr::Rcx), m.cpu.rip), (0, RIP + 2));
    assert_eq!(m.reg(Gpr::Rdi), WINDOW + 3);
    // A single STOSB under TF retires at once, and REP without TF runs in one batch.
    let mut m = Machine::long_mode();
    m.set(Gpr::Rdi, WINDOW);
    m.cpu.rflags |= 1 << 8;
    m.exec(&[0xaa]);
    assert_eq!(
        (m.entries, m.iterations_trapped, m.cpu.rip),
        (1, 0, RIP + 1)
    );
    let mut m = Machine::long_mode();
    m.set(Gpr::Rdi, WINDOW);
    m.set(Gpr::Rcx, 3);
    m.exec(&[0xf3, 0xaa]);
    assert_eq!((m.entries, m.iterations_trapped), (1, 0));
}

#[test]
fn a_queued_interrupt_ends_the_batch_after_the_element() {
    // REP MOVSB MMIO to MMIO; the core queues an interrupt while the third element's
    // write is out (its fifth access): the element completes, then the guest is
    // entered at the instruction to take it.
    let mut m = Machine::long_mode();
    m.set(Gpr::Rsi, WINDOW);
    m.set(Gpr::Rdi, WINDOW + 0x100);
    m.set(Gpr::Rcx, 10);
    m.interrupt_after = Some(5);
    m.exec(REP_MOVSB);
    assert_eq!(m.accesses, 6);
    assert_eq!(m.fault(), Some(Event::ExternalInterrupt(0x20)));
    assert_eq!(
        (m.reg(Gpr::Rcx), m.reg(Gpr::Rsi), m.reg(Gpr::Rdi), m.cpu.rip),
        (7, WINDOW + 3, WINDOW + 0x103, RIP)
    );
}

#[test]
fn rep_with_a_zero_count_does_nothing_and_retires() {
    let mut m = Machine::long_mode();
    m.set(Gpr::Rsi, WINDOW);
    m.set(Gpr::Rdi, HOLE);
    m.set(Gpr::Rcx, 0xffff_ffff_0000_0000);
    // 32-bit address size: ECX is 0.
    m.exec(&[0x67, 0xf3, 0xa4]);
    assert_eq!((m.accesses, m.fault(), m.cpu.rip), (0, None, RIP + 3));
    assert_eq!(m.reg(Gpr::Rcx), 0xffff_ffff_0000_0000);
}

#[test]
fn misaligned_operands_at_cpl3_with_alignment_checking_raise_ac() {
    let mut m = Machine::long_mode();
    m.cpu.cpl = 3;
    m.cpu.cr[0] |= CR0_AM;
    m.cpu.rflags |= RFLAGS_AC;
    m.set(Gpr::Rdi, WINDOW + 2);
    m.exec(&[0xab]);
    assert_eq!((m.fault(), m.accesses), (exception(17), 0));
    // Aligned, it completes.
    let mut m = Machine::long_mode();
    m.cpu.cpl = 3;
    m.cpu.cr[0] |= CR0_AM;
    m.cpu.rflags |= RFLAGS_AC;
    m.set(Gpr::Rdi, WINDOW + 4);
    m.exec(&[0xab]);
    assert_eq!((m.fault(), m.accesses), (None, 1));
}

#[test]
fn a_step_without_its_completion_drops_the_element() {
    let mut m = Machine::long_mode();
    m.set(Gpr::Rsi, WINDOW);
    m.set(Gpr::Rdi, 0x8000);
    m.set(Gpr::Rcx, 3);
    let op = decode(REP_MOVSB, 64).expect("REP MOVSB");
    let paging = PagingRegs {
        cr0: m.cpu.cr[0],
        cr3: m.cpu.cr[3],
        cr4: m.cpu.cr[4],
        efer: m.cpu.efer,
        pkru: 0,
    };
    let mut s = StringMmio::new(op);
    assert!(matches!(
        s.step(&mut m.cpu, &mut m.mem, &paging),
        Step::Mmio(_)
    ));
    // The run ended before the core completed the read: the guest re-runs the element.
    assert_eq!(s.step(&mut m.cpu, &mut m.mem, &paging), Step::Enter);
    assert_eq!(
        (m.reg(Gpr::Rcx), m.reg(Gpr::Rsi), m.cpu.rip),
        (3, WINDOW, RIP)
    );
}

#[test]
fn decoding() {
    let op = |kind, size, address_size, segment, repeat, len| {
        Some(StringOp {
            kind,
            size,
            address_size,
            segment,
            repeat,
            len,
        })
    };
    use AddressSize::*;
    assert_eq!(
        decode(&[0xf3, 0xa6], 64),
        op(Kind::Cmps, 1, Bits64, SegReg::Ds, Repeat::Rep, 2)
    );
    assert_eq!(
        decode(&[0x64, 0x67, 0xf3, 0x48, 0xa5], 64),
        op(Kind::Movs, 8, Bits32, SegReg::Fs, Repeat::Rep, 5)
    );
    assert_eq!(
        decode(&[0xf2, 0x66, 0xaf], 32),
        op(Kind::Scas, 2, Bits32, SegReg::Ds, Repeat::Repne, 3)
    );
    assert_eq!(
        decode(&[0x26, 0xac], 16),
        op(Kind::Lods, 1, Bits16, SegReg::Es, Repeat::Once, 2)
    );
    // 16-bit code: STOSW, with 67 a 32-bit address; 66 makes it STOSD.
    assert_eq!(
        decode(&[0x67, 0xab], 16),
        op(Kind::Stos, 2, Bits32, SegReg::Ds, Repeat::Once, 2)
    );
    assert_eq!(
        decode(&[0x66, 0xab], 16),
        op(Kind::Stos, 4, Bits16, SegReg::Ds, Repeat::Once, 2)
    );
    // SSE's MOVSD and CMPSD are not string instructions; nor are INS/OUTS, a MOV, or
    // bytes that do not decode.
    assert_eq!(decode(&[0xf2, 0x0f, 0x10, 0x00], 64), None);
    assert_eq!(decode(&[0xf2, 0x0f, 0xc2, 0x00, 0x00], 64), None);
    assert_eq!(decode(&[0x6c], 64), None);
    assert_eq!(decode(&[0x8b, 0x00], 64), None);
    assert_eq!(decode(&[0xf3], 64), None);
    assert_eq!(decode(&[], 64), None);
}
