"""Shared pieces of every zoo LightningModule: optimiser/scheduler recipes and classification steps.

Example:
    >>> class MyNet(ZooModule):
    ...     monitor, monitor_mode = "val/loss", "min"
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar, Iterable, Literal

import lightning as L
import torch
import torchmetrics
from torch import nn

from zoo.errors import ZooUserError

OptimizerName = Literal["sgd", "adam", "adamw"]
SchedulerName = Literal["none", "onecycle", "cosine"]


def build_optimizer(
    params: Iterable[Any], name: str, lr: float, weight_decay: float = 0.0, momentum: float = 0.9
) -> torch.optim.Optimizer:
    """SGD (Nesterov momentum), Adam or AdamW over ``params`` (tensors or param-group dicts)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=momentum > 0, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ZooUserError(f"unknown optimizer '{name}'; choose sgd, adam or adamw")


def build_scheduler(optimizer: torch.optim.Optimizer, name: str, total_steps: int) -> dict | None:
    """A per-step LR scheduler dict for Lightning, or None for a constant LR."""
    if name == "none":
        return None
    if name == "onecycle":
        max_lr = [g["lr"] for g in optimizer.param_groups]
        sched = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=max(total_steps, 2))
    elif name == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
    else:
        raise ZooUserError(f"unknown scheduler '{name}'; choose none, onecycle or cosine")
    return {"scheduler": sched, "interval": "step"}


class ZooModule(L.LightningModule):
    """Base class: which metric to monitor, whether multi-device works, and the optimiser recipe.

    Subclasses call ``save_hyperparameters()`` with at least ``optimizer``, ``lr``,
    ``weight_decay`` and ``scheduler``; override :meth:`param_groups` for per-group LRs.
    """

    #: Metric for early stopping and best-checkpoint selection; None where no validation metric exists.
    monitor: ClassVar[str | None] = "val/loss"
    monitor_mode: ClassVar[Literal["min", "max"]] = "min"
    #: False for models that cannot be split over devices (full-batch GNN, Gatys style transfer).
    supports_multi_device: ClassVar[bool] = True
    #: Early-stopping patience (validation checks) the CLI uses unless ``--patience`` is given.
    default_patience: ClassVar[int] = 5
    #: Trainer defaults of this model for the CLI (e.g. ``{"max_epochs": 200}``); flags still win. An instance
    #: may refine them from its hyper-parameters (the CLI applies those after building the model).
    trainer_defaults: ClassVar[dict[str, Any]] = {}
    #: DataModule arguments this model's CLI runs default to, where the DataModule has them (flags still win).
    data_defaults: ClassVar[dict[str, Any]] = {}
    #: What this model asks of its DataModule beyond the linked shapes (a Protocol of zoo.datamodules.interfaces);
    #: the CLI refuses a DataModule that lacks part of it.
    data_interface: ClassVar[type | None] = None
    #: Export formats that make sense for this model (``train.py export``); () for none.
    export_formats: ClassVar[tuple[str, ...]] = ("onnx", "torchscript")

    #: Said by ``train.py predict`` for a model that does not override :meth:`write_predictions`.
    predict_hint: ClassVar[str] = "it makes no predictions from new inputs"

    def export_dynamic_axes(self, n_inputs: int) -> list[dict[int, str]]:
        """Per input of ``example_input_array``, the axes whose size may change in an export (ONNX dynamic
        axes; ``train.py export`` checks the exported file on inputs grown along each). Batch by default."""
        return [{0: "batch"} for _ in range(n_inputs)]

    def export_notes(self, out_dir: Path) -> str:
        """What a caller of the exported file must know beyond shapes (may write files such as a tokenizer
        into ``out_dir``); one sentence."""
        return "the inputs are what forward() takes; the output is forward()'s"

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: str | Path, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """Lightning's ``load_from_checkpoint``, reading the file as data only (``weights_only=True``): a
        checkpoint holding pickled objects is refused with a :class:`ZooUserError` instead of being run.

        Example:
            >>> model = CNNClassifier.load_from_checkpoint("runs/cnn/<run>/checkpoints/best.ckpt")  # doctest: +SKIP
        """
        import pickle

        from zoo.errors import unsafe_checkpoint_message

        if kwargs.get("weights_only") is False:
            raise ZooUserError("the zoo loads checkpoints as data only; weights_only=False is not offered")
        kwargs["weights_only"] = True
        try:
            return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)
        except pickle.UnpicklingError as exc:
            raise ZooUserError(unsafe_checkpoint_message(checkpoint_path, exc)) from exc

    def write_predictions(self, predictions: list[Any], out_dir: Path, datamodule: Any) -> Path:
        """Turn ``trainer.predict`` outputs into a human-readable file in ``out_dir``; return its path."""
        raise ZooUserError(f"{type(self).__name__} has no predict output format")

    def param_groups(self) -> Iterable[Any]:
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        opt = build_optimizer(self.param_groups(), hp.optimizer, hp.lr, hp.get("weight_decay", 0.0),
                              hp.get("momentum", 0.9))
        sched = build_scheduler(opt, hp.get("scheduler", "none"), self._total_steps())
        return opt if sched is None else {"optimizer": opt, "lr_scheduler": sched}

    def log_train_step(self, name: str, value: torch.Tensor, mean: torchmetrics.MeanMetric, batch_size: int) -> None:
        """``self.log(name, value, on_step=True, on_epoch=True)`` at a fraction of the CPU cost: ``mean``
        gathers the epoch mean (log it at epoch end) and the step value is logged as ``<name>_step`` only on
        the steps the logger writes (``log_every_n_steps``). Each ``self.log`` costs Lightning ~1 ms on a
        CPU, a sizeable share of a small model's step. For automatic optimisation only: the cadence uses
        ``global_step``, which manual optimisation (the GANs) advances once per ``optimizer.step()``."""
        mean.update(value.detach(), weight=batch_size)
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:
            self.log(f"{name}_step", value, on_step=True, on_epoch=False, prog_bar=True)

    def _total_steps(self) -> int:
        trainer = self.trainer
        steps = trainer.estimated_stepping_batches
        if math.isinf(steps):  # max_epochs=-1 and no max_steps: fall back to one epoch's worth
            steps = trainer.num_training_batches
        return int(steps)


class ClassifierModule(ZooModule):
    """Cross-entropy classification with accuracy and macro-F1 per stage.

    Subclasses build ``self.net`` (or override ``forward``) and call ``_init_metrics(num_classes)``.
    """

    monitor = "val/acc"
    monitor_mode = "max"

    def _init_metrics(self, num_classes: int, label_smoothing: float = 0.0) -> None:
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self._init_stage_metrics(task="multiclass", num_classes=num_classes)

    def _init_stage_metrics(self, **task: Any) -> None:
        """Per stage: accuracy and macro-F1 (torchmetrics ``task`` arguments) and the mean loss."""
        for stage in ("train", "val", "test"):
            setattr(self, f"{stage}_acc", torchmetrics.Accuracy(**task))
            setattr(self, f"{stage}_f1", torchmetrics.F1Score(average="macro", **task))
            setattr(self, f"{stage}_loss", torchmetrics.MeanMetric())

    def _shared_step(self, batch: Any, stage: str) -> dict[str, torch.Tensor]:
        x, y = batch
        logits = self(x)
        loss = self.criterion(logits, y)
        preds = logits.argmax(dim=-1)
        self._log_step(stage, loss, preds, y)
        return {"loss": loss, "preds": preds, "target": y, "logits": logits}

    def _log_step(self, stage: str, loss: torch.Tensor, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Update the stage's metrics and mean loss, logged once per epoch by :meth:`_log_epoch_metrics`
        (in training the step loss too, see :meth:`log_train_step`)."""
        getattr(self, f"{stage}_acc").update(preds, target)
        getattr(self, f"{stage}_f1").update(preds, target)
        if stage == "train":
            self.log_train_step("train/loss", loss, self.train_loss, len(target))
        else:
            getattr(self, f"{stage}_loss").update(loss.detach(), weight=len(target))

    def _log_epoch_metrics(self, stage: str) -> None:
        for name in ("loss", "acc", "f1"):  # Lightning computes (synced across devices) and resets the metric
            metric = getattr(self, f"{stage}_{name}")
            if metric.update_count:  # a stage without batches (e.g. limit_val_batches=0) logs nothing
                self.log(f"{stage}/{name}", metric, prog_bar=name == "loss" or (name == "acc" and stage != "train"))

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")["loss"]

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._shared_step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(x).softmax(dim=-1)

    def export_notes(self, out_dir: Path) -> str:
        return "output = class logits (softmax for probabilities), in the order of the data's classes"

    def write_predictions(self, predictions: list[Any], out_dir: Path, datamodule: Any) -> Path:
        """``predictions.csv`` (input, prediction, p_<class>...), also printed one line per input."""
        from zoo.models.evaluation import write_class_predictions

        probs = torch.cat(predictions)
        names = getattr(datamodule, "class_names", None) or [str(i) for i in range(probs.shape[1])]
        inputs = getattr(datamodule, "predict_names", None) or [str(i) for i in range(len(probs))]
        return write_class_predictions(out_dir / "predictions.csv", inputs, probs, names)
