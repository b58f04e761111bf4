//! Divergence is caught, never saved: the finiteness guard's kernel (CPU twin vs GPU on random inputs
//! with NaN and ±Inf), a `Trainer` whose loss or gradients go non-finite, and each regime through the
//! binary: a diverging run exits non-zero naming the step, writes no checkpoint and no metrics line for
//! it, and a diverging `--resume` leaves the good run's checkpoint byte-identical and still evaluable.
mod common;
use common::*;
use std::path::Path;
use tigel::graph::Graph;
use tigel::nn::Param;
use tigel::ops::elementwise::Unary;
use tigel::ops::optim as k;
use tigel::optim::{NonFinite, OptimizerKind, Schedule};
use tigel::train::{TrainConfig, Trainer};
use tigel::{Device, Tensor};

// ---------------------------------------------------------------------------------------------------
// The kernel: exact on both sides (integer results).

/// The flag words the guard should hold after checking `x` with a clear flag.
fn expected(x: &[f32], step: u32, what: u32, offset: u32, tag: u32) -> Vec<u32> {
    match x.iter().position(|v| !v.is_finite()) {
        Some(i) => vec![1, step + offset, what, tag + i as u32],
        None => vec![0; 4],
    }
}

fn guard_run(d: &Device, x: &[f32], step: u32, what: u32, offset: u32, tag: u32) -> Vec<u32> {
    let xt = Tensor::from_f32(d, &[x.len()], x).unwrap();
    let st = k::step_counter(d, step).unwrap();
    let flag = k::guard_flag(d).unwrap();
    k::guard_finite(d, &xt, x.len(), &st, &flag, what, offset, tag).unwrap();
    flag.to_u32(d).unwrap()
}

#[test]
fn guard_kernel_flags_nan_and_inf_on_cpu_and_gpu() {
    let cpu = cpu();
    let gpu = gpu();
    let mut rng = Rng::new(seed());
    for n in [1usize, 7, 256, 1000, 4099] {
        for bad in [None, Some(f32::NAN), Some(f32::INFINITY), Some(f32::NEG_INFINITY)] {
            let mut x = rng.vec(n, -1e30, 1e30);
            if let Some(b) = bad {
                // One or two bad values at random places: the lowest index is recorded.
                for _ in 0..1 + rng.below(2) {
                    x[rng.below(n)] = b;
                }
            }
            let (step, what, offset, tag) = (rng.below(1000) as u32, 1 + rng.below(3) as u32, 1, rng.below(50) as u32);
            let want = expected(&x, step, what, offset, tag);
            assert_eq!(guard_run(&cpu, &x, step, what, offset, tag), want, "cpu n={n} {bad:?}");
            if let Some(g) = &gpu {
                assert_eq!(guard_run(g, &x, step, what, offset, tag), want, "gpu n={n} {bad:?}");
            }
        }
    }
}

/// `clip_guard` (clip scale, loss guard and partial-sums guard in one dispatch) against `clip_scale`
/// and two `guard_finite`s on each device (clip words bit for bit: the same sum in the same order), and
/// the GPU against the CPU twin (flags exact, clip words at kernels_optim.rs's clip_scale tolerance).
#[test]
fn clip_guard_equals_clip_scale_and_two_guards() {
    let cpu = cpu();
    let gpu = gpu();
    let mut rng = Rng::new(seed());
    let run = |d: &Device, fused: bool, p: &[f32], loss: f32, step: u32, max_norm: Option<f32>, pre: u32| {
        let pt = Tensor::from_f32(d, &[p.len()], p).unwrap();
        let lt = Tensor::from_f32(d, &[1], &[loss]).unwrap();
        let st = k::step_counter(d, step).unwrap();
        let clip = Tensor::from_f32(d, &[2], &[0.25, -1.0]).unwrap();
        // A flag tripped earlier (pre = 1) must keep its words.
        let flag = Tensor::from_u32(d, &[4], &[pre, 7 * pre, 3 * pre, 5 * pre]).unwrap();
        if fused {
            k::clip_guard(d, &pt, p.len(), max_norm, &lt, &st, &clip, &flag, 1).unwrap();
        } else {
            if let Some(m) = max_norm {
                k::clip_scale(d, &pt, p.len(), m, &clip).unwrap();
            }
            k::guard_finite(d, &lt, 1, &st, &flag, NonFinite::Loss.code(), 1, 0).unwrap();
            k::guard_finite(d, &pt, p.len(), &st, &flag, NonFinite::GradientNorm.code(), 1, 0).unwrap();
        }
        // Bits, so NaN clip words compare too.
        (flag.to_u32(d).unwrap(), clip.to_f32(d).unwrap().iter().map(|v| v.to_bits()).collect::<Vec<u32>>())
    };
    for n in [1usize, 5, 256, 700, 3000] {
        for case in 0..6 {
            let mut p = rng.vec(n, 0.0, 4.0);
            let mut loss = rng.uniform(0.5, 3.0);
            match case {
                1 => p[rng.below(n)] = f32::NAN,
                2 => p[rng.below(n)] = f32::INFINITY,
                3 => loss = f32::NAN,
                4 => {
                    loss = f32::NEG_INFINITY;
                    p[rng.below(n)] = f32::NAN;
                }
                _ => {}
            }
            let pre = (case == 5) as u32;
            let step = rng.below(1000) as u32;
            for max_norm in [None, Some(rng.uniform(0.1, 10.0))] {
                let want = run(&cpu, false, &p, loss, step, max_norm, pre);
                assert_eq!(run(&cpu, true, &p, loss, step, max_norm, pre), want, "cpu n={n} case {case}");
                if let Some(g) = &gpu {
                    let unfused = run(g, false, &p, loss, step, max_norm, pre);
                    let (flag, clip) = run(g, true, &p, loss, step, max_norm, pre);
                    assert_eq!((&flag, &clip), (&unfused.0, &unfused.1), "gpu fused vs unfused n={n} case {case}");
                    assert_eq!(flag, want.0, "gpu vs cpu flag n={n} case {case}");
                    let (clip, want_clip): (Vec<f32>, Vec<f32>) = (
                        clip.iter().map(|&b| f32::from_bits(b)).collect(),
                        want.1.iter().map(|&b| f32::from_bits(b)).collect(),
                    );
                    if want_clip.iter().all(|v| v.is_finite()) {
                        assert_close("clip_guard clip", &clip, &want_clip, 0.0, 1e-6);
                    }
                }
            }
        }
    }
}

#[test]
fn guard_kernel_keeps_the_first_value() {
    for d in std::iter::once(cpu()).chain(gpu()) {
        let st = k::step_counter(&d, 4).unwrap();
        let flag = k::guard_flag(&d).unwrap();
        let ok = Tensor::from_f32(&d, &[3], &[1.0, -2.0, 3e38]).unwrap();
        let nan = Tensor::from_f32(&d, &[3], &[1.0, f32::NAN, 2.0]).unwrap();
        let inf = Tensor::from_f32(&d, &[2], &[f32::INFINITY, 0.0]).unwrap();
        k::guard_finite(&d, &ok, 3, &st, &flag, 1, 1, 0).unwrap();
        assert_eq!(flag.to_u32(&d).unwrap(), vec![0; 4], "{}: all finite", d.name());
        k::guard_finite(&d, &nan, 3, &st, &flag, 2, 1, 10).unwrap();
        k::advance_step(&d, &st, 1).unwrap();
        k::guard_finite(&d, &inf, 2, &st, &flag, 1, 1, 0).unwrap();
        assert_eq!(flag.to_u32(&d).unwrap(), vec![1, 5, 2, 11], "{}: sticky", d.name());
        // n counts: values past it are not looked at.
        let f2 = k::guard_flag(&d).unwrap();
        k::guard_finite(&d, &nan, 1, &st, &f2, 1, 0, 0).unwrap();
        assert_eq!(f2.to_u32(&d).unwrap(), vec![0; 4]);
        // Bad arguments are errors.
        assert!(k::guard_finite(&d, &nan, 4, &st, &f2, 1, 0, 0).is_err());
        assert!(k::guard_finite(&d, &nan, 3, &st, &ok, 1, 0, 0).is_err());
    }
}

// ---------------------------------------------------------------------------------------------------
// A Trainer: loss = sum(f(w * x)) over a parameter w and an input x.

/// A trainer of `loss = sum(f(w ⊙ x))` (f = sqrt or sqrt of the square), clipping on or off.
fn trainer(d: &Device, x: &[f32], sqrt_of_square: bool, clip: Option<f32>) -> Trainer {
    let w = Tensor::from_f32(d, &[x.len()], &vec![1.0; x.len()]).unwrap();
    let a = Tensor::from_f32(d, &[3], &[0.5, 0.5, 0.5]).unwrap();
    let xt = Tensor::from_f32(d, &[x.len()], x).unwrap();
    let mut g = Graph::new();
    let (wn, an, xn) = (g.param(&w), g.param(&a), g.input(&xt));
    let mut h = g.mul(wn, xn).unwrap();
    if sqrt_of_square {
        h = g.unary(Unary::Square, h).unwrap();
    }
    let h = g.unary(Unary::Sqrt, h).unwrap();
    let s = g.sum_all(h).unwrap();
    let sa = g.sum_all(an).unwrap();
    let loss = g.add(s, sa).unwrap();
    let params = vec![Param { name: "a".into(), tensor: a }, Param { name: "w".into(), tensor: w }];
    let cfg = TrainConfig {
        optimizer: OptimizerKind::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 },
        schedule: Schedule::Constant { lr: 1e-3 },
        clip,
        ema: Some(0.9),
        loss_scale: None,
    };
    Trainer::new(d, g, loss, params, cfg).unwrap()
}

fn divergence(d: &Device, t: &Trainer) -> Option<tigel::train::Divergence> {
    t.divergence(&t.read_guard(d).unwrap().wait().unwrap())
}

#[test]
fn trainer_guard_names_the_step_and_what() {
    for d in std::iter::once(cpu()).chain(gpu()) {
        for clip in [None, Some(1.0)] {
            let tag = format!("{} clip {clip:?}", d.name());
            // Finite: nothing after three steps, weights included.
            let t = trainer(&d, &[1.0, 2.0, 3.0], false, clip);
            for _ in 0..3 {
                t.step(&d).unwrap();
            }
            t.check_weights(&d).unwrap();
            assert_eq!(divergence(&d, &t), None, "{tag}");
            // NaN and Inf in the loss (an input value), at the first step.
            for bad in [f32::NAN, f32::INFINITY] {
                let t = trainer(&d, &[1.0, bad, 3.0], false, clip);
                t.step(&d).unwrap();
                t.step(&d).unwrap();
                let div = divergence(&d, &t).unwrap_or_else(|| panic!("{tag}: {bad} in the loss not caught"));
                assert_eq!((div.update, div.what, div.tensor), (1, NonFinite::Loss, None), "{tag} {bad}");
            }
            // Finite loss, gradient Inf (d sqrt(u) at u = 0) or NaN (Inf · 0 through the square), at w.
            for sq in [false, true] {
                let t = trainer(&d, &[1.0, 0.0, 3.0], sq, clip);
                t.step(&d).unwrap();
                let div = divergence(&d, &t).unwrap_or_else(|| panic!("{tag}: bad gradient (sq {sq}) not caught"));
                assert_eq!(div.update, 1, "{tag} sq {sq}");
                assert_eq!(div.what, NonFinite::GradientNorm, "{tag} sq {sq}");
                assert_eq!(div.tensor.as_deref(), Some("w"), "{tag} sq {sq}");
            }
            // Weights made non-finite between steps: found by check_weights, and save refuses.
            let t = trainer(&d, &[1.0, 2.0, 3.0], false, clip);
            t.step(&d).unwrap();
            d.write(&t.params()[1].tensor.buf, &[1.0f32, f32::NAN, 1.0]).unwrap();
            t.check_weights(&d).unwrap();
            let div = divergence(&d, &t).expect("non-finite weights");
            assert_eq!((div.update, div.what, div.tensor.as_deref()), (1, NonFinite::Weights, Some("w")), "{tag}");
            let dir = std::env::temp_dir().join(format!("tigel-div-save-{}", std::process::id()));
            let path = dir.join("checkpoint.safetensors");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, b"good").unwrap();
            let e = t.save(&d, &path, "test", serde_json::json!({}), serde_json::json!(null)).unwrap_err();
            assert!(e.to_string().contains("`w` holds a non-finite value"), "{e}");
            assert_eq!(std::fs::read(&path).unwrap(), b"good", "a refused save must not touch the file");
            std::fs::remove_dir_all(&dir).ok();
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Each regime through the binary (CPU backend, tiny settings).

fn tigel(args: &[&str]) -> (i32, String, String) {
    output_of(tigel_command().args(["--backend", "cpu"]).args(args))
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("tigel-divergence-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// metrics.jsonl's lines, none of which may hold a null (a non-finite number).
fn metrics_lines(run: &Path) -> usize {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap_or_default();
    for l in text.lines() {
        assert!(!l.contains("null"), "a metrics line with a non-finite value: {l}");
    }
    text.lines().count()
}

/// `train KIND` with `good` args, then with `bad` args fresh and as a resume of the good run: both fail
/// naming the step; the fresh one saves nothing, the resume leaves the good checkpoint byte-identical
/// and `eval KIND` on it finite (`figure` is the key of eval's JSON checked).
fn diverging_runs(kind: &str, run_flags: &[&str], model: &[&str], bad: &[&str], eval: &[&str], figure: &str) {
    let d = tmp(kind);
    let run = d.join("good");
    let r = run.to_str().unwrap();
    // The model's flags go to fresh runs only: a resume takes the model from its checkpoint.
    let args = |m: &[&str], extra: &[&str], out: &[&str]| -> Vec<String> {
        ["train", kind].iter().chain(run_flags).chain(m).chain(extra).chain(out).map(|s| s.to_string()).collect()
    };
    let call = |a: Vec<String>| tigel(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let (code, _, err) = call(args(model, &[], &["--out", r]));
    assert_eq!(code, 0, "{kind}: the good run failed:\n{err}");
    let lines = metrics_lines(&run);
    let before = std::fs::read(run.join("checkpoint.safetensors")).unwrap();
    let config_before = std::fs::read(run.join("config.json")).unwrap();

    let fresh = d.join("bad");
    let (code, _, err) = call(args(model, bad, &["--out", fresh.to_str().unwrap()]));
    assert_ne!(code, 0, "{kind}: a diverging run must fail");
    assert!(err.contains("training diverged at step"), "{kind}: {err}");
    assert!(err.contains("not finite"), "{kind}: {err}");
    assert!(!err.contains("panicked"), "{kind}: {err}");
    assert!(!fresh.join("checkpoint.safetensors").exists(), "{kind}: a diverged run saved a checkpoint");
    assert_eq!(metrics_lines(&fresh), 0, "{kind}: metrics lines of a run that diverged before its first evaluation");

    let (code, _, err) = call(args(&[], bad, &["--resume", r]));
    assert_ne!(code, 0, "{kind}: a diverging resume must fail");
    assert!(err.contains("training diverged at step"), "{kind}: {err}");
    assert!(err.contains("is untouched"), "{kind}: {err}");
    assert_eq!(std::fs::read(run.join("checkpoint.safetensors")).unwrap(), before, "{kind}: checkpoint changed");
    assert_eq!(metrics_lines(&run), lines, "{kind}: the diverging resume wrote metrics lines");
    let config_after = std::fs::read(run.join("config.json")).unwrap();
    assert_eq!(config_after, config_before, "{kind}: config.json describes a resume that never saved");

    let mut e = vec!["eval", kind, "--checkpoint", r, "--json"];
    e.extend(eval);
    let (code, out, err) = tigel(&e);
    assert_eq!(code, 0, "{kind}: eval failed:\n{err}");
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert!(v[figure].as_f64().is_some_and(f64::is_finite), "{kind}: {figure} not finite: {v}");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn gpt_divergence_stops_and_keeps_the_checkpoint() {
    let run = ["--steps", "20", "--eval-every", "10", "--eval-windows", "4", "--sample-tokens", "0", "--batch", "2"];
    let model = ["--layers", "1", "--width", "32", "--context", "16"];
    diverging_runs("gpt", &run, &model, &["--lr", "1e30", "--warmup", "0"], &[], "val_bits_per_char");
}

#[test]
fn gan_divergence_stops_and_keeps_the_checkpoint() {
    let run = ["--data", "ring8", "--steps", "20", "--eval-every", "10", "--batch", "64"];
    let model = ["--width", "32", "--depth", "2", "--z-dim", "4"];
    diverging_runs("gan", &run, &model, &["--lr", "1e6"], &[], "reverse_kl");
}

#[test]
fn diffusion_divergence_stops_and_keeps_the_checkpoint() {
    let run = ["--data", "ring8", "--steps", "20", "--save-every", "10", "--batch", "64"];
    let model = ["--hidden", "32", "--timesteps", "20"];
    diverging_runs("diffusion", &run, &model, &["--lr", "1e30"], &["--n", "50"], "reverse_kl");
}
