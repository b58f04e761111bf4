//! The run's results as JSON (the schema `tigel bench compare` and the PyTorch reference share), the
//! header that names the build, date and device, and the output file.

use std::path::Path;

use serde_json::{json, Value};

use crate::device::Device;
use crate::error::{Error, Result};
use crate::host::fs::{io_err, write_atomic};

/// One case's measurements.
#[derive(Clone, Debug)]
pub struct CaseResult {
    /// The case's kernel family.
    pub family: &'static str,
    /// The case's name within the family.
    pub name: String,
    /// The entry point, where the op chooses among several.
    pub kernel: Option<&'static str>,
    /// The case's sizes.
    pub shape: String,
    /// Arithmetic operations of one run of the case.
    pub flop: u64,
    /// Minimum memory traffic of one run of the case, in bytes.
    pub bytes: u64,
    /// Dispatches one replay issues.
    pub dispatches: usize,
    /// Timed replays.
    pub repeats: usize,
    /// Median time of one replay, in seconds.
    pub median_s: f64,
    /// Fastest replay, in seconds.
    pub min_s: f64,
    /// Slowest replay, in seconds.
    pub max_s: f64,
    /// Wall time of `Device::replay` alone (encoding and submission) per dispatch; None on the CPU
    /// backend, whose replay runs the work.
    pub encode_us_per_dispatch: Option<f64>,
    /// What the result was checked against: "cpu-twin", "host-f64-rows" or "host-reference".
    pub validation: &'static str,
    /// Largest |benchmarked - reference| over the compared elements.
    pub max_abs_err: f64,
}

impl CaseResult {
    /// GFLOP/s at the median time; None for cases that do no arithmetic.
    pub fn gflops(&self) -> Option<f64> {
        (self.flop > 0).then(|| self.flop as f64 / self.median_s / 1e9)
    }
    /// GB/s at the median time.
    pub fn gbps(&self) -> f64 {
        self.bytes as f64 / self.median_s / 1e9
    }
    /// One entry of the report's `results`.
    pub fn to_json(&self) -> Value {
        json!({
            "family": self.family,
            "name": self.name,
            "kernel": self.kernel,
            "shape": self.shape,
            "flop": self.flop,
            "bytes": self.bytes,
            "dispatches": self.dispatches,
            "repeats": self.repeats,
            "median_s": self.median_s,
            "min_s": self.min_s,
            "max_s": self.max_s,
            "gflops": self.gflops(),
            "gbps": self.gbps(),
            "encode_us_per_dispatch": self.encode_us_per_dispatch,
            "validated": true,
            "validation": self.validation,
            "max_abs_err": self.max_abs_err,
        })
    }
}

/// A whole run.
#[derive(Clone, Debug)]
pub struct Report {
    /// The device's backend ("vulkan", "cpu", ...).
    pub backend: &'static str,
    /// The adapter's name, backend, type and driver; None on the CPU backend.
    pub adapter: Option<Value>,
    /// Threads of the CPU backend's pool.
    pub cpu_threads: usize,
    /// "gpu-timestamps" or "wall-clock".
    pub timer: &'static str,
    /// True for a run of fewer sizes than `Sizes::Full`.
    pub quick: bool,
    /// When the run started (UTC, ISO 8601).
    pub date: String,
    /// One entry per case, in run order.
    pub results: Vec<CaseResult>,
}

impl Report {
    /// The whole report as the JSON `tigel bench --json` writes.
    pub fn to_json(&self) -> Value {
        json!({
            "tigel_version": env!("CARGO_PKG_VERSION"),
            "git_commit": env!("TIGEL_GIT_COMMIT"),
            "date": self.date,
            "backend": self.backend,
            "adapter": self.adapter,
            "cpu_threads": self.cpu_threads,
            "timer": self.timer,
            "quick": self.quick,
            "results": self.results.iter().map(CaseResult::to_json).collect::<Vec<_>>(),
        })
    }

    /// Writes the JSON to `path`, creating its parent directories.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        write_json(path, &self.to_json())
    }
}

/// The report's header (version, commit, date, device) with no kernel results, for runs that only
/// benchmark training.
pub fn header_json(dev: &Device, quick: bool) -> Value {
    json!({
        "tigel_version": env!("CARGO_PKG_VERSION"),
        "git_commit": env!("TIGEL_GIT_COMMIT"),
        "date": utc_now_iso(),
        "backend": dev.backend_name(),
        "adapter": adapter_json(dev),
        "cpu_threads": rayon::current_num_threads(),
        "timer": "wall-clock",
        "quick": quick,
        "results": [],
    })
}

/// Writes `report` (a report, or a header with training entries) to `path` as pretty JSON, creating its
/// parent directories; atomic, so a failed write leaves no half-written report.
pub fn write_json(path: &Path, report: &Value) -> Result<()> {
    prepare_output(path)?;
    let text = serde_json::to_string_pretty(report).expect("JSON values serialise");
    write_atomic(path, (text + "\n").as_bytes())
}

/// Creates `path`'s parent directories and checks the file can be opened for writing (without
/// truncating it), so a bad path fails before a long run rather than after.
pub fn prepare_output(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: format!("{}: cannot create its directory {}", path.display(), dir.display()),
            source,
        })?;
    }
    std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(path).map_err(|e| io_err(path, e))?;
    Ok(())
}

/// The current UTC time as ISO 8601 (`2025-01-31T12:34:56Z`).
pub fn utc_now_iso() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = ((secs / 86400) as i64, secs % 86400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian, eras of 400 years).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + (month <= 2) as i64;
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The adapter's name, backend, type and driver; None on the CPU backend.
pub(super) fn adapter_json(dev: &Device) -> Option<Value> {
    let info = dev.adapter_info()?;
    Some(json!({
        "name": info.name,
        "backend": crate::device::adapter::backend_str(info.backend),
        "device_type": crate::device::adapter::device_type_str(info.device_type),
        "driver": info.driver,
        "driver_info": info.driver_info,
    }))
}
