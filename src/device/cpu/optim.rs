//! CPU twin of shaders/optim.wgsl (the schedule of shaders/common/schedule.wgsl is `kernels::optim::schedule_lr`). Same formulas, same order of
//! operations; the clipping sums are mirrored thread by thread (strided per-thread partials, then the
//! same tree), so they add in the shader's order.

use rayon::prelude::*;

use super::CpuArgs;
use super::{par_chunks, CHUNK};
use crate::kernels::optim::{
    schedule_lr_of, AdamParams, AdvanceParams, ClipGuardParams, ClipParams, EmaParams, GuardParams, ScaledGuardParams,
    SgdParams, SumsqParams, GUARD_GRADIENT, GUARD_LOSS, STEP_SKIP, WG,
};

/// Bindings: params, step (read_write).
pub fn advance_step(args: &mut CpuArgs) {
    let p: AdvanceParams = args.params();
    let step = args.u32_out(0);
    step[0] = if step[0] & STEP_SKIP != 0 { step[0] & !STEP_SKIP } else { step[0].wrapping_add(p.by) };
}

/// Bindings: params, param (read_write), grad (read), momentum (read_write), step (read), clip (read).
pub fn sgd(args: &mut CpuArgs) {
    let sp: SgdParams = args.params();
    let n = sp.n as usize;
    let grad = args.f32_in(0);
    let step = args.u32_in(1)[0];
    let scale = args.f32_in(2)[0];
    if step & STEP_SKIP != 0 {
        return;
    }
    let param = &mut args.f32_out(0)[..n];
    let lr = schedule_lr_of(&sp.sched, step);
    let update = |p: f32, gi: f32, mom: Option<&mut f32>| -> f32 {
        let mut g = gi * scale;
        if sp.weight_decay != 0.0 {
            g += sp.weight_decay * p;
        }
        if let Some(m) = mom {
            let b = sp.momentum * *m + (1.0 - sp.dampening) * g;
            *m = b;
            g = if sp.nesterov == 1 { g + sp.momentum * b } else { b };
        }
        p - lr * g
    };
    if sp.momentum != 0.0 {
        let mom = &mut args.f32_out(1)[..n];
        param.par_chunks_mut(CHUNK).zip(mom.par_chunks_mut(CHUNK)).enumerate().for_each(|(c, (pc, mc))| {
            let g = &grad[c * CHUNK..];
            for ((p, m), &gi) in pc.iter_mut().zip(mc.iter_mut()).zip(g) {
                *p = update(*p, gi, Some(m));
            }
        });
    } else {
        par_chunks(param, |s, pc| {
            for (p, &gi) in pc.iter_mut().zip(&grad[s..]) {
                *p = update(*p, gi, None);
            }
        });
    }
}

/// 1 - beta^t (`bias_correction`).
fn bias_correction(beta: f32, t: f32) -> f32 {
    if beta == 0.0 {
        1.0
    } else {
        1.0 - beta.powf(t)
    }
}

/// One Adam(W) step's constants, hoisted out of the per-element loop (the same values the shader
/// computes per element, so the update rounds identically).
#[derive(Clone, Copy, Debug)]
pub struct AdamStep {
    /// Gradient scale (the clipping factor).
    pub scale: f32,
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Denominator guard.
    pub eps: f32,
    /// Weight decay (0: none).
    pub weight_decay: f32,
    /// Decoupled (AdamW: p *= 1 - lr·wd) rather than L2 (g += wd·p).
    pub decoupled: bool,
    /// Learning rate of this step.
    pub lr: f32,
    /// lr / (1 - beta1^t).
    pub lr_bc1: f32,
    /// sqrt(1 - beta2^t).
    pub sqrt_bc2: f32,
}

impl AdamStep {
    /// The constants of the `adam` kernel's params at optimizer step `step` (t = step + 1) with
    /// gradient scale `scale`.
    pub fn new(ap: &AdamParams, step: u32, scale: f32) -> AdamStep {
        let lr = schedule_lr_of(&ap.sched, step);
        let t = step.wrapping_add(1) as f32;
        AdamStep {
            scale,
            beta1: ap.beta1,
            beta2: ap.beta2,
            eps: ap.eps,
            weight_decay: ap.weight_decay,
            decoupled: ap.decoupled == 1,
            lr,
            lr_bc1: lr / bias_correction(ap.beta1, t),
            sqrt_bc2: bias_correction(ap.beta2, t).sqrt(),
        }
    }

    /// Updates param, m, v (equal lengths; grad at least as long) in place, vectorized: the weight
    /// decay mode is chosen once per slice, not per element.
    pub fn update(&self, param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32]) {
        match (self.weight_decay != 0.0, self.decoupled) {
            (false, _) => super::simd(|| self.update_mode::<0>(param, grad, m, v)),
            (true, true) => super::simd(|| self.update_mode::<1>(param, grad, m, v)),
            (true, false) => super::simd(|| self.update_mode::<2>(param, grad, m, v)),
        }
    }

    #[inline(always)]
    fn update_mode<const DECAY: u8>(&self, param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32]) {
        let n = param.len();
        let (m, v, grad) = (&mut m[..n], &mut v[..n], &grad[..n]);
        for i in 0..n {
            (param[i], m[i], v[i]) = self.element::<DECAY>(param[i], grad[i], m[i], v[i]);
        }
    }

    /// One element: (p, g, m, v) -> (p', m', v'), as the shader. DECAY: 0 none, 1 decoupled, 2 L2.
    #[inline(always)]
    pub fn element<const DECAY: u8>(&self, p: f32, gi: f32, m: f32, v: f32) -> (f32, f32, f32) {
        let mut p = p;
        let mut g = gi * self.scale;
        if DECAY == 1 {
            p *= 1.0 - self.lr * self.weight_decay;
        } else if DECAY == 2 {
            g += self.weight_decay * p;
        }
        let m = self.beta1 * m + (1.0 - self.beta1) * g;
        let v = self.beta2 * v + (1.0 - self.beta2) * g * g;
        let denom = v.sqrt() / self.sqrt_bc2 + self.eps;
        (p - self.lr_bc1 * (m / denom), m, v)
    }
}

/// Bindings: params, param (read_write), grad (read), m (read_write), v (read_write), step (read),
/// clip (read).
pub fn adam(args: &mut CpuArgs) {
    let ap: AdamParams = args.params();
    let n = ap.n as usize;
    let grad = args.f32_in(0);
    let s = args.u32_in(1)[0];
    let scale = args.f32_in(2)[0];
    if s & STEP_SKIP != 0 {
        return;
    }
    let param = &mut args.f32_out(0)[..n];
    let m = &mut args.f32_out(1)[..n];
    let v = &mut args.f32_out(2)[..n];
    let st = AdamStep::new(&ap, s, scale);
    if n <= CHUNK {
        st.update(param, grad, m, v);
        return;
    }
    param
        .par_chunks_mut(CHUNK)
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .enumerate()
        .for_each(|(c, ((pc, mc), vc))| st.update(pc, &grad[c * CHUNK..], mc, vc));
}

/// The shader's `tree_sum` over one workgroup's 256 values; returns red[0].
fn tree_sum(red: &mut [f32; WG]) -> f32 {
    let mut s = WG / 2;
    while s > 0 {
        for lid in 0..s {
            red[lid] += red[lid + s];
        }
        s >>= 1;
    }
    red[0]
}

/// Bindings: params, x (read), partials (read_write).
pub fn sumsq_partial(args: &mut CpuArgs) {
    let qp: SumsqParams = args.params();
    let x = args.f32_in(0);
    let partials = args.f32_out(0);
    let (n, chunk) = (qp.n as usize, qp.chunk as usize);
    let slots = n.div_ceil(chunk);
    partials[qp.slot as usize..qp.slot as usize + slots].par_iter_mut().enumerate().for_each(|(w, out)| {
        let base = w * chunk;
        let end = (base + chunk).min(n);
        let mut red = [0f32; WG];
        for (lid, r) in red.iter_mut().enumerate() {
            let mut acc = 0f32;
            for &v in x[(base + lid).min(end)..end].iter().step_by(WG) {
                acc += v * v;
            }
            *r = acc;
        }
        *out = tree_sum(&mut red);
    });
}

/// Bindings: params, partials (read), clip (read_write).
pub fn clip_scale(args: &mut CpuArgs) {
    let cp: ClipParams = args.params();
    let partials = &args.f32_in(0)[..cp.n_partials as usize];
    let clip = args.f32_out(0);
    let mut red = [0f32; WG];
    for (lid, r) in red.iter_mut().enumerate() {
        let mut acc = 0f32;
        for &v in partials[lid.min(partials.len())..].iter().step_by(WG) {
            acc += v;
        }
        *r = acc;
    }
    let norm = tree_sum(&mut red).sqrt();
    clip[0] = 1f32.min(cp.max_norm / (norm + 1e-6));
    clip[1] = norm;
}

/// Bindings: params, ema (read_write), param (read), step (read).
pub fn ema(args: &mut CpuArgs) {
    let ep: EmaParams = args.params();
    let param = args.f32_in(0);
    let s = args.u32_in(1)[0];
    if s & STEP_SKIP != 0 {
        return;
    }
    let avg = &mut args.f32_out(0)[..ep.n as usize];
    let mut d = ep.decay;
    if ep.warmup == 1 {
        d = d.min((1u32.wrapping_add(s)) as f32 / (10u32.wrapping_add(s)) as f32);
    }
    par_chunks(avg, |st, ch| {
        for (a, &p) in ch.iter_mut().zip(&param[st..]) {
            *a = d * *a + (1.0 - d) * p;
        }
    });
}

/// Bindings: params, x (read), step (read), flag (read_write). The lowest index of a non-finite value
/// (what the shader's min tree finds), recorded only if the flag is clear.
pub fn guard_finite(args: &mut CpuArgs) {
    let gp: GuardParams = args.params();
    let x = &args.f32_in(0)[..gp.n as usize];
    let step = args.u32_in(1)[0];
    let flag = args.u32_out(0);
    if let Some(bad) = x.iter().position(|v| !v.is_finite()) {
        if flag[0] == 0 {
            flag[0] = 1;
            flag[1] = step.wrapping_add(gp.offset);
            flag[2] = gp.what;
            flag[3] = gp.tag.wrapping_add(bad as u32);
        }
    }
}

/// Bindings: params, partials (read), loss (read), step (read), clip (read_write), flag (read_write):
/// `clip_scale` (when `clip` is 1), then `guard_finite` on the loss and on the partials.
pub fn clip_guard(args: &mut CpuArgs) {
    let cp: ClipGuardParams = args.params();
    if cp.clip == 1 {
        let q = ClipParams { n_partials: cp.n_partials, max_norm: cp.max_norm, _pad0: 0, _pad1: 0 };
        let outs = vec![std::mem::take(&mut args.outs[0])];
        clip_scale(&mut CpuArgs { params: bytemuck::bytes_of(&q), ins: vec![args.ins[0]], outs });
    }
    let (partials, loss, step) = (args.ins[0], args.ins[1], args.ins[2]);
    let flag = std::mem::take(&mut args.outs[1]);
    for (x, n, what) in [(loss, 1, GUARD_LOSS), (partials, cp.n_partials, GUARD_GRADIENT)] {
        let g = GuardParams { n, what, offset: cp.offset, tag: 0 };
        guard_finite(&mut CpuArgs { params: bytemuck::bytes_of(&g), ins: vec![x, step], outs: vec![&mut *flag] });
    }
}

/// Bindings: params, partials (read), loss (read), step, clip, flag, scale (read_write): the shader's
/// sum in its order, then its decisions (see `clip_guard_scaled` in shaders/optim.wgsl).
pub fn clip_guard_scaled(args: &mut CpuArgs) {
    let p: ScaledGuardParams = args.params();
    let partials = &args.f32_in(0)[..p.n_partials as usize];
    let loss = args.f32_in(1)[0];
    let (step, clip, flag, scale) = (args.u32_out(0), args.f32_out(1), args.u32_out(2), args.f32_out(3));
    let mut red = [0f32; WG];
    for (lid, r) in red.iter_mut().enumerate() {
        let mut acc = 0f32;
        for &v in partials[lid.min(partials.len())..].iter().step_by(WG) {
            acc += v;
        }
        *r = acc;
    }
    let total = tree_sum(&mut red);
    let first_bad = partials.iter().position(|v| !v.is_finite());
    let s = scale[0];
    let finite = first_bad.is_none() && total.is_finite();
    let norm = total.sqrt() / s;
    if flag[0] == 0 {
        let what = if !loss.is_finite() {
            GUARD_LOSS
        } else if !finite && (p.dynamic == 0 || s <= 1.0) {
            GUARD_GRADIENT
        } else {
            0
        };
        if what != 0 {
            flag[0] = 1;
            flag[1] = step[0].wrapping_add(p.offset);
            flag[2] = what;
            flag[3] = if what == GUARD_GRADIENT { first_bad.unwrap_or(0) as u32 } else { 0 };
        }
    }
    clip[1] = norm;
    scale[3] = s;
    if p.dynamic == 1 && !finite {
        step[0] |= STEP_SKIP;
        clip[0] = -1.0;
        scale[0] = (s * 0.5).max(1.0);
        scale[1] = 0.0;
        scale[2] += 1.0;
        return;
    }
    let c = if p.clip == 1 { 1f32.min(p.max_norm / (norm + 1e-6)) } else { 1.0 };
    clip[0] = c / s;
    if p.dynamic == 1 {
        let good = scale[1] + 1.0;
        if good >= p.interval as f32 {
            scale[1] = 0.0;
            if (s * 2.0).is_finite() {
                scale[0] = s * 2.0;
            }
        } else {
            scale[1] = good;
        }
    }
}
