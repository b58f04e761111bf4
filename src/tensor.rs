//! Tensors: a device buffer with a shape and a dtype. Contiguous, row-major; a reshape shares the
//! buffer, everything else makes a new one.

use crate::device::{Buffer, Device};
use crate::error::{Error, Result};

/// What a tensor's 32-bit words hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// 32-bit floats.
    F32,
    /// 32-bit unsigned integers (token ids, class labels, counters).
    U32,
}

impl DType {
    /// "f32" or "u32", as errors and checkpoints name it.
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

/// A contiguous, row-major tensor on a device. Cloning shares the buffer.
#[derive(Clone)]
pub struct Tensor {
    /// The device buffer holding the values (at least one word, even for an empty tensor).
    pub buf: Buffer,
    /// The shape, outermost dimension first.
    pub shape: Vec<usize>,
    /// What the words hold.
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

    /// A tensor of `shape` holding `data` (as many values as the shape has elements).
    pub fn from_f32(dev: &Device, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        Tensor::upload(dev, shape, data, DType::F32)
    }

    /// A u32 tensor (token ids, counters) of `shape` holding `data`.
    pub fn from_u32(dev: &Device, shape: &[usize], data: &[u32]) -> Result<Tensor> {
        Tensor::upload(dev, shape, data, DType::U32)
    }

    fn upload<T: bytemuck::Pod + Default>(dev: &Device, shape: &[usize], data: &[T], dtype: DType) -> Result<Tensor> {
        let n = numel(shape)?;
        if n != data.len() {
            return Err(Error::invalid(
                "tensor",
                format!("shape {shape:?} holds {n} elements, data has {}", data.len()),
            ));
        }
        // A buffer cannot be empty: an empty tensor gets one unused word.
        let one = [T::default()];
        Ok(Tensor { buf: dev.upload(if data.is_empty() { &one[..] } else { data })?, shape: shape.to_vec(), dtype })
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Number of dimensions.
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

    /// Reads the values back as f32 (waits for the work that writes them).
    pub fn to_f32(&self, dev: &Device) -> Result<Vec<f32>> {
        let mut v = dev.read_f32(&self.buf)?;
        v.truncate(self.numel());
        Ok(v)
    }

    /// Reads the values back as raw 32-bit words (waits for the work that writes them).
    pub fn to_u32(&self, dev: &Device) -> Result<Vec<u32>> {
        let mut v = dev.read_u32(&self.buf)?;
        v.truncate(self.numel());
        Ok(v)
    }
}
