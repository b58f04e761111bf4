//! A rank's share of the global batch: contiguous rows `offset..offset + len`. Every rank draws the whole
//! batch, exactly as one process would (the same random streams, the same shapes, so the same numbers),
//! into full-size tensors, then copies its rows into the smaller tensors its graph reads: two dispatches
//! per input, recorded once with the step. In a single process the full tensor is the graph's own and
//! nothing is copied, so the step is the one tigel always recorded.

use crate::device::Device;
use crate::error::{Error, Result};
use crate::ops::layout;
use crate::tensor::Tensor;

/// The rows of the global batch one rank trains on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share {
    /// This rank.
    pub rank: usize,
    /// The number of ranks.
    pub ranks: usize,
    /// The global batch (`--batch`).
    pub batch: usize,
    /// This rank's first row.
    pub offset: usize,
    /// This rank's rows: `batch / ranks`.
    pub len: usize,
}

impl Share {
    /// This process's share of a global batch of `batch` rows, in whole groups of `unit` rows (the GAN's
    /// pack; else 1). `op` names the command in the error for a batch that does not divide among the
    /// ranks.
    pub fn of(op: &'static str, batch: usize, unit: usize) -> Result<Share> {
        Share::for_rank(op, batch, unit, super::rank(), super::size())
    }

    /// The share of rank `rank` of `ranks`.
    pub fn for_rank(op: &'static str, batch: usize, unit: usize, rank: usize, ranks: usize) -> Result<Share> {
        let unit = unit.max(1);
        let ranks = ranks.max(1);
        if ranks > 1 && !batch.is_multiple_of(ranks * unit) {
            let what =
                if unit > 1 { format!(" in whole packs of {unit} ({} rows)", ranks * unit) } else { String::new() };
            return Err(Error::invalid(
                op,
                format!(
                    "--batch {batch} (the global batch) does not divide among {ranks} ranks{what}: use a multiple of {}",
                    ranks * unit
                ),
            ));
        }
        let len = batch / ranks;
        Ok(Share { rank, ranks, batch, offset: rank * len, len })
    }

    /// Whether the batch is split (several ranks).
    pub fn is_split(&self) -> bool {
        self.ranks > 1
    }

    /// The tensor the whole batch is drawn into, for `local` (the graph's input, `len` rows): `local`
    /// itself in a single process, else a new tensor of `batch` rows.
    pub fn full(&self, dev: &Device, local: &Tensor) -> Result<Tensor> {
        if !self.is_split() {
            return Ok(local.clone());
        }
        let mut shape = local.shape.clone();
        shape[0] = self.batch;
        Tensor::empty(dev, &shape, local.dtype)
    }

    /// The tensor a graph reads for `full` (a batch of `batch` rows): `full` itself in a single
    /// process, else a new tensor of `len` rows, filled by [`Share::take`].
    pub fn local(&self, dev: &Device, full: &Tensor) -> Result<Tensor> {
        if !self.is_split() {
            return Ok(full.clone());
        }
        let mut shape = full.shape.clone();
        shape[0] = self.len;
        Tensor::empty(dev, &shape, full.dtype)
    }

    /// Copies this rank's rows of `full` (made by [`Share::full`], or given to [`Share::local`]) into `local`; nothing in a single
    /// process. Record it in the step's prologue, after the batch is drawn.
    pub fn take(&self, dev: &Device, full: &Tensor, local: &Tensor) -> Result<()> {
        if !self.is_split() {
            return Ok(());
        }
        let rows = layout::slice(dev, full, 0, self.offset, self.len)?;
        layout::copy_into(dev, &rows, local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_tile_the_batch() {
        let s: Vec<Share> = (0..4).map(|r| Share::for_rank("t", 16, 1, r, 4).unwrap()).collect();
        assert_eq!(s.iter().map(|s| (s.offset, s.len)).collect::<Vec<_>>(), [(0, 4), (4, 4), (8, 4), (12, 4)]);
        assert!(!Share::for_rank("t", 7, 1, 0, 1).unwrap().is_split());
    }

    #[test]
    fn an_indivisible_batch_is_refused() {
        let e = Share::for_rank("train gpt", 15, 1, 0, 2).unwrap_err().to_string();
        assert!(e.contains("--batch 15") && e.contains("2 ranks") && e.contains("multiple of 2"), "{e}");
        let e = Share::for_rank("train gan", 16, 4, 0, 8).unwrap_err().to_string();
        assert!(e.contains("packs of 4") && e.contains("multiple of 32"), "{e}");
    }
}
