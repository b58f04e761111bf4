//! `tigel info`

use tigel::device::adapter::{key_limits, list_adapters};
use tigel::{BackendChoice, Device, Result};

/// Lists adapters and describes the device `--backend` would give (auto when not given).
pub fn run(backend: Option<&str>, json: bool) -> Result<()> {
    let adapters = list_adapters();
    let auto = match backend {
        Some(b) => Device::new(b.parse::<BackendChoice>()?)?,
        None => Device::from_env()?,
    };
    let limits = auto.gpu_limits().map(|l| key_limits(&l));
    let features = auto.gpu_features();
    if json {
        let v = serde_json::json!({
            "tigel_version": env!("CARGO_PKG_VERSION"),
            "adapters": adapters.iter().map(|a| a.to_json()).collect::<Vec<_>>(),
            "chosen": {
                "backend": auto.backend_name(),
                "name": auto.name(),
                "note": auto.note(),
                "features": features,
                "subgroup_sizes": auto.subgroup_sizes(),
                "tune_mode": format!("{:?}", auto.tune_mode()).to_lowercase(),
                "kernel_variants": auto.variant_choices().iter().map(|c| serde_json::json!({
                    "kernel": c.kernel, "size_class": c.size_class, "variant": c.variant,
                    "source": format!("{:?}", c.source).to_lowercase(),
                })).collect::<Vec<_>>(),
                "limits": limits.map(|l| l.into_iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>()),
            },
            "cpu_threads": rayon::current_num_threads(),
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap());
        return Ok(());
    }
    println!("tigel {}", env!("CARGO_PKG_VERSION"));
    println!("adapters wgpu sees:");
    if adapters.is_empty() {
        println!("  (none)");
    }
    for a in &adapters {
        println!("  {:<44} {:<7} {:<10} {} {}", a.name, a.backend, a.device_type, a.driver, a.driver_info);
    }
    println!("cpu backend: {} threads", rayon::current_num_threads());
    println!("chosen: {}", auto.note());
    if let Some(l) = limits {
        println!("  features: {}", if features.is_empty() { "(none)".into() } else { features.join(", ") });
        for (k, v) in l {
            println!("  {k:<40} {v}");
        }
        if let Some((lo, hi)) = auto.subgroup_sizes() {
            println!("  subgroup sizes: {lo}..{hi}");
        }
        println!("kernel variants (TIGEL_TUNE={:?}; `tigel tune` times them):", auto.tune_mode());
        super::tune::print_choices(&auto);
    }
    Ok(())
}
