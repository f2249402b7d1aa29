"""Language-modelling data: a text file or a folder of ``.txt`` files as one contiguous token stream.

The stream is cut into train / validation / test parts in that order (the last ``val_fraction +
test_fraction`` held out, no overlap). Training batches are random fixed-length blocks (``steps_per_epoch``
batches per epoch, seeded from ``seed`` and the epoch); validation and test read their part as consecutive
non-overlapping blocks, every token once. Targets are the inputs shifted by one token.

Offline default (no ``path``): the Python documentation topics that ship with CPython's standard library
(``pydoc_data.topics``, about 465 k characters of English prose and code, PSF License), so a fresh machine
trains without any download. Real data: ``--data.path text/tinyshakespeare.txt --data-dir ../shared/data``.

Example:
    >>> dm = LanguageDataModule(block_size=32, batch_size=4)
    >>> dm.setup("fit")
    >>> x, y = next(iter(dm.train_dataloader()))
    >>> tuple(x.shape), bool((x[:, 1:] == y[:, :-1]).all())
    ((4, 32), True)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import torch

from zoo.datamodules._lm_tokenizer import LMTokenizer, TokenizerKind
from zoo.datamodules.base import SplitDataModule, TensorBatchLoader
from zoo.errors import ZooUserError

__all__ = ["LanguageDataModule", "RandomBlockLoader", "bundled_text", "read_text"]


def bundled_text() -> str:
    """The offline default corpus: CPython's ``pydoc_data.topics`` help texts, sorted by topic."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def _read_utf8(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ZooUserError(f"'{file}' is not UTF-8 text (bad byte at {exc.start}); convert it, e.g. with "
                           "iconv -f latin1 -t utf-8") from exc


def read_text(path: Path) -> str:
    """A UTF-8 file, or every ``*.txt`` of a folder (sorted, recursive) joined by blank lines."""
    files = sorted(p for p in path.rglob("*.txt") if p.is_file()) if path.is_dir() else [path]
    if not files:
        raise ZooUserError(f"folder '{path}' has no .txt files; pass a text file or a folder of .txt files")
    text = "\n\n".join(_read_utf8(file) for file in files)
    if not text.strip():
        raise ZooUserError(f"'{path}' holds no text; pass a non-empty UTF-8 text file")
    return text


class RandomBlockLoader:
    """``steps`` batches of (x, y) blocks at random offsets of ``stream`` (seeded by seed, epoch and rank)."""

    def __init__(self, stream: torch.Tensor, block_size: int, batch_size: int, steps: int, seed: int,
                 epoch_fn: Any, rank: int = 0) -> None:
        self.stream, self.block_size, self.batch_size, self.steps = stream, block_size, batch_size, steps
        self.seed, self.epoch_fn, self.rank = seed, epoch_fn, rank
        self._offsets = torch.arange(block_size + 1)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(self.seed + 1000003 * self.epoch_fn() + 7919 * self.rank)
        high = len(self.stream) - self.block_size
        for _ in range(self.steps):
            start = torch.randint(high, (self.batch_size,), generator=gen)
            chunk = self.stream[start[:, None] + self._offsets]  # one gather per batch
            yield chunk[:, :-1], chunk[:, 1:]


class LanguageDataModule(SplitDataModule):
    """A text file or folder of .txt files as a token stream for language models (offline: Python's docs).

    Args:
        data_dir: folder that a relative ``path`` is looked up in (after the current folder).
        path: a UTF-8 text file or a folder of ``.txt`` files; empty for the bundled offline text.
        tokenizer: ``char`` (every character of the text is a token) or ``wordpiece`` (deterministic,
            lower-cased; see ``zoo.datamodules._lm_tokenizer``).
        wordpiece_vocab_size: WordPiece vocabulary size (ignored for ``char``).
        block_size: tokens per training block (the model's context length).
        batch_size: blocks per training batch.
        steps_per_epoch: random training batches per epoch.
        val_fraction / test_fraction: shares of the stream, from its end, held out for validation and test.
        eval_batch_size: blocks per validation / test batch.
    """

    link_fields = ("vocab_size", "block_size")

    def __init__(self, data_dir: str | None = None, path: str | None = None, tokenizer: TokenizerKind = "char",
                 wordpiece_vocab_size: int = 2000, block_size: int = 64, batch_size: int = 12,
                 steps_per_epoch: int = 250, val_fraction: float = 0.05, test_fraction: float = 0.05,
                 eval_batch_size: int = 64, num_workers: int = 0, seed: int = 42) -> None:
        super().__init__(data_dir, batch_size, num_workers, seed)
        for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 < value < 0.5:
                raise ZooUserError(f"{name} must be in (0, 0.5), got {value}")
        for name, value in (("block_size", block_size), ("steps_per_epoch", steps_per_epoch),
                            ("eval_batch_size", eval_batch_size)):
            if value < 1:
                raise ZooUserError(f"{name} must be >= 1, got {value}")
        if tokenizer not in ("char", "wordpiece"):
            raise ZooUserError(f"unknown tokenizer '{tokenizer}'; choose char or wordpiece")
        self.path, self.kind, self._block_size = path, tokenizer, block_size
        self.wordpiece_vocab_size = wordpiece_vocab_size
        self.steps_per_epoch, self.eval_batch_size = steps_per_epoch, eval_batch_size
        self.fractions = (val_fraction, test_fraction)
        self._text: str | None = None
        self._tokenizer: LMTokenizer | None = None
        self.splits: dict[str, torch.Tensor] = {}

    # ---- what the model needs (link_fields) and the tokenizer ------------------------------------------
    @property
    def block_size(self) -> int:
        return self._block_size

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def tokenizer(self) -> LMTokenizer:
        """Characters of the whole text, or WordPiece learnt from the training part (restored from checkpoints)."""
        if self._tokenizer is None:
            text = self.text
            train_chars = len(text) - round(len(text) * sum(self.fractions))
            source = text if self.kind == "char" else text[:train_chars]
            self._tokenizer = LMTokenizer.train(self.kind, source, self.wordpiece_vocab_size)
        return self._tokenizer

    def encode(self, text: str) -> torch.Tensor:
        return self.tokenizer.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    # ---- reading -----------------------------------------------------------------------------------------
    def resolve_path(self) -> Path | None:
        """The text file / folder: ``path`` as given, else under ``data_dir``; None for the bundled text."""
        if not self.path:
            if self.data_dir is not None:
                raise ZooUserError("the lm DataModule reads --data.path FILE (relative to --data-dir), e.g. "
                                   "--data.path text/tinyshakespeare.txt; leave both out for the bundled text")
            return None
        given = Path(self.path).expanduser()
        for candidate in (given, *([self.data_dir / given] if self.data_dir and not given.is_absolute() else [])):
            if candidate.exists():
                return candidate
        where = f" or under '{self.data_dir}'" if self.data_dir else ""
        raise ZooUserError(f"text '{given}' does not exist here{where}; pass an existing file or folder as --data.path")

    @property
    def text(self) -> str:
        if self._text is None:
            path = self.resolve_path()
            self._text = bundled_text() if path is None else read_text(path)
        return self._text

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        stream = self.tokenizer.encode(self.text)
        n_val, n_test = (round(len(stream) * f) for f in self.fractions)
        n_train = len(stream) - n_val - n_test
        parts = {"train": stream[:n_train], "val": stream[n_train:n_train + n_val], "test": stream[n_train + n_val:]}
        for split, part in parts.items():
            if len(part) <= self._block_size:
                raise ZooUserError(f"the {split} part has {len(part)} tokens, not more than block_size "
                                   f"{self._block_size}; use a longer text or a smaller --data.block_size")
        self.splits = parts

    def _loader(self, split: str, train: bool) -> Any:
        self.setup()
        stream, size = self.splits[split], self._block_size
        rank, _ = self.rank_and_world()
        if train:
            return RandomBlockLoader(stream, size, self.batch_size, self.steps_per_epoch, self.seed, self._epoch, rank)
        n = (len(stream) - 1) // size
        x, y = stream[: n * size].view(n, size), stream[1 : n * size + 1].view(n, size)
        return self.make_loader((x, y), train=False, batch_size=self.eval_batch_size)

    # ---- checkpoints and predict ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer.to_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._tokenizer = LMTokenizer.from_state(state_dict["tokenizer"])

    def predict_input(self, path: str) -> TensorBatchLoader:
        """The whole UTF-8 file as one prompt: a batch ``(ids,)`` of shape (1, L); unknown characters are a
        user error (char tokenizer) or ``[UNK]`` (WordPiece)."""
        file = Path(path).expanduser()
        if not file.is_file():
            raise ZooUserError(f"prompt '{file}' is not a file; pass a UTF-8 text file holding the prompt")
        ids = self.encode(_read_utf8(file))
        if len(ids) == 0:
            raise ZooUserError(f"prompt '{file}' is empty; write a prompt in the training text's characters")
        return self.make_loader((ids[None],), train=False, batch_size=1)
