//! Matrix products with a fused epilogue, C = act(alpha·op(A)·op(B) + bias): the bias [N] (added to
//! every row) and the activation are applied by the matmul kernel as it stores each result
//! (common/matmul_epilogue.wgsl, a `*_bias_act` entry point beside each kernel `ops::matmul` chooses, in
//! every tile variant), so a linear layer's forward is one dispatch. The backward starts with
//! `matmul_act_bias_backward`, which turns dy into the pre-activation's gradient dz and the bias gradient
//! in one pass (shaders/matmul_bias_bwd.wgsl); the two products of the plain matmul then take dz.
//!
//! The activation's derivative comes from the output y where it can (`conv_fused::fusable`: relu, leaky
//! relu with a positive slope, tanh, sigmoid), else from the pre-activation z, which the `_keep` entry
//! points store beside y (`matmul_bias_act_keep`; the vec4 kernel's shapes run `matmul_tiled`'s).

use super::chnorm::FusedAct;
use super::conv_fused::fusable;
use super::matmul::{checked_params, matmul_shape, plan, KernelChoice, MatmulOpts};
use super::u32_of;
use crate::device::{Device, Dispatch};
use crate::error::{Error, Result};
use crate::kernels::groups_1d;
use crate::kernels::matmul::{
    MatmulBiasBwdParams, MatmulEpiParams, BIAS_BWD_COLS, MATMUL_ACT_BIAS_BWD, MATMUL_BLOCKED_BIAS_ACT,
    MATMUL_BLOCKED_BIAS_ACT_KEEP, MATMUL_SMALL_BIAS_ACT, MATMUL_SMALL_BIAS_ACT_KEEP, MATMUL_TILED_BIAS_ACT,
    MATMUL_TILED_BIAS_ACT_KEEP, MATMUL_TILED_VEC4_BIAS_ACT,
};
use crate::kernels::Kernel;
use crate::tensor::{DType, Tensor};

const OP: &str = "matmul_bias_act";

/// What a fused matmul applies to each result before storing it: C = act(product + bias).
#[derive(Clone, Copy, Debug)]
pub struct MatmulEpi<'a> {
    /// N values, one per column, added to every row.
    pub bias: &'a Tensor,
    /// An activation (any unary op and its parameter), if any.
    pub act: Option<FusedAct>,
    /// Where to store the pre-activation product + bias as well (the `_keep` entry points), if anywhere:
    /// for an activation whose derivative needs it.
    pub keep: Option<&'a Tensor>,
}

/// The epilogue form of a plain matmul kernel (None for `matmul_half`: f16 operands are refused).
fn epilogue_kernel(choice: KernelChoice, keep: bool) -> Option<&'static Kernel> {
    match (choice, keep) {
        (KernelChoice::Tiled, false) => Some(&MATMUL_TILED_BIAS_ACT),
        (KernelChoice::TiledVec4, false) => Some(&MATMUL_TILED_VEC4_BIAS_ACT),
        (KernelChoice::Small, false) => Some(&MATMUL_SMALL_BIAS_ACT),
        (KernelChoice::Blocked, false) => Some(&MATMUL_BLOCKED_BIAS_ACT),
        // The vec4 kernel's grid is matmul_tiled's.
        (KernelChoice::Tiled | KernelChoice::TiledVec4, true) => Some(&MATMUL_TILED_BIAS_ACT_KEEP),
        (KernelChoice::Small, true) => Some(&MATMUL_SMALL_BIAS_ACT_KEEP),
        (KernelChoice::Blocked, true) => Some(&MATMUL_BLOCKED_BIAS_ACT_KEEP),
        (KernelChoice::Auto | KernelChoice::Half, _) => None,
    }
}

/// The dispatch computing `out = act(alpha·op(A)·op(B) + bias)` (and the pre-activation into `epi.keep`)
/// on the kernel `choice` names (or the one `ops::matmul::choose_kernel` picks), after every check; None
/// when the result is empty. A and B are f32, the bias holds N f32 values, `act` is any unary op.
pub fn matmul_bias_act_dispatch(
    dev: &Device,
    a: &Tensor,
    b: &Tensor,
    opts: MatmulOpts,
    epi: MatmulEpi,
    out: &Tensor,
    choice: KernelChoice,
) -> Result<Option<Dispatch>> {
    let (s, p) = checked_params(a, b, opts, out, false)?;
    if p.half != 0 {
        return Err(Error::invalid(OP, format!("A {:?} and B {:?} must be f32", a.shape, b.shape)));
    }
    let bias = epi.bias;
    if bias.dtype != DType::F32 || bias.numel() != s.n || bias.buf.words() < s.n || bias.buf.same(&out.buf) {
        return Err(Error::invalid(
            OP,
            format!(
                "the bias {:?} ({}) must hold N = {} f32 values of its own buffer",
                bias.shape,
                bias.dtype.name(),
                s.n
            ),
        ));
    }
    if let Some(z) = epi.keep {
        let shared = [a, b, bias, out].iter().any(|t| t.buf.same(&z.buf));
        if z.dtype != DType::F32 || z.shape != out.shape || z.buf.words() < out.numel() || shared {
            return Err(Error::invalid(
                OP,
                format!(
                    "the kept pre-activation {:?} ({}) must be an f32 {:?} of its own buffer",
                    z.shape,
                    z.dtype.name(),
                    out.shape
                ),
            ));
        }
    }
    let Some((choice, groups)) = plan(dev, a, b, opts, &s, &p, choice)? else { return Ok(None) };
    let kernel = epilogue_kernel(choice, epi.keep.is_some()).expect("f32 operands never plan matmul_half");
    let (code, alpha) = epi.act.map_or((0, 0.0), |a| (a.op as u32 + 1, a.alpha));
    let pe = MatmulEpiParams { mm: bytemuck::cast(p), act: code, act_alpha: alpha, ..Default::default() };
    let mut bufs = vec![&a.buf, &b.buf, &out.buf, &bias.buf];
    bufs.extend(epi.keep.map(|z| &z.buf));
    Ok(Some(Dispatch::new(kernel, &pe, &bufs, groups)))
}

/// `act(alpha·op(A)·op(B) + bias)` in a new tensor (and the pre-activation into `epi.keep`), on the
/// kernel `choice` names.
pub fn matmul_bias_act_with(
    dev: &Device,
    a: &Tensor,
    b: &Tensor,
    opts: MatmulOpts,
    epi: MatmulEpi,
    choice: KernelChoice,
) -> Result<Tensor> {
    let s = matmul_shape(&a.shape, &b.shape, &opts)?;
    let out = Tensor::empty(dev, &s.out_shape, DType::F32)?;
    if let Some(d) = matmul_bias_act_dispatch(dev, a, b, opts, epi, &out, choice)? {
        dev.dispatch(d)?;
    }
    Ok(out)
}

/// `act(alpha·op(A)·op(B) + bias)` ([M,N], or [batch,M,N]), bias [N] added to every row, in one dispatch.
pub fn matmul_bias_act(
    dev: &Device,
    a: &Tensor,
    b: &Tensor,
    opts: MatmulOpts,
    bias: &Tensor,
    act: Option<FusedAct>,
) -> Result<Tensor> {
    matmul_bias_act_with(dev, a, b, opts, MatmulEpi { bias, act, keep: None }, KernelChoice::Auto)
}

/// `matmul_bias_act`, also returning the pre-activation z = alpha·op(A)·op(B) + bias: (y, z), one dispatch.
pub fn matmul_bias_act_keep(
    dev: &Device,
    a: &Tensor,
    b: &Tensor,
    opts: MatmulOpts,
    bias: &Tensor,
    act: Option<FusedAct>,
) -> Result<(Tensor, Tensor)> {
    let s = matmul_shape(&a.shape, &b.shape, &opts)?;
    let z = Tensor::empty(dev, &s.out_shape, DType::F32)?;
    let y = matmul_bias_act_with(dev, a, b, opts, MatmulEpi { bias, act, keep: Some(&z) }, KernelChoice::Auto)?;
    Ok((y, z))
}

/// The backward of the epilogue for `dy` [..., N]: (dz, db) with dz = dy·act' and db [N] the sums of
/// dz over every row, in one dispatch. `t` is the output y when `from_out` (the activation must then be
/// `fusable`), else the pre-activation z; without an activation dz = dy.
pub fn matmul_act_bias_backward(
    dev: &Device,
    t: &Tensor,
    dy: &Tensor,
    act: Option<FusedAct>,
    from_out: bool,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "matmul_act_bias_backward";
    for (name, x) in [("t", t), ("dy", dy)] {
        if x.dtype != DType::F32 || x.shape.is_empty() {
            return Err(Error::invalid(
                OP,
                format!("{name} {:?} ({}) must be f32 with a last axis", x.shape, x.dtype.name()),
            ));
        }
    }
    if t.shape != dy.shape {
        return Err(Error::ShapeMismatch { op: OP, lhs: t.shape.clone(), rhs: dy.shape.clone(), hint: String::new() });
    }
    if let Some(a) = act.filter(|a| from_out && !fusable(a.op, a.alpha)) {
        return Err(Error::invalid(OP, format!("{:?}'s derivative does not follow from its output", a.op)));
    }
    let n = *t.shape.last().expect("checked above");
    let rows = t.numel().checked_div(n).unwrap_or(0);
    let dz = Tensor::empty(dev, &t.shape, DType::F32)?;
    let db = Tensor::empty(dev, &[n], DType::F32)?;
    let (code, alpha) = act.map_or((0, 0.0), |a| (a.op as u32 + 1, a.alpha));
    let p = MatmulBiasBwdParams {
        rows: u32_of(OP, "rows", rows)?,
        n: u32_of(OP, "columns", n)?,
        act: code,
        alpha,
        from_out: from_out as u32,
        ..Default::default()
    };
    u32_of(OP, "elements", t.numel())?;
    if n > 0 {
        let g = groups_1d(n.div_ceil(BIAS_BWD_COLS), 1, dev.max_groups_per_dim());
        dev.dispatch(Dispatch::new(&MATMUL_ACT_BIAS_BWD, &p, &[&t.buf, &dy.buf, &dz.buf, &db.buf], g))?;
    }
    Ok((dz, db))
}
