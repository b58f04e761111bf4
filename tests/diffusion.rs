//! The diffusion regime: the MLP and UNet denoisers train, agree across backends, resume exactly, learn
//! a mixture, sample with DDPM and DDIM (and guidance), and refuse bad input with errors that name it.
mod common;
use common::*;
use tigel::checkpoint::Checkpoint;
use tigel::data::mixture::Mixture;
use tigel::metrics::mixture_metrics;
use tigel::models::ddpm::{
    ddim_timesteps, mixture_scale, Arch, Diffusion, DiffusionConfig, DiffusionTrainer, Prediction, SampleSettings,
    Sampler, SamplerKind, TrainData, TrainSettings,
};
use tigel::models::unet::UnetConfig;
use tigel::ops::diffusion::Schedule;
use tigel::Device;

fn mlp(hidden: usize, layers: usize, timesteps: usize, scale: f32) -> DiffusionConfig {
    DiffusionConfig {
        arch: Arch::Mlp { hidden, layers },
        sample_shape: vec![2],
        timesteps,
        schedule: Schedule::COSINE,
        prediction: Prediction::Eps,
        num_classes: 0,
        emb: hidden,
        data_scale: scale,
    }
}

fn unet(classes: usize) -> DiffusionConfig {
    DiffusionConfig {
        arch: Arch::Unet(UnetConfig { base: 8, mults: vec![1, 2], attention: true }),
        sample_shape: vec![1, 8, 8],
        timesteps: 100,
        schedule: Schedule::LINEAR,
        prediction: Prediction::Eps,
        num_classes: classes,
        emb: 16,
        data_scale: 1.0,
    }
}

fn settings(batch: usize, steps: u32, lr: f32) -> TrainSettings {
    TrainSettings { batch, lr, warmup: 2, steps, weight_decay: 0.0, clip: 1.0, ema: 0.99, p_uncond: 0.1, seed: 5 }
}

/// Small images with structure (a bright square whose place depends on the label), in [-1, 1].
fn images(n: usize) -> (Vec<f32>, Vec<u32>) {
    let mut px = Vec::with_capacity(n * 64);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let l = (i % 3) as u32;
        for y in 0..8 {
            for x in 0..8 {
                let on = (y / 3) as u32 == l && (2..6).contains(&x);
                px.push(if on { 0.9 } else { -0.8 + 0.01 * ((i * 7 + x * 3 + y) % 5) as f32 });
            }
        }
        labels.push(l);
    }
    (px, labels)
}

fn ring_rows(n: usize, scale: f32) -> Vec<f32> {
    Mixture::Ring8.sample(n, 3, 0).into_iter().map(|v| v / scale).collect()
}

fn losses(dev: &Device, t: &DiffusionTrainer, steps: usize) -> Vec<f32> {
    (0..steps)
        .map(|_| {
            t.step(dev).unwrap();
            f32::from_bits(t.read_loss(dev).unwrap().wait().unwrap()[0])
        })
        .collect()
}

fn assert_steps_agree(a: &[f32], b: &[f32]) {
    for (s, (x, y)) in a.iter().zip(b).enumerate() {
        // f32 kernels with different summation orders, a few optimizer steps deep.
        assert!(((x - y) / x).abs() <= 1e-4, "step {s}: cpu loss {x}, gpu loss {y}");
    }
}

#[test]
fn mlp_first_steps_agree_on_cpu_and_gpu() {
    let Some(gpu) = gpu() else { return };
    let scale = mixture_scale(&Mixture::Ring8.modes());
    let rows = ring_rows(500, scale);
    for prediction in [Prediction::Eps, Prediction::V] {
        let run = |dev: &Device| {
            let cfg = DiffusionConfig { prediction, ..mlp(32, 2, 100, scale) };
            let m = Diffusion::new(dev, cfg, 11).unwrap();
            let t = DiffusionTrainer::new(dev, m, TrainData { rows: &rows, labels: None }, settings(16, 5, 3e-3), 0)
                .unwrap();
            losses(dev, &t, 5)
        };
        let (a, b) = (run(&cpu()), run(&gpu));
        eprintln!("{prediction:?}: cpu {a:?}\ngpu {b:?}");
        assert_steps_agree(&a, &b);
    }
}

#[test]
fn unet_first_steps_agree_on_cpu_and_gpu() {
    let Some(gpu) = gpu() else { return };
    let (px, labels) = images(12);
    let run = |dev: &Device| {
        let m = Diffusion::new(dev, unet(3), 4).unwrap();
        let data = TrainData { rows: &px, labels: Some(&labels) };
        let t = DiffusionTrainer::new(dev, m, data, settings(3, 3, 2e-3), 0).unwrap();
        losses(dev, &t, 3)
    };
    let (a, b) = (run(&cpu()), run(&gpu));
    eprintln!("cpu {a:?}\ngpu {b:?}");
    assert_steps_agree(&a, &b);
}

/// A short ring8 run on the CPU backend: the loss falls and the DDIM samples find the ring's modes.
#[test]
fn ring8_training_lowers_the_loss_and_finds_the_modes() {
    let dev = Device::cpu();
    let scale = mixture_scale(&Mixture::Ring8.modes());
    let rows = ring_rows(20_000, scale);
    let m = Diffusion::new(&dev, mlp(64, 2, 100, scale), 2).unwrap();
    // Untrained: samples are noise, nowhere near the 8 narrow modes.
    let s =
        SampleSettings { sampler: SamplerKind::Ddpm, label: None, guidance: 1.0, seed: 9, clip: 0.0, keep_at: vec![] };
    let before =
        mixture_metrics(&Sampler::new(&dev, &m).unwrap().sample(&dev, 500, 500, &s).unwrap().x, Mixture::Ring8)
            .unwrap();
    let t =
        DiffusionTrainer::new(&dev, m, TrainData { rows: &rows, labels: None }, settings(128, 2000, 3e-3), 0).unwrap();
    let l = losses(&dev, &t, 2000);
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
    let (first, last) = (mean(&l[..100]), mean(&l[1900..]));
    eprintln!("loss {first} -> {last}");
    assert!(last < 0.7 * first, "loss {first} -> {last}");
    let ema = t.ema_model(&dev).unwrap();
    let x = Sampler::new(&dev, &ema).unwrap().sample(&dev, 500, 500, &s).unwrap().x;
    let after = mixture_metrics(&x, Mixture::Ring8).unwrap();
    eprintln!("before {before:?}\nafter {after:?}");
    // Seconds of training on a tiny model: every mode found, evenly, a good share of the samples within
    // 3 std (0.06) of one (untrained: none); the full-size default gets near all of them (benchmarks.md).
    assert!(after.modes_covered == 8 && after.reverse_kl < 0.2, "{after:?}");
    assert!(after.high_quality > 0.15 && before.high_quality < 0.01, "{before:?} -> {after:?}");
    assert!(after.mean_log_density > -100.0, "{after:?}");
}

/// N steps, a checkpoint, N more from it: the same losses, bit for bit, as 2N steps in one run.
#[test]
fn resume_continues_bit_identically() {
    let dev = Device::cpu();
    let scale = mixture_scale(&Mixture::Ring8.modes());
    let rows = ring_rows(1000, scale);
    let (px, labels) = images(12);
    let cases: Vec<(DiffusionConfig, TrainData, usize)> = vec![
        (mlp(32, 2, 100, scale), TrainData { rows: &rows, labels: None }, 16),
        (unet(3), TrainData { rows: &px, labels: Some(&labels) }, 3),
    ];
    for (cfg, data, b) in cases {
        let n = 4u32;
        let data2 = TrainData { rows: data.rows, labels: data.labels };
        let data3 = TrainData { rows: data.rows, labels: data.labels };
        let whole = {
            let m = Diffusion::new(&dev, cfg.clone(), 1).unwrap();
            let t = DiffusionTrainer::new(&dev, m, data, settings(b, 2 * n, 2e-3), 0).unwrap();
            losses(&dev, &t, 2 * n as usize)
        };
        let path = std::env::temp_dir().join(format!("tigel-ddpm-resume-{}-{b}.safetensors", std::process::id()));
        let first = {
            let m = Diffusion::new(&dev, cfg.clone(), 1).unwrap();
            let t = DiffusionTrainer::new(&dev, m, data2, settings(b, 2 * n, 2e-3), 0).unwrap();
            let l = losses(&dev, &t, n as usize);
            t.save(&dev, &path, "test").unwrap();
            l
        };
        let ck = Checkpoint::load(&path).unwrap();
        assert_eq!(ck.step, n as u64);
        // Fresh weights (another seed), then everything from the checkpoint: weights, AdamW moments, EMA
        // and the step counter, which also drives the batch, timestep and noise draws. The learning-rate
        // schedule is built for the same 2N steps as the whole run.
        let m = Diffusion::new(&dev, cfg.clone(), 99).unwrap();
        let second = {
            let t = DiffusionTrainer::new(&dev, m, data3, settings(b, 2 * n, 2e-3), 0).unwrap();
            t.restore(&dev, &ck).unwrap();
            losses(&dev, &t, n as usize)
        };
        let _ = std::fs::remove_file(&path);
        let joined: Vec<u32> = first.iter().chain(&second).map(|v| v.to_bits()).collect();
        let whole: Vec<u32> = whole.iter().map(|v| v.to_bits()).collect();
        assert_eq!(joined, whole, "{:?}: resumed losses differ from one run", cfg.arch);
    }
}

/// DDIM with K = T visits every timestep; it is deterministic (same noise, same samples, bit for bit), a
/// different seed gives different samples; on data that are one point, a trained model's DDIM samples
/// land on it, and K = 10 steps land where K = T does.
#[test]
fn ddim_properties() {
    assert_eq!(ddim_timesteps(50, 50).unwrap(), (0..50).rev().collect::<Vec<_>>());
    assert_eq!(ddim_timesteps(100, 5).unwrap(), vec![99, 74, 50, 25, 0]);
    assert_eq!(ddim_timesteps(10, 1).unwrap(), vec![9]);
    assert!(ddim_timesteps(10, 11).unwrap_err().to_string().contains("11"));
    assert!(ddim_timesteps(10, 0).is_err());

    let dev = Device::cpu();
    let point = [0.5f32, -0.3];
    let rows: Vec<f32> = (0..256).flat_map(|_| point).collect();
    let cfg = mlp(32, 2, 50, 1.0);
    let m = Diffusion::new(&dev, cfg, 3).unwrap();
    let t =
        DiffusionTrainer::new(&dev, m, TrainData { rows: &rows, labels: None }, settings(64, 1500, 3e-3), 0).unwrap();
    losses(&dev, &t, 1500);
    let model = t.ema_model(&dev).unwrap();
    let sampler = Sampler::new(&dev, &model).unwrap();
    // DDIM's first-order step and the second-order multistep update alike.
    for order in [1usize, 2] {
        let s = |k: usize, seed: u64| SampleSettings {
            sampler: SamplerKind::Ddim { steps: k, order },
            label: None,
            guidance: 1.0,
            seed,
            clip: 0.0,
            keep_at: vec![],
        };
        let a = sampler.sample(&dev, 64, 64, &s(50, 1)).unwrap().x;
        let b = sampler.sample(&dev, 64, 64, &s(50, 1)).unwrap().x;
        let c = sampler.sample(&dev, 64, 64, &s(50, 2)).unwrap().x;
        let k10 = sampler.sample(&dev, 64, 64, &s(10, 1)).unwrap().x;
        assert_eq!(a, b, "DDIM is deterministic");
        assert_ne!(a, c, "another seed, other samples");
        let mean_dist = |x: &[f32], to: &dyn Fn(usize) -> [f32; 2]| {
            x.chunks(2)
                .enumerate()
                .map(|(i, p)| ((p[0] - to(i)[0]).powi(2) + (p[1] - to(i)[1]).powi(2)).sqrt())
                .sum::<f32>()
                / (x.len() / 2) as f32
        };
        let to_point = mean_dist(&a, &|_| point);
        let k10_to_kt = mean_dist(&k10, &|i| [a[2 * i], a[2 * i + 1]]);
        eprintln!("DDIM order {order}, K=T: mean distance to the point {to_point}; K=10 to K=T {k10_to_kt}");
        assert!(to_point < 0.1, "{to_point}");
        assert!(k10_to_kt < 0.1, "{k10_to_kt}");
        // DDPM (ancestral) lands there too, by another path.
        let ddpm = SampleSettings { sampler: SamplerKind::Ddpm, ..s(1, 1) };
        let d = sampler.sample(&dev, 64, 64, &ddpm).unwrap().x;
        assert!(mean_dist(&d, &|_| point) < 0.1);
    }
}

/// A class-conditional UNet trains with label dropout; guided sampling runs and gives images of the
/// label's class: the bright band sits where that label puts it.
#[test]
fn conditional_unet_and_guidance() {
    let dev = Device::cpu();
    let (px, labels) = images(60);
    let m = Diffusion::new(&dev, unet(3), 8).unwrap();
    let data = TrainData { rows: &px, labels: Some(&labels) };
    let t = DiffusionTrainer::new(&dev, m, data, settings(12, 150, 3e-3), 0).unwrap();
    let l = losses(&dev, &t, 150);
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
    assert!(mean(&l[130..]) < 0.6 * mean(&l[..20]), "{:?}", l);
    let model = t.ema_model(&dev).unwrap();
    let sampler = Sampler::new(&dev, &model).unwrap();
    for label in 0..3u32 {
        let s = SampleSettings {
            sampler: SamplerKind::Ddim { steps: 20, order: 1 },
            label: Some(label),
            guidance: 3.0,
            seed: 4,
            clip: 1.0,
            keep_at: vec![],
        };
        let x = sampler.sample(&dev, 8, 8, &s).unwrap().x;
        // Mean brightness of each band of rows (0-2, 3-5, 6-7) over the middle columns: the label's is highest.
        let band = |b: usize| {
            let mut acc = 0.0;
            let mut cnt = 0;
            for img in x.chunks(64) {
                for y in (3 * b)..(3 * b + 3).min(8) {
                    for xx in 2..6 {
                        acc += img[y * 8 + xx];
                        cnt += 1;
                    }
                }
            }
            acc / cnt as f32
        };
        let bands = [band(0), band(1), band(2)];
        eprintln!("label {label}: band brightness {bands:?}");
        let best = (0..3).max_by(|&a, &b| bands[a].total_cmp(&bands[b])).unwrap();
        assert_eq!(best, label as usize, "{bands:?}");
    }
}

#[test]
fn bad_input_is_refused_with_a_clear_error() {
    let dev = Device::cpu();
    let e = Diffusion::new(&dev, mlp(32, 2, 0, 1.0), 0).err().unwrap().to_string();
    assert!(e.contains("--timesteps"), "{e}");
    let e = Diffusion::new(&dev, DiffusionConfig { emb: 16, ..mlp(32, 2, 10, 1.0) }, 0).err().unwrap().to_string();
    assert!(e.contains("32") && e.contains("16"), "{e}");
    let e =
        Diffusion::new(&dev, DiffusionConfig { sample_shape: vec![1, 7, 7], ..unet(0) }, 0).err().unwrap().to_string();
    assert!(e.contains("divisible"), "{e}");

    let plain = Diffusion::new(&dev, mlp(16, 1, 10, 1.0), 0).unwrap();
    let sampler = Sampler::new(&dev, &plain).unwrap();
    let base =
        SampleSettings { sampler: SamplerKind::Ddpm, label: None, guidance: 1.0, seed: 1, clip: 0.0, keep_at: vec![] };
    let e = sampler.check(&SampleSettings { guidance: 3.0, ..base.clone() }).unwrap_err().to_string();
    assert!(e.contains("--guidance") && e.contains("conditional"), "{e}");
    let e = sampler.check(&SampleSettings { label: Some(0), ..base.clone() }).unwrap_err().to_string();
    assert!(e.contains("--label") && e.contains("conditional"), "{e}");
    let e = sampler.check(&SampleSettings { sampler: SamplerKind::ddim(11), ..base.clone() }).unwrap_err();
    assert!(e.to_string().contains("11"), "{e}");

    let cond = Diffusion::new(&dev, unet(3), 0).unwrap();
    let sampler = Sampler::new(&dev, &cond).unwrap();
    let e = sampler.check(&SampleSettings { label: Some(3), ..base.clone() }).unwrap_err().to_string();
    assert!(e.contains("label 3") && e.contains("3 classes"), "{e}");

    // Labels out of range, or missing, for a conditional model.
    let (px, mut labels) = images(6);
    labels[2] = 7;
    let e = DiffusionTrainer::new(&dev, cond, TrainData { rows: &px, labels: Some(&labels) }, settings(2, 1, 1e-3), 0)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("labels below 3"), "{e}");
    let cond = Diffusion::new(&dev, unet(3), 0).unwrap();
    let e = DiffusionTrainer::new(&dev, cond, TrainData { rows: &px, labels: None }, settings(2, 1, 1e-3), 0)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("needs labels"), "{e}");

    // A checkpoint of another kind.
    let path = std::env::temp_dir().join(format!("tigel-ddpm-kind-{}.safetensors", std::process::id()));
    Checkpoint::new("gpt", serde_json::json!({})).save(&path).unwrap();
    let ck = Checkpoint::load(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let e = Diffusion::load(&dev, &ck, "`tigel sample diffusion`").err().unwrap().to_string();
    assert!(e.contains("gpt") && e.contains("diffusion"), "{e}");
}

/// Configs keep their JSON layout (arch by kind, schedule and prediction by name) with every f32 as
/// given, and the widened values older checkpoints hold still load.
#[test]
fn configs_keep_their_layout_and_write_values_as_given() {
    let m = DiffusionConfig { data_scale: 1.3, ..mlp(32, 2, 50, 1.0) };
    assert_eq!(
        m.to_json().to_string(),
        r#"{"arch":{"hidden":32,"kind":"mlp","layers":2},"data_scale":1.3,"emb":32,"num_classes":0,"prediction":"eps","sample_shape":[2],"schedule":"cosine","timesteps":50}"#
    );
    let u = DiffusionConfig { prediction: Prediction::V, ..unet(3) };
    assert_eq!(
        u.to_json().to_string(),
        r#"{"arch":{"kind":"unet","unet":{"attention":true,"base":8,"mults":[1,2]}},"data_scale":1.0,"emb":16,"num_classes":3,"prediction":"v","sample_shape":[1,8,8],"schedule":"linear","timesteps":100}"#
    );
    for c in [&m, &u] {
        assert_eq!(&DiffusionConfig::from_json(&c.to_json()).unwrap(), c);
    }
    let mut old = m.to_json();
    old["data_scale"] = serde_json::json!(1.2999999523162842);
    assert_eq!(DiffusionConfig::from_json(&old).unwrap(), m);
    assert_eq!(
        settings(4, 10, 2e-3).to_json().to_string(),
        r#"{"batch":4,"clip":1.0,"ema":0.99,"lr":0.002,"p_uncond":0.1,"seed":5,"steps":10,"warmup":2,"weight_decay":0.0}"#
    );
    old["schedule"] = "quadratic".into();
    assert!(DiffusionConfig::from_json(&old).unwrap_err().to_string().contains("choose linear or cosine"));
}

/// The default UNet follows from the image size: the levels the docs list, and for sizes no level can
/// halve (odd, non-square, tiny) a UNet that still builds and trains.
#[test]
fn unet_for_image_fits_any_size() {
    let levels = |h, w| {
        let u = UnetConfig::for_image(h, w);
        (u.mults, u.attention)
    };
    assert_eq!(levels(8, 8), (vec![1, 2], true));
    assert_eq!(levels(16, 16), (vec![1, 2, 2], true));
    assert_eq!(levels(28, 28), (vec![1, 2, 2], true), "the measured Fashion-MNIST layout");
    assert_eq!(levels(32, 32), (vec![1, 2, 2, 2], true));
    assert_eq!(levels(64, 64), (vec![1, 2, 2, 2], true));
    assert_eq!(levels(9, 9), (vec![1], true));
    assert_eq!(levels(12, 20), (vec![1, 2], true));
    assert_eq!(levels(256, 256), (vec![1, 2, 2, 2], false), "32x32 at the lowest level: no attention");
    for h in 1..=70 {
        for w in [h, h + 1, 2 * h] {
            UnetConfig::for_image(h, w).validate(1, h, w).unwrap_or_else(|e| panic!("{h}x{w}: {e}"));
        }
    }
    let dev = Device::cpu();
    for (c, h, w) in [(1, 9, 9), (3, 6, 10), (1, 16, 16)] {
        let u = UnetConfig::for_image(h, w);
        let cfg = DiffusionConfig { arch: Arch::Unet(u), sample_shape: vec![c, h, w], ..unet(0) };
        cfg.validate().unwrap();
        let n = 6;
        let px: Vec<f32> = (0..n * c * h * w).map(|i| ((i * 37 % 17) as f32 / 8.0) - 1.0).collect();
        let m = Diffusion::new(&dev, cfg, 3).unwrap();
        let t = DiffusionTrainer::new(&dev, m, TrainData { rows: &px, labels: None }, settings(2, 2, 2e-3), 0).unwrap();
        let l = losses(&dev, &t, 2);
        assert!(l.iter().all(|v| v.is_finite() && *v > 0.0), "{c}x{h}x{w}: losses {l:?}");
    }
}
