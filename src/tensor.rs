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
    /// 16-bit floats (IEEE binary16), two to a word: element 2i in the low half of word i, as WGSL's
    /// `pack2x16float` / `unpack2x16float` (core builtins, no SHADER_F16 needed) write and read them.
    /// Storage only: kernels widen to f32 to compute (see docs/precision.md).
    F16,
}

impl DType {
    /// "f32", "u32" or "f16", as errors and checkpoints name it.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::U32 => "u32",
            DType::F16 => "f16",
        }
    }

    /// 32-bit words that hold `n` elements: n, or ceil(n / 2) for f16.
    pub fn words(self, n: usize) -> usize {
        match self {
            DType::F32 | DType::U32 => n,
            DType::F16 => crate::host::f16::words(n),
        }
    }

    /// Bytes that hold `n` elements (whole words).
    pub fn bytes(self, n: usize) -> u64 {
        self.words(n) as u64 * 4
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
        Ok(Tensor { buf: dev.alloc(dtype.words(n))?, shape: shape.to_vec(), dtype })
    }

    /// An f16 tensor of `shape` holding `data` rounded to f16 (to nearest, ties to even).
    pub fn from_f32_as_f16(dev: &Device, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        let n = numel(shape)?;
        if n != data.len() {
            return Err(Error::invalid(
                "tensor",
                format!("shape {shape:?} holds {n} elements, data has {}", data.len()),
            ));
        }
        let words = crate::host::f16::pack(data);
        let one = [0u32];
        let buf = dev.upload(if words.is_empty() { &one[..] } else { &words })?;
        Ok(Tensor { buf, shape: shape.to_vec(), dtype: DType::F16 })
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

    /// Bytes of device memory the values occupy (whole words; an f16 tensor half of an f32 one).
    pub fn bytes(&self) -> u64 {
        self.dtype.bytes(self.numel())
    }

    /// Reads the values back as f32 (waits for the work that writes them); f16 values are widened.
    pub fn to_f32(&self, dev: &Device) -> Result<Vec<f32>> {
        if self.dtype == DType::F16 {
            return Ok(crate::host::f16::unpack(&dev.read_u32(&self.buf)?, self.numel()));
        }
        let mut v = dev.read_f32(&self.buf)?;
        v.truncate(self.numel());
        Ok(v)
    }

    /// Reads the values back as raw 32-bit words (waits for the work that writes them): one per
    /// element, or ceil(n / 2) packed pairs for f16.
    pub fn to_u32(&self, dev: &Device) -> Result<Vec<u32>> {
        let mut v = dev.read_u32(&self.buf)?;
        v.truncate(self.dtype.words(self.numel()));
        Ok(v)
    }
}
