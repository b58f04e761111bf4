//! `tigel tune`: times the kernel variants on the chosen GPU for the training benchmarks' steps (their
//! real shapes) ahead of time, keeps the fastest in the tuning cache that later runs read, and prints
//! the choices.

use tigel::bench::train::ENTRIES;
use tigel::device::tune::cache_path;
use tigel::device::{ChoiceSource, TuneMode};
use tigel::{Error, Result};

/// The models `--quick` tunes for (small steps, a minute or two on a software adapter).
const QUICK: &[&str] = &["mlp", "gpt"];

/// Tunes for `models` (default: every training benchmark, or mlp and gpt with `quick`).
pub fn run(backend: Option<&str>, models: &[String], quick: bool) -> Result<()> {
    let d = super::device(backend)?;
    if d.is_cpu() {
        println!("the CPU backend has no kernel variants (its twins are the reference): nothing to tune");
        return Ok(());
    }
    let names: Vec<&str> = if !models.is_empty() {
        models.iter().map(String::as_str).collect()
    } else if quick {
        QUICK.to_vec()
    } else {
        ENTRIES.iter().map(|e| e.0).collect()
    };
    let mut builders = Vec::new();
    for n in &names {
        let e = ENTRIES.iter().find(|e| e.0 == *n).ok_or_else(|| {
            let all: Vec<&str> = ENTRIES.iter().map(|e| e.0).collect();
            Error::invalid("--model", format!("`{n}`: choose from {}", all.join(", ")))
        })?;
        builders.push(e);
    }
    // Every kernel a step uses is timed again (once per run), whatever the cache holds.
    d.set_tune_mode(TuneMode::Retune);
    if let Some((lo, hi)) = d.subgroup_sizes() {
        println!("subgroups: sizes {lo}..{hi}");
    }
    println!("timing with {}", if d.has_timestamps() { "timestamp queries" } else { "the wall clock" });
    for (name, build) in builders {
        let before = d.tune_results().len();
        // Building the benchmark records its step, which times the variants before the first replay;
        // the benchmark's own line then shows the step with the choices made.
        build(&d, true, true)?;
        for r in &d.tune_results()[before..] {
            let times: Vec<String> = r
                .times
                .iter()
                .map(|(v, s)| format!("{}={:.3}ms", if v.is_empty() { "wgmem" } else { v }, s * 1e3))
                .collect();
            println!(
                "  {name:<6} {:<30} {:<9} -> {:<6} ({} dispatches; {})",
                r.kernel,
                workgroups(Some(r.size_class)),
                if r.chosen.is_empty() { "wgmem" } else { r.chosen },
                r.dispatches,
                times.join(" ")
            );
        }
    }
    println!("choices (used by later runs on this adapter unless TIGEL_TUNE=off):");
    print_choices(&d);
    match cache_path() {
        Some(p) => println!("cache: {}", p.display()),
        None => println!("cache: none (set XDG_CACHE_HOME or HOME)"),
    }
    Ok(())
}

/// The dispatches of a size class, as the choices print it: "<=2^c wg" (None: every size, "any").
fn workgroups(class: Option<u32>) -> String {
    class.map_or_else(|| "any".to_string(), |c| format!("<=2^{c} wg"))
}

/// One line per family kernel with variants at every size, then one per size class with a choice of
/// its own: the variant the device runs and where the choice came from.
pub fn print_choices(d: &tigel::Device) {
    for c in d.variant_choices() {
        let src = match c.source {
            ChoiceSource::Default => "default",
            ChoiceSource::Cached => "cached",
            ChoiceSource::Tuned => "tuned",
            ChoiceSource::Forced => "forced",
        };
        let v = if c.variant.is_empty() { "wgmem" } else { c.variant };
        println!("  {:<34} {:<9} {v:<6} ({src})", c.kernel, workgroups(c.size_class));
    }
}
