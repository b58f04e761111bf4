//! Tensors: a device buffer with a shape and a dtype. Contiguous, row-major; a reshape shares the
//! buffer, everything else makes a new one.

use crate::device::{Buffer, Device};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    U32,
}

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::U32 => "u32",
        }
    }
}

/// Number of elements of a shape, or an error naming the shape if it overflows.
pub fn numel(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::invalid("shape", format!("{shape:?} has more elements than fit in memory")))
}

#[derive(Clone)]
pub struct Tensor {
    pub buf: Buffer,
    pub shape: Vec<usize>,
    pub dtype: DType,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?}, {})", self.shape, self.dtype.name())
    }
}

impl Tensor {
    /// A tensor with unspecified contents (every op writes all of its output).
    pub fn empty(dev: &Device, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let n = numel(shape)?;
        Ok(Tensor { buf: dev.alloc(n)?, shape: shape.to_vec(), dtype })
    }

    pub fn from_f32(dev: &Device, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        let n = numel(shape)?;
        if n != data.len() {
            return Err(Error::invalid(
                "tensor",
                format!("shape {shape:?} holds {n} elements, data has {}", data.len()),
            ));
        }
        Ok(Tensor {
            buf: dev.upload(if data.is_empty() { &[0.0f32][..] } else { data })?,
            shape: shape.to_vec(),
            dtype: DType::F32,
        })
    }

    pub fn from_u32(dev: &Device, shape: &[usize], data: &[u32]) -> Result<Tensor> {
        let n = numel(shape)?;
        if n != data.len() {
            return Err(Error::invalid(
                "tensor",
                format!("shape {shape:?} holds {n} elements, data has {}", data.len()),
            ));
        }
        Ok(Tensor {
            buf: dev.upload(if data.is_empty() { &[0u32][..] } else { data })?,
            shape: shape.to_vec(),
            dtype: DType::U32,
        })
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Same buffer, new shape with the same number of elements.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if numel(shape)? != self.numel() {
            return Err(Error::ShapeMismatch {
                op: "reshape",
                lhs: self.shape.clone(),
                rhs: shape.to_vec(),
                hint: " (element counts differ)".into(),
            });
        }
        Ok(Tensor { buf: self.buf.clone(), shape: shape.to_vec(), dtype: self.dtype })
    }

    pub fn to_f32(&self, dev: &Device) -> Result<Vec<f32>> {
        let mut v = dev.read_f32(&self.buf)?;
        v.truncate(self.numel());
        Ok(v)
    }

    pub fn to_u32(&self, dev: &Device) -> Result<Vec<u32>> {
        let mut v = dev.read_u32(&self.buf)?;
        v.truncate(self.numel());
        Ok(v)
    }
}
