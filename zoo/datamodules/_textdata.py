"""Labelled text tables for the text DataModules: CSV/TSV/JSONL reading, label vocabularies, and the
generated offline sentiment set.

Example:
    >>> table = generate_sentiment(200, seed=0)["train"]
    >>> len(table.texts), sorted(set(table.labels))
    (160, ['negative', 'positive'])
"""
from __future__ import annotations

import csv
import json
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from zoo.errors import ZooUserError

__all__ = ["TextTable", "read_table", "find_split_file", "label_vocabulary", "encode_labels", "generate_sentiment",
           "SUFFIXES"]

SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")


@dataclass
class TextTable:
    """One split: texts, optional second texts (sentence pairs) and raw labels (str, or list[str] multi-label)."""

    texts: list[str]
    pairs: list[str] | None
    labels: list[Any]
    source: str

    def subset(self, idx: Sequence[int]) -> "TextTable":
        pick = lambda xs: [xs[i] for i in idx]  # noqa: E731
        return TextTable(pick(self.texts), pick(self.pairs) if self.pairs is not None else None, pick(self.labels),
                         self.source)


def find_split_file(root: Path, stems: Sequence[str]) -> Path | None:
    """The first ``<root>/<stem><suffix>`` that exists, e.g. train.csv, train.tsv or train.jsonl."""
    for stem in stems:
        for suffix in SUFFIXES:
            if (root / f"{stem}{suffix}").is_file():
                return root / f"{stem}{suffix}"
    return None


def _rows(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    if path.suffix in (".jsonl", ".json"):
        rows = []
        with open(path, encoding="utf-8") as fh:
            for i, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise ZooUserError(f"'{path}' line {i} is not JSON ({exc.msg}); "
                                           "write one object per line") from exc
        return rows, list(rows[0]) if rows else []
    delimiter = "\t" if path.suffix == ".tsv" else ","
    quoting = csv.QUOTE_NONE if path.suffix == ".tsv" else csv.QUOTE_MINIMAL  # GLUE TSVs keep raw quotes
    rows, ragged = [], []
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter, quoting=quoting)
        for row in reader:  # a row with more or fewer cells than the header is skipped, never guessed at
            (ragged.append(reader.line_num) if None in row or None in row.values() else rows.append(row))
    if ragged:
        shown = ", ".join(map(str, ragged[:20])) + (" ..." if len(ragged) > 20 else "")
        warnings.warn(f"'{path}': skipped {len(ragged)} row(s) whose number of cells differs from the header's "
                      f"{len(reader.fieldnames or [])} (lines {shown})", stacklevel=2)
    return rows, list(reader.fieldnames or [])


def read_table(path: Path, text_column: str, label_column: str | None, pair_column: str | None = None,
               label_sep: str | None = None) -> TextTable:
    """Read a CSV/TSV/JSONL split; a missing column is a user error naming the columns that exist."""
    if path.suffix not in SUFFIXES:
        raise ZooUserError(f"'{path}' is not .csv, .tsv or .jsonl; convert it or rename it")
    rows, columns = _rows(path)
    if not rows:
        raise ZooUserError(f"'{path}' holds no rows; it needs a header and one example per row")
    for role, col in (("text", text_column), ("text pair", pair_column), ("label", label_column)):
        if col is not None and col not in columns:
            raise ZooUserError(f"'{path}' has no {role} column '{col}' (columns: {', '.join(map(str, columns))}); "
                               f"pass --data.{role.replace(' ', '_')}_column NAME")

    def label(value: Any) -> Any:
        if label_sep is None:
            return str(value).strip()
        parts = value if isinstance(value, list) else str(value).split(label_sep)
        return sorted({str(p).strip() for p in parts if str(p).strip()})

    texts = [str(r[text_column] or "").strip() for r in rows]
    pairs = [str(r[pair_column] or "").strip() for r in rows] if pair_column else None
    labels = [label(r[label_column]) for r in rows] if label_column else []
    return TextTable(texts, pairs, labels, str(path))


def _label_key(name: str) -> tuple[int, float | str]:
    try:
        return (0, float(name))
    except ValueError:
        return (1, name)


def label_vocabulary(train: TextTable, fixed: Sequence[str] | None = None) -> tuple[str, ...]:
    """Label names in id order: ``fixed`` if given, else the training labels (numbers numerically, then text)."""
    if fixed:
        return tuple(str(x) for x in fixed)
    seen = {x for lab in train.labels for x in (lab if isinstance(lab, list) else [lab])}
    if "" in seen:
        raise ZooUserError(f"'{train.source}' has rows with an empty label; fill them in or drop those rows")
    return tuple(sorted(seen, key=_label_key))


def encode_labels(table: TextTable, names: Sequence[str], split: str, multi_label: bool) -> torch.Tensor:
    """Label ids (long) or multi-hot rows (float); labels outside ``names`` are a user error."""
    index = {n: i for i, n in enumerate(names)}
    for row, lab in enumerate(table.labels, 2):
        for x in lab if isinstance(lab, list) else [lab]:
            if x not in index:
                raise ZooUserError(f"{split} split '{table.source}' row {row} has label '{x}' not in the training "
                                   f"labels {list(names)}; fix the file or list all labels with --data.labels")
    if not multi_label:
        return torch.tensor([index[lab] for lab in table.labels], dtype=torch.long)
    out = torch.zeros(len(table.labels), len(names))
    for row, lab in enumerate(table.labels):
        out[row, [index[x] for x in lab]] = 1.0
    return out


# ---- the generated offline sentiment set ---------------------------------------------------------------------
SUBJECTS = ("the movie", "this film", "the plot", "the acting", "the soundtrack", "the script", "the ending",
            "the cast", "the dialogue", "the story", "the camera work", "the pacing", "the lead actor", "the sequel")
POSITIVE = ("wonderful", "brilliant", "moving", "delightful", "gripping", "charming", "superb", "heartfelt",
            "clever", "beautiful", "funny", "memorable", "stunning", "fresh")
NEGATIVE = ("dull", "boring", "clumsy", "tedious", "awful", "lifeless", "predictable", "messy", "shallow",
            "forgettable", "painful", "bland", "silly", "stale")
ADVERBS = ("", "really ", "truly ", "rather ", "quite ", "incredibly ", "a bit ", "very ")
FRAMES = ("{s} was {a}{w} .", "i thought {s} was {a}{w} .", "{s} felt {a}{w} from start to finish .",
          "honestly , {s} is {a}{w} .", "everyone agreed that {s} was {a}{w} .")


def _sentence(rng: random.Random) -> tuple[str, str]:
    """One review; its label is the polarity of the last clause, flipped by 'not'."""
    positive = rng.random() < 0.5
    word = lambda pos: rng.choice(POSITIVE if pos else NEGATIVE)  # noqa: E731
    kind = rng.random()
    if kind < 0.5:  # plain statement
        text = rng.choice(FRAMES).format(s=rng.choice(SUBJECTS), a=rng.choice(ADVERBS), w=word(positive))
    elif kind < 0.75:  # negation flips the adjective's polarity
        text = f"{rng.choice(SUBJECTS)} was not {rng.choice(ADVERBS)}{word(not positive)} ."
    else:  # contrast: the clause after 'but' decides
        first, second = rng.sample(SUBJECTS, 2)
        text = f"{first} was {word(not positive)} , but {second} was {rng.choice(ADVERBS)}{word(positive)} ."
    return text, "positive" if positive else "negative"


def generate_sentiment(size: int, seed: int = 0, test_fraction: float = 0.2) -> dict[str, TextTable]:
    """``size`` distinct seeded movie-review sentences labelled negative/positive, split into train and test.

    Statements ("the plot was gripping ."), negations ("the cast was not dull .") and contrasts ("the
    script was clumsy , but the ending was moving .") from fixed word lists; no sentence is in both splits.
    """
    if size < 20:
        raise ZooUserError(f"the generated sentiment set needs size >= 20, got {size}")
    rng, seen = random.Random(seed), {}
    for _ in range(size * 50):
        text, label = _sentence(rng)
        seen.setdefault(text, label)
        if len(seen) == size:
            break
    items = list(seen.items())
    n_test = max(1, int(len(items) * test_fraction))
    make = lambda part: TextTable([t for t, _ in part], None, [y for _, y in part], "generated sentiment")  # noqa: E731
    return {"train": make(items[n_test:]), "test": make(items[:n_test])}
