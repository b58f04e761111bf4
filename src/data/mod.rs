//! Datasets.

pub mod images;
pub mod mixture;
pub mod rows;
pub mod source;
pub mod text;
pub mod toy;
