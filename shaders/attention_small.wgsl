// Fused multi-head self-attention for devices with WebGPU's default 16 KiB of workgroup memory: the
// kernels of attention.wgsl with tiles sized for head dims up to 64 (workgroup memory 14848 bytes in the
// forward, 14080 in the backward). Same entry points, bindings and results.

const MAX_D: u32 = 64u;      // largest head dim (kernels::attention::variant checks it)
const MAX_G: u32 = 16u;      // vec4 groups in a row of MAX_D
// vec4 row pitch of tiles whose rows are read by different lanes at once: odd, so rows start in
// different memory banks.
const PITCH: u32 = 17u;
const BO: u32 = 16u;         // owner rows per workgroup
const FWD_BS: u32 = 16u;     // keys per streamed tile in the forward (= its lanes per owner row)
// Variant: key tiles of 8 in the forward (8 x 16 threads; with head dims up to 64 a lane still holds at
// most two vec4 column groups). Same grid, bindings and results up to summation order.
//#variant bs8 FWD_BS=8u entries=attention_fwd
// The forward's row max and sum with subgroup operations (common/attention_rows_sg.wgsl).
//#variant sg subgroups entries=attention_fwd
//#variant sg_bs8 subgroups FWD_BS=8u entries=attention_fwd
const BWD_BS: u32 = 8u;      // rows per streamed tile in the backward (= its lanes per owner row)

//#include "common/attention_kernels.wgsl"
