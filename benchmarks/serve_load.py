"""Load test of `fusion-ltr serve` on loopback (issue 14): throughput and latency at 1, 4 and 16 concurrent
clients, with and without micro-batching, side by side in one run; then resident memory before and after
10,000 requests.

Each request is `POST /v1/rerank` with one SciFact test query and 10 documents: the query's hybrid top-10
from the feature store of ``--store-run`` (passed as plain documents the run does not know, so the
bi-encoder encodes them). For each mode (micro-batching on, off) a fresh server process
(`python -m ranker serve --run RUN`) is started; each concurrency level sends ``--requests`` requests
(at most ``--seconds``) from that many async httpx clients after 2 warm-up requests. Failed requests are
counted (the acceptance asks for none). The memory phase starts one more server on ``--memory-run``
(default: the same run) and sends ``--memory-requests`` requests at 16 clients, with each document's
corpus id and text (``--memory-corpus-docs``: features then read the corpus embeddings, so 10,000
requests fit in minutes), reading the server's VmRSS from /proc before and after. Writes
`benchmarks/results/serve_load.json`.

    .venv/bin/python benchmarks/serve_load.py --run runs/demo-app --store-run runs/demo --requests 48 \\
        --memory-run runs/demo --memory-model model-content --memory-requests 10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from features.store import FeatureStore


def payloads(store_run: str, n_queries: int, *, corpus_ids: bool) -> list[dict]:
    with FeatureStore(Path(store_run) / "features.duckdb", read_only=True) as store:
        qids = store.sql("SELECT DISTINCT qid FROM candidates WHERE retriever = 'hybrid' ORDER BY qid")["qid"]
        pairs = store.pairs(list(qids[:n_queries]), retriever="hybrid", top_n=10)
    out = []
    for qid, group in pairs.groupby("qid", sort=True):
        group = group.sort_values("rank")
        docs = [{"id": d, "title": t, "text": x} if corpus_ids else {"text": (t + " " + x).strip()}
                for d, t, x in zip(group["docno"], group["title"].fillna(""), group["text"])]
        out.append({"query": group["query"].iloc[0], "documents": docs, "top_n": 5})
    return out


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


class Server:
    def __init__(self, run: str, model: str, port: int, batching: bool):
        cmd = [sys.executable, "-m", "ranker", "serve", "--run", run, "--model", model, "--port", str(port)]
        self.proc = subprocess.Popen(cmd + ([] if batching else ["--no-batching"]), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{port}"

    def wait(self, timeout: float = 300) -> None:
        import httpx

        t = time.time()
        while time.time() - t < timeout:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited with {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise SystemExit("server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


async def load(url: str, bodies: list[dict], clients: int, requests: int, seconds: float) -> dict:
    import httpx

    latencies, failures, sent = [], 0, 0
    deadline = time.perf_counter() + seconds

    async def client(c: httpx.AsyncClient) -> None:
        nonlocal sent, failures
        while sent < requests and time.perf_counter() < deadline:
            body = bodies[sent % len(bodies)]
            sent += 1
            t = time.perf_counter()
            try:
                r = await c.post(url + "/v1/rerank", json=body)
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - t)
            else:
                failures += 1

    t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=clients)) as c:
        await asyncio.gather(*(client(c) for _ in range(clients)))
    wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return {"clients": clients, "requests": len(latencies) + failures, "failed": failures, "seconds": wall,
            "throughput_rps": len(latencies) / wall, "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
            "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="runs/demo-app")
    ap.add_argument("--model", default="model")
    ap.add_argument("--store-run", default="runs/demo", help="run whose feature store gives queries and documents")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--requests", type=int, default=48, help="requests per concurrency level")
    ap.add_argument("--seconds", type=float, default=180, help="at most this long per level")
    ap.add_argument("--memory-run", default=None)
    ap.add_argument("--memory-model", default="model")
    ap.add_argument("--memory-requests", type=int, default=10_000)
    ap.add_argument("--port", type=int, default=8731)
    ap.add_argument("--memory-only", action="store_true", help="skip the throughput levels")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "serve_load.json"))
    args = ap.parse_args()
    bodies = payloads(args.store_run, 300, corpus_ids=False)
    result = {"run": args.run, "model": args.model, "documents_per_request": 10, "cpus": os.cpu_count(), "modes": {}}
    for batching in () if args.memory_only else (True, False):
        mode = "micro-batching" if batching else "no batching"
        server = Server(args.run, args.model, args.port, batching)
        try:
            server.wait()
            asyncio.run(load(server.url, bodies[-2:], 1, 2, 600))  # warm-up: models load on first use
            rows = []
            for clients in args.clients:
                row = asyncio.run(load(server.url, bodies, clients, args.requests, args.seconds))
                rows.append(row)
                print(f"{mode}, {clients} clients: {row['requests']} requests ({row['failed']} failed), "
                      f"{row['throughput_rps']:.2f} req/s, p50 {row['p50_ms']:.0f} ms, p99 {row['p99_ms']:.0f} ms",
                      flush=True)
            result["modes"][mode] = rows
        finally:
            server.stop()
    if args.memory_run and args.memory_requests:
        server = Server(args.memory_run, args.memory_model, args.port, True)
        try:
            server.wait()
            bodies = payloads(args.store_run, 300, corpus_ids=True)
            asyncio.run(load(server.url, bodies, 1, 20, 600))
            before = rss_kb(server.proc.pid)
            curve, rows = [], []
            for _ in range(10):  # RSS after each tenth: a leak keeps rising, a warm-up levels off
                rows.append(asyncio.run(load(server.url, bodies, 16, args.memory_requests // 10, 3600)))
                curve.append(rss_kb(server.proc.pid) / 1024)
            after = rss_kb(server.proc.pid)
            done = sum(r["requests"] for r in rows)
            result["memory"] = {"run": args.memory_run, "model": args.memory_model, "clients": 16, "requests": done,
                                "failed": sum(r["failed"] for r in rows),
                                "throughput_rps": done / sum(r["seconds"] for r in rows),
                                "rss_before_mb": before / 1024, "rss_after_mb": after / 1024, "rss_curve_mb": curve}
            m = result["memory"]
            print(f"memory ({args.memory_run} {args.memory_model}): {done} requests ({m['failed']} failed), "
                  f"{m['throughput_rps']:.1f} req/s; RSS {before / 1024:.0f} MB before, {after / 1024:.0f} MB after; "
                  f"after each tenth: {[round(c) for c in curve]}", flush=True)
        finally:
            server.stop()
    Path(args.out).parent.mkdir(exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
