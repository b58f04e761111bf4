//! Datasets.

pub mod images;
pub mod mixture;
pub mod text;
pub mod toy;
