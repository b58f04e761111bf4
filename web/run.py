#!/usr/bin/env python3
"""Opens web/dist in headless Chromium on WebGPU and prints the page's result.

Serves web/dist with Python's http.server on a free port, starts Chromium (SwiftShader's WebGPU adapter
by default, so no GPU is needed), navigates to index.html?QUERY and polls the DOM until an element
with id `result` appears; prints its text (one JSON object) and exits 0 when it says "ok": true.
Talks the DevTools protocol over a pipe (--remote-debugging-pipe: NUL-terminated JSON on fds 3/4),
so it needs nothing beyond Python's standard library.

    python3 web/run.py 'run=shaders'
    python3 web/run.py 'run=gpt&steps=20&seed=1' --timeout 600
    python3 web/run.py 'demo=gan&data=ring8&steps=100' --screenshot shot.png
    python3 web/run.py 'demo=gan&data=ring8&steps=3' --no-webgpu
"""
import argparse
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


class Quiet(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".wasm": "application/wasm", ".js": "text/javascript"}

    def log_message(self, *args):
        pass


def serve(root):
    handler = functools.partial(Quiet, directory=root)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


class Browser:
    """Chromium driven over --remote-debugging-pipe."""

    def __init__(self, exe, adapter, webgpu=True):
        self.profile = tempfile.mkdtemp(prefix="tigel-chromium-")
        cmd_r, self.cmd_w = os.pipe()  # we write commands, Chromium reads fd 3
        self.resp_r, resp_w = os.pipe()  # Chromium writes fd 4, we read
        flags = [
            "--headless=new", "--no-sandbox", "--remote-debugging-pipe", f"--user-data-dir={self.profile}",
            "--no-first-run", "--disable-gpu-sandbox", "--window-size=1000,800",
        ]
        if not webgpu:
            flags.append("--disable-features=WebGPU")
        else:
            flags += ["--enable-unsafe-webgpu", "--enable-features=Vulkan,WebGPU"]
        if adapter and webgpu:
            flags.append(f"--use-webgpu-adapter={adapter}")

        def fds():
            os.dup2(cmd_r, 3)
            os.dup2(resp_w, 4)

        self.proc = subprocess.Popen([exe, *flags, "about:blank"], preexec_fn=fds, close_fds=False,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(cmd_r)
        os.close(resp_w)
        self.buf = b""
        self.next_id = 0
        self.events = []

    def _read_message(self):
        while b"\0" not in self.buf:
            chunk = os.read(self.resp_r, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe: " + self.proc.stderr.read().decode(errors="replace")[-2000:])
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method, session=None, **params):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self.cmd_w, json.dumps(msg).encode() + b"\0")
        while True:
            m = self._read_message()
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def close(self):
        try:
            self.call("Browser.close")
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


def console_lines(events):
    out = []
    for e in events:
        p = e.get("params", {})
        if e.get("method") == "Runtime.consoleAPICalled":
            out.append(p.get("type", "") + ": " + " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif e.get("method") == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            out.append("exception: " + str(d.get("exception", {}).get("description", d.get("text"))))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("query", nargs="?", default="run=shaders", help="the page's query string")
    ap.add_argument("--dist", default=os.path.join(HERE, "dist"), help="the built page (web/build.sh)")
    ap.add_argument("--chromium", default=os.environ.get("CHROMIUM", "chromium"))
    ap.add_argument("--adapter", default="swiftshader", help="--use-webgpu-adapter ('' for the browser's choice)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds to wait for #result")
    ap.add_argument("--screenshot", help="write a PNG of the page when done")
    ap.add_argument("--no-webgpu", action="store_true", help="a browser without WebGPU (the page's fallback)")
    a = ap.parse_args()
    exe = shutil.which(a.chromium)
    if not exe:
        print(json.dumps({"ok": False, "error": f"no browser `{a.chromium}` (install chromium or set CHROMIUM)"}))
        return 2
    if not os.path.isfile(os.path.join(a.dist, "index.html")):
        print(json.dumps({"ok": False, "error": f"{a.dist}/index.html missing: run bash web/build.sh"}))
        return 2
    httpd = serve(a.dist)
    url = f"http://127.0.0.1:{httpd.server_address[1]}/index.html?{a.query}"
    b = Browser(exe, a.adapter, webgpu=not a.no_webgpu)
    text = None
    try:
        target = b.call("Target.createTarget", url="about:blank")["targetId"]
        s = b.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        b.call("Runtime.enable", session=s)
        b.call("Page.enable", session=s)
        b.call("Page.navigate", session=s, url=url)
        expr = "(e => e ? e.textContent : null)(document.getElementById('result'))"
        deadline = time.time() + a.timeout
        while time.time() < deadline:
            r = b.call("Runtime.evaluate", session=s, expression=expr, returnByValue=True)
            text = r.get("result", {}).get("value")
            if text is not None:
                break
            time.sleep(0.5)
        if text is not None and a.screenshot:
            import base64
            shot = b.call("Page.captureScreenshot", session=s, format="png")
            with open(a.screenshot, "wb") as f:
                f.write(base64.b64decode(shot["data"]))
    finally:
        log = console_lines(b.events)
        b.close()
        httpd.shutdown()
    if text is None:
        print(json.dumps({"ok": False, "error": f"no #result after {a.timeout:.0f} s", "url": url, "console": log[-20:]}))
        return 1
    print(text)
    try:
        return 0 if json.loads(text).get("ok") is True else 1
    except ValueError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
