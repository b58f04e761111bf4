//! 2-D convolution and transposed convolution, NCHW, f32, square kernels, dilation 1, zero padding.
//! Kernels: shaders/conv.wgsl; CPU twins: device/cpu/conv.rs.
//!
//! * `conv2d`: x [N, Cin, H, W] * w [Cout, Cin, K, K] -> [N, Cout, Ho, Wo], Ho = (H + 2p - K) / s + 1,
//!   floored as in PyTorch (rows and columns the last window does not reach are unused), no bias.
//! * `conv_transpose2d`: x [N, Cin, H, W], w [Cin, Cout, K, K] -> [N, Cout, Ho, Wo] with
//!   Ho = (H - 1) s - 2p + K + output_padding: PyTorch's semantics and weight layout. It is the adjoint
//!   of a conv2d from [N, Cout, Ho, Wo] to [N, Cin, H, W] with the same w, so the three kernels serve
//!   both: transposed forward = conv2d's backward to the input, and so on.
//!
//! The weight gradient reduces over N*Ho*Wo in partial sums per group of images (more groups where the
//! gradient alone would give a GPU too few workgroups) that `reduce::sum` adds in a fixed order: every
//! result is deterministic, run to run.

use super::conv_fused::{run_bwd_input, run_fwd, Epi};
use super::{reduce, u32_of};
use crate::device::{Device, Dispatch};
use crate::error::{Error, Result};
use crate::kernels::conv::{ConvParams, CONV2D_BWD_WEIGHT, TILE};
use crate::kernels::groups_1d;
use crate::tensor::{numel, DType, Tensor};

/// Stride and zero padding of a convolution (the same along both spatial axes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    /// Step between output positions.
    pub stride: usize,
    /// Zeros added on each side.
    pub padding: usize,
}

impl Default for Conv2d {
    fn default() -> Self {
        Conv2d { stride: 1, padding: 0 }
    }
}

/// Output extent of a conv2d along one axis, or None when the kernel is larger than the padded input.
pub fn conv2d_out_len(len: usize, k: usize, opts: Conv2d) -> Option<usize> {
    let padded = len.checked_add(opts.padding.checked_mul(2)?)?;
    if opts.stride == 0 || k == 0 || padded < k {
        return None;
    }
    Some((padded - k) / opts.stride + 1)
}

/// Output extent of a transposed conv along one axis, or None when the padding removes every position.
pub fn conv_transpose2d_out_len(len: usize, k: usize, opts: Conv2d, output_padding: usize) -> Option<usize> {
    let full = (len.checked_sub(1)?).checked_mul(opts.stride)?.checked_add(k)?.checked_add(output_padding)?;
    full.checked_sub(opts.padding.checked_mul(2)?).filter(|&v| v > 0)
}

/// One convolution in its forward direction: x [n, ci, h, w] * w [co, ci, k, k] -> y [n, co, ho, wo].
/// A transposed convolution is described by the conv2d it is the adjoint of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    /// Batch.
    pub n: usize,
    /// Input channels.
    pub ci: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub co: usize,
    /// Kernel size (square).
    pub k: usize,
    /// Output height.
    pub ho: usize,
    /// Output width.
    pub wo: usize,
    /// Step between output positions.
    pub stride: usize,
    /// Zeros added on each side.
    pub padding: usize,
}

impl ConvShape {
    /// [n, ci, h, w].
    pub fn x_shape(&self) -> Vec<usize> {
        vec![self.n, self.ci, self.h, self.w]
    }
    /// [n, co, ho, wo].
    pub fn y_shape(&self) -> Vec<usize> {
        vec![self.n, self.co, self.ho, self.wo]
    }
    /// [co, ci, k, k].
    pub fn w_shape(&self) -> Vec<usize> {
        vec![self.co, self.ci, self.k, self.k]
    }
    /// Multiply-adds of the forward (each backward has as many): n*co*ho*wo*ci*k*k.
    pub fn macs(&self) -> usize {
        self.n * self.co * self.ho * self.wo * self.ci * self.k * self.k
    }

    pub(super) fn params(&self, op: &'static str) -> Result<ConvParams> {
        Ok(ConvParams {
            n: u32_of(op, "batch", self.n)?,
            ci: u32_of(op, "input channels", self.ci)?,
            h: u32_of(op, "input height", self.h)?,
            w: u32_of(op, "input width", self.w)?,
            co: u32_of(op, "output channels", self.co)?,
            ho: u32_of(op, "output height", self.ho)?,
            wo: u32_of(op, "output width", self.wo)?,
            k: u32_of(op, "kernel size", self.k)?,
            stride: u32_of(op, "stride", self.stride)?,
            pad: u32_of(op, "padding", self.padding)?,
            ..Default::default()
        })
    }

    /// Checks that every index the kernels compute fits: element counts in u32, window coordinates
    /// (which go negative in the padding) in i32.
    fn check_sizes(&self, op: &'static str) -> Result<()> {
        let big = |what: &str, v: Option<usize>| -> Result<()> {
            match v {
                Some(v) if v <= i32::MAX as usize => Ok(()),
                _ => Err(Error::invalid(op, format!("{what} is too large for the kernels' 32-bit indices ({self:?})"))),
            }
        };
        for (what, shape) in [("x", self.x_shape()), ("y", self.y_shape()), ("w", self.w_shape())] {
            u32_of(op, &format!("the element count of {what} {shape:?}"), numel(&shape)?)?;
        }
        big("the padded input height", self.h.checked_add(2 * self.padding))?;
        big("the padded input width", self.w.checked_add(2 * self.padding))?;
        big("the window span", self.ho.max(self.wo).checked_mul(self.stride).and_then(|v| v.checked_add(self.k)))?;
        Ok(())
    }
}

pub(super) fn rank4_f32(op: &'static str, name: &str, t: &Tensor, ctx: &str) -> Result<()> {
    if t.dtype != DType::F32 {
        return Err(Error::invalid(op, format!("{name} has dtype {}, f32 is required ({ctx})", t.dtype.name())));
    }
    if t.rank() != 4 {
        return Err(Error::invalid(op, format!("{name} {:?} must have rank 4 ({ctx})", t.shape)));
    }
    if t.shape.contains(&0) {
        return Err(Error::invalid(op, format!("{name} {:?} is empty ({ctx})", t.shape)));
    }
    if t.buf.words() < t.numel() {
        return Err(Error::invalid(
            op,
            format!("{name} {:?} needs {} elements, its buffer holds {}", t.shape, t.numel(), t.buf.words()),
        ));
    }
    Ok(())
}

/// The checks both weight gradients share (rank-4 f32 x and dy of one batch, valid options, k >= 1);
/// returns the context that error messages end with.
fn check_backward_weight(op: &'static str, x: &Tensor, dy: &Tensor, k: usize, opts: Conv2d) -> Result<String> {
    let ctx = format!("x {:?}, dy {:?}, k {k}, stride {}, padding {}", x.shape, dy.shape, opts.stride, opts.padding);
    rank4_f32(op, "x", x, &ctx)?;
    rank4_f32(op, "dy", dy, &ctx)?;
    check_opts(op, opts, &ctx)?;
    if x.shape[0] != dy.shape[0] {
        return Err(Error::invalid(op, format!("x and dy have different batch sizes ({ctx})")));
    }
    if k == 0 {
        return Err(Error::invalid(op, format!("the kernel size must be at least 1 ({ctx})")));
    }
    Ok(ctx)
}

fn check_opts(op: &'static str, opts: Conv2d, ctx: &str) -> Result<()> {
    if opts.stride == 0 {
        return Err(Error::invalid(op, format!("stride must be at least 1 ({ctx})")));
    }
    Ok(())
}

/// The checks both shape functions make on x [N, C, H, W] and w: the stride, rank 4 with no empty axis, a
/// square kernel, and x's C equal to w's axis `cin.0` (`cin.1` names w's layout in the error). Returns K.
fn check_shapes(
    op: &'static str,
    x: &[usize],
    w: &[usize],
    opts: Conv2d,
    (cin, layout): (usize, &str),
    ctx: &str,
) -> Result<usize> {
    check_opts(op, opts, ctx)?;
    if x.len() != 4 || w.len() != 4 || x.contains(&0) || w.contains(&0) {
        return Err(Error::invalid(op, format!("x and w must be non-empty and of rank 4 ({ctx})")));
    }
    if w[2] != w[3] {
        return Err(Error::invalid(op, format!("w {w:?} is not a square kernel ({ctx})")));
    }
    if x[1] != w[cin] {
        return Err(Error::invalid(
            op,
            format!("x {x:?} has {} channels but w {w:?} takes {} (w is {layout})", x[1], w[cin]),
        ));
    }
    Ok(w[2])
}

/// w [a, b, k, k]: square kernel; returns k.
fn square_kernel(op: &'static str, w: &Tensor, ctx: &str) -> Result<usize> {
    if w.shape[2] != w.shape[3] {
        return Err(Error::invalid(op, format!("w {:?} is not a square kernel ({ctx})", w.shape)));
    }
    Ok(w.shape[2])
}

fn too_small(op: &'static str, h: usize, w: usize, k: usize, opts: Conv2d, ctx: &str) -> Error {
    Error::invalid(
        op,
        format!(
            "kernel {k}x{k} is larger than the padded input {}x{} (input {h}x{w}, padding {}; {ctx})",
            h + 2 * opts.padding,
            w + 2 * opts.padding,
            opts.padding
        ),
    )
}

/// `conv2d` output shape [N, Cout, Ho, Wo] for x and w shapes, with the checks the op makes.
pub fn conv2d_shape(x: &[usize], w: &[usize], opts: Conv2d) -> Result<ConvShape> {
    const OP: &str = "conv2d";
    let ctx = format!("x {x:?}, w {w:?}, stride {}, padding {}", opts.stride, opts.padding);
    let k = check_shapes(OP, x, w, opts, (1, "[Cout, Cin, K, K]"), &ctx)?;
    let (ho, wo) = match (conv2d_out_len(x[2], k, opts), conv2d_out_len(x[3], k, opts)) {
        (Some(a), Some(b)) => (a, b),
        _ => return Err(too_small(OP, x[2], x[3], k, opts, &ctx)),
    };
    let s = ConvShape {
        n: x[0],
        ci: x[1],
        h: x[2],
        w: x[3],
        co: w[0],
        k,
        ho,
        wo,
        stride: opts.stride,
        padding: opts.padding,
    };
    s.check_sizes(OP)?;
    Ok(s)
}

/// y = conv2d(x, w): x [N, Cin, H, W], w [Cout, Cin, K, K] -> [N, Cout, Ho, Wo].
pub fn conv2d(dev: &Device, x: &Tensor, w: &Tensor, opts: Conv2d) -> Result<Tensor> {
    const OP: &str = "conv2d";
    let ctx = format!("x {:?}, w {:?}", x.shape, w.shape);
    rank4_f32(OP, "x", x, &ctx)?;
    rank4_f32(OP, "w", w, &ctx)?;
    let s = conv2d_shape(&x.shape, &w.shape, opts)?;
    run_fwd(dev, OP, &s, x, w, Epi::NONE)
}

/// dx of y = conv2d(x, w) for x of spatial size `input_hw`: dy [N, Cout, Ho, Wo], w [Cout, Cin, K, K]
/// -> [N, Cin, H, W]. Inputs the floored forward leaves unused get 0.
pub fn conv2d_backward_input(
    dev: &Device,
    dy: &Tensor,
    w: &Tensor,
    input_hw: (usize, usize),
    opts: Conv2d,
) -> Result<Tensor> {
    const OP: &str = "conv2d_backward_input";
    let ctx = format!(
        "dy {:?}, w {:?}, input {}x{}, stride {}, padding {}",
        dy.shape, w.shape, input_hw.0, input_hw.1, opts.stride, opts.padding
    );
    rank4_f32(OP, "dy", dy, &ctx)?;
    rank4_f32(OP, "w", w, &ctx)?;
    check_opts(OP, opts, &ctx)?;
    let k = square_kernel(OP, w, &ctx)?;
    if dy.shape[1] != w.shape[0] {
        return Err(Error::invalid(
            OP,
            format!("dy has {} channels, w has {} output channels ({ctx})", dy.shape[1], w.shape[0]),
        ));
    }
    let (h, wd) = input_hw;
    let out = match (conv2d_out_len(h, k, opts), conv2d_out_len(wd, k, opts)) {
        (Some(a), Some(b)) if h > 0 && wd > 0 => (a, b),
        _ => return Err(too_small(OP, h, wd, k, opts, &ctx)),
    };
    if out != (dy.shape[2], dy.shape[3]) {
        return Err(Error::invalid(
            OP,
            format!(
                "an input of {h}x{wd} gives a {}x{} output, dy is {}x{} ({ctx})",
                out.0, out.1, dy.shape[2], dy.shape[3]
            ),
        ));
    }
    let s = ConvShape {
        n: dy.shape[0],
        ci: w.shape[1],
        h,
        w: wd,
        co: w.shape[0],
        k,
        ho: out.0,
        wo: out.1,
        stride: opts.stride,
        padding: opts.padding,
    };
    s.check_sizes(OP)?;
    run_bwd_input(dev, OP, &s, dy, w, Epi::NONE)
}

/// dw of y = conv2d(x, w) for a k x k kernel: x [N, Cin, H, W], dy [N, Cout, Ho, Wo] -> [Cout, Cin, K, K].
pub fn conv2d_backward_weight(dev: &Device, x: &Tensor, dy: &Tensor, k: usize, opts: Conv2d) -> Result<Tensor> {
    let s = backward_weight_shape("conv2d_backward_weight", x, dy, k, opts)?;
    run_bwd_weight(dev, "conv2d_backward_weight", &s, x, dy, None)
}

/// `r + conv2d_backward_weight(x, dy)`, added into r's buffer (r [Cout, Cin, K, K], which must be
/// used nowhere else): a gradient summed over two uses of a weight without a separate add.
pub fn conv2d_backward_weight_acc(
    dev: &Device,
    x: &Tensor,
    dy: &Tensor,
    k: usize,
    opts: Conv2d,
    r: &Tensor,
) -> Result<Tensor> {
    const OP: &str = "conv2d_backward_weight_acc";
    let s = backward_weight_shape(OP, x, dy, k, opts)?;
    if r.shape != s.w_shape() || r.dtype != DType::F32 {
        return Err(Error::ShapeMismatch {
            op: OP,
            lhs: r.shape.clone(),
            rhs: s.w_shape(),
            hint: " (the term to add)".into(),
        });
    }
    run_bwd_weight(dev, OP, &s, x, dy, Some(r))
}

/// Checks x, dy and k of a weight gradient and gives the convolution's shape.
fn backward_weight_shape(op: &'static str, x: &Tensor, dy: &Tensor, k: usize, opts: Conv2d) -> Result<ConvShape> {
    let ctx = check_backward_weight(op, x, dy, k, opts)?;
    let out = match (conv2d_out_len(x.shape[2], k, opts), conv2d_out_len(x.shape[3], k, opts)) {
        (Some(a), Some(b)) => (a, b),
        _ => return Err(too_small(op, x.shape[2], x.shape[3], k, opts, &ctx)),
    };
    if out != (dy.shape[2], dy.shape[3]) {
        return Err(Error::invalid(
            op,
            format!("x gives a {}x{} output, dy is {}x{} ({ctx})", out.0, out.1, dy.shape[2], dy.shape[3]),
        ));
    }
    let s = ConvShape {
        n: x.shape[0],
        ci: x.shape[1],
        h: x.shape[2],
        w: x.shape[3],
        co: dy.shape[1],
        k,
        ho: out.0,
        wo: out.1,
        stride: opts.stride,
        padding: opts.padding,
    };
    s.check_sizes(op)?;
    Ok(s)
}

/// The conv2d that a transposed conv of x [N, Cin, H, W] with w [Cin, Cout, K, K] is the adjoint of.
pub fn conv_transpose2d_shape(x: &[usize], w: &[usize], opts: Conv2d, output_padding: usize) -> Result<ConvShape> {
    const OP: &str = "conv_transpose2d";
    let ctx =
        format!("x {x:?}, w {w:?}, stride {}, padding {}, output_padding {output_padding}", opts.stride, opts.padding);
    let k = check_shapes(OP, x, w, opts, (0, "[Cin, Cout, K, K]"), &ctx)?;
    // PyTorch's rule: with output_padding >= stride the output would have positions no input reaches.
    if output_padding >= opts.stride && output_padding > 0 {
        return Err(Error::invalid(OP, format!("output_padding must be smaller than the stride ({ctx})")));
    }
    let (ho, wo) = match (
        conv_transpose2d_out_len(x[2], k, opts, output_padding),
        conv_transpose2d_out_len(x[3], k, opts, output_padding),
    ) {
        (Some(a), Some(b)) => (a, b),
        _ => return Err(Error::invalid(OP, format!("the padding leaves an empty output ({ctx})"))),
    };
    let s = ConvShape {
        n: x[0],
        ci: w[1],
        h: ho,
        w: wo,
        co: w[0],
        k,
        ho: x[2],
        wo: x[3],
        stride: opts.stride,
        padding: opts.padding,
    };
    s.check_sizes(OP)?;
    Ok(s)
}

/// y = conv_transpose2d(x, w): x [N, Cin, H, W], w [Cin, Cout, K, K] -> [N, Cout, Ho, Wo] with
/// Ho = (H - 1) * stride - 2 * padding + K + output_padding (output_padding < stride).
pub fn conv_transpose2d(dev: &Device, x: &Tensor, w: &Tensor, opts: Conv2d, output_padding: usize) -> Result<Tensor> {
    const OP: &str = "conv_transpose2d";
    let ctx = format!("x {:?}, w {:?}", x.shape, w.shape);
    rank4_f32(OP, "x", x, &ctx)?;
    rank4_f32(OP, "w", w, &ctx)?;
    let s = conv_transpose2d_shape(&x.shape, &w.shape, opts, output_padding)?;
    run_bwd_input(dev, OP, &s, x, w, Epi::NONE)
}

/// dx of y = conv_transpose2d(x, w): dy [N, Cout, Ho, Wo], w [Cin, Cout, K, K] -> [N, Cin, H, W], with
/// H = (Ho + 2 * padding - K) / stride + 1 (the output_padding of the forward is implied by Ho).
pub fn conv_transpose2d_backward_input(dev: &Device, dy: &Tensor, w: &Tensor, opts: Conv2d) -> Result<Tensor> {
    const OP: &str = "conv_transpose2d_backward_input";
    let ctx = format!("dy {:?}, w {:?}, stride {}, padding {}", dy.shape, w.shape, opts.stride, opts.padding);
    rank4_f32(OP, "dy", dy, &ctx)?;
    rank4_f32(OP, "w", w, &ctx)?;
    check_opts(OP, opts, &ctx)?;
    let k = square_kernel(OP, w, &ctx)?;
    if dy.shape[1] != w.shape[1] {
        return Err(Error::invalid(
            OP,
            format!(
                "dy has {} channels, w has {} output channels (w is [Cin, Cout, K, K]; {ctx})",
                dy.shape[1], w.shape[1]
            ),
        ));
    }
    let (h, wd) = match (conv2d_out_len(dy.shape[2], k, opts), conv2d_out_len(dy.shape[3], k, opts)) {
        (Some(a), Some(b)) => (a, b),
        _ => return Err(too_small(OP, dy.shape[2], dy.shape[3], k, opts, &ctx)),
    };
    let s = ConvShape {
        n: dy.shape[0],
        ci: w.shape[1],
        h: dy.shape[2],
        w: dy.shape[3],
        co: w.shape[0],
        k,
        ho: h,
        wo: wd,
        stride: opts.stride,
        padding: opts.padding,
    };
    s.check_sizes(OP)?;
    run_fwd(dev, OP, &s, dy, w, Epi::NONE)
}

/// dw of y = conv_transpose2d(x, w) for a k x k kernel: x [N, Cin, H, W], dy [N, Cout, Ho, Wo] ->
/// [Cin, Cout, K, K].
pub fn conv_transpose2d_backward_weight(
    dev: &Device,
    x: &Tensor,
    dy: &Tensor,
    k: usize,
    opts: Conv2d,
) -> Result<Tensor> {
    const OP: &str = "conv_transpose2d_backward_weight";
    let ctx = check_backward_weight(OP, x, dy, k, opts)?;
    // dy's extent must be one that x's extent gives for some output_padding < stride.
    let fits = |len: usize, out: usize| conv2d_out_len(out, k, opts) == Some(len);
    if !fits(x.shape[2], dy.shape[2]) || !fits(x.shape[3], dy.shape[3]) {
        return Err(Error::invalid(
            OP,
            format!("no output_padding below the stride makes a {k}x{k} transposed conv of x give dy ({ctx})"),
        ));
    }
    let s = ConvShape {
        n: x.shape[0],
        ci: dy.shape[1],
        h: dy.shape[2],
        w: dy.shape[3],
        co: x.shape[1],
        k,
        ho: x.shape[2],
        wo: x.shape[3],
        stride: opts.stride,
        padding: opts.padding,
    };
    s.check_sizes(OP)?;
    run_bwd_weight(dev, OP, &s, dy, x, None)
}

/// Grid for `row_tiles * col_tiles` workgroup tiles (folded into y past the per-dimension limit) and
/// `z` slices.
pub(super) fn grid(
    dev: &Device,
    op: &'static str,
    s: &ConvShape,
    p: &mut ConvParams,
    rows: usize,
    cols: usize,
    z: usize,
) -> Result<[u32; 3]> {
    let (rt, ct) = (rows.div_ceil(TILE), cols.div_ceil(TILE));
    p.row_tiles = u32_of(op, "row tiles", rt)?;
    p.col_tiles = u32_of(op, "column tiles", ct)?;
    let max = dev.max_groups_per_dim();
    let tiles = rt.checked_mul(ct).filter(|&t| t <= max as usize * max as usize);
    match tiles {
        Some(t) if z <= max as usize => {
            let g = groups_1d(t, 1, max);
            Ok([g[0], g[1], z as u32])
        }
        _ => Err(Error::LimitExceeded {
            what: format!("{op} of {s:?} ({rt} x {ct} tiles, {z} slices)"),
            requested: (rt.saturating_mul(ct)).max(z) as u64,
            limit_name: "max_compute_workgroups_per_dimension",
            limit: max as u64,
        }),
    }
}

/// How `conv2d_bwd_weight` splits the batch: (images per split, splits). The CPU backend takes one
/// split: its twin cuts the batch in two halves itself and adds them, so no reduction dispatch follows.
/// A GPU gets enough splits to fill about 256 workgroups, each split at least 256 pixels of reduction
/// so that the partial sums stay small beside the work. The split depends on the device and the shape
/// only, never on timing.
pub fn weight_splits(dev: &Device, s: &ConvShape) -> (usize, usize) {
    let per = if dev.is_cpu() {
        s.n
    } else {
        let tiles = s.co.div_ceil(TILE) * (s.ci * s.k * s.k).div_ceil(TILE);
        let want = 256usize.div_ceil(tiles).max(1);
        let min_imgs = 256usize.div_ceil(s.ho * s.wo);
        s.n.div_ceil(want).max(min_imgs).min(s.n)
    };
    let splits = s.n.div_ceil(per);
    (s.n.div_ceil(splits), splits)
}

/// dw [co, ci, k, k] from x [n, ci, h, w] and dy [n, co, ho, wo] for a checked shape; with `into`, dw
/// is added into that tensor's buffer, which is returned.
fn run_bwd_weight(
    dev: &Device,
    op: &'static str,
    s: &ConvShape,
    x: &Tensor,
    dy: &Tensor,
    into: Option<&Tensor>,
) -> Result<Tensor> {
    let (per, splits) = weight_splits(dev, s);
    let wn = s.co * s.ci * s.k * s.k;
    let mut p = s.params(op)?;
    p.imgs_per_split = u32_of(op, "images per split", per)?;
    p.splits = u32_of(op, "splits", splits)?;
    u32_of(op, "the partial sums' element count", splits.saturating_mul(wn))?;
    let g = grid(dev, op, s, &mut p, s.co, s.ci * s.k * s.k, splits)?;
    if splits == 1 {
        let dw = match into {
            Some(r) => r.clone(),
            None => Tensor::empty(dev, &s.w_shape(), DType::F32)?,
        };
        p.accumulate = into.is_some() as u32;
        dev.dispatch(Dispatch::new(&CONV2D_BWD_WEIGHT, &p, &[&x.buf, &dy.buf, &dw.buf], g))?;
        return Ok(dw);
    }
    let part = Tensor::empty(dev, &[splits, wn], DType::F32)?;
    dev.dispatch(Dispatch::new(&CONV2D_BWD_WEIGHT, &p, &[&x.buf, &dy.buf, &part.buf], g))?;
    match into {
        // The splits' sum, added into r by the reduction itself (r + (p0 + p1 + ...)).
        Some(r) if wn > 1 => {
            reduce::sum_leading_into(dev, &part, r)?;
            Ok(r.clone())
        }
        Some(r) => crate::ops::elementwise::add(dev, r, &reduce::sum(dev, &part, 0, false)?.reshape(&s.w_shape())?),
        None => reduce::sum(dev, &part, 0, false)?.reshape(&s.w_shape()),
    }
}
