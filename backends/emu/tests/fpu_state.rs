//! The emulator's `X86Ops::fpu_state`/`set_fpu_state`: images round-trip, an image
//! FXRSTOR would refuse is refused without changing anything, the guest's instructions
//! see the loaded state, and the `Backend` enum forwards both operations.

use opsvisor_core::exit::Exit;
use opsvisor_core::fpu::{FpuStateError, FxsaveArea};
use opsvisor_core::ops::{ResetKind, RunLimit, SegReg, Segment, X86Ops};
use opsvisor_core::{Backend, EmuSlot, GuestMemory, Unavailable};
use opsvisor_emu::EmuVcpu;

/// The emulator supports every MXCSR bit of the low 16, DAZ included.
const EMU_MXCSR_MASK: u32 = 0xffff;

/// xorshift64*: a fixed-seed generator, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// An image with random contents in every field FXSAVE stores, in the form FXSAVE
/// stores it (FOP in 11 bits, zero padding and reserved bytes, the backend's
/// MXCSR_MASK), so that a get after a set must return it byte for byte.
fn random_image(rng: &mut Rng) -> FxsaveArea {
    let mut a = FxsaveArea::zeroed();
    a.set_fcw(rng.next() as u16);
    a.set_fsw(rng.next() as u16);
    a.set_ftw(rng.next() as u8);
    a.set_fop(rng.next() as u16 & 0x7ff);
    a.set_fip(rng.next());
    a.set_fdp(rng.next());
    a.set_mxcsr(rng.next() as u32 & EMU_MXCSR_MASK);
    a.set_mxcsr_mask(EMU_MXCSR_MASK);
    for n in 0..8 {
        let lo = rng.next().to_le_bytes();
        let hi = rng.next().to_le_bytes();
        let mut st = [0u8; 10];
        st[..8].copy_from_slice(&lo);
        st[8..].copy_from_slice(&hi[..2]);
        a.set_st(n, st);
    }
    for n in 0..16 {
        a.set_xmm(n, u128::from(rng.next()) << 64 | u128::from(rng.next()));
    }
    a
}

#[test]
fn set_then_get_round_trips() {
    let mut vcpu = EmuVcpu::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..200 {
        let image = random_image(&mut rng);
        assert_eq!(vcpu.set_fpu_state(&image), Ok(()));
        let back = vcpu.fpu_state().expect("the emulator holds the FPU state");
        assert_eq!(back.as_bytes(), image.as_bytes(), "{image:?}");
    }
}

#[test]
fn reserved_mxcsr_bits_are_refused_and_change_nothing() {
    let mut vcpu = EmuVcpu::new();
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let good = random_image(&mut rng);
    assert_eq!(vcpu.set_fpu_state(&good), Ok(()));
    for bit in 16..32 {
        let mut bad = random_image(&mut rng);
        let mxcsr = bad.mxcsr() | 1 << bit;
        bad.set_mxcsr(mxcsr);
        assert_eq!(
            vcpu.set_fpu_state(&bad),
            Err(FpuStateError::ReservedMxcsrBits {
                mxcsr,
                mask: EMU_MXCSR_MASK
            })
        );
        assert_eq!(vcpu.fpu_state().map(|a| a.0), Some(good.0), "bit {bit}");
    }
}

#[test]
fn the_guest_sees_the_loaded_state() {
    let mut vcpu = EmuVcpu::new();
    vcpu.vcpu_reset(ResetKind::PowerOn);
    // Real mode at 0:0x1000 with SSE enabled (CR4.OSFXSR).
    vcpu.set_segment(SegReg::Cs, &Segment::real_mode(0, true));
    vcpu.set_rip(0x1000);
    vcpu.set_cr4(1 << 9);
    let mut image = FxsaveArea::reset();
    image.set_xmm(3, 0x1111_2222_3333_4444_5555_6666_7789_abcd);
    image.set_fsw(0x3800 | 0x20); // TOP = 7, PE set
    assert_eq!(vcpu.set_fpu_state(&image), Ok(()));
    let mut mem = GuestMemory::with_ram(1 << 20).unwrap();
    // movd ecx, xmm3; fnstsw ax; hlt
    mem.write(0x1000, &[0x66, 0x0f, 0x7e, 0xd9, 0xdf, 0xe0, 0xf4])
        .unwrap();
    let limit = RunLimit {
        tsc: 0,
        deadline: None,
        max_instructions: 100,
    };
    assert_eq!(vcpu.run(&mut mem, &limit), Exit::Hlt);
    assert_eq!(vcpu.gpr(opsvisor_core::ops::Gpr::Rcx) as u32, 0x7789_abcd);
    assert_eq!(vcpu.gpr(opsvisor_core::ops::Gpr::Rax) as u16, 0x3820);
}

#[test]
fn backend_enum_forwards_the_fpu_state() {
    let mut backend: Backend<Unavailable, Unavailable, EmuVcpu> =
        Backend::from(EmuSlot(EmuVcpu::new()));
    let image = random_image(&mut Rng(42));
    assert_eq!(backend.set_fpu_state(&image), Ok(()));
    assert_eq!(backend.fpu_state().map(|a| a.0), Some(image.0));
}

#[test]
fn power_on_reset_is_the_cores_reset_image() {
    let mut vcpu = opsvisor_emu::EmuVcpu::new();
    vcpu.vcpu_reset(ResetKind::PowerOn);
    // The VMX backend resets to FxsaveArea::reset(): both must start a guest alike.
    // (MXCSR_MASK describes the processor, not the guest's state.)
    let mut state = vcpu.fpu_state().unwrap();
    assert_eq!(state.mxcsr_mask(), EMU_MXCSR_MASK);
    state.set_mxcsr_mask(0);
    assert_eq!(state, FxsaveArea::reset());
}
