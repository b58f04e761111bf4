//! Every `#[repr(C)]` params struct has the size naga computes for its WGSL twin, and every WGSL entry
//! point has a `Kernel` in `kernels::ALL_KERNELS` and a CPU twin in the CPU engine's table.
use std::mem::size_of;
use tigel::device::cpu::twin;
use tigel::kernels::{struct_size, Kernel, ALL_KERNELS, SHADERS, VARIANT_KERNELS};

macro_rules! check {
    ($family:literal, $($ty:ident),+) => {
        $(
            assert_eq!(
                size_of::<$ty>() as u32,
                struct_size($family, stringify!($ty)).unwrap_or_else(|| panic!("no struct {} in {}.wgsl", stringify!($ty), $family)),
                "{}::{} differs from its WGSL twin",
                $family,
                stringify!($ty)
            );
        )+
    };
}

#[test]
fn params_elementwise_match_naga() {
    use tigel::kernels::elementwise::*;
    check!("elementwise", UnaryParams, BinaryParams, ScalarParams);
}

#[test]
fn params_layout_match_naga() {
    use tigel::kernels::layout::*;
    check!("layout", CopyParams, FillParams, PermuteParams, TileParams, RegionParams);
}

#[test]
fn params_reduce_match_naga() {
    use tigel::kernels::reduce::*;
    check!("reduce", ReduceParams);
}

#[test]
fn params_softmax_match_naga() {
    use tigel::kernels::softmax::*;
    check!("softmax", SoftmaxParams);
}

#[test]
fn params_rng_match_naga() {
    use tigel::kernels::rng::*;
    check!("rng", RngParams, RngStepParams);
}

#[test]
fn params_matmul_match_naga() {
    use tigel::kernels::matmul::*;
    check!("matmul", MatmulParams);
}

#[test]
fn params_matmul_pair_match_naga() {
    // Both pair families lay out the one struct (shaders/common/matmul_pair_params.wgsl).
    use tigel::kernels::matmul_pair::*;
    check!("matmul_pair", MatmulPairParams);
    check!("matmul_pair_gate", MatmulPairParams);
}

#[test]
fn params_optim_match_naga() {
    use tigel::kernels::optim::*;
    check!(
        "optim",
        ScheduleParams,
        AdvanceParams,
        SgdParams,
        AdamParams,
        SumsqParams,
        ClipParams,
        EmaParams,
        GuardParams
    );
}

#[test]
fn params_loss_match_naga() {
    use tigel::kernels::loss::*;
    check!("loss", CrossEntropyParams, BceParams);
}

#[test]
fn params_dropout_match_naga() {
    use tigel::kernels::dropout::*;
    check!("dropout", DropoutParams);
}

#[test]
fn params_conv_match_naga() {
    use tigel::kernels::conv::*;
    check!("conv", ConvParams);
}

#[test]
fn params_norm_match_naga() {
    use tigel::kernels::norm::*;
    check!("norm", NormParams);
}

#[test]
fn params_embedding_match_naga() {
    use tigel::kernels::embedding::*;
    check!("embedding", EmbeddingParams);
}

#[test]
fn params_batch_match_naga() {
    use tigel::kernels::batch::*;
    check!("batch", WindowParams);
}

#[test]
fn params_sample_match_naga() {
    use tigel::kernels::sample::*;
    check!("sample", SampleParams);
}

#[test]
fn params_diffusion_match_naga() {
    use tigel::kernels::diffusion::*;
    check!("diffusion", SchedParams, QSampleParams, EmbedParams, DdpmParams, DdimParams, VParams);
}

#[test]
fn every_entry_point_has_a_kernel_with_a_cpu_twin() {
    let listed: Vec<(&str, &str)> = ALL_KERNELS.iter().map(|k| (k.shader, k.entry)).collect();
    for s in SHADERS {
        for e in s.entries {
            if s.name != s.family {
                // A variant: its family has the same entry point, and the family's twin serves it.
                assert!(listed.contains(&(s.family, e.name)), "variant {}::{} has no family kernel", s.name, e.name);
                continue;
            }
            assert!(listed.contains(&(s.name, e.name)), "{}::{} has no Kernel in kernels::ALL_KERNELS", s.name, e.name);
            let k = Kernel { shader: s.name, entry: e.name };
            assert!(twin(&k).is_some(), "{}::{} has no CPU twin in device::cpu::twin", s.name, e.name);
        }
    }
    for k in ALL_KERNELS.iter().copied().chain(VARIANT_KERNELS) {
        k.info().unwrap_or_else(|e| panic!("{}: {e}", k.name()));
        assert!(twin(k).is_some(), "{} has no CPU twin", k.name());
    }
    // Variants share their family's uniform structs (build.rs checks) and bindings.
    for v in VARIANT_KERNELS {
        let (a, b) = (v.info().unwrap(), v.base().info().unwrap());
        let kinds = |e: &tigel::kernels::EntryInfo| e.bindings.iter().map(|b| (b.kind, b.size)).collect::<Vec<_>>();
        assert_eq!(kinds(a), kinds(b), "{}: bindings differ from {}", v.name(), v.base().name());
    }
}

#[test]
fn params_attention_match_naga() {
    use tigel::kernels::attention::*;
    check!("attention", AttentionParams);
}

#[test]
fn params_chnorm_match_naga() {
    use tigel::kernels::chnorm::*;
    check!("chnorm", ChnormParams, RunningParams);
}
