//! Inputs that used to panic, abort or be ignored, and the faults a run directory must survive: each bad
//! input gives a non-zero exit and a message naming the argument, never "panicked"; a run directory is
//! locked, cleaned of stale temporary files, consistent after a crash, and saved on SIGTERM.
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;
use common::{output_of, tigel_command};

use tigel::checkpoint::Checkpoint;

fn tigel_in(dir: &Path, args: &[&str]) -> (i32, String, String) {
    output_of(tigel_command().current_dir(dir).args(["--backend", "cpu"]).args(args))
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tigel-cli-errors-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs tigel in `dir` and checks it fails cleanly with a message holding every one of `needles`.
fn refused(dir: &Path, args: &[&str], needles: &[&str]) {
    let (code, _, err) = tigel_in(dir, args);
    assert_ne!(code, 0, "tigel {args:?} should fail:\n{err}");
    assert!(!err.contains("panicked"), "tigel {args:?} panicked:\n{err}");
    for n in needles {
        assert!(err.contains(n), "tigel {args:?}: stderr should mention `{n}`:\n{err}");
    }
}

/// As [`refused`], and the message holds none of `absent` (a wrong command or flag named).
fn refused_without(dir: &Path, args: &[&str], needles: &[&str], absent: &[&str]) {
    refused(dir, args, needles);
    let (_, _, err) = tigel_in(dir, args);
    for a in absent {
        assert!(!err.contains(a), "tigel {args:?}: stderr should not mention `{a}`:\n{err}");
    }
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let (code, out, err) = tigel_in(dir, args);
    assert_eq!(code, 0, "tigel {args:?} failed:\n{err}");
    out
}

const TINY_GPT: &[&str] = &[
    "train",
    "gpt",
    "--layers",
    "1",
    "--width",
    "16",
    "--heads",
    "2",
    "--context",
    "16",
    "--batch",
    "2",
    "--eval-windows",
    "2",
    "--sample-tokens",
    "0",
];

fn train_tiny_gpt(dir: &Path, out: &str, steps: &str, extra: &[&str]) {
    let mut args = TINY_GPT.to_vec();
    args.extend(["--steps", steps, "--eval-every", "10", "--out", out]);
    args.extend(extra);
    ok(dir, &args);
}

/// The steps of the evaluation lines of a run's metrics.jsonl, in order.
fn steps_in_metrics(run: &Path) -> Vec<u64> {
    steps_of_kind(run, "eval")
}

/// The steps of a run's metrics.jsonl lines of one kind ("train" or "eval"), in order.
fn steps_of_kind(run: &Path, kind: &str) -> Vec<u64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == kind)
        .map(|v| v["step"].as_u64().unwrap())
        .collect()
}

/// Huge but valid numbers: refused before anything is allocated, naming the argument.
#[test]
fn huge_sizes_are_refused() {
    let d = tmp("sizes");
    let max = "18446744073709551615";
    train_tiny_gpt(&d, "g", "2", &[]);
    ok(
        &d,
        &[
            "train",
            "gan",
            "--data",
            "ring8",
            "--steps",
            "2",
            "--eval-every",
            "2",
            "--batch",
            "8",
            "--width",
            "8",
            "--out",
            "gan",
        ],
    );
    refused(&d, &["sample", "gpt", "--checkpoint", "g", "--tokens", max], &["--tokens"]);
    refused(&d, &["sample", "gpt", "--checkpoint", "g", "--tokens", "1000000000000"], &["--tokens"]);
    refused(&d, &["train", "gpt", "--steps", "1", "--sample-tokens", max, "--out", "x"], &["--sample-tokens"]);
    refused(&d, &["train", "gpt", "--steps", "1", "--layers", "1000000000", "--out", "x"], &["--layers 1000000000"]);
    refused(&d, &["sample", "gan", "--checkpoint", "gan", "--n", max, "--out", "s.png"], &["--n"]);
    refused_without(&d, &["eval", "gan", "--checkpoint", "gan", "--n", max], &["--n", "eval gan"], &["sample gan"]);
    // Under the 2^31 values but more samples than the metrics can score against the data in memory.
    refused(&d, &["eval", "gan", "--checkpoint", "gan", "--n", "2000000"], &["--n 2000000", "eval gan"]);
    refused(&d, &["train", "gan", "--data", "ring8", "--width", "10000000", "--out", "x"], &["--width 10000000"]);
    refused_without(
        &d,
        &["train", "gan", "--data", "ring8", "--width", "1000000000000", "--out", "x"],
        &["--width 1000000000000"],
        &["rng::normal"],
    );
    refused(&d, &["train", "gan", "--data", "ring8", "--z-dim", "1000000000000", "--out", "x"], &["--z-dim"]);
    refused_without(&d, &["train", "gan", "--data", "ring8", "--lr=-0.1", "--out", "x"], &["--lr must"], &["--lr-d"]);
    refused(&d, &["train", "gpt", "--steps", "1", "--batch", max, "--out", "x"], &["--batch"]);

    // A checkpoint whose stored config is huge, and one whose step is near the counter's limit.
    let ck = Checkpoint::load(&d.join("g")).unwrap();
    let mut big = ck.clone();
    big.config["model"]["layers"] = serde_json::json!(1_000_000_000_000u64);
    std::fs::create_dir_all(d.join("big")).unwrap();
    big.save(&d.join("big/checkpoint.safetensors")).unwrap();
    refused(&d, &["sample", "gpt", "--checkpoint", "big", "--tokens", "5"], &["`layers` is 1000000000000"]);
    let mut late = ck.clone();
    late.step = 4_294_967_290;
    std::fs::create_dir_all(d.join("late")).unwrap();
    late.save(&d.join("late/checkpoint.safetensors")).unwrap();
    refused(&d, &["train", "gpt", "--resume", "late", "--steps", "10"], &["step counter"]);
    let gan = Checkpoint::load(&d.join("gan")).unwrap();
    let mut wide = gan.clone();
    wide.config["model"]["z_dim"] = serde_json::json!(1_000_000_000_000u64);
    std::fs::create_dir_all(d.join("widegan")).unwrap();
    wide.save(&d.join("widegan/checkpoint.safetensors")).unwrap();
    refused_without(
        &d,
        &["sample", "gan", "--checkpoint", "widegan", "--out", "s.png"],
        &["`z_dim` is 1000000000000"],
        &["rng::normal"],
    );
    let _ = std::fs::remove_dir_all(&d);
}

/// An .npy file (format 1.0) of `descr` values with `shape`, from their little-endian bytes.
fn write_npy(path: &Path, descr: &str, shape: &[usize], data: &[u8]) {
    let dims: String = shape.iter().map(|d| format!("{d},")).collect();
    let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({dims}), }}");
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(' ');
    }
    h.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((h.len() as u16).to_le_bytes());
    bytes.extend(h.as_bytes());
    bytes.extend(data);
    std::fs::write(path, bytes).unwrap();
}

/// A class label of 4e9 (in a labels file, as `--label`, as a checkpoint's class count) is refused naming
/// the file, the flag or the key, never with a message from deep inside ("rng::normal: shape ...").
#[test]
fn huge_labels_are_refused() {
    let d = tmp("labels");
    let pixels: Vec<u8> = (0..8 * 64).flat_map(|i| (((i * 7) % 13) as f32 / 13.0 - 0.5).to_le_bytes()).collect();
    let labels =
        |last: i64| -> Vec<u8> { (0..8i64).flat_map(|i| if i == 7 { last } else { i % 4 }.to_le_bytes()).collect() };
    write_npy(&d.join("imgs.npy"), "<f4", &[8, 1, 8, 8], &pixels);
    write_npy(&d.join("imgs_labels.npy"), "<i8", &[8], &labels(3));
    write_npy(&d.join("big.npy"), "<f4", &[8, 1, 8, 8], &pixels);
    write_npy(&d.join("big_labels.npy"), "<i8", &[8], &labels(4_000_000_000));
    let never = ["rng::normal", "panicked"];
    for kind in ["gan", "diffusion"] {
        let args = ["train", kind, "--data", "big.npy", "--conditional", "--steps", "2", "--out", "x"];
        let args = if kind == "gan" { [&args[..4], &args[5..]].concat() } else { args.to_vec() };
        refused_without(&d, &args, &["big_labels.npy", "label 4000000000", "below"], &never);
    }
    assert!(!d.join("x").exists(), "nothing was written");
    ok(
        &d,
        &["train", "diffusion", "--data", "imgs.npy", "--conditional", "--steps", "2", "--batch", "4", "--out", "cd"],
    );
    refused_without(
        &d,
        &["sample", "diffusion", "--checkpoint", "cd", "--label", "4000000000", "--out", "s.png"],
        &["--label", "4000000000", "4 classes"],
        &never,
    );
    refused(&d, &["eval", "diffusion", "--checkpoint", "cd", "--n", "2000000"], &["--n 2000000", "eval diffusion"]);
    let mut ck = Checkpoint::load(&d.join("cd")).unwrap();
    ck.config["model"]["num_classes"] = serde_json::json!(4_000_000_000u64);
    std::fs::create_dir_all(d.join("many")).unwrap();
    ck.save(&d.join("many/checkpoint.safetensors")).unwrap();
    refused_without(&d, &["sample", "diffusion", "--checkpoint", "many", "--out", "s.png"], &["4000000000"], &never);
    let _ = std::fs::remove_dir_all(&d);
}

/// Flags that used to be accepted and ignored.
#[test]
fn ignored_flags_are_refused() {
    let d = tmp("flags");
    ok(
        &d,
        &[
            "train",
            "diffusion",
            "--data",
            "ring8",
            "--steps",
            "2",
            "--save-every",
            "2",
            "--batch",
            "8",
            "--hidden",
            "8",
            "--out",
            "dif",
        ],
    );
    let resume = ["train", "diffusion", "--resume", "dif", "--steps", "1"];
    for (flag, needle) in [
        (&["--timesteps", "10"][..], "--timesteps 10"),
        (&["--prediction", "v"], "--prediction v"),
        (&["--hidden", "32"], "--hidden 32"),
        (&["--layers", "5"], "--layers 5"),
        (&["--schedule", "linear"], "--schedule linear"),
        (&["--conditional"], "--conditional"),
        (&["--base", "8"], "--base 8"),
    ] {
        let mut args = resume.to_vec();
        args.extend(flag);
        refused(&d, &args, &[needle]);
    }
    for clip in ["NaN", "-1", "inf"] {
        let c = format!("--clip={clip}");
        refused(&d, &["train", "gpt", "--steps", "1", &c, "--out", "x"], &["--clip"]);
        refused(&d, &["train", "diffusion", "--data", "ring8", "--steps", "1", &c, "--out", "x"], &["--clip"]);
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// Image sets the models cannot use are refused when loaded, with the real minimum and channel counts.
#[test]
fn bad_image_sets_are_refused_at_load() {
    let d = tmp("images");
    let write = |name: &str, n: usize, c: usize| {
        tigel::data::images::write_npy_f32(&d.join(name), &vec![0.0; n * c * 28 * 28], &[n, c, 28, 28]).unwrap();
    };
    write("three.npy", 3, 1);
    write("two_ch.npy", 8, 2);
    write("five_ch.npy", 8, 5);
    refused(&d, &["train", "diffusion", "--data", "three.npy", "--out", "x"], &["3 image(s)", "at least 5"]);
    refused(&d, &["train", "gan", "--data", "three.npy", "--out", "x"], &["at least 5"]);
    refused(&d, &["train", "gan", "--data", "two_ch.npy", "--out", "x"], &["2 channels"]);
    refused(&d, &["train", "diffusion", "--data", "five_ch.npy", "--out", "x"], &["5 channels"]);
    assert!(!d.join("x").exists(), "nothing was written");
    let _ = std::fs::remove_dir_all(&d);
}

/// Data paths are stored absolute (eval works from another directory); a stored path that is gone names
/// the checkpoint.
#[test]
fn stored_data_paths() {
    let d = tmp("paths");
    std::fs::write(d.join("text.txt"), "hello tigel, a small corpus of text to learn. ".repeat(40)).unwrap();
    train_tiny_gpt(&d, "g", "2", &["--data", "text.txt"]);
    let elsewhere = tmp("paths-elsewhere");
    let run = d.join("g");
    ok(&elsewhere, &["eval", "gpt", "--checkpoint", run.to_str().unwrap()]);
    std::fs::remove_file(d.join("text.txt")).unwrap();
    refused(&elsewhere, &["eval", "gpt", "--checkpoint", run.to_str().unwrap()], &["text.txt", "checkpoint", "--data"]);
    let _ = std::fs::remove_dir_all(&d);
    let _ = std::fs::remove_dir_all(&elsewhere);
}

/// A live lock refuses a second run; a dead owner's lock is taken over; stale temporary files go.
#[test]
fn lock_and_stale_temps() {
    let d = tmp("lock");
    std::fs::create_dir_all(d.join("r")).unwrap();
    // This test process is alive: its pid holds the lock.
    std::fs::write(d.join("r/.lock"), format!("{}\n", std::process::id())).unwrap();
    refused(&d, &[TINY_GPT, &["--steps", "2", "--out", "r"]].concat(), &["in use", "pid"]);
    // A process that has exited.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    std::fs::write(d.join("r/.lock"), format!("{dead}\n")).unwrap();
    for t in [".checkpoint.safetensors.999.0.tmp", ".checkpoint.safetensors.tmp-abc", ".config.json.7.1.tmp"] {
        std::fs::write(d.join("r").join(t), b"partial").unwrap();
    }
    train_tiny_gpt(&d, "r", "2", &[]);
    let left: Vec<String> =
        std::fs::read_dir(d.join("r")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    assert!(left.iter().all(|n| !n.starts_with('.')), "stale files or the lock are left: {left:?}");
    let _ = std::fs::remove_dir_all(&d);
}

/// After a crash between writing metrics and saving, a resume does not repeat steps in metrics.jsonl,
/// and config.json describes the checkpoint's step.
#[test]
fn resume_after_crash_does_not_duplicate_steps() {
    let d = tmp("crash");
    train_tiny_gpt(&d, "r", "20", &[]);
    assert_eq!(steps_in_metrics(&d.join("r")), [10, 20]);
    // As if a run resumed from step 20 wrote its line for step 30 and died before saving.
    let mut m = std::fs::read_to_string(d.join("r/metrics.jsonl")).unwrap();
    m.push_str(
        "{\"kind\":\"train\",\"step\":30,\"loss\":1.0}\n{\"kind\":\"eval\",\"step\":30,\"val_bits_per_char\":1.0}\n",
    );
    std::fs::write(d.join("r/metrics.jsonl"), m).unwrap();
    ok(&d, &[TINY_GPT, &["--steps", "20", "--eval-every", "10", "--resume", "r"]].concat());
    assert_eq!(steps_in_metrics(&d.join("r")), [10, 20, 30, 40]);
    // Training lines come at the last step of each run (both shorter than --log-every), never twice.
    assert_eq!(steps_of_kind(&d.join("r"), "train"), [20, 40]);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("r/config.json")).unwrap()).unwrap();
    assert_eq!(config["start_step"], 20);
    assert_eq!(Checkpoint::load(&d.join("r")).unwrap().step, 40);
    let _ = std::fs::remove_dir_all(&d);
}

/// Starts a long tiny-GPT run in `name`, sends `signals` (each `kill` argument, in turn, at once) once
/// training is under way, and checks that the run finished its step, saved a checkpoint, released its
/// lock and exited with 130.
#[cfg(unix)]
fn signalled_run_saves(name: &str, signals: &[&str]) {
    let d = tmp(name);
    let mut args = vec!["--backend", "cpu"];
    args.extend(TINY_GPT);
    args.extend(["--steps", "1000000", "--eval-every", "1000000", "--out", "r"]);
    let mut child =
        tigel_command().current_dir(&d).args(&args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    // "writing DIR" is printed just before training starts (the handler is in place by then).
    while !seen.contains("writing") {
        let mut line = String::new();
        assert!(err.read_line(&mut line).unwrap() > 0, "tigel ended early:\n{seen}");
        seen.push_str(&line);
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let pid = child.id().to_string();
    for sig in signals {
        assert!(Command::new("kill").args([*sig, &pid]).status().unwrap().success());
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "stderr:\n{seen}{rest}");
    assert!(rest.contains("interrupted after step"), "{rest}");
    assert!(!rest.contains("panicked"), "{rest}");
    let ck = Checkpoint::load(&d.join("r")).unwrap();
    assert!(ck.step > 0 && ck.step < 1_000_000, "step {}", ck.step);
    assert_eq!(steps_in_metrics(&d.join("r")), [ck.step]);
    assert!(!d.join("r/.lock").exists(), "the lock is released");
    let _ = std::fs::remove_dir_all(&d);
}

/// SIGTERM finishes the step, saves a checkpoint and exits with 130.
#[cfg(unix)]
#[test]
fn sigterm_saves_and_exits_130() {
    signalled_run_saves("sigterm", &["-TERM"]);
}

/// Two SIGINTs at once (as `timeout -s INT` sends them, to the process and to its group) are one request:
/// the run finishes its step, saves and exits with 130.
#[cfg(unix)]
#[test]
fn sigint_twice_at_once_saves() {
    signalled_run_saves("sigint-once", &["-INT", "-INT"]);
}

/// A second Ctrl-C exits at once (130, no checkpoint saved), while the first is still finishing its step.
#[cfg(unix)]
#[test]
fn second_sigint_exits_at_once() {
    let d = tmp("sigint2");
    // A long evaluation (the one the first Ctrl-C asks for: every held-out window of 8 MB of text) gives
    // the second time to land during it.
    let text: String = (0..400_000).map(|i| format!("line {i} of a corpus, {}.\n", i % 7)).collect();
    std::fs::write(d.join("big.txt"), &text.as_bytes()[..8 << 20]).unwrap();
    let mut args = vec!["--backend", "cpu"];
    args.extend(TINY_GPT);
    let w = args.iter().position(|&a| a == "--eval-windows").unwrap();
    args[w + 1] = "100000000";
    args.extend(["--data", "big.txt", "--steps", "1000000", "--eval-every", "1000000", "--out", "r"]);
    let mut child =
        tigel_command().current_dir(&d).args(&args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut wait_for = |needle: &str, seen: &mut String| {
        while !seen.contains(needle) {
            let mut line = String::new();
            assert!(err.read_line(&mut line).unwrap() > 0, "tigel ended early:\n{seen}");
            seen.push_str(&line);
        }
    };
    wait_for("writing", &mut seen);
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let int = || assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    int();
    wait_for("again to quit at once", &mut seen);
    // Later than the window in which a repeated signal is the same request (cmd::signal).
    std::thread::sleep(std::time::Duration::from_millis(600));
    let asked = std::time::Instant::now();
    int();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "stderr:\n{seen}{rest}");
    assert!(asked.elapsed().as_secs() < 20, "the second Ctrl-C took {:?}", asked.elapsed());
    assert!(!rest.contains("interrupted after step"), "the second Ctrl-C should not wait for the save:\n{rest}");
    assert!(!rest.contains("panicked"), "{rest}");
    assert!(!d.join("r/checkpoint.safetensors").exists(), "no checkpoint is saved after a second Ctrl-C");
    let _ = std::fs::remove_dir_all(&d);
}
