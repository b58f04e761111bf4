//! The kernel benchmark's machinery on tiny sizes: every family runs, validates and reports positive
//! times in the JSON schema; a wrong kernel result fails the run with the case named.
mod common;
use common::*;
use tigel::bench::{self, Options, Sizes};
use tigel::Device;

const FAMILIES: [&str; 9] =
    ["matmul", "attention", "conv2d", "optim", "elementwise", "reduce", "softmax", "layout", "rng"];

fn tiny() -> Options {
    Options { sizes: Sizes::Tiny, print: false }
}

fn check_report(dev: &Device, json: &serde_json::Value) {
    for key in ["tigel_version", "git_commit", "date", "backend", "adapter", "cpu_threads", "timer", "quick", "results"]
    {
        assert!(json.get(key).is_some(), "missing {key}: {json:#}");
    }
    assert_eq!(json["backend"], dev.backend_name());
    assert_eq!(json["adapter"].is_null(), dev.is_cpu());
    let date = json["date"].as_str().unwrap();
    assert!(date.len() == 20 && date.ends_with('Z') && date.as_bytes()[10] == b'T', "{date}");
    let results = json["results"].as_array().unwrap();
    for fam in FAMILIES {
        assert!(results.iter().any(|r| r["family"] == fam), "family {fam} missing: {json:#}");
    }
    for r in results {
        assert_eq!(r["validated"], true, "{r}");
        for key in ["median_s", "min_s", "max_s", "gbps"] {
            assert!(r[key].as_f64().unwrap() > 0.0, "{key}: {r}");
        }
        assert!(r["min_s"].as_f64() <= r["median_s"].as_f64() && r["median_s"].as_f64() <= r["max_s"].as_f64());
        assert!(r["repeats"].as_u64().unwrap() >= 1 && r["bytes"].as_u64().unwrap() > 0, "{r}");
        assert!(r["max_abs_err"].as_f64().unwrap() >= 0.0, "{r}");
        assert_eq!(r["gflops"].is_null(), r["flop"] == 0, "{r}");
        assert_eq!(r["encode_us_per_dispatch"].is_null(), dev.is_cpu(), "{r}");
    }
}

#[test]
fn tiny_suite_on_cpu_reports_every_family_validated() {
    let dev = Device::cpu();
    let t = std::time::Instant::now();
    let report = bench::run(&dev, &tiny()).unwrap();
    let json = report.to_json();
    // The written file parses back to the same document (floats up to their last digit).
    let path = std::env::temp_dir().join(format!("tigel-bench-test-{}/sub/out.json", std::process::id()));
    report.write_json(&path).unwrap();
    let back: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap()).unwrap();
    check_report(&dev, &json);
    check_report(&dev, &back);
    let ids = |v: &serde_json::Value| -> Vec<String> {
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| format!("{} {} {}", r["family"], r["name"], r["shape"]))
            .collect()
    };
    assert_eq!(ids(&back), ids(&json));
    assert_eq!(back["date"], json["date"]);
    assert_eq!(json["timer"], "wall-clock");
    assert!(t.elapsed().as_secs_f64() < 5.0, "tiny suite took {:?}", t.elapsed());
}

#[test]
fn tiny_suite_on_gpu_validates_against_the_cpu_twin() {
    let Some(dev) = gpu() else { return };
    let json = bench::run(&dev, &tiny()).unwrap().to_json();
    check_report(&dev, &json);
    assert!(json["results"].as_array().unwrap().iter().all(|r| r["validation"] == "cpu-twin"));
    // Timestamp timing is used wherever the adapter has it (it also exercises Device::replay_timed).
    assert_eq!(json["timer"], if dev.has_timestamps() { "gpu-timestamps" } else { "wall-clock" });
}

/// Each case with 1.0 added to its first output element on the benchmarked device must fail, naming
/// the case (on the CPU backend against the host references, on a GPU against the CPU twin).
#[test]
fn a_wrong_result_fails_the_run_naming_the_case() {
    let mut devs = vec![Device::cpu()];
    devs.extend(gpu());
    for dev in &devs {
        let n = bench::cases(dev, Sizes::Tiny).len();
        for i in 0..n {
            let mut cases = bench::cases(dev, Sizes::Tiny);
            let case = cases.swap_remove(i).with_target_fault();
            let id = case.id();
            let err = bench::run_cases(dev, vec![case], &tiny()).expect_err(&format!("{id} on {}", dev.name()));
            let msg = err.to_string();
            assert!(msg.contains(&id) && msg.contains("wrong result"), "{}: {msg}", dev.name());
        }
    }
}

#[test]
fn unfaulted_cases_pass_alone() {
    // The fault test above is only meaningful if the same case passes without the fault.
    let dev = Device::cpu();
    for case in bench::cases(&dev, Sizes::Tiny) {
        let id = case.id();
        bench::run_cases(&dev, vec![case], &tiny()).unwrap_or_else(|e| panic!("{id}: {e}"));
    }
}

#[test]
fn utc_date_is_iso() {
    let d = bench::utc_now_iso();
    let year: i32 = d[..4].parse().unwrap();
    assert!(year >= 2024, "{d}");
    assert_eq!(&d[4..5], "-");
}

/// The training entries (MLP, GPT, the default GPT at f32 and mixed precision, DCGAN, UNet) run on the CPU backend and report positive rates and
/// the plan.
#[test]
fn train_entries_report_rates_and_memory() {
    let dev = Device::cpu();
    let entries = bench::train::run(&dev, true, false).unwrap();
    let models: Vec<&str> = entries.iter().map(|e| e["model"].as_str().unwrap()).collect();
    assert_eq!(models, ["mlp", "gpt", "gpt-default", "gpt-default-mixed", "dcgan", "unet"]);
    for e in &entries {
        for key in ["step_s", "step_min_s", "step_max_s", "steps_per_s", "samples_per_s"] {
            assert!(e[key].as_f64().unwrap() > 0.0, "{key}: {e}");
        }
        assert!(e["step_min_s"].as_f64() <= e["step_s"].as_f64() && e["step_s"].as_f64() <= e["step_max_s"].as_f64());
        assert!(e["planned_peak_bytes"].as_u64().unwrap() > 0 && e["allocated_bytes"].as_u64().unwrap() > 0, "{e}");
        assert!(e["dispatches"].as_u64().unwrap() > 0, "{e}");
    }
    assert_eq!(entries[1]["unit"], "tokens");
    assert_eq!(entries[1]["per_step"], 8 * 128);
    // `tigel train gpt`'s default step: batch 16 of 128 tokens, its dispatches listed by kernel.
    assert_eq!(entries[2]["unit"], "tokens");
    assert_eq!(entries[2]["per_step"], 16 * 128);
    let by_kernel: u64 =
        entries[2]["dispatches_by_kernel"].as_array().unwrap().iter().map(|k| k[1].as_u64().unwrap()).sum();
    assert_eq!(by_kernel, entries[2]["dispatches"].as_u64().unwrap());
    // The same step at --precision mixed: its products read f16 operands.
    assert_eq!(entries[3]["per_step"], 16 * 128);
    assert!(entries[3]["dispatches_by_kernel"].as_array().unwrap().iter().any(|k| k[0] == "matmul_half::matmul_half"));
    // The image regimes: a GAN step (D's and G's plans) over 64 images, a diffusion step over 32.
    for (e, per_step) in [(&entries[4], 64), (&entries[5], 32)] {
        assert_eq!(e["unit"], "images");
        assert_eq!(e["per_step"], per_step);
    }
}

fn tigel(args: &[&str]) -> (i32, String, String) {
    output_of(tigel_command().args(args))
}

fn keys(v: &serde_json::Value) -> std::collections::BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

const TORCH_FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/torch_schema.json");

/// The schema fixture of the PyTorch reference (benches/reference/torch_bench.py) has the keys of
/// tigel's own report, and `bench compare` matches its cases with a tigel report: both figures and
/// the ratio per common case.
#[test]
fn compare_reads_tigel_and_the_torch_schema() {
    let dir = std::env::temp_dir().join(format!("tigel-bench-compare-{}", std::process::id()));
    let ours = dir.join("tigel.json");
    let report = bench::run(&Device::cpu(), &tiny()).unwrap();
    report.write_json(&ours).unwrap();
    let ours_json = report.to_json();
    let fixture: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(TORCH_FIXTURE).unwrap()).unwrap();
    let top = keys(&fixture);
    assert!(keys(&ours_json).is_subset(&top), "{:?} vs {:?}", keys(&ours_json), top);
    let case_keys = keys(&ours_json["results"][0]);
    for r in fixture["results"].as_array().unwrap() {
        assert_eq!(keys(r), case_keys);
    }
    let train = bench::train::run(&Device::cpu(), true, false).unwrap();
    for t in fixture["train"].as_array().unwrap() {
        assert!(keys(t).is_subset(&keys(&train[1])), "{:?}", keys(t));
    }

    let (code, out, err) = tigel(&["bench", "compare", ours.to_str().unwrap(), TORCH_FIXTURE]);
    assert_eq!(code, 0, "{out}{err}");
    let line = |id: &str| out.lines().find(|l| l.starts_with(id)).unwrap_or_else(|| panic!("{id} missing:\n{out}"));
    let mm = line("matmul/matmul 64x64x64");
    let ours_gflops = ours_json["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "matmul" && r["shape"] == "64x64x64")
        .unwrap()["gflops"]
        .as_f64()
        .unwrap();
    let fields: Vec<&str> = mm.split_whitespace().collect();
    let ratio: f64 = fields.last().unwrap().parse().unwrap();
    let want = 0.524288 / ours_gflops;
    assert!((ratio - want).abs() <= 1e-3 * want.max(1.0), "{mm}: ratio {ratio}, want {want}");
    assert!(line("optim/adamw [4099]").contains("GB/s"), "{out}");
    assert!(!out.contains("gpt"), "no train entry in A: {out}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn compare_errors_name_the_problem() {
    let dir = std::env::temp_dir().join(format!("tigel-bench-compare-err-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.json");
    std::fs::write(&bad, "{ not json").unwrap();
    let other = dir.join("other.json");
    std::fs::write(
        &other,
        r#"{"results": [{"family": "matmul", "name": "matmul", "shape": "1x1x1", "gflops": 1.0, "gbps": 1.0}]}"#,
    )
    .unwrap();
    let missing = dir.join("missing.json");
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    for (a, b, want) in [
        (s(&missing), TORCH_FIXTURE.to_string(), "missing.json"),
        (TORCH_FIXTURE.to_string(), s(&bad), "not a valid JSON document"),
        (s(&other), TORCH_FIXTURE.to_string(), "no case in common"),
    ] {
        let (code, out, err) = tigel(&["bench", "compare", &a, &b]);
        assert_ne!(code, 0, "{a} {b}: {out}");
        assert!(err.contains(want) && !err.contains("panicked"), "{a} {b}: {err}");
    }
    std::fs::write(&other, "[1, 2]").unwrap();
    let (code, _, err) = tigel(&["bench", "compare", &s(&other), TORCH_FIXTURE]);
    assert!(code != 0 && err.contains("not a benchmark report"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
