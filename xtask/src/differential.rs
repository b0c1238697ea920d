//! `cargo xtask diff --backend vmx|svm` (and `vmx-diff`, its VMX spelling): generate
//! differential cases, pack them into a boot module, boot the image with `diff` and the
//! backend on its command line, and decode what it reports.
//!
//! The image does the comparing and the minimizing (both backends are in it); this side
//! generates the cases with proptest (`opsvisor_vmdiff::generate`), and turns each
//! minimized case the image prints in hex back into a disassembly with its initial state.

use crate::args::{DiffOptions, DiffTarget, GuestSpec, HwBackend, RunOptions};
use crate::machines::{self, Verdict};
use crate::{bochs, build_image, io_failure, kvm_usable, make_iso, qemu, Failure, Result, TempDir};
use opsvisor_vmdiff::case::{encode_pack, from_hex, Case, Mode};
use opsvisor_vmdiff::generate::{
    bochs_bugs, bochs_quirks, disassemble, generate_excluding, nothing, qemu_tcg_quirks,
    qemu_tcg_state, vendor_differences, Exclude,
};
use std::fs;

/// The serial line that carries a minimized case.
const MINIMIZED: &str = "vmdiff: case ";

/// What a run against `backend` on `target` leaves out of the cases: where the
/// reference is known to be wrong, or differs from the emulator by its vendor's design.
pub fn exclusions(backend: HwBackend, target: &DiffTarget) -> Exclude {
    match (backend, target) {
        // Bochs' Intel models: its bugs, and Intel against the emulator's AMD choices.
        (HwBackend::Vmx, DiffTarget::Bochs) => bochs_quirks,
        // Intel silicon.
        (HwBackend::Vmx, _) => vendor_differences,
        // Bochs' AMD models: its bugs alone.
        (HwBackend::Svm, DiffTarget::Bochs) => bochs_bugs,
        (HwBackend::Svm, DiffTarget::Qemu) => qemu_tcg_quirks,
        // AMD silicon: the vendor the emulator follows.
        (HwBackend::Svm, _) => nothing,
    }
}

pub fn diff(d: &DiffOptions) -> Result<()> {
    let mut modes = parse_modes(&d.modes)?;
    if d.target == DiffTarget::Qemu && d.modes.is_empty() {
        // QEMU 7.2's TCG sets bit 5, reserved, in the PAE PDPTEs it walks under nested
        // paging, which every PAE case then shows (see opsvisor_vmdiff::generate::
        // qemu_tcg_quirks); --modes pae32 still runs them.
        modes.retain(|m| *m != Mode::Pae32);
    }
    if let DiffTarget::Report(log) = &d.target {
        let serial = fs::read_to_string(log).map_err(|e| io_failure(log, e))?;
        print_minimized(&serial);
        return match machines::verdict(&serial) {
            Some(v) if v.passed() => Ok(()),
            Some(v) => Err(Failure::Failed(format!(
                "the run reported: {}",
                v.describe()
            ))),
            None => Err(Failure::BadInput(format!(
                "{} holds no final report of a differential run",
                log.display()
            ))),
        };
    }
    let exclude = exclusions(d.backend, &d.target);
    let mut cases = generate_excluding(d.cases, d.seed, &modes, exclude);
    if d.target == DiffTarget::Qemu {
        cases.iter_mut().for_each(qemu_tcg_state);
    }
    let names: Vec<&str> = modes.iter().map(|m| m.name()).collect();
    eprintln!(
        "xtask: diff: {} cases on {} against the emulator (seed {}, modes {})",
        cases.len(),
        d.backend.name(),
        d.seed,
        names.join(",")
    );
    let tmp = TempDir::new("diff")?;
    let pack = tmp.path.join("cases.pack");
    fs::write(&pack, encode_pack(&cases)).map_err(|e| io_failure(&pack, e))?;
    let run = RunOptions {
        guest: GuestSpec::Path(pack.clone()),
        append: format!("diff {} {}", d.backend.append_word(), d.run.append)
            .trim()
            .to_string(),
        ..d.run.clone()
    };
    let mut serial = String::new();
    let result = match &d.target {
        DiffTarget::Bochs => bochs(&run, true, Some(&mut serial)),
        DiffTarget::Qemu => qemu(&run, false, Some(&mut serial)),
        DiffTarget::QemuKvm => {
            kvm_usable()?;
            qemu(&run, true, Some(&mut serial))
        }
        DiffTarget::Usb(out) => {
            let image = build_image()?;
            make_iso(&tmp, &image, &pack, "cases", &run, out)?;
            println!("{}", out.display());
            eprintln!(
                "xtask: {} boots the image with {} differential cases (BIOS; write it to a whole \
                 USB stick: sudo dd if={} of=/dev/sdX bs=4M conv=fsync). Capture COM1 (115200 \
                 baud) and decode it with: cargo xtask diff --report LOG",
                out.display(),
                cases.len(),
                out.display()
            );
            return Ok(());
        }
        DiffTarget::Report(_) => unreachable!("handled above"),
    };
    print_minimized(&serial);
    if let Some(Verdict::Differential { cases: ran, .. }) = machines::verdict(&serial) {
        if ran as usize != cases.len() {
            return Err(Failure::Failed(format!(
                "the image ran {ran} cases of the {} packed",
                cases.len()
            )));
        }
    }
    result
}

fn parse_modes(names: &[String]) -> Result<Vec<Mode>> {
    if names.is_empty() {
        return Ok(Mode::ALL.to_vec());
    }
    names
        .iter()
        .map(|n| {
            Mode::from_name(n).ok_or_else(|| {
                let all: Vec<&str> = Mode::ALL.iter().map(|m| m.name()).collect();
                Failure::BadInput(format!(
                    "--modes: unknown mode '{n}' (modes: {})",
                    all.join(", ")
                ))
            })
        })
        .collect()
}

/// Print every minimized case in `serial` as its initial state and disassembly.
fn print_minimized(serial: &str) {
    for line in serial.lines() {
        let Some(rest) = line.split_once(MINIMIZED).map(|(_, r)| r) else {
            continue;
        };
        let Some((index, hex)) = rest.split_once(" minimized: ") else {
            continue;
        };
        match from_hex(hex.trim_end_matches('\r')).and_then(|b| Case::decode(&b)) {
            Ok(case) => {
                println!("case {index}, minimized:");
                for l in describe(&case) {
                    println!("    {l}");
                }
            }
            Err(e) => println!("case {index}: the minimized case cannot be read: {e}"),
        }
    }
}

/// The initial state and the code of `case`, one line each.
fn describe(case: &Case) -> Vec<String> {
    const NAMES: [&str; 16] = [
        "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12",
        "r13", "r14", "r15",
    ];
    let regs: Vec<String> = NAMES
        .iter()
        .zip(case.gprs)
        .enumerate()
        .filter(|(i, (_, v))| *v != 0 && *i != 3 && *i != 4)
        .map(|(_, (n, v))| format!("{n}={v:#x}"))
        .collect();
    let mut out = vec![format!(
        "mode {}{}; {}; rflags {:#x} cr0+{:#x} cr4+{:#x} efer+{:#x} data seed {:#x}",
        case.mode.name(),
        if case.user { " at CPL 3" } else { "" },
        if regs.is_empty() {
            "registers 0".to_string()
        } else {
            regs.join(" ")
        },
        case.rflags,
        case.cr0,
        case.cr4,
        case.efer,
        case.seed
    )];
    out.extend(disassemble(case));
    out
}
