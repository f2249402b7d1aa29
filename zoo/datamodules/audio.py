"""Audio clips held in memory as fixed-length mono waveforms: generated sounds (offline default),
a folder of audio files, and the Free Spoken Digit Dataset.

Every clip is read with soundfile, averaged to mono, resampled (``scipy.signal.resample_poly``) to
``sample_rate`` and centre-padded / centre-cropped to ``duration`` seconds. Training batches get a
random time shift, gain and added white noise (``augment``); evaluation batches are left as read.

``sounds`` generates ten seeded classes (tones, chirps, harmonic and square waves, vibrato, tremolo,
white and band-limited noise bursts, click trains) with random pitch, length, onset and noise level.

Example:
    >>> dm = SoundsDataModule(samples_per_class=10)
    >>> dm.setup()
    >>> x, y = next(iter(dm.train_dataloader()))
    >>> tuple(x.shape[1:]), dm.num_classes
    ((8000,), 10)
"""
from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from zoo.datamodules.base import InMemoryDataModule, stratified_split
from zoo.errors import ZooUserError

__all__ = ["AudioDataModule", "SoundsDataModule", "AudioFolderDataModule", "FSDDDataModule", "read_audio",
           "fix_length", "generate_sounds", "parse_label_pattern"]

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
FSDD_PATTERN = "{digit}_{speaker}_{index}.wav"
SOUND_CLASSES = ("tone", "chirp_up", "chirp_down", "harmonic", "square", "vibrato", "tremolo", "noise",
                 "band_noise", "clicks")


def read_audio(path: Path, sample_rate: int) -> torch.Tensor:
    """A file as a 1-D float32 waveform in [-1, 1]: channels averaged, resampled to ``sample_rate``."""
    try:
        import soundfile as sf
    except ImportError as exc:
        raise ZooUserError("reading audio files needs soundfile: pip install 'lightning-zoo[audio]'") from exc
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile raises LibsndfileError, RuntimeError or TypeError for broken files
        raise ValueError(f"not readable audio ({str(exc).splitlines()[0][:60]})") from exc
    if len(data) == 0:
        raise ValueError("zero-length audio")
    wave = data.mean(axis=1)
    if rate != sample_rate:
        from scipy.signal import resample_poly

        g = math.gcd(int(rate), sample_rate)
        wave = resample_poly(wave, sample_rate // g, int(rate) // g).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(wave))


def fix_length(wave: torch.Tensor, length: int) -> torch.Tensor:
    """Centre-pad with zeros or centre-crop a 1-D waveform to ``length`` samples."""
    extra = len(wave) - length
    if extra >= 0:
        return wave[extra // 2 : extra // 2 + length]
    return torch.nn.functional.pad(wave, (-extra // 2, -extra - (-extra // 2)))


def generate_sounds(samples_per_class: int, sample_rate: int, duration: float,
                    seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded clips of the ten ``SOUND_CLASSES``: (waves (N, L) float32, labels (N,)).

    Each clip lasts 0.3-0.9 s (at a random onset, with a 10 ms fade), has a random base frequency and
    white noise at 10-30 dB SNR.
    """
    rng = np.random.default_rng(seed)
    length = round(sample_rate * duration)
    waves, labels = np.zeros((10 * samples_per_class, length), np.float32), []
    for i in range(10 * samples_per_class):
        k = i % 10
        n = int(min(length, sample_rate * rng.uniform(0.3, 0.9)))
        t = np.arange(n) / sample_rate
        f0 = rng.uniform(150, 500) if k in (3, 4) else rng.uniform(300, 1200)
        if k in (1, 2):  # linear sweep over 1-2 octaves, upwards or downwards
            f1 = f0 * rng.uniform(2, 4)
            fa, fb = (f0, f1) if k == 1 else (f1, f0)
            sig = np.sin(2 * np.pi * (fa * t + (fb - fa) * t**2 / (2 * t[-1])))
        elif k == 3:
            sig = sum(np.sin(2 * np.pi * h * f0 * t) / h for h in range(1, 6))
        elif k == 4:
            sig = np.sign(np.sin(2 * np.pi * f0 * t))
        elif k == 5:  # frequency modulation of 5-10 % at 5-10 Hz
            rate, depth = rng.uniform(5, 10), rng.uniform(0.05, 0.1)
            sig = np.sin(2 * np.pi * f0 * t + depth * f0 / rate * np.sin(2 * np.pi * rate * t))
        elif k == 6:  # amplitude modulation at 8-20 Hz
            sig = np.sin(2 * np.pi * f0 * t) * (0.55 + 0.45 * np.sin(2 * np.pi * rng.uniform(8, 20) * t))
        elif k in (7, 8):
            sig = rng.standard_normal(n)
            if k == 8:  # keep a 200-500 Hz wide band around 2 f0
                spec, freqs = np.fft.rfft(sig), np.fft.rfftfreq(n, 1 / sample_rate)
                spec[np.abs(freqs - 2 * f0) > rng.uniform(100, 250)] = 0
                sig = np.fft.irfft(spec, n)
        elif k == 9:
            sig = np.zeros(n)
            sig[:: int(sample_rate / rng.uniform(10, 40))] = 1.0
        else:
            sig = np.sin(2 * np.pi * f0 * t)
        fade = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / (0.01 * sample_rate))
        sig = sig * fade / (np.abs(sig).max() + 1e-8) * rng.uniform(0.3, 0.9)
        start = rng.integers(0, length - n + 1)
        waves[i, start : start + n] = sig
        noise = rng.standard_normal(length) * np.sqrt(np.mean(sig**2) / 10 ** (rng.uniform(10, 30) / 10))
        waves[i] += noise.astype(np.float32)
        labels.append(k)
    return torch.from_numpy(waves), torch.tensor(labels)


def parse_label_pattern(pattern: str) -> re.Pattern:
    """``{digit}_{speaker}_{index}.wav`` as a regex over file names with one group per ``{field}``."""
    parts = re.split(r"\{(\w+)\}", pattern)
    if len(parts) < 3:
        raise ZooUserError(f"label_pattern '{pattern}' has no {{field}}; use e.g. '{FSDD_PATTERN}' or 'fsdd'")
    return re.compile("".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>.+?)" for i, p in enumerate(parts)))


class AudioDataModule(InMemoryDataModule):
    """Base of the audio DataModules: fixed-length waveforms in memory, augmented per training batch.

    Args:
        data_dir: folder of the audio files (see each subclass).
        batch_size: clips per batch.
        sample_rate: every clip is resampled to this rate (Hz).
        duration: clips are centre-padded / centre-cropped to this many seconds.
        val_fraction: share of the training clips held out for validation (seeded, stratified).
        augment: random time shift, gain and added noise on training batches (never at evaluation).
        max_shift: largest random time shift in seconds (either way; the gap is filled with zeros).
        gain_db: random gain drawn from [-gain_db, +gain_db] dB.
        snr_db: white noise is added at an SNR drawn from [snr_db, snr_db + 20] dB.
        num_workers / seed: unused by the in-memory loaders / seed of the splits and augmentation.
    """

    link_fields = ("num_classes", "sample_rate", "num_samples")

    def __init__(self, data_dir: str | None = None, batch_size: int = 64, sample_rate: int = 8000,
                 duration: float = 1.0, val_fraction: float = 0.1, augment: bool = True, max_shift: float = 0.1,
                 gain_db: float = 6.0, snr_db: float = 20.0, num_workers: int = 0, seed: int = 42) -> None:
        super().__init__(data_dir, batch_size, num_workers, seed)
        if sample_rate <= 0 or duration <= 0:
            raise ZooUserError(f"sample_rate and duration must be positive, got {sample_rate} and {duration}")
        if not 0.0 < val_fraction < 1.0:
            raise ZooUserError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.sample_rate, self.duration, self.val_fraction = sample_rate, duration, val_fraction
        self.augment, self.max_shift, self.gain_db, self.snr_db = augment, max_shift, gain_db, snr_db
        self.class_names: list[str] = []
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.files: dict[str, list[str]] = {}  # per split, the clips' names (file names when read from files)

    @property
    def num_samples(self) -> int:
        return round(self.sample_rate * self.duration)

    @property
    def num_classes(self) -> int:
        if not self.class_names:
            self.setup()
        return len(self.class_names)

    def load(self) -> tuple[torch.Tensor, torch.Tensor, list[str], dict[str, torch.Tensor]]:
        """(waves (N, L), labels, clip names, {"train"|"test": indices}) with ``self.class_names`` set."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        x, y, names, parts = self.load()
        try:
            train, val = stratified_split(y[parts["train"]], self.val_fraction, self.seed)
        except ValueError as exc:
            raise ZooUserError(f"too few training clips for a stratified validation split ({exc}); add clips "
                               "or lower --data.val_fraction") from exc
        idx = {"train": parts["train"][train], "val": parts["train"][val], "test": parts["test"]}
        self.splits = {s: (x[i], y[i]) for s, i in idx.items()}
        self.files = {s: [names[j] for j in i.tolist()] for s, i in idx.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"class_names": list(self.class_names)}  # predict needs the names, not the data

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.class_names = list(state.get("class_names", []))

    def batch_transform(self, train: bool):
        if not (train and self.augment):
            return None

        def transform(batch: tuple[torch.Tensor, ...], gen: torch.Generator) -> tuple[torch.Tensor, ...]:
            x, y = batch
            n, length = x.shape
            shift = ((torch.rand(n, 1, generator=gen) * 2 - 1) * self.max_shift * self.sample_rate).round().long()
            pos = torch.arange(length) - shift
            x = x.gather(1, pos.clamp(0, length - 1)) * ((pos >= 0) & (pos < length))
            x = x * 10 ** ((torch.rand(n, 1, generator=gen) * 2 - 1) * self.gain_db / 20)
            snr = self.snr_db + 20 * torch.rand(n, 1, generator=gen)
            power = x.pow(2).mean(dim=1, keepdim=True)
            return x + torch.randn(x.shape, generator=gen) * (power / 10 ** (snr / 10)).sqrt(), y

        return transform

    def predict_dataloader(self):
        return self._loader("test", False)

    def predict_input(self, path: str):
        """Batches of every audio file at ``path`` (a file or a folder), converted like the training clips;
        their names are kept in ``self.predict_names``."""
        src = Path(path).expanduser()
        files = [src] if src.is_file() else _list_audio(src) if src.is_dir() else []
        if not files:
            raise ZooUserError(f"no audio files at '{src}'; pass a .wav file or a folder of them")
        waves = []
        for f in files:
            try:
                waves.append(fix_length(read_audio(f, self.sample_rate), self.num_samples))
            except ValueError as exc:
                raise ZooUserError(f"'{f}' is {exc}; "
                                   f"predict expects audio files ({', '.join(AUDIO_EXTENSIONS)})") from exc
        self.predict_names = [str(f.relative_to(src)) if src.is_dir() else f.name for f in files]
        return self.make_loader((torch.stack(waves), torch.zeros(len(files), dtype=torch.long)), train=False)


def _list_audio(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())


class SoundsDataModule(AudioDataModule):
    """Ten classes of generated sounds (seeded, no files needed): the offline default of ``audio_cnn``.

    Args:
        samples_per_class: clips generated per class.
        test_fraction: share of the clips in the test split (seeded, stratified).
    """

    def __init__(self, data_dir: str | None = None, batch_size: int = 64, samples_per_class: int = 60,
                 test_fraction: float = 0.2, **kwargs: Any) -> None:
        super().__init__(data_dir, batch_size, **kwargs)
        if samples_per_class < 5 or not 0.0 < test_fraction < 1.0:
            raise ZooUserError(f"samples_per_class must be >= 5 and test_fraction in (0, 1), got "
                               f"{samples_per_class} and {test_fraction}")
        self.samples_per_class, self.test_fraction = samples_per_class, test_fraction
        self.class_names = list(SOUND_CLASSES)

    def load(self):
        x, y = generate_sounds(self.samples_per_class, self.sample_rate, self.duration, self.seed)
        train, test = stratified_split(y, self.test_fraction, self.seed)
        return x, y, [f"{SOUND_CLASSES[k]}_{i}" for i, k in enumerate(y.tolist())], {"train": train, "test": test}


class AudioFolderDataModule(AudioDataModule):
    """A folder of audio files labelled by sub-folder (``root/<label>/*.wav``) or by a file-name pattern.

    Args:
        label_pattern: ``None`` for sub-folder labels; else a file-name pattern such as
            ``{digit}_{speaker}_{index}.wav`` (``fsdd`` is this one): the label is the ``{label}``
            field or else the first field; ``{speaker}`` and ``{index}`` feed the splits.
        split: ``official`` (clips whose ``{index}`` is below ``test_index_below`` are the test set,
            FSDD's split), or ``random`` (seeded, stratified ``test_fraction``). ``test_speakers``
            overrides it with a speaker split.
        test_speakers: speakers (the ``{speaker}`` field) whose clips are the test set; none of them is
            in training or validation.
        test_index_below: ``official`` split threshold on the ``{index}`` field.
        test_fraction: share of the clips in the test split of the ``random`` split.
        on_bad_file: ``skip`` unreadable or empty files (and names the pattern does not match) with a
            warning naming them, or ``error``.
    """

    def __init__(self, data_dir: str | None = None, batch_size: int = 64, sample_rate: int = 16000,
                 label_pattern: str | None = None, split: Literal["official", "random"] = "random",
                 test_speakers: list[str] | None = None, test_index_below: int = 5, test_fraction: float = 0.2,
                 on_bad_file: Literal["skip", "error"] = "skip", **kwargs: Any) -> None:
        super().__init__(data_dir, batch_size, sample_rate=sample_rate, **kwargs)
        if not 0.0 < test_fraction < 1.0:
            raise ZooUserError(f"test_fraction must be in (0, 1), got {test_fraction}")
        self.label_pattern = FSDD_PATTERN if label_pattern == "fsdd" else label_pattern
        self.split, self.test_speakers, self.test_index_below = split, test_speakers, test_index_below
        self.test_fraction, self.on_bad_file = test_fraction, on_bad_file

    def root(self) -> Path:
        return self.require_data_dir("audio_folder", "point --data-dir at a folder of .wav files")

    def _complain(self, problems: list[str], what: str) -> None:
        if not problems:
            return
        listing = "; ".join(problems[:10]) + (f"; ... {len(problems) - 10} more" if len(problems) > 10 else "")
        if self.on_bad_file == "error":
            raise ZooUserError(f"{len(problems)} {what}: {listing}; fix them or pass --data.on_bad_file skip")
        warnings.warn(f"skipping {len(problems)} {what}: {listing}", stacklevel=3)

    def _scan(self, root: Path) -> list[tuple[Path, dict[str, str]]]:
        """(file, fields) per clip; fields has ``label`` and, with a pattern, its other fields."""
        if self.label_pattern is None:
            dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
            found = [(f, {"label": d.name}) for d in dirs for f in _list_audio(d)]
            if not found:
                raise ZooUserError(f"no audio files in sub-folders of '{root}'; expected {root}/<label>/*.wav, or "
                                   "pass --data.label_pattern (e.g. fsdd) for labels in the file names")
            return found
        regex, files = parse_label_pattern(self.label_pattern), _list_audio(root)
        if not files:
            raise ZooUserError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) under '{root}'")
        matches = [(f, regex.fullmatch(f.name)) for f in files]
        if not any(m for _, m in matches):
            raise ZooUserError(f"label_pattern '{self.label_pattern}' matches none of the {len(files)} file names "
                               f"under '{root}' (e.g. '{files[0].name}'); fix --data.label_pattern")
        self._complain([f.name for f, m in matches if not m], f"file name(s) not matching '{self.label_pattern}'")
        first = next(iter(regex.groupindex))
        return [(f, {**m.groupdict(), "label": m.groupdict().get("label", m[first])}) for f, m in matches if m]

    def load(self):
        root = self.root()
        clips, names, bad, waves = [], [], [], []
        for f, fields in self._scan(root):
            try:
                waves.append(fix_length(read_audio(f, self.sample_rate), self.num_samples))
            except ValueError as exc:
                bad.append(f"{f} ({exc})")
                continue
            clips.append(fields)
            names.append(str(f.relative_to(root)))
        self._complain(bad, "unreadable or empty audio file(s)")
        if not clips:
            raise ZooUserError(f"no readable audio under '{root}'")
        self.class_names = sorted({c["label"] for c in clips}, key=lambda s: (not s.isdigit(), s.zfill(9)))
        if len(self.class_names) < 2:
            raise ZooUserError(f"'{root}' has one label ('{self.class_names[0]}'); a classifier needs at least 2")
        y = torch.tensor([self.class_names.index(c["label"]) for c in clips])
        return torch.stack(waves), y, names, self._split_indices(clips, y)

    def _field(self, clips: list[dict[str, str]], name: str, why: str) -> list[str]:
        if name not in clips[0]:
            raise ZooUserError(f"{why} needs a {{{name}}} field in --data.label_pattern (got {self.label_pattern})")
        return [c[name] for c in clips]

    def _split_indices(self, clips: list[dict[str, str]], y: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.test_speakers:
            speakers = self._field(clips, "speaker", "--data.test_speakers")
            unknown = sorted(set(self.test_speakers) - set(speakers))
            if unknown:
                raise ZooUserError(f"test speaker(s) {', '.join(unknown)} not in the data; speakers: "
                                   f"{', '.join(sorted(set(speakers)))}")
            test = torch.tensor([s in self.test_speakers for s in speakers])
            if test.all():
                raise ZooUserError("--data.test_speakers names every speaker; leave at least one for training")
        elif self.split == "official":
            index = self._field(clips, "index", "the official split")
            if not all(i.isdigit() for i in index):
                raise ZooUserError(f"the official split needs numeric {{index}} fields, got e.g. '{index[0]}'")
            test = torch.tensor([int(i) < self.test_index_below for i in index])
            if test.all() or not test.any():
                raise ZooUserError(f"test_index_below {self.test_index_below} puts all clips in one split; change it")
        else:
            try:
                return dict(zip(("train", "test"), stratified_split(y, self.test_fraction, self.seed)))
            except ValueError as exc:
                raise ZooUserError(f"too few clips per label for a stratified test split ({exc})") from exc
        return {"train": torch.nonzero(~test).flatten(), "test": torch.nonzero(test).flatten()}


class FSDDDataModule(AudioFolderDataModule):
    """Free Spoken Digit Dataset: ``<data_dir>/audio/fsdd/recordings/{digit}_{speaker}_{index}.wav``.

    3,000 8 kHz recordings (6 speakers x 10 digits x 50). The official split tests on indices 0-4;
    ``--data.test_speakers [theo]`` tests on unseen speakers instead.
    """

    def __init__(self, data_dir: str | None = None, batch_size: int = 64, sample_rate: int = 8000,
                 label_pattern: str | None = "fsdd", split: Literal["official", "random"] = "official",
                 **kwargs: Any) -> None:
        super().__init__(data_dir, batch_size, sample_rate=sample_rate, label_pattern=label_pattern, split=split,
                         **kwargs)

    def root(self) -> Path:
        how = ("point --data-dir at a folder holding audio/fsdd/recordings (e.g. ../shared/data) or the "
               "recordings themselves")
        base = self.require_data_dir("fsdd", how)
        for folder in (base / "audio" / "fsdd" / "recordings", base / "fsdd" / "recordings", base / "recordings"):
            if folder.is_dir():
                return folder
        return base
