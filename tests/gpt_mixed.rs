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
    trainer_of(dev, cfg(untied), steps, p)
}

fn trainer_of(dev: &Device, cfg: GptConfig, steps: u32, p: Precision) -> GptTrainer {
    let c = gpt_corpus(4000);
    GptTrainer::new(dev, Gpt::new(dev, cfg, 11).unwrap(), &c, gpt_settings(steps, p), 0).unwrap()
}

/// Large enough that the activations the backward reads pass the plan's size floor for f16 storage
/// (graph::saved, 4096 elements): q|k|v is 3·48·96 elements, the gated projections 144 × 84.
fn stored_cfg() -> GptConfig {
    GptConfig { width: 32, context: 48, ..cfg(false) }
}

/// Dispatches of kernel `name` (`family::entry`) in one step.
fn count(t: &GptTrainer, name: &str) -> usize {
    t.trainer().plan().dispatch_counts().iter().filter(|(k, _)| k == name).map(|(_, n)| n).sum()
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
        // Every product reads an f16 operand: the backward products read the incoming gradient as f16
        // (the attention projection's weight gradient too, whose other operand, the attention output,
        // stays f32).
        assert_eq!((half, full), (f32s, 0), "untied={untied}");
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

#[test]
fn mixed_keeps_the_saved_activations_in_f16() {
    let d = cpu();
    let f = trainer_of(&d, stored_cfg(), 5, Precision::F32);
    let m = trainer_of(&d, stored_cfg(), 5, Precision::Mixed);
    let (pf, pm) = (f.trainer().plan().planned_peak_bytes(), m.trainer().plan().planned_peak_bytes());
    eprintln!("planned peak: f32 {pf} B, mixed {pm} B ({:.3}x)", pm as f64 / pf as f64);
    // Stored once after the forward and widened for the backward's readers; the SwiGLU backward
    // reads its f16 projections as they are.
    assert!(count(&m, "cast::cast_f16_to_f32") > 0 && count(&m, "gated::silu_gate_bwd_half") == 2);
    // So do the 5 layer norms' backwards (the 4 residual norms and the final one), the 2 QK norms' and
    // the 2 attentions': no f32 copy of what they read, and none runs its f32 entry.
    let half =
        ["resnorm::layer_norm_bwd_fused_half", "qknorm::qk_norm_bwd_fused_half", "attention::attention_bwd_half"];
    assert_eq!(half.map(|k| count(&m, k)), [5, 2, 2]);
    let full = ["resnorm::layer_norm_bwd_fused", "qknorm::qk_norm_bwd_fused", "attention::attention_bwd"];
    assert_eq!(full.map(|k| count(&m, k)), [0, 0, 0]);
    assert_eq!(count(&f, "cast::cast_f16_to_f32") + count(&f, "cast::cast_f32_to_f16"), 0);
    // Most of this step's peak is those activations: storing them as f16 must show.
    assert!((pm as f64) < 0.8 * pf as f64, "mixed peak {pm} B vs f32 {pf} B");
    // And the model still tracks f32 (the backward works from f16-rounded activations).
    let lf = gpt_losses(&d, &f, 5);
    let lm = gpt_losses(&d, &m, 5);
    eprintln!("f32   {lf:?}\nmixed {lm:?}");
    for (s, (x, y)) in lf.iter().zip(&lm).enumerate() {
        assert!(((x - y) / x).abs() <= 0.02, "step {s}: f32 loss {x}, mixed loss {y}");
    }
}

#[test]
fn mixed_with_stored_activations_agrees_on_cpu_and_gpu() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let a = gpt_losses(&c, &trainer_of(&c, stored_cfg(), 5, Precision::Mixed), 5);
    let b = gpt_losses(&g, &trainer_of(&g, stored_cfg(), 5, Precision::Mixed), 5);
    eprintln!("cpu {a:?}\ngpu {b:?}");
    for (s, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(((x - y) / x).abs() <= 1e-4, "step {s}: cpu loss {x}, gpu loss {y}");
    }
}
