//! What a run directory keeps and what a resume does, through the command line on a tiny GPT: the
//! latest, the best and `--keep N` periodic checkpoints, trimmed with the metrics when a run resumes
//! from an earlier checkpoint; `--resume-schedule continue|restart` read back from the learning rates of
//! metrics.jsonl's per-step lines; the gradient norm in those lines and in the plain progress lines.
use std::path::{Path, PathBuf};
mod common;
use common::{output_of, tigel_command};

use serde_json::Value;
use tigel::checkpoint::Checkpoint;
use tigel::optim::Schedule;

fn tigel_in(dir: &Path, args: &[&str]) -> (i32, String, String) {
    output_of(tigel_command().current_dir(dir).args(["--backend", "cpu"]).args(args))
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let (code, out, err) = tigel_in(dir, args);
    assert_eq!(code, 0, "tigel {args:?} failed:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    out
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tigel-cli-runs-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("text.txt"), "In the beginning was the word, and the word was with the text.\n".repeat(60))
        .unwrap();
    d
}

/// A tiny GPT on text.txt, a step's learning rate logged every step.
const TINY: &[&str] = &[
    "train",
    "gpt",
    "--data",
    "text.txt",
    "--layers",
    "1",
    "--heads",
    "2",
    "--width",
    "16",
    "--context",
    "16",
    "--batch",
    "2",
    "--lr",
    "0.01",
    "--warmup",
    "4",
    "--log-every",
    "1",
    "--eval-every",
    "5",
    "--eval-windows",
    "8",
    "--sample-tokens",
    "0",
];

fn metrics(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn of_kind<'a>(lines: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    lines.iter().filter(move |l| l["kind"] == kind)
}

/// The learning rate of each training line from step `from` on, against the default schedule (peak
/// 0.01, warmup 4, a linear decay to 0 at the end) of a `total`-step run at the line's 0-based step.
#[track_caller]
fn assert_lrs(lines: &[Value], from: u64, total: u32) {
    let s = Schedule::Linear { lr: 0.01, warmup: 4, total, min_lr: 0.0 };
    let mut seen = 0;
    for l in of_kind(lines, "train").filter(|l| l["step"].as_u64().unwrap() >= from) {
        let step = l["step"].as_u64().unwrap() as u32;
        let want = s.lr_at(step - 1);
        assert_eq!(l["lr"].as_f64().unwrap() as f32, want, "step {step}: {l}");
        seen += 1;
    }
    assert!(seen > 0);
}

/// The periodic checkpoints in `run`, by step.
fn periodic(run: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(run)
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            n.strip_prefix("checkpoint-")?.strip_suffix(".safetensors")?.parse().ok()
        })
        .collect();
    v.sort_unstable();
    v
}

/// best.safetensors holds the step of the last evaluation line marked `best`, whose held-out figure no
/// later evaluation beats. `strict`: the marks are exactly the improvements on every earlier evaluation
/// (not so after a resume from an earlier checkpoint dropped a best checkpoint past it: the next
/// evaluation is then the best kept).
#[track_caller]
fn assert_best(run: &Path, strict: bool) {
    let lines = metrics(run);
    let mut low = f64::INFINITY;
    let mut last_best = None;
    for l in of_kind(&lines, "eval") {
        let v = l["val_bits_per_char"].as_f64().unwrap();
        if strict {
            assert_eq!(l["best"].as_bool(), Some(v < low), "{l}");
        }
        low = low.min(v);
        if l["best"] == true {
            last_best = Some((l["step"].as_u64().unwrap(), v));
        }
    }
    let (step, v) = last_best.expect("an evaluation marked best");
    assert_eq!(Checkpoint::load(&run.join("best.safetensors")).unwrap().step, step);
    let after = of_kind(&lines, "eval").filter(|l| l["step"].as_u64().unwrap() > step);
    assert!(
        after.into_iter().all(|l| l["val_bits_per_char"].as_f64().unwrap() >= v),
        "a later evaluation beat the best"
    );
}

#[test]
fn retention_resume_schedules_and_gradient_norms() {
    let d = tmp("keep");
    let run = d.join("r");
    let out = ok(&d, &[TINY, &["--steps", "20", "--keep", "2", "--out", "r"]].concat());
    // Latest, best, and the last two evaluations' checkpoints.
    assert_eq!(Checkpoint::load(&run).unwrap().step, 20);
    assert_eq!(periodic(&run), [15, 20]);
    assert_eq!(Checkpoint::load(&run.join("checkpoint-000015.safetensors")).unwrap().step, 15);
    assert_best(&run, true);
    let lines = metrics(&run);
    assert_eq!(of_kind(&lines, "train").count(), 20);
    assert_lrs(&lines, 1, 20);
    // The gradient norm of every logged step, and in the plain progress lines (stdout is not a terminal).
    assert!(of_kind(&lines, "train").all(|l| l["grad_norm"].as_f64().is_some_and(|g| g.is_finite() && g > 0.0)));
    assert!(out.lines().any(|l| l.starts_with("step 20 ") && l.contains("grad_norm ")), "{out}");

    // sample and eval take the best checkpoint by its path.
    let best = Checkpoint::load(&run.join("best.safetensors")).unwrap().step;
    let text = ok(&d, &["sample", "gpt", "--checkpoint", "r/best.safetensors", "--prompt", "In", "--tokens", "5"]);
    assert!(text.starts_with("In"), "{text}");
    let e: Value =
        serde_json::from_str(ok(&d, &["eval", "gpt", "--checkpoint", "r/best.safetensors", "--json"]).trim()).unwrap();
    assert_eq!(e["step"], best);

    // continue: the step counter goes on and the schedule is that of a 30-step run, written back into r.
    let first = of_kind(&lines, "train").next().unwrap()["train_bits_per_char"].as_f64().unwrap();
    ok(&d, &[TINY, &["--steps", "10", "--keep", "2", "--resume", "r"]].concat());
    assert_eq!(Checkpoint::load(&run).unwrap().step, 30);
    assert_eq!(periodic(&run), [25, 30]);
    let lines = metrics(&run);
    assert_eq!(of_kind(&lines, "train").count(), 30);
    assert_lrs(&lines, 21, 30);
    assert_best(&run, true);

    // restart: a new run from r's weights in a new directory, step 0, a new warmup and decay over its 10.
    ok(&d, &[TINY, &["--steps", "10", "--resume", "r", "--resume-schedule", "restart", "--out", "r2"]].concat());
    let r2 = d.join("r2");
    assert_eq!(Checkpoint::load(&r2).unwrap().step, 10);
    let lines2 = metrics(&r2);
    assert_eq!(
        of_kind(&lines2, "train").map(|l| l["step"].as_u64().unwrap()).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    assert_lrs(&lines2, 1, 10);
    // It starts from the trained weights, not from scratch.
    let restarted = of_kind(&lines2, "train").next().unwrap()["train_bits_per_char"].as_f64().unwrap();
    assert!(restarted < first - 0.5, "first loss of the restart {restarted}, of the fresh run {first}");
    let config: Value = serde_json::from_str(&std::fs::read_to_string(r2.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["start_step"], 0);
    assert_eq!(config["resumed_from"], "r");
    // A restart never writes into the run it resumes.
    let (code, _, err) = tigel_in(
        &d,
        &[TINY, &["--steps", "5", "--resume", "r", "--resume-schedule", "restart", "--out", "r"]].concat(),
    );
    assert!(code != 0 && err.contains("already holds a checkpoint"), "{err}");
    let (code, _, err) =
        tigel_in(&d, &[TINY, &["--steps", "5", "--resume", "r", "--resume-schedule", "again"]].concat());
    assert!(code != 0 && err.contains("continue or restart") && !err.contains("panicked"), "{err}");

    // Resuming from an earlier checkpoint drops what came after it: metrics lines, periodic checkpoints
    // and a best checkpoint past step 25; the run then goes on to step 30 again.
    ok(&d, &[TINY, &["--steps", "5", "--resume", "r/checkpoint-000025.safetensors"]].concat());
    assert_eq!(Checkpoint::load(&run).unwrap().step, 30);
    assert_eq!(periodic(&run), [25]);
    let lines = metrics(&run);
    let evals: Vec<u64> = of_kind(&lines, "eval").map(|l| l["step"].as_u64().unwrap()).collect();
    assert_eq!(evals, [5, 10, 15, 20, 25, 30]);
    assert_eq!(of_kind(&lines, "train").count(), 30);
    assert_best(&run, false);
    let left: Vec<String> =
        std::fs::read_dir(&run).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    assert!(left.iter().all(|n| !n.starts_with('.')), "temporary files or the lock are left: {left:?}");
    let _ = std::fs::remove_dir_all(&d);
}
