//! `tigel train|sample|eval gan` end to end, and its refusals: clear message, non-zero exit, no panic.
mod common;
use common::{check_run_dir, output_of, tigel_command};
use std::path::Path;

fn tigel(args: &[&str]) -> (i32, String, String) {
    output_of(tigel_command().args(args))
}

fn assert_clean_failure(args: &[&str], needle: &str) {
    let (code, _, err) = tigel(args);
    assert_ne!(code, 0, "tigel {args:?} should fail");
    assert!(err.contains(needle), "tigel {args:?}: stderr should mention `{needle}`:\n{err}");
    assert!(!err.contains("panicked"), "tigel {args:?} panicked:\n{err}");
}

fn json_line(out: &str) -> serde_json::Value {
    serde_json::from_str(out.lines().last().expect("a JSON line")).expect("valid JSON")
}

fn dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("tigel-cli-gan-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// ring8 end to end: train (JSON, run directory), sample to .npy and .png, eval, resume, an occupied --out.
#[test]
fn gan_ring8_train_sample_eval_resume() {
    let d = dir("ring8");
    let run = d.join("run");
    let r = run.to_str().unwrap();
    let small = ["--width", "32", "--depth", "2", "--batch", "64", "--z-dim", "4"];
    let mut args = vec!["--backend", "cpu", "train", "gan", "--data", "ring8", "--steps", "40", "--eval-every", "20"];
    args.extend(["--log-every", "10"]);
    args.extend(small);
    args.extend(["--out", r, "--json"]);
    let (code, out, err) = tigel(&args);
    assert_eq!(code, 0, "{err}");
    let v = json_line(&out);
    assert_eq!(v["steps"], 40);
    assert_eq!(v["num_modes"], 8);
    for k in ["loss_d", "loss_g", "reverse_kl", "steps_per_s"] {
        assert!(v[k].as_f64().is_some_and(f64::is_finite), "{k}: {v}");
    }
    for f in ["checkpoint.safetensors", "config.json", "metrics.jsonl"] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    // metrics.jsonl: a training line every --log-every steps, an evaluation line at each evaluation;
    // the pictures beside it (sample pictures at least 256 pixels wide).
    let lines = check_run_dir(&run, &[20, 40], &[10, 20, 30, 40], &["loss.png", "samples.png"]);
    // Both nets' gradient norms in the training lines; the best evaluation (lowest reverse KL) kept.
    for k in ["grad_norm_d", "grad_norm_g"] {
        assert!(lines.iter().filter(|l| l["kind"] == "train").all(|l| l[k].as_f64().is_some_and(|g| g > 0.0)), "{k}");
    }
    assert!(lines
        .iter()
        .filter(|l| l["kind"] == "eval")
        .all(|l| l["best"].is_boolean() && l["reverse_kl"].is_number()));
    assert!(run.join("best.safetensors").is_file());

    let npy = d.join("s.npy");
    let (code, _, err) =
        tigel(&["--backend", "cpu", "sample", "gan", "--checkpoint", r, "--n", "10", "--out", npy.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let bytes = std::fs::read(&npy).unwrap();
    assert!(bytes.starts_with(b"\x93NUMPY") && String::from_utf8_lossy(&bytes).contains("(10, 2)"));
    assert_eq!(bytes.len() % 16, (10 * 2 * 4) % 16);
    let png = d.join("s.png");
    let (code, _, err) =
        tigel(&["--backend", "cpu", "sample", "gan", "--checkpoint", r, "--n", "300", "--out", png.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));

    // Eval with the training-time seed and count reproduces the last training evaluation.
    let (code, out, err) = tigel(&["--backend", "cpu", "eval", "gan", "--checkpoint", r, "--seed", "0", "--json"]);
    assert_eq!(code, 0, "{err}");
    let e = json_line(&out);
    assert_eq!(e["reverse_kl"], v["reverse_kl"], "{e} vs {v}");
    assert_eq!(e["high_quality"], v["high_quality"]);

    let before = std::fs::read(run.join("checkpoint.safetensors")).unwrap();
    assert_clean_failure(&args, "already holds a checkpoint");
    assert_eq!(before, std::fs::read(run.join("checkpoint.safetensors")).unwrap());
    let (code, out, err) =
        // No --data: the checkpoint's (ring8).
        tigel(&["--backend", "cpu", "train", "gan", "--steps", "10", "--resume", r, "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_line(&out)["steps"], 50);
    assert_clean_failure(
        &["--backend", "cpu", "train", "gan", "--data", "ring8", "--resume", r, "--width", "64"],
        "--width 64",
    );
    assert_clean_failure(&["--backend", "cpu", "train", "gan", "--steps", "10"], "--data is required");
    std::fs::remove_dir_all(&d).ok();
}

/// Images end to end on a tiny PNG folder: train a small DCGAN, sample a grid, eval.
#[test]
fn gan_images_train_sample_eval() {
    let d = dir("images");
    let imgs = d.join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    for i in 0..50 {
        let px: Vec<f32> = (0..28 * 28).map(|k| if (k / 28 + i) % 7 < 3 { 1.0 } else { -1.0 }).collect();
        tigel::data::images::write_png_grid(&imgs.join(format!("{i:02}.png")), &px, 1, 1, 28, 28, 1).unwrap();
    }
    let run = d.join("run");
    let (i, r) = (imgs.to_str().unwrap(), run.to_str().unwrap());
    let (code, out, err) = tigel(&[
        "--backend",
        "cpu",
        "train",
        "gan",
        "--data",
        i,
        "--steps",
        "6",
        "--batch",
        "4",
        "--width",
        "4",
        "--z-dim",
        "8",
        "--out",
        r,
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v = json_line(&out);
    assert!(v["mmd2"].as_f64().is_some_and(f64::is_finite), "{v}");
    assert!(run.join("samples-000006.png").is_file());
    let png = d.join("grid.png");
    let (code, _, err) =
        tigel(&["--backend", "cpu", "sample", "gan", "--checkpoint", r, "--n", "16", "--out", png.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
    let (code, out, err) = tigel(&["--backend", "cpu", "eval", "gan", "--checkpoint", r, "--n", "5", "--json"]);
    assert_eq!(code, 0, "{err}");
    let e = json_line(&out);
    assert_eq!(e["n"], 5);
    assert!(e["precision"].as_f64().is_some_and(|p| (0.0..=1.0).contains(&p)), "{e}");
    // Eval against data of another shape is refused.
    assert_clean_failure(&["--backend", "cpu", "eval", "gan", "--checkpoint", r, "--data", "ring8"], "shape");
    std::fs::remove_dir_all(&d).ok();
}

fn write(path: &Path, bytes: &[u8]) -> String {
    std::fs::write(path, bytes).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn gan_bad_input_is_refused() {
    let d = dir("bad");
    let train = |data: &str| {
        vec!["--backend", "cpu", "train", "gan", "--data", data, "--steps", "1"]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let fail = |args: Vec<String>, needle: &str| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_clean_failure(&a, needle)
    };
    fail(train("ring9"), "neither a mixture");
    // IDX: wrong magic, truncated header, truncated pixels.
    let mut idx = vec![0u8, 0, 8, 1, 0, 0, 0, 2, 0, 0, 0, 28, 0, 0, 0, 28];
    fail(train(&write(&d.join("labels.idx"), &idx)), "wrong IDX magic");
    idx[3] = 3;
    fail(train(&write(&d.join("short.idx"), &idx[..10])), "truncated IDX header");
    idx.extend(vec![0u8; 100]);
    fail(train(&write(&d.join("cut.idx"), &idx)), "header says");
    // A PNG folder with two sizes.
    let mixed = d.join("mixed");
    std::fs::create_dir_all(&mixed).unwrap();
    tigel::data::images::write_png_grid(&mixed.join("a.png"), &vec![0.0; 28 * 28], 1, 1, 28, 28, 1).unwrap();
    tigel::data::images::write_png_grid(&mixed.join("b.png"), &vec![0.0; 32 * 32], 1, 1, 32, 32, 1).unwrap();
    fail(train(mixed.to_str().unwrap()), "mixed sizes");
    // An .npy of an unsupported dtype.
    let header = "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 28, 28), }";
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    let pad = 64 - (10 + header.len() + 1) % 64;
    let h = format!("{header}{}\n", " ".repeat(pad));
    npy.extend((h.len() as u16).to_le_bytes());
    npy.extend(h.as_bytes());
    npy.extend(vec![0u8; 2 * 28 * 28 * 8]);
    fail(train(&write(&d.join("ints.npy"), &npy)), "unsupported dtype");
    // Images the DCGAN does not take (9×9: odd).
    let odd = d.join("odd");
    std::fs::create_dir_all(&odd).unwrap();
    for i in 0..20 {
        tigel::data::images::write_png_grid(&odd.join(format!("{i}.png")), &vec![0.0; 81], 1, 1, 9, 9, 1).unwrap();
    }
    fail(train(odd.to_str().unwrap()), "even side from 8 to 256");
    fail(
        vec!["--backend", "cpu", "train", "gan", "--data", "ring8", "--batch", "6", "--pack", "4"]
            .into_iter()
            .map(String::from)
            .collect(),
        "--pack",
    );

    // A checkpoint of another kind, a missing one, --n 0, an unknown output type.
    let gpt = d.join("gpt");
    let mut ck = tigel::checkpoint::Checkpoint::new("gpt", serde_json::json!({}));
    ck.step = 1;
    ck.save(&tigel::checkpoint::checkpoint_path(&gpt)).unwrap();
    let (g, out) = (gpt.to_str().unwrap(), d.join("x.png"));
    let o = out.to_str().unwrap();
    assert_clean_failure(&["--backend", "cpu", "sample", "gan", "--checkpoint", g, "--out", o], "holds a `gpt` model");
    assert_clean_failure(
        &["--backend", "cpu", "eval", "gan", "--checkpoint", g, "--data", "ring8"],
        "holds a `gpt` model",
    );
    assert_clean_failure(
        &["--backend", "cpu", "train", "gan", "--data", "ring8", "--resume", g],
        "holds a `gpt` model",
    );
    // Without --data too: the kind is checked before the checkpoint's data is looked up.
    assert_clean_failure(&["--backend", "cpu", "train", "gan", "--resume", g], "holds a `gpt` model");
    assert_clean_failure(
        &["--backend", "cpu", "sample", "gan", "--checkpoint", d.join("nope").to_str().unwrap(), "--out", o],
        "nope",
    );
    assert_clean_failure(&["--backend", "cpu", "sample", "gan", "--checkpoint", g, "--n", "0", "--out", o], "--n");
    assert_clean_failure(&["--backend", "cpu", "eval", "gan", "--checkpoint", g, "--n", "0"], "--n");
    assert_clean_failure(&["--backend", "cpu", "sample", "gan", "--checkpoint", g, "--out", "x.jpg"], ".png or .npy");
    assert!(!out.exists());
    std::fs::remove_dir_all(&d).ok();
}

// ---- Images of any size with defaults fitted to them (issue 17).

/// A uint8 .npy of `n` gray `side`×`side` images (stripes, so D has something to learn).
fn stripes_npy(path: &Path, n: usize, side: usize) -> String {
    let header = format!("{{'descr': '|u1', 'fortran_order': False, 'shape': ({n}, {side}, {side}), }}");
    let h = format!("{header}{}\n", " ".repeat(63 - (10 + header.len()) % 64));
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    npy.extend((h.len() as u16).to_le_bytes());
    npy.extend(h.as_bytes());
    npy.extend((0..n * side * side).map(|k| if (k / side + k / (side * side)) % 4 < 2 { 255u8 } else { 0 }));
    write(path, &npy)
}

/// `train gan --data X.npy` on 8×8 and 16×16 images: the header prints the defaults the rule fits to the
/// data (marked `*`), the run scores its samples against the held-out images, and --help states the rule.
#[test]
fn gan_small_images_train_with_fitted_defaults() {
    let d = dir("sizes");
    // 40 images: 36 trained on, so --batch is 36 / 4 rounded down to even = 8 and --steps at most 500.
    for (side, width, lr, d_steps) in [(8, "64", "5e-4", "2"), (16, "32", "2e-4", "1")] {
        let data = stripes_npy(&d.join(format!("s{side}.npy")), 40, side);
        let run = d.join(format!("run{side}"));
        let r = run.to_str().unwrap();
        let (code, out, err) =
            tigel(&["--backend", "cpu", "train", "gan", "--data", &data, "--steps", "5", "--out", r, "--json"]);
        assert_eq!(code, 0, "{err}");
        let line = format!("width {width}*, z 64*, batch 8*, steps 5, lr {lr}*, d-steps {d_steps}*, eval every 1*");
        assert!(err.contains(&line), "{err}");
        let v = json_line(&out);
        assert!(v["mmd2"].as_f64().is_some_and(f64::is_finite), "{v}");
        assert_eq!(v["n"], 4, "{v}");
        let (code, out, err) = tigel(&["--backend", "cpu", "eval", "gan", "--checkpoint", r, "--n", "8", "--json"]);
        assert_eq!(code, 0, "{err}");
        assert!(json_line(&out)["recall"].as_f64().is_some_and(|p| (0.0..=1.0).contains(&p)), "{out}");
    }
    let (code, out, _) = tigel(&["train", "gan", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("Image defaults follow from the side S") && out.contains("2,560,000 / (k * S^2)"), "{out}");
    std::fs::remove_dir_all(&d).ok();
}
