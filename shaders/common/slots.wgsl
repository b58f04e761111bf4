// Multi-tensor kernels (optim.wgsl, muon.wgsl): up to SLOTS tensors bound side by side, slot k covering
// the global indices [start[k], start[k] + n[k]) of a flat grid. Starts are multiples of the workgroup
// size and never decrease, so each workgroup serves one slot; an unused slot has n = 0 and start = total.
// The host side is ops::optim_multi (its `layout`).

const SLOTS: u32 = 7u;
// Wide forms for devices that bind more storage buffers per stage: 32 for `sumsq_multi_wide` (one per
// tensor and the partials), `muon_momentum_multi_wide` (two per matrix, the clip and the arena) and
// `muon_update_multi_wide` (one per matrix, the arena and the step), 31 for `ema_multi_wide` (two per
// tensor and the step); 62 for `adam_multi_wide` (four per tensor, the step and the clip). The slot
// tables hold 32 entries. build.rs writes the Rust twin of each count a `//#multi` instance names
// (kernels::optim, kernels::muon), so the host lays out as many slots as the kernels have.
const SUMSQ_SLOTS_WIDE: u32 = 31u;
const MUON_MOMENTUM_SLOTS_WIDE: u32 = 15u;
const MUON_UPDATE_SLOTS_WIDE: u32 = 30u;
const ADAM_SLOTS_WIDE: u32 = 15u;
const EMA_SLOTS_WIDE: u32 = 15u;

// The slot of global index i among the first `count` slots: how many of the slots 1..count start at or
// before i (starts never decrease).
fn slot_of(s: array<vec4<u32>, 8>, i: u32, count: u32) -> u32 {
    var t = s;
    var k = 0u;
    for (var j = 1u; j < count; j++) {
        k += select(0u, 1u, i >= t[j >> 2u][j & 3u]);
    }
    return k;
}

fn at(v: array<vec4<u32>, 8>, k: u32) -> u32 {
    var t = v;
    return t[k >> 2u][k & 3u];
}
