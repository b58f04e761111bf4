//! Elementwise ops: unary, binary with numpy-style broadcasting, scalar forms, and the backward of the
//! unary ops (`unary_backward`: dx = dy * f'(x)). Binary ops need no backward kernel: their gradients are
//! compositions of the forward ops.
//! Kernels: shaders/elementwise.wgsl; CPU twins: device/cpu/elementwise.rs.

use super::{launch_1d, u32_of, want_dtype, want_f32_fit};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::kernels::elementwise::{
    BinaryParams, ScalarParams, UnaryParams, BINARY, BINARY_SAME, MAX_RANK, SCALAR, UNARY, UNARY_BACKWARD,
};
use crate::tensor::{DType, Tensor};

op_codes! {
    /// Unary ops; the discriminant is the shader's op code.
    pub enum Unary {
        /// -x.
        Neg = 0,
        /// |x|.
        Abs = 1,
        /// e^x.
        Exp = 2,
        /// ln x.
        Log = 3,
        /// sqrt(x).
        Sqrt = 4,
        /// 1 / sqrt(x).
        Rsqrt = 5,
        /// 1 / x.
        Recip = 6,
        /// sin x.
        Sin = 7,
        /// cos x.
        Cos = 8,
        /// tanh x.
        Tanh = 9,
        /// 1 / (1 + e^-x).
        Sigmoid = 10,
        /// max(x, 0).
        Relu = 11,
        /// GELU, tanh approximation (as GPT-2).
        Gelu = 12,
        /// x * sigmoid(x).
        Silu = 13,
        /// x * x.
        Square = 14,
        /// -1, 0 or 1.
        Sign = 15,
        /// Leaky ReLU; its slope is the `alpha` argument of `unary_with`.
        LeakyRelu = 16,
    }
}

op_codes! {
    /// Binary ops; the discriminant is the shader's op code. Comparisons give 1.0 or 0.0; `Pow` is defined
    /// for a positive base (as WGSL's pow).
    pub enum Binary {
        /// a + b.
        Add = 0,
        /// a - b.
        Sub = 1,
        /// a * b.
        Mul = 2,
        /// a / b.
        Div = 3,
        /// max(a, b).
        Max = 4,
        /// min(a, b).
        Min = 5,
        /// a^b.
        Pow = 6,
        /// 1 where a > b, else 0.
        Greater = 7,
        /// 1 where a < b, else 0.
        Less = 8,
        /// 1 where a == b, else 0.
        Equal = 9,
    }
}

/// `op` applied to every element of x.
pub fn unary(dev: &Device, op: Unary, x: &Tensor) -> Result<Tensor> {
    unary_with(dev, op, x, 0.01)
}

/// `unary` with the op's parameter (the slope of `LeakyRelu`).
pub fn unary_with(dev: &Device, op: Unary, x: &Tensor, alpha: f32) -> Result<Tensor> {
    want_dtype("unary", x, DType::F32)?;
    let out = Tensor::empty(dev, &x.shape, DType::F32)?;
    let n = x.numel();
    let p = UnaryParams { n: u32_of("unary", "elements", n)?, op: op as u32, alpha, _pad: 0 };
    launch_1d(dev, &UNARY, &p, &[&x.buf, &out.buf], n)?;
    Ok(out)
}

/// Backward of `unary_with(op, x, alpha)`: dx = dy * f'(x), elementwise, for x and dy of one shape.
///
/// f' is exact calculus of the forward formula, with these conventions at kinks: `Abs` gives sign(x)
/// (0 at 0), `Relu` 0 at 0, `LeakyRelu` alpha at 0 and below, `Sign` 0 everywhere. `Gelu` is the derivative
/// of the tanh approximation the forward computes. Outside a function's domain (log, sqrt of x <= 0) the
/// result is what the formula gives there (inf or NaN), as in the forward.
pub fn unary_backward(dev: &Device, op: Unary, x: &Tensor, dy: &Tensor, alpha: f32) -> Result<Tensor> {
    want_dtype("unary_backward", x, DType::F32)?;
    want_f32_fit("unary_backward", dy, x, x.shape == dy.shape, || "x and dy must have one shape".into())?;
    let dx = Tensor::empty(dev, &x.shape, DType::F32)?;
    let n = x.numel();
    if n == 0 {
        return Ok(dx);
    }
    let p = UnaryParams { n: u32_of("unary_backward", "elements", n)?, op: op as u32, alpha, _pad: 0 };
    launch_1d(dev, &UNARY_BACKWARD, &p, &[&x.buf, &dy.buf, &dx.buf], n)?;
    Ok(dx)
}

/// Output shape and per-operand element strides (0 along broadcast axes) under numpy's rules: shapes
/// are aligned at the last axis, and an axis of extent 1 stretches to match the other.
pub fn broadcast(op: &'static str, a: &[usize], b: &[usize]) -> Result<(Vec<usize>, Vec<usize>, Vec<usize>)> {
    let rank = a.len().max(b.len());
    if rank > MAX_RANK {
        return Err(Error::invalid(op, format!("rank {rank} is over the supported {MAX_RANK}")));
    }
    let pad = |s: &[usize]| -> Vec<usize> { std::iter::repeat_n(1, rank - s.len()).chain(s.iter().copied()).collect() };
    let (pa, pb) = (pad(a), pad(b));
    let mut out = vec![0; rank];
    for d in 0..rank {
        out[d] = match (pa[d], pb[d]) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(Error::ShapeMismatch {
                    op,
                    lhs: a.to_vec(),
                    rhs: b.to_vec(),
                    hint: format!(
                        " (axis {d} from the left after aligning: {} vs {}; broadcasting needs equal extents or 1)",
                        pa[d], pb[d]
                    ),
                })
            }
        };
    }
    let strides = |s: &[usize]| -> Vec<usize> {
        let mut st = vec![0; rank];
        let mut acc = 1;
        for d in (0..rank).rev() {
            st[d] = if s[d] == 1 && out[d] != 1 { 0 } else { acc };
            acc *= s[d];
        }
        st
    };
    let (sa, sb) = (strides(&pa), strides(&pb));
    Ok((out, sa, sb))
}

fn pack8(op: &'static str, v: &[usize]) -> Result<[u32; MAX_RANK]> {
    let mut o = [0u32; MAX_RANK];
    for (i, &x) in v.iter().enumerate() {
        o[i] = u32_of(op, "extent", x)?;
    }
    Ok(o)
}

/// `op` of a and b elementwise, broadcasting as NumPy.
pub fn binary(dev: &Device, op: Binary, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    want_dtype("binary", a, DType::F32)?;
    want_dtype("binary", b, DType::F32)?;
    let (shape, sa, sb) = broadcast("binary", &a.shape, &b.shape)?;
    let out = Tensor::empty(dev, &shape, DType::F32)?;
    let n = out.numel();
    let p = BinaryParams {
        n: u32_of("binary", "elements", n)?,
        rank: shape.len() as u32,
        op: op as u32,
        contiguous: (a.shape == b.shape) as u32,
        shape: pack8("binary", &shape)?,
        a_strides: pack8("binary", &sa)?,
        b_strides: pack8("binary", &sb)?,
    };
    let k = if p.contiguous == 1 { &BINARY_SAME } else { &BINARY };
    launch_1d(dev, k, &p, &[&a.buf, &b.buf, &out.buf], n)?;
    Ok(out)
}

/// x broadcast to `shape` (numpy's rules, x's shape aligned at the last axis), in one dispatch: the
/// binary kernel with max(x, x), which is x exactly, reading x through its broadcast strides.
pub fn broadcast_to(dev: &Device, x: &Tensor, shape: &[usize]) -> Result<Tensor> {
    const OP: &str = "broadcast_to";
    want_dtype(OP, x, DType::F32)?;
    let (out_shape, sx, _) = broadcast(OP, &x.shape, shape)?;
    if out_shape != shape {
        return Err(Error::ShapeMismatch {
            op: OP,
            lhs: x.shape.clone(),
            rhs: shape.to_vec(),
            hint: " (the input must broadcast to the target)".into(),
        });
    }
    let out = Tensor::empty(dev, shape, DType::F32)?;
    let n = out.numel();
    if n == 0 {
        return Ok(out);
    }
    let p = BinaryParams {
        n: u32_of(OP, "elements", n)?,
        rank: shape.len() as u32,
        op: Binary::Max as u32,
        contiguous: 0,
        shape: pack8(OP, shape)?,
        a_strides: pack8(OP, &sx)?,
        b_strides: pack8(OP, &sx)?,
    };
    launch_1d(dev, &BINARY, &p, &[&x.buf, &x.buf, &out.buf], n)?;
    Ok(out)
}

/// `op(x, s)`, or `op(s, x)` when `reverse`.
pub fn scalar(dev: &Device, op: Binary, x: &Tensor, s: f32, reverse: bool) -> Result<Tensor> {
    want_dtype("scalar", x, DType::F32)?;
    let out = Tensor::empty(dev, &x.shape, DType::F32)?;
    let n = x.numel();
    let p = ScalarParams {
        n: u32_of("scalar", "elements", n)?,
        op: op as u32,
        reverse: reverse as u32,
        s,
        ..Default::default()
    };
    launch_1d(dev, &SCALAR, &p, &[&x.buf, &out.buf], n)?;
    Ok(out)
}

/// `x * s` broadcast along `axis` to `extent`: x has extent 1 there (the backward of a mean, in one
/// dispatch).
pub fn scale_broadcast(dev: &Device, x: &Tensor, axis: usize, extent: usize, s: f32) -> Result<Tensor> {
    const OP: &str = "scale_broadcast";
    want_dtype(OP, x, DType::F32)?;
    if x.shape.get(axis) != Some(&1) {
        return Err(Error::invalid(OP, format!("axis {axis} of {:?} must have extent 1", x.shape)));
    }
    let mut shape = x.shape.clone();
    shape[axis] = extent;
    let out = Tensor::empty(dev, &shape, DType::F32)?;
    let n = out.numel();
    if n == 0 {
        return Ok(out);
    }
    let p = ScalarParams {
        n: u32_of(OP, "elements", n)?,
        op: Binary::Mul as u32,
        s,
        rep: u32_of(OP, "extent", extent)?,
        inner: u32_of(OP, "inner extent", shape[axis + 1..].iter().product())?,
        ..Default::default()
    };
    launch_1d(dev, &SCALAR, &p, &[&x.buf, &out.buf], n)?;
    Ok(out)
}

/// a + b, broadcasting.
pub fn add(dev: &Device, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(dev, Binary::Add, a, b)
}
/// a - b, broadcasting.
pub fn sub(dev: &Device, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(dev, Binary::Sub, a, b)
}
/// a * b, broadcasting.
pub fn mul(dev: &Device, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(dev, Binary::Mul, a, b)
}
/// a / b, broadcasting.
pub fn div(dev: &Device, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(dev, Binary::Div, a, b)
}
