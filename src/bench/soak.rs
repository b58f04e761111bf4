//! The soak benchmark behind `tigel bench soak`: the GPT trained for many steps through the run loop
//! every `tigel train` uses (loss reads, evaluations, metrics lines and checkpoint saves included), with
//! the process's resident memory (VmRSS of /proc/self/status) and the device's allocated bytes (buffers
//! created by its pool, `Device::stats`) sampled along the way. After warm-up neither may grow: growth
//! means something is kept per step (a leak). Not a timed test: it runs for minutes on purpose.

use std::path::Path;
use std::time::Instant;

use serde_json::{json, Value};

use crate::data::text::Corpus;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::models::gpt::{Gpt, GptConfig, GptTrainer, TrainSettings};
use crate::run::gpt::GptRun;
use crate::run::{self, Cadence, Observer, RunDir, READ_EVERY};

/// What the soak trains and how often it samples.
#[derive(Clone, Copy, Debug)]
pub struct SoakSettings {
    /// Training steps.
    pub steps: u32,
    /// Steps between memory samples (rounded up to a multiple of the loop's `READ_EVERY`).
    pub sample_every: u32,
    /// Steps after which memory must stay flat. The first evaluation touches the evaluator's buffers
    /// (allocated before step 0, resident only once written) and the first two saves size the
    /// allocator's heap (glibc raises its mmap threshold after the first large free, so later 1 MiB
    /// write buffers come from the heap), so `run` takes at least `2 · eval_every + 1`.
    pub warmup: u32,
    /// Steps between evaluations and checkpoint saves.
    pub eval_every: u32,
    /// The model.
    pub model: GptConfig,
    /// Sequences per step.
    pub batch: usize,
}

impl SoakSettings {
    /// `tigel train gpt`'s default model and batch (4 layers, width 128, context 128, batch 16) for
    /// `steps` steps, sampling every 250, evaluating every 500, warm-up 1,000 (or a fifth of a shorter run,
    /// but past the second evaluation).
    pub fn default_gpt(steps: u32) -> SoakSettings {
        SoakSettings {
            steps,
            sample_every: 250,
            warmup: 1000.min(steps / 5),
            eval_every: 500,
            model: GptConfig { layers: 4, heads: 4, width: 128, context: 128, dropout: 0.0, ..GptConfig::default() },
            batch: 16,
        }
    }

    /// A tiny GPT (1 layer, width 32, context 32, batch 4) for slow devices such as lavapipe, sampling
    /// every 20 steps, evaluating every 50, warm-up a fifth of the run (but past the second evaluation).
    pub fn tiny_gpt(steps: u32) -> SoakSettings {
        SoakSettings {
            steps,
            sample_every: 20,
            warmup: steps / 5,
            eval_every: 50,
            model: GptConfig { layers: 1, heads: 2, width: 32, context: 32, dropout: 0.0, ..GptConfig::default() },
            batch: 4,
        }
    }
}

/// One memory sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MemSample {
    /// Steps done when it was taken.
    pub step: u32,
    /// Resident memory of the process, bytes (0 where /proc/self/status is not there).
    pub rss_bytes: u64,
    /// Live heap bytes (allocated, not freed; 0 where the binary does not count them, see
    /// [`super::heap`]).
    pub heap_bytes: u64,
    /// Bytes of the buffers the device's pool has created so far.
    pub device_bytes: u64,
    /// Buffers the device's pool has created so far.
    pub buffers: u64,
    /// Seconds since training started.
    pub elapsed_s: f64,
}

/// A finished soak: its settings, device and samples.
#[derive(Clone, Debug)]
pub struct SoakReport {
    /// What ran.
    pub settings: SoakSettings,
    /// The device's backend and name.
    pub device: String,
    /// Before training (step 0), then every `sample_every` steps and at the end.
    pub samples: Vec<MemSample>,
}

impl SoakReport {
    /// The first sample at or after the warm-up and the last one.
    fn after_warmup(&self) -> (MemSample, MemSample) {
        let last = *self.samples.last().expect("a soak has samples");
        let first = self.samples.iter().find(|s| s.step >= self.settings.warmup).copied().unwrap_or(last);
        (first, last)
    }

    /// Growth of the resident memory after warm-up, bytes (negative: it shrank).
    pub fn rss_growth(&self) -> i64 {
        let (a, b) = self.after_warmup();
        b.rss_bytes as i64 - a.rss_bytes as i64
    }

    /// Growth of the live heap after warm-up, bytes (0 where it is not counted): its peak over the later
    /// half of the samples after warm-up less its peak over the earlier half. Something kept per step
    /// raises the peak; work in flight only moves the live bytes between a few values (a GPU backend's
    /// per-submission records, even after a wait: wgpu keeps pools of them), which the peak absorbs.
    pub fn heap_growth(&self) -> i64 {
        let (a, _) = self.after_warmup();
        let after: Vec<u64> = self.samples.iter().filter(|m| m.step >= a.step).map(|m| m.heap_bytes).collect();
        let (early, late) = after.split_at(after.len() / 2);
        let peak = |v: &[u64]| v.iter().copied().max().unwrap_or(0) as i64;
        if early.is_empty() {
            return 0;
        }
        peak(late) - peak(early)
    }

    /// Growth of the device's allocated bytes after warm-up.
    pub fn device_growth(&self) -> i64 {
        let (a, b) = self.after_warmup();
        b.device_bytes as i64 - a.device_bytes as i64
    }

    /// The report as JSON: settings, device, growth after warm-up and every sample.
    pub fn to_json(&self) -> Value {
        let s = &self.settings;
        let (a, b) = self.after_warmup();
        json!({
            "bench": "soak", "device": self.device, "model": s.model.to_json(), "batch": s.batch,
            "steps": s.steps, "warmup": s.warmup, "sample_every": s.sample_every, "eval_every": s.eval_every,
            "after_warmup": {"from_step": a.step, "to_step": b.step, "rss_growth_bytes": self.rss_growth(),
                             "device_growth_bytes": self.device_growth(), "heap_growth_bytes": self.heap_growth(),
                             "buffers_created": b.buffers - a.buffers},
            "steps_per_s": (b.step - a.step) as f64 / (b.elapsed_s - a.elapsed_s).max(1e-9),
            "samples": self.samples.iter().map(|m| json!({"step": m.step, "rss_bytes": m.rss_bytes, "heap_bytes": m.heap_bytes,
                "device_bytes": m.device_bytes, "buffers": m.buffers, "elapsed_s": m.elapsed_s})).collect::<Vec<_>>(),
        })
    }

    /// Whether nothing grew after warm-up: the device's allocations and the live heap (where the binary
    /// counts it; else the resident memory). Resident memory alone can gain a few pages long after
    /// warm-up while the live heap stays flat to the byte: transient allocations landing on heap pages
    /// not touched before (fragmentation inside the heap the allocator already holds), which is bounded
    /// by that heap and is not something kept per step.
    pub fn flat(&self) -> bool {
        let heap_counted = self.samples.iter().all(|m| m.heap_bytes > 0);
        let host_flat = if heap_counted { self.heap_growth() <= 0 } else { self.rss_growth() <= 0 };
        host_flat && self.device_growth() == 0
    }

    /// The closing lines: growth after warm-up, and the verdict.
    pub fn summary_lines(&self) -> Vec<String> {
        let (a, b) = self.after_warmup();
        let flat = self.flat();
        vec![
            format!(
                "after warm-up (steps {} to {}): RSS {:+.2} MiB, live heap {:+} bytes, device allocations {:+} bytes \
                 ({} new buffers)",
                a.step,
                b.step,
                self.rss_growth() as f64 / MIB,
                self.heap_growth(),
                self.device_growth(),
                b.buffers - a.buffers
            ),
            if flat { "no growth after warm-up".into() } else { "MEMORY GREW after warm-up".into() },
        ]
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// Formats one sample as a table row.
pub fn sample_line(m: &MemSample) -> String {
    format!(
        "{:>8} {:>10.1} {:>12.2} {:>14} {:>14.2} {:>8}",
        m.step,
        m.elapsed_s,
        m.rss_bytes as f64 / MIB,
        m.heap_bytes,
        m.device_bytes as f64 / MIB,
        m.buffers
    )
}

/// The table's header, for [`sample_line`].
pub const SAMPLE_HEADER: &str = "    step  elapsed_s      rss_MiB     heap_bytes     device_MiB  buffers";

/// Resident memory of this process in bytes, from /proc/self/status (0 where there is none).
pub fn rss_bytes() -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/status") else { return 0 };
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Samples memory at the loop's progress points.
struct Sampler<'a> {
    dev: &'a Device,
    every: u32,
    start: Instant,
    samples: Vec<MemSample>,
    show: &'a mut dyn FnMut(&str),
}

impl Sampler<'_> {
    fn sample(&mut self, step: u32) {
        // Retire the work in flight first, so every sample sees the same state (a GPU backend's queue
        // holds per-submission records until the work is done); an error here recurs at the loop's next
        // device call, which reports it.
        let _ = self.dev.wait();
        let st = self.dev.stats();
        let m = MemSample {
            step,
            rss_bytes: rss_bytes(),
            heap_bytes: super::heap::live_bytes().unwrap_or(0),
            device_bytes: st.bytes_allocated,
            buffers: st.buffers_created,
            elapsed_s: self.start.elapsed().as_secs_f64(),
        };
        (self.show)(&sample_line(&m));
        self.samples.push(m);
    }
}

impl Observer for Sampler<'_> {
    fn progress(&mut self, done: u32, _message: &str) {
        if done.is_multiple_of(self.every) {
            self.sample(done);
        }
    }
}

/// Trains the GPT on the embedded corpus for `s.steps` steps into the run directory `out` (which must not
/// hold a checkpoint), sampling memory; `show` gets the table's lines as they come.
pub fn run(dev: &Device, s: &SoakSettings, out: &Path, show: &mut dyn FnMut(&str)) -> Result<SoakReport> {
    if s.steps == 0 || s.sample_every == 0 || s.eval_every == 0 {
        return Err(Error::invalid(
            "bench soak",
            "steps, the sampling interval and the evaluation interval must be positive",
        ));
    }
    let every = s.sample_every.div_ceil(READ_EVERY) * READ_EVERY;
    let s = &SoakSettings { warmup: s.warmup.max(s.eval_every.saturating_mul(2).saturating_add(1)).min(s.steps), ..*s };
    let corpus = Corpus::embedded();
    let settings = TrainSettings {
        batch: s.batch,
        lr: 1e-3,
        min_lr_frac: 0.1,
        warmup: 100.min(s.steps),
        steps: s.steps,
        weight_decay: 0.1,
        clip: 1.0,
        seed: 1,
        precision: Default::default(),
    };
    let model = Gpt::new(dev, s.model, settings.seed)?;
    let trainer = GptTrainer::new(dev, model, &corpus, settings, 0)?;
    let mut regime = GptRun::new(dev, trainer, &corpus, 16, out)?;
    let dir = RunDir::choose("bench soak", "gpt", Some(out), None)?;
    show(&format!("soak: {} on {}, {} steps; memory every {every} steps", describe(s), dev.name(), s.steps));
    show(SAMPLE_HEADER);
    // Room for every sample up front, so the soak's own record does not grow the process as it runs.
    let room = (s.steps / every + 2).min(100_000) as usize;
    let mut sampler = Sampler { dev, every, start: Instant::now(), samples: Vec::with_capacity(room), show };
    sampler.sample(0);
    let cadence = Cadence { steps: s.steps, eval_every: s.eval_every, start_step: 0, log_every: 100 };
    run::train(dev, &mut regime, &dir, cadence, None, &mut sampler)?;
    if sampler.samples.last().is_some_and(|m| m.step != s.steps) {
        sampler.sample(s.steps);
    }
    let device = format!("{} ({})", dev.name(), dev.backend_name());
    Ok(SoakReport { settings: *s, device, samples: sampler.samples })
}

fn describe(s: &SoakSettings) -> String {
    let m = &s.model;
    format!("gpt {} layers, {} heads, width {}, context {}, batch {}", m.layers, m.heads, m.width, m.context, s.batch)
}
