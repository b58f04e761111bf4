//! Datasets.

pub mod images;
pub mod mixture;
pub mod toy;
pub mod text;
