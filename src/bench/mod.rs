//! The kernel benchmark behind `tigel bench kernels` and `cargo bench --bench kernels`.
//!
//! Each case issues one op (eager calls on input tensors made beforehand) and is validated before it
//! is timed: on a GPU its result is compared with the CPU twin on the same inputs; on the CPU backend,
//! where the twin would only be compared with itself, with a host reference instead (matmul: an f64
//! product of a few rows). A mismatch is an `Err` naming the case, so a wrong kernel never reports a
//! speed. Timing replays a `Device::capture` of the case, so it excludes encoding and allocation.
//!
//! Counting convention (FLOP are arithmetic operations the op defines; bytes are the minimum traffic to
//! and from memory, f32 = 4 bytes, every input read once and every output written once):
//!
//! | case                     | FLOP            | bytes                                         |
//! |--------------------------|-----------------|-----------------------------------------------|
//! | matmul M,N,K (batch B)   | 2·B·M·N·K       | 4·B·(M·K + K·N + M·N)                         |
//! | elementwise binary (add) | n               | 12·n (two reads, one write)                   |
//! | elementwise unary (exp)  | n               | 8·n                                           |
//! | reduce sum of rows       | n               | 4·n + 4·rows                                  |
//! | softmax rows             | 5·n (max, sub, exp, sum, div) | 8·n (one read, one write: the second pass re-reads a row the cache holds) |
//! | transpose2d              | 0               | 8·n                                           |
//! | rng normal               | 0               | 4·n (written only)                            |
//! | copy                     | 0               | 8·n                                           |
//!
//! GFLOP/s is reported where the FLOP count is not 0, GB/s everywhere.

use std::rc::Rc;
use std::time::{Duration, Instant};

pub mod compare;
mod families;
pub mod train;

pub use families::{AdamCase, AttnCase, ConvCase, ConvDir};

use serde_json::{json, Value};

use crate::device::Device;
use crate::error::{Error, Result};
use crate::ops::elementwise::{self as ew, Binary, Unary};
use crate::ops::matmul::{self as mm, MatmulOpts};
use crate::ops::{layout, reduce, rng, softmax};
use crate::tensor::Tensor;

/// Which sizes to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sizes {
    /// Every size of every family (software adapters get capped sizes).
    Full,
    /// One mid size per family, fewer repeats.
    Quick,
    /// Small shapes and three repeats, for tests of the benchmark itself.
    Tiny,
}

#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub sizes: Sizes,
    /// Print the table to stdout as cases finish.
    pub print: bool,
}

/// How the result of a case is checked.
#[derive(Clone, Copy, Debug)]
pub enum Check {
    /// C = op(A)·op(B), inputs [A, B] (rank 3 when `batch` > 1; A stored [K, M] when `trans_a`, B stored
    /// [N, K] when `trans_b`).
    Matmul { batch: usize, m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool },
    /// Fused attention (see `families`): inputs [qkv] (forward: out) or [qkv, dout] (forward then
    /// backward: dqkv).
    Attention(families::AttnCase),
    /// conv2d forward or one of its gradients (see `families`).
    Conv(families::ConvCase),
    /// One AdamW step: inputs [param, grad, m, v, step, clip]; the result is the updated param.
    Adam(families::AdamCase),
    /// Elementwise map; the host reference applies `host` to the inputs at one index.
    Elementwise { host: fn(&[Vec<f32>], usize) -> f32 },
    /// Sum of each row of length `len`.
    SumRows { len: usize },
    /// Softmax of each row of length `len`.
    Softmax { len: usize },
    /// 2-D transpose of a [rows, cols] input.
    Transpose { rows: usize, cols: usize },
    /// Copy of the input.
    Copy,
    /// rng::normal(0, 1) of stream (seed, offset 0).
    Normal { seed: u64 },
}

/// A random input: shape and the uniform range its values are drawn from (fixed seed per case).
#[derive(Clone, Debug)]
pub struct Input {
    pub shape: Vec<usize>,
    pub lo: f32,
    pub hi: f32,
    /// A u32 tensor with every element set to this value instead (a step counter).
    pub fixed_u32: Option<u32>,
}

impl Input {
    pub fn uniform(shape: Vec<usize>, lo: f32, hi: f32) -> Input {
        Input { shape, lo, hi, fixed_u32: None }
    }
}

type OpFn = Rc<dyn Fn(&Device, &[Tensor]) -> Result<Tensor>>;

/// One benchmark case.
pub struct Case {
    pub family: &'static str,
    pub name: String,
    pub shape: String,
    pub flop: u64,
    pub bytes: u64,
    pub inputs: Vec<Input>,
    pub check: Check,
    /// The entry point that runs the case, where the op chooses among several (matmul).
    pub kernel: Option<&'static str>,
    /// Issues the op on a device, on inputs made from `inputs`.
    op: OpFn,
    /// What runs on the benchmarked device when it differs from `op` (see `with_target_fault`).
    target_op: Option<OpFn>,
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Case({})", self.id())
    }
}

impl Case {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        family: &'static str,
        name: impl Into<String>,
        shape: impl Into<String>,
        flop: u64,
        bytes: u64,
        inputs: Vec<Input>,
        check: Check,
        op: impl Fn(&Device, &[Tensor]) -> Result<Tensor> + 'static,
    ) -> Case {
        Case {
            family,
            name: name.into(),
            shape: shape.into(),
            flop,
            bytes,
            inputs,
            check,
            kernel: None,
            op: Rc::new(op),
            target_op: None,
        }
    }

    /// "family/name shape": how errors and the table name the case.
    pub fn id(&self) -> String {
        format!("{}/{} {}", self.family, self.name, self.shape)
    }

    /// The same case with a wrong result on the benchmarked device: 1.0 is added to its first output
    /// element (with ordinary ops, so capture still works). The reference side is unchanged, so the
    /// validation must fail; tests use this to show that it does.
    pub fn with_target_fault(mut self) -> Case {
        let op = self.op.clone();
        self.target_op = Some(Rc::new(move |d: &Device, ins: &[Tensor]| {
            let y = op(d, ins)?;
            let n = y.numel();
            let flat = y.reshape(&[n])?;
            let head = ew::scalar(d, Binary::Add, &layout::slice(d, &flat, 0, 0, 1)?, 1.0, false)?;
            let out =
                if n > 1 { layout::concat(d, &[&head, &layout::slice(d, &flat, 0, 1, n - 1)?], 0)? } else { head };
            out.reshape(&y.shape)
        }));
        self
    }

    fn target(&self) -> &OpFn {
        self.target_op.as_ref().unwrap_or(&self.op)
    }

    /// Host data of the inputs, from a seed fixed per case (its index in the list).
    fn input_data(&self, seed: u64) -> Vec<Vec<f32>> {
        self.inputs
            .iter()
            .enumerate()
            .map(|(i, inp)| {
                let mut r = XorShift::new(seed.wrapping_mul(1000).wrapping_add(i as u64 + 1));
                let n: usize = inp.shape.iter().product();
                if inp.fixed_u32.is_some() {
                    return Vec::new();
                }
                (0..n).map(|_| r.uniform(inp.lo, inp.hi)).collect()
            })
            .collect()
    }
}

/// xorshift64*: inputs only need to be varied and reproducible.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let u = (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
}

fn uploads(dev: &Device, inputs: &[Input], data: &[Vec<f32>]) -> Result<Vec<Tensor>> {
    inputs
        .iter()
        .zip(data)
        .map(|(i, d)| match i.fixed_u32 {
            Some(v) => Tensor::from_u32(dev, &i.shape, &vec![v; i.shape.iter().product()]),
            None => Tensor::from_f32(dev, &i.shape, d),
        })
        .collect()
}

fn is_software(dev: &Device) -> bool {
    dev.adapter_info().is_some_and(|i| i.device_type == wgpu::DeviceType::Cpu)
}

fn matmul_case(batch: usize, m: usize, n: usize, k: usize) -> Case {
    matmul_case_t(batch, m, n, k, false, false)
}

/// C [M, N] = op(A)·op(B). Named by the transposes ("matmul", "matmul_at": A stored [K, M], as a weight
/// gradient Xᵀ·dY; "matmul_bt": B stored [N, K], as an input gradient dY·Wᵀ) so that runs of other
/// implementations match by name; the kernel `Auto` picks is recorded beside it.
fn matmul_case_t(batch: usize, m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool) -> Case {
    let a_dims = if trans_a { [k, m] } else { [m, k] };
    let b_dims = if trans_b { [n, k] } else { [k, n] };
    let (a, b, shape) = if batch > 1 {
        ([&[batch][..], &a_dims].concat(), [&[batch][..], &b_dims].concat(), format!("{batch}x({m}x{n}x{k})"))
    } else {
        (a_dims.to_vec(), b_dims.to_vec(), format!("{m}x{n}x{k}"))
    };
    let kernel = mm::choose_kernel(m, n, k, trans_a, trans_b).kernel().expect("auto resolves").entry;
    let name = match (trans_a, trans_b) {
        (false, false) => "matmul",
        (true, false) => "matmul_at",
        (false, true) => "matmul_bt",
        (true, true) => "matmul_at_bt",
    };
    let (batch64, m64, n64, k64) = (batch as u64, m as u64, n as u64, k as u64);
    let opts = MatmulOpts { trans_a, trans_b, alpha: 1.0 };
    let mut c = Case::new(
        "matmul",
        name,
        shape,
        2 * batch64 * m64 * n64 * k64,
        4 * batch64 * (m64 * k64 + k64 * n64 + m64 * n64),
        vec![Input::uniform(a, -1.0, 1.0), Input::uniform(b, -1.0, 1.0)],
        Check::Matmul { batch, m, n, k, trans_a, trans_b },
        move |d, x| mm::matmul(d, &x[0], &x[1], opts),
    );
    c.kernel = Some(kernel);
    c
}

fn add_case(n: usize) -> Case {
    let inp = Input { shape: vec![n], lo: -1.0, hi: 1.0, fixed_u32: None };
    Case::new(
        "elementwise",
        "add",
        format!("[{n}]"),
        n as u64,
        12 * n as u64,
        vec![inp.clone(), inp],
        Check::Elementwise { host: |x, i| x[0][i] + x[1][i] },
        |d, x| ew::add(d, &x[0], &x[1]),
    )
}

fn exp_case(n: usize) -> Case {
    Case::new(
        "elementwise",
        "exp",
        format!("[{n}]"),
        n as u64,
        8 * n as u64,
        vec![Input { shape: vec![n], lo: -4.0, hi: 4.0, fixed_u32: None }],
        Check::Elementwise { host: |x, i| x[0][i].exp() },
        |d, x| ew::unary(d, Unary::Exp, &x[0]),
    )
}

fn sum_rows_case(rows: usize, len: usize) -> Case {
    let n = (rows * len) as u64;
    Case::new(
        "reduce",
        "sum_rows",
        format!("[{rows}, {len}]"),
        n,
        4 * n + 4 * rows as u64,
        vec![Input { shape: vec![rows, len], lo: -1.0, hi: 1.0, fixed_u32: None }],
        Check::SumRows { len },
        |d, x| reduce::sum(d, &x[0], 1, false),
    )
}

fn softmax_case(rows: usize, len: usize) -> Case {
    let n = (rows * len) as u64;
    Case::new(
        "softmax",
        "softmax",
        format!("[{rows}, {len}]"),
        5 * n,
        8 * n,
        vec![Input { shape: vec![rows, len], lo: -4.0, hi: 4.0, fixed_u32: None }],
        Check::Softmax { len },
        |d, x| softmax::softmax(d, &x[0]),
    )
}

fn transpose_case(rows: usize, cols: usize) -> Case {
    Case::new(
        "layout",
        "transpose2d",
        format!("[{rows}, {cols}]"),
        0,
        8 * (rows * cols) as u64,
        vec![Input { shape: vec![rows, cols], lo: -1.0, hi: 1.0, fixed_u32: None }],
        Check::Transpose { rows, cols },
        |d, x| layout::transpose2d(d, &x[0]),
    )
}

fn copy_case(n: usize) -> Case {
    Case::new(
        "layout",
        "copy",
        format!("[{n}]"),
        0,
        8 * n as u64,
        vec![Input { shape: vec![n], lo: -1.0, hi: 1.0, fixed_u32: None }],
        Check::Copy,
        |d, x| layout::copy(d, &x[0]),
    )
}

fn normal_case(n: usize) -> Case {
    const SEED: u64 = 0x5EED;
    Case::new("rng", "normal", format!("[{n}]"), 0, 4 * n as u64, vec![], Check::Normal { seed: SEED }, move |d, _| {
        rng::normal(d, &[n], SEED, 0, 0.0, 1.0)
    })
}

/// The cases of a run on `dev` (software adapters get smaller sizes: they run matmul at about 1 GFLOP/s).
///
/// The model-shaped cases follow the GPT regime at width 128 over 2048 tokens (batch 16 x context 128):
/// the qkv, output, MLP up and down projections, their input gradients (dY·Wᵀ) and weight gradients
/// (Xᵀ·dY); attention at a few lengths and head sizes over 2048 tokens; conv2d as a DCGAN stage (k4 s2)
/// and a UNet stage (3x3 s1); AdamW over 1M parameters.
pub fn cases(dev: &Device, sizes: Sizes) -> Vec<Case> {
    use families::{adam_case, attention_case, conv_case, ConvDir::*};
    const M: usize = 1 << 20;
    let soft = is_software(dev);
    let mut v = Vec::new();
    let conv3 = |v: &mut Vec<Case>, args: (usize, usize, usize, usize, usize, usize, usize)| {
        let (n, ci, hw, co, k, s, p) = args;
        for dir in [Forward, BackwardInput, BackwardWeight] {
            v.push(conv_case(n, ci, hw, co, k, s, p, dir));
        }
    };
    match sizes {
        Sizes::Full => {
            for s in [256, 512, 1024, 2048, 4096] {
                if !(soft && s > 512) {
                    v.push(matmul_case(1, s, s, s));
                }
            }
            let tokens = if soft { 512 } else { 2048 };
            for (n, k) in [(384, 128), (128, 128), (512, 128), (128, 512), (256, 128)] {
                v.push(matmul_case(1, tokens, n, k));
            }
            // Input gradients dX = dY·Wᵀ and weight gradients dW = Xᵀ·dY of the qkv and MLP projections.
            for (n, k) in [(128, 384), (128, 512), (512, 128)] {
                v.push(matmul_case_t(1, tokens, n, k, false, true));
            }
            for (m, n) in [(128, 384), (128, 512), (512, 128)] {
                v.push(matmul_case_t(1, m, n, tokens, true, false));
            }
            v.push(matmul_case(12, 64, 64, 32));
            for t in [64, 128, 256] {
                for d in [32, 64] {
                    for backward in [false, true] {
                        v.push(attention_case(tokens / t, t, 4, d, backward));
                    }
                }
            }
            let batch = if soft { 8 } else { 64 };
            conv3(&mut v, (batch, 64, 14, 128, 4, 2, 1));
            conv3(&mut v, (batch, 64, 16, 64, 3, 1, 1));
            v.push(adam_case(M));
            for n in [M, 16 * M] {
                if !(soft && n > M) {
                    v.push(add_case(n));
                    v.push(exp_case(n));
                }
            }
        }
        Sizes::Quick => {
            let s = if soft { 256 } else { 512 };
            v.push(matmul_case(1, s, s, s));
            let tokens = if soft { 512 } else { 2048 };
            v.push(matmul_case(1, tokens, 384, 128));
            v.push(matmul_case_t(1, 128, 384, tokens, true, false));
            v.push(attention_case(tokens / 128, 128, 4, 32, false));
            v.push(attention_case(tokens / 128, 128, 4, 32, true));
            conv3(&mut v, (if soft { 4 } else { 16 }, 64, 14, 128, 4, 2, 1));
            v.push(adam_case(M));
            v.push(add_case(M));
            v.push(exp_case(M));
        }
        Sizes::Tiny => {
            v.push(matmul_case(1, 64, 64, 64));
            v.push(matmul_case(3, 20, 24, 8));
            v.push(matmul_case_t(1, 40, 36, 20, false, true));
            v.push(matmul_case_t(1, 36, 20, 44, true, false));
            v.push(attention_case(2, 21, 2, 8, false));
            v.push(attention_case(2, 21, 2, 8, true));
            conv3(&mut v, (2, 3, 9, 5, 3, 2, 1));
            v.push(adam_case(4099));
            v.push(add_case(4099));
            v.push(exp_case(4099));
            v.push(sum_rows_case(37, 300));
            v.push(softmax_case(37, 300));
            v.push(transpose_case(70, 96));
            v.push(normal_case(4099));
            v.push(copy_case(4099));
            return v;
        }
    }
    v.push(sum_rows_case(4096, 1024));
    v.push(softmax_case(4096, 1024));
    v.push(transpose_case(2048, 2048));
    v.push(normal_case(4 * M));
    v.push(copy_case(16 * M));
    v
}

/// One case's measurements.
#[derive(Clone, Debug)]
pub struct CaseResult {
    pub family: &'static str,
    pub name: String,
    /// The entry point, where the op chooses among several.
    pub kernel: Option<&'static str>,
    pub shape: String,
    pub flop: u64,
    pub bytes: u64,
    pub dispatches: usize,
    pub repeats: usize,
    pub median_s: f64,
    pub min_s: f64,
    pub max_s: f64,
    /// Wall time of `Device::replay` alone (encoding and submission) per dispatch; None on the CPU
    /// backend, whose replay runs the work.
    pub encode_us_per_dispatch: Option<f64>,
    /// What the result was checked against: "cpu-twin", "host-f64-rows" or "host-reference".
    pub validation: &'static str,
    /// Largest |benchmarked - reference| over the compared elements.
    pub max_abs_err: f64,
}

impl CaseResult {
    pub fn gflops(&self) -> Option<f64> {
        (self.flop > 0).then(|| self.flop as f64 / self.median_s / 1e9)
    }
    pub fn gbps(&self) -> f64 {
        self.bytes as f64 / self.median_s / 1e9
    }
    pub fn to_json(&self) -> Value {
        json!({
            "family": self.family,
            "name": self.name,
            "kernel": self.kernel,
            "shape": self.shape,
            "flop": self.flop,
            "bytes": self.bytes,
            "dispatches": self.dispatches,
            "repeats": self.repeats,
            "median_s": self.median_s,
            "min_s": self.min_s,
            "max_s": self.max_s,
            "gflops": self.gflops(),
            "gbps": self.gbps(),
            "encode_us_per_dispatch": self.encode_us_per_dispatch,
            "validated": true,
            "validation": self.validation,
            "max_abs_err": self.max_abs_err,
        })
    }
}

/// A whole run.
#[derive(Clone, Debug)]
pub struct Report {
    pub backend: &'static str,
    pub adapter: Option<Value>,
    pub cpu_threads: usize,
    pub timer: &'static str,
    pub quick: bool,
    /// When the run started (UTC, ISO 8601).
    pub date: String,
    pub results: Vec<CaseResult>,
}

impl Report {
    pub fn to_json(&self) -> Value {
        json!({
            "tigel_version": env!("CARGO_PKG_VERSION"),
            "git_commit": env!("TIGEL_GIT_COMMIT"),
            "date": self.date,
            "backend": self.backend,
            "adapter": self.adapter,
            "cpu_threads": self.cpu_threads,
            "timer": self.timer,
            "quick": self.quick,
            "results": self.results.iter().map(CaseResult::to_json).collect::<Vec<_>>(),
        })
    }

    /// Writes the JSON to `path`, creating its parent directories.
    pub fn write_json(&self, path: &std::path::Path) -> Result<()> {
        prepare_output(path)?;
        let text = serde_json::to_string_pretty(&self.to_json()).expect("JSON values serialise");
        std::fs::write(path, text + "\n").map_err(|e| io_error(path, e))
    }
}

/// The report's header (version, commit, date, device) with no kernel results, for runs that only
/// benchmark training.
pub fn header_json(dev: &Device, quick: bool) -> Value {
    json!({
        "tigel_version": env!("CARGO_PKG_VERSION"),
        "git_commit": env!("TIGEL_GIT_COMMIT"),
        "date": utc_now_iso(),
        "backend": dev.backend_name(),
        "adapter": adapter_json(dev),
        "cpu_threads": rayon::current_num_threads(),
        "timer": "wall-clock",
        "quick": quick,
        "results": [],
    })
}

fn io_error(path: &std::path::Path, source: std::io::Error) -> Error {
    Error::Io { path: path.display().to_string(), source }
}

/// Creates `path`'s parent directories and checks the file can be opened for writing (without
/// truncating it), so a bad path fails before a long run rather than after.
pub fn prepare_output(path: &std::path::Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: format!("{}: cannot create its directory {}", path.display(), dir.display()),
            source,
        })?;
    }
    std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(path).map_err(|e| io_error(path, e))?;
    Ok(())
}

/// The current UTC time as ISO 8601 (`2025-01-31T12:34:56Z`).
pub fn utc_now_iso() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = ((secs / 86400) as i64, secs % 86400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian, eras of 400 years).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + (month <= 2) as i64;
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn adapter_json(dev: &Device) -> Option<Value> {
    let info = dev.adapter_info()?;
    Some(json!({
        "name": info.name,
        "backend": crate::device::adapter::backend_str(info.backend),
        "device_type": crate::device::adapter::device_type_str(info.device_type),
        "driver": info.driver,
        "driver_info": info.driver_info,
    }))
}

/// Runs the cases of `opts.sizes` on `dev`.
pub fn run(dev: &Device, opts: &Options) -> Result<Report> {
    run_cases(dev, cases(dev, opts.sizes), opts)
}

/// Validates and times `cases` on `dev`, stopping at the first case that fails. Turns poisoning on
/// for `dev` (see `Device::set_poison`), so an output element a kernel leaves unwritten fails the check.
pub fn run_cases(dev: &Device, cases: Vec<Case>, opts: &Options) -> Result<Report> {
    let date = utc_now_iso();
    dev.set_poison(true);
    let reference = if dev.is_cpu() {
        None
    } else {
        let c = Device::cpu();
        c.set_poison(true);
        Some(c)
    };
    let timer = if dev.has_timestamps() { "gpu-timestamps" } else { "wall-clock" };
    let repeats = match opts.sizes {
        Sizes::Full => Repeats { min: 5, max: 50, budget: Duration::from_millis(1000) },
        Sizes::Quick => Repeats { min: 3, max: 10, budget: Duration::from_millis(250) },
        Sizes::Tiny => Repeats { min: 3, max: 3, budget: Duration::ZERO },
    };
    if opts.print {
        println!(
            "tigel {} ({}) bench kernels on {}: timer {timer}",
            env!("CARGO_PKG_VERSION"),
            env!("TIGEL_GIT_COMMIT"),
            dev.name()
        );
        println!(
            "{:<12} {:<16} {:<36} {:>10} {:>10} {:>9} {:>8} {:>12} {:>9}",
            "family", "name", "shape", "median ms", "min ms", "GFLOP/s", "GB/s", "enc us/disp", "max err"
        );
    }
    let mut results = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let r = run_case(dev, reference.as_ref(), case, i as u64, &repeats)
            .map_err(|e| Error::Other(format!("bench case {}: {e}", case.id())))?;
        if opts.print {
            let gflops = r.gflops().map(|g| format!("{g:.2}")).unwrap_or_else(|| "-".into());
            let enc = r.encode_us_per_dispatch.map(|u| format!("{u:.1}")).unwrap_or_else(|| "-".into());
            println!(
                "{:<12} {:<16} {:<36} {:>10.3} {:>10.3} {:>9} {:>8.2} {:>12} {:>9.1e}",
                r.family,
                r.name,
                r.shape,
                r.median_s * 1e3,
                r.min_s * 1e3,
                gflops,
                r.gbps(),
                enc,
                r.max_abs_err
            );
        }
        results.push(r);
    }
    Ok(Report {
        backend: dev.backend_name(),
        adapter: adapter_json(dev),
        cpu_threads: rayon::current_num_threads(),
        timer,
        quick: opts.sizes != Sizes::Full,
        date,
        results,
    })
}

/// Replays per case: at least `min`, then more while under `budget`, at most `max`.
struct Repeats {
    min: usize,
    max: usize,
    budget: Duration,
}

fn run_case(dev: &Device, reference: Option<&Device>, case: &Case, seed: u64, reps: &Repeats) -> Result<CaseResult> {
    let data = case.input_data(seed);
    let inputs = uploads(dev, &case.inputs, &data)?;
    let got = case.target()(dev, &inputs)?.to_f32(dev)?;
    let (validation, max_abs_err) = match reference {
        Some(cpu) => {
            let cin = uploads(cpu, &case.inputs, &data)?;
            let want = (case.op)(cpu, &cin)?.to_f32(cpu)?;
            ("cpu-twin", against_twin(case.check, cpu, &cin, &data, &got, &want)?)
        }
        None => against_host(case.check, &data, &got)?,
    };
    drop(data);

    let (out, rec) = dev.capture(|| case.target()(dev, &inputs))?;
    let dispatches = rec.len().max(1);
    for _ in 0..2 {
        dev.replay(&rec)?;
    }
    dev.wait()?;
    let mut times = Vec::new();
    let mut encode = Vec::new();
    let start = Instant::now();
    while times.len() < reps.min || (times.len() < reps.max && start.elapsed() < reps.budget) {
        if dev.has_timestamps() {
            times.push(dev.replay_timed(&rec)?.expect("device has timestamps"));
            let t0 = Instant::now();
            dev.replay(&rec)?;
            encode.push(t0.elapsed().as_secs_f64());
            dev.wait()?;
        } else {
            let t0 = Instant::now();
            dev.replay(&rec)?;
            let t1 = Instant::now();
            dev.wait()?;
            times.push(t0.elapsed().as_secs_f64());
            encode.push((t1 - t0).as_secs_f64());
        }
    }
    drop(out);
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 { sorted[n / 2] } else { 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]) };
    let encode_us = (!dev.is_cpu()).then(|| encode.iter().sum::<f64>() / encode.len() as f64 / dispatches as f64 * 1e6);
    Ok(CaseResult {
        family: case.family,
        name: case.name.clone(),
        kernel: case.kernel,
        shape: case.shape.clone(),
        flop: case.flop,
        bytes: case.bytes,
        dispatches: rec.len(),
        repeats: n,
        // A timer that rounds a tiny case to 0 would make rates infinite; one nanosecond is its floor.
        median_s: median.max(1e-9),
        min_s: sorted[0].max(1e-9),
        max_s: sorted[n - 1].max(1e-9),
        encode_us_per_dispatch: encode_us,
        validation,
        max_abs_err,
    })
}

/// Compares element by element: every |got - want| must be within `tol(i)`; a NaN in `got` where
/// `want` has none (an unwritten, poisoned element) fails. Returns the largest difference.
fn compare(what: &str, got: &[f32], want: &[f32], tol: impl Fn(usize) -> f64) -> Result<f64> {
    if got.len() != want.len() {
        return Err(Error::Other(format!("{} elements where {what} has {}", got.len(), want.len())));
    }
    let mut max_err = 0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if g.is_nan() && w.is_nan() {
            continue;
        }
        let err = (g as f64 - w as f64).abs();
        let t = tol(i);
        if err.is_nan() || err > t {
            return Err(Error::Other(format!(
                "wrong result: element {i} is {g} where {what} gives {w} (|difference| {err:e}, tolerance {t:e}; \
                 {} elements)",
                got.len()
            )));
        }
        max_err = max_err.max(err);
    }
    Ok(max_err)
}

/// Rounding bound of a row sum as `reduce_rows` adds it: ceil(len/256) strided terms per thread, then 8
/// tree levels, each rounding at most u = 2^-24 of the running magnitude (tests/kernels_reduce.rs).
fn row_sum_bound(len: usize, abs_sum: f64) -> f64 {
    1.01 * (len.div_ceil(256) + 8) as f64 * (1.0 / (1u64 << 24) as f64) * abs_sum
}

fn abs_row_sums(x: &[f32], len: usize) -> Vec<f64> {
    x.chunks(len).map(|r| r.iter().map(|v| v.abs() as f64).sum()).collect()
}

/// Softmax: 1e-6 absolute + 1e-5 relative (tests/kernels_softmax.rs: GPU exp is a few ulp off, the sum
/// carries len/256 + 8 roundings, the division one).
fn softmax_tol(want: f32) -> f64 {
    1e-6 + 1e-5 * want.abs() as f64
}

/// Benchmarked device vs the CPU twin on the same inputs. Tolerances as the family tests state them.
fn against_twin(
    check: Check,
    cpu: &Device,
    cin: &[Tensor],
    data: &[Vec<f32>],
    got: &[f32],
    want: &[f32],
) -> Result<f64> {
    const TWIN: &str = "the CPU twin";
    match check {
        // A dot product of K terms rounds to about sqrt(K)·eps·Σ|a||b| with random signs; each side of
        // two f32 results is within that, so R = 2e-6 ≈ 16 eps (tests/kernels_matmul.rs). Σ|a||b| is a
        // product of |A| and |B|, computed on the CPU backend.
        Check::Matmul { k, trans_a, trans_b, .. } => {
            let abs_a = ew::unary(cpu, Unary::Abs, &cin[0])?;
            let abs_b = ew::unary(cpu, Unary::Abs, &cin[1])?;
            let mag = mm::matmul(cpu, &abs_a, &abs_b, MatmulOpts { trans_a, trans_b, alpha: 1.0 })?.to_f32(cpu)?;
            let mag = mag.iter().fold(0f64, |m, &v| m.max(v as f64));
            let tol = 2e-6 * (1.0 + (k as f64).sqrt()) * mag;
            compare(TWIN, got, want, |_| tol)
        }
        // exp is not correctly rounded on GPUs; 2e-5 absolute + relative (tests/kernels_elementwise.rs).
        Check::Elementwise { .. } => compare(TWIN, got, want, |i| 2e-5 + 2e-5 * want[i].abs() as f64),
        // Each side within the bound of the exact sum, so twice it apart.
        Check::SumRows { len } => {
            let abs = abs_row_sums(&data[0], len);
            compare(TWIN, got, want, |r| 2.0 * row_sum_bound(len, abs[r]))
        }
        Check::Softmax { .. } => compare(TWIN, got, want, |i| softmax_tol(want[i])),
        // Data movement and the Philox generator (bit-identical by design): exact.
        Check::Transpose { .. } | Check::Copy | Check::Normal { .. } => compare(TWIN, got, want, |_| 0.0),
        Check::Attention(a) => {
            let tol = a.twin_tol(want);
            compare(TWIN, got, want, |_| tol)
        }
        Check::Conv(c) => {
            let tol = c.twin_tol(cpu, cin)?;
            compare(TWIN, got, want, |_| tol)
        }
        Check::Adam(a) => compare(TWIN, got, want, |i| a.tol(data, i, want[i] as f64)),
    }
}

/// The CPU backend's result vs a host reference (comparing the CPU backend with its own twin would
/// check nothing).
fn against_host(check: Check, data: &[Vec<f32>], got: &[f32]) -> Result<(&'static str, f64)> {
    const HOST: &str = "the host reference";
    let exact = |want: Vec<f32>| compare(HOST, got, &want, |_| 0.0);
    let err = match check {
        Check::Attention(a) => return Ok(("host-f64-rows", a.against_host(data, got)?)),
        Check::Conv(c) => return Ok(("host-f64-elements", c.against_host(data, got)?)),
        Check::Adam(a) => return Ok(("host-f64-elements", a.against_host(data, got)?)),
        // f64 product of rows 0..8 and the last row of each batch matrix (the last row ends in the
        // partial tile, if any), within R·(1 + sqrt(K))·Σ|a||b| with R = 1e-6 ≈ 8 eps.
        Check::Matmul { batch, m, n, k, trans_a, trans_b } => {
            let (a, b) = (&data[0], &data[1]);
            // Element (i, p) of op(A) and (p, j) of op(B) in batch z.
            let a_at = |z: usize, i: usize, p: usize| a[z * m * k + if trans_a { p * m + i } else { i * k + p }];
            let b_at = |z: usize, p: usize, j: usize| b[z * k * n + if trans_b { j * k + p } else { p * n + j }];
            let mut rows: Vec<usize> = (0..m.min(8)).collect();
            if m > 8 {
                rows.push(m - 1);
            }
            let mut max_err = 0f64;
            for z in 0..batch {
                for &i in &rows {
                    for j in 0..n {
                        let (mut s, mut mag) = (0f64, 0f64);
                        for p in 0..k {
                            let t = a_at(z, i, p) as f64 * b_at(z, p, j) as f64;
                            s += t;
                            mag += t.abs();
                        }
                        let idx = z * m * n + i * n + j;
                        let g = got[idx];
                        let want = [s as f32];
                        let tol = 1e-6 * (1.0 + (k as f64).sqrt()) * mag;
                        let e = compare(HOST, &[g], &want, |_| tol)
                            .map_err(|_| Error::Other(format!("wrong result: C[{z}, {i}, {j}] is {g} where the f64 product gives {s} (tolerance {tol:e})")))?;
                        max_err = max_err.max(e);
                    }
                }
            }
            return Ok(("host-f64-rows", max_err));
        }
        Check::Elementwise { host } => {
            let want: Vec<f32> = (0..got.len()).map(|i| host(data, i)).collect();
            compare(HOST, got, &want, |i| 2e-5 + 2e-5 * want[i].abs() as f64)?
        }
        Check::SumRows { len } => {
            let want: Vec<f64> = data[0].chunks(len).map(|r| r.iter().map(|&v| v as f64).sum()).collect();
            let abs = abs_row_sums(&data[0], len);
            let want32: Vec<f32> = want.iter().map(|&v| v as f32).collect();
            // The f32 rounding of the f64 reference adds half an ulp.
            compare(HOST, got, &want32, |r| row_sum_bound(len, abs[r]) + want[r].abs() * 6e-8)?
        }
        Check::Softmax { len } => {
            let mut want = Vec::with_capacity(got.len());
            for row in data[0].chunks(len) {
                let m = row.iter().fold(f64::NEG_INFINITY, |a, &v| a.max(v as f64));
                let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
                want.extend(row.iter().map(|&v| ((v as f64 - m).exp() / s) as f32));
            }
            compare(HOST, got, &want, |i| softmax_tol(want[i]))?
        }
        Check::Transpose { rows, cols } => {
            let x = &data[0];
            exact((0..rows * cols).map(|o| x[(o % rows) * cols + o / rows]).collect())?
        }
        Check::Copy => exact(data[0].clone())?,
        // Element by element through the one-at-a-time Philox helper (a different path from the twin's
        // block loop), and the moments of a standard normal: mean within 6/sqrt(n), variance within
        // 6·sqrt(2/n) of 1.
        Check::Normal { seed } => {
            use crate::host::philox::{normal_at, split64};
            let key = split64(seed);
            let e = exact((0..got.len()).map(|i| normal_at(key, [0, 0], i as u32)).collect())?;
            let n = got.len() as f64;
            let mean = got.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = got.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
            if mean.abs() > 6.0 / n.sqrt() || (var - 1.0).abs() > 6.0 * (2.0 / n).sqrt() {
                return Err(Error::Other(format!(
                    "normal samples have mean {mean} and variance {var} over {n} values"
                )));
            }
            e
        }
    };
    Ok(("host-reference", err))
}
