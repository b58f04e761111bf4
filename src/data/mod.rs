//! Datasets.

pub mod toy;
pub mod text;
