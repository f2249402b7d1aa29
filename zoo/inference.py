"""``train.py predict`` and ``train.py export``: load a zoo checkpoint and use it.

Example:
    python train.py predict --ckpt-path runs/cnn/<run>/checkpoints/best.ckpt --input digits/
    python train.py export --ckpt-path runs/cnn/<run>/checkpoints/best.ckpt --format onnx
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.model_helpers import is_overridden

from zoo.devices import device_settings
from zoo.errors import ZooUserError
from zoo.models.base import ZooModule
from zoo.registry import ModelEntry, get_datamodule_class, get_model_entry
from zoo.runs import load_checkpoint, new_run_dir, resolve_resume

__all__ = ["load_zoo_checkpoint", "run_predict", "run_export"]


def load_zoo_checkpoint(ckpt_path: str, runs_dir: str = "runs", model: str | None = None
                        ) -> tuple[ModelEntry, L.LightningModule, dict[str, Any], Path]:
    """(registry entry, model with the checkpoint's weights in eval mode, raw checkpoint, file)."""
    if ckpt_path == "last" and model is None:
        raise ZooUserError("--ckpt-path last needs --model NAME to know which runs to search")
    path, _ = resolve_resume(ckpt_path, runs_dir, get_model_entry(model).name if model else "")
    ckpt = load_checkpoint(path)
    name = ckpt.get("zoo", {}).get("model") or model
    if name is None:
        raise ZooUserError(f"'{path}' was not written by the zoo (no model name inside); pass --model NAME")
    entry = get_model_entry(name)
    # The checkpoint holds the trained weights: predict and export never fetch initial (pretrained) ones.
    no_hub = {"pretrained": "false", "weights": None} if "pretrained" in ckpt.get("hyper_parameters", {}) else {}
    module = entry.cls.load_from_checkpoint(path, map_location="cpu", **no_hub)
    return entry, module.eval(), ckpt, path


def load_datamodule(ckpt: dict[str, Any], entry: ModelEntry) -> L.LightningDataModule:
    """The DataModule a checkpoint was trained with, rebuilt from its saved hyperparameters and state."""
    cls = get_datamodule_class(ckpt.get("zoo", {}).get("data") or entry.datamodule)
    hparams = {k: v for k, v in ckpt.get("datamodule_hyper_parameters", {}).items() if not k.startswith("_")}
    dm = cls(**hparams)
    if cls.__qualname__ in ckpt:
        dm.load_state_dict(ckpt[cls.__qualname__])
    return dm


def run_predict(args: argparse.Namespace) -> int:
    if not args.ckpt_path or not args.input:
        raise ZooUserError("predict needs --ckpt-path PATH and --input PATH")
    if args.input != "all" and not Path(args.input).exists():  # `all`: every user (recommenders)
        raise ZooUserError(f"--input '{args.input}' does not exist")
    entry, model, ckpt, _ = load_zoo_checkpoint(args.ckpt_path, args.runs_dir, args.model)
    if not is_overridden("write_predictions", model, parent=ZooModule):
        raise ZooUserError(f"model '{entry.name}' has no predict step: {entry.cls.predict_hint}")
    dm = load_datamodule(ckpt, entry)
    loader = dm.predict_input(args.input)
    out_dir = new_run_dir(args.runs_dir, f"{entry.name}-predict", args.output_dir)
    trainer = L.Trainer(**device_settings(args.gpus, None), logger=False, enable_checkpointing=False,
                        enable_model_summary=False, enable_progress_bar=False, default_root_dir=out_dir)
    predictions = trainer.predict(model, dataloaders=loader)
    path = model.write_predictions(predictions, out_dir, dm)
    print(f"predictions: {path}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    if not args.ckpt_path or not args.format:
        raise ZooUserError("export needs --ckpt-path PATH and --format onnx|torchscript")
    entry, model, ckpt, _ = load_zoo_checkpoint(args.ckpt_path, args.runs_dir, args.model)
    if args.format not in entry.cls.export_formats:
        supported = ", ".join(entry.cls.export_formats) or "none"
        raise ZooUserError(f"model '{entry.name}' has no sensible {args.format} export (supported: {supported})")
    example = model.example_input_array
    if example is None:
        raise ZooUserError(f"model '{entry.name}' defines no example_input_array, so it cannot be exported")
    out_dir = new_run_dir(args.runs_dir, f"{entry.name}-export", args.output_dir)
    inputs = example if isinstance(example, tuple) else (example,)
    axes = model.export_dynamic_axes(len(inputs))
    path, diffs = export_model(model, inputs, axes, out_dir, args.format)
    card = export_card(model, inputs, axes, load_datamodule(ckpt, entry), out_dir)
    shapes = " and ".join(str([tuple(x.shape) for x in xs]) for xs in (inputs, grown(inputs, axes)))
    print(f"exported: {path} (max abs difference to PyTorch on the example input: {diffs[0]:.2e}; on inputs "
          f"{shapes}: {max(diffs):.2e})\ninputs: {card}")
    return 0


def grown(inputs: tuple[torch.Tensor, ...], axes: list[dict[int, str]]) -> tuple[torch.Tensor, ...]:
    """The example inputs doubled along every dynamic axis: the second shape an export is checked on."""
    out = []
    for x, dims in zip(inputs, axes):
        for d in dims:
            x = torch.cat([x, x], dim=d)
        out.append(x)
    return tuple(out)


def export_card(model: L.LightningModule, inputs: tuple[torch.Tensor, ...], axes: list[dict[int, str]],
                dm: L.LightningDataModule, out_dir: Path) -> str:
    """``export.json`` beside the model: input names, dtypes, shapes (dynamic axes named), the preprocessing
    the caller must apply (the data's normalisation) and the model's own notes; returns a one-line summary."""
    specs = [{"name": f"input{i}", "dtype": str(x.dtype).replace("torch.", ""),
              "shape": [axes[i].get(d, n) for d, n in enumerate(x.shape)]} for i, x in enumerate(inputs)]
    card: dict[str, Any] = {"inputs": specs, "notes": model.export_notes(out_dir)}
    if getattr(dm, "normalize", False) and hasattr(dm, "mean"):
        card["preprocessing"] = {"scale": "pixels / 255", "mean": list(dm.mean), "std": list(dm.std),
                                 "formula": "(pixels / 255 - mean) / std per channel"}
    (out_dir / "export.json").write_text(json.dumps(card, indent=2) + "\n")
    pre = f"; normalise (x/255 - {list(dm.mean)}) / {list(dm.std)}" if "preprocessing" in card else ""
    return ", ".join(f"{s['name']} {s['dtype']} {s['shape']}" for s in specs) + f"{pre}; {card['notes']} " \
        f"(written to {out_dir / 'export.json'})"


def export_model(model: L.LightningModule, inputs: tuple[torch.Tensor, ...], axes: list[dict[int, str]],
                 out_dir: Path, fmt: str) -> tuple[Path, list[float]]:
    """Write ``model.onnx`` or ``model.pt`` with the given dynamic axes and return the largest difference to
    PyTorch on the example input and on a second input grown along every dynamic axis."""
    checks = [inputs, grown(inputs, axes)]
    with torch.no_grad():
        expected = [model(*xs) for xs in checks]
    if fmt == "onnx":
        import onnxruntime as ort

        path = out_dir / "model.onnx"
        names = [f"input{i}" for i in range(len(inputs))]
        dynamic = {n: axes[i] for i, n in enumerate(names)} | {"output": {0: "batch"}}
        model.to_onnx(path, inputs, input_names=names, output_names=["output"], dynamo=False, dynamic_axes=dynamic)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = [torch.from_numpy(session.run(None, {n: x.numpy() for n, x in zip(names, xs)})[0]) for xs in checks]
    else:
        path = out_dir / "model.pt"
        scripted = model.to_torchscript(method="trace", example_inputs=inputs)
        torch.jit.save(scripted, str(path))
        loaded = torch.jit.load(str(path))
        with torch.no_grad():
            got = [loaded(*xs) for xs in checks]
    diffs = []
    for g, e in zip(got, expected):
        if g.shape != e.shape:
            raise ZooUserError(f"the exported {fmt} model gives shape {tuple(g.shape)} where PyTorch gives "
                               f"{tuple(e.shape)}; this model cannot be exported with dynamic axes {axes}")
        diffs.append((g - e).abs().max().item())
    return path, diffs
