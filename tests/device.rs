//! The device layer: backend choice, limits, poisoning, pooling, recordings, downloads, embedding.
mod common;
use common::*;
use tigel::device::{BackendChoice, Dispatch, POISON};
use tigel::kernels::elementwise::UNARY;
use tigel::ops::elementwise::{self as ew, Unary};
use tigel::{Device, Error, Tensor};

#[test]
fn unknown_backend_name_is_an_error_listing_the_choices() {
    let e = "vulcan".parse::<BackendChoice>().unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::UnknownBackend(_)));
    assert!(msg.contains("vulcan") && msg.contains("auto, vulkan, metal, dx12, gl, webgpu, cpu"), "{msg}");
    for ok in ["auto", "vulkan", "metal", "dx12", "gl", "cpu", "CPU"] {
        ok.parse::<BackendChoice>().unwrap();
    }
}

#[test]
fn missing_adapter_is_an_error_naming_the_filter_and_what_was_seen() {
    let e = Device::select(BackendChoice::Vulkan, Some("no-such-gpu-xyz")).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::AdapterNotFound { .. }), "{msg}");
    assert!(msg.contains("no-such-gpu-xyz") && msg.contains("adapters seen"), "{msg}");
}

#[test]
fn auto_never_takes_a_software_adapter() {
    let d = Device::select(BackendChoice::Auto, None).unwrap();
    if let Some(info) = d.adapter_info() {
        assert_ne!(info.device_type, wgpu::DeviceType::Cpu, "auto chose a software adapter: {}", d.note());
    } else {
        assert!(d.note().contains("cpu"), "{}", d.note());
    }
}

#[test]
fn buffers_over_the_limit_are_refused_with_the_limit_named() {
    let mut devs = vec![Device::cpu()];
    devs.extend(gpu());
    for d in devs {
        let words = (d.max_buffer_bytes() / 4 + 1) as usize;
        let e = d.alloc(words).unwrap_err();
        assert!(matches!(e, Error::LimitExceeded { .. }), "{e}");
        assert!(e.to_string().contains("limit"), "{e}");
    }
}

#[test]
fn dispatch_over_the_workgroup_limit_is_refused() {
    let mut devs = vec![Device::cpu()];
    devs.extend(gpu());
    for d in devs {
        let x = Tensor::from_f32(&d, &[4], &[1.0; 4]).unwrap();
        let out = d.alloc(4).unwrap();
        let p = tigel::kernels::elementwise::UnaryParams { n: 4, ..Default::default() };
        let groups = [d.max_groups_per_dim() + 1, 1, 1];
        let e = d.dispatch(Dispatch::new(&UNARY, &p, &[&x.buf, &out], groups)).unwrap_err();
        assert!(e.to_string().contains("max_compute_workgroups_per_dimension"), "{e}");
        // Wrong number of buffers and an output bound twice are refused too.
        let e = d.dispatch(Dispatch::new(&UNARY, &p, &[&x.buf], [1, 1, 1])).unwrap_err();
        assert!(e.to_string().contains("takes 2 buffers"), "{e}");
        let e = d.dispatch(Dispatch::new(&UNARY, &p, &[&out, &out], [1, 1, 1])).unwrap_err();
        assert!(e.to_string().contains("also bound"), "{e}");
    }
}

#[test]
fn poisoned_buffers_read_back_as_poison_on_both_engines() {
    let mut devs = vec![cpu()];
    devs.extend(gpu());
    for d in devs {
        let b = d.alloc(1000).unwrap();
        assert!(d.read_u32(&b).unwrap().iter().all(|&w| w == POISON), "{}", d.name());
    }
}

#[test]
fn gpu_buffers_are_pooled_across_steps() {
    let Some(d) = gpu() else { return };
    let x = Tensor::from_f32(&d, &[1000], &vec![0.5; 1000]).unwrap();
    let _warm = ew::unary(&d, Unary::Exp, &x).unwrap();
    drop(_warm);
    let before = d.stats().buffers_created;
    for _ in 0..20 {
        let y = ew::unary(&d, Unary::Exp, &x).unwrap();
        drop(y);
    }
    assert_eq!(d.stats().buffers_created, before, "outputs of a repeated op should come from the pool");
}

#[test]
fn a_recording_replays_with_one_submission_and_no_wait() {
    let Some(d) = gpu() else { return };
    let c = cpu();
    let mut rng = Rng::new(seed());
    let data = rng.vec(5000, -2.0, 2.0);
    let run = |d: &Device, reps: usize| -> Vec<f32> {
        // x <- tanh(x) * 1.5, three dispatches per replay.
        let x = Tensor::from_f32(d, &[5000], &data).unwrap();
        let t = d.alloc(5000).unwrap();
        let n = 5000u32;
        let tanh = tigel::kernels::elementwise::UnaryParams { n, op: Unary::Tanh as u32, ..Default::default() };
        let scale = tigel::kernels::elementwise::ScalarParams { n, op: 2, s: 1.5, ..Default::default() };
        let copy = tigel::kernels::elementwise::UnaryParams { n, op: 99, ..Default::default() }; // default arm: identity
        let g = tigel::kernels::groups_1d(5000, 256, d.max_groups_per_dim());
        let t2 = d.alloc(5000).unwrap();
        let rec = d
            .record(vec![
                Dispatch::new(&UNARY, &tanh, &[&x.buf, &t], g),
                Dispatch::new(&tigel::kernels::elementwise::SCALAR, &scale, &[&t, &t2], g),
                Dispatch::new(&UNARY, &copy, &[&t2, &x.buf], g),
            ])
            .unwrap();
        d.flush().unwrap();
        let s0 = d.stats();
        for _ in 0..reps {
            d.replay(&rec).unwrap();
        }
        let s1 = d.stats();
        if !d.is_cpu() {
            assert_eq!(s1.submissions - s0.submissions, reps as u64, "one submission per replay");
            assert_eq!(s1.blocking_waits, s0.blocking_waits, "no wait inside replays");
        }
        x.to_f32(d).unwrap()
    };
    assert_close("3 replays", &run(&d, 3), &run(&c, 3), 1e-5, 1e-5);
}

#[test]
fn downloads_complete_asynchronously() {
    let Some(d) = gpu() else { return };
    let x = Tensor::from_f32(&d, &[3], &[1.0, 2.0, 3.0]).unwrap();
    let y = ew::unary(&d, Unary::Square, &x).unwrap();
    let mut dl = d.download(&y.buf).unwrap();
    let waits = d.stats().blocking_waits;
    let t0 = std::time::Instant::now();
    while !dl.ready().unwrap() {
        assert!(t0.elapsed().as_secs() < 60, "download never became ready");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(d.stats().blocking_waits, waits);
    let v: Vec<f32> = bytemuck::cast_vec(dl.wait().unwrap());
    assert_eq!(&v[..3], &[1.0, 4.0, 9.0]);
}

#[test]
fn embeds_in_an_application_owned_wgpu_device() {
    let Some(probe) = gpu() else { return };
    let backend = probe.adapter_info().unwrap().backend;
    drop(probe);
    // The application makes its own instance, adapter, device and queue...
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::from(backend),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapter = pollster::block_on(
        instance.request_adapter(&wgpu::RequestAdapterOptions { force_fallback_adapter: false, ..Default::default() }),
    )
    .unwrap();
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default())).unwrap();
    // ...and hands clones to tigel, keeping its own handles.
    let d = Device::from_wgpu(device.clone(), queue.clone(), adapter.get_info()).unwrap();
    let x = Tensor::from_f32(&d, &[4], &[1.0, -2.0, 3.0, -4.0]).unwrap();
    let y = ew::unary(&d, Unary::Relu, &x).unwrap();
    assert_eq!(y.to_f32(&d).unwrap(), vec![1.0, 0.0, 3.0, 0.0]);
    // The application's device is still usable for its own work.
    let own = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("app"),
        size: 16,
        usage: wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    queue.write_buffer(&own, 0, &[0u8; 16]);
    queue.submit([]);
}

/// A chain of eager ops captured once: intermediates dropped inside the capture share memory, the
/// replay recomputes from the current input, and the memory plan is known before the first replay.
#[test]
fn capture_plans_memory_and_replays_with_new_inputs() {
    let mut devs = vec![cpu()];
    devs.extend(gpu());
    let mut rng = Rng::new(seed());
    let n = 100_000;
    let x0 = rng.vec(n, -2.0, 2.0);
    let x1 = rng.vec(n, -2.0, 2.0);
    let mut outs = Vec::new();
    for d in &devs {
        let x = Tensor::from_f32(d, &[n], &x0).unwrap();
        let (y, rec) = d
            .capture(|| {
                let mut t = ew::unary(d, Unary::Tanh, &x)?;
                for _ in 0..6 {
                    t = ew::scalar(d, ew::Binary::Mul, &t, 1.1, false)?; // the previous `t` dies here
                }
                ew::unary(d, Unary::Exp, &t)
            })
            .unwrap();
        // 8 tensors of 400 kB were made, at most 2 are live at once.
        let bytes = (n * 4) as u64;
        assert_eq!(rec.planned_peak_bytes, 2 * bytes, "{}", d.name());
        assert!(rec.allocated_bytes as f64 <= 1.2 * rec.planned_peak_bytes as f64, "{}", rec.allocated_bytes);
        assert!(matches!(d.write(&x.buf, &x0), Ok(())));
        // Nothing ran during the capture: y is only written by replays.
        d.replay(&rec).unwrap();
        let first = y.to_f32(d).unwrap();
        d.write(&x.buf, &x1).unwrap();
        d.replay(&rec).unwrap();
        let second = y.to_f32(d).unwrap();
        let want = |x: &[f32]| -> Vec<f32> { x.iter().map(|v| (v.tanh() * 1.1f32.powi(6)).exp()).collect() };
        assert_close("replay 1", &first, &want(&x0), 1e-4, 1e-4);
        assert_close("replay 2", &second, &want(&x1), 1e-4, 1e-4);
        outs.push(second);
    }
    if outs.len() == 2 {
        assert_close("gpu vs cpu", &outs[1], &outs[0], 1e-5, 1e-5);
    }
}

#[test]
fn uploads_and_downloads_inside_a_capture_are_errors() {
    let d = Device::cpu();
    let x = Tensor::from_f32(&d, &[2], &[1.0, 2.0]).unwrap();
    let r = d.capture(|| Tensor::from_f32(&d, &[1], &[1.0]));
    assert!(r.unwrap_err().to_string().contains("uploads cannot be captured"));
    let r = d.capture(|| x.to_f32(&d));
    assert!(r.unwrap_err().to_string().contains("downloads cannot be captured"));
    // The device is usable again afterwards.
    assert_eq!(x.to_f32(&d).unwrap(), vec![1.0, 2.0]);
}
