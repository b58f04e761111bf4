//! Generative adversarial networks, read top to bottom: an MLP GAN for 2-D points and a DCGAN for
//! 28×28 or 32×32 images with one or three channels.
//!
//! z ~ N(0, I) ──► G ──► fake ──┐
//!                              ├──► D ──► logits      D learns real → 1, fake → 0;
//!               real data ─────┘                       G learns to make D say 1 (the non-saturating loss)
//!
//! MLP (2-D):  G: z ─► [Linear, ReLU] × depth ─► Linear(2);  D: m points packed into one row of 2m values
//!             (PacGAN: D judges m samples jointly, which exposes a collapsed G) ─► [Linear, LeakyReLU] ×
//!             depth ─► Linear(1).
//! DCGAN:      G: z ─► Linear ─► [C0, s, s] ─► BN, ReLU ─► [ConvT 4×4/2 ─► BN, ReLU] ×… ─► ConvT 4×4/2 + bias
//!             ─► tanh, s = 7 (28×28) or 4 (32×32); D: Conv 4×4/2 + bias, LeakyReLU ─► [Conv 4×4/2, BN,
//!             LeakyReLU] ×… ─► Linear(1).
//!
//! Training alternates two recorded steps, each its own `Trainer` (own Adam, β1 = 0.5) over the shared
//! weights: the D step draws real rows from the data set held on the device and z from the Philox stream of
//! its step counter, and updates D only (G's output is detached); the G step draws its own z and updates G
//! only (D's weights are bound in its graph but not asked for). G's batch norms update their running
//! statistics in the G step, which eval mode (sampling) uses. Below: `GanTrainer`, `Sampler`, `Evaluator`.

use serde_json::{json, Value};

use crate::checkpoint::{Checkpoint, HostTensor};
use crate::data::source::Source;
use crate::device::{Device, Download};
use crate::error::{Error, Result};
use crate::graph::{BnRunning, Graph, NodeId, Plan};
use crate::host::philox::{normal_at, split64};
use crate::metrics;
use crate::nn::Param;
use crate::ops::conv::Conv2d;
use crate::ops::elementwise::{Binary, Unary};
use crate::ops::matmul::MatmulOpts;
use crate::ops::{layout, rng, rng::RngState, sample};
use crate::optim::{OptimizerKind, Schedule};
use crate::tensor::{DType, Tensor};
use crate::train::{TrainConfig, Trainer};

/// Checkpoint kind of this model.
pub const KIND: &str = "gan";
const BN_EPS: f32 = 1e-5;
const BN_MOMENTUM: f32 = 0.1;
const LEAK: f32 = 0.2;

/// The shape of both networks.
#[derive(Clone, Debug, PartialEq)]
pub struct GanConfig {
    /// [2] for points, [C, H, W] for images (H = W = 28 or 32, C = 1 or 3).
    pub data_shape: Vec<usize>,
    pub z_dim: usize,
    /// MLP: hidden width; DCGAN: channels of D's first layer and G's last hidden one.
    pub width: usize,
    /// MLP: hidden layers of each network (DCGAN: unused).
    pub depth: usize,
    /// Samples D judges together (MLP only; 1 = no packing).
    pub pack: usize,
    /// Data are divided by it for training and samples multiplied by it (2-D: the mixture's extent).
    pub scale: f32,
}

impl GanConfig {
    pub fn is_image(&self) -> bool {
        self.data_shape.len() == 3
    }

    pub fn validate(&self) -> Result<()> {
        let err = |m: String| Err(Error::invalid("gan config", m));
        match self.data_shape[..] {
            [2] => {}
            [c, h, w] if (c == 1 || c == 3) && h == w && (h == 28 || h == 32) => {}
            ref s => {
                return err(format!(
                    "data of shape {s:?}: the GAN takes 2-D points or 28×28 / 32×32 images with 1 or 3 channels"
                ))
            }
        }
        for (f, v) in [("z-dim", self.z_dim), ("width", self.width), ("depth", self.depth), ("pack", self.pack)] {
            if v == 0 {
                return err(format!("--{f} must be a positive integer, got {v}"));
            }
        }
        if self.is_image() && self.pack != 1 {
            return err(format!("--pack {} applies to 2-D data only", self.pack));
        }
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return err(format!("scale must be positive, got {}", self.scale));
        }
        Ok(())
    }

    pub fn sample_len(&self) -> usize {
        self.data_shape.iter().product()
    }

    pub fn to_json(&self) -> Value {
        json!({"arch": if self.is_image() { "dcgan" } else { "mlp" }, "data_shape": self.data_shape,
               "z_dim": self.z_dim, "width": self.width, "depth": self.depth, "pack": self.pack, "scale": self.scale})
    }

    pub fn from_json(v: &Value) -> Result<GanConfig> {
        let bad = || Error::invalid("gan config", format!("missing or invalid fields in {v}"));
        let get = |k: &str| v.get(k).and_then(Value::as_u64).map(|x| x as usize).ok_or_else(bad);
        let data_shape = v
            .get("data_shape")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(|x| x.as_u64().map(|x| x as usize)).collect::<Option<Vec<_>>>())
            .ok_or_else(bad)?;
        let cfg = GanConfig {
            data_shape,
            z_dim: get("z_dim")?,
            width: get("width")?,
            depth: get("depth")?,
            pack: get("pack")?,
            scale: v.get("scale").and_then(Value::as_f64).ok_or_else(bad)? as f32,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

// ---------------------------------------------------------------------------------------------------
// The networks: a list of layers, applied in order.

pub enum Layer {
    /// x [B, in] · w [in, out] + b [out].
    Linear {
        w: Param,
        b: Param,
    },
    /// Convolution, w [Cout, Cin, 4, 4], stride 2, padding 1 (halves H and W).
    Conv {
        w: Param,
    },
    /// Transposed convolution, w [Cin, Cout, 4, 4], stride 2, padding 1 (doubles H and W).
    ConvT {
        w: Param,
    },
    /// A per-channel bias [C] of NCHW activations.
    ChannelBias {
        b: Param,
    },
    /// Batch norm; G's keep running statistics for eval mode, D's need none.
    BatchNorm {
        gamma: Param,
        beta: Param,
        running: Option<(String, Tensor, Tensor)>,
    },
    Act(Unary, f32),
    /// To this per-sample shape (the batch axis is kept; packing changes it).
    Reshape(Vec<usize>),
}

/// How batch norms run: training mode (batch statistics; `update` folds them into the running ones),
/// or eval mode (running statistics).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BnMode {
    Train { update: bool },
    Eval,
}

const UPSAMPLE: Conv2d = Conv2d { stride: 2, padding: 1 };

pub struct Net {
    pub layers: Vec<Layer>,
}

/// Makes parameters named `{net}.{layer}.{what}`.
struct Init<'a> {
    dev: &'a Device,
    rng: RngState,
    net: &'static str,
}

impl Init<'_> {
    fn normal(&mut self, layer: usize, what: &str, shape: &[usize], mean: f32, std: f32) -> Result<Param> {
        let tensor = self.rng.normal(self.dev, shape, mean, std)?;
        Ok(Param { name: format!("{}.{layer}.{what}", self.net), tensor })
    }
    fn fill(&self, layer: usize, what: &str, shape: &[usize], v: f32) -> Result<Param> {
        Ok(Param { name: format!("{}.{layer}.{what}", self.net), tensor: layout::fill(self.dev, shape, v)? })
    }
    fn linear(&mut self, i: usize, fan_in: usize, out: usize, std: f32) -> Result<Layer> {
        Ok(Layer::Linear { w: self.normal(i, "w", &[fan_in, out], 0.0, std)?, b: self.fill(i, "b", &[out], 0.0)? })
    }
    fn batch_norm(&mut self, i: usize, c: usize, running: bool) -> Result<Layer> {
        let running = if running {
            let name = format!("{}.{i}", self.net);
            Some((name, layout::fill(self.dev, &[c], 0.0)?, layout::fill(self.dev, &[c], 1.0)?))
        } else {
            None
        };
        Ok(Layer::BatchNorm {
            gamma: self.fill(i, "gamma", &[c], 1.0)?,
            beta: self.fill(i, "beta", &[c], 0.0)?,
            running,
        })
    }
}

impl Net {
    /// Every trainable parameter, in layer order.
    pub fn params(&self) -> Vec<Param> {
        let mut out = Vec::new();
        for l in &self.layers {
            match l {
                Layer::Linear { w, b } => out.extend([w.clone(), b.clone()]),
                Layer::Conv { w } | Layer::ConvT { w } => out.push(w.clone()),
                Layer::ChannelBias { b } => out.push(b.clone()),
                Layer::BatchNorm { gamma, beta, .. } => out.extend([gamma.clone(), beta.clone()]),
                Layer::Act(..) | Layer::Reshape(_) => {}
            }
        }
        out
    }

    /// The running statistics, named `{net}.{layer}.running_mean` / `running_var`.
    pub fn running(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for l in &self.layers {
            if let Layer::BatchNorm { running: Some((name, m, v)), .. } = l {
                out.push((format!("{name}.running_mean"), m.clone()));
                out.push((format!("{name}.running_var"), v.clone()));
            }
        }
        out
    }

    /// The same network over other weights (the EMA's, in the order of `params`), sharing the running
    /// statistics.
    pub fn with_weights(&self, weights: &[Tensor]) -> Result<Net> {
        let mut it = weights.iter();
        let mut next = |p: &Param| -> Result<Param> {
            let t = it.next().ok_or_else(|| Error::invalid("gan", "too few weights for the network"))?;
            Ok(Param { name: p.name.clone(), tensor: t.clone() })
        };
        let mut layers = Vec::with_capacity(self.layers.len());
        for l in &self.layers {
            layers.push(match l {
                Layer::Linear { w, b } => Layer::Linear { w: next(w)?, b: next(b)? },
                Layer::Conv { w } => Layer::Conv { w: next(w)? },
                Layer::ConvT { w } => Layer::ConvT { w: next(w)? },
                Layer::ChannelBias { b } => Layer::ChannelBias { b: next(b)? },
                Layer::BatchNorm { gamma, beta, running } => {
                    Layer::BatchNorm { gamma: next(gamma)?, beta: next(beta)?, running: running.clone() }
                }
                Layer::Act(u, a) => Layer::Act(*u, *a),
                Layer::Reshape(s) => Layer::Reshape(s.clone()),
            });
        }
        Ok(Net { layers })
    }

    pub fn forward(&self, g: &mut Graph, mut x: NodeId, mode: BnMode) -> Result<NodeId> {
        for l in &self.layers {
            x = match l {
                Layer::Linear { w, b } => {
                    let (w, b) = (g.param(&w.tensor), g.param(&b.tensor));
                    let y = g.matmul(x, w, MatmulOpts::default())?;
                    g.add(y, b)?
                }
                Layer::Conv { w } => {
                    let w = g.param(&w.tensor);
                    g.conv2d(x, w, UPSAMPLE)?
                }
                Layer::ConvT { w } => {
                    let w = g.param(&w.tensor);
                    g.conv_transpose2d(x, w, UPSAMPLE, 0)?
                }
                Layer::ChannelBias { b } => {
                    let c = b.tensor.shape[0];
                    let b = g.param(&b.tensor);
                    let b = g.reshape(b, &[c, 1, 1])?;
                    g.add(x, b)?
                }
                Layer::BatchNorm { gamma, beta, running } => {
                    let (gm, bt) = (g.param(&gamma.tensor), g.param(&beta.tensor));
                    match mode {
                        BnMode::Train { update } => {
                            let r = running.as_ref().filter(|_| update).map(|(_, m, v)| BnRunning {
                                mean: m.clone(),
                                var: v.clone(),
                                momentum: BN_MOMENTUM,
                            });
                            g.batch_norm(x, gm, bt, BN_EPS, r)?
                        }
                        BnMode::Eval => {
                            let Some((_, m, v)) = running else {
                                return Err(Error::invalid("gan", "this batch norm keeps no running statistics"));
                            };
                            batch_norm_eval(g, x, gm, bt, m, v)?
                        }
                    }
                }
                Layer::Act(u, alpha) => g.unary_with(*u, x, *alpha)?,
                Layer::Reshape(s) => {
                    let total: usize = g.shape(x).iter().product();
                    let per: usize = s.iter().product();
                    let mut shape = vec![total / per];
                    shape.extend(s);
                    g.reshape(x, &shape)?
                }
            };
        }
        Ok(x)
    }
}

/// Eval-mode batch norm as a per-channel affine map of graph ops:
/// y = x · γ/√(var + eps) + (β − mean · γ/√(var + eps)).
fn batch_norm_eval(
    g: &mut Graph,
    x: NodeId,
    gamma: NodeId,
    beta: NodeId,
    mean: &Tensor,
    var: &Tensor,
) -> Result<NodeId> {
    let c = mean.shape[0];
    let (m, v) = (g.constant(mean), g.constant(var));
    let v = g.scalar(Binary::Add, v, BN_EPS, false)?;
    let inv = g.unary(Unary::Rsqrt, v)?;
    let a = g.mul(gamma, inv)?;
    let ma = g.mul(m, a)?;
    let b = g.sub(beta, ma)?;
    let (a, b) = if g.shape(x).len() == 4 { (g.reshape(a, &[c, 1, 1])?, g.reshape(b, &[c, 1, 1])?) } else { (a, b) };
    let y = g.mul(x, a)?;
    g.add(y, b)
}

/// Both networks.
pub struct Gan {
    pub cfg: GanConfig,
    pub g: Net,
    pub d: Net,
}

impl Gan {
    pub fn new(dev: &Device, cfg: GanConfig, seed: u64) -> Result<Gan> {
        cfg.validate()?;
        let mut gi = Init { dev, rng: RngState::new(seed), net: "g" };
        let mut di = Init { dev, rng: RngState::new(seed ^ 0xD15C), net: "d" };
        let (g, d) = if cfg.is_image() { dcgan(&cfg, &mut gi, &mut di)? } else { mlp(&cfg, &mut gi, &mut di)? };
        Ok(Gan { cfg, g, d })
    }

    /// The model a checkpoint holds; with `ema`, G's weights are its moving average when it has one.
    pub fn load(dev: &Device, ck: &Checkpoint, needed_by: &str, ema: bool) -> Result<Gan> {
        ck.expect_kind_for(KIND, needed_by)?;
        let cfg =
            GanConfig::from_json(ck.config.get("model").unwrap_or(&Value::Null)).map_err(|e| Error::Checkpoint {
                path: ck.source.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
                msg: format!("bad model config: {e}"),
            })?;
        let mut m = Gan::new(dev, cfg, 0)?;
        for p in m.g.params().iter().chain(&m.d.params()) {
            ck.restore_into(dev, &p.name, &p.tensor)?;
        }
        for (name, t) in m.g.running() {
            ck.restore_into(dev, &name, &t)?;
        }
        if ema && ck.tensors.contains_key("g.ema.0") {
            let params = m.g.params();
            let w =
                (0..params.len()).map(|i| ck.get(&format!("g.ema.{i}"))?.to_device(dev)).collect::<Result<Vec<_>>>()?;
            m.g = m.g.with_weights(&w)?;
        }
        Ok(m)
    }

    /// D's logits [B / pack, 1] for samples x [B, ...].
    pub fn discriminate(&self, g: &mut Graph, x: NodeId, mode: BnMode) -> Result<NodeId> {
        let x = if self.cfg.pack > 1 {
            let b = g.shape(x)[0];
            g.reshape(x, &[b / self.cfg.pack, 2 * self.cfg.pack])?
        } else {
            x
        };
        self.d.forward(g, x, mode)
    }
}

fn mlp(cfg: &GanConfig, gi: &mut Init, di: &mut Init) -> Result<(Net, Net)> {
    let h = cfg.width;
    let mut g = Vec::new();
    let mut fan = cfg.z_dim;
    for _ in 0..cfg.depth {
        g.push(gi.linear(g.len(), fan, h, (2.0 / fan as f32).sqrt())?);
        g.push(Layer::Act(Unary::Relu, 0.0));
        fan = h;
    }
    g.push(gi.linear(g.len(), fan, 2, (1.0 / fan as f32).sqrt())?);
    let mut d = Vec::new();
    let mut fan = 2 * cfg.pack;
    for _ in 0..cfg.depth {
        d.push(di.linear(d.len(), fan, h, (2.0 / fan as f32).sqrt())?);
        d.push(Layer::Act(Unary::LeakyRelu, LEAK));
        fan = h;
    }
    d.push(di.linear(d.len(), fan, 1, (1.0 / fan as f32).sqrt())?);
    Ok((Net { layers: g }, Net { layers: d }))
}

// The layer lists read top to bottom as the networks run, one push per layer.
#[allow(clippy::vec_init_then_push)]
fn dcgan(cfg: &GanConfig, gi: &mut Init, di: &mut Init) -> Result<(Net, Net)> {
    let (c_img, side) = (cfg.data_shape[0], cfg.data_shape[1]);
    // 28 = 7·2², 32 = 4·2³: the number of 2× upsamplings from the first feature map.
    let (s0, ups) = if side == 28 { (7, 2) } else { (4, 3) };
    let c0 = cfg.width << (ups - 1);
    let mut g = Vec::new();
    g.push(gi.linear(0, cfg.z_dim, c0 * s0 * s0, 0.02)?);
    g.push(Layer::Reshape(vec![c0, s0, s0]));
    g.push(gi.batch_norm(2, c0, true)?);
    g.push(Layer::Act(Unary::Relu, 0.0));
    let mut c = c0;
    for _ in 1..ups {
        g.push(Layer::ConvT { w: gi.normal(g.len(), "w", &[c, c / 2, 4, 4], 0.0, 0.02)? });
        g.push(gi.batch_norm(g.len(), c / 2, true)?);
        g.push(Layer::Act(Unary::Relu, 0.0));
        c /= 2;
    }
    g.push(Layer::ConvT { w: gi.normal(g.len(), "w", &[c, c_img, 4, 4], 0.0, 0.02)? });
    g.push(Layer::ChannelBias { b: gi.fill(g.len(), "b", &[c_img], 0.0)? });
    g.push(Layer::Act(Unary::Tanh, 0.0));

    let mut d = Vec::new();
    d.push(Layer::Conv { w: di.normal(0, "w", &[cfg.width, c_img, 4, 4], 0.0, 0.02)? });
    d.push(Layer::ChannelBias { b: di.fill(1, "b", &[cfg.width], 0.0)? });
    d.push(Layer::Act(Unary::LeakyRelu, LEAK));
    let mut c = cfg.width;
    for _ in 1..ups {
        d.push(Layer::Conv { w: di.normal(d.len(), "w", &[2 * c, c, 4, 4], 0.0, 0.02)? });
        d.push(di.batch_norm(d.len(), 2 * c, false)?);
        d.push(Layer::Act(Unary::LeakyRelu, LEAK));
        c *= 2;
    }
    let flat = c * s0 * s0;
    d.push(Layer::Reshape(vec![flat]));
    d.push(di.linear(d.len(), flat, 1, 0.02)?);
    Ok((Net { layers: g }, Net { layers: d }))
}

// ---------------------------------------------------------------------------------------------------
// Data on the device

/// The training data as the trainer holds it: rows of `sample_len` values, in the model's scale.
pub struct TrainData {
    pub rows: Vec<f32>,
    pub shape: Vec<usize>,
}

/// Points drawn once from a mixture (fixed seed) for training.
pub const MIXTURE_POINTS: usize = 100_000;

impl TrainData {
    pub fn from_source(src: &Source, scale: f32) -> TrainData {
        match src {
            Source::Mixture(m) => TrainData {
                rows: m.sample(MIXTURE_POINTS, 0x6a17, 0).into_iter().map(|v| v / scale).collect(),
                shape: vec![MIXTURE_POINTS, 2],
            },
            Source::Images { train, .. } => {
                TrainData { rows: train.pixels.clone(), shape: vec![train.n, train.c, train.h, train.w] }
            }
        }
    }
}

/// The per-sample shape and scale of a data source.
pub fn data_shape_of(src: &Source) -> (Vec<usize>, f32) {
    match src {
        Source::Mixture(m) => {
            let extent = m.modes().iter().flat_map(|p| [p[0].abs(), p[1].abs()]).fold(0.0f32, f32::max);
            (vec![2], extent)
        }
        Source::Images { train, .. } => (vec![train.c, train.h, train.w], 1.0),
    }
}

// ---------------------------------------------------------------------------------------------------
// Training

#[derive(Clone, Copy, Debug)]
pub struct TrainSettings {
    pub batch: usize,
    pub steps: u32,
    pub lr_d: f32,
    pub lr_g: f32,
    /// Both rates decay linearly from their value at step 0 to this fraction of it at step `horizon`
    /// (and stay there); 1: constant. A fixed horizon (kept by resumed runs) makes N + N steps the same
    /// run as 2N.
    pub lr_end: f32,
    pub horizon: u32,
    /// The fraction of the horizon the rates stay at their start before the decay begins (0: decay from
    /// step 0; 0.9: warmup-stable-decay over the last 10%).
    pub lr_hold: f32,
    /// Decay of the moving average of G's weights used for sampling (0: none).
    pub ema: f32,
    /// Weight γ of the R1 penalty γ/2 · E‖∇ₓD(x)‖² on real data (0: none; MLP only).
    pub r1: f32,
    /// D updates per G update (each on a fresh real batch and fresh z). D's optimizer counts its own
    /// updates, so its step counter and learning-rate horizon are `d_steps` times G's.
    pub d_steps: u32,
    pub seed: u64,
}

impl TrainSettings {
    pub fn validate(&self, cfg: &GanConfig) -> Result<()> {
        let err = |m: String| Err(Error::invalid("gan train", m));
        if self.batch < 2 {
            return err(format!("--batch must be at least 2 (batch norm needs two samples), got {}", self.batch));
        }
        if !self.batch.is_multiple_of(cfg.pack) {
            return err(format!("--batch {} must be a multiple of --pack {}", self.batch, cfg.pack));
        }
        if self.steps == 0 {
            return err(format!("--steps must be a positive integer, got {}", self.steps));
        }
        if !(1..=MAX_D_STEPS).contains(&self.d_steps) {
            return err(format!("--d-steps must be between 1 and {MAX_D_STEPS}, got {}", self.d_steps));
        }
        for (f, v) in [("lr-d", self.lr_d), ("lr-g", self.lr_g)] {
            if !(v.is_finite() && v > 0.0) {
                return err(format!("--{f} must be a positive number, got {v}"));
            }
        }
        if !(0.0..=1.0).contains(&self.lr_end) || self.horizon == 0 {
            return err(format!(
                "--lr-end must be in [0, 1] (got {}) over a positive horizon ({})",
                self.lr_end, self.horizon
            ));
        }
        if !(0.0..=1.0).contains(&self.lr_hold) {
            return err(format!("--lr-hold must be a fraction in [0, 1], got {}", self.lr_hold));
        }
        if !(0.0..1.0).contains(&self.ema) {
            return err(format!("--ema must be in [0, 1), got {}", self.ema));
        }
        if !(self.r1.is_finite() && self.r1 >= 0.0) || (self.r1 > 0.0 && cfg.is_image()) {
            return err(format!(
                "--r1 {} must be >= 0 (and 0 for images: D's batch norm has no second derivative)",
                self.r1
            ));
        }
        Ok(())
    }

    pub fn to_json(&self) -> Value {
        json!({"batch": self.batch, "steps": self.steps, "lr_d": self.lr_d, "lr_g": self.lr_g, "lr_end": self.lr_end,
               "horizon": self.horizon, "lr_hold": self.lr_hold, "ema": self.ema,
               "r1": self.r1, "d_steps": self.d_steps, "seed": self.seed})
    }
}

/// The most D updates per G update `TrainSettings` accepts.
pub const MAX_D_STEPS: u32 = 16;

/// Two recorded steps over shared weights; each draws its own batch and noise on the device.
pub struct GanTrainer {
    pub model: Gan,
    d: Trainer,
    g: Trainer,
    pub settings: TrainSettings,
    /// Kept alive for the recorded steps that read it.
    _data: Tensor,
}

/// Adam with β1 0.5 for one of the nets; `per_step` is how many of its updates make one training step.
fn adam(lr: f32, s: &TrainSettings, ema: f32, per_step: u32) -> TrainConfig {
    let schedule = if s.lr_end >= 1.0 {
        Schedule::Constant { lr }
    } else {
        let total = s.horizon * per_step;
        let hold = (s.lr_hold as f64 * total as f64).round() as u32;
        Schedule::Wsd { lr, warmup: 0, hold, total, min_lr: lr * s.lr_end }
    };
    TrainConfig {
        optimizer: OptimizerKind::Adam { beta1: 0.5, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 },
        schedule,
        clip: None,
        ema: (ema > 0.0).then_some(ema),
    }
}

impl GanTrainer {
    /// Builds both steps. `start_step` is the step counter of both optimizers (a resumed run's; call
    /// `restore` before stepping, which sets it again from the checkpoint).
    pub fn new(dev: &Device, model: Gan, data: &TrainData, s: TrainSettings, start_step: u32) -> Result<GanTrainer> {
        s.validate(&model.cfg)?;
        let cfg = model.cfg.clone();
        if data.shape[1..] != cfg.data_shape[..] {
            return Err(Error::ShapeMismatch {
                op: "gan train",
                lhs: data.shape[1..].to_vec(),
                rhs: cfg.data_shape.clone(),
                hint: " (the data's sample shape must be the model's)".into(),
            });
        }
        let b = s.batch;
        let data_t = Tensor::from_f32(dev, &data.shape, &data.rows)?;
        let mut bshape = vec![b];
        bshape.extend(&cfg.data_shape);
        let real = Tensor::empty(dev, &bshape, DType::F32)?;
        let z_d = Tensor::empty(dev, &[b, cfg.z_dim], DType::F32)?;
        let z_g = Tensor::empty(dev, &[b, cfg.z_dim], DType::F32)?;
        let stride = rng::step_stride(b * cfg.z_dim);
        let (seed_rows, seed_zd, seed_zg) = (s.seed ^ 0xda7a_0001, s.seed ^ 0x5eed_00d0, s.seed ^ 0x5eed_0060);

        // D step: D(real) → 1, D(G(z)) → 0, G held fixed.
        let step_d = crate::ops::optim::step_counter(dev, start_step * s.d_steps)?;
        let mut gd = Graph::new();
        let x = gd.input(&real);
        let z = gd.input(&z_d);
        let fake = model.g.forward(&mut gd, z, BnMode::Train { update: false })?;
        let fake = gd.detach(fake);
        if s.r1 > 0.0 {
            // The penalty differentiates D's output with respect to the real batch.
            gd.nodes[x.0].requires_grad = true;
        }
        let dr = model.discriminate(&mut gd, x, BnMode::Train { update: false })?;
        let df = model.discriminate(&mut gd, fake, BnMode::Train { update: false })?;
        let lr = bce_mean(&mut gd, dr, 1.0)?;
        let lf = bce_mean(&mut gd, df, 0.0)?;
        let mut loss_d = gd.add(lr, lf)?;
        if s.r1 > 0.0 {
            let sum = gd.sum_all(dr)?;
            let gx = gd.backward(sum, &[x])?[0];
            let sq = gd.unary(Unary::Square, gx)?;
            let total = gd.sum_all(sq)?;
            let pen = gd.scale(total, s.r1 / 2.0 / b as f32)?;
            loss_d = gd.add(loss_d, pen)?;
        }
        let (dt, rl, zd, sd) = (data_t.clone(), real.clone(), z_d.clone(), step_d.clone());
        let d = Trainer::with_prologue(
            dev,
            gd,
            loss_d,
            model.d.params(),
            adam(s.lr_d, &s, 0.0, s.d_steps),
            step_d,
            move || {
                sample::sample_rows_into(dev, &dt, None, seed_rows, &sd, &rl, None)?;
                rng::normal_step_into(dev, &zd, seed_zd, stride, &sd)
            },
        )?;

        // G step: D(G(z)) → 1, only G updated; G's batch norms update their running statistics here.
        let step_g = crate::ops::optim::step_counter(dev, start_step)?;
        let mut gg = Graph::new();
        let z = gg.input(&z_g);
        let fake = model.g.forward(&mut gg, z, BnMode::Train { update: true })?;
        let df = model.discriminate(&mut gg, fake, BnMode::Train { update: false })?;
        let loss_g = bce_mean(&mut gg, df, 1.0)?;
        let (zg, sg) = (z_g.clone(), step_g.clone());
        let g =
            Trainer::with_prologue(dev, gg, loss_g, model.g.params(), adam(s.lr_g, &s, s.ema, 1), step_g, move || {
                rng::normal_step_into(dev, &zg, seed_zg, stride, &sg)
            })?;
        Ok(GanTrainer { model, d, g, settings: s, _data: data_t })
    }

    /// `d_steps` D updates then one G update: submissions only, no wait.
    pub fn step(&self, dev: &Device) -> Result<()> {
        for _ in 0..self.settings.d_steps {
            self.d.step(dev)?;
        }
        self.g.step(dev)
    }

    /// The latest (D, G) losses (asynchronous reads).
    pub fn read_losses(&self, dev: &Device) -> Result<(Download, Download)> {
        Ok((self.d.read_loss(dev)?, self.g.read_loss(dev)?))
    }

    pub fn d_trainer(&self) -> &Trainer {
        &self.d
    }

    pub fn g_trainer(&self) -> &Trainer {
        &self.g
    }

    /// G as sampling uses it: over the EMA weights when there are some.
    pub fn sampling_generator(&self) -> Result<Net> {
        match self.g.ema() {
            Some(w) => self.model.g.with_weights(w),
            None => self.model.g.with_weights(&self.model.g.params().into_iter().map(|p| p.tensor).collect::<Vec<_>>()),
        }
    }

    /// Everything a checkpoint holds: both nets, both optimizers (`d.optim.*`, `g.optim.*`), G's EMA
    /// (`g.ema.*`) and running statistics.
    fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (net, t) in [("d", &self.d), ("g", &self.g)] {
            for (name, tensor) in t.state() {
                let is_param = t.params().iter().any(|p| p.name == name);
                out.push((if is_param { name } else { format!("{net}.{name}") }, tensor));
            }
        }
        out.extend(self.model.g.running());
        out
    }

    pub fn save(&self, dev: &Device, path: &std::path::Path, data: &str) -> Result<()> {
        let config = json!({"model": self.model.cfg.to_json(), "train": self.settings.to_json(), "data": data,
                            "image_shape": if self.model.cfg.is_image() { json!(self.model.cfg.data_shape) } else { Value::Null }});
        let mut ck = Checkpoint::new(KIND, config);
        ck.step = self.g.optimizer().current_step(dev)? as u64;
        ck.rng = json!({"seed": self.settings.seed});
        for (name, t) in self.state() {
            ck.tensors.insert(name, HostTensor::from_device(dev, &t)?);
        }
        ck.save(path)
    }

    /// Restores both nets, both optimizers and step counters, the EMA and the running statistics.
    pub fn restore(&self, dev: &Device, ck: &Checkpoint) -> Result<()> {
        ck.expect_kind_for(KIND, "`tigel train gan --resume`")?;
        let state = self.state();
        let specs: Vec<(&str, &[usize], DType)> =
            state.iter().map(|(n, t)| (n.as_str(), &t.shape[..], t.dtype)).collect();
        ck.expect_tensors(&specs)?;
        for (name, t) in &state {
            ck.restore_into(dev, name, t)?;
        }
        Ok(())
    }
}

fn bce_mean(g: &mut Graph, logits: NodeId, target: f32) -> Result<NodeId> {
    let shape = g.shape(logits).to_vec();
    let t = g.fill(&shape, target)?;
    let l = g.bce_logits(logits, t)?;
    g.mean_all(l)
}

// ---------------------------------------------------------------------------------------------------
// Sampling

/// Generates samples in the data's own scale: G in eval mode, z from the host's Philox stream of a seed.
pub struct Sampler {
    plan: Plan,
    z: Tensor,
    out: NodeId,
    batch: usize,
    cfg: GanConfig,
}

impl Sampler {
    pub fn new(dev: &Device, cfg: &GanConfig, generator: &Net, batch: usize) -> Result<Sampler> {
        let z = Tensor::empty(dev, &[batch, cfg.z_dim], DType::F32)?;
        let mut g = Graph::new();
        let zi = g.input(&z);
        let out = generator.forward(&mut g, zi, BnMode::Eval)?;
        let plan = Plan::build(dev, &g, &[out], |_| Ok(()))?;
        Ok(Sampler { plan, z, out, batch, cfg: cfg.clone() })
    }

    /// `n` samples ([n, ...] row-major), the same for the same seed.
    pub fn sample(&self, dev: &Device, n: usize, seed: u64) -> Result<Vec<f32>> {
        if n == 0 {
            return Err(Error::invalid("sample gan", "--n must be a positive integer, got 0"));
        }
        let (zd, len) = (self.cfg.z_dim, self.cfg.sample_len());
        let key = split64(seed ^ 0x5a3b_1e00);
        let mut out = Vec::with_capacity(n * len);
        let mut done = 0;
        while done < n {
            let z: Vec<f32> =
                (0..self.batch * zd).map(|i| normal_at(key, split64((done * zd + i) as u64), 0)).collect();
            dev.write(&self.z.buf, &z)?;
            self.plan.run(dev)?;
            let v = self.plan.value(self.out).to_f32(dev)?;
            let take = (n - done).min(self.batch);
            out.extend(v[..take * len].iter().map(|x| x * self.cfg.scale));
            done += take;
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------------
// Evaluation

/// Scores of samples against the data.
#[derive(Clone, Debug)]
pub enum Scores {
    Mixture(metrics::MixtureMetrics),
    Images { mmd2: f64, precision: f64, recall: f64, n: usize },
}

impl Scores {
    pub fn to_json(&self) -> Value {
        match self {
            Scores::Mixture(m) => json!({"modes_covered": m.modes_covered, "num_modes": m.num_modes,
                "high_quality": m.high_quality, "reverse_kl": m.reverse_kl, "mean_log_density": m.mean_log_density}),
            Scores::Images { mmd2, precision, recall, n } => {
                json!({"mmd2": mmd2, "precision": precision, "recall": recall, "n": n})
            }
        }
    }

    pub fn line(&self) -> String {
        match self {
            Scores::Mixture(m) => format!(
                "{}/{} modes, {:.1}% high quality, reverse KL {:.4}",
                m.modes_covered,
                m.num_modes,
                100.0 * m.high_quality,
                m.reverse_kl
            ),
            Scores::Images { mmd2, precision, recall, n } => {
                format!("MMD² {mmd2:.5}, precision {precision:.3}, recall {recall:.3} (k = 3, {n} images)")
            }
        }
    }
}

/// Mixtures: `mixture_metrics` of `n` samples. Images: MMD² and k = 3 precision/recall in pixel space
/// of `n` samples against `n` held-out images (all of them if fewer).
pub fn evaluate(samples: &[f32], src: &Source) -> Result<Scores> {
    match src {
        Source::Mixture(m) => Ok(Scores::Mixture(metrics::mixture_metrics(samples, *m)?)),
        Source::Images { held, .. } => {
            let dim = held.image_len();
            let n = (samples.len() / dim).min(held.n);
            let real = &held.pixels[..n * dim];
            let fake = &samples[..n * dim];
            let mmd2 = metrics::mmd2(real, fake, dim)?;
            let (precision, recall) = metrics::precision_recall_k(real, fake, dim, 3)?;
            Ok(Scores::Images { mmd2, precision, recall, n })
        }
    }
}

/// Checks that a data source fits a model's sample shape (eval on other data than trained on).
pub fn check_data_fits(cfg: &GanConfig, src: &Source) -> Result<()> {
    let (shape, _) = data_shape_of(src);
    if shape != cfg.data_shape {
        return Err(Error::ShapeMismatch {
            op: "gan",
            lhs: cfg.data_shape.clone(),
            rhs: shape,
            hint: " (the model's sample shape and the data's differ)".into(),
        });
    }
    Ok(())
}

/// A 2-D scatter plot of points as one gray image (dark points on white), `side` pixels square,
/// covering [-extent, extent]².
pub fn scatter_image(points: &[f32], extent: f32, side: usize) -> Vec<f32> {
    let mut img = vec![1.0f32; side * side];
    for p in points.chunks_exact(2) {
        let u = ((p[0] / extent + 1.0) * 0.5 * side as f32).floor();
        let v = ((1.0 - (p[1] / extent + 1.0) * 0.5) * side as f32).floor();
        if u >= 0.0 && v >= 0.0 && (u as usize) < side && (v as usize) < side {
            img[v as usize * side + u as usize] = -1.0;
        }
    }
    img
}
