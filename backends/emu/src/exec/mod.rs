//! Instruction semantics, one family per module, and the choice of handler per decoded
//! instruction ([`select`]), made once when a block is decoded.

pub mod alu;
pub mod bits;
pub mod bound;
pub mod branch;
pub mod crc32;
pub mod data;
pub mod far;
pub mod flags;
pub mod fused;
pub mod io;
pub mod muldiv;
pub mod pku;
pub mod segment;
pub mod shift;
pub mod simd;
pub mod simd_fp;
pub mod stack;
pub mod string;
pub mod syscall;
pub mod system;
pub mod x87;
pub mod xsave;

use crate::cpu::Cpu;
use crate::decode::Op;
use crate::exception::{ud, Ex};
use crate::interrupt;
use iced_x86::{ConditionCode, Mnemonic, OpKind};
use opsvisor_core::mmu::memory::GuestMemory;

/// The instance of handler `$f` for operand size `$size` (1, 2, 4, else 8), with any
/// leading const arguments: `sized!(alu_rr::<ADD, true>, op.size)`.
macro_rules! sized {
    ($f:ident :: < $($a:tt),* >, $size:expr) => {
        match $size {
            1 => $f::<$($a,)* 1> as $crate::decode::Handler,
            2 => $f::<$($a,)* 2>,
            4 => $f::<$($a,)* 4>,
            _ => $f::<$($a,)* 8>,
        }
    };
    ($f:ident, $size:expr) => {
        match $size {
            1 => $f::<1> as $crate::decode::Handler,
            2 => $f::<2>,
            4 => $f::<4>,
            _ => $f::<8>,
        }
    };
}
pub(crate) use sized;

/// Effective address (offset in the segment) of the instruction's memory operand.
#[inline(always)]
pub fn ea(c: &Cpu, op: &Op) -> u64 {
    // Register codes of memory operands are at most ZERO_REG; masked to the table's size
    // they need no bounds check.
    const M: usize = crate::cpu::GPR_SLOTS - 1;
    c.gpr[usize::from(op.base) & M]
        .wrapping_add(c.gpr[usize::from(op.index) & M] << op.scale)
        .wrapping_add(op.disp)
        & op.amask
}

/// Read the memory operand as `S` bytes (1, 2, 4, 8): straight from the host page when
/// the TLB allows it ([`Cpu::fast_host`]), else through the checked path.
#[inline(always)]
pub fn load<const S: u8>(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<u64, Ex> {
    let a = ea(c, op);
    match c.fast_host(op.seg, a, u32::from(S), false) {
        // SAFETY: `fast_host` found a TLB entry that lets reads of these S bytes use the
        // host page: they lie inside RAM of the current memory map.
        Some(p) => Ok(unsafe { crate::mem::host_read(p, u32::from(S)) }),
        None => load_checked(c, mem, op, u32::from(S)),
    }
}

/// [`load`] for a read-modify-write destination: the page must take writes (a read-only
/// or absent page faults as a write, before anything is written).
#[inline(always)]
pub fn load_rmw<const S: u8>(c: &mut Cpu, mem: &mut GuestMemory, op: &Op) -> Result<u64, Ex> {
    let a = ea(c, op);
    match c.fast_host(op.seg, a, u32::from(S), true) {
        // SAFETY: as in `load`; the write tag implies the read permission.
        Some(p) => Ok(unsafe { crate::mem::host_read(p, u32::from(S)) }),
        None => load_rmw_checked(c, mem, op, u32::from(S)),
    }
}

/// Write `v` to the memory operand as `S` bytes.
#[inline(always)]
pub fn store<const S: u8>(c: &mut Cpu, mem: &mut GuestMemory, op: &Op, v: u64) -> Result<(), Ex> {
    let a = ea(c, op);
    match c.fast_host(op.seg, a, u32::from(S), true) {
        Some(p) => {
            // SAFETY: `fast_host` found a TLB entry that lets writes of these S bytes use
            // the host page: writable RAM of the current memory map without decoded code.
            unsafe { crate::mem::host_write(p, u32::from(S), v) };
            Ok(())
        }
        None => store_checked(c, mem, op, u32::from(S), v),
    }
}

#[cold]
#[inline(never)]
fn load_checked(c: &mut Cpu, mem: &mut GuestMemory, op: &Op, size: u32) -> Result<u64, Ex> {
    let a = ea(c, op);
    c.rd_load(mem, op.seg, a, size)
}

#[cold]
#[inline(never)]
fn load_rmw_checked(c: &mut Cpu, mem: &mut GuestMemory, op: &Op, size: u32) -> Result<u64, Ex> {
    let a = ea(c, op);
    c.rd_rmw(mem, op.seg, a, size)
}

#[cold]
#[inline(never)]
fn store_checked(c: &mut Cpu, mem: &mut GuestMemory, op: &Op, size: u32, v: u64) -> Result<(), Ex> {
    let a = ea(c, op);
    c.wr(mem, op.seg, a, size, v)
}

/// Read operand `n` (register, memory or immediate) as `size` bytes.
#[inline]
pub fn rd(c: &mut Cpu, mem: &mut GuestMemory, op: &Op, n: u32, size: u32) -> Result<u64, Ex> {
    match op.i.op_kind(n) {
        OpKind::Register => Ok(c.get(op.r[(n as usize).min(2)], size)),
        OpKind::Memory => {
            let a = ea(c, op);
            c.rd(mem, op.seg, a, size)
        }
        OpKind::Immediate8_2nd => Ok(u64::from(op.i.immediate8_2nd())),
        _ => Ok(op.imm),
    }
}

/// Read operand `n` as `size` bytes when the instruction will write it back (the
/// destination of a read-modify-write): a memory operand is checked for writing already
/// on the read, so a read-only or absent page faults as a write (W=1), as on hardware.
#[inline]
pub fn rd_rmw(c: &mut Cpu, mem: &mut GuestMemory, op: &Op, n: u32, size: u32) -> Result<u64, Ex> {
    if op.i.op_kind(n) == OpKind::Memory {
        let a = ea(c, op);
        return c.rd_rmw(mem, op.seg, a, size);
    }
    rd(c, mem, op, n, size)
}

/// Write operand `n` (register or memory) as `size` bytes.
#[inline]
pub fn wr(
    c: &mut Cpu,
    mem: &mut GuestMemory,
    op: &Op,
    n: u32,
    size: u32,
    v: u64,
) -> Result<(), Ex> {
    match op.i.op_kind(n) {
        OpKind::Register => {
            c.set(op.r[(n as usize).min(2)], size, v);
            Ok(())
        }
        OpKind::Memory => {
            let a = ea(c, op);
            c.wr(mem, op.seg, a, size, v)
        }
        _ => Err(ud()),
    }
}

/// Condition codes by their iced discriminant, for handlers specialised by a `u8`.
pub const CCS: [ConditionCode; 17] = [
    ConditionCode::None,
    ConditionCode::o,
    ConditionCode::no,
    ConditionCode::b,
    ConditionCode::ae,
    ConditionCode::e,
    ConditionCode::ne,
    ConditionCode::be,
    ConditionCode::a,
    ConditionCode::s,
    ConditionCode::ns,
    ConditionCode::p,
    ConditionCode::np,
    ConditionCode::l,
    ConditionCode::ge,
    ConditionCode::le,
    ConditionCode::g,
];

/// Evaluate condition `cc` (an index into [`CCS`]).
#[inline(always)]
pub fn cond(cc: u8, rflags: u64) -> bool {
    crate::arith::cond::cond(CCS[usize::from(cc) % 17], rflags)
}

/// An instruction the emulator does not implement: counted, then #UD.
pub fn unimplemented(c: &mut Cpu, _: &mut GuestMemory, op: &Op) -> Result<(), Ex> {
    c.count_unimplemented(op.i.mnemonic());
    Err(ud())
}

/// An instruction that raises #UD by definition (UD0/UD1/UD2, invalid encodings, x87/SSE
/// with no FPU).
pub fn raise_ud(_: &mut Cpu, _: &mut GuestMemory, _: &Op) -> Result<(), Ex> {
    Err(ud())
}

/// No operation (NOP, hints, fences, cache and prefetch hints).
pub fn nop(_: &mut Cpu, _: &mut GuestMemory, _: &Op) -> Result<(), Ex> {
    Ok(())
}

fn kinds(op: &Op) -> (OpKind, OpKind) {
    let i = &op.i;
    let k0 = if i.op_count() > 0 {
        i.op_kind(0)
    } else {
        OpKind::Register
    };
    let k1 = if i.op_count() > 1 {
        i.op_kind(1)
    } else {
        OpKind::Register
    };
    (k0, k1)
}

/// Whether operand kind `k` is an immediate (of any width or extension).
pub(crate) fn is_imm(k: OpKind) -> bool {
    matches!(
        k,
        OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64
    )
}

/// Choose the handler (and its detail) for `op`. Returns false when the emulator does
/// not implement the instruction (the handler is then the counted #UD of
/// [`unimplemented`], or plain #UD for the VEX/EVEX forms the CPU model does not have).
pub fn select(op: &mut Op, bits: u32) -> bool {
    let mut implemented = true;
    use alu::{dec_r, inc_r, incdec_m};
    use data::{lea, mov_load, mov_mi, mov_ri, mov_rr, mov_store, xchg_rr};
    use stack::{pop_r, push_r};
    use Mnemonic as M;
    let _ = bits;
    let (k0, k1) = kinds(op);
    let rr = k0 == OpKind::Register && k1 == OpKind::Register && op.i.op_count() == 2;
    let ri = k0 == OpKind::Register && is_imm(k1) && op.i.op_count() == 2;
    let form = match (op.i.op_count(), k0, k1) {
        (2, OpKind::Register, OpKind::Register) => alu::Form::RR,
        (2, OpKind::Register, k) if is_imm(k) => alu::Form::RI,
        (2, OpKind::Register, OpKind::Memory) => alu::Form::RM,
        (2, OpKind::Memory, OpKind::Register) => alu::Form::MR,
        (2, OpKind::Memory, k) if is_imm(k) => alu::Form::MI,
        _ => alu::Form::Other,
    };
    // The memory forms' handlers access S bytes: the operand size must be the memory's.
    let form = match form {
        alu::Form::RM | alu::Form::MR | alu::Form::MI
            if op.i.memory_size().size() != usize::from(op.size) =>
        {
            alu::Form::Other
        }
        f => f,
    };
    let m = op.i.mnemonic();
    op.aux = op.i.condition_code() as u8;
    // Segment, control and debug registers take the system paths.
    let sreg0 = k0 == OpKind::Register && op.i.op_register(0).is_segment_register();
    let sreg1 =
        op.i.op_count() > 1 && k1 == OpKind::Register && op.i.op_register(1).is_segment_register();
    let creg = op.i.op_count() == 2
        && k0 == OpKind::Register
        && k1 == OpKind::Register
        && (op.i.op_register(0).is_cr()
            || op.i.op_register(1).is_cr()
            || op.i.op_register(0).is_dr()
            || op.i.op_register(1).is_dr());
    op.h = match m {
        M::Add => alu::pick(alu::ADD, true, form, op.size),
        M::Or => alu::pick(alu::OR, true, form, op.size),
        M::Adc => alu::pick(alu::ADC, true, form, op.size),
        M::Sbb => alu::pick(alu::SBB, true, form, op.size),
        M::And => alu::pick(alu::AND, true, form, op.size),
        M::Sub => alu::pick(alu::SUB, true, form, op.size),
        M::Xor => alu::pick(alu::XOR, true, form, op.size),
        M::Cmp => alu::pick(alu::SUB, false, form, op.size),
        M::Test => alu::pick(alu::AND, false, form, op.size),
        M::Inc if k0 == OpKind::Register => sized!(inc_r, op.size),
        M::Dec if k0 == OpKind::Register => sized!(dec_r, op.size),
        M::Inc if k0 == OpKind::Memory && op.i.memory_size().size() == usize::from(op.size) => {
            sized!(incdec_m::<false>, op.size)
        }
        M::Dec if k0 == OpKind::Memory && op.i.memory_size().size() == usize::from(op.size) => {
            sized!(incdec_m::<true>, op.size)
        }
        M::Inc => alu::inc,
        M::Dec => alu::dec,
        M::Neg => alu::neg,
        M::Not => alu::not,

        M::Rol => shift::pick(crate::arith::shift::ShiftOp::Rol, op),
        M::Ror => shift::pick(crate::arith::shift::ShiftOp::Ror, op),
        M::Rcl => shift::pick(crate::arith::shift::ShiftOp::Rcl, op),
        M::Rcr => shift::pick(crate::arith::shift::ShiftOp::Rcr, op),
        M::Shl | M::Sal => shift::pick(crate::arith::shift::ShiftOp::Shl, op),
        M::Shr => shift::pick(crate::arith::shift::ShiftOp::Shr, op),
        M::Sar => shift::pick(crate::arith::shift::ShiftOp::Sar, op),
        M::Shld => shift::shld,
        M::Shrd => shift::shrd,
        M::Sarx | M::Shlx | M::Shrx | M::Rorx => shift::bmi2_shift,

        M::Mul => muldiv::mul,
        M::Imul if op.i.op_count() == 1 => muldiv::imul1,
        M::Imul => muldiv::pick_imul(op),
        M::Div => muldiv::div,
        M::Idiv => muldiv::idiv,
        M::Mulx => muldiv::mulx,

        M::Bt | M::Bts | M::Btr | M::Btc => bits::bt,
        M::Bsf | M::Bsr | M::Tzcnt | M::Lzcnt | M::Popcnt => bits::scan,
        M::Bswap => bits::bswap,
        M::Andn | M::Bextr | M::Blsi | M::Blsmsk | M::Blsr | M::Bzhi | M::Pdep | M::Pext => {
            bits::bmi
        }
        M::Adcx | M::Adox => bits::adx,

        M::Mov if creg => system::mov_cr_dr,
        M::Mov if sreg0 => segment::mov_to_sreg,
        M::Mov if sreg1 => segment::mov_from_sreg,
        M::Mov if rr => sized!(mov_rr, op.size),
        M::Mov if ri => sized!(mov_ri, op.size),
        M::Mov if k0 == OpKind::Register && k1 == OpKind::Memory => {
            sized!(mov_load, op.size)
        }
        M::Mov if k0 == OpKind::Memory && k1 == OpKind::Register => {
            sized!(mov_store, op.size)
        }
        M::Mov if k0 == OpKind::Memory && is_imm(k1) && op.i.op_count() == 2 => {
            sized!(mov_mi, op.size)
        }
        M::Mov => data::mov,
        M::Movzx => data::pick_extend(false, k1 == OpKind::Register, op.size, op.size1)
            .unwrap_or(data::movzx),
        M::Movsxd if op.size == 2 && k1 == OpKind::Memory => data::movsxd16_load,
        M::Movsx | M::Movsxd => data::pick_extend(true, k1 == OpKind::Register, op.size, op.size1)
            .unwrap_or(data::movsx),
        M::Movbe => data::movbe,
        M::Lea => sized!(lea, op.size),
        M::Xchg if rr => sized!(xchg_rr, op.size),
        M::Xchg => data::xchg,
        M::Cmpxchg => data::cmpxchg,
        M::Cmpxchg8b | M::Cmpxchg16b => data::cmpxchg_wide,
        M::Xadd => data::xadd,
        M::Cbw | M::Cwde | M::Cdqe => data::cbw,
        M::Cwd | M::Cdq | M::Cqo => data::cwd,
        m if crate::decode::is_cmovcc(m) => data::pick_cmov(op),
        m if crate::decode::is_setcc(m) => data::pick_setcc(op),
        M::Xlatb => data::xlat,
        // Enumerated with SSE4.2 (which the CPU model does not report), but a general
        // register instruction: executed when decoded.
        M::Crc32 => crc32::crc32,
        M::Pause => system::pause,
        M::Nop | M::Endbr32 | M::Endbr64 | M::Lfence | M::Mfence | M::Sfence => nop,
        // The hint space 0F 0D and 0F 18-1F: NOPs on every CPU this models.
        M::Reservednop => nop,
        M::Prefetch
        | M::Prefetchnta
        | M::Prefetcht0
        | M::Prefetcht1
        | M::Prefetcht2
        | M::Prefetchw => nop,
        M::Clflush | M::Clflushopt | M::Clwb => system::cache_line_flush,
        M::Ud0 | M::Ud1 | M::Ud2 | M::INVALID => raise_ud,
        M::Lahf => flags::lahf,
        M::Sahf => flags::sahf,
        M::Clc | M::Stc | M::Cmc | M::Cld | M::Std => flags::simple,
        M::Cli => flags::cli,
        M::Sti => flags::sti,
        M::Salc => flags::salc,

        M::Movsb | M::Movsw | M::Movsd | M::Movsq if op.i.is_string_instruction() => string::movs,
        M::Stosb | M::Stosw | M::Stosd | M::Stosq => string::stos,
        M::Lodsb | M::Lodsw | M::Lodsd | M::Lodsq => string::lods,
        M::Cmpsb | M::Cmpsw | M::Cmpsd | M::Cmpsq if op.i.is_string_instruction() => string::cmps,
        M::Scasb | M::Scasw | M::Scasd | M::Scasq => string::scas,

        M::Push if sreg0 => segment::push_sreg,
        M::Pop if sreg0 => segment::pop_sreg,
        M::Push if k0 == OpKind::Register => sized!(push_r, op.size),
        M::Pop if k0 == OpKind::Register => sized!(pop_r, op.size),
        M::Push => stack::push,
        M::Pop => stack::pop,
        M::Pushf | M::Pushfd | M::Pushfq => stack::pushf,
        M::Popf | M::Popfd | M::Popfq => stack::popf,
        M::Pusha | M::Pushad => stack::pusha,
        M::Popa | M::Popad => stack::popa,
        M::Enter => stack::enter,
        M::Leave => stack::leave,

        M::Jmp if k0 == OpKind::FarBranch16 || k0 == OpKind::FarBranch32 => far::jmp_far,
        M::Jmp if op.i.is_jmp_far_indirect() => far::jmp_far,
        M::Jmp if is_near(k0) => branch::jmp_rel,
        M::Jmp => branch::jmp_ind,
        M::Call if k0 == OpKind::FarBranch16 || k0 == OpKind::FarBranch32 => far::call_far,
        M::Call if op.i.is_call_far_indirect() => far::call_far,
        M::Call if is_near(k0) => branch::call_rel,
        M::Call => branch::call_ind,
        M::Ret => branch::ret,
        M::Retf => far::retf,
        M::Jo
        | M::Jno
        | M::Jb
        | M::Jae
        | M::Je
        | M::Jne
        | M::Jbe
        | M::Ja
        | M::Js
        | M::Jns
        | M::Jp
        | M::Jnp
        | M::Jl
        | M::Jge
        | M::Jle
        | M::Jg => branch::jcc_for(op.aux),
        M::Loop | M::Loope | M::Loopne => branch::loop_,
        M::Jcxz | M::Jecxz | M::Jrcxz => branch::jcxz,

        M::Int => interrupt::int_n,
        M::Int3 => interrupt::int3,
        M::Into => interrupt::into,
        M::Int1 => interrupt::int1,
        M::Iret | M::Iretd | M::Iretq => interrupt::iret,

        M::Lgdt | M::Lidt => system::lgdt_lidt,
        M::Sgdt | M::Sidt => system::sgdt_sidt,
        M::Lldt | M::Ltr => system::lldt_ltr,
        M::Sldt | M::Str => system::sldt_str,
        M::Smsw => system::smsw,
        M::Lmsw => system::lmsw,
        M::Clts => system::clts,
        M::Invlpg => system::invlpg,
        M::Invpcid => system::invpcid,
        M::Stac | M::Clac => system::stac_clac,
        M::Rdpkru => pku::rdpkru,
        M::Wrpkru => pku::wrpkru,
        M::Wbinvd | M::Invd | M::Wbnoinvd => system::cache_flush,
        M::Vmcall | M::Vmmcall => system::hypercall,
        M::Rdtsc => system::rdtsc,
        M::Rdtscp => system::rdtscp,
        M::Rdpid => system::rdpid,
        M::Swapgs => system::swapgs,
        M::Cpuid => system::cpuid,
        M::Rdmsr => system::rdmsr,
        M::Wrmsr => system::wrmsr,
        M::Hlt => system::hlt,
        M::Rdfsbase | M::Rdgsbase | M::Wrfsbase | M::Wrgsbase => system::fsgsbase,
        M::Lar | M::Lsl => segment::lar_lsl,
        M::Verr | M::Verw => segment::verr_verw,
        M::Arpl => segment::arpl,

        M::Syscall => syscall::syscall,
        M::Sysret | M::Sysretq => syscall::sysret,
        M::Sysenter => syscall::sysenter,
        M::Sysexit | M::Sysexitq => syscall::sysexit,

        M::In => io::in_,
        M::Out => io::out,
        M::Insb | M::Insw | M::Insd => io::ins,
        M::Outsb | M::Outsw | M::Outsd => io::outs,

        M::Lds | M::Les | M::Lfs | M::Lgs | M::Lss => segment::load_far_pointer,
        M::Daa | M::Das | M::Aaa | M::Aas | M::Aam | M::Aad => alu::bcd,
        M::Bound => bound::bound,
        _ => match family_handler(op) {
            Some(h) => h,
            None => {
                implemented = false;
                if op.i.encoding() != iced_x86::EncodingKind::Legacy {
                    // VEX/EVEX/XOP vector instructions: CPUID does not report AVX, so
                    // these are #UD by definition.
                    raise_ud
                } else {
                    unimplemented
                }
            }
        },
    };
    if op.i.is_string_instruction() {
        op.amask = crate::decode::addr_mask(&op.i);
    }
    if is_near(k0) {
        // Relative branches have no immediate: keep the target where handlers load it
        // directly instead of decoding it from the iced operand on every execution.
        op.imm = op.i.near_branch_target();
    }
    implemented
}

fn is_near(k: OpKind) -> bool {
    matches!(
        k,
        OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64
    )
}

/// The handler from one of the floating-point and SIMD families, if one implements `op`.
fn family_handler(op: &Op) -> Option<crate::decode::Handler> {
    x87::select(op)
        .or_else(|| xsave::select(op.i.code()))
        .or_else(|| simd::select(op))
        .or_else(|| simd_fp::select(op))
}

/// Whether the emulator implements the instruction (its handler is not the counted #UD
/// of [`unimplemented`]); for the coverage report.
pub fn is_implemented(i: &iced_x86::Instruction, bits: u32) -> bool {
    let mut op = crate::decode::build(i, bits);
    select(&mut op, bits)
}
