// Multi-tensor kernels (optim.wgsl, muon.wgsl): up to SLOTS tensors bound side by side, slot k covering
// the global indices [start[k], start[k] + n[k]) of a flat grid. Starts are multiples of the workgroup
// size and never decrease, so each workgroup serves one slot; an unused slot has n = 0 and start = total.
// The host side is ops::optim_multi (its `layout`).

const SLOTS: u32 = 7u;

// The slot of global index i: how many of the slots 1.. start at or before i (starts never decrease).
fn slot_of(s: array<vec4<u32>, 2>, i: u32) -> u32 {
    return select(0u, 1u, i >= s[0].y) + select(0u, 1u, i >= s[0].z) + select(0u, 1u, i >= s[0].w)
        + select(0u, 1u, i >= s[1].x) + select(0u, 1u, i >= s[1].y) + select(0u, 1u, i >= s[1].z);
}

fn at(v: array<vec4<u32>, 2>, k: u32) -> u32 {
    return select(v[1][k & 3u], v[0][k & 3u], k < 4u);
}
