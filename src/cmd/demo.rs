//! `tigel demo`: every kernel family on every backend here, checked against the CPU backend.
//!
//! The CPU backend computes the reference; each GPU adapter wgpu sees (software ones included: the demo
//! names them explicitly) runs the same ops on the same inputs. A difference over the family's tolerance
//! makes the command fail.

use std::time::Instant;

use tigel::bench::demo::{max_rel_err, Inputs, CHECKS};
use tigel::device::adapter::adapters;
use tigel::ops::rng;
use tigel::{BackendChoice, Device, Error, Result};

/// Runs every check on the CPU backend and each other backend, failing on a mismatch.
pub fn run(backend: Option<&str>, n: usize) -> Result<()> {
    if !(4..=4096).contains(&n) {
        return Err(Error::invalid("demo", format!("--size {n}: choose 4..=4096")));
    }
    // Inputs from the engine's own Philox generator, made on the CPU backend.
    let cpu = Device::cpu();
    let a = rng::uniform(&cpu, &[n * n], 1, 0, -1.0, 1.0)?.to_f32(&cpu)?;
    let b = rng::uniform(&cpu, &[n * n], 2, 0, -1.0, 1.0)?.to_f32(&cpu)?;
    let inputs = Inputs { a, b, n };

    let mut devices = vec![cpu.clone()];
    match backend {
        Some(name) => {
            let choice: BackendChoice = name.parse()?;
            if choice != BackendChoice::Cpu {
                devices.push(Device::new(choice)?);
            }
        }
        None => {
            for ad in adapters(BackendChoice::Auto) {
                let info = ad.get_info();
                let choice: BackendChoice = tigel::device::adapter::backend_str(info.backend).parse()?;
                match Device::select(choice, Some(&info.name)) {
                    Ok(d) if !devices.iter().any(|x| x.name() == d.name()) => devices.push(d),
                    Ok(_) => {}
                    Err(e) => eprintln!("skipping {} ({:?}): {e}", info.name, info.backend),
                }
            }
        }
    }
    println!(
        "tigel demo: {} checks of {} kernel families (size {n}) on {} backend(s); reference: the CPU \
         backend; times: second run, upload to read-back",
        CHECKS.len(),
        {
            let mut f: Vec<&str> = CHECKS.iter().map(|c| c.family).collect();
            f.dedup();
            f.len()
        },
        devices.len()
    );
    for d in &devices {
        println!("  {}", d.note());
    }
    let mut failed = 0;
    for c in CHECKS {
        let want = (c.run)(&cpu, &inputs)?.to_f32(&cpu)?;
        for d in &devices {
            // The first run compiles pipelines; time the second (upload, kernel and read-back).
            (c.run)(d, &inputs)?.to_f32(d)?;
            let t0 = Instant::now();
            let got = (c.run)(d, &inputs)?.to_f32(d)?;
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            let err = if d.is_cpu() { 0.0 } else { max_rel_err(&got, &want) };
            let ok = err <= c.tol;
            failed += !ok as usize;
            println!(
                "{:<12} {:<22} {:<44} {:>9.2} ms   max rel err {:<9.2e} {}",
                c.family,
                c.name,
                d.name(),
                ms,
                err,
                if ok { "ok" } else { "MISMATCH" }
            );
        }
    }
    if failed > 0 {
        return Err(Error::Other(format!("{failed} check(s) differ from the CPU backend beyond tolerance")));
    }
    println!("all backends agree with the CPU backend");
    Ok(())
}
