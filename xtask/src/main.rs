//! `cargo xtask`: builds the opsvisor bare-metal image (`image/`) and runs it, with a guest,
//! under Bochs and QEMU.
//!
//! ```text
//! cargo xtask image                      build the image, print its path
//! cargo xtask iso GUEST [--out FILE]     GRUB ISO (grub-mkrescue): image + GUEST as module
//! cargo xtask usb GUEST OUT.img          bootable USB disk image (the ISO is hybrid)
//! cargo xtask bochs GUEST [OPTIONS]      headless Bochs (default CPU corei7_skylake_x)
//! cargo xtask bochs-vmx GUEST [OPTIONS]  the same (the name the issue uses)
//! cargo xtask bochs-svm GUEST [OPTIONS]  Bochs ryzen, the SVM backend
//! cargo xtask bochs-vmx --corpus [OPTIONS]
//!                                        every corpus guest on the VMX backend, one
//!                                        PASS/FAIL line each and a summary (= corpus-vmx)
//! cargo xtask bochs-svm --corpus [OPTIONS]
//! cargo xtask qemu-svm --corpus [OPTIONS]
//!                                        the same on the SVM backend, Bochs or QEMU TCG
//! cargo xtask qemu GUEST [OPTIONS]       QEMU TCG, -kernel (PVH) + -initrd, or --iso
//! cargo xtask qemu-svm GUEST [OPTIONS]   QEMU TCG (-cpu max), the SVM backend
//! cargo xtask qemu-kvm GUEST [OPTIONS]   QEMU with -accel kvm -cpu host (nested VMX/SVM)
//! cargo xtask diff --backend vmx|svm     differential runs (vmx-diff: --backend vmx)
//! cargo xtask bench-peers [OPTIONS]      the peer benchmark (opsvisor, QEMU TCG, Bochs)
//! cargo xtask gdb-check [bochs-vmx|bochs-svm|qemu-svm]
//!                                        Debian's gdb against the image's GDB stub (COM2)
//! ```
//!
//! GUEST is a multiboot v1 kernel file or a corpus guest name (`guests/src/bin/NAME.rs`,
//! built with `cargo build --release` in `guests/`). Options: `--cpu MODEL` (Bochs model,
//! or QEMU's `-cpu`),
//! `--timeout SECS` (default 120), `--megs MIB` (machine RAM, default 256), `--ips N`
//! (Bochs' instructions per emulated second), `--append ARGS`
//! (the image's command line), `--iso` (QEMU boots the GRUB ISO), `--gdb PORT` (the
//! image's GDB stub on the machine's COM2, a TCP server on 127.0.0.1:PORT; `--gdb-wait`:
//! the guest waits for gdb). `cargo xtask help`
//! prints the details.
//!
//! A run streams the guest's serial output (COM1, captured to a file in a fresh temporary
//! directory) to stdout as it arrives and ends when the emulator powers off, the timeout
//! passes (the emulator is killed), or shortly after the image's final report. The image
//! ends with `opsvisor-image: guest exit status N` (N = `(code << 1) | 1` of the guest's
//! debug-exit write), `opsvisor-image: triple fault ...` or `opsvisor-image: failed: ...`.
//! Exit status: 0 when N is 1 (the guest's PASS; under QEMU the emulator's own status must
//! agree), 1 when the guest or the image failed, 2 on bad input, a missing tool or a host
//! that cannot run the command, 3 on timeout, 4 when the image, told `backend=vmx` or
//! `backend=svm`, reports that the CPU cannot run that backend (`VMX backend refuses
//! this CPU`, `SVM backend refuses this CPU`).
//! The corpus command stops at that refusal (every guest would meet it), and otherwise
//! exits 1 if any guest failed or timed out. Bochs' own exit status carries nothing
//! (it is always 1): only the serial report counts. A failed run keeps its temporary
//! directory (COM1 capture, Bochs log) and says where.
//!
//! Every run gets its own temporary directory and ISO, and Bochs takes the first free VNC
//! (rfb) port from 5900 on, so runs can go in parallel.
//!
//! The image is built in `image/target` (or `$IMAGE_TARGET_DIR`); corpus guests in
//! `guests/target`.
//!
//! Bootable USB stick: `cargo xtask usb hello opsvisor.img`, then
//! `sudo dd if=opsvisor.img of=/dev/sdX bs=4M conv=fsync` (the whole device, not a
//! partition). The image reports on COM1 at 115200 baud.

mod args;
mod corpus;
mod differential;
mod gdb_check;
mod machines;
mod peers;

#[cfg(test)]
#[allow(dead_code)]
#[path = "../../image/src/bootinfo.rs"]
mod image_bootinfo;
#[cfg(test)]
mod image_bootinfo_tests;
#[cfg(test)]
#[path = "../../image/src/console_input.rs"]
mod image_console_input;

use args::{Command as Cmd, GuestSpec, HwBackend, Machine, RunOptions};
use machines::Verdict;
use std::fs;
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Exit status: the guest failed, or the image did.
const STATUS_FAILED: u8 = 1;
/// Exit status: bad input, a missing tool, or a host that cannot run the command.
const STATUS_BAD_INPUT: u8 = 2;
/// Exit status: the run timed out.
const STATUS_TIMEOUT: u8 = 3;
/// Exit status: the image refused to run the VMX backend on this CPU.
const STATUS_REFUSED: u8 = 4;
/// How the image words its refusal of `backend=vmx` and `backend=svm` (main.rs,
/// `choose_backend`), with the name the runner reports.
const REFUSALS: [(&str, &str); 2] = [
    ("vmx backend unavailable: ", "VMX"),
    ("svm backend unavailable: ", "SVM"),
];
/// How long an emulator may take to power off after the image's final report.
const POWER_OFF_GRACE: Duration = Duration::from_secs(10);
/// The installer for the emulators and GRUB.
const SETUP_HINT: &str = "install it with: bash scripts/setup.sh --test-machines";

/// Why a command did not succeed.
#[derive(Debug)]
enum Failure {
    /// Bad input or an unusable host (status 2).
    BadInput(String),
    /// The guest or the image failed (status 1).
    Failed(String),
    /// The run timed out (status 3).
    Timeout(String),
    /// The CPU cannot run the hardware backend the image was told to use (status 4).
    Refused(String),
}

impl Failure {
    fn status(&self) -> u8 {
        match self {
            Failure::BadInput(_) => STATUS_BAD_INPUT,
            Failure::Failed(_) => STATUS_FAILED,
            Failure::Timeout(_) => STATUS_TIMEOUT,
            Failure::Refused(_) => STATUS_REFUSED,
        }
    }

    fn message(&self) -> &str {
        match self {
            Failure::BadInput(m)
            | Failure::Failed(m)
            | Failure::Timeout(m)
            | Failure::Refused(m) => m,
        }
    }
}

type Result<T> = std::result::Result<T, Failure>;

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let cmd = match args::parse(&argv) {
        Ok(cmd) => cmd,
        Err(e) => {
            eprintln!("xtask: {e} (see 'cargo xtask help')");
            return ExitCode::from(STATUS_BAD_INPUT);
        }
    };
    match run(cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("xtask: {}", f.message());
            ExitCode::from(f.status())
        }
    }
}

fn run(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Help(text) => {
            print!("{text}");
            Ok(())
        }
        Cmd::Image => {
            println!("{}", build_image()?.display());
            Ok(())
        }
        Cmd::Iso { run, out } => {
            let (guest, name) = resolve_guest(&run.guest)?;
            let image = build_image()?;
            let out = match out {
                Some(out) => out,
                None => {
                    let dir = image_target_dir().join("iso");
                    fs::create_dir_all(&dir).map_err(|e| io_failure(&dir, e))?;
                    dir.join(format!("{name}.iso"))
                }
            };
            let tmp = TempDir::new("iso")?;
            make_iso(&tmp, &image, &guest, &name, &run, &out)?;
            println!("{}", out.display());
            Ok(())
        }
        Cmd::Usb { run, out } => {
            let (guest, name) = resolve_guest(&run.guest)?;
            let image = build_image()?;
            let tmp = TempDir::new("usb")?;
            make_iso(&tmp, &image, &guest, &name, &run, &out)?;
            println!("{}", out.display());
            eprintln!(
                "xtask: {} is a hybrid ISO (BIOS; UEFI too if GRUB's EFI files are installed). \
                 Write it to a whole USB stick, not a partition, erasing it: \
                 sudo dd if={} of=/dev/sdX bs=4M conv=fsync",
                out.display(),
                out.display()
            );
            Ok(())
        }
        Cmd::Bochs(run) => bochs(&run, true, None),
        Cmd::Linux { run, machine } => linux(&run, machine),
        Cmd::Corpus {
            run,
            machine,
            backend,
        } => corpus(&run, machine, backend),
        Cmd::Qemu(run) => qemu(&run, false, None),
        Cmd::QemuKvm(run) => {
            kvm_usable()?;
            qemu(&run, true, None)
        }
        Cmd::Diff(diff) => differential::diff(&diff),
        Cmd::BenchPeers(o) => peers::bench_peers(&o),
        Cmd::Coverage { check } => coverage(check),
        Cmd::GdbCheck { run, machine } => gdb_check::check(run, machine),
    }
}

/// Regenerate (or check) docs/emu-coverage.md with the oracle crate's `emu-coverage`
/// program, which reads the emulator and the differential test groups.
fn coverage(check: bool) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let doc = root().join("docs").join("emu-coverage.md");
    let status = Command::new(cargo)
        .current_dir(root())
        .args([
            "run",
            "-q",
            "-p",
            "opsvisor-oracle",
            "--bin",
            "emu-coverage",
            "--",
        ])
        .arg(if check { "--check" } else { "--write" })
        .arg(&doc)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .map_err(|e| Failure::BadInput(format!("cannot run cargo: {e}")))?;
    match status.code() {
        Some(0) => Ok(()),
        Some(1) => Err(Failure::Failed(format!("{} is out of date", doc.display()))),
        _ => Err(Failure::BadInput(format!("emu-coverage failed ({status})"))),
    }
}

/// The workspace root (xtask's parent directory).
fn root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

fn image_target_dir() -> PathBuf {
    match std::env::var_os("IMAGE_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => root().join("image").join("target"),
    }
}

fn io_failure(path: &Path, e: std::io::Error) -> Failure {
    Failure::BadInput(format!("{}: {e}", path.display()))
}

/// Run a build tool (cargo) in `dir`, its output going to our stderr.
fn build(dir: &Path, args: &[&str], target_dir: &Path, what: &str) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(dir)
        .args(args)
        .arg("--target-dir")
        .arg(target_dir)
        // The build runs in a workspace of its own, with its own target and flags.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .map_err(|e| Failure::BadInput(format!("cannot run cargo to build {what}: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(Failure::BadInput(format!(
            "building {what} failed ({status})"
        )))
    }
}

/// Build the image (release) and return its path.
fn build_image() -> Result<PathBuf> {
    let target = image_target_dir();
    build(
        &root().join("image"),
        &["build", "--release", "--quiet"],
        &target,
        "the image",
    )?;
    Ok(target
        .join("x86_64-unknown-none")
        .join("release")
        .join("opsvisor-image"))
}

/// The guest's file and a short name for it (built first if it is a corpus guest).
fn resolve_guest(spec: &GuestSpec) -> Result<(PathBuf, String)> {
    match spec {
        GuestSpec::Path(path) => {
            if !path.is_file() {
                return Err(Failure::BadInput(format!(
                    "guest '{}' is not a file",
                    path.display()
                )));
            }
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "guest".into());
            Ok((path.clone(), name))
        }
        GuestSpec::Corpus(name) => {
            let guests = root().join("guests");
            if !guests.join("src/bin").join(format!("{name}.rs")).is_file() {
                let mut names: Vec<String> = fs::read_dir(guests.join("src/bin"))
                    .map(|dir| {
                        dir.filter_map(|e| e.ok())
                            .filter_map(|e| {
                                e.file_name()
                                    .to_str()
                                    .and_then(|n| n.strip_suffix(".rs"))
                                    .map(String::from)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                names.sort();
                return Err(Failure::BadInput(format!(
                    "'{name}' is not a file nor a corpus guest (corpus: {})",
                    names.join(", ")
                )));
            }
            let target = guests.join("target");
            build(
                &guests,
                &["build", "--release", "--quiet", "--bin", name],
                &target,
                &format!("corpus guest '{name}'"),
            )?;
            Ok((
                target
                    .join("x86_64-unknown-none")
                    .join("release")
                    .join(name),
                name.clone(),
            ))
        }
    }
}

/// A fresh temporary directory, removed on drop unless kept.
struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    fn new(what: &str) -> Result<TempDir> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "opsvisor-xtask-{what}-{}-{nanos}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path).map_err(|e| io_failure(&path, e))?;
        Ok(TempDir { path, keep: false })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            // Nothing to do about a directory that cannot be removed: it is in /tmp.
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Spawn `cmd`, turning "not installed" into a clear error.
fn spawn(cmd: &mut Command, tool: &str) -> Result<Child> {
    cmd.spawn().map_err(|e| {
        if e.kind() == ErrorKind::NotFound {
            Failure::BadInput(format!("{tool} is not installed; {SETUP_HINT}"))
        } else {
            Failure::BadInput(format!("cannot run {tool}: {e}"))
        }
    })
}

/// Build a GRUB rescue ISO at `out` with the image (multiboot2) and the guest (module),
/// and `run`'s initrd as the second module if it has one.
fn make_iso(
    tmp: &TempDir,
    image: &Path,
    guest: &Path,
    name: &str,
    run: &RunOptions,
    out: &Path,
) -> Result<()> {
    let tree = tmp.path.join("iso-root");
    let grub = tree.join("boot").join("grub");
    fs::create_dir_all(&grub).map_err(|e| io_failure(&grub, e))?;
    let copy = |from: &Path, to: PathBuf| {
        fs::copy(from, &to)
            .map(|_| ())
            .map_err(|e| io_failure(from, e))
    };
    copy(image, tree.join("boot").join("opsvisor-image"))?;
    copy(guest, tree.join("boot").join("guest"))?;
    if let Some(initrd) = &run.initrd {
        if !initrd.is_file() {
            return Err(Failure::BadInput(format!(
                "initrd '{}' is not a file",
                initrd.display()
            )));
        }
        copy(initrd, tree.join("boot").join("initrd"))?;
    }
    // The module's string is the guest's command line: the guest's name as one plain word
    // unless one is given (GRUB's configuration takes it as one line).
    let cmdline: String = run
        .guest_append
        .clone()
        .unwrap_or_else(|| name.into())
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || (c == ' ' && run.guest_append.is_some()) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let cfg = machines::grub_cfg(&run.append, &cmdline, run.initrd.is_some());
    fs::write(grub.join("grub.cfg"), cfg).map_err(|e| io_failure(&grub, e))?;
    grub_mkrescue(&tree, out)
}

/// `grub-mkrescue -o out tree`: a bootable GRUB ISO of the directory `tree`.
fn grub_mkrescue(tree: &Path, out: &Path) -> Result<()> {
    let output = spawn(
        Command::new("grub-mkrescue")
            .arg("-o")
            .arg(out)
            .arg(tree)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
        "grub-mkrescue",
    )?
    .wait_with_output()
    .map_err(|e| Failure::BadInput(format!("grub-mkrescue: {e}")))?;
    if !output.status.success() {
        let mut log = String::from_utf8_lossy(&output.stderr).into_owned();
        log.push_str(&String::from_utf8_lossy(&output.stdout));
        return Err(Failure::BadInput(format!(
            "grub-mkrescue failed ({}): {}",
            output.status,
            log.lines().last().unwrap_or("")
        )));
    }
    Ok(())
}

/// What a watched run produced.
struct Watched {
    serial: String,
    status: Option<ExitStatus>,
    timed_out: bool,
    elapsed: Duration,
}

/// Follow `com1` while `child` runs, copying new bytes to stdout if `stream`; stop when it
/// exits, when `timeout` passes, or [`POWER_OFF_GRACE`] after the image's final report
/// (the emulator is killed in the last two cases).
fn watch(mut child: Child, com1: &Path, timeout: Duration, stream: bool) -> Watched {
    let start = Instant::now();
    let mut serial = Vec::new();
    let mut file: Option<fs::File> = None;
    let mut reported_at: Option<Instant> = None;
    let mut stdout = std::io::stdout();
    let mut pump = |serial: &mut Vec<u8>, file: &mut Option<fs::File>| {
        if file.is_none() {
            *file = fs::File::open(com1).ok();
        }
        if let Some(f) = file {
            let mut buf = Vec::new();
            if f.seek(SeekFrom::Start(serial.len() as u64)).is_ok()
                && f.read_to_end(&mut buf).is_ok()
                && !buf.is_empty()
            {
                if stream {
                    // A closed stdout must not stop the run.
                    let _ = stdout.write_all(&buf);
                    let _ = stdout.flush();
                }
                serial.extend_from_slice(&buf);
            }
        }
    };
    let (status, timed_out) = loop {
        let exited = child.try_wait().ok().flatten();
        pump(&mut serial, &mut file);
        if let Some(status) = exited {
            break (Some(status), false);
        }
        if reported_at.is_none() && machines::verdict(&String::from_utf8_lossy(&serial)).is_some() {
            reported_at = Some(Instant::now());
        }
        let grace_over = reported_at.is_some_and(|t| t.elapsed() > POWER_OFF_GRACE);
        let timed_out = start.elapsed() > timeout;
        if grace_over || timed_out {
            // Kill and reap; a child that already exited makes both calls fail harmlessly.
            let _ = child.kill();
            let status = child.wait().ok();
            pump(&mut serial, &mut file);
            break (status, timed_out && reported_at.is_none());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Watched {
        serial: String::from_utf8_lossy(&serial).into_owned(),
        status,
        timed_out,
        elapsed: start.elapsed(),
    }
}

/// Judge a run: the image's report, and for QEMU the emulator's status, which must agree;
/// a PASS is reported on stderr if `report_pass`. A corpus guest passes when the run
/// ended as its table entry says (`expected`); any other guest as [`Verdict::passed`]
/// says.
fn judge(
    label: &str,
    watched: &Watched,
    qemu_status: bool,
    tmp: &mut TempDir,
    timeout: Duration,
    report_pass: bool,
    expected: Option<corpus::Outcome>,
) -> Result<()> {
    let secs = watched.elapsed.as_secs_f64();
    let keep_note = |tmp: &mut TempDir| {
        tmp.keep = true;
        format!("files kept in {}", tmp.path.display())
    };
    if watched.timed_out {
        let note = keep_note(tmp);
        return Err(Failure::Timeout(format!(
            "{label}: timed out after {} s without the image's report ({note})",
            timeout.as_secs_f64()
        )));
    }
    let passed = |v: &Verdict| match expected {
        Some(outcome) => outcome.accepts(v),
        None => v.passed(),
    };
    match machines::verdict(&watched.serial) {
        Some(v) if passed(&v) => {
            let code = watched.status.and_then(|s| s.code());
            // The image ends QEMU with the guest's code; after a reset it reports a
            // failed run (the reset ended it early), which a corpus guest meant.
            if qemu_status && v != Verdict::Reset && code != Some(1) {
                let note = keep_note(tmp);
                return Err(Failure::Failed(format!(
                    "{label}: the image reported PASS but QEMU exited with {code:?}, not 1 ({note})"
                )));
            }
            if report_pass {
                eprintln!("xtask: {label}: PASS ({}) in {secs:.2} s", v.describe());
            }
            Ok(())
        }
        Some(v) => {
            let what = match v {
                _ if expected.is_some_and(|o| o != corpus::Outcome::Pass)
                    && !matches!(v, Verdict::Failed(_)) =>
                {
                    format!(
                        "FAIL ({}, expected {})",
                        v.describe(),
                        expected.map_or("", corpus::Outcome::describe)
                    )
                }
                Verdict::GuestExit(n) => format!("FAIL (guest exit status {n})"),
                Verdict::PoweredOff => "FAIL (guest powered off)".into(),
                Verdict::Reset => "FAIL (guest reset the machine)".into(),
                Verdict::TripleFault(s) => format!("FAIL ({s})"),
                Verdict::Differential { .. } => format!("FAIL ({})", v.describe()),
                Verdict::Failed(s) => {
                    // Nothing to keep: the image's reason is the whole story.
                    for (prefix, name) in REFUSALS {
                        if let Some(why) = s.strip_prefix(prefix) {
                            return Err(Failure::Refused(format!(
                                "{label}: {name} backend refuses this CPU: {why}"
                            )));
                        }
                    }
                    format!("FAIL (image: {s})")
                }
            };
            let note = keep_note(tmp);
            Err(Failure::Failed(format!(
                "{label}: {what} in {secs:.2} s ({note})"
            )))
        }
        None => {
            let note = keep_note(tmp);
            Err(Failure::Failed(format!(
                "{label}: the emulator stopped ({}) in {secs:.2} s without the image's report ({note})",
                watched
                    .status
                    .map_or("killed".into(), |s| s.to_string())
            )))
        }
    }
}

/// For a corpus guest, its table entry's ending, and `run` with the guest's console input
/// (`console-input=`), devices (`device=pc-testdev`) and vCPUs (`smp=N`) on the image's
/// command line; other guests run as given.
fn with_corpus_entry(run: &RunOptions) -> (RunOptions, Option<corpus::Outcome>) {
    let entry = match &run.guest {
        GuestSpec::Corpus(name) => corpus::guest(name),
        GuestSpec::Path(_) => None,
    };
    let mut run = run.clone();
    if let Some(word) = entry.and_then(|g| corpus::console_input_word(g.input)) {
        run.append = format!("{} {word}", run.append).trim().to_string();
    }
    if entry.is_some_and(|g| g.pc_testdev) {
        run.append = format!("{} device=pc-testdev", run.append)
            .trim()
            .to_string();
    }
    if let Some(vcpus) = entry.map(|g| g.vcpus).filter(|&n| n > 1) {
        run.append = format!("{} smp={vcpus}", run.append).trim().to_string();
    }
    (run, entry.map(|g| g.outcome))
}

/// A guest as messages name it.
fn guest_label(guest: &GuestSpec) -> String {
    match guest {
        GuestSpec::Corpus(name) => name.clone(),
        GuestSpec::Path(path) => path.display().to_string(),
    }
}

/// Why the image cannot run `run`'s guest, if it cannot: a corpus guest whose list entry
/// says why (`image_skip`).
fn image_cannot_run(run: &RunOptions) -> Option<String> {
    let GuestSpec::Corpus(name) = &run.guest else {
        return None;
    };
    corpus::guest(name)?.image_skip.map(String::from)
}

/// Boot the image with `run`'s guest under Bochs; `stream` copies the serial output to
/// stdout as it arrives.
fn bochs(run: &RunOptions, stream: bool, serial_out: Option<&mut String>) -> Result<()> {
    if let Some(why) = image_cannot_run(run) {
        eprintln!("xtask: {}: SKIP: {why}", guest_label(&run.guest));
        return Ok(());
    }
    let (run, expected) = with_corpus_entry(run);
    let run = &run;
    let (guest, name) = resolve_guest(&run.guest)?;
    let image = build_image()?;
    let mut tmp = TempDir::new("bochs")?;
    let iso = tmp.path.join("opsvisor.iso");
    make_iso(&tmp, &image, &guest, &name, run, &iso)?;
    let com1 = tmp.path.join("com1.txt");
    let log = tmp.path.join("bochs.log");
    let rc = tmp.path.join("bochsrc");
    let cont = tmp.path.join("continue.rc");
    let write = |path: &Path, text: String| fs::write(path, text).map_err(|e| io_failure(path, e));
    let mut config = machines::bochsrc(&run.cpu, run.megs, run.ips, &iso, &com1, &log);
    if let Some(port) = run.gdb {
        config.push_str(&machines::bochs_gdb_com2(port));
    }
    write(&rc, config)?;
    // Debian's Bochs starts in its debugger: `c` continues at once.
    write(&cont, "c\n".into())?;
    let out_path = tmp.path.join("bochs.out");
    let out = fs::File::create(&out_path).map_err(|e| io_failure(&out_path, e))?;
    let err = out.try_clone().map_err(|e| io_failure(&out_path, e))?;
    let label = format!("bochs ({}) {name}", run.cpu);
    if stream {
        eprintln!("xtask: {label}: starting (files in {})", tmp.path.display());
    }
    let child = spawn(
        Command::new("bochs")
            .arg("-q")
            .arg("-rc")
            .arg(&cont)
            .arg("-f")
            .arg(&rc)
            .current_dir(&tmp.path)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err),
        "bochs",
    )?;
    let watched = watch(child, &com1, run.timeout, stream);
    if let Some(out) = serial_out {
        out.clone_from(&watched.serial);
    }
    judge(
        &label,
        &watched,
        false,
        &mut tmp,
        run.timeout,
        stream,
        expected,
    )
}

/// Boot the Linux guest under `machine` (`run` comes from `bochs-linux` and its siblings)
/// and check that its /init printed the marker and that the guest powered the machine off.
fn linux(run: &RunOptions, machine: Machine) -> Result<()> {
    let kernel = match &run.guest {
        GuestSpec::Path(path) => Some(path),
        GuestSpec::Corpus(_) => None,
    };
    for path in kernel.into_iter().chain(run.initrd.as_ref()) {
        if !path.is_file() {
            return Err(Failure::BadInput(format!(
                "{} is missing: run 'bash scripts/setup.sh --linux-guest' (or scripts/linux-guest.sh) first",
                path.display()
            )));
        }
    }
    let mut serial = String::new();
    match machine {
        Machine::Bochs => bochs(run, true, Some(&mut serial))?,
        Machine::Qemu => qemu(run, false, Some(&mut serial))?,
    }
    if serial.contains(args::LINUX_MARKER) {
        eprintln!(
            "xtask: linux: the guest reached '{}' and powered off",
            args::LINUX_MARKER
        );
        Ok(())
    } else {
        Err(Failure::Failed(format!(
            "linux: the guest powered off without printing '{}'",
            args::LINUX_MARKER
        )))
    }
}

/// The corpus guests' names (guests/src/bin/*.rs), sorted.
fn corpus_names() -> Result<Vec<String>> {
    let dir = root().join("guests").join("src").join("bin");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .map_err(|e| io_failure(&dir, e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".rs"))
                .map(String::from)
        })
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(Failure::BadInput(format!(
            "no corpus guest in {}",
            dir.display()
        )));
    }
    Ok(names)
}

/// Boot every corpus guest in turn under `machine` with `run`'s options (the image's
/// command line already names `backend`); one line per guest, then a summary.
fn corpus(run: &RunOptions, machine: Machine, backend: HwBackend) -> Result<()> {
    let names = corpus_names()?;
    let machine_name = match machine {
        Machine::Bochs => "bochs",
        Machine::Qemu => "qemu",
    };
    eprintln!(
        "xtask: corpus on {machine_name} ({}), image command line '{}': {} guests",
        run.cpu,
        run.append,
        names.len()
    );
    let mut failed = Vec::new();
    let mut skipped = 0;
    for name in &names {
        let one = RunOptions {
            guest: GuestSpec::Corpus(name.clone()),
            ..run.clone()
        };
        if let Some(why) = image_cannot_run(&one) {
            println!("SKIP  {name}  ({why})");
            skipped += 1;
            continue;
        }
        let started = Instant::now();
        let result = match machine {
            Machine::Bochs => bochs(&one, false, None),
            Machine::Qemu => qemu_quiet(&one),
        };
        match result {
            Ok(()) => println!("PASS  {name}  ({:.2} s)", started.elapsed().as_secs_f64()),
            Err(Failure::Refused(why)) => {
                // Every guest would meet the same refusal: say it once and stop.
                println!("REFUSED  {name}");
                return Err(Failure::Refused(format!(
                    "corpus not run: {why}; pick a CPU model with {} (default {})",
                    match backend {
                        HwBackend::Vmx => "VMX, EPT and unrestricted guest",
                        HwBackend::Svm => "SVM and nested paging",
                    },
                    match machine {
                        Machine::Bochs => backend.bochs_cpu(),
                        Machine::Qemu => args::DEFAULT_QEMU_CPU,
                    }
                )));
            }
            Err(Failure::BadInput(why)) => return Err(Failure::BadInput(why)),
            Err(f) => {
                println!("FAIL  {name}  ({})", f.message());
                failed.push(name.as_str());
            }
        }
    }
    // The plain closing line test harnesses read: 'N passed, N failed'.
    println!(
        "corpus-{}: {} passed, {} failed, {skipped} skipped",
        backend.name(),
        names.len() - failed.len() - skipped,
        failed.len()
    );
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Failure::Failed(format!(
            "corpus on {machine_name} ({}): failed: {}",
            run.cpu,
            failed.join(", ")
        )))
    }
}

/// [`qemu`] under TCG without streaming the serial output (the corpus prints one line
/// per guest).
fn qemu_quiet(run: &RunOptions) -> Result<()> {
    run_qemu(run, false, None, false)
}

fn qemu(run: &RunOptions, kvm: bool, serial_out: Option<&mut String>) -> Result<()> {
    run_qemu(run, kvm, serial_out, true)
}

/// Boot the image with `run`'s guest under QEMU (`-cpu` from `run.cpu`); `stream` copies
/// the serial output to stdout as it arrives.
fn run_qemu(
    run: &RunOptions,
    kvm: bool,
    serial_out: Option<&mut String>,
    stream: bool,
) -> Result<()> {
    if let Some(why) = image_cannot_run(run) {
        eprintln!("xtask: {}: SKIP: {why}", guest_label(&run.guest));
        return Ok(());
    }
    let (run, expected) = with_corpus_entry(run);
    let run = &run;
    let (guest, name) = resolve_guest(&run.guest)?;
    let image = build_image()?;
    let mut tmp = TempDir::new("qemu")?;
    let com1 = tmp.path.join("com1.txt");
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-display", "none", "-no-reboot", "-monitor", "none"])
        .arg("-serial")
        .arg(format!("file:{}", com1.display()));
    if let Some(port) = run.gdb {
        // COM2: the image's GDB stub. QEMU starts without waiting for gdb; the image
        // waits with gdb-wait.
        cmd.arg("-serial")
            .arg(format!("tcp:127.0.0.1:{port},server=on,wait=off"));
    }
    cmd.arg("-m")
        .arg(run.megs.to_string())
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
    cmd.args(["-accel", if kvm { "kvm" } else { "tcg" }])
        .arg("-cpu")
        .arg(&run.cpu);
    if !kvm {
        // The guest's clock follows the instructions executed (4 ns each), not the host's
        // time: TCG's #VMEXITs take a quarter of a million host cycles, and on the host's
        // clock a guest's timer periods would pass inside one. At 32 ns an instruction the
        // exits' own work outruns apic_timer_periodic's 0.5 ms period; at 1 ns the corpus's
        // multi-second RTC waits take minutes.
        cmd.args(["-icount", "shift=2"]);
    }
    // QEMU's -kernel (PVH) passes one module: a guest with an initrd goes on the ISO.
    if run.iso || run.initrd.is_some() {
        let iso = tmp.path.join("opsvisor.iso");
        make_iso(&tmp, &image, &guest, &name, run, &iso)?;
        cmd.arg("-cdrom").arg(&iso).args(["-boot", "d"]);
    } else {
        cmd.arg("-kernel")
            .arg(&image)
            .arg("-initrd")
            .arg(&guest)
            .arg("-append")
            .arg(&run.append);
    }
    let out_path = tmp.path.join("qemu.out");
    let out = fs::File::create(&out_path).map_err(|e| io_failure(&out_path, e))?;
    let err = out.try_clone().map_err(|e| io_failure(&out_path, e))?;
    let label = format!(
        "{} ({}) {name}",
        if kvm { "qemu-kvm" } else { "qemu" },
        run.cpu
    );
    let child = spawn(
        cmd.stdin(Stdio::null()).stdout(out).stderr(err),
        "qemu-system-x86_64",
    )?;
    let watched = watch(child, &com1, run.timeout, stream);
    if watched.status.is_some_and(|s| s.code() == Some(1)) && watched.serial.is_empty() {
        // QEMU itself refused to start: its message is in qemu.out.
        let why = fs::read_to_string(&out_path).unwrap_or_default();
        if !why.trim().is_empty() {
            tmp.keep = true;
            return Err(Failure::BadInput(format!(
                "{label}: QEMU failed: {}",
                why.lines().last().unwrap_or("")
            )));
        }
    }
    if let Some(out) = serial_out {
        out.clone_from(&watched.serial);
    }
    judge(
        &label,
        &watched,
        true,
        &mut tmp,
        run.timeout,
        stream,
        expected,
    )
}

/// Check that this host can run the image under KVM with nested VMX.
fn kvm_usable() -> Result<()> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let has_vmx = machines::cpuinfo_has_flag(&cpuinfo, "vmx");
    let has_svm = machines::cpuinfo_has_flag(&cpuinfo, "svm");
    if let Err(e) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return Err(Failure::BadInput(format!(
            "nested VMX is unavailable here: /dev/kvm cannot be opened ({e}); the CPU {} \
             (this host is not a KVM host, or it is a guest without nested virtualization); \
             use `cargo xtask bochs-vmx GUEST` to test under Bochs' VMX instead",
            if has_vmx {
                "has vmx"
            } else if has_svm {
                "has svm but not vmx"
            } else {
                "shows neither vmx nor svm"
            }
        )));
    }
    if !has_vmx {
        let model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']))
            .unwrap_or("unknown");
        return Err(Failure::BadInput(format!(
            "nested VMX is unavailable here: /dev/kvm opens but the CPU ({model}) has no vmx \
             flag (an AMD host, or nested VMX is off: kvm_intel nested=1); use `cargo xtask \
             bochs-vmx GUEST` instead"
        )));
    }
    Ok(())
}
