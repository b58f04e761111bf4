//! The planner and executor.
//!
//! `Plan::build` takes the nodes a step needs (everything the kept outputs depend on), computes each
//! node's last use (liveness), and runs the step once through each op's forward (the eager ops) inside
//! `Device::capture`, dropping every intermediate right after its last use. The capture's private
//! allocator turns those drops into buffer reuse, so the buffers the capture made are the step's memory
//! plan, and its peak is known before the first step runs. Each `run` replays the recording: one queue
//! submission on a GPU, no host wait; outputs are read back only when asked (`Plan::read`, asynchronous).

use std::collections::HashMap;

use super::ops::Fwd;
use super::saved::{self, SavedHalf};
use super::{Graph, NodeId, Op};
use crate::device::{Device, Download, Recording};
use crate::error::Result;
use crate::tensor::{DType, Tensor};

/// A compiled training (or inference) step.
pub struct Plan {
    rec: Recording,
    kept: HashMap<NodeId, Tensor>,
    /// Values of the constant nodes (fills), computed once at build time and read by every run.
    _consts: HashMap<NodeId, Tensor>,
    /// Bytes of the tensors bound into the graph (inputs, parameters, constants): live across steps.
    pub persistent_bytes: u64,
}

impl Plan {
    /// Plans and records the step that computes `keep` (plus whatever `after` issues, for example an
    /// optimizer update given the kept gradient tensors, inside the same recording).
    pub fn build(
        dev: &Device,
        g: &Graph,
        keep: &[NodeId],
        after: impl FnOnce(&[Tensor]) -> Result<()>,
    ) -> Result<Plan> {
        Plan::build_with(dev, g, keep, || Ok(()), after)
    }

    /// Like `build`, with work recorded ahead of the graph in the same step: `before` can write the
    /// graph's input tensors on the device (sampling a batch from data that lives there), so a step
    /// needs nothing from the host.
    pub fn build_with(
        dev: &Device,
        g: &Graph,
        keep: &[NodeId],
        before: impl FnOnce() -> Result<()>,
        after: impl FnOnce(&[Tensor]) -> Result<()>,
    ) -> Result<Plan> {
        let order = schedule(g, keep);
        let last = last_uses(g, &order, keep);
        let mut saved = SavedHalf::new(g, &order, keep);
        // Constant nodes (a fill: BCE targets, the gradient seed) are computed here, once, so the step
        // does not refill them every run.
        let mut consts: HashMap<NodeId, Tensor> = HashMap::new();
        for &id in &order {
            let node = g.node(id);
            if let Op::Def(def) = &node.op {
                if node.inputs.is_empty() && def.constant() {
                    let (t, _) = def.forward(&Fwd { dev, x: &[], aux: &[], shape: &node.shape })?;
                    consts.insert(id, t);
                }
            }
        }
        let persistent_bytes = order.iter().filter_map(|&i| g.tensor_of(i)).map(Tensor::bytes).sum::<u64>()
            + consts.values().map(Tensor::bytes).sum::<u64>();
        let (kept, rec) = dev.capture(|| {
            before()?;
            let mut vals: HashMap<NodeId, Tensor> = HashMap::new();
            // Second outputs of multi-output ops (a cross-entropy's row logsumexp, a layer norm's row
            // statistics, an attention's logsumexp, a layer norm backward's dgamma and dbeta), freed
            // with their node's value.
            let mut aux: HashMap<NodeId, Vec<Tensor>> = HashMap::new();
            // Under mixed precision, the dtypes of the second outputs of each node stored as f16 while
            // it waits for the backward (`saved`), so a reader gets them back as they were made.
            let mut stored: HashMap<NodeId, Vec<DType>> = HashMap::new();
            for (p, &id) in order.iter().enumerate() {
                let node = g.node(id);
                let (out, extra) = match &node.op {
                    Op::Input(t) | Op::Param(t) | Op::Const(t) => (t.clone(), vec![]),
                    Op::Def(_) if consts.contains_key(&id) => (consts[&id].clone(), vec![]),
                    Op::Def(def) if node.inputs.iter().any(|i| stored.contains_key(i)) => {
                        let (x, aux_in) = saved::widened(dev, g, node, def.f16_inputs(), &vals, &aux, &stored)?;
                        let x: Vec<&Tensor> = x.iter().collect();
                        let aux_in: Vec<&[Tensor]> = aux_in.iter().map(Vec::as_slice).collect();
                        def.forward(&Fwd { dev, x: &x, aux: &aux_in, shape: &node.shape })?
                    }
                    Op::Def(def) => {
                        let x: Vec<&Tensor> = node.inputs.iter().map(|i| &vals[i]).collect();
                        let aux_in: Vec<&[Tensor]> =
                            node.inputs.iter().map(|i| aux.get(i).map_or(&[][..], |v| v.as_slice())).collect();
                        def.forward(&Fwd { dev, x: &x, aux: &aux_in, shape: &node.shape })?
                    }
                };
                for i in &node.inputs {
                    if last.get(i) == Some(&id) {
                        vals.remove(i);
                        aux.remove(i);
                        stored.remove(i);
                    }
                }
                if !extra.is_empty() {
                    aux.insert(id, extra);
                }
                vals.insert(id, out);
                if let Some(policy) = &mut saved {
                    for i in node.inputs.iter().chain([&id]) {
                        if stored.contains_key(i) || !vals.contains_key(i) || !policy.waits(p, *i) {
                            continue;
                        }
                        let a = aux.remove(i).unwrap_or_default();
                        let (v, a, dtypes) = policy.store(dev, g, p, *i, &vals[i], &a)?;
                        vals.insert(*i, v);
                        stored.insert(*i, dtypes);
                        if !a.is_empty() {
                            aux.insert(*i, a);
                        }
                    }
                }
            }
            drop(aux);
            let kept: Vec<Tensor> = keep.iter().map(|k| vals[k].clone()).collect();
            drop(vals);
            after(&kept)?;
            Ok(keep.iter().copied().zip(kept).collect::<HashMap<_, _>>())
        })?;
        Ok(Plan { rec, kept, _consts: consts, persistent_bytes })
    }

    /// Runs the step: one submission on a GPU, never a wait.
    pub fn run(&self, dev: &Device) -> Result<()> {
        dev.replay(&self.rec)
    }

    /// The tensor holding a kept node's value (overwritten by each run).
    pub fn value(&self, id: NodeId) -> &Tensor {
        &self.kept[&id]
    }

    /// Starts reading a kept value back; ordered after the runs issued so far.
    pub fn read(&self, dev: &Device, id: NodeId) -> Result<Download> {
        dev.download(&self.value(id).buf)
    }

    /// Largest sum of live intermediate tensors during a step (bytes), known before the first run.
    pub fn planned_peak_bytes(&self) -> u64 {
        self.rec.planned_peak_bytes
    }

    /// Bytes of buffers the step's plan allocated (size-class rounding and reuse gaps included).
    pub fn allocated_bytes(&self) -> u64 {
        self.rec.allocated_bytes
    }

    /// Bytes of the buffers the step's dispatches bind, summed over one run: about the bytes it moves
    /// (`Recording::bytes_bound`).
    pub fn bytes_bound(&self) -> u64 {
        self.rec.bytes_bound()
    }

    /// The number of commands (kernel dispatches and copies) one run of the step issues.
    pub fn dispatches(&self) -> usize {
        self.rec.len()
    }

    /// One run's dispatches by kernel (`family::entry`), most frequent first.
    pub fn dispatch_counts(&self) -> Vec<(String, usize)> {
        self.rec.kernel_counts()
    }
}

/// The nodes `keep` depends on, in index order (a topological order, since inputs come first).
pub fn schedule(g: &Graph, keep: &[NodeId]) -> Vec<NodeId> {
    let mut need = vec![false; g.nodes.len()];
    for k in keep {
        need[k.0] = true;
    }
    for i in (0..g.nodes.len()).rev() {
        if need[i] {
            for inp in &g.nodes[i].inputs {
                need[inp.0] = true;
            }
        }
    }
    (0..g.nodes.len()).filter(|&i| need[i]).map(NodeId).collect()
}

/// For every scheduled node that is neither kept nor bound from outside, the node that uses it last.
pub fn last_uses(g: &Graph, order: &[NodeId], keep: &[NodeId]) -> HashMap<NodeId, NodeId> {
    let mut last = HashMap::new();
    for &id in order {
        for &i in &g.node(id).inputs {
            last.insert(i, id);
        }
    }
    last.retain(|i, _| !keep.contains(i) && g.tensor_of(*i).is_none());
    last
}
