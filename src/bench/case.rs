//! What a benchmark case is: its inputs (shapes and value ranges), the op it issues, how its result is
//! checked, and the FLOP and byte counts its rates come from.

use std::rc::Rc;

use crate::device::Device;
use crate::error::Result;
use crate::host::Rng;
use crate::ops::elementwise::{self as ew, Binary};
use crate::ops::layout;
use crate::tensor::Tensor;

use super::families;

/// How the result of a case is checked.
#[derive(Clone, Copy, Debug)]
pub enum Check {
    /// C = op(A)·op(B), inputs [A, B] (rank 3 when `batch` > 1; A stored [K, M] when `trans_a`, B stored
    /// [N, K] when `trans_b`).
    Matmul {
        /// Matrices in the batch.
        batch: usize,
        /// Rows of C.
        m: usize,
        /// Columns of C.
        n: usize,
        /// Length of each dot product.
        k: usize,
        /// A is stored transposed.
        trans_a: bool,
        /// B is stored transposed.
        trans_b: bool,
    },
    /// Fused attention (see `families`): inputs `[qkv]` (forward: out) or `[qkv, dout]` (forward then
    /// backward: dqkv).
    Attention(families::AttnCase),
    /// conv2d forward or one of its gradients (see `families`).
    Conv(families::ConvCase),
    /// One AdamW step: inputs [param, grad, m, v, step, clip]; the result is the updated param.
    Adam(families::AdamCase),
    /// Elementwise map; the host reference applies `host` to the inputs at one index.
    Elementwise {
        /// The value at one index from the inputs' host data.
        host: fn(&[Vec<f32>], usize) -> f32,
    },
    /// Sum of each row of length `len`.
    SumRows {
        /// Row length.
        len: usize,
    },
    /// Softmax of each row of length `len`.
    Softmax {
        /// Row length.
        len: usize,
    },
    /// 2-D transpose of a [rows, cols] input.
    Transpose {
        /// Rows of the input.
        rows: usize,
        /// Columns of the input.
        cols: usize,
    },
    /// Copy of the input.
    Copy,
    /// rng::normal(0, 1) of stream (seed, offset 0).
    Normal {
        /// The stream's seed.
        seed: u64,
    },
}

/// A random input: shape and the uniform range its values are drawn from (fixed seed per case).
#[derive(Clone, Debug)]
pub struct Input {
    /// The tensor's shape.
    pub shape: Vec<usize>,
    /// Lower end of the uniform range (inclusive).
    pub lo: f32,
    /// Upper end of the uniform range (exclusive).
    pub hi: f32,
    /// A u32 tensor with every element set to this value instead (a step counter).
    pub fixed_u32: Option<u32>,
}

impl Input {
    /// An f32 input of `shape` drawn uniformly from [lo, hi).
    pub fn uniform(shape: Vec<usize>, lo: f32, hi: f32) -> Input {
        Input { shape, lo, hi, fixed_u32: None }
    }
}

pub(super) type OpFn = Rc<dyn Fn(&Device, &[Tensor]) -> Result<Tensor>>;

/// One benchmark case.
pub struct Case {
    /// The kernel family ("matmul", "elementwise", ...).
    pub family: &'static str,
    /// The op within the family; runs of other implementations match on family, name and shape.
    pub name: String,
    /// The sizes, as the table and the JSON show them.
    pub shape: String,
    /// Arithmetic operations (see the counting convention in the module doc of `bench`).
    pub flop: u64,
    /// Minimum memory traffic in bytes.
    pub bytes: u64,
    /// The random inputs the op takes, in order.
    pub inputs: Vec<Input>,
    /// How the result is validated.
    pub check: Check,
    /// The entry point that runs the case, where the op chooses among several (matmul).
    pub kernel: Option<&'static str>,
    /// Issues the op on a device, on inputs made from `inputs`.
    pub(super) op: OpFn,
    /// What runs on the benchmarked device when it differs from `op` (see `with_target_fault`).
    target_op: Option<OpFn>,
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Case({})", self.id())
    }
}

impl Case {
    /// A case with every field given; `op` issues the op on a device.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        family: &'static str,
        name: impl Into<String>,
        shape: impl Into<String>,
        flop: u64,
        bytes: u64,
        inputs: Vec<Input>,
        check: Check,
        op: impl Fn(&Device, &[Tensor]) -> Result<Tensor> + 'static,
    ) -> Case {
        Case {
            family,
            name: name.into(),
            shape: shape.into(),
            flop,
            bytes,
            inputs,
            check,
            kernel: None,
            op: Rc::new(op),
            target_op: None,
        }
    }

    /// "family/name shape": how errors and the table name the case.
    pub fn id(&self) -> String {
        format!("{}/{} {}", self.family, self.name, self.shape)
    }

    /// The same case with a wrong result on the benchmarked device: 1.0 is added to its first output
    /// element (with ordinary ops, so capture still works). The reference side is unchanged, so the
    /// validation must fail; tests use this to show that it does.
    pub fn with_target_fault(mut self) -> Case {
        let op = self.op.clone();
        self.target_op = Some(Rc::new(move |d: &Device, ins: &[Tensor]| {
            let y = op(d, ins)?;
            let n = y.numel();
            let flat = y.reshape(&[n])?;
            let head = ew::scalar(d, Binary::Add, &layout::slice(d, &flat, 0, 0, 1)?, 1.0, false)?;
            let out =
                if n > 1 { layout::concat(d, &[&head, &layout::slice(d, &flat, 0, 1, n - 1)?], 0)? } else { head };
            out.reshape(&y.shape)
        }));
        self
    }

    /// What runs on the benchmarked device.
    pub(super) fn target(&self) -> &OpFn {
        self.target_op.as_ref().unwrap_or(&self.op)
    }

    /// Host data of the inputs, from a seed fixed per case (its index in the list).
    pub(super) fn input_data(&self, seed: u64) -> Vec<Vec<f32>> {
        self.inputs
            .iter()
            .enumerate()
            .map(|(i, inp)| {
                let mut r = Rng::new(seed.wrapping_mul(1000).wrapping_add(i as u64 + 1));
                let n: usize = inp.shape.iter().product();
                if inp.fixed_u32.is_some() {
                    return Vec::new();
                }
                r.vec(n, inp.lo, inp.hi)
            })
            .collect()
    }
}

/// The inputs as device tensors: `data` for the random ones, the fixed value for the step counters.
pub(super) fn uploads(dev: &Device, inputs: &[Input], data: &[Vec<f32>]) -> Result<Vec<Tensor>> {
    inputs
        .iter()
        .zip(data)
        .map(|(i, d)| match i.fixed_u32 {
            Some(v) => Tensor::from_u32(dev, &i.shape, &vec![v; i.shape.iter().product()]),
            None => Tensor::from_f32(dev, &i.shape, d),
        })
        .collect()
}
