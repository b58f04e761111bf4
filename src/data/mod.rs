//! Datasets.

mod idx;
pub mod images;
pub mod mixture;
mod npy;
mod png;
pub mod rows;
pub mod source;
pub mod text;
pub mod toy;
