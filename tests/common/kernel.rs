//! `check_op`: a kernel family's GPU-vs-twin-vs-f64 check in one call.
//!
//! The op is built as a graph over input nodes, so the f64 reference is the op definition's own
//! (`OpDef::reference`, the one the gradient checks differentiate): nothing is written twice. The same
//! graph is planned and run on the CPU backend (the twins) and, where an adapter exists, on the GPU
//! (lavapipe in CI; see `gpu()` for skipping and CI=true failing). Three comparisons, one tolerance:
//! CPU twin vs f64, GPU vs f64, GPU vs CPU twin.

use std::collections::HashMap;

use super::{assert_close, cpu, gpu, seed, Rng};
use tigel::graph::reference::{eval, Value};
use tigel::graph::{Graph, NodeId, Plan};
use tigel::{Device, Result, Tensor};

/// One input of an op under test: its shape and how to draw it.
#[derive(Clone, Debug)]
pub enum In {
    /// f32, uniform in [lo, hi).
    F32(Vec<usize>, f32, f32),
    /// u32 ids, uniform in 0..n.
    U32(Vec<usize>, u32),
}

/// An f32 input of `shape`, uniform in [lo, hi) (choose a range without zeros where they are special).
pub fn uniform(shape: &[usize], lo: f32, hi: f32) -> In {
    In::F32(shape.to_vec(), lo, hi)
}

/// A u32 input of `shape` with ids uniform in 0..n.
pub fn ids(shape: &[usize], n: u32) -> In {
    In::U32(shape.to_vec(), n)
}

/// The host data of one input.
#[derive(Clone, Debug)]
pub enum Data {
    /// f32 values of a shape.
    F32(Vec<usize>, Vec<f32>),
    /// u32 values of a shape.
    U32(Vec<usize>, Vec<u32>),
}

impl In {
    fn draw(&self, rng: &mut Rng) -> Data {
        match self {
            In::F32(s, lo, hi) => Data::F32(s.clone(), rng.vec(s.iter().product(), *lo, *hi)),
            In::U32(s, n) => {
                Data::U32(s.clone(), (0..s.iter().product()).map(|_| rng.below(*n as usize) as u32).collect())
            }
        }
    }
}

impl Data {
    fn tensor(&self, d: &Device) -> Tensor {
        match self {
            Data::F32(s, v) => Tensor::from_f32(d, s, v).unwrap(),
            Data::U32(s, v) => Tensor::from_u32(d, s, v).unwrap(),
        }
    }
    fn value(&self) -> Value {
        match self {
            Data::F32(s, v) => Value { shape: s.clone(), data: v.iter().map(|&x| x as f64).collect() },
            Data::U32(s, v) => Value { shape: s.clone(), data: v.iter().map(|&x| x as f64).collect() },
        }
    }
}

/// A tolerance: |got − want| ≤ atol + rtol·|want|, elementwise.
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    /// The absolute part.
    pub atol: f32,
    /// The relative part.
    pub rtol: f32,
}

/// What a check ran, for further property checks (row sums, finiteness, ...).
pub struct Checked {
    /// The inputs it drew (or was given).
    pub inputs: Vec<Data>,
    /// The f64 reference, rounded to f32.
    pub want: Vec<f32>,
    /// The output on the CPU backend.
    pub cpu: Vec<f32>,
    /// The output on the GPU, if an adapter was found.
    pub gpu: Option<Vec<f32>>,
}

impl Checked {
    /// Each engine's output with its name: the CPU twin's, then the GPU's if it ran.
    pub fn outputs(&self) -> Vec<(&'static str, &[f32])> {
        let mut v = vec![("cpu", &self.cpu[..])];
        v.extend(self.gpu.as_deref().map(|g| ("gpu", g)));
        v
    }
}

/// Builds `build(graph, inputs)` on random inputs drawn from `ins` (a fresh seed per run, printed),
/// runs it on the CPU backend and the GPU, and checks both against the op's f64 reference and each
/// other within `tol`.
#[track_caller]
pub fn check_op(name: &str, ins: &[In], tol: Tol, build: impl Fn(&mut Graph, &[NodeId]) -> Result<NodeId>) -> Checked {
    let mut rng = Rng::new(seed() ^ name.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64)));
    let data = ins.iter().map(|i| i.draw(&mut rng)).collect();
    check_op_on(name, data, tol, build)
}

/// `check_op` on given inputs (edge cases: large magnitudes, planted maxima, ...).
#[track_caller]
pub fn check_op_on(
    name: &str,
    inputs: Vec<Data>,
    tol: Tol,
    build: impl Fn(&mut Graph, &[NodeId]) -> Result<NodeId>,
) -> Checked {
    // The reference: the same graph in f64, leaves bound on the CPU only for their shapes and dtypes.
    let (g, leaves, out) = graph_on(&cpu(), &inputs, &build);
    let values: HashMap<NodeId, Value> = leaves.iter().zip(&inputs).map(|(&id, d)| (id, d.value())).collect();
    let r = eval(&g, &values, &[out]).unwrap().remove(&out).unwrap();
    let want: Vec<f32> = r.data.iter().map(|&v| v as f32).collect();
    let run = |d: &Device| {
        let (g, _, out) = graph_on(d, &inputs, &build);
        assert_eq!(g.shape(out), &r.shape[..], "{name}: output shape against the reference");
        let plan = Plan::build(d, &g, &[out], |_| Ok(())).unwrap();
        plan.run(d).unwrap();
        plan.value(out).to_f32(d).unwrap()
    };
    let cpu_out = run(&cpu());
    assert_close(&format!("{name}: cpu twin vs f64"), &cpu_out, &want, tol.atol, tol.rtol);
    let gpu_out = with_gpu(|d| run(d));
    if let Some(got) = &gpu_out {
        assert_close(&format!("{name}: gpu vs f64"), got, &want, tol.atol, tol.rtol);
        assert_close(&format!("{name}: gpu vs cpu twin"), got, &cpu_out, tol.atol, tol.rtol);
    }
    Checked { inputs, want, cpu: cpu_out, gpu: gpu_out }
}

fn graph_on(
    d: &Device,
    inputs: &[Data],
    build: &impl Fn(&mut Graph, &[NodeId]) -> Result<NodeId>,
) -> (Graph, Vec<NodeId>, NodeId) {
    let mut g = Graph::new();
    let leaves: Vec<NodeId> = inputs.iter().map(|x| g.input(&x.tensor(d))).collect();
    let out = build(&mut g, &leaves).unwrap();
    (g, leaves, out)
}

/// Runs `f` on a fresh GPU device, if there is one. Fresh per call: a device kept in a thread-local
/// would be dropped during thread teardown, which wgpu does not survive.
pub fn with_gpu<T>(f: impl FnOnce(&Device) -> T) -> Option<T> {
    gpu().as_ref().map(f)
}
