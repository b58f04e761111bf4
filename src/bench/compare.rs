//! `tigel bench compare A.json B.json`: two benchmark reports side by side (tigel on two machines, or
//! tigel and the PyTorch reference, benches/reference/torch_bench.py, which writes the same schema).
//!
//! Kernel cases match by (family, name, shape); training entries by model name. Each line gives A's and
//! B's figure (GFLOP/s where both have one, else GB/s; training: samples, tokens or images per second)
//! and the ratio B/A (above 1: B is faster).

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::host::fs::io_err;

fn load(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| io_err(path, e))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| Error::Other(format!("{}: not a valid JSON document: {e}", path.display())))?;
    if !v.is_object() || !v.get("results").is_some_and(Value::is_array) {
        return Err(Error::Other(format!(
            "{}: not a benchmark report (a JSON object with a \"results\" array, as `tigel bench --json` writes)",
            path.display()
        )));
    }
    Ok(v)
}

fn key(r: &Value) -> Option<String> {
    Some(format!("{}/{} {}", r.get("family")?.as_str()?, r.get("name")?.as_str()?, r.get("shape")?.as_str()?))
}

/// "label: tigel 0.1.0 (commit) on backend, adapter" of a report.
fn describe(v: &Value) -> String {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
    let adapter = v
        .get("adapter")
        .and_then(|a| a.get("name"))
        .and_then(Value::as_str)
        .map(|n| format!(", {n}"))
        .unwrap_or_default();
    let who = v.get("implementation").and_then(Value::as_str).unwrap_or("tigel");
    let version = v.get("tigel_version").and_then(Value::as_str).map(|s| s.to_string());
    let version = version.or_else(|| v.get("torch_version").and_then(Value::as_str).map(|s| s.to_string()));
    format!(
        "{who} {} ({}) on {}{adapter}, {}",
        version.unwrap_or_else(|| "?".into()),
        s("git_commit"),
        s("backend"),
        s("date")
    )
}

/// The comparison as text, or an error naming the file that is missing or malformed, or saying that
/// the two reports have no case in common.
pub fn compare(a_path: &Path, b_path: &Path) -> Result<String> {
    let (a, b) = (load(a_path)?, load(b_path)?);
    let mut out = String::new();
    out += &format!("A: {}: {}\nB: {}: {}\n", a_path.display(), describe(&a), b_path.display(), describe(&b));
    // `load` refused any report without a "results" array.
    let (ra, rb) = (a["results"].as_array().unwrap(), b["results"].as_array().unwrap());
    let mut common = 0;
    let mut kernel_lines = Vec::new();
    for x in ra {
        let Some(k) = key(x) else { continue };
        let Some(y) = rb.iter().find(|y| key(y).as_deref() == Some(&k)) else { continue };
        let f = |r: &Value, f: &str| r.get(f).and_then(Value::as_f64);
        let (unit, fa, fb) = match (f(x, "gflops"), f(y, "gflops")) {
            (Some(p), Some(q)) => ("GFLOP/s", p, q),
            _ => match (f(x, "gbps"), f(y, "gbps")) {
                (Some(p), Some(q)) => ("GB/s", p, q),
                _ => continue,
            },
        };
        common += 1;
        kernel_lines.push(format!("{k:<58} {fa:>12.2} {fb:>12.2} {unit:<8} {:>8.3}", fb / fa.max(1e-30)));
    }
    if !kernel_lines.is_empty() {
        out += &format!("{:<58} {:>12} {:>12} {:<8} {:>8}\n", "kernel case", "A", "B", "unit", "B/A");
        for l in kernel_lines {
            out += &l;
            out.push('\n');
        }
    }
    let empty = Vec::new();
    let ta = a.get("train").and_then(Value::as_array).unwrap_or(&empty);
    let tb = b.get("train").and_then(Value::as_array).unwrap_or(&empty);
    let mut train_lines = Vec::new();
    for x in ta {
        let Some(m) = x.get("model").and_then(Value::as_str) else { continue };
        let Some(y) = tb.iter().find(|y| y.get("model").and_then(Value::as_str) == Some(m)) else { continue };
        let (Some(fa), Some(fb)) = (x["samples_per_s"].as_f64(), y["samples_per_s"].as_f64()) else { continue };
        let unit = x.get("unit").and_then(Value::as_str).unwrap_or("samples");
        let same_config = x.get("per_step") == y.get("per_step");
        common += 1;
        train_lines.push(format!(
            "{m:<58} {fa:>12.1} {fb:>12.1} {:<8} {:>8.3}{}",
            format!("{unit}/s"),
            fb / fa.max(1e-30),
            if same_config { "" } else { "  (different work per step)" }
        ));
    }
    if !train_lines.is_empty() {
        out += &format!("{:<58} {:>12} {:>12} {:<8} {:>8}\n", "training step", "A", "B", "unit", "B/A");
        for l in train_lines {
            out += &l;
            out.push('\n');
        }
    }
    if common == 0 {
        return Err(Error::Other(format!(
            "{} and {} have no case in common (kernel cases match by family, name and shape; training entries \
             by model)",
            a_path.display(),
            b_path.display()
        )));
    }
    Ok(out)
}
