//! CPU twin of shaders/conv.wgsl: the same three GEMMs, with the im2col matrix made explicit per group
//! of images in a scratch buffer and multiplied by the packed SGEMM (`gemm::sgemm`).
//!
//! * conv2d_fwd: col [ci*k*k, pixels] = im2col(x); y = w [co, ci*k*k] * col.
//! * conv2d_bwd_input: dcol = w^T * dy; dx = col2im(dcol) (the scatter-add adjoint of im2col). The
//!   shader's stride phases are a GPU schedule for the same sum; here col2im's loops skip the taps that
//!   miss a pixel for free.
//! * conv2d_bwd_weight: partial[z] = dy [co, pixels] * col^T, over the images of split z.
//!
//! Images are grouped into as few GEMMs as a col matrix of at most `COL_BUDGET` floats allows: one GEMM
//! over many images packs the weights once, fills the micro-kernel's 32-wide tiles (a 7x7 output is
//! 49 columns per image) and splits evenly over the threads. Groups run one after another, each GEMM
//! parallel inside (and im2col, col2im parallel over channels); the weight gradient's splits run in
//! parallel (one partial sum each). A 1x1, stride 1, unpadded convolution skips im2col: x itself is the
//! col matrix.

use rayon::prelude::*;
use std::sync::Mutex;

use super::CpuArgs;
use crate::host::gemm::{sgemm, MatRef};
use crate::kernels::conv::ConvParams;

/// Most floats of one group's col matrix (8 MiB: within L3 beside the weights, and a bounded scratch
/// for large images and batches).
const COL_BUDGET: usize = 1 << 21;

/// Scratch buffers shared by all threads. Thread-local buffers would not do: a thread waiting inside
/// one group's parallel SGEMM steals other groups' work, and each nested group would then allocate and
/// zero a fresh col matrix (megabytes) because the thread's own buffer is in use further up its stack.
static POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

/// A pooled buffer of at least `n` floats (contents undefined): the smallest one that fits, else the
/// largest, grown.
fn take(n: usize) -> Vec<f32> {
    let mut pool = POOL.lock().unwrap();
    let fit = pool.iter().enumerate().filter(|(_, v)| v.len() >= n).min_by_key(|(_, v)| v.len()).map(|(i, _)| i);
    let pick = fit.or_else(|| pool.iter().enumerate().max_by_key(|(_, v)| v.len()).map(|(i, _)| i));
    let mut v = pick.map(|i| pool.swap_remove(i)).unwrap_or_default();
    drop(pool);
    if v.len() < n {
        v.resize(n, 0.0);
    }
    v
}

/// Runs `f` with two pooled scratch buffers of `a` and `b` floats (contents undefined).
fn with_scratch<R>(a: usize, b: usize, f: impl FnOnce(&mut [f32], &mut [f32]) -> R) -> R {
    let mut va = take(a);
    let mut vb = take(b);
    let r = f(&mut va[..a], &mut vb[..b]);
    let mut pool = POOL.lock().unwrap();
    pool.push(va);
    pool.push(vb);
    r
}

/// The convolution's sizes (forward direction), as usize.
#[derive(Clone, Copy)]
struct Geom {
    n: usize,
    ci: usize,
    h: usize,
    w: usize,
    co: usize,
    ho: usize,
    wo: usize,
    k: usize,
    s: usize,
    p: usize,
}

impl Geom {
    fn new(p: &ConvParams) -> Geom {
        Geom {
            n: p.n as usize,
            ci: p.ci as usize,
            h: p.h as usize,
            w: p.w as usize,
            co: p.co as usize,
            ho: p.ho as usize,
            wo: p.wo as usize,
            k: p.k as usize,
            s: p.stride as usize,
            p: p.pad as usize,
        }
    }
    fn hw(&self) -> usize {
        self.h * self.w
    }
    fn howo(&self) -> usize {
        self.ho * self.wo
    }
    /// Rows of the col matrix: ci * k * k.
    fn depth(&self) -> usize {
        self.ci * self.k * self.k
    }
    /// x is its own col matrix.
    fn pointwise(&self) -> bool {
        self.k == 1 && self.s == 1 && self.p == 0
    }
}

/// Images per group for a GEMM over `cols_per_image` columns of `depth` rows each: as many as keep the
/// col matrix within COL_BUDGET, then balanced (16 images at 6 per group would run 6, 6, 4).
fn group_images(n: usize, cols_per_image: usize, depth: usize) -> usize {
    let fit = (COL_BUDGET / (depth * cols_per_image).max(1)).clamp(1, n.max(1));
    n.div_ceil(n.div_ceil(fit))
}

/// Row stride for a col matrix of `cols` columns that SGEMM reads transposed (the weight gradient's
/// B = col^T): its packing walks 16 rows in lockstep, and rows a multiple of 4 KiB apart would all map
/// to one L1 set (at 32x32 outputs this halved the speed). An odd multiple of 16 floats spreads them.
fn transposed_ld(cols: usize) -> usize {
    let ld = cols.next_multiple_of(16);
    if (ld / 16).is_multiple_of(2) {
        ld + 16
    } else {
        ld
    }
}

/// Plane `plane` ([h, w]) with `p` zeros around it, into `buf` ([h + 2p, w + 2p]); the plane itself when
/// p = 0. im2col and col2im then index without bounds checks: at small spatial sizes (7-wide rows),
/// per-row clipping and short fills cost as much as the copies.
fn padded<'a>(g: &Geom, plane: &'a [f32], buf: &'a mut Vec<f32>) -> &'a [f32] {
    if g.p == 0 {
        return plane;
    }
    let (hp, wp) = (g.h + 2 * g.p, g.w + 2 * g.p);
    buf.clear();
    buf.resize(hp * wp, 0.0);
    for (ih, row) in plane.chunks_exact(g.w).enumerate() {
        buf[(ih + g.p) * wp + g.p..][..g.w].copy_from_slice(row);
    }
    buf
}

/// Rows (c, kh, kw) of im2col for one channel plane of one image: `rows` holds the k*k rows of stride
/// `ld`; the image's columns start at c0.
fn im2col_channel(g: &Geom, plane: &[f32], rows: &mut [f32], ld: usize, c0: usize, buf: &mut Vec<f32>, at: &Taps) {
    let (k, s, wo) = (g.k, g.s, g.wo);
    let wp = g.w + 2 * g.p;
    let src = padded(g, plane, buf);
    for kh in 0..k {
        for kw in 0..k {
            let dst = &mut rows[(kh * k + kw) * ld + c0..][..g.howo()];
            if let Some(idx) = &at.0 {
                // One gather per tap, no per-row loop or short copies.
                let src = &src[kh * wp + kw..];
                for (dv, &o) in dst.iter_mut().zip(idx) {
                    *dv = src[o as usize];
                }
                continue;
            }
            for (oh, d) in dst.chunks_exact_mut(wo).enumerate() {
                let line = &src[(oh * s + kh) * wp + kw..];
                if s == 1 {
                    d.copy_from_slice(&line[..wo]);
                } else {
                    for (dv, &sv) in d.iter_mut().zip(line.iter().step_by(s)) {
                        *dv = sv;
                    }
                }
            }
        }
    }
}

/// Where output pixel j reads tap (0, 0) in the padded plane, (oh·s)·wp + ow·s, for strided or narrow
/// outputs (rows under 16 wide): im2col and col2im then walk each tap as one gather or scatter over all
/// ho·wo pixels instead of ho short rows. None: whole-row copies are as fast.
struct Taps(Option<Vec<u32>>);

impl Taps {
    fn new(g: &Geom) -> Taps {
        if g.s == 1 && g.wo >= 16 {
            return Taps(None);
        }
        let wp = g.w + 2 * g.p;
        Taps(Some((0..g.howo()).map(|j| ((j / g.wo) * g.s * wp + (j % g.wo) * g.s) as u32).collect()))
    }
}

/// col [ci*k*k, ld] at columns img*ho*wo.. for each image of `xs` ([imgs, ci, h, w]), parallel over ci.
fn im2col(g: &Geom, xs: &[f32], imgs: usize, col: &mut [f32], ld: usize) {
    let (hw, kk2) = (g.hw(), g.k * g.k);
    let at = Taps::new(g);
    col[..g.depth() * ld].par_chunks_mut(kk2 * ld).enumerate().for_each(|(c, rows)| {
        let mut buf = Vec::new();
        for i in 0..imgs {
            im2col_channel(g, &xs[(i * g.ci + c) * hw..][..hw], rows, ld, i * g.howo(), &mut buf, &at);
        }
    });
}

/// The adjoint of `im2col_channel`: plane = the scatter-add of rows (c, kh, kw) at columns c0.., summed
/// in a zero-padded accumulator whose interior is then the plane.
fn col2im_channel(g: &Geom, rows: &[f32], ld: usize, c0: usize, plane: &mut [f32], buf: &mut Vec<f32>, at: &Taps) {
    let (k, s, wo) = (g.k, g.s, g.wo);
    let wp = g.w + 2 * g.p;
    let acc: &mut [f32] = if g.p == 0 {
        plane.fill(0.0);
        plane
    } else {
        buf.clear();
        buf.resize((g.h + 2 * g.p) * wp, 0.0);
        buf
    };
    for kh in 0..k {
        for kw in 0..k {
            let src = &rows[(kh * k + kw) * ld + c0..][..g.howo()];
            if let Some(idx) = &at.0 {
                // Distinct pixels of one tap never share a target: the same sums in the same order.
                let line = &mut acc[kh * wp + kw..];
                for (&sv, &o) in src.iter().zip(idx) {
                    line[o as usize] += sv;
                }
                continue;
            }
            for (oh, srow) in src.chunks_exact(wo).enumerate() {
                let line = &mut acc[(oh * s + kh) * wp + kw..];
                if s == 1 {
                    for (dv, &sv) in line[..wo].iter_mut().zip(srow) {
                        *dv += sv;
                    }
                } else {
                    for (dv, &sv) in line.iter_mut().step_by(s).zip(srow) {
                        *dv += sv;
                    }
                }
            }
        }
    }
    if g.p > 0 {
        for (ih, row) in plane.chunks_exact_mut(g.w).enumerate() {
            row.copy_from_slice(&buf[(ih + g.p) * wp + g.p..][..g.w]);
        }
    }
}

/// dx planes [imgs, ci, h, w] = col2im of dcol (image i at columns i*ho*wo), parallel over planes.
fn col2im(g: &Geom, dcol: &[f32], ld: usize, dx: &mut [f32]) {
    let (hw, kk2) = (g.hw(), g.k * g.k);
    let at = Taps::new(g);
    dx.par_chunks_mut(hw).enumerate().for_each_init(Vec::new, |buf, (pl, plane)| {
        let (i, c) = (pl / g.ci, pl % g.ci);
        col2im_channel(g, &dcol[c * kk2 * ld..], ld, i * g.howo(), plane, buf, &at);
    });
}

/// t [c, imgs*ho*wo] = the images of `ys` ([imgs, c, ho*wo]) side by side.
fn gather_rows(ys: &[f32], imgs: usize, c: usize, per: usize, t: &mut [f32]) {
    let ld = imgs * per;
    t[..c * ld].par_chunks_mut(ld).enumerate().for_each(|(ch, row)| {
        for i in 0..imgs {
            row[i * per..][..per].copy_from_slice(&ys[(i * c + ch) * per..][..per]);
        }
    });
}

/// Bindings: params, x (read), w (read), y (read_write).
pub fn conv2d_fwd(args: &mut CpuArgs) {
    let p: ConvParams = args.params();
    let (x, w) = (args.f32_in(0), args.f32_in(1));
    let y = args.f32_out(0);
    let g = Geom::new(&p);
    let (howo, hw, depth) = (g.howo(), g.hw(), g.depth());
    let per = group_images(g.n, howo, depth);
    let wm = MatRef { data: w, rs: depth, cs: 1 };
    y[..g.n * g.co * howo].chunks_mut(per * g.co * howo).enumerate().for_each(|(u, yu)| {
        let i0 = u * per;
        let imgs = yu.len() / (g.co * howo);
        let xs = &x[i0 * g.ci * hw..][..imgs * g.ci * hw];
        if imgs == 1 && g.pointwise() {
            sgemm(g.co, howo, depth, wm, MatRef { data: xs, rs: hw, cs: 1 }, yu, howo, false);
            return;
        }
        let cols = imgs * howo;
        let aux = if imgs == 1 { 0 } else { g.co * cols };
        with_scratch(depth * cols, aux, |col, yt| {
            im2col(&g, xs, imgs, col, cols);
            let b = MatRef { data: col, rs: cols, cs: 1 };
            if imgs == 1 {
                sgemm(g.co, howo, depth, wm, b, yu, howo, false);
                return;
            }
            sgemm(g.co, cols, depth, wm, b, yt, cols, false);
            let yt: &[f32] = yt;
            yu.par_chunks_mut(howo).enumerate().with_min_len(64).for_each(|(pl, dst)| {
                let (i, c) = (pl / g.co, pl % g.co);
                dst.copy_from_slice(&yt[c * cols + i * howo..][..howo]);
            });
        });
    });
}

/// Bindings: params, dy (read), w (read), dx (read_write).
pub fn conv2d_bwd_input(args: &mut CpuArgs) {
    let p: ConvParams = args.params();
    let (dy, w) = (args.f32_in(0), args.f32_in(1));
    let dx = args.f32_out(0);
    let g = Geom::new(&p);
    let (howo, hw, depth) = (g.howo(), g.hw(), g.depth());
    let per = group_images(g.n, howo, depth);
    // w^T: [ci*k*k, co].
    let wt = MatRef { data: w, rs: 1, cs: depth };
    dx[..g.n * g.ci * hw].chunks_mut(per * g.ci * hw).enumerate().for_each(|(u, dxu)| {
        let i0 = u * per;
        let imgs = dxu.len() / (g.ci * hw);
        let dys = &dy[i0 * g.co * howo..][..imgs * g.co * howo];
        let cols = imgs * howo;
        if imgs == 1 && g.pointwise() {
            sgemm(depth, howo, g.co, wt, MatRef { data: dys, rs: howo, cs: 1 }, dxu, hw, false);
            return;
        }
        let aux = if imgs == 1 { 0 } else { g.co * cols };
        with_scratch(depth * cols, aux, |dcol, dyt| {
            let b = if imgs == 1 {
                MatRef { data: dys, rs: howo, cs: 1 }
            } else {
                gather_rows(dys, imgs, g.co, howo, dyt);
                MatRef { data: dyt, rs: cols, cs: 1 }
            };
            sgemm(depth, cols, g.co, wt, b, dcol, cols, false);
            col2im(&g, dcol, cols, dxu);
        });
    });
}

/// Bindings: params, x (read), dy (read), partial (read_write): partial[z, co, ci*k*k] over the images
/// of split z.
pub fn conv2d_bwd_weight(args: &mut CpuArgs) {
    let p: ConvParams = args.params();
    let (x, dy) = (args.f32_in(0), args.f32_in(1));
    let out = args.f32_out(0);
    let g = Geom::new(&p);
    let (howo, hw, depth) = (g.howo(), g.hw(), g.depth());
    let (per_split, splits) = (p.imgs_per_split as usize, p.splits as usize);
    let wn = g.co * depth;
    out[..splits * wn].par_chunks_mut(wn).enumerate().for_each(|(z, part)| {
        let first = (z * per_split).min(g.n);
        let last = (first + per_split).min(g.n);
        if first == last {
            part.fill(0.0);
            return;
        }
        let per = group_images(last - first, howo, depth);
        for (gi, i0) in (first..last).step_by(per).enumerate() {
            let imgs = per.min(last - i0);
            let cols = imgs * howo;
            let xs = &x[i0 * g.ci * hw..][..imgs * g.ci * hw];
            let dys = &dy[i0 * g.co * howo..][..imgs * g.co * howo];
            let acc = gi > 0;
            // x^T as B aliases in L1 like col^T (see transposed_ld) when planes are multiples of 2 KiB.
            if imgs == 1 && g.pointwise() && hw % 512 != 0 {
                let a = MatRef { data: dys, rs: howo, cs: 1 };
                sgemm(g.co, depth, howo, a, MatRef { data: xs, rs: 1, cs: hw }, part, depth, acc);
                continue;
            }
            let aux = if imgs == 1 { 0 } else { g.co * cols };
            let ld = transposed_ld(cols);
            with_scratch(depth * ld, aux, |col, dyt| {
                im2col(&g, xs, imgs, col, ld);
                let a = if imgs == 1 {
                    MatRef { data: dys, rs: howo, cs: 1 }
                } else {
                    gather_rows(dys, imgs, g.co, howo, dyt);
                    MatRef { data: dyt, rs: cols, cs: 1 }
                };
                // col^T: [pixels, ci*k*k].
                sgemm(g.co, depth, cols, a, MatRef { data: col, rs: 1, cs: ld }, part, depth, acc);
            });
        }
    });
}
