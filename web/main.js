// Runs what the query asks for and writes one JSON object into a new #result element (its appearance
// tells an automated driver that the page is done).
import init, { shader_test, ops_test, train } from "./tigel_web.js";

const q = new URLSearchParams(location.search);
const status = (s) => (document.getElementById("status").textContent = s);

function finish(obj) {
  const el = document.createElement("pre");
  el.id = "result";
  el.textContent = JSON.stringify(obj);
  document.body.appendChild(el);
  status(obj.ok ? "done" : "failed");
}

// What the browser says of its adapter (wgpu does not pass vendor and architecture on).
async function adapterInfo() {
  const a = await navigator.gpu.requestAdapter();
  if (!a) return null;
  const i = a.info || {};
  return [i.vendor, i.architecture, i.device, i.description].filter(Boolean).join(" ") || "unnamed";
}

async function main() {
  if (!navigator.gpu) {
    throw new Error("this browser has no WebGPU (navigator.gpu is missing): use a recent Chrome, Edge or " +
      "Firefox, or Chromium with --enable-unsafe-webgpu");
  }
  const adapter = await adapterInfo();
  if (!adapter) throw new Error("WebGPU is present but offers no adapter");
  await init();
  const run = q.get("run") || "shaders";
  status(`running ${run} on ${adapter}…`);
  let out;
  if (run === "shaders") out = JSON.parse(await shader_test());
  else if (run === "ops") out = JSON.parse(await ops_test());
  else {
    const steps = parseInt(q.get("steps") || "20", 10);
    const seed = parseInt(q.get("seed") || "1", 10);
    out = JSON.parse(await train(run, steps, seed, q.get("backend") || "webgpu"));
  }
  out.adapter = adapter;
  return out;
}

main().then(finish, (e) => finish({ ok: false, error: String(e && e.stack ? e.stack : e) }));
