"""Load test of ``train.py serve`` against 127.0.0.1 only, beside the same model's in-process throughput.

Per model (trained quickly here: cnn on digits, bert with the scratch backbone on the bundled sentiment
set, mlp on the bundled tabular set): a ``train.py serve`` subprocess, then ``--requests`` one-input POST
/predict requests from 1 / 8 / 32 concurrent clients (threads, one keep-alive connection each): requests/s,
p50 / p99 latency, errors, the server's RSS before and after. Then dynamic batching off
(``--max-batch-size 1``) at 32 clients. In-process reference: the zoo predict path without HTTP
(``Predictor.predict`` on batches of ``--max-batch-size`` inputs) and a bare ``model(x)`` forward on the same
batches, in inputs/s; ratio = served requests/s / in-process inputs/s. Results go to
``benchmarks/results/bench_serve.json``.

    python benchmarks/bench_serve.py --threads 1 --requests 2000
    python benchmarks/bench_serve.py --models cnn --requests 500
"""
import argparse
import base64
import http.client
import io
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FIT = {"cnn": [], "bert": ["--model.backbone", "scratch", "--max-epochs", "2"], "mlp": []}


def payload(name: str) -> bytes:
    """One input of each model's kind, as the JSON body of POST /predict."""
    if name == "cnn":
        from PIL import Image
        from sklearn.datasets import load_digits

        out = io.BytesIO()
        Image.fromarray((load_digits().images[0] * 255 / 16).astype(np.uint8)).save(out, format="PNG")
        return json.dumps({"inputs": [base64.b64encode(out.getvalue()).decode()]}).encode()
    if name == "bert":
        return json.dumps({"inputs": ["a truly wonderful film with a fine cast ."]}).encode()
    from zoo.datamodules.tabular import load_bundled

    frame, targets = load_bundled("diabetes")
    return json.dumps({"inputs": frame.drop(columns=targets).head(1).to_dict(orient="records")}).encode()


def fit(name: str, runs: Path, threads: int) -> str:
    from zoo.cli import main

    args = ["--model", name, "--max-epochs", "1", "--threads", str(threads), "--runs-dir", str(runs), *FIT[name]]
    assert main(args) == 0
    (metrics,) = (runs / name).glob("*/metrics.json")
    return json.loads(metrics.read_text())["best_checkpoint"]


def rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


class Server:
    """``train.py serve`` in a subprocess on a free 127.0.0.1 port."""

    def __init__(self, ckpt: str, threads: int, max_batch: int, log: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.log = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, "train.py", "serve", "--ckpt-path", ckpt,
                                      "--port", str(self.port), "--max-batch-size", str(max_batch),
                                      "--batch-timeout", "5"], cwd=REPO,
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     env=os.environ | {"OMP_NUM_THREADS": str(threads)})
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {log.read_text()[-1500:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.25)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def load(port: int, body: bytes, requests: int, clients: int) -> dict[str, float]:
    """``requests`` POST /predict from ``clients`` threads: requests/s, p50/p99 ms, errors."""
    ticket, lock = itertools.count(), threading.Lock()
    latencies: list[float] = []
    errors = [0]

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                if next(ticket) >= requests:
                    return
            start = time.perf_counter()
            try:
                conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
            except OSError:
                ok = False
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            with lock:
                latencies.append(time.perf_counter() - start)
                errors[0] += not ok

    workers = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {"clients": clients, "requests": len(latencies), "req_per_s": len(latencies) / wall,
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "errors": errors[0]}


def in_process(ckpt: str, body: bytes, batch: int, n: int) -> dict[str, float]:
    """Inputs/s of the zoo predict path without HTTP (Predictor.predict on ``batch`` inputs per call) and of a
    bare forward on the same tensors."""
    import torch

    from zoo._serve_io import decode_json
    from zoo.serve import Predictor

    pred = Predictor(ckpt, gpus=0)
    items = decode_json(body, pred.kind) * batch
    pred.predict(items)  # warm-up
    calls = max(1, n // batch)
    start = time.perf_counter()
    for _ in range(calls):
        pred.predict(items)
    path_rate = calls * batch / (time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as tmp:
        from zoo._serve_io import write_inputs

        src, _ = write_inputs(pred.kind, items, Path(tmp))
        batches = list(pred.dm.predict_input(str(src)))
    with torch.inference_mode():
        pred.model.predict_step(batches[0], 0)
        start = time.perf_counter()
        for _ in range(calls):
            for i, b in enumerate(batches):
                pred.model.predict_step(b, i)
    forward_rate = calls * batch / (time.perf_counter() - start)
    return {"predict_path_inputs_per_s": path_rate, "predict_step_inputs_per_s": forward_rate}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="cnn,bert,mlp")
    p.add_argument("--requests", type=int, default=2000, help="per concurrency level (bounded)")
    p.add_argument("--clients", default="1,8,32")
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="OMP/torch threads of the server and the in-process runs")
    p.add_argument("--data-dir", default="../shared/data", help="unused: the models train on their offline data")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "bench_serve.json"))
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print(f"threads={args.threads} requests={args.requests} max_batch={args.max_batch_size} "
          f"loadavg={Path('/proc/loadavg').read_text().split()[:3]}", flush=True)
    results: dict[str, Any] = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            ckpt, body = fit(name, Path(tmp) / "runs", args.threads), payload(name)
            ref = in_process(ckpt, body, args.max_batch_size, 4 * args.requests // 10)
            row: dict[str, Any] = {"in_process": ref, "threads": args.threads, "levels": []}
            server = Server(ckpt, args.threads, args.max_batch_size, Path(tmp) / f"{name}.log")
            row["rss_mb_before"] = rss_mb(server.proc.pid)
            for clients in map(int, args.clients.split(",")):
                level = load(server.port, body, args.requests, clients)
                level["ratio_to_predict_path"] = level["req_per_s"] / ref["predict_path_inputs_per_s"]
                level["ratio_to_predict_step"] = level["req_per_s"] / ref["predict_step_inputs_per_s"]
                row["levels"].append(level)
                print(f"{name:5s} clients={clients:3d} {level['req_per_s']:8.1f} req/s  p50 {level['p50_ms']:7.1f} ms"
                      f"  p99 {level['p99_ms']:7.1f} ms  errors {level['errors']}  served / in-process predict path "
                      f"{level['ratio_to_predict_path']:.3f}, / predict_step {level['ratio_to_predict_step']:.4f}",
                      flush=True)
            row["rss_mb_after"] = rss_mb(server.proc.pid)
            server.stop()
            server = Server(ckpt, args.threads, 1, Path(tmp) / f"{name}-off.log")
            off = load(server.port, body, args.requests, 32)
            server.stop()
            on = next(lv for lv in row["levels"] if lv["clients"] == 32) if "32" in args.clients.split(",") else None
            row["batching_off_32"] = off
            row["batching_on_off_ratio"] = on["req_per_s"] / off["req_per_s"] if on else None
            row["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
            results[name] = row
            print(f"{name:5s} in-process: predict path {ref['predict_path_inputs_per_s']:.1f} inputs/s, predict_step "
                  f"{ref['predict_step_inputs_per_s']:.1f} inputs/s; server RSS {row['rss_mb_before']:.0f} -> "
                  f"{row['rss_mb_after']:.0f} MB; batching off at 32 clients {off['req_per_s']:.1f} req/s "
                  f"(errors {off['errors']}), on/off = {row['batching_on_off_ratio'] or float('nan'):.2f}; "
                  f"loadavg {row['loadavg']}", flush=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
