//! CPU twin of shaders/conv.wgsl: the same three GEMMs on the packed SGEMM (`host::gemm`).
//!
//! * conv2d_fwd: y = w [co, ci*k*k] * col, col [ci*k*k, pixels] = im2col(x) never stored: the GEMM
//!   packs its B panels straight from the zero-padded images (`sgemm_gather`, tap and pixel offsets),
//!   each padded plane split into its stride phases so that a tap reads an output row's pixels as
//!   consecutive floats (the packing then loads and permutes instead of gathering).
//! * conv2d_bwd_input: dcol = w^T * dy; dx = col2im(dcol) (the scatter-add adjoint of im2col), in
//!   L2-sized chunks of channels; col2im sums each stride phase's taps, so it adds whole rows.
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
    /// Rows and columns of one stride phase of a padded plane (`with_padded`).
    fn hq_wq(&self) -> (usize, usize) {
        ((self.h + 2 * self.p).div_ceil(self.s), self.wp().div_ceil(self.s))
    }
    /// Size of a padded plane split into its s*s stride phases.
    fn hpwp(&self) -> usize {
        let (hq, wq) = self.hq_wq();
        self.s * self.s * hq * wq
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

/// Offsets of the filter taps (c, kh, kw) in a padded, phase-split image (`with_padded`): the rows of
/// the im2col matrix, read through `Gather`. Tap (kh, kw) of output pixel (oh, ow) reads padded pixel
/// (oh*s + kh, ow*s + kw): phase (kh % s, kw % s), at (oh + kh / s, ow + kw / s) in it.
fn tap_offsets(g: &Geom) -> Vec<u32> {
    let ((hq, wq), plane, kk, s) = (g.hq_wq(), g.hpwp(), g.k * g.k, g.s);
    let at = |c: usize, kh: usize, kw: usize| c * plane + ((kh % s) * s + kw % s) * hq * wq + (kh / s) * wq + kw / s;
    (0..g.depth()).map(|q| at(q / kk, q % kk / g.k, q % g.k) as u32).collect()
}

/// Offsets of tap (0, 0, 0) of each output pixel of `imgs` padded images side by side: the columns of
/// the im2col matrix. Within a phase, consecutive output pixels of a row are consecutive floats.
fn pixel_offsets(g: &Geom, imgs: usize) -> Vec<u32> {
    let ((_, wq), image, howo) = (g.hq_wq(), g.ci * g.hpwp(), g.howo());
    let at = |j: usize| (j / howo) * image + (j % howo / g.wo) * wq + j % g.wo;
    assert!(imgs * image <= u32::MAX as usize, "conv2d: {imgs} padded images exceed 32-bit offsets");
    (0..imgs * howo).map(|j| at(j) as u32).collect()
}

/// Runs `f` on x ([n, ci, h, w]) with p zeros around every plane and each plane split into its s*s
/// stride phases (a pooled buffer; padded pixel (u, v) at phase (u % s, v % s), position
/// (u / s, v / s), phases of ceil((h + 2p) / s) x ceil((w + 2p) / s)), or on x itself when p = 0 and
/// s = 1. The gathers of the implicit im2col then index without bounds tests, and every tap reads the
/// pixels of an output row as consecutive floats.
fn with_padded<R>(g: &Geom, x: &[f32], f: impl FnOnce(&[f32]) -> R) -> R {
    if g.p == 0 && g.s == 1 {
        return f(&x[..g.n * g.ci * g.hw()]);
    }
    let ((hq, wq), plane, s) = (g.hq_wq(), g.hpwp(), g.s);
    let pq = hq * wq;
    // Where column iw of the image lands in its phase row.
    let cols: Vec<usize> = (g.p..g.p + g.w).map(|v| (v % s) * pq + v / s).collect();
    let mut buf = take(g.n * g.ci * plane);
    buf[..g.n * g.ci * plane].par_chunks_mut(plane).with_min_len(16).enumerate().for_each(|(pl, dst)| {
        dst.fill(0.0);
        for (ih, row) in x[pl * g.hw()..][..g.hw()].chunks_exact(g.w).enumerate() {
            let u = ih + g.p;
            let line = &mut dst[(u % s) * s * pq + (u / s) * wq..];
            if s == 1 {
                line[g.p..g.p + g.w].copy_from_slice(row);
                continue;
            }
            for (&v, &o) in row.iter().zip(&cols) {
                line[o] = v;
            }
        }
    });
    let r = f(&buf[..g.n * g.ci * plane]);
    POOL.lock().unwrap().push(buf);
    r
}

/// The adjoint of im2col for one plane: plane = the scatter-add of the k*k rows (c, kh, kw) (row stride
/// `ld`). Summed in a zero-padded accumulator split into its s*s stride phases: tap (kh, kw) of output
/// pixel (oh, ow) lands on phase (kh % s, kw % s) at (oh + kh / s, ow + kw / s), so every tap adds whole
/// output rows to contiguous runs. Each element sums its taps in (kh, kw) order, as a plain scatter would.
fn col2im_channel(g: &Geom, rows: &[f32], ld: usize, plane: &mut [f32], scratch: &mut Scratch) {
    let (buf, at) = (&mut scratch.0, &mut scratch.1);
    let (k, s, wo, howo) = (g.k, g.s, g.wo, g.howo());
    let (hq, wq) = g.hq_wq();
    let pq = hq * wq;
    buf.resize(s * s * pq, 0.0);
    #[cfg(target_arch = "x86_64")]
    let done = wq <= 16 && super::has_avx512() && {
        // SAFETY: avx512f was detected; wq <= 16 and buf holds the s*s phases.
        unsafe { phases_avx512(g, rows, ld, buf, hq, wq) };
        true
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = false;
    if !done {
        buf.fill(0.0);
        for kh in 0..k {
            for kw in 0..k {
                let src = &rows[(kh * k + kw) * ld..][..howo];
                let phase = &mut buf[((kh % s) * s + kw % s) * pq..][..pq];
                for (r, srow) in src.chunks_exact(wo).enumerate() {
                    let line = &mut phase[(r + kh / s) * wq + kw / s..][..wo];
                    for (dv, &sv) in line.iter_mut().zip(srow) {
                        *dv += sv;
                    }
                }
            }
        }
    }
    // Where column iw of the plane lies in its phase row.
    at.clear();
    at.extend((g.p..g.p + g.w).map(|v| (v % s) * pq + v / s));
    for (ih, row) in plane.chunks_exact_mut(g.w).enumerate() {
        let u = ih + g.p;
        let line = &buf[(u % s) * s * pq + (u / s) * wq..];
        for (dv, &o) in row.iter_mut().zip(at.iter()) {
            *dv = line[o];
        }
    }
}

/// col2im's scratch: the phase accumulator and the column offsets into it.
type Scratch = (Vec<f32>, Vec<usize>);

/// The phases of `col2im_channel` for phase rows of at most 16: each phase row is one register that
/// sums its taps' shifted output rows in (kh, kw) order, then is stored once (adding to memory tap by
/// tap would stall on masked stores feeding the next tap's loads).
///
/// Safety: avx512f must be available, wq <= 16, `buf.len() >= s * s * hq * wq`, and `rows` holds the
/// k*k rows of ho*wo values at stride `ld`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn phases_avx512(g: &Geom, rows: &[f32], ld: usize, buf: &mut [f32], hq: usize, wq: usize) {
    use std::arch::x86_64::*;
    let (k, s, ho, wo) = (g.k, g.s, g.ho, g.wo);
    let pq = hq * wq;
    assert!(wq <= 16 && buf.len() >= s * s * pq && rows.len() >= (k * k - 1) * ld + ho * wo);
    let store = ((1u32 << wq) - 1) as u16;
    let run = (1u32 << wo) - 1;
    for rh in 0..s {
        for rw in 0..s {
            let (nt, ntw) = (k.saturating_sub(rh).div_ceil(s), k.saturating_sub(rw).div_ceil(s));
            let phase = &mut buf[(rh * s + rw) * pq..][..pq];
            for (a, out) in phase.chunks_exact_mut(wq).enumerate() {
                let mut v = _mm512_setzero_ps();
                for t in 0..nt.min(a + 1) {
                    let oh = a - t;
                    if oh >= ho {
                        continue;
                    }
                    for tw in 0..ntw {
                        let (kh, kw) = (rh + s * t, rw + s * tw);
                        let src = rows[(kh * k + kw) * ld + oh * wo..][..wo].as_ptr();
                        // Lanes tw..tw + wo (< wq) hold the row, read from src shifted back by tw; the
                        // masked-off lanes are never read.
                        let x = unsafe { _mm512_maskz_loadu_ps((run << tw) as u16, src.wrapping_sub(tw)) };
                        v = _mm512_add_ps(v, x);
                    }
                }
                // SAFETY: the store's wq lanes are `out`.
                unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr(), store, v) };
            }
        }
    }
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

/// Bindings: params, x (read), w (read), b (read: the epilogue's bias), r (read: its residual),
/// y (read_write).
pub fn conv2d_fwd(args: &mut CpuArgs) {
    let p: ConvParams = args.params();
    let (x, w, bias, res) = (args.f32_in(0), args.f32_in(1), args.f32_in(2), args.f32_in(3));
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
    super::conv_epilogue::apply(&p, bias, res, &mut y[..g.n * g.co * howo], g.co, howo);
}

/// Floats of one chunk of dcol rows in `conv2d_bwd_input`: written by the GEMM and read back by col2im
/// while still in L2 (a group's whole dcol is megabytes).
const DCOL_CHUNK: usize = 1 << 16;

/// Bindings: params, dy (read), w (read), b (read: the epilogue's bias), dx (read_write).
pub fn conv2d_bwd_input(args: &mut CpuArgs) {
    let p: ConvParams = args.params();
    let (dy, w, bias) = (args.f32_in(0), args.f32_in(1), args.f32_in(2));
    let dx = args.f32_out(0);
    let g = Geom::new(&p);
    let (howo, hw, depth) = (g.howo(), g.hw(), g.depth());
    let per = group_images(g.n, howo, depth);
    let groups = g.n.div_ceil(per);
    dx[..g.n * g.ci * hw].par_chunks_mut(per * g.ci * hw).enumerate().for_each(|(u, dxu)| {
        let i0 = u * per;
        let imgs = dxu.len() / (g.ci * hw);
        let dys = &dy[i0 * g.co * howo..][..imgs * g.co * howo];
        if imgs == 1 && g.pointwise() {
            // w^T: [ci, co].
            let wt = MatRef { data: w, rs: 1, cs: depth };
            sgemm(depth, howo, g.co, wt, MatRef { data: dys, rs: howo, cs: 1 }, dxu, hw, false);
            return;
        }
        if imgs == 1 {
            return bwd_input_group(&g, w, dys, 1, groups == 1, dxu);
        }
        // dy as [co, imgs*ho*wo] (the images side by side), once per group.
        with_buf(g.co * imgs * howo, |dyt| {
            gather_rows(dys, imgs, g.co, howo, dyt);
            bwd_input_group(&g, w, dyt, imgs, false, dxu);
        });
    });
    super::conv_epilogue::apply(&p, bias, &[], &mut dx[..g.n * g.ci * hw], g.ci, hw);
}

/// dx planes [imgs, ci, h, w] of one group from its dy [co, imgs*ho*wo]: dcol = w^T * dy in chunks of
/// whole channels (rows c*k*k..), each chunk scattered into its planes by col2im while it is in L2.
/// Each chunk's GEMM runs on one thread: the groups run in parallel, or for a lone image (`alone`) the
/// chunks do.
fn bwd_input_group(g: &Geom, w: &[f32], dyt: &[f32], imgs: usize, alone: bool, dxu: &mut [f32]) {
    let (howo, hw, depth, kk) = (g.howo(), g.hw(), g.depth(), g.k * g.k);
    let cols = imgs * howo;
    let mut cc = (DCOL_CHUNK / (kk * cols).max(1)).clamp(1, g.ci);
    if alone {
        cc = cc.min(g.ci.div_ceil(rayon::current_num_threads()));
    }
    // An identity gather: the packing copies whole 32-column runs, and the GEMM stays on this thread.
    let chans: Vec<u32> = (0..g.co).map(|c| (c * cols) as u32).collect();
    let ident: Vec<u32> = (0..cols as u32).collect();
    let b = Gather { data: dyt, rows: &chans, cols: &ident, serial: true };
    // Channels c0.. of a chunk: their dcol rows, then each plane (image i, channel c) from them.
    let chunk = |c0: usize, dcol: &mut [f32], out: &mut dyn FnMut(usize, usize, &[f32])| {
        let rows = cc.min(g.ci - c0) * kk;
        let a = MatRef { data: &w[c0 * kk..], rs: 1, cs: depth };
        sgemm_gather(rows, cols, g.co, a, b, dcol, cols, false);
        for c in c0..c0 + rows / kk {
            for i in 0..imgs {
                out(i, c, &dcol[(c - c0) * kk * cols + i * howo..]);
            }
        }
    };
    if alone {
        dxu.par_chunks_mut(cc * hw).enumerate().for_each(|(ch, planes)| {
            let mut buf = Scratch::default();
            with_buf(cc * kk * cols, |dcol| {
                chunk(ch * cc, dcol, &mut |_, c, rows| {
                    let plane = &mut planes[(c - ch * cc) * hw..][..hw];
                    col2im_channel(g, rows, cols, plane, &mut buf);
                })
            });
        });
        return;
    }
    let mut buf = Scratch::default();
    with_buf(cc * kk * cols, |dcol| {
        for c0 in (0..g.ci).step_by(cc) {
            chunk(c0, dcol, &mut |i, c, rows| {
                let plane = &mut dxu[(i * g.ci + c) * hw..][..hw];
                col2im_channel(g, rows, cols, plane, &mut buf);
            });
        }
    });
}

/// Bindings: params, x (read), dy (read), partial (read_write): partial[z, co, ci*k*k] over the images
/// of split z.
///
/// With one split (what `ops::conv::weight_splits` asks of the CPU backend) the batch is still cut in two
/// halves here, run in parallel (measured at N=16 on 2 cores: as fast as or faster than 1, 4 or 8), and
/// their sums added, first half + second half: the numbers the split dispatch and its reduction would
/// give, without the reduction's dispatch.
pub fn conv2d_bwd_weight(args: &mut CpuArgs) {
    let p: ConvParams = args.params();
    let (x, dy) = (args.f32_in(0), args.f32_in(1));
    let out = args.f32_out(0);
    let (n, wn) = (p.n as usize, (p.co * p.ci * p.k * p.k) as usize);
    if p.splits == 1 && n >= 2 {
        let half = n.div_ceil(2);
        let mut part = vec![0f32; 2 * wn];
        bwd_weight_splits(&p, x, dy, &mut part, half, 2);
        let (a, b) = part.split_at(wn);
        out[..wn].iter_mut().zip(a.iter().zip(b)).for_each(|(o, (a, b))| *o = a + b);
        return;
    }
    bwd_weight_splits(&p, x, dy, out, p.imgs_per_split as usize, p.splits as usize);
}

/// partial[z, co, ci*k*k] over the images of split z, `splits` splits of `per_split` images.
fn bwd_weight_splits(p: &ConvParams, x: &[f32], dy: &[f32], out: &mut [f32], per_split: usize, splits: usize) {
    let g = Geom::new(p);
    let (howo, hw, depth, image) = (g.howo(), g.hw(), g.depth(), g.ci * g.hpwp());
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
