//! The user-mode instructions of the CPU-model features against the host CPU, where the
//! host has them: RDPID and RDTSCP (their register widths; the TSC_AUX value itself is
//! the host kernel's CPU number, which the emulator does not share, so only the bits
//! both define alike are compared), RDGSBASE in both operand sizes (with the host
//! kernel's FSGSBASE enabled; RDFSBASE reads the host thread's TLS pointer, which the
//! emulator's state does not carry), and RDPKRU/WRPKRU (#UD on a host without
//! OSPKE, as on the emulator with CR4.PKE clear). XGETBV and the XSAVE family are in
//! differential_xsave.rs.
#![cfg(all(target_os = "linux", target_arch = "x86_64", feature = "emu"))]

use opsvisor_oracle::compare::differential;
use opsvisor_oracle::emu_runner::EmuRunner;
use opsvisor_oracle::{run, End, Exception, State};

const RAX: usize = 0;
const RCX: usize = 1;
const RDX: usize = 2;

fn check(code: &[u8], s: &State) {
    let mut emu = EmuRunner::new().expect("emulator runner");
    if let Err(diff) = differential(&mut emu, code, s) {
        panic!("emulator and host differ:\n{diff}");
    }
}

fn state() -> State {
    let mut s = State::new();
    s.gpr[RAX] = u64::MAX;
    s.gpr[RCX] = u64::MAX;
    s.gpr[RDX] = u64::MAX;
    s
}

const UD: End = End::Exception(Exception {
    vector: 6,
    error_code: None,
    address: None,
});

/// The host's kernel runs user-mode FSGSBASE instructions (HWCAP2_FSGSBASE).
fn host_fsgsbase() -> bool {
    // SAFETY: getauxval only reads the process's auxiliary vector.
    let hwcap2 = unsafe { libc::getauxval(libc::AT_HWCAP2) };
    hwcap2 & 2 != 0
}

/// CPUID.7.0:ECX bit `bit` on the host.
fn leaf7_ecx(bit: u32) -> bool {
    std::arch::x86_64::__cpuid_count(7, 0).ecx & (1 << bit) != 0
}

/// RDTSCP: CPUID.8000_0001H:EDX bit 27.
fn host_rdtscp() -> bool {
    std::arch::x86_64::__cpuid(0x8000_0001).edx & (1 << 27) != 0
}

#[test]
fn rdpid_writes_the_whole_64_bit_register() {
    if !opsvisor_oracle::available() || !leaf7_ecx(22) {
        return;
    }
    // rdpid rax; shr rax, 32: TSC_AUX is 32 bits, zero-extended into RAX.
    let code = [0xf3, 0x0f, 0xc7, 0xf8, 0x48, 0xc1, 0xe8, 0x20];
    let s = state();
    assert_eq!(run(&code, &s).expect("oracle").state.gpr[RAX], 0);
    check(&code, &s);
}

#[test]
fn rdtscp_zero_extends_its_three_registers() {
    if !opsvisor_oracle::available() || !host_rdtscp() {
        return;
    }
    // rdtscp; shr rax, 32; shr rdx, 32; shr rcx, 32.
    let code = [
        0x0f, 0x01, 0xf9, 0x48, 0xc1, 0xe8, 0x20, 0x48, 0xc1, 0xea, 0x20, 0x48, 0xc1, 0xe9, 0x20,
    ];
    let s = state();
    let native = run(&code, &s).expect("oracle");
    assert_eq!(
        (
            native.state.gpr[RAX],
            native.state.gpr[RDX],
            native.state.gpr[RCX]
        ),
        (0, 0, 0)
    );
    check(&code, &s);
}

#[test]
fn rdgsbase_reads_the_gs_base_in_both_widths() {
    if !opsvisor_oracle::available() || !host_fsgsbase() {
        return;
    }
    // rdgsbase rax: a Linux thread's GS base is 0, as the emulator's.
    let code = [0xf3, 0x48, 0x0f, 0xae, 0xc8];
    let s = state();
    let native = run(&code, &s).expect("oracle");
    if native.state.gpr[RAX] == 0 {
        check(&code, &s);
    }
    // rdgsbase eax: the 32-bit form zero-extends.
    let code = [0xf3, 0x0f, 0xae, 0xc8, 0x48, 0xc1, 0xe8, 0x20];
    check(&code, &s);
}

#[test]
fn rdpkru_without_ospke_is_undefined() {
    if !opsvisor_oracle::available() {
        return;
    }
    // CPUID.7.0:ECX.OSPKE (bit 4): the host's kernel has set CR4.PKE.
    if leaf7_ecx(4) {
        return;
    }
    // xor ecx, ecx; rdpkru.
    let code = [0x31, 0xc9, 0x0f, 0x01, 0xee];
    let s = state();
    assert_eq!(run(&code, &s).expect("oracle").end, UD);
    check(&code, &s);
}
