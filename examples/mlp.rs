//! Trains a small MLP to separate two interleaved spirals, through tigel's public API.
//!
//!     cargo run --release --example mlp            # TIGEL_BACKEND=vulkan|cpu|... to choose
//!
//! The whole step (forward, backward, AdamW update) is recorded once and replayed: one submission per
//! step on a GPU, and the loss is read back only every 100 steps.

use tigel::data::toy::spirals;
use tigel::graph::{Graph, Plan};
use tigel::models::mlp::{Mlp, MlpConfig};
use tigel::nn::Activation;
use tigel::optim::{OptimizerKind, Schedule};
use tigel::train::{TrainConfig, Trainer};
use tigel::{Device, Result, Tensor};

const N: usize = 512;
const STEPS: u32 = 600;

fn main() -> Result<()> {
    let dev = Device::from_env()?;
    eprintln!("{}", dev.note());

    // Data: 512 points in two classes, uploaded once (full-batch training).
    let (xy, labels) = spirals(N, 0);
    let x = Tensor::from_f32(&dev, &[N, 2], &xy)?;
    let y = Tensor::from_u32(&dev, &[N], &labels)?;

    // Model and loss as a graph over the data and the parameters.
    let mlp = Mlp::new(&dev, &MlpConfig { sizes: vec![2, 64, 64, 2], activation: Activation::Tanh }, 1)?;
    let mut g = Graph::new();
    let (xn, yn) = (g.input(&x), g.input(&y));
    let logits = mlp.forward(&mut g, xn)?;
    let loss = g.cross_entropy_mean(logits, yn)?;

    let cfg = TrainConfig {
        optimizer: OptimizerKind::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-4 },
        schedule: Schedule::Cosine { lr: 1e-2, warmup: 20, total: STEPS, min_lr: 1e-4 },
        clip: Some(1.0),
        ema: None,
        loss_scale: None,
    };
    let trainer = Trainer::new(&dev, g, loss, mlp.params(), cfg)?;
    let plan = trainer.plan();
    println!(
        "step plan: {} dispatches, planned peak {:.1} kB, allocated {:.1} kB",
        plan.dispatches(),
        plan.planned_peak_bytes() as f64 / 1e3,
        plan.allocated_bytes() as f64 / 1e3
    );

    for step in 1..=STEPS {
        trainer.step(&dev)?;
        if step % 100 == 0 {
            let l: Vec<f32> = bytemuck::cast_vec(trainer.read_loss(&dev)?.wait()?);
            println!("step {step:4}  loss {:.4}", l[0]);
        }
    }

    // Accuracy: a forward-only plan over the same parameter tensors.
    let mut g = Graph::new();
    let xn = g.input(&x);
    let logits = mlp.forward(&mut g, xn)?;
    let eval = Plan::build(&dev, &g, &[logits], |_| Ok(()))?;
    eval.run(&dev)?;
    let out = eval.value(logits).to_f32(&dev)?;
    let correct = out.chunks(2).zip(&labels).filter(|(o, &l)| ((o[1] > o[0]) as u32) == l).count();
    println!("accuracy {:.1}% on the {N} training points", 100.0 * correct as f64 / N as f64);
    Ok(())
}
