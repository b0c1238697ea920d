//! `opsvisor exec` end to end: snippets in each mode, faults, the trace, bad input, and
//! agreement with the host CPU (the native oracle).

use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Command, Output};

fn scratch(name: &str, text: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, text).expect("scratch file written");
    path
}

fn exec_raw(name: &str, state: &str, extra: &[&str]) -> Output {
    let path = scratch(name, state);
    Command::new(env!("CARGO_BIN_EXE_opsvisor"))
        .arg("exec")
        .args(extra)
        .arg(&path)
        .output()
        .expect("the opsvisor binary runs")
}

/// Run a state that must succeed; the parsed output.
fn exec(name: &str, state: &Value, extra: &[&str]) -> Value {
    let out = exec_raw(name, &state.to_string(), extra);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    serde_json::from_slice(&out.stdout).expect("the output is JSON")
}

fn reg(out: &Value, name: &str) -> u64 {
    let text = out["regs"][name].as_str().expect("register present");
    u64::from_str_radix(text.trim_start_matches("0x"), 16).expect("hex value")
}

/// Exactly one line on stderr, status 2, naming `needle`.
fn assert_bad(name: &str, state: &str, needle: &str) {
    let out = exec_raw(name, state, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one error line: {stderr}");
    assert!(stderr.contains(needle), "'{needle}' not in: {stderr}");
    assert!(stderr.contains(name), "the file is named: {stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn long_mode_snippet_computes() {
    // add rax, rbx; mov [0x2000], rax; push rax; sub rax, 3 (ZF)
    let out = exec(
        "long.json",
        &json!({
            "mode": 64,
            "regs": {"rax": 1, "rbx": "0x2", "rip": "0x1000", "rsp": "0x7010"},
            "code": "4801d8 4889042500200000 50 4883e803",
            "memory": [{"address": "0x2000", "size": 8}, {"address": "0x7000", "size": 16}]
        }),
        &[],
    );
    assert_eq!(out["end"]["reason"], "completed");
    assert_eq!(out["instructions"], 4);
    assert_eq!(reg(&out, "rax"), 0);
    assert_eq!(reg(&out, "rsp"), 0x7008);
    assert_eq!(reg(&out, "rip"), 0x1010);
    assert!(out["flags"].as_array().unwrap().contains(&json!("ZF")));
    // The bytes that changed: the store and the push.
    assert_eq!(
        out["memory"],
        json!([{"address": "0x2000", "bytes": "03"}, {"address": "0x7008", "bytes": "03"}])
    );
    // The whole writable regions, when asked for.
    let all = exec(
        "long.json",
        &json!({
            "mode": 64,
            "regs": {"rax": 1, "rbx": "0x2", "rip": "0x1000", "rsp": "0x7010"},
            "code": "4801d8 4889042500200000 50 4883e803",
            "memory": [{"address": "0x2000", "size": 8}, {"address": "0x7000", "size": 16}]
        }),
        &["--memory-output", "all"],
    );
    assert_eq!(all["memory"][0]["bytes"], "0300000000000000");
    assert_eq!(
        all["memory"][1]["bytes"],
        "00000000000000000300000000000000"
    );
}

#[test]
fn protected_mode_snippet_computes_and_faults_with_the_stack_intact() {
    // mov eax, [ebx]; add eax, 5; mov [ebx+4], eax; div ecx (ecx = 0: #DE)
    let out = exec(
        "prot.json",
        &json!({
            "mode": 32,
            "regs": {"ebx": "0x3000", "eip": "0x1000", "esp": "0x4020"},
            "code": "8b03 83c005 894304 f7f1",
            "memory": [
                {"address": "0x3000", "bytes": "10000000 00000000"},
                {"address": "0x4000", "bytes": "aa".repeat(32)}
            ]
        }),
        &[],
    );
    assert_eq!(
        out["end"],
        json!({"reason": "exception", "vector": 0, "name": "#DE"})
    );
    assert_eq!(reg(&out, "eax"), 0x15);
    assert_eq!(reg(&out, "eip"), 0x1008, "the faulting instruction");
    assert_eq!(reg(&out, "esp"), 0x4020);
    // Only the store changed memory: no exception frame below ESP.
    assert_eq!(out["memory"], json!([{"address": "0x3004", "bytes": "15"}]));
}

#[test]
fn real_mode_snippet_uses_segments_and_halts() {
    // mov ax, [0x10]; inc ax; mov [0x12], ax; push ax; hlt
    let out = exec(
        "real.json",
        &json!({
            "mode": 16,
            "regs": {"ip": "0x0", "sp": "0x100"},
            "segments": {"cs": {"selector": "0x100"}, "ds": {"selector": "0x200"},
                         "ss": {"selector": "0x300"}},
            "code": "a11000 40 a31200 50 f4",
            "memory": [
                {"address": "0x2010", "bytes": "3412 0000"},
                {"address": "0x30fe", "size": 2}
            ]
        }),
        &[],
    );
    assert_eq!(out["end"]["reason"], "hlt");
    assert_eq!(reg(&out, "eax"), 0x1235);
    assert_eq!(reg(&out, "esp"), 0xfe);
    assert_eq!(reg(&out, "eip"), 0x9, "after the HLT");
    assert_eq!(out["segments"]["ds"]["base"], "0x2000");
    assert_eq!(
        out["memory"],
        json!([{"address": "0x2012", "bytes": "3512"}, {"address": "0x30fe", "bytes": "3512"}])
    );
}

#[test]
fn faults_report_vector_error_code_and_cr2() {
    // mov rax, 0xdead0000; mov rax, [rax]
    let out = exec(
        "pf.json",
        &json!({"mode": 64, "regs": {"rip": "0x1000"}, "code": "48b80000adde00000000 488b00"}),
        &[],
    );
    assert_eq!(
        out["end"],
        json!({"reason": "exception", "vector": 14, "name": "#PF", "error_code": "0x0",
               "cr2": "0xdead0000"})
    );
    assert_eq!(reg(&out, "rip"), 0x100a);
    // A write to a read-only region: #PF with the present and write bits.
    let out = exec(
        "ro.json",
        &json!({"mode": 32, "regs": {"eip": "0x1000"}, "code": "c60500200000 01",
                "memory": [{"address": "0x2000", "size": 4, "writable": false}]}),
        &[],
    );
    assert_eq!(out["end"]["vector"], 14);
    assert_eq!(out["end"]["error_code"], "0x3");
    assert_eq!(out["end"]["cr2"], "0x2000");
    // ud2 in real mode.
    let out = exec(
        "ud.json",
        &json!({"mode": 16, "regs": {"ip": "0x7c00", "sp": "0x7000"}, "code": "90 0f0b",
                "memory": [{"address": "0x6000", "size": 4096}]}),
        &[],
    );
    assert_eq!(
        out["end"],
        json!({"reason": "exception", "vector": 6, "name": "#UD"})
    );
    assert_eq!(reg(&out, "eip"), 0x7c01);
    assert_eq!(out["instructions"], 1);
    // int 0x80 is reported as an interrupt, with the registers at the INT.
    let out = exec(
        "int.json",
        &json!({"mode": 64, "regs": {"rip": "0x1000", "rax": 60}, "code": "cd80"}),
        &[],
    );
    assert_eq!(out["end"], json!({"reason": "interrupt", "vector": 128}));
    assert_eq!(reg(&out, "rip"), 0x1002);
}

#[test]
fn loops_stop_at_the_instruction_limit() {
    let out = exec(
        "loop.json",
        &json!({"mode": 64, "regs": {"rip": "0x1000"}, "code": "48ffc0 ebfb"}),
        &["--max-instructions", "101"],
    );
    assert_eq!(out["end"]["reason"], "instruction-limit");
    assert_eq!(out["instructions"], 101);
    assert_eq!(reg(&out, "rax"), 51);
}

#[test]
fn trace_lists_each_instruction_and_its_changes() {
    let out = exec(
        "trace.json",
        &json!({"mode": 64, "regs": {"rip": "0x1000", "rcx": 5},
                "xmm": {"xmm1": "0x1234"},
                "code": "4889c8 48f7d8 4891"}),
        &["--trace"],
    );
    let trace = out["trace"].as_array().expect("trace array");
    assert_eq!(trace.len(), 3);
    assert_eq!(trace[0]["address"], "0x1000");
    assert_eq!(trace[0]["bytes"], "4889c8");
    assert_eq!(trace[0]["instruction"], "mov rax,rcx");
    assert_eq!(trace[0]["changed"], json!({"rax": "0x5"}));
    assert_eq!(trace[1]["instruction"], "neg rax");
    assert_eq!(trace[1]["changed"]["rax"], "0xfffffffffffffffb");
    assert!(trace[1]["changed"]["rflags"].is_string());
    assert_eq!(trace[2]["instruction"], "xchg rcx,rax");
    assert_eq!(
        trace[2]["changed"],
        json!({"rax": "0x5", "rcx": "0xfffffffffffffffb"})
    );
    // A register given in the state is in the output even when unchanged.
    assert_eq!(out["xmm"], json!({"xmm1": "0x1234"}));
}

#[test]
fn bad_input_gives_status_2_and_names_the_field() {
    assert_bad("bad1.json", "{\"mode\": 64,", "invalid JSON");
    assert_bad(
        "bad2.json",
        r#"{"mode": 64, "regs": {"rax": [1]}}"#,
        "regs.rax: expected a number or hex string",
    );
    assert_bad(
        "bad3.json",
        r#"{"mode": 64, "regs": {"rqx": 1}}"#,
        "regs.rqx: unknown register",
    );
    assert_bad(
        "bad4.json",
        r#"{"mode": 64, "memory": [{"address": 0, "size": 64}, {"address": 32, "size": 4}]}"#,
        "memory[1]: 0x20..0x24 overlaps memory[0]",
    );
    assert_bad("bad5.json", r#"{"mode": 48}"#, "mode: 48 is not a mode");
    assert_bad(
        "bad6.json",
        r#"{"mode": 32, "regs": {"rax": 1}}"#,
        "regs.rax: unknown register in mode 32",
    );
    assert_bad(
        "bad7.json",
        r#"{"mode": 64, "regs": {"rip": 4096}}"#,
        "regs.rip: 0x1000 is in no memory region",
    );
    assert_bad(
        "bad8.json",
        r#"{"mode": 32, "memory": [{"address": "0xffffff00", "size": 512}]}"#,
        "memory[0]: 0xffffff00..0x100000100 is out of range",
    );
    assert_bad(
        "bad9.json",
        r#"{"mode": 64, "rgs": {}}"#,
        "rgs: unknown field",
    );
    let missing = Command::new(env!("CARGO_BIN_EXE_opsvisor"))
        .args(["exec", "/nonexistent/state.json"])
        .output()
        .expect("runs");
    assert_eq!(missing.status.code(), Some(2));
}

/// The issue's check: `opsvisor exec` on a JSON state reproduces what the host CPU
/// computes (64-bit user-mode snippet run natively by the oracle).
#[test]
fn exec_agrees_with_the_host_cpu() {
    use opsvisor_oracle::{State, CODE_BASE, SCRATCH_BASE, SCRATCH_SIZE};
    if !opsvisor_oracle::available() {
        eprintln!("the native oracle is not available on this host: nothing to compare");
        return;
    }
    // add rax, rbx; imul rcx, rdx; shl rsi, 3; xchg [rsp], rdi; push r8; pop r9;
    // bsf r10, r11; adc r12, [rsp + 8]; sete r13b; rol r14, 7; not r15
    let code: Vec<u8> = [
        "4801d8",
        "480fafca",
        "48c1e603",
        "48873c24",
        "4150",
        "4159",
        "4d0fbcd3",
        "4c13642408",
        "410f94c5",
        "49c1c607",
        "49f7d7",
    ]
    .concat()
    .as_bytes()
    .chunks(2)
    .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
    .collect();
    let mut state = State::new();
    let values = [
        0x7fff_ffff_ffff_ffffu64,
        3,
        0x1234_5678_9abc_def0,
        0xffff_ffff_0000_0001,
        0, // rsp: set below
        0xdead_beef,
        0x8000_0000_0000_0001,
        0x55,
        0x1111,
        0,
        42,
        0x100,
        0xfedc_ba98_7654_3210,
        7,
        0x8000_0000_0000_0000,
        0x0f0f,
    ];
    state.gpr = values;
    state.gpr[4] = SCRATCH_BASE + 0x800;
    state.rflags = 0x2 | 0x1; // CF set: ADC reads it
    for (i, b) in state.scratch.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37);
    }
    let native = opsvisor_oracle::run(&code, &state).expect("the oracle runs the snippet");
    assert_eq!(native.end, opsvisor_oracle::End::Completed);

    let names = [
        "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12",
        "r13", "r14", "r15",
    ];
    let mut regs = serde_json::Map::new();
    for (n, v) in names.iter().zip(state.gpr) {
        regs.insert((*n).into(), json!(format!("{v:#x}")));
    }
    regs.insert("rip".into(), json!(format!("{CODE_BASE:#x}")));
    regs.insert("rflags".into(), json!(format!("{:#x}", state.rflags)));
    let hex: String = code.iter().map(|b| format!("{b:02x}")).collect();
    let scratch: String = state.scratch.iter().map(|b| format!("{b:02x}")).collect();
    let out = exec(
        "oracle.json",
        &json!({
            "mode": 64,
            "regs": regs,
            "code": hex,
            "memory": [{"address": format!("{SCRATCH_BASE:#x}"), "bytes": scratch}]
        }),
        &["--memory-output", "all"],
    );
    assert_eq!(out["end"]["reason"], "completed");
    for (n, name) in names.iter().enumerate() {
        assert_eq!(reg(&out, name), native.state.gpr[n], "{name}");
    }
    assert_eq!(reg(&out, "rip"), CODE_BASE + native.rip_offset);
    // Status flags, less the ones the snippet leaves undefined.
    let (undefined, _) = opsvisor_oracle::compare::undefined_flags(&code);
    let mask = opsvisor_oracle::compare::COMPARED_FLAGS & !undefined;
    assert_eq!(reg(&out, "rflags") & mask, native.state.rflags & mask);
    let bytes: String = native
        .state
        .scratch
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        out["memory"][0]["bytes"].as_str().map(str::len),
        Some(2 * SCRATCH_SIZE)
    );
    assert_eq!(out["memory"][0]["bytes"], bytes.as_str());
}

/// `--batch`: one state per line in, one result per line out, in order, from one
/// process; a bad line gives an error line and the rest run; blank lines give nothing.
#[test]
fn batch_mode_answers_each_line() {
    let states = [
        r#"{"mode":64,"regs":{"rip":"0x1000","rax":1},"code":"48ffc0"}"#,
        "",
        r#"{"mode":64,"regs":{"rqx":1}}"#,
        r#"{"mode":32,"regs":{"eip":"0x1000"},"code":"0f0b"}"#,
        "not json",
        r#"{"mode":16,"regs":{"ip":"0x100","ax":"0x41"},"code":"40f4"}"#,
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_opsvisor"))
        .args(["exec", "--batch"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        for s in states {
            writeln!(stdin, "{s}").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert_eq!(lines[0]["regs"]["rax"], "0x2");
    assert_eq!(lines[1]["line"], 3);
    assert!(lines[1]["error"]
        .as_str()
        .unwrap()
        .starts_with("regs.rqx: unknown register"));
    assert_eq!(lines[2]["end"]["name"], "#UD");
    assert_eq!(lines[3]["line"], 5);
    assert!(lines[3]["error"].as_str().unwrap().contains("invalid JSON"));
    assert_eq!(lines[4]["end"]["reason"], "hlt");
    assert_eq!(lines[4]["regs"]["eax"], "0x42");
    // The same state gives the same result in both modes.
    let single = exec(
        "batch-same.json",
        &serde_json::from_str(states[0]).unwrap(),
        &[],
    );
    assert_eq!(single, lines[0]);
}

/// CPL 3 states run in the environment of a user-mode process: IF set and IOPL 0 in
/// the flags PUSHF sees, POPF leaving IF and IOPL alone, CLI and port I/O raising #GP,
/// RFLAGS.AC enabling #AC (CR0.AM is set), INT n through a kernel gate raising #GP, INT3
/// and INT 0x80 going through (DPL-3 gates), the supervisor-only system area out of reach.
#[test]
fn cpl3_states_behave_as_a_user_process() {
    let user = |name: &str, mode: u32, code: &str, regs: Value| {
        let mut regs = regs;
        let ip = if mode == 64 { "rip" } else { "eip" };
        regs[ip] = json!("0x1000");
        exec(
            name,
            &json!({"mode": mode, "cpl": 3, "regs": regs, "code": code,
                    "memory": [{"address": "0x8000", "size": 4096}]}),
            &[],
        )
    };
    // pushfq; pop rax; push rax with IF clear and IOPL 3 set; popfq; pushfq; pop rbx
    let out = user(
        "cpl3-flags.json",
        64,
        "9c58 50 48b8 0232000000000000 4825ffdfffff 50 9d 9c 5b",
        json!({"rsp": "0x9000"}),
    );
    assert_eq!(out["end"]["reason"], "completed", "{out}");
    assert_eq!(out["cpl"], 3);
    assert_eq!(
        reg(&out, "rbx") & 0x3200,
        0x200,
        "IF stays set, IOPL stays 0"
    );
    // CLI and IN raise #GP(0).
    for (name, code) in [("cpl3-cli.json", "fa"), ("cpl3-in.json", "ec")] {
        let out = user(name, 32, code, json!({}));
        assert_eq!(
            out["end"],
            json!({"reason": "exception", "vector": 13, "name": "#GP", "error_code": "0x0"})
        );
    }
    // With IOPL 3 given, IN reaches the port.
    let out = user(
        "cpl3-iopl.json",
        32,
        "ec",
        json!({"eflags": "0x3202", "edx": "0x60"}),
    );
    assert_eq!(out["end"]["reason"], "io");
    // AC set: a misaligned load raises #AC(0).
    let out = user(
        "cpl3-ac.json",
        64,
        "8b042501800000",
        json!({"rflags": "0x40202"}),
    );
    assert_eq!(
        out["end"],
        json!({"reason": "exception", "vector": 17, "name": "#AC", "error_code": "0x0"})
    );
    // INT 0x21: #GP with the IDT vector in the error code; INT3 and INT 0x80 go through.
    let out = user("cpl3-int.json", 64, "cd21", json!({}));
    assert_eq!(out["end"]["error_code"], "0x10a");
    let out = user("cpl3-int3.json", 64, "cc", json!({}));
    assert_eq!(out["end"]["name"], "#BP");
    assert_eq!(reg(&out, "rip"), 0x1001);
    let out = user("cpl3-int80.json", 32, "cd80", json!({}));
    assert_eq!(out["end"], json!({"reason": "interrupt", "vector": 128}));
    // The system area (the top 2 GiB in mode 64) is supervisor-only.
    let out = user(
        "cpl3-sys.json",
        64,
        "8b00",
        json!({"rax": "0xffffffff80000000"}),
    );
    assert_eq!(out["end"]["vector"], 14);
    assert_eq!(out["end"]["error_code"], "0x5", "present, user, read");
}
