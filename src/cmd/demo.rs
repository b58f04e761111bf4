//! `tigel demo`: every kernel family on every backend here, checked against the CPU backend.
//!
//! The CPU backend computes the reference; each GPU adapter wgpu sees (software ones included: the demo
//! names them explicitly) runs the same ops on the same inputs. A difference over the family's tolerance
//! makes the command fail.

use std::time::Instant;

use tigel::device::adapter::adapters;
use tigel::ops::{elementwise as ew, layout, matmul, reduce, rng, softmax};
use tigel::{BackendChoice, Device, Error, Result, Tensor};

struct Check {
    name: &'static str,
    /// Max |got - want| allowed, relative to max |want| (0: bit-exact).
    tol: f32,
    run: fn(&Device, &Inputs) -> Result<Tensor>,
}

struct Inputs {
    a: Vec<f32>,
    b: Vec<f32>,
    n: usize,
}

fn t(d: &Device, shape: &[usize], v: &[f32]) -> Result<Tensor> {
    Tensor::from_f32(d, shape, v)
}

const CHECKS: &[Check] = &[
    Check {
        name: "matmul",
        tol: 1e-5,
        run: |d, i| matmul::matmul(d, &t(d, &[i.n, i.n], &i.a)?, &t(d, &[i.n, i.n], &i.b)?, Default::default()),
    },
    Check {
        name: "matmul (B transposed)",
        tol: 1e-5,
        run: |d, i| {
            let opts = matmul::MatmulOpts { trans_b: true, ..Default::default() };
            matmul::matmul(d, &t(d, &[i.n, i.n], &i.a)?, &t(d, &[i.n, i.n], &i.b)?, opts)
        },
    },
    Check {
        name: "gelu(a) * b + a",
        tol: 1e-5,
        run: |d, i| {
            let (a, b) = (t(d, &[i.n, i.n], &i.a)?, t(d, &[i.n, i.n], &i.b)?);
            ew::add(d, &ew::mul(d, &ew::unary(d, ew::Unary::Gelu, &a)?, &b)?, &a)
        },
    },
    Check { name: "softmax rows", tol: 1e-5, run: |d, i| softmax::softmax(d, &t(d, &[i.n, i.n], &i.a)?) },
    Check { name: "sum over rows", tol: 1e-5, run: |d, i| reduce::sum(d, &t(d, &[i.n, i.n], &i.a)?, 0, false) },
    Check { name: "transpose", tol: 0.0, run: |d, i| layout::transpose2d(d, &t(d, &[i.n, i.n], &i.a)?) },
    Check { name: "philox normal", tol: 0.0, run: |d, i| rng::normal(d, &[i.n, i.n], 7, 0, 0.0, 1.0) },
];

fn max_rel_err(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    got.iter()
        .zip(want)
        .fold(0f32, |m, (g, w)| if g.is_nan() != w.is_nan() { f32::INFINITY } else { m.max((g - w).abs()) })
        / scale
}

/// Runs every check on the CPU backend and each other backend, failing on a mismatch.
pub fn run(backend: Option<&str>, n: usize) -> Result<()> {
    if n == 0 || n > 4096 {
        return Err(Error::invalid("demo", format!("--size {n}: choose 1..=4096")));
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
        "tigel demo: {} kernel checks at {n}x{n} on {} backend(s); reference: the CPU backend; \
         times: second run, upload to read-back",
        CHECKS.len(),
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
                "{:<22} {:<44} {:>9.2} ms   max rel err {:<9.2e} {}",
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
