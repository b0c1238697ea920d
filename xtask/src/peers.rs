//! `cargo xtask bench-peers`: the same guest workloads on opsvisor's emulator, QEMU TCG
//! and Bochs, in one run, compared by guest instructions per CPU second.
//!
//! The guest is the corpus guest `bench` (guests/src/bin/bench.rs), a multiboot kernel
//! that runs one workload (`bench=int|mem|exit|cpuid`) `n=N` times and prints a checksum. Each
//! peer boots it twice, with N and k·N iterations; the difference of the two runs' CPU
//! time (user + system time of the child, from `getrusage(RUSAGE_CHILDREN)` around its
//! `wait`) is the cost of (k-1)·N iterations with the boot cancelled. The instructions
//! those iterations execute are counted by opsvisor's emulator (its `--stats-counts`); the guest
//! is deterministic, so QEMU and Bochs execute the same ones, and the same count divides
//! every peer's time. Every peer must print the same checksums.

use crate::args::{BenchOptions, Peer, DEFAULT_BOCHS_CPU, DEFAULT_IPS};
use crate::machines;
use crate::{grub_mkrescue, io_failure, resolve_guest, root, spawn, Failure, Result, TempDir};
use nix::sys::resource::{getrusage, UsageWho};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// RAM every peer's machine gets, MiB (the memory workload uses up to 26 MiB).
const GUEST_MIB: u32 = 256;

/// What one run of one peer gave.
#[derive(Clone, Debug)]
struct Sample {
    /// User + system CPU time of the peer's process.
    cpu: Duration,
    /// The checksum the guest printed.
    checksum: String,
    /// Guest instructions retired (opsvisor only).
    instructions: Option<u64>,
}

/// One workload's results on one peer: the N and k·N runs.
#[derive(Clone, Debug)]
struct PeerResult {
    peer: Peer,
    short: Sample,
    long: Sample,
}

impl PeerResult {
    /// CPU time of the (k-1)·N iterations.
    fn delta(&self) -> f64 {
        self.long.cpu.as_secs_f64() - self.short.cpu.as_secs_f64()
    }
}

pub fn bench_peers(o: &BenchOptions) -> Result<()> {
    let peers = o.peers();
    let (guest, _) = resolve_guest(&crate::args::GuestSpec::Corpus("bench".into()))?;
    let opsvisor = match &o.opsvisor {
        Some(path) => path.clone(),
        None => build_opsvisor()?,
    };
    if !opsvisor.is_file() {
        return Err(Failure::BadInput(format!(
            "--opsvisor: {} is not a file",
            opsvisor.display()
        )));
    }
    let names: Vec<&str> = peers.iter().map(|p| p.name()).collect();
    eprintln!(
        "xtask: bench-peers: {} on {}; N and {}·N iterations each, CPU time of the child",
        o.workloads
            .iter()
            .map(|(w, n)| format!("{w} N={n}"))
            .collect::<Vec<_>>()
            .join(", "),
        names.join(", "),
        o.k
    );
    let tmp = TempDir::new("bench-peers")?;
    let mut rows = Vec::new();
    let mut mismatches = Vec::new();
    for (workload, n) in &o.workloads {
        // The best (least CPU) N and k·N runs of each peer. Each repetition runs every
        // peer in turn, so that the machine's load, which drifts on a shared host, falls
        // on all of them alike.
        let mut best: Vec<[Option<Sample>; 2]> = vec![[None, None]; peers.len()];
        for _ in 0..o.repeat {
            for (slot, iters) in [*n, *n * o.k].into_iter().enumerate() {
                for (p, &peer) in peers.iter().enumerate() {
                    let s = run_peer(peer, &opsvisor, &guest, workload, iters, o, &tmp)?;
                    eprintln!(
                        "xtask: {:<8} {workload:<4} n={iters:<6} {:>8.3} s CPU  checksum {}{}",
                        peer.name(),
                        s.cpu.as_secs_f64(),
                        s.checksum,
                        s.instructions
                            .map(|i| format!("  {i} instructions"))
                            .unwrap_or_default()
                    );
                    let kept = &mut best[p][slot];
                    if kept.as_ref().is_none_or(|b| s.cpu < b.cpu) {
                        *kept = Some(s);
                    }
                }
            }
        }
        let mut results = Vec::new();
        for (&peer, [short, long]) in peers.iter().zip(best) {
            let (Some(short), Some(long)) = (short, long) else {
                return Err(Failure::BadInput("--repeat must be at least 1".into()));
            };
            results.push(PeerResult { peer, short, long });
        }
        // Every peer must have computed the same thing.
        for r in &results[1..] {
            for (a, b, iters) in [
                (&results[0].short, &r.short, *n),
                (&results[0].long, &r.long, *n * o.k),
            ] {
                if a.checksum != b.checksum {
                    mismatches.push(format!(
                        "{workload} n={iters}: {} printed {}, {} printed {}",
                        results[0].peer.name(),
                        a.checksum,
                        r.peer.name(),
                        b.checksum
                    ));
                }
            }
        }
        rows.push((workload.clone(), *n, results));
    }
    print!("{}", table(o, &peers, &rows));
    if let Some(line) = linux_boot(o, &opsvisor, &peers, &tmp)? {
        println!("{line}");
    }
    if mismatches.is_empty() {
        println!("checksums: every peer printed the same");
        Ok(())
    } else {
        Err(Failure::Failed(format!(
            "the peers disagree: {}",
            mismatches.join("; ")
        )))
    }
}

/// The result table (and how to read it).
fn table(o: &BenchOptions, peers: &[Peer], rows: &[(String, u64, Vec<PeerResult>)]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "\nGuest instructions per CPU second over (k-1)·N = {}·N iterations (k·N run minus N run).",
        o.k - 1
    );
    let _ = writeln!(
        t,
        "Instructions are opsvisor's count for those iterations; the guest is deterministic, so \
         every peer executes the same ones (a REP string instruction counts once per 4096 \
         iterations)."
    );
    let mut head = format!("{:<8} {:>7} {:>14}", "workload", "iters", "instructions");
    for p in peers {
        let _ = write!(head, " {:>12} {:>10}", format!("{} s", p.name()), "M/s");
    }
    let qemu = peers.iter().position(|p| *p == Peer::Qemu);
    if qemu.is_some() {
        for p in peers.iter().filter(|p| **p != Peer::Qemu) {
            let _ = write!(head, " {:>12}", format!("{}/qemu", p.name()));
        }
    }
    let _ = writeln!(t, "{head}");
    for (workload, n, results) in rows {
        let instructions = match (
            &results[0].short.instructions,
            &results[0].long.instructions,
        ) {
            (Some(a), Some(b)) => b.saturating_sub(*a),
            _ => 0,
        };
        let _ = write!(
            t,
            "{:<8} {:>7} {:>14}",
            workload,
            n * (o.k - 1),
            instructions
        );
        for r in results {
            let d = r.delta();
            if d > 0.0 {
                let _ = write!(t, " {:>12.3} {:>10.1}", d, instructions as f64 / d / 1e6);
            } else {
                let _ = write!(t, " {:>12.3} {:>10}", d, "noise");
            }
        }
        if let Some(q) = qemu {
            let dq = results[q].delta();
            for r in results.iter().filter(|r| r.peer != Peer::Qemu) {
                let d = r.delta();
                if d > 0.0 && dq > 0.0 {
                    let _ = write!(t, " {:>11.2}x", dq / d);
                } else {
                    let _ = write!(t, " {:>12}", "noise");
                }
            }
        }
        let _ = writeln!(t);
    }
    t
}

/// What /init of scripts/linux-guest.sh prints once the kernel has booted.
const LINUX_MARKER: &str = "opsvisor-linux-guest: init reached";
/// The Linux guest's command line on both peers.
const LINUX_CMDLINE: &str = "console=ttyS0 panic=-1";

/// Boot Linux to its init (which powers the machine off) on opsvisor and on QEMU (`-M pc`),
/// each once; the line that compares their CPU time (and wall time), or `None` when the
/// guest is not there and was not asked for.
fn linux_boot(
    o: &BenchOptions,
    opsvisor: &Path,
    peers: &[Peer],
    tmp: &TempDir,
) -> Result<Option<String>> {
    let Some((dir, asked)) = &o.linux else {
        return Ok(None);
    };
    let dir = if dir.is_absolute() {
        dir.clone()
    } else {
        root().join(dir)
    };
    let (kernel, initrd) = (dir.join("vmlinuz"), dir.join("initrd.gz"));
    if !kernel.is_file() || !initrd.is_file() {
        if *asked {
            return Err(Failure::BadInput(format!(
                "--linux: {} has no vmlinuz and initrd.gz (make them with bash scripts/linux-guest.sh {})",
                dir.display(),
                dir.display()
            )));
        }
        eprintln!(
            "xtask: no Linux guest in {} (bash scripts/linux-guest.sh makes one): the boot is left out",
            dir.display()
        );
        return Ok(None);
    }
    let mut times = Vec::new();
    for &peer in peers.iter().filter(|p| **p != Peer::Bochs) {
        let run_dir = tmp.path.join(format!("{}-linux", peer.name()));
        fs::create_dir_all(&run_dir).map_err(|e| io_failure(&run_dir, e))?;
        let mut cmd = match peer {
            Peer::Opsvisor => {
                let mut c = Command::new(opsvisor);
                // Exit counts without a clock read per exit, printed with the boot's
                // instruction rate below.
                c.args(["run", "--stats-counts", "--memory"])
                    .arg(format!("{GUEST_MIB}M"));
                c
            }
            _ => {
                let mut c = Command::new("qemu-system-x86_64");
                c.args(["-M", "pc", "-accel", "tcg", "-m"])
                    .arg(GUEST_MIB.to_string())
                    .args(["-nographic", "-no-reboot"]);
                c
            }
        };
        let initrd_flag = if peer == Peer::Opsvisor {
            "--initrd"
        } else {
            "-initrd"
        };
        let append_flag = if peer == Peer::Opsvisor {
            "--append"
        } else {
            "-append"
        };
        cmd.arg(initrd_flag)
            .arg(&initrd)
            .arg(append_flag)
            .arg(LINUX_CMDLINE);
        if peer == Peer::Qemu {
            cmd.arg("-kernel");
        }
        cmd.arg(&kernel);
        let started = Instant::now();
        let (cpu, code, out, err) = measure(cmd, peer.name(), &run_dir, o.timeout)?;
        let wall = started.elapsed();
        if !out.contains(LINUX_MARKER) {
            return Err(Failure::Failed(format!(
                "{} did not boot Linux to its init (status {code:?}); the last lines:\n{}\n{}",
                peer.name(),
                out.lines()
                    .rev()
                    .take(15)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n"),
                err.trim_end()
            )));
        }
        eprintln!(
            "xtask: {:<8} linux boot  {:>8.3} s CPU  {:>8.3} s wall",
            peer.name(),
            cpu.as_secs_f64(),
            wall.as_secs_f64()
        );
        if peer == Peer::Opsvisor {
            // The statistics opsvisor printed at the end of the boot: exits by reason,
            // guest instructions and their rate.
            if let Some(at) = err.find("--- opsvisor statistics") {
                eprintln!("xtask: opsvisor's statistics for the Linux boot:");
                eprint!("{}", &err[at..]);
            }
        }
        times.push((peer, cpu, wall));
    }
    let mut line = String::from("linux boot to init and power-off (CPU s, wall s):");
    for (peer, cpu, wall) in &times {
        let _ = write!(
            line,
            " {} {:.2} ({:.2})",
            peer.name(),
            cpu.as_secs_f64(),
            wall.as_secs_f64()
        );
    }
    let cpu_of = |p: Peer| times.iter().find(|t| t.0 == p).map(|t| t.1.as_secs_f64());
    if let (Some(ours), Some(qemu)) = (cpu_of(Peer::Opsvisor), cpu_of(Peer::Qemu)) {
        let _ = write!(line, "; opsvisor/qemu {:.2}x", qemu / ours);
    }
    if peers.contains(&Peer::Bochs) {
        line.push_str(" (Bochs left out: it boots Linux only through a BIOS and a boot loader)");
    }
    Ok(Some(line))
}

/// `cargo build --release -p opsvisor`; the program's path.
fn build_opsvisor() -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root())
        .args(["build", "--release", "--quiet", "-p", "opsvisor"])
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .map_err(|e| Failure::BadInput(format!("cannot run cargo to build opsvisor: {e}")))?;
    if !status.success() {
        return Err(Failure::BadInput(format!(
            "building opsvisor failed ({status})"
        )));
    }
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => root().join("target"),
    };
    Ok(target.join("release").join("opsvisor"))
}

/// Total user + system time of the children this process has waited for.
fn children_cpu() -> Result<Duration> {
    let u = getrusage(UsageWho::RUSAGE_CHILDREN)
        .map_err(|e| Failure::BadInput(format!("getrusage: {e}")))?;
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec().max(0) as u64)
            + Duration::from_micros(t.tv_usec().max(0) as u64)
    };
    Ok(tv(u.user_time()) + tv(u.system_time()))
}

/// Run `cmd` to its end (killed after `timeout`) with stdout and stderr in files in
/// `dir`; returns its CPU time, exit code, stdout and stderr.
fn measure(
    mut cmd: Command,
    tool: &str,
    dir: &Path,
    timeout: Duration,
) -> Result<(Duration, Option<i32>, String, String)> {
    let out_path = dir.join("stdout.txt");
    let err_path = dir.join("stderr.txt");
    let out = fs::File::create(&out_path).map_err(|e| io_failure(&out_path, e))?;
    let err = fs::File::create(&err_path).map_err(|e| io_failure(&err_path, e))?;
    // The children's total moves only when a child is reaped: this one, below.
    let before = children_cpu()?;
    let mut child = spawn(cmd.stdin(Stdio::null()).stdout(out).stderr(err), tool)?;
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Failure::Timeout(format!(
                    "{tool} ran longer than {} s (raise --timeout)",
                    timeout.as_secs_f64()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(Failure::BadInput(format!("waiting for {tool}: {e}"))),
        }
    };
    let cpu = children_cpu()?.saturating_sub(before);
    let read = |p: &Path| fs::read(p).map(|b| String::from_utf8_lossy(&b).into_owned());
    let stdout = read(&out_path).map_err(|e| io_failure(&out_path, e))?;
    let stderr = read(&err_path).map_err(|e| io_failure(&err_path, e))?;
    Ok((cpu, status.code(), stdout, stderr))
}

/// The checksum in the guest's `bench W n=N checksum X` line.
fn checksum(serial: &str, workload: &str, n: u64) -> Option<String> {
    let prefix = format!("bench {workload} n={n} checksum ");
    serial.lines().find_map(|l| {
        l.find(&prefix)
            .map(|i| l[i + prefix.len()..].trim().to_string())
    })
}

/// The instruction count of opsvisor's `--stats-counts`.
fn instructions(stats: &str) -> Option<u64> {
    stats.lines().find_map(|l| {
        let rest = l.strip_prefix("instructions")?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Boot the benchmark guest on `peer` with `bench=workload n=iters`.
fn run_peer(
    peer: Peer,
    opsvisor: &Path,
    guest: &Path,
    workload: &str,
    iters: u64,
    o: &BenchOptions,
    tmp: &TempDir,
) -> Result<Sample> {
    let append = format!("bench={workload} n={iters}");
    let dir = tmp.path.join(format!("{}-{workload}-{iters}", peer.name()));
    fs::create_dir_all(&dir).map_err(|e| io_failure(&dir, e))?;
    let label = format!("{} {append}", peer.name());
    let (cpu, code, stdout, stderr, serial) = match peer {
        Peer::Opsvisor => {
            let mut cmd = Command::new(opsvisor);
            // Counts only: `--stats` would read the clock twice per exit.
            cmd.args(["run", "--stats-counts", "--memory"])
                .arg(format!("{GUEST_MIB}M"))
                .arg("--append")
                .arg(&append)
                .arg(guest);
            let (cpu, code, out, err) = measure(cmd, "opsvisor", &dir, o.timeout)?;
            (cpu, code, out.clone(), err, out)
        }
        Peer::Qemu => {
            let mut cmd = Command::new("qemu-system-x86_64");
            cmd.args(["-display", "none", "-no-reboot", "-monitor", "none"])
                .args([
                    "-serial", "stdio", "-net", "none", "-accel", "tcg", "-cpu", "max",
                ])
                .arg("-m")
                .arg(GUEST_MIB.to_string())
                .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-kernel"])
                .arg(guest)
                .arg("-append")
                .arg(&append);
            let (cpu, code, out, err) = measure(cmd, "qemu-system-x86_64", &dir, o.timeout)?;
            (cpu, code, out.clone(), err, out)
        }
        Peer::Bochs => {
            let iso = dir.join("bench.iso");
            make_bench_iso(&dir, guest, &append, &iso)?;
            let com1 = dir.join("com1.txt");
            let rc = dir.join("bochsrc");
            let cont = dir.join("continue.rc");
            let log = dir.join("bochs.log");
            fs::write(
                &rc,
                machines::bochsrc(DEFAULT_BOCHS_CPU, GUEST_MIB, DEFAULT_IPS, &iso, &com1, &log),
            )
            .map_err(|e| io_failure(&rc, e))?;
            // Debian's Bochs starts in its debugger: `c` continues at once.
            fs::write(&cont, "c\n").map_err(|e| io_failure(&cont, e))?;
            let mut cmd = Command::new("bochs");
            cmd.arg("-q")
                .arg("-rc")
                .arg(&cont)
                .arg("-f")
                .arg(&rc)
                .current_dir(&dir);
            let (cpu, code, out, err) = measure(cmd, "bochs", &dir, o.timeout)?;
            let serial = fs::read_to_string(&com1).unwrap_or_default();
            (cpu, code, out, err, serial)
        }
    };
    // opsvisor and QEMU exit with the guest's debug-exit status (1 = PASS); Bochs' own
    // status is always 1 and only the console counts.
    let passed = serial.lines().any(|l| l.trim_end() == "PASS")
        && !serial.contains("FAIL:")
        && (peer == Peer::Bochs || code == Some(1));
    let sum = checksum(&serial, workload, iters);
    let (Some(sum), true) = (sum, passed) else {
        let mut why = format!(
            "{label}: the guest did not pass (status {code:?}); console:\n{}",
            serial.trim_end()
        );
        if !stderr.trim().is_empty() && peer != Peer::Opsvisor {
            let _ = write!(why, "\nstderr:\n{}", stderr.trim_end());
        } else if peer == Peer::Opsvisor {
            let _ = write!(why, "\n{}", stderr.trim_end());
        }
        let _ = stdout;
        return Err(Failure::Failed(why));
    };
    let instructions = if peer == Peer::Opsvisor {
        Some(instructions(&stderr).ok_or_else(|| {
            Failure::Failed(format!("{label}: no instruction count in its --stats"))
        })?)
    } else {
        None
    };
    Ok(Sample {
        cpu,
        checksum: sum,
        instructions,
    })
}

/// A GRUB ISO that boots the guest directly (multiboot v1) with `append`.
fn make_bench_iso(dir: &Path, guest: &Path, append: &str, out: &Path) -> Result<()> {
    let tree = dir.join("iso-root");
    let grub = tree.join("boot").join("grub");
    fs::create_dir_all(&grub).map_err(|e| io_failure(&grub, e))?;
    let kernel = tree.join("boot").join("bench");
    fs::copy(guest, &kernel).map_err(|e| io_failure(guest, e))?;
    let cfg = format!(
        "set timeout=0\nset default=0\nmenuentry \"bench\" {{\n    multiboot /boot/bench {append}\n    boot\n}}\n"
    );
    fs::write(grub.join("grub.cfg"), cfg).map_err(|e| io_failure(&grub, e))?;
    grub_mkrescue(&tree, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_checksum_and_the_instruction_count() {
        let serial = "SeaBIOS\r\nBooting from ROM..bench mem n=4 checksum 00ff\r\nPASS\r\n";
        assert_eq!(checksum(serial, "mem", 4).as_deref(), Some("00ff"));
        assert_eq!(checksum(serial, "mem", 5), None);
        assert_eq!(checksum(serial, "int", 4), None);
        let stats =
            "total exits   304\ninstructions               995302 in 0.013 s = 78.6 million/s\n";
        assert_eq!(instructions(stats), Some(995_302));
        assert_eq!(instructions("total exits 3\n"), None);
    }
}
