//! Samplers that never diverge: a 2-D ε-model under the cosine schedule with T = 1000 (the setting whose
//! DDPM samples once flew off to 1e10 and whose DDIM-50 samples mostly left the ring) keeps every sample
//! within the data's extent with DDPM and DDIM-50 at several seeds, and DDIM-50 scores close to DDPM; so
//! does every other sampler and step count on ε- and v-models.
mod common;
use tigel::checkpoint::Checkpoint;
use tigel::data::mixture::Mixture;
use tigel::metrics::{mixture_metrics, MixtureMetrics};
use tigel::models::ddpm::{
    mixture_extent, mixture_scale, Arch, Diffusion, DiffusionConfig, DiffusionTrainer, Prediction, SampleSettings,
    Sampler, SamplerKind, TrainData, TrainSettings,
};
use tigel::ops::diffusion::Schedule;
use tigel::Device;

fn ring8_model(dev: &Device, steps: u32) -> DiffusionTrainer {
    ring8_model_predicting(dev, steps, Prediction::Eps)
}

fn ring8_model_predicting(dev: &Device, steps: u32, prediction: Prediction) -> DiffusionTrainer {
    let scale = mixture_scale(&Mixture::Ring8.modes());
    let cfg = DiffusionConfig {
        arch: Arch::Mlp { hidden: 64, layers: 2 },
        sample_shape: vec![2],
        timesteps: 1000,
        schedule: Schedule::COSINE,
        prediction,
        num_classes: 0,
        emb: 64,
        data_scale: scale,
    };
    let rows: Vec<f32> = Mixture::Ring8.sample(20_000, 3, 0).into_iter().map(|v| v / scale).collect();
    let s = TrainSettings {
        batch: 256,
        lr: 3e-3,
        warmup: 50,
        steps,
        weight_decay: 0.0,
        clip: 1.0,
        ema: 0.99,
        p_uncond: 0.1,
        seed: 7,
    };
    let m = Diffusion::new(dev, cfg, 3).unwrap();
    let t = DiffusionTrainer::new(dev, m, TrainData { rows: &rows, labels: None }, s, 0).unwrap();
    for _ in 0..steps {
        t.step(dev).unwrap();
    }
    t
}

#[test]
fn ring8_samples_stay_within_the_data_with_ddpm_and_ddim() {
    let dev = Device::cpu();
    let t = ring8_model(&dev, 1500);
    let model = t.ema_model(&dev).unwrap();
    // The model records its data's extent (model units: ring radius 2 / scale √2, plus the modes' spread).
    let r = model.x0_range.expect("a trained 2-D model knows its data's range");
    assert!((1.41..1.6).contains(&r), "{r}");
    let sampler = Sampler::new(&dev, &model).unwrap();
    // Data at radius 2 (std 0.02): x̂_0 clamped to the data's box keeps samples within its corners, 2.2·√2.
    let bound = 3.0f32;
    let mut hq = [0.0f64; 2];
    for (k, kind) in [SamplerKind::Ddpm, SamplerKind::Ddim { steps: 50, order: 1 }].into_iter().enumerate() {
        for seed in [1u64, 2, 3] {
            let s = SampleSettings { sampler: kind, label: None, guidance: 1.0, seed, clip: 0.0, keep_at: vec![] };
            let x = sampler.sample(&dev, 2000, 1000, &s).unwrap().x;
            let far = x.chunks(2).map(|p| (p[0] * p[0] + p[1] * p[1]).sqrt()).fold(0.0f32, |a, b| a.max(b));
            let out =
                x.chunks(2).map(|p| (p[0] * p[0] + p[1] * p[1]).sqrt()).filter(|r| r.is_nan() || *r > bound).count();
            let m = mixture_metrics(&x, Mixture::Ring8).unwrap();
            eprintln!("{kind:?} seed {seed}: {out} outside radius {bound} (farthest {far}), {m:?}");
            assert_eq!(out, 0, "{kind:?} seed {seed}: {out} samples outside radius {bound}, farthest at {far}");
            assert_eq!(m.modes_covered, 8, "{kind:?} seed {seed}: {m:?}");
            assert!(m.mean_log_density.is_finite(), "{kind:?} seed {seed}: {m:?}");
            hq[k] += m.high_quality / 3.0;
        }
    }
    // DDIM-50 is as good as DDPM over all 1000 steps, within 0.1 of its high-quality fraction.
    assert!(hq[1] > hq[0] - 0.1, "high quality: DDPM {} DDIM-50 {}", hq[0], hq[1]);
}

/// Samples and their mixture metrics: 2,000 per seed, one batch as `eval` draws them; none may lie
/// outside radius 3 (the data are at radius 2) and, where `all_modes`, every mode is found.
fn bounded_metrics(dev: &Device, sampler: &Sampler, kind: SamplerKind, seed: u64, all_modes: bool) -> MixtureMetrics {
    let s = SampleSettings { sampler: kind, label: None, guidance: 1.0, seed, clip: 0.0, keep_at: vec![] };
    let x = sampler.sample(dev, 2000, 2000, &s).unwrap().x;
    let radii: Vec<f32> = x.chunks(2).map(|p| (p[0] * p[0] + p[1] * p[1]).sqrt()).collect();
    let far = radii.iter().fold(0.0f32, |a, &b| a.max(b));
    let out = radii.iter().filter(|r| r.is_nan() || **r > 3.0).count();
    let m = mixture_metrics(&x, Mixture::Ring8).unwrap();
    eprintln!("{kind:?} seed {seed}: {out} outside radius 3 (farthest {far}), {m:?}");
    assert_eq!(out, 0, "{kind:?} seed {seed}: {out} samples outside radius 3, farthest at {far}");
    assert!(m.mean_log_density.is_finite(), "{kind:?} seed {seed}: {m:?}");
    if all_modes {
        assert_eq!(m.modes_covered, 8, "{kind:?} seed {seed}: {m:?}");
    }
    m
}

/// Every sampler tigel offers (DDPM; DDIM first and second order at 10, 50 and 200 steps) on models of
/// each prediction target keeps every sample within the data's bound at seeds 1-3, and the default
/// DDIM-50 (second order) finds every mode with high quality within 0.1 of DDPM's (seed averages, the
/// margin of the test above). The mean log-density is not compared: on this small model every DDIM scores
/// 1-8 nats below DDPM (docs/benchmarks.md has the trained models' figures, where DDIM-50 matches DDPM).
#[test]
fn every_sampler_and_target_stays_bounded_and_ddim50_matches_ddpm() {
    let dev = Device::cpu();
    for prediction in [Prediction::Eps, Prediction::V] {
        let model = ring8_model_predicting(&dev, 1500, prediction).ema_model(&dev).unwrap();
        let sampler = Sampler::new(&dev, &model).unwrap();
        let mean = |kind: SamplerKind, all_modes: bool| {
            let ms: Vec<MixtureMetrics> =
                (1..=3).map(|seed| bounded_metrics(&dev, &sampler, kind, seed, all_modes)).collect();
            let avg = |f: fn(&MixtureMetrics) -> f64| ms.iter().map(f).sum::<f64>() / 3.0;
            (avg(|m| m.high_quality), avg(|m| m.mean_log_density))
        };
        let ddpm = mean(SamplerKind::Ddpm, true);
        for steps in [10, 50, 200] {
            mean(SamplerKind::Ddim { steps, order: 1 }, false);
        }
        for steps in [10, 200] {
            mean(SamplerKind::ddim(steps), false);
        }
        let ddim = mean(SamplerKind::ddim(50), true);
        eprintln!("{prediction:?}: (high quality, mean log-density) DDPM {ddpm:?}, DDIM-50 {ddim:?}");
        assert!(ddim.0 > ddpm.0 - 0.1, "{prediction:?}: DDPM {ddpm:?} DDIM-50 {ddim:?}");
    }
}

#[test]
fn checkpoints_keep_the_data_range_and_old_ones_get_the_mixtures() {
    let dev = Device::cpu();
    let t = ring8_model(&dev, 2);
    let path = std::env::temp_dir().join(format!("tigel-ddpm-range-{}.safetensors", std::process::id()));
    t.save(&dev, &path, "ring8").unwrap();
    let mut ck = Checkpoint::load(&path).unwrap();
    std::fs::remove_file(&path).ok();
    let saved = Diffusion::load(&dev, &ck, "test").unwrap().x0_range;
    assert_eq!(saved, t.model.x0_range);
    // A checkpoint written before the range was recorded: the named mixture's extent stands in.
    ck.config.as_object_mut().unwrap().remove("x0_range");
    let old = Diffusion::load(&dev, &ck, "test").unwrap().x0_range.unwrap();
    let want = mixture_extent(&Mixture::Ring8.modes(), Mixture::Ring8.std()) / mixture_scale(&Mixture::Ring8.modes());
    assert!((old - want).abs() < 1e-6 && (old - saved.unwrap()).abs() < 0.05, "{old} {want} {saved:?}");
}
