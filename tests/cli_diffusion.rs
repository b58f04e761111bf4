//! `tigel train|sample|eval diffusion` through the binary: tiny models end to end, and the refusals.
mod common;
use common::{check_run_dir, output_of, tigel_command};
use std::path::Path;

fn tigel(args: &[&str]) -> (i32, String, String) {
    output_of(tigel_command().args(args))
}

fn ok(args: &[&str]) -> String {
    let (code, out, err) = tigel(args);
    assert_eq!(code, 0, "tigel {args:?} failed:\n{err}");
    out
}

fn json_line(out: &str) -> serde_json::Value {
    serde_json::from_str(out.lines().last().expect("a line")).expect("one JSON line")
}

fn refused(args: &[&str], needle: &str) {
    let (code, _, err) = tigel(args);
    assert_ne!(code, 0, "tigel {args:?} should fail");
    assert!(err.contains(needle), "tigel {args:?}: stderr should mention `{needle}`:\n{err}");
    assert!(!err.contains("panicked"), "tigel {args:?} panicked:\n{err}");
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("tigel-cli-diffusion-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// An .npy of u8 labels (format 1.0).
fn write_labels_npy(path: &Path, labels: &[u8]) {
    let mut header = format!("{{'descr': '|u1', 'fortran_order': False, 'shape': ({},), }}", labels.len());
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend((header.len() as u16).to_le_bytes());
    b.extend(header.as_bytes());
    b.extend(labels);
    std::fs::write(path, b).unwrap();
}

#[test]
fn ring8_train_sample_eval_resume() {
    let dir = tmp("ring8");
    let run = dir.join("run");
    let r = run.to_str().unwrap();
    let tiny = ["--hidden", "32", "--layers", "2", "--timesteps", "50", "--batch", "64", "--save-every", "50"];
    let mut args = vec!["--backend", "cpu", "train", "diffusion", "--data", "ring8", "--steps", "100"];
    args.extend(tiny);
    args.extend(["--log-every", "25", "--out", r, "--json"]);
    let v = json_line(&ok(&args));
    assert_eq!(v["steps"], 100);
    assert!(v["loss"].as_f64().is_some_and(|l| l.is_finite() && l > 0.0), "{v}");
    for f in ["checkpoint.safetensors", "config.json", "metrics.jsonl"] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    // metrics.jsonl: a training line every --log-every steps, an evaluation line at each evaluation;
    // the pictures beside it (sample pictures at least 256 pixels wide).
    let lines = check_run_dir(&run, &[50, 100], &[25, 50, 75, 100], &["loss.png", "samples.png"]);
    // The gradient norm in the training lines; the best evaluation (lowest mean loss) kept.
    assert!(lines.iter().filter(|l| l["kind"] == "train").all(|l| l["grad_norm"].as_f64().is_some_and(|g| g > 0.0)));
    assert_eq!(lines.iter().find(|l| l["kind"] == "eval").unwrap()["best"], true);
    assert!(run.join("best.safetensors").is_file());

    // An occupied --out is refused, nothing overwritten.
    let before = std::fs::read(run.join("checkpoint.safetensors")).unwrap();
    refused(
        &["--backend", "cpu", "train", "diffusion", "--data", "ring8", "--steps", "5", "--out", r],
        "already holds",
    );
    assert_eq!(std::fs::read(run.join("checkpoint.safetensors")).unwrap(), before);

    // Samples: .npy of [n, 2], a scatter PNG, a trajectory, DDIM.
    let npy = dir.join("s.npy");
    ok(&["--backend", "cpu", "sample", "diffusion", "--checkpoint", r, "--n", "100", "--out", npy.to_str().unwrap()]);
    // 128-byte header (format 1.0 as written) + 100 × 2 f32.
    assert_eq!(std::fs::metadata(&npy).unwrap().len(), 128 + 800);
    let png = dir.join("s.png");
    let ddim = ["--sampler", "ddim", "--sample-steps", "10"];
    let mut a = vec!["--backend", "cpu", "sample", "diffusion", "--checkpoint", r, "--n", "300"];
    a.extend(ddim);
    a.extend(["--out", png.to_str().unwrap()]);
    ok(&a);
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
    let traj = dir.join("traj.npy");
    ok(&[
        "--backend",
        "cpu",
        "sample",
        "diffusion",
        "--checkpoint",
        r,
        "--n",
        "20",
        "--trajectory",
        "--out",
        traj.to_str().unwrap(),
    ]);
    // 8 frames of 20 points.
    assert_eq!(std::fs::metadata(&traj).unwrap().len(), 128 + 8 * 20 * 2 * 4);

    // Eval: the mixture metrics beside the real samples' log-density.
    let mut a = vec!["--backend", "cpu", "eval", "diffusion", "--checkpoint", r, "--n", "200"];
    a.extend(ddim);
    a.push("--json");
    let v = json_line(&ok(&a));
    assert_eq!(v["num_modes"], 8);
    assert_eq!(v["n"], 200);
    for k in ["high_quality", "reverse_kl", "mean_log_density", "real_mean_log_density"] {
        assert!(v[k].as_f64().is_some(), "{k}: {v}");
    }

    // Resume: the step count continues.
    let v = json_line(&ok(&["--backend", "cpu", "train", "diffusion", "--steps", "20", "--resume", r, "--json"]));
    assert_eq!(v["steps"], 120);

    // Refusals against this (unconditional) checkpoint.
    let s = ["--backend", "cpu", "sample", "diffusion", "--checkpoint", r, "--n", "4"];
    let out = dir.join("x.png");
    let o = out.to_str().unwrap();
    refused(&[&s[..], &["--guidance", "3", "--out", o]].concat(), "not label-conditioned");
    refused(&[&s[..], &["--label", "1", "--out", o]].concat(), "not class-conditional");
    refused(&[&s[..], &["--sampler", "euler", "--out", o]].concat(), "euler");
    refused(&[&s[..], &["--sampler", "ddim", "--sample-steps", "51", "--out", o]].concat(), "51");
    // Sampler combinations that cannot work: DDIM's step count or order with DDPM, an order DDIM lacks,
    // zero steps, a negative guidance weight, guidance in eval of an unconditional model.
    refused(&[&s[..], &["--sample-steps", "10", "--out", o]].concat(), "--sample-steps");
    refused(&[&s[..], &["--order", "2", "--out", o]].concat(), "--order");
    refused(&[&s[..], &["--sampler", "ddim", "--order", "3", "--out", o]].concat(), "order is 1 or 2");
    refused(&[&s[..], &["--sampler", "ddim", "--sample-steps", "0", "--out", o]].concat(), "between 1 and");
    let e = ["--backend", "cpu", "eval", "diffusion", "--checkpoint", r, "--n", "4"];
    refused(&[&e[..], &["--guidance", "2"]].concat(), "not label-conditioned");
    refused(&[&e[..], &["--sample-steps", "10"]].concat(), "--sample-steps");
    // Both DDIM updates run and stay within the data's box (ring8: radius 2, std 0.02).
    for order in ["1", "2"] {
        let npy = dir.join(format!("ddim{order}.npy"));
        ok(&[
            &s[..],
            &["--sampler", "ddim", "--sample-steps", "5", "--order", order, "--out"],
            &[npy.to_str().unwrap()],
        ]
        .concat());
        assert!(npy.exists());
    }
    refused(&[&s[..], &["--out", dir.join("x.txt").to_str().unwrap()]].concat(), ".png or .npy");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_training_input_is_refused() {
    let dir = tmp("bad");
    let o = dir.join("run");
    let o = o.to_str().unwrap();
    let t = ["--backend", "cpu", "train", "diffusion"];
    refused(&[&t[..], &["--data", "ring8", "--timesteps", "0", "--out", o]].concat(), "--timesteps");
    refused(&[&t[..], &["--data", "ring9", "--out", o]].concat(), "ring9");
    refused(&[&t[..], &["--data", "ring8", "--conditional", "--out", o]].concat(), "no labels");
    refused(&[&t[..], &["--data", "ring8", "--schedule", "quadratic", "--out", o]].concat(), "quadratic");
    refused(&[&t[..], &["--data", "ring8", "--prediction", "x0", "--out", o]].concat(), "x0");
    refused(&[&t[..], &["--data", "ring8", "--batch", "0", "--out", o]].concat(), "--batch");
    refused(&[&t[..], &["--out", o]].concat(), "--data is required");
    assert!(!Path::new(o).join("checkpoint.safetensors").exists());

    // A checkpoint of another kind.
    let other = dir.join("gpt");
    std::fs::create_dir_all(&other).unwrap();
    tigel::checkpoint::Checkpoint::new("gpt", serde_json::json!({}))
        .save(&other.join("checkpoint.safetensors"))
        .unwrap();
    let g = other.to_str().unwrap();
    let png = dir.join("a.png");
    refused(&["--backend", "cpu", "sample", "diffusion", "--checkpoint", g, "--out", png.to_str().unwrap()], "gpt");
    refused(&["--backend", "cpu", "eval", "diffusion", "--checkpoint", g, "--data", "ring8"], "gpt");
    refused(&[&t[..], &["--data", "ring8", "--resume", g, "--out", o]].concat(), "gpt");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A class-conditional UNet on a tiny labelled .npy image set: guided samples, per-class eval, refusals.
#[test]
fn conditional_images_train_sample_eval() {
    let dir = tmp("images");
    let (n, side) = (60, 8);
    let mut px = Vec::new();
    let mut labels = Vec::new();
    for i in 0..n {
        let l = i % 3;
        for y in 0..side {
            for _ in 0..side {
                px.push(if y / 3 == l { 0.8 } else { -0.8 });
            }
        }
        labels.push(l as u8);
    }
    let data = dir.join("imgs.npy");
    tigel::data::images::write_npy_f32(&data, &px, &[n, side, side]).unwrap();
    write_labels_npy(&dir.join("imgs_labels.npy"), &labels);
    let run = dir.join("run");
    let r = run.to_str().unwrap();
    let v = json_line(&ok(&[
        "--backend",
        "cpu",
        "train",
        "diffusion",
        "--data",
        data.to_str().unwrap(),
        "--conditional",
        "--base",
        "8",
        "--mults",
        "1,2",
        "--timesteps",
        "20",
        "--steps",
        "6",
        "--batch",
        "4",
        "--out",
        r,
        "--json",
    ]));
    assert_eq!(v["steps"], 6);
    let g = dir.join("g.png");
    ok(&[
        "--backend",
        "cpu",
        "sample",
        "diffusion",
        "--checkpoint",
        r,
        "--n",
        "4",
        "--label",
        "2",
        "--guidance",
        "2",
        "--out",
        g.to_str().unwrap(),
    ]);
    assert!(std::fs::read(&g).unwrap().starts_with(b"\x89PNG"));
    let traj = dir.join("t.png");
    ok(&[
        "--backend",
        "cpu",
        "sample",
        "diffusion",
        "--checkpoint",
        r,
        "--n",
        "2",
        "--trajectory",
        "--out",
        traj.to_str().unwrap(),
    ]);
    // --per-class: one row per label; row k is what `--label k --seed 1 + k` draws.
    let sample = |extra: &[&str], out: &std::path::Path| {
        let base = ["--backend", "cpu", "sample", "diffusion", "--checkpoint", r, "--n", "2", "--sampler", "ddim"];
        ok(&[&base[..], extra, &["--sample-steps", "3", "--out", out.to_str().unwrap()]].concat());
        std::fs::read(out).unwrap()
    };
    let all = sample(&["--per-class", "--guidance", "2"], &dir.join("pc.npy"));
    let header = String::from_utf8_lossy(&all[..128]).to_string();
    assert!(header.contains("'shape': (3, 2, 1, 8, 8)"), "{header}");
    let body = |b: &[u8]| b[b.iter().position(|&c| c == b'\n').unwrap() + 1..].to_vec();
    let rows = body(&all);
    for k in 0..3 {
        let (label, seed) = (k.to_string(), (1 + k).to_string());
        let one = body(&sample(&["--label", &label, "--guidance", "2", "--seed", &seed], &dir.join("one.npy")));
        assert_eq!(one.len(), 2 * 64 * 4);
        assert!(rows[k * one.len()..(k + 1) * one.len()] == one[..], "class {k}'s row");
    }
    let gs = g.to_str().unwrap();
    let sample_args = |extra: &[&'static str]| -> Vec<&str> {
        [&["--backend", "cpu", "sample", "diffusion", "--checkpoint", r][..], extra, &["--out", gs]].concat()
    };
    refused(&sample_args(&["--per-class", "--label", "1"]), "--per-class");
    refused(&sample_args(&["--label", "3"]), "out of range");
    refused(&sample_args(&["--guidance", "2"]), "--label");
    refused(&sample_args(&["--label", "1", "--guidance=-1"]), ">= 0");
    let v = json_line(&ok(&[
        "--backend",
        "cpu",
        "eval",
        "diffusion",
        "--checkpoint",
        r,
        "--n",
        "6",
        "--sampler",
        "ddim",
        "--sample-steps",
        "5",
        "--json",
    ]));
    for k in ["mmd2", "precision", "recall"] {
        assert!(v[k].as_f64().is_some_and(f64::is_finite), "{k}: {v}");
    }
    // A model for 8×8 images refuses 2-D data.
    refused(&["--backend", "cpu", "eval", "diffusion", "--checkpoint", r, "--data", "ring8"], "2-D");
    let _ = std::fs::remove_dir_all(&dir);
}
