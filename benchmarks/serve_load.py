"""Load test of the HTTP service: N concurrent clients POST a one-face photo for T seconds.

    python benchmarks/serve_load.py [MODEL] [--clients 50] [--duration 30] [--workers 1]

Starts `python -m facegender.serve` on a free 127.0.0.1 port (only loopback traffic), waits
for /healthz, runs the clients (httpx + asyncio, spread over --procs processes: one Python
process cannot drive 50 clients without its own event loop adding hundreds of ms to the tail)
and prints requests/s, p50/p95/p99 latency, the error count and the server's peak RSS (VmHWM),
then stops the server. Exits 1 on any error. The clients run on the same machine and take CPU
from the server: figures are a lower bound.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FAIRFACE = ROOT.parent / "shared" / "data" / "fairface540" / "fairface540.tar"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _photo(path: str | None) -> tuple[str, bytes]:
    if path:
        return Path(path).name, Path(path).read_bytes()
    with tarfile.open(FAIRFACE) as tf:  # one real face, 224x224 JPEG
        name = "male/fairface_0001.jpg"
        return Path(name).name, tf.extractfile(name).read()


def _rss_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


async def _load(url: str, photo: tuple[str, bytes], clients: int, duration: float,
                first: int = 0) -> tuple[list[float], list[str], float]:
    latencies: list[float] = []
    errors: list[str] = []
    start = time.perf_counter()
    deadline = start + duration

    async def worker(i: int) -> None:
        # Each simulated client has its own loopback address (127.0.0.2, .3, ...), as separate
        # machines would: the server's per-client limits count by address.
        n = first + i + 2
        transport = httpx.AsyncHTTPTransport(local_address=f"127.0.{n // 250}.{n % 250}")
        async with httpx.AsyncClient(transport=transport, timeout=60) as client:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    r = await client.post(url, files=[("files", (photo[0], photo[1], "image/jpeg"))])
                    ok = r.status_code == 200 and r.json()["results"][0]["error"] is None
                    if not ok:
                        errors.append(f"HTTP {r.status_code}: {r.text[:200]}")
                except Exception as exc:  # count every failure, keep the load going
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker(i) for i in range(clients)))
    return latencies, errors, time.perf_counter() - start


def _client_proc(url: str, photo: tuple[str, bytes], clients: int, duration: float,
                 first: int) -> tuple[list[float], list[str], float]:
    return asyncio.run(_load(url, photo, clients, duration, first))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default=None, help="model folder (default: the packaged model)")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    ap.add_argument("--procs", type=int, default=5, help="client processes the clients are spread over")
    ap.add_argument("--workers", type=int, default=2, help="server Predictor threads")
    ap.add_argument("--threads", type=int, default=None, help="engine threads per worker")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--detect", choices=["model", "on", "off"], default="model",
                    help="face detector: as the model's crop policy says, or forced")
    ap.add_argument("--photo", default=None, help="photo to send (default: a fairface540 face)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    a = ap.parse_args(argv)

    port = _free_port()
    cmd = [sys.executable, "-m", "facegender.serve", "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(a.workers), "--backend", a.backend, "--log-level", "warning"]
    cmd += [a.model] if a.model else []
    cmd += ["--threads", str(a.threads)] if a.threads else []
    cmd += {"on": ["--detect"], "off": ["--no-detect"], "model": []}[a.detect]
    server = subprocess.Popen(cmd, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                print(f"server exited with status {server.returncode}", file=sys.stderr)
                return 2
            try:
                health = httpx.get(base + "/healthz", timeout=2).json()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    print("server did not start within 120 s", file=sys.stderr)
                    return 2
                time.sleep(0.25)
        rss_idle = _rss_kb(server.pid, "VmRSS")
        photo = _photo(a.photo)
        procs = max(1, min(a.procs, a.clients))
        shares = [a.clients // procs + (i < a.clients % procs) for i in range(procs)]
        with ProcessPoolExecutor(procs) as pool:
            firsts = [sum(shares[:i]) for i in range(procs)]
            parts = list(pool.map(_client_proc, [base + "/v1/predict"] * procs, [photo] * procs,
                                  shares, [a.duration] * procs, firsts))
        lat = [x for p in parts for x in p[0]]
        errors = [e for p in parts for e in p[1]]
        elapsed = max(p[2] for p in parts)
        peak = _rss_kb(server.pid, "VmHWM")
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()

    ms = np.array(lat) * 1000 if lat else np.array([np.nan])
    figures = {
        "model": health.get("model"), "backend": health.get("backend"), "workers": a.workers,
        "clients": a.clients, "duration_s": round(elapsed, 1), "requests": len(lat),
        "requests_per_s": round(len(lat) / elapsed, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1), "max_ms": round(float(ms.max()), 1),
        "errors": len(errors), "server_rss_idle_mb": round(rss_idle / 1024, 1),
        "server_peak_rss_mb": round(peak / 1024, 1), "cpus": os.cpu_count(),
    }
    if a.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"model {figures['model']} ({figures['backend']}), {a.workers} worker(s), "
              f"{a.clients} clients ({procs} processes) for {figures['duration_s']} s on "
              f"{figures['cpus']} CPUs")
        print(f"  {figures['requests']} requests, {figures['requests_per_s']} req/s")
        print(f"  latency p50 {figures['p50_ms']} ms, p95 {figures['p95_ms']} ms, "
              f"p99 {figures['p99_ms']} ms, max {figures['max_ms']} ms")
        print(f"  errors {figures['errors']}")
        print(f"  server RSS {figures['server_rss_idle_mb']} MB idle, "
              f"{figures['server_peak_rss_mb']} MB peak")
    for e in errors[:5]:
        print("  error:", e, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
