//! Training through the graph executor: a small MLP on the CPU backend and on lavapipe, resume from a
//! checkpoint, and the execution model (one submission per step, no wait inside a step).
mod common;
use common::*;
use tigel::checkpoint::Checkpoint;
use tigel::data::toy::spirals;
use tigel::graph::Graph;
use tigel::models::mlp::{Mlp, MlpConfig};
use tigel::nn::Activation;
use tigel::optim::{OptimizerKind, Schedule};
use tigel::train::{TrainConfig, Trainer};
use tigel::{Device, Result, Tensor};

const N: usize = 64;

fn trainer(dev: &Device, optimizer: OptimizerKind) -> Trainer {
    trainer_with(dev, optimizer, 0.0)
}

/// The spirals MLP; with `p_drop > 0`, dropout after the first hidden layer (a fresh mask each step).
fn trainer_with(dev: &Device, optimizer: OptimizerKind, p_drop: f32) -> Trainer {
    let (xy, labels) = spirals(N, 3);
    let x = Tensor::from_f32(dev, &[N, 2], &xy).unwrap();
    let y = Tensor::from_u32(dev, &[N], &labels).unwrap();
    let mlp = Mlp::new(dev, &MlpConfig { sizes: vec![2, 16, 16, 2], activation: Activation::Gelu }, 7).unwrap();
    let mut g = Graph::new();
    let (xn, yn) = (g.input(&x), g.input(&y));
    let step = tigel::ops::optim::step_counter(dev, 0).unwrap();
    let h = mlp.layers[0].forward(&mut g, xn).unwrap();
    let h = g.unary(tigel::ops::elementwise::Unary::Gelu, h).unwrap();
    let d = tigel::ops::dropout::Dropout::new(p_drop, 99, 0, N * 16).unwrap();
    let h = g.dropout(h, d, &step).unwrap();
    let h = mlp.layers[1].forward(&mut g, h).unwrap();
    let h = g.unary(tigel::ops::elementwise::Unary::Gelu, h).unwrap();
    let logits = mlp.layers[2].forward(&mut g, h).unwrap();
    let loss = g.cross_entropy_mean(logits, yn).unwrap();
    let cfg = TrainConfig {
        optimizer,
        schedule: Schedule::Cosine { lr: 1e-2, warmup: 5, total: 100, min_lr: 1e-3 },
        clip: Some(1.0),
        ema: Some(0.99),
        loss_scale: None,
    };
    Trainer::with_step_counter(dev, g, loss, mlp.params(), cfg, step).unwrap()
}

fn adamw() -> OptimizerKind {
    OptimizerKind::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-2 }
}

fn losses(dev: &Device, t: &Trainer, steps: usize) -> Vec<f32> {
    (0..steps)
        .map(|_| {
            t.step(dev).unwrap();
            bytemuck::cast_vec::<u32, f32>(t.read_loss(dev).unwrap().wait().unwrap())[0]
        })
        .collect()
}

#[test]
fn mlp_trains_the_same_on_cpu_and_gpu() {
    let Some(gpu) = gpu() else { return };
    let cpu = cpu();
    for opt in [adamw(), OptimizerKind::Sgd { momentum: 0.9, nesterov: true, weight_decay: 0.0 }] {
        let lc = losses(&cpu, &trainer(&cpu, opt), 50);
        let lg = losses(&gpu, &trainer(&gpu, opt), 50);
        for (i, (c, g)) in lc.iter().zip(&lg).enumerate() {
            assert!((c - g).abs() <= 1e-4 * c.abs(), "{opt:?} step {i}: cpu loss {c}, gpu loss {g}");
        }
        assert!(lc[49] < lc[0], "{opt:?}: the loss did not fall: {} -> {}", lc[0], lc[49]);
    }
}

#[test]
fn dropout_masks_change_per_step_and_agree_across_backends() {
    let Some(gpu) = gpu() else { return };
    let cpu = cpu();
    let lc = losses(&cpu, &trainer_with(&cpu, adamw(), 0.3), 20);
    let lg = losses(&gpu, &trainer_with(&gpu, adamw(), 0.3), 20);
    for (i, (c, g)) in lc.iter().zip(&lg).enumerate() {
        assert!((c - g).abs() <= 1e-4 * c.abs(), "step {i}: cpu loss {c}, gpu loss {g}");
    }
    // Without dropout the same run gives other losses: the masks are in effect.
    let plain = losses(&cpu, &trainer(&cpu, adamw()), 20);
    assert_ne!(plain[0], lc[0]);
}

#[test]
fn one_submission_per_step_and_no_wait() {
    let Some(gpu) = gpu() else { return };
    let t = trainer(&gpu, adamw());
    gpu.flush().unwrap();
    let s0 = gpu.stats();
    for _ in 0..10 {
        t.step(&gpu).unwrap();
    }
    let s1 = gpu.stats();
    assert_eq!(s1.submissions - s0.submissions, 10);
    assert_eq!(s1.blocking_waits, s0.blocking_waits);
    assert_eq!(s1.buffers_created, s0.buffers_created, "a step allocates nothing");
    let p = t.plan();
    assert!(p.planned_peak_bytes() > 0);
    assert!(p.allocated_bytes() as f64 <= 1.5 * p.planned_peak_bytes() as f64 + 64.0 * 1024.0);
}

#[test]
fn resume_is_bit_identical() {
    let mut devs = vec![cpu()];
    devs.extend(gpu());
    for dev in devs {
        let dir = std::env::temp_dir().join(format!("tigel-resume-{}-{}", std::process::id(), dev.backend_name()));
        let path = dir.join("checkpoint.safetensors");
        let straight = losses(&dev, &trainer(&dev, adamw()), 20);

        let first = trainer(&dev, adamw());
        let mut resumed = losses(&dev, &first, 10);
        first.save(&dev, &path, "mlp", serde_json::json!({"sizes": [2, 16, 16, 2]}), serde_json::json!(null)).unwrap();
        drop(first);
        let second = trainer(&dev, adamw()); // fresh weights, overwritten by the checkpoint
        let ck = Checkpoint::load(&path).unwrap();
        assert_eq!(ck.step, 10);
        second.restore(&dev, &ck).unwrap();
        resumed.extend(losses(&dev, &second, 10));
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&straight), bits(&resumed), "{}: resumed losses differ", dev.name());
        std::fs::remove_dir_all(&dir).ok();
    }
}

#[test]
fn restoring_another_models_checkpoint_names_the_tensor() {
    let dev = Device::cpu();
    let dir = std::env::temp_dir().join(format!("tigel-wrong-{}", std::process::id()));
    let path = dir.join("checkpoint.safetensors");
    let a = trainer(&dev, adamw());
    a.save(&dev, &path, "mlp", serde_json::json!({}), serde_json::json!(null)).unwrap();
    let before = std::fs::read(&path).unwrap();
    // Same kind, other optimizer: the state tensors differ.
    let b = trainer(&dev, OptimizerKind::Sgd { momentum: 0.9, nesterov: false, weight_decay: 0.0 });
    let e = b.restore(&dev, &Checkpoint::load(&path).unwrap()).unwrap_err().to_string();
    assert!(e.contains("optim."), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "a failed restore must not touch the file");
    std::fs::remove_dir_all(&dir).ok();
}

/// The spirals MLP as a `tigel::run` regime: the loop's calls are recorded.
struct Spirals {
    t: Trainer,
    losses: Vec<f64>,
    evals: Vec<(u32, u32, bool)>,
}

impl tigel::run::Regime for Spirals {
    fn step(&mut self, dev: &Device) -> Result<()> {
        self.t.step(dev)
    }
    fn read_losses(&self, dev: &Device) -> Result<Vec<tigel::device::Download>> {
        Ok(vec![self.t.read_loss(dev)?])
    }
    fn guarded(&self) -> Vec<tigel::run::Guarded<'_>> {
        vec![tigel::run::Guarded { name: "", trainer: &self.t, per_step: 1 }]
    }
    fn take_losses(&mut self, losses: &[f64]) {
        self.losses.extend(losses);
    }
    fn progress(&self, at: tigel::run::At, _clock: &tigel::run::Clock) -> String {
        format!("at {}", at.i)
    }
    fn evaluate(
        &mut self,
        _dev: &Device,
        at: tigel::run::At,
        clock: &tigel::run::Clock,
    ) -> Result<tigel::run::Evaluation> {
        self.evals.push((at.i, at.step, at.last));
        let metrics = serde_json::json!({"step": at.step, "loss": self.losses.last(), "train_s": clock.train_s()});
        Ok(tigel::run::Evaluation { metrics, line: format!("step {}", at.step) })
    }
    fn save(&self, dev: &Device, path: &std::path::Path) -> Result<()> {
        self.t.save(dev, path, "mlp", self.config(), serde_json::json!(null))
    }
    fn config(&self) -> serde_json::Value {
        serde_json::json!({"model": "spirals"})
    }
    fn done(&self, fin: &tigel::run::Finished, _checkpoint: &std::path::Path) -> String {
        format!("done {}", fin.steps)
    }
    fn summary(&self, _dev: &Device, fin: &tigel::run::Finished) -> serde_json::Value {
        serde_json::json!({"steps": fin.start_step + fin.steps})
    }
}

/// What the loop showed.
#[derive(Default)]
struct Shown {
    progress: Vec<(u32, String)>,
    lines: Vec<String>,
    finished: bool,
}

impl tigel::run::Observer for Shown {
    fn progress(&mut self, done: u32, message: &str) {
        self.progress.push((done, message.to_string()));
    }
    fn line(&mut self, text: &str) {
        self.lines.push(text.to_string());
    }
    fn finish(&mut self) {
        self.finished = true;
    }
}

/// The shared run loop: a loss read every 10 steps (taken at the next log or evaluation point), an
/// evaluation, a metrics.jsonl line and a checkpoint every `eval_every` steps and at the last,
/// config.json with `resumed_from` and `start_step`; a resumed run appends and counts on.
#[test]
fn run_loop_cadence_files_and_resume() {
    use tigel::run::{self, Cadence, RunDir};
    let dev = Device::cpu();
    let out = std::env::temp_dir().join(format!("tigel-run-loop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let dir = RunDir::choose("test", "mlp", Some(&out), None).unwrap();
    let mut r = Spirals { t: trainer(&dev, adamw()), losses: vec![], evals: vec![] };
    let mut shown = Shown::default();
    let cadence = Cadence { steps: 25, eval_every: 10, log_every: 10, start_step: 0 };
    let o = run::train(&dev, &mut r, &dir, cadence, None, &mut shown).unwrap();
    let at: Vec<u32> = shown.progress.iter().map(|p| p.0).collect();
    assert_eq!(at, [10, 20, 25]);
    assert_eq!(shown.progress[2].1, "at 25");
    assert_eq!(r.evals, [(10, 10, false), (20, 20, false), (25, 25, true)]);
    assert_eq!(shown.lines, ["step 10", "step 20", "step 25"]);
    assert!(shown.finished);
    assert_eq!(r.losses.len(), 3, "one loss per read: {:?}", r.losses);
    assert!(r.losses.iter().all(|l| l.is_finite() && *l > 0.0));
    assert_eq!((o.done.as_str(), o.summary["steps"].as_u64()), ("done 25", Some(25)));
    assert!(o.finished.train_s > 0.0 && o.finished.train_s <= o.finished.elapsed_s);
    let metrics = |p: &std::path::Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(p.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    // An evaluation line at each evaluation, a training line every log_every steps (and at the last).
    let steps = |kind: &str| -> Vec<u64> {
        metrics(&out).iter().filter(|m| m["kind"] == kind).map(|m| m["step"].as_u64().unwrap()).collect()
    };
    assert_eq!(steps("eval"), [10, 20, 25]);
    assert_eq!(steps("train"), [10, 20, 25]);
    assert_eq!(metrics(&out).len(), 6);
    assert!(metrics(&out).iter().all(|m| m["train_s"].as_f64().is_some_and(|t| t > 0.0)));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config, serde_json::json!({"model": "spirals", "resumed_from": null, "start_step": 0}));
    let ck = Checkpoint::load(&dir.checkpoint()).unwrap();
    assert_eq!(ck.step, 25);

    // Another run may not take the directory; a resumed one writes back into it and counts on.
    let e = RunDir::choose("test", "mlp", Some(&out), None).unwrap_err().to_string();
    assert!(e.contains("already holds a checkpoint"), "{e}");
    let ck = run::resume_checkpoint(Some(&out), "mlp", "the test").unwrap().unwrap();
    assert!(run::resume_checkpoint(Some(&out), "gpt", "the test").is_err());
    let dir2 = RunDir::choose("test", "mlp", None, Some(&out)).unwrap();
    assert_eq!(dir2.path(), out);
    let mut r2 = Spirals { t: trainer(&dev, adamw()), losses: vec![], evals: vec![] };
    r2.t.restore(&dev, &ck).unwrap();
    let cadence = Cadence { steps: 10, eval_every: 10, log_every: 10, start_step: 25 };
    let o = run::train(&dev, &mut r2, &dir2, cadence, Some(&out), &mut run::Quiet).unwrap();
    assert_eq!(o.summary["steps"], 35);
    assert_eq!(steps("eval"), [10, 20, 25, 35]);
    assert_eq!(steps("train"), [10, 20, 25, 35]);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["start_step"], 25);
    assert_eq!(config["resumed_from"], out.to_str().unwrap());
    assert_eq!(Checkpoint::load(&dir2.checkpoint()).unwrap().step, 35);
    let cadence = Cadence { steps: 10, eval_every: 0, log_every: 10, start_step: 0 };
    assert!(run::train(&dev, &mut r2, &dir2, cadence, None, &mut run::Quiet).is_err());
    std::fs::remove_dir_all(&out).ok();
}
