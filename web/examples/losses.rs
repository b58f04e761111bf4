//! The page's training natively, printing the same report as the page
//! (`?run=REGIME&steps=N&seed=S&data=DATA`), so the browser's losses can be compared with tigel's
//! native engines on the same seed and data.
//!
//!     cargo run --release --example losses -- [gpt|gan|diffusion] STEPS SEED [cpu|vulkan] [ring8|shapes]

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, d: &str| args.get(i).cloned().unwrap_or_else(|| d.to_string());
    let regime = arg(1, "gpt");
    let steps = arg(2, "20").parse().unwrap_or(20);
    let seed = arg(3, "1").parse().unwrap_or(1);
    let (backend, data) = (arg(4, "cpu"), arg(5, "ring8"));
    let report = pollster::block_on(tigel_web::train::run(&regime, &data, steps, seed, &backend));
    println!("{report}");
    if report["ok"] != true {
        std::process::exit(1);
    }
}
