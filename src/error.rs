//! Errors are values: every failure that user input can cause (a shape, a file, an argument, a device
//! limit) is an `Error` that names the thing and, where there is one, the fix.

use thiserror::Error;

/// tigel's result: `Err` is an [`Error`](enum@Error).
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in tigel, each naming the thing at fault.
#[derive(Debug, Error)]
pub enum Error {
    /// A backend name that is not one of those listed.
    #[error("unknown backend `{0}`: choose one of auto, vulkan, metal, dx12, gl, webgpu, cpu")]
    UnknownBackend(String),

    /// No adapter of the requested backend (and name filter) was found.
    #[error("no {wanted} adapter found{filter}; adapters seen: {seen}")]
    AdapterNotFound {
        /// The backend asked for.
        wanted: String,
        /// The name filter, as the message shows it ("" when none).
        filter: String,
        /// The adapters that were found.
        seen: String,
    },

    /// A request over one of the device's limits.
    #[error("{what} needs {requested}, over this device's limit {limit_name} = {limit}")]
    LimitExceeded {
        /// What made the request.
        what: String,
        /// The amount requested.
        requested: u64,
        /// The wgpu limit's name.
        limit_name: &'static str,
        /// The limit's value on this device.
        limit: u64,
    },

    /// Two shapes an op needs to agree do not.
    #[error("{op}: shapes do not match: {lhs:?} and {rhs:?}{hint}")]
    ShapeMismatch {
        /// The op.
        op: &'static str,
        /// The first shape.
        lhs: Vec<usize>,
        /// The second shape.
        rhs: Vec<usize>,
        /// What the shapes must satisfy, as the message's tail ("" when the names say it).
        hint: String,
    },

    /// An argument an op or a loader cannot use.
    #[error("{op}: {msg}")]
    InvalidArgument {
        /// The op or loader.
        op: &'static str,
        /// What is wrong, and the fix where there is one.
        msg: String,
    },

    /// A tensor of the wrong dtype.
    #[error("{op}: dtype {got} where {want} is required")]
    DType {
        /// The op.
        op: &'static str,
        /// The dtype given.
        got: &'static str,
        /// The dtype the op needs.
        want: &'static str,
    },

    /// The adapter refused to open a device.
    #[error("GPU device request failed: {0}")]
    DeviceRequest(String),

    /// An error the GPU or its driver reported.
    #[error("GPU error: {0}")]
    Gpu(String),

    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file (and, where it helps, what was being done to it).
        path: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A checkpoint that cannot be read, written or used: `path` is the file, `msg` what is wrong.
    #[error("checkpoint {path}: {msg}")]
    Checkpoint {
        /// The checkpoint file.
        path: String,
        /// What is wrong with it.
        msg: String,
    },

    /// Anything else, as a whole message.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// An `InvalidArgument` error of `op`.
    pub fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        Error::InvalidArgument { op, msg: msg.into() }
    }
}
