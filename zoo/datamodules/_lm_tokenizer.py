"""Tokenizers of the language-modelling DataModule: characters (default) or a deterministic WordPiece.

Both turn a whole text into one token stream and back, and travel in checkpoints as plain types
(:meth:`LMTokenizer.to_state` / :meth:`LMTokenizer.from_state`). The WordPiece vocabulary is the BERT
scratch tokenizer's (``TextEncoder.train_wordpiece``: same text, same vocabulary, every run); it lower-cases
and splits on whitespace and punctuation, so its round trip gives the normalised words joined by spaces.

Example:
    >>> tok = LMTokenizer.train("char", "to be or not to be")
    >>> tok.decode(tok.encode("not to be").tolist())
    'not to be'
"""
from __future__ import annotations

from typing import Any, Literal

import torch

from zoo.datamodules.tokenizers import TextEncoder
from zoo.errors import ZooUserError

__all__ = ["LMTokenizer", "TokenizerKind"]

TokenizerKind = Literal["char", "wordpiece"]


class LMTokenizer:
    """Characters (``vocab`` lists them, id = position) or WordPiece (a ``TextEncoder`` without specials)."""

    def __init__(self, kind: str, vocab: list[str], encoder: TextEncoder | None = None) -> None:
        self.kind, self.vocab, self.encoder = kind, list(vocab), encoder
        self._ids = {token: i for i, token in enumerate(self.vocab)}
        if encoder is not None:  # a stream of any length, without [CLS]/[SEP]
            encoder.tokenizer.no_truncation()

    @classmethod
    def train(cls, kind: str, text: str, vocab_size: int = 2000) -> "LMTokenizer":
        """The characters of ``text`` (sorted) or a WordPiece vocabulary of up to ``vocab_size`` learnt from it."""
        if kind == "char":
            return cls("char", sorted(set(text)))
        if kind == "wordpiece":
            encoder = TextEncoder.train_wordpiece(text.splitlines(), vocab_size, max_length=512)
            vocab = sorted(encoder.tokenizer.get_vocab().items(), key=lambda kv: kv[1])
            return cls("wordpiece", [token for token, _ in vocab], encoder)
        raise ZooUserError(f"unknown tokenizer '{kind}'; choose char or wordpiece")

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> torch.Tensor:
        """Token ids (int64). Characters outside a char vocabulary are a user error naming them;
        WordPiece maps unknown words to ``[UNK]``."""
        if self.encoder is not None:
            return torch.tensor(self.encoder.tokenizer.encode(text, add_special_tokens=False).ids, dtype=torch.long)
        unknown = sorted(set(text) - self._ids.keys())
        if unknown:
            shown = ", ".join(repr(c) for c in unknown[:10])
            raise ZooUserError(f"{len(unknown)} character(s) not in the {self.vocab_size}-character vocabulary of the "
                               f"training text: {shown}; remove them or train on a text that has them")
        return torch.tensor([self._ids[c] for c in text], dtype=torch.long)

    def decode(self, ids: list[int]) -> str:
        if self.encoder is not None:
            return self.encoder.tokenizer.decode(ids, skip_special_tokens=False)
        return "".join(self.vocab[i] for i in ids)

    def to_state(self) -> dict[str, Any]:
        """Plain types only (checkpoints are loaded with ``weights_only=True``)."""
        state: dict[str, Any] = {"kind": self.kind, "vocab": list(self.vocab)}
        if self.encoder is not None:
            state["encoder"] = self.encoder.to_state()
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "LMTokenizer":
        encoder = TextEncoder.from_state(state["encoder"]) if "encoder" in state else None
        return cls(state["kind"], state["vocab"], encoder)
