//! What a run's plots draw from: the numbers of its metrics lines, in memory that does not grow with
//! the steps. Keeping the lines themselves (a JSON map each, about 2 KiB) grew a long run by that much
//! per log line (the soak benchmark saw it); here each series of points is allocated once, at its
//! first value, and thinned in place when full (every other point kept, later points taken at the new
//! stride), so a run of any length holds at most [`MAX_POINTS`] points per series.

use serde_json::Value;

/// Points kept per series, at most (a loss plot is 640 pixels wide).
pub const MAX_POINTS: usize = 512;

/// One (kind, key) series: the value of `key` in the metrics lines of `kind`, against `step`.
#[derive(Clone, Debug)]
struct Series {
    kind: String,
    key: String,
    /// Points taken, in step order; never more than [`MAX_POINTS`] (capacity allocated once).
    points: Vec<(f64, f64)>,
    /// Every `stride`-th value is kept; it doubles at each thinning.
    stride: u64,
    /// Values seen since the last one kept.
    skipped: u64,
    /// The latest value when it was not kept, so a curve always ends at the latest step.
    tail: Option<(f64, f64)>,
}

impl Series {
    fn push(&mut self, p: (f64, f64)) {
        if self.skipped + 1 < self.stride {
            self.skipped += 1;
            self.tail = Some(p);
            return;
        }
        if self.points.len() == MAX_POINTS {
            // Keep every other point (the first included), in place: the allocation stays.
            let n = self.points.len();
            for j in 0..n.div_ceil(2) {
                self.points[j] = self.points[2 * j];
            }
            self.points.truncate(n.div_ceil(2));
            self.stride *= 2;
        }
        self.points.push(p);
        (self.skipped, self.tail) = (0, None);
    }
}

/// The metrics lines a run has written, as the numeric series its plots need, in bounded memory.
#[derive(Clone, Debug, Default)]
pub struct History {
    series: Vec<Series>,
}

impl History {
    /// Takes the finite numbers of a metrics line (an object with `kind` and `step`); the line itself is
    /// not kept. Lines without both are ignored.
    pub fn push(&mut self, line: Value) {
        let (Some(kind), Some(step)) = (line["kind"].as_str(), line["step"].as_f64()) else { return };
        let Value::Object(map) = &line else { return };
        for (key, v) in map.iter().filter(|(k, _)| *k != "kind" && *k != "step") {
            let Some(v) = v.as_f64().filter(|v| v.is_finite()) else { continue };
            let found = self.series.iter().position(|s| s.kind == kind && s.key == *key);
            let i = found.unwrap_or_else(|| {
                self.series.push(Series {
                    kind: kind.to_string(),
                    key: key.clone(),
                    points: Vec::with_capacity(MAX_POINTS),
                    stride: 1,
                    skipped: 0,
                    tail: None,
                });
                self.series.len() - 1
            });
            self.series[i].push((step, v));
        }
    }

    /// The (step, value) points of `key` in the lines of `kind` ("train" or "eval"), oldest first; all
    /// of them while a series has fewer than [`MAX_POINTS`], else an even thinning ending at the latest.
    pub fn points(&self, kind: &str, key: &str) -> Vec<(f64, f64)> {
        self.series
            .iter()
            .find(|s| s.kind == kind && s.key == key)
            .map(|s| s.points.iter().copied().chain(s.tail).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_every_point_until_full_then_thins_evenly_and_ends_at_the_latest() {
        let mut h = History::default();
        for s in 1..=MAX_POINTS as u64 {
            h.push(json!({"kind": "train", "step": s, "loss": s as f64 / 2.0, "note": "x"}));
            h.push(json!({"kind": "eval", "step": s, "loss": -(s as f64)}));
        }
        let p = h.points("train", "loss");
        assert_eq!(p.len(), MAX_POINTS);
        assert_eq!(p[10], (11.0, 5.5));
        assert_eq!(h.points("eval", "loss")[0], (1.0, -1.0));
        assert!(h.points("train", "note").is_empty() && h.points("train", "step").is_empty());
        let cap = h.series[0].points.capacity();
        // Ten times as many lines: still at most MAX_POINTS points, same allocation, evenly spaced.
        for s in MAX_POINTS as u64 + 1..=10 * MAX_POINTS as u64 + 3 {
            h.push(json!({"kind": "train", "step": s, "loss": s as f64 / 2.0}));
        }
        let p = h.points("train", "loss");
        assert!(p.len() <= MAX_POINTS + 1, "{}", p.len());
        assert_eq!(h.series[0].points.capacity(), cap);
        assert_eq!(p[0].0, 1.0);
        assert_eq!(p.last().unwrap().0, 10.0 * MAX_POINTS as f64 + 3.0);
        let gaps: Vec<f64> = p.windows(2).map(|w| w[1].0 - w[0].0).collect();
        assert!(gaps[..gaps.len() - 1].iter().all(|&g| g == 16.0), "{gaps:?}");
        // Non-finite values (written as null) and lines without kind or step are left out.
        h.push(json!({"kind": "train", "step": 1e9, "loss": null}));
        h.push(json!({"step": 1e9, "loss": 1.0}));
        assert_eq!(h.points("train", "loss").last().unwrap().0, 10.0 * MAX_POINTS as f64 + 3.0);
    }
}
