//! `opsvisor run --gdb`: Debian's gdb in batch mode against the corpus guest `hello`
//! (breakpoints, continue, registers, memory through the guest's page tables, single
//! steps, the run's end) and against a flat guest of three vCPUs whose bootstrap
//! processor starts the others (a thread per vCPU, a breakpoint in the APs' code, one
//! AP's registers, a step of one AP alone, a watchpoint any vCPU hits), and the remote
//! protocol spoken directly for what batch mode cannot do: gdb's Ctrl-C while the guest
//! runs, and `kill`. gdb comes from `bash scripts/setup.sh`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long any one step of these tests may take before it counts as a hang.
const LIMIT: Duration = Duration::from_secs(60);

/// `opsvisor -v run ARGS --gdb tcp:127.0.0.1:0 --gdb-wait`, and the port it listens on
/// (from its log line); the rest of its stderr is collected by a thread.
fn start(args: &[&str]) -> (Child, u16, mpsc::Receiver<String>) {
    start_with(args, true)
}

/// [`start`], with `--gdb-wait` or without.
fn start_with(args: &[&str], wait: bool) -> (Child, u16, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_opsvisor"))
        .arg("-v")
        .arg("run")
        .args(args)
        .args(["--gdb", "tcp:127.0.0.1:0"])
        .args(wait.then_some("--gdb-wait"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("opsvisor starts");
    let stderr = child.stderr.take().expect("stderr piped");
    let (port_tx, port_rx) = mpsc::channel();
    let (rest_tx, rest_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(at) = line.find("gdb stub listening on 127.0.0.1:") {
                let port = line[at + "gdb stub listening on 127.0.0.1:".len()..]
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|p| p.parse::<u16>().ok());
                let _ = port_tx.send(port);
            }
            all.push_str(&line);
            all.push('\n');
        }
        let _ = rest_tx.send(all);
    });
    let port = port_rx
        .recv_timeout(LIMIT)
        .expect("opsvisor reports where the stub listens")
        .expect("a port number");
    (child, port, rest_rx)
}

/// Wait for `child` to end (killed after [`LIMIT`]); its exit status.
fn finish(mut child: Child) -> Option<i32> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code();
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            panic!("the process did not end within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The bytes at virtual address `addr` in the loadable segments of the ELF64 `file`.
fn elf_bytes(file: &[u8], addr: u64, len: usize) -> Vec<u8> {
    let u16_at = |o: usize| u16::from_le_bytes(file[o..o + 2].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(file[o..o + 8].try_into().unwrap());
    let (phoff, phentsize, phnum) = (u64_at(0x20) as usize, u16_at(0x36), u16_at(0x38));
    for i in 0..usize::from(phnum) {
        let ph = phoff + i * usize::from(phentsize);
        let (offset, vaddr, filesz) = (u64_at(ph + 8), u64_at(ph + 16), u64_at(ph + 32));
        if u16_at(ph) == 1 && (vaddr..vaddr + filesz).contains(&addr) {
            let at = (offset + addr - vaddr) as usize;
            return file[at..at + len].to_vec();
        }
    }
    panic!("{addr:#x} is in no loadable segment");
}

#[test]
fn gdb_batch_session_on_a_corpus_guest() {
    let guest = opsvisor_corpus::image_path("hello");
    let serial = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gdb-hello-serial.txt");
    let serial_arg = format!("file:{}", serial.display());
    let (child, port, rest) = start(&[guest.to_str().unwrap(), "--serial", &serial_arg]);
    let script = [
        "set pagination off".to_string(),
        format!("target remote 127.0.0.1:{port}"),
        // Stopped before the first instruction (--gdb-wait): the multiboot entry.
        "printf \"entry %#x\\n\", $pc".into(),
        "x/4xb $pc".into(),
        // An MXCSR the processor refuses (a reserved bit) is refused, nothing written.
        "set $mxcsr = 0x10000".into(),
        "printf \"mxcsr %#x\\n\", $mxcsr".into(),
        // The entry stores the multiboot information's address (EBX) in boot_info.
        "watch *(unsigned int *)&boot_info".into(),
        "continue".into(),
        "printf \"watched at %#x ebx %#x\\n\", $pc, $ebx".into(),
        "delete".into(),
        "hbreak long_entry".into(),
        "continue".into(),
        "printf \"at %#x cs %#x\\n\", $pc, $cs".into(),
        "stepi".into(),
        "printf \"stepped to %#x\\n\", $pc".into(),
        "delete".into(),
        // The 64-bit entry reads boot_info back (RIP-relative).
        "rwatch *(unsigned int *)&boot_info".into(),
        "continue".into(),
        "delete".into(),
        "break opsvisor_guest_main".into(),
        "continue".into(),
        "printf \"main %#x\\n\", $pc".into(),
        // The return address, read through the guest's page tables (paging is on).
        "info symbol *(unsigned long *)$rsp".into(),
        // The control registers, which gdb's x86-64 description lacks, as QEMU's monitor.
        "monitor info registers".into(),
        "set $rbx = 0x1234abcd".into(),
        "printf \"rbx %#x\\n\", $rbx".into(),
        "stepi".into(),
        "stepi".into(),
        "printf \"two steps to %#x\\n\", $pc".into(),
        "x/2i $pc".into(),
        "delete".into(),
        "continue".into(),
    ];
    let mut gdb = Command::new("gdb");
    gdb.args(["-nx", "-batch"]);
    for line in &script {
        gdb.arg("-ex").arg(line);
    }
    let gdb = gdb
        .arg(&guest)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gdb runs: install it with bash scripts/setup.sh");
    let out = gdb.wait_with_output().expect("gdb ends");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let status = finish(child);
    let log = rest.recv_timeout(LIMIT).unwrap_or_default();
    let context = format!("gdb said:\n{text}\nopsvisor said:\n{log}");

    let file = std::fs::read(&guest).expect("the guest's ELF");
    let entry = u32::from_le_bytes(file[0x18..0x1c].try_into().unwrap());
    assert!(
        text.contains(&format!("entry {entry:#x}")),
        "stopped at the ELF's entry {entry:#x}: {context}"
    );
    let code: Vec<String> = elf_bytes(&file, u64::from(entry), 4)
        .iter()
        .map(|b| format!("{b:#04x}"))
        .collect();
    assert!(
        text.contains(&code.join("\t")),
        "guest memory at the entry is the ELF's code {code:?}: {context}"
    );
    assert!(
        text.contains("Could not write registers") && text.contains("mxcsr 0x1f80\n"),
        "a reserved MXCSR bit refused: {context}"
    );
    assert!(
        text.contains("Hardware watchpoint 1: *(unsigned int *)&boot_info"),
        "a hardware write watchpoint: {context}"
    );
    let ebx = text
        .lines()
        .find_map(|l| l.strip_prefix("watched at 0x"))
        .and_then(|l| l.split_once(" ebx 0x"))
        .and_then(|(_, ebx)| u64::from_str_radix(ebx.trim(), 16).ok())
        .expect("the watchpoint's stop printed");
    assert!(
        text.contains(&format!("Old value = 0\nNew value = {ebx}\n")),
        "the watchpoint stops after boot_info got EBX ({ebx:#x}): {context}"
    );
    assert!(
        text.contains("Breakpoint 2, ") && text.contains(" in long_entry ()"),
        "hbreak stops: {context}"
    );
    assert!(
        text.contains(&format!(
            "Hardware read watchpoint 3: *(unsigned int *)&boot_info\n\nValue = {ebx}\n"
        )) && text.contains(" in rust_start64 ()"),
        "the read watchpoint stops after rust_start64 reads boot_info: {context}"
    );
    let at = text
        .lines()
        .find_map(|l| l.strip_prefix("at 0x"))
        .and_then(|l| u64::from_str_radix(l.split_whitespace().next()?, 16).ok())
        .expect("the breakpoint's RIP printed");
    let stepped = text
        .lines()
        .find_map(|l| l.strip_prefix("stepped to 0x"))
        .and_then(|l| u64::from_str_radix(l.trim(), 16).ok())
        .expect("the step's RIP printed");
    assert!(
        stepped > at && stepped <= at + 15,
        "one instruction stepped ({at:#x} -> {stepped:#x}): {context}"
    );
    assert!(
        text.contains("Breakpoint 4, ") && text.contains(" in opsvisor_guest_main ()"),
        "the software breakpoint stops: {context}"
    );
    assert!(
        text.contains("rust_start64 + ") && text.contains(" in section .text"),
        "the stack read through the page tables holds a return address into rust_start64: {context}"
    );
    assert!(
        text.contains("rbx 0x1234abcd"),
        "a register written: {context}"
    );
    let field = |name: &str| {
        text.split(name)
            .nth(1)
            .and_then(|rest| u64::from_str_radix(rest.split_whitespace().next()?, 16).ok())
    };
    let (cr0, efer) = (field("CR0="), field("EFER="));
    assert!(
        cr0.is_some_and(|cr0| cr0 & 0x8000_0001 == 0x8000_0001),
        "monitor info registers: CR0 with PG and PE in long mode: {context}"
    );
    assert!(
        efer.is_some_and(|efer| efer & 0x500 == 0x500),
        "monitor info registers: EFER with LME and LMA: {context}"
    );
    assert_eq!(
        field("RIP="),
        field("main 0x"),
        "monitor info registers at main: {context}"
    );
    let main = text
        .lines()
        .find_map(|l| l.strip_prefix("main 0x"))
        .and_then(|l| u64::from_str_radix(l.trim(), 16).ok())
        .expect("main's address printed");
    let two = text
        .lines()
        .find_map(|l| l.strip_prefix("two steps to 0x"))
        .and_then(|l| u64::from_str_radix(l.trim(), 16).ok())
        .expect("the steps' RIP printed");
    assert!(
        two > main && two <= main + 30,
        "two instructions stepped ({main:#x} -> {two:#x}): {context}"
    );
    // The guest's debug exit, as a process's exit code; the program's status is the same.
    assert!(
        text.contains("exited with code 01]"),
        "the run's end reported: {context}"
    );
    assert_eq!(status, Some(1), "{context}");
    let console = std::fs::read_to_string(&serial).unwrap_or_default();
    assert!(console.contains("hello from opsvisor guest"), "{console}");
    assert!(console.contains("PASS"), "{console}");
}

/// Where the guest that starts APs keeps the count its APs increment.
const AP_COUNTER: u32 = 0x7000;
/// The stack pointer its APs take (the BSP's is elsewhere).
const AP_STACK: u16 = 0x6c00;
/// Where its APs' real-mode code starts: start-up vector 0x08.
const AP_CODE: u64 = 0x8000;
/// Where its BSP's 32-bit code starts.
const BSP_CODE: u64 = 0x8800;

/// A flat binary loaded at [`AP_CODE`], entered at [`BSP_CODE`] in protected mode: the
/// BSP starts every AP (INIT and a start-up IPI to all but itself through its xAPIC's
/// ICR) and waits, with PAUSE, until the APs have counted [`AP_COUNTER`] to 100; then
/// it writes 2 to the debug-exit port (exit status 5). Each AP, in real mode at CS =
/// 0x0800, takes the stack [`AP_STACK`] and counts forever (`LOCK INC`, PAUSE). Returns
/// the image and the IP of the APs' counting instruction.
fn guest_starting_aps() -> (Vec<u8>, u64) {
    use iced_x86::code_asm::*;
    use iced_x86::BlockEncoderOptions;
    let mut ap = CodeAssembler::new(16).unwrap();
    let mut count = ap.create_label();
    ap.xor(ax, ax).unwrap();
    ap.mov(ds, ax).unwrap();
    ap.mov(ss, ax).unwrap();
    ap.mov(sp, u32::from(AP_STACK)).unwrap();
    ap.set_label(&mut count).unwrap();
    ap.lock().inc(word_ptr(AP_COUNTER)).unwrap();
    ap.pause().unwrap();
    ap.jmp(count).unwrap();
    let r = ap
        .assemble_options(0, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS)
        .unwrap();
    let count_ip = r.label_ip(&count).unwrap();
    let mut image = r.inner.code_buffer;
    image.resize((BSP_CODE - AP_CODE) as usize, 0x90);

    let mut bsp = CodeAssembler::new(32).unwrap();
    let mut wait = bsp.create_label();
    // The xAPIC's spurious-interrupt vector register (software enable), then the ICR:
    // INIT, and a start-up IPI with vector 0x08, each to all but itself.
    bsp.cli().unwrap();
    bsp.mov(dword_ptr(0xfee0_00f0u32), 0x1ffu32).unwrap();
    bsp.mov(dword_ptr(0xfee0_0300u32), 0x000c_4500u32).unwrap();
    bsp.mov(dword_ptr(0xfee0_0300u32), 0x000c_4608u32).unwrap();
    bsp.set_label(&mut wait).unwrap();
    bsp.pause().unwrap();
    bsp.cmp(word_ptr(AP_COUNTER), 100).unwrap();
    bsp.jb(wait).unwrap();
    bsp.mov(al, 2).unwrap();
    bsp.out(0xf4, al).unwrap();
    bsp.hlt().unwrap();
    image.extend(bsp.assemble(BSP_CODE).unwrap());
    (image, count_ip)
}

/// The hexadecimal number after `prefix` on the first line that starts with it.
fn hex_after(text: &str, prefix: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|l| u64::from_str_radix(l.trim().trim_start_matches("0x"), 16).ok())
}

#[test]
fn gdb_sees_a_thread_per_vcpu_and_steps_one_alone() {
    let (image, count_ip) = guest_starting_aps();
    let kernel = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gdb-start-aps.bin");
    std::fs::write(&kernel, image).expect("kernel written");
    let (child, port, rest) = start(&[
        kernel.to_str().unwrap(),
        "--load-addr",
        &format!("{AP_CODE:#x}"),
        "--entry",
        &format!("{BSP_CODE:#x}"),
        "--mode",
        "protected",
        "--smp",
        "3",
        "--serial",
        "none",
        "--timeout",
        "60",
    ]);
    let counter = format!("*(unsigned short *){AP_COUNTER:#x}");
    let script = [
        "set pagination off".to_string(),
        format!("target remote 127.0.0.1:{port}"),
        "echo threads at the start:\\n".into(),
        "info threads".into(),
        format!("break *{count_ip:#x}"),
        "continue".into(),
        "echo threads at the breakpoint:\\n".into(),
        "info threads".into(),
        "info registers rip".into(),
        "printf \"ap rsp %#x\\n\", $rsp".into(),
        format!("printf \"counter before %d\\n\", {counter}"),
        "monitor info registers -a".into(),
        "monitor cpu 3".into(),
        "thread 1".into(),
        "printf \"bsp pc %#x\\n\", $pc".into(),
        "printf \"bsp rsp %#x\\n\", $rsp".into(),
        "thread 2".into(),
        "stepi".into(),
        "printf \"ap stepped to %#x\\n\", $pc".into(),
        format!("printf \"counter after %d\\n\", {counter}"),
        "thread 1".into(),
        "printf \"bsp pc after the step %#x\\n\", $pc".into(),
        "delete".into(),
        // A watchpoint on the count stops whichever vCPU changes it.
        format!("watch {counter}"),
        "continue".into(),
        "continue".into(),
        "delete".into(),
        "continue".into(),
    ];
    let mut gdb = Command::new("gdb");
    gdb.args(["-nx", "-batch"]);
    for line in &script {
        gdb.arg("-ex").arg(line);
    }
    let out = gdb
        .stdin(Stdio::null())
        .output()
        .expect("gdb runs: install it with bash scripts/setup.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let status = finish(child);
    let log = rest.recv_timeout(LIMIT).unwrap_or_default();
    let context = format!("gdb said:\n{text}\nopsvisor said:\n{log}");

    // Before the first instruction: the BSP runs, the APs wait for their start-up IPI.
    let start = text
        .split("threads at the start:")
        .nth(1)
        .and_then(|t| t.split("Breakpoint 1 at").next())
        .expect("info threads at the start printed");
    assert_eq!(
        start.matches("CPU#").count(),
        3,
        "a thread per vCPU: {context}"
    );
    for want in ["(CPU#0 [running])", "(CPU#1 [halted])", "(CPU#2 [halted])"] {
        assert!(start.contains(want), "{want} at the start: {context}");
    }
    // The breakpoint in the APs' code stops the first AP to reach it: vCPU 1 (the
    // BSP's PAUSE gives its turn to the next vCPU), gdb's thread 2.
    assert!(
        text.contains(&format!(
            "Thread 2 hit Breakpoint 1, 0x{count_ip:016x} in ?? ()"
        )),
        "the breakpoint stops with the AP's thread: {context}"
    );
    let at_break = text
        .split("threads at the breakpoint:")
        .nth(1)
        .expect("info threads at the breakpoint printed");
    assert!(
        at_break.contains("* 2    Thread ") && at_break.contains("(CPU#1 [running])"),
        "thread 2 selected and running: {context}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("rip") && l.contains(&format!("{count_ip:#x}"))),
        "info registers rip of thread 2: {context}"
    );
    assert_eq!(
        hex_after(&text, "ap rsp "),
        Some(u64::from(AP_STACK)),
        "thread 2's stack pointer: {context}"
    );
    // QEMU's monitor: every vCPU's registers, each under CPU#N.
    let rip_of = |cpu: &str| {
        text.split(&format!("\nCPU#{cpu}\n"))
            .nth(1)
            .and_then(|t| t.split("RIP=").nth(1))
            .and_then(|t| u64::from_str_radix(t.split_whitespace().next()?, 16).ok())
    };
    assert_eq!(
        rip_of("1"),
        Some(count_ip),
        "monitor info registers -a: {context}"
    );
    assert_eq!(
        rip_of("2"),
        Some(0xfff0),
        "monitor info registers -a: {context}"
    );
    assert!(
        text.contains("invalid CPU index '3': expected 0 to 2"),
        "{context}"
    );
    let bsp_rsp = hex_after(&text, "bsp rsp ").expect("the BSP's rsp printed");
    assert_ne!(
        bsp_rsp,
        u64::from(AP_STACK),
        "thread 1 is the BSP: {context}"
    );
    let bsp_pc = hex_after(&text, "bsp pc ").expect("the BSP's pc printed");
    assert!(
        (BSP_CODE..BSP_CODE + 0x100).contains(&bsp_pc),
        "the BSP in its own code: {context}"
    );
    // stepi on thread 2 ran its LOCK INC alone: the count went up by one, the BSP (and
    // the other AP) stayed where they were.
    assert!(
        text.contains("counter before 0\n") && text.contains("counter after 1\n"),
        "one increment by the stepped AP alone: {context}"
    );
    let stepped = hex_after(&text, "ap stepped to ").expect("the AP's pc after the step");
    assert!(
        stepped > count_ip && stepped <= count_ip + 6,
        "one instruction stepped ({count_ip:#x} -> {stepped:#x}): {context}"
    );
    assert_eq!(
        hex_after(&text, "bsp pc after the step "),
        Some(bsp_pc),
        "the BSP did not run during the step: {context}"
    );
    // The vCPU after the stepped one in turn order, vCPU 2, starts and counts first;
    // then either AP.
    assert!(
        text.contains(
            "Thread 3 hit Hardware watchpoint 2: *(unsigned short *)0x7000\n\nOld value = 1\nNew value = 2\n"
        ),
        "the watchpoint stops the AP that was never stepped: {context}"
    );
    assert!(
        ["Thread 2 hit", "Thread 3 hit"]
            .iter()
            .any(|t| text.contains(&format!(
            "{t} Hardware watchpoint 2: *(unsigned short *)0x7000\n\nOld value = 2\nNew value = 3\n"
        ))),
        "the next increment stops too: {context}"
    );
    // The APs count to 100 and the BSP ends the run: (2 << 1) | 1.
    assert!(
        text.contains("exited with code 05]"),
        "the run's end reported: {context}"
    );
    assert_eq!(status, Some(5), "{context}");
}

/// A remote-protocol packet: `$data#checksum`.
fn packet(data: &str) -> Vec<u8> {
    let sum = data.bytes().fold(0u8, |a, b| a.wrapping_add(b));
    format!("${data}#{sum:02x}").into_bytes()
}

/// The next packet's data (acknowledging it), skipping acknowledgements.
fn reply(conn: &mut TcpStream) -> String {
    let mut byte = [0u8];
    loop {
        conn.read_exact(&mut byte).expect("a reply");
        if byte[0] == b'$' {
            break;
        }
    }
    let mut data = Vec::new();
    loop {
        conn.read_exact(&mut byte).expect("the packet");
        if byte[0] == b'#' {
            break;
        }
        data.push(byte[0]);
    }
    let mut sum = [0u8; 2];
    conn.read_exact(&mut sum).expect("the checksum");
    conn.write_all(b"+").expect("ack");
    // Run-length encoding: `X*N` is X and N - 29 more of it.
    let mut plain = Vec::new();
    let mut bytes = data.into_iter();
    while let Some(b) = bytes.next() {
        if b == b'*' {
            let count = bytes.next().expect("a run length") - 29;
            let last = *plain.last().expect("a repeated character");
            plain.extend(std::iter::repeat_n(last, usize::from(count)));
        } else {
            plain.push(b);
        }
    }
    String::from_utf8_lossy(&plain).into_owned()
}

fn ask(conn: &mut TcpStream, data: &str) -> String {
    conn.write_all(&packet(data)).expect("send");
    reply(conn)
}

#[test]
fn ctrl_c_stops_a_running_guest_and_kill_ends_the_run() {
    // Protected mode, paging off, at 1 MiB: `jmp $` forever.
    let kernel = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gdb-spin.bin");
    std::fs::write(&kernel, [0xeb, 0xfe]).expect("kernel written");
    let (child, port, rest) = start(&[
        kernel.to_str().unwrap(),
        "--flat",
        "--serial",
        "none",
        "--timeout",
        "60",
    ]);
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.set_read_timeout(Some(LIMIT)).expect("timeout");
    let stop = ask(&mut conn, "?");
    assert!(stop.starts_with('S') || stop.starts_with('T'), "{stop}");
    // Continue: the guest spins. No reply until it stops.
    conn.write_all(&packet("c")).expect("continue");
    std::thread::sleep(Duration::from_millis(300));
    conn.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    match conn.read(&mut byte) {
        Ok(1) if byte[0] == b'+' => {}
        other => panic!("only the acknowledgement while the guest runs: {other:?}"),
    }
    assert!(
        conn.read(&mut byte).is_err(),
        "nothing more while the guest runs"
    );
    conn.set_read_timeout(Some(LIMIT)).expect("timeout");
    // Ctrl-C.
    conn.write_all(&[3]).expect("interrupt");
    let stop = reply(&mut conn);
    assert!(
        stop.starts_with("S02") || stop.starts_with("T02"),
        "SIGINT: {stop}"
    );
    // RIP (after the sixteen general registers, eight bytes little-endian) is at the
    // spin loop.
    let regs = ask(&mut conn, "g");
    assert_eq!(
        regs.get(256..272),
        Some("0000100000000000"),
        "rip 0x100000: {regs}"
    );
    conn.write_all(&packet("k")).expect("kill");
    let status = finish(child);
    let log = rest.recv_timeout(LIMIT).unwrap_or_default();
    assert_eq!(status, Some(14), "{log}");
    assert!(log.contains("ended by gdb (kill)"), "{log}");
}

#[test]
fn ctrl_c_stops_every_vcpu_and_names_the_thread_that_ran() {
    // The BSP spins (`jmp $` at 1 MiB); the APs wait for a start-up IPI that never comes.
    let kernel = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gdb-spin-smp.bin");
    std::fs::write(&kernel, [0xeb, 0xfe]).expect("kernel written");
    let (child, port, rest) = start(&[
        kernel.to_str().unwrap(),
        "--flat",
        "--smp",
        "2",
        "--serial",
        "none",
        "--timeout",
        "60",
    ]);
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.set_read_timeout(Some(LIMIT)).expect("timeout");
    assert_eq!(
        ask(&mut conn, "qfThreadInfo"),
        "m01,02",
        "a thread per vCPU"
    );
    assert_eq!(ask(&mut conn, "qsThreadInfo"), "l");
    conn.write_all(&packet("vCont;c")).expect("continue");
    std::thread::sleep(Duration::from_millis(300));
    conn.write_all(&[3]).expect("interrupt");
    let stop = reply(&mut conn);
    // Only the BSP can run: it ran last.
    assert_eq!(stop, "T02thread:01;", "SIGINT naming the BSP's thread");
    // Thread 2's registers: the AP as after its power-on reset, at F000:FFF0.
    assert_eq!(ask(&mut conn, "Hg2"), "OK");
    let regs = ask(&mut conn, "g");
    assert_eq!(
        regs.get(256..272),
        Some("f0ff000000000000"),
        "AP rip: {regs}"
    );
    assert_eq!(ask(&mut conn, "Hg1"), "OK");
    let regs = ask(&mut conn, "g");
    assert_eq!(
        regs.get(256..272),
        Some("0000100000000000"),
        "BSP rip: {regs}"
    );
    // qThreadExtraInfo: "CPU#1 [halted]", hex-encoded.
    let extra = ask(&mut conn, "qThreadExtraInfo,2");
    let text: Vec<u8> = (0..extra.len() / 2)
        .filter_map(|i| u8::from_str_radix(extra.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    assert_eq!(String::from_utf8_lossy(&text), "CPU#1 [halted]");
    conn.write_all(&packet("k")).expect("kill");
    let status = finish(child);
    let log = rest.recv_timeout(LIMIT).unwrap_or_default();
    assert_eq!(status, Some(14), "{log}");
}

#[test]
fn without_gdb_wait_the_guest_runs_until_gdb_attaches_and_after_it_detaches() {
    // Protected mode at 1 MiB: count in EAX forever.
    let kernel = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gdb-count.bin");
    // inc eax; jmp $-2
    std::fs::write(&kernel, [0x40, 0xeb, 0xfd]).expect("kernel written");
    let (child, port, rest) = start_with(
        &[
            kernel.to_str().unwrap(),
            "--flat",
            "--serial",
            "none",
            "--timeout",
            "3",
        ],
        false,
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.set_read_timeout(Some(LIMIT)).expect("timeout");
    let stop = ask(&mut conn, "?");
    assert!(stop.starts_with('S') || stop.starts_with('T'), "{stop}");
    // The guest ran before gdb came: EAX (the first register) counted.
    let regs = ask(&mut conn, "g");
    // Little-endian bytes in hex: the number is the string's bytes swapped.
    let eax = u32::from_str_radix(&regs[..8], 16).map(u32::swap_bytes);
    assert!(eax.is_ok_and(|eax| eax > 1000), "eax counted: {regs}");
    let rip = &regs[256..272];
    assert!(
        rip == "0000100000000000" || rip == "0100100000000000",
        "at the loop: {rip}"
    );
    // Detached, the guest runs on to the timeout.
    assert_eq!(ask(&mut conn, "D"), "OK");
    let status = finish(child);
    let log = rest.recv_timeout(LIMIT).unwrap_or_default();
    assert_eq!(status, Some(8), "{log}");
    assert!(log.contains("stopped after the timeout"), "{log}");
}

#[test]
fn a_gdb_address_that_cannot_be_listened_on_is_one_error_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = taken.local_addr().expect("its address").port();
    let guest = opsvisor_corpus::image_path("hello");
    let out = Command::new(env!("CARGO_BIN_EXE_opsvisor"))
        .arg("run")
        .arg(&guest)
        .args([
            "--gdb",
            &format!("tcp:127.0.0.1:{port}"),
            "--serial",
            "none",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("opsvisor runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("--gdb: cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
}
