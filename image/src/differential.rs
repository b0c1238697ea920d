//! The differential run (`diff` on the command line): every case of the pack in boot
//! module 0 runs on a hardware backend (VMX or SVM) and on the emulator compiled into
//! this image, from
//! the same initial state in the same 2 MiB environment, and the final states are
//! compared (`opsvisor_vmdiff`). A case that differs is shrunk on the spot — both
//! backends are here, so each candidate costs two short runs — and reported with the
//! minimized case in hex, which `cargo xtask vmx-diff` decodes and disassembles.
//!
//! Serial lines (all prefixed `opsvisor-image: `):
//!
//! ```text
//! vmdiff: case I (MODE) differs; minimized from A to B items in R runs
//! vmdiff: case I minimized: <hex of the case body>
//! vmdiff: case I   <what>: vmx <value>, emu <value>      (svm on the SVM backend)
//! vmdiff: case I (MODE): both backends ran out of their limits
//! differential: N cases, D differ, U unfinished
//! ```
//!
//! The last line is the run's verdict; the image then powers off with code 1 (all the
//! same) or `CODE_IMAGE_FAILED`.

use crate::platform::BareMetal;
use crate::{log, CODE_IMAGE_FAILED};
use alloc::format;
use alloc::string::String;
use opsvisor_core::cpuid::CpuidPolicy;
use opsvisor_core::platform::Platform;
use opsvisor_core::X86Ops;
use opsvisor_emu::EmuVcpu;
use opsvisor_svm::SvmVcpu;
use opsvisor_vmdiff::case::{to_hex, Case, Pack};
use opsvisor_vmdiff::minimize::minimize;
use opsvisor_vmdiff::run::{run_pair_tolerating, Runner, Verdict};
use opsvisor_vmdiff::snapshot::{Difference, Tolerances};
use opsvisor_vmx::VmxVcpu;

/// A hardware backend the differential run compares with the emulator.
pub trait Hardware: X86Ops {
    /// Why its last run failed, for the report.
    fn failure(&self) -> Option<String>;
}

impl Hardware for VmxVcpu {
    fn failure(&self) -> Option<String> {
        self.last_failure().map(|f| format!("{f:?}"))
    }
}

impl Hardware for SvmVcpu {
    fn failure(&self) -> Option<String> {
        self.last_failure().map(|f| format!("{f}"))
    }
}

/// The power-off code of a run where every case agreed: 0, as for a guest that passed
/// (QEMU's isa-debug-exit then reports status 1).
const CODE_ALL_SAME: u8 = 0;

/// The bare-metal platform with the guest's console cut off: cases write random bytes
/// to the UART, which would garble the report on the serial line (both backends write
/// the same bytes; what the guest reads back from the UART still reaches the comparison).
pub struct Silent(BareMetal);

impl Platform for Silent {
    fn now_ns(&self) -> u64 {
        self.0.now_ns()
    }
    fn wait(&mut self, deadline_ns: Option<u64>) -> bool {
        self.0.wait(deadline_ns)
    }
    fn console_write(&mut self, _bytes: &[u8]) {}
    fn console_read(&mut self) -> Option<u8> {
        None
    }
    fn console_input_ready(&mut self) -> bool {
        false
    }
    fn console_input_possible(&mut self) -> bool {
        false
    }
}

/// Run every case of `pack` on `hw` and the emulator; the code to power off with.
pub fn run<H: Hardware>(hw: H, pack: &[u8], cpuid: CpuidPolicy, hz: u64) -> Result<u8, String> {
    let cases = Pack::open(pack).map_err(|e| format!("boot module 0: {e}"))?;
    let count = cases.case_count();
    let name = hw.name();
    let mut left = Runner::new(hw, Silent(BareMetal::new(hz, false)), cpuid.clone())
        .map_err(|e| format!("differential RAM: {e}"))?;
    let mut right = Runner::new(EmuVcpu::new(), Silent(BareMetal::new(hz, false)), cpuid)
        .map_err(|e| format!("differential RAM: {e}"))?;
    log!("vmdiff: {} cases, {} against the emulator", count, name);
    let tolerances = tolerances_of_this_processor();
    if tolerances.frame_rf {
        log!("vmdiff: the processor is QEMU's TCG, which delivers faults without RF: RF in the final exception frame is not compared");
    }
    let (mut differ, mut unfinished) = (0u32, 0u32);
    for (index, case) in cases.enumerate() {
        let case = case.map_err(|e| format!("boot module 0: {e}"))?;
        match run_pair_tolerating(&mut left, &mut right, &case, tolerances)
            .map_err(|e| format!("case {index}: {e}"))?
        {
            Verdict::Same => {}
            Verdict::Unfinished => {
                unfinished += 1;
                log!(
                    "vmdiff: case {} ({}): both backends ran out of their limits",
                    index,
                    case.mode.name()
                );
            }
            Verdict::Differ(diffs) => {
                differ += 1;
                report(index, &case, &diffs, &mut left, &mut right, tolerances)?;
            }
        }
    }
    log!(
        "differential: {} cases, {} differ, {} unfinished",
        count,
        differ,
        unfinished
    );
    Ok(if differ == 0 && unfinished == 0 {
        CODE_ALL_SAME
    } else {
        CODE_IMAGE_FAILED
    })
}

/// Minimize a differing case and print it with what differs.
fn report<H: Hardware>(
    index: usize,
    case: &Case,
    found: &[Difference],
    left: &mut Runner<H, Silent>,
    right: &mut Runner<EmuVcpu, Silent>,
    tolerances: Tolerances,
) -> Result<(), String> {
    // A smaller case counts only if it still differs in one of the fields the whole case
    // differed in: dropping a setup item (the count before a REP, the value before a MOV
    // CR3) must not trade the difference for another one.
    let (small, runs) = minimize(case, |candidate| {
        match run_pair_tolerating(left, right, candidate, tolerances) {
            Ok(Verdict::Differ(diffs)) => diffs
                .iter()
                .any(|d| found.iter().any(|f| same_field(&f.what, &d.what))),
            _ => false,
        }
    });
    log!(
        "vmdiff: case {} ({}) differs; minimized from {} to {} items in {} runs",
        index,
        case.mode.name(),
        case.items.len(),
        small.items.len(),
        runs
    );
    log!(
        "vmdiff: case {} minimized: {}",
        index,
        to_hex(&small.encode())
    );
    // Run the minimized case once more for its differences (the last candidate run may
    // have been one that did not differ).
    match run_pair_tolerating(left, right, &small, tolerances).map_err(|e| format!("case {index}: {e}"))? {
        Verdict::Differ(diffs) => {
            for d in diffs {
                log!(
                    "vmdiff: case {}   {}: {} {}, emu {}",
                    index,
                    d.what,
                    left.vcpu().map_or("hw", |v| v.name()),
                    d.left,
                    d.right
                );
            }
        }
        other => log!(
            "vmdiff: case {}   the minimized case no longer differs ({:?}): the difference depends on state outside the case",
            index,
            other
        ),
    }
    if let Some(vcpu) = left.vcpu() {
        if let Some(failure) = vcpu.failure() {
            log!("vmdiff: case {}   {}: {}", index, vcpu.name(), failure);
        }
    }
    Ok(())
}

/// Whether two differences concern the same field (any two memory bytes count as one).
fn same_field(a: &str, b: &str) -> bool {
    a == b || (a.starts_with("memory") && b.starts_with("memory"))
}

/// What the comparison tolerates of this processor: QEMU's TCG (its brand string starts
/// "QEMU TCG") delivers faults without RF in the pushed RFLAGS image.
fn tolerances_of_this_processor() -> Tolerances {
    Tolerances {
        frame_rf: crate::host_cpu::brand_starts_with("QEMU TCG"),
    }
}
