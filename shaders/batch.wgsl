// Training windows sampled from a byte corpus on the device (language-model batches).
//
// The corpus is bytes packed four per u32 word, little-endian (byte p is bits 8 (p % 4) .. of word p / 4;
// ops::batch::pack_bytes). Row b of a batch is a window of `context` bytes starting at
//   o_b = start + bits_b % span,   span = len - context,
// where bits_b is element b of the Philox bit stream (seed, step * stride) (shaders/common/philox.wgsl),
// step is the training-step counter read from its one-word buffer at run time (so a captured step draws
// new windows at every replay although its params are frozen) and stride, the batch rounded up to 4,
// gives each step whole counter blocks of its own. x[b, t] = byte o_b + t and y[b, t] = byte o_b + t + 1
// (the next-byte targets), so every byte read lies in [start, start + len). The modulo maps 2^32 values
// onto span starts: starts are uniform to within span / 2^32 relative.
//
// text_windows: one thread per (b, t); each recomputes its row's start (ten Philox rounds, cheap next to
// the memory traffic of a batch).
//#include "common/index.wgsl"
//#include "common/philox.wgsl"

const WG: u32 = 256u;

struct WindowParams {
    batch: u32,
    context: u32,
    stride: u32,      // stream elements per step: batch rounded up to 4
    span: u32,        // len - context, >= 1
    start: u32,       // first byte of the range (the op keeps start + len <= 2^32)
    _pad: u32,
    seed: vec2<u32>,  // (lo, hi)
}

@group(0) @binding(0) var<uniform> wp: WindowParams;
@group(0) @binding(1) var<storage, read> corpus: array<u32>;
@group(0) @binding(2) var<storage, read> step: array<u32>;
@group(0) @binding(3) var<storage, read_write> xo: array<u32>;
@group(0) @binding(4) var<storage, read_write> yo: array<u32>;

fn byte_at(p: u32) -> u32 {
    return (corpus[p >> 2u] >> ((p & 3u) * 8u)) & 0xFFu;
}

// Window start of row b at the current step: the stream offset step * stride is a full 64-bit product.
fn window_start(b: u32) -> u32 {
    let offset = mul32x32(step[0], wp.stride);
    return wp.start + rng_bits_at(wp.seed, offset, b) % wp.span;
}

@compute @workgroup_size(256)
fn text_windows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= wp.batch * wp.context { return; }  // the op keeps batch * context below 2^32
    let b = i / wp.context;
    let p = window_start(b) + (i - b * wp.context);
    xo[i] = byte_at(p);
    yo[i] = byte_at(p + 1u);
}
