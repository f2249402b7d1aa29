"""Write images and figures into the run folder and through whichever loggers are active.

Every image is saved as PNG under ``<run dir>/artifacts/`` (rank 0 only) and forwarded to
W&B (``log_image``) and TensorBoard (``add_image``); CSV loggers just get the file.

Example:
    >>> log_figure(trainer, "confusion_matrix", fig)  # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.runs import is_wandb


def run_dir(trainer: Any) -> Path:
    """The run folder: the trainer's ``default_root_dir`` (the CLI points it at the run folder)."""
    return Path(trainer.default_root_dir)


def artifact_path(trainer: Any, name: str, suffix: str = ".png") -> Path:
    path = run_dir(trainer) / "artifacts" / f"{name}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def log_image(trainer: Any, name: str, image: np.ndarray | torch.Tensor, step: int | None = None) -> Path | None:
    """Save an HxWxC (or CxHxW tensor) image in [0, 1] or uint8 as PNG and send it to the loggers."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        if image.ndim == 3 and image.shape[0] in (1, 3):
            image = image.permute(1, 2, 0)
        image = image.numpy() if image.dtype == torch.uint8 else image.float().numpy()  # uint8 stays 0-255
    if image.dtype != np.uint8:
        image = (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if not trainer.is_global_zero:
        return None
    from PIL import Image

    step = trainer.global_step if step is None else step
    path = artifact_path(trainer, f"{name}_step{step:06d}")
    Image.fromarray(image).save(path)
    _forward(trainer, name, image, step)
    return path


def log_figure(trainer: Any, name: str, fig: Any, step: int | None = None) -> Path | None:
    """Render a matplotlib figure, save it as PNG, send it to the loggers and close it."""
    import matplotlib.pyplot as plt

    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[:, :, :3].copy()
    plt.close(fig)
    return log_image(trainer, name, image, step)


def _forward(trainer: Any, name: str, image: np.ndarray, step: int) -> None:
    from lightning.pytorch.loggers import TensorBoardLogger  # does not import tensorboard itself

    for logger in trainer.loggers:
        if is_wandb(logger):
            logger.log_image(key=name, images=[image], step=step)
        elif isinstance(logger, TensorBoardLogger):
            dataformats = "HWC" if image.ndim == 3 else "HW"
            logger.experiment.add_image(name, image, global_step=step, dataformats=dataformats)
