//! The runner: each case is validated (against the CPU twin on a GPU, a host reference on the CPU
//! backend), then its captured dispatches are replayed and timed.

use std::time::{Duration, Instant};

use crate::device::Device;
use crate::error::{Error, Result};

use super::case::uploads;
use super::report::adapter_json;
use super::validate::{against_host, against_twin};
use super::{cases, utc_now_iso, Case, CaseResult, Options, Report, Sizes};

/// Runs the cases of `opts.sizes` on `dev`.
pub fn run(dev: &Device, opts: &Options) -> Result<Report> {
    run_cases(dev, cases(dev, opts.sizes), opts)
}

/// Validates and times `cases` on `dev`, stopping at the first case that fails. Turns poisoning on
/// for `dev` (see `Device::set_poison`), so an output element a kernel leaves unwritten fails the check.
pub fn run_cases(dev: &Device, cases: Vec<Case>, opts: &Options) -> Result<Report> {
    let date = utc_now_iso();
    dev.set_poison(true);
    let reference = if dev.is_cpu() {
        None
    } else {
        let c = Device::cpu();
        c.set_poison(true);
        Some(c)
    };
    let timer = if dev.has_timestamps() { "gpu-timestamps" } else { "wall-clock" };
    let repeats = match opts.sizes {
        Sizes::Full => Repeats { min: 5, max: 50, budget: Duration::from_millis(1000) },
        Sizes::Quick => Repeats { min: 3, max: 10, budget: Duration::from_millis(250) },
        Sizes::Tiny => Repeats { min: 3, max: 3, budget: Duration::ZERO },
    };
    if opts.print {
        println!(
            "tigel {} ({}) bench kernels on {}: timer {timer}",
            env!("CARGO_PKG_VERSION"),
            env!("TIGEL_GIT_COMMIT"),
            dev.name()
        );
        println!(
            "{:<12} {:<16} {:<36} {:>10} {:>10} {:>9} {:>8} {:>12} {:>9}",
            "family", "name", "shape", "median ms", "min ms", "GFLOP/s", "GB/s", "enc us/disp", "max err"
        );
    }
    let mut results = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let r = run_case(dev, reference.as_ref(), case, i as u64, &repeats)
            .map_err(|e| Error::Other(format!("bench case {}: {e}", case.id())))?;
        if opts.print {
            let gflops = r.gflops().map(|g| format!("{g:.2}")).unwrap_or_else(|| "-".into());
            let enc = r.encode_us_per_dispatch.map(|u| format!("{u:.1}")).unwrap_or_else(|| "-".into());
            println!(
                "{:<12} {:<16} {:<36} {:>10.3} {:>10.3} {:>9} {:>8.2} {:>12} {:>9.1e}",
                r.family,
                r.name,
                r.shape,
                r.median_s * 1e3,
                r.min_s * 1e3,
                gflops,
                r.gbps(),
                enc,
                r.max_abs_err
            );
        }
        results.push(r);
    }
    Ok(Report {
        backend: dev.backend_name(),
        adapter: adapter_json(dev),
        cpu_threads: rayon::current_num_threads(),
        timer,
        quick: opts.sizes != Sizes::Full,
        date,
        results,
    })
}

/// Replays per case: at least `min`, then more while under `budget`, at most `max`.
struct Repeats {
    min: usize,
    max: usize,
    budget: Duration,
}

fn run_case(dev: &Device, reference: Option<&Device>, case: &Case, seed: u64, reps: &Repeats) -> Result<CaseResult> {
    let data = case.input_data(seed);
    let inputs = uploads(dev, &case.inputs, &data)?;
    let got = case.target()(dev, &inputs)?.to_f32(dev)?;
    let (validation, max_abs_err) = match reference {
        Some(cpu) => {
            let cin = uploads(cpu, &case.inputs, &data)?;
            let want = (case.op)(cpu, &cin)?.to_f32(cpu)?;
            ("cpu-twin", against_twin(case.check, cpu, &cin, &data, &got, &want)?)
        }
        None => against_host(case.check, &data, &got)?,
    };
    drop(data);

    let (out, rec) = dev.capture(|| case.target()(dev, &inputs))?;
    let dispatches = rec.len().max(1);
    for _ in 0..2 {
        dev.replay(&rec)?;
    }
    dev.wait()?;
    let mut times = Vec::new();
    let mut encode = Vec::new();
    let start = Instant::now();
    while times.len() < reps.min || (times.len() < reps.max && start.elapsed() < reps.budget) {
        if dev.has_timestamps() {
            times.push(dev.replay_timed(&rec)?.expect("device has timestamps"));
            let t0 = Instant::now();
            dev.replay(&rec)?;
            encode.push(t0.elapsed().as_secs_f64());
            dev.wait()?;
        } else {
            let t0 = Instant::now();
            dev.replay(&rec)?;
            let t1 = Instant::now();
            dev.wait()?;
            times.push(t0.elapsed().as_secs_f64());
            encode.push((t1 - t0).as_secs_f64());
        }
    }
    drop(out);
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 { sorted[n / 2] } else { 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]) };
    let encode_us = (!dev.is_cpu()).then(|| encode.iter().sum::<f64>() / encode.len() as f64 / dispatches as f64 * 1e6);
    Ok(CaseResult {
        family: case.family,
        name: case.name.clone(),
        kernel: case.kernel,
        shape: case.shape.clone(),
        flop: case.flop,
        bytes: case.bytes,
        dispatches: rec.len(),
        repeats: n,
        // A timer that rounds a tiny case to 0 would make rates infinite; one nanosecond is its floor.
        median_s: median.max(1e-9),
        min_s: sorted[0].max(1e-9),
        max_s: sorted[n - 1].max(1e-9),
        encode_us_per_dispatch: encode_us,
        validation,
        max_abs_err,
    })
}
