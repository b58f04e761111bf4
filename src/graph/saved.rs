//! Saved activations in f16 under mixed precision.
//!
//! A training step's memory peaks where the forward pass ends: every tensor the backward rules read
//! (a layer's input, its norm statistics' input, the attention's q, k, v and output, the gated MLP's
//! projections) is alive at once. Under `Precision::Mixed` the planner stores each such tensor as f16
//! from the moment the forward has no further use for it until the backward reads it: one cast to f16
//! after its last forward reader, and a widening cast (exact) into a short-lived f32 copy just before
//! each backward reader, freed right after that reader. The kernels keep reading and writing f32, so
//! every op keeps its one f32 path; what changes is only what the plan holds across the gap. The
//! backward then works from the f16-rounded values, as it would if the forward had written f16.
//!
//! Only f32 intermediates of at least `MIN_ELEMENTS` elements are stored this way (a smaller tensor
//! saves less memory than its casts cost in dispatches); inputs, parameters, constants and kept values
//! never are. Second outputs (a fused residual norm's normalised rows, a gated MLP's projections) are
//! stored with their node the same way, each judged by its own size, except per-row statistics (a
//! second output at most 1/`STATS_RATIO` of its node's size: a norm's mean and rstd, an attention's
//! logsumexp), which stay f32: rounding one would shift its whole row in the backward.

use std::collections::HashMap;

use super::{Graph, Node, NodeId, Op, Precision};
use crate::device::{Device, WeakBuffer};
use crate::error::Result;
use crate::ops::cast::cast;
use crate::tensor::{DType, Tensor};

/// The smallest tensor (elements) stored as f16 between the forward and the backward.
pub const MIN_ELEMENTS: usize = 4096;

/// A second output at most 1/STATS_RATIO the size of its node's value (per-row statistics) stays f32.
pub const STATS_RATIO: usize = 8;

/// Which intermediates a plan stores as f16 while they wait for the backward, and when.
pub(crate) struct SavedHalf {
    /// Position (in the schedule) of the first backward node.
    start: usize,
    /// For each scheduled node, the positions of the nodes that read it, ascending.
    uses: HashMap<NodeId, Vec<usize>>,
    /// The schedule.
    order: Vec<NodeId>,
    /// Nodes whose value the plan must not change: kept outputs and tensors bound from outside.
    fixed: Vec<bool>,
    /// The f16 copies made so far (f32 buffer, its copy's buffer, elements copied): a node that
    /// shares its buffer and element count with a stored one (a reshape of it) shares the copy too.
    /// Both weak, so each frees with its last reader.
    copies: Vec<(WeakBuffer, WeakBuffer, usize)>,
}

impl SavedHalf {
    /// The policy for scheduling `order` of `g` with `keep` kept: None unless the graph is mixed
    /// precision and has a backward pass in the schedule.
    pub fn new(g: &Graph, order: &[NodeId], keep: &[NodeId]) -> Option<SavedHalf> {
        if g.precision != Precision::Mixed {
            return None;
        }
        let from = g.backward_from?;
        let start = order.iter().position(|id| id.0 >= from)?;
        let mut uses: HashMap<NodeId, Vec<usize>> = HashMap::new();
        for (p, &id) in order.iter().enumerate() {
            for &i in &g.node(id).inputs {
                let u = uses.entry(i).or_default();
                if u.last() != Some(&p) {
                    u.push(p);
                }
            }
        }
        let mut fixed = vec![false; g.nodes.len()];
        for &k in keep {
            fixed[k.0] = true;
        }
        for &id in order {
            if g.tensor_of(id).is_some() {
                fixed[id.0] = true;
            }
        }
        Some(SavedHalf { start, uses, order: order.to_vec(), fixed, copies: Vec::new() })
    }

    /// True when node `id`, just used (or made) at position `p`, waits for the backward: it is a
    /// forward intermediate whose next reader is a backward node.
    pub fn waits(&self, p: usize, id: NodeId) -> bool {
        if p >= self.start || self.fixed[id.0] {
            return false;
        }
        let Some(u) = self.uses.get(&id) else { return false };
        u.iter().find(|&&q| q > p).is_some_and(|&q| q >= self.start)
    }

    /// Node `i`'s value and second outputs as they wait for the backward, and the dtypes its readers
    /// get them back in (`load`): each large f32 tensor as f16, and each second output that no reader
    /// left may read (`OpDef::second_outputs_read`) dropped for an empty placeholder.
    pub fn store(
        &mut self,
        dev: &Device,
        g: &Graph,
        p: usize,
        i: NodeId,
        value: &Tensor,
        aux: &[Tensor],
    ) -> Result<(Tensor, Vec<Tensor>, Vec<DType>)> {
        let read = self.second_outputs_read(g, p, i);
        let mut kept = Vec::with_capacity(aux.len());
        for (k, t) in aux.iter().enumerate() {
            if read.as_ref().is_some_and(|r| !r.contains(&k)) {
                kept.push(Tensor::empty(dev, &[0], t.dtype)?);
            } else if t.numel() * STATS_RATIO <= value.numel() {
                // Row statistics (a norm's mean and rstd, an attention's logsumexp): a rounded one
                // shifts every value of its row in the backward, and a widening per reader costs a
                // dispatch for a few KB.
                kept.push(t.clone());
            } else {
                kept.push(self.half(dev, t)?);
            }
        }
        Ok((self.half(dev, value)?, kept, aux.iter().map(|t| t.dtype).collect()))
    }

    /// `t` as f16 when it is a large f32 tensor (the copy already made of its buffer, if any), else
    /// itself.
    fn half(&mut self, dev: &Device, t: &Tensor) -> Result<Tensor> {
        if t.dtype != DType::F32 || t.numel() < MIN_ELEMENTS {
            return Ok(t.clone());
        }
        self.copies.retain(|(w, c, _)| w.alive() && c.alive());
        let made =
            self.copies.iter().find(|(w, _, n)| w.is(&t.buf) && *n == t.numel()).and_then(|(_, c, _)| c.upgrade());
        if let Some(buf) = made {
            // The same buffer holds the same elements: only the shape differs (a reshape).
            return Ok(Tensor { buf, shape: t.shape.clone(), dtype: DType::F16 });
        }
        let c = cast(dev, t, DType::F16)?;
        self.copies.push((t.buf.downgrade(), c.buf.downgrade(), t.numel()));
        Ok(c)
    }

    /// The second outputs of node `i` that its readers after position `p` may read; None: any.
    fn second_outputs_read(&self, g: &Graph, p: usize, i: NodeId) -> Option<Vec<usize>> {
        let mut read = Vec::new();
        for &q in self.uses.get(&i)?.iter().filter(|&&q| q > p) {
            let node = g.node(self.order[q]);
            let Op::Def(d) = &node.op else { return None };
            for (k, _) in node.inputs.iter().enumerate().filter(|(_, &x)| x == i) {
                read.extend(d.second_outputs_read(k)?);
            }
        }
        Some(read)
    }
}

/// The inputs and their second outputs as `node` reads them when the plan stored some as f16 while
/// they waited (`stored`: the dtypes each stored node's second outputs had): widened back to f32 into
/// copies that live for this one reader, except the inputs `as_is` (`OpDef::f16_inputs`) when all of
/// those are f16, which the op reads as they are, and the second outputs it does not read
/// (`OpDef::second_outputs_read`), which it gets as they are stored.
pub(crate) fn widened(
    dev: &Device,
    g: &Graph,
    node: &Node,
    as_is: &[usize],
    vals: &HashMap<NodeId, Tensor>,
    aux: &HashMap<NodeId, Vec<Tensor>>,
    stored: &HashMap<NodeId, Vec<DType>>,
) -> Result<(Vec<Tensor>, Vec<Vec<Tensor>>)> {
    let as_is = if as_is.iter().all(|&k| vals[&node.inputs[k]].dtype == DType::F16) { as_is } else { &[] };
    let mut x = Vec::with_capacity(node.inputs.len());
    let mut second = Vec::with_capacity(node.inputs.len());
    for (k, i) in node.inputs.iter().enumerate() {
        let a = aux.get(i).map_or(&[][..], Vec::as_slice);
        let Some(dtypes) = stored.get(i) else {
            x.push(vals[i].clone());
            second.push(a.to_vec());
            continue;
        };
        x.push(if as_is.contains(&k) { vals[i].clone() } else { widen(dev, &vals[i], g.node(*i).dtype)? });
        let read = match &node.op {
            Op::Def(d) => d.second_outputs_read(k),
            _ => None,
        };
        let unread = |j: usize| read.as_ref().is_some_and(|r| !r.contains(&j));
        let a = a.iter().zip(dtypes).enumerate();
        second.push(
            a.map(|(j, (t, &d))| if unread(j) { Ok(t.clone()) } else { widen(dev, t, d) }).collect::<Result<_>>()?,
        );
    }
    Ok((x, second))
}

/// A stored tensor as a reader expects it (`want`, the dtype it had before it was stored): widened
/// back to f32 when the plan stored it as f16.
fn widen(dev: &Device, t: &Tensor, want: DType) -> Result<Tensor> {
    if t.dtype == DType::F16 && want == DType::F32 {
        cast(dev, t, DType::F32)
    } else {
        Ok(t.clone())
    }
}
