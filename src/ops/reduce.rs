//! Reductions along one axis: sum, mean, max (f32 out) and argmax (u32 out: index of the first maximum).
//! Kernels: shaders/reduce.wgsl; CPU twins: device/cpu/reduce.rs.
//!
//! The input is viewed as [outer, len, inner] around the reduced axis; the output has the input's shape
//! with the axis removed (or kept as 1 with `keepdim`). Kernel choice:
//! * inner == 1 (the reduced axis is last, or only 1s follow it): `reduce_rows`, one 256-thread workgroup
//!   per row with a tree reduction in workgroup memory; rows fold into y past the per-dimension limit.
//! * inner > 1: `reduce_strided`, one thread per output element walking the axis (loads coalesce across
//!   inner). It suits the usual shapes (a short axis, many outputs); a huge axis with very few outputs
//!   gets little parallelism here.
//!
//! Max and argmax expect finite inputs: WGSL leaves comparisons with NaN implementation-defined, so a NaN
//! gives an unspecified (and backend-dependent) result. Sums are not compensated; the row kernel adds
//! 256 strided partials through a tree, so its rounding error grows with len/256 + 8 additions, not len.

use super::{launch_1d, u32_of, want_dtype};
use crate::device::{Device, Dispatch};
use crate::error::{Error, Result};
use crate::kernels::groups_1d;
use crate::kernels::reduce::{ReduceParams, REDUCE_ROWS, REDUCE_STRIDED};
use crate::tensor::{DType, Tensor};

op_codes! {
    /// Reduction ops; the discriminant is the shader's op code.
    pub enum ReduceOp {
        /// Sum along the axis.
        Sum = 0,
        /// Sum divided by the axis length.
        Mean = 1,
        /// Largest element along the axis.
        Max = 2,
        /// Index (u32) of the first maximum along the axis.
        ArgMax = 3,
    }
}

impl ReduceOp {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Mean => "mean",
            ReduceOp::Max => "max",
            ReduceOp::ArgMax => "argmax",
        }
    }

    /// dtype of the result (u32 for `ArgMax`).
    pub fn out_dtype(self) -> DType {
        match self {
            ReduceOp::ArgMax => DType::U32,
            _ => DType::F32,
        }
    }
}

/// Output shape of reducing `axis` of `shape`.
pub fn reduced_shape(shape: &[usize], axis: usize, keepdim: bool) -> Vec<usize> {
    let mut s = shape.to_vec();
    if keepdim {
        s[axis] = 1;
    } else {
        s.remove(axis);
    }
    s
}

/// Reduces `x` (f32) along `axis` with `op`.
pub fn reduce(dev: &Device, op: ReduceOp, x: &Tensor, axis: usize, keepdim: bool) -> Result<Tensor> {
    let name = op.name();
    want_dtype(name, x, DType::F32)?;
    if axis >= x.rank() {
        return Err(Error::invalid(
            name,
            format!("axis {axis} is out of range for shape {:?} (rank {})", x.shape, x.rank()),
        ));
    }
    let len = x.shape[axis];
    if len == 0 && op != ReduceOp::Sum {
        return Err(Error::invalid(name, format!("axis {axis} of shape {:?} is empty", x.shape)));
    }
    let outer: usize = x.shape[..axis].iter().product();
    let inner: usize = x.shape[axis + 1..].iter().product();
    let out = Tensor::empty(dev, &reduced_shape(&x.shape, axis, keepdim), op.out_dtype())?;
    let n_out = outer * inner;
    if n_out == 0 {
        return Ok(out);
    }
    // Element offsets in the shaders are u32.
    u32_of(name, "elements", x.numel())?;
    let p = ReduceParams {
        outer: u32_of(name, "outer extent", outer)?,
        len: u32_of(name, "axis extent", len)?,
        inner: u32_of(name, "inner extent", inner)?,
        op: op as u32,
    };
    if inner == 1 {
        let groups = groups_1d(outer, 1, dev.max_groups_per_dim());
        dev.dispatch(Dispatch::new(&REDUCE_ROWS, &p, &[&x.buf, &out.buf], groups))?;
    } else {
        launch_1d(dev, &REDUCE_STRIDED, &p, &[&x.buf, &out.buf], n_out)?;
    }
    Ok(out)
}

/// Sum along `axis`.
pub fn sum(dev: &Device, x: &Tensor, axis: usize, keepdim: bool) -> Result<Tensor> {
    reduce(dev, ReduceOp::Sum, x, axis, keepdim)
}
/// Mean along `axis`.
pub fn mean(dev: &Device, x: &Tensor, axis: usize, keepdim: bool) -> Result<Tensor> {
    reduce(dev, ReduceOp::Mean, x, axis, keepdim)
}
/// Maximum along `axis`.
pub fn max(dev: &Device, x: &Tensor, axis: usize, keepdim: bool) -> Result<Tensor> {
    reduce(dev, ReduceOp::Max, x, axis, keepdim)
}
/// u32 indices of the first maximum along `axis`.
pub fn argmax(dev: &Device, x: &Tensor, axis: usize, keepdim: bool) -> Result<Tensor> {
    reduce(dev, ReduceOp::ArgMax, x, axis, keepdim)
}

/// out += x summed along axis 0, x [len, out.numel()] with out.numel() > 1 (the strided kernel's
/// accumulating op: a gradient sum folded into the reduction that finishes a gradient).
pub fn sum_leading_into(dev: &Device, x: &Tensor, out: &Tensor) -> Result<()> {
    const OP: &str = "sum_leading_into";
    want_dtype(OP, x, DType::F32)?;
    want_dtype(OP, out, DType::F32)?;
    let inner = out.numel();
    if x.rank() != 2 || x.shape[1] != inner || inner < 2 {
        return Err(Error::invalid(OP, format!("x {:?} must be [len, {inner}] with {inner} > 1", x.shape)));
    }
    let p = ReduceParams {
        outer: 1,
        len: u32_of(OP, "axis extent", x.shape[0])?,
        inner: u32_of(OP, "inner extent", inner)?,
        op: 4,
    };
    u32_of(OP, "elements", x.numel())?;
    launch_1d(dev, &REDUCE_STRIDED, &p, &[&x.buf, &out.buf], inner)
}

/// Sum of all elements, shape [1] (the tensor is reduced as one row).
pub fn sum_all(dev: &Device, x: &Tensor) -> Result<Tensor> {
    want_dtype("sum", x, DType::F32)?;
    reduce(dev, ReduceOp::Sum, &x.reshape(&[1, x.numel()])?, 1, false)
}

/// Mean of all elements, shape [1].
pub fn mean_all(dev: &Device, x: &Tensor) -> Result<Tensor> {
    want_dtype("mean", x, DType::F32)?;
    reduce(dev, ReduceOp::Mean, &x.reshape(&[1, x.numel()])?, 1, false)
}
