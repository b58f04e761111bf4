//! The GPT with Muon and the schedule options: it learns, agrees across backends, resumes exactly (Muon's
//! momentum is in the checkpoint), older configs read as AdamW, and bad values are refused by name.
mod common;
use common::*;
use tigel::checkpoint::Checkpoint;
use tigel::data::text::Corpus;
use tigel::models::gpt::{Decay, Evaluator, Gpt, GptConfig, GptTrainer, OptimSettings, OptimizerChoice, TrainSettings};
use tigel::Device;

fn modern() -> GptConfig {
    GptConfig {
        layers: 2,
        heads: 2,
        width: 16,
        context: 12,
        rope: true,
        qk_norm: true,
        gated_mlp: true,
        ..GptConfig::default()
    }
}

fn settings(steps: u32) -> TrainSettings {
    TrainSettings {
        batch: 3,
        lr: 3e-3,
        min_lr_frac: 0.1,
        warmup: 2,
        steps,
        weight_decay: 0.1,
        clip: 1.0,
        seed: 7,
        precision: Default::default(),
    }
}

fn muon() -> OptimSettings {
    OptimSettings { optimizer: OptimizerChoice::Muon, muon_lr: 0.02, ..OptimSettings::default() }
}

fn corpus(n: usize) -> Corpus {
    let mut s = String::new();
    let mut i = 0;
    while s.len() < n {
        s.push_str(&format!("the cat sat on mat {} and the dog ran.\n", i % 7));
        i += 1;
    }
    Corpus { name: "test".into(), bytes: s.into_bytes() }
}

fn losses(dev: &Device, t: &GptTrainer, steps: usize) -> Vec<f32> {
    (0..steps)
        .map(|_| {
            t.step(dev).unwrap();
            f32::from_bits(t.read_loss(dev).unwrap().wait().unwrap()[0])
        })
        .collect()
}

fn weights(dev: &Device, t: &GptTrainer) -> Vec<Vec<f32>> {
    t.trainer().params().iter().map(|p| p.tensor.to_f32(dev).unwrap()).collect()
}

#[test]
fn gpt_muon_learns() {
    let dev = Device::cpu();
    let c = corpus(20_000);
    let (_, held) = c.split();
    let m = Gpt::new(&dev, modern(), 3).unwrap();
    let t = GptTrainer::with_optim(&dev, m, &c, settings(150), muon(), 0).unwrap();
    let l = losses(&dev, &t, 150);
    let a = Evaluator::new(&dev, &t.model, 8).unwrap().bits_per_char(&dev, &c, held, None).unwrap();
    eprintln!("loss {} -> {}, held-out {a:.3} bits/char", l[0], l[149]);
    assert!(a < 3.5, "held-out bits/char after 150 steps: {a}");
    assert!(l[149] < 0.5 * l[0], "training loss {} -> {}", l[0], l[149]);
}

#[test]
fn gpt_muon_first_steps_agree_on_cpu_and_gpu() {
    let Some(gpu) = gpu() else { return };
    let c = corpus(4000);
    let run = |dev: &Device| {
        let m = Gpt::new(dev, modern(), 11).unwrap();
        let o = OptimSettings { decay: Decay::Linear, cooldown: 0.5, ..muon() };
        let t = GptTrainer::with_optim(dev, m, &c, settings(5), o, 0).unwrap();
        losses(dev, &t, 5)
    };
    let (a, b) = (run(&cpu()), run(&gpu));
    eprintln!("cpu {a:?}\ngpu {b:?}");
    for (s, (x, y)) in a.iter().zip(&b).enumerate() {
        // f32 kernels with different summation orders, five optimizer steps deep.
        assert!(((x - y) / x).abs() <= 1e-4, "step {s}: cpu loss {x}, gpu loss {y}");
    }
}

/// Six steps in one run, and three, a checkpoint, and three more in a resumed run: the same losses and
/// the same weights, to the bit (Muon's momentum buffers travel in the checkpoint).
#[test]
fn gpt_muon_resumes_exactly() {
    let dev = Device::cpu();
    let c = corpus(6000);
    let dir = std::env::temp_dir().join(format!("tigel-gpt-muon-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("checkpoint.safetensors");
    let o = OptimSettings { decay: Decay::Linear, ..muon() };

    let whole = GptTrainer::with_optim(&dev, Gpt::new(&dev, modern(), 5).unwrap(), &c, settings(6), o, 0).unwrap();
    let all = losses(&dev, &whole, 6);

    // The first half is a 6-step run stopped after 3 (a run's schedule is that of its planned steps).
    let first = GptTrainer::with_optim(&dev, Gpt::new(&dev, modern(), 5).unwrap(), &c, settings(6), o, 0).unwrap();
    let a = losses(&dev, &first, 3);
    first.save(&dev, &path, &c.name).unwrap();
    let ck = Checkpoint::load(&path).unwrap();
    assert_eq!(ck.step, 3);
    assert!(ck.tensors.keys().any(|k| k.ends_with(".muon")), "no Muon state in {:?}", ck.tensors.keys());
    assert_eq!(OptimSettings::from_config(&ck.config).unwrap(), o);

    let second = GptTrainer::with_optim(&dev, Gpt::load(&dev, &ck, "test").unwrap(), &c, settings(3), o, 3).unwrap();
    second.restore(&dev, &ck).unwrap();
    let b = losses(&dev, &second, 3);
    assert_eq!([a, b].concat(), all);
    assert_eq!(weights(&dev, &second), weights(&dev, &whole));

    // An AdamW trainer cannot take the Muon checkpoint's state: the error names the missing tensor.
    let adamw = GptTrainer::new(&dev, Gpt::load(&dev, &ck, "test").unwrap(), &c, settings(3), 3).unwrap();
    let e = adamw.restore(&dev, &ck).unwrap_err().to_string();
    assert!(e.contains("optim."), "{e}");

    // A restart (step 0, zeroed optimizer state) may change the optimizer: AdamW from the Muon
    // checkpoint's weights trains as AdamW from those weights would.
    let restart = tigel::run::ResumeSchedule::Restart.prepare(ck.clone());
    let adamw = GptTrainer::new(&dev, Gpt::load(&dev, &restart, "test").unwrap(), &c, settings(3), 0).unwrap();
    adamw.restore(&dev, &restart).unwrap();
    assert_eq!(adamw.trainer().optimizer().current_step(&dev).unwrap(), 0);
    assert!(losses(&dev, &adamw, 3).iter().all(|l| l.is_finite()));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn gpt_optim_settings_default_to_adamw_for_old_configs_and_refuse_bad_values() {
    let old = serde_json::json!({"model": {}, "train": {"lr": 0.002}});
    assert_eq!(OptimSettings::from_config(&old).unwrap(), OptimSettings::default());
    assert_eq!(OptimSettings::default().optimizer, OptimizerChoice::Adamw);
    let bad = serde_json::json!({"train": {"optim": {"optimizer": "sgd"}}});
    assert!(OptimSettings::from_config(&bad).is_err());
    for (o, want) in [
        (OptimSettings { cooldown: 0.0, ..muon() }, "--cooldown"),
        (OptimSettings { cooldown: 0.5, ..muon() }, "--decay linear"),
        (OptimSettings { muon_lr: 0.0, ..muon() }, "--muon-lr"),
        (OptimSettings { muon_momentum: 1.0, ..muon() }, "--muon-momentum"),
    ] {
        let e = o.validate().unwrap_err().to_string();
        assert!(e.contains(want), "{o:?}: {e}");
    }
}

#[test]
fn gpt_bad_optimizer_flag_is_refused_by_name() {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_tigel"))
        .args(["train", "gpt", "--optimizer", "sgd", "--steps", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("--optimizer") && err.contains("adamw") && err.contains("muon"), "{err}");
}
