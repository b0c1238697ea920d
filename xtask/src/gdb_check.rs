//! `cargo xtask gdb-check [bochs-vmx|bochs-svm|qemu-svm]`: the image's GDB stub (COM2,
//! a TCP server of the emulator) driven by Debian's gdb in batch mode against the corpus
//! guest `hello`, the session of `cli/tests/gdb.rs` on a hardware backend: stopped
//! before the first instruction (`gdb-wait`), the code there read, a hardware
//! breakpoint (DR0) continued to, a single step, a software breakpoint (INT3) continued
//! to, the stack read through the guest's page tables, a register written and read,
//! two more steps, and a continue to the guest's exit, which gdb reports as the
//! process's ("exited with code 01"). The run itself must pass as without gdb.
//!
//! Under QEMU (7.2, TCG) the session has no breakpoints: its SVM takes the guest's INT3
//! as an INTn intercept instead of the #BP exception intercept (the INT3 reaches the
//! guest, which has no IDT yet at long_entry: a triple fault), and does not arm the
//! breakpoints of a DR7 that VMRUN loads from the VMCB (the hardware breakpoint never
//! fires). Both work under Bochs' SVM model. The QEMU session steps from the entry
//! instead: three single steps, a register written and read, and the exit.

use crate::args::{Machine, RunOptions};
use crate::{bochs, build_image, resolve_guest, run_qemu, Failure, Result};
use std::net::TcpListener;
use std::process::{Command, Stdio};

/// The start of every session (`PORT` is replaced by the stub's port).
const CONNECT: &[&str] = &[
    "set pagination off",
    // The emulator boots its BIOS and GRUB before the image answers.
    "set remotetimeout 120",
    "set tcp auto-retry on",
    "set tcp connect-timeout 120",
    "target remote 127.0.0.1:PORT",
    "printf \"entry %#x\\n\", $pc",
    "x/4xb $pc",
];

/// The session under QEMU: steps from the entry, a register, the exit.
const QEMU_SCRIPT: &[&str] = &[
    "stepi",
    "stepi",
    "stepi",
    "printf \"three steps to %#x\\n\", $pc",
    // EBX holds the multiboot information's address here: written, read, put back.
    "set $saved = $rbx",
    "set $rbx = 0x1234abcd",
    "printf \"rbx %#x\\n\", $rbx",
    "set $rbx = $saved",
    "continue",
];

/// The session under Bochs.
const SCRIPT: &[&str] = &[
    "hbreak long_entry",
    "continue",
    "printf \"at %#x cs %#x\\n\", $pc, $cs",
    "stepi",
    "printf \"stepped to %#x\\n\", $pc",
    "delete",
    "break opsvisor_guest_main",
    "continue",
    "printf \"main %#x\\n\", $pc",
    "info symbol *(unsigned long *)$rsp",
    "set $rbx = 0x1234abcd",
    "printf \"rbx %#x\\n\", $rbx",
    "stepi",
    "stepi",
    "printf \"two steps to %#x\\n\", $pc",
    "delete",
    "continue",
];

/// A free TCP port on the loopback interface (the emulator listens there next).
fn free_port() -> Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Failure::BadInput(format!("no free TCP port for gdb: {e}")))
}

/// The bytes at virtual address `addr` in the loadable segments of the ELF64 `file`.
fn elf_bytes(file: &[u8], addr: u64, len: usize) -> Option<Vec<u8>> {
    let u16_at = |o: usize| Some(u16::from_le_bytes(file.get(o..o + 2)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(file.get(o..o + 8)?.try_into().ok()?));
    let (phoff, phentsize, phnum) = (u64_at(0x20)? as usize, u16_at(0x36)?, u16_at(0x38)?);
    for i in 0..usize::from(phnum) {
        let ph = phoff + i * usize::from(phentsize);
        let (offset, vaddr, filesz) = (u64_at(ph + 8)?, u64_at(ph + 16)?, u64_at(ph + 32)?);
        if u16_at(ph)? == 1 && (vaddr..vaddr + filesz).contains(&addr) {
            let at = (offset + addr - vaddr) as usize;
            return file.get(at..at + len).map(<[u8]>::to_vec);
        }
    }
    None
}

/// The hexadecimal number after `prefix` on the first line that starts with it.
fn hex_after(text: &str, prefix: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|l| u64::from_str_radix(l.split_whitespace().next()?, 16).ok())
}

/// What gdb's output must show under `machine`; the first thing missing.
fn judge(text: &str, elf: &[u8], machine: Machine) -> std::result::Result<(), String> {
    let entry = u32::from_le_bytes(
        elf.get(0x18..0x1c)
            .and_then(|b| b.try_into().ok())
            .ok_or("the guest is not an ELF64 file")?,
    );
    if !text.contains(&format!("entry {entry:#x}\n")) {
        return Err(format!(
            "gdb did not find the guest stopped at its entry {entry:#x}"
        ));
    }
    let code: Vec<String> = elf_bytes(elf, u64::from(entry), 4)
        .ok_or("the entry is in no loadable segment")?
        .iter()
        .map(|b| format!("{b:#04x}"))
        .collect();
    if !text.contains(&code.join("\t")) {
        return Err(format!(
            "guest memory at the entry is not the ELF's code {}",
            code.join(" ")
        ));
    }
    if machine == Machine::Qemu {
        // _start32 begins CLI, CLD, MOV ESI,EAX: three instructions of 1, 1 and 2 bytes.
        let stepped =
            hex_after(text, "three steps to 0x").ok_or("the steps' RIP was not printed")?;
        if stepped != u64::from(entry) + 4 {
            return Err(format!(
                "three steps from {entry:#x} ended at {stepped:#x}, not {:#x}",
                u64::from(entry) + 4
            ));
        }
    } else {
        judge_breakpoints(text)?;
    }
    if !text.contains("rbx 0x1234abcd\n") {
        return Err("RBX written by gdb did not read back".into());
    }
    if !text.contains("exited with code 01]") {
        return Err("gdb did not hear of the guest's exit (status 1)".into());
    }
    Ok(())
}

/// The breakpoints and steps of the Bochs session.
fn judge_breakpoints(text: &str) -> std::result::Result<(), String> {
    if !(text.contains("Breakpoint 1, ") && text.contains(" in long_entry ()")) {
        return Err("the hardware breakpoint at long_entry did not stop".into());
    }
    let at = hex_after(text, "at 0x").ok_or("the hardware breakpoint's RIP was not printed")?;
    let stepped = hex_after(text, "stepped to 0x").ok_or("the step's RIP was not printed")?;
    if !(stepped > at && stepped <= at + 15) {
        return Err(format!(
            "the step did not run one instruction ({at:#x} -> {stepped:#x})"
        ));
    }
    if !(text.contains("Breakpoint 2, ") && text.contains(" in opsvisor_guest_main ()")) {
        return Err("the software breakpoint at opsvisor_guest_main did not stop".into());
    }
    if !text.contains("rust_start64 + ") {
        return Err(
            "the stack read through the page tables holds no return address into rust_start64"
                .into(),
        );
    }
    let main = hex_after(text, "main 0x").ok_or("the breakpoint's RIP was not printed")?;
    let two = hex_after(text, "two steps to 0x").ok_or("the steps' RIP was not printed")?;
    if two == main {
        return Err(format!("two steps from {main:#x} went nowhere"));
    }
    Ok(())
}

/// Run the check (see the module's documentation); `run.gdb` gets a free port.
pub fn check(mut run: RunOptions, machine: Machine) -> Result<()> {
    let (guest, _) = resolve_guest(&run.guest)?;
    let elf = std::fs::read(&guest)
        .map_err(|e| Failure::BadInput(format!("{}: {e}", guest.display())))?;
    // Built before the emulator starts, so that gdb's wait covers only the boot.
    build_image()?;
    let port = free_port()?;
    run.gdb = Some(port);
    let label = format!("gdb-check ({}, {})", run.cpu, run.append);
    eprintln!("xtask: {label}: the stub on 127.0.0.1:{port}");
    let machine_run = std::thread::spawn(move || {
        let mut serial = String::new();
        let result = match machine {
            Machine::Bochs => bochs(&run, false, Some(&mut serial)),
            Machine::Qemu => run_qemu(&run, false, Some(&mut serial), false),
        };
        (result, serial)
    });
    let session = match machine {
        Machine::Bochs => SCRIPT,
        Machine::Qemu => QEMU_SCRIPT,
    };
    let mut gdb = Command::new("gdb");
    gdb.args(["-nx", "-batch"]);
    for line in CONNECT.iter().chain(session) {
        gdb.arg("-ex").arg(line.replace("PORT", &port.to_string()));
    }
    let out = gdb.arg(&guest).stdin(Stdio::null()).output().map_err(|e| {
        Failure::BadInput(format!(
            "cannot run gdb ({e}): install it with bash scripts/setup.sh"
        ))
    })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (result, serial) = machine_run
        .join()
        .map_err(|_| Failure::Failed(format!("{label}: the emulator's runner panicked")))?;
    let verdict = judge(&text, &elf, machine);
    if let Err(why) = &verdict {
        eprintln!("xtask: {label}: gdb said:\n{text}\nxtask: the image said:\n{serial}");
        return Err(Failure::Failed(format!("{label}: {why}")));
    }
    result?;
    let seen = match machine {
        Machine::Bochs => "breakpoints, steps, registers, memory and the exit",
        Machine::Qemu => "steps, registers, memory and the exit",
    };
    eprintln!("xtask: {label}: PASS ({seen} seen by gdb)");
    Ok(())
}
