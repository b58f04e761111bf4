//! A small UNet denoiser for images, read top to bottom.
//!
//! x [B, C, H, W] ──► conv 3×3 ──► per level: residual block (─► skip), stride-2 conv down
//!                ──► middle: residual block, self-attention (optional), residual block
//!                ──► per level, lowest first: concat skip, residual block, transposed conv up
//!                ──► group norm, SiLU, conv 3×3 ──► prediction [B, C, H, W]
//!
//! A residual block is x + conv(SiLU(GN(conv(SiLU(GN(x))) + Linear(SiLU(e))))): the time (and class)
//! embedding e [B, E] enters every block as a per-channel offset. Both sums are the convolutions'
//! epilogues (`Conv2d::forward_add`), not dispatches of their own. Convolutions carry no bias (each is
//! followed by a group norm or a residual sum that has one), except the output convolution.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::device::Device;
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId};
use crate::nn::{Activation, Conv2d, ConvTranspose2d, GroupNorm, Init, Linear, Param};
use crate::ops::conv::Conv2d as ConvOpts;
use crate::ops::rng::RngState;

const GN_EPS: f32 = 1e-5;
/// 3×3 convolutions keep H and W.
const SAME: ConvOpts = ConvOpts { stride: 1, padding: 1 };
/// Stride 2, padding 1: halves H and W (or doubles them, transposed).
const HALVE: ConvOpts = ConvOpts { stride: 2, padding: 1 };

/// The shape of the UNet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnetConfig {
    /// Channels of the first level; level i has `base · mults[i]`.
    pub base: usize,
    /// Channel multiplier per level (the number of levels).
    pub mults: Vec<usize>,
    /// Self-attention (one head) at the lowest resolution.
    pub attention: bool,
}

impl UnetConfig {
    /// Positive sizes, and images of `c`×`h`×`w` that the levels can halve.
    pub fn validate(&self, c: usize, h: usize, w: usize) -> Result<()> {
        let bad = |m: String| Err(Error::invalid("unet config", m));
        if self.base == 0 || self.mults.is_empty() || self.mults.contains(&0) {
            return bad(format!("base {} and mults {:?} must be positive and non-empty", self.base, self.mults));
        }
        if self.mults.len() > MAX_LEVELS {
            return bad(format!(
                "{} levels (mults {:?}): at most {MAX_LEVELS} are supported",
                self.mults.len(),
                self.mults
            ));
        }
        let f = 1usize << (self.mults.len() - 1);
        if c == 0 || !h.is_multiple_of(f) || !w.is_multiple_of(f) || h == 0 || w == 0 {
            return bad(format!(
                "images of {c}×{h}×{w}: height and width must be divisible by 2^(levels - 1) = {f} for {} levels",
                self.mults.len()
            ));
        }
        let widest = self.mults.iter().try_fold(0usize, |m, &k| self.base.checked_mul(k).map(|c| c.max(m)));
        if widest.is_none_or(|c| c > 128 * 8) {
            return bad("channels over 1024 are not supported".into());
        }
        Ok(())
    }

    /// The default UNet for images of `h`×`w` (any number of channels): base 16 and as many levels as
    /// halve both sides while they stay even and at least 4 after halving (at most 4 levels: 8 → 4×4 in
    /// 2 levels, 16 → 4×4 in 3, 28 → 7×7 in 3, 32 → 4×4 in 4, 64 → 8×8 in 4), multipliers 1, 2, 2, ...
    /// (a level more than halves the side at twice the channels, then keeps them), and self-attention at
    /// the lowest level when it has at most 256 positions (its cost grows with their square).
    pub fn for_image(h: usize, w: usize) -> UnetConfig {
        let (mut lh, mut lw, mut levels) = (h, w, 1);
        while levels < DEFAULT_MAX_LEVELS && lh % 2 == 0 && lw % 2 == 0 && lh / 2 >= 4 && lw / 2 >= 4 {
            (lh, lw, levels) = (lh / 2, lw / 2, levels + 1);
        }
        let mults = (0..levels).map(|i| if i == 0 { 1 } else { 2 }).collect();
        UnetConfig { base: DEFAULT_BASE, mults, attention: lh.saturating_mul(lw) <= 256 }
    }

    /// The config as checkpoints store it.
    pub fn to_json(&self) -> Value {
        crate::models::config_json(self)
    }

    /// The config a checkpoint stores, if it is one.
    pub fn from_json(v: &Value) -> Option<UnetConfig> {
        UnetConfig::deserialize(v).ok()
    }
}

/// The most UNet levels (each halves the image side).
pub const MAX_LEVELS: usize = 8;
/// The most levels `UnetConfig::for_image` chooses.
const DEFAULT_MAX_LEVELS: usize = 4;
/// Channels of the first level in `UnetConfig::for_image` (0.22 M parameters at 28×28 with mults 1,2,2).
pub const DEFAULT_BASE: usize = 16;

/// Groups for a group norm of `c` channels: 8 when they divide evenly, else the largest of 4, 2, 1.
pub fn groups_for(c: usize) -> usize {
    [8, 4, 2, 1].into_iter().find(|g| c.is_multiple_of(*g)).unwrap_or(1)
}

fn group_norm(dev: &Device, name: &str, c: usize) -> Result<GroupNorm> {
    GroupNorm::new(dev, name, c, groups_for(c), GN_EPS)
}

/// A bias-free `k`×`k` convolution with He-style std 1/√(cin·k²).
fn conv(dev: &Device, rng: &mut RngState, name: String, [cout, cin, k]: [usize; 3], opts: ConvOpts) -> Result<Conv2d> {
    Conv2d::new(dev, rng, name, [cout, cin, k], opts, Init::lecun(cin * k * k))
}

/// One residual block.
pub struct ResBlock {
    gn1: GroupNorm,
    conv1: Conv2d,
    temb: Linear,
    gn2: GroupNorm,
    conv2: Conv2d,
    /// 1×1 convolution on the skip path when the channel count changes.
    skip: Option<Conv2d>,
}

impl ResBlock {
    fn new(dev: &Device, rng: &mut RngState, name: &str, cin: usize, cout: usize, emb: usize) -> Result<ResBlock> {
        Ok(ResBlock {
            gn1: group_norm(dev, &format!("{name}.gn1"), cin)?,
            conv1: conv(dev, rng, format!("{name}.conv1"), [cout, cin, 3], SAME)?,
            temb: Linear::named(
                dev,
                rng,
                format!("{name}.temb.w"),
                Some(format!("{name}.temb.b")),
                [emb, cout],
                Init::lecun(emb),
            )?,
            gn2: group_norm(dev, &format!("{name}.gn2"), cout)?,
            // Small so each block starts near the identity.
            conv2: Conv2d::new(
                dev,
                rng,
                format!("{name}.conv2"),
                [cout, cout, 3],
                SAME,
                Init::Normal(0.1 / ((cout * 9) as f32).sqrt()),
            )?,
            skip: if cin != cout {
                Some(conv(dev, rng, format!("{name}.skip"), [cout, cin, 1], ConvOpts::default())?)
            } else {
                None
            },
        })
    }

    fn params(&self) -> Vec<Param> {
        let mut v = self.gn1.params();
        v.extend(self.conv1.params());
        v.extend(self.temb.params());
        v.extend(self.gn2.params());
        v.extend(self.conv2.params());
        v.extend(self.skip.iter().flat_map(|s| s.params()));
        v
    }

    /// `se` is SiLU(e) [B, E], shared by every block.
    fn forward(&self, g: &mut Graph, x: NodeId, se: NodeId) -> Result<NodeId> {
        let h = self.gn1.forward_act(g, x, Activation::Silu)?;
        let t = self.temb.forward(g, se)?;
        // The time offset t [B, cout] and the residual sum are added by the convolutions' kernels.
        let h = self.conv1.forward_add(g, h, Some(t), None)?;
        let h = self.gn2.forward_act(g, h, Activation::Silu)?;
        let skip = match &self.skip {
            Some(s) => s.forward(g, x)?,
            None => x,
        };
        self.conv2.forward_add(g, h, None, Some(skip))
    }
}

/// One-head self-attention over the H·W positions.
pub struct Attn {
    gn: GroupNorm,
    qkv: Linear,
    proj: Linear,
}

impl Attn {
    fn new(dev: &Device, rng: &mut RngState, name: &str, c: usize) -> Result<Attn> {
        Ok(Attn {
            gn: group_norm(dev, &format!("{name}.gn"), c)?,
            qkv: Linear::named(dev, rng, format!("{name}.qkv"), None, [c, 3 * c], Init::lecun(c))?,
            proj: Linear::named(dev, rng, format!("{name}.proj"), None, [c, c], Init::Normal(0.1 / (c as f32).sqrt()))?,
        })
    }

    fn params(&self) -> Vec<Param> {
        let mut v = self.gn.params();
        v.extend(self.qkv.params());
        v.extend(self.proj.params());
        v
    }

    /// x + proj(attention over the H·W positions of GN(x)).
    fn forward(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        let s = g.shape(x).to_vec();
        let (b, c, hw) = (s[0], s[1], s[2] * s[3]);
        let h = self.gn.forward(g, x)?;
        let h = g.reshape(h, &[b, c, hw])?;
        let h = g.transpose(h, &[0, 2, 1])?;
        let h = g.reshape(h, &[b * hw, c])?;
        let qkv = self.qkv.forward(g, h)?;
        let qkv = g.reshape(qkv, &[b, hw, 3 * c])?;
        let a = g.attention(qkv, 1, false)?;
        let a = g.reshape(a, &[b * hw, c])?;
        let a = self.proj.forward(g, a)?;
        let a = g.reshape(a, &[b, hw, c])?;
        let a = g.transpose(a, &[0, 2, 1])?;
        let a = g.reshape(a, &s)?;
        g.add(x, a)
    }
}

/// The UNet.
pub struct Unet {
    /// Its shape.
    pub cfg: UnetConfig,
    conv_in: Conv2d,
    down: Vec<ResBlock>,
    /// Stride-2 convolutions after every level but the lowest.
    downsample: Vec<Conv2d>,
    mid: [ResBlock; 2],
    attn: Option<Attn>,
    up: Vec<ResBlock>,
    /// Transposed convolutions (k 4, stride 2, pad 1) after every level but the first, indexed by level.
    upsample: Vec<ConvTranspose2d>,
    gn_out: GroupNorm,
    /// The output convolution, with a bias [C, 1, 1].
    conv_out: Conv2d,
}

impl Unet {
    /// A fresh UNet for images with `c` channels, conditioned on an embedding of width `emb`; its weights
    /// come from `rng` in the order the layers are listed.
    pub fn new(dev: &Device, rng: &mut RngState, cfg: UnetConfig, c: usize, emb: usize) -> Result<Unet> {
        let chans: Vec<usize> = cfg.mults.iter().map(|m| m * cfg.base).collect();
        let levels = chans.len();
        let conv_in = conv(dev, rng, "unet.conv_in".into(), [cfg.base, c, 3], SAME)?;
        let mut down = Vec::new();
        let mut downsample = Vec::new();
        let mut cin = cfg.base;
        for (i, &ch) in chans.iter().enumerate() {
            down.push(ResBlock::new(dev, rng, &format!("unet.down.{i}"), cin, ch, emb)?);
            if i + 1 < levels {
                downsample.push(conv(dev, rng, format!("unet.downsample.{i}"), [ch, ch, 3], HALVE)?);
            }
            cin = ch;
        }
        let low = chans[levels - 1];
        let mid = [
            ResBlock::new(dev, rng, "unet.mid.0", low, low, emb)?,
            ResBlock::new(dev, rng, "unet.mid.1", low, low, emb)?,
        ];
        let attn = if cfg.attention { Some(Attn::new(dev, rng, "unet.mid.attn", low)?) } else { None };
        let mut up = Vec::new();
        let mut upsample = Vec::new();
        for (i, &ch) in chans.iter().enumerate() {
            // The up block of level i sees the previous (lower) level's output plus its skip.
            let from = if i + 1 < levels { chans[i + 1] } else { low };
            up.push(ResBlock::new(dev, rng, &format!("unet.up.{i}"), from + ch, ch, emb)?);
            if i > 0 {
                // [Cin, Cout, 4, 4] (transposed convolution layout), to the channels of level i - 1's input.
                let init = Init::lecun(ch * 4);
                upsample.push(ConvTranspose2d::new(dev, rng, format!("unet.upsample.{i}"), [ch, ch, 4], HALVE, init)?);
            }
        }
        let gn_out = group_norm(dev, "unet.gn_out", cfg.base)?;
        let init = Init::Normal(0.1 / ((cfg.base * 9) as f32).sqrt());
        let conv_out = Conv2d::new(dev, rng, "unet.conv_out", [c, cfg.base, 3], SAME, init)?.with_bias(
            dev,
            rng,
            "unet.conv_out.b",
            &[c, 1, 1],
        )?;
        Ok(Unet { conv_in, down, downsample, mid, attn, up, upsample, gn_out, conv_out, cfg })
    }

    /// Every parameter, named as in checkpoints, in checkpoint order.
    pub fn params(&self) -> Vec<Param> {
        let mut v = self.conv_in.params();
        for (i, b) in self.down.iter().enumerate() {
            v.extend(b.params());
            v.extend(self.downsample.get(i).iter().flat_map(|d| d.params()));
        }
        for b in &self.mid {
            v.extend(b.params());
        }
        v.extend(self.attn.iter().flat_map(|a| a.params()));
        for b in &self.up {
            v.extend(b.params());
        }
        v.extend(self.upsample.iter().flat_map(|u| u.params()));
        v.extend(self.gn_out.params());
        v.extend(self.conv_out.params());
        v
    }

    /// The prediction for x [B, C, H, W] given the conditioning embedding e [B, E].
    pub fn forward(&self, g: &mut Graph, x: NodeId, e: NodeId) -> Result<NodeId> {
        let se = Activation::Silu.forward(g, e)?;
        let mut h = self.conv_in.forward(g, x)?;
        let mut skips = Vec::new();
        for (i, blk) in self.down.iter().enumerate() {
            h = blk.forward(g, h, se)?;
            skips.push(h);
            if let Some(d) = self.downsample.get(i) {
                h = d.forward(g, h)?;
            }
        }
        h = self.mid[0].forward(g, h, se)?;
        if let Some(a) = &self.attn {
            h = a.forward(g, h)?;
        }
        h = self.mid[1].forward(g, h, se)?;
        for i in (0..self.up.len()).rev() {
            h = g.concat(&[h, skips[i]], 1)?;
            h = self.up[i].forward(g, h, se)?;
            if i > 0 {
                h = self.upsample[i - 1].forward(g, h)?;
            }
        }
        let h = self.gn_out.forward_act(g, h, Activation::Silu)?;
        self.conv_out.forward(g, h)
    }
}
