"""What a model may ask of its DataModule: one small typed interface per family, instead of private parts.

A model names its interface in ``data_interface``; the CLI refuses (one line, exit 2) a DataModule that lacks
a member of it, and ``tests/test_registry.py`` checks every model's default DataModule against it. Shapes
(``num_classes``, ``in_channels``, ...) still flow through ``link_fields``.

Example:
    >>> from zoo.datamodules.points import Ring2DDataModule
    >>> isinstance(Ring2DDataModule(), PointMixtureData)
    True
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["ForecastData", "PointMixtureData", "TokenStreamData", "InteractionData", "StylePairData",
           "EncodedTextData", "missing_members"]


@runtime_checkable
class ForecastData(Protocol):
    """A series with a held-out tail: scaled windows in, forecasts back in data units (``lstm``)."""

    raw: Any
    test_size: int
    season_length: int
    target_names: list[str]

    def inverse(self, z: torch.Tensor, history: torch.Tensor, origin: Any = None) -> torch.Tensor: ...
    def inverse_forecast(self, z: torch.Tensor, history: torch.Tensor) -> torch.Tensor: ...
    def forecast_frame(self, forecast: Any) -> Any: ...
    def series_for_plot(self) -> tuple[Any, Any]: ...


@runtime_checkable
class PointMixtureData(Protocol):
    """A known 2-D Gaussian mixture: where its modes are, and real points to score against (``gan2d``)."""

    centers: torch.Tensor
    std: float

    def reference_points(self, stage: str) -> torch.Tensor: ...


@runtime_checkable
class TokenStreamData(Protocol):
    """Text as token ids and back (``gpt``): the DataModule owns the tokenizer."""

    def encode(self, text: str) -> torch.Tensor: ...
    def decode(self, ids: list[int]) -> str: ...


@runtime_checkable
class InteractionData(Protocol):
    """User-item interactions with item names and popularity (``mf``, ``neumf``)."""

    def train_interactions(self) -> tuple[torch.Tensor, ...]: ...
    def item_popularity(self) -> torch.Tensor: ...
    def item_label(self, item: int) -> tuple[str, str]: ...


@runtime_checkable
class StylePairData(Protocol):
    """One content and one style image (``style_transfer``)."""

    content_image: torch.Tensor
    style_image: torch.Tensor


@runtime_checkable
class EncodedTextData(Protocol):
    """Text classification data whose tokenizer the model stores in its checkpoint (``bert``)."""

    encoder: Any


def missing_members(datamodule: Any, interface: type) -> list[str]:
    """The members of ``interface`` that ``datamodule`` lacks (empty when it provides them all)."""
    names = set(vars(interface).get("__annotations__", {}))
    names |= {n for n, v in vars(interface).items() if callable(v) and not n.startswith("_")}
    return sorted(n for n in names if not hasattr(datamodule, n))
