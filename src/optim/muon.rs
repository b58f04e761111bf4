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
//! W ← W·(1 - lr_adam·wd) - lr_muon·O (SGD with no momentum and decay wd·lr_adam/lr_muon). Which tensors
//! are matrices: rank 2 and not named in `adamw_names` (the embeddings and the output head). The other
//! tensors take AdamW with the optimizer's hyper-parameters; rank-1 tensors (norm gains and offsets)
//! take no weight decay.
//!
//! All matrices update together: their working copies live in arenas (the iterates X and their
//! successors, the Gram matrices A, and b·A + c·A²), each matrix at an offset, so a step is a few
//! dispatches whatever the number of matrices: the momentum into the X arena (`ops::muon::momentum`, up
//! to `kernels::optim::MUON_MOMENTUM_SLOTS_WIDE` matrices per dispatch), the norms and the scaling (`ops::muon::unit_norm`,
//! two), three grouped matmuls per iteration (`ops::matmul_grouped`: the Gram matrices, b·A + c·A² with
//! beta = b and D = A, then a·X + B·X with beta = a and D = X, or for a tall matrix X·B as (B·Xᵀ)ᵀ
//! stored transposed), and the update into every parameter (`ops::muon::update`). Everything stays on
//! the device and is recorded with the rest of the step.

use crate::device::Device;
use crate::error::{Error, Result};
use crate::ops::matmul_grouped::{GemmProblem, GroupedGemm};
use crate::ops::muon::{self as mk, Segments};
use crate::ops::optim::{AdamConfig, Schedule};
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

/// The device work of Muon's matrices: the arenas and the element offset of every matrix in them, the
/// norms' segments and partial sums, the grouped matmuls of one Newton-Schulz iteration, and the
/// schedule and decay of the final update.
pub struct Muon {
    cfg: MuonConfig,
    schedule: Schedule,
    /// Decay of the final update: lr_muon·wd' = lr_adam·wd makes it AdamW's decoupled per-step decay.
    decay: f32,
    shapes: Vec<[usize; 2]>,
    /// Offset of each matrix in the X and Y arenas.
    offs: Vec<usize>,
    x: Tensor,
    y: Tensor,
    gram: Tensor,
    poly: Tensor,
    seg: Segments,
    partials: Tensor,
    /// A = X·Xᵀ or Xᵀ·X; b·A + c·A²; a·X + B·X (or X·B) unscaled, and scaled for the last iteration.
    gram_mm: GroupedGemm,
    poly_mm: GroupedGemm,
    step_mm: GroupedGemm,
    last_mm: GroupedGemm,
}

impl std::fmt::Debug for Muon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Muon({} matrices, {} elements)", self.shapes.len(), self.x.numel())
    }
}

impl Muon {
    /// Allocates the arenas for the matrices' shapes (rank 2 each, in the order `update` takes them);
    /// `schedule` is the AdamW tensors'.
    pub fn new(dev: &Device, cfg: MuonConfig, schedule: Schedule, shapes: &[&[usize]]) -> Result<Muon> {
        cfg.validate("Muon::new")?;
        let (ca, cb, cc) = NS_COEFFS;
        let mut dims = Vec::with_capacity(shapes.len());
        let (mut offs, mut regions) = (Vec::new(), Vec::new());
        let (mut gram, mut poly, mut step, mut last) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut at, mut gat) = (0usize, 0usize);
        for &s in shapes {
            let &[r, c] = s else {
                return Err(Error::invalid("Muon::new", format!("Muon takes rank-2 tensors, got shape {s:?}")));
            };
            let g = r.min(c);
            let wide = r <= c;
            let base = GemmProblem {
                m: g,
                n: g,
                k: r.max(c),
                off_a: at,
                off_b: at,
                off_c: gat,
                off_d: 0,
                trans_a: !wide,
                trans_b: wide,
                trans_c: false,
                alpha: 1.0,
                beta: 0.0,
            };
            gram.push(base);
            poly.push(GemmProblem {
                k: g,
                off_a: gat,
                off_b: gat,
                off_d: gat,
                trans_a: false,
                trans_b: false,
                alpha: cc,
                beta: cb,
                ..base
            });
            // Wide: X' = B·X + a·X, [r, c] from [r, r]·[r, c]. Tall: X' = X·B + a·X, computed as
            // B·Xᵀ ([c, c]·[c, r], X read transposed) stored transposed, which is X' row-major.
            let it = GemmProblem {
                m: g,
                n: r.max(c),
                k: g,
                off_a: gat,
                off_b: at,
                off_c: at,
                off_d: at,
                trans_a: false,
                trans_b: !wide,
                trans_c: !wide,
                alpha: 1.0,
                beta: ca,
            };
            step.push(it);
            // The last iteration also applies the shape scale.
            let k = (c as f32 / r as f32).max(1.0).sqrt();
            last.push(GemmProblem { alpha: k, beta: ca * k, ..it });
            dims.push([r, c]);
            offs.push(at);
            regions.push((at, r * c));
            at += r * c;
            gat += g * g;
        }
        let arena = |n: usize| Tensor::empty(dev, &[n.max(1)], DType::F32);
        let seg = Segments::new(dev, &regions)?;
        Ok(Muon {
            cfg,
            schedule: scaled(schedule, cfg.lr_ratio),
            decay: cfg.weight_decay / cfg.lr_ratio,
            shapes: dims,
            offs,
            x: arena(at)?,
            y: arena(at)?,
            gram: arena(gat)?,
            poly: arena(gat)?,
            partials: arena(seg.partials())?,
            seg,
            gram_mm: GroupedGemm::new(dev, &gram)?,
            poly_mm: GroupedGemm::new(dev, &poly)?,
            step_mm: GroupedGemm::new(dev, &step)?,
            last_mm: GroupedGemm::new(dev, &last)?,
        })
    }

    /// One update of every matrix `params[k]` from its gradient `grads[k]` and momentum buffer
    /// `moms[k]` (the shapes given to `new`, in that order); `step` and `clip` are the optimizer's step
    /// counter and clip buffer.
    pub fn update(
        &self,
        dev: &Device,
        params: &[&Tensor],
        grads: &[&Tensor],
        moms: &[&Tensor],
        step: &Tensor,
        clip: &Tensor,
    ) -> Result<()> {
        const OP: &str = "Muon::update";
        if params.len() != self.shapes.len() {
            return Err(Error::invalid(OP, format!("made for {} matrices, got {}", self.shapes.len(), params.len())));
        }
        for (k, (p, s)) in params.iter().zip(&self.shapes).enumerate() {
            if p.shape != s[..] {
                return Err(Error::invalid(
                    OP,
                    format!("matrix {k} has shape {:?}, Muon::new was given {s:?}", p.shape),
                ));
            }
        }
        let c = &self.cfg;
        mk::momentum(dev, grads, moms, clip, &self.x, &self.offs, c.momentum, c.nesterov)?;
        mk::unit_norm(dev, &self.seg, &self.x, &self.partials, NORM_EPS)?;
        let (mut cur, mut next) = (&self.x, &self.y);
        for it in 0..c.ns_steps {
            self.gram_mm.run(dev, cur, cur, None, &self.gram)?;
            self.poly_mm.run(dev, &self.gram, &self.gram, Some(&self.gram), &self.poly)?;
            let mm = if it + 1 == c.ns_steps { &self.last_mm } else { &self.step_mm };
            mm.run(dev, &self.poly, cur, Some(cur), next)?;
            std::mem::swap(&mut cur, &mut next);
        }
        mk::update(dev, &self.schedule, self.decay, params, cur, &self.offs, step)
    }
}
