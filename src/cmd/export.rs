//! `tigel export`: a checkpoint's weights in PyTorch's conventions (`tigel::checkpoint::export`).

use std::path::PathBuf;

use tigel::checkpoint::export::export;
use tigel::checkpoint::Checkpoint;
use tigel::models::{ddpm, gan};
use tigel::{Device, Result};

/// `tigel export`'s arguments.
#[derive(clap::Args)]
pub struct ExportArgs {
    /// Run directory (or checkpoint file) of a trained GPT, GAN or diffusion model.
    #[arg(long, value_name = "RUN")]
    pub checkpoint: PathBuf,
    /// The safetensors file to write (its name must end in .safetensors); a JSON file with the config and
    /// each tensor's origin is written beside it, the extension changed to .json.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// Writes the export and says what it holds.
pub fn run(a: ExportArgs) -> Result<()> {
    let ck = Checkpoint::load(&a.checkpoint)?;
    let ck = named_ema(&ck)?;
    let ex = export(&ck)?;
    ex.write(&a.out)?;
    let values: usize = ex.tensors.values().map(|t| t.numel()).sum();
    eprintln!(
        "wrote {} ({} tensors, {values} values, {} weights) and {}",
        a.out.display(),
        ex.tensors.len(),
        if ex.metadata["ema"] == "true" { "EMA" } else { "trained" },
        tigel::checkpoint::export::Export::sidecar_path(&a.out).display()
    );
    Ok(())
}

/// The checkpoint with positional EMA names (an older tigel) renamed after the parameters, whose order
/// only the model knows: it is built (on the CPU, unused) to list them.
fn named_ema(ck: &Checkpoint) -> Result<Checkpoint> {
    let model = ck.config.get("model").cloned().unwrap_or_default();
    let (prefix, names): (&str, Vec<String>) = match ck.kind.as_str() {
        gan::KIND if ck.tensors.contains_key("g.ema.0") => {
            let m = gan::Gan::new(&Device::cpu(), gan::GanConfig::from_json(&model)?, 0)?;
            ("g.", m.g.params().into_iter().map(|p| p.name).collect())
        }
        ddpm::KIND if ck.tensors.contains_key("ema.0") => {
            let m = ddpm::Diffusion::new(&Device::cpu(), ddpm::DiffusionConfig::from_json(&model)?, 0)?;
            ("", m.params().into_iter().map(|p| p.name).collect())
        }
        _ => return Ok(ck.clone()),
    };
    Ok(ck.with_named_ema(prefix, &names.iter().map(String::as_str).collect::<Vec<_>>()).into_owned())
}
