//! CPU twin of shaders/layout.wgsl. Like the shaders, these move 32-bit words and never interpret them.

use rayon::prelude::*;

use super::CpuArgs;
use super::{par_chunks, Odometer, CHUNK};
use crate::kernels::layout::{CopyParams, FillParams, PermuteParams, RegionParams, TileParams, TILE};

/// Tile row stride in words (shaders/layout.wgsl `TILE_STRIDE`; the padding only matters on a GPU).
const TILE_STRIDE: usize = TILE + 1;

/// Bindings: params, src (read), dst (read_write).
pub fn copy(args: &mut CpuArgs) {
    let p: CopyParams = args.params();
    let src = args.u32_in(0);
    let dst = args.u32_out(0);
    par_chunks(&mut dst[..p.n as usize], |s, ch| ch.copy_from_slice(&src[s..s + ch.len()]));
}

/// Bindings: params, dst (read_write).
pub fn fill(args: &mut CpuArgs) {
    let p: FillParams = args.params();
    let dst = args.u32_out(0);
    par_chunks(&mut dst[..p.n as usize], |_, ch| ch.fill(p.value));
}

/// Bindings: params, src (read), dst (read_write).
pub fn permute(args: &mut CpuArgs) {
    let p: PermuteParams = args.params();
    let src = args.u32_in(0);
    let dst = args.u32_out(0);
    let rank = p.rank as usize;
    par_chunks(&mut dst[..p.n as usize], |s, ch| {
        let mut od = Odometer::new(s, &p.shape[..rank], [&p.strides]);
        for o in ch.iter_mut() {
            *o = src[od.at[0]];
            od.step();
        }
    });
}

/// Bindings: params, src (read), dst (read_write). Input [batch, rows, cols], output [batch, cols, rows].
pub fn transpose_tiled(args: &mut CpuArgs) {
    let p: TileParams = args.params();
    let src = args.u32_in(0);
    let dst = args.u32_out(0);
    let (rows, cols) = (p.rows as usize, p.cols as usize);
    let plane = rows * cols;
    if plane == 0 || p.batch == 0 {
        return;
    }
    // One task per (plane z, tile column x): output rows c0..c0+TILE of the plane, which the workgroups
    // (x, 0.., z) write. Each tile is read into `tile` and written out transposed, as in the shader.
    dst[..p.batch as usize * plane].par_chunks_mut(plane).enumerate().for_each(|(z, out)| {
        let input = &src[z * plane..(z + 1) * plane];
        out.par_chunks_mut(TILE * rows).enumerate().for_each(|(x, out)| {
            let c0 = x * TILE;
            let mut tile = [0u32; TILE * TILE_STRIDE];
            for r0 in (0..rows).step_by(TILE) {
                for ly in 0..TILE {
                    for lx in 0..TILE {
                        let (r, c) = (r0 + ly, c0 + lx);
                        if r < rows && c < cols {
                            tile[ly * TILE_STRIDE + lx] = input[r * cols + c];
                        }
                    }
                }
                for ly in 0..TILE {
                    for lx in 0..TILE {
                        let (orow, ocol) = (c0 + ly, r0 + lx);
                        if orow < cols && ocol < rows {
                            out[(orow - c0) * rows + ocol] = tile[lx * TILE_STRIDE + ly];
                        }
                    }
                }
            }
        });
    });
}

/// Bindings: params, src (read), dst (read_write). Both seen as [outer, axis, inner]; destination words
/// outside the region are left as they are.
pub fn region(args: &mut CpuArgs) {
    let p: RegionParams = args.params();
    let src = args.u32_in(0);
    let dst = args.u32_out(0);
    if p.n == 0 {
        return;
    }
    let (len, inner) = (p.len as usize, p.inner as usize);
    let (src_axis, src_start) = (p.src_axis as usize, p.src_start as usize);
    let (dst_axis, dst_start) = (p.dst_axis as usize, p.dst_start as usize);
    // One destination row [axis, inner] per outer index; within it the region is one contiguous run.
    let row = dst_axis * inner;
    dst[..p.outer as usize * row].par_chunks_mut(row).with_min_len(CHUNK.div_ceil(row)).enumerate().for_each(
        |(o, out)| {
            let s = (o * src_axis + src_start) * inner;
            out[dst_start * inner..(dst_start + len) * inner].copy_from_slice(&src[s..s + len * inner]);
        },
    );
}
