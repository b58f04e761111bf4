//! The data-parallel step: forward and backward, allreduce, update: two recordings and one host
//! exchange between them.
//!
//! The first recording is the graph's plan, ending with copies of the loss and every gradient into one
//! f32 buffer (`[loss, grad 0, grad 1, ...]`, one allreduce instead of one per tensor). The host reads
//! that buffer, sums it across ranks, scales it by 1/N (each rank's loss is the mean over its share of
//! the batch, so the mean of the ranks' is the global mean) and writes it back. The second recording
//! copies the averaged loss over the plan's loss (what `Plan::read` shows) and runs the update on views
//! of the buffer: clipping, optimizer, guard and EMA see the same numbers on every rank.

use super::Collective;
use crate::device::{Device, Instant, Recording};
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId, Plan};
use crate::ops::layout;
use crate::tensor::{DType, Tensor};

/// The allreduce and update half of a data-parallel step (see the module documentation).
pub struct Reduce {
    /// f32 [1, n]: the loss, then every gradient, flattened.
    flat: Tensor,
    update: Recording,
    world: &'static dyn Collective,
}

impl Reduce {
    /// Plans a training step whose kept values are `keep` (the loss first, then the gradients): on
    /// several ranks, the forward and backward plan plus the [`Reduce`] that sums the gradients and runs
    /// `update`; in a single process (no [`super::world`]) the one plan `Plan::build_with` makes, with
    /// `update` recorded at its end. `update` gets the kept values (the loss, then the gradients).
    pub fn plan(
        dev: &Device,
        g: &Graph,
        keep: &[NodeId],
        before: impl FnOnce() -> Result<()>,
        update: impl FnOnce(&[Tensor]) -> Result<()>,
    ) -> Result<(Plan, Option<Reduce>)> {
        let Some(world) = super::world() else {
            return Ok((Plan::build_with(dev, g, keep, before, update)?, None));
        };
        let sizes: Vec<usize> = keep.iter().map(|&k| g.shape(k).iter().product()).collect();
        let total: usize = sizes.iter().sum();
        let flat = Tensor::empty(dev, &[1, total], DType::F32)?;
        let plan = Plan::build_with(dev, g, keep, before, |kept| {
            let mut off = 0;
            for (t, &n) in kept.iter().zip(&sizes) {
                if t.dtype != DType::F32 {
                    return Err(Error::invalid("dist", format!("a kept value {:?} is not f32", t.shape)));
                }
                layout::slice_into(dev, &t.reshape(&[1, n])?, &flat, 1, off)?;
                off += n;
            }
            Ok(())
        })?;
        let kept: Vec<Tensor> = keep.iter().map(|&k| plan.value(k).clone()).collect();
        let ((), rec) = dev.capture(|| {
            let mut views = Vec::with_capacity(kept.len());
            let mut off = 0;
            for (t, &n) in kept.iter().zip(&sizes) {
                views.push(layout::slice(dev, &flat, 1, off, n)?.reshape(&t.shape)?);
                off += n;
            }
            // The averaged loss where the plan keeps it: the loss read and the guard see the global one.
            layout::copy_into(dev, &views[0], &kept[0])?;
            views[0] = kept[0].clone();
            update(&views)
        })?;
        Ok((plan, Some(Reduce { flat, update: rec, world })))
    }

    /// One step: submits `plan` (the forward and backward [`Reduce::plan`] made), waits for its
    /// gradients, sums them across the ranks, writes the average back and submits the update.
    pub fn step(&self, dev: &Device, plan: &Plan) -> Result<()> {
        let started = Instant::now();
        plan.run(dev)?;
        let words = dev.download(&self.flat.buf)?.wait()?;
        let arrived = Instant::now();
        let mut v: Vec<f32> = words.iter().take(self.flat.numel()).map(|&w| f32::from_bits(w)).collect();
        self.world.sum(&mut v)?;
        let scale = 1.0 / self.world.size() as f32;
        for x in &mut v {
            *x *= scale;
        }
        dev.write(&self.flat.buf, &v)?;
        super::timing::add(arrived - started, arrived.elapsed(), v.len() * 4);
        dev.replay(&self.update)
    }

    /// Bytes each rank sends into one allreduce (the loss and every gradient, f32).
    pub fn bytes(&self) -> usize {
        self.flat.numel() * 4
    }
}
