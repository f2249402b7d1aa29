"""``train.py predict`` and ``train.py export``: load a zoo checkpoint and use it.

Example:
    python train.py predict --ckpt-path runs/cnn/<run>/checkpoints/best.ckpt --input digits/
    python train.py export --ckpt-path runs/cnn/<run>/checkpoints/best.ckpt --format onnx
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.model_helpers import is_overridden

from zoo.cli import device_settings
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
    if not Path(args.input).exists():
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
    entry, model, _, _ = load_zoo_checkpoint(args.ckpt_path, args.runs_dir, args.model)
    if args.format not in entry.cls.export_formats:
        supported = ", ".join(entry.cls.export_formats) or "none"
        raise ZooUserError(f"model '{entry.name}' has no sensible {args.format} export (supported: {supported})")
    example = model.example_input_array
    if example is None:
        raise ZooUserError(f"model '{entry.name}' defines no example_input_array, so it cannot be exported")
    out_dir = new_run_dir(args.runs_dir, f"{entry.name}-export", args.output_dir)
    path, diff = export_model(model, example, out_dir, args.format)
    print(f"exported: {path} (max abs difference to PyTorch on the example input: {diff:.2e})")
    return 0


def export_model(model: L.LightningModule, example: Any, out_dir: Path, fmt: str) -> tuple[Path, float]:
    """Write ``model.onnx`` or ``model.pt`` and check it against PyTorch on ``example``."""
    inputs = example if isinstance(example, tuple) else (example,)
    with torch.no_grad():
        expected = model(*inputs)
    if fmt == "onnx":
        import onnxruntime as ort

        path = out_dir / "model.onnx"
        names = [f"input{i}" for i in range(len(inputs))]
        model.to_onnx(path, inputs, input_names=names, output_names=["output"], dynamo=False,
                      dynamic_axes={n: {0: "batch"} for n in [*names, "output"]})
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {n: x.numpy() for n, x in zip(names, inputs)})[0])
    else:
        path = out_dir / "model.pt"
        scripted = model.to_torchscript(method="trace", example_inputs=inputs)
        torch.jit.save(scripted, str(path))
        with torch.no_grad():
            got = torch.jit.load(str(path))(*inputs)
    return path, (got - expected).abs().max().item()
