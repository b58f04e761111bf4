//! Data-parallel training through MPI, end to end: `mpirun -np 2 tigel --backend cpu train ...` against
//! one process with the same global batch, for every regime (the same losses at every logged step and
//! the same checkpoint, within the tolerances below), resume across rank counts, an indivisible batch
//! refused, and a rank killed mid-run (the survivors end within a bounded time; the checkpoint loads).
//!
//! It needs `mpirun` and a tigel built with the `mpi` feature: `TIGEL_MPI_BIN` names one (.ci/run builds
//! it), else the test builds it into `<target>/mpi` (its own target directory: the `cargo test` that
//! runs this holds the build lock of its own; the first build there compiles the dependencies again).
//! Without `mpirun` the tests pass with a note, except under `CI=true`, where they fail.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use tigel::checkpoint::Checkpoint;

/// Largest relative difference allowed between a 2-rank and a 1-process loss at a logged step: the two
/// differ only in the order of the sums (the batch mean split in two halves, then averaged).
const LOSS_RTOL: f64 = 1e-4;
/// Largest difference allowed between a 2-rank and a 1-process checkpoint tensor (weights, optimizer
/// moments, EMA), relative to the tensor's largest magnitude (at least `CK_FLOOR`): single gradient
/// elements (an embedding row summed over the batch) differ more than the loss in their last bits, and
/// training carries the difference on (at the GPT's `--lr 1e-3` below the largest measured is 6e-5;
/// `TIGEL_MPI_DIAG=1` prints them).
const CK_RTOL: f64 = 1e-3;
const CK_FLOOR: f64 = 1e-6;
/// The survivors of a killed rank must be gone within this.
const KILL_BOUND: Duration = Duration::from_secs(60);

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// `mpirun`, when there is one; under CI=true its absence fails the test.
fn mpirun() -> Option<&'static str> {
    let ok = Command::new("mpirun").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    match ok {
        Ok(s) if s.success() => Some("mpirun"),
        _ if ci() => panic!("CI=true but `mpirun` is missing: install openmpi-bin and libopenmpi-dev (.ci/run does)"),
        _ => {
            eprintln!("note: no `mpirun` here; the MPI tests are skipped (install openmpi-bin and libopenmpi-dev)");
            None
        }
    }
}

/// The target directory this test was built into (`<target>/<profile>/deps/mpi-HASH`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    exe.ancestors().nth(3).expect("target/<profile>/deps/test").to_path_buf()
}

/// A tigel built with the `mpi` feature: `TIGEL_MPI_BIN`, else built once into `<target>/mpi`.
fn binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(b) = std::env::var_os("TIGEL_MPI_BIN").filter(|b| !b.is_empty()) {
            let b = PathBuf::from(b);
            assert!(b.is_file(), "TIGEL_MPI_BIN={} is not a file", b.display());
            return b;
        }
        let dir = target_dir().join("mpi");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--features", "mpi", "--bin", "tigel", "--target-dir"])
            .arg(&dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build --features mpi");
        assert!(status.success(), "cargo build --features mpi failed (needs libopenmpi-dev and libclang-dev)");
        dir.join("debug").join("tigel")
    })
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tigel-mpi-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn command(ranks: usize) -> Command {
    let mut c = if ranks > 1 {
        let mut c = Command::new("mpirun");
        c.args(["--allow-run-as-root", "--oversubscribe", "-np", &ranks.to_string()]).arg(binary());
        c
    } else {
        Command::new(binary())
    };
    c.env_remove("TIGEL_BACKEND").env_remove("TIGEL_ADAPTER").arg("--backend").arg("cpu");
    c
}

/// Runs `tigel --backend cpu ARGS` on `ranks` ranks (1: a plain process), asserting success.
fn train(ranks: usize, args: &[String], out: &Path) -> Output {
    let o = command(ranks).args(args).arg("--out").arg(out).output().expect("run tigel");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{ranks} rank(s), {args:?} failed:\n{err}");
    o
}

/// The training lines of a run directory's metrics.jsonl.
fn train_lines(dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).expect("metrics.jsonl");
    text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).filter(|v| v["kind"] == "train").collect()
}

/// Every logged step's losses (and gradient norms) agree within [`LOSS_RTOL`].
fn assert_same_losses(what: &str, a: &Path, b: &Path) {
    let (la, lb) = (train_lines(a), train_lines(b));
    assert!(!la.is_empty(), "{what}: no training lines");
    assert_eq!(
        la.iter().map(|l| l["step"].as_u64()).collect::<Vec<_>>(),
        lb.iter().map(|l| l["step"].as_u64()).collect::<Vec<_>>(),
        "{what}: the logged steps differ"
    );
    let mut compared = 0;
    for (x, y) in la.iter().zip(&lb) {
        for (k, v) in x.as_object().unwrap() {
            if !(k.starts_with("loss") || k.starts_with("grad_norm")) {
                continue;
            }
            let (p, q) = (v.as_f64().unwrap(), y[k].as_f64().unwrap_or(f64::NAN));
            let rel = (p - q).abs() / p.abs().max(1e-6);
            assert!(
                rel <= LOSS_RTOL,
                "{what}: step {} `{k}`: {p} vs {q} (relative {rel:.2e} > {LOSS_RTOL:e})",
                x["step"]
            );
            compared += 1;
        }
    }
    assert!(compared >= la.len(), "{what}: no loss keys compared");
}

/// The two checkpoints hold the same tensors and step, equal within [`CK_RTOL`].
fn assert_same_checkpoint(what: &str, a: &Path, b: &Path) {
    let (ca, cb) = (
        Checkpoint::load(&a.join("checkpoint.safetensors")).unwrap(),
        Checkpoint::load(&b.join("checkpoint.safetensors")).unwrap(),
    );
    assert_eq!(ca.step, cb.step, "{what}: checkpoint steps differ");
    assert_eq!(
        ca.tensors.keys().collect::<Vec<_>>(),
        cb.tensors.keys().collect::<Vec<_>>(),
        "{what}: tensor names differ"
    );
    for (name, x) in &ca.tensors {
        let y = &cb.tensors[name];
        assert_eq!(x.shape, y.shape, "{what}: `{name}` shapes differ");
        if x.dtype != tigel::DType::F32 {
            assert_eq!(x.data, y.data, "{what}: `{name}` differs");
            continue;
        }
        let values =
            |h: &tigel::checkpoint::HostTensor| h.data.iter().map(|&w| f32::from_bits(w) as f64).collect::<Vec<_>>();
        let (p, q) = (values(x), values(y));
        let scale = p.iter().fold(CK_FLOOR, |m, v| m.max(v.abs()));
        let (i, diff) =
            p.iter()
                .zip(&q)
                .map(|(a, b)| (a - b).abs())
                .enumerate()
                .fold((0, 0.0), |m, d| if d.1 > m.1 { d } else { m });
        if std::env::var_os("TIGEL_MPI_DIAG").is_some() {
            eprintln!("{what}: {name}: {:.2e}", diff / scale);
        }
        assert!(
            diff <= CK_RTOL * scale,
            "{what}: `{name}`[{i}]: {} vs {} (difference {diff:.2e} > {CK_RTOL:e} × the tensor's largest magnitude {scale:.3e})",
            p[i],
            q[i]
        );
    }
}

/// The GPT at a modest learning rate: the 10-step halves of the resume test warm up to it in 10 steps,
/// and a higher rate amplifies the order-of-sums differences past the tolerance within 20 steps.
const GPT: &[&str] = &[
    "train",
    "gpt",
    "--lr",
    "1e-3",
    "--layers",
    "1",
    "--width",
    "32",
    "--heads",
    "2",
    "--context",
    "32",
    "--batch",
    "8",
    "--log-every",
    "5",
    "--eval-every",
    "10",
    "--eval-windows",
    "4",
    "--sample-tokens",
    "0",
];
const GAN: &[&str] = &[
    "train",
    "gan",
    "--data",
    "ring8",
    "--width",
    "32",
    "--depth",
    "2",
    "--batch",
    "32",
    "--steps",
    "30",
    "--log-every",
    "5",
    "--eval-every",
    "30",
];
const DIFFUSION: &[&str] = &[
    "train",
    "diffusion",
    "--data",
    "ring8",
    "--hidden",
    "32",
    "--layers",
    "2",
    "--batch",
    "32",
    "--steps",
    "30",
    "--log-every",
    "5",
    "--eval-every",
    "30",
];

/// `args` and then `more`, as owned strings (the GPT trains on the embedded text).
fn with(args: &[&str], more: &[&str]) -> Vec<String> {
    args.iter().chain(more).map(|s| s.to_string()).collect()
}

/// Replaces the value of `flag` in `args`.
fn set(args: &mut [String], flag: &str, value: &str) {
    let at = args.iter().position(|a| a == flag).expect("the flag is there");
    args[at + 1] = value.to_string();
}

fn same_as_one_process(name: &str, args: &[String]) {
    if mpirun().is_none() {
        return;
    }
    let d = scratch(name);
    let (one, two) = (d.join("one"), d.join("two"));
    train(1, args, &one);
    let o = train(2, args, &two);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("rank 0/2:") && err.contains("rank 1/2:"), "each rank says which device it took:\n{err}");
    assert!(err.contains("data-parallel:"), "rank 0 reports the allreduce time:\n{err}");
    assert_same_losses(name, &one, &two);
    assert_same_checkpoint(name, &one, &two);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn gpt_on_two_ranks_equals_one_process() {
    same_as_one_process("gpt", &with(GPT, &["--steps", "20"]));
}

#[test]
fn gan_on_two_ranks_equals_one_process() {
    same_as_one_process("gan", &with(GAN, &[]));
}

#[test]
fn diffusion_on_two_ranks_equals_one_process() {
    same_as_one_process("diffusion", &with(DIFFUSION, &[]));
}

/// A checkpoint of 2 ranks resumes on 1 and one of 1 on 2: either continues as a resumed single process
/// does (10 steps, then 10 more resumed).
#[test]
fn resume_across_rank_counts() {
    if mpirun().is_none() {
        return;
    }
    let d = scratch("resume");
    let halves = |first: usize, then: usize| {
        let dir = d.join(format!("{first}-then-{then}"));
        train(first, &with(GPT, &["--steps", "10"]), &dir);
        let mut args = with(GPT, &["--steps", "10", "--resume"]);
        args.push(dir.display().to_string());
        train(then, &args, &dir);
        dir
    };
    let one = halves(1, 1);
    for (first, then) in [(2, 1), (1, 2)] {
        let dir = halves(first, then);
        assert_same_losses(&format!("{first} rank(s), then {then}"), &one, &dir);
        assert_same_checkpoint(&format!("{first} rank(s), then {then}"), &one, &dir);
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn an_indivisible_batch_is_refused() {
    if mpirun().is_none() {
        return;
    }
    let d = scratch("indivisible");
    let mut args = with(GPT, &["--steps", "5"]);
    set(&mut args, "--batch", "7");
    let o = command(2).args(&args).arg("--out").arg(&d).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "--batch 7 on 2 ranks must fail");
    assert!(err.contains("--batch 7 (the global batch) does not divide among 2 ranks"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

/// The processes whose parent is `parent`, with their MPI rank (from their environment).
fn ranks_of(parent: u32) -> Vec<(u32, Option<u32>)> {
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // The parent's pid is the second field after the command's closing parenthesis.
        let ppid = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid != Some(parent) {
            continue;
        }
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let rank = env
            .split(|&b| b == 0)
            .find_map(|kv| std::str::from_utf8(kv).ok()?.strip_prefix("OMPI_COMM_WORLD_RANK=")?.parse().ok());
        out.push((pid, rank));
    }
    out
}

/// Rank 1 killed mid-run: mpirun and rank 0 end, non-zero, within [`KILL_BOUND`]; the last checkpoint
/// rank 0 wrote still loads.
#[test]
fn a_killed_rank_ends_the_run() {
    if mpirun().is_none() || !cfg!(target_os = "linux") {
        return;
    }
    let d = scratch("kill");
    let mut args = with(GPT, &["--steps", "100000"]);
    set(&mut args, "--eval-every", "5");
    let mut child =
        command(2).args(&args).arg("--out").arg(&d).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let ck = d.join("checkpoint.safetensors");
    let started = Instant::now();
    while !ck.exists() {
        assert!(started.elapsed() < Duration::from_secs(120), "no checkpoint after 120 s");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it was killed");
        std::thread::sleep(Duration::from_millis(100));
    }
    let procs = ranks_of(child.id());
    let victim = procs.iter().find(|p| p.1 == Some(1)).map(|p| p.0).expect("rank 1 among mpirun's children");
    let survivor = procs.iter().find(|p| p.1 == Some(0)).map(|p| p.0).expect("rank 0 among mpirun's children");
    let killed = Instant::now();
    assert!(Command::new("kill").args(["-9", &victim.to_string()]).status().unwrap().success());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(killed.elapsed() < KILL_BOUND, "mpirun still running {KILL_BOUND:?} after rank 1 was killed");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "mpirun must fail when a rank dies:\n{err}");
    while Path::new(&format!("/proc/{survivor}")).exists() {
        assert!(killed.elapsed() < KILL_BOUND, "rank 0 still running {KILL_BOUND:?} after rank 1 was killed");
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("rank 0 and mpirun ended {:.1} s after rank 1 was killed", killed.elapsed().as_secs_f64());
    let loaded = Checkpoint::load(&ck).expect("the last checkpoint loads");
    assert!(loaded.step >= 5 && loaded.step.is_multiple_of(5), "checkpoint at step {}", loaded.step);
    let _ = std::fs::remove_dir_all(&d);
}
