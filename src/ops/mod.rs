//! Ops on tensors: shape checks, output allocation and the dispatch of one kernel each. Each family
//! file holds the functions users call; the kernels they dispatch, their `#[repr(C)]` params structs and
//! the constants shared with the shaders come from `crate::kernels::<family>` below, and the device runs
//! them (on a GPU, or through the CPU engine's twins). Ops never name an engine.

/// An op-code enum (the discriminant is the shader's op code) and its `ALL` list in code order, from one
/// list of variants.
macro_rules! op_codes {
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $v:ident = $code:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vm])* $v = $code,)*
        }

        impl $name {
            /// Every variant, in op-code order.
            pub const ALL: [$name; [$($code),*].len()] = [$($name::$v),*];
        }
    };
}

pub mod attention;
pub mod batch;
pub mod bce_mean;
pub mod cast;
pub mod chnorm;
pub mod conv;
pub mod conv_fused;
pub mod diffusion;
pub mod dropout;
pub mod elementwise;
pub mod embedding;
pub mod gated;
pub mod layout;
pub mod loss;
pub mod matmul;
pub mod matmul_fused;
pub mod matmul_grouped;
pub mod muon;
pub mod norm;
pub mod optim;
pub mod optim_multi;
pub mod qknorm;
pub mod reduce;
pub mod resnorm;
pub mod rng;
pub mod rope;
pub mod sample;
pub mod softmax;

use crate::device::{Device, Dispatch};
use crate::error::{Error, Result};
use crate::kernels::{groups_1d, Kernel};
use crate::tensor::{DType, Tensor};

pub(crate) fn want_dtype(op: &'static str, t: &Tensor, want: DType) -> Result<()> {
    if t.dtype != want {
        return Err(Error::DType { op, got: t.dtype.name(), want: want.name() });
    }
    Ok(())
}

/// `t` (an argument checked against `x`) as f32 that `fits`; otherwise a shape mismatch of x and t whose
/// hint `why` says what t must be.
pub(crate) fn want_f32_fit(
    op: &'static str,
    t: &Tensor,
    x: &Tensor,
    fits: bool,
    why: impl FnOnce() -> String,
) -> Result<()> {
    want_dtype(op, t, DType::F32)?;
    if !fits {
        return Err(Error::ShapeMismatch {
            op,
            lhs: x.shape.clone(),
            rhs: t.shape.clone(),
            hint: format!(" ({})", why()),
        });
    }
    Ok(())
}

/// Dispatches a 1-D kernel over `n` elements (one invocation each).
pub(crate) fn launch_1d<P: bytemuck::Pod>(
    dev: &Device,
    k: &'static Kernel,
    p: &P,
    bufs: &[&crate::device::Buffer],
    n: usize,
) -> Result<()> {
    let wg = k.workgroup_size()[0];
    dev.dispatch(Dispatch::new(k, p, bufs, groups_1d(n, wg, dev.max_groups_per_dim())))
}

/// u32 fields of params structs; shapes over u32 are refused with a clear error.
pub(crate) fn u32_of(op: &'static str, what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::invalid(op, format!("{what} = {v} does not fit in 32 bits")))
}
