//! Training through the graph executor: a small MLP on the CPU backend and on lavapipe, resume from a
//! checkpoint, and the execution model (one submission per step, no wait inside a step).
mod common;
use common::*;
use tigel::checkpoint::Checkpoint;
use tigel::data::toy::spirals;
use tigel::graph::Graph;
use tigel::models::mlp::{Mlp, MlpConfig};
use tigel::nn::Activation;
use tigel::optim::{OptimizerKind, Schedule};
use tigel::train::{TrainConfig, Trainer};
use tigel::{Device, Tensor};

const N: usize = 64;

fn trainer(dev: &Device, optimizer: OptimizerKind) -> Trainer {
    trainer_with(dev, optimizer, 0.0)
}

/// The spirals MLP; with `p_drop > 0`, dropout after the first hidden layer (a fresh mask each step).
fn trainer_with(dev: &Device, optimizer: OptimizerKind, p_drop: f32) -> Trainer {
    let (xy, labels) = spirals(N, 3);
    let x = Tensor::from_f32(dev, &[N, 2], &xy).unwrap();
    let y = Tensor::from_u32(dev, &[N], &labels).unwrap();
    let mlp = Mlp::new(dev, &MlpConfig { sizes: vec![2, 16, 16, 2], activation: Activation::Gelu }, 7).unwrap();
    let mut g = Graph::new();
    let (xn, yn) = (g.input(&x), g.input(&y));
    let step = tigel::ops::optim::step_counter(dev, 0).unwrap();
    let h = mlp.layers[0].forward(&mut g, xn).unwrap();
    let h = g.unary(tigel::ops::elementwise::Unary::Gelu, h).unwrap();
    let d = tigel::ops::dropout::Dropout::new(p_drop, 99, 0, N * 16).unwrap();
    let h = g.dropout(h, d, &step).unwrap();
    let h = mlp.layers[1].forward(&mut g, h).unwrap();
    let h = g.unary(tigel::ops::elementwise::Unary::Gelu, h).unwrap();
    let logits = mlp.layers[2].forward(&mut g, h).unwrap();
    let loss = g.cross_entropy_mean(logits, yn).unwrap();
    let cfg = TrainConfig {
        optimizer,
        schedule: Schedule::Cosine { lr: 1e-2, warmup: 5, total: 100, min_lr: 1e-3 },
        clip: Some(1.0),
        ema: Some(0.99),
    };
    Trainer::with_step_counter(dev, g, loss, mlp.params(), cfg, step).unwrap()
}

fn adamw() -> OptimizerKind {
    OptimizerKind::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-2 }
}

fn losses(dev: &Device, t: &Trainer, steps: usize) -> Vec<f32> {
    (0..steps)
        .map(|_| {
            t.step(dev).unwrap();
            bytemuck::cast_vec::<u32, f32>(t.read_loss(dev).unwrap().wait().unwrap())[0]
        })
        .collect()
}

#[test]
fn mlp_trains_the_same_on_cpu_and_gpu() {
    let Some(gpu) = gpu() else { return };
    let cpu = cpu();
    for opt in [adamw(), OptimizerKind::Sgd { momentum: 0.9, nesterov: true, weight_decay: 0.0 }] {
        let lc = losses(&cpu, &trainer(&cpu, opt), 50);
        let lg = losses(&gpu, &trainer(&gpu, opt), 50);
        for (i, (c, g)) in lc.iter().zip(&lg).enumerate() {
            assert!((c - g).abs() <= 1e-4 * c.abs(), "{opt:?} step {i}: cpu loss {c}, gpu loss {g}");
        }
        assert!(lc[49] < lc[0], "{opt:?}: the loss did not fall: {} -> {}", lc[0], lc[49]);
    }
}

#[test]
fn dropout_masks_change_per_step_and_agree_across_backends() {
    let Some(gpu) = gpu() else { return };
    let cpu = cpu();
    let lc = losses(&cpu, &trainer_with(&cpu, adamw(), 0.3), 20);
    let lg = losses(&gpu, &trainer_with(&gpu, adamw(), 0.3), 20);
    for (i, (c, g)) in lc.iter().zip(&lg).enumerate() {
        assert!((c - g).abs() <= 1e-4 * c.abs(), "step {i}: cpu loss {c}, gpu loss {g}");
    }
    // Without dropout the same run gives other losses: the masks are in effect.
    let plain = losses(&cpu, &trainer(&cpu, adamw()), 20);
    assert_ne!(plain[0], lc[0]);
}

#[test]
fn one_submission_per_step_and_no_wait() {
    let Some(gpu) = gpu() else { return };
    let t = trainer(&gpu, adamw());
    gpu.flush().unwrap();
    let s0 = gpu.stats();
    for _ in 0..10 {
        t.step(&gpu).unwrap();
    }
    let s1 = gpu.stats();
    assert_eq!(s1.submissions - s0.submissions, 10);
    assert_eq!(s1.blocking_waits, s0.blocking_waits);
    assert_eq!(s1.buffers_created, s0.buffers_created, "a step allocates nothing");
    let p = t.plan();
    assert!(p.planned_peak_bytes() > 0);
    assert!(p.allocated_bytes() as f64 <= 1.5 * p.planned_peak_bytes() as f64 + 64.0 * 1024.0);
}

#[test]
fn resume_is_bit_identical() {
    let mut devs = vec![cpu()];
    devs.extend(gpu());
    for dev in devs {
        let dir = std::env::temp_dir().join(format!("tigel-resume-{}-{}", std::process::id(), dev.backend_name()));
        let path = dir.join("checkpoint.safetensors");
        let straight = losses(&dev, &trainer(&dev, adamw()), 20);

        let first = trainer(&dev, adamw());
        let mut resumed = losses(&dev, &first, 10);
        first.save(&dev, &path, "mlp", serde_json::json!({"sizes": [2, 16, 16, 2]}), serde_json::json!(null)).unwrap();
        drop(first);
        let second = trainer(&dev, adamw()); // fresh weights, overwritten by the checkpoint
        let ck = Checkpoint::load(&path).unwrap();
        assert_eq!(ck.step, 10);
        second.restore(&dev, &ck).unwrap();
        resumed.extend(losses(&dev, &second, 10));
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&straight), bits(&resumed), "{}: resumed losses differ", dev.name());
        std::fs::remove_dir_all(&dir).ok();
    }
}

#[test]
fn restoring_another_models_checkpoint_names_the_tensor() {
    let dev = Device::cpu();
    let dir = std::env::temp_dir().join(format!("tigel-wrong-{}", std::process::id()));
    let path = dir.join("checkpoint.safetensors");
    let a = trainer(&dev, adamw());
    a.save(&dev, &path, "mlp", serde_json::json!({}), serde_json::json!(null)).unwrap();
    let before = std::fs::read(&path).unwrap();
    // Same kind, other optimizer: the state tensors differ.
    let b = trainer(&dev, OptimizerKind::Sgd { momentum: 0.9, nesterov: false, weight_decay: 0.0 });
    let e = b.restore(&dev, &Checkpoint::load(&path).unwrap()).unwrap_err().to_string();
    assert!(e.contains("optim."), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "a failed restore must not touch the file");
    std::fs::remove_dir_all(&dir).ok();
}
