// Fused multi-head self-attention, FlashAttention-2 style: the T x T score matrix never reaches global
// memory. Input qkv is [B, T, 3C] (C = H*D): each token's row holds q (H heads x D), then k, then v.
// Output out is [B, T, C] (head h in columns h*D .. h*D+D) and lse [B, H, T] is each query row's
// log-sum-exp of the scaled scores, kept for the backward. Scale = 1/sqrt(D) (passed in). Causal: query
// i sees keys j <= i.
//
// Every kernel gives a workgroup BO = 16 "owner" rows (queries for the forward and dQ, keys for dK/dV)
// of one (b, h) and streams tiles of the other side past them:
//   attention_fwd      16 x 16 threads; owner queries, key tiles of 16. Score phase: thread (o, lane)
//                      scores query o against key lane. Online softmax (running max and sum per row).
//   attention_bwd      8 x 16 threads, one dispatch of 2 x groups workgroups. The first half: owner
//                      queries, key tiles of 8 (dQ). The second half: owner keys, query tiles of 8
//                      (dK, dV). Each half computes delta[i] = dO_i . O_i for the query rows it meets.
// Backward: P = exp(S*scale - lse) is recomputed, dP = dO V^T, dS = P * (dP - delta),
// dV = P^T dO, dK = dS^T Q * scale, dQ = dS K * scale. dQ and dK/dV are disjoint columns of dqkv, so
// the two halves write one buffer; every element has exactly one writer (deterministic).
//
// Accumulate phase (O += P V, dQ += dS K, dV += P^T dO, dK += dS^T Q): the LANES threads of an owner
// row split the head dim into vec4 groups; when there are fewer groups than lanes (small D), the lanes
// also split the streamed rows (`ks` splits) and the partial sums are added at the end in a fixed order.
// Causal tiles entirely above the diagonal are skipped; edge tiles are masked (loads past T or D give 0).
// Workgroup memory (tiles sized for MAX_D): 27136 bytes in the forward, 26368 in the backward,
// within the 32 KiB that desktop and Apple GPUs give. WebGPU's default is 16 KiB: attention_small.wgsl
// is the same kernels with tiles for head dims up to 64 (14848 / 14080 bytes), chosen from the
// device's limit (kernels::attention::variant).
//
// The kernels themselves are common/attention_kernels.wgsl; a family file sets the tile constants.

const MAX_D: u32 = 128u;     // largest head dim (src/ops/attention.rs checks it)
const MAX_G: u32 = 32u;      // vec4 groups in a row of MAX_D
// vec4 row pitch of tiles whose rows are read by different lanes at once: odd, so rows start in
// different memory banks.
const PITCH: u32 = 33u;
const BO: u32 = 16u;         // owner rows per workgroup
const FWD_BS: u32 = 16u;     // keys per streamed tile in the forward (= its lanes per owner row)
const BWD_BS: u32 = 8u;      // rows per streamed tile in the backward (= its lanes per owner row)

// The forward's row max and sum with subgroup operations (common/attention_rows_sg.wgsl).
//#variant sg subgroups entries=attention_fwd

//#include "common/attention_kernels.wgsl"
