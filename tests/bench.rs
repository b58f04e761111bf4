//! The kernel benchmark's machinery on tiny sizes: every family runs, validates and reports positive
//! times in the JSON schema; a wrong kernel result fails the run with the case named.
mod common;
use common::*;
use tigel::bench::{self, Options, Sizes};
use tigel::Device;

const FAMILIES: [&str; 6] = ["matmul", "elementwise", "reduce", "softmax", "layout", "rng"];

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
