"""BERT-family text classifier: any Hugging Face encoder under ``AutoModelForSequenceClassification``.

Single-label, multi-label (sigmoid + ``threshold``) and sentence-pair input; AdamW with no weight decay on
biases and LayerNorm, linear warmup then linear decay, gradient clipping (``gradient_clip_val``), optional
freezing of the embeddings / lower layers. Accumulation and 16/bf16 mixed precision come from the Trainer
(``--trainer.accumulate_grad_batches N``, ``--precision bf16-mixed``). The checkpoint holds the label
names, the backbone config and the tokenizer, so reloading needs neither the hub nor the training data.

Example:
    >>> model = BertClassifier.load_from_checkpoint("best.ckpt")  # doctest: +SKIP
    >>> model.predict(["a gripping , moving film ."])  # doctest: +SKIP
    [{'label': 'positive', 'probability': 0.97, 'scores': {'negative': 0.03, 'positive': 0.97}}]
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from zoo.datamodules.interfaces import EncodedTextData
from zoo.datamodules.tokenizers import TextEncoder, resolve_backbone, warn_not_pretrained
from zoo.errors import ZooUserError
from zoo.models.base import OptimizerName, ZooModule, build_optimizer
from zoo.models.evaluation import write_class_predictions
from zoo.models.plots import ConfusionMatrixMixin

__all__ = ["BertClassifier"]

TextInput = str | tuple[str, str]


def _build_network(backbone: str, labels: dict[str, Any], vocab_size: int | None, scratch: dict[str, int],
                   config: dict[str, Any] | None) -> nn.Module:
    """The HF model: from a saved config (reload), from scratch (BertConfig) or from pretrained weights."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, BertConfig

    if config is not None:
        return AutoModelForSequenceClassification.from_config(AutoConfig.for_model(**{**config, **labels}))
    if backbone == "scratch":
        if vocab_size is None:
            raise ZooUserError("backbone 'scratch' needs vocab_size (the text DataModules link it; else pass "
                               "--model.vocab_size N)")
        hidden, heads = scratch["hidden"], scratch["heads"]
        if hidden % heads:
            raise ZooUserError(f"scratch_hidden ({hidden}) must be divisible by scratch_heads ({heads})")
        cfg = BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=scratch["layers"],
                         num_attention_heads=heads, intermediate_size=4 * hidden,
                         max_position_embeddings=max(512, scratch["max_length"]), **labels)
        return AutoModelForSequenceClassification.from_config(cfg)
    try:
        net = AutoModelForSequenceClassification.from_pretrained(backbone, ignore_mismatched_sizes=True, **labels)
    except (OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ZooUserError(f"cannot load backbone '{backbone}' ({reason}); use a local model folder, a hub name "
                           "cached while online, or --data.backbone minilm|scratch") from exc
    if vocab_size is not None and vocab_size > net.config.vocab_size:
        net.resize_token_embeddings(vocab_size)
    return net


class BertClassifier(ConfusionMatrixMixin, ZooModule):
    """BERT-family text classifier (any HF encoder; single-/multi-label, sentence pairs) with acc, macro-F1, MCC.

    Args:
        backbone / num_classes / class_names / multi_label / vocab_size / max_length: linked from the text
            DataModule (``--data.backbone`` picks the encoder: auto, minilm, scratch, hub name or folder).
        threshold: sigmoid threshold of multi-label predictions.
        classifier_dropout: dropout before the classification head (None: the backbone's default).
        scratch_hidden / scratch_layers / scratch_heads: size of the from-scratch BERT (backbone ``scratch``).
        freeze_embeddings / freeze_layers: freeze the embeddings / the lowest N encoder layers.
        optimizer / lr / weight_decay: ``lr`` None means 5e-5 for pretrained backbones, 1e-3 from scratch.
        scheduler / warmup_ratio: ``linear`` (warmup then linear decay to 0), ``constant`` (warmup) or ``none``.
        gradient_clip_val: gradient-norm clipping (0 disables; ``--trainer.gradient_clip_val`` overrides).
        backbone_config: filled in by checkpoints so reloading builds the network without downloading.
    """

    monitor = "val/acc"
    monitor_mode = "max"
    export_formats = ("onnx",)
    trainer_defaults = {"max_epochs": 3}
    data_interface = EncodedTextData

    def __init__(self, backbone: str = "auto", num_classes: int = 2, class_names: tuple[str, ...] | None = None,
                 multi_label: bool = False, vocab_size: int | None = None, max_length: int = 128,
                 threshold: float = 0.5, classifier_dropout: float | None = None, scratch_hidden: int = 128,
                 scratch_layers: int = 2, scratch_heads: int = 2, freeze_embeddings: bool = False,
                 freeze_layers: int = 0, optimizer: OptimizerName = "adamw", lr: float | None = None,
                 weight_decay: float = 0.01, scheduler: Literal["linear", "constant", "none"] = "linear",
                 warmup_ratio: float = 0.06, gradient_clip_val: float = 1.0,
                 backbone_config: dict[str, Any] | None = None) -> None:
        super().__init__()
        if num_classes < (1 if multi_label else 2):
            raise ZooUserError(f"num_classes must be >= 2 (>= 1 multi-label), got {num_classes}")
        names = tuple(class_names) if class_names else tuple(str(i) for i in range(num_classes))
        if len(names) != num_classes:
            raise ZooUserError(f"{len(names)} class_names for num_classes={num_classes}; give one name per class")
        if scheduler not in ("linear", "constant", "none"):
            raise ZooUserError(f"unknown scheduler '{scheduler}'; choose linear, constant or none")
        self.save_hyperparameters()
        self.class_names, self.multi_label = names, multi_label
        self.backbone_path = self.hparams.backbone = resolve_backbone(backbone)
        self.pretrained = self.backbone_path != "scratch"
        self.hparams["pretrained_backbone"] = self.pretrained
        if not self.pretrained and backbone_config is None:
            warn_not_pretrained("backbone 'scratch'")
        self.lr = lr if lr is not None else (5e-5 if self.pretrained else 1e-3)
        labels = dict(num_labels=num_classes, id2label=dict(enumerate(names)),
                      label2id={n: i for i, n in enumerate(names)},
                      problem_type="multi_label_classification" if multi_label else "single_label_classification")
        if classifier_dropout is not None:
            labels["classifier_dropout"] = classifier_dropout
        scratch = dict(hidden=scratch_hidden, layers=scratch_layers, heads=scratch_heads, max_length=max_length)
        self.net = _build_network(self.backbone_path, labels, vocab_size, scratch, backbone_config)
        self.net.train()  # from_pretrained returns eval mode, which would silently disable dropout
        self._freeze(freeze_embeddings, freeze_layers)
        self._encoder: TextEncoder | None = None
        task = dict(task="multilabel", num_labels=num_classes) if multi_label else dict(task="multiclass",
                                                                                        num_classes=num_classes)
        self.train_acc = torchmetrics.Accuracy(**task)
        for stage in ("val", "test"):
            setattr(self, f"{stage}_acc", torchmetrics.Accuracy(**task))
            setattr(self, f"{stage}_f1", torchmetrics.F1Score(average="macro", **task))
            setattr(self, f"{stage}_mcc", torchmetrics.MatthewsCorrCoef(**task))
        self.example_input_array = (torch.ones(1, 8, dtype=torch.long), torch.ones(1, 8, dtype=torch.long))

    def _freeze(self, embeddings: bool, layers: int) -> None:
        base = self.net.base_model
        if embeddings:
            if not hasattr(base, "embeddings"):
                raise ZooUserError(f"{type(base).__name__} has no .embeddings to freeze; "
                                   "drop --model.freeze_embeddings")
            base.embeddings.requires_grad_(False)
        if layers:
            n = self.net.config.num_hidden_layers
            blocks = next((m for m in base.modules() if isinstance(m, nn.ModuleList) and len(m) == n), None)
            if blocks is None or not 0 < layers <= n:
                raise ZooUserError(f"freeze_layers must be in 0..{n} for this backbone, got {layers}")
            for block in blocks[:layers]:
                block.requires_grad_(False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits

    # ---- training ------------------------------------------------------------------------------------------------
    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> dict[str, torch.Tensor]:
        labels = batch["labels"]
        logits = self(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        if self.multi_label:
            loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float())
            preds, target = (logits.float().sigmoid() > self.hparams.threshold).long(), labels.long()
        else:
            loss, preds, target = F.cross_entropy(logits.float(), labels), logits.argmax(-1), labels
        self.log(f"{stage}/loss", loss, on_step=stage == "train", on_epoch=True, prog_bar=True, batch_size=len(labels))
        names = ("acc",) if stage == "train" else ("acc", "f1", "mcc")
        for name in names:
            metric = getattr(self, f"{stage}_{name}")
            metric(preds, target)
            self.log(f"{stage}/{name}", metric, on_step=False, on_epoch=True,
                     prog_bar=name == "acc" and stage != "train")
        return {"loss": loss, "preds": preds, "target": target}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")["loss"]

    def on_train_epoch_end(self) -> None:
        self.log("model/pretrained", float(self.pretrained))

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        return self._step(batch, "test")

    def on_test_epoch_start(self) -> None:
        if not self.multi_label:
            super().on_test_epoch_start()

    def on_test_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if not self.multi_label:
            super().on_test_batch_end(outputs, batch, batch_idx, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        if not self.multi_label:
            super().on_test_epoch_end()

    def param_groups(self) -> list[dict[str, Any]]:
        """Weight decay on matrices only: biases and LayerNorm weights (1-D) are not decayed."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": self.hparams.weight_decay},
                {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        opt = build_optimizer(self.param_groups(), hp.optimizer, self.lr, hp.weight_decay)
        if hp.scheduler == "none":
            return opt
        from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

        total = self._total_steps()
        warm = int(round(hp.warmup_ratio * total))
        sched = (get_linear_schedule_with_warmup(opt, warm, total) if hp.scheduler == "linear"
                 else get_constant_schedule_with_warmup(opt, warm))  # BERT's own recipe, as Hugging Face ships it
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer: Any, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        value = self.hparams.gradient_clip_val if gradient_clip_val is None else gradient_clip_val
        if value:
            self.clip_gradients(optimizer, gradient_clip_val=value,
                                gradient_clip_algorithm=gradient_clip_algorithm or "norm")

    def export_dynamic_axes(self, n_inputs: int) -> list[dict[int, str]]:
        return [{0: "batch", 1: "sequence"} for _ in range(n_inputs)]

    def export_notes(self, out_dir: Path) -> str:
        """Ships the tokenizer beside the exported model (``tokenizer.json``, the ``tokenizers`` format)."""
        self.encoder.tokenizer.save(str(out_dir / "tokenizer.json"))
        names = list(self.hparams.class_names or [])
        return (f"tokenize with tokenizer.json (tokenizers.Tokenizer.from_file; truncate to "
                f"{self.hparams.max_length}, pad with id {self.encoder.pad_id}); input0 = token ids, input1 = "
                f"attention mask (1 for tokens, 0 for padding), int64; output = logits over {names}")

    # ---- tokenizer and checkpoints ---------------------------------------------------------------------------
    @property
    def encoder(self) -> TextEncoder:
        """The tokenizer: the DataModule's while training, the checkpoint's after reloading."""
        if self._encoder is None:
            if not self.pretrained:
                raise ZooUserError("this scratch model has no tokenizer; train it with a zoo text DataModule or "
                                   "load it with BertClassifier.load_from_checkpoint")
            self._encoder = TextEncoder.from_backbone(self.backbone_path, self.hparams.max_length)
        return self._encoder

    def setup(self, stage: str) -> None:
        dm = getattr(self._trainer, "datamodule", None)
        if isinstance(getattr(type(dm), "encoder", None), property):
            rows = self.net.get_input_embeddings().num_embeddings
            if dm.encoder.vocab_size > rows:
                raise ZooUserError(f"the DataModule's tokenizer has {dm.encoder.vocab_size} tokens but the model "
                                   f"embeds {rows}; use the same backbone for data and model")
            self._encoder = dm.encoder

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["hyper_parameters"] = {**checkpoint.get("hyper_parameters", {}),
                                          "backbone_config": self.net.config.to_dict()}
        if self._encoder is not None or self.pretrained:
            checkpoint["zoo_tokenizer"] = self.encoder.to_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "zoo_tokenizer" in checkpoint:
            self._encoder = TextEncoder.from_state(checkpoint["zoo_tokenizer"])

    # ---- prediction on raw strings --------------------------------------------------------------------------
    def _pack(self, items: Sequence[TextInput]) -> dict[str, torch.Tensor]:
        firsts = [x if isinstance(x, str) else x[0] for x in items]
        pairs = (None if all(isinstance(x, str) for x in items)
                 else [x[1] if not isinstance(x, str) else "" for x in items])
        return {k: v.to(self.device) for k, v in self.encoder.pack(firsts, pairs).items()}

    def predict_step(self, batch: Any, batch_idx: int = 0, dataloader_idx: int = 0) -> dict[str, Any]:
        """Probabilities for a batch of raw strings / (text, pair) tuples, or of a tokenised dict batch."""
        texts = list(batch) if isinstance(batch, (list, tuple)) else None
        inputs = self._pack(texts) if texts is not None else batch
        logits = self(inputs["input_ids"], inputs["attention_mask"], inputs.get("token_type_ids")).float()
        probs = logits.sigmoid() if self.multi_label else logits.softmax(-1)
        return {"probs": probs.cpu(), "texts": texts}

    def decode(self, probs: torch.Tensor) -> list[dict[str, Any]]:
        """Label (``a|b`` multi-label), its probability and every class score for each row of probabilities."""
        out = []
        for row in probs.tolist():
            scores = dict(zip(self.class_names, row))
            if self.multi_label:
                chosen = [i for i, p in enumerate(row) if p > self.hparams.threshold]
                label = "|".join(self.class_names[i] for i in chosen)
                prob = min((row[i] for i in chosen), default=1.0 - max(row))
            else:
                best = max(range(len(row)), key=row.__getitem__)
                label, prob = self.class_names[best], row[best]
            out.append({"label": label, "probability": prob, "scores": scores})
        return out

    @torch.inference_mode()
    def predict(self, texts: TextInput | Sequence[TextInput], batch_size: int = 64) -> list[dict[str, Any]]:
        """Classify raw strings (or (text, pair) tuples): ``[{"label", "probability", "scores"}, ...]``."""
        items = [texts] if isinstance(texts, (str, tuple)) else list(texts)
        was_training = self.training
        self.eval()
        probs = [self.predict_step(items[i : i + batch_size])["probs"] for i in range(0, len(items), batch_size)]
        self.train(was_training)
        return self.decode(torch.cat(probs)) if probs else []

    def write_predictions(self, predictions: list[Any], out_dir: Path, datamodule: Any) -> Path:
        """``predictions.csv`` (input text, prediction, p_<class>...; multi-label predictions ``a|b``), printed too."""
        texts = [t if isinstance(t, str) else "\t".join(t) for out in predictions
                 for t in (out["texts"] or [""] * len(out["probs"]))]
        task = "multilabel" if self.multi_label else "multiclass"
        probs = torch.cat([o["probs"] for o in predictions])
        return write_class_predictions(Path(out_dir) / "predictions.csv", texts, probs, self.class_names, task,
                                       threshold=self.hparams.threshold, sep="|")
