//! Generative adversarial networks, read top to bottom: an MLP GAN for 2-D points and a DCGAN for
//! square images of any even side from 8 to 256 pixels, with one or three channels.
//!
//! z ~ N(0, I) ──► G ──► fake ──┐
//!                              ├──► D ──► logits      D learns real → 1, fake → 0;
//!               real data ─────┘                       G learns to make D say 1 (the non-saturating loss)
//!
//! MLP (2-D):  G: z ─► [Linear, ReLU] × depth ─► Linear(2);  D: m points packed into one row of 2m values
//!             (PacGAN: D judges m samples jointly, which exposes a collapsed G) ─► [Linear, LeakyReLU] ×
//!             depth ─► Linear(1).
//! DCGAN:      G: z ─► Linear ─► [C0, s, s] ─► BN, ReLU ─► [ConvT 4×4/2 ─► BN, ReLU] ×… ─► ConvT 4×4/2 + bias
//!             ─► tanh; D: Conv 4×4/2 + bias, LeakyReLU ─► [Conv 4×4/2, BN, LeakyReLU] ×… ─► Linear(1).
//!             Both stacks follow from the side (`DcganPlan`): halve it while it stays even and at least
//!             4 to find the first map s (8 → 4, 16 → 4, 28 → 7, 32 → 4, 20 → 5, 12 → 6), one 2× stage per
//!             halving, channels halving as the resolution doubles (C0 = width · 2^(stages − 1)).
//!
//! Training alternates two recorded steps, each its own `Trainer` (own Adam, β1 = 0.5) over the shared
//! weights: the D step draws real rows from the data set held on the device and z from the Philox stream of
//! its step counter, and updates D only (G's output is detached); the G step draws its own z and updates G
//! only (D's weights are bound in its graph but not asked for). G's batch norms update their running
//! statistics in the G step, which eval mode (sampling) uses. Beside the model: `train` (`GanTrainer`) and
//! `sample` (`Sampler`); the data rows live in `data::rows`, the scores in `models::scores`.

mod sample;
mod train;

pub use sample::Sampler;
pub use train::{GanTrainer, TrainSettings, MAX_D_STEPS};
// Moved beside the other data and metrics; re-exported so `models::gan::X` keeps working.
pub use crate::data::rows::{data_shape_of, TrainData, MIXTURE_POINTS};
pub use crate::models::scores::{evaluate, Scores};
pub use crate::nn::BnMode;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::checkpoint::Checkpoint;
use crate::data::source::Source;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId};
use crate::nn::{Activation, BatchNorm, Conv2d, ConvTranspose2d, Init, Linear, Param};
use crate::ops::conv::Conv2d as ConvOpts;
use crate::ops::rng::RngState;
use crate::tensor::Tensor;

/// Checkpoint kind of this model.
pub const KIND: &str = "gan";
const BN_EPS: f32 = 1e-5;
const BN_MOMENTUM: f32 = 0.1;
const LEAK: f32 = 0.2;
/// Kernel 4, stride 2, padding 1: halves H and W (convolution) or doubles them (transposed).
const HALVE: ConvOpts = ConvOpts { stride: 2, padding: 1 };

/// The shape of both networks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GanConfig {
    /// [2] for points, [C, H, W] for images (H = W even, 8 to 256; C = 1 or 3).
    pub data_shape: Vec<usize>,
    /// Noise dimension.
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
    /// Images (DCGAN) rather than 2-D points (MLP).
    pub fn is_image(&self) -> bool {
        self.data_shape.len() == 3
    }

    /// A supported data shape and positive sizes.
    pub fn validate(&self) -> Result<()> {
        let err = |m: String| Err(Error::invalid("gan config", m));
        match self.data_shape[..] {
            [2] => {}
            [c, h, w] if (c == 1 || c == 3) && h == w && DcganPlan::for_side(h).is_some() => {}
            ref s => {
                return err(format!(
                    "data of shape {s:?}: the GAN takes 2-D points or square images with 1 or 3 channels and an \
                     even side from {MIN_SIDE} to {MAX_SIDE} pixels (8×8, 10×10, 12×12, …, 28×28, 32×32, 64×64, …)"
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
        // Checked before anything is built: the largest weights of either net (see `mlp` and `dcgan`).
        let (z, w) = (self.z_dim, self.width);
        let what = || format!("--z-dim {z}, --width {w} and --depth {} give the GAN's weights", self.depth);
        let weights = if self.is_image() {
            // G's first layer maps z to C0 channels of s×s; its widest convolution holds C0 · C0/2 · 4².
            (|| {
                let p = DcganPlan::for_side(self.data_shape[1])?;
                let c0 = w.checked_mul(1 << (p.stages - 1))?;
                crate::models::product(&[z, c0, p.first * p.first])?.checked_add(crate::models::product(&[c0, c0, 8])?)
            })()
        } else {
            (|| {
                crate::models::product(&[w, w, self.depth])?
                    .checked_add(crate::models::product(&[z.max(self.pack.saturating_mul(2)), w])?)
            })()
        };
        crate::models::check_values("gan config", what, weights)?;
        Ok(())
    }

    /// Values per sample.
    pub fn sample_len(&self) -> usize {
        self.data_shape.iter().product()
    }

    /// The config as checkpoints store it, with the architecture's name beside the fields.
    pub fn to_json(&self) -> Value {
        let mut v = crate::models::config_json(self);
        v["arch"] = (if self.is_image() { "dcgan" } else { "mlp" }).into();
        v
    }

    /// The config a checkpoint stores, validated (`arch` follows from the data shape).
    pub fn from_json(v: &Value) -> Result<GanConfig> {
        let cfg: GanConfig = crate::models::config_from_json("gan config", v)?;
        cfg.validate()?;
        Ok(cfg)
    }
}

/// The smallest image side the DCGAN takes (a 4×4 first map and one 2× stage).
pub const MIN_SIDE: usize = 8;
/// The largest image side the DCGAN takes.
pub const MAX_SIDE: usize = 256;

/// How a DCGAN reaches an image side: a `first`×`first` map doubled `stages` times by 4×4 stride-2
/// transposed convolutions (D mirrors it with stride-2 convolutions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DcganPlan {
    /// Side of G's first feature map (and of D's last): 4 for 8, 16, 32, 64; 7 for 28; 9 for 36.
    pub first: usize,
    /// 2× stages: G's transposed convolutions, D's convolutions.
    pub stages: usize,
}

impl DcganPlan {
    /// Halves `side` while it stays even and at least 4 (28 → 7 in 2 stages, 32 → 4 in 3: the layouts of
    /// the first DCGANs, so their checkpoints load unchanged); `None` for a side the DCGAN does not take
    /// (odd, below `MIN_SIDE` or above `MAX_SIDE`).
    pub fn for_side(side: usize) -> Option<DcganPlan> {
        if !(MIN_SIDE..=MAX_SIDE).contains(&side) || !side.is_multiple_of(2) {
            return None;
        }
        let (mut first, mut stages) = (side, 0);
        while first.is_multiple_of(2) && first / 2 >= 4 {
            first /= 2;
            stages += 1;
        }
        Some(DcganPlan { first, stages })
    }
}

// ---------------------------------------------------------------------------------------------------
// The networks: `nn` layers applied in order.

/// One step of a network.
#[derive(Clone, Debug)]
pub enum Layer {
    /// x [B, in] · w [in, out] + b [out].
    Linear(Linear),
    /// Convolution 4×4, stride 2, padding 1 (halves H and W), with an optional channel bias.
    Conv(Conv2d),
    /// Transposed convolution 4×4, stride 2, padding 1 (doubles H and W), with an optional channel bias.
    ConvT(ConvTranspose2d),
    /// Batch norm; G's keep running statistics for eval mode, D's need none.
    BatchNorm(BatchNorm),
    /// An activation.
    Act(Activation),
    /// To this per-sample shape (the batch axis is kept; packing changes it).
    Reshape(Vec<usize>),
}

/// A network: layers applied in order.
#[derive(Clone, Debug)]
pub struct Net {
    /// The layers, input first.
    pub layers: Vec<Layer>,
}

impl Net {
    /// Every trainable parameter, in layer order.
    pub fn params(&self) -> Vec<Param> {
        let mut out = Vec::new();
        for l in &self.layers {
            match l {
                Layer::Linear(x) => out.extend(x.params()),
                Layer::Conv(x) => out.extend(x.params()),
                Layer::ConvT(x) => out.extend(x.params()),
                Layer::BatchNorm(x) => out.extend(x.params()),
                Layer::Act(_) | Layer::Reshape(_) => {}
            }
        }
        out
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut out = Vec::new();
        for l in &mut self.layers {
            match l {
                Layer::Linear(x) => out.extend(x.params_mut()),
                Layer::Conv(x) => out.extend(x.params_mut()),
                Layer::ConvT(x) => out.extend(x.params_mut()),
                Layer::BatchNorm(x) => out.extend(x.params_mut()),
                Layer::Act(_) | Layer::Reshape(_) => {}
            }
        }
        out
    }

    /// The running statistics, named `{net}.{layer}.running_mean` / `running_var`.
    pub fn running(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for l in &self.layers {
            if let Layer::BatchNorm(bn) = l {
                out.extend(bn.running().into_iter().map(|p| (p.name, p.tensor)));
            }
        }
        out
    }

    /// The same network over other weights (the EMA's, in the order of `params`), sharing the running
    /// statistics.
    pub fn with_weights(&self, weights: &[Tensor]) -> Result<Net> {
        let mut net = self.clone();
        let params = net.params_mut();
        if weights.len() < params.len() {
            return Err(Error::invalid("gan", "too few weights for the network"));
        }
        for (p, w) in params.into_iter().zip(weights) {
            p.tensor = w.clone();
        }
        Ok(net)
    }

    /// The network's output for `x` [B, ...], batch norms in `mode`.
    pub fn forward(&self, g: &mut Graph, x: NodeId, mode: BnMode) -> Result<NodeId> {
        run(g, &self.layers, x, mode)
    }

    /// `forward` with a last linear layer's bias not added: (x·W, b), for a loss that adds the bias in
    /// its own kernel (`Graph::bce_logits_mean`).
    pub fn forward_split(&self, g: &mut Graph, x: NodeId, mode: BnMode) -> Result<(NodeId, Option<NodeId>)> {
        match self.layers.split_last() {
            Some((Layer::Linear(last), rest)) => {
                let h = run(g, rest, x, mode)?;
                last.forward_split(g, h)
            }
            _ => Ok((self.forward(g, x, mode)?, None)),
        }
    }
}

/// `layers` applied in order to `x`.
fn run(g: &mut Graph, layers: &[Layer], mut x: NodeId, mode: BnMode) -> Result<NodeId> {
    let mut layers = layers.iter().peekable();
    while let Some(l) = layers.next() {
        x = match l {
            // A linear layer takes the activation after it into its product's kernel.
            Layer::Linear(lin) => match layers.next_if(|n| matches!(n, Layer::Act(_))) {
                Some(Layer::Act(a)) => lin.forward_act(g, x, Some(*a))?,
                _ => lin.forward(g, x)?,
            },
            // A convolution takes the activation after it into its kernel where it can.
            Layer::Conv(c) => c.forward_act(g, x, fused_next(&mut layers))?,
            Layer::ConvT(c) => c.forward_act(g, x, fused_next(&mut layers))?,
            // A batch norm takes the activation after it into its own kernels.
            Layer::BatchNorm(bn) => match layers.next_if(|n| matches!(n, Layer::Act(_))) {
                Some(Layer::Act(a)) => bn.forward_act(g, x, mode, Some(*a))?,
                _ => bn.forward(g, x, mode)?,
            },
            Layer::Act(a) => a.forward(g, x)?,
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

/// The activation that comes next, taken from `layers` when a convolution's epilogue can fuse it.
fn fused_next<'a>(
    layers: &mut std::iter::Peekable<impl Iterator<Item = &'a Layer>>,
) -> Option<crate::ops::chnorm::FusedAct> {
    let act = match layers.peek() {
        Some(Layer::Act(a)) => crate::nn::conv::epilogue_act(*a)?,
        _ => return None,
    };
    layers.next();
    Some(act)
}

/// Builds one network's layers, naming parameters `{net}.{position}.{what}` by the layer's position in
/// the list as checkpoints have it (a convolution's bias counts as the position after its kernel).
struct Builder<'a> {
    dev: &'a Device,
    rng: RngState,
    net: &'static str,
    layers: Vec<Layer>,
    /// The position the next layer takes in checkpoint names.
    pos: usize,
}

impl<'a> Builder<'a> {
    fn new(dev: &'a Device, seed: u64, net: &'static str) -> Builder<'a> {
        Builder { dev, rng: RngState::new(seed), net, layers: Vec::new(), pos: 0 }
    }

    fn name(&self, pos: usize, what: &str) -> String {
        format!("{}.{pos}.{what}", self.net)
    }

    fn push(&mut self, l: Layer, positions: usize) {
        self.layers.push(l);
        self.pos += positions;
    }

    fn linear(&mut self, fan_in: usize, out: usize, std: f32) -> Result<()> {
        let (w, b) = (self.name(self.pos, "w"), self.name(self.pos, "b"));
        let l = Linear::named(self.dev, &mut self.rng, w, Some(b), [fan_in, out], Init::Normal(std))?;
        self.push(Layer::Linear(l), 1);
        Ok(())
    }

    fn act(&mut self, a: Activation) {
        self.push(Layer::Act(a), 1);
    }

    fn reshape(&mut self, s: Vec<usize>) {
        self.push(Layer::Reshape(s), 1);
    }

    fn batch_norm(&mut self, c: usize, running: bool) -> Result<()> {
        let name = format!("{}.{}", self.net, self.pos);
        self.push(Layer::BatchNorm(BatchNorm::new(self.dev, &name, c, running, BN_EPS, BN_MOMENTUM)?), 1);
        Ok(())
    }

    /// A 4×4 stride-2 convolution [cout, cin], N(0, 0.02), with a channel bias when `bias`.
    fn conv(&mut self, cin: usize, cout: usize, bias: bool) -> Result<()> {
        let w = self.name(self.pos, "w");
        let mut c = Conv2d::new(self.dev, &mut self.rng, w, [cout, cin, 4], HALVE, Init::Normal(0.02))?;
        if bias {
            let b = self.name(self.pos + 1, "b");
            c = c.with_bias(self.dev, &mut self.rng, b, &[cout])?;
        }
        self.push(Layer::Conv(c), 1 + bias as usize);
        Ok(())
    }

    /// A 4×4 stride-2 transposed convolution [cin, cout], N(0, 0.02), with a channel bias when `bias`.
    fn conv_t(&mut self, cin: usize, cout: usize, bias: bool) -> Result<()> {
        let w = self.name(self.pos, "w");
        let mut c = ConvTranspose2d::new(self.dev, &mut self.rng, w, [cin, cout, 4], HALVE, Init::Normal(0.02))?;
        if bias {
            let b = self.name(self.pos + 1, "b");
            c = c.with_bias(self.dev, &mut self.rng, b, &[cout])?;
        }
        self.push(Layer::ConvT(c), 1 + bias as usize);
        Ok(())
    }

    fn build(self) -> Net {
        Net { layers: self.layers }
    }
}

/// MLP: G is z ─► [Linear (He init), ReLU] × depth ─► Linear(2); D is 2·pack ─► [Linear, LeakyReLU] ×
/// depth ─► Linear(1).
fn mlp(cfg: &GanConfig, g: &mut Builder, d: &mut Builder) -> Result<()> {
    let h = cfg.width;
    let mut fan = cfg.z_dim;
    for _ in 0..cfg.depth {
        g.linear(fan, h, (2.0 / fan as f32).sqrt())?;
        g.act(Activation::Relu);
        fan = h;
    }
    g.linear(fan, 2, (1.0 / fan as f32).sqrt())?;
    let mut fan = 2 * cfg.pack;
    for _ in 0..cfg.depth {
        d.linear(fan, h, (2.0 / fan as f32).sqrt())?;
        d.act(Activation::LeakyRelu(LEAK));
        fan = h;
    }
    d.linear(fan, 1, (1.0 / fan as f32).sqrt())
}

/// DCGAN, every weight N(0, 0.02).
fn dcgan(cfg: &GanConfig, g: &mut Builder, d: &mut Builder) -> Result<()> {
    let (c_img, side) = (cfg.data_shape[0], cfg.data_shape[1]);
    let plan = DcganPlan::for_side(side)
        .ok_or_else(|| Error::invalid("gan config", format!("no DCGAN for images of side {side}")))?;
    let (s0, ups) = (plan.first, plan.stages);
    let c0 = cfg.width << (ups - 1);
    g.linear(cfg.z_dim, c0 * s0 * s0, 0.02)?;
    g.reshape(vec![c0, s0, s0]);
    g.batch_norm(c0, true)?;
    g.act(Activation::Relu);
    let mut c = c0;
    for _ in 1..ups {
        g.conv_t(c, c / 2, false)?;
        g.batch_norm(c / 2, true)?;
        g.act(Activation::Relu);
        c /= 2;
    }
    g.conv_t(c, c_img, true)?;
    g.act(Activation::Tanh);

    d.conv(c_img, cfg.width, true)?;
    d.act(Activation::LeakyRelu(LEAK));
    let mut c = cfg.width;
    for _ in 1..ups {
        d.conv(c, 2 * c, false)?;
        d.batch_norm(2 * c, false)?;
        d.act(Activation::LeakyRelu(LEAK));
        c *= 2;
    }
    let flat = c * s0 * s0;
    d.reshape(vec![flat]);
    d.linear(flat, 1, 0.02)
}

/// Both networks.
pub struct Gan {
    /// Their shape.
    pub cfg: GanConfig,
    /// The generator.
    pub g: Net,
    /// The discriminator.
    pub d: Net,
}

impl Gan {
    /// Fresh networks: G from the Philox stream of `seed`, D from that of `seed ^ 0xD15C`.
    pub fn new(dev: &Device, cfg: GanConfig, seed: u64) -> Result<Gan> {
        cfg.validate()?;
        let mut g = Builder::new(dev, seed, "g");
        let mut d = Builder::new(dev, seed ^ 0xD15C, "d");
        if cfg.is_image() {
            dcgan(&cfg, &mut g, &mut d)?
        } else {
            mlp(&cfg, &mut g, &mut d)?
        }
        Ok(Gan { cfg, g: g.build(), d: d.build() })
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
        let params = m.g.params();
        let names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
        let ck = ck.with_named_ema("g.", &names);
        let ema_of = |n: &str| format!("g.{}", crate::checkpoint::ema_name(n));
        if ema && names.first().is_some_and(|n| ck.tensors.contains_key(&ema_of(n))) {
            let w = names.iter().map(|n| ck.get(&ema_of(n))?.to_device(dev)).collect::<Result<Vec<_>>>()?;
            m.g = m.g.with_weights(&w)?;
        }
        Ok(m)
    }

    /// D's logits [B / pack, 1] for samples x [B, ...].
    pub fn discriminate(&self, g: &mut Graph, x: NodeId, mode: BnMode) -> Result<NodeId> {
        let x = self.packed(g, x)?;
        self.d.forward(g, x, mode)
    }

    /// D's logits without its last bias, and that bias (`Net::forward_split`).
    pub fn discriminate_split(&self, g: &mut Graph, x: NodeId, mode: BnMode) -> Result<(NodeId, Option<NodeId>)> {
        let x = self.packed(g, x)?;
        self.d.forward_split(g, x, mode)
    }

    /// x [B, ...] as D reads it: `pack` samples per row.
    fn packed(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        if self.cfg.pack > 1 {
            let b = g.shape(x)[0];
            g.reshape(x, &[b / self.cfg.pack, 2 * self.cfg.pack])
        } else {
            Ok(x)
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
