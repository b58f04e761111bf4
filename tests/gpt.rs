//! The transformer regime: the byte-level GPT trains, agrees across backends, evaluates, samples,
//! resumes, and refuses bad input with errors that name it.
mod common;
use common::*;
use tigel::checkpoint::Checkpoint;
use tigel::data::text::Corpus;
use tigel::graph::Precision;
use tigel::models::gpt::{pick, Evaluator, Gpt, GptConfig, GptTrainer, SampleSettings, Sampler, TrainSettings};
use tigel::Device;

fn tiny() -> GptConfig {
    GptConfig { layers: 2, heads: 2, width: 16, context: 12, dropout: 0.0, ..GptConfig::default() }
}

/// Five training steps of `cfg` on the CPU and on the GPU (when there is one) give the same losses.
fn first_steps_agree_on_cpu_and_gpu(cfg: GptConfig) {
    let Some(gpu) = gpu() else { return };
    let c = gpt_corpus(4000);
    let run = |dev: &Device| {
        let m = Gpt::new(dev, cfg, 11).unwrap();
        let t = GptTrainer::new(dev, m, &c, gpt_settings(5, Precision::F32), 0).unwrap();
        gpt_losses(dev, &t, 5)
    };
    let (a, b) = (run(&cpu()), run(&gpu));
    eprintln!("cpu {a:?}\ngpu {b:?}");
    for (s, (x, y)) in a.iter().zip(&b).enumerate() {
        // f32 kernels with different summation orders, five optimizer steps deep.
        assert!(((x - y) / x).abs() <= 1e-4, "step {s}: cpu loss {x}, gpu loss {y}");
    }
}

#[test]
fn gpt_first_steps_agree_on_cpu_and_gpu() {
    first_steps_agree_on_cpu_and_gpu(tiny());
}

#[test]
fn gpt_learns_and_evaluates_on_held_out_text() {
    let dev = Device::cpu();
    let c = gpt_corpus(20_000);
    let m = Gpt::new(&dev, tiny(), 3).unwrap();
    let eval = Evaluator::new(&dev, &m, 8).unwrap();
    let (_, held) = c.split();
    let before = eval.bits_per_char(&dev, &c, held, None).unwrap();
    // Small initial weights: close to uniform over 256 bytes, 8 bits.
    assert!((before - 8.0).abs() < 0.3, "untrained model: {before} bits/char");
    let t = GptTrainer::new(&dev, m, &c, gpt_settings(150, Precision::F32), 0).unwrap();
    let l = gpt_losses(&dev, &t, 150);
    let after = eval.bits_per_char(&dev, &c, held, None).unwrap();
    eprintln!("loss {} -> {}, held-out {before:.3} -> {after:.3} bits/char", l[0], l[149]);
    assert!(after < 3.5, "held-out bits/char after 150 steps: {after}");
    assert!(l[149] < 0.5 * l[0], "training loss {} -> {}", l[0], l[149]);
}

#[test]
fn gpt_checkpoint_resumes_samples_and_evaluates() {
    let dev = Device::cpu();
    let c = gpt_corpus(6000);
    let dir = std::env::temp_dir().join(format!("tigel-gpt-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("checkpoint.safetensors");
    let m = Gpt::new(&dev, tiny(), 5).unwrap();
    let t = GptTrainer::new(&dev, m, &c, gpt_settings(6, Precision::F32), 0).unwrap();
    let first = gpt_losses(&dev, &t, 6);
    t.save(&dev, &path, &c.name).unwrap();

    // Resume on new data: the step counter continues and training goes on from the saved weights.
    let ck = Checkpoint::load(&path).unwrap();
    assert_eq!(ck.step, 6);
    let m2 = Gpt::load(&dev, &ck, "test").unwrap();
    let other = Corpus { name: "other".into(), bytes: gpt_corpus(5000).bytes.iter().rev().copied().collect() };
    let t2 = GptTrainer::new(&dev, m2, &other, gpt_settings(3, Precision::F32), 6).unwrap();
    t2.restore(&dev, &ck).unwrap();
    assert_eq!(t2.trainer().optimizer().current_step(&dev).unwrap(), 6);
    let more = gpt_losses(&dev, &t2, 3);
    assert_eq!(t2.trainer().optimizer().current_step(&dev).unwrap(), 9);
    assert!(more.iter().all(|l| l.is_finite()), "{first:?} then {more:?}");

    // The loaded model gives the same held-out score as the one that was saved.
    let (_, held) = c.split();
    let a = Evaluator::new(&dev, &t.model, 4).unwrap().bits_per_char(&dev, &c, held, None).unwrap();
    let m3 = Gpt::load(&dev, &ck, "test").unwrap();
    let b = Evaluator::new(&dev, &m3, 4).unwrap().bits_per_char(&dev, &c, held, None).unwrap();
    assert_eq!(a, b);

    // A prompt longer than the context is cut to its last `context` bytes, not refused; the same seed
    // gives the same text.
    let s = Sampler::new(&dev, &m3).unwrap();
    let long = "the cat sat on mat ".repeat(10);
    let set = SampleSettings { tokens: 20, temperature: 0.8, top_k: 5, seed: 9 };
    let mut streamed = Vec::new();
    let out = s.generate(&dev, long.as_bytes(), set, |b| streamed.push(b)).unwrap();
    assert_eq!(out.len(), 20);
    assert_eq!(out, streamed);
    assert_eq!(out, s.generate(&dev, long.as_bytes(), set, |_| {}).unwrap());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn gpt_sampling_respects_temperature_and_top_k() {
    // 37 is coprime with 256: a permutation, so no two logits tie.
    let logits: Vec<f32> = (0..256).map(|i| ((i * 37) % 256) as f32 * 0.02).collect();
    let best = (0..256).max_by(|&a, &b| logits[a].total_cmp(&logits[b])).unwrap() as u8;
    for k in 0..50 {
        let u = k as f32 / 50.0;
        assert_eq!(pick(&logits, 0.0, 0, u), best, "temperature 0 is greedy");
        assert_eq!(pick(&logits, 1.0, 1, u), best, "top-1 is greedy");
        let b = pick(&logits, 1.0, 3, u);
        let mut sorted: Vec<f32> = logits.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        assert!(logits[b as usize] >= sorted[2], "top-3 picked a byte outside the top 3");
    }
}

#[test]
fn gpt_bad_input_is_refused_by_name() {
    let dev = Device::cpu();
    let dir = std::env::temp_dir().join(format!("tigel-gpt-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, b"").unwrap();
    let e = Corpus::load(&empty).unwrap_err().to_string();
    assert!(e.contains("empty.txt") && e.contains("empty"), "{e}");
    let binary = dir.join("bytes.bin");
    std::fs::write(&binary, [0x66, 0x6f, 0xff, 0xfe]).unwrap();
    let e = Corpus::load(&binary).unwrap_err().to_string();
    assert!(e.contains("bytes.bin") && e.contains("UTF-8"), "{e}");
    let e = Corpus::load(&dir.join("missing.txt")).unwrap_err().to_string();
    assert!(e.contains("missing.txt"), "{e}");

    let short = Corpus { name: "short.txt".into(), bytes: b"just a few words".to_vec() };
    let e = short.check_context(64).unwrap_err().to_string();
    assert!(e.contains("short.txt") && e.contains("context of 64"), "{e}");
    let e = GptTrainer::new(&dev, Gpt::new(&dev, tiny(), 1).unwrap(), &short, gpt_settings(1, Precision::F32), 0)
        .err()
        .unwrap();
    assert!(e.to_string().contains("short.txt"), "{e}");

    for (cfg, what) in [
        (GptConfig { layers: 0, ..tiny() }, "--layers"),
        (GptConfig { heads: 0, ..tiny() }, "--heads"),
        (GptConfig { width: 0, ..tiny() }, "--width"),
        (GptConfig { context: 0, ..tiny() }, "--context"),
        (GptConfig { width: 18, heads: 4, ..tiny() }, "divisible"),
    ] {
        let e = Gpt::new(&dev, cfg, 1).err().unwrap().to_string();
        assert!(e.contains(what), "{cfg:?}: {e}");
    }
    let e = GptTrainer::new(
        &dev,
        Gpt::new(&dev, tiny(), 1).unwrap(),
        &gpt_corpus(2000),
        TrainSettings { batch: 0, ..gpt_settings(1, Precision::F32) },
        0,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("--batch"), "{e}");

    // A checkpoint of another model kind.
    let mut ck = Checkpoint::new("gan", serde_json::json!({}));
    ck.step = 1;
    let path = dir.join("gan.safetensors");
    ck.save(&path).unwrap();
    let ck = Checkpoint::load(&path).unwrap();
    let e = Gpt::load(&dev, &ck, "`tigel sample gpt`").err().unwrap().to_string();
    assert!(e.contains("gan") && e.contains("gpt"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Configs are written with the keys checkpoints have always had and every f32 as given (`0.003`, not
/// `0.003000000026077032`); the widened values older checkpoints hold still load to the same f32.
#[test]
fn gpt_configs_write_values_as_given_and_read_old_ones() {
    let cfg = GptConfig { dropout: 0.1, ..tiny() };
    assert_eq!(
        cfg.to_json().to_string(),
        r#"{"context":12,"dropout":0.1,"heads":2,"layers":2,"vocab":256,"width":16}"#
    );
    assert_eq!(GptConfig::from_json(&cfg.to_json()).unwrap(), cfg);
    assert_eq!(
        gpt_settings(5, Precision::F32).to_json().to_string(),
        r#"{"batch":3,"clip":1.0,"lr":0.003,"min_lr_frac":0.1,"seed":7,"steps":5,"warmup":2,"weight_decay":0.1}"#
    );
    let old: serde_json::Value = serde_json::from_str(
        r#"{"context":12,"dropout":0.10000000149011612,"heads":2,"layers":2,"vocab":256,"width":16}"#,
    )
    .unwrap();
    assert_eq!(GptConfig::from_json(&old).unwrap(), cfg);
    // Without dropout (checkpoints from before it existed) and with a wrong vocabulary.
    let mut v = old.clone();
    v.as_object_mut().unwrap().remove("dropout");
    assert_eq!(GptConfig::from_json(&v).unwrap().dropout, 0.0);
    // Checkpoints from before the architecture options hold the plain model: every option off.
    let o = GptConfig::from_json(&v).unwrap();
    assert!(!o.rope && !o.qk_norm && !o.gated_mlp && !o.untied && o.mlp_hidden == 0, "{o:?}");
    v["vocab"] = 50257.into();
    assert!(GptConfig::from_json(&v).unwrap_err().to_string().contains("vocab must be 256"));
}

/// Every architecture option on: rotary positions, QK normalisation, the gated MLP, the untied head.
fn modern() -> GptConfig {
    GptConfig { rope: true, qk_norm: true, gated_mlp: true, untied: true, ..tiny() }
}

#[test]
fn gpt_options_count_their_parameters_and_round_trip_their_config() {
    let dev = Device::cpu();
    let one = |f: fn(&mut GptConfig)| {
        let mut c = tiny();
        f(&mut c);
        c
    };
    let cfgs = [
        tiny(),
        one(|c| c.rope = true),
        one(|c| c.qk_norm = true),
        one(|c| c.gated_mlp = true),
        one(|c| c.mlp_hidden = 24),
        one(|c| c.untied = true),
        modern(),
    ];
    for cfg in cfgs {
        let m = Gpt::new(&dev, cfg, 1).unwrap();
        let n: usize = m.params().iter().map(|p| p.tensor.numel()).sum();
        assert_eq!(n, cfg.param_count(), "{cfg:?}");
        assert_eq!(GptConfig::from_json(&cfg.to_json()).unwrap(), cfg);
    }
    // The gated MLP keeps the plain one's parameters: hidden 8·width/3, a multiple of 16.
    assert_eq!(GptConfig { gated_mlp: true, width: 128, heads: 4, ..tiny() }.hidden(), 336);
    // Options that are off are not written: the old model's config reads as it always has.
    assert!(modern().to_json().to_string().contains(r#""rope":true"#));
    let e = Gpt::new(&dev, GptConfig { rope: true, width: 12, heads: 4, ..tiny() }, 1).err().unwrap().to_string();
    assert!(e.contains("even head size"), "{e}");
}

#[test]
fn gpt_options_learn_and_reload_to_the_same_score() {
    let dev = Device::cpu();
    let c = gpt_corpus(20_000);
    let (_, held) = c.split();
    let dir = std::env::temp_dir().join(format!("tigel-gpt-options-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("checkpoint.safetensors");
    let m = Gpt::new(&dev, modern(), 3).unwrap();
    let t = GptTrainer::new(&dev, m, &c, gpt_settings(150, Precision::F32), 0).unwrap();
    let l = gpt_losses(&dev, &t, 150);
    let a = Evaluator::new(&dev, &t.model, 8).unwrap().bits_per_char(&dev, &c, held, None).unwrap();
    eprintln!("loss {} -> {}, held-out {a:.3} bits/char", l[0], l[149]);
    assert!(a < 3.5, "held-out bits/char after 150 steps: {a}");
    assert!(l[149] < 0.5 * l[0], "training loss {} -> {}", l[0], l[149]);
    t.save(&dev, &path, &c.name).unwrap();
    let ck = Checkpoint::load(&path).unwrap();
    let m2 = Gpt::load(&dev, &ck, "test").unwrap();
    assert_eq!(m2.cfg, modern());
    let b = Evaluator::new(&dev, &m2, 4).unwrap().bits_per_char(&dev, &c, held, None).unwrap();
    assert_eq!(a, b);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn gpt_options_first_steps_agree_on_cpu_and_gpu() {
    first_steps_agree_on_cpu_and_gpu(modern());
}
