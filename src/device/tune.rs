//! Kernel variants on the running GPU: which variant of each family kernel the wgpu engine uses, the
//! per-adapter cache of tuned choices, and the timing that fills it.
//!
//! A family kernel with variants (`kernels::ShaderInfo`) is resolved per dispatch, by the dispatch's
//! size class (`size_class`: its grid's workgroup count, rounded up to a power of two), when its
//! pipeline is looked up: a choice forced with `Device::use_variant`, else one tuned or cached for this
//! adapter at that size class, else one for every size (a cache written before size classes), else the
//! default (the first subgroup variant where the device has SUBGROUP, else the family's own
//! workgroup-memory form). A matmul's best tiles depend on its shape: a large product wants large
//! tiles, a small one wants enough workgroups to fill the GPU, so one choice per kernel is not enough.
//! Tuning times every usable candidate on the dispatches of a recording (a model's real step, so its
//! real shapes), one size class at a time, with timestamp queries where the adapter has them and
//! otherwise the wall clock around a submit and wait, before the recording is prepared: never inside a
//! step. The winners go to a cache file keyed by adapter, driver and tigel version, written atomically;
//! a file that cannot be read is ignored with a one-line note.
//!
//! `TIGEL_TUNE` sets the mode: `auto` (the default: cached choices, and kernels without one are timed
//! the first time a recording uses them), `cached` (cached choices, never time) or `off` (defaults
//! only). The CPU engine has no variants: its twins are the reference every variant is tested against.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;

use serde_json::{json, Value};

use super::gpu::GpuEngine;
use super::{Device, Engine, Instant, RawDispatch};
use crate::error::{Error, Result};
use crate::kernels::{Kernel, ALL_KERNELS};

/// How the wgpu engine picks kernel variants (from `TIGEL_TUNE`, or `Device::set_tune_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TuneMode {
    /// Defaults only: no cache read or written, nothing timed.
    Off,
    /// Choices from the cache file; kernels without one take the default.
    Cached,
    /// Cached choices, and every kernel without one is timed the first time a recording uses it.
    Auto,
    /// Every kernel a recording uses is timed again (once per device), and the cache rewritten.
    Retune,
}

impl TuneMode {
    /// The mode `TIGEL_TUNE` asks for (`off`, `cached`, `auto`; unset: `auto`). Another value is an
    /// error naming it.
    pub fn from_env() -> Result<TuneMode> {
        match std::env::var("TIGEL_TUNE").ok().as_deref().map(str::trim) {
            None | Some("") | Some("auto") => Ok(TuneMode::Auto),
            Some("off") | Some("0") => Ok(TuneMode::Off),
            Some("cached") => Ok(TuneMode::Cached),
            Some(other) => Err(Error::invalid("TIGEL_TUNE", format!("`{other}`: choose off, cached or auto"))),
        }
    }
}

/// Where a kernel's variant came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChoiceSource {
    /// The default for the device (subgroups where it has them).
    Default,
    /// Read from the tuning cache.
    Cached,
    /// Timed on this device in this process.
    Tuned,
    /// Set with `Device::use_variant`.
    Forced,
}

/// The variant one family kernel uses on a device, at one size class or at every size.
#[derive(Debug, Clone)]
pub struct VariantChoice {
    /// The family kernel, `family::entry`.
    pub kernel: String,
    /// The dispatches it applies to: those of this size class (`size_class`), or None for every size
    /// without a choice of its own.
    pub size_class: Option<u32>,
    /// The variant it runs ("" for the family's own form).
    pub variant: &'static str,
    /// Where the choice came from.
    pub source: ChoiceSource,
}

/// One kernel's tuning: the candidates' best times in seconds and the winner.
#[derive(Debug, Clone)]
pub struct TuneResult {
    /// The family kernel, `family::entry`.
    pub kernel: String,
    /// The size class of the dispatches timed (`size_class`).
    pub size_class: u32,
    /// How many of the recording's dispatches of that size class ran it (each timed candidate ran
    /// all of them, up to 8).
    pub dispatches: usize,
    /// (variant, seconds) per usable candidate, "" for the family's own form.
    pub times: Vec<(&'static str, f64)>,
    /// The fastest candidate.
    pub chosen: &'static str,
    /// Whether the timing used timestamp queries (else the wall clock around submit and wait).
    pub timestamps: bool,
}

/// A family kernel (shader, entry) and the size class a choice applies to (None: every size).
type Key = (&'static str, &'static str, Option<u32>);

/// The size class of a dispatch of `groups` workgroups (x, y, z of the family's grid, before a
/// variant's larger tiles divide it): c with 2^(c-1) < x·y·z <= 2^c (0 for one workgroup).
pub fn size_class(groups: [u32; 3]) -> u32 {
    let n = groups.iter().map(|&g| g.max(1) as u64).product::<u64>();
    64 - (n - 1).leading_zeros()
}

/// The key of a cache entry: `family::entry`, then `/class` for a choice of one size class.
fn cache_name(k: &Key) -> String {
    match k.2 {
        Some(c) => format!("{}::{}/{c}", k.0, k.1),
        None => format!("{}::{}", k.0, k.1),
    }
}

/// The wgpu engine's variant state.
pub(crate) struct TuneState {
    mode: Mutex<TuneMode>,
    chosen: Mutex<HashMap<Key, (&'static Kernel, ChoiceSource)>>,
    tuned: Mutex<HashSet<Key>>,
    results: Mutex<Vec<TuneResult>>,
    /// Whether the cache has been read (once, at the first pipeline).
    loaded: Mutex<bool>,
}

impl TuneState {
    pub(crate) fn new() -> TuneState {
        // A browser has no cache file to keep choices in, and timing needs blocking waits it cannot
        // make: there the defaults run.
        let mode = if cfg!(target_arch = "wasm32") {
            TuneMode::Off
        } else {
            TuneMode::from_env().unwrap_or_else(|e| {
                eprintln!("note: {e}; tuning is off");
                TuneMode::Off
            })
        };
        TuneState {
            mode: Mutex::new(mode),
            chosen: Mutex::default(),
            tuned: Mutex::default(),
            results: Mutex::default(),
            loaded: Mutex::new(false),
        }
    }
}

/// The tuning cache file: `TIGEL_TUNE_CACHE`, else `$XDG_CACHE_HOME/tigel/tune.json`, else
/// `~/.cache/tigel/tune.json` (None where none of these is set, and in a browser).
pub fn cache_path() -> Option<PathBuf> {
    if cfg!(target_arch = "wasm32") {
        return None;
    }
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    env("TIGEL_TUNE_CACHE")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("tigel/tune.json")))
        .or_else(|| env("HOME").map(|d| d.join(".cache/tigel/tune.json")))
}

/// What a cache entry is keyed by: the adapter, its driver and this build of tigel (whose shaders and
/// variant names the choices refer to).
fn cache_key(info: &wgpu::AdapterInfo) -> Value {
    json!({
        "adapter": info.name,
        "backend": super::adapter::backend_str(info.backend),
        "vendor": info.vendor,
        "device": info.device,
        "driver": info.driver,
        "driver_info": info.driver_info,
        "tigel": concat!(env!("CARGO_PKG_VERSION"), "+", env!("TIGEL_GIT_COMMIT")),
    })
}

/// The cache file's adapters, or an empty list (with a one-line note when the file exists but cannot
/// be used).
fn read_cache(path: &std::path::Path) -> Vec<Value> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            eprintln!("note: ignoring the tuning cache {}: {e}", path.display());
            return Vec::new();
        }
    };
    match serde_json::from_str::<Value>(&text).ok().and_then(|v| v.get("adapters")?.as_array().cloned()) {
        Some(a) => a,
        None => {
            eprintln!("note: ignoring the tuning cache {}: not a tigel tuning cache", path.display());
            Vec::new()
        }
    }
}

/// The family kernel and variant called `kernel` ("family::entry") and `variant` ("" for the family).
fn lookup(kernel: &str, variant: &str) -> Option<(&'static Kernel, &'static Kernel)> {
    let base = ALL_KERNELS.iter().copied().find(|k| k.name() == kernel)?;
    let v = if variant.is_empty() { base } else { base.variants().find(|v| v.variant_name() == variant)? };
    Some((base, v))
}

impl GpuEngine {
    /// Whether this device can run variant `v` (its features and limits).
    pub(crate) fn usable(&self, v: &'static Kernel) -> bool {
        let Ok(info) = v.info() else { return false };
        let sg = v.shader_info().is_some_and(|s| s.subgroups);
        (!sg || self.subgroups) && self.check_entry(v, info).is_ok()
    }

    /// The variant `k` runs on this device at any size (itself for a kernel without variants or a
    /// variant).
    pub(crate) fn resolve(&self, k: &'static Kernel) -> &'static Kernel {
        self.resolve_sized(k, None)
    }

    /// The variant `k` runs on this device for dispatches of size class `class`: a forced choice, else
    /// the class's own, else the one for every size, else the default.
    pub(crate) fn resolve_sized(&self, k: &'static Kernel, class: Option<u32>) -> &'static Kernel {
        if k.variants().next().is_none() {
            return k;
        }
        self.load_cache();
        let chosen = self.tune.chosen.lock().unwrap();
        let all = chosen.get(&(k.shader, k.entry, None));
        if let Some((v, ChoiceSource::Forced)) = all {
            return v;
        }
        if let Some((v, _)) = class.and_then(|c| chosen.get(&(k.shader, k.entry, Some(c)))).or(all) {
            return v;
        }
        drop(chosen);
        self.default_variant(k)
    }

    /// The default variant of `k`: the first subgroup variant the device can run, else `k` itself.
    pub(crate) fn default_variant(&self, k: &'static Kernel) -> &'static Kernel {
        if self.subgroups {
            if let Some(v) = k.variants().find(|v| v.shader_info().is_some_and(|s| s.subgroups) && self.usable(v)) {
                return v;
            }
        }
        k
    }

    /// Sets the variant of family kernel `k` at size class `class` (None: every size). Pipelines are
    /// kept per exact variant, so the next lookup simply finds another one.
    fn choose(&self, k: &'static Kernel, class: Option<u32>, v: &'static Kernel, source: ChoiceSource) {
        self.tune.chosen.lock().unwrap().insert((k.shader, k.entry, class), (v, source));
    }

    /// Reads this adapter's choices from the cache once (modes cached, auto and retune).
    fn load_cache(&self) {
        let mut loaded = self.tune.loaded.lock().unwrap();
        if *loaded {
            return;
        }
        *loaded = true;
        if *self.tune.mode.lock().unwrap() == TuneMode::Off {
            return;
        }
        let Some(path) = cache_path() else { return };
        let key = cache_key(&self.info);
        let Some(entry) = read_cache(&path).into_iter().find(|e| e.get("key") == Some(&key)) else { return };
        let mut chosen = self.tune.chosen.lock().unwrap();
        for (name, variant) in entry.get("choices").and_then(Value::as_object).into_iter().flatten() {
            let (kernel, class) = match name.split_once('/') {
                Some((k, c)) => match c.parse::<u32>() {
                    Ok(c) => (k, Some(c)),
                    Err(_) => continue,
                },
                None => (name.as_str(), None),
            };
            // A kernel or variant this build no longer has, or one the device cannot run, is skipped.
            if let Some((base, v)) = lookup(kernel, variant.as_str().unwrap_or("")) {
                if std::ptr::eq(v, base) || self.usable(v) {
                    chosen.entry((base.shader, base.entry, class)).or_insert((v, ChoiceSource::Cached));
                }
            }
        }
    }

    /// Writes this adapter's tuned and cached choices into the cache file (other adapters' entries
    /// kept).
    fn save_cache(&self) -> Result<()> {
        let Some(path) = cache_path() else { return Ok(()) };
        let key = cache_key(&self.info);
        let mut choices = serde_json::Map::new();
        for (key, (v, src)) in self.tune.chosen.lock().unwrap().iter() {
            if matches!(src, ChoiceSource::Tuned | ChoiceSource::Cached) {
                choices.insert(cache_name(key), json!(v.variant_name()));
            }
        }
        let mut adapters: Vec<Value> = read_cache(&path).into_iter().filter(|e| e.get("key") != Some(&key)).collect();
        adapters.push(json!({ "key": key, "choices": choices }));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| crate::host::fs::io_err(dir, e))?;
        }
        let text = serde_json::to_string_pretty(&json!({ "format": 1, "adapters": adapters })).unwrap_or_default();
        crate::host::fs::write_atomic(&path, text.as_bytes())
    }

    /// Times the candidates of every family kernel with variants that `dispatches` use, per size class,
    /// where the mode says to (auto: those without a choice for the class; retune: those not timed yet
    /// on this device), keeps the fastest, and updates the cache. Runs before a recording is prepared,
    /// never in a step.
    pub(crate) fn tune_dispatches(&self, dispatches: &[RawDispatch]) -> Result<()> {
        let mode = *self.tune.mode.lock().unwrap();
        if matches!(mode, TuneMode::Off | TuneMode::Cached) {
            return Ok(());
        }
        self.load_cache();
        let mut todo: Vec<(&'static Kernel, u32)> = Vec::new();
        for d in dispatches {
            let (k, class) = (d.kernel, size_class(d.groups));
            if k.variants().next().is_none() || todo.iter().any(|&(t, c)| std::ptr::eq(t, k) && c == class) {
                continue;
            }
            let key = (k.shader, k.entry, Some(class));
            let chosen = self.tune.chosen.lock().unwrap();
            let decided = chosen.contains_key(&key);
            let forced = matches!(chosen.get(&(k.shader, k.entry, None)), Some((_, ChoiceSource::Forced)));
            drop(chosen);
            let timed = self.tune.tuned.lock().unwrap().contains(&key);
            if !forced && !timed && (mode == TuneMode::Retune || !decided) {
                todo.push((k, class));
            }
        }
        if todo.is_empty() {
            return Ok(());
        }
        let before = self.tune.results.lock().unwrap().len();
        for (k, class) in todo {
            let mine: Vec<&RawDispatch> = dispatches
                .iter()
                .filter(|d| std::ptr::eq(d.kernel, k) && size_class(d.groups) == class)
                .take(8)
                .collect();
            let r = self.time_candidates(k, class, &mine, mode == TuneMode::Auto)?;
            let v = lookup(&r.kernel, r.chosen).map_or(k, |(_, v)| v);
            self.choose(k, Some(class), v, ChoiceSource::Tuned);
            self.tune.tuned.lock().unwrap().insert((k.shader, k.entry, Some(class)));
            self.tune.results.lock().unwrap().push(r);
        }
        // One line per tuning (once per adapter and kernel set): which variant each kernel now runs.
        let done: Vec<String> = self.tune.results.lock().unwrap()[before..]
            .iter()
            .map(|r| format!("{}/{}={}", r.kernel, r.size_class, if r.chosen.is_empty() { "wgmem" } else { r.chosen }))
            .collect();
        let saved = match (self.save_cache(), cache_path()) {
            (Ok(()), Some(p)) => format!("; cached in {}", p.display()),
            (Ok(()), None) => String::new(),
            (Err(e), _) => format!("; the tuning cache was not written: {e}"),
        };
        eprintln!("tuned kernel variants on {}: {}{saved}", self.info.name, done.join(", "));
        Ok(())
    }

    /// Times `k` and each usable variant on `ds`, dispatches of size class `class` (best of 3 runs each
    /// when `quick`, else of 8).
    fn time_candidates(&self, k: &'static Kernel, class: u32, ds: &[&RawDispatch], quick: bool) -> Result<TuneResult> {
        let candidates: Vec<&'static Kernel> =
            std::iter::once(k).chain(k.variants().filter(|v| self.usable(v))).collect();
        let reps = if quick { 3 } else { 8 };
        let mut times = Vec::new();
        for c in candidates {
            let raw: Vec<RawDispatch> = ds.iter().map(|d| d.retarget(c)).collect();
            // A candidate the driver rejects is left out, not an error: the others still run.
            let Ok(p) = self.prepare(&raw) else { continue };
            self.replay(&p)?;
            self.wait()?;
            let mut best = f64::INFINITY;
            for _ in 0..reps {
                let s = if self.timestamps {
                    self.replay_timed(&p)?
                } else {
                    let t0 = Instant::now();
                    self.replay(&p)?;
                    self.wait()?;
                    t0.elapsed().as_secs_f64()
                };
                best = best.min(s);
            }
            times.push((c.variant_name(), best));
        }
        // Ties go to the earlier candidate: the family's own form first, then declaration order.
        let chosen = times.iter().fold(None::<(&'static str, f64)>, |b, &(n, t)| match b {
            Some((_, bt)) if bt <= t => b,
            _ => Some((n, t)),
        });
        Ok(TuneResult {
            kernel: k.name(),
            size_class: class,
            dispatches: ds.len(),
            chosen: chosen.map_or("", |c| c.0),
            times,
            timestamps: self.timestamps,
        })
    }
}

impl Device {
    fn tune_engine(&self) -> Option<&GpuEngine> {
        match &self.inner.engine {
            Engine::Gpu(g) => Some(g),
            Engine::Cpu => None,
        }
    }

    /// The tuning mode (`Off` on the CPU backend, which has no variants).
    pub fn tune_mode(&self) -> TuneMode {
        self.tune_engine().map_or(TuneMode::Off, |g| *g.tune.mode.lock().unwrap())
    }

    /// Sets the tuning mode. `Off` also drops the choices read from the cache or tuned (forced ones
    /// stay), so the defaults are used from the next pipeline on.
    pub fn set_tune_mode(&self, mode: TuneMode) {
        let Some(g) = self.tune_engine() else { return };
        *g.tune.mode.lock().unwrap() = mode;
        if mode == TuneMode::Off {
            g.tune.chosen.lock().unwrap().retain(|_, (_, s)| *s == ChoiceSource::Forced);
        }
    }

    /// Makes family kernel `k` run variant `variant` ("" for the family's own workgroup-memory form) on
    /// this device from its next pipeline on. No-op on the CPU backend; an error when the family has
    /// no such variant or this device cannot run it.
    pub fn use_variant(&self, k: &'static Kernel, variant: &str) -> Result<()> {
        let Some(g) = self.tune_engine() else { return Ok(()) };
        let (base, v) = lookup(&k.name(), variant)
            .ok_or_else(|| Error::invalid("variant", format!("{} has no variant `{variant}`", k.name())))?;
        if !std::ptr::eq(v, base) && !g.usable(v) {
            return Err(Error::invalid("variant", format!("{} cannot run on this device", v.name())));
        }
        g.choose(base, None, v, ChoiceSource::Forced);
        Ok(())
    }

    /// The variant every family kernel with variants uses on this device at every size, then at each
    /// size class with a choice of its own (smallest first, unless a forced choice overrides them all),
    /// and where each choice came from (empty on the CPU backend).
    pub fn variant_choices(&self) -> Vec<VariantChoice> {
        let Some(g) = self.tune_engine() else { return Vec::new() };
        g.load_cache();
        let chosen = g.tune.chosen.lock().unwrap().clone();
        let mut out = Vec::new();
        for k in ALL_KERNELS.iter().copied().filter(|k| k.variants().next().is_some()) {
            let all = chosen.get(&(k.shader, k.entry, None)).copied();
            let (v, source) = all.unwrap_or((g.default_variant(k), ChoiceSource::Default));
            out.push(VariantChoice { kernel: k.name(), size_class: None, variant: v.variant_name(), source });
            if source == ChoiceSource::Forced {
                continue;
            }
            let mut sized: Vec<(u32, &'static Kernel, ChoiceSource)> = chosen
                .iter()
                .filter_map(|(key, &(v, s))| (key.0 == k.shader && key.1 == k.entry).then_some((key.2?, v, s)))
                .collect();
            sized.sort_by_key(|c| c.0);
            for (c, v, source) in sized {
                out.push(VariantChoice { kernel: k.name(), size_class: Some(c), variant: v.variant_name(), source });
            }
        }
        out
    }

    /// The tunings done on this device so far, in order.
    pub fn tune_results(&self) -> Vec<TuneResult> {
        self.tune_engine().map(|g| g.tune.results.lock().unwrap().clone()).unwrap_or_default()
    }

    /// Subgroup sizes the adapter reports (min, max) when the device has SUBGROUP.
    pub fn subgroup_sizes(&self) -> Option<(u32, u32)> {
        let g = self.tune_engine()?;
        g.subgroups.then_some((g.info.subgroup_min_size, g.info.subgroup_max_size))
    }
}
