//! The GPT with Muon and the schedule options: it learns, agrees across backends, resumes exactly (Muon's
//! momentum is in the checkpoint), older configs read as AdamW, and bad values are refused by name.
mod common;
use common::*;
use tigel::checkpoint::Checkpoint;
use tigel::graph::Precision;
use tigel::models::gpt::{Decay, Evaluator, Gpt, GptConfig, GptTrainer, OptimSettings, OptimizerChoice};
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

fn muon() -> OptimSettings {
    OptimSettings { optimizer: OptimizerChoice::Muon, muon_lr: 0.02, ..OptimSettings::default() }
}

fn weights(dev: &Device, t: &GptTrainer) -> Vec<Vec<f32>> {
    t.trainer().params().iter().map(|p| p.tensor.to_f32(dev).unwrap()).collect()
}

#[test]
fn gpt_muon_learns() {
    let dev = Device::cpu();
    let c = gpt_corpus(20_000);
    let (_, held) = c.split();
    let m = Gpt::new(&dev, modern(), 3).unwrap();
    let t = GptTrainer::with_optim(&dev, m, &c, gpt_settings(150, Precision::F32), muon(), 0).unwrap();
    let l = gpt_losses(&dev, &t, 150);
    let a = Evaluator::new(&dev, &t.model, 8).unwrap().bits_per_char(&dev, &c, held, None).unwrap();
    eprintln!("loss {} -> {}, held-out {a:.3} bits/char", l[0], l[149]);
    assert!(a < 3.5, "held-out bits/char after 150 steps: {a}");
    assert!(l[149] < 0.5 * l[0], "training loss {} -> {}", l[0], l[149]);
}

#[test]
fn gpt_muon_first_steps_agree_on_cpu_and_gpu() {
    let Some(gpu) = gpu() else { return };
    let c = gpt_corpus(4000);
    let run = |dev: &Device| {
        let m = Gpt::new(dev, modern(), 11).unwrap();
        let o = OptimSettings { decay: Decay::Linear, cooldown: 0.5, ..muon() };
        let t = GptTrainer::with_optim(dev, m, &c, gpt_settings(5, Precision::F32), o, 0).unwrap();
        gpt_losses(dev, &t, 5)
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
    let c = gpt_corpus(6000);
    let dir = std::env::temp_dir().join(format!("tigel-gpt-muon-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("checkpoint.safetensors");
    let o = OptimSettings { decay: Decay::Linear, ..muon() };

    let whole =
        GptTrainer::with_optim(&dev, Gpt::new(&dev, modern(), 5).unwrap(), &c, gpt_settings(6, Precision::F32), o, 0)
            .unwrap();
    let all = gpt_losses(&dev, &whole, 6);

    // The first half is a 6-step run stopped after 3 (a run's schedule is that of its planned steps).
    let first =
        GptTrainer::with_optim(&dev, Gpt::new(&dev, modern(), 5).unwrap(), &c, gpt_settings(6, Precision::F32), o, 0)
            .unwrap();
    let a = gpt_losses(&dev, &first, 3);
    first.save(&dev, &path, &c.name).unwrap();
    let ck = Checkpoint::load(&path).unwrap();
    assert_eq!(ck.step, 3);
    assert!(ck.tensors.keys().any(|k| k.ends_with(".muon")), "no Muon state in {:?}", ck.tensors.keys());
    assert_eq!(OptimSettings::from_config(&ck.config).unwrap(), o);

    let second =
        GptTrainer::with_optim(&dev, Gpt::load(&dev, &ck, "test").unwrap(), &c, gpt_settings(3, Precision::F32), o, 3)
            .unwrap();
    second.restore(&dev, &ck).unwrap();
    let b = gpt_losses(&dev, &second, 3);
    assert_eq!([a, b].concat(), all);
    assert_eq!(weights(&dev, &second), weights(&dev, &whole));

    // An AdamW trainer cannot take the Muon checkpoint's state: the error names the missing tensor.
    let adamw =
        GptTrainer::new(&dev, Gpt::load(&dev, &ck, "test").unwrap(), &c, gpt_settings(3, Precision::F32), 3).unwrap();
    let e = adamw.restore(&dev, &ck).unwrap_err().to_string();
    assert!(e.contains("optim."), "{e}");

    // A restart (step 0, zeroed optimizer state) may change the optimizer: AdamW from the Muon
    // checkpoint's weights trains as AdamW from those weights would.
    let restart = tigel::run::ResumeSchedule::Restart.prepare(ck.clone());
    let adamw =
        GptTrainer::new(&dev, Gpt::load(&dev, &restart, "test").unwrap(), &c, gpt_settings(3, Precision::F32), 0)
            .unwrap();
    adamw.restore(&dev, &restart).unwrap();
    assert_eq!(adamw.trainer().optimizer().current_step(&dev).unwrap(), 0);
    assert!(gpt_losses(&dev, &adamw, 3).iter().all(|l| l.is_finite()));
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
