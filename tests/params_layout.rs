//! Every `#[repr(C)]` params struct has the size naga computes for its WGSL twin.

#[test]
fn params_layout_match_naga() {
    use tigel::ops::layout::*;
    assert_eq!(std::mem::size_of::<CopyParams>() as u32, tigel::kernels::struct_size("layout", "CopyParams").unwrap());
    assert_eq!(std::mem::size_of::<FillParams>() as u32, tigel::kernels::struct_size("layout", "FillParams").unwrap());
    assert_eq!(
        std::mem::size_of::<PermuteParams>() as u32,
        tigel::kernels::struct_size("layout", "PermuteParams").unwrap()
    );
    assert_eq!(std::mem::size_of::<TileParams>() as u32, tigel::kernels::struct_size("layout", "TileParams").unwrap());
    assert_eq!(
        std::mem::size_of::<RegionParams>() as u32,
        tigel::kernels::struct_size("layout", "RegionParams").unwrap()
    );
}
