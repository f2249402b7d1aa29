"""Request decoding and result reading for ``train.py serve``: a request becomes the same kind of file
``train.py predict --input`` takes (PNG/WAV files, a .txt, a .csv) and what ``write_predictions`` wrote is
read back as JSON rows. Nothing from a client is ever evaluated: JSON, base64 and media decoders only.

Example:
    >>> items = decode_json(b'{"inputs": ["a fine film"]}', "text")
    >>> items[0].value
    'a fine film'
"""
from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: What each input kind accepts in ``POST /predict`` (shown by ``GET /info`` and the page).
SCHEMAS: dict[str, str] = {
    "image": 'JSON {"inputs": [base64 PNG/JPEG string, or nested list [H][W] / [H][W][C] of 0-255]} '
             'or multipart file(s)',
    "audio": 'JSON {"inputs": [base64 WAV/FLAC/OGG string]} or multipart file(s)',
    "text": 'JSON {"inputs": ["a text", ["first", "second"] for pair tasks, ...]}',
    "prompt": 'JSON {"inputs": ["a prompt", ...]} (each prompt is continued)',
    "rows": 'JSON {"inputs": [{"column": value, ...}, ...]} (the feature columns of the training table)',
    "series": 'JSON {"inputs": [{"time column": ..., "value column": ...}, ...]} (the rows of one series CSV)',
    "users": 'JSON {"inputs": ["raw user id", "item:ID" for similar items, ...]}',
}
#: Kinds whose files ``predict_input`` reads as several inputs at once (one forward pass for a batch).
BATCHABLE = {"image", "audio", "text", "rows", "users"}
MAX_ITEMS = 256  # inputs in one request
MAX_PIXELS = 4096 * 4096
_FLOAT = re.compile(r"^-?(\d+\.\d*|\.\d+|\d+(\.\d*)?[eE][-+]?\d+)$")  # ids and labels such as "7" stay strings


class RequestError(Exception):
    """A client mistake: HTTP ``status`` with a one-line ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Item:
    """One decoded input: ``value`` (bytes with ``suffix`` for media, str / list / dict otherwise)."""

    value: Any
    name: str
    suffix: str = ""


def decode_json(body: bytes, kind: str) -> list[Item]:
    """The inputs of a JSON body ``{"inputs": [...]}`` (or ``{"input": x}``), checked for ``kind``."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(400, f"malformed JSON ({str(exc).splitlines()[0][:120]}); send {SCHEMAS[kind]}") from None
    if not isinstance(data, dict) or not ({"inputs", "input"} & data.keys()):
        raise RequestError(422, f"the JSON body needs an 'inputs' list; send {SCHEMAS[kind]}")
    inputs = data["inputs"] if "inputs" in data else [data["input"]]
    if kind == "series" and inputs and isinstance(inputs[0], dict):
        inputs = [inputs]  # the rows of one series are one input
    if not isinstance(inputs, list) or not inputs:
        raise RequestError(422, f"'inputs' must be a non-empty list; send {SCHEMAS[kind]}")
    if len(inputs) > MAX_ITEMS:
        raise RequestError(413, f"{len(inputs)} inputs in one request; send at most {MAX_ITEMS}")
    return [_decode(kind, x, f"inputs[{i}]") for i, x in enumerate(inputs)]


def decode_upload(data: bytes, filename: str, kind: str, index: int) -> Item:
    """An uploaded image or audio file, checked like a base64 one."""
    if kind not in ("image", "audio"):
        raise RequestError(415, f"file upload is for image and audio models; this one takes {SCHEMAS[kind]}")
    return _media(kind, data, Path(filename or f"upload{index}").name)


def _decode(kind: str, x: Any, where: str) -> Item:
    if kind in ("image", "audio"):
        if isinstance(x, str):
            return _media(kind, _b64(x, where), where)
        if kind == "image" and isinstance(x, list):
            return _pixels(x, where)
        raise RequestError(422, f"{where} must be a base64 string{' or a nested list of pixels' * (kind == 'image')}")
    if kind in ("text", "prompt"):
        if kind == "text" and isinstance(x, list) and len(x) == 2 and all(isinstance(s, str) for s in x):
            return Item([_line(s, where) for s in x], where)
        if not isinstance(x, str):
            raise RequestError(422, f"{where} must be a string{' or a [first, second] pair' * (kind == 'text')}")
        return Item(_line(x, where) if kind == "text" else _nonempty(x, where), where)
    if kind == "rows":
        return Item(_row(x, where), where)
    if kind == "series":
        if not isinstance(x, list) or not x:
            raise RequestError(422, f"{where} must be a non-empty list of row objects (one series)")
        return Item([_row(r, f"{where}[{i}]") for i, r in enumerate(x)], where)
    if isinstance(x, bool) or not isinstance(x, (str, int)):  # users
        raise RequestError(422, f"{where} must be a user id (string or integer)")
    return Item(_line(str(x), where), where)


def _nonempty(s: str, where: str) -> str:
    if not s.strip():
        raise RequestError(422, f"{where} is empty")
    return s


def _line(s: str, where: str) -> str:
    """One line of a predict .txt file: newlines and tabs become spaces."""
    return _nonempty(re.sub(r"[\r\n\t]+", " ", s), where)


def _row(x: Any, where: str) -> dict[str, Any]:
    if not isinstance(x, dict) or not x:
        raise RequestError(422, f"{where} must be an object of column: value")
    bad = [k for k, v in x.items() if v is not None and not isinstance(v, (str, int, float, bool))]
    if bad:
        raise RequestError(422, f"{where}['{bad[0]}'] must be a number, string, boolean or null")
    return x


def _b64(s: str, where: str) -> bytes:
    try:
        return base64.b64decode(s.split(",", 1)[1] if s.startswith("data:") else s, validate=True)
    except (binascii.Error, ValueError, IndexError):
        raise RequestError(422, f"{where} is not valid base64") from None


def _media(kind: str, data: bytes, name: str) -> Item:
    if kind == "image":
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(data)) as img:
                if img.width * img.height > MAX_PIXELS:
                    raise RequestError(413, f"{name} is {img.width}x{img.height} pixels; at most {MAX_PIXELS} pixels")
                img.load()
                fmt = (img.format or "png").lower()
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError, ValueError) as exc:
            why = re.sub(r" <_io\.BytesIO object at \w+>", "", str(exc).splitlines()[0])[:100]
            raise RequestError(422, f"{name} is not a readable image ({why})") from None
        return Item(data, name, ".jpg" if fmt in ("jpeg", "mpo") else f".{fmt}")
    import soundfile as sf

    try:
        fmt = sf.info(io.BytesIO(data)).format.lower()
    except (RuntimeError, sf.LibsndfileError, TypeError) as exc:
        raise RequestError(422, f"{name} is not a readable audio file ({str(exc).splitlines()[0][:100]})") from None
    if fmt not in ("wav", "flac", "ogg"):
        raise RequestError(422, f"{name} is {fmt} audio; send WAV, FLAC or OGG")
    return Item(data, name, f".{fmt}")


def _pixels(x: list, where: str) -> Item:
    from PIL import Image

    try:
        arr = np.asarray(x, dtype=np.float64)
    except (ValueError, TypeError):
        raise RequestError(422, f"{where} is a ragged or non-numeric nested list; send [H][W] or [H][W][C]") from None
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)) or min(arr.shape[:2]) < 1:
        raise RequestError(422, f"{where} has shape {list(arr.shape)}; an image is [H][W] or [H][W][1|3|4]")
    if arr.shape[0] * arr.shape[1] > MAX_PIXELS:
        raise RequestError(413, f"{where} has {arr.shape[0] * arr.shape[1]} pixels; at most {MAX_PIXELS}")
    if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 255:
        raise RequestError(422, f"{where} has values outside 0..255")
    out = io.BytesIO()
    Image.fromarray(arr.round().astype(np.uint8).squeeze(-1) if arr.ndim == 3 and arr.shape[2] == 1
                    else arr.round().astype(np.uint8)).save(out, format="PNG")
    return Item(out.getvalue(), where, ".png")


class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` (declared or streamed) is a 413, read no further."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        message = f"request body over the {self.max_bytes / 2**20:g} MB limit; send less or start with --max-body-mb"
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            from starlette.responses import JSONResponse

            return await JSONResponse({"error": message}, 413)(scope, receive, send)
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            msg = await receive()
            seen += len(msg.get("body", b""))
            if seen > self.max_bytes:
                raise RequestError(413, message)
            return msg

        await self.app(scope, limited, send)


def sample_args(body: bytes) -> tuple[int, int]:
    """(n, seed) of a ``POST /sample`` body ``{"n": 1-64, "seed": int}`` (both optional)."""
    try:
        data = json.loads(body or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise RequestError(400, 'malformed JSON; send {"n": 8, "seed": 0}') from None
    n, seed = (data.get("n", 8), data.get("seed", 0)) if isinstance(data, dict) else (None, None)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (n, seed)) or not 1 <= n <= 64:
        raise RequestError(422, 'send {"n": 1-64, "seed": integer}')
    return n, seed


async def uploads(request: Any, kind: str) -> list[Item]:
    """The files of a multipart ``POST /predict`` (any field name), checked like base64 inputs."""
    from starlette.datastructures import UploadFile

    try:
        form = await request.form(max_files=256, max_fields=256)
    except RequestError:
        raise
    except Exception as exc:  # noqa: BLE001 - starlette's multipart parser errors
        raise RequestError(400, f"malformed multipart body ({str(exc)[:120]})") from None
    files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
    if not files:
        raise RequestError(422, "the multipart body holds no file; send the image/audio as a 'file' field")
    return [decode_upload(await f.read(), f.filename or "", kind, i) for i, f in enumerate(files)]


def write_inputs(kind: str, items: list[Item], folder: Path) -> tuple[Path, dict[str, str]]:
    """The ``predict --input`` path for ``items`` (in order) and {file name written: client's name}."""
    if kind in ("image", "audio"):
        names = {}
        for i, item in enumerate(items):
            file = folder / f"in{i:05d}{item.suffix}"
            file.write_bytes(item.value)
            names |= {file.name: item.name, file.stem: item.name, str(file): item.name}
        return folder, names
    if kind in ("rows", "series"):
        import pandas as pd

        rows = items[0].value if kind == "series" else [item.value for item in items]
        path = folder / "rows.csv"
        pd.DataFrame(rows).to_csv(path, index=False)
        return path, {}
    path = folder / "inputs.txt"
    lines = ["\t".join(item.value) if isinstance(item.value, list) else item.value for item in items]
    path.write_text("\n".join(lines) + ("\n" if kind != "prompt" else ""), encoding="utf-8")
    return path, {}


def read_outputs(path: Path, names: dict[str, str]) -> list[dict[str, Any]]:
    """What ``write_predictions`` wrote as rows: CSV rows (numbers parsed), ``{"text"}`` for a .txt, or
    ``{"name", "png_base64"}`` per image of an output folder; temp file names become the client's."""
    if path.is_dir():
        return [{"name": names.get(f.name.removesuffix("_stylized.png"), f.name),
                 "png_base64": base64.b64encode(f.read_bytes()).decode()} for f in sorted(path.glob("*.png"))]
    if path.suffix == ".txt":
        return [{"text": path.read_text(encoding="utf-8").strip("\n")}]  # one prompt per run
    with path.open(newline="", encoding="utf-8") as fh:
        return [{k: names.get(v, _value(v)) for k, v in row.items()} for row in csv.DictReader(fh)]


def png_base64(image: Any) -> str:
    """A (C, H, W) tensor in [0, 1] as a base64 PNG."""
    from PIL import Image

    arr = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    out = io.BytesIO()
    Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def _value(v: str | None) -> Any:
    return float(v) if v and _FLOAT.match(v) else v
