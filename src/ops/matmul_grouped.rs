//! The grouped GEMM (shaders/matmul_grouped.wgsl; CPU twin: device/cpu/matmul_grouped.rs): many
//! independent products C_q = alpha_q·op(A_q)·op(B_q) + beta_q·D_q in one dispatch, every matrix at an
//! element offset of four shared buffers (arenas). The problems are fixed when the `GroupedGemm` is
//! made (their descriptor table is uploaded once, so make it before `Device::capture`); each `run` is
//! one dispatch over the arenas it is given, checked against the extents the problems reach.

use super::{u32_of, want_dtype};
use crate::device::{Device, Dispatch};
use crate::error::{Error, Result};
use crate::kernels::groups_1d;
use crate::kernels::matmul_grouped::{GroupedParams, MATMUL_GROUPED, PROBLEM_WORDS, TILE};
use crate::tensor::{DType, Tensor};

const OP: &str = "matmul_grouped";

/// One product of a grouped GEMM: C = alpha·op(A)·op(B) + beta·D, op(A) m x k (stored [m, k], or
/// [k, m] with `trans_a`), op(B) k x n (stored [k, n], or [n, k] with `trans_b`), C and D m x n, all
/// row-major from their element offsets in the arenas (C and D stored [n, m] with `trans_c`). beta = 0
/// leaves D unread.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GemmProblem {
    /// Rows of C.
    pub m: usize,
    /// Columns of C.
    pub n: usize,
    /// The summed dimension.
    pub k: usize,
    /// A's first element in the A arena.
    pub off_a: usize,
    /// B's first element in the B arena.
    pub off_b: usize,
    /// C's first element in the C arena.
    pub off_c: usize,
    /// D's first element in the D arena (unused when beta = 0).
    pub off_d: usize,
    /// A is stored [k, m].
    pub trans_a: bool,
    /// B is stored [n, k].
    pub trans_b: bool,
    /// C and D are stored [n, m] (transposed).
    pub trans_c: bool,
    /// Scale of the product.
    pub alpha: f32,
    /// Scale of D.
    pub beta: f32,
}

/// A fixed list of problems and their uploaded descriptor table. See the module documentation.
pub struct GroupedGemm {
    table: Tensor,
    count: u32,
    tiles: u32,
    /// Elements the A, B, C and D arenas must hold at least.
    need: [usize; 4],
    /// Bound as D when no problem reads D.
    placeholder: Tensor,
}

impl std::fmt::Debug for GroupedGemm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GroupedGemm({} problems, {} tiles)", self.count, self.tiles)
    }
}

impl GroupedGemm {
    /// Checks the problems (their sizes and offsets fit in 32 bits, no two C regions overlap) and
    /// uploads their table.
    pub fn new(dev: &Device, problems: &[GemmProblem]) -> Result<GroupedGemm> {
        let mut words = Vec::with_capacity(problems.len().max(1) * PROBLEM_WORDS);
        let mut need = [0usize; 4];
        let mut tiles = 0usize;
        for (q, p) in problems.iter().enumerate() {
            let (mn, mk, kn) = (p.m * p.n, p.m * p.k, p.k * p.n);
            if !(p.alpha.is_finite() && p.beta.is_finite()) {
                return Err(Error::invalid(
                    OP,
                    format!("problem {q}: alpha {} and beta {} must be finite", p.alpha, p.beta),
                ));
            }
            let ends = [p.off_a + mk, p.off_b + kn, p.off_c + mn, if p.beta != 0.0 { p.off_d + mn } else { 0 }];
            for (n, e) in need.iter_mut().zip(ends) {
                u32_of(OP, "an arena extent", e)?;
                *n = (*n).max(e);
            }
            for (r, o) in problems[..q].iter().enumerate() {
                let overlap = p.off_c < o.off_c + o.m * o.n && o.off_c < p.off_c + mn && mn > 0 && o.m * o.n > 0;
                if overlap {
                    return Err(Error::invalid(OP, format!("problems {r} and {q} write overlapping regions of C")));
                }
            }
            let start = u32_of(OP, "tiles", tiles)?;
            let fields = [p.m, p.n, p.k, p.off_a, p.off_b, p.off_c, p.off_d];
            words.extend(fields.iter().map(|&v| v as u32));
            words.extend([
                p.trans_a as u32,
                p.trans_b as u32,
                p.alpha.to_bits(),
                p.beta.to_bits(),
                start,
                p.trans_c as u32,
            ]);
            tiles += p.m.div_ceil(TILE) * p.n.div_ceil(TILE);
        }
        if words.is_empty() {
            words.resize(PROBLEM_WORDS, 0);
        }
        Ok(GroupedGemm {
            table: Tensor::from_u32(dev, &[words.len()], &words)?,
            count: u32_of(OP, "problems", problems.len())?,
            tiles: u32_of(OP, "tiles", tiles)?,
            need,
            placeholder: Tensor::empty(dev, &[1], DType::F32)?,
        })
    }

    /// One dispatch: every problem's C from the arenas `a`, `b` and `d` (None when no problem reads D)
    /// into the arena `c`, a buffer of its own.
    pub fn run(&self, dev: &Device, a: &Tensor, b: &Tensor, d: Option<&Tensor>, c: &Tensor) -> Result<()> {
        let d = match d {
            Some(d) => d,
            None if self.need[3] == 0 => &self.placeholder,
            None => return Err(Error::invalid(OP, "a problem reads D (beta != 0) but no D arena was given")),
        };
        for ((what, t), need) in [("A", a), ("B", b), ("C", c), ("D", d)].into_iter().zip(self.need) {
            want_dtype(OP, t, DType::F32)?;
            if t.numel() < need {
                return Err(Error::invalid(
                    OP,
                    format!("the {what} arena {:?} holds {} elements, the problems reach {need}", t.shape, t.numel()),
                ));
            }
        }
        if self.tiles == 0 {
            return Ok(());
        }
        let p = GroupedParams { count: self.count, tiles: self.tiles, _pad0: 0, _pad1: 0 };
        let groups = groups_1d(self.tiles as usize, 1, dev.max_groups_per_dim());
        dev.dispatch(Dispatch::new(&MATMUL_GROUPED, &p, &[&self.table.buf, &a.buf, &b.buf, &d.buf, &c.buf], groups))
    }
}
