"""The zoo's one registry: a static name table (``MODELS``, ``DATAMODULES``) whose classes are imported
only when used, as Hugging Face's auto-mappings do, with timm's ``create_model`` / ``list_models`` API.

``list_models()``, ``train.py --list`` and ``--model NAME --help`` read this table without importing torch;
training, ``create_model`` and ``entry.cls`` import the one module a name points to. Adding a model is a
model file plus one line in ``MODELS``; a project of your own registers at run time with ``register_model``.

Example:
    >>> from zoo.registry import create_model, list_models
    >>> "cnn" in list_models()
    True
    >>> model = create_model("cnn", num_classes=10)

Your own model, from your own package: ``register_model("toy", "my_pkg.toy:Toy", datamodule="mnist")``.
"""
from __future__ import annotations

import difflib
import fnmatch
import importlib
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


class UnknownNameError(ValueError):
    """Raised for a model or DataModule name that is not registered."""


@dataclass(frozen=True)
class Entry:
    """One registered name: ``target`` is ``"package.module:ClassName"``; ``defaults`` are constructor
    arguments this name overrides (``densenet`` is ``resnet`` with another backbone)."""

    name: str
    target: str
    aliases: tuple[str, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def module(self) -> str:
        return self.target.partition(":")[0]

    @property
    def class_name(self) -> str:
        return self.target.partition(":")[2]

    @property
    def cls(self) -> type:
        """The class, imported on first use."""
        return getattr(importlib.import_module(self.module), self.class_name)


@dataclass(frozen=True)
class ModelEntry(Entry):
    """A model name with the DataModule it trains on by default."""

    datamodule: str = ""


def _m(name: str, target: str, datamodule: str, *aliases: str, **defaults: Any) -> ModelEntry:
    return ModelEntry(name, f"zoo.models.{target}", tuple(aliases), defaults, datamodule)


def _d(name: str, target: str, *aliases: str) -> Entry:
    return Entry(name, f"zoo.datamodules.{target}", tuple(aliases))


MODELS: dict[str, ModelEntry] = {e.name: e for e in (
    _m("audio_cnn", "audio_cnn:AudioCNN", "sounds", "audio_classifier", "m5"),
    _m("autoencoder", "autoencoder:Autoencoder", "digits", "ae", "conv_autoencoder"),
    _m("autorec", "autorec:AutoRec", "ratings", "i_autorec"),
    _m("bert", "bert:BertClassifier", "sentiment", "bert_classifier", "text_classifier"),
    _m("cnn", "cnn:CNNClassifier", "digits", "cnn_classifier"),
    _m("densenet", "transfer:TransferClassifier", "digits_rgb", backbone="densenet121"),
    _m("detector", "detector:Detector", "detection_scenes", "object_detector"),
    _m("fast_style", "fast_style:FastStyleTransfer", "style_content", "johnson", "fast_style_transfer"),
    _m("gan", "gan:GAN", "digits", "dcgan"),
    _m("gan2d", "gan:PointGAN", "ring2d", "point_gan"),
    _m("gnn", "gnn:GNN", "karate"),
    _m("gpt", "gpt:GPT", "lm", "gpt_lm", "nanogpt"),
    _m("lstm", "lstm:LSTMForecaster", "timeseries", "lstm_forecaster"),
    _m("mf", "mf:MatrixFactorization", "ratings", "matrix_factorization", "biased_mf"),
    _m("mlp", "mlp:TabularMLP", "tabular", "tabular_mlp", "dense"),
    _m("neumf", "neumf:NeuMF", "ratings", "ncf"),
    _m("resnet", "transfer:TransferClassifier", "digits_rgb", "transfer"),
    _m("semi_supervised", "semi_supervised:SemiSupervisedClassifier", "digits", "ssl"),
    _m("style_transfer", "style_transfer:StyleTransfer", "style_pair", "gatys", "neural_style"),
    _m("vae", "autoencoder:VAE", "digits", "variational_autoencoder"),
    _m("vit", "vit:ViTClassifier", "digits", "vision_transformer"),
)}

DATAMODULES: dict[str, Entry] = {e.name: e for e in (
    _d("audio_folder", "audio:AudioFolderDataModule", "audiofolder"),
    _d("cifar10", "images:CIFAR10DataModule"),
    _d("cora", "graphs:CoraDataModule"),
    _d("cora_link", "graphs:CoraLinkDataModule"),
    _d("citeseer", "graphs:CiteSeerDataModule"),
    _d("citeseer_link", "graphs:CiteSeerLinkDataModule"),
    _d("detection", "detection:DetectionDataModule"),
    _d("detection_scenes", "detection:DetectionScenesDataModule", "digit_scenes"),
    _d("digits", "images:DigitsDataModule"),
    _d("digits_rgb", "image_folder:DigitsRGBDataModule"),
    _d("fashion_mnist", "images:FashionMNISTDataModule", "fashionmnist"),
    _d("fsdd", "audio:FSDDDataModule", "free_spoken_digits"),
    _d("grid2d", "points:Grid2DDataModule", "grid"),
    _d("image_folder", "image_folder:ImageFolderDataModule", "imagefolder"),
    _d("karate", "graphs:KarateDataModule"),
    _d("karate_link", "graphs:KarateLinkDataModule"),
    _d("lm", "language:LanguageDataModule", "language", "text_lm"),
    _d("mnist", "images:MNISTDataModule"),
    _d("mnist_detection", "detection:MNISTDetectionDataModule"),
    _d("movielens", "interactions:MovieLensDataModule", "ml100k"),
    _d("pubmed", "graphs:PubMedDataModule"),
    _d("pubmed_link", "graphs:PubMedLinkDataModule"),
    _d("raccoon", "detection:RaccoonDataModule"),
    _d("ratings", "interactions:InteractionsDataModule", "interactions"),
    _d("ring2d", "points:Ring2DDataModule", "ring"),
    _d("sentiment", "text:SentimentDataModule", "toy_sentiment"),
    _d("sounds", "audio:SoundsDataModule"),
    _d("sst2", "text:SST2DataModule", "sst-2", "glue_sst2"),
    _d("style_content", "style:ContentFolderDataModule", "content_folder"),
    _d("style_pair", "style:StylePairDataModule", "style_images"),
    _d("synthetic_graphs", "graph_classification:SyntheticGraphsDataModule"),
    _d("tabular", "tabular:TabularDataModule", "table", "csv"),
    _d("text", "text:TextDataModule", "csv_text"),
    _d("timeseries", "timeseries:TimeSeriesDataModule", "time_series", "csv_series"),
    _d("tu", "graph_classification:TUDataModule"),
)}


def _target(cls_or_target: type | str) -> str:
    if isinstance(cls_or_target, str):
        return cls_or_target
    return f"{cls_or_target.__module__}:{cls_or_target.__qualname__}"


def _add(table: dict[str, Any], entry: Entry, kind: str) -> None:
    taken = {n: e for e in table.values() for n in (e.name, *e.aliases)}
    for name in (entry.name, *entry.aliases):
        if name in taken and taken[name] != entry:
            raise ValueError(f"{kind} name '{name}' is already registered (as {taken[name].target})")
    table[entry.name] = entry


def register_model(name: str, target: type | str | None = None, *, datamodule: str,
                   aliases: tuple[str, ...] | list[str] = (), **defaults: Any) -> Any:
    """Register a model of your own: ``register_model("toy", "my_pkg.toy:Toy", datamodule="mnist")``, or as a
    class decorator (``@register_model("toy", datamodule="mnist")``). ``defaults`` override constructor
    arguments for this name."""

    def add(cls_or_target: type | str) -> Any:
        _add(MODELS, ModelEntry(name, _target(cls_or_target), tuple(aliases), dict(defaults), datamodule), "model")
        return cls_or_target

    return add if target is None else add(target)


def register_datamodule(name: str, target: type | str | None = None, *,
                        aliases: tuple[str, ...] | list[str] = ()) -> Any:
    """Register a DataModule of your own (a ``"module:Class"`` target, or as a class decorator)."""

    def add(cls_or_target: type | str) -> Any:
        _add(DATAMODULES, Entry(name, _target(cls_or_target), tuple(aliases)), "datamodule")
        return cls_or_target

    return add if target is None else add(target)


def close_matches_message(name: str, known: list[str], kind: str) -> str:
    """``unknown model 'cnnn'; did you mean cnn?`` (or the full list when nothing is close)."""
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"known {kind}s: {', '.join(known)}"
    return f"unknown {kind} '{name}'; {hint} (see `python train.py --list`)"


def _resolve(name: str, table: dict[str, T], kind: str) -> T:
    if name in table:
        return table[name]
    for entry in table.values():
        if name in entry.aliases:  # type: ignore[attr-defined]
            return entry
    known = sorted(n for e in table.values() for n in (e.name, *e.aliases))  # type: ignore[attr-defined]
    raise UnknownNameError(close_matches_message(name, known, kind))


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry of a model name or alias."""
    return _resolve(name, MODELS, "model")


def get_datamodule_entry(name: str) -> Entry:
    """The registry entry of a DataModule name or alias."""
    return _resolve(name, DATAMODULES, "datamodule")


def get_datamodule_class(name: str) -> type:
    """The DataModule class registered under a name or alias (imported now)."""
    return get_datamodule_entry(name).cls


def create_model(name: str, **hparams: Any) -> Any:
    """Instantiate a registered model; ``hparams`` override the registered defaults."""
    entry = get_model_entry(name)
    return entry.cls(**{**entry.defaults, **hparams})


def create_datamodule(name: str, **hparams: Any) -> Any:
    """Instantiate a registered DataModule."""
    return get_datamodule_class(name)(**hparams)


def list_models(pattern: str = "*") -> list[str]:
    """Sorted registered model names matching a shell-style pattern (imports nothing)."""
    return sorted(n for n in MODELS if fnmatch.fnmatch(n, pattern))


def list_datamodules(pattern: str = "*") -> list[str]:
    """Sorted registered DataModule names matching a shell-style pattern (imports nothing)."""
    return sorted(n for n in DATAMODULES if fnmatch.fnmatch(n, pattern))


__all__ = ["MODELS", "DATAMODULES", "Entry", "ModelEntry", "UnknownNameError", "register_model",
           "register_datamodule", "get_model_entry", "get_datamodule_entry", "get_datamodule_class",
           "create_model", "create_datamodule", "list_models", "list_datamodules", "close_matches_message"]
