//! Every `#[repr(C)]` params struct has the size naga computes for its WGSL twin (a mismatch means the
//! GPU reads fields at other offsets than the CPU twin).

#[test]
fn params_rng_match_naga() {
    use tigel::ops::rng::RngParams;
    assert_eq!(std::mem::size_of::<RngParams>() as u32, tigel::kernels::struct_size("rng", "RngParams").unwrap());
}
