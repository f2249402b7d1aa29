"""``train.py serve``: a trained zoo checkpoint behind a REST API (FastAPI + uvicorn) with a try-it page.

Endpoints: ``POST /predict`` (JSON or multipart upload; requests batched dynamically), ``GET /health``,
``GET /info``, ``GET /`` (the page), ``GET /docs`` and ``/openapi.json``. A request is decoded into the file
``train.py predict --input`` takes and goes through the same ``predict_input`` -> ``trainer.predict`` ->
``write_predictions`` path, so served and file predictions agree.

Example:
    python train.py serve --ckpt-path runs/cnn/<run>/checkpoints/best.ckpt --port 8000
    curl -s localhost:8000/predict -F file=@digit.png
"""
import argparse
import asyncio
import contextlib
import hashlib
import io
import json
import os
import socket
import tempfile
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

from zoo._serve_io import (BATCHABLE, SCHEMAS, BodyLimit, Item, RequestError, decode_json, read_outputs, sample_args,
                           uploads, write_inputs)
from zoo.errors import ZooUserError

__all__ = ["Predictor", "create_app", "run_serve"]

#: Input kind of each DataModule module (the first match along the DataModule's class hierarchy).
KINDS = {"zoo.datamodules.images": "image", "zoo.datamodules.image_folder": "image", "zoo.datamodules.style": "image",
         "zoo.datamodules.audio": "audio", "zoo.datamodules.text": "text", "zoo.datamodules.language": "prompt",
         "zoo.datamodules.tabular": "rows", "zoo.datamodules.timeseries": "series",
         "zoo.datamodules.interactions": "users"}
_ENV = "ZOO_SERVE_SETTINGS"  # how --workers N processes receive the settings


class Predictor:
    """A zoo checkpoint used like ``train.py predict``, on decoded request inputs.

    Args:
        ckpt_path: checkpoint file (or ``last`` with ``model``), loaded with ``weights_only=True``.
        runs_dir: where ``last`` is searched.
        model: model name for checkpoints that do not record it.
        gpus: ``--gpus`` (None: auto, one device).
    """

    def __init__(self, ckpt_path: str, runs_dir: str = "runs", model: str | None = None, gpus: int | None = None):
        import lightning as L
        from lightning.pytorch.utilities.model_helpers import is_overridden

        from zoo.devices import device_settings
        from zoo.inference import load_datamodule, load_zoo_checkpoint
        from zoo.models.base import ZooModule

        self.entry, self.model, ckpt, self.path = load_zoo_checkpoint(ckpt_path, runs_dir, model)
        self.dm = load_datamodule(ckpt, self.entry)
        self.data = ckpt.get("zoo", {}).get("data") or self.entry.datamodule
        self.kind = next((KINDS[c.__module__] for c in type(self.dm).__mro__ if c.__module__ in KINDS), None)
        self.refusal: str | None = None
        #: GANs and the VAE generate from noise: ``POST /sample``.
        self.samples = hasattr(self.model, "sample_latent") and hasattr(self.model, "decode_unit")
        if not is_overridden("write_predictions", self.model, parent=ZooModule):
            self.refusal = f"model '{self.entry.name}' has no predict step: {self.entry.cls.predict_hint}" + \
                ("; POST /sample {\"n\": 8, \"seed\": 0} generates samples here" if self.samples else "")
        elif self.kind is None:
            self.refusal = (f"serving reads no request inputs for data '{self.data}'; use train.py predict --input "
                            "with a folder laid out like --data-dir")
        self.sha256 = hashlib.sha256(Path(self.path).read_bytes()).hexdigest()
        ram = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # request files in memory: ~7 ms less a call
        self._tmp = tempfile.TemporaryDirectory(prefix="zoo-serve-", dir=ram)
        self.trainer = L.Trainer(**device_settings(gpus, None), logger=False, enable_checkpointing=False,
                                 enable_model_summary=False, enable_progress_bar=False, default_root_dir=self._tmp.name)

    def close(self) -> None:
        """Remove the folder of request files (uvicorn re-raises SIGTERM, so no finaliser would run)."""
        self._tmp.cleanup()

    def info(self) -> dict[str, Any]:
        classes = getattr(self.dm, "class_names", None) or getattr(self.model, "class_names", None)
        return {"model": self.entry.name, "data": self.data, "kind": self.kind, "predict": self.refusal is None,
                "refusal": self.refusal, "sample": self.samples, "classes": list(classes) if classes else None,
                "input_schema": SCHEMAS.get(self.kind or "", None), "checkpoint": str(self.path),
                "checkpoint_sha256": self.sha256, "zoo_version": _zoo_version()}

    def predict(self, items: list[Item]) -> list[dict[str, Any]]:
        """Rows of the predictions file for ``items``, written and read like ``train.py predict --input``."""
        with tempfile.TemporaryDirectory(dir=self._tmp.name) as tmp:
            (Path(tmp) / "in").mkdir()
            src, names = write_inputs(self.kind, items, Path(tmp) / "in")
            out = Path(tmp) / "out"
            out.mkdir()
            try:
                with contextlib.redirect_stdout(io.StringIO()):  # write_predictions also prints its rows
                    predictions = self.trainer.predict(self.model, dataloaders=self.dm.predict_input(str(src)))
                    path = self.model.write_predictions(predictions, out, self.dm)
            except ZooUserError as exc:  # name the request, not the temporary file
                raise ZooUserError(str(exc).replace(str(src), "the request").replace(str(tmp), "request")) from None
            return read_outputs(Path(path), names)

    def sample(self, n: int, seed: int) -> list[dict[str, Any]]:
        """``n`` seeded samples of a GAN / VAE: PNG images (base64), or points for a 2-D GAN."""
        import torch

        from zoo._serve_io import png_base64

        with torch.inference_mode():
            out = self.model.decode_unit(self.model.sample_latent(n, torch.Generator().manual_seed(seed))).cpu()
        if out.ndim != 4:
            return [{"sample": i, "point": row.tolist()} for i, row in enumerate(out)]
        return [{"sample": i, "png_base64": png_base64(img)} for i, img in enumerate(out)]

    def run_batch(self, requests: list[list[Item]]) -> list[list[dict[str, Any]] | Exception]:
        """Per request its rows or its exception; batchable kinds share one ``predict`` (one forward pass)."""
        if self.kind in BATCHABLE and len(requests) > 1:
            try:
                rows = self.predict([item for r in requests for item in r])
                counts = [len(r) for r in requests]
                if len(rows) % sum(counts) == 0:
                    per = len(rows) // sum(counts)
                    starts = [per * sum(counts[:i]) for i in range(len(counts) + 1)]
                    return [rows[a:b] for a, b in zip(starts, starts[1:])]
            except Exception:  # noqa: BLE001 - one bad request must not fail the others: run each on its own
                pass
        return [self._one(r) for r in requests]

    def _one(self, items: list[Item]) -> list[dict[str, Any]] | Exception:
        try:
            if self.kind in BATCHABLE:
                return self.predict(items)
            return [row for item in items for row in self.predict([item])]  # one prompt / series per file
        except Exception as exc:  # noqa: BLE001 - reported to this request's client
            return exc


class Batcher:
    """Dynamic batching: requests queued within ``timeout_s`` of the first, up to ``max_items`` inputs, go to
    :meth:`Predictor.run_batch` together on one worker thread (the event loop keeps accepting meanwhile)."""

    def __init__(self, predictor: Predictor, max_items: int, timeout_s: float) -> None:
        self.predictor, self.max_items, self.timeout_s = predictor, max_items, timeout_s
        self.queue: asyncio.Queue = asyncio.Queue()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="zoo-predict")
        self.batches = self.requests = 0

    async def submit(self, items: list[Item]) -> list[dict[str, Any]]:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((items, future))
        return await future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            size, deadline = len(batch[0][0]), loop.time() + self.timeout_s
            while size < self.max_items:
                try:
                    nxt = self.queue.get_nowait() if deadline <= loop.time() else \
                        await asyncio.wait_for(self.queue.get(), deadline - loop.time())
                except (asyncio.QueueEmpty, asyncio.TimeoutError):
                    break
                batch.append(nxt)
                size += len(nxt[0])
            results = await loop.run_in_executor(self.executor, self.predictor.run_batch, [b[0] for b in batch])
            self.batches, self.requests = self.batches + 1, self.requests + len(batch)
            for (_, future), result in zip(batch, results):
                if not future.done():  # the client may have gone
                    future.set_exception(result) if isinstance(result, Exception) else future.set_result(result)


_PREDICT_DOC = {"requestBody": {"content": {
    "application/json": {"schema": {"type": "object", "properties": {"inputs": {"type": "array", "items": {}}},
                                    "required": ["inputs"]}},
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "file": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}, "required": True}}


def create_app(settings: dict[str, Any]) -> Any:
    """The FastAPI app for ``settings`` (the serve flags as a dict); loads the model before returning."""
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse

    predictor = Predictor(settings["ckpt_path"], settings.get("runs_dir", "runs"), settings.get("model"),
                          settings.get("gpus"))
    batcher = Batcher(predictor, settings.get("max_batch_size", 16), settings.get("batch_timeout", 10.0) / 1000)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        task = asyncio.create_task(batcher.run())
        yield
        task.cancel()
        batcher.executor.shutdown(wait=True)
        predictor.close()

    name = predictor.entry.name
    app = FastAPI(title=f"Lightning Zoo: {name}", version=_zoo_version(), lifespan=lifespan,
                  description=f"`{name}` trained on `{predictor.data}`. "
                              f"Input: {SCHEMAS.get(predictor.kind or '', '-')}")
    app.add_middleware(BodyLimit, max_bytes=int(settings.get("max_body_mb", 10.0) * 2**20))

    @app.exception_handler(RequestError)
    async def _client_error(request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, exc.status)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """200 once the model is loaded (the server listens only after loading)."""
        return {"status": "ok", "model": name, "batches": batcher.batches, "requests": batcher.requests}

    @app.get("/info")
    async def info() -> dict[str, Any]:
        """Model, data, classes, input schema, checkpoint hash, zoo version and the batching settings."""
        return predictor.info() | {"max_batch_size": batcher.max_items, "batch_timeout_ms": batcher.timeout_s * 1000}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        return resources.files("zoo").joinpath("static/index.html").read_text(encoding="utf-8")

    @app.post("/sample")
    async def sample(request: Request) -> Any:
        """``{"n": 1-64, "seed": int}`` -> seeded samples of a GAN or VAE (``GET /info`` says ``"sample": true``)."""
        if not predictor.samples:
            raise RequestError(400, f"model '{name}' does not generate from noise; POST /predict takes its inputs")
        n, seed = sample_args(await request.body())
        rows = await asyncio.get_running_loop().run_in_executor(batcher.executor, predictor.sample, n, seed)
        return {"model": name, "predictions": rows}

    @app.post("/predict", openapi_extra=_PREDICT_DOC)
    async def predict(request: Request) -> Any:
        """The rows ``train.py predict`` writes for the inputs (see ``GET /info`` for this model's schema)."""
        if predictor.refusal:
            raise RequestError(400, predictor.refusal)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/json":
            items = decode_json(await request.body(), predictor.kind)
        elif ctype == "multipart/form-data":
            items = await uploads(request, predictor.kind)
        else:
            raise RequestError(415, f"content type '{ctype or 'none'}' is not accepted; send application/json "
                                    "(or multipart/form-data files for image and audio models)")
        try:
            rows = await batcher.submit(items)
        except ZooUserError as exc:
            raise RequestError(422, str(exc).splitlines()[0]) from None
        except Exception as exc:  # noqa: BLE001 - the server stays up and says what failed
            return JSONResponse({"error": f"model error: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                                 if str(exc) else f"model error: {type(exc).__name__}"}, 500)
        return {"model": name, "predictions": rows}

    return app


def app_from_env() -> Any:
    """The app for a ``--workers N`` process (uvicorn's factory): the settings come from the environment."""
    return create_app(json.loads(os.environ[_ENV]))


def _zoo_version() -> str:
    import zoo

    return zoo.__version__


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    if not args.ckpt_path:
        raise ZooUserError("serve needs --ckpt-path PATH (a checkpoint written by train.py)")
    checks = [(1 <= args.port <= 65535, f"--port {args.port} is not a TCP port; use 1-65535"),
              (args.workers >= 1, f"--workers must be >= 1, got {args.workers}"),
              (args.max_batch_size >= 1, f"--max-batch-size must be >= 1, got {args.max_batch_size}"),
              (args.batch_timeout >= 0, f"--batch-timeout must be >= 0 ms, got {args.batch_timeout}"),
              (args.max_body_mb > 0, f"--max-body-mb must be > 0, got {args.max_body_mb}")]
    for ok, message in checks:
        if not ok:
            raise ZooUserError(message)
    with socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: TIME_WAIT is no conflict
        try:
            sock.bind((args.host, args.port))
        except OSError as exc:
            raise ZooUserError(f"cannot listen on {args.host}:{args.port} ({exc.strerror}); "
                               "pass another --port") from None
    keys = ("ckpt_path", "runs_dir", "model", "gpus", "max_batch_size", "batch_timeout", "max_body_mb")
    return {k: getattr(args, k, None) for k in keys} | {"runs_dir": args.runs_dir or "runs"}


def run_serve(args: argparse.Namespace) -> int:
    """Serve ``args.ckpt_path`` until SIGINT/SIGTERM (uvicorn finishes the requests in flight)."""
    import uvicorn

    settings = _settings(args)
    options = {"host": args.host, "port": args.port, "access_log": False, "timeout_graceful_shutdown": 10}
    if args.workers == 1:
        app = create_app(settings)
    else:  # each process loads the model; check the checkpoint here first so a mistake is one line
        from zoo.inference import load_zoo_checkpoint

        load_zoo_checkpoint(settings["ckpt_path"], settings["runs_dir"], settings["model"])
        os.environ[_ENV] = json.dumps(settings)
        app, options = "zoo.serve:app_from_env", options | {"factory": True, "workers": args.workers}
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}: the API has no authentication", flush=True)
    print(f"serving on http://{args.host}:{args.port} (page /, docs /docs); Ctrl-C or SIGTERM stops", flush=True)
    uvicorn.run(app, **options)
    return 0
