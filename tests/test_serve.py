"""``train.py serve``: a real server on a free 127.0.0.1 port and a real HTTP client (stdlib urllib / sockets).

The CNN server runs as ``train.py serve`` in a subprocess (health, info, predictions equal to ``train.py
predict``, every bad request, concurrent requests, SIGTERM); other families run the same app under uvicorn in
a thread of the test process (saves a torch import per family); the page is loaded in headless Chromium.
"""
import base64
import contextlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from tests.test_every_model import LIMITS, SAMPLE_INPUT, TINY
from zoo._serve_io import read_outputs
from zoo.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(url: str, body: bytes | None = None, ctype: str = "application/json", timeout: float = 30) -> tuple[int, Any]:
    """(status, decoded JSON or text) of a GET (no body) or POST."""
    req = urllib.request.Request(url, data=body, headers={"Content-Type": ctype} if body is not None else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


def multipart(files: list[tuple[str, bytes]], field: str = "file") -> tuple[bytes, str]:
    boundary = "zoo-test-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
             f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n" for name, data in files]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _fit(name: str, runs: Path) -> str:
    assert main(["--model", name, *LIMITS, *TINY.get(name, []), "--runs-dir", str(runs)]) == 0
    (metrics,) = (runs / name).glob("*/metrics.json")
    return json.loads(metrics.read_text())["best_checkpoint"] or str(metrics.parent / "checkpoints" / "last.ckpt")


def _predict_file(ckpt: str, sample: Path, runs: Path, capsys: pytest.CaptureFixture) -> list[dict[str, Any]]:
    """The rows ``train.py predict`` writes for ``sample``."""
    capsys.readouterr()
    assert main(["predict", "--ckpt-path", ckpt, "--input", str(sample), "--runs-dir", str(runs)]) == 0
    path = Path(re.search(r"predictions: (\S+)", capsys.readouterr().out).group(1))
    return read_outputs(path, {})


@contextlib.contextmanager
def serving(ckpt: str, **settings: Any) -> Iterator[str]:
    """The app under uvicorn in a thread of this process; yields its base URL."""
    import uvicorn

    from zoo.serve import create_app

    app = create_app({"ckpt_path": ckpt, "max_batch_size": 16, "batch_timeout": 5.0, "max_body_mb": 1.0} | settings)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the in-process server did not start in 20 s"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def cnn_server(runs: Path) -> Iterator[tuple[str, str, subprocess.Popen]]:
    """``train.py serve`` for a tiny CNN in a subprocess: (base URL, checkpoint, process)."""
    ckpt = _fit("cnn", runs)
    port = _free_port()
    log = open(runs / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "train.py", "serve", "--ckpt-path", ckpt, "--port", str(port),
                             "--max-body-mb", "1", "--batch-timeout", "20", "--max-batch-size", "32"], cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT, env=os.environ | {"OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        assert proc.poll() is None, (runs / "serve.log").read_text()[-2000:]
        assert time.monotonic() < deadline, "the server did not answer /health in 90 s"
        with contextlib.suppress(OSError):
            if call(f"{url}/health", timeout=2)[0] == 200:
                break
        time.sleep(0.25)
    yield url, ckpt, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
    log.close()


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def _as_pngs(npy: Path) -> Path:
    """The images of a .npy sample as PNG files in a folder beside it (predict reads either)."""
    folder = npy.parent / "pngs"
    folder.mkdir()
    for i, img in enumerate(np.load(npy)):
        (folder / f"d{i}.png").write_bytes(_png(img))
    return folder


def test_cnn_health_info_and_predict_matches_train_py_predict(cnn_server: tuple, runs: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    url, ckpt, _ = cnn_server
    status, info = call(f"{url}/info")
    assert status == 200 and info["model"] == "cnn" and info["data"] == "digits" and info["kind"] == "image"
    assert info["classes"] == [str(i) for i in range(10)] and len(info["checkpoint_sha256"]) == 64
    assert info["zoo_version"] and info["predict"] and "base64" in info["input_schema"]
    assert call(f"{url}/health")[1]["status"] == "ok"
    assert "/predict" in call(f"{url}/openapi.json")[1]["paths"]
    assert "<script>" in call(f"{url}/")[1]

    folder = _as_pngs(SAMPLE_INPUT["digits"](tmp_path))
    expected = _predict_file(ckpt, folder, runs, capsys)
    body, ctype = multipart([(f.name, f.read_bytes()) for f in sorted(folder.iterdir())])
    status, got = call(f"{url}/predict", body, ctype)
    assert status == 200 and got["predictions"] == expected
    images = np.load(tmp_path / "digits.npy")
    as_json = {"inputs": [base64.b64encode(_png(images[0])).decode(), images[0].tolist()]}
    status, got = call(f"{url}/predict", json.dumps(as_json).encode())
    assert status == 200 and [r["prediction"] for r in got["predictions"]] == [expected[0]["prediction"]] * 2
    assert [r["input"] for r in got["predictions"]] == ["inputs[0]", "inputs[1]"]


def _raw_http(port: int, head: str) -> int:
    """Status of a request sent as raw bytes (headers only): for a body the client never sends."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode())
        return int(sock.recv(4096).split(b" ", 2)[1])


@pytest.mark.parametrize("body,ctype,status,words", [
    (b"{not json", "application/json", 400, "malformed JSON"),
    (b'["a"]', "application/json", 422, "'inputs' list"),
    (b'{"inputs": []}', "application/json", 422, "non-empty"),
    (b'{"inputs": [[[1, 2], [3]]]}', "application/json", 422, "ragged"),
    (b'{"inputs": [[1, 2, 3]]}', "application/json", 422, "shape [3]"),
    (b'{"inputs": [[["a", "b"], ["c", "d"]]]}', "application/json", 422, "non-numeric"),
    (b'{"inputs": [[[0, 999], [0, 0]]]}', "application/json", 422, "outside 0..255"),
    (b'{"inputs": ["@@not base64@@"]}', "application/json", 422, "not valid base64"),
    (json.dumps({"inputs": [base64.b64encode(b"GIF89a broken").decode()]}).encode(), "application/json", 422,
     "not a readable image"),
    (b"plain words", "text/plain", 415, "not accepted"),
    (multipart([("x.png", b"not an image")])[0], multipart([])[1], 422, "x.png is not a readable image"),
    (b"--zoo-test-boundary--\r\n", multipart([])[1], 422, "holds no file"),
])
def test_bad_requests_are_4xx_and_the_server_stays_up(cnn_server: tuple, body: bytes, ctype: str, status: int,
                                                      words: str) -> None:
    url = cnn_server[0]
    got_status, got = call(f"{url}/predict", body, ctype)
    assert got_status == status and words in got["error"] and "\n" not in got["error"], got
    assert call(f"{url}/health")[0] == 200


def test_oversized_body_is_413(cnn_server: tuple) -> None:
    url = cnn_server[0]
    port = int(url.rsplit(":", 1)[1])
    head = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {2 * 2**20}\r\n\r\n")
    assert _raw_http(port, head) == 413
    chunked = json.dumps({"inputs": ["A" * (2**20 + 10)]}).encode()  # no Content-Length: counted while read
    req = urllib.request.Request(f"{url}/predict", data=iter([chunked]), method="POST",
                                 headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 413 and "limit" in json.loads(err.value.read())["error"]
    assert call(f"{url}/health")[0] == 200


def test_concurrent_requests_are_batched_and_sigterm_stops_cleanly(cnn_server: tuple, runs: Path,
                                                                   tmp_path: Path) -> None:
    url, _, proc = cnn_server
    images = np.load(SAMPLE_INPUT["digits"](tmp_path))
    before = call(f"{url}/health")[1]
    bodies = [json.dumps({"inputs": [images[i % len(images)].tolist()]}).encode() for i in range(48)]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda b: call(f"{url}/predict", b), bodies))
    assert all(status == 200 for status, _ in results)
    labels = [got["predictions"][0]["prediction"] for _, got in results]
    assert labels[:len(images)] * 8 == labels  # the same image gets the same answer in any batch
    after = call(f"{url}/health")[1]
    assert after["requests"] - before["requests"] == 48 and after["batches"] - before["batches"] < 48
    proc.send_signal(signal.SIGTERM)  # uvicorn finishes, then re-raises the signal (the exit status says so)
    assert proc.wait(20) in (0, -signal.SIGTERM)
    log = (runs / "serve.log").read_text()
    assert "Application shutdown complete" in log and "Traceback" not in log, log[-2000:]


@pytest.fixture(scope="module")
def bert_ckpt(runs: Path) -> str:
    return _fit("bert", runs)


def test_text_model_predicts_like_train_py_and_model_errors_are_500(bert_ckpt: str, runs: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    sample = SAMPLE_INPUT["sentiment"](tmp_path)
    expected = _predict_file(bert_ckpt, sample, runs, capsys)
    texts = sample.read_text().splitlines()
    with serving(bert_ckpt) as url:
        status, got = call(f"{url}/predict", json.dumps({"inputs": texts}).encode())
        assert status == 200 and got["predictions"] == expected
        assert call(f"{url}/predict", b'{"inputs": [3]}')[0] == 422
        assert call(f"{url}/predict", *multipart([("a.txt", b"hi")]))[0] == 415

        def broken(self: Any, items: Any) -> None:
            raise RuntimeError("the model fell over")

        monkeypatch.setattr("zoo.serve.Predictor.predict", broken)
        status, got = call(f"{url}/predict", b'{"inputs": ["fine"]}')
        assert status == 500 and got["error"] == "model error: RuntimeError: the model fell over"
        monkeypatch.undo()
        assert call(f"{url}/predict", b'{"inputs": ["fine again"]}')[0] == 200
        if shutil.which("chromium"):  # the page, in a real browser: /?input= fills the box and submits
            page = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                                   "--virtual-time-budget=10000", "--dump-dom", f"{url}/?input=a+wonderful+film"],
                                  capture_output=True, text=True, timeout=60).stdout
            assert "bert (sentiment)" in page and "<td>a wonderful film</td>" in page, page[-1500:]  # the result row


@pytest.mark.parametrize("name,data", [("mlp", "tabular")])
def test_rows_model_predicts_like_train_py(name: str, data: str, runs: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    import pandas as pd

    ckpt = _fit(name, runs)
    sample = SAMPLE_INPUT[data](tmp_path)
    expected = _predict_file(ckpt, sample, runs, capsys)
    rows = pd.read_csv(sample).to_dict(orient="records")
    with serving(ckpt) as url:
        status, got = call(f"{url}/predict", json.dumps({"inputs": rows}).encode())
        assert status == 200 and len(got["predictions"]) == len(expected)
        new_cols = [c for c in expected[0] if c not in rows[0]]
        assert new_cols and all(g[c] == pytest.approx(e[c]) for g, e in zip(got["predictions"], expected)
                                for c in new_cols)
        status, got = call(f"{url}/predict", json.dumps({"inputs": [{"nonsense": 1}]}).encode())
        assert status == 422 and "\n" not in got["error"], got


@pytest.mark.parametrize("name", ["gan", "style_transfer"])
def test_models_predict_refuses_are_4xx_with_the_hint(name: str, runs: Path) -> None:
    from zoo.registry import get_model_entry

    with serving(_fit(name, runs)) as url:
        assert call(f"{url}/info")[1]["predict"] is False
        status, got = call(f"{url}/predict", b'{"inputs": [1]}')
        assert status == 400 and get_model_entry(name).cls.predict_hint in got["error"]
        if name == "gan":  # it serves seeded samples instead
            first, again = (call(f"{url}/sample", b'{"n": 3, "seed": 1}')[1]["predictions"] for _ in range(2))
            assert len(first) == 3 and first == again and first[0]["png_base64"] != first[1]["png_base64"]
            assert call(f"{url}/sample", b'{"n": 1000}')[0] == 422
        else:
            assert call(f"{url}/sample", b"{}")[0] == 400


@pytest.mark.parametrize("name,data,inputs", [
    ("lstm", "timeseries", None), ("gpt", "lm", ["The "]), ("mf", "ratings", ["1", "2", "unknown-user"]),
    *[pytest.param(name, data, None, marks=pytest.mark.slow)  # ~4 s each
      for name, data in (("audio_cnn", "sounds"), ("fast_style", "style_content"), ("resnet", "digits_rgb"))]])
def test_every_family_predicts_like_train_py(name: str, data: str, inputs: list | None, runs: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    import pandas as pd

    ckpt = _fit(name, runs)
    sample = SAMPLE_INPUT[data](tmp_path)
    sample = _as_pngs(sample) if sample.suffix == ".npy" else sample
    expected = _predict_file(ckpt, sample, runs, capsys)
    with serving(ckpt) as url:
        if sample.suffix in (".wav", ".png") or sample.is_dir():
            files = sorted(sample.iterdir()) if sample.is_dir() else [sample]
            status, got = call(f"{url}/predict", *multipart([(f.name, f.read_bytes()) for f in files]))
        else:
            inputs = inputs or pd.read_csv(sample).astype(str).to_dict(orient="records")
            status, got = call(f"{url}/predict", json.dumps({"inputs": inputs}).encode())
    assert status == 200, got
    if name == "fast_style":  # the stylised image, byte for byte
        assert got["predictions"][0]["name"] == sample.name and len(expected) == 1
        assert got["predictions"][0]["png_base64"] == expected[0]["png_base64"]
    elif name == "gpt":  # sampling is seeded per run, so compare the prompt and the length
        assert got["predictions"][0]["text"].startswith("The ")
    else:
        assert got["predictions"] == expected
