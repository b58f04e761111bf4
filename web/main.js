// The page: with ?run=... it runs one automated test and writes one JSON object into a new #result
// element (its appearance tells a driver that the page is done); otherwise it is the interactive demo:
// pick a regime, train it live, sample it, save and load checkpoints. ?demo=REGIME&data=D&steps=N
// drives the demo itself for N steps, samples, and writes #result (for screenshots).
import init, {
  shader_test, ops_test, train, demo_start, demo_train, demo_sample, demo_save, demo_load,
} from "./tigel_web.js";

const q = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
const status = (s) => ($("status").textContent = s);

function finish(obj) {
  const el = document.createElement("pre");
  el.id = "result";
  el.textContent = JSON.stringify(obj);
  document.body.appendChild(el);
  status(obj.ok ? "done" : "failed: " + (obj.error || ""));
}

// What the browser says of its adapter (wgpu does not pass vendor and architecture on).
async function adapterInfo() {
  if (!navigator.gpu) return null;
  const a = await navigator.gpu.requestAdapter();
  if (!a) return null;
  const i = a.info || {};
  return [i.vendor, i.architecture, i.device, i.description].filter(Boolean).join(" ") || "unnamed";
}

const NO_GPU = "This browser offers no WebGPU (navigator.gpu is missing or has no adapter): use a recent " +
  "Chrome, Edge or Safari, or Firefox with WebGPU enabled, or Chromium with --enable-unsafe-webgpu.";

// ---- automated runs ----
async function automated(run, adapter) {
  const backend = q.get("backend") || "webgpu";
  $("demo").style.display = "none";
  if (!adapter && backend !== "cpu") throw new Error(NO_GPU);
  status(`running ${run} on ${adapter || "the CPU engine"}…`);
  let out;
  if (run === "shaders") out = JSON.parse(await shader_test());
  else if (run === "ops") out = JSON.parse(await ops_test());
  else {
    const steps = parseInt(q.get("steps") || "20", 10);
    const seed = parseInt(q.get("seed") || "1", 10);
    out = JSON.parse(await train(run, q.get("data") || "ring8", steps, seed, backend));
  }
  out.adapter = adapter;
  return out;
}

// ---- the interactive demo ----
// Every call into the module waits for the one before (the session is one object).
let chain = Promise.resolve();
const serial = (f) => { const p = chain.then(f); chain = p.catch(() => {}); return p; };
const ask = async (f) => { const r = JSON.parse(await serial(f)); if (!r.ok) throw new Error(r.error); return r; };

const S = { step0: 0, live: false, running: false, names: [], hist: [], regime: "", rate: 0, lastSample: 0, text: "" };
const COLORS = ["#1f77b4", "#d62728", "#2ca02c"];

function drawCurve() {
  const c = $("curve"), g = c.getContext("2d"), W = c.width, H = c.height, m = 34;
  g.clearRect(0, 0, W, H);
  g.fillStyle = "#222"; g.font = "12px sans-serif";
  g.fillText("loss", 4, 12);
  if (!S.hist.length) return;
  const all = S.hist.flat().filter(Number.isFinite);
  let lo = Math.min(...all), hi = Math.max(...all);
  if (hi - lo < 1e-6) { hi += 0.5; lo -= 0.5; }
  const n = S.hist.length, x = (i) => m + (W - m - 8) * (n > 1 ? i / (n - 1) : 0);
  const y = (v) => H - 20 - (H - 36) * (v - lo) / (hi - lo);
  g.strokeStyle = "#999"; g.beginPath(); g.moveTo(m, 14); g.lineTo(m, H - 20); g.lineTo(W - 8, H - 20); g.stroke();
  g.fillText(hi.toFixed(3), 0, 22); g.fillText(lo.toFixed(3), 0, H - 22);
  g.fillText(`step ${S.step0 + n}`, W - 80, H - 5);
  S.names.forEach((name, k) => {
    g.strokeStyle = COLORS[k]; g.beginPath();
    S.hist.forEach((l, i) => (i ? g.lineTo(x(i), y(l[k])) : g.moveTo(x(i), y(l[k]))));
    g.stroke(); g.fillStyle = COLORS[k]; g.fillText(name, W - 60 + 0 * k, 14 + 14 * k);
  });
}

function drawPoints(r) {
  const c = $("samples"), g = c.getContext("2d"), W = c.width;
  const ext = 1.3 * Math.max(...r.modes.flat().map(Math.abs));
  const p = (v) => (v / ext + 1) * W / 2;
  g.clearRect(0, 0, W, W);
  g.fillStyle = "rgba(31,119,180,0.45)";
  for (let i = 0; i + 1 < r.points.length; i += 2) g.fillRect(p(r.points[i]) - 1, W - p(r.points[i + 1]) - 1, 2.5, 2.5);
  g.strokeStyle = "#d62728"; g.lineWidth = 2;
  for (const [mx, my] of r.modes) {
    const X = p(mx), Y = W - p(my);
    g.beginPath(); g.moveTo(X - 5, Y - 5); g.lineTo(X + 5, Y + 5); g.moveTo(X + 5, Y - 5); g.lineTo(X - 5, Y + 5); g.stroke();
  }
  g.lineWidth = 1; g.fillStyle = "#222"; g.font = "12px sans-serif";
  g.fillText("samples (blue) and the true modes (red)", 4, 12);
}

function drawImages(r) {
  const c = $("samples"), g = c.getContext("2d"), cols = 4, cell = Math.floor(c.width / cols);
  g.clearRect(0, 0, c.width, c.height);
  const tmp = document.createElement("canvas"); tmp.width = r.w; tmp.height = r.h;
  const tg = tmp.getContext("2d"), len = r.c * r.h * r.w;
  g.imageSmoothingEnabled = false;
  for (let i = 0; i < r.n; i++) {
    const img = tg.createImageData(r.w, r.h);
    for (let j = 0; j < r.h * r.w; j++) {
      for (let ch = 0; ch < 3; ch++) {
        const v = r.pixels[i * len + (r.c === 3 ? ch * r.h * r.w : 0) + j];
        img.data[4 * j + ch] = Math.max(0, Math.min(255, Math.round((v + 1) * 127.5)));
      }
      img.data[4 * j + 3] = 255;
    }
    tg.putImageData(img, 0, 0);
    g.drawImage(tmp, (i % cols) * cell + 2, Math.floor(i / cols) * cell + 2, cell - 4, cell - 4);
  }
}

async function sample() {
  const seed = 7 + S.hist.length;
  if (S.regime === "gpt") {
    // The text streams: each call continues the prompt and what came before by a few bytes.
    if (!S.text) S.text = $("prompt").value;
    for (let i = 0; i < 4; i++) {
      const r = await ask(() => demo_sample(S.text, 16, seed + i));
      S.text += r.text;
      $("text").textContent = S.text.slice(-600);
    }
    S.text = "";
    return;
  }
  const r = await ask(() => demo_sample("", 0, seed));
  if (r.kind === "points") drawPoints(r); else drawImages(r);
}

function showSession(r) {
  S.live = true; S.names = r.loss_names; S.hist = []; S.step0 = r.step; S.regime = r.regime;
  $("model").textContent = `${r.describe} · ${r.device}`;
  $("prompt-row").style.display = $("text").style.display = r.regime === "gpt" ? "" : "none";
  $("samples").style.display = r.regime === "gpt" ? "none" : "";
  ["sample", "save"].forEach((id) => ($(id).disabled = false));
  drawCurve();
}

async function startSession() {
  const [regime, data] = $("regime").value.split("/");
  status(`building the ${regime} on ${data}…`);
  showSession(await ask(() => demo_start(regime, data, parseInt($("seed").value, 10) || 1, $("backend").value)));
}

// Trains until stopped (or `until` steps), sampling every 10 s.
async function trainLoop(until) {
  if (!S.live) await startSession();
  S.running = true; $("start").disabled = true; $("stop").disabled = false;
  status("training");
  let t = performance.now(), done = 0;
  while (S.running && (until === undefined || S.hist.length < until)) {
    const r = await ask(() => demo_train(1));
    S.hist.push(...r.losses); done++;
    const now = performance.now();
    if (now - t > 1000) { S.rate = (1000 * done) / (now - t); t = now; done = 0; }
    $("step").textContent = `step ${r.step}`;
    $("loss").textContent = S.names.map((n, k) => `${n} ${r.losses[0][k].toFixed(4)}`).join("  ");
    $("rate").textContent = S.rate ? `${S.rate.toFixed(2)} steps/s` : "";
    drawCurve();
    if (now - S.lastSample > 10000 && until === undefined) { await sample(); S.lastSample = performance.now(); }
  }
  S.running = false; $("start").disabled = false; $("stop").disabled = true;
  $("start").textContent = S.live ? "resume" : "train";
  status("stopped");
}

function wire() {
  const fail = (e) => { S.running = false; $("start").disabled = false; $("stop").disabled = true; status("error: " + (e.message || e)); };
  $("start").onclick = () => trainLoop().catch(fail);
  $("stop").onclick = () => (S.running = false);
  $("reset").onclick = () => {
    S.running = false; S.live = false; S.hist = []; S.text = "";
    $("start").textContent = "train"; $("step").textContent = "step 0"; $("loss").textContent = $("rate").textContent = "";
    ["sample", "save"].forEach((id) => ($(id).disabled = true));
    $("samples").getContext("2d").clearRect(0, 0, 999, 999); $("text").textContent = "";
    drawCurve(); status("reset: press train for a new model");
  };
  $("sample").onclick = () => sample().catch(fail);
  $("save").onclick = async () => {
    try {
      const bytes = await serial(() => demo_save());
      const a = document.createElement("a");
      a.href = URL.createObjectURL(new Blob([bytes]));
      a.download = `tigel-${S.regime}-step${S.step0 + S.hist.length}.safetensors`;
      a.click();
      status(`saved ${bytes.length} bytes (tigel sample ${S.regime} --checkpoint ${a.download} reads it)`);
    } catch (e) { fail(e); }
  };
  $("load").onchange = async (ev) => {
    const f = ev.target.files[0];
    if (!f) return;
    try {
      S.running = false;
      const bytes = new Uint8Array(await f.arrayBuffer());
      showSession(await ask(() => demo_load(f.name, bytes, $("backend").value)));
      $("start").textContent = "resume";
      status(`loaded ${f.name}: step ${S.step0}`);
    } catch (e) { fail(e); }
  };
}

async function demo(adapter) {
  $("adapter").textContent = `adapter: ${adapter || "none (the CPU engine in wasm)"}`;
  if (!adapter) {
    $("nogpu").style.display = "block";
    $("nogpu").textContent = NO_GPU + " The page falls back to tigel's CPU engine in wasm (one thread, slower).";
    $("backend").value = "cpu";
    $("backend").options[0].disabled = true;
  }
  wire(); drawCurve();
  status("pick a regime and press train");
  const auto = q.get("demo");
  if (!auto) return null;
  // Automation: train `steps` steps, sample, report.
  $("regime").value = `${auto}/${q.get("data") || "ring8"}`;
  if (q.get("seed")) $("seed").value = q.get("seed");
  if (q.get("backend")) $("backend").value = q.get("backend");
  const t0 = performance.now();
  await trainLoop(parseInt(q.get("steps") || "20", 10));
  const s = performance.now();
  await sample();
  const sample_s = (performance.now() - s) / 1000;
  // The checkpoint round trip: save the session, load it back as a new one.
  const steps = S.hist.length, first = S.hist[0], last = S.hist[steps - 1];
  const bytes = await serial(() => demo_save());
  const loaded = await ask(() => demo_load("page.safetensors", bytes, $("backend").value));
  const [hist, step0] = [S.hist, S.step0];
  showSession(loaded);
  [S.hist, S.step0] = [hist, step0];
  drawCurve();
  status(`trained ${steps} steps; saved and loaded the checkpoint (${bytes.length} bytes)`);
  return { ok: loaded.step === steps, webgpu: !!adapter, backend: $("backend").value, regime: S.regime, data: q.get("data") || "ring8", steps, adapter,
    first_loss: first, last_loss: last, seconds: (s - t0) / 1000, sample_s,
    checkpoint_bytes: bytes.length, loaded_step: loaded.step };
}

async function main() {
  const adapter = await adapterInfo().catch(() => null);
  await init();
  const run = q.get("run");
  return run ? automated(run, adapter) : demo(adapter);
}

main().then((out) => out && finish(out), (e) => finish({ ok: false, error: String(e && e.stack ? e.stack : e) }));
