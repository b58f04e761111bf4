//! The command line: bad input gives a clear message and a non-zero exit, never a panic.
mod common;
use common::{check_run_dir, output_of, tigel_command};

fn tigel(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = tigel_command();
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    output_of(&mut c)
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

/// `tigel train gpt` end to end on a tiny model: JSON result, run directory files, sample, eval, resume,
/// and the refusals (an occupied --out, an empty file, a zero size, a checkpoint of another kind).
#[test]
fn gpt_train_sample_eval_resume() {
    let dir = std::env::temp_dir().join(format!("tigel-cli-gpt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let text = dir.join("text.txt");
    std::fs::write(&text, "In the beginning was the word, and the word was with the text.\n".repeat(60)).unwrap();
    let run = dir.join("run");
    let (t, r) = (text.to_str().unwrap(), run.to_str().unwrap());
    let small = ["--layers", "1", "--heads", "2", "--width", "16", "--context", "16", "--batch", "2"];
    let mut args = vec!["--backend", "cpu", "train", "gpt", "--data", t, "--steps", "20", "--eval-every", "10"];
    args.extend(["--log-every", "5"]);
    args.extend(small);
    args.extend(["--out", r, "--json"]);
    let (code, out, err) = tigel(&args, &[]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).expect("one JSON line");
    assert_eq!(v["steps"], 20);
    assert_eq!(v["backend"], "cpu");
    for k in ["train_loss", "val_bits_per_char", "tokens_per_s", "planned_peak_bytes"] {
        assert!(v[k].as_f64().is_some_and(|x| x.is_finite() && x > 0.0), "{k}: {v}");
    }
    for f in ["checkpoint.safetensors", "config.json", "metrics.jsonl"] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    // metrics.jsonl: a training line every --log-every steps, an evaluation line at each evaluation;
    // the pictures beside it (sample pictures at least 256 pixels wide).
    let lines = check_run_dir(&run, &[10, 20], &[5, 10, 15, 20], &["loss.png"]);
    assert!(lines.iter().filter(|l| l["kind"] == "train").all(|l| l["lr"].as_f64().is_some_and(|x| x > 0.0)
        && l["tokens_per_s"].as_f64().is_some_and(|x| x > 0.0)
        && l["train_bits_per_char"].as_f64().is_some_and(f64::is_finite)));
    assert!(lines.iter().filter(|l| l["kind"] == "eval").all(|l| l["val_bits_per_char"].as_f64().is_some()));

    let (code, out, err) =
        tigel(&["--backend", "cpu", "sample", "gpt", "--checkpoint", r, "--prompt", "In the", "--tokens", "12"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("In the") && out.len() >= "In the".len() + 12, "{out:?}");
    let (code, out, err) = tigel(&["--backend", "cpu", "eval", "gpt", "--checkpoint", r, "--json"], &[]);
    assert_eq!(code, 0, "{err}");
    let e: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!((e["val_bits_per_char"].as_f64().unwrap() - v["val_bits_per_char"].as_f64().unwrap()).abs() < 1e-9);

    // The run directory is taken: refused, and the checkpoint is untouched.
    let before = std::fs::read(run.join("checkpoint.safetensors")).unwrap();
    assert_clean_failure(&args, &[], "already holds a checkpoint");
    assert_eq!(before, std::fs::read(run.join("checkpoint.safetensors")).unwrap());
    // Resuming continues the step count.
    let (code, out, err) = tigel(
        &[
            "--backend",
            "cpu",
            "train",
            "gpt",
            "--data",
            t,
            "--steps",
            "10",
            "--eval-every",
            "10",
            "--resume",
            r,
            "--json",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(v["steps"], 30);

    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    assert_clean_failure(&["--backend", "cpu", "train", "gpt", "--data", empty.to_str().unwrap()], &[], "empty");
    assert_clean_failure(&["--backend", "cpu", "train", "gpt", "--data", t, "--layers", "0"], &[], "--layers");
    assert_clean_failure(&["--backend", "cpu", "train", "gpt", "--data", t, "--context", "100000"], &[], "too short");
    assert_clean_failure(
        &["--backend", "cpu", "sample", "gpt", "--checkpoint", dir.join("nope").to_str().unwrap()],
        &[],
        "nope",
    );
    std::fs::remove_dir_all(&dir).ok();
}
