"""Audio classifier on raw waveforms: a log-mel spectrogram front end computed inside the module and a
2-D CNN over it, or an M5-style 1-D CNN on the waveform itself (Dai et al., 2017).

Example:
    >>> from zoo.models import AudioCNN
    >>> model = AudioCNN(num_classes=10, sample_rate=8000, num_samples=8000)
    >>> model(torch.zeros(2, 8000)).shape
    torch.Size([2, 10])
"""
from __future__ import annotations

import math
from typing import Any, Literal, Sequence

import torch
from torch import nn

from zoo.artifacts import log_figure
from zoo.errors import ZooUserError
from zoo.models.base import ClassifierModule, OptimizerName, SchedulerName
from zoo.models.cnn import check_conv_classifier, conv_block
from zoo.models.plots import ConfusionMatrixMixin

__all__ = ["AudioCNN", "LogMelSpectrogram", "plot_spectrograms"]


class LogMelSpectrogram(nn.Module):
    """Waveforms (B, L) -> log-mel spectrograms (B, n_mels, frames): torchaudio's STFT + mel filter bank."""

    def __init__(self, sample_rate: int, window_ms: float, hop_ms: float, n_mels: int, f_min: float,
                 f_max: float | None) -> None:
        super().__init__()
        try:
            import torchaudio
        except ImportError as exc:
            raise ZooUserError("the melspec front end needs torchaudio: pip install 'lightning-zoo[audio]' "
                               "(or --model.frontend waveform)") from exc
        win = round(sample_rate * window_ms / 1000)
        self.hop = max(1, round(sample_rate * hop_ms / 1000))
        if win < 8 or f_min < 0 or (f_max or sample_rate / 2) <= f_min or (f_max or 0) > sample_rate / 2:
            raise ZooUserError(f"impossible spectrogram: window {win} samples, f_min {f_min}, f_max {f_max} at "
                               f"{sample_rate} Hz (need window >= 8 samples and "
                               f"0 <= f_min < f_max <= {sample_rate / 2})")
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate, n_fft=2 ** math.ceil(math.log2(win)), win_length=win, hop_length=self.hop, f_min=f_min,
            f_max=f_max, n_mels=n_mels, power=2.0)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return torch.log(self.mel(wave.float()) + 1e-6)


def plot_spectrograms(examples: dict[int, torch.Tensor], class_names: Sequence[str], sample_rate: int,
                      hop: int | None) -> Any:
    """One panel per class: the log-mel spectrogram a melspec model sees (``hop`` given), or the waveform's
    linear-frequency spectrogram (matplotlib's ``specgram``) for the waveform model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(5, len(examples))
    rows = math.ceil(len(examples) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.4 * rows), dpi=100, squeeze=False)
    for ax in axes.flat[len(examples):]:
        ax.axis("off")
    for ax, (k, x) in zip(axes.flat, sorted(examples.items())):
        if hop is None:
            ax.specgram(x.numpy(), Fs=sample_rate, NFFT=256, noverlap=176, cmap="magma")
            ax.set(ylabel="Hz")
        else:
            ax.imshow(x.numpy(), origin="lower", aspect="auto", cmap="magma",
                      extent=(0, x.shape[1] * hop / sample_rate, 0, x.shape[0]))
            ax.set(ylabel="mel bin")
        ax.set(title=str(class_names[k]), xlabel="time (s)")
    fig.suptitle("one test clip per class" + (" (log-mel input)" if hop else " (spectrogram of the waveform)"))
    fig.tight_layout()
    return fig


class AudioCNN(ConfusionMatrixMixin, ClassifierModule):
    """Audio classifier: a log-mel front end + 2-D CNN, or an M5 1-D CNN on the raw waveform.

    Args:
        num_classes / sample_rate / num_samples: filled in from the DataModule by the CLI.
        frontend: ``melspec`` (log-mel spectrogram computed in the module, then a 2-D CNN) or
            ``waveform`` (M5: a wide strided 1-D conv on the samples, then 1-D conv blocks).
        window_ms / hop_ms: STFT window and hop in milliseconds (the FFT size is the next power of 2).
        n_mels / f_min / f_max: mel filter bank; ``f_max`` None is the Nyquist frequency.
        freq_masks / freq_mask / time_masks / time_mask: SpecAugment on training batches (melspec only):
            this many frequency (time) masks of up to ``freq_mask`` mel bins (``time_mask`` frames).
        channels: output channels of each conv block; None is (32, 64, 128) for melspec, (64, 64, 128, 128)
            for waveform. Blocks pool by 2 (melspec, while both sides are >= 4) or 4 (waveform); the
            melspec CNN flattens its last feature map, the waveform model averages it over time (M5).
        kernel_size: kernel of the conv blocks (odd).
        first_kernel / first_stride: the waveform model's first conv (80 / 16 at 8 kHz, as in M5).
        dropout / head_dropout: dropout after each conv block and before the linear classifier.
        optimizer / lr / weight_decay / momentum / scheduler: the optimisation recipe.
        label_smoothing: cross-entropy label smoothing.
    """

    trainer_defaults = {"max_epochs": 30}
    # The legacy ONNX exporter has no STFT for the melspec front end; TorchScript covers both front ends.
    export_formats = ("torchscript",)
    default_patience = 8

    def __init__(
        self,
        num_classes: int = 10,
        sample_rate: int = 8000,
        num_samples: int = 8000,
        frontend: Literal["melspec", "waveform"] = "melspec",
        window_ms: float = 32.0,
        hop_ms: float = 10.0,
        n_mels: int = 40,
        f_min: float = 20.0,
        f_max: float | None = None,
        freq_masks: int = 2,
        freq_mask: int = 6,
        time_masks: int = 2,
        time_mask: int = 10,
        channels: tuple[int, ...] | None = None,
        kernel_size: int = 3,
        first_kernel: int = 80,
        first_stride: int = 16,
        dropout: float = 0.1,
        head_dropout: float = 0.3,
        optimizer: OptimizerName = "adamw",
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        momentum: float = 0.9,
        scheduler: SchedulerName = "onecycle",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        check_conv_classifier(num_classes, kernel_size)
        if frontend not in ("melspec", "waveform"):
            raise ZooUserError(f"unknown frontend '{frontend}'; choose melspec or waveform")
        self.save_hyperparameters()
        channels = tuple(channels or ((32, 64, 128) if frontend == "melspec" else (64, 64, 128, 128)))
        if frontend == "melspec":
            self.frontend = LogMelSpectrogram(sample_rate, window_ms, hop_ms, n_mels, f_min, f_max)
            self.norm = nn.BatchNorm2d(1)  # learned standardisation of the log-mel input
            self.features, width = self._spec_blocks(channels, n_mels, num_samples // self.frontend.hop + 1)
        else:
            if num_samples // first_stride < 4:
                raise ZooUserError(f"{num_samples} samples are too few for first_stride {first_stride}")
            self.frontend = nn.Sequential(
                nn.Conv1d(1, channels[0], first_kernel, stride=first_stride, padding=first_kernel // 2, bias=False),
                nn.BatchNorm1d(channels[0]), nn.ReLU(inplace=True), nn.MaxPool1d(4))
            self.features, width = self._wave_blocks(channels, num_samples // first_stride // 4), channels[-1]
        self.head = nn.Sequential(nn.Dropout(head_dropout), nn.Linear(width, num_classes))
        self._init_metrics(num_classes, label_smoothing)
        self.example_input_array = torch.zeros(1, num_samples)
        self._examples: dict[int, torch.Tensor] = {}

    def _spec_blocks(self, channels: tuple[int, ...], height: int, width: int) -> tuple[nn.Sequential, int]:
        """Conv blocks and the flattened feature size: a flat head keeps where in time and frequency a
        feature is (global average pooling, which M5 uses, reached only ~35 % on FSDD after 4 epochs)."""
        hp, blocks, c_in = self.hparams, [], 1
        for c_out in channels:
            pool = "max" if min(height, width) >= 4 else "none"
            blocks.append(conv_block(c_in, c_out, hp.kernel_size, True, pool, hp.dropout))
            c_in, height, width = c_out, *((height // 2, width // 2) if pool == "max" else (height, width))
        return nn.Sequential(*blocks, nn.Flatten()), c_in * height * width

    def _wave_blocks(self, channels: tuple[int, ...], length: int) -> nn.Sequential:
        k, layers = self.hparams.kernel_size, []
        for c_in, c_out in zip(channels, channels[1:]):
            layers += [nn.Conv1d(c_in, c_out, k, padding=k // 2, bias=False), nn.BatchNorm1d(c_out),
                       nn.ReLU(inplace=True)]
            if length >= 4:
                layers.append(nn.MaxPool1d(4))
                length //= 4
            if self.hparams.dropout > 0:
                layers.append(nn.Dropout(self.hparams.dropout))
        return nn.Sequential(*layers, nn.AdaptiveAvgPool1d(1), nn.Flatten())

    def spec_augment(self, spec: torch.Tensor) -> torch.Tensor:
        """Independent frequency and time masks per clip (SpecAugment, Park et al. 2019) on (B, 1, F, T)."""
        from torchaudio.functional import mask_along_axis_iid

        hp = self.hparams
        for count, size, axis in ((hp.freq_masks, hp.freq_mask, 2), (hp.time_masks, hp.time_mask, 3)):
            for _ in range(count if size > 0 else 0):
                spec = mask_along_axis_iid(spec, size, 0.0, axis)
        return spec

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if self.hparams.frontend == "melspec":
            x = self.norm(self.frontend(wave).unsqueeze(1))
            if self.training:
                x = self.spec_augment(x)
        else:
            x = self.frontend(wave.unsqueeze(1))
        return self.head(self.features(x))

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self._examples = {}

    def on_test_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        super().on_test_batch_end(outputs, batch, batch_idx, dataloader_idx)
        x, y = batch
        for k in set(y.tolist()) - set(self._examples):
            self._examples[k] = x[(y == k).nonzero()[0, 0]].detach().cpu()

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        if not self._examples:
            return
        dm = getattr(self.trainer, "datamodule", None)
        names = list(getattr(dm, "class_names", None) or range(self.hparams.num_classes))
        melspec = self.hparams.frontend == "melspec"
        with torch.no_grad():
            shown = {k: self.frontend(x[None].to(self.device))[0].cpu() if melspec else x
                     for k, x in self._examples.items()}
        fig = plot_spectrograms(shown, names, self.hparams.sample_rate, self.frontend.hop if melspec else None)
        log_figure(self.trainer, "spectrograms", fig)
