//! Every `#[repr(C)]` params struct has the size naga computes for its WGSL twin (a mismatch means the
//! GPU reads fields at other offsets than the CPU twin).

#[test]
fn params_matmul_match_naga() {
    use tigel::ops::matmul::MatmulParams;
    assert_eq!(
        std::mem::size_of::<MatmulParams>() as u32,
        tigel::kernels::struct_size("matmul", "MatmulParams").unwrap()
    );
}
