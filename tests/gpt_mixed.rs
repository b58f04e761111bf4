//! Mixed precision (`--precision mixed`): the GPT's matrix products read f16 operands, and training
//! agrees across backends and tracks f32.
//!
//! Tolerances. CPU vs GPU under mixed: both engines round to f16 the same way except where an f32
//! value computed in another summation order lands on the other side of an f16 rounding boundary (one
//! f16 ulp on that element, rare and averaged away in the loss), so five steps agree within the f32
//! test's 1e-4 relative (tests/gpt.rs); measured on lavapipe: 4e-7. Mixed vs f32 on one engine: f16 operands perturb each product by
//! about 2^-11 relative, which moves a tiny model's loss by well under 2% over 30 steps.
mod common;
use common::*;
use tigel::graph::Precision;
use tigel::models::gpt::{Gpt, GptConfig, GptTrainer};
use tigel::Device;

/// Every architecture option on (rotary positions, QK norm, gated MLP); tied and untied heads.
fn cfg(untied: bool) -> GptConfig {
    GptConfig {
        layers: 2,
        heads: 2,
        width: 16,
        context: 12,
        dropout: 0.0,
        rope: true,
        qk_norm: true,
        gated_mlp: true,
        untied,
        ..GptConfig::default()
    }
}

fn trainer(dev: &Device, untied: bool, steps: u32, p: Precision) -> GptTrainer {
    let c = gpt_corpus(4000);
    GptTrainer::new(dev, Gpt::new(dev, cfg(untied), 11).unwrap(), &c, gpt_settings(steps, p), 0).unwrap()
}

/// (products on matmul_half, products on the f32 matmul kernels) of one step. A `matmul_pair`
/// dispatch (two products of f32 operands, or two projections and their gate) counts as two.
fn matmuls(t: &GptTrainer) -> (usize, usize) {
    let counts = t.trainer().plan().dispatch_counts();
    let sum = |half: bool| -> usize {
        counts
            .iter()
            .filter(|(k, _)| k.starts_with("matmul") && k.starts_with("matmul_half") == half)
            .map(|(k, n)| if k.starts_with("matmul_pair") { 2 * n } else { *n })
            .sum()
    };
    (sum(true), sum(false))
}

#[test]
fn mixed_runs_its_products_on_f16_operands() {
    let d = cpu();
    for untied in [false, true] {
        let (h32, f32s) = matmuls(&trainer(&d, untied, 5, Precision::F32));
        let (half, full) = matmuls(&trainer(&d, untied, 5, Precision::Mixed));
        assert_eq!(h32, 0);
        // Every product reads an f16 operand except the attention projection's weight gradient (its
        // input, the attention output, stays f32: one per layer).
        assert_eq!((half, full), (f32s - 2, 2), "untied={untied}");
    }
}

#[test]
fn mixed_tracks_f32_on_the_cpu() {
    let d = cpu();
    let f = gpt_losses(&d, &trainer(&d, false, 30, Precision::F32), 30);
    let m = gpt_losses(&d, &trainer(&d, false, 30, Precision::Mixed), 30);
    eprintln!("f32   {f:?}\nmixed {m:?}");
    for (s, (x, y)) in f.iter().zip(&m).enumerate() {
        assert!(((x - y) / x).abs() <= 0.02, "step {s}: f32 loss {x}, mixed loss {y}");
    }
    assert!(m[29] < m[0] - 0.5, "mixed learns: {} -> {}", m[0], m[29]);
}

#[test]
fn mixed_first_steps_agree_on_cpu_and_gpu() {
    let Some(g) = gpu() else { return };
    for untied in [false, true] {
        let c = cpu();
        let a = gpt_losses(&c, &trainer(&c, untied, 5, Precision::Mixed), 5);
        let b = gpt_losses(&g, &trainer(&g, untied, 5, Precision::Mixed), 5);
        eprintln!("untied={untied}\ncpu {a:?}\ngpu {b:?}");
        for (s, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(((x - y) / x).abs() <= 1e-4, "step {s}: cpu loss {x}, gpu loss {y}");
        }
    }
}
