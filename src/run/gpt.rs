//! The GPT in the run loop: the training loss in bits/char, held-out bits/char at each evaluation (a
//! sample of `eval_windows` windows, all of the held-out text at the last), and a sample at the end.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::{At, Clock, Evaluation, Finished, Guarded, Regime};
use crate::data::text::Corpus;
use crate::device::{Device, Download};
use crate::error::Result;
use crate::models::gpt::{Evaluator, GptTrainer, SampleSettings, Sampler, BITS_PER_NAT};

/// Temperature and top-k of the sample a run ends with.
pub const FINAL_SAMPLE_TEMPERATURE: f32 = 0.8;
/// Top-k of the sample a run ends with.
pub const FINAL_SAMPLE_TOP_K: usize = 40;

/// A GPT training run on a corpus (its last 10% held out).
pub struct GptRun<'a> {
    trainer: GptTrainer,
    eval: Evaluator,
    corpus: &'a Corpus,
    eval_windows: usize,
    out: PathBuf,
    train_loss: f64,
    last_val: f64,
}

impl<'a> GptRun<'a> {
    /// A run of `trainer` on `corpus`, validating on `eval_windows` held-out windows between the final
    /// evaluation's full pass, writing into `out`.
    pub fn new(dev: &Device, trainer: GptTrainer, corpus: &'a Corpus, eval_windows: usize, out: &Path) -> Result<Self> {
        let eval = Evaluator::new(dev, &trainer.model, 32)?;
        Ok(GptRun {
            trainer,
            eval,
            corpus,
            eval_windows,
            out: out.to_path_buf(),
            train_loss: f64::NAN,
            last_val: f64::NAN,
        })
    }

    /// The trainer.
    pub fn trainer(&self) -> &GptTrainer {
        &self.trainer
    }

    /// Lines describing the model, the data and the step's memory plan.
    pub fn describe(&self) -> Vec<String> {
        let cfg = &self.trainer.model.cfg;
        let plan = self.trainer.trainer().plan();
        vec![
            format!(
                "gpt: {} layers, {} heads, width {}, context {}{}: {:.2} M parameters; {} ({} bytes, last 10% held out)",
                cfg.layers,
                cfg.heads,
                cfg.width,
                cfg.context,
                [(cfg.rope, ", rotary positions"), (cfg.qk_norm, ", QK norm"), (cfg.gated_mlp, ", gated MLP"), (cfg.untied, ", untied output")]
                    .iter()
                    .filter(|o| o.0)
                    .map(|o| o.1)
                    .collect::<String>(),
                cfg.param_count() as f64 / 1e6,
                self.corpus.name,
                self.corpus.len()
            ),
            format!(
                "step plan: {} dispatches, planned peak {:.1} MiB of intermediates (allocated {:.1} MiB), {:.1} MiB of weights and data",
                plan.dispatches(),
                plan.planned_peak_bytes() as f64 / 1048576.0,
                plan.allocated_bytes() as f64 / 1048576.0,
                plan.persistent_bytes as f64 / 1048576.0
            ),
        ]
    }

    /// The line introducing the final sample.
    pub fn sample_header() -> String {
        format!(
            "sample (prompt from the held-out text, temperature {FINAL_SAMPLE_TEMPERATURE}, top-k {FINAL_SAMPLE_TOP_K}):"
        )
    }

    /// Continues the first line of the held-out text (text the model has not trained on) by `tokens`
    /// bytes: `emit` gets the prompt, then each byte as it comes.
    pub fn sample(&self, dev: &Device, tokens: usize, seed: u64, mut emit: impl FnMut(&[u8])) -> Result<()> {
        let (_, held) = self.corpus.split();
        let h = &self.corpus.bytes[held.0..held.0 + held.1];
        let context = self.trainer.model.cfg.context;
        let prompt: Vec<u8> = h.iter().copied().take_while(|&b| b != b'\n').take(context / 2).collect();
        let s = SampleSettings { tokens, temperature: FINAL_SAMPLE_TEMPERATURE, top_k: FINAL_SAMPLE_TOP_K, seed };
        emit(&prompt);
        Sampler::new(dev, &self.trainer.model)?.generate(dev, &prompt, s, |b| emit(&[b]))?;
        Ok(())
    }

    fn tokens_per_s(&self, i: u32, train_s: f64) -> f64 {
        (i as usize * self.trainer.tokens_per_step) as f64 / train_s
    }
}

impl Regime for GptRun<'_> {
    fn step(&mut self, dev: &Device) -> Result<()> {
        self.trainer.step(dev)
    }

    fn read_losses(&self, dev: &Device) -> Result<Vec<Download>> {
        Ok(vec![self.trainer.read_loss(dev)?])
    }

    fn guarded(&self) -> Vec<Guarded<'_>> {
        vec![Guarded { name: "", trainer: self.trainer.trainer(), per_step: 1 }]
    }

    fn take_losses(&mut self, losses: &[f64]) {
        self.train_loss = losses[0];
    }

    fn progress(&self, at: At, clock: &Clock) -> String {
        let tps = self.tokens_per_s(at.i, clock.train_s());
        let loss = if self.train_loss.is_nan() {
            "loss pending".to_string()
        } else {
            format!("loss {:.3} bits/char", self.train_loss * BITS_PER_NAT)
        };
        format!("{loss}  {:.1}k tok/s", tps / 1e3)
    }

    fn train_metrics(&self, at: At, train_s: f64) -> Value {
        json!({"loss": self.train_loss, "train_bits_per_char": self.train_loss * BITS_PER_NAT,
               "lr": self.trainer.trainer().optimizer().lr_at(at.step.saturating_sub(1)),
               "tokens_per_s": self.tokens_per_s(at.i, train_s)})
    }

    #[cfg(feature = "plot")]
    fn plot(&self, dir: &Path, history: &crate::run::History) -> Result<()> {
        use crate::plot::{line_plot, Curve};
        let curves = [
            Curve::from_metrics(history, "train", "train_bits_per_char", "training", false),
            Curve::from_metrics(history, "eval", "val_bits_per_char", "held-out", true),
        ];
        line_plot(&dir.join("loss.png"), "bits/char", &curves)
    }

    fn best_key(&self) -> Option<&'static str> {
        Some("val_bits_per_char")
    }

    fn evaluate(&mut self, dev: &Device, at: At, clock: &Clock) -> Result<Evaluation> {
        let (_, held) = self.corpus.split();
        let windows = if at.last { None } else { Some(self.eval_windows) };
        self.last_val = self.eval.bits_per_char(dev, self.corpus, held, windows)?;
        let train_bpc = self.train_loss * BITS_PER_NAT;
        let metrics = json!({"step": at.step, "train_bits_per_char": train_bpc, "val_bits_per_char": self.last_val,
                             "val_full": at.last, "elapsed_s": clock.elapsed_s(), "train_s": clock.train_s(),
                             "tokens_per_s": self.tokens_per_s(at.i, clock.train_s())});
        let line = format!(
            "step {}: train {train_bpc:.3}, held-out {:.3} bits/char{}",
            at.step,
            self.last_val,
            if at.last { " (all held-out text)" } else { "" }
        );
        Ok(Evaluation { metrics, line })
    }

    fn save(&self, dev: &Device, path: &Path) -> Result<()> {
        self.trainer.save(dev, path, &self.corpus.name)
    }

    fn config(&self) -> Value {
        let mut v = crate::models::run_config(
            self.trainer.model.cfg.to_json(),
            self.trainer.settings.to_json(),
            self.corpus.name.as_str(),
        );
        v["data_bytes"] = self.corpus.len().into();
        v
    }

    fn done(&self, fin: &Finished, checkpoint: &Path) -> String {
        let detail = format!(
            " ({:.0} s training), {:.1}k tokens/s; held-out {:.3} bits/char",
            fin.train_s,
            self.tokens_per_s(fin.steps, fin.train_s) / 1e3,
            self.last_val
        );
        fin.done_line(&detail, checkpoint)
    }

    fn summary(&self, dev: &Device, fin: &Finished) -> Value {
        let plan = self.trainer.trainer().plan();
        json!({"steps": fin.start_step + fin.steps, "train_loss": self.train_loss,
               "train_bits_per_char": self.train_loss * BITS_PER_NAT, "val_bits_per_char": self.last_val,
               "tokens_per_s": self.tokens_per_s(fin.steps, fin.train_s), "elapsed_s": fin.elapsed_s,
               "train_s": fin.train_s, "planned_peak_bytes": plan.planned_peak_bytes(),
               "allocated_peak_bytes": plan.allocated_bytes(), "backend": dev.backend_name(), "device": dev.name(),
               "out": self.out})
    }
}
