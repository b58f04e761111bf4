//! The page's GPT training natively, printing the same report as the page (`?run=gpt&steps=N&seed=S`),
//! so the browser's losses can be compared with tigel's native engines on the same seed and data.
//!
//!     cargo run --release --example losses -- STEPS SEED [cpu|vulkan]

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let steps = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20);
    let seed = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let backend = args.get(3).cloned().unwrap_or_else(|| "cpu".into());
    let report = pollster::block_on(tigel_web::train::run("gpt", steps, seed, &backend));
    println!("{report}");
}
