//! Errors are values: every failure that user input can cause (a shape, a file, an argument, a device
//! limit) is an `Error` that names the thing and, where there is one, the fix.

use thiserror::Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum Error {
    #[error("unknown backend `{0}`: choose one of auto, vulkan, metal, dx12, gl, cpu")]
    UnknownBackend(String),

    #[error("no {wanted} adapter found{filter}; adapters seen: {seen}")]
    AdapterNotFound { wanted: String, filter: String, seen: String },

    #[error("{what} needs {requested}, over this device's limit {limit_name} = {limit}")]
    LimitExceeded { what: String, requested: u64, limit_name: &'static str, limit: u64 },

    #[error("{op}: shapes do not match: {lhs:?} and {rhs:?}{hint}")]
    ShapeMismatch { op: &'static str, lhs: Vec<usize>, rhs: Vec<usize>, hint: String },

    #[error("{op}: {msg}")]
    InvalidArgument { op: &'static str, msg: String },

    #[error("{op}: dtype {got} where {want} is required")]
    DType { op: &'static str, got: &'static str, want: &'static str },

    #[error("GPU device request failed: {0}")]
    DeviceRequest(String),

    #[error("GPU error: {0}")]
    Gpu(String),

    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// A checkpoint that cannot be read, written or used: `path` is the file, `msg` what is wrong.
    #[error("checkpoint {path}: {msg}")]
    Checkpoint { path: String, msg: String },

    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        Error::InvalidArgument { op, msg: msg.into() }
    }
}
