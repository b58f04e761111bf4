//! CPU twin of shaders/conv.wgsl: the same three GEMMs on the packed SGEMM (`host::gemm`).
//!
//! * conv2d_fwd: y = w [co, ci*k*k] * col, col [ci*k*k, pixels] = im2col(x) never stored: the GEMM
//!   packs its B panels straight from the zero-padded images (`sgemm_gather`, tap and pixel offsets).
//! * conv2d_bwd_input: dcol = w^T * dy; dx = col2im(dcol) (the scatter-add adjoint of im2col). The
//!   shader's stride phases are a GPU schedule for the same sum; here col2im's loops skip the taps that
//!   miss a pixel for free.
//! * conv2d_bwd_weight: partial[z] = dy [co, pixels] * col^T over the images of split z, col^T again
//!   gathered from the padded images while packing.
//!
//! Images are grouped into as few GEMMs as a col-sized matrix of at most `COL_BUDGET` floats allows, and
//! at least one per thread: one GEMM over many images packs the weights once and fills the
//! micro-kernel's 32-wide tiles (a 7x7 output is 49 columns per image); groups run in parallel (the
//! weight gradient's splits already do, one partial sum each). A 1x1, stride 1, unpadded convolution of
//! one image reads x as a plain matrix.

use rayon::prelude::*;
use std::sync::Mutex;

use super::CpuArgs;
use crate::host::gemm::{sgemm, sgemm_gather, Gather, MatRef};
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

/// Runs `f` with a pooled scratch buffer of `n` floats (contents undefined).
fn with_buf<R>(n: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut v = take(n);
    let r = f(&mut v[..n]);
    POOL.lock().unwrap().push(v);
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
    /// Padded row width.
    fn wp(&self) -> usize {
        self.w + 2 * self.p
    }
    /// Padded plane size.
    fn hpwp(&self) -> usize {
        (self.h + 2 * self.p) * self.wp()
    }
    /// x is its own col matrix.
    fn pointwise(&self) -> bool {
        self.k == 1 && self.s == 1 && self.p == 0
    }
}

/// Images per group for a GEMM over `cols_per_image` columns of `depth` rows each: as many as keep the
/// col matrix within COL_BUDGET, at least one group per thread (groups then run in parallel, each GEMM
/// on its own core: one fork per call instead of two per rank-KC update of one shared GEMM), then
/// balanced (16 images at 6 per group would run 6, 6, 4).
fn group_images(n: usize, cols_per_image: usize, depth: usize) -> usize {
    let fit = (COL_BUDGET / (depth * cols_per_image).max(1)).clamp(1, n.max(1));
    let groups = n.div_ceil(fit).max(rayon::current_num_threads().min(n));
    n.div_ceil(groups.max(1)).max(1)
}

/// Offsets of the filter taps (c, kh, kw) in a zero-padded image [ci, h + 2p, w + 2p]: the rows of the
/// im2col matrix, read through `Gather`.
fn tap_offsets(g: &Geom) -> Vec<u32> {
    let (wp, plane) = (g.wp(), g.hpwp());
    let kk = g.k * g.k;
    (0..g.depth()).map(|q| ((q / kk) * plane + (q % kk / g.k) * wp + q % g.k) as u32).collect()
}

/// Offsets of tap (0, 0, 0) of each output pixel of `imgs` padded images side by side: the columns of
/// the im2col matrix.
fn pixel_offsets(g: &Geom, imgs: usize) -> Vec<u32> {
    let (wp, image, howo) = (g.wp(), g.ci * g.hpwp(), g.howo());
    let at = |j: usize| (j / howo) * image + (j % howo / g.wo) * g.s * wp + (j % g.wo) * g.s;
    assert!(imgs * image <= u32::MAX as usize, "conv2d: {imgs} padded images exceed 32-bit offsets");
    (0..imgs * howo).map(|j| at(j) as u32).collect()
}

/// Runs `f` on x ([n, ci, h, w]) with p zeros around every plane (a pooled buffer), or on x itself when
/// p = 0: the gathers of the implicit im2col then index without bounds tests.
fn with_padded<R>(g: &Geom, x: &[f32], f: impl FnOnce(&[f32]) -> R) -> R {
    if g.p == 0 {
        return f(&x[..g.n * g.ci * g.hw()]);
    }
    let (wp, plane) = (g.wp(), g.hpwp());
    let mut buf = take(g.n * g.ci * plane);
    buf[..g.n * g.ci * plane].par_chunks_mut(plane).with_min_len(16).enumerate().for_each(|(pl, dst)| {
        dst[..g.p * wp].fill(0.0);
        dst[(g.p + g.h) * wp..].fill(0.0);
        for (ih, row) in x[pl * g.hw()..][..g.hw()].chunks_exact(g.w).enumerate() {
            let line = &mut dst[(ih + g.p) * wp..][..wp];
            line[..g.p].fill(0.0);
            line[g.p..g.p + g.w].copy_from_slice(row);
            line[g.p + g.w..].fill(0.0);
        }
    });
    let r = f(&buf[..g.n * g.ci * plane]);
    POOL.lock().unwrap().push(buf);
    r
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
    let (howo, depth, image) = (g.howo(), g.depth(), g.ci * g.hpwp());
    let per = group_images(g.n, howo, depth);
    let wm = MatRef { data: w, rs: depth, cs: 1 };
    let (taps, pix) = (tap_offsets(&g), pixel_offsets(&g, per));
    with_padded(&g, x, |xp| {
        y[..g.n * g.co * howo].par_chunks_mut(per * g.co * howo).enumerate().for_each(|(u, yu)| {
            let i0 = u * per;
            let imgs = yu.len() / (g.co * howo);
            let xs = &xp[i0 * image..][..imgs * image];
            if imgs == 1 && g.pointwise() {
                sgemm(g.co, howo, depth, wm, MatRef { data: xs, rs: howo, cs: 1 }, yu, howo, false);
                return;
            }
            let cols = imgs * howo;
            let b = Gather { data: xs, rows: &taps, cols: &pix[..cols], serial: per < g.n };
            if imgs == 1 {
                sgemm_gather(g.co, howo, depth, wm, b, yu, howo, false);
                return;
            }
            with_buf(g.co * cols, |yt| {
                sgemm_gather(g.co, cols, depth, wm, b, yt, cols, false);
                let yt: &[f32] = yt;
                yu.par_chunks_mut(howo).enumerate().with_min_len(64).for_each(|(pl, dst)| {
                    let (i, c) = (pl / g.co, pl % g.co);
                    dst.copy_from_slice(&yt[c * cols + i * howo..][..howo]);
                });
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
    // dy as [co, imgs*ho*wo] (the images side by side), read through a gather.
    let chans: Vec<u32> = (0..g.co).map(|c| (c * howo) as u32).collect();
    let pix: Vec<u32> = (0..per * howo).map(|j| ((j / howo) * g.co * howo + j % howo) as u32).collect();
    dx[..g.n * g.ci * hw].par_chunks_mut(per * g.ci * hw).enumerate().for_each(|(u, dxu)| {
        let i0 = u * per;
        let imgs = dxu.len() / (g.ci * hw);
        let dys = &dy[i0 * g.co * howo..][..imgs * g.co * howo];
        let cols = imgs * howo;
        if imgs == 1 && g.pointwise() {
            sgemm(depth, howo, g.co, wt, MatRef { data: dys, rs: howo, cs: 1 }, dxu, hw, false);
            return;
        }
        with_buf(depth * cols, |dcol| {
            let b = Gather { data: dys, rows: &chans, cols: &pix[..cols], serial: per < g.n };
            sgemm_gather(depth, cols, g.co, wt, b, dcol, cols, false);
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
    let (howo, hw, depth, image) = (g.howo(), g.hw(), g.depth(), g.ci * g.hpwp());
    let (per_split, splits) = (p.imgs_per_split as usize, p.splits as usize);
    let wn = g.co * depth;
    // The splits already run in parallel: one group per split where it fits.
    let per = (COL_BUDGET / (depth * howo).max(1)).clamp(1, per_split.clamp(1, g.n.max(1)));
    let (taps, pix) = (tap_offsets(&g), pixel_offsets(&g, per));
    with_padded(&g, x, |xp| {
        out[..splits * wn].par_chunks_mut(wn).enumerate().for_each(|(z, part)| {
            let first = (z * per_split).min(g.n);
            let last = (first + per_split).min(g.n);
            if first == last {
                part.fill(0.0);
                return;
            }
            for (gi, i0) in (first..last).step_by(per).enumerate() {
                let imgs = per.min(last - i0);
                let cols = imgs * howo;
                let dys = &dy[i0 * g.co * howo..][..imgs * g.co * howo];
                let acc = gi > 0;
                // x^T as B aliases in L1 (16 lines 4 KiB apart) when planes are multiples of 2 KiB.
                if imgs == 1 && g.pointwise() && hw % 512 != 0 {
                    let (a, xs) = (MatRef { data: dys, rs: howo, cs: 1 }, &x[i0 * g.ci * hw..][..g.ci * hw]);
                    sgemm(g.co, depth, howo, a, MatRef { data: xs, rs: 1, cs: hw }, part, depth, acc);
                    continue;
                }
                // col^T: [pixels, ci*k*k], gathered from the padded images.
                let xs = &xp[i0 * image..][..imgs * image];
                let b = Gather { data: xs, rows: &pix[..cols], cols: &taps, serial: splits > 1 };
                if imgs == 1 {
                    sgemm_gather(g.co, depth, cols, MatRef { data: dys, rs: howo, cs: 1 }, b, part, depth, acc);
                    continue;
                }
                with_buf(g.co * cols, |dyt| {
                    gather_rows(dys, imgs, g.co, howo, dyt);
                    let a = MatRef { data: dyt, rs: cols, cs: 1 };
                    sgemm_gather(g.co, depth, cols, a, b, part, depth, acc);
                });
            }
        });
    });
}
