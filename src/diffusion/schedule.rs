//! Noise schedules by name, what the network predicts, and the timesteps a DDIM sampler visits.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
pub use crate::ops::diffusion::Schedule;

/// What the network predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Prediction {
    /// The noise ε.
    Eps,
    /// v = √ᾱ·ε − √(1−ᾱ)·x_0.
    V,
}

impl Prediction {
    /// `eps` or `v`.
    pub fn parse(s: &str) -> Result<Prediction> {
        match s {
            "eps" => Ok(Prediction::Eps),
            "v" => Ok(Prediction::V),
            _ => Err(Error::invalid("--prediction", format!("`{s}`: choose eps or v"))),
        }
    }

    /// The name `parse` takes.
    pub fn name(self) -> &'static str {
        match self {
            Prediction::Eps => "eps",
            Prediction::V => "v",
        }
    }
}

/// The noise schedule by name: `linear` (1e-4 to 0.02) or `cosine` (s = 0.008).
pub fn parse_schedule(s: &str) -> Result<Schedule> {
    match s {
        "linear" => Ok(Schedule::LINEAR),
        "cosine" => Ok(Schedule::COSINE),
        _ => Err(Error::invalid("--schedule", format!("`{s}`: choose linear or cosine"))),
    }
}

/// The name `parse_schedule` takes.
pub fn schedule_name(s: Schedule) -> &'static str {
    match s {
        Schedule::Linear { .. } => "linear",
        Schedule::Cosine { .. } => "cosine",
    }
}

/// (De)serializes a schedule as its name, as configs store it.
pub mod by_name {
    use super::{parse_schedule, schedule_name, Schedule};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `linear` or `cosine`.
    pub fn serialize<S: Serializer>(s: &Schedule, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(schedule_name(*s))
    }

    /// Reads `linear` or `cosine`.
    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Schedule, D::Error> {
        let name = String::deserialize(de)?;
        parse_schedule(&name).map_err(serde::de::Error::custom)
    }
}

/// The DDIM timesteps for K steps out of T: K distinct values spread evenly over 0..T-1, descending.
pub fn ddim_timesteps(timesteps: usize, k: usize) -> Result<Vec<usize>> {
    if k == 0 || k > timesteps {
        return Err(Error::invalid(
            "--sample-steps",
            format!("{k} DDIM steps: must be between 1 and the model's {timesteps} timesteps"),
        ));
    }
    let mut ts: Vec<usize> = if k == 1 {
        vec![timesteps - 1]
    } else {
        (0..k).map(|i| ((i as f64 * (timesteps - 1) as f64 / (k - 1) as f64).round()) as usize).collect()
    };
    ts.dedup();
    ts.reverse();
    Ok(ts)
}
