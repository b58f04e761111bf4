//! Dropout with a mask regenerated from the Philox stream at the training step, so each replay of a
//! recorded step draws a fresh mask and the backward regenerates the same one.

use super::{single, Fwd, OpDef, Outputs};
use crate::error::{Error, Result};
use crate::graph::reference::Value;
use crate::graph::{Graph, NodeId};
use crate::ops::dropout::{self as eager, Dropout as Params};
use crate::tensor::{DType, Tensor};

impl Graph {
    /// Dropout at the training step held in `step` (the optimizer's u32 [1] step counter), so each
    /// replay of a recorded step draws a fresh mask.
    pub fn dropout(&mut self, x: NodeId, d: Params, step: &Tensor) -> Result<NodeId> {
        self.f32_in("dropout", x)?;
        if step.dtype != DType::U32 || step.numel() != 1 {
            return Err(Error::invalid("dropout", format!("step must be a u32 [1] counter, got {:?}", step.shape)));
        }
        if d.p == 0.0 {
            return Ok(x);
        }
        Ok(self.push(Dropout { d, step: step.clone(), backward: false }, &[x], self.shape(x).to_vec(), DType::F32))
    }
}

/// Dropout (or its backward: the same mask applied to the gradient) at the step in `step` (u32 [1]).
#[derive(Debug)]
struct Dropout {
    d: Params,
    step: Tensor,
    backward: bool,
}

impl OpDef for Dropout {
    fn name(&self) -> &'static str {
        if self.backward {
            "dropout_backward"
        } else {
            "dropout"
        }
    }
    fn forward(&self, f: &Fwd) -> Result<Outputs> {
        let run = if self.backward { eager::dropout_backward } else { eager::dropout };
        single(run(f.dev, f.x[0], &self.d, &self.step)?)
    }
    // Dropout's backward is the same linear map (same mask), so it is its own derivative.
    fn backward(&self, g: &mut Graph, id: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
        let op = Dropout { d: self.d, step: self.step.clone(), backward: true };
        Ok(vec![Some(g.push(op, &[gy], g.in_shape(id, 0), DType::F32))])
    }
    fn reference(&self, _: &[&Value], _: &[usize]) -> Result<Value> {
        Err(Error::invalid("reference", "dropout has no f64 reference (its mask lives on the device)"))
    }
}
