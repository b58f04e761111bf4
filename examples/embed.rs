//! The MLP of examples/mlp.rs trained on a wgpu device that the application created itself, as an
//! application that renders with wgpu would: tigel borrows the device and queue and leaves them usable.
//!
//!     cargo run --release --example embed          # WGPU_BACKEND-style choice: TIGEL_EMBED_BACKEND=vulkan|gl|...

use tigel::data::toy::spirals;
use tigel::graph::Graph;
use tigel::models::mlp::{Mlp, MlpConfig};
use tigel::nn::Activation;
use tigel::optim::{OptimizerKind, Schedule};
use tigel::train::{TrainConfig, Trainer};
use tigel::wgpu;
use tigel::{Device, Error, Result, Tensor};

fn main() -> Result<()> {
    // The application's own wgpu setup (any adapter, software ones included).
    let backends = match std::env::var("TIGEL_EMBED_BACKEND").as_deref() {
        Ok("gl") => wgpu::Backends::GL,
        Ok("metal") => wgpu::Backends::METAL,
        Ok("dx12") => wgpu::Backends::DX12,
        _ => wgpu::Backends::PRIMARY,
    };
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
        .map_err(|e| Error::Other(format!("the application found no adapter: {e}")))?;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("application device"),
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .map_err(|e| Error::DeviceRequest(e.to_string()))?;

    // tigel on that device.
    let dev = Device::from_wgpu(device.clone(), queue.clone(), adapter.get_info())?;
    eprintln!("{}", dev.note());

    let (xy, labels) = spirals(256, 0);
    let x = Tensor::from_f32(&dev, &[256, 2], &xy)?;
    let y = Tensor::from_u32(&dev, &[256], &labels)?;
    let mlp = Mlp::new(&dev, &MlpConfig { sizes: vec![2, 64, 64, 2], activation: Activation::Tanh }, 1)?;
    let mut g = Graph::new();
    let (xn, yn) = (g.input(&x), g.input(&y));
    let logits = mlp.forward(&mut g, xn)?;
    let loss = g.cross_entropy_mean(logits, yn)?;
    let cfg = TrainConfig {
        optimizer: OptimizerKind::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 },
        schedule: Schedule::Constant { lr: 1e-2 },
        clip: None,
        ema: None,
        loss_scale: None,
    };
    let trainer = Trainer::new(&dev, g, loss, mlp.params(), cfg)?;
    for step in 1..=300 {
        trainer.step(&dev)?;
        if step % 100 == 0 {
            let l: Vec<f32> = bytemuck::cast_vec(trainer.read_loss(&dev)?.wait()?);
            println!("step {step:3}  loss {:.4}", l[0]);
        }
    }

    // The application keeps using its device for its own work, e.g. reading the trained weights
    // straight from tigel's buffers into a buffer of its own.
    let w = &mlp.layers[0].w.tensor;
    let (tdev, _) = dev.wgpu().expect("a wgpu device");
    assert!(tdev == &device, "tigel works on the application's device");
    let own = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("application buffer"),
        size: (w.numel() * 4) as u64,
        usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
        mapped_at_creation: false,
    });
    dev.flush()?;
    let mut enc = device.create_command_encoder(&Default::default());
    enc.copy_buffer_to_buffer(dev.raw_buffer(&w.buf).expect("a GPU buffer"), 0, &own, 0, (w.numel() * 4) as u64);
    queue.submit([enc.finish()]);
    own.slice(..).map_async(wgpu::MapMode::Read, |_| {});
    device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::Gpu(e.to_string()))?;
    let first: Vec<f32> = bytemuck::cast_slice(&own.slice(..).get_mapped_range().unwrap()[..16]).to_vec();
    println!("first weights, read by the application itself: {first:?}");
    Ok(())
}
