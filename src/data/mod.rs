//! Datasets.

pub mod toy;
