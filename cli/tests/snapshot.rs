//! `opsvisor run --snapshot-at/--snapshot-out` and `--restore` end to end: a corpus guest
//! run straight through prints what the same guest saved at N instructions and then
//! restored prints, before and after (several N, with `--icount`); a run that saves goes
//! on unchanged; bad snapshot files and conflicting options get one error line naming
//! what is wrong, status 2.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn opsvisor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_opsvisor"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("the opsvisor binary runs")
}

fn scratch(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

fn one_error_line(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "stderr: {stderr}");
    assert!(stderr.contains(needle), "'{needle}' not in: {stderr}");
}

#[test]
fn a_restored_guest_prints_what_the_rest_of_the_run_printed() {
    let guest = opsvisor_corpus::image_path("apic_timer_periodic");
    let guest = guest.to_str().unwrap();
    let whole = opsvisor(&["run", "--icount", "--memory", "16M", guest]);
    assert_eq!(whole.status.code(), Some(1), "{whole:?}");
    for n in ["20000", "400000", "1500000"] {
        let snap = scratch(&format!("apic_timer_{n}.snap"));
        let snap = snap.to_str().unwrap();
        // Saving does not change the run.
        let saving = opsvisor(&[
            "run",
            "--icount",
            "--memory",
            "16M",
            "--snapshot-at",
            n,
            "--snapshot-out",
            snap,
            guest,
        ]);
        assert_eq!(saving.stdout, whole.stdout, "saving at {n}");
        assert_eq!(saving.status.code(), Some(1));
        // The part before, then the restored rest.
        let before = opsvisor(&[
            "run",
            "--icount",
            "--memory",
            "16M",
            "--snapshot-at",
            n,
            "--snapshot-out",
            snap,
            "--max-instructions",
            n,
            guest,
        ]);
        assert_eq!(before.status.code(), Some(8), "{before:?}");
        let after = opsvisor(&["run", "--restore", snap]);
        assert_eq!(after.status.code(), Some(1), "{after:?}");
        let mut joined = before.stdout.clone();
        joined.extend_from_slice(&after.stdout);
        assert_eq!(
            String::from_utf8_lossy(&joined),
            String::from_utf8_lossy(&whole.stdout),
            "restored at {n}"
        );
    }
}

#[test]
fn bad_snapshots_and_conflicting_options_are_refused() {
    let guest = opsvisor_corpus::image_path("hello");
    let snap = scratch("hello.snap");
    let snap_s = snap.to_str().unwrap();
    let out = opsvisor(&[
        "run",
        "--icount",
        "--memory",
        "8M",
        "--snapshot-at",
        "5000",
        "--snapshot-out",
        snap_s,
        "--max-instructions",
        "5000",
        guest.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(8), "{out:?}");
    one_error_line(
        &opsvisor(&["run", "--restore", snap_s, "--memory", "16M"]),
        "--memory 16 MiB (the snapshot's machine has 8 MiB)",
    );
    one_error_line(
        &opsvisor(&["run", "--restore", snap_s, "--smp", "2"]),
        "--smp 2",
    );
    one_error_line(
        &opsvisor(&["run", "--restore", snap_s, guest.to_str().unwrap()]),
        "--restore",
    );
    let bytes = std::fs::read(&snap).unwrap();
    let cut = scratch("cut.snap");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    one_error_line(
        &opsvisor(&["run", "--restore", cut.to_str().unwrap()]),
        "field 'length'",
    );
    let mut bad = bytes.clone();
    bad[8] = 9;
    let versioned = scratch("version.snap");
    std::fs::write(&versioned, &bad).unwrap();
    one_error_line(
        &opsvisor(&["run", "--restore", versioned.to_str().unwrap()]),
        "field 'version': version 9",
    );
    one_error_line(
        &opsvisor(&["run", "--snapshot-at", "10", guest.to_str().unwrap()]),
        "--snapshot-out",
    );
}
