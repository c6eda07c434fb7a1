#!/usr/bin/env python3
"""Open a fewshot report in headless Chromium and check it from the browser (make test-report).

Talks to Chromium over its DevTools protocol (a small websocket client, Python stdlib only):
no console errors or exceptions, no network request besides the file itself, the expected
number of charts and heatmaps, each with non-blank pixels in a screenshot of it, a hovered
point's tooltip showing the value in metrics.jsonl, and the log-x toggle and checkpoint slider
redrawing without errors. Saves a full-page screenshot.

usage: report_browser.py REPORT.html --charts N --heatmaps N [--measure-charts N]
           [--metrics RUN/metrics.jsonl --evaluator NAME] --screenshot OUT.png
"""
import argparse
import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "--hide-scrollbars"]


class CDP:
    """A DevTools-protocol session over one websocket (RFC 6455 client, text frames)."""

    def __init__(self, ws_url):
        assert ws_url.startswith("ws://")
        hostport, path = ws_url[5:].split("/", 1)
        host, port = hostport.split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise RuntimeError("websocket handshake failed: " + head.decode(errors="replace"))
        self.next_id = 0
        self.events = []

    def _send(self, text):
        data = text.encode()
        mask = os.urandom(4)
        n = len(data)
        header = bytes([0x81])
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise RuntimeError("DevTools connection closed")
            buf += chunk
        return buf

    def _recv(self):
        message = b""
        while True:
            b0, b1 = self._exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._exact(8))[0]
            payload = self._exact(n)
            opcode = b0 & 0x0F
            if opcode == 0x8:
                raise RuntimeError("DevTools connection closed")
            if opcode in (0x9, 0xA):  # ping / pong
                continue
            message += payload
            if b0 & 0x80:
                return json.loads(message)

    def call(self, method, **params):
        self.next_id += 1
        my_id = self.next_id
        self._send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = self._recv()
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def wait_event(self, method, timeout=30):
        end = time.time() + timeout
        while time.time() < end:
            for i, e in enumerate(self.events):
                if e["method"] == method:
                    return self.events.pop(i)
            msg = self._recv()
            if "method" in msg:
                self.events.append(msg)
        raise RuntimeError(f"timed out waiting for {method}")

    def js(self, expression):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"page script failed: {expression[:80]}: {r['exceptionDetails']}")
        return r["result"].get("value")


def png_pixels(data):
    """Decode an 8-bit RGB/RGBA PNG (as Chromium writes them): (width, height, channels, rows)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and ctype in (2, 6), "unexpected PNG format"
            ch = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = width * ch
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if f == 1:
            for i in range(ch, stride):
                line[i] = (line[i] + line[i - ch]) & 255
        elif f == 2:
            for i in range(stride):
                line[i] = (line[i] + prev[i]) & 255
        elif f == 3:
            for i in range(stride):
                left = line[i - ch] if i >= ch else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 255
        elif f == 4:
            for i in range(stride):
                a = line[i - ch] if i >= ch else 0
                b = prev[i]
                c = prev[i - ch] if i >= ch else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(line)
        prev = line
    return width, height, ch, rows


def coloured_pixels(png):
    """Pixels with a clear hue (not white, grey or black): drawn data, not axes or text."""
    w, h, ch, rows = png_pixels(png)
    count = 0
    for line in rows:
        for x in range(w):
            r, g, b = line[x * ch], line[x * ch + 1], line[x * ch + 2]
            if max(r, g, b) - min(r, g, b) > 40:
                count += 1
    return count, w * h


def shot(cdp, rect, scale=0.5):
    clip = {"x": rect["x"], "y": rect["y"], "width": rect["width"], "height": rect["height"], "scale": scale}
    r = cdp.call("Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True)
    return base64.b64decode(r["data"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("report")
    ap.add_argument("--charts", type=int, required=True)
    ap.add_argument("--measure-charts", type=int, default=0)
    ap.add_argument("--heatmaps", type=int, required=True)
    ap.add_argument("--metrics")
    ap.add_argument("--evaluator", default="fsl_train")
    ap.add_argument("--screenshot", required=True)
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    a = ap.parse_args()
    if not os.path.exists(a.chromium):
        sys.exit("report_browser: chromium not found: install Debian's chromium with `make deps-report`")
    failures = []

    def check(ok, what):
        print(("ok    " if ok else "FAIL  ") + what)
        if not ok:
            failures.append(what)

    url = "file://" + os.path.abspath(a.report)
    profile = tempfile.mkdtemp(prefix="fewshot_chromium_")
    proc = subprocess.Popen([a.chromium] + FLAGS + [f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = os.path.join(profile, "DevToolsActivePort")
        end = time.time() + 60
        while not (os.path.exists(port_file) and open(port_file).read().count("\n") >= 1):
            if time.time() > end or proc.poll() is not None:
                sys.exit("report_browser: chromium did not start")
            time.sleep(0.1)
        port = int(open(port_file).read().split("\n")[0])
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
        targets = json.load(direct.open(f"http://127.0.0.1:{port}/json/list", timeout=10))
        page = next(t for t in targets if t["type"] == "page")
        cdp = CDP(page["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Network", "Log"):
            cdp.call(domain + ".enable")
        cdp.call("Emulation.setDeviceMetricsOverride", width=1400, height=1000, deviceScaleFactor=1, mobile=False)
        cdp.events.clear()
        cdp.call("Page.navigate", url=url)
        cdp.wait_event("Page.loadEventFired")
        end = time.time() + 30
        while not cdp.js("!!(window.fewshotReport && window.fewshotReport.ready)"):
            if time.time() > end:
                break
            time.sleep(0.1)
        check(cdp.js("!!(window.fewshotReport && window.fewshotReport.ready)"), "the page script ran to the end")
        check(cdp.js("fewshotReport.errors.length") == 0, "no drawing failures on the page: %s" %
              cdp.js("fewshotReport.errors"))

        n_charts = cdp.js("fewshotReport.charts.length")
        n_measures = cdp.js("fewshotReport.measureCharts.length")
        n_heat = cdp.js("document.querySelectorAll('svg.heatmap').length")
        check(n_charts == a.charts, f"{n_charts} learning-curve charts (expected {a.charts})")
        check(n_measures == a.measure_charts, f"{n_measures} progress-measure charts (expected {a.measure_charts})")
        check(n_heat == a.heatmaps, f"{n_heat} attention heatmaps (expected {a.heatmaps})")

        # Every chart and heatmap has drawn data: pixels with a hue in a screenshot of it.
        rects = cdp.js("""Array.from(document.querySelectorAll('canvas, svg.heatmap')).map(e => {
            const r = e.getBoundingClientRect();
            return {kind: e.tagName, x: r.x + window.scrollX, y: r.y + window.scrollY, width: r.width, height: r.height};
        })""")
        blank = []
        for i, rect in enumerate(rects):
            if rect["width"] < 10 or rect["height"] < 10:
                blank.append(f"{rect['kind']} {i}: {rect['width']}x{rect['height']}")
                continue
            hue, total = coloured_pixels(shot(cdp, rect))
            if hue < max(20, total // 1000):
                blank.append(f"{rect['kind']} {i}: {hue} coloured of {total} pixels")
        check(len(rects) == n_charts + n_measures + n_heat and not blank,
              f"{len(rects)} charts and heatmaps all have drawn pixels {blank if blank else ''}")

        # Hover a point of the first chart: the tooltip shows the value from metrics.jsonl.
        if a.metrics:
            target = cdp.js(f"""(() => {{
                const ch = fewshotReport.charts[0];
                ch.canvas.scrollIntoView({{block: 'center'}});
                const di = ch.data.datasets.findIndex(d => !d.band && d.label === {json.dumps(a.evaluator)});
                const pts = ch.getDatasetMeta(di).data, j = Math.floor(pts.length / 2);
                const r = ch.canvas.getBoundingClientRect();
                return {{x: r.left + pts[j].x, y: r.top + pts[j].y, iter: ch.data.datasets[di].data[j].x}};
            }})()""")
            cdp.call("Input.dispatchMouseEvent", type="mouseMoved", x=target["x"], y=target["y"])
            time.sleep(0.3)
            tip = cdp.js("""(() => { const t = fewshotReport.charts[0].tooltip;
                return {opacity: t.opacity, lines: (t.body || []).flatMap(b => b.lines), title: t.title,
                        readout: fewshotReport.charts[0].$readout.textContent}; })()""")
            want = None
            for line in open(a.metrics):
                try:
                    j = json.loads(line)
                except ValueError:
                    continue
                if j.get("type") == "eval" and j["iter"] == target["iter"]:
                    want = j["evals"][a.evaluator]["acc"]
            shown = None
            for text in tip["lines"]:
                if text.startswith(a.evaluator + ":"):
                    shown = float(text.split(":", 1)[1].split()[0])
            check(tip["opacity"] > 0 and want is not None and shown is not None and
                  abs(shown - want) <= 1e-5 * max(1.0, abs(want)),
                  f"hovering {a.evaluator} at {target['iter']} sequences shows {tip['lines']} "
                  f"(metrics.jsonl: acc {want}); readout: {tip['readout']}")

        # The log-x toggle and the checkpoint slider redraw without errors.
        cdp.js("document.getElementById('x-log').click()")
        check(cdp.js("fewshotReport.charts.every(c => c.options.scales.x.type === 'logarithmic')"),
              "the log-x toggle switches every chart to a logarithmic axis")
        cdp.js("document.getElementById('x-linear').click()")
        if n_heat:
            cdp.js("""(() => { const s = document.getElementById('attn-ckpt'); s.value = 0;
                s.dispatchEvent(new Event('input')); })()""")
            check(cdp.js("document.getElementById('attn-ckpt-label').textContent").find(": initial model") >= 0 and
                  cdp.js("document.querySelectorAll('svg.heatmap').length") == n_heat,
                  "the checkpoint slider redraws the heatmaps of the initial model")
            cdp.js("""(() => { const s = document.getElementById('attn-ckpt'); s.value = s.max;
                s.dispatchEvent(new Event('input')); })()""")

        cdp.js("window.scrollTo(0, 0)")
        height = cdp.js("document.documentElement.scrollHeight")
        png = shot(cdp, {"x": 0, "y": 0, "width": 1400, "height": height}, scale=1)
        os.makedirs(os.path.dirname(os.path.abspath(a.screenshot)), exist_ok=True)
        with open(a.screenshot, "wb") as f:
            f.write(png)
        print(f"      screenshot: {a.screenshot} ({len(png) // 1024} KB)")

        # Everything the page did, from the browser's own event log.
        requests = [e["params"]["request"]["url"] for e in cdp.events if e["method"] == "Network.requestWillBeSent"]
        others = [u for u in requests if u != url]
        check(url in requests and not others, f"no network request besides the file itself {others if others else ''}")
        errors = [e["params"]["args"] for e in cdp.events
                  if e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert", "warning")]
        errors += [e["params"]["exceptionDetails"] for e in cdp.events if e["method"] == "Runtime.exceptionThrown"]
        errors += [e["params"]["entry"] for e in cdp.events
                   if e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] in ("error", "warning")]
        check(not errors, f"no console errors or warnings {errors if errors else ''}")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)
    print(f"report_browser: {os.path.basename(a.report)}: {len(failures)} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
