"""Text classification data: your CSV/TSV/JSONL files (``text``), GLUE SST-2 (``sst2``) and a generated
offline sentiment set (``sentiment``, the default of ``bert``).

The DataModule owns the tokenizer (see ``zoo.datamodules.tokenizers``): every split is tokenised once at
``setup`` and held in memory; each batch is padded only to its own longest sequence, optionally with
length-bucketed batches. ``backbone``, ``num_classes``, ``class_names``, ``multi_label``, ``vocab_size``
and ``max_length`` are linked into the model, which stores the label names in its checkpoint.

Example:
    >>> dm = SentimentDataModule(size=300, backbone="scratch", batch_size=16)  # doctest: +SKIP
    >>> dm.setup("fit"); batch = next(iter(dm.train_dataloader()))  # doctest: +SKIP
    >>> sorted(batch)  # doctest: +SKIP
    ['attention_mask', 'input_ids', 'labels', 'token_type_ids']
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader

from zoo.datamodules._textdata import (TextTable, encode_labels, find_split_file, generate_sentiment,
                                       label_vocabulary, read_table)
from zoo.datamodules.tokenizers import BucketBatchLoader, TextEncoder, resolve_backbone, trim_batch
from zoo.datamodules.base import SplitDataModule, stratified_split
from zoo.errors import ZooUserError

__all__ = ["TextDataModule", "SST2DataModule", "SentimentDataModule"]


class TextDataModule(SplitDataModule):
    """Your labelled text: ``<data_dir>/train.{csv,tsv,jsonl}`` (+ optional val/dev and test files).

    Args:
        data_dir: folder with train.* and optionally val.*/valid.*/dev.* and test.* (or use the ``*_file`` args).
        backbone: ``auto``, ``minilm``, ``scratch``, a hub name or a local model folder (tokenizer + model).
        text_column / text_pair_column / label_column: column names; a pair column makes sentence-pair input.
        labels: all label names in id order (default: sorted training labels).
        multi_label: labels are sets, written ``a|b`` or as a JSON list.
        label_sep: the separator of multi-label sets.
        train_file / val_file / test_file: explicit split files (CSV/TSV/JSON lines) instead of ``data_dir``.
        max_length: truncate token sequences to this many tokens.
        bucket: length-bucketed training batches (less padding, faster).
        val_fraction: share of train held out for validation when there is no val file.
        limit_train: keep only this many (seeded, random) training rows.
        scratch_vocab_size: WordPiece vocabulary size for the ``scratch`` backbone.
        hf_dataset / hf_config: a Hugging Face ``datasets`` name (needs ``pip install datasets`` and network).
    """

    link_fields = ("backbone", "num_classes", "class_names", "multi_label", "vocab_size", "max_length")
    link_from_model = ("backbone",)  # the CLI spelling is --model.backbone
    default_labels: tuple[str, ...] | None = None
    label_rename: dict[str, str] = {}

    def __init__(self, data_dir: str | None = None, backbone: str = "auto", text_column: str = "text",
                 text_pair_column: str | None = None, label_column: str = "label", labels: list[str] | None = None,
                 multi_label: bool = False, label_sep: str = "|", max_length: int = 128, batch_size: int = 32,
                 bucket: bool = True, val_fraction: float = 0.1, limit_train: int | None = None,
                 scratch_vocab_size: int = 8000, train_file: str | None = None, val_file: str | None = None,
                 test_file: str | None = None, hf_dataset: str | None = None, hf_config: str | None = None,
                 num_workers: int = 0, seed: int = 42) -> None:
        super().__init__(data_dir, batch_size, num_workers, seed)
        if not 0.0 < val_fraction < 1.0:
            raise ZooUserError(f"val_fraction must be in (0, 1), got {val_fraction}")
        if limit_train is not None and limit_train < 2:
            raise ZooUserError(f"limit_train must be >= 2, got {limit_train}")
        self.columns = (text_column, text_pair_column, label_column)
        self.labels = labels or self.default_labels
        self._multi, self.label_sep, self._max_length, self.bucket = multi_label, label_sep, max_length, bucket
        self.val_fraction, self.limit_train, self.scratch_vocab_size = val_fraction, limit_train, scratch_vocab_size
        self.files, self.hf = (train_file, val_file, test_file), (hf_dataset, hf_config)
        self._backbone = resolve_backbone(backbone)
        self._tables: dict[str, TextTable] | None = None
        self._encoder: TextEncoder | None = None
        self.splits: dict[str, tuple[torch.Tensor, ...]] = {}

    # ---- what the model needs (link_fields) -------------------------------------------------------------
    @property
    def backbone(self) -> str:
        return self._backbone

    @property
    def class_names(self) -> tuple[str, ...]:
        return self._prepare()[1]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def multi_label(self) -> bool:
        return self._multi

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def vocab_size(self) -> int:
        return self.encoder.vocab_size

    @property
    def encoder(self) -> TextEncoder:
        """The tokenizer: the backbone's own, or WordPiece trained on the training texts for ``scratch``."""
        if self._encoder is None:
            if self._backbone == "scratch":
                train = self._prepare()[0]["train"]
                self._encoder = TextEncoder.train_wordpiece(train.texts + (train.pairs or []), self.scratch_vocab_size,
                                                            self._max_length)
            else:
                self._encoder = TextEncoder.from_backbone(self._backbone, self._max_length)
        return self._encoder

    # ---- reading -----------------------------------------------------------------------------------------
    def load_tables(self) -> dict[str, TextTable]:
        """{"train": ..., optional "val", optional "test"} with raw labels."""
        if self.hf[0]:
            return self._load_hf()
        how = ("it needs --data-dir DIR with train.csv|tsv|jsonl (or --data.train_file PATH); "
               "for an offline demo use --data sentiment")
        root = self.require_data_dir("the text DataModule", how)
        found = []
        for given, stems in zip(self.files, (("train",), ("val", "valid", "validation", "dev"), ("test",))):
            path = (root / given if given else find_split_file(root, stems))
            if given and not path.is_file():
                raise ZooUserError(f"split file '{path}' does not exist; {how}")
            found.append(path)
        if found[0] is None:
            raise ZooUserError(f"no train.csv, train.tsv or train.jsonl in '{root}'; {how}")
        return {split: self._read(path) for split, path in zip(("train", "val", "test"), found) if path is not None}

    def _read(self, path: Path) -> TextTable:
        text, pair, label = self.columns
        return read_table(path, text, label, pair, self.label_sep if self._multi else None)

    def _load_hf(self) -> dict[str, TextTable]:
        try:
            import datasets
        except ImportError as exc:
            raise ZooUserError("--data.hf_dataset needs the `datasets` package: pip install datasets") from exc
        name, config = self.hf
        try:
            ds = datasets.load_dataset(name, config)
        except Exception as exc:  # hub errors come in many types; no network is the usual one
            raise ZooUserError(f"cannot load Hugging Face dataset '{name}' ({str(exc).splitlines()[0][:160]}); "
                               "check the name and the network, or export it to CSV and use --data-dir") from exc
        text, pair, label = self.columns
        feature = ds["train"].features.get(label)
        names = getattr(feature, "names", None)
        out = {}
        for split, hf_split in (("train", "train"), ("val", "validation"), ("test", "test")):
            if hf_split not in ds:
                continue
            part = ds[hf_split]
            raw = [names[y] if names and isinstance(y, int) and y >= 0 else str(y) for y in part[label]]
            if split == "test" and names and min(part[label]) < 0:
                continue  # GLUE-style hidden test labels (-1): the validation split is used as test instead
            out[split] = TextTable([str(t) for t in part[text]], [str(t) for t in part[pair]] if pair else None, raw,
                                   f"{name}:{hf_split}")
        return out

    def _prepare(self) -> tuple[dict[str, TextTable], tuple[str, ...]]:
        if self._tables is None:
            tables = self.load_tables()
            if self.label_rename:
                for t in tables.values():
                    t.labels = [self.label_rename.get(y, y) if isinstance(y, str) else y for y in t.labels]
            if "val" not in tables:
                tables["train"], tables["val"] = self._split(tables["train"])
            if self.limit_train is not None and self.limit_train < len(tables["train"].texts):
                gen = torch.Generator().manual_seed(self.seed)
                keep = torch.randperm(len(tables["train"].texts), generator=gen)[: self.limit_train].sort().values
                tables["train"] = tables["train"].subset(keep.tolist())
            self._tables, self._names = tables, label_vocabulary(tables["train"], self.labels)
        return self._tables, self._names

    def _split(self, table: TextTable) -> tuple[TextTable, TextTable]:
        n = len(table.texts)
        n_val = max(1, round(n * self.val_fraction))
        if n - n_val < 1:
            raise ZooUserError(f"'{table.source}' has only {n} rows; add data or give a val file")
        counts = {y: table.labels.count(y) for y in set(map(str, table.labels))} if not self._multi else {}
        if counts and min(counts.values()) >= 2 and n_val >= len(counts):
            ids = torch.tensor([sorted(counts).index(str(y)) for y in table.labels])
            train_idx, val_idx = stratified_split(ids, n_val / n, self.seed)
        else:
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
            train_idx, val_idx = perm[n_val:].sort().values, perm[:n_val].sort().values
        return table.subset(train_idx.tolist()), table.subset(val_idx.tolist())

    # ---- tensors and loaders ---------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        tables, names = self._prepare()
        if "test" not in tables:
            rank_zero_warn(f"{type(self).__name__}: no test file, so the test split is the validation split")
        for split in ("train", "val", "test"):
            table = tables.get(split) or tables["val"]
            if not table.labels:
                raise ZooUserError(f"{split} split '{table.source}' has no labels; pass --data.label_column NAME")
            ids, types, lengths = self.encoder.encode(table.texts, table.pairs)
            self.splits[split] = (ids, types, lengths, encode_labels(table, names, split, self._multi))

    def _loader(self, split: str, train: bool) -> Any:
        self.setup()
        tensors = self.splits[split]
        if not (train and self.bucket):
            return self.make_loader(tensors, train=train, transform=trim_batch)
        rank, world = self.rank_and_world()
        return BucketBatchLoader(tensors, lengths=tensors[2], batch_size=self.batch_size, shuffle=True, seed=self.seed,
                                 epoch_fn=self._epoch, rank=rank, world_size=world, transform=trim_batch)

    def predict_dataloader(self) -> Any:
        return self._loader("test", False)

    def predict_input(self, path: str) -> DataLoader:
        """Batches of raw strings from a text file, one example per line (``first<TAB>second`` for pairs)."""
        file = Path(path).expanduser()
        if not file.is_file():
            raise ZooUserError(f"input file '{file}' does not exist; pass a text file with one example per line")
        lines = [line.rstrip("\n") for line in file.read_text(encoding="utf-8").splitlines()]
        items = [tuple(line.split("\t", 1)) if "\t" in line else line for line in lines if line.strip()]
        if not items:
            raise ZooUserError(f"input file '{file}' has no non-empty lines; write one text per line")
        return DataLoader(items, batch_size=self.batch_size, shuffle=False, collate_fn=list)


class SST2DataModule(TextDataModule):
    """GLUE SST-2 movie-review sentiment (67k train phrases, 872 dev sentences) from local TSVs.

    Reads ``<data_dir>/SST-2/train.tsv`` (or ``<data_dir>/train.tsv``) for train/val and ``dev.tsv`` as the
    test split (GLUE's test labels are hidden). Labels 0/1 become ``negative``/``positive``.
    """

    default_labels = ("negative", "positive")
    label_rename = {"0": "negative", "1": "positive"}

    def __init__(self, data_dir: str | None = None, backbone: str = "auto", text_column: str = "sentence",
                 label_column: str = "label", max_length: int = 64, batch_size: int = 32, val_fraction: float = 0.02,
                 **kwargs: Any) -> None:
        super().__init__(data_dir, backbone, text_column=text_column, label_column=label_column, max_length=max_length,
                         batch_size=batch_size, val_fraction=val_fraction, **kwargs)

    def load_tables(self) -> dict[str, TextTable]:
        how = "put GLUE's SST-2/train.tsv and dev.tsv under it, e.g. --data-dir ../shared/data"
        root = self.require_data_dir("sst2", how)
        folder = root / "SST-2" if (root / "SST-2" / "train.tsv").is_file() else root
        for name in ("train.tsv", "dev.tsv"):
            if not (folder / name).is_file():
                raise ZooUserError(f"no {name} in '{folder}'; {how}")
        return {"train": self._read(folder / "train.tsv"), "test": self._read(folder / "dev.tsv")}


class SentimentDataModule(TextDataModule):
    """Generated movie-review sentiment (negative/positive), offline: seeded sentences with negation and contrast.

    See ``zoo.datamodules._textdata.generate_sentiment``; 20% of ``size`` is the test split.

    Args:
        size: number of generated sentences.
    """

    def __init__(self, data_dir: str | None = None, size: int = 1500, backbone: str = "auto", max_length: int = 32,
                 batch_size: int = 32, **kwargs: Any) -> None:
        super().__init__(data_dir, backbone, max_length=max_length, batch_size=batch_size, **kwargs)
        self.size = size

    def load_tables(self) -> dict[str, TextTable]:
        if self.data_dir is not None:
            raise ZooUserError("the sentiment set is generated and reads no files; for your files use --data text")
        return generate_sentiment(self.size, seed=self.seed)
