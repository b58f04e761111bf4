//! A small UNet denoiser for images, read top to bottom.
//!
//! x [B, C, H, W] ──► conv 3×3 ──► per level: residual block (─► skip), stride-2 conv down
//!                ──► middle: residual block, self-attention (optional), residual block
//!                ──► per level, lowest first: concat skip, residual block, transposed conv up
//!                ──► group norm, SiLU, conv 3×3 ──► prediction [B, C, H, W]
//!
//! A residual block is x + conv(SiLU(GN(conv(SiLU(GN(x))) + Linear(SiLU(e))))): the time (and class)
//! embedding e [B, E] enters every block as a per-channel offset. Convolutions carry no bias (each is
//! followed by a group norm or a residual sum that has one), except the output convolution.

use serde_json::{json, Value};

use crate::device::Device;
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId};
use crate::nn::Param;
use crate::ops::conv::Conv2d;
use crate::ops::elementwise::Unary;
use crate::ops::matmul::MatmulOpts;
use crate::ops::{layout, rng::RngState};

const GN_EPS: f32 = 1e-5;

/// The shape of the UNet.
#[derive(Clone, Debug, PartialEq)]
pub struct UnetConfig {
    /// Channels of the first level; level i has `base · mults[i]`.
    pub base: usize,
    pub mults: Vec<usize>,
    /// Self-attention (one head) at the lowest resolution.
    pub attention: bool,
}

impl UnetConfig {
    pub fn validate(&self, c: usize, h: usize, w: usize) -> Result<()> {
        let bad = |m: String| Err(Error::invalid("unet config", m));
        if self.base == 0 || self.mults.is_empty() || self.mults.contains(&0) {
            return bad(format!("base {} and mults {:?} must be positive and non-empty", self.base, self.mults));
        }
        let f = 1usize << (self.mults.len() - 1);
        if c == 0 || !h.is_multiple_of(f) || !w.is_multiple_of(f) || h == 0 || w == 0 {
            return bad(format!(
                "images of {c}×{h}×{w}: height and width must be divisible by 2^(levels - 1) = {f} for {} levels",
                self.mults.len()
            ));
        }
        if self.base * self.mults.iter().max().unwrap() > 128 * 8 {
            return bad("channels over 1024 are not supported".into());
        }
        Ok(())
    }

    pub fn to_json(&self) -> Value {
        json!({"base": self.base, "mults": self.mults, "attention": self.attention})
    }

    pub fn from_json(v: &Value) -> Option<UnetConfig> {
        Some(UnetConfig {
            base: v.get("base")?.as_u64()? as usize,
            mults: v.get("mults")?.as_array()?.iter().map(|m| m.as_u64().map(|m| m as usize)).collect::<Option<_>>()?,
            attention: v.get("attention")?.as_bool()?,
        })
    }
}

/// Groups for a group norm of `c` channels: 8 when they divide evenly, else the largest of 4, 2, 1.
pub fn groups_for(c: usize) -> usize {
    [8, 4, 2, 1].into_iter().find(|g| c.is_multiple_of(*g)).unwrap_or(1)
}

/// Weights of one residual block.
pub struct ResBlock {
    gn1: [Param; 2],
    conv1: Param,
    temb: [Param; 2],
    gn2: [Param; 2],
    conv2: Param,
    /// 1×1 convolution on the skip path when the channel count changes.
    skip: Option<Param>,
}

pub struct Attn {
    gn: [Param; 2],
    qkv: Param,
    proj: Param,
}

pub struct Unet {
    pub cfg: UnetConfig,
    conv_in: Param,
    down: Vec<ResBlock>,
    /// Stride-2 convolutions after every level but the lowest.
    downsample: Vec<Param>,
    mid: [ResBlock; 2],
    attn: Option<Attn>,
    up: Vec<ResBlock>,
    /// Transposed convolutions (k 4, stride 2, pad 1) after every level but the first, indexed by level.
    upsample: Vec<Param>,
    gn_out: [Param; 2],
    conv_out: Param,
    conv_out_b: Param,
}

/// Makes parameters with N(0, std²) or constant values, named under a prefix.
pub(crate) struct Init<'a> {
    pub dev: &'a Device,
    pub rng: RngState,
}

impl Init<'_> {
    pub fn normal(&mut self, name: String, shape: &[usize], std: f32) -> Result<Param> {
        Ok(Param { name, tensor: self.rng.normal(self.dev, shape, 0.0, std)? })
    }
    pub fn fill(&mut self, name: String, shape: &[usize], v: f32) -> Result<Param> {
        Ok(Param { name, tensor: layout::fill(self.dev, shape, v)? })
    }
    /// A convolution weight [cout, cin, k, k] with He-style std 1/√(cin·k²).
    pub fn conv(&mut self, name: String, cout: usize, cin: usize, k: usize) -> Result<Param> {
        self.normal(name, &[cout, cin, k, k], 1.0 / ((cin * k * k) as f32).sqrt())
    }
    pub fn norm(&mut self, name: &str, c: usize) -> Result<[Param; 2]> {
        Ok([self.fill(format!("{name}.gamma"), &[c], 1.0)?, self.fill(format!("{name}.beta"), &[c], 0.0)?])
    }
    /// A linear map [in, out] and its bias [out].
    pub fn linear(&mut self, name: &str, i: usize, o: usize) -> Result<[Param; 2]> {
        Ok([
            self.normal(format!("{name}.w"), &[i, o], 1.0 / (i as f32).sqrt())?,
            self.fill(format!("{name}.b"), &[o], 0.0)?,
        ])
    }
}

impl ResBlock {
    fn new(init: &mut Init, name: &str, cin: usize, cout: usize, emb: usize) -> Result<ResBlock> {
        Ok(ResBlock {
            gn1: init.norm(&format!("{name}.gn1"), cin)?,
            conv1: init.conv(format!("{name}.conv1"), cout, cin, 3)?,
            temb: init.linear(&format!("{name}.temb"), emb, cout)?,
            gn2: init.norm(&format!("{name}.gn2"), cout)?,
            // Small so each block starts near the identity.
            conv2: init.normal(format!("{name}.conv2"), &[cout, cout, 3, 3], 0.1 / ((cout * 9) as f32).sqrt())?,
            skip: if cin != cout { Some(init.conv(format!("{name}.skip"), cout, cin, 1)?) } else { None },
        })
    }

    fn params(&self) -> Vec<Param> {
        let mut v: Vec<Param> = self.gn1.to_vec();
        v.push(self.conv1.clone());
        v.extend(self.temb.iter().cloned());
        v.extend(self.gn2.iter().cloned());
        v.push(self.conv2.clone());
        v.extend(self.skip.clone());
        v
    }

    /// `se` is SiLU(e) [B, E], shared by every block.
    fn forward(&self, g: &mut Graph, x: NodeId, se: NodeId) -> Result<NodeId> {
        let same = Conv2d { stride: 1, padding: 1 };
        let h = gn_silu(g, x, &self.gn1)?;
        let w = g.param(&self.conv1.tensor);
        let h = g.conv2d(h, w, same)?;
        let cout = g.shape(h)[1];
        let b = g.shape(h)[0];
        let t = linear(g, se, &self.temb)?;
        let t = g.reshape(t, &[b, cout, 1, 1])?;
        let h = g.add(h, t)?;
        let h = gn_silu(g, h, &self.gn2)?;
        let w = g.param(&self.conv2.tensor);
        let h = g.conv2d(h, w, same)?;
        let skip = match &self.skip {
            Some(s) => {
                let w = g.param(&s.tensor);
                g.conv2d(x, w, Conv2d::default())?
            }
            None => x,
        };
        g.add(skip, h)
    }
}

impl Attn {
    fn new(init: &mut Init, name: &str, c: usize) -> Result<Attn> {
        Ok(Attn {
            gn: init.norm(&format!("{name}.gn"), c)?,
            qkv: init.normal(format!("{name}.qkv"), &[c, 3 * c], 1.0 / (c as f32).sqrt())?,
            proj: init.normal(format!("{name}.proj"), &[c, c], 0.1 / (c as f32).sqrt())?,
        })
    }

    /// x + proj(attention over the H·W positions of GN(x)).
    fn forward(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        let s = g.shape(x).to_vec();
        let (b, c, hw) = (s[0], s[1], s[2] * s[3]);
        let (gm, bt) = (g.param(&self.gn[0].tensor), g.param(&self.gn[1].tensor));
        let h = g.group_norm(x, gm, bt, groups_for(c), GN_EPS)?;
        let h = g.reshape(h, &[b, c, hw])?;
        let h = g.transpose(h, &[0, 2, 1])?;
        let h = g.reshape(h, &[b * hw, c])?;
        let w = g.param(&self.qkv.tensor);
        let qkv = g.matmul(h, w, MatmulOpts::default())?;
        let qkv = g.reshape(qkv, &[b, hw, 3 * c])?;
        let a = g.attention(qkv, 1, false)?;
        let a = g.reshape(a, &[b * hw, c])?;
        let w = g.param(&self.proj.tensor);
        let a = g.matmul(a, w, MatmulOpts::default())?;
        let a = g.reshape(a, &[b, hw, c])?;
        let a = g.transpose(a, &[0, 2, 1])?;
        let a = g.reshape(a, &s)?;
        g.add(x, a)
    }
}

impl Unet {
    /// A fresh UNet for images with `c` channels, conditioned on an embedding of width `emb`.
    pub(crate) fn new(init: &mut Init, cfg: UnetConfig, c: usize, emb: usize) -> Result<Unet> {
        let chans: Vec<usize> = cfg.mults.iter().map(|m| m * cfg.base).collect();
        let levels = chans.len();
        let conv_in = init.conv("unet.conv_in".into(), cfg.base, c, 3)?;
        let mut down = Vec::new();
        let mut downsample = Vec::new();
        let mut cin = cfg.base;
        for (i, &ch) in chans.iter().enumerate() {
            down.push(ResBlock::new(init, &format!("unet.down.{i}"), cin, ch, emb)?);
            if i + 1 < levels {
                downsample.push(init.conv(format!("unet.downsample.{i}"), ch, ch, 3)?);
            }
            cin = ch;
        }
        let low = chans[levels - 1];
        let mid =
            [ResBlock::new(init, "unet.mid.0", low, low, emb)?, ResBlock::new(init, "unet.mid.1", low, low, emb)?];
        let attn = if cfg.attention { Some(Attn::new(init, "unet.mid.attn", low)?) } else { None };
        let mut up = Vec::new();
        let mut upsample = Vec::new();
        for (i, &ch) in chans.iter().enumerate() {
            // The up block of level i sees the previous (lower) level's output plus its skip.
            let from = if i + 1 < levels { chans[i + 1] } else { low };
            up.push(ResBlock::new(init, &format!("unet.up.{i}"), from + ch, ch, emb)?);
            if i > 0 {
                // [Cin, Cout, 4, 4] (transposed convolution layout), to the channels of level i - 1's input.
                upsample.push(init.normal(
                    format!("unet.upsample.{i}"),
                    &[ch, ch, 4, 4],
                    1.0 / ((ch * 4) as f32).sqrt(),
                )?);
            }
        }
        Ok(Unet {
            conv_in,
            down,
            downsample,
            mid,
            attn,
            up,
            upsample,
            gn_out: init.norm("unet.gn_out", cfg.base)?,
            conv_out: init.normal(
                "unet.conv_out".into(),
                &[c, cfg.base, 3, 3],
                0.1 / ((cfg.base * 9) as f32).sqrt(),
            )?,
            conv_out_b: init.fill("unet.conv_out.b".into(), &[c, 1, 1], 0.0)?,
            cfg,
        })
    }

    pub fn params(&self) -> Vec<Param> {
        let mut v = vec![self.conv_in.clone()];
        for (i, b) in self.down.iter().enumerate() {
            v.extend(b.params());
            v.extend(self.downsample.get(i).cloned());
        }
        for b in &self.mid {
            v.extend(b.params());
        }
        if let Some(a) = &self.attn {
            v.extend(a.gn.iter().cloned());
            v.extend([a.qkv.clone(), a.proj.clone()]);
        }
        for b in &self.up {
            v.extend(b.params());
        }
        v.extend(self.upsample.iter().cloned());
        v.extend(self.gn_out.iter().cloned());
        v.extend([self.conv_out.clone(), self.conv_out_b.clone()]);
        v
    }

    /// The prediction for x [B, C, H, W] given the conditioning embedding e [B, E].
    pub fn forward(&self, g: &mut Graph, x: NodeId, e: NodeId) -> Result<NodeId> {
        let same = Conv2d { stride: 1, padding: 1 };
        let se = g.unary(Unary::Silu, e)?;
        let w = g.param(&self.conv_in.tensor);
        let mut h = g.conv2d(x, w, same)?;
        let mut skips = Vec::new();
        for (i, blk) in self.down.iter().enumerate() {
            h = blk.forward(g, h, se)?;
            skips.push(h);
            if let Some(d) = self.downsample.get(i) {
                let w = g.param(&d.tensor);
                h = g.conv2d(h, w, Conv2d { stride: 2, padding: 1 })?;
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
                let w = g.param(&self.upsample[i - 1].tensor);
                h = g.conv_transpose2d(h, w, Conv2d { stride: 2, padding: 1 }, 0)?;
            }
        }
        let h = gn_silu(g, h, &self.gn_out)?;
        let w = g.param(&self.conv_out.tensor);
        let y = g.conv2d(h, w, same)?;
        let b = g.param(&self.conv_out_b.tensor);
        g.add(y, b)
    }
}

fn gn_silu(g: &mut Graph, x: NodeId, p: &[Param; 2]) -> Result<NodeId> {
    let (gm, bt) = (g.param(&p[0].tensor), g.param(&p[1].tensor));
    let c = g.shape(x)[1];
    let h = g.group_norm(x, gm, bt, groups_for(c), GN_EPS)?;
    g.unary(Unary::Silu, h)
}

/// x·W + b.
pub(crate) fn linear(g: &mut Graph, x: NodeId, p: &[Param; 2]) -> Result<NodeId> {
    let w = g.param(&p[0].tensor);
    let y = g.matmul(x, w, MatmulOpts::default())?;
    let b = g.param(&p[1].tensor);
    g.add(y, b)
}
