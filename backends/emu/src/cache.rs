//! The decoded-instruction cache: blocks of [`Op`]s keyed by guest-physical address,
//! code size and RIP, found through an open-addressed table (linear probing), invalidated
//! per page when the guest writes to code, and flushed whole when it grows too large.
//!
//! The table never drops a cached block to make room for another: a direct-mapped table
//! did, and two hot blocks in one slot then pushed each other out on every lookup and
//! were decoded again each time (a Linux boot filled the cache with such copies and
//! flushed it 17 times, over half of each flush's blocks duplicates).

use crate::cpu::Cpu;
use crate::decode::{build, ends_block, never_breaks, Op};
use crate::exception::Ex;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use iced_x86::{Decoder, DecoderError, DecoderOptions, Mnemonic};
use opsvisor_core::exit::Exit;
use opsvisor_core::mmu::memory::GuestMemory;

/// Most instructions in one block.
const MAX_BLOCK_OPS: usize = 64;
const _: () = assert!(MAX_BLOCK_OPS <= 256, "Op::pos is a u8");
/// Cached blocks before everything is flushed.
const MAX_BLOCKS: usize = 1 << 15;
/// Table slots: a power of two, twice [`MAX_BLOCKS`] so that a probe sequence is short
/// and always reaches an empty slot.
const TABLE: usize = 2 * MAX_BLOCKS;
const _: () = assert!(TABLE.is_power_of_two() && TABLE > MAX_BLOCKS);

/// A straight-line run of decoded instructions.
#[derive(Debug)]
pub struct Block {
    /// RIP of the first instruction.
    pub rip: u64,
    /// Guest-physical address of the first instruction (`u64::MAX` once invalidated).
    pub gpa: u64,
    /// Code size it was decoded for.
    pub bits: u8,
    /// One past the last byte, as a guest-physical address.
    pub end: u64,
    /// The instructions.
    pub ops: Vec<Op>,
    /// Blocks that followed this one, valid while [`Cpu::fetch_gen`] is unchanged: the
    /// hot path goes from block to block without translating RIP or hashing.
    pub links: [Link; 2],
    /// No instruction in the block can set [`Cpu::brk`] (see
    /// [`crate::decode::never_breaks`]).
    pub pure: bool,
}

/// A cached successor of a block.
#[derive(Clone, Copy, Debug)]
pub struct Link {
    /// RIP of the successor.
    pub rip: u64,
    /// `Cpu::fetch_gen` when the link was made.
    pub gen: u64,
    /// Index of the successor in [`Cache::blocks`].
    pub idx: u32,
}

/// A link that never matches.
pub const NO_LINK: Link = Link {
    rip: 0,
    gen: 0,
    idx: u32::MAX,
};

/// The block cache.
#[derive(Debug)]
pub struct Cache {
    /// Every block decoded since the last flush.
    pub blocks: Vec<Block>,
    table: Vec<u32>,
    page_blocks: BTreeMap<u64, Vec<u32>>,
    /// Turns runs of instructions into host code as blocks come in (see [`crate::jit`]).
    pub translator: crate::jit::Translator,
}

impl Default for Cache {
    fn default() -> Self {
        Self::new()
    }
}

const NONE: u32 = u32::MAX;

#[inline(always)]
fn slot(gpa: u64, bits: u8) -> usize {
    let h = (gpa ^ u64::from(bits)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> (64 - TABLE.trailing_zeros())) as usize
}

impl Cache {
    /// An empty cache.
    pub fn new() -> Cache {
        Cache {
            blocks: Vec::new(),
            table: alloc::vec![NONE; TABLE],
            page_blocks: BTreeMap::new(),
            translator: crate::jit::Translator::new(),
        }
    }

    /// The block starting at `gpa` for `bits`-bit code decoded at `rip`, if cached.
    #[inline(always)]
    pub fn lookup(&self, gpa: u64, bits: u8, rip: u64) -> Option<u32> {
        let mut s = slot(gpa, bits);
        // Ends: at most MAX_BLOCKS of the TABLE slots are filled.
        loop {
            let i = self.table[s];
            let b = self.blocks.get(i as usize)?;
            if b.gpa == gpa && b.bits == bits && b.rip == rip {
                return Some(i);
            }
            s = (s + 1) & (TABLE - 1);
        }
    }

    /// The successor of block `prev` at `rip`, if linked under generation `gen`.
    #[inline(always)]
    pub fn follow(&self, prev: u32, rip: u64, gen: u64) -> Option<u32> {
        let b = self.blocks.get(prev as usize)?;
        b.links
            .iter()
            .find(|l| l.rip == rip && l.gen == gen)
            .map(|l| l.idx)
    }

    /// Record that block `idx` followed block `prev`.
    pub fn link(&mut self, prev: u32, rip: u64, gen: u64, idx: u32) {
        if let Some(b) = self.blocks.get_mut(prev as usize) {
            b.links[1] = b.links[0];
            b.links[0] = Link { rip, gen, idx };
        }
    }

    /// Drop everything.
    pub fn flush(&mut self, cpu: &mut Cpu) {
        self.blocks.clear();
        self.table.fill(NONE);
        self.page_blocks.clear();
        // No op points into the translated code any more.
        self.translator.reset();
        cpu.code_chunks.fill(0);
        cpu.new_fetch_epoch();
    }

    /// Invalidate every block on guest-physical page number `page`.
    pub fn invalidate_page(&mut self, cpu: &mut Cpu, page: u64) {
        if let Some(list) = self.page_blocks.remove(&page) {
            for i in list {
                if let Some(b) = self.blocks.get_mut(i as usize) {
                    b.gpa = u64::MAX;
                }
            }
        }
        if let Some(m) = cpu.code_chunks_mut(page) {
            *m = 0;
        }
        cpu.new_fetch_epoch();
    }

    /// Add a block, its runs of instructions translated (see [`crate::jit`]),
    /// and mark its bytes as code, here and in the machine's shared record
    /// (so other vCPUs' stores to the page are seen); returns its index.
    pub fn insert(&mut self, cpu: &mut Cpu, mem: &mut GuestMemory, mut block: Block) -> u32 {
        if self.blocks.len() >= MAX_BLOCKS || self.translator.nearly_full() {
            self.flush(cpu);
        }
        let may_stop = self.translator.translate(&mut block.ops, block.bits);
        // A Jcc before the end that no translated run holds ends the block again: the
        // interpreter's Jcc does not leave a block.
        let last = block.ops.len().saturating_sub(1);
        let cut = block.ops[..last]
            .iter()
            .position(|op| op.i.is_jcc_short_or_near() && !crate::jit::is_translated(op));
        if let Some(k) = cut {
            block.ops.truncate(k + 1);
            if let Some(op) = block.ops.last() {
                block.end = block.gpa + op.next_ip.wrapping_sub(block.rip);
            }
            block.pure = block
                .ops
                .iter()
                .all(|op| crate::decode::never_breaks(&op.i));
        }
        if may_stop {
            // A translated run may stop early, setting `brk`, and before its first
            // instruction, which then runs alone (see `jit::stopped`), decoded into the
            // box made here rather than on that path.
            block.pure = false;
            if cpu.jit_first.is_none() {
                cpu.jit_first = Some(alloc::boxed::Box::new(crate::jit::no_first()));
            }
        }
        fuse(&mut block.ops, block.bits);
        let idx = self.blocks.len() as u32;
        let page = block.gpa >> 12;
        let first = (block.gpa & 0xfff) >> 7;
        let last = ((block.end - 1) & 0xfff) >> 7;
        let mut mask = 0u32;
        for ch in first..=last {
            mask |= 1 << ch;
        }
        if let Some(slot) = cpu.ram.page_slot(page) {
            if let Some(m) = cpu.code_chunks.get_mut(slot) {
                let was = *m;
                *m |= mask;
                if was == 0 {
                    // Stores to this page must now take the checked path.
                    cpu.tlb.protect_code_page(page << 12);
                }
            }
            let record = mem.code_pages_mut();
            let before = record.seq();
            record.watch(slot, page, cpu.code_reader);
            // A reader skips its own events: one that was up to date stays so.
            if cpu.code_seen == before {
                cpu.code_seen = record.seq();
            }
        }
        self.page_blocks.entry(page).or_default().push(idx);
        // The first empty slot of the probe sequence, or one whose block was
        // invalidated (no lookup can match it any more). The caller looked the key up
        // and missed, so no valid block with it is further along.
        let mut s = slot(block.gpa, block.bits);
        while let Some(b) = self.blocks.get(self.table[s] as usize) {
            if b.gpa == u64::MAX {
                break;
            }
            s = (s + 1) & (TABLE - 1);
        }
        self.table[s] = idx;
        self.blocks.push(block);
        idx
    }
}

/// Let the flag setter before the Jcc that ends a block absorb it (see `exec::fused`),
/// where the pair has a fused handler and the setter is an instruction of its own.
/// [`decode_block`] leaves this to its caller, so that [`Cache::insert`] may translate the
/// Jcc with the run before it instead.
pub fn fuse(ops: &mut Vec<Op>, bits: u8) {
    if let [.., a, j] = &ops[..] {
        // An op whose handler is not its instruction's own (a translated run, whose
        // instruction is only its first) stays as it is.
        if a.dead_flags {
            return;
        }
        if let Some(h) = crate::exec::fused::pick(a, j, bits) {
            let (next_ip, target) = (j.next_ip, j.imm);
            ops.pop();
            if let Some(a) = ops.last_mut() {
                a.h = h;
                a.next_ip = next_ip;
                a.target = target;
                a.fused = true;
            }
        }
    }
}

/// Decode the block at `rip` (guest-physical `gpa`, linear `la`) for `bits`-bit code,
/// its ending flag setter and Jcc not fused yet ([`fuse`]). With `extend`, for
/// [`Cache::insert`] to translate, 64-bit code goes on past Jcc forward (the rest of the
/// page and [`MAX_BLOCK_OPS`] allowing).
/// Returns the block and whether it may be cached (an instruction that straddles two
/// pages is decoded alone and not cached: its second page may be remapped).
pub fn decode_block(
    cpu: &mut Cpu,
    mem: &mut GuestMemory,
    rip: u64,
    la: u64,
    gpa: u64,
    bits: u8,
    extend: bool,
) -> Result<(Block, bool), Ex> {
    let page_left = 4096 - (gpa & 0xfff);
    let Some(bytes) = mem.slice(gpa, page_left) else {
        return Err(cpu.exit_with(Exit::SlatViolation { gpa }));
    };
    let mut dec = Decoder::with_ip(u32::from(bits), bytes, rip, DecoderOptions::NONE);
    let mut ops = Vec::new();
    let mut end = gpa;
    let mut pure = true;
    while dec.can_decode() && ops.len() < MAX_BLOCK_OPS {
        let pos = dec.position();
        let i = dec.decode();
        if dec.last_error() == DecoderError::NoMoreBytes {
            // Straddles the page end: stop before it.
            break;
        }
        if !ops.is_empty() && matches!(i.mnemonic(), Mnemonic::Rdtsc | Mnemonic::Rdtscp) {
            // The TSC counts retired instructions, and the block loop stores the count
            // only between blocks: an instruction that reads it must start its block.
            break;
        }
        end = gpa + (pos + i.len()) as u64;
        let i = crate::decode::correct_decode(i, &bytes[pos..pos + i.len()], u32::from(bits));
        let mut op = build(&i, u32::from(bits));
        // Below MAX_BLOCK_OPS, so it fits.
        op.pos = ops.len() as u8;
        // A Jcc forward may be passed when the block is for translation, which holds it
        // in a run or ends the block there again ([`Cache::insert`]); a Jcc back ends it,
        // so that a loop is its own block.
        let passed =
            extend && bits == 64 && i.is_jcc_short_or_near() && i.near_branch_target() > i.ip();
        let stop = (ends_block(&i) && !passed) || i.is_invalid();
        pure &= never_breaks(&i);
        ops.push(op);
        if stop {
            break;
        }
    }
    for k in 0..ops.len() {
        let (head, after) = ops.split_at_mut(k + 1);
        if let Some(op) = head.last_mut() {
            if let Some(h) = crate::exec::muldiv::dead_flags(op, after) {
                op.h = h;
                op.dead_flags = true;
            }
        }
    }
    if !ops.is_empty() {
        return Ok((
            Block {
                rip,
                gpa,
                bits,
                end,
                ops,
                links: [NO_LINK; 2],
                pure,
            },
            true,
        ));
    }
    // The first instruction straddles two pages: fetch the rest from the next page.
    let mut buf = [0u8; 15];
    let n1 = (page_left as usize).min(15);
    buf[..n1].copy_from_slice(&bytes[..n1]);
    let la2 = cpu.wrap_la(la.wrapping_add(page_left));
    let gpa2 = cpu.fetch_gpa(mem, la2)?;
    match mem.slice(gpa2, (15 - n1) as u64) {
        Some(b2) => buf[n1..].copy_from_slice(b2),
        // The instruction runs past the end of RAM: the bytes beyond read as unbacked
        // memory does on a PC, all ones. (Fetching wholly outside RAM is refused above.)
        None => buf[n1..].fill(0xff),
    }
    let mut dec = Decoder::with_ip(u32::from(bits), &buf, rip, DecoderOptions::NONE);
    let i = dec.decode();
    let i = crate::decode::correct_decode(i, &buf[..i.len().min(15)], u32::from(bits));
    Ok((
        Block {
            rip,
            gpa,
            bits,
            end: gpa + page_left,
            ops: alloc::vec![build(&i, u32::from(bits))],
            links: [NO_LINK; 2],
            pure: never_breaks(&i),
        },
        false,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-instruction block (NOP) at `gpa`, as 64-bit code at RIP `gpa`.
    fn nop_block(cpu: &mut Cpu, mem: &mut GuestMemory, gpa: u64) -> Block {
        mem.write(gpa, &[0x90, 0xc3]).unwrap();
        let (block, cacheable) = decode_block(cpu, mem, gpa, gpa, gpa, 64, false).unwrap();
        assert!(cacheable);
        block
    }

    #[test]
    fn blocks_in_one_table_slot_are_all_found() {
        let mut cpu = Cpu::new();
        let mut mem = GuestMemory::with_ram(4 << 20).unwrap();
        let mut cache = Cache::new();
        // Addresses whose keys start their probe in the same slot: a direct-mapped
        // table kept only the last of them.
        let first = 0x1000;
        let same: Vec<u64> = (0x2000..0x3f_f000u64)
            .step_by(4)
            .filter(|&g| slot(g, 64) == slot(first, 64))
            .take(3)
            .collect();
        assert_eq!(same.len(), 3, "three addresses sharing a slot below 4 MiB");
        let mut idx = Vec::new();
        for gpa in core::iter::once(first).chain(same.iter().copied()) {
            let b = nop_block(&mut cpu, &mut mem, gpa);
            idx.push((gpa, cache.insert(&mut cpu, &mut mem, b)));
        }
        for (gpa, i) in &idx {
            assert_eq!(cache.lookup(*gpa, 64, *gpa), Some(*i), "{gpa:#x}");
            assert_eq!(
                cache.lookup(*gpa, 32, *gpa),
                None,
                "{gpa:#x} as 32-bit code"
            );
        }
        // Invalidating the first block's page leaves the others found, and the next
        // block for that slot takes the invalidated block's table entry.
        cache.invalidate_page(&mut cpu, first >> 12);
        assert_eq!(cache.lookup(first, 64, first), None);
        for (gpa, i) in &idx[1..] {
            assert_eq!(cache.lookup(*gpa, 64, *gpa), Some(*i), "{gpa:#x}");
        }
        let b = nop_block(&mut cpu, &mut mem, first);
        let again = cache.insert(&mut cpu, &mut mem, b);
        assert_eq!(cache.lookup(first, 64, first), Some(again));
        let used = cache.table.iter().filter(|&&i| i != NONE).count();
        assert_eq!(used, idx.len(), "the invalidated block's entry was reused");
    }
}
