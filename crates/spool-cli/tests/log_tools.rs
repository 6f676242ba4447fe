//! `spool log verify` and `spool log dump` run as a user would run them.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../spool-log/tests/fixtures/v1")
}

fn copy_fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

fn spool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spool"))
        .args(args)
        .output()
        .expect("run spool")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

const ACTIVE: &str = "00000000000000000117.log";
const SEALED: &str = "00000000000000000039.log";

#[test]
fn verify_passes_a_sound_log() {
    let dir = copy_fixture();
    let out = spool(&["log", "verify", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("ok: 4 segments, 43 frames"));
}

#[test]
fn verify_fails_a_tail_cut_mid_frame_and_names_where() {
    let dir = copy_fixture();
    let active = dir.path().join(ACTIVE);
    let len = std::fs::metadata(&active).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&active)
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    let out = spool(&["log", "verify", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "{ACTIVE} at byte 64: the file ends inside a frame (100 bytes missing)"
        )),
        "{text}"
    );
    assert!(text.contains("FAILED: 1 problem(s) found"));
}

#[test]
fn verify_fails_a_flipped_bit_and_names_segment_and_position() {
    let dir = copy_fixture();
    let sealed = dir.path().join(SEALED);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&sealed)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, 2000).unwrap();
    file.write_all_at(&[byte[0] ^ 0x10], 2000).unwrap();
    let out = spool(&[
        "log",
        "verify",
        dir.path().to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(report["ok"], false);
    let problem = &report["problems"][0];
    assert!(problem["file"].as_str().unwrap().ends_with(SEALED));
    let position = problem["position"].as_u64().unwrap();
    assert!(
        position <= 2000 && 2000 - position < 400,
        "position {position}"
    );
    assert!(
        problem["problem"]
            .as_str()
            .unwrap()
            .contains("CRC mismatch")
    );
}

#[test]
fn dump_prints_frames_batches_and_records() {
    let out = spool(&[
        "log",
        "dump",
        fixture().to_str().unwrap(),
        "--records",
        "--values",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.contains("| position 64  membership  term 1  index 0  payload 8 bytes"));
    assert!(text.contains("offsets 117..=119  count 3"));
    assert!(text.contains("key \"key-39-2\""));
    assert_eq!(
        text.lines().filter(|l| l.starts_with("|   offset")).count(),
        120
    );

    let json = spool(&[
        "log",
        "dump",
        fixture().to_str().unwrap(),
        "--output",
        "json",
    ]);
    let frames: Vec<serde_json::Value> = stdout(&json)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(frames.len(), 43);
    assert_eq!(frames[42]["batch"]["last_offset"], 119);
}

#[test]
fn a_missing_directory_is_one_clear_sentence_and_exit_code_2() {
    let out = spool(&["log", "verify", "/nonexistent/spool-dir"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        "error: /nonexistent/spool-dir is not a directory"
    );
}
