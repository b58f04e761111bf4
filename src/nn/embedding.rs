//! Embedding: a table of rows looked up by integer id.

use crate::device::Device;
use crate::error::Result;
use crate::graph::{Graph, NodeId};
use crate::nn::{Init, Param};
use crate::ops::rng::RngState;

/// A table [rows, width]; `forward` maps ids [...] to their rows [..., width].
#[derive(Clone, Debug)]
pub struct Embedding {
    /// The table [rows, width].
    pub table: Param,
}

impl Embedding {
    /// A table named `name` of `rows` × `width` values filled by `init`.
    pub fn new(dev: &Device, rng: &mut RngState, name: &str, rows: usize, width: usize, init: Init) -> Result<Self> {
        Ok(Embedding { table: init.param(dev, rng, name, &[rows, width])? })
    }

    /// The rows of u32 `ids`.
    pub fn forward(&self, g: &mut Graph, ids: NodeId) -> Result<NodeId> {
        let t = g.param(&self.table.tensor);
        g.embedding(ids, t)
    }

    /// The table.
    pub fn params(&self) -> Vec<Param> {
        vec![self.table.clone()]
    }
}
