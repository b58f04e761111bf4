//! A measurement bench, not a check (ignored): DDIM variants that tigel does not offer (eta > 0, other
//! timestep spacings) beside the ones it does, run on the host around a trained 2-D checkpoint's
//! network, scored with the mixture metrics (2,000 samples, host noise). docs/benchmarks.md (diffusion)
//! has the figures. Each `;`-separated run: `RUN MIXTURE host K SPACING ETA SEEDS` (SPACING: lin, trail
//! or quad; ETA < 0: the second-order multistep update) or `RUN MIXTURE ddpm - - - SEEDS`:
//!
//! TIGEL_SWEEP="runs/r8s1 ring8 host 50 lin 0 1,2,3;runs/r8s1 ring8 ddpm - - - 1" \
//!   cargo test --release --test diffusion_sweep -- --ignored --nocapture
use tigel::checkpoint::Checkpoint;
use tigel::data::mixture::Mixture;
use tigel::diffusion::{Denoiser, MAX_PERIOD, TIME_SIN_DIM};
use tigel::graph::{Graph, Plan};
use tigel::host::Rng;
use tigel::metrics::mixture_metrics;
use tigel::models::ddpm::{Diffusion, Prediction, SampleSettings, Sampler, SamplerKind};
use tigel::ops::{diffusion, layout};
use tigel::tensor::{DType, Tensor};
use tigel::Device;

fn steps_for(spacing: &str, t: usize, k: usize) -> Vec<usize> {
    let mut v: Vec<usize> = match spacing {
        "lin" => tigel::diffusion::ddim_timesteps(t, k).unwrap().into_iter().rev().collect(),
        "trail" => {
            (0..k).map(|i| ((t as f64) - (i as f64) * (t as f64) / (k as f64)).round() as usize - 1).rev().collect()
        }
        "quad" => (0..k).map(|i| ((i as f64 / (k - 1) as f64).powi(2) * (t - 1) as f64).round() as usize).collect(),
        _ => panic!(),
    };
    v.dedup();
    v.reverse();
    v
}

#[allow(clippy::too_many_arguments)]
fn host_sample(
    dev: &Device,
    m: &Diffusion,
    n: usize,
    seed: u64,
    k: usize,
    spacing: &str,
    eta: f32,
    clip: f32,
) -> Vec<f32> {
    let p = m.process();
    let abar = diffusion::schedule(dev, p.schedule, p.timesteps).unwrap().alpha_bar.to_f32(dev).unwrap();
    let xin = Tensor::empty(dev, &[n, 2], DType::F32).unwrap();
    let tin = Tensor::empty(dev, &[n], DType::U32).unwrap();
    let tsin = Tensor::empty(dev, &[n, TIME_SIN_DIM], DType::F32).unwrap();
    let mut g = Graph::new();
    let xn = g.input(&xin);
    let tn = g.input(&tsin);
    let pred = m.forward(&mut g, xn, tn, None).unwrap();
    let plan = Plan::build(dev, &g, &[pred], |_| Ok(())).unwrap();
    let mut rng = Rng::new(seed);
    let mut x: Vec<f32> = (0..2 * n).map(|_| gauss(&mut rng) as f32).collect();
    let ts = steps_for(spacing, p.timesteps, k);
    let mut prev: Option<(Vec<f64>, f64)> = None;
    for (i, &t) in ts.iter().enumerate() {
        dev.write(&tin.buf, &vec![t as u32; n]).unwrap();
        let e = diffusion::timestep_embedding(dev, &tin, TIME_SIN_DIM, MAX_PERIOD).unwrap();
        layout::copy_into(dev, &e, &tsin).unwrap();
        dev.write(&xin.buf, &x).unwrap();
        plan.run(dev).unwrap();
        let out = plan.value(pred).to_f32(dev).unwrap();
        let a = abar[t] as f64;
        let (sa, s1a) = (a.sqrt(), (1.0 - a).sqrt());
        let ap = ts.get(i + 1).map(|&q| abar[q] as f64).unwrap_or(1.0);
        let eta_i = eta as f64;
        let sigma = if ap < 1.0 { eta_i * ((1.0 - ap) / (1.0 - a) * (1.0 - a / ap)).max(0.0).sqrt() } else { 0.0 };
        if eta < 0.0 {
            // DPM-Solver++(2M)
            let lam = |a: f64| (a.sqrt() / (1.0 - a).sqrt()).ln();
            let x0s: Vec<f64> = (0..2 * n)
                .map(|j| {
                    let (xt, o) = (x[j] as f64, out[j] as f64);
                    let x0 = match p.prediction {
                        Prediction::Eps => (xt - s1a * o) / sa,
                        Prediction::V => sa * xt - s1a * o,
                    };
                    if clip > 0.0 {
                        x0.clamp(-clip as f64, clip as f64)
                    } else {
                        x0
                    }
                })
                .collect();
            if ap >= 1.0 {
                for j in 0..2 * n {
                    x[j] = x0s[j] as f32;
                }
                continue;
            }
            let h = lam(ap) - lam(a);
            let (sp, ss) = ((1.0 - ap).sqrt(), s1a);
            for j in 0..2 * n {
                let d = match &prev {
                    Some((px, ph)) => {
                        let r = ph / h;
                        (1.0 + 0.5 / r) * x0s[j] - 0.5 / r * px[j]
                    }
                    None => x0s[j],
                };
                x[j] = ((sp / ss) * x[j] as f64 - ap.sqrt() * ((-h).exp() - 1.0) * d) as f32;
            }
            prev = Some((x0s, h));
            continue;
        }
        for j in 0..2 * n {
            let xt = x[j] as f64;
            let o = out[j] as f64;
            let mut x0 = match p.prediction {
                Prediction::Eps => (xt - s1a * o) / sa,
                Prediction::V => sa * xt - s1a * o,
            };
            if clip > 0.0 {
                x0 = x0.clamp(-clip as f64, clip as f64);
            }
            let eps = (xt - sa * x0) / s1a;
            let dir = (1.0 - ap - sigma * sigma).max(0.0).sqrt();
            x[j] = (ap.sqrt() * x0 + dir * eps + sigma * gauss(&mut rng)) as f32;
        }
    }
    x.iter().map(|v| v * p.data_scale).collect()
}

fn gauss(r: &mut Rng) -> f64 {
    let u1 = (r.next_u64() >> 11) as f64 / (1u64 << 53) as f64 + 1e-300;
    let u2 = (r.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn report(tag: &str, x: &[f32], mix: Mixture, seed: u64) {
    let m = mixture_metrics(x, mix).unwrap();
    let real = mixture_metrics(&mix.sample(x.len() / 2, seed ^ 0xEA1, 1 << 40), mix).unwrap();
    let far = x.chunks(2).map(|p| p[0].abs().max(p[1].abs())).fold(0.0f32, f32::max);
    eprintln!(
        "RES {tag} seed={seed}: modes={} hq={:.4} rkl={:.4} logd={:.3} gap={:.3} farbox={:.2}",
        m.modes_covered,
        m.high_quality,
        m.reverse_kl,
        m.mean_log_density,
        real.mean_log_density - m.mean_log_density,
        far
    );
}

#[test]
#[ignore]
fn sweep() {
    let dev = Device::cpu();
    let spec = std::env::var("TIGEL_SWEEP").expect("TIGEL_SWEEP names the runs");
    for line in spec.split(';') {
        let f: Vec<&str> = line.split_whitespace().collect();
        let ck = Checkpoint::load(std::path::Path::new(f[0])).unwrap();
        let m = Diffusion::load(&dev, &ck, "m").unwrap();
        let mix = Mixture::parse(f[1]).unwrap();
        let clip = m.x0_range.unwrap();
        for seed in f[6].split(',').map(|s| s.parse::<u64>().unwrap()) {
            let t0 = std::time::Instant::now();
            let x = if f[2] == "ddpm" {
                let s = Sampler::new(&dev, &m).unwrap();
                let st = SampleSettings {
                    sampler: SamplerKind::Ddpm,
                    label: None,
                    guidance: 1.0,
                    seed,
                    clip: 0.0,
                    keep_at: vec![],
                };
                s.sample(&dev, 2000, 2000, &st).unwrap().x
            } else {
                let k: usize = f[3].parse().unwrap();
                let eta: f32 = f[5].parse().unwrap();
                host_sample(&dev, &m, 2000, seed, k, f[4], eta, clip)
            };
            report(&format!("{} {}", f[0], f[2..].join(" ")), &x, mix, seed);
            eprintln!("  {:.1}s", t0.elapsed().as_secs_f64());
        }
    }
}
