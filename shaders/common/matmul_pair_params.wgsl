// The uniform params of the matmul_pair families (matmul_pair.wgsl, matmul_pair_gate.wgsl): two
// products' MatmulParams and the split of the grid's x axis between them.
//#include "common/matmul_params.wgsl"

struct MatmulPairParams {
    p0: MatmulParams,
    p1: MatmulParams,
    tiles0: u32,   // tiles of C0: workgroups 0..tiles0 work on product 0, the rest on product 1
    cols0: u32,    // tile columns of C0 (ceil(N0 / 64))
    cols1: u32,    // tile columns of C1
    _pad: u32,
}
