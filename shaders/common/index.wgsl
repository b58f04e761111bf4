// Index math shared by the kernel families.

// Flat invocation index for a 1-D problem spread over a 2-D grid of workgroups (see kernels::groups_1d:
// grids wider than the per-dimension limit fold into y).
fn flat_id(wid: vec3<u32>, nwg: vec3<u32>, lid: u32, wg: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * wg + lid;
}

// Element d (0..8) of a shape or stride list packed as two vec4s (uniform arrays need 16-byte strides).
fn dim8(v: array<vec4<u32>, 2>, d: u32) -> u32 {
    return v[d / 4u][d % 4u];
}
