//! Kernel variants and tuning on the GPU (lavapipe in CI): a recording's first use times the variants
//! at each size class it dispatches and writes the cache, a new device reads the choices back per size
//! class, `TIGEL_TUNE=off`-style mode ignores them, and a corrupt cache file is ignored without a panic. One test: it sets process-wide environment
//! variables (the cache path), so it must not share its process with another test.
mod common;
use common::*;
use tigel::device::{ChoiceSource, TuneMode};
use tigel::graph::{Graph, Plan};
use tigel::kernels::softmax::SOFTMAX_ROWS;
use tigel::{BackendChoice, Device, Tensor};

fn fresh_gpu() -> Option<Device> {
    let name = std::env::var("TIGEL_TEST_BACKEND").unwrap_or_else(|_| "vulkan".into());
    Device::new(name.parse::<BackendChoice>().unwrap()).ok()
}

/// Builds and runs a softmax plan over `x` as rows of 300 (its recording is where tuning happens);
/// returns the output.
fn softmax_plan(d: &Device, x: &[f32]) -> Vec<f32> {
    let mut g = Graph::new();
    let xn = g.input(&Tensor::from_f32(d, &[x.len() / 300, 300], x).unwrap());
    let y = g.softmax(xn).unwrap();
    let plan = Plan::build(d, &g, &[y], |_| Ok(())).unwrap();
    plan.run(d).unwrap();
    plan.value(y).to_f32(d).unwrap()
}

#[test]
fn tuning_fills_the_cache_and_later_devices_use_it() {
    let dir = std::env::temp_dir().join(format!("tigel-tune-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cache = dir.join("tune.json");
    std::env::set_var("TIGEL_TUNE_CACHE", &cache);
    std::env::remove_var("TIGEL_TUNE");
    let Some(d) = fresh_gpu() else {
        eprintln!("skipped: no GPU adapter");
        return;
    };
    let mut rng = Rng::new(seed());
    let x = rng.vec(64 * 300, -4.0, 4.0);
    let want = softmax_plan(&cpu(), &x);
    // A larger softmax: its dispatch falls in another size class, tuned on its own.
    let big = rng.vec(2048 * 300, -4.0, 4.0);
    let want_big = softmax_plan(&cpu(), &big);

    // Auto: the first recording that uses softmax times its variants, keeps one and writes the cache.
    assert_eq!(d.tune_mode(), TuneMode::Auto);
    let got = softmax_plan(&d, &x);
    assert_close("tuned softmax vs cpu twin", &got, &want, 1e-6, 1e-5);
    let got = softmax_plan(&d, &big);
    assert_close("tuned large softmax vs cpu twin", &got, &want_big, 1e-6, 1e-5);
    let r = d.tune_results();
    let sm = r.iter().find(|r| r.kernel == "softmax::softmax_rows").expect("softmax was tuned");
    let (chosen, class) = (sm.chosen, sm.size_class);
    let classes: Vec<u32> = r.iter().filter(|r| r.kernel == "softmax::softmax_rows").map(|r| r.size_class).collect();
    assert_eq!(classes.len(), 2, "each size class is timed once: {classes:?}");
    assert_ne!(classes[0], classes[1], "the two sizes are in different classes: {classes:?}");
    let (chosen_big, class_big) = (r.last().unwrap().chosen, classes[1]);
    let text = std::fs::read_to_string(&cache).expect("the cache was written");
    for c in &classes {
        assert!(text.contains(&format!("softmax::softmax_rows/{c}")), "{text}");
    }
    // Every usable candidate was timed (use_variant tells which are usable; it also forces one, so last).
    assert_eq!(
        sm.times.len(),
        1 + SOFTMAX_ROWS.variants().filter(|v| d.use_variant(&SOFTMAX_ROWS, v.variant_name()).is_ok()).count()
    );

    // A new device on the same adapter reads the choice back and times nothing.
    drop(d);
    let d2 = fresh_gpu().unwrap();
    let choices = d2.variant_choices();
    let of = |class| choices.iter().find(|c| c.kernel == "softmax::softmax_rows" && c.size_class == Some(class));
    let c = of(class).expect("the small size's choice is listed");
    assert_eq!((c.variant, c.source), (chosen, ChoiceSource::Cached));
    let c = of(class_big).expect("the large size's choice is listed");
    assert_eq!((c.variant, c.source), (chosen_big, ChoiceSource::Cached));
    let got = softmax_plan(&d2, &x);
    assert_close("cached softmax vs cpu twin", &got, &want, 1e-6, 1e-5);
    let got = softmax_plan(&d2, &big);
    assert_close("cached large softmax vs cpu twin", &got, &want_big, 1e-6, 1e-5);
    assert!(d2.tune_results().is_empty(), "a cached kernel is not timed again");

    // Off: the defaults, whatever the cache says.
    d2.set_tune_mode(TuneMode::Off);
    let c = d2.variant_choices().into_iter().find(|c| c.kernel == "softmax::softmax_rows").unwrap();
    assert_eq!(c.source, ChoiceSource::Default);

    // A corrupt cache is ignored (with a note on stderr): defaults, then tuning rewrites it.
    drop(d2);
    std::fs::write(&cache, b"{ not json").unwrap();
    let d3 = fresh_gpu().unwrap();
    let c = d3.variant_choices().into_iter().find(|c| c.kernel == "softmax::softmax_rows").unwrap();
    assert_eq!(c.source, ChoiceSource::Default);
    let got = softmax_plan(&d3, &x);
    assert_close("retuned softmax vs cpu twin", &got, &want, 1e-6, 1e-5);
    let text = std::fs::read_to_string(&cache).unwrap();
    assert!(serde_json::from_str::<serde_json::Value>(&text).is_ok(), "the cache was rewritten whole: {text}");

    // A forced variant overrides every size class's choice (here the one just tuned).
    let other = SOFTMAX_ROWS.variants().find(|v| d3.use_variant(&SOFTMAX_ROWS, v.variant_name()).is_ok());
    if let Some(v) = other {
        let choices = d3.variant_choices();
        let rows: Vec<_> = choices.iter().filter(|c| c.kernel == "softmax::softmax_rows").collect();
        assert_eq!(rows.len(), 1, "a forced choice is the only one listed");
        assert_eq!((rows[0].variant, rows[0].source), (v.variant_name(), ChoiceSource::Forced));
        let got = softmax_plan(&d3, &x);
        assert_close("forced softmax vs cpu twin", &got, &want, 1e-6, 1e-5);
    }

    // Unknown variant names are errors naming them.
    let e = d3.use_variant(&SOFTMAX_ROWS, "nope").unwrap_err().to_string();
    assert!(e.contains("nope"), "{e}");
    drop(d3);
    let _ = std::fs::remove_dir_all(&dir);
}
