//! Training-step benchmarks: each regime's step at a fixed config, recorded once and replayed.
//!
//! Reported per model: steps/s and samples/s (tokens/s for the GPT; replay then wait, median and
//! min/max of repeats after warm-up steps), the host time spent encoding a replay divided by its
//! dispatches (GPU only: on the CPU backend a replay is the work itself), and the memory plan: planned
//! peak (largest sum of live intermediates), allocated (the buffers the plan holds) and persistent
//! (the tensors bound into the graph: parameters, inputs, optimizer state), and the bytes the step's
//! dispatches bind (`bytes_bound`, about the bytes one step moves).
//!
//! Each report also lists the step's dispatches by kernel (`dispatches_by_kernel`; printed too with
//! `TIGEL_BENCH_KERNELS=1`), to show where fusing kernels would pay.
//!
//! Adding a regime: write `fn my_regime(dev, quick) -> Result<Bench>` that builds its trainer at a fixed
//! config and returns a `Bench` (name, config, what one step processes, its plan and a step closure),
//! and add it to `ENTRIES`. `measure` does the rest.

use std::time::Instant;

use serde_json::{json, Value};

use crate::data::text::Corpus;
use crate::data::toy::spirals;
use crate::device::Device;
use crate::error::Result;
use crate::graph::exec::Plan;
use crate::graph::{Graph, Precision};
use crate::models::ddpm::{self, Arch, Diffusion, DiffusionConfig, DiffusionTrainer, Prediction};
use crate::models::gan::{self, Gan, GanConfig, GanTrainer};
use crate::models::gpt::{Decay, Gpt, GptConfig, GptTrainer, OptimSettings, OptimizerChoice, TrainSettings};
use crate::models::mlp::{Mlp, MlpConfig};
use crate::models::unet::UnetConfig;
use crate::nn::Activation;
use crate::ops::diffusion::Schedule as NoiseSchedule;
use crate::optim::{OptimizerKind, Schedule};
use crate::tensor::Tensor;
use crate::train::{TrainConfig, Trainer};

/// A regime's step, ready to be timed.
pub struct Bench<'a> {
    /// The model's name in the report ("mlp", "gpt", ...).
    pub model: &'static str,
    /// The fixed config, as the report records it.
    pub config: Value,
    /// What one step processes and its unit: (1024, "samples"), (2048, "tokens"), (64, "images").
    pub per_step: (usize, &'static str),
    /// The plans one step replays (one per trainer; a regime with two networks has two).
    pub plans: Vec<&'a Plan>,
    /// One training step (asynchronous on a GPU: `measure` waits).
    pub step: Box<dyn Fn() -> Result<()> + 'a>,
}

/// A training benchmark: builds its trainer, times it (`quick`: fewer repeats) and optionally prints a line.
pub type Entry = fn(&Device, bool, bool) -> Result<Value>;

/// The regimes' benchmarks, in report order: (name, builder run by `run`).
pub const ENTRIES: &[(&str, Entry)] = &[
    ("mlp", mlp),
    ("gpt", gpt),
    ("gpt-default", gpt_default),
    ("gpt-default-mixed", gpt_default_mixed),
    ("dcgan", dcgan),
    ("unet", unet),
];

/// Images for the image regimes: the step cost does not depend on what they show, so random pixels in
/// [-1, 1] from a fixed seed stand in for a data set.
fn random_images(dev: &Device, n: usize, side: usize) -> Result<Vec<f32>> {
    crate::ops::rng::uniform(dev, &[n, 1, side, side], 7, 0, -1.0, 1.0)?.to_f32(dev)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The MLP step: batch 1024 of 2-D points, widths 2-256-256-256-2, GELU, cross-entropy, AdamW with
/// clipping.
pub fn mlp(dev: &Device, quick: bool, print: bool) -> Result<Value> {
    let (batch, width) = (1024usize, 256usize);
    let sizes = vec![2, width, width, width, 2];
    let (xy, labels) = spirals(batch, 0);
    let x = Tensor::from_f32(dev, &[batch, 2], &xy)?;
    let y = Tensor::from_u32(dev, &[batch], &labels)?;
    let model = Mlp::new(dev, &MlpConfig { sizes: sizes.clone(), activation: Activation::Gelu }, 1)?;
    let mut g = Graph::new();
    let (xn, yn) = (g.input(&x), g.input(&y));
    let logits = model.forward(&mut g, xn)?;
    let loss = g.cross_entropy_mean(logits, yn)?;
    let cfg = TrainConfig {
        optimizer: OptimizerKind::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-4 },
        schedule: Schedule::Constant { lr: 1e-3 },
        clip: Some(1.0),
        ema: None,
        loss_scale: None,
    };
    let t = Trainer::new(dev, g, loss, model.params(), cfg)?;
    let b = Bench {
        model: "mlp",
        config: json!({ "sizes": sizes, "batch": batch, "activation": "gelu", "optimizer": "adamw", "clip": 1.0 }),
        per_step: (batch, "samples"),
        plans: vec![t.plan()],
        step: Box::new(|| t.step(dev)),
    };
    measure(dev, &b, quick, print)
}

/// The GPT step: 2 layers, 4 heads, width 128, context 128, batch 8 (1024 tokens per step), on the
/// embedded corpus, windows drawn on the device, AdamW with a cosine schedule and clipping, no dropout,
/// every architecture option off (the classic model, comparable with earlier reports).
pub fn gpt(dev: &Device, quick: bool, print: bool) -> Result<Value> {
    let cfg = GptConfig { layers: 2, heads: 4, width: 128, context: 128, dropout: 0.0, ..GptConfig::default() };
    let s = TrainSettings {
        batch: 8,
        lr: 1e-3,
        min_lr_frac: 0.1,
        warmup: 10,
        steps: 100_000,
        weight_decay: 0.1,
        clip: 1.0,
        seed: 1,
        precision: Precision::F32,
    };
    gpt_bench(dev, "gpt", cfg, s, OptimSettings::default(), quick, print)
}

/// `tigel train gpt`'s default step (src/cmd/gpt/args.rs): 4 layers, 4 heads, width 128, context 128,
/// batch 16, rotary positions, QK norm, gated (SwiGLU) MLP; Muon (lr 0.02, momentum 0.95) on the blocks'
/// matrices and AdamW (lr 5e-3, weight decay 0.1) on the rest, warmup 100 and a linear decay to 0 over
/// 2,630 steps, clipping at 1.0 and the finiteness guard.
pub fn gpt_default(dev: &Device, quick: bool, print: bool) -> Result<Value> {
    gpt_default_at(dev, "gpt-default", Precision::F32, quick, print)
}

/// `gpt_default` with `--precision mixed`: f16 operands for the matrix products (docs/precision.md).
pub fn gpt_default_mixed(dev: &Device, quick: bool, print: bool) -> Result<Value> {
    gpt_default_at(dev, "gpt-default-mixed", Precision::Mixed, quick, print)
}

fn gpt_default_at(dev: &Device, name: &'static str, precision: Precision, quick: bool, print: bool) -> Result<Value> {
    let cfg = GptConfig { rope: true, qk_norm: true, gated_mlp: true, ..GptConfig::default() };
    let s = TrainSettings {
        batch: 16,
        lr: 5e-3,
        min_lr_frac: 0.0,
        warmup: 100,
        steps: 2630,
        weight_decay: 0.1,
        clip: 1.0,
        seed: 1,
        precision,
    };
    let o = OptimSettings {
        optimizer: OptimizerChoice::Muon,
        decay: Decay::Linear,
        cooldown: 1.0,
        muon_lr: 0.02,
        muon_momentum: 0.95,
        ..OptimSettings::default()
    };
    gpt_bench(dev, name, cfg, s, o, quick, print)
}

fn gpt_bench(
    dev: &Device,
    name: &'static str,
    cfg: GptConfig,
    s: TrainSettings,
    o: OptimSettings,
    quick: bool,
    print: bool,
) -> Result<Value> {
    let model = Gpt::new(dev, cfg, s.seed)?;
    let t = GptTrainer::with_optim(dev, model, &Corpus::embedded(), s, o, 0)?;
    let b = Bench {
        model: name,
        config: json!({
            "model": cfg.to_json(), "train": s.to_json(), "params": cfg.param_count(),
            "optim": { "optimizer": format!("{:?}", o.optimizer).to_lowercase(),
                       "decay": format!("{:?}", o.decay).to_lowercase(), "muon_lr": o.muon_lr },
        }),
        per_step: (t.tokens_per_step, "tokens"),
        plans: vec![t.trainer().plan()],
        step: Box::new(|| t.step(dev)),
    };
    measure(dev, &b, quick, print)
}

/// The GAN step: the Fashion-MNIST DCGAN (1×28×28, base width 32, z 64), batch 64; one D update then one
/// G update, each its own recorded plan, Adam (β1 0.5).
pub fn dcgan(dev: &Device, quick: bool, print: bool) -> Result<Value> {
    let cfg = GanConfig { data_shape: vec![1, 28, 28], z_dim: 64, width: 32, depth: 1, pack: 1, scale: 1.0 };
    let s = gan::TrainSettings {
        batch: 64,
        steps: 100_000,
        lr_d: 2e-4,
        lr_g: 2e-4,
        lr_end: 1.0,
        horizon: 100_000,
        lr_hold: 0.0,
        ema: 0.0,
        r1: 0.0,
        d_steps: 1,
        seed: 1,
    };
    let data = gan::TrainData { rows: random_images(dev, 512, 28)?, shape: vec![512, 1, 28, 28] };
    let t = GanTrainer::new(dev, Gan::new(dev, cfg.clone(), 1)?, &data, s, 0)?;
    let b = Bench {
        model: "dcgan",
        config: json!({ "model": cfg.to_json(), "train": s.to_json() }),
        per_step: (s.batch, "images"),
        plans: vec![t.d_trainer().plan(), t.g_trainer().plan()],
        step: Box::new(|| t.step(dev)),
    };
    measure(dev, &b, quick, print)
}

/// The diffusion step: the Fashion-MNIST UNet (base 16, mults 1,2,2, attention at 7×7, 10 classes,
/// v-prediction, cosine schedule with T = 500), batch 32, AdamW with clipping and an EMA.
pub fn unet(dev: &Device, quick: bool, print: bool) -> Result<Value> {
    let base = 16;
    let cfg = DiffusionConfig {
        arch: Arch::Unet(UnetConfig { base, mults: vec![1, 2, 2], attention: true }),
        sample_shape: vec![1, 28, 28],
        timesteps: 500,
        schedule: NoiseSchedule::COSINE,
        prediction: Prediction::V,
        num_classes: 10,
        emb: 4 * base,
        data_scale: 1.0,
    };
    let s = ddpm::TrainSettings {
        batch: 32,
        lr: 1.5e-3,
        warmup: 100,
        steps: 100_000,
        weight_decay: 0.0,
        clip: 1.0,
        ema: 0.999,
        p_uncond: 0.1,
        seed: 1,
    };
    let n = 512;
    let rows = random_images(dev, n, 28)?;
    let labels: Vec<u32> = (0..n as u32).map(|i| i % 10).collect();
    let data = ddpm::TrainData { rows: &rows, labels: Some(&labels) };
    let t = DiffusionTrainer::new(dev, Diffusion::new(dev, cfg.clone(), 1)?, data, s, 0)?;
    let b = Bench {
        model: "unet",
        config: json!({ "model": cfg.to_json(), "train": s.to_json(), "params": t.model.param_count() }),
        per_step: (s.batch, "images"),
        plans: vec![t.trainer().plan()],
        step: Box::new(|| t.step(dev)),
    };
    measure(dev, &b, quick, print)
}

/// Times `b`'s step: 3 warm-up steps, then 5 (quick) or 20 timed ones, each waited for.
pub fn measure(dev: &Device, b: &Bench, quick: bool, print: bool) -> Result<Value> {
    let dispatches: usize = b.plans.iter().map(|p| p.dispatches()).sum::<usize>().max(1);
    let planned: u64 = b.plans.iter().map(|p| p.planned_peak_bytes()).sum();
    let allocated: u64 = b.plans.iter().map(|p| p.allocated_bytes()).sum();
    let bound: u64 = b.plans.iter().map(|p| p.bytes_bound()).sum();
    let persistent: u64 = b.plans.iter().map(|p| p.persistent_bytes).sum();
    let by_kernel = dispatch_counts(&b.plans);
    for _ in 0..3 {
        (b.step)()?;
    }
    dev.wait()?;
    let repeats = if quick { 5 } else { 20 };
    let (mut step_s, mut encode_s) = (Vec::new(), Vec::new());
    let mut phases: [Vec<f64>; 3] = Default::default();
    for _ in 0..repeats {
        let t0 = Instant::now();
        (b.step)()?;
        encode_s.push(t0.elapsed().as_secs_f64());
        dev.wait()?;
        step_s.push(t0.elapsed().as_secs_f64());
        if let Some(p) = dev.last_replay_cpu_times() {
            for (v, x) in phases.iter_mut().zip([p.record_s, p.finish_s, p.submit_s]) {
                v.push(x);
            }
        }
    }
    let per_dispatch = |v: &mut Vec<f64>| (!v.is_empty()).then(|| median(v) * 1e6 / dispatches as f64);
    let [rec, fin, sub] = &mut phases;
    let breakdown = json!({
        "record_us_per_dispatch": per_dispatch(rec),
        "finish_us_per_dispatch": per_dispatch(fin),
        "submit_us_per_dispatch": per_dispatch(sub),
    });
    let step = median(&mut step_s);
    let (min_s, max_s) = (step_s[0], step_s[step_s.len() - 1]);
    let encode_us = (!dev.is_cpu()).then(|| median(&mut encode_s) * 1e6 / dispatches as f64);
    let (per_step, unit) = b.per_step;
    let v = json!({
        "model": b.model,
        "config": b.config,
        "repeats": repeats,
        "step_s": step,
        "step_min_s": min_s,
        "step_max_s": max_s,
        "steps_per_s": 1.0 / step,
        "unit": unit,
        "per_step": per_step,
        "samples_per_s": per_step as f64 / step,
        "dispatches": dispatches,
        "dispatches_by_kernel": by_kernel.iter().map(|(k, n)| json!([k, n])).collect::<Vec<_>>(),
        "encode_us_per_dispatch": encode_us,
        "encode_breakdown": breakdown,
        "planned_peak_bytes": planned,
        "allocated_bytes": allocated,
        "allocated_over_planned": allocated as f64 / planned.max(1) as f64,
        "persistent_bytes": persistent,
        "bytes_bound": bound,
    });
    if print {
        println!(
            "{:<8} {:>9.2} ms/step (min {:.2}, max {:.2}) {:>10.0} {unit}/s  {:>4} dispatches  encode {}  planned {:.2} MB, allocated {:.2} MB, bound {:.1} MB",
            b.model,
            step * 1e3,
            min_s * 1e3,
            max_s * 1e3,
            per_step as f64 / step,
            dispatches,
            encode_us
                .map(|u| format!(
                    "{u:.2} us/dispatch (record {:.2}, finish {:.2}, submit {:.2})",
                    breakdown["record_us_per_dispatch"].as_f64().unwrap_or(0.0),
                    breakdown["finish_us_per_dispatch"].as_f64().unwrap_or(0.0),
                    breakdown["submit_us_per_dispatch"].as_f64().unwrap_or(0.0)
                ))
                .unwrap_or_else(|| "-".into()),
            planned as f64 / 1e6,
            allocated as f64 / 1e6,
            bound as f64 / 1e6
        );
    }
    if print && std::env::var_os("TIGEL_BENCH_KERNELS").is_some() {
        let list: Vec<String> = by_kernel.iter().map(|(k, n)| format!("{n} {k}")).collect();
        println!("         by kernel: {}", list.join(", "));
    }
    Ok(v)
}

/// The plans' dispatches by kernel, summed over the plans, most frequent first.
fn dispatch_counts(plans: &[&Plan]) -> Vec<(String, usize)> {
    let mut m = std::collections::BTreeMap::<String, usize>::new();
    for p in plans {
        for (k, n) in p.dispatch_counts() {
            *m.entry(k).or_default() += n;
        }
    }
    let mut v: Vec<(String, usize)> = m.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

/// Every training benchmark of `ENTRIES`.
pub fn run(dev: &Device, quick: bool, print: bool) -> Result<Vec<Value>> {
    ENTRIES.iter().map(|(_, f)| f(dev, quick, print)).collect()
}
