//! Every `#[repr(C)]` params struct has the size naga computes for its WGSL twin.
use tigel::kernels::struct_size;

#[test]
fn params_reduce_match_naga() {
    use tigel::ops::reduce::ReduceParams;
    assert_eq!(std::mem::size_of::<ReduceParams>() as u32, struct_size("reduce", "ReduceParams").unwrap());
}

#[test]
fn params_softmax_match_naga() {
    use tigel::ops::softmax::SoftmaxParams;
    assert_eq!(std::mem::size_of::<SoftmaxParams>() as u32, struct_size("softmax", "SoftmaxParams").unwrap());
}
