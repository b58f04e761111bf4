//! A tensor on the host, as a checkpoint holds it: raw 32-bit words, with its shape and dtype.

use crate::device::Device;
use crate::error::{Error, Result};
use crate::tensor::{numel, DType, Tensor};

/// A tensor on the host: raw 32-bit words (f32 as bits), row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostTensor {
    /// The shape, row-major.
    pub shape: Vec<usize>,
    /// What the words hold.
    pub dtype: DType,
    /// The values as 32-bit words (an f32 as its bits).
    pub data: Vec<u32>,
}

impl HostTensor {
    /// An f32 tensor of `shape` holding `data` (as many values as the shape has elements).
    pub fn from_f32(shape: &[usize], data: &[f32]) -> Result<HostTensor> {
        let t =
            HostTensor { shape: shape.to_vec(), dtype: DType::F32, data: data.iter().map(|x| x.to_bits()).collect() };
        t.check_len("HostTensor::from_f32")?;
        Ok(t)
    }

    /// A u32 tensor of `shape` holding `data` (as many values as the shape has elements).
    pub fn from_u32(shape: &[usize], data: Vec<u32>) -> Result<HostTensor> {
        let t = HostTensor { shape: shape.to_vec(), dtype: DType::U32, data };
        t.check_len("HostTensor::from_u32")?;
        Ok(t)
    }

    /// Reads a device tensor back (waits for the work that writes it).
    pub fn from_device(dev: &Device, t: &Tensor) -> Result<HostTensor> {
        // f16 tensors are per-step working copies and activations; what a checkpoint keeps (parameters,
        // optimizer state) is f32, so an f16 tensor here is a caller's mistake.
        if t.dtype == DType::F16 {
            return Err(Error::DType { op: "HostTensor::from_device", got: "f16", want: "f32 or u32" });
        }
        Ok(HostTensor { shape: t.shape.clone(), dtype: t.dtype, data: t.to_u32(dev)? })
    }

    /// A new device tensor holding this data.
    pub fn to_device(&self, dev: &Device) -> Result<Tensor> {
        self.check_len("HostTensor::to_device")?;
        let mut t = Tensor::from_u32(dev, &self.shape, &self.data)?;
        t.dtype = self.dtype;
        Ok(t)
    }

    /// Number of elements of the shape.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The values of an f32 tensor.
    pub fn f32s(&self) -> Result<Vec<f32>> {
        match self.dtype {
            DType::F32 => Ok(self.data.iter().map(|&b| f32::from_bits(b)).collect()),
            d => Err(Error::DType { op: "HostTensor::f32s", got: d.name(), want: "f32" }),
        }
    }

    /// The values of a u32 tensor.
    pub fn u32s(&self) -> Result<&[u32]> {
        match self.dtype {
            DType::U32 => Ok(&self.data),
            d => Err(Error::DType { op: "HostTensor::u32s", got: d.name(), want: "u32" }),
        }
    }

    fn check_len(&self, op: &'static str) -> Result<()> {
        let n = numel(&self.shape)?;
        if n != self.data.len() {
            return Err(Error::invalid(
                op,
                format!("shape {:?} holds {n} elements, data has {}", self.shape, self.data.len()),
            ));
        }
        Ok(())
    }
}
