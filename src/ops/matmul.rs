//! Matrix multiply: C = alpha * op(A) * op(B) (+ C), rank 2 or batched rank 3, op = identity or transpose.
//! Kernels: shaders/matmul.wgsl (and shaders/matmul_pair.wgsl for two independent products in one
//! dispatch); CPU twin: device/cpu/matmul.rs (on `host::gemm::sgemm`).
//!
//! Shapes: op(A) is M x K, stored [M,K] or, with `trans_a`, [K,M]; op(B) is K x N, stored [K,N] or, with
//! `trans_b`, [N,K]; a leading batch axis is optional on each. A rank-2 operand (or a batch of 1) beside
//! a batched one is shared by every matrix of the batch. The result is [M,N], or [batch,M,N] when
//! either operand has a batch axis.

use super::u32_of;
use crate::device::{Device, Dispatch};
use crate::error::{Error, Result};
use crate::kernels::matmul::{
    MatmulParams, HALF_A, HALF_B, MATMUL_BLOCKED, MATMUL_HALF, MATMUL_SMALL, MATMUL_TILED, MATMUL_TILED_VEC4, TILE,
};
use crate::kernels::matmul_pair::{MatmulPairParams, MATMUL_PAIR};
use crate::kernels::{groups_1d, Kernel};
use crate::tensor::{numel, DType, Tensor};

const OP: &str = "matmul";

/// How a matmul reads its operands and scales the product.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MatmulOpts {
    /// A is stored [K,M] (or [batch,K,M]) and used transposed.
    pub trans_a: bool,
    /// B is stored [N,K] (or [batch,N,K]) and used transposed.
    pub trans_b: bool,
    /// Scale of the product: C = alpha * op(A) * op(B) (+ C).
    pub alpha: f32,
}

impl Default for MatmulOpts {
    fn default() -> Self {
        MatmulOpts { trans_a: false, trans_b: false, alpha: 1.0 }
    }
}

/// Which entry point runs a matmul. `Auto` asks `choose_kernel`; the others force one (tests, tuning).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelChoice {
    /// Let `choose_kernel` pick.
    Auto,
    /// `matmul_tiled`.
    Tiled,
    /// `matmul_tiled_vec4`.
    TiledVec4,
    /// `matmul_small`.
    Small,
    /// `matmul_blocked` (shaders/matmul_blocked.wgsl), whose tile variant the device tunes.
    Blocked,
    /// `matmul_half` (shaders/matmul_half.wgsl): A and/or B stored f16. Chosen whenever an operand is
    /// f16, and only then.
    Half,
}

impl KernelChoice {
    /// The forced kernel (None for `Auto`).
    pub fn kernel(self) -> Option<&'static Kernel> {
        match self {
            KernelChoice::Auto => None,
            KernelChoice::Tiled => Some(&MATMUL_TILED),
            KernelChoice::TiledVec4 => Some(&MATMUL_TILED_VEC4),
            KernelChoice::Small => Some(&MATMUL_SMALL),
            KernelChoice::Blocked => Some(&MATMUL_BLOCKED),
            KernelChoice::Half => Some(&MATMUL_HALF),
        }
    }
}

/// A matmul's sizes after the shape checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatmulShape {
    /// Matrices in the batch.
    pub batch: usize,
    /// Rows of C.
    pub m: usize,
    /// Columns of C.
    pub n: usize,
    /// The shared dimension.
    pub k: usize,
    /// Elements between batch matrices of A and B (0: shared over the batch).
    pub stride_a: usize,
    /// As `stride_a`, for B.
    pub stride_b: usize,
    /// Shape of C: [M,N] for two rank-2 operands, else [batch,M,N].
    pub out_shape: Vec<usize>,
}

/// True when the vec4 kernel may run: the contiguous (stored row) length of A (K, or M when trans_a),
/// of B (N, or K when trans_b) and of C (N) are multiples of 4, so every vec4 load and store stays
/// inside one row, and every batch matrix starts on a vec4 boundary (its size is a multiple of its
/// row length). K = 0 is excluded: A and B would then be empty and too small to bind as vec4.
pub fn vec4_aligned(m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool) -> bool {
    let a_row = if trans_a { m } else { k };
    let b_row = if trans_b { k } else { n };
    k > 0 && a_row.is_multiple_of(4) && b_row.is_multiple_of(4) && n.is_multiple_of(4)
}

/// The kernel `KernelChoice::Auto` runs:
/// * `Small` when M < 16 or N < 16 (a 64x64 tile would leave at least 3/4 of its threads computing
///   padding: matrix-vector and skinny products), or when M*N <= 32*32 (the whole result is at most a
///   quarter tile; one thread per element gives more parallel threads and launch cost dominates anyway);
/// * else `TiledVec4` when `vec4_aligned` holds (half or fewer global memory instructions);
/// * else `Tiled`.
pub fn choose_kernel(m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool) -> KernelChoice {
    if m < 16 || n < 16 || m * n <= 32 * 32 {
        KernelChoice::Small
    } else if vec4_aligned(m, n, k, trans_a, trans_b) {
        KernelChoice::TiledVec4
    } else {
        // matmul_tiled's tiling, with tile variants the device tunes.
        KernelChoice::Blocked
    }
}

/// Checks the operand shapes and works out M, N, K, the batch and the output shape.
pub fn matmul_shape(a: &[usize], b: &[usize], opts: &MatmulOpts) -> Result<MatmulShape> {
    for (name, s) in [("A", a), ("B", b)] {
        if s.len() != 2 && s.len() != 3 {
            return Err(Error::invalid(
                OP,
                format!(
                    "{name} has rank {} (A {a:?}, B {b:?}); operands are [rows, cols] or [batch, rows, cols]",
                    s.len()
                ),
            ));
        }
    }
    // Element counts first: the products below (M*K, K*N) are then known not to overflow.
    numel(a)?;
    numel(b)?;
    let split = |s: &[usize]| -> (Option<usize>, usize, usize) {
        match s {
            [r, c] => (None, *r, *c),
            [z, r, c] => (Some(*z), *r, *c),
            _ => unreachable!("rank checked above"),
        }
    };
    let (za, ra, ca) = split(a);
    let (zb, rb, cb) = split(b);
    let (m, ka) = if opts.trans_a { (ca, ra) } else { (ra, ca) };
    let (kb, n) = if opts.trans_b { (cb, rb) } else { (rb, cb) };
    if ka != kb {
        let t = |on: bool| if on { " (transposed)" } else { "" };
        return Err(Error::invalid(
            OP,
            format!(
                "inner dimensions differ: A {a:?}{} has K={ka}, B {b:?}{} has K={kb}",
                t(opts.trans_a),
                t(opts.trans_b)
            ),
        ));
    }
    let k = ka;
    let (batch, shared_a, shared_b) = match (za, zb) {
        (None, None) => (1, false, false),
        (Some(x), None) => (x, false, true),
        (None, Some(y)) => (y, true, false),
        (Some(x), Some(y)) if x == y => (x, false, false),
        (Some(1), Some(y)) => (y, true, false),
        (Some(x), Some(1)) => (x, false, true),
        (Some(x), Some(y)) => {
            return Err(Error::invalid(
                OP,
                format!(
                    "batch sizes differ: A {a:?} has batch {x}, B {b:?} has batch {y} (they must be equal, or one \
                     of them 1 or absent)"
                ),
            ))
        }
    };
    let out_shape = if za.is_none() && zb.is_none() { vec![m, n] } else { vec![batch, m, n] };
    numel(&out_shape)?;
    Ok(MatmulShape {
        batch,
        m,
        n,
        k,
        stride_a: if shared_a { 0 } else { m * k },
        stride_b: if shared_b { 0 } else { k * n },
        out_shape,
    })
}

fn check_operand(name: &str, t: &Tensor, a: &Tensor, b: &Tensor) -> Result<()> {
    // The operands may be f16 (read by matmul_half); the result is always f32.
    let ok = t.dtype == DType::F32 || (t.dtype == DType::F16 && name != "out");
    if !ok {
        let want = if name == "out" { "f32" } else { "f32 or f16" };
        return Err(Error::invalid(
            OP,
            format!("{name} has dtype {}, {want} is required (A {:?}, B {:?})", t.dtype.name(), a.shape, b.shape),
        ));
    }
    let n = numel(&t.shape)?;
    if t.buf.words() < t.dtype.words(n) {
        return Err(Error::invalid(
            OP,
            format!("{name} {:?} needs {n} elements, its buffer holds {}", t.shape, t.buf.words()),
        ));
    }
    // Shader indices are u32 (offsets into a whole batched operand).
    u32_of(OP, &format!("the element count of {name} {:?}", t.shape), n)?;
    Ok(())
}

/// Checks one product `out = alpha*op(A)*op(B) (+ out)` and lays out its params.
pub(crate) fn checked_params(
    a: &Tensor,
    b: &Tensor,
    opts: MatmulOpts,
    out: &Tensor,
    accumulate: bool,
) -> Result<(MatmulShape, MatmulParams)> {
    let s = matmul_shape(&a.shape, &b.shape, &opts)?;
    check_operand("A", a, a, b)?;
    check_operand("B", b, a, b)?;
    check_operand("out", out, a, b)?;
    if out.shape != s.out_shape {
        return Err(Error::invalid(
            OP,
            format!("out is {:?}, A {:?} times B {:?} is {:?}", out.shape, a.shape, b.shape, s.out_shape),
        ));
    }
    if out.buf.same(&a.buf) || out.buf.same(&b.buf) {
        return Err(Error::invalid(
            OP,
            format!("out {:?} shares its buffer with an operand (A {:?}, B {:?})", out.shape, a.shape, b.shape),
        ));
    }
    let p = MatmulParams {
        m: u32_of(OP, "M", s.m)?,
        n: u32_of(OP, "N", s.n)?,
        k: u32_of(OP, "K", s.k)?,
        batch: u32_of(OP, "batch", s.batch)?,
        trans_a: opts.trans_a as u32,
        trans_b: opts.trans_b as u32,
        accumulate: accumulate as u32,
        alpha: opts.alpha,
        stride_a: u32_of(OP, "A's batch stride", s.stride_a)?,
        stride_b: u32_of(OP, "B's batch stride", s.stride_b)?,
        stride_c: u32_of(OP, "M*N", s.m * s.n)?,
        half: if a.dtype == DType::F16 { HALF_A } else { 0 } | if b.dtype == DType::F16 { HALF_B } else { 0 },
    };
    Ok((s, p))
}

/// The dispatch computing `out = alpha*op(A)*op(B) (+ out)`, after every check; None when the result is
/// empty (M, N or batch is 0: nothing to do). Graph executors record it; the functions below issue it.
pub fn matmul_dispatch(
    dev: &Device,
    a: &Tensor,
    b: &Tensor,
    opts: MatmulOpts,
    out: &Tensor,
    accumulate: bool,
    choice: KernelChoice,
) -> Result<Option<Dispatch>> {
    let (s, p) = checked_params(a, b, opts, out, accumulate)?;
    Ok(plan(dev, a, b, opts, &s, &p, choice)?.map(|(c, groups)| {
        let kernel = c.kernel().expect("Auto resolved by plan");
        Dispatch::new(kernel, &p, &[&a.buf, &b.buf, &out.buf], groups)
    }))
}

/// The kernel and grid for a checked product; None when the result is empty.
pub(crate) fn plan(
    dev: &Device,
    a: &Tensor,
    b: &Tensor,
    opts: MatmulOpts,
    s: &MatmulShape,
    p: &MatmulParams,
    choice: KernelChoice,
) -> Result<Option<(KernelChoice, [u32; 3])>> {
    let sizes = format!("M={}, N={}, K={}, batch={}", s.m, s.n, s.k, s.batch);
    if s.m == 0 || s.n == 0 || s.batch == 0 {
        return Ok(None);
    }
    let choice = match choice {
        // f16 operands: only matmul_half reads them, and it reads only them.
        _ if p.half != 0 => KernelChoice::Half,
        KernelChoice::Half => return Err(Error::invalid(OP, "matmul_half needs an f16 operand (A or B)")),
        KernelChoice::Auto => choose_kernel(s.m, s.n, s.k, opts.trans_a, opts.trans_b),
        KernelChoice::TiledVec4 if !vec4_aligned(s.m, s.n, s.k, opts.trans_a, opts.trans_b) => {
            return Err(Error::invalid(
                OP,
                format!(
                    "matmul_tiled_vec4 needs K > 0 and the row lengths of A, B and C to be multiples of 4 \
                     (A {:?}, B {:?}, trans_a={}, trans_b={}: {sizes})",
                    a.shape, b.shape, opts.trans_a, opts.trans_b
                ),
            ))
        }
        c => c,
    };
    let kernel = choice.kernel().expect("Auto resolved above");
    let max = dev.max_groups_per_dim();
    let groups = match choice {
        KernelChoice::Small => {
            let g = groups_1d(s.m * s.n, kernel.workgroup_size()[0], max);
            [g[0], g[1], p.batch]
        }
        _ => [s.n.div_ceil(TILE) as u32, s.m.div_ceil(TILE) as u32, p.batch],
    };
    if let Some(&worst) = groups.iter().max().filter(|&&g| g > max) {
        return Err(Error::LimitExceeded {
            what: format!(
                "matmul of A {:?} and B {:?} ({sizes}) with {} (grid {groups:?})",
                a.shape,
                b.shape,
                kernel.name()
            ),
            requested: worst as u64,
            limit_name: "max_compute_workgroups_per_dimension",
            limit: max as u64,
        });
    }
    Ok(Some((choice, groups)))
}

/// `out = alpha*op(A)*op(B)`, or `out += alpha*op(A)*op(B)` when `accumulate`, with the kernel forced.
pub fn matmul_into_with(
    dev: &Device,
    a: &Tensor,
    b: &Tensor,
    opts: MatmulOpts,
    out: &Tensor,
    accumulate: bool,
    choice: KernelChoice,
) -> Result<()> {
    match matmul_dispatch(dev, a, b, opts, out, accumulate, choice)? {
        Some(d) => dev.dispatch(d),
        None => Ok(()),
    }
}

/// `out = alpha*op(A)*op(B)`, or `out += alpha*op(A)*op(B)` when `accumulate` (gradient accumulation).
pub fn matmul_into(
    dev: &Device,
    a: &Tensor,
    b: &Tensor,
    opts: MatmulOpts,
    out: &Tensor,
    accumulate: bool,
) -> Result<()> {
    matmul_into_with(dev, a, b, opts, out, accumulate, KernelChoice::Auto)
}

/// `alpha*op(A)*op(B)` in a new tensor, with the kernel forced.
pub fn matmul_with(dev: &Device, a: &Tensor, b: &Tensor, opts: MatmulOpts, choice: KernelChoice) -> Result<Tensor> {
    let s = matmul_shape(&a.shape, &b.shape, &opts)?;
    check_operand("A", a, a, b)?;
    check_operand("B", b, a, b)?;
    let out = Tensor::empty(dev, &s.out_shape, DType::F32)?;
    matmul_into_with(dev, a, b, opts, &out, false, choice)?;
    Ok(out)
}

/// `alpha*op(A)*op(B)` in a new tensor ([M,N], or [batch,M,N] when an operand is batched).
pub fn matmul(dev: &Device, a: &Tensor, b: &Tensor, opts: MatmulOpts) -> Result<Tensor> {
    matmul_with(dev, a, b, opts, KernelChoice::Auto)
}

/// One product of a matmul pair: `out = alpha*op(a)*op(b)`, or `out += ...` when `accumulate`.
#[derive(Clone, Copy, Debug)]
pub struct MatmulJob<'a> {
    /// A.
    pub a: &'a Tensor,
    /// B.
    pub b: &'a Tensor,
    /// Transposes and alpha.
    pub opts: MatmulOpts,
    /// C, written (or added to).
    pub out: &'a Tensor,
    /// Add to `out` rather than overwrite it.
    pub accumulate: bool,
}

/// The dispatches computing two independent products: one `matmul_pair` dispatch (shaders/matmul_pair.wgsl,
/// the numbers of `matmul_tiled` for each), or, where one dispatch cannot hold both (an empty product, an
/// output bound twice or also read, a grid over the device's limit, an f16 operand), each product's own
/// dispatch.
pub fn matmul_pair_dispatches(dev: &Device, jobs: [MatmulJob; 2]) -> Result<Vec<Dispatch>> {
    let [j0, j1] = jobs;
    let (s0, p0) = checked_params(j0.a, j0.b, j0.opts, j0.out, j0.accumulate)?;
    let (s1, p1) = checked_params(j1.a, j1.b, j1.opts, j1.out, j1.accumulate)?;
    let empty = |s: &MatmulShape| s.m == 0 || s.n == 0 || s.batch == 0;
    // wgpu refuses a buffer bound read-write and again in the same dispatch.
    let outs_clash = j0.out.buf.same(&j1.out.buf)
        || [j1.a, j1.b].iter().any(|t| t.buf.same(&j0.out.buf))
        || [j0.a, j0.b].iter().any(|t| t.buf.same(&j1.out.buf));
    let grid = pair_grid(dev, (&s0, p0), (&s1, p1), true);
    // The pair kernel reads f32 operands; f16 ones go to matmul_half, one product at a time.
    let half = p0.half != 0 || p1.half != 0;
    let (Some((pp, groups)), false, false) = (grid, empty(&s0) || empty(&s1) || half, outs_clash) else {
        let one = |j: MatmulJob| matmul_dispatch(dev, j.a, j.b, j.opts, j.out, j.accumulate, KernelChoice::Auto);
        return Ok([one(j0)?, one(j1)?].into_iter().flatten().collect());
    };
    let bufs = [&j0.a.buf, &j0.b.buf, &j1.a.buf, &j1.b.buf, &j0.out.buf, &j1.out.buf];
    Ok(vec![Dispatch::new(&MATMUL_PAIR, &pp, &bufs, groups)])
}

/// The params and grid of a `matmul_pair` family dispatch over two checked products: x runs over the
/// tiles of product 0 then (`both`) product 1's, z over the larger batch. None when the grid passes the
/// device's limits.
pub(crate) fn pair_grid(
    dev: &Device,
    (s0, p0): (&MatmulShape, MatmulParams),
    (s1, p1): (&MatmulShape, MatmulParams),
    both: bool,
) -> Option<(MatmulPairParams, [u32; 3])> {
    let tiles = |s: &MatmulShape| (s.n.div_ceil(TILE), s.n.div_ceil(TILE) * s.m.div_ceil(TILE));
    let ((cols0, t0), (cols1, t1)) = (tiles(s0), tiles(s1));
    let x = if both { t0 + t1 } else { t0 };
    let z = s0.batch.max(s1.batch);
    let max = dev.max_groups_per_dim() as usize;
    if x > max || z > max {
        return None;
    }
    let pp = MatmulPairParams {
        p0: bytemuck::cast(p0),
        p1: bytemuck::cast(p1),
        tiles0: t0 as u32,
        cols0: cols0 as u32,
        cols1: cols1 as u32,
        _pad: 0,
    };
    Some((pp, [x as u32, 1, z as u32]))
}

/// Issues two independent products, in one dispatch where it can (`matmul_pair_dispatches`).
pub fn matmul_pair_into(dev: &Device, jobs: [MatmulJob; 2]) -> Result<()> {
    for d in matmul_pair_dispatches(dev, jobs)? {
        dev.dispatch(d)?;
    }
    Ok(())
}
