//! The command line: bad input gives a clear message and a non-zero exit, never a panic.
use std::process::Command;

fn tigel(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tigel"));
    c.args(args).env_remove("TIGEL_BACKEND").env_remove("TIGEL_ADAPTER");
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().expect("run tigel");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

fn assert_clean_failure(args: &[&str], env: &[(&str, &str)], needle: &str) {
    let (code, _, err) = tigel(args, env);
    assert_ne!(code, 0, "tigel {args:?} should fail");
    assert!(err.contains(needle), "tigel {args:?}: stderr should mention `{needle}`:\n{err}");
    assert!(!err.contains("panicked"), "tigel {args:?} panicked:\n{err}");
}

#[test]
fn unknown_backend() {
    assert_clean_failure(&["--backend", "vulcan", "info"], &[], "unknown backend `vulcan`");
    assert_clean_failure(&["info"], &[("TIGEL_BACKEND", "tpu")], "unknown backend `tpu`");
}

#[test]
fn adapter_that_is_not_there() {
    assert_clean_failure(&["--backend", "vulkan", "info"], &[("TIGEL_ADAPTER", "no-such-gpu")], "no-such-gpu");
}

#[test]
fn unknown_command_and_bad_numbers() {
    assert_clean_failure(&["trian"], &[], "trian");
    assert_clean_failure(&["demo", "--size", "-3"], &[], "-3");
    assert_clean_failure(&["--backend", "cpu", "demo", "--size", "0"], &[], "--size 0");
}

#[test]
fn unwritable_json_path() {
    assert_clean_failure(&["--backend", "cpu", "bench", "train", "--json", "/proc/tigel/x.json"], &[], "/proc/tigel");
}

#[test]
fn info_json_is_valid() {
    let (code, out, _) = tigel(&["--backend", "cpu", "info", "--json"], &[]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
    assert_eq!(v["chosen"]["backend"], "cpu");
    assert!(v["adapters"].is_array());
}
