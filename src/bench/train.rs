//! Training-step benchmarks: each regime's step at a fixed config, recorded once and replayed.
//!
//! Reported per model: steps/s and samples/s (replay then wait, median of repeats), the host time spent
//! encoding a replay divided by its dispatches (GPU only: on the CPU backend a replay is the work
//! itself), and the memory plan: planned peak (largest sum of live intermediates), allocated (the
//! buffers the plan holds) and persistent (parameters, inputs, optimizer state are not counted here:
//! the tensors bound into the graph).

use std::time::Instant;

use serde_json::{json, Value};

use crate::data::toy::spirals;
use crate::device::Device;
use crate::error::Result;
use crate::graph::Graph;
use crate::models::mlp::{Mlp, MlpConfig};
use crate::nn::Activation;
use crate::optim::{OptimizerKind, Schedule};
use crate::tensor::Tensor;
use crate::train::{TrainConfig, Trainer};

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
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
    };
    let t = Trainer::new(dev, g, loss, model.params(), cfg)?;
    let plan = t.plan();
    for _ in 0..3 {
        t.step(dev)?;
    }
    dev.wait()?;
    let repeats = if quick { 5 } else { 20 };
    let (mut step_s, mut encode_s) = (Vec::new(), Vec::new());
    let mut phases: [Vec<f64>; 3] = Default::default();
    for _ in 0..repeats {
        let t0 = Instant::now();
        t.step(dev)?;
        encode_s.push(t0.elapsed().as_secs_f64());
        dev.wait()?;
        step_s.push(t0.elapsed().as_secs_f64());
        if let Some(p) = dev.last_replay_cpu_times() {
            for (v, x) in phases.iter_mut().zip([p.record_s, p.finish_s, p.submit_s]) {
                v.push(x);
            }
        }
    }
    let per_dispatch = |v: &mut Vec<f64>| (!v.is_empty()).then(|| median(v) * 1e6 / plan.dispatches() as f64);
    let [rec, fin, sub] = &mut phases;
    let breakdown = json!({
        "record_us_per_dispatch": per_dispatch(rec),
        "finish_us_per_dispatch": per_dispatch(fin),
        "submit_us_per_dispatch": per_dispatch(sub),
    });
    let step = median(&mut step_s);
    let encode_us = (!dev.is_cpu()).then(|| median(&mut encode_s) * 1e6 / plan.dispatches() as f64);
    let v = json!({
        "model": "mlp",
        "config": { "sizes": sizes, "batch": batch, "activation": "gelu", "optimizer": "adamw", "clip": 1.0 },
        "repeats": repeats,
        "step_s": step,
        "steps_per_s": 1.0 / step,
        "samples_per_s": batch as f64 / step,
        "dispatches": plan.dispatches(),
        "encode_us_per_dispatch": encode_us,
        "encode_breakdown": breakdown,
        "planned_peak_bytes": plan.planned_peak_bytes(),
        "allocated_bytes": plan.allocated_bytes(),
        "allocated_over_planned": plan.allocated_bytes() as f64 / plan.planned_peak_bytes().max(1) as f64,
        "persistent_bytes": plan.persistent_bytes,
    });
    if print {
        println!(
            "{:<8} {:>9.2} ms/step {:>10.0} samples/s  {:>4} dispatches  encode {}  planned {:.2} MB, allocated {:.2} MB",
            "mlp",
            step * 1e3,
            batch as f64 / step,
            plan.dispatches(),
            encode_us
                .map(|u| format!(
                    "{u:.2} us/dispatch (record {:.2}, finish {:.2}, submit {:.2})",
                    breakdown["record_us_per_dispatch"].as_f64().unwrap_or(0.0),
                    breakdown["finish_us_per_dispatch"].as_f64().unwrap_or(0.0),
                    breakdown["submit_us_per_dispatch"].as_f64().unwrap_or(0.0)
                ))
                .unwrap_or_else(|| "-".into()),
            plan.planned_peak_bytes() as f64 / 1e6,
            plan.allocated_bytes() as f64 / 1e6
        );
    }
    Ok(v)
}

/// Every training benchmark (the regimes add theirs here).
pub fn run(dev: &Device, quick: bool, print: bool) -> Result<Vec<Value>> {
    Ok(vec![mlp(dev, quick, print)?])
}
