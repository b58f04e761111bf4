//! Muon: orthogonalised momentum for the hidden weight matrices, AdamW for everything else.
//!
//! Per matrix W ([rows, cols]) and step: Nesterov momentum on the (clipped) gradient, U = g + μ·m; U is
//! scaled to unit Frobenius norm, then `ns_steps` Newton-Schulz iterations with the quintic coefficients
//! (a, b, c) = (3.4445, -4.7750, 2.0315) push its singular values towards 1:
//!
//! ```text
//!   wide (rows <= cols): A = X·Xᵀ, X ← a·X + (b·A + c·A²)·X
//!   tall (rows > cols):  A = Xᵀ·X, X ← a·X + X·(b·A + c·A²)
//! ```
//!
//! (the Gram matrix on the smaller side, so no transpose is needed); the result O, times
//! sqrt(max(1, cols/rows)) (the fan-out over the fan-in of a `Linear`'s [in, out] weight), is the update:
//! W ← W·(1 - lr_adam·wd) - lr_muon·O, through the SGD kernel with no momentum. The iterations are
//! matmuls (`ops::matmul`) joined by `ops::muon::axpby`: everything stays on the device and is recorded
//! with the rest of the step. Which tensors are matrices: rank 2 and not named in `adamw_names` (the
//! embeddings and the output head). The other tensors take AdamW with the optimizer's hyper-parameters;
//! rank-1 tensors (norm gains and offsets) take no weight decay.

use std::collections::HashMap;

use crate::device::Device;
use crate::error::{Error, Result};
use crate::ops::matmul::{matmul_into, MatmulOpts};
use crate::ops::muon as mk;
use crate::ops::optim::{self as k, AdamConfig, Schedule, SgdConfig};
use crate::tensor::{DType, Tensor};

/// The quintic Newton-Schulz coefficients (a, b, c).
pub const NS_COEFFS: (f32, f32, f32) = (3.4445, -4.7750, 2.0315);
/// Added to the norm before dividing by it (a zero gradient stays zero).
pub const NORM_EPS: f32 = 1e-7;

/// Muon's hyper-parameters, and AdamW's for the tensors that are not hidden matrices.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MuonConfig {
    /// Momentum coefficient, in [0, 1).
    pub momentum: f32,
    /// Nesterov momentum (the update uses g + μ·m rather than m).
    pub nesterov: bool,
    /// Newton-Schulz iterations (at least 1).
    pub ns_steps: u32,
    /// The matrices' learning rate over the schedule's (which the AdamW tensors follow).
    pub lr_ratio: f32,
    /// Decoupled weight decay of the matrices and of AdamW's rank-2 tensors: p *= 1 - lr·wd per step,
    /// lr being the schedule's (AdamW's) rate.
    pub weight_decay: f32,
    /// AdamW's first-moment decay.
    pub beta1: f32,
    /// AdamW's second-moment decay.
    pub beta2: f32,
    /// AdamW's epsilon.
    pub eps: f32,
    /// Parameter names (or name prefixes before a `.`) that take AdamW although they are rank 2.
    pub adamw_names: &'static [&'static str],
}

impl MuonConfig {
    /// Checks the values; the error names the field and its value.
    pub fn validate(&self, op: &'static str) -> Result<()> {
        let bad =
            |f: &str, v: String, rule: &str| Err(Error::invalid(op, format!("{f} = {v} is out of range: {rule}")));
        if !(self.momentum.is_finite() && (0.0..1.0).contains(&self.momentum)) {
            return bad("muon momentum", self.momentum.to_string(), "must be in [0, 1)");
        }
        if self.nesterov && self.momentum == 0.0 {
            return bad("muon momentum", "0".into(), "Nesterov momentum needs momentum > 0");
        }
        if self.ns_steps == 0 || self.ns_steps > 100 {
            return bad("muon ns_steps", self.ns_steps.to_string(), "must be in 1..=100");
        }
        if !(self.lr_ratio.is_finite() && self.lr_ratio > 0.0) {
            return bad("muon lr_ratio", self.lr_ratio.to_string(), "must be finite and > 0");
        }
        self.adam().validate(op)
    }

    /// The AdamW rule of the other tensors.
    pub fn adam(&self) -> AdamConfig {
        AdamConfig {
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
            decoupled: true,
        }
    }

    /// Whether Muon updates the tensor `name` of shape `shape`: rank 2 and not one of `adamw_names`.
    pub fn takes(&self, name: &str, shape: &[usize]) -> bool {
        let excluded =
            self.adamw_names.iter().any(|n| name == *n || name.strip_prefix(n).is_some_and(|r| r.starts_with('.')));
        shape.len() == 2 && !excluded
    }
}

/// `schedule` with every rate times `k`.
fn scaled(schedule: Schedule, k: f32) -> Schedule {
    match schedule {
        Schedule::Constant { lr } => Schedule::Constant { lr: lr * k },
        Schedule::Linear { lr, warmup, total, min_lr } => {
            Schedule::Linear { lr: lr * k, warmup, total, min_lr: min_lr * k }
        }
        Schedule::Cosine { lr, warmup, total, min_lr } => {
            Schedule::Cosine { lr: lr * k, warmup, total, min_lr: min_lr * k }
        }
        Schedule::Wsd { lr, warmup, hold, total, min_lr } => {
            Schedule::Wsd { lr: lr * k, warmup, hold, total, min_lr: min_lr * k }
        }
    }
}

/// Scratch of one matrix shape: the iterate and its successor, the Gram matrix A and b·A + c·A².
struct Scratch {
    x: Tensor,
    y: Tensor,
    a: Tensor,
    b: Tensor,
}

/// The device work of Muon's matrices: scratch per shape (the matrices update one after another), the
/// partial sums of the norm, and the SGD rule and schedule of the final update.
pub struct Muon {
    cfg: MuonConfig,
    schedule: Schedule,
    sgd: SgdConfig,
    /// [1, 0]: the update O is not clipped again.
    ones: Tensor,
    placeholder: Tensor,
    partials: Tensor,
    scratch: HashMap<Vec<usize>, Scratch>,
}

impl Muon {
    /// Allocates the scratch for the matrices' shapes (rank 2 each); `schedule` is the AdamW tensors'.
    pub fn new(dev: &Device, cfg: MuonConfig, schedule: Schedule, shapes: &[&[usize]]) -> Result<Muon> {
        cfg.validate("Muon::new")?;
        let mut scratch = HashMap::new();
        let mut most = 1;
        for &s in shapes {
            let &[r, c] = s else {
                return Err(Error::invalid("Muon::new", format!("Muon takes rank-2 tensors, got shape {s:?}")));
            };
            most = most.max(k::sumsq_layout(r * c).1);
            if !scratch.contains_key(s) {
                let g = r.min(c);
                scratch.insert(
                    s.to_vec(),
                    Scratch {
                        x: Tensor::empty(dev, s, DType::F32)?,
                        y: Tensor::empty(dev, s, DType::F32)?,
                        a: Tensor::empty(dev, &[g, g], DType::F32)?,
                        b: Tensor::empty(dev, &[g, g], DType::F32)?,
                    },
                );
            }
        }
        Ok(Muon {
            cfg,
            schedule: scaled(schedule, cfg.lr_ratio),
            // L2 through the SGD kernel with no momentum is decoupled decay: p -= lr_m·(O + wd'·p), and
            // lr_m·wd' = lr·wd makes it AdamW's per-step decay.
            sgd: SgdConfig {
                momentum: 0.0,
                dampening: 0.0,
                nesterov: false,
                weight_decay: cfg.weight_decay / cfg.lr_ratio,
            },
            ones: k::clip_buffer(dev)?,
            placeholder: Tensor::empty(dev, &[1], DType::F32)?,
            partials: Tensor::empty(dev, &[most], DType::F32)?,
            scratch,
        })
    }

    /// One update of matrix `p` from its gradient `g` and momentum buffer `m` (same shape); `step` and
    /// `clip` are the optimizer's step counter and clip buffer.
    pub fn update(&self, dev: &Device, p: &Tensor, g: &Tensor, m: &Tensor, step: &Tensor, clip: &Tensor) -> Result<()> {
        let s = self.scratch.get(&p.shape).ok_or_else(|| {
            Error::invalid("Muon::update", format!("no Muon matrix of shape {:?} was given to Muon::new", p.shape))
        })?;
        let (rows, cols) = (p.shape[0], p.shape[1]);
        let c = &self.cfg;
        mk::momentum(dev, g, clip, m, &s.x, c.momentum, c.nesterov)?;
        let slots = k::sumsq_partial(dev, &s.x, &self.partials, 0)?;
        mk::normalize(dev, &s.x, &self.partials, 0, slots, NORM_EPS)?;
        let (ca, cb, cc) = NS_COEFFS;
        let wide = rows <= cols;
        let gram = if wide {
            MatmulOpts { trans_b: true, ..Default::default() }
        } else {
            MatmulOpts { trans_a: true, ..Default::default() }
        };
        let scale = (cols as f32 / rows as f32).max(1.0).sqrt();
        let (mut cur, mut next) = (&s.x, &s.y);
        for it in 0..c.ns_steps {
            // The last iteration also applies the shape scale.
            let k = if it + 1 == c.ns_steps { scale } else { 1.0 };
            matmul_into(dev, cur, cur, gram, &s.a, false)?;
            matmul_into(dev, &s.a, &s.a, MatmulOpts { alpha: cc, ..Default::default() }, &s.b, false)?;
            mk::axpby(dev, cb, &s.a, 1.0, &s.b)?;
            let opts = MatmulOpts { alpha: k, ..Default::default() };
            if wide {
                matmul_into(dev, &s.b, cur, opts, next, false)?;
            } else {
                matmul_into(dev, cur, &s.b, opts, next, false)?;
            }
            mk::axpby(dev, ca * k, cur, 1.0, next)?;
            std::mem::swap(&mut cur, &mut next);
        }
        k::sgd(dev, &self.schedule, &self.sgd, p, cur, Some(&self.placeholder), step, &self.ones)
    }
}
